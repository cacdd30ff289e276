"""
The MongoDB store: the storage contract, and what is particular to MongoDB.

The tests run against the server L{tests.mongoserver} finds or starts (a
real C{mongod}, the one C{MARCONI_TEST_MONGODB_URI} names, or SecantusDB),
and skip when there is none.
"""

import subprocess
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from twisted.application.service import IService
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock, deferLater
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

import marconi.plugins
from marconi.core.errors import StorageUnavailable
from marconi.core.interfaces import IMessageStore, IStorageDriverPlugin
from marconi.core.models import ClaimSpec, MessageQuery
from marconi.storage.mongodb.store import makeStore
from marconi.storage.mongodb.uri import checkURI, parseURI
from tests import mongoserver
from tests.storage.contract import T0, MessageStoreContract, msg

SKIP = mongoserver.skipReason()


class MongoStoreFixture:
    """
    Start stores on a database of their own on the shared server; the
    database is dropped when the test ends.

    The contract tests use made-up times (C{now} around 2023) while a TTL
    index works with the server's clock, which would remove their messages
    at any moment: the stores of these tests run with C{ttlIndexes=false}.
    L{MongoStoreTests.test_indexes} checks the TTL indexes themselves.
    """

    uriOptions: Mapping[str, str] = MappingProxyType({"ttlIndexes": "false"})

    def useServer(self, server: Any = None) -> str:
        self.server = server or mongoserver.sharedServer()
        self.database = self.server.newDatabaseName()
        self.addCleanup(mongoserver.dropDatabaseLater, self.server, self.database)
        return self.server.uri(self.database, **self.uriOptions)

    async def startStore(self, uri: str) -> Any:
        store = makeStore(uri, reactor)
        store.startService()
        self.addCleanup(lambda: store.running and store.stopService())
        await store.ready()
        return store


class MongoStoreContractTests(MongoStoreFixture, MessageStoreContract, TestCase):
    """
    The storage contract, on a fresh database of a MongoDB server.
    """

    skip = SKIP

    def createStore(self) -> Deferred:
        self.uri = self.useServer()
        return Deferred.fromCoroutine(self.startStore(self.uri))

    async def reopenStore(self, store: Any) -> Any:
        await store.stopService()
        return await self.startStore(self.uri)


