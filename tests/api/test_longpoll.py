"""
Long-polling (C{wait=SECONDS}) on listings, claims and pops, through the
real site on a loopback socket.  The node's domain clock is a L{Clock}: a
waiter answered while it was not advanced was woken, not timed out.
"""

from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from marconi.core.limits import Limits
from tests.apihelpers import CLIENT, Node
from tests.rawhttp import connect

OTHER = "8a2d6f50-0b3e-4c39-9d0c-5f0e1e6a3b21"


async def until(condition: Callable[[], bool], rounds: int = 2000) -> None:
    """
    Let the reactor run until C{condition} holds (it checks state, not
    time: each round is one short turn of the real reactor).
    """
    for _ in range(rounds):
        if condition():
            return
        await deferLater(reactor, 0.005, lambda: None)
    raise AssertionError("the condition never held")


class LongPollTestCase(TestCase):
    def setUp(self) -> None:
        self.node = Node(self)
        self.waiters = self.node.api.waiters

    def start(self, method: str, path: str, body: Any = None, **kw: Any) -> Deferred:
        return Deferred.fromCoroutine(self.node.request(method, path, body, **kw))

    async def asleep(self, count: int = 1) -> None:
        """
        Wait until C{count} waiters sleep (their first query found
        nothing).
        """
        await until(lambda: self.waiters.asleep() == count)

    def assertError(self, response: Any, code: int) -> None:
        self.assertEqual(response.code, code, response.body)
        self.assertEqual(sorted(response.json), ["description", "title"])


