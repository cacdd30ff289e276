"""
The in-memory store: the storage contract, the same answers as the SQLite
store for any sequence of operations, and what is particular to it.
"""

from typing import Any, Callable, Optional

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    rule,
    run_state_machine_as_test,
)
from twisted.application.service import IService
from twisted.internet.defer import Deferred
from twisted.plugin import getPlugins
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

import marconi.plugins
import marconi.storage.memory.store
import marconi.storage.sqlite.store
from marconi import kernel, tap
from marconi.core.errors import ClaimDoesNotExist, StorageUnavailable
from marconi.core.interfaces import (
    IMessageStore,
    IQueueDepths,
    IStorageDriverPlugin,
    IStoreEvents,
)
from marconi.core.models import Claim, ClaimSpec, Message, MessageQuery
from marconi.storage.memory.store import MemoryStore, makeStore
from marconi.storage.memory.uri import checkURI
from marconi.storage.sqlite.store import SQLiteStore
from tests.storage.contract import T0, MessageStoreContract, msg, query, spec


class MemoryStoreContractTests(MessageStoreContract, TestCase):
    """
    The storage contract, on a fresh in-memory store.
    """

    def createStore(self) -> MemoryStore:
        store = MemoryStore()
        store.startService()
        self.addCleanup(lambda: store.running and store.stopService())
        return store


def started() -> MemoryStore:
    store = MemoryStore()
    store.startService()
    return store


