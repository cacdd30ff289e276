"""
The least time between two writes of a project's river (C{[audit]
interval}): events recorded meanwhile wait and are written together, in
records of at most L{MAX_BATCH} events.
"""

import json

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from marconi.core.audit import (
    DEFAULT_INTERVAL,
    MAX_BATCH,
    AuditRiver,
    AuditSettings,
    parseSettings,
)
from tests.core.test_audit_shutdown import HeldStore


class IntervalTests(SynchronousTestCase):
    """
    A river on a store whose writes are answered when the test lets them
    through, on a fake clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = HeldStore()
        self.store.store.startService()
        self.addCleanup(self.store.store.stopService)

    def river(self, interval: float = 0.1) -> AuditRiver:
        return AuditRiver(
            self.store,  # type: ignore[arg-type]
            self.clock,
            AuditSettings(interval=interval),
        )

    def sizes(self) -> list:
        """
        How many events each write held back so far holds.
        """
        return [len(json.loads(args[2][0].body)) for _, args in self.store.held]

    def record(self, river: AuditRiver, count: int) -> None:
        for n in range(count):
            river.record("p", "posted", "q", count=n)

    def test_defaultInterval(self) -> None:
        """
        By default a project's river is written at most every 0.1 s.
        """
        self.assertEqual(AuditSettings().interval, DEFAULT_INTERVAL)
        self.assertEqual(DEFAULT_INTERVAL, 0.1)

    def test_nextWriteWaits(self) -> None:
        """
        The first event is written at once.  The events recorded while
        that write is in flight wait, after it is done, until the interval
        has passed since it started, and are then written as one record.
        """
        river = self.river()
        self.record(river, 1)
        self.assertEqual(self.sizes(), [1])
        self.clock.advance(0.01)
        self.record(river, 3)
        self.store.release()
        self.assertEqual(self.store.held, [])
        self.record(river, 2)
        self.clock.advance(0.089)
        self.assertEqual(self.store.held, [])
        self.clock.advance(0.001)
        self.assertEqual(self.sizes(), [5])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_slowWriteNoWait(self) -> None:
        """
        When a write took longer than the interval, the events recorded
        meanwhile are written as soon as it is done.
        """
        river = self.river()
        self.record(river, 1)
        self.clock.advance(0.5)
        self.record(river, 2)
        self.store.release()
        self.assertEqual(self.sizes(), [2])

    def test_fullRecordAtOnce(self) -> None:
        """
        Events that fill a record are written at once, whether they were
        queued before the write in flight was done or after.
        """
        river = self.river()
        self.record(river, 1)
        self.record(river, MAX_BATCH + 1)
        self.store.release()
        self.assertEqual(self.sizes(), [MAX_BATCH])
        self.store.release()
        self.record(river, MAX_BATCH - 2)
        self.assertEqual(self.store.held, [])
        self.record(river, 1)
        self.assertEqual(self.sizes(), [MAX_BATCH])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_noInterval(self) -> None:
        """
        With an interval of 0, the events recorded while a write is in
        flight are written as soon as it is done.
        """
        river = self.river(0)
        self.record(river, 1)
        self.record(river, 4)
        self.store.release()
        self.assertEqual(self.sizes(), [4])

    def test_flushWritesAtOnce(self) -> None:
        """
        L{AuditRiver.flush} writes the events waiting for the interval at
        once, and fires when every write is done.
        """
        river = self.river()
        self.record(river, 1)
        self.record(river, 2)
        self.store.release()
        self.assertEqual(self.store.held, [])
        flushed = river.flush()
        self.assertEqual(self.sizes(), [2])
        self.assertNoResult(flushed)
        self.store.release()
        self.successResultOf(flushed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_drainWritesAtOnce(self) -> None:
        """
        L{AuditRiver.drain}, when the node stops, writes the events waiting
        for the interval at once, and those that wait after a write it
        waited for.
        """
        river = self.river()
        self.record(river, 1)
        self.record(river, 2)
        self.store.release()
        drained = Deferred.fromCoroutine(river.drain(5))
        self.assertEqual(self.sizes(), [2])
        self.record(river, 3)
        self.store.release()
        self.assertEqual(self.sizes(), [3])
        self.assertNoResult(drained)
        self.store.release()
        self.successResultOf(drained)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_projectsApart(self) -> None:
        """
        Each project's river has its own interval.
        """
        river = self.river()
        river.record("p", "posted", "q")
        river.record("o", "posted", "q")
        self.assertEqual(self.sizes(), [1, 1])

    def test_settings(self) -> None:
        """
        C{interval} is read from the C{[audit]} section: seconds, from 0 to
        10; anything else stops the node.
        """
        self.assertEqual(parseSettings({"interval": "0.25"}).interval, 0.25)
        self.assertEqual(parseSettings({"interval": "0"}).interval, 0)
        self.assertEqual(parseSettings({}).interval, DEFAULT_INTERVAL)
        for bad in ("-1", "11", "soon", "nan"):
            with self.assertRaises(ValueError):
                parseSettings({"interval": bad})
