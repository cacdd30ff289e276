"""
The consistent-hash ring: which node owns the queue C{project/queue}.

A ring is a pure function of its description: the name of its scheme, the
scheme's parameters and the nodes with their weights.  Every node (and any
client) given the same description, the nodes listed in any order, builds
the same ring, and L{Ring.version} names it.

Two schemes:

C{slots} (the default)
    A fixed table of C{slots} slots (4096).  A key's slot is its 8-byte BLAKE2b
    digest (C{digest_size=8}), read big-endian, modulo the table size.  Every node gets its weighted quota
    of slots (C{slots * weight / total weight}, the remainders handed out
    largest first), so no node owns more than one slot above its exact share.
    Which slots a node gets is decided by a score per (node, slot) pair, a
    64-bit mix of the node's hash and the slot number: the pairs are taken
    from the highest score down, and a pair gives the slot to the node
    while the slot is free and the node is under its quota.  A join or a
    leave changes few scores' winners, so few keys move beyond the ones the
    joining node takes or the leaving node gives out (measured in
    C{bench/ring_balance.py}).

C{md5-vnodes} (the placement before the C{slots} scheme)
    C{vnodes * weight} points per node on a 128-bit circle, the MD5 digests
    of C{NAME-I}; a key belongs to the first point strictly after the MD5 of
    the key.  It is uhashring's placement, kept so that a cluster whose data
    already lives on its nodes keeps it in place.
"""

import bisect
import hashlib
import json
from typing import Any, Iterable, Mapping, Union

#: The scheme of a ring built without naming one.
DEFAULT_SCHEME = "slots"
#: The slots of the C{slots} scheme's table.
DEFAULT_SLOTS = 4096
#: The points per node (of weight 1) of the C{md5-vnodes} scheme.
DEFAULT_VNODES = 160
#: The largest weight of a node.
MAX_WEIGHT = 1000

_SPACE = 1 << 128  # md5-vnodes points are MD5 digests as integers
_MASK = (1 << 64) - 1

Nodes = Union[Iterable[str], Mapping[str, int]]


#: How many keys' owners a ring keeps (see L{Ring.owner}).
OWNERS = 4096


def key(project: str, queue: str) -> str:
    """
    The ring key of a queue.  Queue names cannot contain C{/}, so the key
    names exactly one C{(project, queue)}.
    """
    return f"{project}/{queue}"


def _hash64(text: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big"
    )


