"""
The SQLite store's stored counts (C{queue_counts}): after every write that
adds or removes message rows, each queue's count equals its rows.
"""

import os
import sqlite3
import subprocess
import sys
import textwrap
from typing import Any, Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from twisted.application.service import Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from marconi.core.errors import (
    ClaimMismatch,
    MessageIsClaimed,
    StorageUnavailable,
)
from marconi.storage.sqlite import store as sqlitestore
from marconi.storage.sqlite.store import SQLiteStore
from tests.apihelpers import Node
from tests.storage import test_sqlite
from tests.storage.contract import T0, msg, spec

# Each queue's stored count, and its rows, as two sorted lists; a queue
# whose count is 0 may keep its row in queue_counts.
_COUNTS = "SELECT project, queue, stored FROM queue_counts WHERE stored != 0"
_ROWS = "SELECT project, queue, COUNT(*) FROM messages GROUP BY project, queue"


def countsAndRows(c: sqlite3.Connection) -> tuple[list, list]:
    """
    The stored counts and the counted rows, each sorted.
    """
    counts = sorted(c.execute(_COUNTS).fetchall())
    rows = sorted(c.execute(_ROWS).fetchall())
    return counts, rows


class CountsTestMixin:
    """
    Check a SQLite store's counts against its rows.
    """

    store: SQLiteStore

    async def assertCounted(self, expected: dict) -> None:
        """
        Every queue's stored count equals its rows, and the rows are
        C{expected} (C{(project, queue)} to rows), leaving out the reserved
        queues (the audit river's, whose counts are checked with the rest).
        """
        counts, rows = await self.store._run(countsAndRows)
        self.assertEqual(counts, rows)  # type: ignore[attr-defined]
        self.assertEqual(  # type: ignore[attr-defined]
            [row for row in rows if not row[1].startswith("~")],
            sorted((p, q, n) for (p, q), n in expected.items() if n),
        )


