"""
A request whose head arrives whole is read at once (see
L{marconi.api.http.MarconiChannel}); the same bytes arriving a byte at a
time are read a line at a time by twisted.web.  Both must answer alike,
whatever the head holds.
"""

import re
from typing import Any, Optional

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import server

from marconi.api.http import MarconiSite
from tests.api.test_api_unit import InMemoryNode
from tests.apihelpers import CLIENT, connectChannel

IDENTITY = b"Client-ID: " + CLIENT.encode() + b"\r\nX-Project-ID: framing\r\n"


def head(line: bytes, headers: bytes = b"", identity: bytes = IDENTITY) -> bytes:
    """
    A request head: C{line}, a host, the identity headers and C{headers}.
    """
    return line + b"\r\nHost: x\r\n" + identity + headers + b"\r\n"


def put(queue: bytes, body: bytes = b'{"a": 1}', headers: bytes = b"") -> bytes:
    return (
        head(
            b"PUT /v2/queues/" + queue + b" HTTP/1.1",
            b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
            + headers,
        )
        + body
    )


GET_QUEUES = head(b"GET /v2/queues HTTP/1.1")

#: Requests, each as the writes a client makes of it.
CASES = {
    "plain": [GET_QUEUES],
    "body": [put(b"q1")],
    "bodyLater": [put(b"q1")[:-8], put(b"q1")[-8:]],
    "pipelined": [put(b"q1") + put(b"q2") + GET_QUEUES],
    "headThenPipelined": [put(b"q1") + GET_QUEUES[:20], GET_QUEUES[20:]],
    "lengthFirst": [
        head(
            b"PUT /v2/queues/q3 HTTP/1.1",
            b"Content-Length: 2\r\nContent-Type: application/json\r\n",
        )
        + b"{}"
    ],
    "spacesAroundValues": [
        head(
            b"GET /v2/queues HTTP/1.1",
            identity=b"Client-ID:\t " + CLIENT.encode() + b" \t\r\n"
            b"X-Project-ID:   framing\r\n",
        )
    ],
    "emptyValue": [head(b"GET /v2/queues HTTP/1.1", b"X-Empty:\r\n")],
    "blankValue": [head(b"GET /v2/queues HTTP/1.1", b"X-Blank: \t \r\n")],
    "innerBlanks": [head(b"GET /v2/queues HTTP/1.1", b"X-Inner:  a \t b\t\r\n")],
    # A long run of blanks inside a value is kept, and read in one pass.
    "longBlanks": [
        head(b"GET /v2/queues HTTP/1.1", b"X-Long: a" + b" " * 8000 + b"b \r\n")
    ],
    "repeatedNames": [
        head(b"GET /v2/queues HTTP/1.1", b"X-Twice: 1\r\nAccept: */*\r\nx-twice: 2\r\n")
    ],
    "oddCase": [
        head(
            b"PUT /v2/queues/q11 HTTP/1.1",
            b"cOnTeNt-TyPe: application/json\r\ncontent-length: 2\r\n"
            b"www-authenticate: x\r\n",
        )
        + b"{}"
    ],
    "encodedPath": [put(b"q%34"), head(b"GET /v2/queues/q4 HTTP/1.1")],
    "folded": [head(b"GET /v2/queues HTTP/1.1", b"X-Folded: a\r\n  b\r\n")],
    "foldedIdentity": [
        head(
            b"GET /v2/queues HTTP/1.1",
            identity=b"Client-ID: " + CLIENT.encode() + b"\r\nX-Project-ID:\r\n\tf\r\n",
        )
    ],
    "nameNotToken": [head(b"GET /v2/queues HTTP/1.1", b"Bad Name: x\r\n")],
    "nameEmpty": [head(b"GET /v2/queues HTTP/1.1", b": x\r\n")],
    "noColon": [head(b"GET /v2/queues HTTP/1.1", b"NoColon\r\n")],
    "nulInValue": [head(b"GET /v2/queues HTTP/1.1", b"X-Nul: a\x00b\r\n")],
    "bareLineFeed": [head(b"GET /v2/queues HTTP/1.1", b"X-Lf: a\nb\r\n")],
    "twoLengths": [put(b"q5", headers=b"Content-Length: 8\r\n")],
    "lengthNotDigits": [
        head(b"PUT /v2/queues/q6 HTTP/1.1", b"Content-Length: +8\r\n") + b"{}"
    ],
    "chunked": [
        head(b"PUT /v2/queues/q7 HTTP/1.1", b"Transfer-Encoding: chunked\r\n")
        + b"2\r\n{}\r\n0\r\n\r\n"
    ],
    "identityCoding": [
        head(b"PUT /v2/queues/q8 HTTP/1.1", b"Transfer-Encoding: identity\r\n")
    ],
    "tooLarge": [head(b"PUT /v2/queues/q9 HTTP/1.1", b"Content-Length: 20000\r\n")],
    "expectContinue": [
        head(
            b"PUT /v2/queues/q10 HTTP/1.1",
            b"Content-Length: 2\r\nExpect: 100-continue\r\n",
        ),
        b"{}",
    ],
    "lowerCaseMethod": [head(b"get /v2/queues HTTP/1.1")],
    "http10": [head(b"GET /v2/queues HTTP/1.0")],
    "http2Version": [head(b"GET /v2/queues HTTP/2.0")],
    "connectionClose": [head(b"GET /v2/queues HTTP/1.1", b"Connection: close\r\n")],
    "targetNotAPath": [head(b"GET * HTTP/1.1")],
    "spaceInTarget": [head(b"GET /v2/queues x HTTP/1.1")],
    "leadingEmptyLine": [b"\r\n" + GET_QUEUES],
    "twoSpaces": [head(b"GET  /v2/queues HTTP/1.1")],
    "longHeader": [
        head(b"GET /v2/queues HTTP/1.1", b"X-Big: " + b"y" * 9000 + b"\r\n")
    ],
    "headersTooLarge": [
        head(
            b"GET /v2/queues HTTP/1.1",
            b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 4000) for i in range(5)),
        )
    ],
    "tooManyHeaders": [
        head(
            b"GET /v2/queues HTTP/1.1",
            b"".join(b"X-%d: y\r\n" % i for i in range(101)),
        )
    ],
    "mostHeaders": [
        head(
            b"GET /v2/queues HTTP/1.1",
            b"".join(b"X-%d: y\r\n" % i for i in range(96)),
        )
    ],
}