def _mix64(z: int) -> int:
    """
    The splitmix64 finalizer: a bijection of 64-bit integers whose every
    output bit depends on every input bit.
    """
    z = (z + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _md5(text: str) -> int:
    return int.from_bytes(hashlib.md5(text.encode("utf-8")).digest(), "big")


def quotas(weights: Mapping[str, int], total: int) -> dict:
    """
    Split C{total} units between the nodes in proportion to their weights:
    each gets the integer part of its exact share, and the units left go
    one each to the largest remainders (ties to the first name).
    """
    whole = sum(weights.values())
    share = {name: divmod(total * w, whole) for name, w in weights.items()}
    given = {name: q for name, (q, _) in share.items()}
    left = total - sum(given.values())
    for name in sorted(weights, key=lambda n: (-share[n][1], n))[:left]:
        given[name] += 1
    return given


class _Slots:
    """
    The C{slots} scheme: a balanced table of slots.
    """

    def __init__(self, weights: Mapping[str, int], slots: int = DEFAULT_SLOTS):
        if not 1 <= slots <= 1 << 20:
            raise ValueError("slots must be from 1 to 1048576")
        self.parameters = {"slots": slots}
        self.slots = slots
        names = sorted(weights)
        self.seeds = [_hash64(name) for name in names]
        quota = quotas(weights, slots)
        left = [quota[name] for name in names]
        # One integer per (node, slot) pair, ordered by score, then slot,
        # then node: sorting integers is much faster than sorting tuples.
        shift = max(len(names) - 1, 1).bit_length()
        ranked = sorted(
            (
                (_mix64(seed ^ slot) << (20 + shift)) | (slot << shift) | index
                for index, seed in enumerate(self.seeds)
                for slot in range(slots)
            ),
            reverse=True,
        )
        table: list = [None] * slots
        free = slots
        slotMask, indexMask = (1 << 20) - 1, (1 << shift) - 1
        for pair in ranked:
            slot, index = (pair >> shift) & slotMask, pair & indexMask
            if table[slot] is None and left[index]:
                table[slot] = names[index]
                left[index] -= 1
                free -= 1
                if not free:
                    break
        self.names = names
        self.table = table

    def owner(self, key: str) -> str:
        return self.table[_hash64(key) % self.slots]

    def successors(self, key: str) -> list:
        slot = _hash64(key) % self.slots
        owner = self.table[slot]
        others = sorted(
            (
                (_mix64(seed ^ slot), name)
                for seed, name in zip(self.seeds, self.names, strict=True)
                if name != owner
            ),
            reverse=True,
        )
        return [owner] + [name for _, name in others]

    def shares(self) -> dict:
        owned = dict.fromkeys(self.names, 0)
        for name in self.table:
            owned[name] += 1
        return {name: count / self.slots for name, count in owned.items()}


class _VirtualNodes:
    """
    The C{md5-vnodes} scheme: MD5 points on a circle, as uhashring places
    them (the nodes added in name order, so that on the rare point two
    nodes share, the later name holds it).
    """

    def __init__(self, weights: Mapping[str, int], vnodes: int = DEFAULT_VNODES):
        if not 1 <= vnodes <= 10000:
            raise ValueError("vnodes must be from 1 to 10000")
        self.parameters = {"vnodes": vnodes}
        self.vnodes = vnodes
        points: dict = {}
        for name in sorted(weights):
            for i in range(vnodes * weights[name]):
                points[_md5(f"{name}-{i}")] = name
        self.positions = sorted(points)
        self.owners = [points[p] for p in self.positions]
        self.names = sorted(weights)

    def _index(self, key: str) -> int:
        index = bisect.bisect(self.positions, _md5(key))
        return 0 if index == len(self.positions) else index

    def owner(self, key: str) -> str:
        return self.owners[self._index(key)]

    def successors(self, key: str) -> list:
        start = self._index(key)
        seen: dict = {}
        for name in self.owners[start:] + self.owners[:start]:
            seen.setdefault(name, None)
            if len(seen) == len(self.names):
                break
        return list(seen)

    def shares(self) -> dict:
        owned = dict.fromkeys(self.names, 0)
        positions = self.positions
        for index, name in enumerate(self.owners):
            # A point owns the arc from the previous point up to itself.
            previous = positions[index - 1] if index else positions[-1] - _SPACE
            owned[name] += positions[index] - previous
        return {name: size / _SPACE for name, size in owned.items()}


#: The schemes by name, with the parameters each takes.
SCHEMES: dict = {"slots": _Slots, "md5-vnodes": _VirtualNodes}


def _weights(nodes: Nodes) -> dict:
    if isinstance(nodes, Mapping):
        weights = dict(nodes)
    else:
        weights = dict.fromkeys(nodes, 1)
    if not weights:
        raise ValueError("a ring needs at least one node")
    for name, weight in weights.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"bad node name {name!r}")
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int)
            or not 1 <= weight <= MAX_WEIGHT
        ):
            raise ValueError(
                f"node {name}: weight must be an integer from 1 to {MAX_WEIGHT}"
            )
    return {name: weights[name] for name in sorted(weights)}


