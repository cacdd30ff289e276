"""
Filtered queue listings and purges on a cluster of three real nodes: the
listing gathered from every node pages by markers with the filters, and a
purge sent to any node is served by the queue's owner.
"""

from marconi.cluster.ring import Ring, key
from tests.integration.test_cluster import (
    NAMES,
    PROJECT,
    ClusterTestCase,
    queueOwnedBy,
)


class ClusterFilterTests(ClusterTestCase):
    async def test_filteredListingAcrossNodes(self) -> None:
        """
        Through any node, C{name} and metadata filters keep the matching
        queues of every node, in name order, one page at a time through
        the filtered next links, and C{with_count} counts them all.
        """
        await self.startCluster()
        wanted, others = [], []
        for node in NAMES:
            for prefix in ("keep-", "skip-"):
                name = queueOwnedBy(node, prefix=prefix)
                meta = {"team": "a"} if prefix == "keep-" else {"team": "b"}
                r, _ = await self.call("a", "PUT", f"/v2/queues/{name}", meta)
                self.assertEqual(r.code, 201)
                (wanted if prefix == "keep-" else others).append(name)
            # Matches the name but not the metadata.
            name = queueOwnedBy(node, prefix="keep-b-")
            await self.call("b", "PUT", f"/v2/queues/{name}", {"team": "b"})
        owners = {Ring(NAMES).owner(key(PROJECT, n)) for n in wanted}
        self.assertEqual(owners, set(NAMES))
        await self.call("c", "PUT", f"/v2/queues/{wanted[0]}", {"team": "a"}, "p2")
        for via in NAMES:
            seen = []
            path = "/v2/queues?name=keep&team=a&limit=1"
            while True:
                r, body = await self.call(via, "GET", path + "&with_count=true")
                self.assertEqual(r.code, 200, body)
                self.assertEqual(body["count"], 3)
                seen += [q["name"] for q in body["queues"]]
                if not body["queues"]:
                    break
                path = body["links"][0]["href"]
            self.assertEqual(seen, sorted(wanted), via)
        r, body = await self.call("b", "GET", "/v2/queues?team=a", project="p2")
        self.assertEqual([q["name"] for q in body["queues"]], [wanted[0]])

    async def test_purgeServedByOwner(self) -> None:
        """
        A purge sent to a node that does not own the queue is served by the
        owner: the queue's messages go; another project's queue of the
        same name, and the project's queue on another node, keep theirs.
        """
        await self.startCluster()
        queue = queueOwnedBy("b")
        other = queueOwnedBy("c")
        for name, project in ((queue, PROJECT), (queue, "p2"), (other, PROJECT)):
            r, _ = await self.call(
                "a",
                "POST",
                f"/v2/queues/{name}/messages",
                {"messages": [{"body": name + project, "ttl": 300}]},
                project,
            )
            self.assertEqual(r.code, 201)
        r, _ = await self.call("c", "POST", f"/v2/queues/{queue}/purge")
        self.assertEqual(r.code, 204)
        for name, project, left in (
            (queue, PROJECT, []),
            (queue, "p2", [queue + "p2"]),
            (other, PROJECT, [other + PROJECT]),
        ):
            r, body = await self.call(
                "a", "GET", f"/v2/queues/{name}/messages?echo=true", project=project
            )
            self.assertEqual([m["body"] for m in body["messages"]], left)
