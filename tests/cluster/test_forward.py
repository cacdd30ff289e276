"""
Talking to a peer: the bounds of L{PeerClient} (header timeout, body
timeout, body size, unreachable peer), what is forwarded and relayed, and
the failure detector fed by forwarding.  Timeouts run on a
L{MemoryReactorClock} with L{StringTransport} connections; the rest against
real loopback servers.
"""

import errno
import os
import random
import resource as limits
from io import BytesIO

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import (
    ConnectBindError,
    ConnectError,
    ConnectionRefusedError,
    DNSLookupError,
    getConnectError,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import resource, server
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest

from marconi.api.http import MarconiSite
from marconi.cluster import forward, signing
from marconi.cluster.errors import (
    HELD_BY,
    LOST,
    REFUSED,
    REQUEST,
    SHORT,
    NodeUnavailable,
    QueueElsewhere,
)
from marconi.cluster.forward import (
    _PLAIN,
    Answer,
    NotAPath,
    PeerClient,
    _parsed,
    forwardHeaders,
    pathAndQuery,
    peerURL,
    relayHeaders,
    target,
)
from marconi.cluster.membership import DOWN, UNKNOWN, UP
from marconi.cluster.ring import key
from marconi.cluster.router import ClusterRouter, _segments
from marconi.cluster.settings import ClusterConfig, Peer
from marconi.core.errors import ValidationFailed
from marconi.core.monitoring import NullMonitor
from tests.integration.test_cluster import freePort

SECRET = b"s" * 32


class _Big(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"x" * 5000


class _Silent(Protocol):
    """
    Accepts the connection and never answers.
    """


class _Echo(resource.Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(201)
        request.setHeader(b"location", b"/v2/queues/q/messages?ids=1")
        return request.content.read()


class PeerClientTests(TestCase):
    def config(self, **kwargs) -> ClusterConfig:
        values = dict(
            nodeName="a",
            nodes=(Peer("a", "http://127.0.0.1:1"),),
            secret=SECRET,
            forwardTimeout=0.5,
            bodyTimeout=0.5,
            maxResponseBody=1000,
        )
        values.update(kwargs)
        return ClusterConfig(**values)

    def serve(self, factory) -> Peer:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return Peer("b", f"http://127.0.0.1:{port.getHost().port}")

    def client(self, **kwargs) -> PeerClient:
        client = PeerClient(self.config(**kwargs), reactor)
        self.addCleanup(client.close)
        # A connection given up may reach the pool a moment later.
        self.addCleanup(deferLater, reactor, 0.05, lambda: None)
        return client

    async def refused(self, client, peer, text, kind) -> None:
        try:
            await client.call(peer, b"GET", target(b"/v2/ping"), Headers(), b"")
        except NodeUnavailable as e:
            self.assertIn("Cluster node b ", e.description)
            self.assertIn(text, e.description)
            self.assertEqual(e.kind, kind)
        else:
            self.fail("NodeUnavailable not raised")

    async def test_bodyTooLarge(self) -> None:
        """
        A body over maxResponseBody is refused: the peer is unavailable for
        this request, a failure of the request, not of the peer.
        """
        peer = self.serve(server.Site(_Big()))
        await self.refused(self.client(), peer, "over 1000 bytes", REQUEST)

    async def test_unreachable(self) -> None:
        """
        A peer nobody listens for is unavailable, with the reason.
        """
        peer = Peer("b", f"http://127.0.0.1:{freePort()}")
        await self.refused(self.client(), peer, "could not be reached", REFUSED)

    async def test_roundTrip(self) -> None:
        """
        A request's method, path, query, headers and body arrive at the
        peer; its status, headers and body come back whole.
        """
        peer = self.serve(server.Site(_Echo()))
        answer = await self.client().call(
            peer,
            b"POST",
            target(b"/v2/queues/q/messages?a=1&b=%20x"),
            Headers({b"x-test": [b"yes"]}),
            b"payload",
        )
        self.assertEqual(answer.code, 201)
        self.assertEqual(answer.body, b"payload")
        self.assertEqual(
            answer.headers.getRawHeaders(b"location"), [b"/v2/queues/q/messages?ids=1"]
        )

    def test_cancelled(self) -> None:
        """
        Cancelling a call (the client went away) cancels it; it is not
        reported as the peer's failure.
        """
        peer = self.serve(Factory.forProtocol(_Silent))
        d = self.client().call(peer, b"GET", target(b"/v2/ping"), Headers(), b"")
        d.cancel()
        return self.assertFailure(d, Exception).addCallback(
            lambda e: self.assertNotIsInstance(e, NodeUnavailable)
        )


class HeaderTests(TestCase):
    def test_forwardHeaders(self) -> None:
        """
        Forwarded headers drop hop-by-hop ones and any X-Marconi-* the client
        sent, and carry the signed ones.
        """
        received = Headers(
            {
                b"Connection": [b"keep-alive"],
                b"Host": [b"edge"],
                b"Content-Length": [b"3"],
                b"X-Marconi-Project": [b"victim"],
                b"Client-ID": [b"c"],
                b"X-Project-ID": [b"p"],
            }
        )
        sent = forwardHeaders(received, {signing.PROJECT: b"p"})
        self.assertEqual(sent.getRawHeaders(b"x-marconi-project"), [b"p"])
        self.assertEqual(sent.getRawHeaders(b"client-id"), [b"c"])
        for name in (b"connection", b"host", b"content-length"):
            self.assertFalse(sent.hasHeader(name), name)

    def test_relayHeaders(self) -> None:
        """
        The peer's status, Location and other headers are put on the
        request, with a Content-Length for the relayed body.
        """
        request = DummyRequest([b""])
        answer = Answer(
            201,
            b"Created",
            Headers(
                {
                    b"Location": [b"/v2/projects/p/queues/q/claims/1"],
                    b"Transfer-Encoding": [b"chunked"],
                    b"Content-Encoding": [b""],
                }
            ),
            b"body",
        )
        relayHeaders(answer, request)
        self.assertEqual(request.responseCode, 201)
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"location"),
            [b"/v2/projects/p/queues/q/claims/1"],
        )
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-length"), [b"4"]
        )
        self.assertFalse(request.responseHeaders.hasHeader(b"transfer-encoding"))
        self.assertFalse(request.responseHeaders.hasHeader(b"content-encoding"))


