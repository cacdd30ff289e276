"""
The Prometheus monitoring driver: metrics scraped over a real socket and
parsed after real traffic; the measured store; queue depth sampling.
"""

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

import marconi.plugins
from marconi import tap
from marconi.core.errors import StorageUnavailable
from marconi.core.interfaces import IMessageStore, IMonitor, IMonitoringDriverPlugin
from marconi.core.models import QueueDepth
from marconi.core.monitoring import NullMonitor
from marconi.observability.measured import DepthSampler, MeasuredStore
from marconi.observability.prometheus import PrometheusMonitor, makeMonitor
from tests.apihelpers import Node


def parse(text: str) -> dict:
    """
    The samples of an exposition, as C{{(name, sorted labels): value}}.
    """
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


class Recorder:
    """
    An L{IMonitor} that records what it is told.
    """

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, *args))


class PluginTests(SynchronousTestCase):
    def test_found(self) -> None:
        """
        The prometheus driver is a plugin; its monitor provides
        L{IMonitor}, as does the L{NullMonitor}.
        """
        found = {
            p.name: p for p in getPlugins(IMonitoringDriverPlugin, marconi.plugins)
        }
        self.assertIn("prometheus", found)
        self.assertTrue(verifyObject(IMonitoringDriverPlugin, found["prometheus"]))
        monitor = found["prometheus"].makeMonitor({"listen": ""}, reactor)
        self.assertTrue(verifyObject(IMonitor, monitor))
        self.assertTrue(verifyObject(IMonitor, NullMonitor()))

    def test_settings(self) -> None:
        """
        Bad listen descriptions, flags and sampling settings are usage
        errors.
        """
        for text in [
            "driver = prometheus\nlisten = nonsense:1\n",
            "driver = prometheus\npublic = perhaps\n",
            "driver = prometheus\ndepth_interval = soon\n",
            "driver = prometheus\ndepth_limit = 0\n",
            "driver = prometheus\ncolour = blue\n",
            "driver = graphite\n",
        ]:
            path = self.mktemp()
            with open(path, "w") as f:
                f.write("[monitoring]\n" + text)
            options = tap.Options()
            self.assertRaises(
                UsageError,
                options.parseOptions,
                ["--storage", "sqlite::memory:", "--config", path],
            )

    def test_serviceTree(self) -> None:
        """
        A monitored node runs the monitor (with its listener) right after
        the storage, and samples queue depths.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[monitoring]\ndriver = prometheus\nlisten = tcp:0\n")
        options = tap.Options()
        options.parseOptions(
            ["--storage", "sqlite::memory:", "--listen", "tcp:0", "--config", path]
        )
        node = tap.makeService(options, reactor)
        self.assertEqual(
            [type(s).__name__ for s in node],
            [
                "RiverService",
                "PrometheusMonitor",
                "DepthSampler",
                "PurgeService",
                "StreamServerEndpointService",
            ],
        )


class ScrapeTests(TestCase):
    def setUp(self) -> None:
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.monitor = makeMonitor({"listen": "tcp:0:interface=127.0.0.1"}, reactor)
        self.monitor.startService()
        self.addCleanup(self.monitor.stopService)
        self.node = Node(self, monitor=self.monitor)

    async def scrape(self) -> dict:
        [port] = [
            e["port"]
            for e in self.events
            if e.get("log_format", "").startswith("Metrics listening")
        ]
        response = await self.node.http.get(f"http://127.0.0.1:{port}/metrics")
        self.assertEqual(response.code, 200)
        self.assertTrue(
            response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
        )
        return parse((await response.content()).decode())

    async def test_traffic(self) -> None:
        """
        After traffic, the scrape counts requests by route and status,
        observes their latency, and counts messages posted, claimed,
        deleted, expired and dead-lettered.
        """
        node = self.node
        await node.request(
            "PUT",
            "/v2/queues/q",
            {"_max_claim_count": 1, "_dead_letter_queue": "dead"},
        )
        await node.post("q", {"body": 1}, {"body": 2}, {"body": 3})
        await node.request("GET", "/v2/queues/q/messages?echo=true")
        claim = await node.request(
            "POST", "/v2/queues/q/claims?limit=2", {"ttl": 60, "grace": 60}
        )
        first = claim.json["messages"][0]["href"]
        r = await node.request("DELETE", first)
        self.assertEqual(r.code, 204)
        await node.request("DELETE", "/v2/queues/q/messages?pop=1")
        # The second claimed message was claimed once: past its claim it
        # goes to the dead letter queue at the next claim.
        node.clock.advance(61)
        claim = await node.request("POST", "/v2/queues/q/claims", {"ttl": 60})
        self.assertEqual(claim.code, 204)
        await node.request("GET", "/v2/nowhere")
        await node.post("short", {"body": 1, "ttl": 60})
        node.clock.advance(3600)
        expired = await node.bus.purgeExpired()
        self.monitor.forwardingError("node-b")

        m = await self.scrape()
        total = "marconi_http_requests_total"
        self.assertEqual(m[(total, (("route", "postMessages"), ("status", "201")))], 2)
        self.assertEqual(m[(total, (("route", "createClaim"), ("status", "201")))], 1)
        self.assertEqual(m[(total, (("route", "createClaim"), ("status", "204")))], 1)
        self.assertEqual(m[(total, (("route", "unmatched"), ("status", "404")))], 1)
        latency = "marconi_http_request_duration_seconds_count"
        self.assertEqual(m[(latency, (("route", "createClaim"),))], 2)
        messages = "marconi_messages_total"
        counts = {
            event: m[(messages, (("event", event),))]
            for event in ("posted", "claimed", "deleted", "expired", "dead_lettered")
        }
        self.assertEqual(
            counts,
            {
                "posted": 4,
                "claimed": 2,
                "deleted": 2,
                "expired": expired,
                "dead_lettered": 1,
            },
        )
        self.assertGreaterEqual(expired, 2)
        storage = "marconi_storage_duration_seconds_count"
        self.assertEqual(m[(storage, (("operation", "postMessages"),))], 2)
        self.assertEqual(
            m[("marconi_forwarding_errors_total", (("peer", "node-b"),))], 1
        )

    async def test_notPublicByDefault(self) -> None:
        """
        The API listener does not serve C{/metrics} unless asked to.
        """
        r = await self.node.request("GET", "/metrics")
        self.assertEqual(r.code, 404)


class PublicTests(TestCase):
    async def test_public(self) -> None:
        """
        With C{public = true} the API listener serves C{/metrics} too, and
        the scrape counts itself under the route C{metrics}.
        """
        monitor = makeMonitor({"listen": "", "public": "true"}, reactor)
        node = Node(self, monitor=monitor)
        await node.request("GET", "/v2/ping")
        response = await node.http.get(node.url + "/metrics")
        self.assertEqual(response.code, 200)
        m = parse((await response.content()).decode())
        key = ("marconi_http_requests_total", (("route", "ping"), ("status", "204")))
        self.assertEqual(m[key], 1)
        await node.http.get(node.url + "/metrics")
        response = await node.http.get(node.url + "/metrics")
        m = parse((await response.content()).decode())
        key = ("marconi_http_requests_total", (("route", "metrics"), ("status", "200")))
        self.assertEqual(m[key], 2)


@implementer(IMessageStore)
class FailingStore:
    """
    A store whose every call fails (synchronously for C{ping}).
    """

    def ping(self):
        raise StorageUnavailable("down")

    def __getattr__(self, name):
        return lambda *args: fail(StorageUnavailable("down"))


class MeasuredStoreTests(SynchronousTestCase):
    def test_timesAndFailures(self) -> None:
        """
        Each call is reported with its operation, its duration on the
        injected clock and whether it succeeded.
        """
        clock = Clock()
        recorder = Recorder()
        store = MeasuredStore(FailingStore(), recorder, clock)
        d = store.createQueue("p", "q", {}, 0)
        self.failureResultOf(d, StorageUnavailable)
        self.assertRaises(StorageUnavailable, store.ping)
        self.assertEqual(
            recorder.calls,
            [
                ("storageCall", "createQueue", 0.0, False),
                ("storageCall", "ping", 0.0, False),
            ],
        )

    def test_depthSampler(self) -> None:
        """
        The sampler hands the store's deepest queues to the monitor every
        interval, on the injected clock; a failing sample is logged and the
        next one goes ahead.
        """
        clock = Clock()
        recorder = Recorder()
        depths = [QueueDepth("p", "q", 5, 2)]
        results = [fail(StorageUnavailable("down"))]

        class Store:
            def sampleDepths(self, now, limit):
                return results.pop(0) if results else succeed(depths)

        sampler = DepthSampler(Store(), recorder, 30, 10, clock)
        sampler.startService()
        self.addCleanup(sampler.stopService)
        self.assertEqual(recorder.calls, [])
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        clock.advance(30)
        self.assertEqual(recorder.calls, [("queueDepths", depths)])


class DepthTests(TestCase):
    async def test_sqliteDepths(self) -> None:
        """
        The SQLite store samples the deepest queues, deepest first, with
        their claimed messages; the gauges show exactly the last sample.
        """
        monitor = PrometheusMonitor(reactor)
        node = Node(self, monitor=monitor)
        await node.post("a", {"body": 1})
        await node.post("b", {"body": 1}, {"body": 2}, {"body": 3})
        await node.request("POST", "/v2/queues/b/claims?limit=2", {"ttl": 60})
        sampled = await node.store.sampleDepths(node.clock.seconds(), 1)
        self.assertEqual(sampled, [QueueDepth("p", "b", 3, 2)])
        monitor.queueDepths(await node.store.sampleDepths(node.clock.seconds(), 10))
        monitor.queueDepths(sampled)
        m = parse(generate_latest(monitor.registry).decode())
        depths = {k: v for k, v in m.items() if k[0].startswith("marconi_queue_")}
        self.assertEqual(
            depths,
            {
                ("marconi_queue_messages", (("project", "p"), ("queue", "b"))): 3,
                (
                    "marconi_queue_claimed_messages",
                    (("project", "p"), ("queue", "b")),
                ): 2,
            },
        )
