"""
Errors of the cluster, as domain errors the API turns into answers.
"""

from marconi.core.errors import StorageUnavailable


class NodeUnavailable(StorageUnavailable):
    """
    The node that holds a queue is down or did not answer; the request may
    be retried when it is back.
    """

    def __init__(self, node: str, why: str = "holds this queue and is down") -> None:
        super().__init__(f"Cluster node {node} {why}; retry when it is back.")
        self.node = node
