"""
What a claim of 10 and the bulk delete of what it claimed cost the SQLite
store in CPU time, measured in process on the calling thread.

The store's own transactions (each call in its own C{BEGIN IMMEDIATE} ...
C{COMMIT}, as a call alone in a group commit runs) on a file in a
temporary directory: a queue is seeded with C{--depth} messages posted 10
at a time, then each round claims C{--limit} messages and deletes them by
id with the claim's id (C{DELETE .../messages?ids=...&claim_ids=...}), and
the CPU time (L{time.process_time}) of the claims and of the deletes is
counted apart, per call::

    python bench/deletecost.py
    python bench/deletecost.py --compare /tmp/before /work/wt/counts --runs 5

C{--compare A B} runs this file with each checkout's C{marconi} in turn
(A, B, A, B, ...) in fresh processes and prints the median of each one's
runs, with the load average.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# bench/profile.py would hide the standard library's profile module.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]


def _parse(argv: list) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000, help="claims per run")
    parser.add_argument("--limit", type=int, default=10, help="messages per claim")
    parser.add_argument("--depth", type=int, default=0, help="default: all rounds")
    parser.add_argument("--synchronous", default="full")
    parser.add_argument(
        "--root", default=os.path.dirname(HERE), help="the checkout to measure"
    )
    parser.add_argument("--compare", nargs=2, metavar=("ROOT_A", "ROOT_B"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data-dir", default=None)
    return parser.parse_args(argv)


def measure(o: argparse.Namespace) -> dict:
    """
    One run: the CPU time per claim and per bulk delete, in microseconds.
    """
    sys.path.insert(0, os.path.abspath(o.root))
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from marconi.core.models import ClaimSpec, NewMessage
    from marconi.storage.sqlite import store as sqlitestore

    class Store(sqlitestore.SQLiteStore):
        # Each call at once, on this thread, in its own transaction.
        def _run(self, work, *args, durability=None):
            d = Deferred()
            sqlitestore._deliver(self._runBatch([(work, args, d, self.synchronous)]))
            return d

    def result(d: Deferred):
        box: list = []
        d.addBoth(box.append)
        return box[0]

    directory = tempfile.mkdtemp(prefix="marconi-deletecost-", dir=o.data_dir)
    try:
        store = Store(
            os.path.join(directory, "node.sqlite"),
            reactor,
            synchronous=o.synchronous,
        )
        store._open()
        store._accepting = True
        now = 1e9
        batch = [NewMessage(body='{"n": 1}', ttl=3600, checksum="MD5:0")] * 10
        depth = o.depth or o.rounds * o.limit
        for _ in range(0, depth, 10):
            result(store.postMessages("p", "q", batch, "c", now))
        spec = ClaimSpec(ttl=300, grace=60, limit=o.limit)
        claiming = deleting = 0.0
        for _ in range(o.rounds):
            started = time.process_time()
            claim = result(store.createClaim("p", "q", spec, now))
            claimed = time.process_time()
            ids = [m.id for m in claim.messages]
            removed = result(store.deleteMessages("p", "q", ids, [claim.id], now))
            deleting += time.process_time() - claimed
            claiming += claimed - started
            assert removed == len(ids) == o.limit, (removed, len(ids))
        store._close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "claim_us": claiming / o.rounds * 1e6,
        "delete_us": deleting / o.rounds * 1e6,
        "load": os.getloadavg()[0],
    }


def compare(o: argparse.Namespace, argv: list) -> None:
    rest = [a for a in argv if a not in o.compare and a not in ("--compare",)]
    runs: dict = {root: [] for root in o.compare}
    for attempt in range(o.runs):
        for root in o.compare:
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--root", root, *rest],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            line = [x for x in out.splitlines() if x.startswith("DELETECOST ")][-1]
            runs[root].append(json.loads(line[len("DELETECOST ") :]))
            print(f"run {attempt + 1} {root}: {runs[root][-1]}", flush=True)
    a, b = o.compare
    print(f"\nCPU us per call, median of {o.runs} runs (A = {a}, B = {b})")
    for key in ("claim_us", "delete_us"):
        ma, mb = (statistics.median(r[key] for r in runs[root]) for root in (a, b))
        print(f"{key:10} A {ma:8.1f}  B {mb:8.1f}  B/A {mb / ma:.3f}")
    both = [
        statistics.median(r["claim_us"] + r["delete_us"] for r in runs[root])
        for root in (a, b)
    ]
    print(
        f"{'both':10} A {both[0]:8.1f}  B {both[1]:8.1f}  B/A {both[1] / both[0]:.3f}"
    )


if __name__ == "__main__":
    options = _parse(sys.argv[1:])
    if options.compare:
        compare(options, sys.argv[1:])
    else:
        print("DELETECOST " + json.dumps(measure(options)))
