"""
Abuse limits of the HTTP front end: oversized request lines, headers and
bodies and request framing over real loopback sockets; slow-drip clients
and idle connections over L{StringTransport} with a L{Clock}.
"""

import json

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from marconi.api.http import MarconiChannel, MarconiSite
from marconi.core.limits import Limits
from tests import rawhttp
from tests.api.test_api_unit import InMemoryNode
from tests.apihelpers import CLIENT, Node, connectChannel

IDENTITY = b"Client-ID: " + CLIENT.encode() + b"\r\nX-Project-ID: abuse\r\n"


def request(path: bytes, headers: bytes = b"") -> bytes:
    """
    A GET of C{path} with the identity headers.
    """
    return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + IDENTITY + headers + b"\r\n"


class AbuseTestCase(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.node = Node(self, Limits(maxMessagesPostSize=10_000))

    def request(self, path: bytes, headers: bytes = b"") -> bytes:
        return request(path, headers)


class LineAndHeaderLimitTests(AbuseTestCase):
    async def test_longQueryString(self) -> None:
        """
        A 1 MB query string is answered 414 with a JSON error, and the
        connection is closed.
        """
        port = self.node.port.getHost().port
        answer = await rawhttp.exchange(
            port, self.request(b"/v2/queues?marker=" + b"a" * 1_000_000)
        )
        self.assertEqual(rawhttp.status(answer), 414, answer[:200])
        self.assertIn(b'"title"', answer)

    async def test_requestLineJustUnderLimit(self) -> None:
        """
        A request line within the limit is served normally.
        """
        path = b"/v2/queues?marker=" + b"a" * (MarconiChannel.MAX_LENGTH - 100)
        r = await self.node.request("GET", path.decode())
        self.assertEqual(r.code, 200)

    async def test_longHeaderLine(self) -> None:
        """
        A header line over the limit is answered 431 and the connection
        closed.
        """
        port = self.node.port.getHost().port
        answer = await rawhttp.exchange(
            port, self.request(b"/v2/queues", b"X-Big: " + b"y" * 100_000 + b"\r\n")
        )
        self.assertEqual(rawhttp.status(answer), 431, answer[:200])
        self.assertIn(b'"title"', answer)

    async def test_headersTooLargeInTotal(self) -> None:
        """
        Many header lines, each within the limit, that exceed the total
        header size are answered 431.
        """
        port = self.node.port.getHost().port
        many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 4000) for i in range(8))
        answer = await rawhttp.exchange(port, self.request(b"/v2/queues", many))
        self.assertEqual(rawhttp.status(answer), 431, answer[:200])

    async def test_tooManyHeaders(self) -> None:
        """
        More header lines than allowed are refused with 400.
        """
        port = self.node.port.getHost().port
        many = b"".join(b"X-%d: y\r\n" % i for i in range(600))
        answer = await rawhttp.exchange(port, self.request(b"/v2/queues", many))
        self.assertEqual(rawhttp.status(answer), 400, answer[:200])

    async def test_contentLengthAndChunked(self) -> None:
        """
        A request with both Content-Length and chunked Transfer-Encoding (a
        smuggling vector) is refused with 400.
        """
        port = self.node.port.getHost().port
        answer = await rawhttp.exchange(
            port,
            b"POST /v2/queues/q/messages HTTP/1.1\r\nHost: x\r\n"
            + IDENTITY
            + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        self.assertEqual(rawhttp.status(answer), 400, answer[:200])

    async def test_chunkedPastLimit(self) -> None:
        """
        A chunked body that grows past the body limit is cut off with 413,
        the connection closed, and nothing is stored.
        """
        port = self.node.port.getHost().port
        client = await rawhttp.connect(port)
        client.transport.write(
            b"POST /v2/queues/q/messages HTTP/1.1\r\nHost: x\r\n"
            + IDENTITY
            + b"Content-Type: application/json\r\n"
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"1000\r\n" + b" " * 0x1000 + b"\r\n"
        for _ in range(64):
            if client.isClosed:
                break
            client.transport.write(chunk)
        answer = await rawhttp.closedWithin(client, 10)
        self.assertEqual(rawhttp.status(answer), 413, answer[:200])
        r = await self.node.request("GET", "/v2/queues/q/stats", project="abuse")
        self.assertEqual(r.json["messages"]["total"], 0)


class RequestFramingTests(AbuseTestCase):
    async def test_transferEncodingIdentity(self) -> None:
        """
        A request with C{Transfer-Encoding: identity} is refused with 501 and
        its body is not read as a second request.
        """
        port = self.node.port.getHost().port
        smuggled = b"PUT /v2/queues/smuggled HTTP/1.1\r\nHost: x\r\n" + IDENTITY
        answer = await rawhttp.exchange(
            port,
            b"POST /v2/queues/q/messages HTTP/1.1\r\nHost: x\r\n"
            + IDENTITY
            + b"Transfer-Encoding: identity\r\n\r\n"
            + smuggled
            + b"\r\n",
        )
        self.assertEqual(rawhttp.status(answer), 501, answer[:200])
        self.assertEqual(answer.count(b"HTTP/1.1 "), 1, answer)
        self.assertIn(b'"title"', answer)
        r = await self.node.request("GET", "/v2/queues", project="abuse")
        self.assertEqual(r.json["queues"], [])

    async def test_targetNotAPath(self) -> None:
        """
        A request target that is not a path (C{X/...}, C{#...}, C{@...},
        C{*}, absolute-form naming another host) is a JSON 400 before any
        routing, and nothing is created.
        """
        port = self.node.port.getHost().port
        for target in (
            b"X/v2/queues/w1",
            b"#/v2/queues/w1",
            b"@evil.example/v2/queues/w1",
            b"*",
            b"http://evil.example/v2/queues/w1",
        ):
            answer = await rawhttp.exchange(
                port,
                b"PUT "
                + target
                + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                + IDENTITY
                + b"\r\n",
            )
            self.assertEqual(rawhttp.status(answer), 400, (target, answer[:300]))
            body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            self.assertEqual(sorted(body), ["description", "title"])
        r = await self.node.request("GET", "/v2/queues", project="abuse")
        self.assertEqual(r.json["queues"], [])


class SlowClientTests(SynchronousTestCase):
    """
    The idle timeout and the header and body deadlines, on connections to
    the site over L{StringTransport}, with the site's time from a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.api = InMemoryNode(self).api

    def connect(self, **siteOptions) -> StringTransport:
        """
        A new connection to a site with the given options.
        """
        site = MarconiSite(
            self.api.resource(),
            maxRequestBody=10_000,
            reactor=self.clock,
            **siteOptions,
        )
        return connectChannel(self, site)

    def drip(self, transport: StringTransport, data: bytes, interval: float) -> int:
        """
        Send C{data} a byte every C{interval} seconds until it is all sent or
        the server closes the connection; return how many bytes were sent.
        """
        for sent in range(len(data)):
            if transport.disconnecting:
                return sent
            transport.protocol.dataReceived(data[sent : sent + 1])
            self.clock.advance(interval)
        return len(data)

    def test_idleConnectionClosed(self) -> None:
        """
        A connection that sends nothing is closed by the idle timeout, not
        before.
        """
        transport = self.connect(timeout=30)
        self.clock.advance(29.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)

    def test_idleAfterRequestClosed(self) -> None:
        """
        A keep-alive connection left idle after a complete request is
        closed by the idle timeout, after its answer was delivered.
        """
        transport = self.connect(timeout=30)
        transport.protocol.dataReceived(request(b"/v2/ping"))
        self.assertEqual(rawhttp.status(transport.value()), 204)
        self.clock.advance(29.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)

    def test_slowHeadersCutOff(self) -> None:
        """
        A client dripping its headers a byte at a time (which resets the
        idle timeout on every byte) is answered 408 and disconnected once
        the header deadline passes.
        """
        transport = self.connect(timeout=60, headerTimeout=5)
        sent = self.drip(
            transport, request(b"/v2/queues", b"X-Slow: " + b"z" * 1000), 0.25
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(rawhttp.status(transport.value()), 408)
        self.assertEqual(sent, 20)

    def test_slowBodyCutOff(self) -> None:
        """
        A client that sends its headers at once but drips its body is
        answered 408 and disconnected once the body deadline passes.
        """
        transport = self.connect(timeout=60, bodyTimeout=5)
        transport.protocol.dataReceived(
            b"POST /v2/queues/q/messages HTTP/1.1\r\nHost: x\r\n"
            + IDENTITY
            + b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
        )
        sent = self.drip(transport, b" " * 5000, 0.25)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(rawhttp.status(transport.value()), 408)
        self.assertEqual(sent, 20)

    def test_slowlorisDoesNotStarve(self) -> None:
        """
        While 200 clients hold connections open with unfinished headers, a
        normal client is served; once the header deadline passes every slow
        connection has been answered 408 and closed.
        """
        slow = [self.connect(timeout=60, headerTimeout=2) for _ in range(200)]
        for transport in slow:
            # The headers are never finished.
            transport.protocol.dataReceived(request(b"/v2/queues", b"X-Slow: z"))
        self.clock.advance(1.9)
        normal = self.connect(timeout=60, headerTimeout=2)
        normal.protocol.dataReceived(request(b"/v2/queues/probe/stats"))
        self.assertEqual(rawhttp.status(normal.value()), 200)
        self.assertFalse(any(t.disconnecting for t in slow))
        self.clock.advance(0.2)
        for transport in slow:
            self.assertTrue(transport.disconnecting)
            self.assertEqual(rawhttp.status(transport.value()), 408)

    def test_slowSecondRequestCutOff(self) -> None:
        """
        The header deadline of a later request on a keep-alive connection
        runs from that request's first byte: a request answered at once,
        then one whose headers drip, is answered 408 once the second's
        deadline passes, not the first's.
        """
        transport = self.connect(timeout=60, headerTimeout=5)
        transport.protocol.dataReceived(request(b"/v2/ping"))
        self.assertEqual(rawhttp.status(transport.value()), 204)
        transport.clear()
        self.clock.advance(3)
        sent = self.drip(
            transport, request(b"/v2/queues", b"X-Slow: " + b"z" * 1000), 0.25
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(rawhttp.status(transport.value()), 408)
        self.assertEqual(sent, 20)

    def test_deadlinesScheduleNoTimerPerRequest(self) -> None:
        """
        Requests that arrive in time schedule no deadline timer each: forty
        requests on one connection leave the channel's one timer in place.
        """
        transport = self.connect(timeout=60, headerTimeout=5, bodyTimeout=5)
        scheduled = []
        callLater = transport.protocol.callLater

        def counting(seconds, f, *args, **kwargs):
            scheduled.append(getattr(f, "__name__", f))
            return callLater(seconds, f, *args, **kwargs)

        transport.protocol.callLater = counting
        for _ in range(40):
            transport.protocol.dataReceived(request(b"/v2/ping"))
            self.clock.advance(0.01)
        self.assertEqual(rawhttp.status(transport.value()), 204)
        # Nor is the idle timeout, which twisted.web suspends during each.
        self.assertLessEqual(len(scheduled), 1)
        self.assertFalse(transport.disconnecting)

    def test_idleAfterLaterRequestClosed(self) -> None:
        """
        The idle timeout counts from the end of the last request, not the
        first: a connection used again before it runs out stays open that
        long after, and no longer.
        """
        transport = self.connect(timeout=30)
        transport.protocol.dataReceived(request(b"/v2/ping"))
        self.clock.advance(20)
        transport.protocol.dataReceived(request(b"/v2/ping"))
        self.assertEqual(transport.value().count(b" 204 "), 2)
        self.clock.advance(29.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)

    def test_idleWhileServingNotCounted(self) -> None:
        """
        A request that takes longer than the idle timeout to answer is not
        cut off, and the timeout counts from its answer.
        """
        node = InMemoryNode(self, Limits(maxWait=60))
        # The site and the API on one clock: the long poll's.
        self.clock = node.clock
        self.api = node.api
        transport = self.connect(timeout=30)
        transport.protocol.dataReceived(request(b"/v2/queues/q/messages?wait=50"))
        self.clock.advance(45)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(6)
        self.assertEqual(rawhttp.status(transport.value()), 200)
        self.clock.advance(29.5)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
