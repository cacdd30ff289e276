"""
Claims on SQLite read the unclaimed rows' index: their cost does not grow
with the rows live claims hold at the head of the queue.
"""

import sqlite3
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from marconi.storage.sqlite.store import SQLiteStore
from tests.storage.contract import T0, msg, query, spec

_CLAIM_INDEXES = ("messages_unclaimed", "messages_claimed")


class ClaimPathTests(TestCase):
    """
    The statements a claim runs, their plans and their work.
    """

    def setUp(self) -> None:
        self.path = self.mktemp() + ".sqlite3"
        self.store = SQLiteStore(self.path, reactor)
        self.store.startService()
        self.addCleanup(lambda: self.store.running and self.store.stopService())

    async def statements(self, call: Any) -> list[str]:
        """
        Run C{call()} (returning a L{Deferred}) and return the statements
        it ran.
        """
        statements: list[str] = []

        def trace(c: sqlite3.Connection, on: bool) -> None:
            c.set_trace_callback(statements.append if on else None)

        await self.store._run(trace, True)
        await call()
        await self.store._run(trace, False)
        return statements

    async def plans(self, call: Any) -> dict[str, list[str]]:
        """
        The plan lines of each statement on C{messages} that C{call} ran,
        by statement.
        """
        statements = await self.statements(call)

        def explain(c: sqlite3.Connection) -> dict[str, list[str]]:
            plans = {}
            for sql in statements:
                verb = sql.lstrip().split()[0].upper()
                if "messages" in sql and verb in ("SELECT", "UPDATE", "DELETE"):
                    plan = c.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
                    plans[sql] = [row[3] for row in plan]
            return plans

        return await self.store._run(explain)

    async def test_claimReadsUnclaimedIndex(self) -> None:
        """
        A claim or a pop, with or without tags, reads the unclaimed rows in
        marker order on C{messages_unclaimed} (no scan, no sort), after
        handing back the rows of ended claims found on
        C{messages_claimed}; a claim takes the rows it read by their keys.
        """
        store = self.store
        tagged = msg(tags=("t",))
        await store.postMessages("p", "q", [msg(), tagged, msg(delay=60)] * 5, "c", T0)
        await store.createClaim("p", "q", spec(limit=2, ttl=30), T0)
        for claims, call in (
            (1, lambda: store.createClaim("p", "q", spec(limit=2), T0 + 40)),
            (1, lambda: store.createClaim("p", "q", spec(limit=2, tags=("t",)), T0)),
            (0, lambda: store.popMessages("p", "q", 1, (), T0)),
            (0, lambda: store.popMessages("p", "q", 1, ("t",), T0)),
        ):
            plans = await self.plans(call)
            # A pop and a claim read their rows with a SELECT; a claim then
            # takes them by their keys.
            selects = [
                p for sql, p in plans.items() if sql.lstrip().startswith("SELECT")
            ]
            takes = [p for sql, p in plans.items() if "claim_count + 1" in sql]
            self.assertEqual(len(takes), claims, plans)
            for take in takes:
                self.assertEqual(len(take), 1, take)
                self.assertIn("USING INTEGER PRIMARY KEY", take[0])
            updates = [
                p
                for sql, p in plans.items()
                if sql.lstrip().startswith("UPDATE") and "claim_id = NULL" in sql
            ]
            self.assertEqual(len(selects), 1, plans)
            self.assertEqual(len(updates), 1, plans)
            [select], [update] = selects, updates
            self.assertIn("USING INDEX messages_unclaimed", " ".join(select))
            self.assertIn("USING INDEX messages_claimed", update[0])
            for line in select + update:
                self.assertFalse(line.startswith("SCAN"), line)
                self.assertNotIn("TEMP B-TREE", line)

    async def test_listingsAndStatsKeepTheirIndexes(self) -> None:
        """
        The partial claim indexes are never used by listings (they keep
        the marker index) or by stats.
        """
        store = self.store
        await store.postMessages("p", "q", [msg(), msg(delay=60)] * 5, "c", T0)
        await store.createClaim("p", "q", spec(limit=2), T0)
        for call in (
            lambda: store.listMessages("p", "q", query(), T0),
            lambda: store.listMessages("p", "q", query(marker=2), T0),
            lambda: store.listMessages("p", "q", query(includeClaimed=True), T0),
            lambda: store.listMessages(
                "p", "q", query(includeClaimed=True, includeDelayed=True), T0
            ),
            lambda: store.queueStats("p", "q", T0),
        ):
            plans = await self.plans(call)
            self.assertTrue(plans)
            for lines in plans.values():
                for index in _CLAIM_INDEXES:
                    self.assertNotIn(index, " ".join(lines))

    async def test_onlyClaimsUseClaimIndexes(self) -> None:
        """
        Of every call on messages, only the claim's and the pop's two
        statements use the partial claim indexes: renewing and releasing a
        claim find its rows by claim id, whatever else the queue holds.
        """
        store = self.store
        ids = await store.postMessages("p", "q", [msg()] * 20, "c", T0)
        for _ in range(5):
            await store.createClaim("p", "q", spec(limit=2), T0)
        claim = await store.createClaim("p", "q", spec(limit=2), T0)
        calls = {
            "post": lambda: store.postMessages("p", "q", [msg()], "c", T0),
            "get": lambda: store.getMessages("p", "q", ids[:3], T0),
            "getClaim": lambda: store.getClaim("p", "q", claim.id, T0),
            "renew": lambda: store.renewClaim("p", "q", claim.id, 60, 60, T0),
            "deleteOne": lambda: store.deleteMessage("p", "q", ids[10], claim.id, T0),
            "deleteMany": lambda: store.deleteMessages(
                "p", "q", ids[11:13], [claim.id], T0
            ),
            "release": lambda: store.releaseClaim("p", "q", claim.id, T0),
            "purge": lambda: store.purgeExpired(T0 + 1000),
        }
        for name, call in calls.items():
            plans = await self.plans(call)
            for sql, lines in plans.items():
                for index in _CLAIM_INDEXES:
                    self.assertNotIn(index, " ".join(lines), (name, sql))
        plans = await self.plans(lambda: store.releaseClaim("p", "q", "x", T0))
        [lines] = [p for sql, p in plans.items() if sql.lstrip().startswith("UPDATE")]
        self.assertIn("messages_by_claim", lines[0])

    async def steps(self, call: Any) -> int:
        """
        How many thousands of SQLite virtual machine steps C{call()} took.
        """
        count = [0]

        def tick() -> int:
            count[0] += 1
            return 0

        def counting(c: sqlite3.Connection, on: bool) -> None:
            c.set_progress_handler(tick if on else None, 1000)

        await self.store._run(counting, True)
        await call()
        await self.store._run(counting, False)
        return count[0]

    async def test_claimWorkFlatInHeldHead(self) -> None:
        """
        A claim, renewing it and releasing it do about the same work
        whether 20 or 2,000 rows held by live claims come before the
        claimable ones (walking past the held rows would take some 100
        times more steps).
        """
        store = self.store
        work = []
        for queue, held in (("small", 20), ("big", 2000)):
            await store.postMessages("p", queue, [msg()] * (held + 50), "c", T0)
            for _ in range(held // 10):
                await store.createClaim("p", queue, spec(limit=10, ttl=1000), T0)
            # The first claim after the fill, unmeasured.
            await store.createClaim("p", queue, spec(limit=10), T0)
            taken: list = []

            async def cycle(queue: str = queue, taken: list = taken) -> None:
                claim = await store.createClaim("p", queue, spec(limit=10), T0)
                taken.append(len(claim.messages))
                await store.renewClaim("p", queue, claim.id, 60, 60, T0)
                await store.releaseClaim("p", queue, claim.id, T0)

            work.append(await self.steps(cycle))
            self.assertEqual(taken, [10])
        small, big = work
        self.assertLessEqual(big, 2 * small + 2, work)

    async def test_migratesToClaimIndexes(self) -> None:
        """
        A file of schema version 2 gets the claim indexes when it opens;
        its held rows stay held, and rows whose claim ended are claimed
        again in their marker place.
        """
        store = self.store
        ids = await store.postMessages("p", "q", [msg()] * 6, "c", T0)
        ended = await store.createClaim("p", "q", spec(limit=2, ttl=30), T0)
        held = await store.createClaim("p", "q", spec(limit=2, ttl=300), T0)
        await store.stopService()
        db = sqlite3.connect(self.path)
        db.executescript(
            "DROP INDEX messages_unclaimed; DROP INDEX messages_claimed; "
            "PRAGMA user_version = 2;"
        )
        db.close()
        self.store = store = SQLiteStore(self.path, reactor)
        store.startService()

        def schema(c: sqlite3.Connection) -> tuple:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            names = c.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' "
                "AND name IN (?, ?) ORDER BY name",
                _CLAIM_INDEXES,
            ).fetchall()
            return version, [n for (n,) in names]

        self.assertEqual(await store._run(schema), (4, sorted(_CLAIM_INDEXES)))
        claim = await store.createClaim("p", "q", spec(limit=3), T0 + 60)
        self.assertEqual([m.id for m in ended.messages], ids[:2])
        self.assertEqual([m.id for m in held.messages], ids[2:4])
        self.assertEqual([m.id for m in claim.messages], ids[:2] + ids[4:5])
        self.assertEqual([m.claimCount for m in claim.messages], [2, 2, 1])
        found = await store.getClaim("p", "q", held.id, T0 + 60)
        self.assertEqual([m.id for m in found.messages], ids[2:4])
