"""
The river's writes in flight when the node stops: the store is stopped
only once they are done, or once the bound has passed.
"""

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from marconi.core.audit import (
    FLUSH_TIMEOUT,
    AuditQuery,
    AuditRiver,
    AuditSettings,
    RiverService,
)
from marconi.storage.memory.store import MemoryStore


class HeldStore:
    """
    A L{MemoryStore} whose writes are answered only when the test lets
    them through (a store answering slowly, made deterministic).
    """

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.held: list = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def postMessages(self, *args: Any) -> Deferred:
        held: Deferred = Deferred()
        self.held.append((held, args))
        return held

    def release(self) -> None:
        """
        Let the oldest write held through.
        """
        d, args = self.held.pop(0)
        self.store.postMessages(*args).chainDeferred(d)


class ShutdownTests(TestCase):
    """
    L{RiverService} over a store whose writes are held back.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = HeldStore()
        self.river = AuditRiver(self.store, self.clock, AuditSettings())  # type: ignore[arg-type]
        self.service = RiverService(self.store.store, self.river)
        self.service.startService()

    async def events(self) -> list:
        events, _ = await AuditRiver(self.store.store, self.clock).read(
            "p", AuditQuery(limit=10)
        )
        return [e["action"] for e in events]

    def test_storeStopsAfterWrites(self) -> None:
        """
        Stopping waits for the writes in flight, those started while it
        waits included; the store stops only after the last one, and every
        event is stored.
        """
        self.river.record("p", "posted", "q", count=1)
        stopped = self.service.stopService()
        self.assertNoResult(stopped)
        self.river.record("p", "deleted", "q", count=1)
        self.store.release()
        self.assertTrue(self.store.store.running)
        self.assertNoResult(stopped)
        self.store.release()
        self.successResultOf(stopped)
        self.assertFalse(self.store.store.running)
        self.assertEqual(self.river.pending, 0)
        self.store.store.startService()
        self.assertEqual(
            self.successResultOf(Deferred.fromCoroutine(self.events())),
            ["posted", "deleted"],
        )

    def test_bounded(self) -> None:
        """
        A write that never ends holds the stop for L{FLUSH_TIMEOUT}
        seconds, then the store stops and the loss is logged.
        """
        logged: list = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        self.river.record("p", "posted", "q", count=1)
        stopped = self.service.stopService()
        self.clock.advance(FLUSH_TIMEOUT - 0.1)
        self.assertNoResult(stopped)
        self.assertTrue(self.store.store.running)
        self.clock.advance(0.1)
        self.successResultOf(stopped)
        self.assertFalse(self.store.store.running)
        self.assertEqual(
            [e.get("count") for e in logged if "not yet written" in e["log_format"]],
            [1],
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_nothingPending(self) -> None:
        """
        With no write in flight the store stops at once, and no timer is
        left behind.
        """
        self.successResultOf(self.service.stopService())
        self.assertFalse(self.store.store.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lossCountsEvents(self) -> None:
        """
        The loss logged at the bound counts the events not written (those
        of the write in flight and those waiting for the next), not the
        writes.
        """
        logged: list = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        for action in ("posted", "claimed", "deleted"):
            self.river.record("p", action, "q", count=1)
        stopped = self.service.stopService()
        self.clock.advance(FLUSH_TIMEOUT)
        self.successResultOf(stopped)
        self.assertEqual(
            [e.get("count") for e in logged if "not yet written" in e["log_format"]],
            [3],
        )
