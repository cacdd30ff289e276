"""
Started stores of every driver, for the tests that run on each of them
(the claim race, the isolation matrix).
"""

import os
from typing import Any, Callable

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests import mongoserver, redisserver


async def sqliteStore(test: TestCase) -> Any:
    from marconi.storage.sqlite.store import SQLiteStore

    directory = test.mktemp()
    os.makedirs(directory)
    store = SQLiteStore(os.path.join(directory, "store.sqlite3"), reactor)
    store.startService()
    test.addCleanup(lambda: store.running and store.stopService())
    return store


async def memoryStore(test: TestCase) -> Any:
    from marconi.storage.memory.store import MemoryStore

    store = MemoryStore()
    store.startService()
    return store


async def redisStore(test: TestCase) -> Any:
    from tests.storage.test_redis import startStore

    server = redisserver.sharedServer()
    server.flush()
    return await startStore(test, server.uri())


async def mongoStore(test: TestCase) -> Any:
    from marconi.storage.mongodb.store import makeStore

    server = mongoserver.sharedServer()
    database = server.newDatabaseName()
    test.addCleanup(mongoserver.dropDatabaseLater, server, database)
    # The tests' domain clock stands years in the past, so the server's
    # TTL sweeper (once a minute, on real time) would remove any message
    # it found: these stores make no TTL index.
    store = makeStore(server.uri(database, ttlIndexes="false"), reactor)
    store.startService()
    test.addCleanup(lambda: store.running and store.stopService())
    await store.ready()
    return store


#: Each driver: its store maker, and why it cannot run here (or L{None}).
STORES: dict[str, tuple[Callable[[TestCase], Any], Any]] = {
    "SQLite": (sqliteStore, None),
    "Memory": (memoryStore, None),
    "Redis": (redisStore, redisserver.skipReason()),
    "Mongo": (mongoStore, mongoserver.skipReason()),
}


def onEveryStore(mixin: type, namespace: dict, suffix: str, **extra: Any) -> None:
    """
    Define in C{namespace} (a module's globals) one L{TestCase} per driver
    running C{mixin}'s tests, named C{<Driver><suffix>}; C{extra} maps a
    driver's name to more class attributes for it.
    """
    for name, (maker, skip) in STORES.items():

        async def makeStore(self: Any, maker: Any = maker) -> Any:
            return await maker(self)

        attributes = {"makeStore": makeStore, "skip": skip, **extra.get(name, {})}
        title = name + suffix
        attributes["__module__"] = namespace["__name__"]
        attributes["__qualname__"] = title
        namespace[title] = type(title, (mixin, TestCase), attributes)
