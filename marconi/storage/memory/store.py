"""
A store in the memory of the process: fast, and lost when the process ends.

It follows the SQLite store's semantics exactly (the storage contract runs
unchanged against both) and serves throwaway nodes (C{--storage memory:}) and
fast tests.  Every method does its work at once on the calling thread and
returns an already-fired L{Deferred}: there are no threads and no I/O, so
each call is atomic and a claim can never take a message that another live
claim holds.

The data structures:

  - one L{_Queue} per C{(project, name)}: its messages in a L{dict} keyed by
    marker, which is also marker order because markers come from the
    queue's own counter and a message is always added with the largest
    marker yet; a L{list} of markers to find where a listing starts with
    L{bisect} (deleted markers are skipped and compacted away); an index by
    message id; the live claims; and, for each claim id, the markers of the
    messages that name it;
  - per project, the sorted list of its queue names;
  - two heaps of expiry times, for messages and for claims, so that
    L{MemoryStore.purgeExpired} looks only at what has expired.  A heap
    entry is dropped, not updated, when its message or claim changes: an
    entry whose time no longer matches is skipped when it comes up, and
    the heap is rebuilt when it holds too many such entries.

Queue metadata is kept as JSON text, as the SQLite store keeps it, so a
caller never shares a mutable L{dict} with the store and gets back what
JSON can carry.
"""

import heapq
import json
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Optional, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from marconi.core import models, rules
from marconi.core.audit import RIVER, recordEvents
from marconi.core.durability import DURABLE, LOCAL_LEVELS, parseDurability
from marconi.core.errors import (
    ClaimDoesNotExist,
    QueueDoesNotExist,
    StorageUnavailable,
)
from marconi.core.interfaces import IMessageStore, IQueueDepths
from marconi.core.models import Claim, ClaimSpec, Message, newId
from marconi.storage import transfer
from marconi.storage.events import StoreEvents
from marconi.storage.memory.uri import checkURI

Key = tuple[str, str]

# Rebuild a heap when it holds more than this many entries per live item
# (plus a constant, so small stores never bother).
_HEAP_SLACK = 2
_HEAP_MINIMUM = 1024


def makeStore(uri: str, reactor: Any, durability: str = DURABLE) -> "MemoryStore":
    """
    The store for C{uri}.  Every level of C{durability} means the same
    here: a change is in the process's memory, and goes with it.
    """
    parseDurability(durability)
    checkURI(uri)
    return MemoryStore()


@dataclass(slots=True)
class _Claim:
    ttl: int
    grace: int
    updated: float
    expires: float


@dataclass(slots=True)
class _Queue:
    """
    One queue's state.

    @ivar holders: for each claim id, the markers (as the keys of an
        insertion-ordered L{dict}, in marker order) of the messages whose
        C{claimId} is that id, whether or not the claim is still live.
    @ivar free: the markers of the messages no claim ever held that were
        added with the largest marker yet, in marker order.
    @ivar returned: the sorted markers of the other messages no claim
        holds (released, their claim ended, or imported out of order).
        Claims read C{free} and C{returned} merged, so they never pass a
        message a claim holds.
    @ivar freeRemoved: the markers removed from C{free} since it was
        last copied (a L{dict} keeps a hole for each until then).
    @ivar ends: a heap of (end, claim id) for each claim made, renewed or
        imported; a claim unclaims the messages of the claims that ended
        (L{MemoryStore._endClaims}), as the SQLite store does.
    """

    metadata: str
    created: float
    messages: dict[int, Message] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    byId: dict[str, int] = field(default_factory=dict)
    claims: dict[str, _Claim] = field(default_factory=dict)
    holders: dict[str, dict[int, None]] = field(default_factory=dict)
    free: dict[int, None] = field(default_factory=dict)
    returned: list[int] = field(default_factory=list)
    freeRemoved: int = 0
    ends: list[tuple[float, str]] = field(default_factory=list)

    def after(self, marker: Optional[int]) -> Iterator[Message]:
        """
        The messages with a marker greater than C{marker}, in marker order.
        """
        if marker is None:
            yield from self.messages.values()
            return
        messages = self.messages
        for index in range(bisect_right(self.order, marker), len(self.order)):
            message = messages.get(self.order[index])
            if message is not None:
                yield message


