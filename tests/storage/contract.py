"""
The contract every L{IMessageStore} honours, as a mixin for trial test cases.

Use it as C{class XStoreTests(MessageStoreContract, TestCase)} with a
L{twisted.trial.unittest.TestCase} and define:

  - C{createStore(self)}: return (or fire a L{Deferred} or coroutine with) a
    started store holding no data, and register its own cleanup;
  - optionally C{reopenStore(self, store)}: stop C{store} and return a new
    started store over the same data, to check what survives a restart.

Every test passes its own times (C{now}), so no test waits for a clock.
"""

from typing import Any

from twisted.internet.defer import gatherResults, maybeDeferred
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from marconi.core import queuefilter, rules
from marconi.core.deferreds import checkSignatures
from marconi.core.errors import (
    ClaimDoesNotExist,
    ClaimMismatch,
    MessageIsClaimed,
    QueueDoesNotExist,
)
from marconi.core.interfaces import IMessageStore, IStoreEvents
from marconi.core.limits import Limits
from marconi.core.models import ClaimSpec, MessageQuery, NewMessage

T0 = 1_700_000_000.0


def msg(
    body: str = '"x"', ttl: int = 300, delay: int = 0, tags: tuple = ()
) -> NewMessage:
    return NewMessage(body=body, ttl=ttl, delay=delay, tags=tags, checksum="MD5:0")


def query(limit: int = 20, **kwargs: Any) -> MessageQuery:
    kwargs.setdefault("clientId", "reader")
    return MessageQuery(limit=limit, **kwargs)


def spec(limit: int = 10, ttl: int = 60, grace: int = 30, **kwargs: Any) -> ClaimSpec:
    return ClaimSpec(ttl=ttl, grace=grace, limit=limit, **kwargs)


