"""
The client library (L{marconi.client}): against an in-process node over a
real socket, with L{StubTreq} and a L{Clock} for retries, timeouts and error
mapping, and against the real daemon in a subprocess.
"""

import inspect
import json
from typing import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from marconi.client import errors
from marconi.client.api import Backoff, Client, _batches, _encode
from marconi.client.blocking import BlockingClient
from marconi.client.models import (
    Claim,
    Health,
    Message,
    OutgoingMessage,
    QueueStats,
)
from tests.apihelpers import Node
from tests.nodeprocess import startNode


def _close(client: Client) -> Deferred:
    return Deferred.fromCoroutine(client.close())


class ClientTestCase(TestCase):
    """
    A client of a fresh in-process node.
    """

    def setUp(self) -> None:
        self.node = Node(self)
        self.client = self.makeClient()

    def makeClient(self, project: str = "p", **kw) -> Client:
        client = Client(self.node.url, project=project, **kw)
        self.addCleanup(_close, client)
        return client

    async def collect(self, iterator) -> list:
        return [item async for item in iterator]


class QueueTests(ClientTestCase):
    async def test_lifecycle(self) -> None:
        """
        createQueue says whether it created the queue; the metadata reads
        back with the server's defaults; deleteQueue removes it.
        """
        self.assertTrue(await self.client.createQueue("jobs", {"color": "red"}))
        self.assertFalse(await self.client.createQueue("jobs"))
        metadata = await self.client.queueMetadata("jobs")
        self.assertEqual(metadata["color"], "red")
        self.assertEqual(metadata["_default_message_ttl"], 3600)
        await self.client.deleteQueue("jobs")
        page = await self.client.listQueues()
        self.assertEqual(page.items, [])

    async def test_updateMetadata(self) -> None:
        """
        updateQueueMetadata sets and removes keys with a JSON patch and
        returns the new metadata.
        """
        await self.client.createQueue("q", {"a": 1, "b/c": 2})
        metadata = await self.client.updateQueueMetadata(
            "q", set={"x": [1]}, remove=["b/c"]
        )
        self.assertEqual((metadata["a"], metadata["x"]), (1, [1]))
        self.assertNotIn("b/c", metadata)

    async def test_pagingQueues(self) -> None:
        """
        queues() follows the next links across pages; listQueues counts
        when asked and gives the page's next href.
        """
        names = [f"q{i}" for i in range(7)]
        for name in names:
            await self.client.createQueue(name, {"n": name})
        found = await self.collect(self.client.queues(detailed=True, pageSize=3))
        self.assertEqual([q.name for q in found], names)
        self.assertEqual(found[4].metadata, {"n": "q4"})
        page = await self.client.listQueues(limit=3, withCount=True)
        self.assertEqual(page.count, 7)
        self.assertEqual(page.nextMarker, "q2")

    async def test_stats(self) -> None:
        """
        queueStats is typed, with the oldest and newest messages.
        """
        ids = await self.client.post("q", [1, 2, 3])
        stats = await self.client.queueStats("q")
        self.assertIsInstance(stats, QueueStats)
        self.assertEqual((stats.free, stats.claimed, stats.total), (3, 0, 3))
        self.assertEqual((stats.oldest.id, stats.newest.id), (ids[0], ids[2]))


class ConnectionTests(ClientTestCase):
    """
    The client's own pool of connections, counted by the node's listener.
    """

    def accepted(self) -> list:
        """
        The connections the node accepts from now on.
        """
        accepted: list = []
        build = self.node.site.buildProtocol

        def counting(address):
            accepted.append(address)
            return build(address)

        self.node.site.buildProtocol = counting  # type: ignore[method-assign]
        return accepted

    async def rounds(self, client: Client, count: int) -> None:
        await client.createQueue("q")
        for _ in range(3):
            await gatherResults(
                [Deferred.fromCoroutine(client.queueStats("q")) for _ in range(count)]
            )

    async def test_keptPerNode(self) -> None:
        """
        The connections that requests sent at once opened (up to 16 per
        node) carry the next ones.
        """
        accepted = self.accepted()
        await self.rounds(self.makeClient(ringAware=False), 8)
        self.assertEqual(len(accepted), 8)

    async def test_connections(self) -> None:
        """
        Past C{connections} idle ones, a connection is closed after its
        answer, and the next request over the bound opens one again.
        """
        accepted = self.accepted()
        await self.rounds(self.makeClient(ringAware=False, connections=3), 8)
        self.assertEqual(len(accepted), 8 + 5 + 5)


