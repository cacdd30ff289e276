"""
What the audit river costs a post, in CPU time, in process.

Request rates (bench/run.py) on a shared machine spread more than the
difference being measured; this drives the bus itself (L{Messaging} over a
SQLite file store with default settings, the river writing to the same
store, as a node does) with C{--concurrency} posts of one message in
flight, and counts the CPU time of the whole process (every thread, the
store's included) per post, with the river off and on, interleaved::

    python bench/audit_cost.py [--posts N] [--repeat R] [--concurrency C]

HTTP is left out: it costs the same with the river on or off, so the
ratio here is lower than the ratio of request rates (it is the river's
share of the bus's own cost).
"""

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted.internet import reactor  # noqa: E402
from twisted.internet.defer import Deferred, gatherResults  # noqa: E402

from marconi.core.audit import AuditRiver, AuditSettings  # noqa: E402
from marconi.core.limits import Limits  # noqa: E402
from marconi.core.messaging import Messaging  # noqa: E402
from marconi.kernel import storageDriverFor  # noqa: E402


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(directory: str, river: bool, posts: int, concurrency: int) -> tuple:
    """
    Post C{posts} single messages to a fresh store, C{concurrency} at a
    time: the CPU microseconds and wall microseconds per post.
    """
    path = os.path.join(directory, f"{time.monotonic_ns()}.db")
    uri = f"sqlite:///{path}"
    store = storageDriverFor(uri).makeStore(uri, reactor)
    store.startService()
    audit = AuditRiver(store, reactor, AuditSettings(enabled=river))
    bus = Messaging(store, reactor, Limits(), audit=audit)
    document = {"messages": [{"body": {"n": 1}, "ttl": 300}]}
    left = [posts]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await bus.postMessages("p", "q", document, 40, "bench-client")

    try:
        await bus.postMessages("p", "q", document, 40, "bench-client")
        await audit.flush()
        startCPU, startWall = cpu(), time.perf_counter()
        await gatherResults(
            [Deferred.fromCoroutine(worker()) for _ in range(concurrency)]
        )
        await audit.flush()
        spentCPU, spentWall = cpu() - startCPU, time.perf_counter() - startWall
    finally:
        await store.stopService()
    return spentCPU / posts * 1e6, spentWall / posts * 1e6


async def main(args: argparse.Namespace) -> None:
    results: dict = {False: [], True: []}
    with tempfile.TemporaryDirectory(dir=args.data_dir) as directory:
        for _ in range(args.repeat):
            for river in (False, True):
                results[river].append(
                    await measure(directory, river, args.posts, args.concurrency)
                )
    print(f"load average {os.getloadavg()[0]:.2f}")
    print("river  CPU µs/post (median, runs)            wall µs/post (median)")
    medians = {}
    for river, runs in results.items():
        cpus = [c for c, _ in runs]
        medians[river] = statistics.median(cpus)
        print(
            f"{'on ' if river else 'off'}    {medians[river]:7.1f} "
            f"({', '.join(f'{c:.0f}' for c in cpus)})"
            f"    {statistics.median(w for _, w in runs):7.1f}"
        )
    print(f"on/off CPU per post: {medians[True] / medians[False]:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--data-dir", default=None, help="where the store files go")
    arguments = parser.parse_args()
    done: list = []

    def run() -> None:
        d = Deferred.fromCoroutine(main(arguments))
        d.addErrback(lambda f: (done.append(f), f.printTraceback()))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run()
    sys.exit(1 if done else 0)
