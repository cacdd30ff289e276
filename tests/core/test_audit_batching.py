"""
Tests for the audit river's write batching: events recorded while a write
of the project's river is in flight go into one next write, stored as one
record that readings page through, also from inside it.
"""

import json
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from marconi.core import audit
from marconi.core.audit import CLIENT_ID, RIVER, AuditQuery, AuditRiver
from marconi.core.models import NewMessage
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
    def countingRiver(self) -> tuple:
        """
        A river writing to a running in-memory SQLite store through a
        L{Counting} wrapper.
        """
        store = SQLiteStore(":memory:", reactor)
        store.startService()
        self.addCleanup(store.stopService)
        counting = Counting(store)
        return counting, AuditRiver(counting, reactor)

    async def test_batched(self) -> None:
        """
        Fifty events recorded at once on a store that writes in its own
        thread take two writes (the first, then the forty-nine recorded
        while it was in flight), and every event is read back once, in
        the order recorded; another project's events are written apart.
        """
        counting, river = self.countingRiver()
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
        counting, river = self.countingRiver()
        for n in range(251):
            river.record("p", "deleted", "q", count=n)
        await river.flush()
        self.assertEqual(sum(counting.writes), 251)
        self.assertLessEqual(max(counting.writes), 100)


class RecordTests(TestCase):
    """
    Reading records: pages that end inside one, filters applied while
    reading, and records of the earlier one-event format.
    """

    async def river(self) -> tuple[AuditRiver, SQLiteStore]:
        store = SQLiteStore(":memory:", reactor)
        store.startService()
        self.addCleanup(store.stopService)
        return AuditRiver(store, reactor), store

    async def test_filteredPagesInsideRecords(self) -> None:
        """
        One record of events of two queues and actions: filtered pages of
        two end inside the record and each next page goes on after the
        last event given, with none skipped or repeated; the tags filter
        matches the event's action and queue.
        """
        river, _ = await self.river()
        for n in range(9):
            river.record("p", ("posted", "deleted")[n % 2], f"q{n % 3}", count=n)
        await river.flush()
        seen: list = []
        marker = None
        while True:
            page, marker = await river.read(
                "p", AuditQuery(limit=2, marker=marker, action="posted")
            )
            seen.extend(page)
            if marker is None:
                break
        self.assertEqual([e["count"] for e in seen], [0, 2, 4, 6, 8])
        self.assertEqual(len({e["id"] for e in seen}), 5)
        self.assertTrue(all(int(e["marker"]) > 0 for e in seen))
        tagged, _ = await river.read(
            "p", AuditQuery(limit=10, tags=("action:deleted", "queue:q0"))
        )
        self.assertEqual([e["count"] for e in tagged], [3])
        inQueue, _ = await river.read("p", AuditQuery(limit=10, queue="q2"))
        self.assertEqual([e["count"] for e in inQueue], [2, 5, 8])
        none, _ = await river.read("p", AuditQuery(limit=10, tags=("colour:red",)))
        self.assertEqual(none, [])

    async def test_earlierFormat(self) -> None:
        """
        A river holding records of the earlier format (one event, a JSON
        object, tagged) before new records is read whole, in order, and
        paged through one event at a time.
        """
        river, store = await self.river()
        now = reactor.seconds()
        old = NewMessage(
            body=json.dumps({"action": "posted", "at": now, "queue": "q", "count": 7}),
            ttl=3600,
            tags=("action:posted", "queue:q"),
        )
        [oldId] = await store.postMessages("p", RIVER, [old], CLIENT_ID, now)
        river.record("p", "deleted", "q", count=8)
        river.record("p", "deleted", "q", count=9)
        await river.flush()
        events, _ = await river.read("p", AuditQuery(limit=10))
        self.assertEqual([e["count"] for e in events], [7, 8, 9])
        self.assertEqual(events[0]["id"], oldId)
        paged: list = []
        marker = None
        while True:
            page, marker = await river.read("p", AuditQuery(limit=1, marker=marker))
            paged.extend(page)
            if marker is None:
                break
        self.assertEqual(paged, events)
        posted, _ = await river.read("p", AuditQuery(limit=10, action="posted"))
        self.assertEqual([e["count"] for e in posted], [7])

    async def test_scanBounded(self) -> None:
        """
        A filtered read looks at no more than L{audit.MAX_SCANNED_EVENTS}
        events: cut short inside a record, it answers what it found with
        the time it read up to and a position that the next read goes on
        from, until the event that passes the filter.
        """
        self.patch(audit, "MAX_SCANNED_EVENTS", 30)
        river, _ = await self.river()
        for n in range(70):
            river.record("p", "posted", "q", count=n)
        river.record("p", "deleted", "q", count=70)
        await river.flush()
        found: list = []
        parts = []
        marker = None
        while True:
            part = await river.readPart(
                "p", AuditQuery(limit=5, marker=marker, action="deleted")
            )
            parts.append(part)
            found.extend(part.events)
            marker = part.position
            if marker is None:
                break
        self.assertEqual([e["count"] for e in found], [70])
        self.assertEqual([p.events for p in parts[:2]], [[], []])
        self.assertEqual(len(parts), 3)
        self.assertIsNotNone(parts[0].horizon)
        self.assertLess(parts[0].position, parts[1].position)

    async def test_unencodableEvent(self) -> None:
        """
        A write whose events cannot be encoded is logged and lost alone:
        the events recorded after it are written and read.
        """
        river, _ = await self.river()
        river.record("p", "posted", "q", count=object())
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
        river.record("p", "deleted", "q", count=1)
        await river.flush()
        events, _ = await river.read("p", AuditQuery(limit=10))
        self.assertEqual([(e["action"], e["count"]) for e in events], [("deleted", 1)])