class MessageTests(ClientTestCase):
    async def test_postAndRead(self) -> None:
        """
        Messages posted with a ttl, tags and bare bodies come back typed, in
        order, by listing, by id and by ids.
        """
        ids = await self.client.post(
            "q", [OutgoingMessage({"n": 1}, ttl=300, tags=["a", "b"]), "two"]
        )
        self.assertEqual(len(ids), 2)
        page = await self.client.listMessages("q", echo=True)
        first, second = page.items
        self.assertIsInstance(first, Message)
        self.assertEqual(
            (first.id, first.body, first.ttl, first.tags),
            (ids[0], {"n": 1}, 300, ("a", "b")),
        )
        self.assertEqual((second.body, second.ttl, second.tags), ("two", 3600, ()))
        self.assertTrue(first.checksum.startswith("MD5:"))
        self.assertEqual((await self.client.getMessage("q", ids[1])).body, "two")
        both = await self.client.getMessages("q", ids)
        self.assertEqual([m.id for m in both], ids)

    async def test_echo(self) -> None:
        """
        A client's own messages are listed only with echo; another client
        sees them by default.
        """
        await self.client.post("q", [1])
        self.assertEqual((await self.client.listMessages("q")).items, [])
        other = self.makeClient()
        self.assertEqual(len((await other.listMessages("q")).items), 1)

    async def test_delayed(self) -> None:
        """
        A delayed message is listed only with includeDelayed.
        """
        await self.client.post("q", [OutgoingMessage(1, delay=60)])
        page = await self.client.listMessages("q", echo=True)
        self.assertEqual(page.items, [])
        page = await self.client.listMessages("q", echo=True, includeDelayed=True)
        self.assertEqual([m.body for m in page.items], [1])

    async def test_paging(self) -> None:
        """
        messages() yields every message once, in order, following the next
        links; the page before the end carries the marker.
        """
        posted = await self.client.post("q", list(range(25)))
        found = await self.collect(self.client.messages("q", echo=True, pageSize=10))
        self.assertEqual([m.id for m in found], posted)
        self.assertEqual([m.body for m in found], list(range(25)))

    async def test_tags(self) -> None:
        """
        Tag filters keep messages carrying every tag given, in listing,
        claiming and popping.
        """
        await self.client.post(
            "q",
            [
                OutgoingMessage("red", tags=["red"]),
                OutgoingMessage("both", tags=["red", "big"]),
                OutgoingMessage("plain"),
            ],
        )
        listed = await self.collect(self.client.messages("q", echo=True, tags=["red"]))
        self.assertEqual([m.body for m in listed], ["red", "both"])
        claim = await self.client.claim("q", tags=["big"])
        self.assertEqual([m.body for m in claim.messages], ["both"])
        popped = await self.client.pop("q", 5, tags=["red"])
        self.assertEqual([m.body for m in popped], ["red"])

    async def test_deleteAndPop(self) -> None:
        """
        deleteMessage and deleteMessages remove messages; pop takes and
        removes them, oldest first, with a claim count.
        """
        ids = await self.client.post("q", list(range(5)))
        await self.client.deleteMessage("q", ids[0])
        await self.client.deleteMessages("q", ids[1:3])
        popped = await self.client.pop("q", 1)
        self.assertEqual(([m.body for m in popped], popped[0].claimCount), ([3], 0))
        left = await self.collect(self.client.messages("q", echo=True))
        self.assertEqual([m.id for m in left], ids[4:])

    async def test_postBatches(self) -> None:
        """
        postBatches splits by count and by bytes and posts every message,
        in order.
        """
        bodies = [{"n": i, "pad": "x" * 100} for i in range(250)]
        batches = await self.collect(self.client.postBatches("q", bodies))
        self.assertEqual([len(b) for b in batches], [100, 100, 50])
        batches = await self.collect(
            self.client.postBatches("r", bodies[:30], maxBytes=2000)
        )
        self.assertTrue(all(len(b) < 30 for b in batches))
        self.assertEqual(sum(len(b) for b in batches), 30)
        found = await self.collect(self.client.messages("r", echo=True, pageSize=20))
        self.assertEqual([m.body["n"] for m in found], list(range(30)))


