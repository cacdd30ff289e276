"""
What the console shows that the API has no number for: how many messages
each queue took in and gave out over the last minutes, the claims a queue's
owner handed out, and how many requests this node forwarded to its peers.

Everything is kept in memory, in fixed time buckets read from the injected
clock, and bounded: at most L{Activity.maxQueues} queues (the least recently
active ones are forgotten first), L{Activity.maxClaims} claims per queue and
L{Activity.buckets} buckets per series.  A restart forgets it all; the
numbers are for looking at, not for accounting.

It is fed by two thin wrappers that the kernel puts around the API's
L{marconi.core.messaging.Messaging} and its router: L{ObservedBus} and
L{ObservedRouter}.  Counts are taken where the operation is served, so in a
cluster a queue's numbers live on the node that owns it.
"""

from collections import OrderedDict
from typing import Any, Iterable, Optional

from zope.interface import implementer

from marconi.core import validation
from marconi.core.interfaces import IRouter

#: The kinds of message counts kept per queue.
KINDS = ("posted", "claimed", "deleted")
#: The name under which requests forwarded to this node are counted.
RECEIVED = "received"


class _Series:
    """
    Counts by name in time buckets; buckets older than the window are
    dropped as new ones are written.
    """

    def __init__(self) -> None:
        self.counts: dict = {}

    def add(self, bucket: int, name: str, count: int, window: int) -> None:
        counts = self.counts.get(bucket)
        if counts is None:
            counts = self.counts[bucket] = {}
            for old in [b for b in self.counts if b <= bucket - window]:
                del self.counts[old]
        counts[name] = counts.get(name, 0) + count

    def read(self, bucket: int, names: Iterable[str], window: int) -> dict:
        """
        @return: for each name, the counts of the C{window} buckets up to
            and including C{bucket}, oldest first.
        """
        first = bucket - window + 1
        return {
            name: [
                self.counts.get(b, {}).get(name, 0) for b in range(first, bucket + 1)
            ]
            for name in names
        }


class _QueueActivity:
    def __init__(self) -> None:
        self.series = _Series()
        #: claim id -> [created, ttl], oldest first.
        self.claims: OrderedDict = OrderedDict()


