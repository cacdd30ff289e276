"""
Talking to a peer: the bounds of L{PeerClient} (header timeout, body
timeout, body size, unreachable peer) against real loopback servers, and
what is forwarded and relayed.
"""

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web import resource, server
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest

from marconi.cluster import signing
from marconi.cluster.errors import NodeUnavailable
from marconi.cluster.forward import Answer, PeerClient, forwardHeaders, relayHeaders
from marconi.cluster.settings import ClusterConfig, Peer
from tests.test_cluster_integration import freePort

SECRET = b"s" * 32


class _Big(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"x" * 5000


class _Stalled(resource.Resource):
    """
    Sends headers and a little of the body, then nothing.
    """

    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-length", b"100")
        request.write(b"partial")
        return server.NOT_DONE_YET


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

    async def refused(self, client, peer, text) -> None:
        try:
            await client.call(peer, b"GET", b"/v2/ping", Headers(), b"")
        except NodeUnavailable as e:
            self.assertIn("Cluster node b ", e.description)
            self.assertIn(text, e.description)
        else:
            self.fail("NodeUnavailable not raised")

    async def test_bodyTooLarge(self) -> None:
        """
        A body over maxResponseBody is refused: the peer is unavailable.
        """
        peer = self.serve(server.Site(_Big()))
        await self.refused(self.client(), peer, "over 1000 bytes")

    async def test_bodyTimeout(self) -> None:
        """
        A body that stops coming is given up after bodyTimeout.
        """
        peer = self.serve(server.Site(_Stalled()))
        started = reactor.seconds()
        await self.refused(self.client(), peer, "in time")
        self.assertLess(reactor.seconds() - started, 5)

    async def test_headerTimeout(self) -> None:
        """
        A peer that accepts the connection but never answers is given up
        after forwardTimeout.
        """
        peer = self.serve(Factory.forProtocol(_Silent))
        started = reactor.seconds()
        await self.refused(self.client(), peer, "in time")
        self.assertLess(reactor.seconds() - started, 5)

    async def test_unreachable(self) -> None:
        """
        A peer nobody listens for is unavailable, with the reason.
        """
        peer = Peer("b", f"http://127.0.0.1:{freePort()}")
        await self.refused(self.client(), peer, "could not be reached")

    async def test_roundTrip(self) -> None:
        """
        A request's method, path, query, headers and body arrive at the
        peer; its status, headers and body come back whole.
        """
        peer = self.serve(server.Site(_Echo()))
        answer = await self.client().call(
            peer,
            b"POST",
            b"/v2/queues/q/messages?a=1&b=%20x",
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
        d = Deferred.fromCoroutine(
            self.client().call(peer, b"GET", b"/v2/ping", Headers(), b"")
        )
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
