"""
Requests a node forwards to a peer share connections, pipelined (see
L{marconi.api.pipeline} and L{marconi.cluster.wire}), on three real nodes.
"""

import os

from twisted.internet.defer import Deferred, gatherResults

from tests.integration.test_cluster import ClusterTestCase, queueOwnedBy


def connectionsTo(port: int) -> int:
    """
    The established loopback TCP connections to C{port} from this
    machine's side (their client ends), from C{/proc/net/tcp}.
    """
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if state == "01" and int(remote.split(":")[1], 16) == port:
                count += 1
    return count


class PipelinedForwardingTests(ClusterTestCase):
    async def test_burstSharesConnections(self) -> None:
        """
        Forty requests sent at once to node a for a queue b owns are all
        answered rightly, over the connection from a to b a first request
        opened, rather than one each.
        """
        if not os.path.exists("/proc/net/tcp"):
            self.skipTest("no /proc/net/tcp to count connections in")
        await self.startCluster()
        queue = queueOwnedBy("b")
        path = f"/v2/queues/{queue}/messages"
        # A first forwarded request: its answer grants pipelining.
        r, _ = await self.call(
            "a", "POST", path, {"messages": [{"ttl": 60, "body": -1}]}
        )
        self.assertEqual(r.code, 201)
        before = connectionsTo(self.ports["b"])
        posts = [
            Deferred.fromCoroutine(
                self.call("a", "POST", path, {"messages": [{"ttl": 60, "body": n}]})
            )
            for n in range(40)
        ]
        posted = await gatherResults(posts)
        self.assertEqual([r.code for r, _ in posted], [201] * 40)
        # All on the connection the first request opened (up to 128 go on
        # one), where one each would be thirty-nine more (a probe may have
        # opened one).
        self.assertLessEqual(connectionsTo(self.ports["b"]) - before, 3)
        lists = [
            Deferred.fromCoroutine(self.call("a", "GET", f"{path}?echo=true&limit=1"))
            for _ in range(40)
        ]
        listed = await gatherResults(lists)
        self.assertEqual([r.code for r, _ in listed], [200] * 40)
        r, stats = await self.call("b", "GET", f"/v2/queues/{queue}/stats")
        self.assertEqual(stats["messages"]["total"], 41)
        r, body = await self.call("a", "GET", f"{path}?echo=true&limit=10")
        got = set()
        while body and body["messages"]:
            got |= {m["body"] for m in body["messages"]}
            nextPage = [link["href"] for link in body["links"] if link["rel"] == "next"]
            r, body = await self.call("a", "GET", nextPage[0])
        self.assertEqual(got, set(range(-1, 40)))
