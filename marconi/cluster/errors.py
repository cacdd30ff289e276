"""
Errors of the cluster, as domain errors the API turns into answers.
"""

from marconi.core.errors import StorageUnavailable

#: The kinds of L{NodeUnavailable}: what the failure says about the peer.
#: C{REFUSED}: nothing accepts connections at the peer's address (it is
#: down).  C{LOST}: the peer did not answer in time, or the connection was
#: lost before the answer (it may be down, or only slow or unlucky).
#: C{REQUEST}: this one request failed (an answer over the bound, a reply
#: that is not HTTP); it says nothing about the peer's health.  C{SHORT}:
#: this node was short of its own resources (file descriptors, memory) to
#: connect; it says nothing about the peer either.
REFUSED, LOST, REQUEST, SHORT = "refused", "lost", "request", "short"


class NodeUnavailable(StorageUnavailable):
    """
    The node that holds a queue is down or did not answer; the request may
    be retried when it is back.

    @ivar kind: one of L{REFUSED}, L{LOST} and L{REQUEST}, or L{None} when
        no request was sent (the node was already known to be down).
    """

    def __init__(
        self, node: str, why: str = "holds this queue and is down", kind=None
    ) -> None:
        super().__init__(f"Cluster node {node} {why}; retry when it is back.")
        self.node = node
        self.kind = kind


#: The header of a 503 that names the node holding a queue now, to which
#: the node that forwarded the request sends it once more.
HELD_BY = b"x-marconi-held-by"


class _Retry(StorageUnavailable):
    """
    A 503 that asks the client to try again in a second (C{headers} are
    set on the answer).
    """

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.headers = {b"retry-after": b"1"}


class QueueMoving(_Retry):
    """
    The queue is being copied to its new owner right now (a second or so).
    """

    def __init__(self, queue: str) -> None:
        super().__init__(
            f"Queue {queue} is moving to another node of the cluster; retry in a "
            "second."
        )


class RingMismatch(_Retry):
    """
    Another node routes by a ring that places the queue elsewhere: neither
    serves it until their rings agree.
    """

    def __init__(self, queue: str) -> None:
        super().__init__(
            f"The nodes of the cluster disagree on which node holds queue {queue} "
            "(their rings differ); retry in a second."
        )


class QueueElsewhere(_Retry):
    """
    A forwarded request reached a node that does not hold the queue; the
    answer names the node that does.
    """

    def __init__(self, queue: str, node: str) -> None:
        super().__init__(
            f"Queue {queue} is held by cluster node {node}; retry in a second."
        )
        self.headers[HELD_BY] = node.encode("ascii")