class ListingTests(LongPollTestCase):
    async def test_wokenByPost(self) -> None:
        """
        A listing waiting on an empty queue is answered with the message
        another client posts, before its deadline (the clock never moved),
        and leaves no waiter and no deadline behind.
        """
        calls = len(self.node.clock.getDelayedCalls())
        waiting = self.start("GET", "/v2/queues/q/messages?wait=20")
        await self.asleep()
        self.assertEqual(len(self.node.clock.getDelayedCalls()), calls + 1)
        [posted] = await self.node.post("q", {"ttl": 300, "body": 1}, client=OTHER)
        r = await waiting
        self.assertEqual(r.code, 200, r.body)
        self.assertEqual([m["id"] for m in r.json["messages"]], [posted])
        self.assertEqual(self.waiters.count, 0)
        self.assertEqual(len(self.node.clock.getDelayedCalls()), calls)

    async def test_immediate(self) -> None:
        """
        A listing that finds messages at once answers without waiting.
        """
        [posted] = await self.node.post("q", {"ttl": 300, "body": 1}, client=OTHER)
        r = await self.node.request("GET", "/v2/queues/q/messages?wait=20")
        self.assertEqual([m["id"] for m in r.json["messages"]], [posted])
        self.assertEqual(self.waiters.count, 0)

    async def test_deadline(self) -> None:
        """
        At its deadline a listing answers what a listing without wait
        answers on an empty queue.
        """
        plain = await self.node.request("GET", "/v2/queues/q/messages")
        waiting = self.start("GET", "/v2/queues/q/messages?wait=5")
        await self.asleep()
        self.node.clock.advance(4)
        self.assertFalse(waiting.called)
        self.node.clock.advance(1)
        r = await waiting
        self.assertEqual((r.code, r.json), (plain.code, plain.json))
        self.assertEqual(self.waiters.count, 0)

    async def test_echoAndTags(self) -> None:
        """
        A woken listing applies its query's rules: its own client's posts
        (without echo) and messages without its tags do not answer it; the
        first message that matches does, alone.
        """
        waiting = self.start("GET", "/v2/queues/q/messages?wait=20&tags=red")
        await self.asleep()
        await self.node.post("q", {"ttl": 300, "body": 1, "tags": ["red"]})
        await self.node.post(
            "q", {"ttl": 300, "body": 2, "tags": ["blue"]}, client=OTHER
        )
        [red] = await self.node.post(
            "q", {"ttl": 300, "body": 3, "tags": ["red"]}, client=OTHER
        )
        r = await waiting
        self.assertEqual([m["id"] for m in r.json["messages"]], [red])

    async def test_otherQueueAndProject(self) -> None:
        """
        Posts to another queue, or to the same queue of another project, do
        not answer a waiter; its deadline does, empty.
        """
        waiting = self.start("GET", "/v2/queues/q/messages?wait=5")
        await self.asleep()
        await self.node.post("other", {"ttl": 300, "body": 1}, client=OTHER)
        await self.node.post("q", {"ttl": 300, "body": 1}, project="p2")
        self.node.clock.advance(5)
        r = await waiting
        self.assertEqual(r.json["messages"], [])

    async def test_marker(self) -> None:
        """
        A waiting listing after a marker answers with the messages after
        it only.
        """
        await self.node.post("q", {"ttl": 300, "body": 1}, client=OTHER)
        first = await self.node.request("GET", "/v2/queues/q/messages")
        nextHref = first.json["links"][0]["href"]
        waiting = self.start("GET", nextHref + "&wait=20")
        await self.asleep()
        [second] = await self.node.post("q", {"ttl": 300, "body": 2}, client=OTHER)
        r = await waiting
        self.assertEqual([m["id"] for m in r.json["messages"]], [second])

    async def test_disconnectCancels(self) -> None:
        """
        A client that goes away while its request waits cancels the wait:
        the waiter and its deadline are gone.
        """
        calls = len(self.node.clock.getDelayedCalls())
        client = await connect(self.node.port.getHost().port)
        client.transport.write(
            b"GET /v2/queues/q/messages?wait=20 HTTP/1.1\r\nHost: x\r\n"
            b"X-Project-ID: p\r\nClient-ID: " + CLIENT.encode() + b"\r\n\r\n"
        )
        await self.asleep()
        self.assertEqual(len(self.node.clock.getDelayedCalls()), calls + 1)
        client.close()
        await until(lambda: self.waiters.count == 0)
        self.assertEqual(len(self.node.clock.getDelayedCalls()), calls)
        self.assertEqual(client.received, b"")

    async def test_badWait(self) -> None:
        """
        A wait that is not an integer from 0 to the maximum is a 400 with a
        title and a description; a claim asked for with one claims nothing.
        """
        await self.node.post("q", {"ttl": 300, "body": 1}, client=OTHER)
        for value in ("x", "-1", "21", "1.5", "", "true"):
            r = await self.node.request("GET", f"/v2/queues/q/messages?wait={value}")
            self.assertError(r, 400)
            self.assertIn("wait", r.json["description"])
            r = await self.node.request(
                "POST", f"/v2/queues/q/claims?wait={value}", {"ttl": 60}
            )
            self.assertError(r, 400)
        stats = await self.node.request("GET", "/v2/queues/q/stats")
        self.assertEqual(stats.json["messages"]["claimed"], 0)

    async def test_configuredMaximum(self) -> None:
        """
        The maximum is configured ([limits] max_wait).
        """
        node = Node(self, limits=Limits(maxWait=3))
        r = await node.request("GET", "/v2/queues/q/messages?wait=4")
        self.assertError(r, 400)
        self.assertIn("between 0 and 3", r.json["description"])

    async def test_v11IgnoresWait(self) -> None:
        """
        API v1.1 has no long-polling: wait is ignored there, like any
        parameter it does not know.
        """
        plain = await self.node.request("GET", "/v1.1/queues/q/messages")
        for value in ("20", "x"):
            r = await self.node.request("GET", f"/v1.1/queues/q/messages?wait={value}")
            self.assertEqual((r.code, r.body), (plain.code, plain.body))
        self.assertEqual(self.waiters.count, 0)

    async def fillAndRefuse(self, node: Node) -> tuple[Deferred, Any]:
        """
        Start one waiting request of project C{p} on C{node}, then ask for
        another, refused 503 with Retry-After.

        @return: the waiting request and the refusal.
        """
        waiting = Deferred.fromCoroutine(
            node.request("GET", "/v2/queues/q/messages?wait=20")
        )
        await until(lambda: node.api.waiters.asleep() == 1)
        r = await node.request("GET", "/v2/queues/other/messages?wait=20")
        self.assertError(r, 503)
        self.assertEqual(r.header("retry-after"), "1")
        return waiting, r

    async def test_tooManyWaiters(self) -> None:
        """
        Past the node's limit of waiters, a request that finds nothing is a
        503 with Retry-After; one that finds messages is answered.
        """
        node = Node(self, limits=Limits(maxWaiters=1))
        waiting, _ = await self.fillAndRefuse(node)
        await node.post("other", {"ttl": 300, "body": 1}, client=OTHER)
        r = await node.request("GET", "/v2/queues/other/messages?wait=20")
        self.assertEqual(len(r.json["messages"]), 1)
        node.clock.advance(20)
        await waiting

    async def test_tooManyWaitersOfAProject(self) -> None:
        """
        Past a project's limit of waiters (max_waiters_per_project), a
        request of that project that finds nothing is a 503 with
        Retry-After, while another project's request still waits.
        """
        node = Node(self, limits=Limits(maxWaiters=10, maxWaitersPerProject=1))
        self.assertEqual(node.api.waiters.perProject, 1)
        waiting, r = await self.fillAndRefuse(node)
        self.assertIn("of the project", r.json["description"])
        other = Deferred.fromCoroutine(
            node.request("GET", "/v2/queues/q/messages?wait=20", project="beta")
        )
        await until(lambda: node.api.waiters.asleep() == 2)
        node.clock.advance(20)
        self.assertEqual((await waiting).code, 200)
        self.assertEqual((await other).code, 200)

    def test_defaultProjectLimit(self) -> None:
        """
        By default a project may hold a tenth of the node's waiters.
        """
        self.assertEqual(Node(self).api.waiters.perProject, 1000)


