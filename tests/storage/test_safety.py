"""
Safety levels per write (L{marconi.core.durability}): every store takes
each level it says it gives on every write, refuses through L{Messaging}
what it cannot give, and commits each level as its docs/storage page says.
"""

import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from marconi.core.durability import (
    DURABLE,
    FAST,
    LEVELS,
    LOCAL_LEVELS,
    REPLICATED,
    requestedSafety,
)
from marconi.core.errors import StorageUnavailable, ValidationFailed
from marconi.core.limits import Limits
from marconi.core.messaging import Messaging
from marconi.storage.sqlite.store import SQLiteStore, makeStore
from tests import mongoserver, redisserver
from tests.storage.contract import T0, msg, spec
from tests.storage.stores import onEveryStore


class SafetyContract:
    """
    The safety levels on one store (C{makeStore} gives a started one).
    """

    async def test_localLevels(self) -> None:
        """
        A store without replicas configured gives C{fast} and C{durable},
        not C{replicated}.
        """
        store = await self.makeStore()  # type: ignore[attr-defined]
        self.assertEqual(store.durabilities(), LOCAL_LEVELS)

    async def test_everyWriteAtEveryLevel(self) -> None:
        """
        Posting, claiming, deleting one or several and popping take each
        level the store gives, and do exactly what they do without one.
        """
        store = await self.makeStore()  # type: ignore[attr-defined]
        for level in store.durabilities():
            queue = "q-" + level
            ids = await store.postMessages(
                "p", queue, [msg(), msg(), msg(), msg()], "c", T0, durability=level
            )
            self.assertEqual(len(ids), 4)
            claim = await store.createClaim(
                "p", queue, spec(limit=2), T0, durability=level
            )
            self.assertEqual([m.id for m in claim.messages], ids[:2])
            await store.deleteMessage(
                "p", queue, ids[0], claim.id, T0, durability=level
            )
            deleted = await store.deleteMessages(
                "p", queue, [ids[1]], [claim.id], T0, durability=level
            )
            self.assertEqual(deleted, 1)
            popped = await store.popMessages("p", queue, 5, (), T0, durability=level)
            self.assertEqual([m.id for m in popped], ids[2:])
            stats = await store.queueStats("p", queue, T0)
            self.assertEqual(stats.total, 0)

    async def test_refusedChangesNothing(self) -> None:
        """
        Through L{Messaging}, an unknown level and C{replicated} on a store
        without replicas are a L{ValidationFailed} (a 400) naming the
        problem, and nothing is posted, claimed, deleted or popped.
        """
        store = await self.makeStore()  # type: ignore[attr-defined]
        clock = Clock()
        clock.advance(T0)
        bus = Messaging(store, clock, Limits())
        kept = await bus.postMessages("p", "q", [{"body": 1, "ttl": 60}], 20, "c")
        for safety, reason in (
            ("eventually", "safety must be one of fast, durable, replicated"),
            ("", "safety must be one of"),
            (REPLICATED, "no replicas"),
        ):
            calls = (
                ("postMessages", ([{"body": 2, "ttl": 60}], 20, "c")),
                ("createClaim", ({}, 5, ())),
                ("deleteMessage", (kept[0], None)),
                ("deleteMessages", (kept, None)),
                ("popMessages", (5, ())),
            )
            for name, args in calls:
                with self.assertRaises(ValidationFailed) as caught:
                    await getattr(bus, name)("p", "q", *args, safety)
                self.assertIn(reason, str(caught.exception))
        stats = await store.queueStats("p", "q", T0)
        self.assertEqual((stats.free, stats.claimed), (1, 0))
        popped = await bus.popMessages("p", "q", 5, (), "FAST")
        self.assertEqual([m.id for m in popped], kept)


onEveryStore(SafetyContract, globals(), "StoreSafetyTests")


class RequestedSafetyTests(SynchronousTestCase):
    """
    L{requestedSafety}: the C{safety} parameter against a store's levels.
    """

    def test_levels(self) -> None:
        """
        No parameter is the store's default (L{None}); a level is read
        without regard to case or spaces; a store that does not say what it
        gives gives C{fast} and C{durable}.
        """

        class Replicated:
            def durabilities(self) -> tuple:
                return LEVELS

        self.assertIsNone(requestedSafety(object(), None))
        self.assertEqual(requestedSafety(object(), " Fast "), FAST)
        self.assertEqual(requestedSafety(object(), "durable"), DURABLE)
        self.assertEqual(requestedSafety(Replicated(), "replicated"), REPLICATED)
        with self.assertRaises(ValidationFailed):
            requestedSafety(object(), "replicated")


