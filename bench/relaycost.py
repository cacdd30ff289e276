"""
What passing a request through costs the relaying node, measured in
process: less noisy than C{bench/cluster.py cost}, where three nodes take
turns on one core.

Node C{a} of a three-node cluster runs in this process, with its clients
in memory (as C{bench/postcost.py --mode transport}); node C{b}, the owner
of the queue, is the upstream of C{bench/relayfloor.py} in another process
(answering a post 1, a list 10 or a claim 10 with the head and body a
node writes for it, C{204} for probes), and node C{c} is
down.  The CPU of the reactor thread per request, C{--requests} requests
from 16 connections, is measured C{--rounds} times after one round to
warm up, in a new process for each checkout in turn, C{--repeat} times.

::

    python bench/relaycost.py --root before=/tmp/before --root after=.

The owner's answers are fixed bytes, but as long as a node's: a
``list 10`` is a ``200`` with ten messages (about 2.9 KB, over the
compression threshold, so the relay checks its ``Vary``).
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
CLIENT_ID = "3f2e4d5c-1b2a-4c3d-9e8f-0a1b2c3d4e5f"
#: The status of each operation's answers.
EXPECTED = {"post1": b"201", "list10": b"200", "claim10": b"201"}


def clientRequest(op: str, queue: str, body: bytes) -> bytes:
    path = b"/v2/queues/%s" % queue.encode()
    if op == "post1":
        method, path = b"POST", path + b"/messages"
    elif op == "list10":
        method, path, body = b"GET", path + b"/messages?limit=10&echo=true", b""
    else:
        method, path = b"POST", path + b"/claims?limit=10"
        body = b'{"ttl": 300, "grace": 60}'
    head = (
        b"%s %s HTTP/1.1\r\nHost: 127.0.0.1:8888\r\nClient-ID: %s\r\n"
        b"X-Project-ID: bench\r\nAccept: application/json\r\n"
        % (method, path, CLIENT_ID.encode())
    )
    if method == b"POST":
        head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def child(options) -> None:
    """
    Measure the checkout on C{sys.path}: one line of JSON, the µs per
    request of each round by operation.
    """
    from postcost import Round, messages
    from twisted.application.internet import StreamServerEndpointService
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred
    from twisted.internet.task import deferLater
    from twisted.logger import globalLogBeginner

    from marconi import tap
    from marconi.cluster.ring import Ring, key
    from marconi.observability.logs import StreamObserver

    work = tempfile.mkdtemp(prefix="marconi-relaycost-")
    secret = os.path.join(work, "secret")
    with open(secret, "w") as f:
        f.write(os.urandom(32).hex())
    tapOptions = tap.Options()
    tapOptions.parseOptions(
        [
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--storage",
            "sqlite:" + os.path.join(work, "a.sqlite3"),
            "--node-name",
            "a",
            "--cluster-node",
            "a=http://127.0.0.1:9",
            "--cluster-node",
            f"b=http://127.0.0.1:{options.upstream}",
            "--cluster-node",
            "c=http://127.0.0.1:13",
            "--cluster-secret-file",
            secret,
        ]
    )
    node = tap.makeService(tapOptions, reactor)
    try:
        from marconi.net import leanPolling
    except ImportError:
        pass
    else:
        # As twistd runs a node (tap.makeService given no reactor).
        leanPolling(reactor)
    # The access lines as twistd -n writes them (gathered for 0.1 s).
    observer = StreamObserver(open(os.path.join(work, "a.log"), "w"))
    observer.startBuffering(reactor, 0.1)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    site = next(s.factory for s in node if isinstance(s, StreamServerEndpointService))
    results: dict = {}

    async def run() -> None:
        # The first probes: b answers, c is refused.
        await deferLater(reactor, 3.0, lambda: None)
        ring = Ring(["a", "b", "c"])
        queues = [
            f"q{i}" for i in range(1000) if ring.owner(key("bench", f"q{i}")) == "b"
        ]
        for op in options.ops:
            data = clientRequest(op, queues.pop(), messages(1))
            results[op] = []
            for index in range(options.rounds + 1):
                r = Round(data, options.requests, 16)
                started = time.thread_time()
                r.startInMemory(site)
                statuses = await r.done
                cost = (time.thread_time() - started) / options.requests * 1e6
                if set(statuses) != {EXPECTED[op]}:
                    raise RuntimeError(f"unexpected answers: {statuses}")
                if index:
                    results[op].append(cost)

    def go() -> None:
        d = ensureDeferred(run())
        d.addErrback(lambda f: print(f.getTraceback(), file=sys.__stderr__))
        d.addBoth(lambda _: reactor.stop())

    node.startService()
    reactor.callWhenRunning(go)
    reactor.run()
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results), file=sys.__stdout__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default="post1,list10")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--root", action="append", default=[], metavar="LABEL=DIR")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    options.ops = options.ops.split(",")
    if options.child:
        child(options)
        return
    sys.path.insert(0, HERE)
    from run import freePort, waitForPort

    roots = dict(r.split("=", 1) for r in options.root) or {
        "this": os.path.dirname(HERE)
    }
    port = freePort()
    upstream = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "relayfloor.py"), "--upstream", str(port)]
    )
    runs: dict = {label: {op: [] for op in options.ops} for label in roots}
    try:
        waitForPort(port, upstream, time.monotonic() + 60)
        for _ in range(options.repeat):
            for label, root in roots.items():
                root = os.path.abspath(root)
                command = [
                    sys.executable,
                    os.path.join(HERE, "relaycost.py"),
                    "--child",
                    "--upstream",
                    str(port),
                    "--ops",
                    ",".join(options.ops),
                    "--requests",
                    str(options.requests),
                    "--rounds",
                    str(options.rounds),
                ]
                # That checkout's marconi; the harness is this one's.
                env = dict(os.environ, PYTHONPATH=root)
                out = subprocess.run(
                    command, env=env, capture_output=True, text=True, check=True
                )
                measured = json.loads(out.stdout.strip().splitlines()[-1])
                for op, costs in measured.items():
                    runs[label][op] += costs
    finally:
        upstream.kill()
        upstream.wait()
    for label in roots:
        for op in options.ops:
            costs = runs[label][op]
            print(
                f"{label:10} {op:8} {statistics.median(costs):6.1f} µs/request "
                f"(rounds {', '.join(f'{c:.0f}' for c in costs)})"
            )


if __name__ == "__main__":
    main()