class MemoryStoreTests(SynchronousTestCase):
    """
    What is particular to the in-memory store.
    """

    def test_service(self) -> None:
        """
        The store is a service providing L{IMessageStore} and the optional
        L{IStoreEvents} and L{IQueueDepths}.
        """
        store = started()
        for interface in (IMessageStore, IService, IStoreEvents, IQueueDepths):
            self.assertTrue(verifyObject(interface, store))

    def test_alreadyFired(self) -> None:
        """
        Every answer is a L{Deferred} that has already fired, failures
        included: no reactor needs to run.
        """
        store = started()
        [mid] = self.successResultOf(store.postMessages("p", "q", [msg()], "c", T0))
        [found] = self.successResultOf(store.getMessages("p", "q", [mid], T0))
        self.assertEqual(found.id, mid)
        self.failureResultOf(store.getClaim("p", "q", "nope", T0), ClaimDoesNotExist)

    def test_notRunning(self) -> None:
        """
        A store that is not running fails every call with
        L{StorageUnavailable}, and answers again once started, with its data.
        """
        store = started()
        self.successResultOf(store.createQueue("p", "q", {"a": 1}, T0))
        store.stopService()
        self.failureResultOf(store.ping(), StorageUnavailable)
        self.failureResultOf(store.getQueueMetadata("p", "q"), StorageUnavailable)
        store.startService()
        self.assertEqual(
            self.successResultOf(store.getQueueMetadata("p", "q")), {"a": 1}
        )

    def test_metadataIsCopied(self) -> None:
        """
        Changing a metadata L{dict} given to the store or got from it does
        not change what the store holds.
        """
        store = started()
        given = {"a": [1]}
        self.successResultOf(store.createQueue("p", "q", given, T0))
        given["a"].append(2)
        got = self.successResultOf(store.getQueueMetadata("p", "q"))
        got["b"] = 1
        self.assertEqual(
            self.successResultOf(store.getQueueMetadata("p", "q")), {"a": [1]}
        )

    def test_markersAcrossQueues(self) -> None:
        """
        Each queue counts its own markers, and a message moved to a dead
        letter queue gets the next marker of that queue.
        """
        store = started()
        [a] = self.successResultOf(store.postMessages("p", "q", [msg()], "c", T0))
        self.successResultOf(store.postMessages("p2", "q", [msg()], "c", T0))
        policy = spec(maxClaimCount=1, deadLetterQueue="dlq", ttl=60)
        self.successResultOf(store.createClaim("p", "q", policy, T0))
        self.assertIsNone(
            self.successResultOf(store.createClaim("p", "q", policy, T0 + 60))
        )
        [dead] = self.successResultOf(store.listMessages("p", "dlq", query(), T0 + 60))
        [first] = self.successResultOf(store.listMessages("p2", "q", query(), T0))
        self.assertEqual(dead.id, a)
        self.assertEqual((first.marker, dead.marker), (1, 1))
        self.successResultOf(store.postMessages("p", "dlq", [msg()], "c", T0 + 60))
        markers = self.successResultOf(store.listMessages("p", "dlq", query(), T0 + 60))
        self.assertEqual([m.marker for m in markers], [1, 2])

    def test_deleteManyPastExpiredClaim(self) -> None:
        """
        Deleting by ids with claim ids also removes a message whose claim
        has expired, as the SQLite store does.
        """
        store = started()
        ids = self.successResultOf(store.postMessages("p", "q", [msg()] * 2, "c", T0))
        self.successResultOf(store.createClaim("p", "q", spec(ttl=60, limit=1), T0))
        self.successResultOf(store.createClaim("p", "q", spec(ttl=120, limit=1), T0))
        count = self.successResultOf(store.deleteMessages("p", "q", ids, [], T0 + 60))
        self.assertEqual(count, 1)
        left = self.successResultOf(
            store.listMessages("p", "q", query(includeClaimed=True), T0 + 60)
        )
        self.assertEqual([m.id for m in left], ids[1:])

    def test_releaseClearsClaim(self) -> None:
        """
        A released message names no claim and no claim expiry, and keeps its
        claim count.
        """
        store = started()
        self.successResultOf(store.postMessages("p", "q", [msg()], "c", T0))
        claim = self.successResultOf(store.createClaim("p", "q", spec(), T0))
        self.successResultOf(store.releaseClaim("p", "q", claim.id, T0))
        [m] = self.successResultOf(store.listMessages("p", "q", query(), T0))
        self.assertEqual((m.claimId, m.claimExpires, m.claimCount), (None, None, 1))

    def test_purgeAfterManyRenewals(self) -> None:
        """
        Renewing a claim thousands of times leaves the expiry heaps bounded,
        and purging still removes exactly what has expired.
        """
        store = started()
        self.successResultOf(store.postMessages("p", "q", [msg(ttl=60)], "c", T0))
        [short] = self.successResultOf(
            store.postMessages("p", "q2", [msg(ttl=60)], "c", T0)
        )
        claim = self.successResultOf(store.createClaim("p", "q", spec(ttl=60), T0))
        now = T0
        for _ in range(3000):
            now += 1
            self.successResultOf(store.renewClaim("p", "q", claim.id, 60, 30, now))
        self.assertLess(len(store._messageExpiry), 1100)
        self.assertLess(len(store._claimExpiry), 1100)
        self.assertEqual(self.successResultOf(store.purgeExpired(now)), 1)
        self.assertEqual(
            self.successResultOf(store.getMessages("p", "q2", [short], T0)), []
        )
        found = self.successResultOf(store.getClaim("p", "q", claim.id, now + 59))
        self.assertEqual(len(found.messages), 1)
        self.assertEqual(self.successResultOf(store.purgeExpired(now + 89)), 0)
        self.failureResultOf(
            store.getClaim("p", "q", claim.id, now + 59), ClaimDoesNotExist
        )
        self.assertEqual(self.successResultOf(store.purgeExpired(now + 90)), 1)

    def test_purgeAfterDeletes(self) -> None:
        """
        Purging after the queue or the messages it would have removed are
        gone removes nothing and does not fail.
        """
        store = started()
        self.successResultOf(store.postMessages("p", "q", [msg(ttl=60)] * 2, "c", T0))
        [mid] = self.successResultOf(
            store.postMessages("p", "r", [msg(ttl=60)], "c", T0)
        )
        self.successResultOf(store.createClaim("p", "q", spec(), T0))
        self.successResultOf(store.deleteQueue("p", "q"))
        self.successResultOf(store.deleteMessage("p", "r", mid, None, T0))
        self.assertEqual(self.successResultOf(store.purgeExpired(T0 + 1000)), 0)
        self.assertEqual(self.successResultOf(store.countQueues("p")), 1)

    def test_longQueueListing(self) -> None:
        """
        Walking a queue of thousands of messages with markers, while most of
        them are deleted, sees each remaining message once in order.
        """
        store = started()
        ids = self.successResultOf(
            store.postMessages("p", "q", [msg(str(i)) for i in range(3000)], "c", T0)
        )
        self.successResultOf(store.deleteMessages("p", "q", ids[:2000:2], None, T0))
        for start in range(0, 2000, 20):
            self.successResultOf(
                store.deleteMessages(
                    "p", "q", ids[start + 1 : start + 20 : 2], None, T0
                )
            )
        seen, marker = [], None
        while page := self.successResultOf(
            store.listMessages("p", "q", query(limit=20, marker=marker), T0)
        ):
            seen += [m.id for m in page]
            marker = page[-1].marker
        self.assertEqual(seen, ids[2000:])