class SQLiteCommitTests(TestCase):
    """
    The C{synchronous} setting each level commits with, read inside the
    transaction; calls run on the calling thread as the database thread
    runs them (one group commit per batch).
    """

    def store(self, uri: str = "", durability: str = DURABLE) -> SQLiteStore:
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "store.sqlite3")
        store = makeStore(f"sqlite:{path}{uri}", reactor, durability)
        self.addCleanup(store._close)
        return store

    def commitModes(self, store: SQLiteStore, *levels: Any) -> list:
        """
        Run one batch with a call at each level, each reading the
        synchronous setting of the transaction it runs in.
        """
        batch = []
        for level in levels:
            mode = store._modes[store.durability if level is None else level]
            batch.append((_synchronous, (), Deferred(), mode))
        outcomes = store._runBatch(batch)
        return [value for _, _, value in outcomes]

    def test_fastAndDurable(self) -> None:
        """
        By default C{durable} commits with C{FULL} (2) and C{fast} with
        C{NORMAL} (1), and so does a call with no level on a store whose
        default level is C{fast}.
        """
        store = self.store()
        self.assertEqual(self.commitModes(store, FAST), [1])
        self.assertEqual(self.commitModes(store, DURABLE), [2])
        self.assertEqual(self.commitModes(store, None), [2])
        self.assertEqual(self.commitModes(store, FAST), [1])
        self.assertEqual(self.commitModes(self.store(durability=FAST), None), [1])

    def test_groupAtStrongest(self) -> None:
        """
        A group commit holding a C{fast} and a C{durable} call is made with
        C{FULL}: a fast change never weakens a durable one.
        """
        store = self.store()
        self.assertEqual(self.commitModes(store, FAST, DURABLE, FAST), [2, 2, 2])

    def test_weakerURI(self) -> None:
        """
        With C{synchronous=normal} in the URI both levels commit with
        C{NORMAL}; with C{off}, both with C{OFF}: C{fast} is never stronger
        than C{durable}.
        """
        normal = self.store("?synchronous=normal")
        self.assertEqual(self.commitModes(normal, FAST, DURABLE), [1, 1])
        off = self.store("?synchronous=off")
        self.assertEqual(self.commitModes(off, FAST, DURABLE), [0, 0])

    async def test_throughTheThread(self) -> None:
        """
        A started store runs a C{fast} call with C{NORMAL} and a C{durable}
        one with C{FULL}, through its database thread.
        """
        store = self.store()
        store.startService()
        self.addCleanup(lambda: store.running and store.stopService())
        self.assertEqual(await store._run(_synchronous, durability=FAST), 1)
        self.assertEqual(await store._run(_synchronous, durability=DURABLE), 2)
        self.assertEqual(await store._run(_synchronous), 2)


def _synchronous(connection: Any) -> int:
    return connection.execute("PRAGMA synchronous").fetchone()[0]


class RedisSafetyTests(TestCase):
    """
    The levels on Redis: which stores give C{replicated}, C{WAITAOF} only
    where the server has it, and C{fast} and C{durable} changes surviving
    a SIGKILL of redis-server (append-only file on, C{appendfsync
    everysec}, as docs/storage-redis.rst says).
    """

    skip = redisserver.skipReason()

    def test_whoHasReplicas(self) -> None:
        """
        Sentinel, a C{replicas} option or C{replicated} as the default
        level say the server has replicas; a plain URI does not.
        """
        from marconi.storage.redis.store import RedisStore
        from marconi.storage.redis.uri import parseURI

        for uri, durability, levels in (
            ("redis://h/0", DURABLE, LOCAL_LEVELS),
            ("redis://h/0", FAST, LOCAL_LEVELS),
            ("redis://h/0?replicas=1", DURABLE, LEVELS),
            ("redis+sentinel://a,b/m", DURABLE, LEVELS),
            ("redis://h/0", REPLICATED, LEVELS),
        ):
            store = RedisStore(parseURI(uri), reactor, durability=durability)
            self.assertEqual(store.durabilities(), levels, (uri, durability))

    def test_version(self) -> None:
        """
        The server version is read from C{INFO server}.
        """
        from marconi.storage.redis.store import WAITAOF_VERSION, redisVersion

        self.assertEqual(
            redisVersion("# Server\r\nredis_version:7.0.15\r\n"), (7, 0, 15)
        )
        self.assertEqual(redisVersion("nothing"), ())
        self.assertLess((7, 0, 15), WAITAOF_VERSION)
        self.assertGreaterEqual((7, 2, 0), WAITAOF_VERSION)

    async def test_waitAOFWhereAvailable(self) -> None:
        """
        After the first connection the store knows whether the server has
        C{WAITAOF} (Redis 7.2 and later, with an append-only file); with it,
        a C{durable} post waits for it and is acknowledged.
        """
        from marconi.storage.redis.store import WAITAOF_VERSION, redisVersion
        from tests.storage.test_redis import serverOf, startStore

        server = serverOf(self)
        version = redisVersion(redisserver.info(server.address, "server"))
        store = await startStore(self, server.uri())
        await store.whenPersistenceChecked()
        self.assertEqual(store._waitAOF, version >= WAITAOF_VERSION)
        ids = await store.postMessages("p", "q", [msg()], "c", T0, durability=DURABLE)
        self.assertEqual(len(ids), 1)

    async def test_killedServerKeepsAcknowledged(self) -> None:
        """
        Posts and deletes acknowledged at C{fast} and at C{durable} are all
        still there (or gone) after redis-server is killed with SIGKILL and
        started again from its append-only file.
        """
        from tests.storage.test_redis import serverOf, startStore

        server = serverOf(self)
        store = await startStore(self, server.uri())
        posted: dict = {}
        for level in (FAST, DURABLE):
            for _ in range(20):
                ids = await store.postMessages(
                    "p", level, [msg(), msg()], "c", T0, durability=level
                )
                posted.setdefault(level, []).extend(ids)
            await store.deleteMessage(
                "p", level, posted[level][0], None, T0, durability=level
            )
        await store.stopService()
        server.restart()
        store = await startStore(self, server.uri())
        for level, ids in posted.items():
            found = await store.getMessages("p", level, ids, T0)
            self.assertEqual(sorted(m.id for m in found), sorted(ids[1:]), level)

    async def test_replicatedPerRequest(self) -> None:
        """
        On a store that names two replicas while the server has one, a
        C{replicated} post fails with L{StorageUnavailable}, and a C{fast}
        or C{durable} post of the same store is acknowledged.
        """
        from tests.storage.test_redis import serverOf, startStore
        from tests.storage.test_redis_sentinel import sleep

        primary = serverOf(self)
        replica = serverOf(self, replicaOf=primary.port)
        for _ in range(200):
            if "master_link_status:up" in redisserver.info(
                replica.address, "replication"
            ):
                break
            await sleep(0.05)
        store = await startStore(self, primary.uri() + "?replicas=2&replica_timeout=50")
        self.assertEqual(store.durabilities(), LEVELS)
        with self.assertRaises(StorageUnavailable):
            await store.postMessages("p", "q", [msg()], "c", T0, durability=REPLICATED)
        for level in (FAST, DURABLE):
            ids = await store.postMessages("p", "q", [msg()], "c", T0, durability=level)
            self.assertEqual(len(ids), 1)


