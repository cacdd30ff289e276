"""
A cluster of three real nodes (C{twistd -n marconi} subprocesses on free
loopback ports), driven over HTTP with treq.
"""

import json
import os
import socket

import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from marconi.cluster.ring import Ring, key
from tests.nodeprocess import NodeProcess

CLIENT = "0f4fcd2c-1b7a-4a84-9f0a-7d1c2c0f6a11"
NAMES = ("a", "b", "c")
PROJECT = "it"


def freePort() -> int:
    """
    A loopback port free at the time of the call (bound, read and closed:
    the nodes need each other's URLs before they start).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def queueOwnedBy(node: str, project: str = PROJECT, prefix: str = "q") -> str:
    ring = Ring(NAMES)
    for i in range(1000):
        name = f"{prefix}{i}"
        if ring.owner(key(project, name)) == node:
            return name
    raise AssertionError("no queue found")


class ClusterTestCase(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        secret = os.path.join(self.root, "secret")
        with open(secret, "w") as f:
            f.write(os.urandom(32).hex())
        config = os.path.join(self.root, "cluster.ini")
        with open(config, "w") as f:
            f.write(
                "[cluster]\nprobe_interval = 0.2\nprobe_timeout = 1\n"
                "forward_timeout = 5\n"
            )
        self.ports = {name: freePort() for name in NAMES}
        nodes = []
        for name in NAMES:
            nodes += ["--cluster-node", f"{name}=http://127.0.0.1:{self.ports[name]}"]
        self.args = {}
        for name in NAMES:
            directory = os.path.join(self.root, name)
            os.makedirs(directory)
            self.args[name] = (
                directory,
                [
                    "--listen",
                    f"tcp:{self.ports[name]}:interface=127.0.0.1",
                    "--storage",
                    f"sqlite:{os.path.join(directory, 'marconi.sqlite3')}",
                    "--config",
                    config,
                    "--node-name",
                    name,
                    *nodes,
                    "--cluster-secret-file",
                    secret,
                ],
            )
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = treq.client.HTTPClient(Agent(reactor, pool=pool))
        self.nodes: dict = {}

    async def startNode(self, name: str) -> NodeProcess:
        directory, args = self.args[name]
        node = await NodeProcess(self, directory, args).start()
        self.nodes[name] = node
        return node

    async def startCluster(self) -> None:
        """
        Start the three nodes and wait until each sees the others up (a
        node started before its peers saw them down at first).
        """
        for name in NAMES:
            await self.startNode(name)
        for name in NAMES:
            await self.waitFor(
                name,
                lambda nodes: all(n["state"] in ("self", "up") for n in nodes.values()),
            )

    async def call(self, name, method, path, body=None, project=PROJECT, headers=None):
        sent = {"Client-ID": CLIENT}
        if project is not None:
            sent["X-Project-ID"] = project
        sent.update(headers or {})
        data = json.dumps(body).encode() if body is not None else None
        response = await self.http.request(
            method, self.nodes[name].url + path, data=data, headers=sent
        )
        content = await treq.content(response)
        return response, (json.loads(content) if content else None)

    async def waitFor(self, via: str, condition, seconds: float = 15) -> dict:
        waited = 0.0
        while True:
            r, body = await self.call(via, "GET", "/v2/health")
            nodes = {n["name"]: n for n in body["cluster"]["nodes"]}
            if condition(nodes):
                return nodes
            if waited > seconds:
                self.fail(f"condition not met: {nodes}")
            await deferLater(reactor, 0.1, lambda: None)
            waited += 0.1


class ClusterTests(ClusterTestCase):
    async def test_postClaimDeleteThroughDifferentNodes(self) -> None:
        """
        For a queue on each node: post through A, read and claim through B,
        delete with the claim through C; every answer (status, Location,
        hrefs) is the owner's, and the queue ends up empty.
        """
        await self.startCluster()
        for owner in NAMES:
            queue = queueOwnedBy(owner)
            base = f"/v2/queues/{queue}"
            r, body = await self.call(
                "a",
                "POST",
                f"{base}/messages",
                {"messages": [{"body": {"n": 1}, "tags": ["t"]}, {"body": {"n": 2}}]},
            )
            self.assertEqual(r.code, 201, body)
            location = r.headers.getRawHeaders("location")[0]
            self.assertTrue(location.startswith(f"{base}/messages?ids="), location)
            self.assertEqual(len(body["resources"]), 2)
            r, body = await self.call("b", "GET", f"{base}/messages?echo=true&tags=t")
            self.assertEqual([m["body"] for m in body["messages"]], [{"n": 1}])
            r, body = await self.call(
                "b", "POST", f"{base}/claims?limit=5", {"ttl": 60, "grace": 60}
            )
            self.assertEqual(r.code, 201, body)
            self.assertTrue(
                r.headers.getRawHeaders("location")[0].startswith(f"{base}/claims/")
            )
            hrefs = [m["href"] for m in body["messages"]]
            self.assertEqual(len(hrefs), 2)
            for href in hrefs:
                self.assertIn("?claim_id=", href)
                r, _ = await self.call("c", "DELETE", href)
                self.assertEqual(r.code, 204)
            r, body = await self.call("a", "GET", f"{base}/stats")
            self.assertEqual(body["messages"]["total"], 0)

    async def test_projectInURLThroughAnotherNode(self) -> None:
        """
        The /v2/projects/{id}/... form works through a node that does not
        own the queue, and the hrefs it gets keep that prefix.
        """
        await self.startCluster()
        queue = queueOwnedBy("c")
        await self.call(
            "a", "POST", f"/v2/queues/{queue}/messages", {"messages": [{"body": 7}]}
        )
        r, body = await self.call(
            "a",
            "GET",
            f"/v2/projects/{PROJECT}/queues/{queue}/messages?echo=true",
            project=None,
        )
        self.assertEqual(r.code, 200, body)
        self.assertEqual([m["body"] for m in body["messages"]], [7])
        self.assertTrue(
            body["messages"][0]["href"].startswith(
                f"/v2/projects/{PROJECT}/queues/{queue}/messages/"
            )
        )

    async def test_clientIdThroughAnotherNode(self) -> None:
        """
        The owner of a queue serves a forwarded request for the client that
        sent it: a listing without echo hides the messages the same client
        posted, through any node, and shows them to another client.
        """
        await self.startCluster()
        queue = queueOwnedBy("c")
        other = {"Client-ID": "5d6c1f0e-8a7b-4c3d-9e2f-1a0b9c8d7e6f"}
        r, body = await self.call(
            "a", "POST", f"/v2/queues/{queue}/messages", {"messages": [{"body": 3}]}
        )
        self.assertEqual(r.code, 201, body)
        for via in NAMES:
            r, body = await self.call(via, "GET", f"/v2/queues/{queue}/messages")
            self.assertEqual(r.code, 204 if body is None else 200, body)
            self.assertEqual((body or {}).get("messages", []), [], via)
            r, body = await self.call(
                via, "GET", f"/v2/queues/{queue}/messages", headers=other
            )
            self.assertEqual([m["body"] for m in body["messages"]], [3], via)

    async def test_listQueuesThroughAnyNode(self) -> None:
        """
        GET /v2/queues through any node lists the queues of every node in
        name order, pages with marker/limit through the next links, counts
        them all with with_count, and shows only the caller's project.
        """
        await self.startCluster()
        names = sorted(
            {queueOwnedBy(n, prefix=p) for n in NAMES for p in ("x", "y", "zz")}
        )
        owners = {Ring(NAMES).owner(key(PROJECT, n)) for n in names}
        self.assertEqual(owners, set(NAMES))
        for name in names:
            r, _ = await self.call("a", "PUT", f"/v2/queues/{name}", {"n": name})
            self.assertEqual(r.code, 201)
        await self.call("b", "PUT", "/v2/queues/secret-of-other", project="other")
        for via in NAMES:
            seen = []
            path = "/v2/queues?limit=4&with_count=true&detailed=true"
            while True:
                r, body = await self.call(via, "GET", path)
                self.assertEqual(r.code, 200, body)
                self.assertEqual(body["count"], len(names))
                seen += [q["name"] for q in body["queues"]]
                for q in body["queues"]:
                    self.assertEqual(q["metadata"], {"n": q["name"]})
                    self.assertEqual(q["href"], f"/v2/queues/{q['name']}")
                if not body["links"]:
                    break
                path = body["links"][0]["href"] + "&with_count=true"
            self.assertEqual(seen, names)
        r, body = await self.call("c", "GET", "/v2/queues", project="other")
        self.assertEqual([q["name"] for q in body["queues"]], ["secret-of-other"])

    async def test_health(self) -> None:
        """
        /v2/health shows the node, the ring and every node's state.
        """
        await self.startCluster()
        await self.waitFor("a", lambda nodes: nodes["b"]["state"] == "up")
        r, body = await self.call("a", "GET", "/v2/health")
        cluster = body["cluster"]
        self.assertEqual(cluster["node"], "a")
        self.assertEqual([n["name"] for n in body["nodes"]], ["a"])
        self.assertEqual([n["name"] for n in cluster["nodes"]], list(NAMES))
        self.assertEqual(cluster["nodes"][0]["state"], "self")
        self.assertAlmostEqual(sum(n["share"] for n in cluster["nodes"]), 1, 2)

    async def test_nodeDownAndBack(self) -> None:
        """
        While node C is down, its queues answer 503 naming it through A and
        B, the queues of A and B work as before, and listing queues says C
        is missing; when C comes back it is used again (with its messages)
        without restarting A or B.
        """
        await self.startCluster()
        onC, onA, onB = queueOwnedBy("c"), queueOwnedBy("a"), queueOwnedBy("b")
        for queue in (onC, onA, onB):
            r, _ = await self.call(
                "a", "POST", f"/v2/queues/{queue}/messages", {"messages": [{"body": 1}]}
            )
            self.assertEqual(r.code, 201)
        await self.nodes["c"].kill()
        for via in ("a", "b"):
            r, body = await self.call(via, "GET", f"/v2/queues/{onC}/stats")
            self.assertEqual(r.code, 503, body)
            self.assertEqual(body["title"], "Service unavailable")
            self.assertIn("Cluster node c ", body["description"])
            for queue in (onA, onB):
                r, body = await self.call(
                    via,
                    "POST",
                    f"/v2/queues/{queue}/messages",
                    {"messages": [{"body": 2}]},
                )
                self.assertEqual(r.code, 201, body)
            r, body = await self.call(via, "GET", "/v2/queues")
            self.assertEqual(r.code, 200, body)
            self.assertEqual(body["missing_nodes"], ["c"])
            self.assertEqual([q["name"] for q in body["queues"]], sorted([onA, onB]))
        nodes = await self.waitFor("a", lambda nodes: nodes["c"]["state"] == "down")
        self.assertIn("error", nodes["c"])
        await self.startNode("c")
        await self.waitFor("a", lambda nodes: nodes["c"]["state"] == "up")
        await self.waitFor("b", lambda nodes: nodes["c"]["state"] == "up")
        for via in ("a", "b"):
            r, body = await self.call(via, "GET", f"/v2/queues/{onC}/stats")
            self.assertEqual(r.code, 200, body)
            self.assertEqual(body["messages"]["total"], 1)
        r, body = await self.call("b", "GET", "/v2/queues")
        self.assertEqual(r.code, 200, body)
        self.assertNotIn("missing_nodes", body)
        self.assertEqual([q["name"] for q in body["queues"]], sorted([onA, onB, onC]))


class ForgeryTests(ClusterTestCase):
    async def test_forgedForwardingHeaders(self) -> None:
        """
        A client sending forwarding headers (a project, a node name, a
        made-up or copied signature) is refused with 403, to the owner and
        to any other node, and sees none of the victim's messages.
        """
        await self.startCluster()
        queue = queueOwnedBy("b")
        await self.call(
            "a",
            "POST",
            f"/v2/queues/{queue}/messages",
            {"messages": [{"body": "victim-payload"}]},
            project="victim",
        )
        forged = [
            {"X-Marconi-Project": "victim"},
            {
                "X-Marconi-Node": "a",
                "X-Marconi-Project": "victim",
                "X-Marconi-Timestamp": "1800000000",
                "X-Marconi-Nonce": "00" * 16,
                "X-Marconi-Signature": "0" * 64,
            },
            {
                "X-Marconi-Node": "a",
                "X-Marconi-Project": "victim",
                "X-Marconi-Timestamp": "",
                "X-Marconi-Nonce": "",
                "X-Marconi-Signature": "",
            },
        ]
        for headers in forged:
            for via in NAMES:
                r, body = await self.call(
                    via,
                    "GET",
                    f"/v2/queues/{queue}/messages?echo=true",
                    project="attacker",
                    headers=headers,
                )
                self.assertEqual(r.code, 403, (via, headers, body))
                self.assertEqual(body["title"], "Forbidden")
                self.assertNotIn("victim-payload", json.dumps(body))
                r, body = await self.call(
                    via, "GET", "/v2/queues", project="attacker", headers=headers
                )
                self.assertEqual(r.code, 403)
        r, body = await self.call(
            "c", "GET", f"/v2/queues/{queue}/messages?echo=true", project="attacker"
        )
        self.assertNotIn("victim-payload", json.dumps(body))
        r, body = await self.call(
            "c", "GET", f"/v2/queues/{queue}/messages?echo=true", project="victim"
        )
        self.assertEqual([m["body"] for m in body["messages"]], ["victim-payload"])


class ExploitTests(ClusterTestCase):
    async def test_targetNotAPathMarksNothingDown(self) -> None:
        """
        Requests whose target is not a path (X, # or @ first), sent to a
        node that does not own the queue, never answer 503 and never mark
        a healthy peer down; the queue stays served through that node.
        """
        from tests.rawhttp import exchange, status

        await self.startCluster()
        queue = queueOwnedBy("b")
        for first in (b"X", b"#", b"@"):
            for _ in range(3):
                answer = await exchange(
                    self.ports["a"],
                    b"GET "
                    + first
                    + f"/v2/queues/{queue}/stats HTTP/1.1\r\n".encode()
                    + f"Host: a\r\nClient-ID: {CLIENT}\r\n".encode()
                    + f"X-Project-ID: {PROJECT}\r\nConnection: close\r\n\r\n".encode(),
                )
                self.assertNotEqual(status(answer), 503, answer)
        r, body = await self.call("a", "GET", "/v2/health")
        states = {n["name"]: n["state"] for n in body["cluster"]["nodes"]}
        self.assertEqual(states["b"], "up", states)
        r, body = await self.call("a", "GET", f"/v2/queues/{queue}/stats")
        self.assertEqual(r.code, 200, body)

    async def test_queryOfNonASCIIBytes(self) -> None:
        """
        A request whose query percent-encodes UTF-8 that is not ASCII, or
        bytes that are not UTF-8, is answered through a node that does not
        own the queue as the owner answers it (the pass-through, and the forwarding that signs its
        query), never with a 500.
        """
        await self.startCluster()
        queue = queueOwnedBy("b")
        r, body = await self.call(
            "b", "POST", f"/v2/queues/{queue}/messages", {"messages": [{"body": 1}]}
        )
        self.assertEqual(r.code, 201, body)
        for query, code in (
            ("x=%C3%A9", 200),
            ("marker=%C3%A9", 400),
            # Percent-encoded bytes that are not UTF-8.
            ("y=%ff", 200),
            ("%ff=1&y=%fe+x", 200),
            ("marker=%ff", 400),
        ):
            for via in NAMES:
                r, body = await self.call(
                    via, "GET", f"/v2/queues/{queue}/messages?echo=true&{query}"
                )
                self.assertEqual(r.code, code, (via, query, body))

    async def test_crossNodeDeadLetterQueueRefused(self) -> None:
        """
        Queue settings naming a dead-letter queue another node owns are
        refused with 400 through any node (PUT and PATCH), and nothing
        changes; one the same node owns is taken.
        """
        await self.startCluster()
        work = queueOwnedBy("a", prefix="work")
        elsewhere = queueOwnedBy("c", prefix="dlq")
        here = queueOwnedBy("a", prefix="dlq")
        for via in NAMES:
            r, body = await self.call(
                via,
                "PUT",
                f"/v2/queues/{work}",
                {"_max_claim_count": 1, "_dead_letter_queue": elsewhere},
            )
            self.assertEqual(r.code, 400, body)
            self.assertIn("another node", body["description"])
        r, body = await self.call("b", "GET", "/v2/queues")
        self.assertEqual(body["queues"], [])
        r, body = await self.call(
            "b",
            "PUT",
            f"/v2/queues/{work}",
            {"_max_claim_count": 1, "_dead_letter_queue": here},
        )
        self.assertEqual(r.code, 201, body)
        r, body = await self.call(
            "c",
            "PATCH",
            f"/v2/queues/{work}",
            [
                {
                    "op": "replace",
                    "path": "/metadata/_dead_letter_queue",
                    "value": elsewhere,
                }
            ],
            headers={"Content-Type": "application/openstack-messaging-v2.0-json-patch"},
        )
        self.assertEqual(r.code, 400, body)
        r, body = await self.call("a", "GET", f"/v2/queues/{work}")
        self.assertEqual(body["_dead_letter_queue"], here)
