"""
Operations that touch a second queue, in a cluster.

Which store a queue lives in, and operations that touch a second queue,
in a cluster.

A queue lives in the store of the node that owns it on the ring, whichever
node serves it: its owner, or a stand-in while the owner is down.
L{PlacedStore} sends every call about one queue to that store.

A queue's dead-letter queue is written by the claim that dead-letters a
message, in the same storage operation (atomic with the claim).  That is
only right when the queue and its dead-letter queue live in the same
store: otherwise the message would land in a store no request for the
dead-letter queue ever reaches.  L{OwnedStore} keeps it so:

 - queue settings naming a dead-letter queue kept in another store are
   refused with a 400 that says so, before anything is written;
 - a claim on a queue whose settings name such a queue all the same (set
   before the node joined a cluster, or before the ring changed) claims
   without dead-lettering: the message stays in its queue, claimable, and
   nothing is lost;
 - while a membership change moves the two queues to another store, the
   same holds for the time only one of them has been handed over; and
   while the dead-letter queue itself is being copied (frozen), the claim
   answers 503 with C{Retry-After} and moves nothing, as every request for
   that queue does (L{marconi.cluster.rebalance}).
"""

from dataclasses import replace
from typing import Any

from twisted.logger import Logger

from marconi.cluster.errors import NodeUnavailable
from marconi.core.errors import ValidationFailed

log = Logger()

#: The store calls about one queue: their first two arguments are the
#: project and the queue.
QUEUE_CALLS = frozenset(
    {
        "createQueue",
        "getQueueMetadata",
        "setQueueMetadata",
        "deleteQueue",
        "queueStats",
        "postMessages",
        "listMessages",
        "getMessages",
        "deleteMessage",
        "deleteMessages",
        "popMessages",
        "purgeMessages",
        "createClaim",
        "getClaim",
        "renewClaim",
        "releaseClaim",
    }
)


class PlacedStore:
    """
    An L{marconi.core.interfaces.IMessageStore} that sends each call about
    one queue to the store of the queue's owner on the ring (see
    L{marconi.cluster.stores.ClusterStores}), and every other call
    (listings, counts, pings) to this node's home store.

    C{durabilities()} names no queue, so it is answered by the home store:
    a request's C{safety} level is checked against what the home store
    gives, not the store of the queue it writes.  With stores of one kind
    (every node on Redis, or every node on MongoDB) the two agree; with
    stores of different kinds they may not (a known limit: the check
    would need the queue, L{marconi.core.durability.requestedSafety}).

    @param stores: the L{marconi.cluster.stores.ClusterStores}.
    @param holder: C{holder(project, queue)} names the node whose store
        holds the queue (L{marconi.cluster.router.ClusterRouter.holder}:
        its owner on the ring, or the node handing it over), and raises
        a 503 while the queue is being copied.  It is asked on every call,
        so a store call issued after a queue was frozen for its copy never
        reaches the old copy.
    """

    def __init__(self, stores: Any, holder: Any) -> None:
        self._stores = stores
        self._holder = holder

    def storeFor(self, project: str, queue: str) -> Any:
        """
        The store C{queue} of C{project} lives in.

        @raise NodeUnavailable: this node cannot open it (the router sends
            no such request here, unless the ring changed under it).
        """
        owner = self._holder(project, queue)
        store = self._stores.storeOf(owner)
        if store is None:
            raise NodeUnavailable(owner, "holds this queue in a store only it opens")
        return store

    def __getattr__(self, name: str) -> Any:
        if name not in QUEUE_CALLS:
            return getattr(self._stores.home, name)

        def call(project: str, queue: str, *args: Any, **kwargs: Any) -> Any:
            store = self.storeFor(project, queue)
            return getattr(store, name)(project, queue, *args, **kwargs)

        return call


class OwnedStore:
    """
    An L{marconi.core.interfaces.IMessageStore} that passes every call on
    to C{store}, except that dead-letter queues stay in the store of their
    queue (see the module's description).

    @param together: C{together(project, queue, other)} is whether the two
        queues of C{project} live in the same store.
    """

    def __init__(self, store: Any, together: Any) -> None:
        self._store = store
        self._together = together

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _check(self, project: str, name: str, metadata: Any) -> None:
        queue = metadata.get("_dead_letter_queue")
        if queue is not None and not self._together(project, name, queue):
            raise ValidationFailed(
                f"The dead letter queue {queue!r} is held by another node of "
                "the cluster than this queue; in a cluster a queue's dead "
                "letter queue must be held by the same node.  Choose another "
                "name."
            )

    def createQueue(self, project: str, name: str, metadata: Any, now: Any) -> Any:
        self._check(project, name, metadata)
        return self._store.createQueue(project, name, metadata, now)

    def setQueueMetadata(self, project: str, name: str, metadata: Any) -> Any:
        self._check(project, name, metadata)
        return self._store.setQueueMetadata(project, name, metadata)

    def createClaim(
        self, project: str, queue: str, spec: Any, now: Any, **kwargs: Any
    ) -> Any:
        target = spec.deadLetterQueue
        if target is not None and not self._heldTogether(project, queue, target):
            log.warn(
                "Queue {queue} of {project} names dead letter queue {target}, "
                "held by another node: claiming without dead-lettering",
                queue=queue,
                project=project,
                target=target,
            )
            spec = replace(spec, deadLetterQueue=None)
        return self._store.createClaim(project, queue, spec, now, **kwargs)

    def _heldTogether(self, project: str, queue: str, target: str) -> bool:
        """
        Whether C{target} is in the store that holds C{queue} right now:
        the ring places them together, and no move has put them apart
        yet (one handed over, the other not).

        @raise QueueMoving: C{target} is being copied to its new owner; a
            message written into this copy now could be left behind.
        """
        if not self._together(project, queue, target):
            return False
        place = getattr(self._store, "storeFor", None)
        if place is None:
            return True
        here = place(project, queue)
        try:
            return place(project, target) is here
        except NodeUnavailable:
            return False
