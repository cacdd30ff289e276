"""
C{/v2/health}: storage reachability, node states and the timed probe.
"""

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from marconi.core.health import PROBE_PROJECT, HealthCheck, SingleNode
from marconi.core.interfaces import IHealth, INodeStates
from tests.apihelpers import Node

STEPS = [
    "create_queue",
    "post_messages",
    "list_messages",
    "claim_messages",
    "delete_messages",
    "delete_queue",
]


@implementer(INodeStates)
class ThreeNodes:
    """
    What a cluster would report.
    """

    def nodeStates(self):
        return succeed(
            [
                {"name": "a", "self": True, "state": "up"},
                {"name": "b", "state": "up"},
                {"name": "c", "state": "down"},
            ]
        )


class HealthTests(TestCase):
    def setUp(self) -> None:
        self.node = Node(self)

    async def test_healthy(self) -> None:
        """
        A healthy node answers 200: storage reachable, every probe step
        succeeded with its time, and itself as the only node, up.  The
        probe leaves nothing behind.
        """
        r = await self.node.request("GET", "/v2/health", project=None)
        self.assertEqual(r.code, 200, r.body)
        self.assertTrue(r.json["storage_reachable"])
        status = r.json["operation_status"]
        self.assertEqual(sorted(status), sorted(STEPS + ["ping"]))
        for name in STEPS:
            self.assertEqual(status[name]["succeeded"], True, name)
            self.assertIsNone(status[name]["ref"])
            self.assertGreaterEqual(status[name]["seconds"], 0)
        self.assertEqual(
            r.json["nodes"], [{"name": "local", "self": True, "state": "up"}]
        )
        left = await self.node.store.listQueues(PROBE_PROJECT, None, 10, False)
        self.assertEqual(list(left), [])
        stats = await self.node.store.queueStats(PROBE_PROJECT, "x", 0)
        self.assertEqual(stats.total, 0)

    async def test_storageDown(self) -> None:
        """
        When the store does not answer, health is 503 with the reason, no
        probe runs, and the node reports itself down; ping is 503 too.
        """
        await self.node.store.stopService()
        r = await self.node.request("GET", "/v2/health")
        self.assertEqual(r.code, 503)
        self.assertFalse(r.json["storage_reachable"])
        self.assertIn("not running", r.json["error"])
        self.assertEqual(list(r.json["operation_status"]), ["ping"])
        self.assertEqual(r.json["nodes"][0]["state"], "down")
        r = await self.node.request("GET", "/v2/ping")
        self.assertEqual(r.code, 503)

    async def test_clusterHook(self) -> None:
        """
        The states the cluster reports through L{INodeStates} are listed.
        """
        check = HealthCheck(self.node.store, self.node.clock, ThreeNodes())
        self.assertTrue(verifyObject(IHealth, check))
        healthy, doc = await check.report()
        self.assertTrue(healthy)
        self.assertEqual([n["state"] for n in doc["nodes"]], ["up", "up", "down"])

    async def test_timedWithTheClock(self) -> None:
        """
        Step times come from the injected clock.
        """
        clock = Clock()
        clock.advance(1000)

        class SlowClockStore:
            def __init__(self, store):
                self._store = store

            def __getattr__(self, name):
                method = getattr(self._store, name)

                def call(*args):
                    clock.advance(0.25)
                    return method(*args)

                return call

        check = HealthCheck(SlowClockStore(self.node.store), clock)
        healthy, doc = await check.report()
        self.assertTrue(healthy)
        self.assertEqual(doc["operation_status"]["post_messages"]["seconds"], 0.25)


class PendingStore:
    """
    A store whose pings wait until the test answers them.
    """

    def __init__(self):
        self.pings = []

    def ping(self):
        self.pings.append(Deferred())
        return self.pings[-1]


class ConcurrencyTests(SynchronousTestCase):
    def test_oneProbeAtATime(self) -> None:
        """
        Health requests that arrive while a probe runs share its result;
        the next request after it starts a new one.
        """
        store = PendingStore()
        check = HealthCheck(store, Clock(), nodes=ThreeNodes())
        first = check.report()
        second = check.report()
        self.assertNoResult(first)
        self.assertEqual(len(store.pings), 1)
        store.pings[0].callback(False)
        result = self.successResultOf(first)
        self.assertIs(result[0], False)
        self.assertEqual(self.successResultOf(second), result)
        check.report()
        self.assertEqual(len(store.pings), 2)

    def test_singleNode(self) -> None:
        """
        L{SingleNode} provides L{INodeStates}.
        """
        self.assertTrue(verifyObject(INodeStates, SingleNode(None)))
