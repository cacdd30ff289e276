"""
Long-polling in a cluster of real nodes (C{twistd -n marconi}
subprocesses): a waiting request sent to a node that does not own the
queue waits on the owner, whose posts wake it, and the relay does not cut
it at its forwarding timeout.
"""

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from tests.integration.test_cluster import ClusterTestCase, queueOwnedBy

OTHER = "5d1b0f0e-7a8e-4c7b-a1d9-3f6f2b9c0e42"


class ForwardedWaiterTests(ClusterTestCase):
    async def startTwo(self) -> None:
        """
        Start nodes a and b (c stays down) and wait until each sees the
        other up and c down (a node on its own SQLite file serves no queue
        until every peer answered a probe or was found down).
        """
        await self.startNode("a")
        await self.startNode("b")
        for name, other in (("a", "b"), ("b", "a")):
            await self.waitFor(
                name,
                lambda nodes, other=other: (
                    nodes[other]["state"] == "up" and nodes["c"]["state"] == "down"
                ),
            )

    async def test_forwardedWaiterWoken(self) -> None:
        """
        A listing waiting up to 20 seconds, sent to a (b owns the queue),
        is answered with the message another client posts through a; the
        deadline would have answered it empty.
        """
        await self.startTwo()
        queue = queueOwnedBy("b")
        waiting = Deferred.fromCoroutine(
            self.call("a", "GET", f"/v2/queues/{queue}/messages?wait=20")
        )
        # Most likely the waiter sleeps on b by now; if not, its first
        # query finds the message, and the answer is the same.
        await deferLater(reactor, 0.5, lambda: None)
        r, body = await self.call(
            "a",
            "POST",
            f"/v2/queues/{queue}/messages",
            {"messages": [{"ttl": 300, "body": "wake"}]},
            headers={"Client-ID": OTHER},
        )
        self.assertEqual(r.code, 201, body)
        r, body = await waiting
        self.assertEqual(r.code, 200, body)
        self.assertEqual([m["body"] for m in body["messages"]], ["wake"])

    async def test_waitLongerThanForwardTimeout(self) -> None:
        """
        A forwarded request whose wait (7 seconds) is longer than the
        relay's forwarding timeout (5) is answered by the owner at its
        deadline, empty, and relayed (not a 503 of a peer that did not
        answer in time).
        """
        await self.startTwo()
        queue = queueOwnedBy("b")
        r, body = await self.call("a", "POST", f"/v2/queues/{queue}/claims?wait=7", {})
        self.assertEqual((r.code, body), (204, None))