class ClaimTests(ClientTestCase):
    async def test_lifecycle(self) -> None:
        """
        A claim holds its messages (each knows the claim id); it can be read,
        renewed, used to delete, and released, after which the rest is
        claimable again.
        """
        ids = await self.client.post("q", [1, 2, 3])
        claim = await self.client.claim("q", ttl=120, grace=30, limit=2)
        self.assertIsInstance(claim, Claim)
        self.assertEqual([m.id for m in claim.messages], ids[:2])
        self.assertEqual({m.claimId for m in claim.messages}, {claim.id})
        self.assertEqual((claim.ttl, claim.grace), (120, 30))
        read = await self.client.getClaim("q", claim.id)
        self.assertEqual((read.id, read.ttl), (claim.id, 120))
        await self.client.renewClaim("q", claim.id, 300)
        self.assertEqual((await self.client.getClaim("q", claim.id)).ttl, 300)
        await self.client.deleteMessage("q", ids[0], claim.id)
        await self.client.releaseClaim("q", claim.id)
        again = await self.client.claim("q", limit=5)
        self.assertEqual([m.id for m in again.messages], ids[1:])
        self.assertIsNone(await self.client.claim("q"))

    async def test_claimedMessageIsForbidden(self) -> None:
        """
        Deleting a claimed message without its claim raises L{Forbidden};
        a released claim is L{NotFound}.
        """
        ids = await self.client.post("q", [1])
        claim = await self.client.claim("q")
        with self.assertRaises(errors.Forbidden):
            await self.client.deleteMessage("q", ids[0])
        await self.client.releaseClaim("q", claim.id)
        with self.assertRaises(errors.NotFound):
            await self.client.getClaim("q", claim.id)


class ErrorAndHealthTests(ClientTestCase):
    async def test_notFound(self) -> None:
        """
        A 404 is a L{NotFound} carrying the server's title, description
        and request id.
        """
        with self.assertRaises(errors.NotFound) as caught:
            await self.client.getMessage("q", "0" * 32)
        error = caught.exception
        self.assertIsInstance(error, errors.APIError)
        self.assertEqual((error.code, error.title), (404, "Not found"))
        self.assertIn("does not exist", error.description)
        self.assertTrue(error.requestId.startswith("req-"))

    async def test_badRequest(self) -> None:
        """
        An out-of-range ttl is a L{BadRequest} with the server's reason.
        """
        with self.assertRaises(errors.BadRequest) as caught:
            await self.client.post("q", [OutgoingMessage(1, ttl=1)])
        self.assertIn("ttl", caught.exception.description)

    async def test_noProject(self) -> None:
        """
        Without a project the server's 400 comes through.
        """
        client = self.makeClient(project=None)
        with self.assertRaises(errors.BadRequest):
            await client.listQueues()

    async def test_health(self) -> None:
        """
        ping and health report a healthy node.
        """
        self.assertTrue(await self.client.ping())
        health = await self.client.health()
        self.assertTrue(health.ok)
        self.assertIn("ping", health.operations)

    async def test_unreachable(self) -> None:
        """
        A server that refuses connections is a L{TransportError}.
        """
        port = self.node.port.getHost().port
        await self.node.port.stopListening()
        client = Client(f"http://127.0.0.1:{port}", project="p")
        self.addCleanup(_close, client)
        with self.assertRaises(errors.TransportError) as caught:
            await client.ping()
        self.assertIn("cannot reach", str(caught.exception))


