"""
Requests a node forwards to a peer share connections, pipelined (see
L{marconi.api.pipeline} and L{marconi.cluster.wire}), on three real nodes.
"""

import os

from twisted.internet.defer import Deferred, gatherResults

from tests.integration.test_cluster import (
    CLIENT,
    PROJECT,
    ClusterTestCase,
    queueOwnedBy,
)
from tests.rawhttp import exchange, status


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
    def posting(self, path: str, bodies: range) -> list:
        """
        One post to node a of a message for each of C{bodies}, all sent at
        once: their L{Deferred}s.
        """
        return [
            Deferred.fromCoroutine(
                self.call("a", "POST", path, {"messages": [{"ttl": 60, "body": n}]})
            )
            for n in bodies
        ]

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
        posts = self.posting(path, range(40))
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

    async def test_oneBadRequestFailsOnlyItself(self) -> None:
        """
        A request the relaying node takes but the owner refuses (a header
        line the relaying node lengthens past the owner's bound) is
        answered with its error; the requests pipelined beside it are
        served as usual.
        """
        await self.startCluster()
        queue = queueOwnedBy("b")
        path = f"/v2/queues/{queue}/messages"
        r, _ = await self.call(
            "a", "POST", path, {"messages": [{"ttl": 60, "body": -1}]}
        )
        self.assertEqual(r.code, 201)
        bad = (
            (
                f"GET {path} HTTP/1.1\r\nHost: x\r\nClient-ID: {CLIENT}\r\n"
                f"X-Project-ID: {PROJECT}\r\nConnection: close\r\n"
            ).encode()
            + b"X-Pad:"
            + b"a" * 8186
            + b"\r\n\r\n"
        )
        posts = self.posting(path, range(20))
        refused = Deferred.fromCoroutine(exchange(self.ports["a"], bad))
        posts += self.posting(path, range(20, 40))
        posted = await gatherResults(posts)
        self.assertEqual([r.code for r, _ in posted], [201] * 40)
        answer = await refused
        self.assertEqual(status(answer), 431, answer[:300])
        r, stats = await self.call("b", "GET", f"/v2/queues/{queue}/stats")
        self.assertEqual(stats["messages"]["total"], 41)
