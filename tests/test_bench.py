"""
Tests for the benchmark harness in C{bench/}: the driver's HTTP parsing and
bookkeeping, the baseline server's answers and the results table.  Nothing
here is timed.
"""

import json

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from bench import baseline, driver, run


class ResponseParserTests(SynchronousTestCase):
    """
    L{driver.ResponseParser} takes whole responses out of a byte stream.
    """

    def test_contentLengthInPieces(self):
        """
        A response with a Content-Length is complete only once all of its
        body has arrived, however the bytes are split.
        """
        parser = driver.ResponseParser()
        raw = b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello"
        results = [parser.feed(raw[i : i + 7]) for i in range(0, len(raw), 7)]
        self.assertEqual(results[:-1], [None] * (len(results) - 1))
        self.assertEqual(results[-1], (201, b"hello", False))

    def test_chunked(self):
        """
        A chunked body is joined, chunk extensions and trailers are skipped.
        """
        parser = driver.ResponseParser()
        raw = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n"
        )
        self.assertIsNone(parser.feed(raw[:-3]))
        self.assertEqual(parser.feed(raw[-3:]), (200, b"abcde", False))
        self.assertEqual(bytes(parser.buffer), b"")

    def test_noContentAndClose(self):
        """
        A 204 has no body even without a length, and C{Connection: close}
        is reported.
        """
        parser = driver.ResponseParser()
        raw = b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
        self.assertEqual(parser.feed(raw), (204, b"", True))

    def test_twoResponses(self):
        """
        Bytes of a second response stay buffered for the next call.
        """
        parser = driver.ResponseParser()
        raw = (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(parser.feed(raw), (200, b"ok", False))
        self.assertEqual(parser.feed(b""), (404, b"", False))


class DriverHelperTests(SynchronousTestCase):
    """
    The small helpers of the driver.
    """

    def test_messagesBody(self):
        """
        The posted body is a Zaqar v2 batch of C{n} messages with a TTL.
        """
        document = json.loads(driver.messagesBody(10))
        self.assertEqual(len(document["messages"]), 10)
        self.assertEqual(document["messages"][3]["body"]["n"], 3)
        self.assertEqual(document["messages"][0]["ttl"], 3600)

    def test_hrefPath(self):
        """
        Relative hrefs are kept; absolute ones lose scheme and host.
        """
        self.assertEqual(
            driver.hrefPath("/v2/queues/q/messages/1?claim_id=c"),
            b"/v2/queues/q/messages/1?claim_id=c",
        )
        self.assertEqual(
            driver.hrefPath("http://h:1/v2/queues/q/messages/1?claim_id=c"),
            b"/v2/queues/q/messages/1?claim_id=c",
        )

    def test_percentile(self):
        """
        Nearest-rank percentiles, and 0 for no samples.
        """
        values = [float(n) for n in range(1, 101)]
        self.assertEqual(driver.percentile(values, 0.5), 50.0)
        self.assertEqual(driver.percentile(values, 0.99), 99.0)
        self.assertEqual(driver.percentile([], 0.5), 0.0)

    def test_statsWindow(self):
        """
        Only requests inside the measured window are counted.
        """
        stats = driver.Stats(warmup=0, duration=100, maxRequests=10)
        stats.record("post", stats.start - 1, stats.start + 1, True, 1)
        stats.record("post", stats.start + 1, stats.start + 2, True, 10)
        stats.record("post", stats.start + 1, stats.end + 1, True, 1)
        stats.record("post", stats.start + 1, stats.start + 2, False)
        self.assertEqual((stats.requests, stats.messages), (1, 10))
        self.assertEqual(stats.errors, {"post failed": 1})


def render(resource, method, path, body=b"", headers=True):
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    request.method = method
    if headers:
        request.requestHeaders.setRawHeaders(b"client-id", [b"c"])
        request.requestHeaders.setRawHeaders(b"x-project-id", [b"p"])
    from io import BytesIO

    request.content = BytesIO(body)
    result = resource.render(request)
    return request.responseCode or 200, result


class BaselineTests(SynchronousTestCase):
    """
    The baseline answers like a node, with canned bodies.
    """

    def setUp(self):
        self.resource = baseline.BaselineResource()

    def test_post(self):
        """
        Posting messages answers 201 with one resource per message.
        """
        code, body = render(
            self.resource, b"POST", b"/v2/queues/q/messages", driver.messagesBody(10)
        )
        self.assertEqual(code, 201)
        self.assertEqual(len(json.loads(body)["resources"]), 10)

    def test_badBodies(self):
        """
        Malformed JSON and missing identity headers are 400s.
        """
        code, _ = render(self.resource, b"POST", b"/v2/queues/q/messages", b"{")
        self.assertEqual(code, 400)
        code, _ = render(
            self.resource, b"POST", b"/v2/queues/q/messages", b"{}", headers=False
        )
        self.assertEqual(code, 400)

    def test_claim(self):
        """
        A claim answers messages whose hrefs carry the claim id.
        """
        code, body = render(
            self.resource, b"POST", b"/v2/queues/q/claims", b'{"ttl": 300, "grace": 60}'
        )
        self.assertEqual(code, 201)
        messages = json.loads(body)["messages"]
        self.assertEqual(len(messages), 10)
        self.assertIn("?claim_id=", messages[0]["href"])

    def test_deleteAndGet(self):
        """
        Deletes are 204s and a message can be read by id.
        """
        code, _ = render(self.resource, b"DELETE", b"/v2/queues/q/messages/abc")
        self.assertEqual(code, 204)
        code, body = render(self.resource, b"GET", b"/v2/queues/q/messages/abc")
        self.assertEqual(code, 200)
        self.assertIn("id", json.loads(body))


class TableTests(SynchronousTestCase):
    """
    The results table gives each target's throughput as a ratio to the
    baseline's.
    """

    def test_ratio(self):
        """
        The ratio column divides the target's requests/s by the baseline's.
        """
        report = {
            "engine": "wrk",
            "req_s": 100.0,
            "msgs_s": 100.0,
            "messages_are": "posted",
            "p50_ms": 1.0,
            "p99_ms": 2.0,
            "errors": {},
        }
        results = {"post1": {"baseline": dict(report, req_s=400.0), "sqlite": report}}
        rows = run.table(results, ["baseline", "sqlite"])
        self.assertEqual(rows[2][0], "post 1 message")
        self.assertEqual(rows[2][7], "0.250")
        self.assertEqual(rows[1][7], "-")