class FollowTests(ClientTestCase):
    async def test_readAfterShortPage(self) -> None:
        """
        readAfter returns everything after a marker and a marker that
        continues exactly after it, even when the last page was short (the
        server sends no next link then).
        """
        first = await self.client.post("q", list(range(23)))
        found, marker = await self.client.readAfter("q", None)
        self.assertEqual([m.id for m in found], first)
        found, same = await self.client.readAfter("q", marker)
        self.assertEqual((found, same), ([], marker))
        second = await self.client.post("q", ["a", "b"])
        found, _ = await self.client.readAfter("q", marker)
        self.assertEqual([m.id for m in found], second)

    async def test_follow(self) -> None:
        """
        follow yields only messages posted after it started, sleeping on
        the injected clock between polls.
        """
        await self.client.post("q", ["old"])
        clock = Clock()
        follower = self.makeClient(clock=clock)
        stream = follower.follow("q", interval=5)
        for body in ("new", "newer"):
            nextOne = Deferred.fromCoroutine(_anext(stream))
            # Wait until it polled, found nothing and sleeps (the other
            # delayed calls are request timeouts, 30 seconds away).
            while not any(
                c.getTime() == clock.seconds() + 5 for c in clock.getDelayedCalls()
            ):
                await _turn()
            await self.client.post("q", [body])
            clock.advance(5)
            self.assertEqual((await nextOne).body, body)


async def _anext(iterator):
    return await iterator.__anext__()


def _turn() -> Deferred:
    d: Deferred = Deferred()
    reactor.callLater(0.01, d.callback, None)
    return d


class BlockingTests(ClientTestCase):
    def test_blocking(self) -> None:
        """
        The blocking facade, called from another thread while the reactor
        runs, does the same calls and iterates over pages.
        """

        def script() -> tuple:
            with BlockingClient(self.node.url, project="p") as c:
                created = c.createQueue("jobs")
                ids = c.post("jobs", list(range(12)))
                bodies = [m.body for m in c.messages("jobs", echo=True, pageSize=5)]
                claim = c.claim("jobs", limit=3)
                for m in claim.messages:
                    c.deleteMessage("jobs", m.id, claim.id)
                return created, len(ids), bodies, c.queueStats("jobs").total

        def check(result: tuple) -> None:
            self.assertEqual(result, (True, 12, list(range(12)), 9))

        return deferToThread(script).addCallback(check)

    def test_blockingErrors(self) -> None:
        """
        Errors reach the blocking caller as the same exceptions.
        """

        def script() -> None:
            c = BlockingClient(self.node.url, project="p")
            try:
                c.getMessage("q", "0" * 32)
            finally:
                c.close()

        d = deferToThread(script)
        return self.assertFailure(d, errors.NotFound)


class ToJSONTests(SynchronousTestCase):
    """
    The documents the results give back (what C{marconi --json} prints).
    """

    def test_roundTrip(self) -> None:
        """
        C{fromJSON(result.toJSON())} is the result again, for messages,
        claims, queue statistics and health reports.
        """
        message = Message(
            id="m1",
            ttl=60,
            age=2,
            body={"k": [1, "é"]},
            checksum="MD5:x",
            href="/v2/queues/q/messages/m1?claim_id=c1",
            tags=("a", "b"),
            claimId="c1",
            claimCount=1,
        )
        plain = Message(id="m2", ttl=60, age=0, body=None)
        stats = QueueStats.fromJSON(
            {
                "messages": {
                    "free": 1,
                    "claimed": 2,
                    "delayed": 0,
                    "total": 3,
                    "oldest": {
                        "id": "m1",
                        "href": "/v2/queues/q/messages/m1",
                        "age": 5,
                        "created": "2026-01-01T00:00:00Z",
                    },
                }
            }
        )
        results = [
            message,
            plain,
            Claim("c1", "/v2/queues/q/claims/c1", (message, plain), 30, 10),
            stats,
            Health(True, {"op": {"succeeded": True}}),
            Health(False, error="down"),
        ]
        for result in results:
            self.assertEqual(type(result).fromJSON(result.toJSON()), result)

    def test_messageDocument(self) -> None:
        """
        A message's document uses the API's names, in the API's order, and
        leaves out what the message does not have.
        """
        self.assertEqual(
            list(Message("m", 1, 2, "b", href="h", claimId="c").toJSON().items()),
            [
                ("id", "m"),
                ("ttl", 1),
                ("age", 2),
                ("body", "b"),
                ("href", "h"),
                ("tags", []),
                ("claim_id", "c"),
            ],
        )