class PluginTests(SynchronousTestCase):
    """
    The C{memory} driver plugin.
    """

    def test_found(self) -> None:
        """
        The plugin is found under the scheme C{memory} and makes a
        L{MemoryStore}.
        """
        plugins = {p.name: p for p in getPlugins(IStorageDriverPlugin, marconi.plugins)}
        self.assertTrue(verifyObject(IStorageDriverPlugin, plugins["memory"]))
        plugin = kernel.storageDriverFor("memory:")
        self.assertIs(plugin, plugins["memory"])
        self.assertIsInstance(plugin.makeStore("memory:", None), MemoryStore)
        self.assertIsInstance(makeStore("memory:", None), MemoryStore)

    def test_onlyMemoryColon(self) -> None:
        """
        C{memory:} is the only URI accepted; paths and options are refused
        with a reason, by the plugin and by twistd's options.
        """
        checkURI("memory:")
        for uri in ("memory", "memory:x", "memory://", "memory:?a=1", "Memory:"):
            self.assertRaises(ValueError, checkURI, uri)
        options = tap.Options()
        e = self.assertRaises(
            UsageError, options.parseOptions, ["--storage", "memory:/tmp/x"]
        )
        self.assertIn("memory:", str(e))

    def test_node(self) -> None:
        """
        C{twistd marconi --storage memory:} builds a node over a memory
        store.
        """
        from twisted.internet import reactor

        options = tap.Options()
        options.parseOptions(["--storage", "memory:", "--listen", "tcp:0"])
        node = tap.makeService(options, reactor)
        # The store is the child of the audit river's service.
        self.assertIsInstance(list(list(node)[0])[0], MemoryStore)


# Running the same operations on both stores.


class _SequentialIds:
    """
    Ids C{id0001}, C{id0002}, ... in the order they are asked for.
    """

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"id{self.count:04d}"


def _takingFrom(ids: _SequentialIds, taken: list) -> Any:
    """
    A stand-in for the SQLite store's C{_claimId}: the next id of C{ids},
    noted in C{taken}.
    """

    def claimId(now: float) -> str:
        taken.append(now)
        return ids()

    return claimId


def _countingFrom(ids: _SequentialIds) -> Any:
    """
    A stand-in for the SQLite store's C{_messageIds}: the next ids of
    C{ids}.
    """

    def messageIds(now: float, count: int) -> list[str]:
        return [ids() for _ in range(count)]

    return messageIds


class _SynchronousSQLiteStore(SQLiteStore):
    """
    The SQLite store with each call run at once on the calling thread, in
    its own transaction, so that it answers like the memory store.
    """

    def _run(
        self, work: Callable[..., Any], *args: Any, durability: Any = None
    ) -> Deferred:
        d: Deferred = Deferred()
        for _, ok, value in self._runBatch([(work, args, d, self.synchronous)]):
            if ok:
                d.callback(value)
            else:
                d.errback(Failure(value))
        return d