class StoreCountTests(CountsTestMixin, TestCase):
    """
    Each path of the store interface that adds or removes rows keeps the
    counts exact.
    """

    def setUp(self) -> None:
        self.path = self.mktemp() + ".sqlite3"
        self.store = SQLiteStore(self.path, reactor)
        self.store.startService()
        self.addCleanup(lambda: self.store.running and self.store.stopService())

    async def test_post(self) -> None:
        """
        A post of one message, and a batch with tags and delays, add their
        rows to their queue's count.
        """
        store = self.store
        await store.postMessages("p", "q", [msg()], "c", T0)
        await self.assertCounted({("p", "q"): 1})
        batch = [msg(tags=("a", "b")), msg(delay=60), msg(ttl=60, tags=("a",))]
        await store.postMessages("p", "q", batch * 3, "c", T0)
        await store.postMessages("other", "q", [msg()] * 2, "c", T0)
        await self.assertCounted({("p", "q"): 10, ("other", "q"): 2})

    async def test_deleteById(self) -> None:
        """
        A delete by id, with and without the id of the claim holding the
        message, takes its row from the count; a delete of a missing id or
        one refused (held by another claim) changes nothing.
        """
        store = self.store
        ids = await store.postMessages("p", "q", [msg(tags=("t",))] * 4, "c", T0)
        await store.deleteMessage("p", "q", ids[0], None, T0)
        await self.assertCounted({("p", "q"): 3})
        await store.deleteMessage("p", "q", ids[0], None, T0)
        await self.assertCounted({("p", "q"): 3})
        claim = await store.createClaim("p", "q", spec(limit=2), T0)
        await store.deleteMessage("p", "q", ids[1], claim.id, T0)
        await self.assertCounted({("p", "q"): 2})
        with self.assertRaises(MessageIsClaimed):
            await store.deleteMessage("p", "q", ids[2], "0" * 32, T0)
        await self.assertCounted({("p", "q"): 2})

    async def test_bulkDelete(self) -> None:
        """
        A delete of several ids takes only the rows it removed from the
        count: not the missing ids, nor the rows another claim holds.
        """
        store = self.store
        ids = await store.postMessages("p", "q", [msg()] * 10, "c", T0)
        removed = await store.deleteMessages("p", "q", ids[:3] + ["0" * 24], None, T0)
        self.assertEqual(removed, 3)
        await self.assertCounted({("p", "q"): 7})
        claim = await store.createClaim("p", "q", spec(limit=2), T0)
        removed = await store.deleteMessages("p", "q", ids[3:7], [], T0)
        self.assertEqual(removed, 2)
        await self.assertCounted({("p", "q"): 5})
        removed = await store.deleteMessages("p", "q", ids, [claim.id], T0)
        self.assertEqual(removed, 5)
        await self.assertCounted({})

    async def test_pop(self) -> None:
        """
        A pop takes the rows it returns from the count.
        """
        store = self.store
        await store.postMessages("p", "q", [msg(tags=("t",)), msg()] * 3, "c", T0)
        popped = await store.popMessages("p", "q", 2, (), T0)
        self.assertEqual(len(popped), 2)
        await self.assertCounted({("p", "q"): 4})
        popped = await store.popMessages("p", "q", 10, ("t",), T0)
        self.assertEqual(len(popped), 2)
        await self.assertCounted({("p", "q"): 2})
        self.assertEqual(await store.popMessages("p", "q", 5, ("t",), T0), [])
        await self.assertCounted({("p", "q"): 2})

    async def test_purgeAndDeleteQueue(self) -> None:
        """
        Purging a queue and deleting it take all its rows from its count,
        and no other queue's.
        """
        store = self.store
        for queue in ("a", "b", "c"):
            await store.postMessages("p", queue, [msg(tags=("t",))] * 3, "c", T0)
        await store.createClaim("p", "a", spec(limit=2), T0)
        await store.purgeMessages("p", "a")
        await self.assertCounted({("p", "b"): 3, ("p", "c"): 3})
        await store.deleteQueue("p", "b")
        await self.assertCounted({("p", "c"): 3})
        await store.postMessages("p", "b", [msg()], "c", T0)
        await self.assertCounted({("p", "b"): 1, ("p", "c"): 3})

    async def test_expiryPurge(self) -> None:
        """
        The expiry purge takes the expired rows of every queue from their
        counts, over several batches.
        """
        self.patch(sqlitestore, "_PURGE_BATCH", 3)
        store = self.store
        await store.postMessages("p", "a", [msg(ttl=60), msg(ttl=300)] * 4, "c", T0)
        await store.postMessages("p", "b", [msg(ttl=60, tags=("t",))] * 3, "c", T0)
        await store.postMessages("o", "a", [msg(ttl=60)], "c", T0)
        await store.purgeExpired(T0 + 61)
        await self.assertCounted({("p", "a"): 4})

    async def test_deadLetter(self) -> None:
        """
        A claim that moves messages to the dead letter queue takes them
        from their queue's count and adds them to that queue's.
        """
        store = self.store
        await store.postMessages("p", "q", [msg(tags=("t",))] * 3, "c", T0)
        await store.createClaim("p", "q", spec(ttl=30), T0)
        dead = spec(maxClaimCount=1, deadLetterQueue="dlq", limit=2)
        await store.createClaim("p", "q", dead, T0 + 60)
        await self.assertCounted({("p", "q"): 1, ("p", "dlq"): 2})

    async def test_handover(self) -> None:
        """
        A queue handed over (exported page by page, imported over rows the
        receiving store already held, some with the same ids) and dropped
        by the old owner leaves both stores' counts exact.
        """
        store = self.store
        ids = await store.postMessages("p", "q", [msg(tags=("t",))] * 5, "c", T0)
        receiver = SQLiteStore(self.mktemp() + ".sqlite3", reactor)
        receiver.startService()
        self.addCleanup(receiver.stopService)
        await receiver.postMessages("p", "q", [msg()] * 4, "c", T0)
        first = await store.exportQueue("p", "q", None, 3)
        await receiver.importQueue("p", "q", first, True)
        rest = await store.exportQueue("p", "q", first["next"], 3)
        await receiver.importQueue("p", "q", rest, False)
        # A page sent again replaces its rows.
        await receiver.importQueue("p", "q", rest, False)
        await store.dropQueue("p", "q")
        await self.assertCounted({})
        self.store = receiver
        await self.assertCounted({("p", "q"): 5})
        await receiver.deleteMessages("p", "q", ids, None, T0)
        await self.assertCounted({})

    async def test_failedCallKeepsCounts(self) -> None:
        """
        A call that fails after its rows were written is rolled back with
        its count change: here the count change itself fails (a trigger the
        test adds refuses it), and the rows the post had inserted are gone
        too.
        """
        store = self.store
        await store.postMessages("p", "q", [msg()] * 2, "c", T0)
        await store._run(
            lambda c: c.execute(
                "CREATE TEMP TRIGGER refuse BEFORE UPDATE ON queue_counts "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        )
        with self.assertRaises(StorageUnavailable):
            await store.postMessages("p", "q", [msg(tags=("t",))] * 3, "c", T0)
        ids = await store._run(
            lambda c: [r[0] for r in c.execute("SELECT id FROM messages")]
        )
        with self.assertRaises(StorageUnavailable):
            await store.deleteMessages("p", "q", ids, None, T0)
        await self.assertCounted({("p", "q"): 2})
        tags = await store._run(
            lambda c: c.execute("SELECT COUNT(*) FROM message_tags").fetchone()[0]
        )
        self.assertEqual(tags, 0)


# The per-row count triggers of schema versions 2 and 3.
_OLD_TRIGGERS = """
CREATE TRIGGER messages_count_in AFTER INSERT ON messages
    BEGIN
        INSERT INTO queue_counts (project, queue, stored)
            VALUES (new.project, new.queue, 1)
            ON CONFLICT (project, queue) DO UPDATE SET stored = stored + 1;
    END;
CREATE TRIGGER messages_count_out AFTER DELETE ON messages
    BEGIN
        UPDATE queue_counts SET stored = stored - 1
            WHERE project = old.project AND queue = old.queue;
    END;
"""

# How a file of the current schema becomes one of an earlier version,
# its counts wrong (but for version 1, which had none).
_DOWNGRADES = {
    1: "DROP TABLE queue_counts; DROP INDEX messages_delayed; "
    "DROP INDEX messages_unclaimed; DROP INDEX messages_claimed;",
    2: _OLD_TRIGGERS + "DROP INDEX messages_unclaimed; DROP INDEX messages_claimed; "
    "UPDATE queue_counts SET stored = stored + 7;",
    3: _OLD_TRIGGERS + "UPDATE queue_counts SET stored = 99; "
    "INSERT INTO queue_counts VALUES ('p', 'gone', 5);",
}


class CountMigrationTests(CountsTestMixin, TestCase):
    """
    Opening a file of an earlier schema version drops the count triggers
    and counts each queue's rows again, in the migration's transaction.
    """

    async def migrate(self, version: int) -> None:
        path = self.mktemp() + ".sqlite3"
        self.store = SQLiteStore(path, reactor)
        self.store.startService()
        await self.store.postMessages("p", "q", [msg(tags=("t",))] * 3, "c", T0)
        await self.store.postMessages("p", "other", [msg()] * 2, "c", T0)
        await self.store.stopService()
        db = sqlite3.connect(path)
        db.executescript(_DOWNGRADES[version] + f"PRAGMA user_version = {version};")
        db.close()
        self.store = SQLiteStore(path, reactor)
        self.store.startService()
        self.addCleanup(self.store.stopService)

    async def checkMigrated(self) -> None:
        """
        The file is of version 4, without the count triggers, its counts
        exact; a post of 10 then adds 10, and a bulk delete takes away
        what it deleted.
        """
        schema = await self.store._run(
            lambda c: (
                c.execute("PRAGMA user_version").fetchone()[0],
                c.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' "
                    "ORDER BY name"
                ).fetchall(),
            )
        )
        self.assertEqual(schema, (4, [("messages_untag",)]))
        await self.assertCounted({("p", "q"): 3, ("p", "other"): 2})
        ids = await self.store.postMessages("p", "q", [msg()] * 10, "c", T0)
        await self.assertCounted({("p", "q"): 13, ("p", "other"): 2})
        await self.store.deleteMessages("p", "q", ids[:4], None, T0)
        await self.assertCounted({("p", "q"): 9, ("p", "other"): 2})

    async def test_fromVersion3(self) -> None:
        """
        A file of version 3, its count triggers in place and its counts
        wrong, opens with exact counts, and the triggers count no more.
        """
        await self.migrate(3)
        await self.checkMigrated()
        gone = await self.store.queueStats("p", "gone", T0)
        self.assertEqual(gone.total, 0)

    async def test_fromVersion2(self) -> None:
        """
        A file of version 2 (count triggers, no claim indexes) opens as
        version 4 with exact counts.
        """
        await self.migrate(2)
        await self.checkMigrated()

    async def test_fromVersion1(self) -> None:
        """
        A file of version 1 (no counts) opens as version 4 with exact
        counts.
        """
        await self.migrate(1)
        await self.checkMigrated()

    async def test_fromVersion0(self) -> None:
        """
        A file of version 0 (one marker counter shared by every queue)
        opens with exact counts.
        """
        self.store = SQLiteStore(
            test_sqlite.SchemaMigrationTests.oldFile(self), reactor
        )  # type: ignore[arg-type]
        self.store.startService()
        self.addCleanup(self.store.stopService)
        await self.assertCounted({("p", "q"): 2, ("other", "q"): 1})


