"""
The Redis store: the storage contract on a real redis-server, and what is
particular to Redis (key namespacing, concurrent claims over several
connections, outages, persistence warnings, URIs, the plugin).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from marconi.storage.redis_uri import RedisLocation, checkURI, parseURI
from tests.redisserver import RedisServer, sharedServer, skipReason
from tests.storage_contract import MessageStoreContract

SKIP = skipReason()


async def startStore(test: TestCase, uri: str, **kwargs: Any) -> Any:
    """
    Start a L{RedisStore} for C{uri}, wait until it answers, and stop it when
    the test ends.
    """
    from marconi.storage.redis import RedisStore

    kwargs.setdefault("connectWait", 5.0)
    store = RedisStore(parseURI(uri), reactor, **kwargs)
    store.startService()
    test.addCleanup(lambda: store.running and store.stopService())
    if not await store.ping():
        test.fail(f"the store for {uri} does not answer")
    return store


class RedisStoreContractTests(MessageStoreContract, TestCase):
    """
    The storage contract, on the shared redis-server (append-only file on),
    emptied before each test.
    """

    skip = SKIP

    async def createStore(self) -> Any:
        server = sharedServer()
        server.flush()
        self.server = server
        return await startStore(self, server.uri())

    async def reopenStore(self, store: Any) -> Any:
        """
        Stop the store, kill redis-server with SIGKILL and start it again
        from its append-only file, then start a new store.
        """
        await store.stopService()
        self.server.restart()
        return await startStore(self, self.server.uri())