class MongoSafetyTests(TestCase):
    """
    The write concern of each level on MongoDB.
    """

    skip = mongoserver.skipReason()

    def test_whoHasReplicas(self) -> None:
        """
        A replica set name, a C{w} above 1 or a tag, or C{replicated} as
        the default level say the store has replicas; a plain URI does not.
        """
        from marconi.storage.mongodb.store import makeStore as makeMongo

        for uri, durability, levels in (
            ("mongodb://h/d", DURABLE, LOCAL_LEVELS),
            ("mongodb://h/d?replicaSet=rs", DURABLE, LEVELS),
            ("mongodb://h/d?w=2", DURABLE, LEVELS),
            ("mongodb://h/d", REPLICATED, LEVELS),
        ):
            store = makeMongo(uri, reactor, durability)
            self.assertEqual(store.durabilities(), levels, (uri, durability))

    async def test_writeConcernPerRequest(self) -> None:
        """
        A write at another level than the store's default writes with that
        level's concern: C{fast} the URI's own (C{w=1}), C{durable}
        C{j=true}, C{replicated} C{w=majority}; at the default level, the
        store's own.
        """
        from marconi.storage.mongodb.store import MESSAGES
        from marconi.storage.mongodb.store import makeStore as makeMongo

        server = mongoserver.sharedServer()
        database = server.newDatabaseName()
        self.addCleanup(mongoserver.dropDatabaseLater, server, database)
        store = makeMongo(server.uri(database), reactor, FAST)
        store.startService()
        self.addCleanup(lambda: store.running and store.stopService())
        await store.ready()
        for level, wanted in (
            (None, {"w": 1}),
            (FAST, {"w": 1}),
            (DURABLE, {"w": 1, "j": True}),
            (REPLICATED, {"w": "majority"}),
        ):
            coll = store._writable(MESSAGES, level)
            self.assertEqual(coll.write_concern.document, wanted, level)


class FastDefaultTests(TestCase):
    """
    C{fast} as a node's default level (C{[storage] durability = fast}).
    """

    def test_setting(self) -> None:
        """
        The setting is read, every driver accepts it, and the SQLite and
        memory stores a driver makes with it have it as their default.
        """
        from marconi import config as configModule
        from marconi import kernel

        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("[storage]\ndurability = Fast\n")
        self.assertEqual(configModule.load(path, {}).durability, FAST)
        for uri in ("sqlite::memory:", "memory:", "redis://h/0", "mongodb://h/d"):
            kernel.storageDriverFor(uri).checkDurability(FAST)
        store = kernel.storageDriverFor("sqlite::memory:").makeStore(
            "sqlite::memory:", reactor, FAST
        )
        self.assertEqual(store.durability, FAST)
        self.assertEqual(store._modes[store.durability], "normal")
        memory = kernel.storageDriverFor("memory:").makeStore("memory:", reactor, FAST)
        self.assertEqual(memory.durabilities(), LOCAL_LEVELS)