def _config(**kwargs) -> ClusterConfig:
    values = dict(
        nodeName="a",
        nodes=(Peer("a", "http://127.0.0.1:1"), Peer("b", "http://127.0.0.1:2")),
        secret=SECRET,
        forwardTimeout=5,
        bodyTimeout=7,
        maxResponseBody=1000,
        downAfter=3,
    )
    values.update(kwargs)
    return ClusterConfig(**values)


class _Peer:
    """
    The connections a L{MemoryReactorClock} was asked for, answered over
    L{StringTransport}s.
    """

    def __init__(self, reactor: MemoryReactorClock) -> None:
        self.reactor = reactor
        self.taken = 0

    def connect(self) -> tuple:
        """
        Connect the next connection asked for: its protocol and transport.
        """
        factory = self.reactor.tcpClients[self.taken][2]
        self.taken += 1
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def refuse(self) -> None:
        self.fail(ConnectionRefusedError())

    def fail(self, error: Exception) -> None:
        """
        Fail the next connection asked for with C{error}.
        """
        factory = self.reactor.tcpClients[self.taken][2]
        self.taken += 1
        factory.clientConnectionFailed(None, Failure(error))
        # The endpoint tries the next address (there is none) on its clock.
        self.reactor.advance(0.5)


class TimeoutTests(SynchronousTestCase):
    """
    The header and body timeouts of L{PeerClient}, on a clock.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.peer = _Peer(self.reactor)
        self.client = PeerClient(_config(), self.reactor)

    def call(self, timeout=None) -> Deferred:
        return self.client.call(
            Peer("b", "http://127.0.0.1:2"),
            b"GET",
            target(b"/v2/ping"),
            Headers(),
            b"",
            timeout=timeout,
        )

    def test_headerTimeout(self) -> None:
        """
        A peer that takes the request and never answers is given up after
        forwardTimeout, not before; the failure is of kind LOST.
        """
        d = self.call()
        _, transport = self.peer.connect()
        self.assertTrue(transport.value().startswith(b"GET /v2/ping HTTP/1.1"))
        self.reactor.advance(4.9)
        self.assertNoResult(d)
        self.reactor.advance(0.2)
        error = self.failureResultOf(d, NodeUnavailable).value
        self.assertEqual(error.kind, LOST)
        self.assertIn("in time", error.description)

    def test_bodyTimeout(self) -> None:
        """
        A body that stops coming is given up after bodyTimeout (counted
        from the headers) and its connection is closed.
        """
        d = self.call()
        protocol, transport = self.peer.connect()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
        self.reactor.advance(6.9)
        self.assertNoResult(d)
        self.reactor.advance(0.2)
        self.assertEqual(self.failureResultOf(d, NodeUnavailable).value.kind, LOST)
        self.assertEqual(transport.producerState, "stopped")

    def test_ownTimeout(self) -> None:
        """
        A call given its own timeout (a probe) uses it for the headers.
        """
        d = self.call(timeout=1)
        self.peer.connect()
        self.reactor.advance(1.1)
        self.assertEqual(self.failureResultOf(d, NodeUnavailable).value.kind, LOST)

    def test_cancelledIsNotTimeout(self) -> None:
        """
        A call cancelled (its client went away) fails with CancelledError,
        never taken for a failure of the peer.
        """
        d = self.call()
        self.peer.connect()
        d.cancel()
        self.assertFalse(self.failureResultOf(d).check(NodeUnavailable))


class TargetTests(SynchronousTestCase):
    def test_notAPath(self) -> None:
        """
        Request targets that are not a path are refused with a 400 error
        before any URL is made of them.
        """
        for uri in (
            b"X/v2/queues/w1/stats",
            b"#/v2/queues/w1/stats",
            b"@/v2/queues/w1/stats",
            b"//evil.example/v2/queues/w1/stats",
            b"http://evil.example/v2/queues/w1/stats",
            b"/v2/queues/w1/stats#x",
            b"/v2/queues/%ff/stats",
            b"",
        ):
            e = self.assertRaises(NotAPath, target, uri)
            self.assertIsInstance(e, ValidationFailed)
            # The owner's check of a forwarded request splits its path the
            # same way.
            self.assertRaises(NotAPath, _segments, uri)

    def test_targetsKept(self) -> None:
        """
        Recent targets are parsed once (at most C{_MAX_TARGETS}, none
        longer than C{_MAX_TARGET}) and read the same when kept; a target
        that is not a path is refused every time.
        """
        forward._targets.clear()
        uri = b"/v2/queues/a%2Fb/messages?x=1+2"
        first = target(uri)
        self.assertIs(target(uri), first)
        self.assertEqual(first, _parsed(uri))
        for i in range(forward._MAX_TARGETS + 10):
            target(b"/v2/queues/q%d/messages" % i)
            self.assertLessEqual(len(forward._targets), forward._MAX_TARGETS)
        self.assertEqual(target(uri), first)
        long = b"/v2/" + b"x" * forward._MAX_TARGET
        self.assertEqual(target(long).uri, long)
        self.assertNotIn(long, forward._targets)
        for _ in range(2):
            self.assertRaises(NotAPath, target, b"//evil.example/v2/queues/q")

    def test_peerURL(self) -> None:
        """
        The URL on a peer keeps the peer's scheme, host and port whatever
        the path, with segments and query re-encoded.
        """
        peer = Peer("b", "https://10.0.0.2:9443")
        for uri, expected in (
            (b"/v2/queues/q/stats", b"/v2/queues/q/stats"),
            (
                b"/v2/queues/a%2Fb@c:d/x?x=1+2&y=%26",
                b"/v2/queues/a%2Fb%40c%3Ad/x?x=1%202&y=%26",
            ),
            # A query of bytes that are not UTF-8 keeps its bytes.
            (
                b"/v2/queues/q%20r/x?y=%ff&%fe=a+b/c&z",
                b"/v2/queues/q%20r/x?y=%FF&%FE=a%20b%2Fc&z=",
            ),
        ):
            path = target(uri)
            self.assertEqual(pathAndQuery(path), expected)
            self.assertEqual(peerURL(peer, path), b"https://10.0.0.2:9443" + expected)

    def test_plainTargetsAsHyperlinkGivesThem(self) -> None:
        """
        A target of unreserved characters is taken as it came, without
        hyperlink, and comes out the same as hyperlink makes it: the same
        segments and the same encoded target, over many targets built from
        characters that hyperlink keeps or encodes.
        """
        rng = random.Random(7)
        pieces = ["a", "Z", "9", ".", "~", "-", "_", "/", "?", "=", "&", "%2F", "+"]
        plain = 0
        for _ in range(20_000):
            uri = ("/" + "".join(rng.choices(pieces, k=rng.randint(1, 10)))).encode()
            try:
                slow = _parsed(uri)
            except NotAPath:
                self.assertRaises(NotAPath, target, uri)
                continue
            plain += _PLAIN.fullmatch(uri) is not None
            self.assertEqual(target(uri), slow, uri)
            self.assertEqual(list(_segments(uri)), list(slow.path), uri)
        self.assertGreater(plain, 1000)


class _Monitor(NullMonitor):
    def __init__(self) -> None:
        self.errors: list = []

    def forwardingError(self, peer: str) -> None:
        self.errors.append(peer)


def _request(uri: bytes, method: bytes = b"GET", headers=None) -> DummyRequest:
    request = DummyRequest([b""])
    request.method = method
    request.uri = uri
    request.content = BytesIO(b"")
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [value])
    return request


class DetectorTests(SynchronousTestCase):
    """
    The failure detector as forwarding feeds it (the router not started:
    no probes run).
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.peer = _Peer(self.reactor)
        self.monitor = _Monitor()
        self.router = ClusterRouter(_config(), self.reactor, monitor=self.monitor)

    def state(self) -> str:
        return self.router.membership.states["b"].state

    def forward(self, uri: bytes = b"/v2/queues/q/stats") -> Deferred:
        return self.router.forward(_request(uri), "p", "b")

    def timeout(self) -> None:
        d = self.forward()
        self.peer.connect()
        self.reactor.advance(5.1)
        self.failureResultOf(d, NodeUnavailable)

    def answer(self, status: bytes = b"204 No Content") -> Deferred:
        d = self.forward()
        protocol, _ = self.peer.connect()
        protocol.dataReceived(
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        return d

    def test_targetNotAPath(self) -> None:
        """
        A request whose target is not a path fails with a 400 before any
        connection, and the peer stays up, however many are sent.
        """
        for _ in range(10):
            for uri in (b"X/v2/queues/w1/stats", b"#/v2/queues/w1/stats"):
                e = self.failureResultOf(self.forward(uri), NotAPath).value
                self.assertIsInstance(e, ValidationFailed)
        self.assertEqual(self.reactor.tcpClients, [])
        self.assertEqual(self.state(), UNKNOWN)
        self.assertEqual(self.router.route("p", _queueOf(self.router, "b")), "b")

    def test_oneBadAnswerNeverMarksDown(self) -> None:
        """
        An answer over the size bound fails that request only: the peer
        stays up and the forwarding error is counted.
        """
        d = self.forward()
        protocol, _ = self.peer.connect()
        protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
        )
        self.assertEqual(self.failureResultOf(d, NodeUnavailable).value.kind, REQUEST)
        self.assertEqual(self.state(), UNKNOWN)
        self.assertEqual(self.monitor.errors, ["b"])

    def test_localShortageNeverMarksDown(self) -> None:
        """
        A connection this node could not make for want of its own
        resources (file descriptors, memory) fails that request only,
        however many times in a row: the peer stays up, and a warning is
        logged once until a peer answers again.
        """
        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        shortages = [
            # As Twisted's TCP client reports them: the socket not made,
            # or its connect() failing at once.
            ConnectBindError(errno.EMFILE, os.strerror(errno.EMFILE)),
            ConnectBindError(errno.ENFILE, os.strerror(errno.ENFILE)),
            getConnectError((errno.ENOBUFS, os.strerror(errno.ENOBUFS))),
            getConnectError((errno.ENOMEM, os.strerror(errno.ENOMEM))),
        ]
        for error in shortages:
            d = self.forward()
            self.peer.fail(error)
            failure = self.failureResultOf(d, NodeUnavailable)
            self.assertEqual(failure.value.kind, SHORT, error)
            self.assertIn("short of resources", failure.value.description)
        self.assertEqual(self.state(), UNKNOWN)
        warnings = [e for e in events if "could not connect" in e["log_format"]]
        self.assertEqual(len(warnings), 1)
        # An answer, then shortages again: warned again.
        self.successResultOf(self.answer())
        d = self.forward()
        self.peer.fail(shortages[0])
        self.failureResultOf(d, NodeUnavailable)
        warnings = [e for e in events if "could not connect" in e["log_format"]]
        self.assertEqual(len(warnings), 2)
        # A connection lost still counts: down_after of them mark it down.
        for _ in range(3):
            d = self.forward()
            self.peer.fail(ConnectError(string="lost"))
            self.assertEqual(self.failureResultOf(d, NodeUnavailable).value.kind, LOST)
        self.assertEqual(self.state(), DOWN)

    def test_lookupWithoutDescriptors(self) -> None:
        """
        A peer's name that could not be looked up while this node had no
        file descriptor left (C{getaddrinfo} fails then too) is this
        node's shortage; the same failure with descriptors to spare is
        the peer's, and marks it down at once.
        """
        soft, hard = limits.getrlimit(limits.RLIMIT_NOFILE)
        self.addCleanup(limits.setrlimit, limits.RLIMIT_NOFILE, (soft, hard))
        d = self.forward()
        # The lowest descriptor free: with the limit there, none is.
        free = os.dup(0)
        os.close(free)
        limits.setrlimit(limits.RLIMIT_NOFILE, (free, hard))
        try:
            self.peer.fail(DNSLookupError("name lookup failed"))
        finally:
            limits.setrlimit(limits.RLIMIT_NOFILE, (soft, hard))
        self.assertEqual(self.failureResultOf(d, NodeUnavailable).value.kind, SHORT)
        self.assertEqual(self.state(), UNKNOWN)
        d = self.forward()
        self.peer.fail(DNSLookupError("name lookup failed"))
        self.assertEqual(self.failureResultOf(d, NodeUnavailable).value.kind, REFUSED)
        self.assertEqual(self.state(), DOWN)

    def test_consecutiveTimeouts(self) -> None:
        """
        downAfter - 1 timeouts leave the peer up; an answer (any status, a
        refusal included) resets the count; downAfter timeouts in a row
        mark it down.  Each failure is counted by the monitor.
        """
        self.timeout()
        self.timeout()
        self.assertEqual(self.state(), UNKNOWN)
        self.successResultOf(self.answer(b"403 Forbidden"))
        self.assertEqual(self.state(), UP)
        self.timeout()
        self.timeout()
        self.assertEqual(self.state(), UP)
        self.timeout()
        self.assertEqual(self.state(), DOWN)
        self.assertEqual(self.monitor.errors, ["b"] * 5)
        self.assertRaises(
            NodeUnavailable, self.router.route, "p", _queueOf(self.router, "b")
        )

    def test_refusedMarksDown(self) -> None:
        """
        A refused connection (nothing listens) marks the peer down at once.
        """
        d = self.forward()
        self.peer.refuse()
        self.assertEqual(self.failureResultOf(d, NodeUnavailable).value.kind, REFUSED)
        self.assertEqual(self.state(), DOWN)

    def test_probeUsesProbeTimeout(self) -> None:
        """
        Probes give up after probeTimeout, not forwardTimeout, and count
        as timeouts; a 204 brings the peer back.
        """
        router = ClusterRouter(_config(probeTimeout=1, probeInterval=2), self.reactor)
        router.startService()
        self.addCleanup(router.stopService)
        for _ in range(3):
            self.peer.connect()
            self.reactor.advance(1.1)
            self.reactor.advance(0.9)
        self.assertEqual(router.membership.states["b"].state, DOWN)
        protocol, _ = self.peer.connect()
        protocol.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual(router.membership.states["b"].state, UP)


