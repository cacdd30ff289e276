"""
Tests for the audit river's write batching: events recorded while a write
of the project's river is in flight go into one next write, stored as one
record that readings page through, also from inside it.
"""

import json
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from marconi.core.audit import AuditQuery, AuditRiver
from marconi.storage.sqlite.store import SQLiteStore


class Counting:
    """
    A real store, counting the events of each river write made through
    it; each write is one record (one message, no tags).
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self.writes: list[int] = []

    def postMessages(self, project: str, queue: str, messages: Any, *a: Any) -> Any:
        [record] = messages
        assert record.tags == ()
        self.writes.append(len(json.loads(record.body)))
        return self.store.postMessages(project, queue, messages, *a)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class BatchingTests(TestCase):
    async def test_batched(self) -> None:
        """
        Fifty events recorded at once on a store that writes in its own
        thread take two writes (the first, then the forty-nine recorded
        while it was in flight), and every event is read back once, in
        the order recorded; another project's events are written apart.
        """
        store = SQLiteStore(":memory:", reactor)
        store.startService()
        self.addCleanup(store.stopService)
        counting = Counting(store)
        river = AuditRiver(counting, reactor)
        for n in range(50):
            river.record("p", "posted", "q", count=n)
        river.record("other", "posted", "q", count=0)
        await river.flush()
        self.assertEqual(sorted(counting.writes), [1, 1, 49])
        events, _ = await river.read("p", AuditQuery(limit=20))
        more, _ = await river.read(
            "p", AuditQuery(limit=20, marker=int(events[-1]["marker"]))
        )
        rest, _ = await river.read(
            "p", AuditQuery(limit=20, marker=int(more[-1]["marker"]))
        )
        self.assertEqual([e["count"] for e in events + more + rest], list(range(50)))
        self.assertEqual(river.pending, 0)

    async def test_largeBacklog(self) -> None:
        """
        A backlog larger than one write holds is written in several, none
        over the batch size, nothing lost.
        """
        store = SQLiteStore(":memory:", reactor)
        store.startService()
        self.addCleanup(store.stopService)
        counting = Counting(store)
        river = AuditRiver(counting, reactor)
        for n in range(251):
            river.record("p", "deleted", "q", count=n)
        await river.flush()
        self.assertEqual(sum(counting.writes), 251)
        self.assertLessEqual(max(counting.writes), 100)
