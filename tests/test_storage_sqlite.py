"""
The SQLite store: the storage contract, and what is particular to SQLite.
"""

import os
import sqlite3

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from marconi.core.errors import QueueDoesNotExist
from marconi.storage.sqlite import SQLiteStore, checkURI, makeStore, parseURI
from tests.storage_contract import T0, MessageStoreContract, msg


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
        self.assertEqual(parseURI("sqlite:/tmp/x.db"), ("/tmp/x.db", "full"))
        self.assertEqual(parseURI("sqlite:rel.db"), ("rel.db", "full"))
        self.assertEqual(parseURI("sqlite::memory:"), (":memory:", "full"))
        self.assertEqual(parseURI("sqlite:x.db?synchronous=NORMAL"), ("x.db", "normal"))

    def test_bad(self) -> None:
        """
        Bad URIs are refused with a reason.
        """
        for uri in [
            "sqlite:",
            "redis://x",
            "sqlite:x?synchronous=fast",
            "sqlite:x?cache=1",
            "sqlite:/no/such/dir/x.db",
        ]:
            self.assertRaises(ValueError, checkURI, uri)


class GroupCommitTests(TestCase):
    async def test_failureIsolatedInGroup(self) -> None:
        """
        Calls queued while the database thread is busy commit together, and
        one that fails is rolled back alone: the others are stored.
        """
        import threading

        from twisted.internet.defer import gatherResults
        from twisted.internet.threads import deferToThread

        store = SQLiteStore(":memory:", reactor)
        store.startService()
        self.addCleanup(store.stopService)
        await store.ping()
        gate = threading.Event()
        blocked = store._run(lambda c: gate.wait(10))
        first = store.postMessages("p", "q", [msg('"a"')], "c", T0)

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

    async def test_stoppedStoreRefuses(self) -> None:
        """
        A store that is not running fails calls with StorageUnavailable.
        """
        from marconi.core.errors import StorageUnavailable

        store = SQLiteStore(":memory:", reactor)
        with self.assertRaises(StorageUnavailable):
            await store.ping()
