"""
How many one-core nodes carry a given request rate, projected from the
server CPU per request that C{bench/cluster.py cost} measured.

::

    python bench/cluster.py cost --json bench/cluster-cost.json
    python bench/capacity.py bench/cluster-cost.json
    python bench/capacity.py bench/cluster-cost-forward.json --root before
    python bench/capacity.py bench/cluster-cost.json --rate 1000000 \\
        --mix post1=2,list10=1,claim10=1 --utilisation 0.7

The model: a request costs C{L} core-microseconds when it reaches the
queue's owner and C{F} (relay and owner together) when another node
forwards it.  Ring-aware clients send every request to its owner, so the
average is C{L}; clients that enter at a node picked at random have
(N-1)/N of their requests forwarded, so the average is
C{L + (N-1)/N * (F - L)}.  N nodes of one core each, kept at
C{utilisation} of their core, carry C{N * utilisation / average} requests
a second.  The mix weighs the operations; the ring is taken as even (the
C{slots} scheme is within a fraction of a percent).  What the model leaves
out: queue listings (they ask every node), probes (a few per second),
skew between queues, and the cost of a cluster larger than three on
connection pools.
"""

import argparse
import json
import math
import sys


def average(costs: dict, mix: dict, route: str) -> float:
    """
    The mix-weighted CPU microseconds per request of C{route} (C{local} or
    C{forwarded}).
    """
    total = sum(mix.values())
    return sum(costs[op][route]["us_per_request"] * w for op, w in mix.items()) / total


def perRequest(local: float, forwarded: float, nodes: int, clients: str) -> float:
    if clients == "ring-aware" or nodes == 1:
        return local
    return local + (nodes - 1) / nodes * (forwarded - local)


def nodesFor(
    rate: float, local: float, forwarded: float, utilisation: float, clients: str
) -> int:
    """
    The fewest nodes that carry C{rate} requests a second.
    """
    for nodes in range(1, 10_000):
        capacity = (
            nodes * utilisation * 1e6 / perRequest(local, forwarded, nodes, clients)
        )
        if capacity >= rate:
            return nodes
    raise ValueError("more than 10,000 nodes")


def parseMix(text: str) -> dict:
    mix = {}
    for part in text.split(","):
        op, _, weight = part.partition("=")
        mix[op] = float(weight or 1)
    return mix


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("costs", help="the JSON file of bench/cluster.py cost")
    parser.add_argument(
        "--rate", type=float, default=1_000_000, help="requests a minute"
    )
    parser.add_argument("--mix", default="post1=1,list10=1,claim10=1")
    parser.add_argument(
        "--utilisation",
        type=float,
        default=0.8,
        help="the share of each node's core the load may take",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every measured cost by this (e.g. the ratio of a quiet "
        "machine's cost to a busy one's, for numbers taken on a shared machine)",
    )
    parser.add_argument(
        "--root",
        help="the checkout to take, from a file of several (cost --root LABEL=DIR "
        "given more than once); by default the last",
    )
    options = parser.parse_args(argv)
    with open(options.costs) as f:
        costs = json.load(f)
    if "post1" not in costs:
        labels = [k for k in costs if k not in ("loadavg", "requests")]
        costs = costs[options.root or labels[-1]]
    mix = parseMix(options.mix)
    local = average(costs, mix, "local") * options.scale
    forwarded = average(costs, mix, "forwarded") * options.scale
    perSecond = options.rate / 60
    print(
        f"mix {options.mix}: {local:.0f} µs per local request, "
        f"{forwarded:.0f} µs per forwarded one ({forwarded / local:.2f}x); "
        f"{options.rate:,.0f} requests a minute = {perSecond:,.0f}/s; "
        f"cores kept at {options.utilisation:.0%}"
    )
    print("| clients | nodes | µs per request at that size | requests/s they carry |")
    print("|---|---|---|---|")
    for clients in ("ring-aware", "random-entry"):
        n = nodesFor(perSecond, local, forwarded, options.utilisation, clients)
        cost = perRequest(local, forwarded, n, clients)
        carried = n * options.utilisation * 1e6 / cost
        print(f"| {clients} | {n} | {cost:.0f} | {carried:,.0f} |")
    print(
        "(perfect-scaling bound, all cores at 100%: "
        f"{math.ceil(perSecond * local / 1e6)} nodes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
