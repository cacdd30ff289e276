"""
The cost of push delivery: posting one message at a time to a queue with
0, 1 and 10 webhook subscribers, and how long a posted message takes to
reach its subscribers.

Starts a SQLite node with the subscriptions extension enabled (in its own
process, pinned like bench/run.py's servers when taskset exists) and, in
this process, the webhook receivers (one twisted.web site each, answering
204).  For each subscriber count it creates a fresh queue, subscribes the
receivers, then posts C{--count} single messages from C{--concurrency}
clients and prints, per count: posts per second, post latency p50/p99, and
delivery latency p50/p99 (from the post's 201 to a receiver reading the
request; every subscriber's delivery counts).  Example::

    python bench/webhooks.py --count 2000 --concurrency 8

A scenario ends when every delivery arrived or C{--deadline} seconds
passed (then the missing deliveries are reported).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import treq  # noqa: E402
from treq.client import HTTPClient  # noqa: E402
from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.web.client import Agent, HTTPConnectionPool  # noqa: E402
from twisted.web.resource import Resource  # noqa: E402
from twisted.web.server import Site  # noqa: E402

from bench.run import freePort, pinned, waitForPort  # noqa: E402

HEADERS = {
    "Content-Type": "application/json",
    "X-Project-ID": "bench",
    "Client-ID": str(uuid.uuid4()),
}


class Receiver(Resource):
    isLeaf = True

    def __init__(self, arrivals: dict) -> None:
        super().__init__()
        self.arrivals = arrivals

    def render_POST(self, request):
        now = time.monotonic()
        document = json.loads(request.content.read())
        self.arrivals.setdefault(document["id"], []).append(now)
        request.setResponseCode(204)
        return b""


def percentile(values: list, fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def startNode(workdir: str, cpus: str):
    config = os.path.join(workdir, "marconi.ini")
    with open(config, "w") as f:
        f.write(
            "[extensions]\nenabled = subscriptions\n"
            # The receivers listen on loopback.
            "[extension:subscriptions]\nallow_private = true\n"
        )
    port = freePort()
    twistd = shutil.which("twistd") or "twistd"
    command = [
        twistd,
        "-n",
        "--pidfile=",
        f"--logfile={os.path.join(workdir, 'node.log')}",
        "marconi",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--storage",
        "sqlite:" + os.path.join(workdir, "bench.sqlite3"),
        "--config",
        config,
    ]
    env = dict(os.environ, PYTHONPATH=ROOT)
    process = subprocess.Popen(pinned(cpus, command), env=env, cwd=workdir)
    waitForPort(port, process, time.monotonic() + 60)
    return process, f"http://127.0.0.1:{port}"


async def scenario(http, url: str, subscribers: int, options) -> dict:
    arrivals: dict = {}
    ports = [
        reactor.listenTCP(0, Site(Receiver(arrivals)), interface="127.0.0.1")
        for _ in range(subscribers)
    ]
    queue = f"push{subscribers}-{uuid.uuid4().hex[:8]}"
    base = f"{url}/v2/queues/{queue}"
    for port in ports:
        hook = f"http://127.0.0.1:{port.getHost().port}/hook"
        response = await http.post(
            base + "/subscriptions",
            data=json.dumps({"subscriber": hook}).encode(),
            headers=HEADERS,
        )
        await treq.content(response)
        assert response.code == 201, response.code
    posted: dict = {}
    latencies: list = []
    remaining = iter(range(options.count))

    async def client() -> None:
        for n in remaining:
            body = json.dumps({"messages": [{"body": {"n": n}}]}).encode()
            started = time.monotonic()
            response = await http.post(base + "/messages", data=body, headers=HEADERS)
            document = json.loads(await treq.content(response))
            done = time.monotonic()
            assert response.code == 201, response.code
            latencies.append(done - started)
            posted[document["resources"][0].rsplit("/", 1)[1]] = done

    started = time.monotonic()
    await defer.gatherResults(
        [defer.ensureDeferred(client()) for _ in range(options.concurrency)],
        consumeErrors=True,
    )
    elapsed = time.monotonic() - started
    expected = len(posted) * subscribers
    deadline = time.monotonic() + options.deadline
    while sum(len(v) for v in arrivals.values()) < expected:
        if time.monotonic() > deadline:
            break
        await task.deferLater(reactor, 0.05, lambda: None)
    deliveries = [
        arrived - posted[mid]
        for mid, times in arrivals.items()
        if mid in posted
        for arrived in times
    ]
    for port in ports:
        await port.stopListening()
    return {
        "subscribers": subscribers,
        "posts/s": len(posted) / elapsed,
        "post p50 ms": percentile(latencies, 0.5) * 1000,
        "post p99 ms": percentile(latencies, 0.99) * 1000,
        "delivery p50 ms": percentile(deliveries, 0.5) * 1000,
        "delivery p99 ms": percentile(deliveries, 0.99) * 1000,
        "missing": expected - len(deliveries),
    }


async def main(options) -> None:
    workdir = tempfile.mkdtemp(prefix="marconi-bench-webhooks-")
    process, url = startNode(workdir, options.server_cpus)
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = options.concurrency
    http = HTTPClient(Agent(reactor, pool=pool))
    try:
        rows = []
        for subscribers in options.subscribers:
            rows.append(await scenario(http, url, subscribers, options))
        columns = list(rows[0])
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
        for row in rows:
            cells = [
                f"{v:,.1f}" if isinstance(v, float) else str(v) for v in row.values()
            ]
            print("| " + " | ".join(cells) + " |")
    finally:
        await pool.closeCachedConnections()
        process.terminate()
        process.wait(30)


def parseOptions(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--subscribers",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[0, 1, 10],
    )
    parser.add_argument("--deadline", type=float, default=120.0)
    parser.add_argument("--server-cpus", default="0")
    return parser.parse_args(argv)


if __name__ == "__main__":
    options = parseOptions(sys.argv[1:])
    task.react(lambda _: defer.ensureDeferred(main(options)))
