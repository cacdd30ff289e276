"""
Expiry reported to the audit river by every store: messages removed by the
purge job are C{expired} events of their queue, each reported once, even
when two stores over the same backend purge at the same time.
"""

import json
from typing import Any

from twisted.internet.defer import gatherResults
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from marconi.core.audit import CLIENT_ID, RIVER, AuditQuery, AuditRiver, AuditSettings
from marconi.core.limits import Limits
from marconi.core.messaging import Messaging
from marconi.core.models import NewMessage
from tests.storage import stores
from tests.storage.contract import T0, msg, spec


class ExpiryEventsMixin:
    """
    Run on each driver by L{stores.onEveryStore}; C{makeStore} starts one
    store of the driver.
    """

    makeStore: Any
    # A second store over the same backend, for the drivers that have one.
    shared = False

    async def observed(self, store: Any) -> list:
        events: list = []
        store.observeQueueEvents(lambda *event: events.append(event))
        return events

    async def test_expiredByQueue(self) -> None:
        """
        A purge reports the messages it removed queue by queue and project
        by project, with their counts, and only once: a second purge at the
        same time reports nothing.  Live messages are not reported.
        """
        store = await self.makeStore()
        events = await self.observed(store)
        for project, queue, count, ttl in (
            ("p", "a", 3, 60),
            ("p", "b", 1, 60),
            ("p2", "a", 2, 60),
            ("p", "a", 1, 600),
        ):
            await store.postMessages(project, queue, [msg(ttl=ttl)] * count, "c", T0)
        self.assertEqual(await store.purgeExpired(T0 + 59), 0)
        self.assertEqual(events, [])
        self.assertEqual(await store.purgeExpired(T0 + 60), 6)
        self.assertEqual(
            sorted(events),
            [
                ("expired", "p", "a", 3),
                ("expired", "p", "b", 1),
                ("expired", "p2", "a", 2),
            ],
        )
        self.assertEqual(await store.purgeExpired(T0 + 61), 0)
        self.assertEqual(len(events), 3)

    async def test_claimExtendsLife(self) -> None:
        """
        A message whose claim outlives its TTL expires when the claim (and
        grace) ends, and is reported then, not before.
        """
        store = await self.makeStore()
        events = await self.observed(store)
        await store.postMessages("p", "q", [msg(ttl=60)], "c", T0)
        await store.createClaim("p", "q", spec(ttl=100, grace=50), T0)
        await store.purgeExpired(T0 + 61)
        self.assertEqual(events, [])
        await store.purgeExpired(T0 + 151)
        self.assertEqual(events, [("expired", "p", "q", 1)])

    async def test_riverRecordsExpiry(self) -> None:
        """
        With the store's reports recorded in a river, with an injected
        clock: the purge job's removals are C{expired} events in the
        project's river, and the river's own events expiring are not
        recorded.
        """
        store = await self.makeStore()
        clock = Clock()
        clock.advance(T0)
        river = AuditRiver(store, clock, AuditSettings(True, 100))
        store.observeQueueEvents(
            lambda kind, project, queue, count: river.record(
                project, kind, queue, count=count
            )
        )
        bus = Messaging(store, clock, Limits(), audit=river)
        await store.postMessages("p", "orders", [msg(ttl=60)] * 2, "c", T0)
        clock.advance(60)
        self.assertEqual(await bus.purgeExpired(), 2)
        await river.flush()
        events, _ = await river.read("p", AuditQuery(limit=10))
        self.assertEqual(
            [(e["action"], e["queue"], e["count"]) for e in events],
            [("expired", "orders", 2)],
        )
        self.assertEqual(events[0]["at"], T0 + 60)
        clock.advance(200)
        await bus.purgeExpired()
        await river.flush()
        self.assertEqual(await river.read("p", AuditQuery(limit=10)), ([], None))

    async def test_riverCountsEvents(self) -> None:
        """
        An expired river record counts as the events it holds, in the
        purge's total (the C{expired} metric) and in its queue's report; a
        record of an earlier version (one event, a JSON object) counts
        one.
        """
        store = await self.makeStore()
        events = await self.observed(store)
        counted: list = []

        class Monitor:
            def messagesCounted(self, kind: str, count: int) -> None:
                counted.append((kind, count))

        event = ["posted", "q", T0, {"count": 1}]
        records = [
            NewMessage(json.dumps([event] * 3), 60),
            NewMessage(json.dumps([event] * 100), 60),
            NewMessage(json.dumps({"action": "posted", "at": T0}), 60),
        ]
        await store.postMessages("p", RIVER, records, CLIENT_ID, T0)
        await store.postMessages("p", "q", [msg(ttl=60)] * 2, "c", T0)
        clock = Clock()
        clock.advance(T0 + 60)
        bus = Messaging(store, clock, Limits(), Monitor())  # type: ignore[arg-type]
        self.assertEqual(await bus.purgeExpired(), 106)
        self.assertEqual(counted, [("expired", 106)])
        self.assertEqual(
            sorted(events), [("expired", "p", "q", 2), ("expired", "p", RIVER, 104)]
        )

    async def test_concurrentPurges(self) -> None:
        """
        Two stores over the same backend (two nodes sharing a network
        store) purging at the same time report each expired message once
        between them.
        """
        if not self.shared:
            raise self.skipTest("only network stores are shared")  # type: ignore[attr-defined]
        one = await self.makeStore()
        two = await self.makeSharedStore(one)
        seen = await self.observed(one)
        two.observeQueueEvents(lambda *event: seen.append(event))
        for i in range(12):
            await one.postMessages("p", f"q{i % 3}", [msg(ttl=60)] * 50, "c", T0)
        removed = await gatherResults(
            [one.purgeExpired(T0 + 60), two.purgeExpired(T0 + 60)]
        )
        self.assertEqual(sum(removed), 600)
        perQueue: dict = {}
        for kind, project, queue, count in seen:
            self.assertEqual((kind, project), ("expired", "p"))
            perQueue[queue] = perQueue.get(queue, 0) + count
        self.assertEqual(perQueue, {"q0": 200, "q1": 200, "q2": 200})