class Activity:
    """
    The recent activity of a node's queues and of its forwarding.

    @param clock: an L{twisted.internet.interfaces.IReactorTime}.
    @param bucketSeconds: the width of one bucket.
    @param buckets: how many buckets a series keeps (the window is
        C{buckets * bucketSeconds} seconds).
    """

    def __init__(
        self,
        clock: Any,
        bucketSeconds: int = 10,
        buckets: int = 30,
        maxQueues: int = 10000,
        maxClaims: int = 100,
    ) -> None:
        self.clock = clock
        self.bucketSeconds = bucketSeconds
        self.buckets = buckets
        self.maxQueues = maxQueues
        self.maxClaims = maxClaims
        self._queues: OrderedDict = OrderedDict()
        self._forwarding = _Series()
        self._peers: set = set()

    def _bucket(self) -> int:
        return int(self.clock.seconds() // self.bucketSeconds)

    def _queue(self, project: str, queue: str) -> _QueueActivity:
        key = (project, queue)
        entry = self._queues.get(key)
        if entry is None:
            entry = self._queues[key] = _QueueActivity()
            while len(self._queues) > self.maxQueues:
                self._queues.popitem(last=False)
        else:
            self._queues.move_to_end(key)
        return entry

    # Feeding.

    def counted(self, project: str, queue: str, kind: str, count: int) -> None:
        """
        C{count} messages of C{project}'s C{queue} were C{kind} (one of
        L{KINDS}).
        """
        if count > 0:
            entry = self._queue(project, queue)
            entry.series.add(self._bucket(), kind, count, self.buckets)

    def claimed(
        self, project: str, queue: str, claimId: str, ttl: int, held: int = 1
    ) -> None:
        claims = self._queue(project, queue).claims
        claims[claimId] = [self.clock.seconds(), ttl, held]
        while len(claims) > self.maxClaims:
            claims.popitem(last=False)

    def renewed(self, project: str, queue: str, claimId: str, ttl: int) -> None:
        entry = self._queues.get((project, queue))
        if entry is not None and claimId in entry.claims:
            entry.claims[claimId][:2] = [self.clock.seconds(), ttl]
            entry.claims.move_to_end(claimId)

    def deletedUnder(self, project: str, queue: str, claimId: str) -> None:
        """
        A message was deleted under a claim; a claim that holds no more
        messages is no longer listed.
        """
        entry = self._queues.get((project, queue))
        if entry is not None and claimId in entry.claims:
            entry.claims[claimId][2] -= 1
            if entry.claims[claimId][2] <= 0:
                del entry.claims[claimId]

    def released(self, project: str, queue: str, claimId: str) -> None:
        entry = self._queues.get((project, queue))
        if entry is not None:
            entry.claims.pop(claimId, None)

    def forgetQueue(self, project: str, queue: str) -> None:
        self._queues.pop((project, queue), None)

    def forwarded(self, peer: str) -> None:
        """
        This node forwarded a request to C{peer}.
        """
        self._peers.add(peer)
        self._forwarding.add(self._bucket(), peer, 1, self.buckets)

    def received(self) -> None:
        """
        A peer forwarded a request to this node.
        """
        self._forwarding.add(self._bucket(), RECEIVED, 1, self.buckets)

    # Reading.

    def queue(self, project: str, queue: str) -> dict:
        """
        The activity of one queue of one project, as a JSON-able L{dict}:
        C{bucket_seconds}, C{series} (each of L{KINDS}: counts per bucket,
        oldest first, the last one still filling) and C{claims} (the live
        claims handed out here, newest first, each C{id}, C{age}, C{ttl}).
        """
        now = self.clock.seconds()
        entry = self._queues.get((project, queue))
        series = (entry.series if entry is not None else _Series()).read(
            self._bucket(), KINDS, self.buckets
        )
        claims = []
        if entry is not None:
            for claimId, (created, ttl, _) in reversed(entry.claims.items()):
                if created + ttl > now:
                    claims.append(
                        {"id": claimId, "age": int(now - created), "ttl": ttl}
                    )
        return {
            "bucket_seconds": self.bucketSeconds,
            "series": series,
            "claims": claims,
        }

    def forwarding(self) -> dict:
        """
        This node's forwarding: C{bucket_seconds}, C{forwarded} (counts per
        bucket for each peer requests were forwarded to) and C{received}.
        """
        series = self._forwarding.read(
            self._bucket(), sorted(self._peers) + [RECEIVED], self.buckets
        )
        received = series.pop(RECEIVED)
        return {
            "bucket_seconds": self.bucketSeconds,
            "forwarded": series,
            "received": received,
        }


class ObservedBus:
    """
    A L{marconi.core.messaging.Messaging} that tells an L{Activity} what it
    did; every other attribute is the wrapped bus's.
    """

    def __init__(self, bus: Any, activity: Activity) -> None:
        self._bus = bus
        self._activity = activity

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)

    async def postMessages(
        self, project: str, queue: str, *args: Any, **kwargs: Any
    ) -> Any:
        ids = await self._bus.postMessages(project, queue, *args, **kwargs)
        self._activity.counted(project, queue, "posted", len(ids))
        return ids

    async def createClaim(
        self, project: str, queue: str, *args: Any, **kwargs: Any
    ) -> Any:
        claim = await self._bus.createClaim(project, queue, *args, **kwargs)
        if claim is not None:
            self._activity.counted(project, queue, "claimed", len(claim.messages))
            self._activity.claimed(
                project, queue, claim.id, claim.ttl, len(claim.messages)
            )
        return claim

    async def renewClaim(
        self, project: str, queue: str, claimId: str, options: Any
    ) -> None:
        await self._bus.renewClaim(project, queue, claimId, options)
        ttl, _ = validation.claimOptions(options, self._bus.limits)
        self._activity.renewed(project, queue, claimId, ttl)

    async def releaseClaim(self, project: str, queue: str, claimId: str) -> None:
        await self._bus.releaseClaim(project, queue, claimId)
        self._activity.released(project, queue, claimId)

    async def deleteMessage(
        self, project: str, queue: str, *args: Any, **kwargs: Any
    ) -> None:
        await self._bus.deleteMessage(project, queue, *args, **kwargs)
        self._activity.counted(project, queue, "deleted", 1)
        claimId = args[1] if len(args) > 1 else kwargs.get("claimId")
        if claimId:
            self._activity.deletedUnder(project, queue, claimId)

    async def deleteMessages(
        self, project: str, queue: str, *args: Any, **kwargs: Any
    ) -> Any:
        count = await self._bus.deleteMessages(project, queue, *args, **kwargs)
        self._activity.counted(project, queue, "deleted", count or 0)
        return count

    async def popMessages(
        self, project: str, queue: str, *args: Any, **kwargs: Any
    ) -> Any:
        popped = await self._bus.popMessages(project, queue, *args, **kwargs)
        self._activity.counted(project, queue, "deleted", len(popped))
        return popped

    async def deleteQueue(self, project: str, queue: str) -> None:
        await self._bus.deleteQueue(project, queue)
        self._activity.forgetQueue(project, queue)


@implementer(IRouter)
class ObservedRouter:
    """
    A L{marconi.core.interfaces.IRouter} that tells an L{Activity} about
    the requests forwarded through it; every other attribute is the
    wrapped router's.
    """

    def __init__(self, router: Any, activity: Activity) -> None:
        self._router = router
        self._activity = activity

    def __getattr__(self, name: str) -> Any:
        return getattr(self._router, name)

    def verify(self, request: Any) -> Optional[str]:
        project = self._router.verify(request)
        if project is not None:
            self._activity.received()
        return project

    def forward(self, request: Any, project: str, owner: str) -> Any:
        self._activity.forwarded(owner)
        return self._router.forward(request, project, owner)
