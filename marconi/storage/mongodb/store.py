"""
The MongoDB storage driver, on txmongo.

Three collections live in the configured database:

    - C{queues}: one document per queue, C{{p, n, m, c}}: project, name,
      metadata as JSON text (metadata keys may hold C{$} and C{.}, which
      MongoDB refuses in field names), C{c}, the queue's marker counter,
      and C{d}, set when the queue was deleted (the document stays, so the
      counter never restarts).  The counter is taken with
      C{find_one_and_update} and C{$inc}, so markers grow strictly in
      posting order and survive restarts.
    - C{messages}: one document per message, keyed by its id, with its
      project C{p}, queue C{q} and marker C{k}; C{ci}/C{ce} name the claim
      holding it and when that claim ends.
    - C{claims}: one document per live claim, keyed by its id.

Atomicity without multi-document transactions:

    - A batch is inserted with a batch id in C{tx} (invisible to every
      query), then made visible at once by one C{update_many} that unsets
      C{tx}; a batch whose commit never happened is removed by
      L{MongoStore.purgeExpired}.
    - A claim picks candidate ids, then marks them with a conditional
      C{update_many} whose filter repeats "not held by a live claim": the
      server applies it to each document atomically, so of two claimers
      racing for one message exactly one marks it.  The claim then reads
      back what it owns (C{ci} equal to its id) and never counts anything
      else as its own.

Every id is looked up together with its project and queue, never alone.
The driver never reads a clock: C{now} comes from the caller.
"""

import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, TypeVar

from bson.son import SON
from pymongo import ReturnDocument
from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)
from pymongo.write_concern import WriteConcern
from twisted.application.service import IService, Service
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    TimeoutError,
    succeed,
)
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger
from txmongo import filter as qf
from txmongo.connection import ConnectionPool
from txmongo.errors import TimeExceeded
from zope.interface import implementer

from marconi.core import models, rules
from marconi.core.audit import RIVER, recordEvents
from marconi.core.deferreds import deferred
from marconi.core.durability import (
    DURABLE,
    LEVELS,
    LOCAL_LEVELS,
    REPLICATED,
    parseDurability,
)
from marconi.core.errors import (
    ClaimDoesNotExist,
    MessageIsClaimed,
    QueueDoesNotExist,
    StorageUnavailable,
)
from marconi.core.interfaces import IMessageStore
from marconi.core.models import Claim, ClaimSpec, Message, newId
from marconi.storage import transfer
from marconi.storage.events import StoreEvents
from marconi.storage.mongodb.uri import MongoConfig, parseURI

log = Logger()

T = TypeVar("T")

QUEUES = "queues"
MESSAGES = "messages"
CLAIMS = "claims"

# A batch that was inserted but never committed (the node died between the
# two steps) is removed once it is this old.
ABANDONED_BATCH_AGE = 300

# Errors that mean "the server cannot be reached or did not answer".
_UNREACHABLE = (
    ConnectionFailure,
    TimeoutError,
    TimeExceeded,
    ConnectionDone,
    ConnectionLost,
)


# How many expired messages one step of a purge removes (when expiry is
# reported queue by queue).
PURGE_BATCH = 500


# How many times a claim that lost every candidate to racing claimers
# tries again while claimable messages remain.
_CLAIM_ATTEMPTS = 5


def _expireAt(seconds: float) -> datetime:
    """
    A BSON date for a TTL index: the given time (seconds since the epoch)
    as an aware UTC datetime, clamped to what BSON can hold.
    """
    try:
        return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=seconds)
    except OverflowError:
        return datetime(9999, 1, 1, tzinfo=timezone.utc)


def _unclaimed(now: float) -> dict:
    """
    The filter for "not held by a live claim at C{now}".

    A message no claim holds has C{ce} 0, never null, so this is one range
    on C{ce} that an index serves, not an C{$or}.
    """
    return {"ce": {"$lte": now}}


def _toMessage(doc: dict) -> Message:
    return Message(
        id=doc["_id"],
        marker=doc["k"],
        body=doc["b"],
        ttl=doc["t"],
        created=doc["c"],
        expires=doc["e"],
        visibleAt=doc["v"],
        clientId=doc["cl"],
        claimId=doc.get("ci"),
        claimExpires=doc.get("ce") if doc.get("ci") is not None else None,
        claimCount=doc.get("cc", 0),
        tags=tuple(doc.get("tg", ())),
        checksum=doc.get("cs", ""),
    )


def _sortBy(field: str, descending: bool = False) -> Any:
    if descending:
        return qf.sort(qf.DESCENDING(field))
    return qf.sort(qf.ASCENDING(field))