class MongoStoreTests(MongoStoreFixture, TestCase):
    """
    Behaviour particular to the MongoDB store.
    """

    skip = SKIP

    async def test_concurrentClaimers(self) -> None:
        """
        Sixty claimers on two stores (each with its own connections) work
        one queue at once, each deleting what it claimed: no message is
        ever in two live claims, and every posted message is claimed
        exactly once before it is deleted.
        """
        uri = self.useServer()
        stores = [await self.startStore(uri), await self.startStore(uri)]
        posted = []
        for batch in range(30):
            posted += await stores[batch % 2].postMessages(
                "p", "q", [msg(f'"{batch}-{i}"') for i in range(10)], "writer", T0
            )
        claimedBy: dict[str, list[str]] = {}
        holders: dict[str, str] = {}

        async def claimer(store: Any) -> None:
            while True:
                claim = await store.createClaim(
                    "p", "q", ClaimSpec(ttl=300, grace=60, limit=4), T0 + 1
                )
                if claim is None:
                    return
                for message in claim.messages:
                    # At T0 + 1 every claim made is live: a message taken
                    # twice would be in two live claims.
                    claimedBy.setdefault(message.id, []).append(claim.id)
                    holders[message.id] = claim.id
                for message in claim.messages:
                    await store.deleteMessage("p", "q", message.id, claim.id, T0 + 1)

        await gatherResults(
            [Deferred.fromCoroutine(claimer(stores[i % 2])) for i in range(60)],
            consumeErrors=True,
        )
        twice = {mid: claims for mid, claims in claimedBy.items() if len(claims) > 1}
        self.assertEqual(twice, {})
        self.assertEqual(sorted(claimedBy), sorted(posted))
        stats = await stores[0].queueStats("p", "q", T0 + 1)
        self.assertEqual(stats.total, 0)

    async def test_durabilityWriteConcern(self) -> None:
        """
        A store with C{replicated} durability writes with C{w=majority}
        (which a server that is not a replica set counts as its own
        acknowledgement), and stores and reads messages.
        """
        base = self.useServer()
        for durability, wanted in (("replicated", {"w": "majority"}),):
            store = makeStore(base, reactor, durability=durability)
            store.startService()
            self.addCleanup(lambda store=store: store.running and store.stopService())
            await store.ready()
            self.assertEqual(store._pool.write_concern.document, wanted)
            queue = "q" + durability
            await store.createQueue("p", queue, {}, T0)
            ids = await store.postMessages("p", queue, [msg()], "c", T0)
            found = await store.getMessages("p", queue, ids, T0)
            self.assertEqual([m.id for m in found], ids)

    def test_writeConcernFromURI(self) -> None:
        """
        The URI's write concern is kept where it is at least as strong as
        the level: an explicit C{w} above 1 or C{journal=false} stays.
        """
        from marconi.storage.mongodb.store import writeConcern

        for uri, durability, wanted in (
            ("mongodb://h/d", "durable", {"w": 1, "j": True}),
            ("mongodb://h/d?journal=false", "durable", {"w": 1, "j": False}),
            ("mongodb://h/d", "replicated", {"w": "majority"}),
            ("mongodb://h/d?w=3&wtimeoutMS=50", "replicated", {"w": 3, "wtimeout": 50}),
            ("mongodb://h/d?w=1", "replicated", {"w": "majority"}),
        ):
            self.assertEqual(writeConcern(parseURI(uri), durability), wanted, uri)

    async def test_indexes(self) -> None:
        """
        The store creates at start an index for every query it makes: queue
        and marker order (unique), claim holder, claim expiry, message and
        claim expiry, uncommitted batches, queue names (unique), and TTL
        indexes on the expiry dates.
        """
        self.uriOptions = {}
        uri = self.useServer()
        store = await self.startStore(uri)
        db = store._db
        for collection, specs in store.indexSpecs().items():
            info = await db[collection].index_information()
            for spec in specs:
                self.assertIn(spec["name"], info, f"{collection}.{spec['name']}")
                found = info[spec["name"]]
                self.assertEqual(list(found["key"].items()), list(spec["key"].items()))
                self.assertEqual(bool(found.get("unique")), bool(spec.get("unique")))
        messageIndexes = await db["messages"].index_information()
        self.assertEqual(
            list(messageIndexes["queue_marker"]["key"].items()),
            [("p", 1), ("q", 1), ("k", 1)],
        )
        self.assertTrue(messageIndexes["queue_marker"]["unique"])
        self.assertEqual(messageIndexes["ttl"]["expireAfterSeconds"], 60)
        claimIndexes = await db["claims"].index_information()
        self.assertIn("ttl", claimIndexes)
        self.assertIn("expiry", claimIndexes)

    async def test_queriesUseIndexes(self) -> None:
        """
        The server answers the store's queries (listing, claiming, what a
        claim holds, expiry, queue lookup) with an index scan, never a
        collection scan.
        """
        from bson.son import SON

        store = await self.startStore(self.useServer())
        if self.server.kind == "secantus":
            # SecantusDB's planner scans the collection as soon as a filter
            # names a field outside the index (MongoDB uses the index and
            # filters what it fetches): the plans say nothing there.
            self.skipTest("SecantusDB's query planner differs from MongoDB's")
        await store.postMessages("p", "q", [msg(), msg()], "w", T0)
        query = MessageQuery(limit=10, clientId="r", marker=1, tags=("a",))
        finds = [
            ("messages", store._listFilter("p", "q", query, T0), SON([("k", 1)])),
            ("messages", store._claimable("p", "q", (), T0), SON([("k", 1)])),
            ("messages", {"p": "p", "q": "q", "ci": "c", "ce": {"$gt": T0}}, None),
            ("messages", {"e": {"$lte": T0}, "tx": {"$exists": False}}, None),
            ("messages", {"tx": "batch"}, None),
            ("claims", {"e": {"$lte": T0}}, None),
            ("queues", {"p": "p", "n": "q", "d": {"$ne": True}}, None),
        ]
        for collection, spec, sort in finds:
            command = SON([("find", collection), ("filter", spec)])
            if sort is not None:
                command["sort"] = sort
            plan = await store._db.command(
                SON([("explain", command), ("verbosity", "queryPlanner")])
            )
            winning = repr(plan["queryPlanner"]["winningPlan"])
            self.assertIn("IXSCAN", winning, f"{collection} {spec}: {winning}")
            self.assertNotIn("COLLSCAN", winning, f"{collection} {spec}")

    async def test_noTTLIndexesWhenTurnedOff(self) -> None:
        """
        With C{ttlIndexes=false} the store makes no TTL index.
        """
        store = await self.startStore(self.useServer())
        info = await store._db["messages"].index_information()
        self.assertNotIn("ttl", info)
        self.assertIn("queue_marker", info)

    async def test_uncommittedBatchIsInvisible(self) -> None:
        """
        Messages of a batch whose commit never happened (the node died
        between inserting and committing) are seen by no query and are
        removed by purgeExpired once they are old.
        """
        store = await self.startStore(self.useServer())
        [visible] = await store.postMessages("p", "q", [msg('"ok"')], "w", T0)
        await store._db["messages"].insert_one(
            {
                "_id": "orphan",
                "p": "p",
                "q": "q",
                "k": 99,
                "b": '"lost"',
                "t": 300,
                "c": T0,
                "e": T0 + 300,
                "v": T0,
                "cl": "w",
                "tg": [],
                "cs": "",
                "ci": None,
                "ce": 0.0,
                "cc": 0,
                "tx": "dead-batch",
            }
        )
        listed = await store.listMessages(
            "p", "q", MessageQuery(limit=10, clientId="r"), T0
        )
        self.assertEqual([m.id for m in listed], [visible])
        self.assertEqual(await store.getMessages("p", "q", ["orphan"], T0), [])
        claim = await store.createClaim(
            "p", "q", ClaimSpec(ttl=60, grace=0, limit=10), T0
        )
        self.assertEqual([m.id for m in claim.messages], [visible])
        self.assertEqual((await store.queueStats("p", "q", T0)).total, 1)
        await store.purgeExpired(T0 + 10)
        self.assertEqual(
            await store._db["messages"].count_documents({"_id": "orphan"}), 1
        )
        await store.purgeExpired(T0 + 300)
        self.assertEqual(
            await store._db["messages"].count_documents({"_id": "orphan"}), 0
        )

    async def test_recreatedQueueKeepsMarkersGrowing(self) -> None:
        """
        A queue deleted and created again never hands out a marker twice.
        """
        store = await self.startStore(self.useServer())
        await store.postMessages("p", "q", [msg(), msg()], "w", T0)
        [before] = await store.listMessages(
            "p", "q", MessageQuery(limit=1, clientId="r", marker=1), T0
        )
        await store.deleteQueue("p", "q")
        self.assertEqual(await store.countQueues("p"), 0)
        self.assertEqual(await store.listQueues("p", None, 10, False), [])
        self.assertTrue(await store.createQueue("p", "q", {"again": True}, T0))
        self.assertEqual(await store.getQueueMetadata("p", "q"), {"again": True})
        await store.postMessages("p", "q", [msg()], "w", T0)
        [after] = await store.listMessages(
            "p", "q", MessageQuery(limit=1, clientId="r"), T0
        )
        self.assertGreater(after.marker, before.marker)

    async def test_writeConcern(self) -> None:
        """
        The write concern is w=1 with the journal by default (the
        C{durable} level); w and journal from the URI are used as given,
        and writes succeed with them.
        """
        store = await self.startStore(self.useServer())
        self.assertEqual(store._pool.write_concern.document, {"w": 1, "j": True})
        self.uriOptions = {"ttlIndexes": "false", "w": "majority", "journal": "true"}
        strict = await self.startStore(self.useServer())
        self.assertEqual(
            strict._pool.write_concern.document, {"w": "majority", "j": True}
        )
        ids = await strict.postMessages("p", "q", [msg()], "w", T0)
        self.assertEqual(len(await strict.getMessages("p", "q", ids, T0)), 1)

    async def test_outageAndRecovery(self) -> None:
        """
        While the server is down every operation fails quickly with
        L{StorageUnavailable}; when it is back the store serves again on
        its own, with the data and markers it had.
        """
        server = mongoserver.privateServer(self)
        self.uriOptions = {"ttlIndexes": "false", "serverSelectionTimeoutMS": "500"}
        store = await self.startStore(self.useServer(server))
        ids = await store.postMessages("p", "q", [msg('"a"'), msg('"b"')], "w", T0)
        server.stop()
        # Let the store notice the connection is gone.
        await deferLater(reactor, 0.2, lambda: None)
        for attempt in [
            lambda: store.ping(),
            lambda: store.postMessages("p", "q", [msg('"c"')], "w", T0),
            lambda: store.listMessages(
                "p", "q", MessageQuery(limit=5, clientId="r"), T0
            ),
            lambda: store.createClaim(
                "p", "q", ClaimSpec(ttl=60, grace=0, limit=5), T0
            ),
        ]:
            with self.assertRaises(StorageUnavailable) as caught:
                await attempt()
            self.assertIn("cannot be reached", caught.exception.description)
        server.start()
        for _try in range(200):
            try:
                await store.ping()
                break
            except StorageUnavailable:
                await deferLater(reactor, 0.1, lambda: None)
        else:
            self.fail("the store did not recover within 20 seconds")
        [later] = await store.postMessages("p", "q", [msg('"d"')], "w", T0 + 1)
        listed = await store.listMessages(
            "p", "q", MessageQuery(limit=5, clientId="r"), T0 + 1
        )
        self.assertEqual([m.id for m in listed], ids + [later])
        markers = [m.marker for m in listed]
        self.assertEqual(markers, sorted(set(markers)))

    async def test_notStarted(self) -> None:
        """
        A store that was not started answers StorageUnavailable, without
        trying to connect.
        """
        store = makeStore("mongodb://127.0.0.1:1/db", reactor)
        with self.assertRaises(StorageUnavailable):
            await store.ping()