# Run in a child process: a post whose process dies after it inserted its
# rows and before it changed the count.
_CRASH = """
import os, sys
from twisted.internet import reactor
from marconi.storage.sqlite import store as sqlitestore
from tests.storage.contract import T0, msg
from tests.storage.test_counts import _SyncStore

store = _SyncStore(sys.argv[1], reactor)
store.startService()

def crash(*args):
    os._exit(7)

sqlitestore._count = crash
store.postMessages("p", "q", [msg(tags=("t",))] * 5, "c", T0)
os._exit(0)
"""


class CrashTests(CountsTestMixin, TestCase):
    """
    A process killed between a write's statements leaves the counts
    exact: the rows and the count change are one transaction.
    """

    async def test_killedBetweenStatements(self) -> None:
        """
        A node process that dies after a post inserted its rows and before
        it changed the count leaves neither behind.
        """
        path = self.mktemp() + ".sqlite3"
        self.store = SQLiteStore(path, reactor)
        self.store.startService()
        await self.store.postMessages("p", "q", [msg()] * 2, "c", T0)
        await self.store.stopService()
        root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
        env = dict(os.environ, PYTHONPATH=os.path.abspath(root))
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_CRASH), path],
            env=env,
            capture_output=True,
        )
        self.assertEqual(done.returncode, 7, done.stderr)
        self.store = SQLiteStore(path, reactor)
        self.store.startService()
        self.addCleanup(self.store.stopService)
        await self.assertCounted({("p", "q"): 2})


