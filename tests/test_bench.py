"""
Tests for the benchmark harness in C{bench/}: the driver's HTTP parsing and
bookkeeping, the baseline server's answers and the results table.  Nothing
here is timed.
"""

import json
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from bench import baseline, cluster, driver, run
from tests.redisserver import RedisServer, command, skipReason

redisSkip = skipReason()


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


class ClusterCostTests(SynchronousTestCase):
    """
    C{bench/cluster.py cost} counts each node's context switches and shows
    them per request beside its CPU.
    """

    def test_switchesCounted(self):
        """
        L{cluster.processSwitches} counts the waits of the threads of a
        process: one that slept five times, then waits to be told to end,
        waited at least five times.
        """
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, time\n"
                "for _ in range(5):\n"
                "    time.sleep(0.001)\n"
                "print('slept', flush=True)\n"
                "sys.stdin.read()\n",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.addCleanup(child.wait)
        self.addCleanup(child.stdin.close)
        self.addCleanup(child.stdout.close)
        self.assertEqual(child.stdout.readline(), b"slept\n")
        voluntary, involuntary = cluster.processSwitches(child.pid)
        self.assertGreaterEqual(voluntary, 5)
        self.assertGreaterEqual(involuntary, 0)

    def test_switchesOfGoneProcess(self):
        """
        A process that is gone has no switches to count.
        """
        self.assertEqual(cluster.processSwitches(2**22 + 1), (0, 0))

    def test_tableShowsSwitches(self):
        """
        The cost table gives the relay's and the owner's waits and
        preemptions per request, and leaves them blank for results written
        before they were counted.
        """

        def route(us, a, b, waits=None):
            result = {
                "us_per_request": us,
                "by_node": {"a": a, "b": b, "c": 0},
                "req_s": 1000,
            }
            if waits is not None:
                result["waits"] = {"a": waits[0], "b": waits[1], "c": 0.0}
                result["preempted"] = {"a": waits[2], "b": waits[3], "c": 0.0}
            return result

        summary = {
            "new": {
                "list10": {
                    "local": route(180, 180, 0, (0.01, 0, 0.36, 0)),
                    "forwarded": route(300, 100, 200, (0.55, 0.05, 0.01, 0.7)),
                }
            },
            "old": {
                "list10": {
                    "local": route(180, 180, 0),
                    "forwarded": route(300, 100, 200),
                }
            },
        }
        rows = cluster.costTable(summary).splitlines()
        self.assertTrue(rows[2].endswith("| 0.01/0.36 | 0.55/0.01 + 0.05/0.70 |"))
        self.assertTrue(rows[3].endswith("| - | - |"))


def _sample(at, size, rewrites=0, rewriting=0, children=0.0, own=0.0, base=0):
    """
    One sample of redis-server's C{INFO} as L{run.RedisStore.info} gives it,
    on a CPU always busy.
    """
    return {
        "at": at,
        "cores_busy": at,
        "aof_current_size": size,
        "aof_base_size": base,
        "aof_rewrites": rewrites,
        "aof_rewrite_in_progress": rewriting,
        "aof_rewrite_scheduled": 0,
        "aof_last_bgrewrite_status": "ok",
        "children_cpu": children,
        "own_cpu": own,
    }