@implementer(IMessageStore, IService)
class MongoStore(StoreEvents, Service):
    """
    L{IMessageStore} on MongoDB.

    The connection is made in L{startService} and closed in
    L{stopService}.  While the server cannot be reached every operation
    fails with L{StorageUnavailable} (the API answers 503) after at most
    C{serverSelectionTimeoutMS}; txmongo reconnects on its own, and the
    store serves again as soon as it has.

    txmongo schedules its own connections and retries on the global
    reactor; the injected C{reactor} bounds every operation and retry
    delay of the store.
    """

    def __init__(
        self, config: MongoConfig, reactor: Any, durability: str = DURABLE
    ) -> None:
        self._config = config
        self._durability = parseDurability(durability)
        self._writeConcern = writeConcern(config, durability)
        self._reactor = reactor
        self._pool: ConnectionPool | None = None
        self._db: Any = None
        self._indexesDone = False
        self._indexWaiters: list[Deferred] = []
        self._inflight: set[Deferred] = set()
        self.setName(f"marconi-storage-mongodb {config.describe()}")

    # -- Lifecycle -------------------------------------------------------

    def startService(self) -> None:
        """
        Connect to MongoDB and begin creating the indexes; operations made
        before both are done wait for them (for at most the server
        selection timeout).
        """
        super().startService()
        config = self._config
        kwargs = dict(self._writeConcern)
        self._pool = ConnectionPool(
            config.clientURI(),
            pool_size=config.poolSize,
            retry_delay=min(1.0, config.reconnectMaxDelay),
            max_delay=config.reconnectMaxDelay,
            ping_timeout=config.connectTimeout,
            **kwargs,
        )
        for factory in self._pool.getprotocols():
            # ReconnectingClientFactory schedules its retries on .clock.
            factory.clock = self._reactor
        self._db = self._pool[config.database]
        self._indexesDone = False
        log.info("Connecting to {where}", where=config.describe())
        starting = Deferred.fromCoroutine(self._ensureIndexes())
        starting.addErrback(
            lambda f: log.error(
                "MongoDB indexes not created yet ({why}); the next operation "
                "tries again",
                why=f.getErrorMessage(),
            )
        )

    def stopService(self) -> Deferred:
        """
        Stop what is in flight and close the connections.
        """
        super().stopService()
        pool, self._pool = self._pool, None
        self._db = None
        for d in list(self._inflight):
            d.cancel()
        if pool is None:
            return succeed(None)
        log.info("Disconnecting from {where}", where=self._config.describe())
        return pool.disconnect()

    def ready(self) -> Deferred:
        """
        @return: a L{Deferred} firing with L{None} once the store is
            connected and its indexes exist, or failing with
            L{StorageUnavailable}.
        """
        return Deferred.fromCoroutine(self._ready())

    # -- Plumbing --------------------------------------------------------

    def _timed(self, d: Deferred, timeout: float) -> Deferred:
        """
        Bound C{d} by C{timeout} seconds on the injected reactor; it is
        cancelled when the store stops.
        """
        self._inflight.add(d)

        def forget(result: Any) -> Any:
            self._inflight.discard(d)
            return result

        return d.addTimeout(timeout, self._reactor).addBoth(forget)

    async def _connected(self) -> None:
        """
        Wait until one connection of the pool is usable, for at most the
        server selection timeout.
        """
        pool = self._pool
        if pool is None:
            raise StorageUnavailable("The MongoDB store is not running.")
        factories = pool.getprotocols()
        if any(f.instance is not None for f in factories):
            return
        waits = [f.notifyReady() for f in factories]
        first = DeferredList(waits, fireOnOneCallback=True, consumeErrors=True)
        timeout = self._config.serverSelectionTimeout
        why = f"no connection within {timeout:g}s"
        try:
            result = await self._timed(first, timeout)
        except TimeoutError:
            raise self._unavailable(why) from None
        finally:
            for w in waits:
                if not w.called:
                    w.cancel()
        if not isinstance(result, tuple):
            # No wait succeeded (the timeout cancelled them all).
            raise self._unavailable(why)

    def _unavailable(self, why: str) -> StorageUnavailable:
        return StorageUnavailable(
            f"The message store (MongoDB at {self._config.describe()}) cannot "
            f"be reached ({why}); try again later."
        )

    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        """
        Run one round trip to the server, bounded by the socket timeout,
        and turn every backend failure into L{StorageUnavailable}.
        """
        await self._connected()

        async def run() -> T:
            return await make()

        try:
            return await self._timed(
                Deferred.fromCoroutine(run()), self._config.socketTimeout
            )
        except DuplicateKeyError:
            raise
        except _UNREACHABLE as e:
            raise self._unavailable(type(e).__name__) from e
        except OperationFailure as e:
            log.error("MongoDB refused an operation: {error}", error=str(e))
            raise StorageUnavailable(
                f"The message store (MongoDB) refused the operation: {e}"
            ) from e
        except PyMongoError as e:
            log.error("MongoDB operation failed: {error}", error=str(e))
            raise self._unavailable(type(e).__name__) from e

    async def _ready(self) -> None:
        await self._connected()
        if not self._indexesDone:
            await self._ensureIndexes()

    def _coll(self, name: str) -> Any:
        if self._db is None:
            raise StorageUnavailable("The MongoDB store is not running.")
        return self._db[name]

    def _writable(self, name: str, durability: str | None) -> Any:
        """
        The collection C{name}, writing with the write concern of
        C{durability} (see L{writeConcern}), or the store's own for
        L{None}.
        """
        coll = self._coll(name)
        if durability is None or parseDurability(durability) == self._durability:
            return coll
        concern = writeConcern(self._config, durability)
        return coll.with_options(write_concern=WriteConcern(**concern))

    def durabilities(self) -> tuple:
        """
        Every level when the configuration names replicas (a C{replicaSet},
        a C{w} above 1 or a tag, or C{replicated} as the node's default);
        else C{fast} and C{durable}.
        """
        config = self._config
        if config.replicaSet is not None or config.w != 1:
            return LEVELS
        return LEVELS if self._durability == REPLICATED else LOCAL_LEVELS

    # -- Indexes ---------------------------------------------------------

    def indexSpecs(self) -> dict[str, list[dict]]:
        """
        The indexes the store creates, by collection: one for every query
        it makes.
        """
        specs: dict[str, list[dict]] = {
            QUEUES: [
                # createQueue, getQueueMetadata, marker counters, listQueues
                # (project then name order).
                {
                    "name": "project_name",
                    "key": SON([("p", 1), ("n", 1)]),
                    "unique": True,
                },
            ],
            MESSAGES: [
                # Listing, claiming, popping, stats: queue + marker order;
                # unique, so no two messages of a queue share a marker.
                {
                    "name": "queue_marker",
                    "key": SON([("p", 1), ("q", 1), ("k", 1)]),
                    "unique": True,
                },
                # What a claim holds (getClaim, renew, release, deletes).
                {"name": "queue_claim", "key": SON([("p", 1), ("q", 1), ("ci", 1)])},
                # Claim expiry inside a queue (stats' claimed count).
                {
                    "name": "queue_claim_expiry",
                    "key": SON([("p", 1), ("q", 1), ("ce", 1)]),
                },
                # Message expiry (purgeExpired).
                {"name": "expiry", "key": SON([("e", 1)])},
                # Uncommitted batches (commit, abandoned-batch cleanup);
                # sparse: committed messages have no tx.
                {"name": "batch", "key": SON([("tx", 1)]), "sparse": True},
            ],
            CLAIMS: [
                # Claim expiry (purgeExpired).
                {"name": "expiry", "key": SON([("e", 1)])},
            ],
        }
        if self._config.ttlIndexes:
            for collection in (MESSAGES, CLAIMS):
                specs[collection].append(
                    {
                        "name": "ttl",
                        "key": SON([("ea", 1)]),
                        "expireAfterSeconds": self._config.ttlGrace,
                    }
                )
        return specs

    async def _ensureIndexes(self) -> None:
        if self._indexesDone:
            return
        # One attempt at a time, shared by every operation waiting for it;
        # a failure is reported to each of them and the next operation
        # tries again.
        waiter: Deferred = Deferred()
        self._indexWaiters.append(waiter)
        if len(self._indexWaiters) == 1:
            Deferred.fromCoroutine(self._createIndexes()).addBoth(self._indexesTried)
        await waiter

    def _indexesTried(self, result: Any) -> None:
        waiters, self._indexWaiters = self._indexWaiters, []
        for waiter in waiters:
            waiter.callback(result)

    async def _createIndexes(self) -> None:
        for collection, indexes in self.indexSpecs().items():
            db = self._db
            if db is None:
                raise StorageUnavailable("The MongoDB store is not running.")
            await self._call(
                partial(db.command, "createIndexes", collection, indexes=indexes)
            )
        self._indexesDone = True
        log.info(
            "MongoDB indexes are in place in {where}", where=self._config.describe()
        )

    # -- IMessageStore: queues ------------------------------------------

    @deferred
    async def ping(self) -> bool:
        await self._call(lambda: self._db.command("ping"))
        return True

    @deferred
    async def createQueue(
        self, project: str, name: str, metadata: dict, now: float
    ) -> bool:
        await self._ready()
        queues = self._coll(QUEUES)
        encoded = json.dumps(metadata)
        for _attempt in range(2):
            # A deleted queue keeps its document (and its marker counter)
            # as a tombstone: bring it back.
            revived = await self._call(
                lambda: queues.update_one(
                    {"p": project, "n": name, "d": True},
                    {"$set": {"d": False, "m": encoded}},
                )
            )
            if revived.modified_count:
                return True
            try:
                result = await self._call(
                    lambda: queues.update_one(
                        {"p": project, "n": name},
                        {"$setOnInsert": {"m": encoded, "c": 0, "d": False}},
                        upsert=True,
                    )
                )
            except DuplicateKeyError:
                # Another node created it between our lookup and insert.
                continue
            if result.upserted_id is not None:
                return True
            if result.matched_count:
                # It existed, unless it was deleted in between: look again.
                current = await self._call(
                    lambda: queues.find_one({"p": project, "n": name})
                )
                if current is not None and not current.get("d"):
                    return False
        return False

    async def _queueDoc(self, project: str, name: str) -> dict:
        doc = await self._call(
            lambda: self._coll(QUEUES).find_one(
                {"p": project, "n": name, "d": {"$ne": True}}
            )
        )
        if doc is None:
            raise QueueDoesNotExist(name)
        return doc

    @deferred
    async def getQueueMetadata(self, project: str, name: str) -> dict:
        await self._ready()
        doc = await self._queueDoc(project, name)
        return json.loads(doc.get("m") or "{}")

    @deferred
    async def setQueueMetadata(self, project: str, name: str, metadata: dict) -> None:
        await self._ready()
        result = await self._call(
            lambda: self._coll(QUEUES).update_one(
                {"p": project, "n": name, "d": {"$ne": True}},
                {"$set": {"m": json.dumps(metadata)}},
            )
        )
        if result.matched_count == 0:
            raise QueueDoesNotExist(name)

    @deferred
    async def deleteQueue(self, project: str, name: str) -> None:
        await self._ready()
        # The queue's document stays as a tombstone with its marker counter,
        # so a queue re-created under the same name never hands out a
        # marker twice (markers are unique per queue, and a client may still
        # hold an old one).
        await self._call(
            lambda: self._coll(QUEUES).update_one(
                {"p": project, "n": name}, {"$set": {"d": True, "m": "{}"}}
            )
        )
        await self._call(
            lambda: self._coll(MESSAGES).delete_many({"p": project, "q": name})
        )
        await self._call(
            lambda: self._coll(CLAIMS).delete_many({"p": project, "q": name})
        )

    @deferred
    async def listQueues(
        self, project: str, marker: str | None, limit: int, detailed: bool
    ) -> list[models.QueueInfo]:
        await self._ready()
        if limit <= 0:
            return []
        query: dict = {"p": project, "d": {"$ne": True}}
        if marker is not None:
            query["n"] = {"$gt": marker}
        projection = {"n": 1, "m": 1} if detailed else {"n": 1}
        docs = await self._call(
            lambda: self._coll(QUEUES).find(
                query, projection=projection, sort=_sortBy("n"), limit=limit
            )
        )
        return [
            models.QueueInfo(
                name=doc["n"],
                metadata=json.loads(doc.get("m") or "{}") if detailed else None,
            )
            for doc in docs
        ]

    @deferred
    async def countQueues(self, project: str) -> int:
        await self._ready()
        return await self._call(
            lambda: self._coll(QUEUES).count_documents(
                {"p": project, "d": {"$ne": True}}
            )
        )

    @deferred
    async def purgeMessages(self, project: str, name: str) -> int:
        await self._ready()
        # A batch still being posted (C{tx}) is not yet in the queue: it
        # lands after the purge, as a post that came after it.
        removed = await self._call(
            lambda: self._coll(MESSAGES).delete_many(
                {"p": project, "q": name, "tx": {"$exists": False}}
            )
        )
        await self._call(
            lambda: self._coll(CLAIMS).delete_many({"p": project, "q": name})
        )
        return removed.deleted_count

    @deferred
    async def queueStats(
        self, project: str, name: str, now: float
    ) -> models.QueueStats:
        await self._ready()
        messages = self._coll(MESSAGES)
        live = {"p": project, "q": name, "tx": {"$exists": False}, "e": {"$gt": now}}
        claimed = await self._call(
            lambda: messages.count_documents({**live, "ce": {"$gt": now}})
        )
        delayed = await self._call(
            lambda: messages.count_documents(
                {**live, "v": {"$gt": now}, **_unclaimed(now)}
            )
        )
        free = await self._call(
            lambda: messages.count_documents(
                {**live, "v": {"$lte": now}, **_unclaimed(now)}
            )
        )
        oldest = newest = None
        if claimed + delayed + free:
            first = await self._call(
                lambda: messages.find(live, sort=_sortBy("k"), limit=1)
            )
            last = await self._call(
                lambda: messages.find(live, sort=_sortBy("k", descending=True), limit=1)
            )
            oldest = _toMessage(first[0]) if first else None
            newest = _toMessage(last[0]) if last else None
        return models.QueueStats(
            free=free, claimed=claimed, delayed=delayed, oldest=oldest, newest=newest
        )

    # -- IMessageStore: messages ----------------------------------------

    async def _takeMarkers(self, project: str, queue: str, count: int) -> int:
        """
        Reserve C{count} markers of a queue, creating the queue when it
        does not exist.

        @return: the first marker reserved.
        """
        queues = self._coll(QUEUES)
        for _attempt in range(3):
            try:
                doc = await self._call(
                    lambda: queues.find_one_and_update(
                        {"p": project, "n": queue},
                        {
                            "$inc": {"c": count},
                            "$set": {"d": False},
                            "$setOnInsert": {"m": "{}"},
                        },
                        upsert=True,
                        return_document=ReturnDocument.AFTER,
                    )
                )
            except DuplicateKeyError:
                # Two first posts raced to create the queue; the loser
                # finds it on the next try.
                continue
            return doc["c"] - count + 1
        raise StorageUnavailable("Could not reserve message markers; try again.")

    @deferred
    async def postMessages(
        self,
        project: str,
        queue: str,
        messages: Sequence[models.NewMessage],
        clientId: str,
        now: float,
        *,
        durability: str | None = None,
    ) -> list[str]:
        await self._ready()
        if not messages:
            return []
        first = await self._takeMarkers(project, queue, len(messages))
        batch = newId()
        docs: list[dict[str, Any]] = []
        for offset, new in enumerate(messages):
            expires = now + new.ttl
            docs.append(
                {
                    "_id": newId(),
                    "p": project,
                    "q": queue,
                    "k": first + offset,
                    "b": new.body,
                    "t": new.ttl,
                    "c": now,
                    "e": expires,
                    "ea": _expireAt(expires),
                    "v": now + new.delay,
                    "cl": clientId,
                    "tg": list(new.tags),
                    "cs": new.checksum,
                    "ci": None,
                    "ce": 0.0,
                    "cc": 0,
                    "tx": batch,
                }
            )
        coll = self._writable(MESSAGES, durability)
        try:
            await self._call(lambda: coll.insert_many(docs, ordered=True))
            # The commit: the whole batch becomes visible in one update.
            await self._call(
                lambda: coll.update_many({"tx": batch}, {"$unset": {"tx": ""}})
            )
        except BaseException:
            # All or nothing: take back whatever part was inserted.  If this
            # fails too, purgeExpired removes the uncommitted rest later.
            try:
                await self._call(lambda: coll.delete_many({"tx": batch}))
            except (StorageUnavailable, DuplicateKeyError) as e:
                log.error(
                    "Could not remove uncommitted batch {batch} ({why}); "
                    "purgeExpired will",
                    batch=batch,
                    why=str(e),
                )
            raise
        return [doc["_id"] for doc in docs]

    def _listFilter(
        self, project: str, queue: str, query: models.MessageQuery, now: float
    ) -> dict:
        spec: dict = {
            "p": project,
            "q": queue,
            "tx": {"$exists": False},
            "e": {"$gt": now},
        }
        if query.marker is not None:
            spec["k"] = {"$gt": query.marker}
        if not query.includeDelayed:
            spec["v"] = {"$lte": now}
        if not query.includeClaimed:
            spec.update(_unclaimed(now))
        if not query.echo:
            spec["cl"] = {"$ne": query.clientId}
        if query.tags:
            spec["tg"] = {"$all": list(query.tags)}
        return spec

    @deferred
    async def listMessages(
        self, project: str, queue: str, query: models.MessageQuery, now: float
    ) -> list[Message]:
        await self._ready()
        if query.limit <= 0:
            return []
        spec = self._listFilter(project, queue, query, now)
        return await self._messages(spec, query.limit)

    @deferred
    async def getMessages(
        self, project: str, queue: str, ids: Iterable[str], now: float
    ) -> list[Message]:
        ids = list(ids)
        await self._ready()
        if not ids:
            return []
        where = {"_id": {"$in": ids}, "p": project, "q": queue}
        return await self._messages(
            {**where, "tx": {"$exists": False}, "e": {"$gt": now}}
        )

    @deferred
    async def deleteMessage(
        self,
        project: str,
        queue: str,
        messageId: str,
        claimId: str | None,
        now: float,
        *,
        durability: str | None = None,
    ) -> None:
        await self._ready()
        coll = self._writable(MESSAGES, durability)
        where = {"_id": messageId, "p": project, "q": queue, "tx": {"$exists": False}}
        if claimId is None:
            condition = {**where, **_unclaimed(now)}
        else:
            condition = {**where, "ci": claimId, "ce": {"$gt": now}}
        # The delete is conditional, so a claim taken between a read and the
        # delete is never overridden.
        result = await self._call(lambda: coll.delete_one(condition))
        if result.deleted_count:
            return
        doc = await self._call(lambda: coll.find_one(where))
        if doc is None or doc["e"] <= now:
            return
        rules.checkDelete(messageId, doc.get("ci"), doc.get("ce"), claimId, now)
        # The rule allows it: what held it changed between the two steps.
        result = await self._call(lambda: coll.delete_one(condition))
        if not result.deleted_count:
            raise MessageIsClaimed(messageId)

    @deferred
    async def deleteMessages(
        self,
        project: str,
        queue: str,
        ids: Iterable[str],
        claimIds: Iterable[str] | None,
        now: float,
        *,
        durability: str | None = None,
    ) -> int:
        ids = list(ids)
        claimIds = None if claimIds is None else list(claimIds)
        await self._ready()
        if not ids:
            return 0
        spec: dict = {
            "_id": {"$in": ids},
            "p": project,
            "q": queue,
            "tx": {"$exists": False},
        }
        if claimIds is not None:
            # marconi.core.rules.deletableWith
            spec["$or"] = [
                {"ce": {"$lte": now}},
                {"ci": {"$in": claimIds}, "ce": {"$gt": now}},
            ]
        coll = self._writable(MESSAGES, durability)
        result = await self._call(lambda: coll.delete_many(spec))
        return result.deleted_count

    # -- Claims ----------------------------------------------------------

    def _claimable(
        self, project: str, queue: str, tags: Sequence[str], now: float
    ) -> dict:
        spec: dict = {
            "p": project,
            "q": queue,
            "tx": {"$exists": False},
            "e": {"$gt": now},
            "v": {"$lte": now},
            **_unclaimed(now),
        }
        if tags:
            spec["tg"] = {"$all": list(tags)}
        return spec

    async def _mark(
        self,
        project: str,
        queue: str,
        tags: Sequence[str],
        limit: int,
        holder: str,
        holdUntil: float,
        liveUntil: float,
        now: float,
        spec: ClaimSpec | None = None,
        countClaim: bool = True,
        durability: str | None = None,
    ) -> None:
        """
        Mark up to C{limit} claimable messages as held by C{holder}.

        First in bulk: read the oldest candidates, then mark them with one
        conditional C{update_many} that repeats the "claimable" filter, so
        a message another holder marked in between is skipped.  When other
        claimers took some of them, the rest is filled one message at a
        time with C{find_one_and_update}, in which the server picks the
        oldest claimable message and marks it in one atomic step: racing
        claimers never pick the same one, and a claim comes back short only
        when nothing claimable is left.  Messages the dead-letter policy of
        C{spec} sends away are moved and do not count.
        """
        coll = self._writable(MESSAGES, durability)
        claimable = self._claimable(project, queue, tags, now)
        update: dict = {
            "$set": {"ci": holder, "ce": holdUntil},
            "$max": {"e": liveUntil, "ea": _expireAt(liveUntil)},
        }
        if countClaim:
            update["$inc"] = {"cc": 1}

        candidates = await self._call(
            lambda: coll.find(
                claimable,
                projection={"_id": 1, "cc": 1, "t": 1},
                sort=_sortBy("k"),
                limit=limit,
            )
        )
        if not candidates:
            return
        toClaim = []
        toMove = []
        for doc in candidates:
            if spec is not None and rules.goesToDeadLetter(doc.get("cc", 0), spec):
                toMove.append(doc)
            else:
                toClaim.append(doc["_id"])
        if toMove:
            assert spec is not None
            await self._deadLetter(project, queue, toMove, spec, now, None)
        marked = 0
        if toClaim:
            result = await self._call(
                lambda: coll.update_many({**claimable, "_id": {"$in": toClaim}}, update)
            )
            marked = result.modified_count
        if len(candidates) < limit and marked == len(toClaim):
            # Every candidate there was is ours (or moved): none is left.
            return

        while marked < limit:
            doc = await self._call(
                lambda: coll.find_one_and_update(
                    claimable,
                    update,
                    projection={"_id": 1, "cc": 1, "t": 1},
                    sort=_sortBy("k"),
                    return_document=ReturnDocument.BEFORE,
                )
            )
            if doc is None:
                return
            if spec is not None and rules.goesToDeadLetter(doc.get("cc", 0), spec):
                await self._deadLetter(project, queue, [doc], spec, now, holder)
                continue
            marked += 1

    async def _deadLetter(
        self,
        project: str,
        queue: str,
        docs: list[dict],
        spec: ClaimSpec,
        now: float,
        heldBy: str | None,
    ) -> None:
        """
        Move messages that reached the claim limit to the end of the
        dead-letter queue of the same project, unclaimed and visible at
        once, with the claim count they had.  Each move is one conditional
        update of the message (new queue, new marker), so a message is
        moved once or not at all: either it is still claimable, or (when
        C{heldBy} is given) it is held by C{heldBy}, which marked it.
        """
        coll = self._coll(MESSAGES)
        assert spec.deadLetterQueue is not None
        target = spec.deadLetterQueue
        first = await self._takeMarkers(project, target, len(docs))
        if heldBy is None:
            condition = self._claimable(project, queue, (), now)
        else:
            condition = {"p": project, "q": queue, "ci": heldBy}
        for offset, doc in enumerate(docs):
            ttl = rules.deadLetterTTL(doc["t"], spec)
            expires = now + ttl
            move: dict = {
                "$set": {
                    "q": target,
                    "k": first + offset,
                    "t": ttl,
                    "e": expires,
                    "ea": _expireAt(expires),
                    "v": now,
                    "ci": None,
                    "ce": 0.0,
                }
            }
            if heldBy is not None:
                # Marking it counted a claim that did not happen.
                move["$inc"] = {"cc": -1}
            result = await self._call(
                partial(coll.update_one, {**condition, "_id": doc["_id"]}, move)
            )
            self._report("dead_lettered", result.modified_count, project, queue)
            log.debug(
                "Message {id} moved to dead-letter queue {target}",
                id=doc["_id"],
                target=target,
            )

    async def _held(
        self, project: str, queue: str, holder: str, now: float
    ) -> list[Message]:
        where = {"p": project, "q": queue, "ci": holder}
        return await self._messages({**where, "ce": {"$gt": now}, "e": {"$gt": now}})

    async def _messages(self, spec: dict, limit: int = 0) -> list[Message]:
        """
        The messages matching C{spec}, in marker order (C{limit}: at most
        that many; 0 for all).
        """
        docs = await self._call(
            lambda: self._coll(MESSAGES).find(spec, sort=_sortBy("k"), limit=limit)
        )
        return [_toMessage(doc) for doc in docs]

    @deferred
    async def popMessages(
        self,
        project: str,
        queue: str,
        limit: int,
        tags: Sequence[str],
        now: float,
        *,
        durability: str | None = None,
    ) -> list[Message]:
        tags = tuple(tags or ())
        await self._ready()
        if limit <= 0:
            return []
        holder = "pop-" + newId()
        # Hold them briefly (claim semantics make the pop atomic), read
        # what this pop owns, then delete exactly those.
        await self._mark(
            project,
            queue,
            tags,
            limit,
            holder,
            now + 60,
            now,
            now,
            countClaim=False,
            durability=durability,
        )
        held = await self._held(project, queue, holder, now)
        if held:
            coll = self._writable(MESSAGES, durability)
            await self._call(
                lambda: coll.delete_many({"p": project, "q": queue, "ci": holder})
            )
        return [rules.unclaimed(m) for m in held]

    @deferred
    async def createClaim(
        self,
        project: str,
        queue: str,
        spec: ClaimSpec,
        now: float,
        *,
        durability: str | None = None,
    ) -> Claim | None:
        await self._ready()
        if spec.limit <= 0:
            return None
        claimId = newId()
        expires = now + spec.ttl
        held: list = []
        # A claim that lost every candidate to racing claimers tries again
        # while something is claimable: 204 only when nothing is.
        for _ in range(_CLAIM_ATTEMPTS):
            await self._mark(
                project,
                queue,
                spec.tags,
                spec.limit,
                claimId,
                expires,
                now + spec.ttl + spec.grace,
                now,
                spec=spec,
                durability=durability,
            )
            held = await self._held(project, queue, claimId, now)
            if held or not await self._anyClaimable(project, queue, spec.tags, now):
                break
        if not held:
            return None
        claims = self._writable(CLAIMS, durability)
        await self._call(
            lambda: claims.insert_one(
                {
                    "_id": claimId,
                    "p": project,
                    "q": queue,
                    "t": spec.ttl,
                    "g": spec.grace,
                    "u": now,
                    "e": expires,
                    "ea": _expireAt(expires),
                }
            )
        )
        return Claim(
            id=claimId,
            ttl=spec.ttl,
            grace=spec.grace,
            updated=now,
            expires=expires,
            messages=tuple(held),
        )

    async def _anyClaimable(
        self, project: str, queue: str, tags: Sequence[str], now: float
    ) -> bool:
        claimable = self._claimable(project, queue, tags, now)
        doc = await self._call(
            lambda: self._coll(MESSAGES).find_one(claimable, projection={"_id": 1})
        )
        return doc is not None

    async def _liveClaim(
        self, project: str, queue: str, claimId: str, now: float
    ) -> dict:
        doc = await self._call(
            lambda: self._coll(CLAIMS).find_one(
                {"_id": claimId, "p": project, "q": queue, "e": {"$gt": now}}
            )
        )
        if doc is None:
            raise ClaimDoesNotExist(claimId)
        return doc

    @deferred
    async def getClaim(
        self, project: str, queue: str, claimId: str, now: float
    ) -> Claim:
        await self._ready()
        doc = await self._liveClaim(project, queue, claimId, now)
        held = await self._held(project, queue, claimId, now)
        return Claim(
            id=claimId,
            ttl=doc["t"],
            grace=doc["g"],
            updated=doc["u"],
            expires=doc["e"],
            messages=tuple(held),
        )

    @deferred
    async def renewClaim(
        self, project: str, queue: str, claimId: str, ttl: int, grace: int, now: float
    ) -> None:
        await self._ready()
        expires = now + ttl
        result = await self._call(
            lambda: self._coll(CLAIMS).update_one(
                {"_id": claimId, "p": project, "q": queue, "e": {"$gt": now}},
                {
                    "$set": {
                        "t": ttl,
                        "g": grace,
                        "u": now,
                        "e": expires,
                        "ea": _expireAt(expires),
                    }
                },
            )
        )
        if result.matched_count == 0:
            raise ClaimDoesNotExist(claimId)
        liveUntil = now + ttl + grace
        await self._call(
            lambda: self._coll(MESSAGES).update_many(
                {"p": project, "q": queue, "ci": claimId, "ce": {"$gt": now}},
                {
                    "$set": {"ce": expires},
                    "$max": {"e": liveUntil, "ea": _expireAt(liveUntil)},
                },
            )
        )

    @deferred
    async def releaseClaim(
        self, project: str, queue: str, claimId: str, now: float
    ) -> None:
        await self._ready()
        await self._call(
            lambda: self._coll(MESSAGES).update_many(
                {"p": project, "q": queue, "ci": claimId},
                {"$set": {"ci": None, "ce": 0.0}},
            )
        )
        await self._call(
            lambda: self._coll(CLAIMS).delete_one(
                {"_id": claimId, "p": project, "q": queue}
            )
        )

    @deferred
    async def purgeExpired(self, now: float) -> int:
        await self._ready()
        messages = self._coll(MESSAGES)
        if self._queueEvents is None:
            result = await self._call(
                lambda: messages.delete_many(
                    {"e": {"$lte": now}, "tx": {"$exists": False}}
                )
            )
            removed = result.deleted_count
        else:
            removed = await self._purgeReported(now)
        await self._call(lambda: self._coll(CLAIMS).delete_many({"e": {"$lte": now}}))
        await self._call(
            lambda: messages.delete_many(
                {"tx": {"$exists": True}, "c": {"$lte": now - ABANDONED_BATCH_AGE}}
            )
        )
        return removed

    async def _purgeReported(self, now: float) -> int:
        """
        Remove the expired messages batch by batch (found on the expiry
        index), and report each queue's share to the queue observer.

        Each queue's share is removed by one C{delete_many} naming the ids
        found, and reported with the count the server gives: of two nodes
        purging the same database at once, each reports only what it
        removed, so every expiry is reported once.
        """
        messages = self._coll(MESSAGES)
        total = 0
        while True:
            expired = {"e": {"$lte": now}, "tx": {"$exists": False}}
            found = await self._call(
                partial(
                    messages.find,
                    expired,
                    projection={"_id": 1, "p": 1, "q": 1},
                    sort=_sortBy("e"),
                    limit=PURGE_BATCH,
                )
            )
            byQueue: dict[tuple[str, str], list] = {}
            for doc in found:
                byQueue.setdefault((doc["p"], doc["q"]), []).append(doc["_id"])
            for (project, queue), ids in byQueue.items():
                where = {"_id": {"$in": ids}, "p": project, "q": queue, **expired}
                if queue == RIVER:
                    count = await self._purgeRecords(where)
                else:
                    result = await self._call(partial(messages.delete_many, where))
                    count = result.deleted_count
                total += count
                self._reportQueue("expired", project, queue, count)
            if len(found) < PURGE_BATCH:
                return total

    async def _purgeRecords(self, where: dict) -> int:
        """
        Remove the expired audit river records C{where} finds, one by one:
        each counts as the events it holds, and only if this store removed
        it (another node may purge at the same time).
        """
        messages = self._coll(MESSAGES)
        found = await self._call(partial(messages.find, where, projection={"b": 1}))
        count = 0
        for doc in found:
            one = dict(where, _id=doc["_id"])
            result = await self._call(partial(messages.delete_one, one))
            if result.deleted_count:
                count += recordEvents(doc["b"])
        return count

    # Handing queues over (marconi.cluster.rebalance).

    @deferred
    async def heldQueues(self, after: tuple | None, limit: int) -> list:
        await self._ready()
        docs = await self._call(
            lambda: self._coll(QUEUES).find({"d": {"$ne": True}}, {"p": 1, "n": 1})
        )
        held = sorted((doc["p"], doc["n"]) for doc in docs)
        if after is not None:
            held = [k for k in held if k > tuple(after)]
        return held[: max(limit, 0)]

    @deferred
    async def exportQueue(
        self, project: str, name: str, after: int | None, limit: int
    ) -> dict | None:
        await self._ready()
        queue = await self._call(
            lambda: self._coll(QUEUES).find_one({"p": project, "n": name})
        )
        spec: dict = {"p": project, "q": name, "tx": {"$exists": False}}
        if after is not None:
            spec["k"] = {"$gt": after}
        docs = await self._call(
            lambda: self._coll(MESSAGES).find(
                spec, sort=_sortBy("k"), limit=max(limit, 0) + 1
            )
        )
        live = queue is not None and not queue.get("d")
        if not live and not docs and after is None:
            return None
        claims = []
        if after is None:
            found = await self._call(
                lambda: self._coll(CLAIMS).find({"p": project, "q": name})
            )
            claims = [
                transfer.claimDoc(c["_id"], c["t"], c["g"], c["u"], c["e"])
                for c in sorted(found, key=lambda c: c["_id"])
            ]
        return transfer.page(
            json.loads(queue.get("m") or "{}") if live else None,
            None,
            0 if queue is None else queue.get("c", 0),
            claims,
            [transfer.messageDoc(_toMessage(doc)) for doc in docs],
            limit,
        )

    @deferred
    async def importQueue(
        self, project: str, name: str, page: dict, first: bool
    ) -> None:
        await self._ready()
        messages = self._writable(MESSAGES, None)
        if first:
            await self._dropQueue(project, name)
            await self._call(
                lambda: self._writable(QUEUES, None).update_one(
                    {"p": project, "n": name},
                    {
                        "$set": {"d": False, "m": json.dumps(page["metadata"] or {})},
                        "$max": {"c": int(page["last"])},
                    },
                    upsert=True,
                )
            )
            claims = [
                {
                    "_id": c["id"],
                    "p": project,
                    "q": name,
                    "t": c["ttl"],
                    "g": c["grace"],
                    "u": c["updated"],
                    "e": c["expires"],
                    "ea": _expireAt(c["expires"]),
                }
                for c in page["claims"]
            ]
            if claims:
                await self._call(
                    lambda: self._writable(CLAIMS, None).insert_many(claims)
                )
        docs = []
        for doc in page["messages"]:
            m = transfer.messageOf(doc)
            docs.append(
                {
                    "_id": m.id,
                    "p": project,
                    "q": name,
                    "k": m.marker,
                    "b": m.body,
                    "t": m.ttl,
                    "c": m.created,
                    "e": m.expires,
                    "ea": _expireAt(m.expires),
                    "v": m.visibleAt,
                    "cl": m.clientId,
                    "tg": list(m.tags),
                    "cs": m.checksum,
                    "ci": m.claimId,
                    "ce": 0.0 if m.claimExpires is None else m.claimExpires,
                    "cc": m.claimCount,
                }
            )
        if not docs:
            return
        ids = [d["_id"] for d in docs]
        markers = [d["k"] for d in docs]
        await self._call(
            lambda: messages.delete_many(
                {"p": project, "q": name, "k": {"$in": markers}}
            )
        )
        await self._call(lambda: messages.delete_many({"_id": {"$in": ids}}))
        await self._call(lambda: messages.insert_many(docs, ordered=True))

    @deferred
    async def dropQueue(self, project: str, name: str) -> None:
        await self._ready()
        await self._dropQueue(project, name)

    async def _dropQueue(self, project: str, name: str) -> None:
        await self._call(
            lambda: self._coll(QUEUES).update_one(
                {"p": project, "n": name}, {"$set": {"d": True, "m": "{}"}}
            )
        )
        for collection in (MESSAGES, CLAIMS):
            await self._call(
                partial(self._coll(collection).delete_many, {"p": project, "q": name})
            )


