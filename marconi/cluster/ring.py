"""
The consistent-hash ring: which node owns the queue C{project/queue}.

Built on uhashring's L{HashRing} (MD5 points, C{vnodes} virtual nodes per
node), which gives both what routing needs (the owner of a key) and what
replication will need (the ordered distinct nodes that follow a key on the
ring, L{Ring.successors}).  The nodes are added in name order and the
points only depend on node names, so every node given the same list builds
the same ring whatever order the list was written in.
"""

from typing import Iterable

from uhashring import HashRing

_SPACE = 1 << 128  # uhashring's points are MD5 digests as integers


def key(project: str, queue: str) -> str:
    """
    The ring key of a queue.  Queue names cannot contain C{/}, so the key
    names exactly one C{(project, queue)}.
    """
    return f"{project}/{queue}"


class Ring:
    """
    An immutable ring over a set of node names.
    """

    def __init__(self, names: Iterable[str], vnodes: int = 160) -> None:
        self.names = tuple(sorted(set(names)))
        if not self.names:
            raise ValueError("a ring needs at least one node")
        self.vnodes = vnodes
        self._ring = HashRing(
            {name: {"vnodes": vnodes} for name in self.names}, vnodes=vnodes
        )

    def owner(self, key: str) -> str:
        """
        The node that owns C{key}.
        """
        return self._ring.get_node(key)

    def successors(self, key: str, count: int | None = None) -> list:
        """
        The distinct nodes met walking the ring from C{key}: the owner first,
        then the nodes a replica would go to, up to C{count} (all of them by
        default).
        """
        return [
            conf["nodename"]
            for conf in self._ring.range(key, size=count or len(self.names))
        ]

    def shares(self) -> dict:
        """
        The fraction of the key space each node owns (exact, from the arcs
        of the ring, not sampled).
        """
        points = self._ring.get_points()  # [(point, name)] in ring order
        positions = [p for p, _ in points]
        owned = dict.fromkeys(self.names, 0)
        for index, (point, name) in enumerate(points):
            # A key belongs to the first point strictly after its hash, so a
            # point owns the arc from the previous point up to itself.
            previous = positions[index - 1] if index else positions[-1] - _SPACE
            owned[name] += point - previous
        return {name: size / _SPACE for name, size in owned.items()}

    def __contains__(self, name: str) -> bool:
        return name in self.names