class RewriteSummaryTests(SynchronousTestCase):
    """
    L{run.rewriteSummary} tells which rewrites of redis-server's append-only
    file overlapped a measured window, and what rewrites cost.
    """

    def samples(self, rewriteAt):
        """
        Samples a second apart from 0 to 10 of a file growing by 1000 bytes
        a second, rewritten to 2000 bytes (taking 0.5 s of CPU) during the
        two samples from C{rewriteAt}; redis-server itself busy half of
        the time.
        """
        samples = []
        size, rewrites, children = 0, 0, 0.0
        for at in range(11):
            rewriting = int(rewriteAt <= at < rewriteAt + 2)
            if at == rewriteAt:
                rewrites = 1
            if at == rewriteAt + 2:
                size, children = 2000, 0.5
            samples.append(
                _sample(
                    float(at),
                    size,
                    rewrites,
                    rewriting,
                    children,
                    at / 2,
                    2000 if children else 0,
                )
            )
            size += 1000
        return samples

    def test_rewriteInWindow(self):
        """
        A rewrite seen in progress inside the window counts, with its span
        from the sample before it was seen to the sample that saw it end;
        the file's growth across a rewrite's end is left out of the growth
        per request, and the steady cost is the rewrite's CPU per byte times
        the growth per request over the percentage.
        """
        summary, cpuPerByte = run.rewriteSummary(
            self.samples(5), 3.0, 8.0, 50, 100, None, 20.0
        )
        self.assertEqual(summary["aof_rewrites"], 1)
        self.assertEqual(summary["aof_rewrites_in_window"], 1)
        self.assertEqual(summary["aof_rewrites_unseen"], 0)
        self.assertEqual(summary["aof_rewrite_spans_s"], [[1.0, 4.0]])
        self.assertEqual(summary["aof_rewrite_cpu_s"], 0.5)
        # Growth from 3 to 8 s without the step from 6 to 7 s: 4,000 bytes.
        self.assertEqual(summary["aof_bytes_per_request"], 80)
        self.assertEqual(cpuPerByte, 0.5 / 2000)
        self.assertEqual(summary["aof_rewrite_us_per_request"], 20000.0)
        self.assertEqual(summary["redis_cpu_pct"], 50.0)
        # The store's CPU: 50% redis-server, 10% the rewrite (0.5 s over
        # 5 s), 20% the load: 20% other processes.
        self.assertEqual(summary["store_cpus_busy_pct"], 100.0)
        self.assertEqual(summary["store_cpus_other_pct"], 20.0)

    def test_rewriteBeforeWindow(self):
        """
        A rewrite that ended before the window opened (in the warmup) is
        counted with its CPU but not as in the window; with half the
        percentage, rewrites come twice as often and cost twice as much.
        """
        summary, cpuPerByte = run.rewriteSummary(
            self.samples(1), 4.0, 9.0, 50, 50, None
        )
        self.assertEqual(summary["aof_rewrites"], 1)
        self.assertEqual(summary["aof_rewrites_in_window"], 0)
        self.assertEqual(summary["aof_rewrite_spans_s"], [[-4.0, -1.0]])
        self.assertEqual(summary["aof_bytes_per_request"], 100)
        self.assertEqual(summary["aof_rewrite_us_per_request"], 50000.0)

    def test_noRewrite(self):
        """
        Without a rewrite the CPU per byte measured before is used, and
        without one measured ever there is no steady cost to tell.
        """
        samples = self.samples(20)
        summary, cpuPerByte = run.rewriteSummary(samples, 3.0, 8.0, 50, 100, None)
        self.assertEqual(summary["aof_rewrites"], 0)
        self.assertEqual(summary["aof_rewrites_in_window"], 0)
        self.assertEqual(summary["aof_bytes_per_request"], 100)
        self.assertNotIn("aof_rewrite_us_per_request", summary)
        self.assertIsNone(cpuPerByte)
        summary, cpuPerByte = run.rewriteSummary(samples, 3.0, 8.0, 50, 100, 1e-6)
        self.assertEqual(summary["aof_rewrite_us_per_request"], 100.0)
        self.assertEqual(cpuPerByte, 1e-6)

    def test_notes(self):
        """
        The table's notes of a Redis measurement say how many rewrites
        overlapped the window, when, and their steady cost.
        """
        summary, _ = run.rewriteSummary(self.samples(5), 3.0, 8.0, 50, 100, None, 20.0)
        summary["settled"] = {"waited_s": 1.5, "rewrites": 1}
        report = {
            "engine": "python",
            "req_s": 10.0,
            "msgs_s": 100.0,
            "messages_are": "consumed",
            "p50_ms": 1.0,
            "p99_ms": 2.0,
            "errors": {},
            "redis": summary,
        }
        rows = run.table({"claim-bulk": {"redis": report}}, ["redis"])
        self.assertEqual(
            rows[1][-1],
            "waited 1.5 s for an AOF rewrite before; AOF rewrites in window: 1 "
            "(1.0 to 4.0 s; 0.50 s of rewrite CPU in all); other load on the "
            "store's CPUs 20%; rewrites cost "
            "~20,000.0 us/request in steady state",
        )


class RedisStoreTests(SynchronousTestCase):
    """
    L{run.RedisStore} against a real redis-server whose rewrites of its
    append-only file are made slow (C{rdb-key-save-delay}, per key).
    """

    skip = redisSkip

    def setUp(self):
        self.server = RedisServer(extraArgs=("--rdb-key-save-delay", "100000")).start()
        self.addCleanup(self.server.stop)
        for n in range(5):
            command(self.server.address, "SET", "k%d" % (n,), "v")
        self.store = run.RedisStore(self.server.port, self.server.process.pid)
        self.addCleanup(self.store.close)

    def rewrite(self):
        self.assertEqual(
            command(self.server.address, "BGREWRITEAOF")[:1], b"+", "no rewrite"
        )

    def test_settle(self):
        """
        L{run.RedisStore.settle} returns once the rewrite in progress ended.
        """
        self.rewrite()
        settled = self.store.settle()
        self.assertEqual(settled["rewrites"], 1)
        fields = self.store.info()
        self.assertEqual(fields["aof_rewrite_in_progress"], 0)
        self.assertEqual(fields["aof_last_bgrewrite_status"], "ok")
        self.assertIsNotNone(self.store.cpuPerByte)
        self.assertEqual(self.store.settle(), {"waited_s": 0.0, "rewrites": 0})

    def test_settleLearnsFromEarlierRewrite(self):
        """
        A rewrite that ended before L{run.RedisStore.settle} (in a prefill)
        still gives the CPU per byte of a rewrite, measured from the last
        sample taken with none running.
        """
        self.store.lastSample = self.store.info()
        self.rewrite()
        while self.store.rewriting(self.store.info()):
            time.sleep(0.05)
        self.assertIsNone(self.store.cpuPerByte)
        self.assertEqual(self.store.settle(), {"waited_s": 0.0, "rewrites": 0})
        self.assertIsNotNone(self.store.cpuPerByte)

    def test_watch(self):
        """
        A watch stopped while a rewrite runs waits for its end and counts it
        in the window.
        """
        watch = self.store.watch()
        self.rewrite()
        summary = watch.stop({"window_s": 60.0, "requests": 10})
        self.assertEqual(summary["aof_rewrites"], 1)
        self.assertEqual(summary["aof_rewrites_in_window"], 1)
        self.assertEqual(summary["aof_rewrite_status"], "ok")
        self.assertEqual(self.store.info()["aof_rewrite_in_progress"], 0)
