"""
What the console shows that the API has no number for: how many messages
each queue took in and gave out over the last minutes, the claims a queue's
owner handed out, and how many requests this node forwarded to its peers.

Everything is kept in memory, in fixed time buckets read from the injected
clock, and bounded: at most L{Activity.maxQueues} queues (the least recently
active ones are forgotten first), L{Activity.maxClaims} claims per queue and
L{Activity.buckets} buckets per series.  A restart forgets it all; the
numbers are for looking at, not for accounting.

It listens to the bus's events (L{Activity.observe}, see
L{marconi.core.events}) and is told of forwarding by a thin wrapper around
the node's router, L{ObservedRouter}.  Events are emitted where the
operation is served, so in a cluster a queue's numbers live on the node
that owns it.
"""

from collections import OrderedDict
from typing import Any, Iterable, Optional

from zope.interface import implementer

from marconi.core.events import Event
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

    def observe(self, event: Event) -> None:
        """
        Count an event of the bus (a listener of L{marconi.core.events}).
        """
        action = event.action
        project, queue = event.project, event.queue
        if queue is None:
            return
        if action == "posted":
            self.counted(project, queue, "posted", event.count)
        elif action == "claimed":
            self.counted(project, queue, "claimed", event.count)
            self.claimed(
                project, queue, event.fields["claim"], event.fields["ttl"], event.count
            )
        elif action == "renewed":
            self.renewed(project, queue, event.fields["claim"], event.fields["ttl"])
        elif action == "released":
            self.released(project, queue, event.fields["claim"])
        elif action in ("deleted", "popped"):
            self.counted(project, queue, "deleted", event.count)
            claimId = event.fields.get("claim")
            if claimId:
                self.deletedUnder(project, queue, claimId)
        elif action == "queue_deleted":
            self.forgetQueue(project, queue)

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
