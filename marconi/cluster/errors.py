"""
Errors of the cluster, as domain errors the API turns into answers.
"""

from marconi.core.errors import StorageUnavailable

#: The kinds of L{NodeUnavailable}: what the failure says about the peer.
#: C{REFUSED}: nothing accepts connections at the peer's address (it is
#: down).  C{LOST}: the peer did not answer in time, or the connection was
#: lost before the answer (it may be down, or only slow or unlucky).
#: C{REQUEST}: this one request failed (an answer over the bound, a reply
#: that is not HTTP); it says nothing about the peer's health.
REFUSED, LOST, REQUEST = "refused", "lost", "request"


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