class BlockingFacadeTests(SynchronousTestCase):
    """
    The shape of L{BlockingClient}: one blocking twin for every public
    asynchronous method of L{Client}, as C{inspect} and C{help()} see it.
    """

    def asyncMethods(self) -> dict:
        """
        The public methods of L{Client} that are coroutines or return an
        asynchronous iterator (found by calling nothing: from the source's
        own markers, C{async def} and C{async for}/C{yield} inside).
        """
        found = {}
        for name, value in vars(Client).items():
            if name.startswith("_") or not inspect.isfunction(value):
                continue
            if inspect.iscoroutinefunction(value):
                found[name] = "call"
            elif "async def iterate" in inspect.getsource(value):
                found[name] = "iterate"
        return found

    def test_everyMethodHasATwin(self) -> None:
        """
        Each public coroutine method and each asynchronous iterator of
        L{Client} has a method of the same name on L{BlockingClient}, with
        the same parameters, and its docstring.
        """
        methods = self.asyncMethods()
        self.assertTrue(
            {"ping", "post", "claim", "close", "queues", "follow"} <= set(methods)
        )
        for name in methods:
            original = getattr(Client, name)
            twin = getattr(BlockingClient, name, None)
            self.assertIsNotNone(twin, name)
            self.assertEqual(
                inspect.signature(twin).parameters,
                inspect.signature(original).parameters,
                name,
            )
            self.assertEqual(twin.__name__, name)
            self.assertIn(f"L{{Client.{name}}}", twin.__doc__)
            self.assertIn(inspect.getdoc(original) or "", twin.__doc__)

    def test_returnAnnotations(self) -> None:
        """
        A coroutine's twin returns what the coroutine returns; an
        asynchronous iterator's twin returns a plain L{Iterator} of the
        same items.
        """
        for name, kind in self.asyncMethods().items():
            original = inspect.signature(getattr(Client, name)).return_annotation
            returns = inspect.signature(getattr(BlockingClient, name)).return_annotation
            if kind == "call":
                self.assertEqual(returns, original, name)
            else:
                self.assertEqual(returns, Iterator[original.__args__[0]], name)

    def test_boundSignature(self) -> None:
        """
        On an instance, the twin's signature leaves out C{self}, as
        C{help()} shows it.
        """
        blocking = object.__new__(BlockingClient)
        self.assertEqual(
            str(inspect.signature(blocking.deleteMessage)),
            "(queue: str, messageId: str, claimId: Optional[str] = None) -> None",
        )


# With a stub server: retries, timeouts, limits and headers.


class Scripted(Resource):
    """
    Answers each request with the next scripted (code, headers, body) and
    records what it received.
    """

    isLeaf = True

    def __init__(self, *answers) -> None:
        super().__init__()
        self.answers = list(answers)
        self.requests: list = []

    def render(self, request):
        if request.uri == b"/v2/ring":
            # A node on its own: no ring (not one of the scripted answers).
            request.setHeader(b"content-type", b"application/json")
            return b'{"scheme": null, "version": null, "nodes": []}'
        self.requests.append(
            (
                request.method,
                request.uri,
                request.requestHeaders,
                request.content.read(),
            )
        )
        code, headers, body = self.answers.pop(0)
        request.setResponseCode(code)
        for name, value in headers.items():
            request.setHeader(name, value)
        return body


UNAVAILABLE = (
    503,
    {"content-type": "application/json"},
    b'{"title": "Service unavailable", "description": "storage down"}',
)
STATS = (200, {}, b'{"messages": {"free": 1, "claimed": 0, "total": 1}}')


