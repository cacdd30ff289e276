"""
Tests for Redis with replicas and Sentinel: C{redis+sentinel://} URIs, the
C{replicated} durability level (C{WAIT} after each change), a store that
follows a failover, and the C{[storage] durability} setting.

Every server is a real C{redis-server} (Sentinels with C{--sentinel}) on a
free loopback port in a temporary directory.
"""

from __future__ import annotations

import atexit
import os
import time
from typing import Any, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from marconi import config as configModule
from marconi.core.durability import DURABLE, REPLICATED, parseDurability
from marconi.core.errors import StorageUnavailable
from marconi.storage.redis.uri import parseURI
from tests.redisserver import SentinelGroup, info, skipReason
from tests.storage.contract import MessageStoreContract, msg, spec
from tests.storage.test_redis import serverOf, startStore

SKIP = skipReason()


def sleep(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)


_group: Optional[SentinelGroup] = None


def sharedGroup() -> SentinelGroup:
    """
    One primary, two replicas and three Sentinels for the tests of this
    run that do not kill anything.
    """
    global _group
    if _group is None:
        group = SentinelGroup()
        atexit.register(group.stop)
        _group = group.start()
    return _group


class SentinelURITests(SynchronousTestCase):
    """
    C{redis+sentinel://} URIs and the C{replicas} and C{replica_timeout}
    options.
    """

    def test_sentinel(self) -> None:
        """
        The Sentinels, the primary's name and the database are read; the
        Sentinel port defaults to 26379; the credentials are decoded.
        """
        location = parseURI(
            "redis+sentinel://u:p%40ss@a:1,[::1]:2,b/prim.ary-1/3?poolsize=2"
        )
        self.assertEqual(location.sentinels, (("a", 1), ("::1", 2), ("b", 26379)))
        self.assertEqual(location.master, "prim.ary-1")
        self.assertEqual(location.db, 3)
        self.assertEqual((location.username, location.password), ("u", "p@ss"))
        self.assertEqual(location.poolsize, 2)
        self.assertEqual((location.replicas, location.replicaTimeout), (1, 1000))
        self.assertEqual(parseURI("redis+sentinel://a/m").db, 0)
        self.assertEqual(parseURI("redis+sentinel://a/m/").db, 0)

    def test_describeHidesPassword(self) -> None:
        """
        The description names the Sentinels and the primary, never the
        password.
        """
        text = parseURI("redis+sentinel://:secret@a:1,b:2/m/4").describe()
        self.assertEqual(text, "redis+sentinel://a:1,b:2/m/4")

    def test_waitOptions(self) -> None:
        """
        Every form takes C{replicas} and C{replica_timeout}.
        """
        for uri in (
            "redis://h/0?replicas=2&replica_timeout=250",
            "redis+unix:///r.sock?replicas=2&replica_timeout=250",
            "redis+sentinel://h/m?replicas=2&replica_timeout=250",
        ):
            location = parseURI(uri)
            self.assertEqual((location.replicas, location.replicaTimeout), (2, 250))

    def test_bad(self) -> None:
        """
        Each malformed URI is refused with a reason.
        """
        for uri, reason in (
            ("redis+sentinel:///m/0", "needs the Sentinels"),
            ("redis+sentinel://a:1", "names the primary"),
            ("redis+sentinel://a:1//0", "names the primary"),
            ("redis+sentinel://a:1/m/0/1", "too many"),
            ("redis+sentinel://a:1/m/x", "whole number"),
            ("redis+sentinel://a:1/m%2Fn/0", "letters, digits"),
            ("redis+sentinel://a:x/m", "malformed Sentinel"),
            ("redis+sentinel://a:0/m", "between 1 and 65535"),
            ("redis+sentinel://a:1,,b/m", "malformed Sentinel"),
            ("redis+sentinel://a:1,a:1/m", "given twice"),
            ("redis+sentinel://u@a/m", "needs a password"),
            ("redis+sentinel://a/m?db=1", "unknown query parameter"),
            ("redis+sentinel://a/m#x", "no #fragment"),
            ("redis://h/0?replicas=0", "between 1 and"),
            ("redis://h/0?replica_timeout=0", "between 1 and"),
            ("redis://h/0?replica_timeout=60000", "between 1 and 5000"),
        ):
            with self.assertRaises(ValueError, msg=uri) as caught:
                parseURI(uri)
            self.assertIn(reason, str(caught.exception), uri)


