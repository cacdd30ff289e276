"""
What a forwarded request costs its owner when no relay shares its core.

C{bench/cluster.py cost} measures a forwarded request on three nodes
pinned to one core: the relay (C{a}) and the owner (C{b}) take turns on
it.  Here the load generator itself sends node C{b} requests for its own
queues, from the other core, over the same 16 connections, either as a
client does (C{local}) or signed as node C{a} forwards them (C{signed}:
the headers a relay forwards, signed with the cluster's secret by this
checkout's L{marconi.cluster.signing.Signer}, made before the round).  The difference is the owner's own extra: the signature and
ownership checks, less the authentication and the access line it skips.

::

    taskset -c 1 python bench/ownersigned.py --op post1 --root .
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cluster  # noqa: E402
from run import ROOT, Servers  # noqa: E402

USERS = 16


class _Clock:
    def seconds(self) -> float:
        return time.time()


def signedRequests(client, method, path, body, port, secret, count) -> list:
    """
    C{count} requests as node C{a} forwards the client's request to C{b}.
    """
    from marconi.api.passthrough import Headers
    from marconi.cluster import wire
    from marconi.cluster.forward import forwardPairs
    from marconi.cluster.signing import Signer

    signer = Signer("a", secret, _Clock())
    received = Headers()
    for line in client.headers.split(b"\r\n")[:-1]:
        name, _, value = line.partition(b": ")
        received.add(name, name.lower(), value)
    if body:
        received.add(b"Content-Type", b"content-type", b"application/json")
    host = b"127.0.0.1:%d" % port
    return [
        wire.requestBytes(
            method,
            path,
            host,
            forwardPairs(received, signer.headers(method, path, body, "bench", "b")),
            body,
        )
        for _ in range(count)
    ]


async def send(load, ready: dict, queues: list, requests: int, expected) -> int:
    """
    Send C{requests} of the requests C{ready} for each queue to node C{b},
    user C{i} those of C{queues[i % len(queues)]}; the count of answers
    other than C{expected}.
    """
    left = requests
    failures = 0

    async def user(i: int) -> None:
        nonlocal left, failures
        mine = ready[queues[i % len(queues)]]
        client = load.users[i]["b"]
        while left > 0:
            left -= 1
            status, _ = await client.send(mine.pop())
            failures += status != expected

    await asyncio.gather(*(user(i) for i in range(USERS)))
    return failures


async def measure(options) -> dict:
    servers = Servers(tempfile.mkdtemp(prefix="marconi-ownersigned-"))
    results: dict = {"local": [], "signed": []}
    try:
        nodes = cluster.Cluster(servers, 3, options.server_cpus, options.root, "o")
        with open(os.path.join(servers.workdir, "osecret"), "rb") as f:
            secret = f.read().strip()
        load = cluster.Load(nodes, USERS)
        await cluster.warm(load, nodes)
        try:
            for rep in range(options.repeat):
                queues = nodes.queues("b", 4, f"s{rep}{options.op}")
                if options.op == "list10":
                    for queue in queues:
                        await load.seed("b", queue, 200)
                method, _, body, expected = cluster.request(options.op, "")
                # Enough for any share of the requests.
                each = options.requests
                for route in ("local", "signed"):
                    ready = {}
                    for queue in queues:
                        path = cluster.request(options.op, queue)[1]
                        client = load.users[0]["b"]
                        if route == "local":
                            ready[queue] = [client.build(method, path, body)] * each
                        else:
                            ready[queue] = signedRequests(
                                client,
                                method,
                                path,
                                body,
                                nodes.ports["b"],
                                secret,
                                each,
                            )
                    before = nodes.cpu()["b"]
                    failures = await send(
                        load, ready, queues, options.requests, expected
                    )
                    after = nodes.cpu()["b"]
                    if failures:
                        # A refused request is cheaper than a stored one:
                        # the round would flatter the owner.
                        raise SystemExit(
                            f"{failures} of {options.requests} {route} requests"
                            " failed; no cost is given"
                        )
                    cost = 1e6 * (after - before) / options.requests
                    results[route].append(cost)
                    print(
                        f"rep {rep} {options.op} {route:6} {cost:5.0f} µs/request "
                        f"failures={failures}",
                        flush=True,
                    )
        finally:
            load.close()
    finally:
        servers.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--op", default="post1", choices=("post1", "list10"))
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--root", default=ROOT)
    options = parser.parse_args()
    options.root = os.path.abspath(options.root)
    results = asyncio.run(measure(options))
    for route, runs in results.items():
        print(
            f"{options.op} {route:6} median {statistics.median(runs):5.0f} µs/request "
            f"(runs {', '.join(f'{r:.0f}' for r in runs)})"
        )


if __name__ == "__main__":
    main()
