"""
A claim on SQLite reads its rows, then takes them with one C{UPDATE}
naming their keys (L{marconi.storage.sqlite.store._claimRows}): what it
hands back and what it stores must be what L{marconi.core.rules.claimed}
says, whatever order the rows are stored in.
"""

import re
import sqlite3

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from marconi.core.models import ClaimSpec
from marconi.storage.sqlite.store import SQLiteStore
from tests.storage.contract import T0, msg, query, spec


class ClaimRowsTests(TestCase):
    """
    The claimed rows of a claim on a queue without a dead letter policy.
    """

    def setUp(self) -> None:
        self.store = SQLiteStore(self.mktemp() + ".sqlite3", reactor)
        self.store.startService()
        self.addCleanup(lambda: self.store.running and self.store.stopService())

    async def test_markerOrderAgainstRowOrder(self) -> None:
        """
        A queue whose rows were stored in the opposite order of their
        markers (as an imported queue may be) is claimed oldest marker
        first, and the claim's messages are in marker order.
        """
        store = self.store
        await store.postMessages("p", "src", [msg(f'"{i}"') for i in range(3)], "c", T0)
        page = await store.exportQueue("p", "src", None, 10)
        page["messages"].reverse()
        await store.importQueue("p", "q", page, True)
        claim = await store.createClaim("p", "q", spec(limit=2), T0)
        self.assertEqual([m.marker for m in claim.messages], [1, 2])
        self.assertEqual([m.body for m in claim.messages], ['"0"', '"1"'])
        rest = await store.createClaim("p", "q", spec(limit=2), T0)
        self.assertEqual([m.marker for m in rest.messages], [3])

    async def test_graceExtendsShortMessagesOnly(self) -> None:
        """
        A message that would expire before its claim's end plus grace
        lives until then, in the answer and in the store; a message that
        lives longer keeps its expiry; both are held and counted once.
        """
        store = self.store
        await store.postMessages("p", "q", [msg(ttl=60), msg(ttl=3600)], "c", T0)
        claim = await store.createClaim("p", "q", spec(ttl=100, grace=50), T0 + 10)
        short, long = claim.messages
        self.assertEqual(short.expires, T0 + 160)
        self.assertEqual(long.expires, T0 + 3600)
        for m in claim.messages:
            self.assertEqual(m.claimId, claim.id)
            self.assertEqual(m.claimExpires, T0 + 110)
            self.assertEqual(m.claimCount, 1)
        stored = await store.listMessages(
            "p", "q", query(includeClaimed=True, echo=True), T0 + 10
        )
        self.assertEqual(stored, list(claim.messages))
        # Past its own TTL, the short one is still held by the claim.
        again = await store.getClaim("p", "q", claim.id, T0 + 100)
        self.assertEqual([m.id for m in again.messages], [short.id, long.id])

    async def test_claimIdsFollowTime(self) -> None:
        """
        Claim ids are 32 hex digits, distinct even for claims made at the
        same time, and a later claim's id sorts after an earlier one's.
        """
        store = self.store
        await store.postMessages("p", "q", [msg() for _ in range(3)], "c", T0)
        one = await store.createClaim("p", "q", spec(limit=1), T0)
        two = await store.createClaim("p", "q", spec(limit=1), T0)
        three = await store.createClaim("p", "q", spec(limit=1), T0 + 0.002)
        for claim in (one, two, three):
            self.assertTrue(re.fullmatch("[0-9a-f]{32}", claim.id), claim.id)
        self.assertNotEqual(one.id, two.id)
        self.assertLess(max(one.id, two.id), three.id)

    async def test_nothingClaimableWritesNothing(self) -> None:
        """
        A claim that finds nothing claimable (all held, delayed or tagged
        otherwise) answers L{None} and records no claim.
        """
        store = self.store
        await store.postMessages("p", "q", [msg(), msg(delay=60)], "c", T0)
        await store.createClaim("p", "q", spec(), T0)
        for claimSpec in (spec(), spec(tags=("t",)), ClaimSpec(60, 30, 5)):
            self.assertIsNone(await store.createClaim("p", "q", claimSpec, T0 + 1))

        def claims(c: sqlite3.Connection) -> int:
            return c.execute("SELECT COUNT(*) FROM claims").fetchone()[0]

        self.assertEqual(await store._run(claims), 1)

    async def test_endedClaimsMessagesClaimableAgain(self) -> None:
        """
        The messages of a claim that ended are taken by the next claim,
        counted a second time, ahead of messages never claimed.
        """
        store = self.store
        await store.postMessages("p", "q", [msg(), msg(), msg()], "c", T0)
        first = await store.createClaim("p", "q", spec(limit=2, ttl=30), T0)
        second = await store.createClaim("p", "q", spec(limit=3), T0 + 30)
        self.assertEqual(
            [m.id for m in second.messages][:2], [m.id for m in first.messages]
        )
        self.assertEqual([m.claimCount for m in second.messages], [2, 2, 1])
