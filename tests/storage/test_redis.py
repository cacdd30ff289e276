"""
The Redis store: the storage contract on a real redis-server, and what is
particular to Redis (key namespacing, concurrent claims over several
connections, outages, persistence warnings, URIs, the plugin).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.application.service import IService
from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, LogLevel, formatEvent, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

import marconi.plugins
from marconi.core.errors import (
    StorageUnavailable,
    ValidationFailed,
)
from marconi.core.interfaces import IMessageStore, IStorageDriverPlugin
from marconi.core.models import NewMessage
from marconi.storage.redis.uri import RedisLocation, checkURI, parseURI
from tests.redisserver import RedisServer, command, sharedServer, skipReason
from tests.storage.contract import T0, MessageStoreContract, msg, query, spec

SKIP = skipReason()


async def startStore(test: TestCase, uri: str, **kwargs: Any) -> Any:
    """
    Start a L{RedisStore} for C{uri}, wait until it answers, and stop it when
    the test ends.
    """
    from marconi.storage.redis.store import RedisStore

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


def serverOf(test: TestCase, **kwargs: Any) -> RedisServer:
    """
    A redis-server of the test's own, stopped when the test ends.
    """
    server = RedisServer(**kwargs)
    test.addCleanup(server.stop)
    return server.start()


def sleep(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)


class NamespaceTests(SynchronousTestCase):
    """
    The key prefixes of projects and queues never collide.
    """

    skip = SKIP

    def _split(self, prefix: str) -> tuple[str, str]:
        """
        Read a queue prefix back into its project and queue names; this
        succeeds, consuming every character, only for a real prefix.
        """
        head = "marconi:q:"
        self.assertTrue(prefix.startswith(head))
        data = prefix[len(head) :].encode("utf-8")
        names = []
        for _ in range(2):
            length, _, data = data.partition(b":")
            size = int(length)
            names.append(data[:size].decode("utf-8"))
            data = data[size:]
        self.assertEqual(data, b"")
        return names[0], names[1]

    def test_naiveCollisions(self) -> None:
        """
        Pairs that a plain C{project:queue} or C{project.queue} join would
        confuse get different prefixes, and none is the start of another.
        """
        from marconi.storage.redis.store import queuePrefix

        pairs = [
            ("a.b", "c"),
            ("a", "b.c"),
            ("a:b", "c"),
            ("a", "b:c"),
            ("a/b", "c"),
            ("a", "b/c"),
            ("1:a", "b"),
            ("1", "a1:b"),
            ("", "x"),
            ("x", ""),
            ("é", "q"),
            ("\u00c3\u00a9", "q"),
        ]
        prefixes = [queuePrefix(p, q) for p, q in pairs]
        for pair, prefix in zip(pairs, prefixes, strict=True):
            self.assertEqual(self._split(prefix), pair)
            for other in prefixes:
                if other is not prefix:
                    self.assertFalse((other + ":").startswith(prefix + ":"))

    @settings(deadline=None, max_examples=300)
    @given(
        st.text(
            alphabet=st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)),
            max_size=20,
        ),
        st.from_regex(r"[A-Za-z0-9_.\-:]{1,64}", fullmatch=True),
        st.text(
            alphabet=st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)),
            max_size=20,
        ),
        st.from_regex(r"[A-Za-z0-9_.\-:]{1,64}", fullmatch=True),
    )
    def test_prefixesAreInjective(self, p1: str, q1: str, p2: str, q2: str) -> None:
        """
        Any two different (project, queue) pairs get prefixes of which
        neither starts the other, so no key of one queue (prefix followed
        by a suffix) can be a key of the other; each prefix reads back as
        its own pair.
        """
        from marconi.storage.redis.store import queuePrefix

        a, b = queuePrefix(p1, q1), queuePrefix(p2, q2)
        self.assertEqual(self._split(a), (p1, q1))
        if (p1, q1) != (p2, q2):
            self.assertFalse(a.startswith(b) or b.startswith(a))


class RedisStoreTests(TestCase):
    """
    Behaviour particular to the Redis store, on real redis-servers.
    """

    skip = SKIP

    async def store(self, **kwargs: Any) -> Any:
        server = sharedServer()
        server.flush()
        self.server = server
        return await startStore(self, server.uri(), **kwargs)

    async def test_providers(self) -> None:
        """
        The store provides L{IMessageStore} and L{IService}.
        """
        store = await self.store()
        self.assertTrue(verifyObject(IMessageStore, store))
        self.assertTrue(verifyObject(IService, store))

    async def test_scriptsReloaded(self) -> None:
        """
        Scripts run by their SHA-1; when the server has forgotten them
        (SCRIPT FLUSH, or a restart), the store sends them again and the
        operation succeeds.
        """
        store = await self.store()
        first = await store.postMessages("p", "q", [msg('"a"')], "c", T0)
        await store._call("execute_command", "SCRIPT", "FLUSH")
        listed = await store.listMessages("p", "q", query(echo=True), T0)
        self.assertEqual([m.id for m in listed], first)
        await store._call("execute_command", "SCRIPT", "FLUSH")
        second = await store.postMessages("p", "q", [msg('"b"')], "c", T0)
        await store._call("execute_command", "SCRIPT", "FLUSH")
        found = await store.getMessages("p", "q", first + second, T0)
        self.assertEqual([m.body for m in found], ['"a"', '"b"'])

    async def test_recordsTypedAsMessages(self) -> None:
        """
        Listing, getting, claiming and popping build each L{Message} from
        the script's JSON as it is: text with quotes, backslashes, control
        and non-ASCII characters comes back unchanged, times are floats
        even when whole, markers, TTLs and claim counts are integers, tags
        a tuple, and no claim is L{None}; each equals the message the
        statistics script returns through the other decoding.
        """
        store = await self.store()
        body = '{"a":"q\\"\\\\\\n\\u0001 ü☃😀"}'
        client = 'w"\\é'
        ids = await store.postMessages(
            "p", "q", [msg(body, ttl=60, tags=("té", 'x"'))], client, T0
        )
        await store.postMessages("p", "q", [msg('"plain"', ttl=90)], client, T0 + 0.25)
        listed = await store.listMessages("p", "q", query(echo=True), T0 + 1)
        stats = await store.queueStats("p", "q", T0 + 1)
        self.assertEqual(listed, [stats.oldest, stats.newest])
        first = listed[0]
        self.assertEqual(
            (first.id, first.body, first.clientId, first.tags, first.checksum),
            (ids[0], body, client, ("té", 'x"'), "MD5:0"),
        )
        self.assertEqual(listed[1].tags, ())
        for m in listed:
            self.assertIsNone(m.claimId)
            self.assertIsNone(m.claimExpires)
            self.assertEqual(
                [type(v) for v in (m.marker, m.ttl, m.claimCount)], [int] * 3
            )
            self.assertEqual(
                [type(v) for v in (m.created, m.expires, m.visibleAt)], [float] * 3
            )
        self.assertEqual((first.created, first.expires), (T0, T0 + 60))
        self.assertEqual(await store.getMessages("p", "q", [ids[0]], T0 + 1), [first])
        claim = await store.createClaim("p", "q", spec(limit=1, ttl=70), T0 + 1)
        (claimed,) = claim.messages
        self.assertEqual((claimed.claimId, claimed.claimCount), (claim.id, 1))
        self.assertIs(type(claimed.claimExpires), float)
        self.assertEqual(claimed.claimExpires, T0 + 71)
        held = await store.getClaim("p", "q", claim.id, T0 + 2)
        self.assertEqual(held.messages, (claimed,))
        popped = await store.popMessages("p", "q", 1, (), T0 + 2)
        self.assertEqual(popped, [listed[1]])

    async def test_collisionCaseOnTheServer(self) -> None:
        """
        Projects whose names look like the driver's own key layout (length
        prefixes, colons, slashes, a trailing message-id-like hex string)
        stay apart in every operation, and purging splits their global
        index entries correctly.
        """
        store = await self.store()
        hexish = "0" * 32
        pairs = [
            ("1:a", "b"),
            ("1", "a1:b"),
            ("a:b:h:" + hexish, "q"),
            ("a", "b:h:" + hexish + "q"),
            ("p/x", "y"),
            ("p", "x/y"),
            ("p.x", "y"),
            ("p", "x.y"),
            ("ünï", "q"),
            ("", "q"),
        ]
        ids = {}
        for i, (project, queue) in enumerate(pairs):
            ids[project, queue] = await store.postMessages(
                project, queue, [msg(f'"{i}"', ttl=60)], "w", T0
            )
        for i, (project, queue) in enumerate(pairs):
            found = await store.listMessages(project, queue, query(), T0)
            self.assertEqual([m.body for m in found], [f'"{i}"'])
            claim = await store.createClaim(project, queue, spec(), T0)
            self.assertEqual([m.id for m in claim.messages], ids[project, queue])
            self.assertEqual(
                await store.countQueues(project),
                sum(1 for p, _ in pairs if p == project),
            )
        self.assertEqual(await store.purgeExpired(T0 + 1000), len(pairs))
        # Left: one marker counter per queue, two keys per project.
        projects = {p for p, _ in pairs}
        self.assertEqual(
            await store._call("execute_command", "DBSIZE"),
            len(pairs) + 2 * len(projects),
        )

    async def test_purgeLeavesNoKeys(self) -> None:
        """
        Purging after everything expired removes every message and claim
        key and every global index entry; only the queue records and the
        marker counters remain.
        """
        store = await self.store()
        await self.post(store, 30)
        await store.createClaim("p", "q", spec(limit=5, ttl=60), T0)
        await store.createClaim("p", "q", spec(limit=5, ttl=60, grace=0), T0)
        self.assertEqual(await store.purgeExpired(T0 + 1000), 30)
        keys = sorted(await store._call("execute_command", "KEYS", "*"))
        self.assertEqual(
            keys, ["marconi:p:1:p:meta", "marconi:p:1:p:q", "marconi:q:1:p1:q:n"]
        )

    async def test_purgeInBatches(self) -> None:
        """
        A purge that has more to remove than one script run takes runs
        until everything expired is gone, and counts all of it.
        """
        from marconi.storage.redis import store as driver

        self.patch(driver, "PURGE_BATCH", 7)
        store = await self.store()
        await self.post(store, 30, ttl=60)
        await self.post(store, 3, ttl=600)
        self.assertEqual(await store.purgeExpired(T0 + 60), 30)
        self.assertEqual(len(await store.listMessages("p", "q", query(), T0 + 60)), 3)

    async def post(
        self, store: Any, count: int, queue: str = "q", ttl: int = 300
    ) -> list:
        ids = []
        for start in range(0, count, 100):
            ids += await store.postMessages(
                "p",
                queue,
                [msg(f'"{i}"', ttl=ttl) for i in range(start, min(count, start + 100))],
                "writer",
                T0,
            )
        return ids

    async def test_verbatim(self) -> None:
        """
        Bodies, tags, client ids and checksums come back exactly as they
        were given (non-ASCII text, line breaks, a body of 200 KiB, bodies
        that look like numbers), and fractional times survive the round
        trip through Redis exactly.
        """
        store = await self.store()
        now = T0 + 0.1
        bodies = [
            '"\u00e9t\u00e9 \r\n caf\u00e9"',
            '"été\r\n"',
            "123",
            "1.5e3",
            "null",
            '"' + "x" * 200 * 1024 + '"',
            '""',
        ]
        messages = [
            NewMessage(b, 61, 0, ("ünï", "a:b", "1"), f"MD5:{i}")
            for i, b in enumerate(bodies)
        ]
        ids = await store.postMessages("p", "q", messages, "clïent 1", now)
        found = await store.getMessages("p", "q", ids, now)
        self.assertEqual([m.body for m in found], bodies)
        for i, m in enumerate(found):
            self.assertEqual(m.tags, ("ünï", "a:b", "1"))
            self.assertEqual(m.checksum, f"MD5:{i}")
            self.assertEqual(m.clientId, "clïent 1")
            self.assertEqual((m.created, m.expires), (now, now + 61))
        tagged = await store.listMessages("p", "q", query(tags=("ünï",)), now)
        self.assertEqual(len(tagged), len(bodies))
        claim = await store.createClaim("p", "q", spec(ttl=60, grace=7), now + 0.2)
        self.assertEqual(claim.expires, now + 0.2 + 60)
        self.assertEqual(claim.messages[0].expires, now + 0.2 + 67)
        self.assertEqual(claim.messages[0].claimExpires, now + 0.2 + 60)

    async def test_walksPastManyPages(self) -> None:
        """
        Listing, claiming and popping find their messages behind hundreds
        of ones they must skip (held by claims, or posted by the reader
        itself), past every page size the scripts read the index in.
        """
        store = await self.store()
        ids = await self.post(store, 400)
        for _ in range(25):
            await store.createClaim("p", "q", spec(limit=10), T0)
        listed = await store.listMessages("p", "q", query(limit=10), T0)
        self.assertEqual([m.id for m in listed], ids[250:260])
        claim = await store.createClaim("p", "q", spec(limit=10), T0)
        self.assertEqual([m.id for m in claim.messages], ids[250:260])
        popped = await store.popMessages("p", "q", 5, (), T0)
        self.assertEqual([m.id for m in popped], ids[260:265])
        mine = await store.postMessages("p", "q", [msg()] * 150, "reader", T0)
        others = await store.postMessages("p", "q", [msg()], "w", T0)
        own = query(limit=10, clientId="reader", marker=popped[-1].marker)
        found = await store.listMessages("p", "q", own, T0)
        self.assertEqual([m.id for m in found], ids[265:275])
        (newest,) = await store.getMessages("p", "q", ids[-1:], T0)
        last = query(limit=10, clientId="reader", marker=newest.marker)
        found = await store.listMessages("p", "q", last, T0)
        self.assertEqual([m.id for m in found], others)
        self.assertEqual(len(mine), 150)

    async def test_wholePagesTaken(self) -> None:
        """
        A pop and a claim that remove every member of the pages of the
        queue's index they read, the last one of a page (where the next
        page starts) included, go on to the next page: the pop takes the
        oldest 20 of 45 messages, in order; a claim whose first 20
        messages go to the dead-letter queue claims the next 5; each
        message ends up in exactly one place.
        """
        store = await self.store()
        ids = await self.post(store, 45)
        popped = await store.popMessages("p", "q", 20, (), T0)
        self.assertEqual([m.id for m in popped], ids[:20])
        first = await store.createClaim("p", "q", spec(limit=20, ttl=60), T0)
        self.assertEqual([m.id for m in first.messages], ids[20:40])
        # Once the first claim has ended, its messages have been claimed
        # once, the most this claim allows: they move to "dlq".
        policy = spec(limit=20, ttl=60, maxClaimCount=1, deadLetterQueue="dlq")
        later = T0 + 100
        claim = await store.createClaim("p", "q", policy, later)
        self.assertEqual([m.id for m in claim.messages], ids[40:])
        everyone = query(limit=100, includeClaimed=True, echo=True)
        left = await store.listMessages("p", "q", everyone, later)
        self.assertEqual([m.id for m in left], ids[40:])
        moved = await store.listMessages("p", "dlq", everyone, later)
        self.assertEqual([m.id for m in moved], ids[20:40])
        self.assertEqual(await store.popMessages("p", "q", 20, (), later), [])

    async def test_delayedKeepsItsTimes(self) -> None:
        """
        A delayed message, listed, got, claimed and popped, keeps its
        creation time and the later time it is visible from, each as it
        was written; a message visible from its creation has both the
        same.
        """
        store = await self.store()
        now = T0 + 0.25
        [delayed] = await store.postMessages("p", "q", [msg(delay=60)], "w", now)
        [plain] = await store.postMessages("p", "q", [msg()], "w", now)
        times = [(delayed, now, now + 60), (plain, now, now)]
        every = query(includeDelayed=True)
        listed = await store.listMessages("p", "q", every, now)
        self.assertEqual([(m.id, m.created, m.visibleAt) for m in listed], times)
        found = await store.getMessages("p", "q", [delayed, plain], now)
        self.assertEqual([(m.id, m.created, m.visibleAt) for m in found], times)
        later = now + 61
        claim = await store.createClaim("p", "q", spec(limit=1), later)
        self.assertEqual(
            [(m.id, m.created, m.visibleAt) for m in claim.messages], times[:1]
        )
        popped = await store.popMessages("p", "q", 1, (), later)
        self.assertEqual([(m.id, m.created, m.visibleAt) for m in popped], times[1:])

    async def test_claimAnswersWhatItStored(self) -> None:
        """
        The messages a claim answers with are the messages as stored after
        the claim (claim id, claim expiry, claim count, an expiry pushed
        out by the grace), field for field: the claim script builds them
        from what it wrote instead of reading them back.
        """
        store = await self.store()
        ids = await self.post(store, 4, ttl=30)
        first = await store.createClaim("p", "q", spec(limit=2, ttl=60), T0)
        await store.releaseClaim("p", "q", first.id, T0)
        claim = await store.createClaim("p", "q", spec(limit=3, ttl=90), T0 + 0.5)
        stored = await store.getMessages("p", "q", ids[:3], T0 + 0.5)
        self.assertEqual(list(claim.messages), stored)
        self.assertEqual([m.claimCount for m in stored], [2, 2, 1])
        self.assertEqual({m.expires for m in stored}, {T0 + 0.5 + 90 + 30})

    async def test_bulkDeleteLeavesNoKeys(self) -> None:
        """
        A bulk delete of more messages than one Redis command takes from
        the script (1,000), some held by claims and some free, an id given
        twice and an unknown id among them, deletes each message once and
        leaves no key of them behind: only the marker counter and the
        project's queue records remain.
        """
        from marconi.storage.redis import lua
        from marconi.storage.redis.store import queuePrefix

        store = await self.store()
        ids = await self.post(store, 2500)
        await store.createClaim("p", "q", spec(limit=1200), T0)
        await store.createClaim("p", "q", spec(limit=10), T0)
        unknown = "f" * 32
        deleted = await store._change(
            lua.DELETE_MESSAGES,
            queuePrefix("p", "q"),
            repr(float(T0)),
            -1,
            ids[0],
            *ids,
            unknown,
        )
        self.assertEqual(deleted, 2500)
        self.assertEqual(await store.listMessages("p", "q", query(), T0), [])
        purged = await store.purgeExpired(T0 + 10000)
        self.assertEqual(purged, 0)
        self.assertEqual(await store._call("execute_command", "DBSIZE"), 3)

    async def test_deleteEachLeavesNoKeys(self) -> None:
        """
        Deleting messages one by one (held by a live claim and deleted with
        it, free, delayed, and one whose claim expired and that went back
        to the claimable index) leaves none of them in any index: once
        the claims expire and are purged, only the marker counter and the
        project's queue records remain.
        """
        store = await self.store()
        held = await store.postMessages("p", "q", [msg(), msg()], "c", T0)
        claim = await store.createClaim("p", "q", spec(limit=2, ttl=60), T0)
        free = await store.postMessages("p", "q", [msg(), msg()], "c", T0)
        delayed = await store.postMessages(
            "p", "q", [msg(delay=100), msg(delay=100)], "c", T0
        )
        for mid in held:
            await store.deleteMessage("p", "q", mid, claim.id, T0 + 1)
        for mid in free + delayed:
            await store.deleteMessage("p", "q", mid, None, T0 + 1)
        lapsed = await store.postMessages("p", "q", [msg()], "c", T0)
        await store.createClaim("p", "q", spec(limit=1, ttl=60), T0)
        # Runs the promotion of the expired claim's message, claims nothing.
        none = await store.createClaim("p", "q", spec(tags=("t",)), T0 + 70)
        self.assertIsNone(none)
        await store.deleteMessage("p", "q", lapsed[0], None, T0 + 70)
        self.assertEqual(
            await store.listMessages(
                "p", "q", query(includeClaimed=True, includeDelayed=True), T0 + 70
            ),
            [],
        )
        self.assertEqual(await store.purgeExpired(T0 + 10000), 0)
        self.assertEqual(await store._call("execute_command", "DBSIZE"), 3)

    async def test_bulkDeleteLeavesTheClaimsOthers(self) -> None:
        """
        A bulk delete takes the messages it deletes out of the set of ids
        of their claim and leaves the others there: the claim still lists
        them, and the set goes once it is empty.  The set goes only when
        it holds exactly the ids deleted, whatever its size.
        """
        from marconi.storage.redis.store import queuePrefix

        store = await self.store()

        async def run(*args: Any) -> Any:
            return await store._call("execute_command", *args)

        await self.post(store, 6)
        claim = await store.createClaim("p", "q", spec(limit=4), T0)
        ids = [m.id for m in claim.messages]
        key = queuePrefix("p", "q") + ":cm:" + claim.id
        self.assertEqual(await store.deleteMessages("p", "q", ids[:2], None, T0), 2)
        self.assertEqual(sorted(await run("SMEMBERS", key)), sorted(ids[2:]))
        still = await store.getClaim("p", "q", claim.id, T0)
        self.assertEqual(sorted(m.id for m in still.messages), sorted(ids[2:]))
        self.assertEqual(
            await store.deleteMessages("p", "q", ids[2:], [claim.id], T0), 2
        )
        self.assertEqual(await run("EXISTS", key), 0)
        # A set as many as the ids deleted but not all of them: SREM.
        other = await store.createClaim("p", "q", spec(limit=2), T0)
        ids = [m.id for m in other.messages]
        key = queuePrefix("p", "q") + ":cm:" + other.id
        await run("SREM", key, ids[1])
        await run("SADD", key, "f" * 32)
        self.assertEqual(await store.deleteMessages("p", "q", ids, None, T0), 2)
        self.assertEqual(await run("SMEMBERS", key), ["f" * 32])

    async def test_claimExtendsExpiryIndexes(self) -> None:
        """
        The messages a claim keeps alive past their own expiry (until its
        grace ends) move in both expiry indexes, those it does not extend
        stay: stats count them until the new expiry, and the purge removes
        each at its own.
        """
        store = await self.store()
        short = await self.post(store, 3, ttl=60)
        [long] = await self.post(store, 1, queue="q", ttl=1000)
        claim = await store.createClaim("p", "q", spec(ttl=100, grace=50), T0)
        self.assertEqual(len(claim.messages), 4)
        expiries = {m.id: m.expires for m in claim.messages}
        self.assertEqual(expiries, {**dict.fromkeys(short, T0 + 150), long: T0 + 1000})
        from marconi.storage.redis.store import queuePrefix

        prefix = queuePrefix("p", "q")
        for id, expires in expiries.items():
            for key, member in ((prefix + ":x", id), ("marconi:x", prefix + id)):
                score = await store._call("execute_command", "ZSCORE", key, member)
                self.assertEqual(float(score), expires)
        self.assertEqual(await store.purgeExpired(T0 + 100), 0)
        stats = await store.queueStats("p", "q", T0 + 149)
        self.assertEqual(stats.free, 4)
        self.assertEqual(await store.purgeExpired(T0 + 150), 3)
        left = await store.listMessages("p", "q", query(), T0 + 150)
        self.assertEqual([m.id for m in left], [long])
        self.assertEqual(await store.purgeExpired(T0 + 1000), 1)

    async def test_unencodableTextChangesNothing(self) -> None:
        """
        Text that cannot be encoded as UTF-8 (a lone surrogate) fails the
        call with L{ValidationFailed} before anything is sent, and the
        connection goes on serving.
        """
        store = await self.store()
        bad = NewMessage('"\ud800"', 60)
        d = store.postMessages("p", "q", [msg('"a"'), bad], "c", T0)
        with self.assertRaises(ValidationFailed):
            await d
        self.assertEqual(await store.listMessages("p", "q", query(), T0), [])
        ids = await store.postMessages("p", "q", [msg('"b"')], "c", T0)
        found = await store.getMessages("p", "q", ids, T0)
        self.assertEqual([m.body for m in found], ['"b"'])

    async def test_batchIsAtomic(self) -> None:
        """
        A post whose script refuses one message of the batch stores none of
        them, and does not even create the queue.
        """
        from marconi.storage.redis import lua
        from marconi.storage.redis.store import projectPrefix, queuePrefix

        store = await self.store()
        args = [
            queuePrefix("p", "q"),
            projectPrefix("p"),
            "q",
            repr(T0),
            "w",
            "a" * 32,
            '"a"',
            "60",
            "0",
            "[]",
            "",
            "b" * 32,
            '"b"',
            "sixty",
            "0",
            "[]",
            "",
        ]
        with self.assertRaises(StorageUnavailable):
            await store._eval(lua.POST_MESSAGES, *args)
        self.assertEqual(await store._call("execute_command", "DBSIZE"), 0)

    async def test_manyClaimersOverSeveralConnections(self) -> None:
        """
        60 claimers on one queue, through two stores with two connections
        each, claim and delete until the queue is empty: no message is ever
        held by two live claims, and every posted message is claimed exactly
        once before it is deleted.
        """
        first = await self.store()
        uri = self.server.uri()
        second = await startStore(self, uri + "?poolsize=2")
        first = await startStore(self, uri + "?poolsize=2")
        posted = await self.post(first, 600)
        claimedBy: dict[str, str] = {}
        deleted: set[str] = set()

        async def claimer(store: Any, n: int) -> None:
            while True:
                claim = await store.createClaim(
                    "p", "q", spec(limit=1 + n % 5, ttl=300), T0
                )
                if claim is None:
                    return
                for m in claim.messages:
                    self.assertNotIn(m.id, claimedBy, "a message was claimed twice")
                    claimedBy[m.id] = claim.id
                for m in claim.messages:
                    await store.deleteMessage("p", "q", m.id, claim.id, T0)
                    deleted.add(m.id)

        await gatherResults(
            [
                Deferred.fromCoroutine(claimer(first if n % 2 else second, n))
                for n in range(60)
            ],
            consumeErrors=True,
        )
        self.assertEqual(sorted(claimedBy), sorted(posted))
        self.assertEqual(deleted, set(posted))
        self.assertEqual((await first.queueStats("p", "q", T0)).total, 0)
        self.assertTrue(len(first._ready) >= 2 and len(second._ready) >= 2)

    async def test_claimReleaseRaceNeverSharesAMessage(self) -> None:
        """
        60 claimers over two stores keep claiming, releasing, deleting and
        abandoning claims, in phases between which time moves on so that
        abandoned claims expire: a message is claimed again only after its
        previous claim was released or has expired, never while two live
        claims would hold it, and what is left at the end is exactly what
        was never deleted.
        """
        await self.store()
        uri = self.server.uri()
        first = await startStore(self, uri + "?poolsize=2")
        second = await startStore(self, uri + "?poolsize=2")
        posted = set(await self.post(first, 300, ttl=3600))
        # Message id -> (claim id, claim expiry) of the claim that holds it,
        # as far as the claimers know; released and deleted ones are
        # removed *before* the release or delete is sent.
        holders: dict[str, tuple[str, float]] = {}
        deleted: set[str] = set()
        taken = [0]

        async def claimer(store: Any, n: int, now: float) -> None:
            for round in range(3):
                claim = await store.createClaim(
                    "p", "q", spec(limit=3, ttl=60, grace=0), now
                )
                if claim is None:
                    return
                for m in claim.messages:
                    held = holders.get(m.id)
                    if held is not None:
                        self.assertLessEqual(
                            held[1], now, "two live claims hold a message"
                        )
                    holders[m.id] = (claim.id, claim.expires)
                    taken[0] += 1
                action = (n + round) % 3
                if action == 0:
                    for m in claim.messages:
                        holders.pop(m.id)
                        deleted.add(m.id)
                        await store.deleteMessage("p", "q", m.id, claim.id, now)
                elif action == 1:
                    for m in claim.messages:
                        holders.pop(m.id)
                    await store.releaseClaim("p", "q", claim.id, now)

        for now in [T0, T0 + 30, T0 + 100, T0 + 200, T0 + 300]:
            await gatherResults(
                [
                    Deferred.fromCoroutine(claimer(first if n % 2 else second, n, now))
                    for n in range(60)
                ],
                consumeErrors=True,
            )
        self.assertGreater(taken[0], len(posted))
        left = set()
        marker = None
        while True:
            page = await first.listMessages(
                "p", "q", query(marker=marker, includeClaimed=True), T0 + 400
            )
            if not page:
                break
            left |= {m.id for m in page}
            marker = page[-1].marker
        self.assertEqual(left, posted - deleted)

    async def test_outage(self) -> None:
        """
        While redis-server is down, requests fail quickly with
        L{StorageUnavailable}; when it is back (from its append-only file)
        the store reconnects by itself and the acknowledged messages are
        there.
        """
        server = serverOf(self)
        store = await startStore(self, server.uri(), connectWait=0.3)
        ids = await store.postMessages("p", "q", [msg('"kept"')], "w", T0)
        server.kill()
        for _ in range(3):
            with self.assertRaises(StorageUnavailable) as caught:
                await store.listMessages("p", "q", query(), T0)
            self.assertIn("try again later", caught.exception.description)
        self.assertFalse(await store.ping())
        server.start()
        for _ in range(200):
            if await store.ping():
                break
            await sleep(0.05)
        found = await store.getMessages("p", "q", ids, T0)
        self.assertEqual([m.body for m in found], ['"kept"'])
        self.assertEqual(
            len(await store.postMessages("p", "q", [msg('"after"')], "w", T0)), 1
        )

    async def persistenceEvents(self, server: RedisServer) -> list:
        from marconi.storage.redis.store import RedisStore

        events: list = []
        store = RedisStore(parseURI(server.uri()), reactor)
        store.log = Logger(observer=events.append)
        store.startService()
        self.addCleanup(store.stopService)
        await store.whenPersistenceChecked()
        return [e for e in events if e["log_level"] == LogLevel.warn]

    async def test_warnsWithoutAppendonly(self) -> None:
        """
        A server running without C{appendonly} is reported with a warning
        at start.
        """
        warnings = await self.persistenceEvents(serverOf(self, appendonly=False))
        self.assertEqual(len(warnings), 1)
        self.assertIn("without appendonly", formatEvent(warnings[0]))

    async def test_warnsAgainAfterRestartWithoutAppendonly(self) -> None:
        """
        When the server comes back after an outage without C{appendonly},
        the store warns again.
        """
        from marconi.storage.redis.store import RedisStore

        server = serverOf(self)
        events: list = []
        store = RedisStore(parseURI(server.uri()), reactor, connectWait=0.3)
        store.log = Logger(observer=events.append)
        store.startService()
        self.addCleanup(store.stopService)
        await store.whenPersistenceChecked()
        self.assertEqual([e for e in events if e["log_level"] == LogLevel.warn], [])
        server.kill()
        server.appendonly = False
        checked = store.whenPersistenceChecked()
        server.start()
        await checked
        self.assertTrue(
            any("without appendonly" in formatEvent(e) for e in events),
            [formatEvent(e) for e in events],
        )

    async def test_warnsWhenSettingsCannotBeRead(self) -> None:
        """
        A server that refuses C{CONFIG GET} is reported with a warning
        asking to make sure C{appendonly} is on.
        """
        server = serverOf(self, extraArgs=("--rename-command", "CONFIG", ""))
        warnings = await self.persistenceEvents(server)
        self.assertEqual(len(warnings), 1)
        self.assertIn("Cannot read the persistence settings", formatEvent(warnings[0]))

    async def test_quietWithAppendonly(self) -> None:
        """
        A server with C{appendonly yes} gives no warning.
        """
        self.assertEqual(await self.persistenceEvents(sharedServer()), [])

    async def test_unixSocketAndDatabases(self) -> None:
        """
        C{redis+unix://} reaches the server through its socket, and stores
        on different databases do not see each other's queues.
        """
        server = sharedServer()
        server.flush()
        one = await startStore(self, server.unixURI(db=1))
        two = await startStore(self, server.uri(db=2))
        await one.postMessages("p", "q", [msg('"one"')], "w", T0)
        self.assertEqual(await two.listMessages("p", "q", query(), T0), [])
        self.assertEqual(await two.countQueues("p"), 0)
        three = await startStore(self, server.uri(db=1))
        found = await three.listMessages("p", "q", query(), T0)
        self.assertEqual([m.body for m in found], ['"one"'])

    async def test_password(self) -> None:
        """
        A password in the URI is sent with AUTH; a wrong one leaves the
        store unavailable, with the reason logged.
        """
        server = serverOf(self)
        command(server.address, "CONFIG", "SET", "requirepass", "s3cr:t")
        store = await startStore(self, f"redis://:s3cr%3At@127.0.0.1:{server.port}/0")
        self.assertEqual(
            len(await store.postMessages("p", "q", [msg('"a"')], "w", T0)), 1
        )

        from marconi.storage.redis.store import RedisStore

        events: list = []
        observer = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        wrong = RedisStore(
            parseURI(f"redis://:nope@127.0.0.1:{server.port}/0"),
            reactor,
            connectWait=0.3,
        )
        wrong.startService()
        self.addCleanup(wrong.stopService)
        self.assertFalse(await wrong.ping())
        self.assertTrue(any("could not auth" in formatEvent(e) for e in events))

    async def test_stoppedStoreIsUnavailable(self) -> None:
        """
        After C{stopService} requests fail with L{StorageUnavailable}.
        """
        store = await self.store()
        await store.stopService()
        with self.assertRaises(StorageUnavailable):
            await store.countQueues("p")

    async def test_pluginMakesStore(self) -> None:
        """
        The plugin found for the C{redis} scheme makes a working store.
        """
        from marconi.storage.redis.store import RedisStore

        [plugin] = [
            p
            for p in getPlugins(IStorageDriverPlugin, marconi.plugins)
            if "redis" in p.schemes
        ]
        server = sharedServer()
        plugin.checkURI(server.uri())
        store = plugin.makeStore(server.uri(), reactor)
        self.assertIsInstance(store, RedisStore)


class SendingTests(TestCase):
    """
    How the commands of one turn of the reactor go out on a plain TCP
    connection to a real redis-server: the turn's first at once, then
    every C{SEND_EVERY}th with those held before it, the rest at the end
    of the turn; commands txredisapi writes itself after those held.
    """

    skip = SKIP

    async def store(self, queues: int) -> Any:
        """
        A store on the shared server with queues C{q0}, C{q1}... of one
        message each, whose body is the queue's number; picked by no turn
        yet.
        """
        server = sharedServer()
        server.flush()
        store = await startStore(self, server.uri())
        for i in range(queues):
            await store.postMessages("p", f"q{i}", [msg(f'"{i}"')], "w", T0)
        await sleep(0)
        self.assertIsNone(store._batch)
        return store

    def listing(self, store: Any, queue: int) -> Deferred:
        """
        List queue C{q<queue>}: its bodies.
        """
        listed = store.listMessages("p", f"q{queue}", query(), T0)
        return listed.addCallback(lambda found: [m.body for m in found])

    def assertSent(self, conn: Any) -> None:
        """
        Nothing is held back, or waiting in the transport's buffers.
        """
        transport = conn.transport
        self.assertEqual(
            (conn._unsent, transport.dataBuffer, transport._tempDataLen),
            ([], b"", 0),
        )

    async def test_ownCommandsAfterHeldOnes(self) -> None:
        """
        Listings, a ping and an C{ECHO} (which txredisapi writes itself),
        then more listings, all in one turn: each gets its own reply.
        """
        store = await self.store(6)
        first = [self.listing(store, i) for i in range(3)]
        conn = store._batch
        self.assertIn(type(conn.transport), (tcp.Client, tcp.Server))
        self.assertEqual(len(conn._unsent), 2)
        pinged = store.ping()
        echoed = conn.execute_command("ECHO", "between")
        rest = [self.listing(store, i) for i in range(3, 6)]
        self.assertIs(store._batch, conn)
        self.assertEqual(
            await gatherResults(first + [pinged, echoed] + rest),
            [['"0"'], ['"1"'], ['"2"'], True, "between", ['"3"'], ['"4"'], ['"5"']],
        )

    async def test_firstAtOnceThenEvery(self) -> None:
        """
        The turn's first command is sent at once; the next ones are held
        until the C{SEND_EVERY}th held one, which goes out with them at
        once; those after it go out at the end of the turn.
        """
        from marconi.storage.redis.store import SEND_EVERY

        store = await self.store(1)
        sent = [self.listing(store, 0)]
        conn = store._batch
        self.assertIn(type(conn.transport), (tcp.Client, tcp.Server))
        self.assertSent(conn)
        for held in range(1, SEND_EVERY):
            sent.append(self.listing(store, 0))
            self.assertEqual(len(conn._unsent), held)
        sent.append(self.listing(store, 0))
        self.assertSent(conn)
        sent.append(self.listing(store, 0))
        self.assertEqual(len(conn._unsent), 1)
        self.assertEqual(await gatherResults(sent), [['"0"']] * (SEND_EVERY + 2))
        self.assertSent(conn)

    async def aborted(self, store: Any, conn: Any, sent: list) -> None:
        """
        Once C{conn}'s connection is lost, each of C{sent} has failed with
        L{StorageUnavailable}, nothing is held, and the store answers on
        another connection.
        """
        await conn.whenDisconnected()
        # While the connection is being lost: nothing is held, or waits to
        # be sent at the end of the turn.
        self.assertEqual((conn._unsent, conn._flushing), ([], None))
        # txredisapi fails the waiting commands after it fires
        # whenDisconnected.
        await sleep(0)
        self.assertEqual([d.called for d in sent], [True] * len(sent))
        for d in sent:
            await self.assertFailure(d, StorageUnavailable)
        self.assertEqual(await self.listing(store, 0), ['"0"'])

    async def test_heldFailWhenAborted(self) -> None:
        """
        Commands held in a turn in which the connection is aborted fail,
        as the one sent at once does: those held before the abort (sent
        at the end of the turn, to a connection that is gone), and those
        held after it (the connection is lost before the end of the turn
        would send them).
        """
        store = await self.store(1)
        sent = [self.listing(store, 0) for _ in range(4)]
        conn = store._batch
        self.assertEqual(len(conn._unsent), 3)
        conn.transport.abortConnection()
        await self.aborted(store, conn, sent)

        await sleep(0)
        sent = [self.listing(store, 0)]
        conn = store._batch
        conn.transport.abortConnection()
        sent += [self.listing(store, 0) for _ in range(3)]
        self.assertIs(store._batch, conn)
        self.assertEqual(len(conn._unsent), 3)
        await self.aborted(store, conn, sent)


class TimeoutTests(SynchronousTestCase):
    """
    The store's timeouts, on a L{MemoryReactorClock}: connections are
    L{StringTransport}s this test answers (or not) as the server would.
    """

    def setUp(self) -> None:
        from marconi.storage.redis.store import RedisStore

        self.clock = MemoryReactorClock()
        location = parseURI("redis+unix:///run/redis.sock?poolsize=1")
        self.store = RedisStore(location, self.clock, connectWait=1, replyTimeout=3)
        self.store.startService()
        self.addCleanup(self.store.stopService)

    def connect(self) -> StringTransport:
        """
        Accept the store's latest connection attempt and answer its SELECT
        and its persistence check, as a Redis 7.0 server with C{appendonly
        yes}.
        """
        factory = self.clock.unixClients[-1][1]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"+OK\r\n")
        protocol.dataReceived(b"*2\r\n$10\r\nappendonly\r\n$3\r\nyes\r\n")
        self.clock.advance(0)
        info = b"# Server\r\nredis_version:7.0.15\r\n"
        protocol.dataReceived(b"$%d\r\n%s\r\n" % (len(info), info))
        self.clock.advance(0)
        transport.clear()
        self.protocol = protocol
        return transport

    def test_noConnection(self) -> None:
        """
        With no usable connection a request fails with
        L{StorageUnavailable} when C{connectWait} has passed, not before.
        """
        d = self.store.postMessages("p", "q", [msg()], "w", T0)
        self.clock.advance(0.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, StorageUnavailable)

    def test_unansweredCommand(self) -> None:
        """
        A command the server does not answer fails with
        L{StorageUnavailable} when C{replyTimeout} has passed, not before;
        the connection is dropped, and the store serves again on the next
        one.
        """
        transport = self.connect()
        d = self.store.postMessages("p", "q", [msg()], "w", T0)
        self.assertIn(b"EVALSHA", transport.value())
        self.clock.advance(2.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        failure = self.failureResultOf(d, StorageUnavailable)
        self.assertIn("did not answer", failure.value.description)
        self.assertTrue(transport.disconnecting)
        self.protocol.connectionLost(ConnectionDone())
        attempts = len(self.clock.unixClients)
        self.clock.advance(5)
        self.assertGreater(len(self.clock.unixClients), attempts)
        transport = self.connect()
        ping = self.store.ping()
        self.assertIn(b"PING", transport.value())
        self.protocol.dataReceived(b"+PONG\r\n")
        self.clock.advance(0)
        self.assertTrue(self.successResultOf(ping))

    def reply(self, *values: bytes) -> None:
        """
        Answer the oldest waiting command with an array of bulk strings.
        """
        wire = b"*%d\r\n" % len(values)
        for value in values:
            wire += b"$%d\r\n%s\r\n" % (len(value), value)
        self.protocol.dataReceived(wire)

    def test_laterCommandHasItsOwnTimeout(self) -> None:
        """
        A command sent while another waits for its reply gets the whole
        C{replyTimeout} from when it was sent: answering the first keeps the
        connection, and the second fails only when its own time is up.
        """
        self.connect()
        first = self.store.listMessages("p", "q", query(), T0)
        self.clock.advance(2)
        second = self.store.listMessages("p", "q", query(), T0)
        self.clock.advance(0.5)
        self.reply()
        self.assertEqual(self.successResultOf(first), [])
        self.clock.advance(2.4)
        self.assertNoResult(second)
        self.assertFalse(self.protocol.transport.disconnecting)
        self.clock.advance(0.1)
        self.failureResultOf(second, StorageUnavailable)
        self.assertTrue(self.protocol.transport.disconnecting)

    def test_cancelledCommandKeepsItsPlace(self) -> None:
        """
        Cancelling a request leaves its place among the replies: the reply
        to its command is dropped, and the next command gets its own reply
        (here a listing of one message, as the listing script writes it).
        """
        self.connect()
        first = self.store.listMessages("p", "q", query(), T0)
        second = self.store.listMessages("p", "q", query(), T0)
        first.cancel()
        self.failureResultOf(first)
        self.reply()
        self.assertNoResult(second)
        mid = b"a" * 32
        times = b"1700000000.5 1700000300.5 1700000000.5 "
        self.protocol.dataReceived(
            b'*10\r\n$32\r\n%s\r\n:7\r\n$7\r\n"b\xc3\xbcdy"\r\n:300\r\n'
            b'$1\r\nw\r\n$0\r\n\r\n$5\r\n["t"]\r\n$5\r\nMD5:0\r\n:2\r\n'
            b"$%d\r\n%s\r\n" % (mid, len(times), times)
        )
        [message] = self.successResultOf(second)
        self.assertEqual(
            (message.id, message.marker, message.body, message.ttl),
            (mid.decode(), 7, '"büdy"', 300),
        )
        self.assertEqual(
            (message.created, message.expires, message.visibleAt),
            (1700000000.5, 1700000300.5, 1700000000.5),
        )
        self.assertEqual(
            (message.clientId, message.claimId, message.claimExpires),
            ("w", None, None),
        )
        self.assertEqual(
            (message.claimCount, message.tags, message.checksum), (2, ("t",), "MD5:0")
        )
        self.assertFalse(self.protocol.transport.disconnecting)

    def test_listingOfWrongShape(self) -> None:
        """
        A listing reply whose length is not a whole number of messages fails
        with L{StorageUnavailable} rather than being read askew.
        """
        self.connect()
        d = self.store.listMessages("p", "q", query(), T0)
        self.reply(*[b"x"] * 12)
        self.failureResultOf(d, StorageUnavailable)

    def test_errorReply(self) -> None:
        """
        An error reply to a command fails that request with
        L{StorageUnavailable}, and the next command gets the next reply.
        """
        self.connect()
        first = self.store.listMessages("p", "q", query(), T0)
        second = self.store.listMessages("p", "q", query(), T0)
        self.protocol.dataReceived(b"-ERR something went wrong\r\n")
        self.failureResultOf(first, StorageUnavailable)
        self.reply()
        self.assertEqual(self.successResultOf(second), [])


class BatchTests(SynchronousTestCase):
    """
    Which connection a command goes out on, with two connections made of
    L{StringTransport}s this test answers as the server would.
    """

    def setUp(self) -> None:
        from marconi.storage.redis.store import RedisStore

        self.clock = MemoryReactorClock()
        location = parseURI("redis+unix:///run/redis.sock?poolsize=2")
        self.store = RedisStore(location, self.clock, connectWait=1, replyTimeout=3)
        self.store.startService()
        self.addCleanup(self.store.stopService)
        self.protocols = []
        self.transports = []
        for _, factory, *_ in self.clock.unixClients:
            protocol = factory.buildProtocol(None)
            transport = StringTransport()
            protocol.makeConnection(transport)
            protocol.dataReceived(b"+OK\r\n")
            self.protocols.append(protocol)
            self.transports.append(transport)
        self.clock.advance(0)
        # The persistence check, on the first connection made usable.
        self.protocols[0].dataReceived(b"*2\r\n$10\r\nappendonly\r\n$3\r\nyes\r\n")
        self.clock.advance(0)
        info = b"# Server\r\nredis_version:7.2.0\r\n"
        self.protocols[0].dataReceived(b"$%d\r\n%s\r\n" % (len(info), info))
        self.clock.advance(0)
        for transport in self.transports:
            transport.clear()

    def sent(self) -> list:
        """
        How many commands went out on each connection since last asked.
        """
        counts = [t.value().count(b"EVALSHA") for t in self.transports]
        for transport in self.transports:
            transport.clear()
        return counts

    def test_oneTurnOneConnection(self) -> None:
        """
        The commands of one turn of the reactor go out on one connection;
        the next turn's on the other.
        """
        for _ in range(3):
            self.store.listMessages("p", "q", query(), T0)
        first = self.sent()
        self.assertEqual(sorted(first), [0, 3])
        self.clock.advance(0)
        self.store.listMessages("p", "q", query(), T0)
        self.store.listMessages("p", "q", query(), T0)
        second = self.sent()
        self.assertEqual(sorted(second), [0, 2])
        self.assertNotEqual(first.index(3), second.index(2))

    def test_heldConnectionPassedOver(self) -> None:
        """
        While a connection waits for C{WAITAOF} (Redis 7.2 with an
        append-only file, C{durable}), commands go out on the other one,
        in the same turn and in the next.
        """
        self.store.postMessages("p", "q", [msg()], "w", T0)
        [posted] = [i for i, t in enumerate(self.transports) if t.value()]
        self.sent()
        self.protocols[posted].dataReceived(b"*1\r\n:1\r\n")
        self.assertIn(b"WAITAOF", self.transports[posted].value())
        self.transports[posted].clear()
        self.store.listMessages("p", "q", query(), T0)
        self.clock.advance(0)
        self.store.listMessages("p", "q", query(), T0)
        counts = self.sent()
        self.assertEqual(counts[posted], 0)
        self.assertEqual(sum(counts), 2)

    def test_durableBeforePersistenceKnown(self) -> None:
        """
        A durable post sent before the server's persistence is known waits
        for C{WAITAOF} if the check, finishing meanwhile, finds it.
        """
        self.store._waitAOF = None
        self.store.postMessages("p", "q", [msg()], "w", T0)
        [posted] = [i for i, t in enumerate(self.transports) if t.value()]
        self.sent()
        self.store._waitAOF = True
        self.protocols[posted].dataReceived(b"*1\r\n:1\r\n")
        self.assertIn(b"WAITAOF", self.transports[posted].value())


class ProtocolTests(SynchronousTestCase):
    """
    The store's connection protocol: what it writes for a command.
    """

    skip = SKIP

    def test_commandEncoding(self) -> None:
        """
        A command goes out in the Redis protocol: the argument count, then
        each argument as a bulk string of its UTF-8 bytes (text), its bytes
        as given, or its C{str} (numbers).
        """
        from marconi.storage.redis.store import _Protocol

        protocol = _Protocol(charset="utf-8")
        wire = protocol._build_command("EVALSHA", "ünï", b"\x00\xff", 12, -1, "")
        self.assertEqual(
            wire,
            b"*6\r\n$7\r\nEVALSHA\r\n$5\r\n\xc3\xbcn\xc3\xaf\r\n"
            b"$2\r\n\x00\xff\r\n$2\r\n12\r\n$2\r\n-1\r\n$0\r\n\r\n",
        )

    def test_asciiCommandEncoding(self) -> None:
        """
        A command of ASCII text and integers (built as text and encoded
        once) goes out byte for byte as one encoded argument by argument;
        a bool or a float among them is sent as its C{str}.
        """
        from marconi.storage.redis.store import _Protocol

        protocol = _Protocol(charset="utf-8")
        args = ("EVALSHA", "abc", 12, -1, "", "x" * 300)
        wire = protocol._build_command(*args)
        self.assertEqual(
            wire,
            b"*6\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$2\r\n12\r\n$2\r\n-1\r\n"
            b"$0\r\n\r\n$300\r\n" + b"x" * 300 + b"\r\n",
        )
        self.assertEqual(wire, protocol._encodeEach(args))
        self.assertEqual(
            protocol._build_command("A", True, 1.5),
            b"*3\r\n$1\r\nA\r\n$4\r\nTrue\r\n$3\r\n1.5\r\n",
        )

    def test_flushIsTxredisapis(self) -> None:
        """
        The protocol's C{flush} is txredisapi's (C{FLUSHDB}), not one of
        the driver's own under that name.
        """
        import txredisapi

        from marconi.storage.redis.store import _Protocol

        self.assertIs(_Protocol.flush, txredisapi.RedisProtocol.flush)


class PluginTests(SynchronousTestCase):
    """
    The driver is found through the plugin mechanism without importing
    txredisapi.
    """

    def test_found(self) -> None:
        """
        L{getPlugins} finds one Redis driver serving its three schemes.
        """
        found = [
            p
            for p in getPlugins(IStorageDriverPlugin, marconi.plugins)
            if p.name == "redis"
        ]
        self.assertEqual(len(found), 1)
        self.assertEqual(found[0].schemes, ("redis", "redis+unix", "redis+sentinel"))
        self.assertTrue(verifyObject(IStorageDriverPlugin, found[0]))

    def test_checkingDoesNotImportClient(self) -> None:
        """
        Listing the drivers and checking a Redis URI leave txredisapi
        unimported (so C{twistd marconi --help} never loads it).
        """
        code = (
            "import sys\n"
            "from twisted.plugin import getPlugins\n"
            "import marconi.plugins\n"
            "from marconi.core.interfaces import IStorageDriverPlugin\n"
            "[p] = [p for p in getPlugins(IStorageDriverPlugin, marconi.plugins)"
            " if p.name == 'redis']\n"
            "p.checkURI('redis://localhost:6379/0')\n"
            "assert 'txredisapi' not in sys.modules, 'txredisapi imported'\n"
            "assert 'marconi.storage.redis.store' not in sys.modules\n"
        )
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        result = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)


class RecordTests(SynchronousTestCase):
    """
    The messages the driver makes of its scripts' records.
    """

    skip = SKIP

    def test_recordsAreMessages(self) -> None:
        """
        A message made of a record is a L{Message} like one made by its
        constructor: same type, equal, same hash, and frozen.
        """
        from dataclasses import FrozenInstanceError

        from marconi.core.models import Message
        from marconi.storage.redis.store import _records

        [unclaimed, claimed] = _records(
            [
                ["a" * 32, 7, '"b"', 300, "w", "", "[]", "MD5:0", 0, "1.5 301.5 2.5 "],
                [
                    "a" * 32,
                    7,
                    '"b"',
                    300,
                    "w",
                    "c" * 32,
                    '["t"]',
                    "MD5:1",
                    2,
                    "1.5 301.5 2.5 61.5",
                ],
            ]
        )
        self.assertIs(type(unclaimed), Message)
        expected = Message(
            "a" * 32, 7, '"b"', 300, 1.5, 301.5, 2.5, "w", None, None, 0, (), "MD5:0"
        )
        self.assertEqual(unclaimed, expected)
        self.assertEqual(hash(unclaimed), hash(expected))
        self.assertEqual(
            claimed,
            Message(
                "a" * 32,
                7,
                '"b"',
                300,
                1.5,
                301.5,
                2.5,
                "w",
                "c" * 32,
                61.5,
                2,
                ("t",),
                "MD5:1",
            ),
        )
        with self.assertRaises(FrozenInstanceError):
            unclaimed.body = "x"  # type: ignore[misc]


class URITests(SynchronousTestCase):
    """
    Parsing and checking Redis URIs.
    """

    def test_tcp(self) -> None:
        """
        Host, port, database, credentials and pool size are read; the port
        defaults to 6379 and the database to 0.
        """
        self.assertEqual(
            parseURI("redis://localhost:6380/3"),
            RedisLocation(host="localhost", port=6380, db=3),
        )
        self.assertEqual(parseURI("redis://h"), RedisLocation(host="h"))
        self.assertEqual(
            parseURI("redis://:p%40ss@10.0.0.1:7000/0"),
            RedisLocation(host="10.0.0.1", port=7000, password="p@ss"),
        )
        self.assertEqual(
            parseURI("redis://me:pw@[::1]:7000/1?poolsize=8"),
            RedisLocation(
                host="::1", port=7000, db=1, username="me", password="pw", poolsize=8
            ),
        )

    def test_unix(self) -> None:
        """
        A socket path, with the database in the query.
        """
        self.assertEqual(
            parseURI("redis+unix:///run/redis.sock?db=2"),
            RedisLocation(path="/run/redis.sock", db=2),
        )
        self.assertEqual(
            parseURI("redis+unix://:pw@/run/redis.sock"),
            RedisLocation(path="/run/redis.sock", password="pw"),
        )

    def test_bad(self) -> None:
        """
        Bad URIs are refused with a one-line reason.
        """
        for uri in [
            "redis:/",
            "redis://",
            "redis://h/x",
            "redis://h/-1",
            "redis://h/1/2",
            "redis://h:99999/0",
            "redis://h:0/0",
            "redis://h:port/0",
            "redis://h?db=2",
            "redis://h?x=1",
            "redis://h?poolsize=0",
            "redis://h?poolsize=1000",
            "redis://h?poolsize=1&poolsize=2",
            "redis://user@h/0",
            "redis://h/0#frag",
            "redis://h /0",
            "http://h/0",
            "sqlite:x.db",
            "redis+unix://host/x.sock",
            "redis+unix://relative.sock",
            "redis+unix:///",
            "redis+unix:///x.sock?db=x",
            "redis://h/٣",
        ]:
            with self.assertRaises(ValueError, msg=uri) as caught:
                checkURI(uri)
            self.assertNotIn("\n", str(caught.exception))
            self.assertTrue(str(caught.exception))

    def test_describeHidesPassword(self) -> None:
        """
        The description used in messages names the server, not the
        password.
        """
        where = parseURI("redis://:secret@h:1/2").describe()
        self.assertEqual(where, "redis://h:1/2")
        self.assertEqual(parseURI("redis://[::1]:1").describe(), "redis://[::1]:1/0")
