"""
Abuse limits of the HTTP front end, over real loopback sockets: oversized
request lines, headers and bodies, slow-drip clients and idle connections.
"""

import json

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from marconi.api.http import MarconiChannel, MarconiSite
from marconi.core.limits import Limits
from tests import rawhttp
from tests.apihelpers import CLIENT, Node

IDENTITY = b"Client-ID: " + CLIENT.encode() + b"\r\nX-Project-ID: abuse\r\n"


class AbuseTestCase(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.node = Node(self, Limits(maxMessagesPostSize=10_000))

    def listen(self, **siteOptions) -> int:
        """
        Serve the node's API on another port, with the given site options.
        """
        site = MarconiSite(
            self.node.api.resource(), maxRequestBody=10_000, **siteOptions
        )
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def request(self, path: bytes, headers: bytes = b"") -> bytes:
        return (
            b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + IDENTITY + headers + b"\r\n"
        )


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


class SlowClientTests(AbuseTestCase):
    async def test_idleConnectionClosed(self) -> None:
        """
        A connection that sends nothing is closed by the idle timeout.
        """
        port = self.listen(timeout=0.5)
        client = await rawhttp.connect(port)
        await rawhttp.closedWithin(client, 10)

    async def test_idleAfterRequestClosed(self) -> None:
        """
        A keep-alive connection left idle after a complete request is
        closed by the idle timeout, after its answer was delivered.
        """
        port = self.listen(timeout=0.5)
        client = await rawhttp.connect(port)
        client.transport.write(self.request(b"/v2/ping"))
        answer = await rawhttp.closedWithin(client, 10)
        self.assertEqual(rawhttp.status(answer), 204)

    async def test_slowHeadersCutOff(self) -> None:
        """
        A client dripping its headers a byte at a time (which resets the
        idle timeout on every byte) is answered 408 and disconnected once
        the header deadline passes.
        """
        port = self.listen(timeout=60, headerTimeout=0.5)
        client = await rawhttp.connect(port)
        client.drip(self.request(b"/v2/queues") + b"X-Slow: " + b"z" * 1000, 0.05)
        answer = await rawhttp.closedWithin(client, 10)
        self.assertEqual(rawhttp.status(answer), 408, answer[:200])

    async def test_slowBodyCutOff(self) -> None:
        """
        A client that sends its headers at once but drips its body is
        answered 408 and disconnected once the body deadline passes.
        """
        port = self.listen(timeout=60, bodyTimeout=0.5)
        client = await rawhttp.connect(port)
        client.transport.write(
            b"POST /v2/queues/q/messages HTTP/1.1\r\nHost: x\r\n"
            + IDENTITY
            + b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
        )
        client.drip(b" " * 5000, 0.05)
        answer = await rawhttp.closedWithin(client, 10)
        self.assertEqual(rawhttp.status(answer), 408, answer[:200])

    async def test_slowlorisDoesNotStarve(self) -> None:
        """
        While 200 slow-drip clients hold connections open, a normal client
        keeps being served; afterwards every slow connection has been
        closed by the server.
        """
        port = self.listen(timeout=60, headerTimeout=2)
        slow = await gatherResults(
            [Deferred.fromCoroutine(rawhttp.connect(port)) for _ in range(200)]
        )
        for client in slow:
            client.drip(self.request(b"/v2/queues") + b"X-Slow: " + b"z" * 10_000, 0.1)
        self.node.url = f"http://127.0.0.1:{port}"
        codes = []
        for i in range(30):
            r = await self.node.request(
                "POST", "/v2/queues/probe/messages", {"messages": [{"body": i}]}
            )
            codes.append(r.code)
        self.assertEqual(codes, [201] * 30)
        for client in slow:
            answer = await rawhttp.closedWithin(client, 20)
            self.assertEqual(rawhttp.status(answer), 408)