@implementer(IMessageStore, IQueueDepths)
class MemoryStore(StoreEvents, Service):
    """
    An L{IMessageStore} in memory.

    It answers only while the service runs, as the SQLite store does; its
    data stays across a stop and start of the service, and goes with the
    process.
    """

    def __init__(self) -> None:
        self._queues: dict[Key, _Queue] = {}
        self._names: dict[str, list[str]] = {}
        # Each queue's last marker; kept when the queue is deleted, so a
        # queue never hands out the same marker twice.
        self._lastMarkers: dict[Key, int] = {}
        self._messageCount = 0
        self._claimCount = 0
        self._messageExpiry: list[tuple[float, int, Key]] = []
        self._claimExpiry: list[tuple[float, Key, str]] = []

    # Answering.

    def durabilities(self) -> tuple:
        # fast and durable alike: in this process's memory, and no further.
        return LOCAL_LEVELS

    def _answer(self, work: Callable[..., Any], *args: Any) -> Deferred:
        """
        Run C{work(*args)} now.

        @return: a fired L{Deferred}: with its result, or with its failure.
        """
        if not self.running:
            return fail(StorageUnavailable("The memory store is not running."))
        try:
            return succeed(work(*args))
        except Exception:
            return fail()

    # Keeping the structures.

    def _queue(self, project: str, name: str, now: float) -> _Queue:
        """
        The queue, created with no metadata if it does not exist.
        """
        key = (project, name)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(metadata="{}", created=now)
            insort(self._names.setdefault(project, []), name)
        return queue

    def _nextMarker(self, key: Key) -> int:
        marker = self._lastMarkers[key] = self._lastMarkers.get(key, 0) + 1
        return marker

    def _add(self, key: Key, queue: _Queue, message: Message) -> None:
        """
        Add a message, which must have the largest marker yet.
        """
        last = queue.order[-1] if queue.order else None
        queue.messages[message.marker] = message
        queue.order.append(message.marker)
        queue.byId[message.id] = message.marker
        if message.claimId is not None:
            queue.holders.setdefault(message.claimId, {})[message.marker] = None
            if message.claimExpires is not None:
                self._noteEnd(queue, message.claimExpires, message.claimId)
        elif last is None or message.marker > last:
            queue.free[message.marker] = None
        else:
            insort(queue.returned, message.marker)
        self._messageCount += 1
        self._expireMessageAt(key, message)

    def _remove(self, queue: _Queue, message: Message) -> None:
        del queue.messages[message.marker]
        del queue.byId[message.id]
        self._unhold(queue, message)
        if message.claimId is None:
            self._unfree(queue, message.marker)
        self._messageCount -= 1
        if len(queue.order) > 2 * len(queue.messages) + 32:
            queue.order = list(queue.messages)

    def _update(self, key: Key, queue: _Queue, old: Message, new: Message) -> None:
        """
        Replace a message by a changed copy with the same marker.
        """
        if new.claimId != old.claimId:
            self._unhold(queue, old)
            if new.claimId is not None:
                queue.holders.setdefault(new.claimId, {})[new.marker] = None
            if old.claimId is None:
                self._unfree(queue, old.marker)
            elif new.claimId is None:
                insort(queue.returned, new.marker)
        queue.messages[new.marker] = new
        if new.expires != old.expires:
            self._expireMessageAt(key, new)

    def _unhold(self, queue: _Queue, message: Message) -> None:
        if message.claimId is None:
            return
        held = queue.holders.get(message.claimId)
        if held is not None:
            held.pop(message.marker, None)
            if not held:
                del queue.holders[message.claimId]

    def _unfree(self, queue: _Queue, marker: int) -> None:
        """
        Take the marker of a message no claim holds out of C{free} or
        C{returned}.
        """
        if queue.free.pop(marker, False) is None:
            queue.freeRemoved += 1
            if queue.freeRemoved > len(queue.free) + 64:
                queue.free = dict(queue.free)
                queue.freeRemoved = 0
            return
        index = bisect_left(queue.returned, marker)
        if index < len(queue.returned) and queue.returned[index] == marker:
            del queue.returned[index]

    def _noteEnd(self, queue: _Queue, end: float, claimId: str) -> None:
        """
        Note that claim C{claimId} ends at C{end}; the heap is rebuilt from
        the claimed messages when renewals left too many stale entries.
        """
        ends = queue.ends
        heapq.heappush(ends, (end, claimId))
        if len(ends) > _HEAP_SLACK * len(queue.holders) + _HEAP_MINIMUM:
            ends[:] = [
                (min(m.claimExpires or 0.0 for m in self._held(queue, i)), i)
                for i in queue.holders
            ]
            heapq.heapify(ends)

    def _endClaims(self, key: Key, queue: _Queue, now: float) -> None:
        """
        Unclaim the messages whose claim ended by C{now} (nothing reads an
        ended claim's id), so that claims find them with the free ones.
        """
        ends = queue.ends
        while ends and ends[0][0] <= now:
            _, claimId = heapq.heappop(ends)
            for message in self._held(queue, claimId):
                if message.claimExpires is not None and message.claimExpires <= now:
                    self._update(key, queue, message, rules.unclaimed(message))

    def _held(self, queue: _Queue, claimId: str) -> list[Message]:
        """
        The messages whose C{claimId} is C{claimId}, in marker order.
        """
        markers = queue.holders.get(claimId, ())
        return [queue.messages[marker] for marker in markers]

    def _expireMessageAt(self, key: Key, message: Message) -> None:
        heap = self._messageExpiry
        heapq.heappush(heap, (message.expires, message.marker, key))
        if len(heap) > _HEAP_SLACK * self._messageCount + _HEAP_MINIMUM:
            heap[:] = [
                (m.expires, m.marker, k)
                for k, q in self._queues.items()
                for m in q.messages.values()
            ]
            heapq.heapify(heap)

    def _expireClaimAt(self, key: Key, claimId: str, claim: _Claim) -> None:
        heap = self._claimExpiry
        heapq.heappush(heap, (claim.expires, key, claimId))
        if len(heap) > _HEAP_SLACK * self._claimCount + _HEAP_MINIMUM:
            heap[:] = [
                (c.expires, k, i)
                for k, q in self._queues.items()
                for i, c in q.claims.items()
            ]
            heapq.heapify(heap)

    def _candidates(
        self,
        key: Key,
        queue: Optional[_Queue],
        limit: int,
        tags: Sequence[str],
        now: float,
    ) -> list[Message]:
        """
        The oldest claimable messages carrying every tag, up to C{limit},
        once the messages of ended claims are unclaimed: read from the
        messages no claim holds, never past those a live claim holds.
        """
        found: list[Message] = []
        if queue is None or limit <= 0:
            return found
        self._endClaims(key, queue, now)
        markers: Any = queue.free
        if queue.returned:
            markers = heapq.merge(queue.free, queue.returned)
        messages = queue.messages
        for marker in markers:
            message = messages[marker]
            if rules.isClaimable(message, now) and rules.hasTags(message, tags):
                found.append(message)
                if len(found) == limit:
                    break
        return found

    # IMessageStore.

    def ping(self) -> Deferred:
        return self._answer(lambda: True)

    def createQueue(
        self, project: str, name: str, metadata: dict, now: float
    ) -> Deferred:
        def work() -> bool:
            if (project, name) in self._queues:
                return False
            text = json.dumps(metadata)
            self._queue(project, name, now).metadata = text
            return True

        return self._answer(work)

    def getQueueMetadata(self, project: str, name: str) -> Deferred:
        def work() -> dict:
            queue = self._queues.get((project, name))
            if queue is None:
                raise QueueDoesNotExist(name)
            return json.loads(queue.metadata)

        return self._answer(work)

    def setQueueMetadata(self, project: str, name: str, metadata: dict) -> Deferred:
        def work() -> None:
            queue = self._queues.get((project, name))
            if queue is None:
                raise QueueDoesNotExist(name)
            queue.metadata = json.dumps(metadata)

        return self._answer(work)

    def deleteQueue(self, project: str, name: str) -> Deferred:
        return self._answer(self._dropQueue, project, name)

    def listQueues(
        self, project: str, marker: Optional[str], limit: int, detailed: bool
    ) -> Deferred:
        def work() -> list:
            names = self._names.get(project, [])
            start = bisect_right(names, marker or "")
            page = names[start : start + max(limit, 0)]
            return [
                models.QueueInfo(
                    name,
                    json.loads(self._queues[(project, name)].metadata)
                    if detailed
                    else None,
                )
                for name in page
            ]

        return self._answer(work)

    def countQueues(self, project: str) -> Deferred:
        return self._answer(lambda: len(self._names.get(project, ())))

    def purgeMessages(self, project: str, name: str) -> Deferred:
        def work() -> int:
            queue = self._queues.get((project, name))
            if queue is None:
                return 0
            removed = len(queue.messages)
            self._messageCount -= removed
            self._claimCount -= len(queue.claims)
            # The expiry heaps keep entries for what is gone: purgeExpired
            # skips those.
            queue.messages.clear()
            queue.order.clear()
            queue.byId.clear()
            queue.claims.clear()
            queue.holders.clear()
            queue.free.clear()
            queue.returned.clear()
            queue.freeRemoved = 0
            queue.ends.clear()
            return removed

        return self._answer(work)

    def queueStats(self, project: str, name: str, now: float) -> Deferred:
        def work() -> models.QueueStats:
            queue = self._queues.get((project, name))
            free = claimed = delayed = 0
            oldest = newest = None
            for message in queue.messages.values() if queue else ():
                if message.expires <= now:
                    continue
                if oldest is None:
                    oldest = message
                newest = message
                if message.claimedAt(now):
                    claimed += 1
                elif message.visibleAt > now:
                    delayed += 1
                else:
                    free += 1
            return models.QueueStats(
                free=free,
                claimed=claimed,
                delayed=delayed,
                oldest=oldest,
                newest=newest,
            )

        return self._answer(work)

    def postMessages(
        self,
        project: str,
        queue: str,
        messages: Sequence[models.NewMessage],
        clientId: str,
        now: float,
        *,
        durability: Optional[str] = None,
    ) -> Deferred:
        def work() -> list:
            key = (project, queue)
            target = self._queue(project, queue, now)
            ids = []
            for new in messages:
                message = Message(
                    id=newId(),
                    marker=self._nextMarker(key),
                    body=new.body,
                    ttl=new.ttl,
                    created=now,
                    expires=now + new.ttl,
                    visibleAt=now + new.delay,
                    clientId=clientId,
                    tags=tuple(new.tags),
                    checksum=new.checksum,
                )
                self._add(key, target, message)
                ids.append(message.id)
            return ids

        return self._answer(work)

    def listMessages(
        self, project: str, queue: str, query: models.MessageQuery, now: float
    ) -> Deferred:
        def keep(message: Message) -> bool:
            return (
                message.expires > now
                and (query.echo or message.clientId != query.clientId)
                and (query.includeClaimed or not message.claimedAt(now))
                and (query.includeDelayed or message.visibleAt <= now)
                and rules.hasTags(message, query.tags)
            )

        def work() -> list:
            found: list[Message] = []
            target = self._queues.get((project, queue))
            if target is None or query.limit <= 0:
                return found
            for message in target.after(query.marker):
                if keep(message):
                    found.append(message)
                    if len(found) == query.limit:
                        break
            return found

        return self._answer(work)

    def getMessages(
        self, project: str, queue: str, ids: Sequence[str], now: float
    ) -> Deferred:
        def work() -> list:
            target = self._queues.get((project, queue))
            if target is None:
                return []
            found = []
            for messageId in dict.fromkeys(ids):
                marker = target.byId.get(messageId)
                if marker is not None and target.messages[marker].expires > now:
                    found.append(target.messages[marker])
            found.sort(key=lambda m: m.marker)
            return found

        return self._answer(work)

    def deleteMessage(
        self,
        project: str,
        queue: str,
        messageId: str,
        claimId: Optional[str],
        now: float,
        *,
        durability: Optional[str] = None,
    ) -> Deferred:
        def work() -> None:
            target = self._queues.get((project, queue))
            marker = target.byId.get(messageId) if target else None
            if target is None or marker is None:
                return
            message = target.messages[marker]
            if message.expires <= now:
                return
            rules.checkDelete(
                messageId, message.claimId, message.claimExpires, claimId, now
            )
            self._remove(target, message)

        return self._answer(work)

    def deleteMessages(
        self,
        project: str,
        queue: str,
        ids: Sequence[str],
        claimIds: Optional[Sequence[str]],
        now: float,
        *,
        durability: Optional[str] = None,
    ) -> Deferred:
        presented = None if claimIds is None else set(claimIds)

        def work() -> int:
            target = self._queues.get((project, queue))
            if target is None:
                return 0
            count = 0
            for messageId in dict.fromkeys(ids):
                marker = target.byId.get(messageId)
                if marker is None:
                    continue
                message = target.messages[marker]
                if rules.deletableWith(
                    message.claimId, message.claimExpires, presented, now
                ):
                    self._remove(target, message)
                    count += 1
            return count

        return self._answer(work)

    def popMessages(
        self,
        project: str,
        queue: str,
        limit: int,
        tags: Sequence[str],
        now: float,
        *,
        durability: Optional[str] = None,
    ) -> Deferred:
        def work() -> list:
            target = self._queues.get((project, queue))
            messages = self._candidates((project, queue), target, limit, tags, now)
            for message in messages:
                assert target is not None
                self._remove(target, message)
            return messages

        return self._answer(work)

    def createClaim(
        self,
        project: str,
        queue: str,
        spec: ClaimSpec,
        now: float,
        *,
        durability: Optional[str] = None,
    ) -> Deferred:
        def work() -> Optional[Claim]:
            key = (project, queue)
            target = self._queues.get(key)
            claimable = []
            moved = 0
            for message in self._candidates(key, target, spec.limit, spec.tags, now):
                if rules.goesToDeadLetter(message.claimCount, spec):
                    assert target is not None
                    self._deadLetter(project, target, message, spec, now)
                    moved += 1
                else:
                    claimable.append(message)
            self._report("dead_lettered", moved, project, queue)
            if not claimable:
                return None
            assert target is not None
            claimId = newId()
            claimExpires = now + spec.ttl
            claim = _Claim(spec.ttl, spec.grace, now, claimExpires)
            target.claims[claimId] = claim
            self._claimCount += 1
            self._expireClaimAt(key, claimId, claim)
            self._noteEnd(target, claimExpires, claimId)
            held = []
            for message in claimable:
                taken = rules.claimed(message, claimId, claimExpires, spec.grace)
                self._update(key, target, message, taken)
                held.append(taken)
            return Claim(
                id=claimId,
                ttl=spec.ttl,
                grace=spec.grace,
                updated=now,
                expires=claimExpires,
                messages=held,
            )

        return self._answer(work)

    def _deadLetter(
        self,
        project: str,
        source: _Queue,
        message: Message,
        spec: ClaimSpec,
        now: float,
    ) -> None:
        """
        Move a message from C{source} to the dead letter queue, at its end,
        unclaimed, keeping its id and claim count.
        """
        assert spec.deadLetterQueue is not None
        self._remove(source, message)
        ttl = rules.deadLetterTTL(message.ttl, spec)
        key = (project, spec.deadLetterQueue)
        target = self._queue(project, spec.deadLetterQueue, now)
        self._add(
            key,
            target,
            replace(
                rules.unclaimed(message),
                marker=self._nextMarker(key),
                ttl=ttl,
                expires=now + ttl,
                visibleAt=now,
            ),
        )

    def getClaim(self, project: str, queue: str, claimId: str, now: float) -> Deferred:
        def work() -> Claim:
            target = self._queues.get((project, queue))
            claim = target.claims.get(claimId) if target else None
            if target is None or claim is None or claim.expires <= now:
                raise ClaimDoesNotExist(claimId)
            messages = [
                m
                for m in self._held(target, claimId)
                if m.claimExpires is not None
                and m.claimExpires > now
                and m.expires > now
            ]
            return Claim(
                id=claimId,
                ttl=claim.ttl,
                grace=claim.grace,
                updated=claim.updated,
                expires=claim.expires,
                messages=messages,
            )

        return self._answer(work)

    def renewClaim(
        self,
        project: str,
        queue: str,
        claimId: str,
        ttl: int,
        grace: int,
        now: float,
    ) -> Deferred:
        def work() -> None:
            key = (project, queue)
            target = self._queues.get(key)
            claim = target.claims.get(claimId) if target else None
            if target is None or claim is None or claim.expires <= now:
                raise ClaimDoesNotExist(claimId)
            expires = now + ttl
            claim.ttl, claim.grace, claim.updated = ttl, grace, now
            claim.expires = expires
            self._expireClaimAt(key, claimId, claim)
            self._noteEnd(target, expires, claimId)
            for message in self._held(target, claimId):
                if message.expires > now:
                    self._update(
                        key,
                        target,
                        message,
                        replace(
                            message,
                            claimExpires=expires,
                            expires=max(message.expires, expires + grace),
                        ),
                    )

        return self._answer(work)

    def releaseClaim(
        self, project: str, queue: str, claimId: str, now: float
    ) -> Deferred:
        def work() -> None:
            key = (project, queue)
            target = self._queues.get(key)
            if target is None:
                return
            if target.claims.pop(claimId, None) is not None:
                self._claimCount -= 1
            for message in self._held(target, claimId):
                self._update(
                    key,
                    target,
                    message,
                    rules.unclaimed(message),
                )

        return self._answer(work)

    # IQueueDepths.

    def sampleDepths(self, now: float, limit: int) -> Deferred:
        def work() -> list:
            depths = []
            for (project, name), queue in self._queues.items():
                live = claimed = 0
                for message in queue.messages.values():
                    if message.expires > now:
                        live += 1
                        claimed += message.claimedAt(now)
                if live:
                    depths.append(models.QueueDepth(project, name, live, claimed))
            depths.sort(key=lambda d: (-d.messages, d.project, d.queue))
            return depths[: max(limit, 0)]

        return self._answer(work)

    # Housekeeping.

    def purgeExpired(self, now: float) -> Deferred:
        def work() -> int:
            removed = 0
            expired: dict[Key, int] = {}
            heap = self._messageExpiry
            while heap and heap[0][0] <= now:
                expires, marker, key = heapq.heappop(heap)
                queue = self._queues.get(key)
                message = queue.messages.get(marker) if queue else None
                if queue is None or message is None or message.expires != expires:
                    continue
                self._remove(queue, message)
                # A river record counts as the events it holds.
                weight = 1 if key[1] != RIVER else recordEvents(message.body)
                removed += weight
                expired[key] = expired.get(key, 0) + weight
            claims = self._claimExpiry
            while claims and claims[0][0] <= now:
                expires, key, claimId = heapq.heappop(claims)
                queue = self._queues.get(key)
                claim = queue.claims.get(claimId) if queue else None
                if queue is None or claim is None or claim.expires != expires:
                    continue
                del queue.claims[claimId]
                self._claimCount -= 1
            for (project, name), count in expired.items():
                self._reportQueue("expired", project, name, count)
            return removed

        return self._answer(work)

    # Handing queues over (marconi.cluster.rebalance).

    def heldQueues(self, after: Optional[tuple], limit: int) -> Deferred:
        def work() -> list:
            keys = sorted(self._queues)
            start = 0 if after is None else bisect_right(keys, tuple(after))
            return keys[start : start + max(limit, 0)]

        return self._answer(work)

    def exportQueue(
        self, project: str, name: str, after: Optional[int], limit: int
    ) -> Deferred:
        def work() -> Optional[dict]:
            key = (project, name)
            queue = self._queues.get(key)
            if queue is None:
                return None
            messages: list = []
            for message in queue.after(after):
                if len(messages) > limit:
                    break
                messages.append(transfer.messageDoc(message))
            claims = []
            if after is None:
                claims = [
                    transfer.claimDoc(i, c.ttl, c.grace, c.updated, c.expires)
                    for i, c in queue.claims.items()
                ]
            metadata = json.loads(queue.metadata)
            last = self._lastMarkers.get(key, 0)
            return transfer.page(metadata, queue.created, last, claims, messages, limit)

        return self._answer(work)

    def importQueue(self, project: str, name: str, page: dict, first: bool) -> Deferred:
        def work() -> None:
            key = (project, name)
            if first:
                self._dropQueue(project, name)
                queue = self._queue(project, name, page["created"] or 0.0)
                queue.metadata = json.dumps(page["metadata"] or {})
                for doc in page["claims"]:
                    claim = _Claim(
                        doc["ttl"], doc["grace"], doc["updated"], doc["expires"]
                    )
                    queue.claims[doc["id"]] = claim
                    self._claimCount += 1
                    self._expireClaimAt(key, doc["id"], claim)
                last = max(self._lastMarkers.get(key, 0), int(page["last"]))
                self._lastMarkers[key] = last
            queue = self._queue(project, name, page["created"] or 0.0)
            for doc in page["messages"]:
                message = transfer.messageOf(doc)
                old = queue.messages.get(message.marker)
                if old is not None:
                    self._update(key, queue, old, message)
                elif not queue.order or message.marker > queue.order[-1]:
                    self._add(key, queue, message)
                else:
                    self._add(key, queue, message)
                    queue.messages = dict(sorted(queue.messages.items()))
                    queue.order = list(queue.messages)

        return self._answer(work)

    def dropQueue(self, project: str, name: str) -> Deferred:
        return self.deleteQueue(project, name)

    def _dropQueue(self, project: str, name: str) -> None:
        queue = self._queues.pop((project, name), None)
        if queue is None:
            return
        self._messageCount -= len(queue.messages)
        self._claimCount -= len(queue.claims)
        names = self._names[project]
        names.remove(name)
        if not names:
            del self._names[project]