class ClaimTests(LongPollTestCase):
    async def test_wokenByPost(self) -> None:
        """
        A claim waiting on an empty queue claims the message posted while
        it waits.
        """
        waiting = self.start("POST", "/v2/queues/q/claims?wait=20", {"ttl": 60})
        await self.asleep()
        [posted] = await self.node.post("q", {"ttl": 300, "body": 1})
        r = await waiting
        self.assertEqual(r.code, 201, r.body)
        self.assertEqual([m["id"] for m in r.json["messages"]], [posted])

    async def test_wokenByRelease(self) -> None:
        """
        A claim waiting while every message is claimed claims them when
        the other claim is released.
        """
        [posted] = await self.node.post("q", {"ttl": 300, "body": 1})
        held = await self.node.request("POST", "/v2/queues/q/claims", {"ttl": 60})
        self.assertEqual(held.code, 201)
        waiting = self.start("POST", "/v2/queues/q/claims?wait=20", {"ttl": 60})
        await self.asleep()
        r = await self.node.request("DELETE", held.header("location"))
        self.assertEqual(r.code, 204)
        r = await waiting
        self.assertEqual(r.code, 201, r.body)
        self.assertEqual([m["id"] for m in r.json["messages"]], [posted])

    async def test_oneMessageTwoWaiters(self) -> None:
        """
        Two claims wait; one message is posted: one claim gets it, the
        other keeps waiting (it is not answered empty) and gets the next.
        """
        first = self.start("POST", "/v2/queues/q/claims?wait=20", {"ttl": 60})
        second = self.start("POST", "/v2/queues/q/claims?wait=20", {"ttl": 60})
        await self.asleep(2)
        [one] = await self.node.post("q", {"ttl": 300, "body": 1})
        await until(lambda: first.called or second.called)
        await self.asleep(1)
        [two] = await self.node.post("q", {"ttl": 300, "body": 2})
        answers = [await first, await second]
        self.assertEqual([r.code for r in answers], [201, 201])
        got = sorted(r.json["messages"][0]["id"] for r in answers)
        self.assertEqual(got, sorted([one, two]))

    async def test_deadline(self) -> None:
        """
        A waiting claim that finds nothing by its deadline answers 204.
        """
        waiting = self.start("POST", "/v2/queues/q/claims?wait=3", {"ttl": 60})
        await self.asleep()
        self.node.clock.advance(3)
        r = await waiting
        self.assertEqual((r.code, r.body), (204, b""))


class PopTests(LongPollTestCase):
    async def test_wokenByPost(self) -> None:
        """
        A pop waiting on an empty queue takes the message posted while it
        waits.
        """
        waiting = self.start("DELETE", "/v2/queues/q/messages?pop=1&wait=20")
        await self.asleep()
        [posted] = await self.node.post("q", {"ttl": 300, "body": 7})
        r = await waiting
        self.assertEqual(r.code, 200, r.body)
        self.assertEqual([m["id"] for m in r.json["messages"]], [posted])
        r = await self.node.request("GET", f"/v2/queues/q/messages/{posted}")
        self.assertEqual(r.code, 404)