def _outcome(d: Deferred) -> Any:
    """
    What a fired L{Deferred} gave: its result, or its failure's type and
    message.
    """
    box: list = []
    d.addBoth(box.append)
    [result] = box
    if isinstance(result, Failure):
        return ("failed", result.type, str(result.value))
    return result


# Mostly one queue, so that posts, claims and deletes meet.
_where = st.sampled_from(
    [("p", "q")] * 6 + [("p", "dlq")] * 2 + [("p", "q2"), ("p2", "q")]
)
_tags = st.sampled_from([(), ("a",), ("b",), ("a", "b")])
_filter = st.sampled_from([(), (), (), (), ("a",), ("b", "a")])
_clients = st.sampled_from(["c1", "c2"])
# The latest ids of a project first, then one never handed out.
_pick = st.integers(0, 6)


class _StoresAgree(RuleBasedStateMachine):
    """
    Each rule calls the same method of the SQLite store and of the memory
    store, each with its own sequential ids, and checks that both answer
    the same: the same values (messages with every field, claims, stats,
    queue listings) or the same error.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sqlite = _SynchronousSQLiteStore(":memory:", None)
        self.memory = started()
        self.ids = {
            marconi.storage.sqlite.store: _SequentialIds(),
            marconi.storage.memory.store: _SequentialIds(),
        }
        self.now = T0
        self.deadlines: set[float] = set()
        self.messageIds: dict[str, list[str]] = {}
        self.claimIds: dict[str, list[str]] = {}
        self.events: dict[Any, list] = {self.sqlite: [], self.memory: []}
        for store, seen in self.events.items():
            store.observeEvents(
                lambda kind, count, seen=seen: seen.append((kind, count))
            )

    def teardown(self) -> None:
        self.sqlite._close()

    def agree(self, name: str, *args: Any) -> Any:
        """
        Call C{name} on both stores; fail unless they answer the same.

        @return: the answer.
        """
        answers = []
        for module, store in (
            (marconi.storage.sqlite.store, self.sqlite),
            (marconi.storage.memory.store, self.memory),
        ):
            original = getattr(module, "newId", None)
            if original is not None:
                module.newId = self.ids[module]  # type: ignore[attr-defined]
            # The SQLite store's message ids are ordered by time too (its
            # _messageIds): here they come from the same sequence.
            messageIds = getattr(module, "_messageIds", None)
            if messageIds is not None:
                module._messageIds = _countingFrom(self.ids[module])  # type: ignore
            # The SQLite store's claim ids are ordered by time (its
            # _claimId): here they come from the same sequence.  It takes
            # one before it knows whether anything is claimable; when
            # nothing was, the id goes back, as the memory store takes none.
            claimIds = getattr(module, "_claimId", None)
            taken: list = []
            if claimIds is not None:
                module._claimId = _takingFrom(self.ids[module], taken)  # type: ignore
            try:
                answers.append(_outcome(getattr(store, name)(*args)))
            finally:
                if original is not None:
                    module.newId = original  # type: ignore[attr-defined]
                if messageIds is not None:
                    module._messageIds = messageIds  # type: ignore
                if claimIds is not None:
                    module._claimId = claimIds  # type: ignore
            if taken and not answers[-1]:
                self.ids[module].count -= 1
        expected, actual = answers
        assert actual == expected, (name, args, expected, actual)
        events = self.events[self.sqlite], self.events[self.memory]
        assert events[0] == events[1], (name, args, events)
        self._noteDeadlines(expected)
        return expected

    def _noteDeadlines(self, answer: Any) -> None:
        """
        Remember when the messages and claims in an answer expire, so that
        a rule can go to exactly that time.
        """
        if isinstance(answer, Claim):
            self.deadlines.add(answer.expires)
            self._noteDeadlines(answer.messages)
        elif isinstance(answer, Message):
            self.deadlines.update((answer.expires, answer.visibleAt))
        elif isinstance(answer, list):
            for item in answer:
                self._noteDeadlines(item)

    def recent(self, ids: dict, project: str, index: Optional[int]) -> Optional[str]:
        """
        The C{index}th latest of the project's ids, C{"unknown"} past the
        end, or L{None} for L{None}.
        """
        if index is None:
            return None
        known = ids.get(project, [])
        return known[-1 - index] if index < len(known) else "unknown"

    @initialize(client=_clients, tags=st.lists(_tags, min_size=6, max_size=6))
    def start(self, client: str, tags: list) -> None:
        news = [msg(f'"start{i}"', tags=t) for i, t in enumerate(tags)]
        ids = self.agree("postMessages", "p", "q", news, client, self.now)
        self.messageIds.setdefault("p", []).extend(ids)

    @rule(index=st.integers(0, 5))
    def reachDeadline(self, index: int) -> None:
        """
        Go to the moment a message or claim seen so far expires or becomes
        visible: the boundaries where C{<} and C{<=} differ.
        """
        future = sorted(t for t in self.deadlines if t > self.now)
        if future:
            self.now = future[min(index, len(future) - 1)]

    @rule(seconds=st.sampled_from([1, 29, 30, 31, 59, 60, 61, 90, 150]))
    def wait(self, seconds: int) -> None:
        self.now += seconds

    @rule(
        where=_where,
        bodies=st.lists(
            st.tuples(
                st.sampled_from([60, 90, 300]), st.sampled_from([0, 0, 30]), _tags
            ),
            min_size=1,
            max_size=4,
        ),
        client=_clients,
    )
    def post(self, where: tuple, bodies: list, client: str) -> None:
        news = [
            msg(f'"{i}"', ttl=ttl, delay=delay, tags=tags)
            for i, (ttl, delay, tags) in enumerate(bodies)
        ]
        ids = self.agree("postMessages", *where, news, client, self.now)
        self.messageIds.setdefault(where[0], []).extend(ids)

    @rule(where=_where, n=st.integers(0, 3))
    def createQueue(self, where: tuple, n: int) -> None:
        self.agree("createQueue", *where, {"n": n, "l": [n]}, self.now)

    @rule(where=_where, n=st.integers(0, 3))
    def setQueueMetadata(self, where: tuple, n: int) -> None:
        self.agree("setQueueMetadata", *where, {"n": n})

    @rule(where=_where)
    def getQueueMetadata(self, where: tuple) -> None:
        self.agree("getQueueMetadata", *where)

    @rule(where=_where)
    def deleteQueue(self, where: tuple) -> None:
        self.agree("deleteQueue", *where)

    @rule(
        project=st.sampled_from(["p", "p2"]),
        marker=st.sampled_from([None, "", "dlq", "q", "q2"]),
        limit=st.integers(1, 3),
        detailed=st.booleans(),
    )
    def listQueues(self, project: str, marker: Any, limit: int, detailed: bool) -> None:
        self.agree("listQueues", project, marker, limit, detailed)
        self.agree("countQueues", project)

    @rule(where=_where)
    def queueStats(self, where: tuple) -> None:
        self.agree("queueStats", *where, self.now)

    @rule(
        where=_where,
        limit=st.integers(1, 5),
        marker=st.one_of(st.none(), st.integers(0, 30)),
        client=_clients,
        flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
        tags=_filter,
    )
    def listMessages(
        self,
        where: tuple,
        limit: int,
        marker: Any,
        client: str,
        flags: tuple,
        tags: tuple,
    ) -> None:
        echo, claimed, delayed = flags
        q = MessageQuery(
            limit=limit,
            clientId=client,
            marker=marker,
            echo=echo,
            includeClaimed=claimed,
            includeDelayed=delayed,
            tags=tags,
        )
        self.agree("listMessages", *where, q, self.now)

    @rule(where=_where, picks=st.lists(_pick, max_size=3))
    def getMessages(self, where: tuple, picks: list) -> None:
        ids = [self.recent(self.messageIds, where[0], i) for i in picks]
        self.agree("getMessages", *where, ids, self.now)

    @rule(where=_where, message=_pick, claim=st.none() | _pick)
    def deleteMessage(self, where: tuple, message: int, claim: Any) -> None:
        messageId = self.recent(self.messageIds, where[0], message)
        claimId = self.recent(self.claimIds, where[0], claim)
        self.agree("deleteMessage", *where, messageId, claimId, self.now)

    @rule(
        where=_where,
        messages=st.lists(_pick, max_size=4),
        claims=st.none() | st.lists(_pick, max_size=2),
    )
    def deleteMessages(self, where: tuple, messages: list, claims: Any) -> None:
        ids = [self.recent(self.messageIds, where[0], i) for i in messages]
        claimIds = (
            None
            if claims is None
            else [self.recent(self.claimIds, where[0], i) for i in claims]
        )
        self.agree("deleteMessages", *where, ids, claimIds, self.now)

    @rule(where=_where, limit=st.integers(1, 3), tags=_filter)
    def popMessages(self, where: tuple, limit: int, tags: tuple) -> None:
        self.agree("popMessages", *where, limit, tags, self.now)

    @rule(
        where=_where,
        ttl=st.sampled_from([60, 120]),
        grace=st.sampled_from([0, 30]),
        limit=st.integers(1, 4),
        tags=_filter,
        policy=st.tuples(
            st.sampled_from([None, 1, 2]),
            st.sampled_from([None, "dlq", "q"]),
            st.sampled_from([None, 60, 500]),
        ),
    )
    def createClaim(
        self, where: tuple, ttl: int, grace: int, limit: int, tags: tuple, policy: tuple
    ) -> None:
        maxCount, queue, deadTTL = policy
        claimSpec = ClaimSpec(
            ttl=ttl,
            grace=grace,
            limit=limit,
            tags=tags,
            maxClaimCount=maxCount,
            deadLetterQueue=queue,
            deadLetterTTL=deadTTL,
        )
        claim = self.agree("createClaim", *where, claimSpec, self.now)
        if claim is not None:
            self.claimIds.setdefault(where[0], []).append(claim.id)

    @rule(where=_where, claim=_pick)
    def getClaim(self, where: tuple, claim: int) -> None:
        claimId = self.recent(self.claimIds, where[0], claim)
        self.agree("getClaim", *where, claimId, self.now)

    @rule(
        where=_where,
        claim=_pick,
        ttl=st.sampled_from([60, 200]),
        grace=st.sampled_from([0, 30]),
    )
    def renewClaim(self, where: tuple, claim: int, ttl: int, grace: int) -> None:
        claimId = self.recent(self.claimIds, where[0], claim)
        self.agree("renewClaim", *where, claimId, ttl, grace, self.now)

    @rule(where=_where, claim=_pick)
    def releaseClaim(self, where: tuple, claim: int) -> None:
        claimId = self.recent(self.claimIds, where[0], claim)
        self.agree("releaseClaim", *where, claimId, self.now)

    @rule(limit=st.integers(1, 4))
    def sampleDepths(self, limit: int) -> None:
        self.agree("sampleDepths", self.now, limit)

    @rule()
    def purgeExpired(self) -> None:
        self.agree("purgeExpired", self.now)


class SameAsSQLiteTests(SynchronousTestCase):
    """
    The memory store against the SQLite store, the reference.
    """

    def test_sameAnswers(self) -> None:
        """
        For any sequence of operations on a few queues of two projects, at
        times moving forward, the memory store answers every call as the
        SQLite store does.
        """
        run_state_machine_as_test(
            _StoresAgree,
            settings=settings(max_examples=200, stateful_step_count=60, deadline=None),
        )