class OwnershipTests(SynchronousTestCase):
    """
    A node refuses signed requests for queues it does not own.
    """

    def test_forwardedForQueueNotOwned(self) -> None:
        """
        A request signed for node a, for a queue node b owns, is refused
        by a (a 503 naming b, which the sender tries once more); one for a
        queue a owns is taken; also when the path is percent-encoded.
        """
        clock = MemoryReactorClock()
        clock.advance(1_800_000_000)
        a = ClusterRouter(_config(), clock)
        b = ClusterRouter(_config(nodeName="b"), clock)
        for owner, taken in (("b", False), ("a", True)):
            queue = _queueOf(a, owner)
            encoded = "%" + queue[0].encode().hex() + queue[1:]
            for uri in (
                f"/v2/queues/{queue}/messages".encode(),
                f"/v2/projects/p/queues/{queue}/stats".encode(),
                f"/v2/queues/{encoded}/messages?limit=1".encode(),
                f"/v2/projects/%70/queues/{queue}/stats".encode(),
            ):
                headers = b.signer.headers(b"GET", uri, b"", "p", "a")
                request = _request(uri, headers=headers)
                if taken:
                    self.assertEqual(a.verify(request), "p")
                else:
                    error = self.assertRaises(QueueElsewhere, a.verify, request)
                    self.assertEqual(error.headers[HELD_BY], b"b")


