"""
Operations that touch a second queue, in a cluster.

A queue's dead-letter queue is written by the claim that dead-letters a
message, in the same storage operation (atomic with the claim).  That is
only right when the node that owns the queue owns its dead-letter queue
too: otherwise the message would land in a store no request for the
dead-letter queue ever reaches.  L{OwnedStore} keeps it so:

 - queue settings naming a dead-letter queue another node owns are refused
   with a 400 that says so, before anything is written;
 - a claim on a queue whose settings name such a queue all the same (set
   before the node joined a cluster, or before the ring changed) claims
   without dead-lettering: the message stays in its queue, claimable, and
   nothing is lost.
"""

from dataclasses import replace
from typing import Any

from twisted.logger import Logger

from marconi.core.errors import ValidationFailed

log = Logger()


class OwnedStore:
    """
    An L{marconi.core.interfaces.IMessageStore} that passes every call on
    to C{store}, except that dead-letter queues stay on the node that owns
    the queue (see the module's description).

    @param owns: C{owns(project, queue)} is whether this node owns the
        queue.
    """

    def __init__(self, store: Any, owns: Any) -> None:
        self._store = store
        self._owns = owns

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _check(self, project: str, metadata: Any) -> None:
        queue = metadata.get("_dead_letter_queue")
        if queue is not None and not self._owns(project, queue):
            raise ValidationFailed(
                f"The dead letter queue {queue!r} is held by another node of "
                "the cluster than this queue; in a cluster a queue's dead "
                "letter queue must be held by the same node.  Choose another "
                "name."
            )

    def createQueue(self, project: str, name: str, metadata: Any, now: Any) -> Any:
        self._check(project, metadata)
        return self._store.createQueue(project, name, metadata, now)

    def setQueueMetadata(self, project: str, name: str, metadata: Any) -> Any:
        self._check(project, metadata)
        return self._store.setQueueMetadata(project, name, metadata)

    def createClaim(self, project: str, queue: str, spec: Any, now: Any) -> Any:
        target = spec.deadLetterQueue
        if target is not None and not self._owns(project, target):
            log.warn(
                "Queue {queue} of {project} names dead letter queue {target}, "
                "held by another node: claiming without dead-lettering",
                queue=queue,
                project=project,
                target=target,
            )
            spec = replace(spec, deadLetterQueue=None)
        return self._store.createClaim(project, queue, spec, now)