async def _sharedRedis(self: Any, first: Any) -> Any:
    from tests.redisserver import sharedServer
    from tests.storage.test_redis import startStore

    return await startStore(self, sharedServer().uri())


async def _mongo(self: Any) -> Any:
    """
    A store on a new database, without TTL indexes: the tests' times are
    in the past of the server's clock, which a TTL index would act on.
    """
    from tests import mongoserver

    server = mongoserver.sharedServer()
    database = server.newDatabaseName()
    self.addCleanup(mongoserver.dropDatabaseLater, server, database)
    self.mongoURI = server.uri(database, ttlIndexes="false")
    return await _startMongo(self, self.mongoURI)


async def _sharedMongo(self: Any, first: Any) -> Any:
    return await _startMongo(self, self.mongoURI)


async def _startMongo(test: Any, uri: str) -> Any:
    from twisted.internet import reactor

    from marconi.storage.mongodb.store import makeStore

    store = makeStore(uri, reactor)
    store.startService()
    test.addCleanup(lambda: store.running and store.stopService())
    await store.ready()
    return store


stores.onEveryStore(
    ExpiryEventsMixin,
    globals(),
    "ExpiryEventsTests",
    Redis={"shared": True, "makeSharedStore": _sharedRedis},
    Mongo={"shared": True, "makeStore": _mongo, "makeSharedStore": _sharedMongo},
)


class QueueOfPrefixTests(SynchronousTestCase):
    """
    The Redis store finds the queue of a purged message from its key
    prefix.
    """

    def test_roundTrip(self) -> None:
        """
        Every prefix made by C{queuePrefix} gives back its project and
        queue, colons and non-ASCII text included; other text gives
        L{None}.
        """
        from marconi.storage.redis.store import queueOfPrefix, queuePrefix

        for project, queue in (("p", "q"), ("1:2", "3:x"), ("é", "q.1"), ("", "a")):
            self.assertEqual(
                queueOfPrefix(queuePrefix(project, queue)), (project, queue)
            )
        for bad in ("marconi:p:1:p", "marconi:q:1:p", "marconi:q:1:p1:qx", "x"):
            self.assertIsNone(queueOfPrefix(bad))