def _queueOf(router: ClusterRouter, node: str) -> str:
    for i in range(1000):
        if router.ring.owner(key("p", f"q{i}")) == node:
            return f"q{i}"
    raise AssertionError("no queue found")


class _Answers(resource.Resource):
    """
    Answers as the API does: a request marked forwarded (its signature
    verified) as the owner, one whose answer carries a relayed request id
    as the forwarding node.
    """

    isLeaf = True

    def render(self, request):
        request.route = "postMessages"
        if request.path == b"/owner":
            request.forwarded = True
        elif request.path == b"/relay":
            request.setHeader(b"x-openstack-request-id", b"req-of-the-owner")
        return b"{}"


class _Served(NullMonitor):
    def __init__(self) -> None:
        self.served: list = []

    def requestServed(self, route: str, status: int, seconds: float) -> None:
        self.served.append((route, status))


class ForwardedAccessLogTests(TestCase):
    def setUp(self) -> None:
        self.monitor = _Served()
        site = MarconiSite(_Answers(), maxRequestBody=100, monitor=self.monitor)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}"
        self.events: list = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def access(self) -> list:
        return [e for e in self.events if e.get("log_namespace") == "marconi.access"]

    async def get(self, path: str):
        response = await treq.get(self.url + path, persistent=False)
        await treq.content(response)
        return response

    async def test_onceInTheCluster(self) -> None:
        """
        The owner writes no access line for a request forwarded to it (it
        still measures it); the forwarding node's line carries the request
        id the client got, the owner's.
        """
        await self.get("/owner")
        self.assertEqual(self.access(), [])
        self.assertEqual(len(self.monitor.served), 1)
        response = await self.get("/relay")
        self.assertEqual(
            response.headers.getRawHeaders(b"x-openstack-request-id"),
            [b"req-of-the-owner"],
        )
        [event] = self.access()
        self.assertEqual(event["request_id"], "req-of-the-owner")
        self.assertEqual((event["path"], event["status"]), ("/relay", 200))