class StubTests(SynchronousTestCase):
    def client(self, resource: Resource, **kw) -> tuple:
        clock = Clock()
        stub = StubTreq(resource)
        client = Client(
            "http://marconi.invalid",
            project="p",
            token="t",
            clientId="me",
            http=stub,
            clock=clock,
            **kw,
        )
        return client, stub, clock

    def test_retriesIdempotent(self) -> None:
        """
        A GET answered 503 is retried after the backoff's delays on the
        injected clock, then succeeds.
        """
        server = Scripted(UNAVAILABLE, UNAVAILABLE, STATS)
        client, stub, clock = self.client(server, retry=Backoff(initial=1, factor=3))
        d = Deferred.fromCoroutine(client.queueStats("q"))
        stub.flush()
        self.assertEqual(len(server.requests), 1)
        clock.advance(0.9)
        stub.flush()
        self.assertEqual(len(server.requests), 1)
        clock.advance(0.1)
        stub.flush()
        self.assertEqual(len(server.requests), 2)
        self.assertNoResult(d)
        clock.advance(3)
        stub.flush()
        self.assertEqual(self.successResultOf(d).free, 1)

    def test_retryAfter(self) -> None:
        """
        A Retry-After header sets the delay, bounded by the backoff maximum.
        """
        code, headers, body = UNAVAILABLE
        server = Scripted((code, {"retry-after": "60", **headers}, body), STATS)
        client, stub, clock = self.client(server, retry=Backoff(maximum=7))
        d = Deferred.fromCoroutine(client.queueStats("q"))
        stub.flush()
        clock.advance(6.9)
        stub.flush()
        self.assertNoResult(d)
        clock.advance(0.1)
        stub.flush()
        self.successResultOf(d)

    def test_givesUp(self) -> None:
        """
        After the backoff's attempts, the 503 is raised as
        L{ServiceUnavailable} with the server's description.
        """
        server = Scripted(UNAVAILABLE, UNAVAILABLE)
        client, stub, clock = self.client(server, retry=Backoff(attempts=2))
        d = Deferred.fromCoroutine(client.queueStats("q"))
        stub.flush()
        clock.advance(10)
        stub.flush()
        failure = self.failureResultOf(d, errors.ServiceUnavailable)
        self.assertEqual(failure.value.description, "storage down")
        self.assertEqual(len(server.requests), 2)

    def test_noRetryForPostClaimPop(self) -> None:
        """
        Posting, claiming and popping are not idempotent: a 503 is raised
        at once.
        """
        for call in (
            lambda c: c.post("q", [1]),
            lambda c: c.claim("q"),
            lambda c: c.pop("q", 2),
        ):
            server = Scripted(UNAVAILABLE)
            client, stub, clock = self.client(server)
            d = Deferred.fromCoroutine(call(client))
            stub.flush()
            self.failureResultOf(d, errors.ServiceUnavailable)
            self.assertEqual(clock.getDelayedCalls(), [])

    def test_renewIsRetried(self) -> None:
        """
        Renewing a claim (PATCH) is idempotent and retried.
        """
        server = Scripted(UNAVAILABLE, (204, {}, b""))
        client, stub, clock = self.client(server)
        d = Deferred.fromCoroutine(client.renewClaim("q", "c", 60))
        stub.flush()
        clock.advance(1)
        stub.flush()
        self.successResultOf(d)
        self.assertEqual(json.loads(server.requests[1][3]), {"ttl": 60})

    def test_errorMapping(self) -> None:
        """
        Each status maps to its exception, with the body's title and
        description; a body that is not JSON becomes the description.
        """
        cases = {
            400: errors.BadRequest,
            401: errors.Unauthorized,
            403: errors.Forbidden,
            404: errors.NotFound,
            409: errors.Conflict,
            413: errors.PayloadTooLarge,
            500: errors.ServerError,
            418: errors.APIError,
        }
        for code, kind in cases.items():
            body = json.dumps({"title": f"T{code}", "description": "why"}).encode()
            client, stub, _ = self.client(Scripted((code, {}, body)))
            d = Deferred.fromCoroutine(client.queueMetadata("q"))
            stub.flush()
            error = self.failureResultOf(d, kind).value
            self.assertEqual(
                (error.code, error.title, error.description), (code, f"T{code}", "why")
            )
        client, stub, _ = self.client(Scripted((502, {}, b"bad gateway")))
        d = Deferred.fromCoroutine(client.queueMetadata("q"))
        stub.flush()
        error = self.failureResultOf(d, errors.ServerError).value
        self.assertEqual((error.title, error.description), ("HTTP 502", "bad gateway"))

    def test_headers(self) -> None:
        """
        Every request carries the project, token, Client-ID and asks for
        JSON; bodies are sent as JSON.
        """
        server = Scripted((201, {}, b'{"resources": ["/v2/queues/q/messages/abc"]}'))
        client, stub, _ = self.client(server)
        d = Deferred.fromCoroutine(client.post("q", [OutgoingMessage(1, tags=["x"])]))
        stub.flush()
        self.assertEqual(self.successResultOf(d), ["abc"])
        method, uri, headers, body = server.requests[0]
        self.assertEqual((method, uri), (b"POST", b"/v2/queues/q/messages"))
        for name, value in (
            ("x-project-id", "p"),
            ("x-auth-token", "t"),
            ("client-id", "me"),
            ("accept", "application/json"),
            ("content-type", "application/json"),
        ):
            self.assertEqual(headers.getRawHeaders(name), [value])
        self.assertEqual(json.loads(body), {"messages": [{"body": 1, "tags": ["x"]}]})

    def test_timeout(self) -> None:
        """
        A server that does not answer within the timeout (on the injected
        clock) makes the call fail with L{RequestTimedOut}.
        """

        class Silent(Resource):
            isLeaf = True

            def render(self, request):
                return NOT_DONE_YET

        client, stub, clock = self.client(Silent(), timeout=5)
        d = Deferred.fromCoroutine(client.queueStats("q"))
        stub.flush()
        self.assertNoResult(d)
        clock.advance(5)
        self.failureResultOf(d, errors.RequestTimedOut)

    def test_responseSizeLimit(self) -> None:
        """
        An answer larger than maxResponseSize is refused with L{BadResponse}.
        """
        big = b'{"messages": [' + b",".join([b'"x"'] * 1000) + b"]}"
        client, stub, _ = self.client(Scripted((200, {}, big)), maxResponseSize=100)
        d = Deferred.fromCoroutine(client.listMessages("q"))
        stub.flush()
        self.failureResultOf(d, errors.BadResponse)

    def test_badShape(self) -> None:
        """
        A 200 whose JSON lacks the expected fields is a L{BadResponse}.
        """
        client, stub, _ = self.client(Scripted((200, {}, b'{"nothing": 1}')))
        d = Deferred.fromCoroutine(client.queueStats("q"))
        stub.flush()
        self.failureResultOf(d, errors.BadResponse)

    def test_quotesNames(self) -> None:
        """
        Queue names and ids are quoted into the path.
        """
        server = Scripted((204, {}, b""))
        client, stub, _ = self.client(server)
        d = Deferred.fromCoroutine(client.deleteMessage("a b", "x/y", "c"))
        stub.flush()
        self.successResultOf(d)
        self.assertEqual(
            server.requests[0][1], b"/v2/queues/a%20b/messages/x%2Fy?claim_id=c"
        )