class Ring:
    """
    An immutable ring over a set of nodes.

    @ivar names: the node names, sorted.
    @ivar weights: each node's weight, by name.
    @ivar scheme: the name of the scheme, a key of L{SCHEMES}.
    @ivar parameters: the scheme's parameters (C{slots} or C{vnodes}).
    @ivar version: a short hash of the description (scheme, parameters,
        nodes and weights): two rings with the same version place every key
        the same.
    """

    def __init__(
        self, nodes: Nodes, scheme: str = DEFAULT_SCHEME, **parameters: int
    ) -> None:
        """
        @param nodes: the node names (each of weight 1), or a mapping of
            node names to integer weights.
        @param scheme: a key of L{SCHEMES}.
        @param parameters: the scheme's parameters; the defaults are
            C{slots=4096} and C{vnodes=160}.
        @raise ValueError: if a name, a weight, the scheme or a parameter is
            not acceptable.
        """
        self.weights = _weights(nodes)
        self.names = tuple(self.weights)
        if scheme not in SCHEMES:
            raise ValueError(
                f"unknown ring scheme {scheme!r}; one of {', '.join(sorted(SCHEMES))}"
            )
        for value in parameters.values():
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError("ring parameters must be integers")
        self.scheme = scheme
        try:
            self._placement = SCHEMES[scheme](self.weights, **parameters)
        except TypeError:
            raise ValueError(
                f"ring scheme {scheme} takes no parameter(s) "
                f"{', '.join(sorted(parameters))}"
            ) from None
        self.parameters = dict(self._placement.parameters)
        self.version = _version(self.scheme, self.parameters, self.weights)
        self._owners: dict = {}

    @classmethod
    def fromDescription(cls, description: Mapping[str, Any]) -> "Ring":
        """
        Build the ring that L{describe} described.

        @raise ValueError: if the description is malformed, or names a
            version that is not the one of the ring it describes.
        """
        try:
            scheme = description["scheme"]
            parameters = dict(description.get("parameters", {}))
            nodes = {n["name"]: n.get("weight", 1) for n in description["nodes"]}
            if len(nodes) != len(description["nodes"]):
                raise ValueError("a node is listed twice")
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a ring description: {e}") from None
        if not isinstance(scheme, str) or not all(
            isinstance(name, str) for name in parameters
        ):
            raise ValueError("not a ring description")
        ring = cls(nodes, scheme, **parameters)
        stated = description.get("version")
        if stated is not None and stated != ring.version:
            raise ValueError(
                f"the description says version {stated!r} but describes {ring.version}"
            )
        return ring

    @classmethod
    def fromSettings(cls, settings: Any) -> "Ring":
        """
        The ring of a cluster's settings: anything with C{weights} (by node
        name), C{ring} (the scheme) and C{vnodes} (used by the
        C{md5-vnodes} scheme only), such as a
        L{marconi.cluster.settings.ClusterConfig}.
        """
        if settings.ring == "md5-vnodes":
            return cls(settings.weights, settings.ring, vnodes=settings.vnodes)
        return cls(settings.weights, settings.ring)

    def describe(self) -> dict:
        """
        The plain-JSON description of the ring: enough to build it again
        with L{fromDescription}.
        """
        return {
            "scheme": self.scheme,
            "parameters": dict(self.parameters),
            "key": "project/queue",
            "nodes": [{"name": n, "weight": w} for n, w in self.weights.items()],
            "version": self.version,
        }

    def owner(self, key: str) -> str:
        """
        The node that owns C{key}.
        """
        # The owners of recent keys are kept (a node serves the same
        # queues again and again), at most OWNERS of them.
        owners = self._owners
        owner = owners.get(key)
        if owner is None:
            owner = self._placement.owner(key)
            if len(owners) >= OWNERS:
                owners.clear()
            owners[key] = owner
        return owner

    def successors(self, key: str, count: int | None = None) -> list:
        """
        The distinct nodes in the order they would take C{key}: the owner
        first, then the nodes a stand-in or a replica would go to, up to
        C{count} (all of them by default).
        """
        return self._placement.successors(key)[: count or len(self.names)]

    def shares(self) -> dict:
        """
        The fraction of the key space each node owns (exact, from the slot
        table or the arcs of the circle, not sampled).
        """
        return self._placement.shares()

    @property
    def table(self) -> tuple | None:
        """
        The owner of each slot, for a scheme with a slot table (a key's slot
        is its 8-byte BLAKE2b digest, read big-endian, modulo the table's
        size); L{None} for C{md5-vnodes}.
        """
        table = getattr(self._placement, "table", None)
        return None if table is None else tuple(table)

    def __contains__(self, name: str) -> bool:
        return name in self.weights


def _version(scheme: str, parameters: Mapping[str, int], weights: Mapping) -> str:
    """
    The first 16 hex digits of the SHA-256 of the canonical JSON (sorted
    keys, no spaces) of the scheme, its parameters and the sorted
    C{[name, weight]} pairs.
    """
    canonical = json.dumps(
        {
            "scheme": scheme,
            "parameters": dict(parameters),
            "nodes": [[n, weights[n]] for n in sorted(weights)],
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