class DurabilitySettingTests(SynchronousTestCase):
    """
    The C{[storage] durability} setting and the drivers that accept it.
    """

    def load(self, text: str) -> Any:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return configModule.load(path, {})

    def test_default(self) -> None:
        """
        Without a C{[storage]} section the level is C{durable}.
        """
        self.assertEqual(self.load("[marconi]\n").durability, DURABLE)

    def test_replicated(self) -> None:
        """
        C{replicated} is read, without regard to case or spaces.
        """
        config = self.load("[storage]\ndurability =  Replicated \n")
        self.assertEqual(config.durability, REPLICATED)

    def test_refused(self) -> None:
        """
        An unknown level or setting is a configuration error naming it.
        """
        for text, reason in (
            ("[storage]\ndurability = memory\n", "unknown durability 'memory'"),
            ("[storage]\nreplicas = 2\n", "unknown setting(s) in [storage]: replicas"),
        ):
            with self.assertRaises(configModule.ConfigError) as caught:
                self.load(text)
            self.assertIn(reason, str(caught.exception))
        self.assertRaises(ValueError, parseDurability, "")

    def test_storesWithoutReplicasRefuse(self) -> None:
        """
        A node on SQLite or in memory refuses C{replicated} before it
        starts, saying which stores can give it; Redis and MongoDB accept it.
        """
        from marconi import kernel

        for uri in ("sqlite::memory:", "memory:"):
            driver = kernel.storageDriverFor(uri)
            driver.checkDurability(DURABLE)
            with self.assertRaises(ValueError) as caught:
                driver.checkDurability(REPLICATED)
            self.assertIn("redis+sentinel://", str(caught.exception))
            self.assertRaises(ValueError, driver.makeStore, uri, reactor, REPLICATED)
        for uri in ("redis+sentinel://h/m", "mongodb://h/db"):
            kernel.storageDriverFor(uri).checkDurability(REPLICATED)

    def test_tapRefuses(self) -> None:
        """
        C{twistd marconi} stops with a usage error for C{replicated} on
        SQLite.
        """
        from twisted.python import usage

        from marconi.tap import Options

        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("[storage]\ndurability = replicated\n")
        options = Options()
        with self.assertRaises(usage.UsageError) as caught:
            options.parseOptions(["--storage", "sqlite::memory:", "--config", path])
        self.assertIn("cannot give 'replicated'", str(caught.exception))


class ReplicatedTests(TestCase):
    """
    C{replicated} durability on a primary with one replica (no Sentinel):
    each change is acknowledged only once C{WAIT} says enough replicas
    have it.
    """

    skip = SKIP

    async def startPair(self, query: str) -> tuple:
        primary = serverOf(self)
        replica = serverOf(self, replicaOf=primary.port)
        deadline = time.monotonic() + 10
        while "master_link_status:up" not in info(replica.address, "replication"):
            if time.monotonic() > deadline:
                self.fail("the replica did not connect")
            await sleep(0.05)
        store = await startStore(self, primary.uri() + query, durability=REPLICATED)
        return primary, replica, store

    async def test_acknowledgedIsOnReplica(self) -> None:
        """
        A post acknowledged with C{replicated} is on the replica already.
        """
        _, replica, store = await self.startPair("")
        await store.createQueue("p", "q", {}, 1.0)
        ids = await store.postMessages("p", "q", [msg()], "c", 1.0)
        replicaStore = await startStore(self, replica.uri())
        found = await replicaStore.getMessages("p", "q", ids, 1.0)
        self.assertEqual([m.id for m in found], ids)

    async def test_tooFewReplicas(self) -> None:
        """
        When fewer replicas than asked for acknowledge a change in time,
        it fails with L{StorageUnavailable} (a 503) saying so; a request
        that asks for C{durable} only is acknowledged.
        """
        _, _, store = await self.startPair("?replicas=2&replica_timeout=50")
        with self.assertRaises(StorageUnavailable) as caught:
            await store.createQueue("p", "q", {}, 1.0)
        self.assertIn("Only 1 of the 2 Redis replica(s)", str(caught.exception))
        with self.assertRaises(StorageUnavailable):
            await store.postMessages("p", "q", [msg()], "c", 1.0)
        ids = await store.postMessages("p", "q", [msg()], "c", 1.0, durability=DURABLE)
        self.assertEqual(len(ids), 1)


class SentinelContractTests(MessageStoreContract, TestCase):
    """
    The storage contract on a store that finds its primary through the
    Sentinels and waits for a replica after every change.
    """

    skip = SKIP

    async def createStore(self) -> Any:
        group = sharedGroup()
        group.primary.flush()
        return await startStore(self, group.uri(), durability=REPLICATED)