class MessageStoreContract:
    """
    Tests of L{IMessageStore} semantics, run unchanged against every driver.
    """

    async def store(self) -> Any:
        return await maybeDeferred(self.createStore)  # type: ignore[attr-defined]

    async def post(
        self,
        store: Any,
        bodies: list,
        queue: str = "q",
        project: str = "p",
        now: float = T0,
        **kwargs: Any,
    ) -> list:
        return await store.postMessages(
            project, queue, [msg(b, **kwargs) for b in bodies], "writer", now
        )

    # Basics.

    async def test_interface(self) -> None:
        """
        The store provides L{IMessageStore}, each method taking the
        parameters the interface names, and answers a ping.
        """
        store = await self.store()
        self.assertTrue(verifyObject(IMessageStore, store))
        checkSignatures(IMessageStore, store)
        self.assertTrue(await store.ping())

    # Queues.

    async def test_createQueueOnce(self) -> None:
        """
        Creating a queue reports whether it was new; creating it again keeps
        the first metadata.
        """
        store = await self.store()
        self.assertTrue(await store.createQueue("p", "q", {"a": 1}, T0))
        self.assertFalse(await store.createQueue("p", "q", {"a": 2}, T0))
        self.assertEqual(await store.getQueueMetadata("p", "q"), {"a": 1})

    async def test_missingQueue(self) -> None:
        """
        Reading or writing the metadata of a missing queue fails with
        L{QueueDoesNotExist}; a queue of another project is missing too.
        """
        store = await self.store()
        await store.createQueue("other", "q", {}, T0)
        with self.assertRaises(QueueDoesNotExist):
            await store.getQueueMetadata("p", "q")
        with self.assertRaises(QueueDoesNotExist):
            await store.setQueueMetadata("p", "q", {"x": 1})

    async def test_setQueueMetadata(self) -> None:
        """
        Setting metadata replaces it whole.
        """
        store = await self.store()
        await store.createQueue("p", "q", {"a": 1, "b": [1, "two"]}, T0)
        await store.setQueueMetadata("p", "q", {"c": {"d": None}})
        self.assertEqual(await store.getQueueMetadata("p", "q"), {"c": {"d": None}})

    async def test_deleteQueue(self) -> None:
        """
        Deleting a queue removes it and its messages and claims; deleting a
        missing queue succeeds; the same name in another project is kept.
        """
        store = await self.store()
        await self.post(store, ['"a"', '"b"'])
        await self.post(store, ['"c"'], project="p2")
        claim = await store.createClaim("p", "q", spec(limit=1), T0)
        await store.deleteQueue("p", "q")
        await store.deleteQueue("p", "missing")
        with self.assertRaises(QueueDoesNotExist):
            await store.getQueueMetadata("p", "q")
        self.assertEqual(await store.listMessages("p", "q", query(), T0), [])
        with self.assertRaises(ClaimDoesNotExist):
            await store.getClaim("p", "q", claim.id, T0)
        left = await store.listMessages("p2", "q", query(), T0)
        self.assertEqual([m.body for m in left], ['"c"'])

    async def test_listQueues(self) -> None:
        """
        Queues are listed in name order after the marker, up to the limit,
        with metadata only when detailed, and only the project's own.
        """
        store = await self.store()
        for name in ["b", "a", "d", "c"]:
            await store.createQueue("p", name, {"n": name}, T0)
        await store.createQueue("other", "aa", {}, T0)
        page = await store.listQueues("p", None, 2, False)
        self.assertEqual(
            [(q.name, q.metadata) for q in page], [("a", None), ("b", None)]
        )
        page = await store.listQueues("p", "b", 5, True)
        self.assertEqual(
            [(q.name, q.metadata) for q in page], [("c", {"n": "c"}), ("d", {"n": "d"})]
        )
        self.assertEqual(await store.listQueues("p", "d", 5, False), [])
        self.assertEqual(await store.countQueues("p"), 4)
        self.assertEqual(await store.countQueues("nobody"), 0)

    async def test_filteredListing(self) -> None:
        """
        A filtered listing over the store's own pages (as
        L{marconi.core.queuefilter} reads them, a few at a time) keeps the
        queues whose name contains the filter and whose metadata matches,
        pages with the last queue shown as the marker, counts what it
        keeps, and sees only the project's own queues.
        """
        self.patch(queuefilter, "SCAN_PAGE", 2)
        store = await self.store()
        for name, meta in [
            ("alpha-1", {"env": "prod", "n": 1}),
            ("alpha-2", {"env": "test", "n": 2}),
            ("beta-1", {"env": "prod", "n": "1"}),
            ("beta-2", {"env": "prod", "n": True}),
            ("alpha-3", {"env": "prod", "n": 1.0}),
            ("gamma", {}),
        ]:
            await store.createQueue("p", name, meta, T0)
        await store.createQueue("other", "alpha-9", {"env": "prod", "n": 1}, T0)

        async def names(queueFilter: Any, marker: Any = None, limit: int = 10):
            found = await queuefilter.page(store, "p", marker, limit, True, queueFilter)
            return [q.name for q in found]

        byName = queuefilter.parse("alpha", [], Limits())
        self.assertEqual(await names(byName), ["alpha-1", "alpha-2", "alpha-3"])
        self.assertEqual(await names(byName, None, 2), ["alpha-1", "alpha-2"])
        self.assertEqual(await names(byName, "alpha-2", 2), ["alpha-3"])
        self.assertEqual(await names(byName, "alpha-3", 2), [])
        self.assertEqual(await queuefilter.count(store, "p", byName), 3)
        prod = queuefilter.parse(None, [("env", "prod")], Limits())
        self.assertEqual(await names(prod), ["alpha-1", "alpha-3", "beta-1", "beta-2"])
        one = queuefilter.parse(None, [("env", "prod"), ("n", "1")], Limits())
        self.assertEqual(await names(one), ["alpha-1", "alpha-3"])
        both = queuefilter.parse("a-", [("n", "1")], Limits())
        self.assertEqual(await names(both), ["alpha-1", "alpha-3"])
        self.assertEqual(await queuefilter.count(store, "p", both), 2)
        page = await queuefilter.page(store, "p", None, 1, False, both)
        self.assertEqual([(q.name, q.metadata) for q in page], [("alpha-1", None)])
        page = await queuefilter.page(store, "p", None, 1, True, byName)
        self.assertEqual(page[0].metadata, {"env": "prod", "n": 1})
        nobody = queuefilter.parse("zeta", [], Limits())
        self.assertEqual(await names(nobody), [])
        self.assertEqual(await queuefilter.count(store, "nobody", byName), 0)

    async def test_similarNamesDoNotCollide(self) -> None:
        """
        Projects and queues whose joined names look alike stay apart.
        """
        store = await self.store()
        await self.post(store, ['"one"'], project="a.b", queue="c")
        await self.post(store, ['"two"'], project="a", queue="b.c")
        await self.post(store, ['"three"'], project="a:b", queue="c")
        await self.post(store, ['"four"'], project="a/b", queue="c")
        for project, queue, body in [
            ("a.b", "c", '"one"'),
            ("a", "b.c", '"two"'),
            ("a:b", "c", '"three"'),
            ("a/b", "c", '"four"'),
        ]:
            found = await store.listMessages(project, queue, query(), T0)
            self.assertEqual([m.body for m in found], [body])

    async def test_statsOfMissingQueue(self) -> None:
        """
        A missing queue has all counts zero and no oldest or newest message.
        """
        store = await self.store()
        stats = await store.queueStats("p", "nothing", T0)
        self.assertEqual(
            (stats.free, stats.claimed, stats.delayed, stats.total), (0, 0, 0, 0)
        )
        self.assertIsNone(stats.oldest)
        self.assertIsNone(stats.newest)

    async def test_stats(self) -> None:
        """
        Stats count free, claimed and delayed live messages and name the
        oldest and newest; expired messages are not counted.
        """
        store = await self.store()
        first = await self.post(store, ['"a"', '"b"', '"c"'])
        await self.post(store, ['"late"'], now=T0 + 1, delay=100)
        await self.post(store, ['"short"'], now=T0 + 2, ttl=60)
        await store.createClaim("p", "q", spec(limit=1), T0 + 3)
        stats = await store.queueStats("p", "q", T0 + 5)
        self.assertEqual((stats.free, stats.claimed, stats.delayed), (3, 1, 1))
        self.assertEqual(stats.total, 5)
        self.assertEqual(stats.oldest.id, first[0])
        self.assertEqual(stats.newest.body, '"short"')
        stats = await store.queueStats("p", "q", T0 + 62)
        self.assertEqual((stats.free, stats.claimed, stats.delayed), (2, 1, 1))

    async def assertStatsCounted(self, store: Any, now: float) -> None:
        """
        Check that the stats of every queue the stats tests use agree
        with counting its live messages one by one at C{now}.
        """
        everything = query(
            limit=1000, echo=True, includeClaimed=True, includeDelayed=True
        )
        for project, queue in [("p", "q"), ("p", "dlq"), ("p2", "q")]:
            live = await store.listMessages(project, queue, everything, now)
            claimed = [m for m in live if m.claimedAt(now)]
            delayed = [m for m in live if not m.claimedAt(now) and m.visibleAt > now]
            counted = (
                len(live) - len(claimed) - len(delayed),
                len(claimed),
                len(delayed),
                live[0].id if live else None,
                live[-1].id if live else None,
            )
            stats = await store.queueStats(project, queue, now)
            self.assertEqual(
                (
                    stats.free,
                    stats.claimed,
                    stats.delayed,
                    stats.oldest.id if stats.oldest else None,
                    stats.newest.id if stats.newest else None,
                ),
                counted,
                f"{project}/{queue} at {now - T0}",
            )

    async def test_statsAgreeWithCounting(self) -> None:
        """
        After every kind of write, and as time alone moves claims to their
        end, delayed messages into view and messages past their TTL, the
        stats of each queue equal a count of its live messages.
        """
        store = await self.store()
        clock = Clock()
        clock.advance(T0)
        check = lambda: self.assertStatsCounted(store, clock.seconds())  # noqa: E731
        await check()
        ids = await self.post(store, ['"a"', '"b"', '"c"', '"d"', '"e"'], now=T0)
        await self.post(store, ['"late"'] * 2, now=T0, delay=30)
        await self.post(store, ['"short"'], now=T0, ttl=20)
        await self.post(store, ['"elsewhere"'], project="p2", now=T0)
        await check()
        claim = await store.createClaim("p", "q", spec(limit=2, ttl=60), T0)
        await check()
        clock.advance(5)
        await store.popMessages("p", "q", 1, (), clock.seconds())
        await check()
        await store.deleteMessage("p", "q", ids[3], None, clock.seconds())
        await store.deleteMessage("p", "q", ids[0], claim.id, clock.seconds())
        await check()
        await store.deleteMessages("p", "q", [ids[4]], None, clock.seconds())
        await check()
        clock.advance(30)
        # The delayed messages are in view and "short" has expired.
        await check()
        await store.renewClaim("p", "q", claim.id, 10, 30, clock.seconds())
        await check()
        clock.advance(11)
        # The renewed claim has ended without a write.
        await check()
        other = await store.createClaim(
            "p", "q", spec(limit=1, ttl=60), clock.seconds()
        )
        await check()
        await store.releaseClaim("p", "q", other.id, clock.seconds())
        await check()
        policy = dict(maxClaimCount=1, deadLetterQueue="dlq", deadLetterTTL=500)
        for _ in range(2):
            await store.createClaim("p", "q", spec(ttl=5, **policy), clock.seconds())
            await check()
            clock.advance(6)
            await check()
        self.assertGreater(await store.purgeExpired(clock.seconds()), 0)
        await check()
        await store.createClaim("p", "dlq", spec(limit=1), clock.seconds())
        await check()
        await store.purgeMessages("p", "dlq")
        await check()
        await self.post(store, ['"again"'], queue="dlq", now=clock.seconds())
        await store.deleteQueue("p", "q")
        await check()
        await self.post(store, ['"new"'], now=clock.seconds(), delay=10)
        await check()
        clock.advance(1000)
        await check()

    # Posting and listing.

    async def test_postAndGet(self) -> None:
        """
        Posting returns one unique id per message in order, creates the
        queue, and stores every field.
        """
        store = await self.store()
        ids = await store.postMessages(
            "p",
            "q",
            [NewMessage('{"k":[1,2]}', 120, 0, ("t1", "t2"), "MD5:abc"), msg('"b"')],
            "writer",
            T0,
        )
        self.assertEqual(len(set(ids)), 2)
        self.assertEqual(await store.getQueueMetadata("p", "q"), {})
        found = await store.getMessages("p", "q", ids, T0 + 10)
        self.assertEqual([m.id for m in found], ids)
        first = found[0]
        self.assertEqual(first.body, '{"k":[1,2]}')
        self.assertEqual(first.ttl, 120)
        self.assertEqual(first.created, T0)
        self.assertEqual(first.expires, T0 + 120)
        self.assertEqual(first.tags, ("t1", "t2"))
        self.assertEqual(first.checksum, "MD5:abc")
        self.assertEqual(first.clientId, "writer")
        self.assertEqual(first.claimCount, 0)
        self.assertFalse(first.claimedAt(T0 + 10))
        self.assertEqual(first.age(T0 + 10), 10)
        self.assertEqual(found[1].tags, ())

    async def test_postUntaggedBatch(self) -> None:
        """
        A batch of messages without tags stores every field of each one,
        in order, each with its own id of 32 hex digits.
        """
        store = await self.store()
        ids = await store.postMessages(
            "p",
            "q",
            [
                NewMessage('{"k":1}', 120, 0, (), "MD5:a"),
                NewMessage('"two"', 300, 5, (), "MD5:b"),
                NewMessage("[3]", 60, 0, (), "MD5:c"),
            ],
            "writer",
            T0,
        )
        self.assertEqual(len(set(ids)), 3)
        for messageId in ids:
            self.assertEqual(len(messageId), 32)
            int(messageId, 16)
        found = await store.getMessages("p", "q", ids, T0 + 10)
        self.assertEqual([m.id for m in found], ids)
        self.assertEqual(
            [(m.body, m.ttl, m.expires, m.visibleAt, m.checksum) for m in found],
            [
                ('{"k":1}', 120, T0 + 120, T0, "MD5:a"),
                ('"two"', 300, T0 + 300, T0 + 5, "MD5:b"),
                ("[3]", 60, T0 + 60, T0, "MD5:c"),
            ],
        )
        self.assertEqual(
            [(m.created, m.clientId, m.claimCount, m.tags) for m in found],
            [(T0, "writer", 0, ())] * 3,
        )
        self.assertLess(found[0].marker, found[1].marker)
        self.assertLess(found[1].marker, found[2].marker)
        listed = await store.listMessages("p", "q", query(echo=True), T0 + 10)
        self.assertEqual([m.id for m in listed], ids)

    async def test_postKeepsQueueMetadata(self) -> None:
        """
        Posting to an existing queue leaves its metadata as it was.
        """
        store = await self.store()
        await store.createQueue("p", "q", {"_default_message_ttl": 100}, T0)
        await self.post(store, ['"a"'])
        self.assertEqual(
            await store.getQueueMetadata("p", "q"), {"_default_message_ttl": 100}
        )

    async def test_listOrderAndMarkers(self) -> None:
        """
        Listing returns messages in posting order; paging with the last
        marker walks every message exactly once.
        """
        store = await self.store()
        bodies = [f'"{i}"' for i in range(25)]
        for i in range(0, 25, 5):
            await self.post(store, bodies[i : i + 5], now=T0 + i)
        seen, marker = [], None
        while True:
            page = await store.listMessages(
                "p", "q", query(limit=7, marker=marker), T0 + 30
            )
            if not page:
                break
            seen += [m.body for m in page]
            markers = [m.marker for m in page]
            self.assertEqual(markers, sorted(markers))
            marker = page[-1].marker
        self.assertEqual(seen, bodies)

    async def test_echo(self) -> None:
        """
        A listing leaves out the reader's own messages unless echo is set.
        """
        store = await self.store()
        await store.postMessages("p", "q", [msg('"mine"')], "me", T0)
        await store.postMessages("p", "q", [msg('"theirs"')], "you", T0)
        plain = await store.listMessages("p", "q", query(clientId="me"), T0)
        self.assertEqual([m.body for m in plain], ['"theirs"'])
        echo = await store.listMessages("p", "q", query(clientId="me", echo=True), T0)
        self.assertEqual([m.body for m in echo], ['"mine"', '"theirs"'])

    async def test_includeClaimed(self) -> None:
        """
        Claimed messages are listed only when asked for.
        """
        store = await self.store()
        await self.post(store, ['"a"', '"b"'])
        await store.createClaim("p", "q", spec(limit=1), T0)
        plain = await store.listMessages("p", "q", query(), T0 + 1)
        self.assertEqual([m.body for m in plain], ['"b"'])
        every = await store.listMessages("p", "q", query(includeClaimed=True), T0 + 1)
        self.assertEqual([m.body for m in every], ['"a"', '"b"'])
        self.assertTrue(every[0].claimedAt(T0 + 1))

    async def test_delay(self) -> None:
        """
        A delayed message is hidden from listings, claims and pops until its
        delay ends, unless the listing includes delayed messages.
        """
        store = await self.store()
        await self.post(store, ['"later"'], delay=60)
        self.assertEqual(await store.listMessages("p", "q", query(), T0 + 59), [])
        shown = await store.listMessages("p", "q", query(includeDelayed=True), T0 + 59)
        self.assertEqual([m.body for m in shown], ['"later"'])
        self.assertIsNone(await store.createClaim("p", "q", spec(), T0 + 59))
        self.assertEqual(await store.popMessages("p", "q", 5, (), T0 + 59), [])
        later = await store.listMessages("p", "q", query(), T0 + 60)
        self.assertEqual([m.body for m in later], ['"later"'])

    async def test_tags(self) -> None:
        """
        A tag filter matches messages that carry every tag asked for, in
        listings, claims and pops.
        """
        store = await self.store()
        await self.post(store, ['"a"'], tags=("red",))
        await self.post(store, ['"b"'], tags=("red", "big"))
        await self.post(store, ['"c"'], tags=("big",))
        await self.post(store, ['"d"'])
        red = await store.listMessages("p", "q", query(tags=("red",)), T0)
        self.assertEqual([m.body for m in red], ['"a"', '"b"'])
        both = await store.listMessages("p", "q", query(tags=("big", "red")), T0)
        self.assertEqual([m.body for m in both], ['"b"'])
        none = await store.listMessages("p", "q", query(tags=("blue",)), T0)
        self.assertEqual(none, [])
        claim = await store.createClaim("p", "q", spec(tags=("big",)), T0)
        self.assertEqual([m.body for m in claim.messages], ['"b"', '"c"'])
        popped = await store.popMessages("p", "q", 5, ("red",), T0)
        self.assertEqual([m.body for m in popped], ['"a"'])

    async def test_expiry(self) -> None:
        """
        A message is gone at once when its TTL ends: not listed, not got,
        not claimed, not popped.
        """
        store = await self.store()
        [mid] = await self.post(store, ['"a"'], ttl=60)
        self.assertEqual(len(await store.getMessages("p", "q", [mid], T0 + 59)), 1)
        self.assertEqual(await store.getMessages("p", "q", [mid], T0 + 60), [])
        self.assertEqual(await store.listMessages("p", "q", query(), T0 + 60), [])
        self.assertIsNone(await store.createClaim("p", "q", spec(), T0 + 60))
        self.assertEqual(await store.popMessages("p", "q", 1, (), T0 + 60), [])

    async def test_getMessagesIsScoped(self) -> None:
        """
        Getting by id finds only messages of the named project and queue;
        unknown ids are skipped.
        """
        store = await self.store()
        [mine] = await self.post(store, ['"mine"'])
        [theirs] = await self.post(store, ['"theirs"'], project="p2")
        [other] = await self.post(store, ['"other"'], queue="q2")
        found = await store.getMessages("p", "q", [mine, theirs, other, "nope"], T0)
        self.assertEqual([m.id for m in found], [mine])

    # Deleting.

    async def test_deleteUnclaimed(self) -> None:
        """
        An unclaimed message is deleted without a claim id; deleting a
        missing message succeeds.
        """
        store = await self.store()
        [mid] = await self.post(store, ['"a"'])
        await store.deleteMessage("p", "q", mid, None, T0)
        self.assertEqual(await store.getMessages("p", "q", [mid], T0), [])
        await store.deleteMessage("p", "q", mid, None, T0)

    async def test_deleteIsScoped(self) -> None:
        """
        Deleting through another project or queue leaves the message.
        """
        store = await self.store()
        [mid] = await self.post(store, ['"a"'])
        await store.deleteMessage("p2", "q", mid, None, T0)
        await store.deleteMessage("p", "q2", mid, None, T0)
        await store.deleteMessages("p2", "q", [mid], None, T0)
        self.assertEqual(len(await store.getMessages("p", "q", [mid], T0)), 1)

    async def test_deleteClaimed(self) -> None:
        """
        A claimed message is deleted only with the claim that holds it; no
        claim id or another live claim's id is refused with
        L{MessageIsClaimed}.
        """
        store = await self.store()
        [a, b] = await self.post(store, ['"a"', '"b"'])
        first = await store.createClaim("p", "q", spec(limit=1), T0)
        second = await store.createClaim("p", "q", spec(limit=1), T0)
        with self.assertRaises(MessageIsClaimed):
            await store.deleteMessage("p", "q", a, None, T0 + 1)
        with self.assertRaises(MessageIsClaimed):
            await store.deleteMessage("p", "q", a, second.id, T0 + 1)
        await store.deleteMessage("p", "q", a, first.id, T0 + 1)
        self.assertEqual(await store.getMessages("p", "q", [a], T0 + 1), [])
        self.assertEqual(len(await store.getMessages("p", "q", [b], T0 + 1)), 1)

    async def test_deleteWithStaleClaim(self) -> None:
        """
        A claim id that expired, was released, or never held the message is
        refused with L{ClaimMismatch}, and the message stays.
        """
        store = await self.store()
        [a, b] = await self.post(store, ['"a"', '"b"'])
        claim = await store.createClaim("p", "q", spec(limit=1, ttl=60), T0)
        with self.assertRaises(ClaimMismatch):
            await store.deleteMessage("p", "q", b, claim.id, T0 + 1)
        with self.assertRaises(ClaimMismatch):
            await store.deleteMessage("p", "q", a, claim.id, T0 + 60)
        with self.assertRaises(ClaimMismatch):
            await store.deleteMessage("p", "q", b, "no-such-claim", T0 + 1)
        self.assertEqual(len(await store.getMessages("p", "q", [a, b], T0 + 61)), 2)
        again = await store.createClaim("p", "q", spec(limit=1), T0 + 1)
        await store.releaseClaim("p", "q", again.id, T0 + 1)
        with self.assertRaises(ClaimMismatch):
            await store.deleteMessage("p", "q", b, again.id, T0 + 1)

    async def test_deleteMany(self) -> None:
        """
        Deleting by ids removes the listed messages of the queue and counts
        them.
        """
        store = await self.store()
        ids = await self.post(store, ['"a"', '"b"', '"c"'])
        count = await store.deleteMessages("p", "q", ids[:2] + ["nope"], None, T0)
        self.assertEqual(count, 2)
        left = await store.listMessages("p", "q", query(), T0)
        self.assertEqual([m.id for m in left], ids[2:])

    async def test_deleteManyWithClaims(self) -> None:
        """
        Deleting by ids with claim ids removes messages held by those live
        claims and unclaimed ones, never those of another live claim.
        """
        store = await self.store()
        ids = await self.post(store, ['"a"', '"b"', '"c"'])
        mine = await store.createClaim("p", "q", spec(limit=1), T0)
        await store.createClaim("p", "q", spec(limit=1), T0)
        count = await store.deleteMessages("p", "q", ids, [mine.id], T0 + 1)
        self.assertEqual(count, 2)
        left = await store.listMessages("p", "q", query(includeClaimed=True), T0 + 1)
        self.assertEqual([m.id for m in left], [ids[1]])

    async def test_pop(self) -> None:
        """
        Popping removes and returns the oldest claimable messages, skipping
        claimed ones.
        """
        store = await self.store()
        ids = await self.post(store, ['"a"', '"b"', '"c"', '"d"'])
        await store.createClaim("p", "q", spec(limit=1), T0)
        popped = await store.popMessages("p", "q", 2, (), T0)
        self.assertEqual([m.id for m in popped], ids[1:3])
        left = await store.listMessages("p", "q", query(includeClaimed=True), T0)
        self.assertEqual([m.id for m in left], [ids[0], ids[3]])
        self.assertEqual(await store.popMessages("p2", "q", 5, (), T0), [])

    # Claims.

    async def test_claimOldestFirst(self) -> None:
        """
        A claim takes the oldest claimable messages up to its limit, and the
        next claim takes the following ones; nothing claimable gives
        L{None}.
        """
        store = await self.store()
        ids = await self.post(store, ['"a"', '"b"', '"c"'])
        first = await store.createClaim("p", "q", spec(limit=2), T0)
        self.assertEqual([m.id for m in first.messages], ids[:2])
        second = await store.createClaim("p", "q", spec(limit=2), T0)
        self.assertEqual([m.id for m in second.messages], ids[2:])
        self.assertNotEqual(first.id, second.id)
        self.assertIsNone(await store.createClaim("p", "q", spec(), T0))
        self.assertIsNone(await store.createClaim("p", "missing", spec(), T0))

    async def test_claimFields(self) -> None:
        """
        A claim records its TTL and grace, marks its messages, counts the
        claim on each, and keeps them alive for TTL plus grace.
        """
        store = await self.store()
        [mid] = await self.post(store, ['"a"'], ttl=60)
        claim = await store.createClaim("p", "q", spec(ttl=100, grace=50), T0 + 10)
        self.assertEqual((claim.ttl, claim.grace, claim.updated), (100, 50, T0 + 10))
        self.assertEqual(claim.expires, T0 + 110)
        [held] = claim.messages
        self.assertEqual((held.claimId, held.claimCount), (claim.id, 1))
        [stored] = await store.getMessages("p", "q", [mid], T0 + 159)
        self.assertEqual(stored.expires, T0 + 160)
        self.assertTrue(stored.claimedAt(T0 + 109))
        self.assertFalse(stored.claimedAt(T0 + 110))

    async def test_getClaim(self) -> None:
        """
        A live claim is found with the messages it holds, only in its own
        project and queue.
        """
        store = await self.store()
        ids = await self.post(store, ['"a"', '"b"'])
        claim = await store.createClaim("p", "q", spec(), T0)
        found = await store.getClaim("p", "q", claim.id, T0 + 5)
        self.assertEqual([m.id for m in found.messages], ids)
        self.assertEqual(found.age(T0 + 5), 5)
        await store.deleteMessage("p", "q", ids[0], claim.id, T0 + 5)
        found = await store.getClaim("p", "q", claim.id, T0 + 6)
        self.assertEqual([m.id for m in found.messages], ids[1:])
        for project, queue in [("p2", "q"), ("p", "q2")]:
            with self.assertRaises(ClaimDoesNotExist):
                await store.getClaim(project, queue, claim.id, T0)
        with self.assertRaises(ClaimDoesNotExist):
            await store.getClaim("p", "q", "nope", T0)

    async def test_claimExpires(self) -> None:
        """
        When a claim's TTL ends it is gone and its messages can be claimed
        again, by a claim that counts a second claim.
        """
        store = await self.store()
        await self.post(store, ['"a"'])
        claim = await store.createClaim("p", "q", spec(ttl=60), T0)
        self.assertIsNone(await store.createClaim("p", "q", spec(), T0 + 59))
        with self.assertRaises(ClaimDoesNotExist):
            await store.getClaim("p", "q", claim.id, T0 + 60)
        again = await store.createClaim("p", "q", spec(), T0 + 60)
        self.assertEqual(again.messages[0].claimCount, 2)

    async def test_renewClaim(self) -> None:
        """
        Renewing restarts a claim with the new TTL and keeps its messages
        alive for the new TTL plus grace; renewing a missing or expired
        claim fails with L{ClaimDoesNotExist}.
        """
        store = await self.store()
        [mid] = await self.post(store, ['"a"'], ttl=60)
        claim = await store.createClaim("p", "q", spec(ttl=60, grace=0), T0)
        await store.renewClaim("p", "q", claim.id, 200, 100, T0 + 50)
        found = await store.getClaim("p", "q", claim.id, T0 + 249)
        self.assertEqual((found.ttl, found.grace, found.updated), (200, 100, T0 + 50))
        self.assertIsNone(await store.createClaim("p", "q", spec(), T0 + 249))
        [stored] = await store.getMessages("p", "q", [mid], T0 + 349)
        self.assertEqual(stored.expires, T0 + 350)
        with self.assertRaises(ClaimDoesNotExist):
            await store.renewClaim("p", "q", claim.id, 60, 60, T0 + 250)
        with self.assertRaises(ClaimDoesNotExist):
            await store.renewClaim("p", "q", "nope", 60, 60, T0)
        with self.assertRaises(ClaimDoesNotExist):
            await store.renewClaim("p2", "q", claim.id, 60, 60, T0 + 1)

    async def test_releaseClaim(self) -> None:
        """
        Releasing a claim makes its messages claimable at once; releasing a
        missing claim succeeds; a claim of another project is not released.
        """
        store = await self.store()
        await self.post(store, ['"a"'])
        claim = await store.createClaim("p", "q", spec(), T0)
        await store.releaseClaim("p2", "q", claim.id, T0)
        self.assertIsNone(await store.createClaim("p", "q", spec(), T0))
        await store.releaseClaim("p", "q", claim.id, T0)
        await store.releaseClaim("p", "q", "nope", T0)
        with self.assertRaises(ClaimDoesNotExist):
            await store.getClaim("p", "q", claim.id, T0)
        self.assertIsNotNone(await store.createClaim("p", "q", spec(), T0))

    async def test_concurrentClaimsAreDisjoint(self) -> None:
        """
        Many claims made at once never share a message, and together they
        take every message.
        """
        store = await self.store()
        ids = []
        for i in range(10):
            ids += await self.post(store, [f'"{i}-{j}"' for j in range(10)])
        claims = await gatherResults(
            [store.createClaim("p", "q", spec(limit=3), T0) for _ in range(40)],
            consumeErrors=True,
        )
        taken = [m.id for c in claims if c is not None for m in c.messages]
        self.assertEqual(len(taken), len(set(taken)))
        self.assertEqual(sorted(taken), sorted(ids))

    async def test_deadLetter(self) -> None:
        """
        A message claimed C{maxClaimCount} times is moved to the dead letter
        queue on the next claim, with the dead letter TTL, instead of being
        claimed again.
        """
        store = await self.store()
        [mid] = await self.post(store, ['"poison"'])
        policy = dict(maxClaimCount=2, deadLetterQueue="dlq", deadLetterTTL=500)
        now = T0
        for _ in range(2):
            claim = await store.createClaim("p", "q", spec(ttl=60, **policy), now)
            self.assertEqual([m.id for m in claim.messages], [mid])
            now += 60
        self.assertIsNone(await store.createClaim("p", "q", spec(**policy), now))
        self.assertEqual(
            await store.listMessages("p", "q", query(includeClaimed=True), now), []
        )
        [dead] = await store.listMessages("p", "dlq", query(), now)
        self.assertEqual((dead.id, dead.body, dead.ttl), (mid, '"poison"', 500))
        self.assertFalse(dead.claimedAt(now))
        self.assertEqual(dead.expires, now + 500)
        self.assertIsNotNone(await store.createClaim("p", "dlq", spec(), now))

    async def test_claimPastHeldHead(self) -> None:
        """
        A claim takes the oldest claimable messages in marker order however
        many messages live claims hold ahead of them: the messages of an
        ended claim come back in their marker place, delayed ones wait for
        their time, tag filters hold, and the dead-letter policy moves the
        messages that reached their count.
        """
        store = await self.store()
        held = await self.post(store, [f'"h{i}"' for i in range(40)])
        for _ in range(4):
            claim = await store.createClaim("p", "q", spec(limit=10, ttl=1000), T0)
            self.assertEqual(len(claim.messages), 10)
        a = await self.post(store, [f'"a{i}"' for i in range(6)])
        short = await store.createClaim("p", "q", spec(limit=3, ttl=30), T0)
        self.assertEqual([m.id for m in short.messages], a[:3])
        long = await store.createClaim("p", "q", spec(limit=3, ttl=100), T0)
        self.assertEqual([m.id for m in long.messages], a[3:])
        [delayed] = await self.post(store, ['"d"'], delay=100)
        tagged = await self.post(store, ['"t0"', '"t1"'], tags=("t",))
        [free] = await self.post(store, ['"b"'])

        def ids(claim: Any) -> list:
            return [m.id for m in claim.messages]

        now = T0 + 60
        claim = await store.createClaim("p", "q", spec(limit=2, tags=("t",)), now)
        self.assertEqual(ids(claim), tagged)
        claim = await store.createClaim("p", "q", spec(limit=2), now)
        self.assertEqual(ids(claim), a[:2])
        self.assertEqual([m.claimCount for m in claim.messages], [2, 2])
        claim = await store.createClaim("p", "q", spec(limit=5), now)
        self.assertEqual(ids(claim), [a[2], free])
        self.assertIsNone(await store.createClaim("p", "q", spec(), now))
        now = T0 + 100
        claim = await store.createClaim("p", "q", spec(limit=10), now)
        self.assertEqual(ids(claim), a[3:] + [delayed])
        # The claims made at T0 + 60 end at T0 + 120; the one at T0 + 100
        # holds its messages until T0 + 160.
        now = T0 + 120
        policy = dict(maxClaimCount=2, deadLetterQueue="dlq")
        claim = await store.createClaim("p", "q", spec(limit=6, **policy), now)
        self.assertEqual(ids(claim), tagged + [free])
        dead = await store.listMessages("p", "dlq", query(), now)
        self.assertEqual([m.id for m in dead], a[:3])
        self.assertEqual([m.claimCount for m in claim.messages], [2, 2, 2])
        popped = await store.popMessages("p", "q", 5, (), T0 + 160)
        self.assertEqual([m.id for m in popped], a[3:] + [delayed])
        listed = await store.listMessages(
            "p", "q", query(limit=100, includeClaimed=True), T0 + 160
        )
        self.assertEqual([m.id for m in listed], held + tagged + [free])
        self.assertTrue(all(m.claimedAt(T0 + 160) for m in listed))

    async def test_markersPerQueue(self) -> None:
        """
        A queue's markers count only its own messages: what other queues
        and other projects post never shows in them, so a tenant cannot
        tell how much others post.
        """
        store = await self.store()
        await self.post(store, ['"a"'])
        await self.post(store, ['"x"'] * 3, project="other")
        await self.post(store, ['"y"'] * 2, queue="q2")
        await self.post(store, ['"b"'])
        listed = await store.listMessages("p", "q", query(), T0)
        first, second = [m.marker for m in listed]
        self.assertEqual(second - first, 1)

    # The rules of marconi.core.rules, held by every store.

    async def test_ruleDeadLetterAtMaxClaimCount(self) -> None:
        """
        L{rules.goesToDeadLetter}: a message is claimed while its claim
        count is below C{maxClaimCount}, and moved at exactly that count;
        without a dead letter queue it is claimed again whatever its count.
        """
        store = await self.store()
        [mid] = await self.post(store, ['"m"'])
        policy = dict(maxClaimCount=3, deadLetterQueue="dlq")
        now = T0
        for count in range(3):
            claim = await store.createClaim("p", "q", spec(ttl=60, **policy), now)
            [held] = claim.messages
            self.assertEqual(held.claimCount, count + 1)
            self.assertFalse(rules.goesToDeadLetter(count, spec(**policy)))
            now += 60
        self.assertTrue(rules.goesToDeadLetter(3, spec(**policy)))
        noQueue = spec(ttl=60, maxClaimCount=3)
        claim = await store.createClaim("p", "q", noQueue, now)
        self.assertEqual([m.claimCount for m in claim.messages], [4])
        now += 60
        self.assertIsNone(await store.createClaim("p", "q", spec(**policy), now))
        [dead] = await store.listMessages("p", "dlq", query(), now)
        self.assertEqual((dead.id, dead.claimCount, dead.ttl), (mid, 4, 300))

    async def test_ruleClaimable(self) -> None:
        """
        L{rules.isClaimable}: a claim takes exactly the messages that are
        live, past their delay and not held by a live claim.
        """
        store = await self.store()
        [held, stale] = await self.post(store, ['"h"', '"s"'])
        await store.createClaim("p", "q", spec(limit=1, ttl=100), T0)
        await store.createClaim("p", "q", spec(limit=1, ttl=30), T0)
        await self.post(store, ['"d"'], delay=100)
        await self.post(store, ['"e"'], ttl=60)
        [free] = await self.post(store, ['"f"'])
        now = T0 + 60
        listed = await store.listMessages(
            "p", "q", query(includeClaimed=True, includeDelayed=True), now
        )
        expected = [m.id for m in listed if rules.isClaimable(m, now)]
        self.assertEqual(expected, [stale, free])
        claim = await store.createClaim("p", "q", spec(), now)
        self.assertEqual([m.id for m in claim.messages], expected)

    async def test_ruleDeleteWithClaim(self) -> None:
        """
        L{rules.checkDelete}: every store answers a delete the way the rule
        decides, for a message held by a live claim, by an expired claim or
        by none, and each claim (or none) presented.
        """
        store = await self.store()
        now = T0 + 50
        for presenting in ("none", "live", "stale", "unknown"):
            queue = "q-" + presenting
            ids = await self.post(store, ['"l"', '"s"', '"u"'], queue=queue)
            live = await store.createClaim("p", queue, spec(limit=1, ttl=100), T0)
            stale = await store.createClaim("p", queue, spec(limit=1, ttl=10), T0)
            presented = {
                "none": None,
                "live": live.id,
                "stale": stale.id,
                "unknown": "f" * 32,
            }[presenting]
            listed = await store.listMessages(
                "p", queue, query(includeClaimed=True), now
            )
            for m in listed:
                try:
                    rules.checkDelete(m.id, m.claimId, m.claimExpires, presented, now)
                except Exception as e:
                    expected: Any = type(e)
                else:
                    expected = None
                got = await maybeDeferred(
                    store.deleteMessage, "p", queue, m.id, presented, now
                ).addCallbacks(lambda _: None, lambda f: f.type)
                self.assertEqual(got, expected, (m.body, presenting))
            left = await store.getMessages("p", queue, ids, now)
            survivors = {m.id for m in left}
            for m in listed:
                try:
                    rules.checkDelete(m.id, m.claimId, m.claimExpires, presented, now)
                except Exception:
                    self.assertIn(m.id, survivors)
                else:
                    self.assertNotIn(m.id, survivors)

    async def test_deadLetterEvents(self) -> None:
        """
        Every store provides L{IStoreEvents}: moving messages to a dead
        letter queue during a claim is reported as C{dead_lettered}, with
        how many moved.
        """
        store = await self.store()
        self.assertTrue(verifyObject(IStoreEvents, store))
        events: list = []
        store.observeEvents(lambda kind, count: events.append((kind, count)))
        await self.post(store, ['"a"', '"b"', '"c"'])
        policy = dict(maxClaimCount=1, deadLetterQueue="dlq")
        await store.createClaim("p", "q", spec(ttl=60, limit=2, **policy), T0)
        self.assertEqual(events, [])
        claim = await store.createClaim("p", "q", spec(**policy), T0 + 60)
        self.assertEqual(len(claim.messages), 1)
        self.assertEqual(sum(n for kind, n in events if kind == "dead_lettered"), 2)
        self.assertEqual({kind for kind, n in events}, {"dead_lettered"})

    # Purging a queue.

    async def test_purgeMessages(self) -> None:
        """
        Purging a queue removes all its messages, claimed or not, and its
        claims, and counts the messages; the queue keeps its metadata and
        later messages get new markers.  Other queues and projects keep
        theirs, and purging a missing queue removes nothing and creates
        nothing.
        """
        store = await self.store()
        await store.createQueue("p", "q", {"keep": True}, T0)
        await self.post(store, ['"a"', '"b"', '"c"'])
        await self.post(store, ['"d"'], delay=100)
        claim = await store.createClaim("p", "q", spec(limit=2), T0)
        before = await store.listMessages("p", "q", query(includeClaimed=True), T0)
        await self.post(store, ['"other queue"'], queue="q2")
        await self.post(store, ['"other project"'], project="p2")
        self.assertEqual(await store.purgeMessages("p", "q"), 4)
        everything = query(includeClaimed=True, includeDelayed=True)
        self.assertEqual(await store.listMessages("p", "q", everything, T0), [])
        with self.assertRaises(ClaimDoesNotExist):
            await store.getClaim("p", "q", claim.id, T0)
        self.assertEqual(await store.getQueueMetadata("p", "q"), {"keep": True})
        stats = await store.queueStats("p", "q", T0)
        self.assertEqual((stats.free, stats.claimed, stats.delayed), (0, 0, 0))
        [later] = await self.post(store, ['"e"'], now=T0 + 1)
        [after] = await store.listMessages("p", "q", query(), T0 + 1)
        self.assertEqual(after.id, later)
        self.assertGreater(after.marker, before[-1].marker)
        for project, queue, body in [
            ("p", "q2", '"other queue"'),
            ("p2", "q", '"other project"'),
        ]:
            left = await store.listMessages(project, queue, query(), T0)
            self.assertEqual([m.body for m in left], [body])
        self.assertEqual(await store.purgeMessages("p", "missing"), 0)
        with self.assertRaises(QueueDoesNotExist):
            await store.getQueueMetadata("p", "missing")
        self.assertEqual(await store.countQueues("p"), 2)
        # What was purged is not expired again: only the three left are.
        self.assertEqual(await store.purgeExpired(T0 + 10_000), 3)

    # Housekeeping.

    async def test_purgeExpired(self) -> None:
        """
        Purging removes expired messages of every project and counts them,
        leaving live ones.
        """
        store = await self.store()
        await self.post(store, ['"a"', '"b"'], ttl=60)
        await self.post(store, ['"c"'], ttl=60, project="p2")
        [live] = await self.post(store, ['"d"'], ttl=600)
        self.assertEqual(await store.purgeExpired(T0 + 60), 3)
        self.assertEqual(await store.purgeExpired(T0 + 60), 0)
        left = await store.listMessages("p", "q", query(), T0 + 60)
        self.assertEqual([m.id for m in left], [live])

    async def test_survivesRestart(self) -> None:
        """
        Messages, claims and queues survive a restart of the store, and
        markers keep growing after it.
        """
        reopen = getattr(self, "reopenStore", None)
        if reopen is None:
            self.skipTest("this store does not persist across restarts")
        store = await self.store()
        await store.createQueue("p", "q", {"m": 1}, T0)
        ids = await self.post(store, ['"a"', '"b"'])
        claim = await store.createClaim("p", "q", spec(limit=1), T0)
        before = await store.listMessages("p", "q", query(includeClaimed=True), T0)
        store = await maybeDeferred(reopen, store)
        self.assertEqual(await store.getQueueMetadata("p", "q"), {"m": 1})
        found = await store.getClaim("p", "q", claim.id, T0 + 1)
        self.assertEqual([m.id for m in found.messages], ids[:1])
        [later] = await self.post(store, ['"c"'], now=T0 + 2)
        after = await store.listMessages("p", "q", query(includeClaimed=True), T0 + 2)
        self.assertEqual([m.id for m in after], ids + [later])
        self.assertGreater(after[-1].marker, before[-1].marker)

    # Handing queues over between stores (marconi.cluster.rebalance).

    async def exported(self, store: Any, limit: int) -> list:
        """
        Every page of queue C{q} of C{p}, C{limit} messages each.
        """
        pages: list = []
        after = None
        while True:
            page = await store.exportQueue("p", "q", after, limit)
            self.assertIsNotNone(page)
            pages.append(page)
            after = page["next"]
            if after is None:
                return pages

    async def imported(self, store: Any, pages: list) -> None:
        for index, page in enumerate(pages):
            await store.importQueue("p", "q", page, index == 0)

    async def everything(self, store: Any, now: float) -> list:
        everyone = query(limit=100, includeClaimed=True, includeDelayed=True, echo=True)
        listed = await store.listMessages("p", "q", everyone, now)
        return [
            (m.id, m.marker, m.body, m.tags, m.claimId, m.claimExpires, m.visibleAt)
            for m in listed
        ]

    async def filled(self) -> tuple:
        """
        A store with queue C{q} of C{p}: metadata, 25 messages (tagged,
        delayed and claimed ones among them) and a claim.
        """
        store = await self.store()
        await store.createQueue("p", "q", {"_default_message_ttl": 300, "m": 1}, T0)
        await self.post(store, [f'"{i}"' for i in range(10)], tags=("a", "b"))
        await self.post(store, [f'"d{i}"' for i in range(5)], delay=60)
        await self.post(store, [f'"{i}"' for i in range(10, 20)])
        claim = await store.createClaim("p", "q", spec(limit=4, ttl=100), T0 + 1)
        return store, claim

    async def test_exportImport(self) -> None:
        """
        A queue exported in pages, dropped and imported again (as into the
        store of another node) is the same queue: every message with its
        id, marker, body, tags, claim and delay; the claim with its
        messages and expiry; the metadata.  Later posts get later markers.
        """
        store, claim = await self.filled()
        before = await self.everything(store, T0 + 2)
        pages = await self.exported(store, 7)
        self.assertEqual(len(pages), 4)
        self.assertEqual(len(pages[0]["claims"]), 1)
        self.assertEqual(pages[1]["claims"], [])
        await store.dropQueue("p", "q")
        self.assertIsNone(await store.exportQueue("p", "q", None, 10))
        self.assertEqual(await self.everything(store, T0 + 2), [])
        await self.imported(store, pages)
        self.assertEqual(await self.everything(store, T0 + 2), before)
        self.assertEqual(
            await store.getQueueMetadata("p", "q"),
            {"_default_message_ttl": 300, "m": 1},
        )
        held = await store.getClaim("p", "q", claim.id, T0 + 2)
        self.assertEqual([m.id for m in held.messages], [m.id for m in claim.messages])
        self.assertEqual((held.ttl, held.expires), (claim.ttl, claim.expires))
        claimed = await store.createClaim("p", "q", spec(limit=100), T0 + 2)
        self.assertEqual(len(claimed.messages), 25 - 5 - 4)
        [later] = await self.post(store, ['"later"'], now=T0 + 3)
        listed = await self.everything(store, T0 + 3)
        self.assertEqual(listed[-1][0], later)
        self.assertGreater(listed[-1][1], before[-1][1])

    async def test_importIdempotent(self) -> None:
        """
        Importing the pages again, or one page again, changes nothing; a
        first page replaces whatever the store held of the queue.
        """
        store, _ = await self.filled()
        before = await self.everything(store, T0 + 2)
        pages = await self.exported(store, 10)
        await store.dropQueue("p", "q")
        await self.post(store, ['"stale"'])
        await store.createClaim("p", "q", spec(limit=1), T0)
        await self.imported(store, pages)
        self.assertEqual(await self.everything(store, T0 + 2), before)
        await store.importQueue("p", "q", pages[1], False)
        self.assertEqual(await self.everything(store, T0 + 2), before)
        await self.imported(store, pages)
        self.assertEqual(await self.everything(store, T0 + 2), before)
        stats = await store.queueStats("p", "q", T0 + 2)
        self.assertEqual(stats.total, 25)

    async def test_dropAndHeld(self) -> None:
        """
        The store lists every queue it holds, of every project, in pages;
        a dropped queue is gone (exported as L{None}, not listed, no
        messages); dropping a missing queue succeeds.
        """
        store = await self.store()
        await store.createQueue("b", "x", {}, T0)
        await self.post(store, ['"1"'], project="a", queue="y")
        await self.post(store, ['"1"'], project="b", queue="a")
        first = await store.heldQueues(None, 2)
        self.assertEqual([tuple(k) for k in first], [("a", "y"), ("b", "a")])
        rest = await store.heldQueues(tuple(first[-1]), 10)
        self.assertEqual([tuple(k) for k in rest], [("b", "x")])
        self.assertIsNone(await store.exportQueue("a", "none", None, 10))
        await store.dropQueue("a", "y")
        await store.dropQueue("a", "none")
        self.assertIsNone(await store.exportQueue("a", "y", None, 10))
        self.assertEqual(await store.listMessages("a", "y", query(), T0), [])
        held = await store.heldQueues(None, 10)
        self.assertEqual([tuple(k) for k in held], [("b", "a"), ("b", "x")])