class HTTPCountTests(CountsTestMixin, TestCase):
    """
    Through the HTTP API: posts, claims, bulk deletes, pops and a queue
    delete keep the counts exact.
    """

    async def test_api(self) -> None:
        """
        After each request the counts equal the rows.
        """
        node = Node(self)
        self.store = node.store
        body = [{"ttl": 300, "body": n} for n in range(10)]
        ids = await node.post("q", *body)
        await node.post("other", *body[:3])
        await self.assertCounted({("p", "q"): 10, ("p", "other"): 3})
        claimed = await node.request(
            "POST", "/v2/queues/q/claims?limit=10", {"ttl": 60, "grace": 60}
        )
        self.assertEqual(claimed.code, 201, claimed.body)
        hrefs = [m["href"] for m in claimed.json["messages"]]
        held = [href.rsplit("/", 1)[1].split("?")[0] for href in hrefs]
        self.assertEqual(sorted(held), sorted(ids))
        claimId = hrefs[0].split("claim_id=")[1]
        deleted = await node.request(
            "DELETE",
            f"/v2/queues/q/messages?ids={','.join(held)}&claim_ids={claimId}",
        )
        self.assertEqual(deleted.code, 204, deleted.body)
        await self.assertCounted({("p", "q"): 0, ("p", "other"): 3})
        ids = await node.post("q", *body[:4])
        popped = await node.request("DELETE", "/v2/queues/q/messages?pop=3")
        self.assertEqual(popped.code, 200, popped.body)
        await self.assertCounted({("p", "q"): 1, ("p", "other"): 3})
        gone = await node.request("DELETE", f"/v2/queues/q/messages/{ids[3]}")
        self.assertEqual(gone.code, 204, gone.body)
        dropped = await node.request("DELETE", "/v2/queues/other")
        self.assertEqual(dropped.code, 204, dropped.body)
        await self.assertCounted({})


