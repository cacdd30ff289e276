"""
Whether a queue's depth changes what an operation costs (docs/storage.rst).

    python bench/depth.py                                  # every store, 1,000,000
    python bench/depth.py --stores sqlite,redis --big 100000 --requests 100
    python bench/depth.py --stores mongodb --big 200000    # SecantusDB

For each store it starts the backing server (C{redis-server}; SecantusDB,
or C{mongod} when it is on PATH), fills a queue of C{--small} messages and
one of C{--big} messages in a node's project directly through the store
API (batches of 1,000 in a separate process, not HTTP requests one by
one), then starts a real node (C{twistd marconi}) over that storage and
times, on one keep-alive connection, C{--requests} requests of each
operation against each queue, small and big interleaved, C{--rounds}
times:

  - C{post1}: post one message;
  - C{list10}: list 10 from a marker in the middle of the queue;
  - C{claim10}: claim 10 (each claim is released after it, untimed, so
    every claim finds the same head of the queue);
  - C{delete}: delete a message by id (posted just before, untimed);
  - C{stats}: the queue's stats.

With C{--held 10000,100000} it measures instead what live claims at a
queue's head cost (docs/storage.rst): queues of C{--small} free messages
behind 0 and each of the given numbers of messages held by live claims
(claimed in the filling process, for 12 hours), and the same operations
(by default C{claim10} and C{post1}) on each.

    python bench/depth.py --stores sqlite --held 10000,100000

It reports per operation the median latency (ms) and the CPU time per
request of the node and its backing server together (the median of the
rounds), for each queue, and the ratio big/small of both.  Both queues are
in the same store, so the ratio isolates the queue's depth from the size of
the store.  The last line is C{MARCONI-DEPTH <json>}.

Run it on a quiet machine; on a shared one compare only the ratios, which
come from one run, with the load average printed beside them.
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from driver import Client, processesCPU  # noqa: E402
from run import (  # noqa: E402
    Servers,
    freePort,
    startMongo,
    startRedis,
    waitForPort,
)
from run import startNode as runStartNode  # noqa: E402

PROJECT = "bench-depth"
OPERATIONS = ["post1", "list10", "claim10", "delete", "stats"]
# Long enough that nothing expires during a run.
TTL = 1_209_600
BATCH = 1000
# How long the claims of --held hold their messages.
HOLD_TTL = 43_200


# -- Filling a queue through the store API --------------------------------


def fill(uri: str, queue: str, count: int, inFlight: int = 4, hold: int = 0) -> float:
    """
    Post C{count} messages to C{queue} of L{PROJECT} in the store at
    C{uri}, in batches of L{BATCH}, C{inFlight} batches at a time; then
    claim the first C{hold} of them for L{HOLD_TTL} seconds.

    @return: the seconds it took.
    """
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from marconi.core.models import ClaimSpec, NewMessage

    kind = uri.split(":", 1)[0]
    if kind == "sqlite":
        from marconi.storage.sqlite.store import makeStore
    elif kind == "redis":
        from marconi.storage.redis.store import makeStore
    else:
        from marconi.storage.mongodb.store import makeStore
    store = makeStore(uri, reactor, durability="fast")
    body = json.dumps({"depth": "x" * 64})
    message = NewMessage(body=body, ttl=TTL, delay=0, tags=(), checksum="")
    started = time.monotonic()
    result: dict = {}

    async def post(batches: list) -> None:
        while batches:
            size = batches.pop()
            await store.postMessages(
                PROJECT,
                queue,
                [message] * size,
                "filler",
                time.time(),
                durability="fast",
            )

    async def run() -> None:
        store.startService()
        try:
            if hasattr(store, "ready"):
                await store.ready()
            sizes = [BATCH] * (count // BATCH)
            if count % BATCH:
                sizes.append(count % BATCH)
            # The first batch first: it creates the queue.
            await post([sizes.pop()]) if sizes else None
            workers = [Deferred.fromCoroutine(post(sizes)) for _ in range(inFlight)]
            for worker in workers:
                await worker
            remaining = hold
            while remaining > 0:
                spec = ClaimSpec(ttl=HOLD_TTL, grace=0, limit=min(remaining, BATCH))
                claim = await store.createClaim(
                    PROJECT, queue, spec, time.time(), durability="fast"
                )
                remaining -= len(claim.messages)
        except BaseException as e:
            result["error"] = e
        finally:
            await store.stopService()

    def done(_: object) -> None:
        reactor.stop()

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(run()).addBoth(done))
    reactor.run()
    if "error" in result:
        raise result["error"]
    return time.monotonic() - started


def fillInProcess(uri: str, queue: str, count: int, hold: int = 0) -> float:
    """
    Run L{fill} in a fresh Python process (it needs a Twisted reactor).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    output = subprocess.run(
        [sys.executable, __file__, "--fill", uri, queue, str(count), str(hold)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(output.strip().splitlines()[-1])


# -- Backing servers and the node -------------------------------------------


def startMongod(servers: Servers) -> tuple:
    port = freePort()
    data = os.path.join(servers.workdir, "mongod-data")
    os.makedirs(data, exist_ok=True)
    command = [
        shutil.which("mongod"),
        "--bind_ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--dbpath",
        data,
        "--nounixsocket",
    ]
    process, log = servers.start("mongod", command)
    waitForPort(port, process, time.monotonic() + 60, log)
    return port, process.pid


def storageFor(servers: Servers, store: str) -> tuple:
    """
    Start what C{store} needs; return its URI and the pids of its servers.
    """
    options = argparse.Namespace(
        server_cpus=None,
        redis_args="--appendonly yes --appendfsync everysec",
        mongo_args="",
    )
    if store == "sqlite":
        return "sqlite:" + os.path.join(servers.workdir, "depth.sqlite"), []
    if store == "redis":
        port, pid = startRedis(servers, options)
        return f"redis://127.0.0.1:{port}", [pid]
    if shutil.which("mongod"):
        port, pid = startMongod(servers)
    else:
        port, pid = startMongo(servers, options)
    return f"mongodb://127.0.0.1:{port}/depth", [pid]


def serverKind(store: str) -> str:
    if store == "mongodb":
        return "mongod" if shutil.which("mongod") else "SecantusDB"
    return {"sqlite": "SQLite", "redis": "redis-server"}[store]


def startNode(servers: Servers, uri: str) -> tuple:
    """
    Start C{twistd marconi} over C{uri}; return its URL and pid.
    """
    options = argparse.Namespace(storage=uri, node_args="", server_cpus=None)
    target = runStartNode(servers, options, "node")
    return target.url, target.pids[0]


def client(url: str, timeout: float = 60) -> Client:
    host, port = url.rsplit("//", 1)[1].split(":")
    return Client(
        asyncio.get_running_loop(), host, int(port), PROJECT, str(uuid.uuid4()), timeout
    )


# -- The operations -----------------------------------------------------------


async def expect(c: Client, request: bytes, status: int) -> bytes:
    got, body = await c.send(request)
    if got != status:
        raise SystemExit(f"expected {status}, got {got}: {body[:300]!r}")
    return body


class Operations:
    """
    The timed requests of each operation on one queue, and their untimed
    preparation.
    """

    def __init__(self, c: Client, queue: str, depth: int):
        self.c = c
        self.base = f"/v2/queues/{queue}".encode()
        post = json.dumps({"messages": [{"ttl": TTL, "body": "one"}]}).encode()
        self.post = c.build(b"POST", self.base + b"/messages", post)
        self.list = c.build(
            b"GET", self.base + b"/messages?limit=10&echo=true&marker=%d" % (depth // 2)
        )
        self.claim = c.build(
            b"POST", self.base + b"/claims?limit=10", b'{"ttl": 60, "grace": 60}'
        )
        self.stats = c.build(b"GET", self.base + b"/stats")

    async def timed(self, operation: str, count: int) -> list:
        """
        Run C{count} requests of C{operation}; return each one's seconds.
        """
        c = self.c
        latencies = []
        deletes: list = []
        if operation == "delete":
            for _ in range(count):
                body = await expect(c, self.post, 201)
                deletes.append(json.loads(body)["resources"][0].encode())
        for index in range(count):
            if operation == "post1":
                request, status = self.post, 201
            elif operation == "list10":
                request, status = self.list, 200
            elif operation == "claim10":
                request, status = self.claim, 201
            elif operation == "delete":
                request, status = c.build(b"DELETE", deletes[index]), 204
            else:
                request, status = self.stats, 200
            started = time.perf_counter()
            body = await expect(c, request, status)
            latencies.append(time.perf_counter() - started)
            if operation == "claim10":
                claim = json.loads(body)
                href = "/v2/queues/" + claim["messages"][0]["href"].split("/")[3]
                claimId = claim["messages"][0]["href"].rsplit("claim_id=", 1)[1]
                release = f"{href}/claims/{claimId}".encode()
                await expect(c, c.build(b"DELETE", release), 204)
        return latencies


async def measure(url: str, pids: list, options, depths: dict) -> dict:
    c = client(url)
    for queue, depth in depths.items():
        body = await expect(
            c, c.build(b"GET", f"/v2/queues/{queue}/stats".encode()), 200
        )
        total = json.loads(body)["messages"]["total"]
        if total < depth:
            raise SystemExit(f"{queue} holds {total} messages, not {depth}")
    ops = {queue: Operations(c, queue, depth) for queue, depth in depths.items()}
    samples: dict = {
        op: {q: {"ms": [], "cpu": []} for q in depths} for op in options.ops
    }
    for _round in range(options.rounds):
        for op in options.ops:
            for queue in depths:
                await ops[queue].timed(op, max(5, options.requests // 10))  # warm
                cpu = processesCPU(pids)
                latencies = await ops[queue].timed(op, options.requests)
                spent = processesCPU(pids) - cpu
                samples[op][queue]["ms"].append(statistics.median(latencies) * 1000)
                samples[op][queue]["cpu"].append(spent / options.requests * 1000)
    c.close()
    report = {}
    small, big = list(depths)[0], list(depths)[-1]
    for op, byQueue in samples.items():
        row = {}
        for queue in depths:
            row[queue] = {
                "ms": round(statistics.median(byQueue[queue]["ms"]), 3),
                "cpuMs": round(statistics.median(byQueue[queue]["cpu"]), 3),
            }
        row["ratioMs"] = round(row[big]["ms"] / row[small]["ms"], 2)
        row["ratioCpu"] = (
            round(row[big]["cpuMs"] / row[small]["cpuMs"], 2)
            if row[small]["cpuMs"]
            else None
        )
        report[op] = row
    return report


def runStore(store: str, options) -> dict:
    workdir = tempfile.mkdtemp(prefix=f"marconi-depth-{store}-")
    servers = Servers(workdir)
    try:
        uri, serverPids = storageFor(servers, store)
        if options.held:
            held = {f"held{n}": n for n in [0] + options.held}
            depths = {q: n + options.small for q, n in held.items()}
        else:
            held = {}
            depths = {"small": options.small, "big": options.big}
        fills = {
            q: round(fillInProcess(uri, q, n, held.get(q, 0)), 1)
            for q, n in depths.items()
        }
        url, nodePid = startNode(servers, uri)
        report = asyncio.run(measure(url, [nodePid] + serverPids, options, depths))
        return {"server": serverKind(store), "fillSeconds": fills, "ops": report}
    finally:
        servers.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def heldTable(results: dict, options) -> str:
    queues = [f"held{n}" for n in [0] + options.held]
    lines = [
        "| store | operation | "
        + " | ".join(f"{q[4:]} held: ms, CPU ms/req" for q in queues)
        + " | CPU ratio last/none |",
        "|---|---|" + "---|" * (len(queues) + 1),
    ]
    for store, result in results.items():
        for op, row in result["ops"].items():
            cells = [f"{row[q]['ms']}, {row[q]['cpuMs']}" for q in queues]
            lines.append(
                f"| {store} ({result['server']}) | {op} | "
                + " | ".join(cells)
                + f" | {row['ratioCpu']} |"
            )
    return "\n".join(lines)


def table(results: dict, options) -> str:
    lines = [
        f"| store | operation | {options.small:,} ms | {options.big:,} ms | "
        "ratio | CPU ms/req small | CPU ms/req big | CPU ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for store, result in results.items():
        for op, row in result["ops"].items():
            lines.append(
                f"| {store} ({result['server']}) | {op} | {row['small']['ms']} | "
                f"{row['big']['ms']} | {row['ratioMs']} | {row['small']['cpuMs']} | "
                f"{row['big']['cpuMs']} | {row['ratioCpu']} |"
            )
    return "\n".join(lines)


def main(argv: list) -> int:
    if argv[:1] == ["--fill"]:
        uri, queue, count, hold = argv[1], argv[2], int(argv[3]), int(argv[4])
        print(fill(uri, queue, count, hold=hold), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="sqlite,redis,mongodb")
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--held",
        default=[],
        type=lambda s: [int(n) for n in s.split(",")],
        help="numbers of held messages at the head to measure claims past",
    )
    parser.add_argument("--ops", type=lambda s: s.split(","))
    options = parser.parse_args(argv)
    if options.ops is None:
        options.ops = ["claim10", "post1"] if options.held else OPERATIONS
    results = {}
    for store in options.stores.split(","):
        load = os.getloadavg()
        started = time.monotonic()
        results[store] = runStore(store, options)
        results[store]["loadBefore"] = [round(x, 2) for x in load]
        results[store]["loadAfter"] = [round(x, 2) for x in os.getloadavg()]
        results[store]["seconds"] = round(time.monotonic() - started)
        print(f"{store}: {json.dumps(results[store])}", flush=True)
    print(heldTable(results, options) if options.held else table(results, options))
    print("MARCONI-DEPTH " + json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
