"""
gzip content coding: request bodies inflated within the body limit (gzip
bombs refused), answers gzip'd when asked, other codings refused.
"""

import gzip as stdgzip
import json
import zlib

from twisted.trial.unittest import SynchronousTestCase, TestCase

from marconi.api.media import gzip
from marconi.core.errors import InvalidBody, PayloadTooLarge
from marconi.core.limits import Limits
from tests import rawhttp
from tests.apihelpers import CLIENT, Node

LIMIT = 10_000


def bomb(inflated: int) -> bytes:
    """
    A gzip member of C{inflated} zero bytes (about a thousandth of that
    compressed), made a megabyte at a time.
    """
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    parts = [deflate.compress(zeros) for _ in range(inflated >> 20)]
    return b"".join(parts) + deflate.flush()


class InflaterTests(SynchronousTestCase):
    """
    L{gzip.Inflater} on its own.
    """

    def test_bombStopsAtTheLimit(self) -> None:
        """
        A body that would inflate to 1 GiB is refused once one byte past
        the limit was inflated, fed in one piece or in many.
        """
        compressed = bomb(1 << 30)
        self.assertLess(len(compressed), 1_100_000)
        for pieces in (1, 64):
            inflater = gzip.Inflater(LIMIT)
            step = -(-len(compressed) // pieces)
            with self.assertRaises(PayloadTooLarge):
                for i in range(0, len(compressed), step):
                    inflater.feed(compressed[i : i + step])
            self.assertEqual(inflater.size, LIMIT + 1)

    def test_exactlyTheLimit(self) -> None:
        """
        A body that inflates to exactly the limit is accepted whole.
        """
        body = bytes(range(256)) * (LIMIT // 256) + b"x" * (LIMIT % 256)
        inflater = gzip.Inflater(LIMIT)
        self.assertEqual(inflater.feed(stdgzip.compress(body)), body)
        inflater.close()

    def test_membersAndPieces(self) -> None:
        """
        Several gzip members one after another are one body, whatever the
        pieces they arrive in.
        """
        data = stdgzip.compress(b"hello ") + stdgzip.compress(b"world")
        inflater = gzip.Inflater(LIMIT)
        out = b"".join(inflater.feed(data[i : i + 3]) for i in range(0, len(data), 3))
        inflater.close()
        self.assertEqual(out, b"hello world")

    def test_notGzip(self) -> None:
        """
        Bytes that are not gzip, trailing garbage and a truncated stream
        are L{InvalidBody}.
        """
        self.assertRaises(InvalidBody, gzip.Inflater(LIMIT).feed, b"plain text")
        trailing = stdgzip.compress(b"x") + b"garbage"
        self.assertRaises(InvalidBody, gzip.Inflater(LIMIT).feed, trailing)
        inflater = gzip.Inflater(LIMIT)
        inflater.feed(stdgzip.compress(b"x" * 100)[:-6])
        self.assertRaises(InvalidBody, inflater.close)

    def test_requestCoding(self) -> None:
        """
        gzip (also as x-gzip, any case, beside identity) is the one coding
        read; none or identity alone is none; anything else is refused.
        """
        self.assertIsNone(gzip.requestCoding(None))
        self.assertIsNone(gzip.requestCoding([b"identity"]))
        for values in ([b"gzip"], [b"GZip"], [b"x-gzip"], [b"identity, gzip"]):
            self.assertEqual(gzip.requestCoding(values), "gzip", values)
        for values in ([b"br"], [b"deflate"], [b"gzip, gzip"], [b"gzip", b"br"]):
            self.assertRaises(gzip.UnsupportedCoding, gzip.requestCoding, values)

    def test_wanted(self) -> None:
        """
        Answers are gzip'd from the threshold on, when Accept-Encoding
        admits gzip (by name or by *), never when it refuses it.
        """
        big = gzip.THRESHOLD
        self.assertTrue(gzip.wanted(b"gzip", big))
        self.assertTrue(gzip.wanted(b"deflate, gzip;q=0.5", big))
        self.assertTrue(gzip.wanted(b"*", big))
        self.assertFalse(gzip.wanted(b"gzip", big - 1))
        self.assertFalse(gzip.wanted(None, big))
        self.assertFalse(gzip.wanted(b"gzip;q=0", big))
        self.assertFalse(gzip.wanted(b"br, identity", big))


def rawPost(path: bytes, body: bytes, headers: bytes = b"") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\nX-Project-ID: p\r\n"
        b"Client-ID: %s\r\nContent-Length: %d\r\n%s\r\n"
        % (path, CLIENT.encode(), len(body), headers)
    ) + body


class SiteTests(TestCase):
    """
    gzip through a node on a real socket.
    """

    timeout = 60

    def setUp(self) -> None:
        self.node = Node(self, Limits(maxMessagesPostSize=LIMIT))

    def messages(self, count: int, size: int = 10) -> bytes:
        return json.dumps(
            {"messages": [{"ttl": 300, "body": "m" * size} for _ in range(count)]}
        ).encode()

    async def test_gzipBodyPosted(self) -> None:
        """
        A gzip'd body is posted as if it were plain, and its size counted
        inflated.
        """
        r = await self.node.request(
            "POST",
            "/v2/queues/q/messages",
            raw=stdgzip.compress(self.messages(2)),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        self.assertEqual(r.code, 201, r.body)
        self.assertEqual(len(r.json["resources"]), 2)

    async def test_bomb(self) -> None:
        """
        A body of 8 kB, under the limit, that inflates to 8 MiB is answered
        413 with an error body and the connection closed, and nothing is
        posted.
        """
        body = bomb(8 << 20)
        self.assertLess(len(body), LIMIT)
        answer = await rawhttp.exchange(
            self.node.port.getHost().port,
            rawPost(b"/v2/queues/q/messages", body, b"Content-Encoding: gzip\r\n"),
        )
        self.assertEqual(rawhttp.status(answer), 413, answer[:300])
        self.assertIn(b"once inflated", answer)
        r = await self.node.request("GET", "/v2/queues/q/messages?echo=true")
        self.assertEqual(r.code, 200)
        self.assertEqual(r.json["messages"], [])

    async def test_bombErrorInXML(self) -> None:
        """
        The 413 of a gzip bomb is written in XML to a client that asks for
        XML.
        """
        answer = await rawhttp.exchange(
            self.node.port.getHost().port,
            rawPost(
                b"/v2/queues/q/messages",
                bomb(8 << 20),
                b"Content-Encoding: gzip\r\nAccept: application/xml\r\n",
            ),
        )
        self.assertEqual(rawhttp.status(answer), 413, answer[:300])
        self.assertIn(b"Content-Type: application/xml", answer)
        self.assertIn(b'<string key="title">', answer)

    async def test_badGzip(self) -> None:
        """
        A body marked gzip that is not, or is cut short, is answered 400
        and posts nothing.
        """
        for body in (self.messages(1), stdgzip.compress(self.messages(1))[:-4]):
            r = await self.node.request(
                "POST",
                "/v2/queues/q/messages",
                raw=body,
                headers={"Content-Encoding": "gzip"},
            )
            self.assertEqual(r.code, 400, r.body)
            self.assertIn("gzip", r.json["description"])
        r = await self.node.request("GET", "/v2/queues/q/messages?echo=true")
        self.assertEqual(r.json["messages"], [])

    async def test_unknownCoding(self) -> None:
        """
        A body in a content coding other than gzip is answered 415.
        """
        r = await self.node.request(
            "POST",
            "/v2/queues/q/messages",
            raw=zlib.compress(self.messages(1)),
            headers={"Content-Encoding": "deflate"},
        )
        self.assertEqual(r.code, 415, r.body)
        self.assertEqual(r.json["title"], "Unsupported media type")

    async def get(self, path: bytes, headers: bytes = b"") -> tuple:
        """
        The status, headers (lower-case names) and body of a GET, over a
        raw connection (HTTP clients decode gzip answers themselves).
        """
        answer = await rawhttp.exchange(
            self.node.port.getHost().port,
            b"GET %s HTTP/1.1\r\nHost: x\r\nX-Project-ID: p\r\nClient-ID: %s\r\n"
            b"Connection: close\r\n%s\r\n" % (path, CLIENT.encode(), headers),
        )
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")[1:]
        fields = dict(line.lower().split(b": ", 1) for line in lines)
        return rawhttp.status(answer), fields, body

    async def test_answersGzipped(self) -> None:
        """
        An answer of at least the threshold is gzip'd for a client that
        accepts gzip, and says it varies with Accept-Encoding; smaller
        answers, and answers to other clients, are plain.
        """
        await self.node.post("q", *({"ttl": 300, "body": "m" * 200},) * 10)
        path = b"/v2/queues/q/messages?echo=true"
        code, headers, plain = await self.get(path)
        self.assertEqual(code, 200)
        self.assertGreater(len(plain), gzip.THRESHOLD)
        self.assertNotIn(b"content-encoding", headers)
        self.assertEqual(headers[b"vary"], b"accept-encoding")
        code, headers, packed = await self.get(path, b"Accept-Encoding: gzip\r\n")
        self.assertEqual(code, 200)
        self.assertEqual(headers[b"content-encoding"], b"gzip")
        self.assertEqual(headers[b"content-length"], b"%d" % len(packed))
        self.assertLess(len(packed), len(plain))
        self.assertEqual(stdgzip.decompress(packed), plain)
        code, headers, small = await self.get(
            b"/v2/queues/q/stats", b"Accept-Encoding: gzip\r\n"
        )
        self.assertEqual(code, 200)
        self.assertLess(len(small), gzip.THRESHOLD)
        self.assertNotIn(b"content-encoding", headers)

    async def test_codingWithoutBody(self) -> None:
        """
        A request without a body may name any content coding: there is
        nothing to inflate or refuse.
        """
        for coding in (b"gzip", b"br"):
            code, _, body = await self.get(
                b"/v2/queues", b"Content-Encoding: %s\r\n" % coding
            )
            self.assertEqual(code, 200, body)