class _SyncStore(SQLiteStore):
    """
    The SQLite store running each call at once, on the calling thread, in
    its own transaction (the store's own L{SQLiteStore._runBatch}), so a
    state machine can drive it without a reactor.
    """

    def startService(self) -> None:
        Service.startService(self)
        self._open()
        self._accepting = True

    def stopService(self) -> None:
        Service.stopService(self)
        self._close()

    def _run(self, work: Callable[..., Any], *args: Any, **kw: Any) -> Deferred:
        d: Deferred[Any] = Deferred()
        sqlitestore._deliver(self._runBatch([(work, args, d, self.synchronous)]))
        return d


_QUEUES = [("p", "a"), ("p", "b"), ("o", "a")]


class CountMachine(RuleBasedStateMachine):
    """
    Random writes of every kind on a few queues; after each, the counts
    equal the rows.
    """

    store: _SyncStore
    path = ""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.ids: dict = {key: [] for key in _QUEUES}
        self.claims: dict = {key: [] for key in _QUEUES}

    @initialize()
    def start(self) -> None:
        self.store = _SyncStore(self.path, reactor, synchronous="off")
        self.store.startService()
        self.store._run(lambda c: [c.execute(f"DELETE FROM {t}") for t in _TABLES])

    def teardown(self) -> None:
        self.store.stopService()

    def result(self, d: Deferred) -> Any:
        box: list = []
        d.addBoth(box.append)
        (value,) = box
        if isinstance(value, Failure):
            value.raiseException()
        return value

    queue = st.sampled_from(_QUEUES)

    @rule(
        key=queue,
        messages=st.lists(
            st.builds(
                msg,
                ttl=st.sampled_from([60, 300]),
                delay=st.sampled_from([0, 0, 30]),
                tags=st.sampled_from([(), ("t",), ("t", "u")]),
            ),
            min_size=1,
            max_size=10,
        ),
    )
    def post(self, key: tuple, messages: list) -> None:
        ids = self.result(self.store.postMessages(*key, messages, "c", self.now))
        self.ids[key] += ids

    @rule(key=queue, pick=st.integers(0, 100), withClaim=st.booleans())
    def deleteOne(self, key: tuple, pick: int, withClaim: bool) -> None:
        known = self.ids[key] or ["0" * 24]
        claim = self.claims[key][-1] if withClaim and self.claims[key] else None
        try:
            self.result(
                self.store.deleteMessage(
                    *key, known[pick % len(known)], claim, self.now
                )
            )
        except (MessageIsClaimed, ClaimMismatch):
            # Refused: it changes nothing, as the invariant checks.
            pass

    @rule(
        key=queue,
        picks=st.lists(st.integers(0, 100), max_size=12),
        how=st.integers(0, 2),
    )
    def bulkDelete(self, key: tuple, picks: list, how: int) -> None:
        known = self.ids[key] or ["0" * 24]
        ids = sorted({known[p % len(known)] for p in picks})
        claimIds = [None, [], self.claims[key][-1:]][how]
        self.result(self.store.deleteMessages(*key, ids, claimIds, self.now))

    @rule(key=queue, limit=st.integers(1, 10), tagged=st.booleans())
    def pop(self, key: tuple, limit: int, tagged: bool) -> None:
        tags = ("t",) if tagged else ()
        self.result(self.store.popMessages(*key, limit, tags, self.now))

    @rule(
        key=queue,
        limit=st.integers(1, 10),
        ttl=st.sampled_from([30, 120]),
        deadLetter=st.sampled_from([True, True, False]),
        later=st.sampled_from([0, 45]),
    )
    def claim(
        self, key: tuple, limit: int, ttl: int, deadLetter: bool, later: int
    ) -> None:
        self.now += later
        extra: dict = {}
        if deadLetter:
            extra = {"maxClaimCount": 1, "deadLetterQueue": "b", "deadLetterTTL": 60}
        claim = self.result(
            self.store.createClaim(*key, spec(limit=limit, ttl=ttl, **extra), self.now)
        )
        if claim is not None:
            self.claims[key].append(claim.id)
        if deadLetter:
            self.ids[key[0], "b"] = self.ids.get((key[0], "b"), []) + self.ids[key]

    @rule(key=queue, limit=st.integers(1, 10), into=st.sampled_from(["a", "b"]))
    def deadLetter(self, key: tuple, limit: int, into: str) -> None:
        # A claim that ends, then a claim with a dead letter policy: the
        # rows the first one held move to the queue C{into} of the project.
        self.result(self.store.createClaim(*key, spec(limit=limit, ttl=30), self.now))
        self.now += 31
        dead = spec(limit=limit, maxClaimCount=1, deadLetterQueue=into)
        self.result(self.store.createClaim(*key, dead, self.now))

    @rule(seconds=st.sampled_from([10, 45, 100]))
    def advance(self, seconds: int) -> None:
        self.now += seconds

    @rule(later=st.sampled_from([0, 100]))
    def expire(self, later: int) -> None:
        self.now += later
        self.result(self.store.purgeExpired(self.now))

    @rule(key=queue, drop=st.booleans())
    def purge(self, key: tuple, drop: bool) -> None:
        if drop:
            self.result(self.store.deleteQueue(*key))
        else:
            self.result(self.store.purgeMessages(*key))

    @rule(source=queue, into=queue, pageSize=st.integers(1, 6), resend=st.booleans())
    def handOver(self, source: tuple, into: tuple, pageSize: int, resend: bool) -> None:
        # The source's rows move into the queue C{into}, as the cluster's
        # rebalancer moves a queue, page by page (the first replacing
        # whatever C{into} held; with C{resend}, the last page is sent
        # twice, its rows replacing their copies), and the source is
        # dropped.
        if source == into:
            return
        first, after = True, None
        while True:
            page = self.result(self.store.exportQueue(*source, after, pageSize))
            if page is None:
                break
            self.result(self.store.importQueue(*into, page, first))
            first, after = False, page["next"]
            if after is None:
                if resend:
                    self.result(self.store.importQueue(*into, page, False))
                break
        self.result(self.store.dropQueue(*source))
        self.ids[into] = list(self.ids[source])

    @invariant()
    def counted(self) -> None:
        if not hasattr(self, "store"):
            return
        counts, rows = self.result(self.store._run(countsAndRows))
        assert counts == rows, (counts, rows)
        negative = self.result(
            self.store._run(
                lambda c: c.execute(
                    "SELECT COUNT(*) FROM queue_counts WHERE stored < 0"
                ).fetchone()[0]
            )
        )
        assert negative == 0


_TABLES = ("messages", "message_tags", "claims", "queues", "markers", "queue_counts")


class CountMachineTests(SynchronousTestCase):
    """
    The state machine over the store's writes.
    """

    def test_machine(self) -> None:
        """
        Whatever the order of posts, deletes, bulk deletes, pops, claims
        (moving messages to a dead letter queue), expiry purges, purges,
        queue deletes and handovers, the counts equal the rows after each.
        """
        self.patch(CountMachine, "path", self.mktemp() + ".sqlite3")
        run_state_machine_as_test(
            CountMachine,
            settings=settings(
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
                derandomize=True,
                max_examples=100,
            ),
        )