def _feed(transport: Any, writes: list, byteAtATime: bool) -> None:
    """
    Give a node's channel C{writes}, as they are or a byte at a time,
    until it closes the connection.
    """
    for data in writes:
        pieces = [data[i : i + 1] for i in range(len(data))] if byteAtATime else [data]
        for piece in pieces:
            if not transport.disconnecting:
                transport.protocol.dataReceived(piece)


class WholeHeadTests(SynchronousTestCase):
    def connect(self) -> StringTransport:
        """
        A connection to a new node of its own.
        """
        node = InMemoryNode(self)
        site = MarconiSite(
            node.api.resource(), maxRequestBody=10_000, reactor=node.clock
        )
        return connectChannel(self, site)

    def answers(self, writes: list, byteAtATime: bool) -> tuple:
        """
        What a new node answers to C{writes}, sent as they are or a byte at
        a time (with the request ids and dates, which differ, left out),
        and whether it closed the connection.
        """
        transport = self.connect()
        _feed(transport, writes, byteAtATime)
        text = re.sub(rb"req-[0-9a-f]{32}", b"req-ID", transport.value())
        text = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: D", text)
        return text, transport.disconnecting

    def headers(self, writes: list, byteAtATime: bool) -> list:
        """
        The headers of each request a new node read from C{writes}, as
        twisted.web's L{Headers} holds them, in order.
        """
        transport = self.connect()
        seen = []
        resource = transport.protocol.site.resource

        class Recording:
            isLeaf = True

            def render(self, request: Any) -> Any:
                seen.append(list(request.requestHeaders.getAllRawHeaders()))
                return resource.render(request)

        transport.protocol.site.resource = Recording()
        _feed(transport, writes, byteAtATime)
        return seen

    def lineCalls(self, data: bytes) -> Optional[int]:
        """
        How many lines of C{data}, sent at once, were read one at a time.
        """
        transport = self.connect()
        channel = transport.protocol
        calls = []
        read = channel.lineReceived

        def counted(line: bytes) -> None:
            calls.append(line)
            read(line)

        channel.lineReceived = counted
        channel.dataReceived(data)
        return len(calls)

    def test_sameAnswers(self) -> None:
        """
        Every request, its head whole in one write or not, plain or not,
        is answered as when it arrives a byte at a time.
        """
        for name, writes in CASES.items():
            at_once = self.answers(writes, False)
            dripped = self.answers(writes, True)
            self.assertEqual(at_once, dripped, name)
            self.assertIn(b"HTTP/1.", at_once[0], name)

    def test_sameHeaders(self) -> None:
        """
        Every request, its head whole in one write or not, is rendered with
        the same headers, names, values and order, as when it arrives a
        byte at a time.
        """
        for name, writes in CASES.items():
            self.assertEqual(
                self.headers(writes, False), self.headers(writes, True), name
            )
        self.assertEqual(
            self.headers(CASES["innerBlanks"], False)[0][-1],
            (b"X-Inner", [b"a \t b"]),
        )

    def test_plainHeadAtOnce(self) -> None:
        """
        A plain head arriving whole is read at once, not a line at a time;
        one with a folded line is left to twisted.web.
        """
        self.assertEqual(self.lineCalls(CASES["plain"][0]), 0)
        self.assertEqual(self.lineCalls(CASES["body"][0]), 0)
        self.assertGreater(self.lineCalls(CASES["folded"][0]), 0)
        self.assertGreater(self.lineCalls(CASES["nulInValue"][0]), 0)


