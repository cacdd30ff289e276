"""
Queue stats on SQLite read counts and indexes, never the whole queue.
"""

import os
import sqlite3

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from marconi.storage.sqlite.store import SQLiteStore
from tests.storage.contract import T0, msg, query, spec


class StatsQueryPlanTests(TestCase):
    """
    The statements a call runs, and SQLite's plan for each of them.
    """

    def setUp(self) -> None:
        self.store = SQLiteStore(os.path.join(self.mktemp() + ".sqlite3"), reactor)
        self.store.startService()
        self.addCleanup(self.store.stopService)

    async def plans(self, call: object) -> list[str]:
        """
        Run C{call()} (returning a L{Deferred}) and return the query plan
        lines of every statement it ran on C{messages}.
        """
        statements: list[str] = []

        def trace(c: sqlite3.Connection, on: bool) -> None:
            c.set_trace_callback(statements.append if on else None)

        await self.store._run(trace, True)
        await call()  # type: ignore[operator]
        await self.store._run(trace, False)

        def explain(c: sqlite3.Connection) -> list[str]:
            lines = []
            for sql in statements:
                reads = sql.lstrip().upper().startswith("SELECT") or "RETURNING" in sql
                if "messages" in sql and reads:
                    plan = c.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
                    lines += [row[3] for row in plan]
            return lines

        return await self.store._run(explain)

    async def test_statsSearchIndexes(self) -> None:
        """
        Every statement of a stats call searches an index (it never scans
        C{messages} and never sorts), and the counts come from the stored
        count, the expiry index, the claims and the delayed index.
        """
        store = self.store
        await store.postMessages("p", "q", [msg(), msg(delay=60)] * 5, "c", T0)
        await store.createClaim("p", "q", spec(limit=2), T0)
        lines = await self.plans(lambda: store.queueStats("p", "q", T0 + 1))
        self.assertTrue(lines)
        for line in lines:
            self.assertFalse(line.startswith("SCAN"), line)
            self.assertNotIn("TEMP B-TREE", line)
        used = " ".join(lines)
        for index in ("messages_by_expiry", "messages_by_claim", "messages_delayed"):
            self.assertIn(index, used)

    async def test_listingAndClaimKeepMarkerOrder(self) -> None:
        """
        The indexes kept for stats do not lead listings and claims away
        from marker order (which would sort the whole queue): listings
        read the marker index, claims and pops the unclaimed rows' index,
        also in marker order.
        """
        store = self.store
        await store.postMessages("p", "q", [msg(), msg(delay=60)] * 5, "c", T0)
        for call, index in (
            (
                lambda: store.listMessages("p", "q", query(marker=2), T0),
                "messages_by_marker",
            ),
            (
                lambda: store.listMessages("p", "q", query(includeClaimed=True), T0),
                "messages_by_marker",
            ),
            (
                lambda: store.createClaim("p", "q", spec(limit=2), T0),
                "messages_unclaimed",
            ),
            (lambda: store.popMessages("p", "q", 1, (), T0), "messages_unclaimed"),
        ):
            lines = await self.plans(call)
            self.assertTrue(lines)
            # A claim names its rows in a subquery of its UPDATE.
            self.assertIn(index, " ".join(lines[:3]))
            for line in lines:
                self.assertNotIn("TEMP B-TREE", line)

    async def test_getClaimByClaimIndex(self) -> None:
        """
        Reading a claim finds its rows by claim id, not by walking the
        queue in marker order.
        """
        store = self.store
        await store.postMessages("p", "q", [msg()] * 5, "c", T0)
        claim = await store.createClaim("p", "q", spec(limit=2), T0)
        lines = await self.plans(lambda: store.getClaim("p", "q", claim.id, T0))
        self.assertIn("messages_by_claim", " ".join(lines))