class FailoverTests(TestCase):
    """
    A primary killed with SIGKILL under load: the Sentinels promote its
    replica and the store follows.  The old primary is started again as a
    replica of the new one (as a supervisor would restart it), since
    C{replicated} changes need a replica.

    One replica, so that the promoted replica is the one C{WAIT} counted:
    with two replicas and C{WAIT 1} the Sentinels may promote the other one
    (they choose by replication offsets up to a second old).
    """

    skip = SKIP
    timeout = 90

    async def test_followsFailoverWithoutLosingMessages(self) -> None:
        """
        Posts and claim-and-delete run while the primary is killed with
        SIGKILL.  The store follows the promoted replica, and with
        C{replicated} durability no acknowledged message is lost and no
        acknowledged delete is undone.  The time to follow, the failed
        requests and the throughput before and after are printed.
        """
        group = SentinelGroup(replicas=1)
        self.addCleanup(group.stop)
        group.start()
        # The store's own connectWait: a request waits that long for a
        # connection to the primary before it fails with a 503.
        store = await startStore(
            self, group.uri(), durability=REPLICATED, connectWait=2.0
        )
        await store.createQueue("p", "q", {}, reactor.seconds())

        posted: set[str] = set()
        deleted: set[str] = set()
        # Deletes answered with an error may have been applied all the same.
        uncertain: set[str] = set()
        log: list[tuple[float, str, bool]] = []
        state = {"stop": False}

        async def poster() -> None:
            while not state["stop"]:
                try:
                    ids = await store.postMessages(
                        "p", "q", [msg(), msg()], "c", reactor.seconds()
                    )
                except StorageUnavailable:
                    log.append((time.monotonic(), "post", False))
                    await sleep(0.05)
                    continue
                posted.update(ids)
                log.append((time.monotonic(), "post", True))

        async def consumer() -> None:
            while not state["stop"]:
                ids = []
                try:
                    now = reactor.seconds()
                    claim = await store.createClaim(
                        "p", "q", spec(ttl=60, limit=5), now
                    )
                    if claim is None:
                        await sleep(0.01)
                        continue
                    ids = [m.id for m in claim.messages]
                    await store.deleteMessages("p", "q", ids, [claim.id], now)
                except StorageUnavailable:
                    uncertain.update(ids)
                    log.append((time.monotonic(), "consume", False))
                    await sleep(0.05)
                    continue
                deleted.update(ids)
                log.append((time.monotonic(), "consume", True))

        workers = [
            Deferred.fromCoroutine(work())
            for work in (poster, poster, consumer, consumer)
        ]
        await sleep(1.5)
        oldPort = group.primary.port
        killedAt = time.monotonic()
        group.primary.kill()
        followedAt = promotedAt = None
        while time.monotonic() - killedAt < 30:
            await sleep(0.05)
            if promotedAt is None and group.primaryPort() not in (None, oldPort):
                promotedAt = time.monotonic()
                group.primary.replicaOf = group.primaryPort()
                group.primary.start()
            # A request in flight at the kill may still succeed just after
            # it; following means succeeding once a replica is promoted.
            if promotedAt is not None and any(
                t > promotedAt and ok for t, _, ok in log[-50:]
            ):
                followedAt = min(t for t, _, ok in log if t > promotedAt and ok)
                break
        await sleep(1.5)
        state["stop"] = True
        await gatherResults(workers, consumeErrors=True)
        self.assertIsNotNone(promotedAt, "the Sentinels promoted no replica")
        self.assertIsNotNone(followedAt, "the store did not follow the failover")

        before = [e for e in log if killedAt - 1.0 <= e[0] < killedAt and e[2]]
        after = [e for e in log if followedAt <= e[0] < followedAt + 1.0 and e[2]]
        failed = [e for e in log if not e[2]]
        report = (
            f"failover: promoted in {promotedAt - killedAt:.2f}s, "
            f"followed in {followedAt - killedAt:.2f}s, "
            f"{len(failed)} failed requests ("
            f"{sum(1 for e in failed if e[1] == 'post')} posts), "
            f"{len(before)} ok requests/s before, {len(after)} after; "
            f"{len(posted)} messages acknowledged, {len(deleted)} deleted"
        )
        print("\n" + report)
        if os.environ.get("MARCONI_FAILOVER_REPORT"):
            with open(os.environ["MARCONI_FAILOVER_REPORT"], "a") as f:
                f.write(report + "\n")

        now = reactor.seconds()
        kept = posted - deleted - uncertain
        found = await store.getMessages("p", "q", sorted(kept), now)
        self.assertEqual(kept - {m.id for m in found}, set(), "acknowledged lost")
        back = await store.getMessages("p", "q", sorted(deleted), now)
        self.assertEqual([m.id for m in back], [], "acknowledged deletes undone")
        self.assertGreater(len(posted), 0)
        self.assertGreater(len(deleted), 0)
