"""
The SQLite store: the storage contract, and what is particular to SQLite.
"""

import os
import sqlite3

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from marconi.core.errors import QueueDoesNotExist
from marconi.storage.sqlite import store as sqlitestore
from marconi.storage.sqlite.store import SQLiteStore, makeStore
from marconi.storage.sqlite.uri import checkURI, parseURI
from tests.storage.contract import T0, MessageStoreContract, msg, query, spec


class SQLiteStoreContractTests(MessageStoreContract, TestCase):
    """
    The storage contract, on a SQLite file in a temporary directory.
    """

    def createStore(self) -> SQLiteStore:
        self.path = os.path.join(self.mktemp() + ".sqlite3")
        return self._start()

    def _start(self) -> SQLiteStore:
        store = SQLiteStore(self.path, reactor)
        store.startService()
        self.addCleanup(lambda: store.running and store.stopService())
        return store

    async def reopenStore(self, store: SQLiteStore) -> SQLiteStore:
        await store.stopService()
        return self._start()

    async def test_walAndSynchronous(self) -> None:
        """
        The database runs in WAL mode with synchronous=FULL by default.
        """
        store = self.createStore()
        await store.ping()
        mode = await store._run(
            lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]
        )
        sync = await store._run(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
        self.assertEqual((mode, sync), ("wal", 2))

    async def test_markersWithoutReturning(self) -> None:
        """
        With a SQLite older than 3.35 (no C{RETURNING}), a queue's markers
        are read back after they are reserved: posts still get the markers
        that follow each other.
        """
        self.patch(sqlitestore, "_RETURNING", False)
        store = self.createStore()
        await store.postMessages("p", "q", [msg('"a"')] * 3, "c", T0)
        await store.postMessages("p", "q", [msg('"b"')] * 2, "c", T0)
        listed = await store.listMessages("p", "q", query(limit=10, echo=True), T0)
        self.assertEqual([m.marker for m in listed], [1, 2, 3, 4, 5])

    async def test_savepointsInMemory(self) -> None:
        """
        The undo pages of the savepoints of a group commit (its statement
        journals) are kept in memory, not written to temporary files:
        C{temp_store} is C{MEMORY} (2).  A group of posts still commits.
        """
        store = self.createStore()
        posts = [
            store.postMessages("p", "q", [msg('"a"')] * 10, "c", T0) for _ in range(8)
        ]
        for d in posts:
            self.assertEqual(len(await d), 10)
        temp = await store._run(lambda c: c.execute("PRAGMA temp_store").fetchone()[0])
        self.assertEqual(temp, 2)

    async def test_messageIdsByTime(self) -> None:
        """
        A message id's first 12 hex digits are the milliseconds of its
        post (so that the ids of consecutive posts are neighbours in
        C{messages_by_id}) and its other 20 are random.
        """
        store = self.createStore()
        first = await store.postMessages("p", "q", [msg('"a"')] * 3, "c", T0)
        later = await store.postMessages("p", "q", [msg('"b"')], "c", T0 + 1.5)
        prefix = "%012x" % int(T0 * 1000)
        for messageId in first:
            self.assertEqual((len(messageId), messageId[:12]), (32, prefix))
            int(messageId, 16)
        self.assertEqual(len({i[12:] for i in first}), 3)
        self.assertEqual(later[0][:12], "%012x" % int(T0 * 1000 + 1500))

    async def test_committedWhenAcknowledged(self) -> None:
        """
        When a post's Deferred fires, another connection already sees the
        messages: the transaction was committed.
        """
        store = self.createStore()
        ids = await store.postMessages("p", "q", [msg('"a"'), msg('"b"')], "c", T0)
        other = sqlite3.connect(self.path)
        self.addCleanup(other.close)
        rows = other.execute("SELECT id FROM messages ORDER BY marker").fetchall()
        self.assertEqual([r[0] for r in rows], ids)

    async def test_queriesOffTheReactorThread(self) -> None:
        """
        Work on the database runs on the store's own thread, never on the
        reactor thread.
        """
        import threading

        store = self.createStore()
        name = await store._run(lambda c: threading.current_thread().name)
        self.assertNotEqual(name, threading.current_thread().name)
        self.assertIn("marconi-sqlite", name)

    async def test_batchIsAtomic(self) -> None:
        """
        A batch that fails half way stores nothing.
        """
        store = self.createStore()

        class Boom(Exception):
            pass

        def failing(c):
            c.execute("INSERT INTO queues VALUES ('p', 'q', '{}', 0)")
            raise Boom()

        with self.assertRaises(Boom):
            await store._run(failing)
        with self.assertRaises(QueueDoesNotExist):
            await store.getQueueMetadata("p", "q")

    def test_memory(self) -> None:
        """
        C{sqlite::memory:} gives a throwaway in-memory store.
        """
        store = makeStore("sqlite::memory:", reactor)
        self.assertEqual(store.path, ":memory:")


class URITests(SynchronousTestCase):
    """
    Parsing and checking C{sqlite:} URIs.
    """

    def test_parse(self) -> None:
        """
        A path, an in-memory database and the synchronous option are read.
        """
        self.assertEqual(parseURI("sqlite:/tmp/x.db"), ("/tmp/x.db", "full", 2048))
        self.assertEqual(parseURI("sqlite:rel.db"), ("rel.db", "full", 2048))
        self.assertEqual(parseURI("sqlite::memory:"), (":memory:", "full", 2048))
        self.assertEqual(
            parseURI("sqlite:x.db?synchronous=NORMAL"), ("x.db", "normal", 2048)
        )
        self.assertEqual(
            parseURI("sqlite:x.db?page_size=8192&synchronous=off"),
            ("x.db", "off", 8192),
        )

    def test_bad(self) -> None:
        """
        Bad URIs are refused with a reason.
        """
        for uri in [
            "sqlite:",
            "redis://x",
            "sqlite:x?synchronous=fast",
            "sqlite:x?cache=1",
            "sqlite:x?page_size=1000",
            "sqlite:x?page_size=131072",
            "sqlite:x?page_size=256",
            "sqlite:x?page_size=",
            "sqlite:x?page_size=%D9%A4",
            "sqlite:/no/such/dir/x.db",
        ]:
            self.assertRaises(ValueError, checkURI, uri)


class PageSizeTests(TestCase):
    """
    The page size of the database file.
    """

    def pageSize(self, path: str) -> int:
        db = sqlite3.connect(path)
        try:
            return db.execute("PRAGMA page_size").fetchone()[0]
        finally:
            db.close()

    async def test_newFile(self) -> None:
        """
        A file the store creates has the URI's page size, 2,048 bytes
        unless the URI says otherwise.
        """
        for uri, size in (("", 2048), ("?page_size=8192", 8192)):
            path = self.mktemp() + ".sqlite3"
            store = makeStore(f"sqlite:{path}{uri}", reactor)
            store.startService()
            await store.postMessages("p", "q", [msg()], "c", T0)
            await store.stopService()
            self.assertEqual(self.pageSize(path), size, uri)

    async def test_existingFileKeepsItsOwn(self) -> None:
        """
        A file that exists keeps its page size, whatever the URI's, and
        its messages.
        """
        path = self.mktemp() + ".sqlite3"
        store = makeStore(f"sqlite:{path}?page_size=4096", reactor)
        store.startService()
        await store.postMessages("p", "q", [msg()], "c", T0)
        await store.stopService()
        store = makeStore(f"sqlite:{path}", reactor)
        store.startService()
        self.addCleanup(store.stopService)
        await store.postMessages("p", "q", [msg()], "c", T0)
        listed = await store.listMessages("p", "q", query(echo=True), T0)
        self.assertEqual(len(listed), 2)
        self.assertEqual(self.pageSize(path), 4096)


class GroupCommitTests(TestCase):
    async def busyStore(self) -> tuple:
        """
        A running in-memory store whose database thread is held by a call
        until C{gate} is set, with a post queued behind it.

        @return: the store, the gate, the holding call and the post.
        """
        import threading

        store = SQLiteStore(":memory:", reactor)
        store.startService()
        self.addCleanup(store.stopService)
        await store.ping()
        gate = threading.Event()
        blocked = store._run(lambda c: gate.wait(10))
        first = store.postMessages("p", "q", [msg('"a"')], "c", T0)
        return store, gate, blocked, first

    async def test_failureIsolatedInGroup(self) -> None:
        """
        Calls queued while the database thread is busy commit together, and
        one that fails is rolled back alone: the others are stored.
        """
        from twisted.internet.defer import gatherResults
        from twisted.internet.threads import deferToThread

        store, gate, blocked, first = await self.busyStore()

        def broken(c):
            c.execute("INSERT INTO queues VALUES ('p', 'bad', '{}', 0)")
            raise QueueDoesNotExist("bad")

        failing = store._run(broken)
        last = store.postMessages("p", "q", [msg('"b"')], "c", T0)
        await deferToThread(gate.set)
        await blocked
        ids = await gatherResults([first, last])
        with self.assertRaises(QueueDoesNotExist):
            await failing
        found = await store.getMessages("p", "q", [i[0] for i in ids], T0)
        self.assertEqual([m.body for m in found], ['"a"', '"b"'])
        with self.assertRaises(QueueDoesNotExist):
            await store.getQueueMetadata("p", "bad")

    async def test_postsTogether(self) -> None:
        """
        Posts queued one after the other in a group are stored with the
        statements of one post per queue (one reservation of each queue's
        markers), each with its own ids, times, client and tags, each
        queue's in the order they were made.
        """
        from twisted.internet.defer import gatherResults
        from twisted.internet.threads import deferToThread

        store, gate, blocked, first = await self.busyStore()
        second = store.postMessages(
            "p", "q", [msg('"b"', ttl=100), msg('"c"', tags=("t",))], "d", T0 + 1
        )
        other = store.postMessages("p", "r", [msg('"x"')], "c", T0)
        third = store.postMessages("p", "q", [msg('"e"', delay=5)], "c", T0 + 2)
        fourth = store.postMessages("p", "q", [msg('"f"')], "e", T0 + 3)
        statements: list = []
        assert store._connection is not None
        store._connection.set_trace_callback(statements.append)
        await deferToThread(gate.set)
        await blocked
        posts = await gatherResults([first, second, other, third, fourth])
        store._connection.set_trace_callback(None)
        reservations = [s for s in statements if s.startswith("INSERT INTO markers")]
        self.assertEqual(len(reservations), 2)
        self.assertEqual([len(ids) for ids in posts], [1, 2, 1, 1, 1])
        found = await store.listMessages(
            "p", "q", query(echo=True, includeDelayed=True), T0 + 10
        )
        self.assertEqual(
            [
                (m.id, m.body, m.marker, m.created, m.expires, m.visibleAt)
                + (m.clientId, m.tags)
                for m in found
            ],
            [
                (posts[0][0], '"a"', 1, T0, T0 + 300, T0, "c", ()),
                (posts[1][0], '"b"', 2, T0 + 1, T0 + 101, T0 + 1, "d", ()),
                (posts[1][1], '"c"', 3, T0 + 1, T0 + 301, T0 + 1, "d", ("t",)),
                (posts[3][0], '"e"', 4, T0 + 2, T0 + 302, T0 + 7, "c", ()),
                (posts[4][0], '"f"', 5, T0 + 3, T0 + 303, T0 + 3, "e", ()),
            ],
        )
        tagged = await store.listMessages(
            "p", "q", query(echo=True, tags=("t",)), T0 + 10
        )
        self.assertEqual([m.id for m in tagged], [posts[1][1]])
        [elsewhere] = await store.listMessages("p", "r", query(echo=True), T0)
        self.assertEqual((elsewhere.id, elsewhere.marker), (posts[2][0], 1))
        stats = await store.queueStats("p", "q", T0 + 10)
        self.assertEqual(stats.total, 5)

    async def test_postFailingAmongPosts(self) -> None:
        """
        A post that fails among posts stored together fails alone: the
        posts before and after it, to its queue and to others, are stored.
        """
        from twisted.internet.defer import gatherResults
        from twisted.internet.threads import deferToThread

        store, gate, blocked, first = await self.busyStore()
        # A time to live SQLite cannot store (the API refuses it before).
        failing = store.postMessages("p", "q", [msg('"b"', ttl=2**63)], "c", T0)
        other = store.postMessages("p", "r", [msg('"x"')], "c", T0)
        last = store.postMessages("p", "q", [msg('"c"')], "c", T0)
        await deferToThread(gate.set)
        await blocked
        ids = await gatherResults([first, other, last])
        with self.assertRaises(OverflowError):
            await failing
        found = await store.listMessages("p", "q", query(echo=True), T0)
        self.assertEqual(
            [(m.id, m.body, m.marker) for m in found],
            [(ids[0][0], '"a"', 1), (ids[2][0], '"c"', 2)],
        )
        [elsewhere] = await store.listMessages("p", "r", query(echo=True), T0)
        self.assertEqual(elsewhere.id, ids[1][0])
        self.assertEqual((await store.queueStats("p", "q", T0)).total, 2)

    async def test_transactionEndedBySQLite(self) -> None:
        """
        When SQLite ends a group's whole transaction under a failing call
        (so the call cannot be rolled back alone), every call of the group
        fails with StorageUnavailable, nothing of it is stored, and the
        database thread goes on serving later calls.
        """
        from twisted.internet.threads import deferToThread

        from marconi.core.errors import StorageUnavailable

        store, gate, blocked, first = await self.busyStore()

        def ended(c):
            c.execute("ROLLBACK")
            raise sqlite3.OperationalError("disk I/O error")

        failing = store._run(ended)
        await deferToThread(gate.set)
        try:
            # It may have joined the group of the two below.
            await blocked
        except StorageUnavailable:
            pass
        with self.assertRaises(StorageUnavailable):
            await first
        with self.assertRaises(StorageUnavailable):
            await failing
        ids = await store.postMessages("p", "q", [msg('"b"')], "c", T0)
        found = await store.listMessages("p", "q", query(echo=True), T0)
        self.assertEqual([(m.id, m.body) for m in found], [(ids[0], '"b"')])

    async def test_savepointEndedUnderACall(self) -> None:
        """
        A call that swallows the error of a statement after which SQLite
        ended the transaction leaves no savepoint to release: the group
        fails with StorageUnavailable, is logged, and the database thread
        goes on serving later calls.
        """
        from marconi.core.errors import StorageUnavailable

        store, gate, blocked, first = await self.busyStore()

        def swallowed(c):
            c.execute("ROLLBACK")
            return "fine"

        failing = store._run(swallowed)
        from twisted.internet.threads import deferToThread

        await deferToThread(gate.set)
        for d in (blocked, first, failing):
            try:
                await d
            except StorageUnavailable:
                pass
        self.flushLoggedErrors()
        ids = await store.postMessages("p", "q", [msg('"b"')], "c", T0)
        found = await store.listMessages("p", "q", query(echo=True), T0)
        self.assertEqual([m.id for m in found][-1], ids[0])

    async def test_stoppedStoreRefuses(self) -> None:
        """
        A store that is not running fails calls with StorageUnavailable.
        """
        from marconi.core.errors import StorageUnavailable

        store = SQLiteStore(":memory:", reactor)
        with self.assertRaises(StorageUnavailable):
            await store.ping()


class HandOverTests(TestCase):
    """
    Where the hot path's statements and commits run.
    """

    async def start(self) -> SQLiteStore:
        self.path = self.mktemp() + ".sqlite3"
        store = makeStore(f"sqlite:{self.path}", reactor)
        store.startService()
        self.addCleanup(store.stopService)
        await store.ping()
        return store

    async def test_statementsOnTheThread(self) -> None:
        """
        Every statement of a post and of a listing, commits included, runs
        on the database thread; C{statements} is not an option of the URI.
        """
        import threading

        store = await self.start()
        seen: list = []

        def traced(sql: str) -> None:
            seen.append((sql.split()[0], threading.current_thread().name))

        assert store._connection is not None
        store._connection.set_trace_callback(traced)
        await store.postMessages("p", "q", [msg('"a"')], "c", T0)
        [listed] = await store.listMessages("p", "q", query(echo=True), T0)
        self.assertEqual(listed.body, '"a"')
        self.assertIn(("INSERT", "marconi-sqlite"), seen)
        self.assertIn(("COMMIT", "marconi-sqlite"), seen)
        self.assertEqual({thread for _, thread in seen}, {"marconi-sqlite"})
        self.assertRaises(ValueError, checkURI, "sqlite:x.db?statements=reactor")

    async def test_callsOfOneTurnCommitTogether(self) -> None:
        """
        Calls made in one turn of the reactor while the database thread is
        idle are run and committed in one transaction: the first does not
        start a group of its own.
        """
        from twisted.internet.defer import gatherResults
        from twisted.internet.task import deferLater

        store = await self.start()
        # Out of the delivery of the last results: the thread is idle.
        await deferLater(reactor, 0, lambda: None)
        self.assertFalse(store._busy)
        seen: list = []
        assert store._connection is not None
        store._connection.set_trace_callback(seen.append)
        posts = [
            store.postMessages("p", "q", [msg(f'"{n}"')], "c", T0) for n in range(3)
        ]
        ids = await gatherResults(posts)
        self.assertEqual(
            [sql for sql in seen if sql in ("BEGIN IMMEDIATE", "COMMIT")],
            ["BEGIN IMMEDIATE", "COMMIT"],
        )
        found = await store.listMessages("p", "q", query(echo=True), T0)
        self.assertEqual(
            [(m.id, m.body) for m in found],
            [(ids[n][0], f'"{n}"') for n in range(3)],
        )

    async def test_lockedElsewhereWaitsOnTheThread(self) -> None:
        """
        While another connection holds the write lock, a post waits for it
        on the database thread (the reactor goes on) and is stored once the
        lock is released.
        """
        store = await self.start()
        other = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(other.close)
        from twisted.internet.task import deferLater

        other.execute("BEGIN IMMEDIATE")
        seen: list = []
        store._connection.set_trace_callback(seen.append)
        posted = store.postMessages("p", "q", [msg('"a"')], "c", T0)
        self.assertNoResult(posted)
        # The lock is let go only once the database thread has begun its
        # transaction, and so waits for it, while the reactor runs.
        for _ in range(1000):
            if "BEGIN IMMEDIATE" in seen or posted.called:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertIn("BEGIN IMMEDIATE", seen)
        self.assertNoResult(posted)
        other.execute("ROLLBACK")
        ids = await posted
        found = await store.getMessages("p", "q", ids, T0)
        self.assertEqual([m.body for m in found], ['"a"'])


# The schema of files written before markers were counted per queue (schema
# version 0): one counter, the messages' primary key, shared by every queue.
_SCHEMA_0 = """
CREATE TABLE queues (
    project TEXT NOT NULL, name TEXT NOT NULL, metadata TEXT NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (project, name)
) WITHOUT ROWID;
CREATE TABLE messages (
    marker INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL,
    project TEXT NOT NULL, queue TEXT NOT NULL, body TEXT NOT NULL,
    ttl INTEGER NOT NULL, created REAL NOT NULL, expires REAL NOT NULL,
    visible_at REAL NOT NULL, client_id TEXT NOT NULL, claim_id TEXT,
    claim_expires REAL, claim_count INTEGER NOT NULL DEFAULT 0, tags TEXT,
    checksum TEXT NOT NULL
);
CREATE UNIQUE INDEX messages_by_id ON messages (project, queue, id);
CREATE INDEX messages_by_queue ON messages (project, queue, marker);
CREATE INDEX messages_by_expiry ON messages (expires);
CREATE INDEX messages_by_claim ON messages (claim_id) WHERE claim_id IS NOT NULL;
CREATE TABLE message_tags (
    marker INTEGER NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (marker, tag)
) WITHOUT ROWID;
CREATE INDEX message_tags_by_tag ON message_tags (tag, marker);
CREATE TRIGGER messages_untag AFTER DELETE ON messages
    WHEN old.tags IS NOT NULL
    BEGIN DELETE FROM message_tags WHERE marker = old.marker; END;
CREATE TABLE claims (
    project TEXT NOT NULL, queue TEXT NOT NULL, id TEXT NOT NULL,
    ttl INTEGER NOT NULL, grace INTEGER NOT NULL, updated REAL NOT NULL,
    expires REAL NOT NULL, PRIMARY KEY (project, queue, id)
) WITHOUT ROWID;
CREATE INDEX claims_by_expiry ON claims (expires);
"""


class SchemaMigrationTests(TestCase):
    """
    A file written with the shared marker counter is migrated when the
    store opens it.
    """

    def oldFile(self) -> str:
        path = self.mktemp() + ".sqlite3"
        db = sqlite3.connect(path)
        db.executescript(_SCHEMA_0)
        for project, queue in [("p", "q"), ("other", "q"), ("p", "q")]:
            db.execute(
                "INSERT OR IGNORE INTO queues VALUES (?, ?, '{}', ?)",
                (project, queue, T0),
            )
        rows = [("p", "q", '["t"]'), ("other", "q", None), ("p", "q", None)]
        for n, (project, queue, tags) in enumerate(rows):
            cursor = db.execute(
                "INSERT INTO messages (id, project, queue, body, ttl, created, "
                "expires, visible_at, client_id, tags, checksum) "
                "VALUES (?, ?, ?, ?, 300, ?, ?, ?, 'c', ?, 'MD5:0')",
                (f"{n:032x}", project, queue, f'"{n}"', T0, T0 + 300, T0, tags),
            )
            if tags:
                db.execute(
                    "INSERT INTO message_tags VALUES (?, 't')", (cursor.lastrowid,)
                )
        db.commit()
        db.close()
        return path

    async def test_migratesOnOpen(self) -> None:
        """
        Old messages keep their markers and tags; each queue's new markers
        continue above every marker the shared counter handed out, and
        from then on count only that queue's messages; stats count the
        migrated messages; the file records schema version 4.
        """
        store = SQLiteStore(self.oldFile(), reactor)
        store.startService()
        self.addCleanup(store.stopService)
        before = await store.listMessages("p", "q", query(), T0)
        self.assertEqual([(m.body, m.marker) for m in before], [('"0"', 1), ('"2"', 3)])
        tagged = await store.listMessages("p", "q", query(tags=("t",)), T0)
        self.assertEqual([m.body for m in tagged], ['"0"'])
        await store.postMessages("other", "q", [msg()] * 5, "c", T0)
        await store.postMessages("p", "q", [msg('"new"', tags=("t",))], "c", T0)
        await store.postMessages("p", "fresh", [msg()], "c", T0)
        after = await store.listMessages("p", "q", query(marker=3), T0)
        self.assertEqual([(m.body, m.marker) for m in after], [('"new"', 4)])
        [fresh] = await store.listMessages("p", "fresh", query(), T0)
        self.assertEqual(fresh.marker, 1)
        claim = await store.createClaim("p", "q", spec(tags=("t",)), T0)
        self.assertEqual([m.body for m in claim.messages], ['"0"', '"new"'])
        await store.deleteMessage("p", "q", before[0].id, claim.id, T0)
        version = await store._run(
            lambda c: c.execute("PRAGMA user_version").fetchone()[0]
        )
        self.assertEqual(version, 4)
        stats = await store.queueStats("p", "q", T0)
        self.assertEqual((stats.free, stats.claimed, stats.delayed), (1, 1, 0))
        stats = await store.queueStats("other", "q", T0)
        self.assertEqual((stats.free, stats.claimed, stats.delayed), (6, 0, 0))
        tags = await store._run(
            lambda c: c.execute("SELECT COUNT(*) FROM message_tags").fetchone()[0]
        )
        self.assertEqual(tags, 1)

    async def test_migratedFileReopens(self) -> None:
        """
        A migrated file opens again without change, keeping its markers.
        """
        path = self.oldFile()
        for _ in range(2):
            store = SQLiteStore(path, reactor)
            store.startService()
            await store.postMessages("p", "q", [msg()], "c", T0)
            listed = await store.listMessages("p", "q", query(), T0)
            await store.stopService()
        self.assertEqual([m.marker for m in listed], [1, 3, 4, 5])


class StatsCountMigrationTests(TestCase):
    """
    A file of schema version 1, whose stats counted rows, gets its stored
    counts when the store opens it.
    """

    async def test_countsOnOpen(self) -> None:
        """
        The counts are made from the rows the file holds, and the writes
        keep them from then on.
        """
        path = self.mktemp() + ".sqlite3"
        store = SQLiteStore(path, reactor)
        store.startService()
        await store.postMessages("p", "q", [msg(), msg(delay=100)], "c", T0)
        await store.postMessages("p", "other", [msg()], "c", T0)
        await store.stopService()
        db = sqlite3.connect(path)
        db.executescript(
            "DROP TABLE queue_counts; "
            "DROP INDEX messages_delayed; "
            "PRAGMA user_version = 1;"
        )
        db.close()
        store = SQLiteStore(path, reactor)
        store.startService()
        self.addCleanup(store.stopService)
        stats = await store.queueStats("p", "q", T0)
        self.assertEqual((stats.free, stats.claimed, stats.delayed), (1, 0, 1))
        await store.postMessages("p", "q", [msg()], "c", T0)
        stats = await store.queueStats("p", "q", T0 + 200)
        self.assertEqual((stats.free, stats.claimed, stats.delayed), (3, 0, 0))
        stats = await store.queueStats("p", "other", T0)
        self.assertEqual(stats.total, 1)
        version = await store._run(
            lambda c: c.execute("PRAGMA user_version").fetchone()[0]
        )
        self.assertEqual(version, 4)


class FailedMigrationTests(SynchronousTestCase):
    """
    A file whose migration fails in the middle is left as it was, and the
    store's connection to it is closed at once.
    """

    def test_connectionClosed(self) -> None:
        """
        Opening a file of schema version 0 that lacks a table its migration
        renames fails; the connection that ran the migration is closed at
        once (its write lock released: another connection can write while
        the error is still held), and the file keeps its old schema.
        """
        path = self.mktemp() + ".sqlite3"
        db = sqlite3.connect(path)
        db.executescript(
            "CREATE TABLE messages (marker INTEGER PRIMARY KEY, body TEXT);"
            "INSERT INTO messages (body) VALUES ('kept');"
        )
        db.close()
        store = SQLiteStore(path, reactor)
        error = self.assertRaises(sqlite3.OperationalError, store._open)
        self.assertIn("message_tags", str(error))
        self.assertIsNone(store._connection)
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        self.assertEqual(other.execute("PRAGMA user_version").fetchone()[0], 0)
        self.assertEqual(
            other.execute("SELECT marker, body FROM messages").fetchall(),
            [(1, "kept")],
        )