class MongoTimeoutTests(TestCase):
    """
    The store's timeouts, on a L{Clock}.
    """

    def test_serverSelectionTimeout(self) -> None:
        """
        With no server to connect to, an operation fails with
        L{StorageUnavailable} when the server selection timeout has passed
        on the store's clock, not before.
        """
        clock = Clock()
        store = makeStore(
            "mongodb://127.0.0.1:1/db?serverSelectionTimeoutMS=5000&ttlIndexes=false",
            clock,
        )
        store.startService()
        self.addCleanup(store.stopService)
        d = store.ping()
        clock.advance(4.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        failure = self.failureResultOf(d, StorageUnavailable)
        self.assertIn("no connection within 5s", failure.value.description)


class MongoStoreOfflineTests(SynchronousTestCase):
    """
    What can be checked without a server.
    """

    def test_providesInterfaces(self) -> None:
        """
        The store provides L{IMessageStore} and L{IService}, and building it
        connects to nothing.
        """
        store = makeStore("mongodb://127.0.0.1:1/db", reactor)
        self.assertTrue(verifyObject(IMessageStore, store))
        self.assertTrue(verifyObject(IService, store))
        self.assertIsNone(store._pool)

    def test_pluginFound(self) -> None:
        """
        The driver is found with getPlugins in L{marconi.plugins} under the
        C{mongodb} scheme, and checks URIs through its descriptor.
        """
        found = [
            p
            for p in getPlugins(IStorageDriverPlugin, marconi.plugins)
            if p.name == "mongodb"
        ]
        self.assertEqual(len(found), 1)
        [plugin] = found
        self.assertEqual(plugin.schemes, ("mongodb",))
        plugin.checkURI("mongodb://localhost/marconi")
        self.assertRaises(ValueError, plugin.checkURI, "mongodb://localhost")

    def test_descriptorDoesNotImportTxmongo(self) -> None:
        """
        Listing the drivers and checking a MongoDB URI import neither
        txmongo nor pymongo.
        """
        code = (
            "import sys\n"
            "from twisted.plugin import getPlugins\n"
            "import marconi.plugins\n"
            "from marconi.core.interfaces import IStorageDriverPlugin\n"
            "[p] = [p for p in getPlugins(IStorageDriverPlugin, marconi.plugins)"
            " if p.name == 'mongodb']\n"
            "p.checkURI('mongodb://a,b:2/db?replicaSet=rs')\n"
            "bad = [m for m in ('txmongo', 'pymongo', 'bson') if m in sys.modules]\n"
            "print(bad)\n"
        )
        from tests.nodeprocess import environment

        output = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env=environment(),
        ).stdout
        self.assertEqual(output.strip(), "[]")

    def test_checkURIAccepts(self) -> None:
        """
        Valid URIs: one or several hosts, IPv6, credentials, options.
        """
        for uri in [
            "mongodb://localhost/marconi",
            "mongodb://db1:27018,db2,db3:1/marconi?replicaSet=rs0",
            "mongodb://[::1]:27017/marconi",
            "mongodb://user:p%40ss@host/marconi?authSource=admin",
            "mongodb://h/m?w=majority&journal=true&wtimeoutMS=5000",
            "mongodb://h/m?j=false&maxPoolSize=4&serverSelectionTimeoutMS=100",
            "mongodb://h/m?ttlIndexes=false&socketTimeoutMS=1&connectTimeoutMS=2",
        ]:
            checkURI(uri)

    def test_checkURIRefuses(self) -> None:
        """
        Invalid URIs are refused with a one-line reason.
        """
        for uri, reason in [
            ("redis://localhost/0", "mongodb://"),
            ("mongodb://localhost", "database"),
            ("mongodb://localhost/", "database"),
            ("mongodb:///db", "no host"),
            ("mongodb://h:0/db", "port"),
            ("mongodb://h:99999/db", "port"),
            ("mongodb://h:x/db", "port"),
            ("mongodb://h:/db", "port"),
            ("mongodb://h,,g/db", "empty host"),
            ("mongodb://[::1/db", "["),
            ("mongodb://h/a.b", "may not contain"),
            ("mongodb://h/db?frobnicate=1", "unknown"),
            ("mongodb://h/db?w=0", "w=0"),
            ("mongodb://h/db?journal=maybe", "true or false"),
            ("mongodb://h/db?maxPoolSize=0", "positive"),
            ("mongodb://h/db?w=1&w=2", "twice"),
            ("mongodb://h/db?replicaSet=", "replicaSet"),
        ]:
            with self.assertRaises(ValueError, msg=uri) as caught:
                checkURI(uri)
            text = str(caught.exception)
            self.assertIn(reason, text, uri)
            self.assertNotIn("\n", text)

    def test_parseURI(self) -> None:
        """
        Parsing keeps hosts in order with the default port, and the options
        (w=1 by default).
        """
        config = parseURI(
            "mongodb://u:p@a,b:1/db?replicaSet=rs&w=majority&j=true&maxPoolSize=3"
        )
        self.assertEqual(config.hosts, (("a", 27017), ("b", 1)))
        self.assertEqual((config.database, config.replicaSet), ("db", "rs"))
        self.assertEqual(
            (config.w, config.journal, config.poolSize), ("majority", True, 3)
        )
        self.assertEqual((config.username, config.password), ("u", "p"))
        self.assertEqual(
            config.clientURI(), "mongodb://u:p@a:27017,b:1/db?replicaSet=rs"
        )
        self.assertEqual(config.describe(), "mongodb://a:27017,b:1/db")
        self.assertEqual(parseURI("mongodb://h/db").w, 1)
        self.assertTrue(parseURI("mongodb://h/db").ttlIndexes)