class BatchTests(SynchronousTestCase):
    @settings(deadline=None, max_examples=100)
    @given(
        st.lists(st.text(max_size=50), max_size=60),
        st.integers(1, 20),
        st.integers(30, 400),
    )
    def test_batches(self, bodies, batchSize, maxBytes) -> None:
        """
        Batches keep every message in order, never exceed the count, and
        exceed the byte bound only with a single message.
        """
        batches = list(_batches(bodies, batchSize, maxBytes))
        self.assertEqual([m.body for b in batches for m in b], bodies)
        for batch in batches:
            self.assertTrue(0 < len(batch) <= batchSize)
            size = len(_encode({"messages": [m.toJSON() for m in batch]}).encode())
            self.assertTrue(size <= maxBytes or len(batch) == 1, (size, batch))


class DaemonTests(TestCase):
    timeout = 120

    async def test_roundTrip(self) -> None:
        """
        Against the real daemon: create, post, page, claim, delete, stats.
        """
        node = await startNode(self)
        client = Client(node.url, project="it")
        self.addCleanup(_close, client)
        self.assertTrue(await client.createQueue("work"))
        ids = await client.post(
            "work", [OutgoingMessage(i, tags=["t"]) for i in range(15)]
        )
        listed = [m async for m in client.messages("work", echo=True, tags=["t"])]
        self.assertEqual([m.id for m in listed], ids)
        claim = await client.claim("work", limit=15)
        for m in claim.messages:
            await client.deleteMessage("work", m.id, claim.id)
        self.assertEqual((await client.queueStats("work")).total, 0)
        self.assertTrue((await client.health()).ok)