class AnswerHeadTests(SynchronousTestCase):
    def test_serverAndDate(self) -> None:
        """
        An answer carries twisted.web's C{Server} header and the C{Date},
        after the request id, as twisted.web writes them.
        """
        transport = WholeHeadTests("test_sameAnswers").connect()
        transport.protocol.dataReceived(GET_QUEUES)
        lines = transport.value().split(b"\r\n\r\n")[0].split(b"\r\n")
        self.assertEqual(lines[0], b"HTTP/1.1 200 OK")
        self.assertRegex(lines[1], rb"\AX-Openstack-Request-Id: req-[0-9a-f]{32}\Z")
        self.assertEqual(lines[2], b"Server: " + server.version)
        self.assertRegex(
            lines[3],
            rb"\ADate: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d "
            rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
            rb"\d\d:\d\d:\d\d GMT\Z",
        )


class AddressTests(SynchronousTestCase):
    def test_askedOnce(self) -> None:
        """
        Every request of a connection has the connection's addresses, which
        the transport is asked for once.
        """
        transport = WholeHeadTests("test_sameAnswers").connect()
        asked = []
        for name in ("getPeer", "getHost"):
            method = getattr(transport, name)

            def counted(name: str = name, method: Any = method) -> Any:
                asked.append(name)
                return method()

            setattr(transport, name, counted)
        seen = []
        resource = transport.protocol.site.resource

        class Recording:
            isLeaf = True

            def render(self, request: Any) -> Any:
                seen.append((request.getClientAddress(), request.getHost()))
                return resource.render(request)

        transport.protocol.site.resource = Recording()
        transport.protocol.dataReceived(GET_QUEUES + GET_QUEUES)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK\r\n"), 2)
        self.assertEqual(sorted(asked), ["getHost", "getPeer"])
        self.assertEqual(seen, [(transport.getPeer(), transport.getHost())] * 2)