def writeConcern(config: MongoConfig, durability: str) -> dict[str, Any]:
    """
    The write concern of every change, as txmongo's C{w}, C{j} and
    C{wtimeout}: the URI's, strengthened to what C{durability} asks.

    C{fast} keeps the URI's concern as it is (by default C{w=1}: the
    primary applied the change, its journal may not have it yet);
    C{durable} waits for the journal (C{j=true}) unless the URI says
    C{journal=false}; C{replicated} waits for a majority of the replica set
    (C{w=majority}, journaled on the majority by MongoDB's default) unless
    the URI already asks for more than the primary (a number above 1 or a
    tag).
    """
    concern: dict[str, Any] = {"w": config.w}
    if config.journal is not None:
        concern["j"] = config.journal
    if config.wtimeoutMS is not None:
        concern["wtimeout"] = config.wtimeoutMS
    level = parseDurability(durability)
    if level == DURABLE and config.journal is None:
        concern["j"] = True
    if level == REPLICATED and config.w == 1:
        concern["w"] = "majority"
    return concern


def makeStore(uri: str, reactor: Any = None, durability: str = DURABLE) -> Any:
    """
    Build the MongoDB store for C{uri}; it connects when started.
    """
    config = parseURI(uri)
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    return MongoStore(config, reactor, durability)
