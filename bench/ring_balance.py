"""
How evenly ring schemes spread the key space, how many keys move when a node
joins or leaves, and what a lookup and a build cost.

For every scheme, every cluster size N from 2 to 16 and every family of node
names it prints:

- C{max/mean}: the largest node's share of the key space over the mean
  share C{1/N} (exact, from L{Ring.shares}, except for C{rendezvous} whose
  shares are exactly C{1/N} by construction);
- C{join}: the fraction of the key space that changes owner when the next
  name of the family joins (exact between slot tables, else over 20,000
  sampled keys, within about 3%), over the ideal C{1/(N+1)};
- C{leave}: the same when a node leaves (the first, a middle and the last
  name are tried; the worst is shown), over the ideal C{1/N}.

Then the cost of C{owner()} per call and of building a ring of 16 nodes.
Run it from the repository root::

    python bench/ring_balance.py            # the summary by scheme
    python bench/ring_balance.py --detail   # and a line per (scheme, family, N)

Nothing here is asserted; C{tests/cluster/test_ring.py} checks the default
scheme's properties.
"""

import argparse
import sys
import time
from typing import Callable

sys.path.insert(0, ".")

from marconi.cluster.ring import Ring, _hash64, _mix64, key  # noqa: E402

FAMILIES: dict = {
    "a..p": lambda i: chr(ord("a") + i),
    "node-1..": lambda i: f"node-{i + 1}",
    "hosts": lambda i: f"mq{i + 1:02d}.dc1.example.net",
    "ips": lambda i: f"10.0.{i // 4}.{10 + i}",
}
SAMPLE = [key(f"project-{i % 37}", f"queue-{i}") for i in range(20000)]


class Rendezvous:
    """
    Rendezvous (highest random weight) hashing per key, no table: the owner
    is the node with the highest score for the key.  Every node owns exactly
    C{1/N} of the key space and a change moves only the keys it must, but a
    lookup hashes the key once per node.
    """

    def __init__(self, names: list) -> None:
        self.names = sorted(names)
        self.seeds = [_hash64(n) for n in self.names]

    def owner(self, k: str) -> str:
        h = _hash64(k)
        best = max(range(len(self.names)), key=lambda i: _mix64(self.seeds[i] ^ h))
        return self.names[best]

    def shares(self) -> dict:
        return {n: 1 / len(self.names) for n in self.names}


class SlotRendezvous:
    """
    Plain rendezvous over a fixed table: each slot goes to the node with the
    highest score for it, with no quota.
    """

    def __init__(self, names: list, slots: int = 4096) -> None:
        self.slots = slots
        seeds = {n: _hash64(n) for n in names}
        self.table = [
            max(names, key=lambda n: _mix64(seeds[n] ^ s)) for s in range(slots)
        ]

    def owner(self, k: str) -> str:
        return self.table[_hash64(k) % self.slots]

    def shares(self) -> dict:
        counts: dict = {}
        for n in self.table:
            counts[n] = counts.get(n, 0) + 1
        return {n: c / self.slots for n, c in counts.items()}


SCHEMES: dict = {
    "md5-vnodes 160 (legacy)": lambda names: Ring(names, "md5-vnodes"),
    "md5-vnodes 1000": lambda names: Ring(names, "md5-vnodes", vnodes=1000),
    "md5-vnodes 4000": lambda names: Ring(names, "md5-vnodes", vnodes=4000),
    "rendezvous per key": Rendezvous,
    "rendezvous over 4096 slots": SlotRendezvous,
    "slots 1024": lambda names: Ring(names, "slots", slots=1024),
    "slots 4096 (default)": lambda names: Ring(names),
}


def moved(before: object, after: object) -> float:
    """
    The fraction of the key space that changes owner: exact between two
    slot tables of one size, else over the sampled keys.
    """
    one, other = getattr(before, "table", None), getattr(after, "table", None)
    if one is not None and other is not None and len(one) == len(other):
        return sum(x != y for x, y in zip(one, other, strict=True)) / len(one)
    return sum(before.owner(k) != after.owner(k) for k in SAMPLE) / len(SAMPLE)


def measure(build: Callable, family: Callable, n: int) -> tuple:
    names = [family(i) for i in range(n)]
    ring = build(names)
    shares = ring.shares()
    balance = max(shares.values()) * n
    join = moved(ring, build(names + [family(n)])) * (n + 1)
    leave = 0.0
    if n > 2:
        for gone in {names[0], names[n // 2], names[-1]}:
            rest = [x for x in names if x != gone]
            leave = max(leave, moved(ring, build(rest)) * n)
    return balance, join, leave


def cost(build: Callable) -> tuple:
    names = [FAMILIES["node-1.."](i) for i in range(16)]
    start = time.perf_counter()
    ring = build(names)
    built = time.perf_counter() - start
    keys = SAMPLE[:5000]
    start = time.perf_counter()
    for k in keys:
        ring.owner(k)
    return built * 1e3, (time.perf_counter() - start) / len(keys) * 1e6


def main(argv: list) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detail", action="store_true")
    parser.add_argument("--max-nodes", type=int, default=16)
    parser.add_argument(
        "--schemes", help="comma-separated words; only the schemes whose label has one"
    )
    args = parser.parse_args(argv)
    print(
        "| scheme | worst max/mean | mean max/mean | worst join/ideal "
        "| worst leave/ideal | build 16 nodes ms | owner() µs |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, build in SCHEMES.items():
        if args.schemes and not any(w in label for w in args.schemes.split(",")):
            continue
        rows = []
        for fname, family in FAMILIES.items():
            for n in range(2, args.max_nodes + 1):
                rows.append(measure(build, family, n))
                if args.detail:
                    b, j, lv = rows[-1]
                    print(f"  {label} {fname} N={n}: {b:.3f} {j:.3f} {lv:.3f}")
        built, lookup = cost(build)
        balances = [r[0] for r in rows]
        print(
            f"| {label} | {max(balances):.3f} | {sum(balances) / len(balances):.3f} "
            f"| {max(r[1] for r in rows):.3f} | {max(r[2] for r in rows):.3f} "
            f"| {built:.1f} | {lookup:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
