"""
Forwarding cost and cluster throughput on this machine.

Two measurements, each on nodes it starts itself (pinned with C{taskset} to
C{--server-cpus}, the load on C{--client-cpus}):

 - C{cost}: the server CPU (from C{/proc}, every node process) per request
   of C{post 1}, C{list 10} and C{claim 10}, local (sent to the owner) and
   forwarded (sent to node C{a}, owned by C{b}), over a fixed number of
   requests, repeated C{--repeat} times (the median is kept);
 - C{throughput}: requests per second of 1, 2 and 3 nodes with ring-aware
   clients (each request sent to the queue's owner, computed with
   L{marconi.cluster.ring.Ring}) and with random-entry clients (each
   request sent to a node picked at random).

::

    python bench/cluster.py cost --json bench/cluster-cost.json
    python bench/cluster.py throughput --nodes 1,2,3
    python bench/capacity.py bench/cluster-cost.json

The load is our asyncio driver (L{driver.Client}): one keep-alive
connection per virtual user and node.

The nodes share C{--server-cpus}, so a forwarded request also pays for the
kernel switching between the relaying and the owning process: each packet
one sends wakes the other, which may preempt it.  C{--sched-batch} runs the
nodes with the C{SCHED_BATCH} policy, under which a woken node waits for
the running one's turn to end: closer to nodes on their own cores, where
the two hops never take turns on one core.  Each row says, per request and
node, how often the node waited (voluntary context switches: it had
nothing to do, and something woke it again) and how often it was
preempted (involuntary): a forwarded request costs the most when the relay
waits for nearly every packet and each wakes it in the middle of the
owner's turn.
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from driver import Client, messagesBody, processesCPU  # noqa: E402
from run import ROOT, Servers, freePort, pinned, waitForPort  # noqa: E402

from marconi.cluster.ring import Ring, key  # noqa: E402

NAMES = "abcdefgh"
PROJECT = "bench"
OPS = ("post1", "list10", "claim10")
CLAIM = json.dumps({"ttl": 300, "grace": 60}).encode()


_PROFILED = """
import cProfile, sys, time
from twisted.internet import reactor
from twisted.scripts.twistd import run
profile = cProfile.Profile(time.thread_time)
def dump():
    profile.disable()
    profile.dump_stats(%r)
reactor.addSystemEventTrigger("after", "shutdown", dump)
sys.argv[0] = "twistd"
profile.enable()
run()
"""


def twistd() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "twistd")
    return here if os.path.exists(here) else shutil.which("twistd") or "twistd"


class Cluster:
    """
    C{n} nodes named C{a}, C{b}, ... on free ports, each with its own SQLite
    file in C{workdir}; one node runs without cluster settings.
    """

    def __init__(
        self,
        servers: Servers,
        n: int,
        cpus: str,
        root: str = ROOT,
        label: str = "",
        batch: bool = False,
    ):
        self.names = NAMES[:n]
        self.ports = {name: freePort() for name in self.names}
        self.ring = Ring(list(self.names))
        self.pids: dict = {}
        self.logs: dict = {}
        workdir = servers.workdir
        secret = os.path.join(workdir, f"{label}secret")
        with open(secret, "w") as f:
            f.write(os.urandom(32).hex())
        members = []
        for name, port in self.ports.items():
            members += ["--cluster-node", f"{name}=http://127.0.0.1:{port}"]
        env = dict(os.environ, PYTHONPATH=root)
        started = []
        for name, port in self.ports.items():
            command = [
                twistd(),
                "-n",
                "--pidfile=",
                "marconi",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--storage",
                "sqlite:" + os.path.join(workdir, f"{label}{name}-{n}.sqlite3"),
            ]
            profile = os.environ.get("MARCONI_BENCH_PROFILE")
            if profile:
                # cProfile statistics of each node's reactor thread, timed
                # by its CPU time, written when it stops.
                where = os.path.join(profile, f"{label}{name}-{n}.prof")
                command = [sys.executable, "-c", _PROFILED % where, *command[1:]]
            if n > 1:
                command += ["--node-name", name, *members]
                command += ["--cluster-secret-file", secret]
            command = pinned(cpus, command)
            if batch:
                # SCHED_BATCH: a node woken by another does not preempt it.
                command = ["chrt", "--batch", "0", *command]
            process, log = servers.start(f"{label}{name}-{n}", command, env)
            started.append((name, port, process, log))
        for name, port, process, log in started:
            waitForPort(port, process, time.monotonic() + 60, log)
            self.pids[name] = process.pid
            self.logs[name] = log

    def owner(self, queue: str) -> str:
        return self.ring.owner(key(PROJECT, queue))

    def queues(self, owner: str, count: int, prefix: str) -> list:
        """
        C{count} fresh queue names that C{owner} owns.
        """
        found = []
        i = 0
        while len(found) < count:
            name = f"{prefix}{i}"
            i += 1
            if self.owner(name) == owner:
                found.append(name)
        return found

    def cpu(self) -> dict:
        return {name: processesCPU([pid]) for name, pid in self.pids.items()}

    def switches(self) -> dict:
        return {name: processSwitches(pid) for name, pid in self.pids.items()}


def processSwitches(pid: int) -> tuple:
    """
    The context switches of all the threads of C{pid} so far: voluntary
    (it waited: for a socket, a lock, its database thread) and involuntary
    (another task took the core from it, such as a node woken by a packet
    this one sent).  C{(0, 0)} if it is gone.
    """
    voluntary = involuntary = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return (0, 0)
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/status", "rb") as f:
                status = f.read()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith(b"voluntary_ctxt_switches:"):
                voluntary += int(line.split()[1])
            elif line.startswith(b"nonvoluntary_ctxt_switches:"):
                involuntary += int(line.split()[1])
    return (voluntary, involuntary)


class Load:
    """
    Virtual users, each with one connection per node.
    """

    def __init__(self, cluster: Cluster, users: int):
        loop = asyncio.get_running_loop()
        clientId = str(uuid.uuid4())
        self.cluster = cluster
        self.users = [
            {
                name: Client(loop, "127.0.0.1", port, PROJECT, clientId, 30.0)
                for name, port in cluster.ports.items()
            }
            for _ in range(users)
        ]

    def close(self):
        for clients in self.users:
            for client in clients.values():
                client.close()

    async def send(self, user: int, node: str, method, path, body=b""):
        client = self.users[user][node]
        return await client.send(client.build(method, path, body))

    async def seed(self, node: str, queue: str, messages: int):
        path = f"/v2/queues/{queue}/messages".encode()
        while messages > 0:
            batch = min(100, messages)
            status, body = await self.send(0, node, b"POST", path, messagesBody(batch))
            if status != 201:
                raise RuntimeError(f"seeding {queue}: {status} {body[:200]!r}")
            messages -= batch


def request(op: str, queue: str) -> tuple:
    base = f"/v2/queues/{queue}".encode()
    if op == "post1":
        return b"POST", base + b"/messages", messagesBody(1), 201
    if op == "list10":
        return b"GET", base + b"/messages?limit=10&echo=true", b"", 200
    return b"POST", base + b"/claims?limit=10", CLAIM, 201


async def fixedCount(load: Load, op: str, entry, queues: list, count: int) -> tuple:
    """
    Send C{count} requests of C{op} over all users, user C{i} to
    C{queues[i % len(queues)]} at the node C{entry(queue)}; return
    C{(seconds, failures)}.
    """
    left = count
    failures = 0

    async def user(i: int):
        nonlocal left, failures
        queue = queues[i % len(queues)]
        method, path, body, expected = request(op, queue)
        while left > 0:
            left -= 1
            status, _ = await load.send(i, entry(queue), method, path, body)
            if status != expected:
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(user(i) for i in range(len(load.users))))
    return time.perf_counter() - started, failures


async def prepare(load: Load, op: str, owner: str, queues: list, requests: int):
    """
    Seed the queues for C{op}: 200 messages for listings, enough for
    every claim of 10 to take 10.
    """
    if op == "list10":
        for q in queues:
            await load.seed(owner, q, 200)
    elif op == "claim10":
        per = -(-requests // len(queues)) * 10 + 10 * len(load.users)
        for q in queues:
            await load.seed(owner, q, per)


async def cost(options) -> dict:
    """
    The CPU per request of each checkout in C{options.roots}: one cluster
    each, all running at once, measured in turn (so that every checkout
    sees the same other load).
    """
    servers = Servers(tempfile.mkdtemp(prefix="marconi-cluster-"))
    runs: dict = {
        label: {
            op: {route: [] for route, _ in options.costRoutes} for op in options.costOps
        }
        for label in options.roots
    }
    loads = {}
    try:
        for label, root in options.roots.items():
            cluster = Cluster(
                servers, 3, options.server_cpus, root, label, options.sched_batch
            )
            loads[label] = Load(cluster, options.concurrency)
            await warm(loads[label], cluster)
        for rep in range(options.repeat):
            for op in options.costOps:
                for route, owner in options.costRoutes:
                    for label, load in loads.items():
                        result = await measure(options, load, op, owner, rep)
                        runs[label][op][route].append(result)
                        print(
                            f"rep {rep} {label:10} {op:8} {route:9} "
                            f"{result['us_per_request']:7.0f} us/req "
                            + " ".join(
                                f"{n}={v:.0f}" for n, v in result["by_node"].items()
                            )
                            + f"  {result['req_s']:7.0f} req/s"
                            f"  failures={result['failures']}"
                            + "  waits/preempted "
                            + " ".join(
                                f"{n}={result['waits'][n]:.2f}/"
                                f"{result['preempted'][n]:.2f}"
                                for n in "ab"
                            ),
                            flush=True,
                        )
    finally:
        for load in loads.values():
            load.close()
        servers.stop()
    summary: dict = {
        "loadavg": os.getloadavg(),
        "requests": options.requests,
        "scheduling": "batch" if options.sched_batch else "other",
    }
    for label in options.roots:
        summary[label] = {op: summarise(runs[label][op]) for op in options.costOps}
    return summary


async def measure(options, load: Load, op: str, owner: str, rep: int) -> dict:
    """
    Send C{options.requests} requests of C{op} to node C{a} for queues
    C{owner} owns; the CPU each node spent on them.
    """
    cluster = load.cluster
    queues = cluster.queues(owner, 4, f"c{rep}{op}{owner}")
    await prepare(load, op, owner, queues, options.requests)
    before = cluster.cpu()
    switched = cluster.switches()
    seconds, failures = await fixedCount(
        load, op, lambda q: "a", queues, options.requests
    )
    after = cluster.cpu()
    switches = cluster.switches()
    perNode = {
        n: 1e6 * (after[n] - before[n]) / options.requests for n in cluster.names
    }
    return {
        "us_per_request": sum(perNode.values()),
        "by_node": perNode,
        "req_s": options.requests / seconds,
        "failures": failures,
        # Per request, by node: how often it waited (voluntary switches)
        # and how often another task took the core from it (involuntary).
        "waits": {
            n: (switches[n][0] - switched[n][0]) / options.requests
            for n in cluster.names
        },
        "preempted": {
            n: (switches[n][1] - switched[n][1]) / options.requests
            for n in cluster.names
        },
    }


def summarise(routes: dict) -> dict:
    """
    The medians of the runs of one operation, by route.
    """
    summary = {}
    for route, runs in routes.items():
        summary[route] = {
            "us_per_request": round(
                statistics.median(r["us_per_request"] for r in runs)
            ),
            "by_node": {
                n: round(statistics.median(r["by_node"][n] for r in runs))
                for n in "abc"
            },
            "req_s": round(statistics.median(r["req_s"] for r in runs)),
            "failures": sum(r["failures"] for r in runs),
            "runs": [round(r["us_per_request"]) for r in runs],
            "waits": {
                n: round(statistics.median(r["waits"][n] for r in runs), 2)
                for n in "abc"
            },
            "preempted": {
                n: round(statistics.median(r["preempted"][n] for r in runs), 2)
                for n in "abc"
            },
        }
    return summary


async def warm(load: Load, cluster: Cluster):
    """
    Open every connection (and the relays' pools) before measuring.
    """
    queues = {n: cluster.queues(n, 1, "warm")[0] for n in cluster.names}
    for _ in range(3):
        for i in range(len(load.users)):
            for entry in cluster.names:
                for q in queues.values():
                    await load.send(i, entry, b"GET", f"/v2/queues/{q}/stats".encode())


async def throughput(options) -> list:
    rows = []
    for n in options.nodes:
        servers = Servers(tempfile.mkdtemp(prefix="marconi-cluster-"))
        try:
            cluster = Cluster(
                servers, n, options.server_cpus, options.root, "", options.sched_batch
            )
            load = Load(cluster, options.concurrency)
            try:
                await warm(load, cluster)
                for op in options.ops:
                    for clients in options.clients:
                        if n == 1 and clients == "random-entry":
                            continue
                        rows.append(
                            await throughputRun(options, cluster, load, op, clients)
                        )
                        print(json.dumps(rows[-1]), flush=True)
                if options.health:
                    rows[-1]["health"] = await health(cluster)
            finally:
                load.close()
        finally:
            servers.stop()
    return rows


async def health(cluster: Cluster) -> dict:
    """
    What each node says of its peers after the runs, and how many times its
    log says it marked one down or saw a forwarding fail.
    """
    load = Load(cluster, 1)
    seen = {}
    try:
        for name in cluster.names:
            _, body = await load.send(0, name, b"GET", b"/v2/health")
            states = {
                n["name"]: n["state"]
                for n in json.loads(body).get("cluster", {}).get("nodes", [])
            }
            with open(cluster.logs[name], errors="replace") as f:
                text = f.read()
            seen[name] = {
                "peers": states,
                "marked_down": text.count("is down"),
                "forwarding_failed": text.count(" failed: "),
            }
    finally:
        load.close()
    print(json.dumps(seen), flush=True)
    return seen


async def throughputRun(options, cluster, load, op, clients) -> dict:
    n = len(cluster.names)
    tag = f"t{n}{op}{clients[:4]}{uuid.uuid4().hex[:4]}"
    queues = []
    for owner in cluster.names:
        queues += cluster.queues(owner, options.queues // n, tag)
    budget = int(options.duration * 6000)
    for q in queues:
        await prepare(load, op, cluster.owner(q), [q], budget // len(queues))
    names = cluster.names
    if clients == "ring-aware":
        entry = cluster.owner
    else:
        rng = random.Random(1)
        entry = lambda q: rng.choice(names)  # noqa: E731
    forwarded = 0
    counted = entry

    def counting(q):
        nonlocal forwarded
        node = counted(q)
        forwarded += node != cluster.owner(q)
        return node

    total = 0
    failures = 0
    deadline = time.perf_counter() + options.duration
    before = cluster.cpu()
    started = time.perf_counter()

    async def user(i: int):
        nonlocal total, failures
        queue = queues[i % len(queues)]
        method, path, body, expected = request(op, queue)
        while time.perf_counter() < deadline:
            status, _ = await load.send(i, counting(queue), method, path, body)
            total += 1
            failures += status != expected

    await asyncio.gather(*(user(i) for i in range(len(load.users))))
    seconds = time.perf_counter() - started
    after = cluster.cpu()
    cpu = sum(after.values()) - sum(before.values())
    return {
        "nodes": n,
        "op": op,
        "clients": clients,
        "req_s": round(total / seconds),
        "forwarded_share": round(forwarded / max(1, total), 2),
        "server_cpu_us_per_request": round(1e6 * cpu / max(1, total)),
        "server_cores_busy": round(cpu / seconds, 2),
        "failures": failures,
        "loadavg": os.getloadavg()[0],
    }


def costTable(summary: dict) -> str:
    lines = [
        "| checkout | request | local µs (a) | forwarded µs (a + b) "
        "| forwarded/local CPU | local req/s | forwarded req/s "
        "| waits/preempted a (local) | waits/preempted a + b (forwarded) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, ops in summary.items():
        if not isinstance(ops, dict) or not set(ops) <= set(OPS):
            continue
        for op in ops:
            if set(ops[op]) != {"local", "forwarded"}:
                continue
            local, fwd = ops[op]["local"], ops[op]["forwarded"]
            lines.append(
                f"| {label} | {op} | {local['us_per_request']:,} "
                f"| {fwd['us_per_request']:,} ({fwd['by_node']['a']:,} + "
                f"{fwd['by_node']['b']:,}) "
                f"| {fwd['us_per_request'] / local['us_per_request']:.2f} "
                f"| {local['req_s']:,} | {fwd['req_s']:,} "
                f"| {_switched(local, 'a')} "
                f"| {_switched(fwd, 'a', 'b')} |"
            )
    return "\n".join(lines)


def _switched(route: dict, *nodes: str) -> str:
    """
    The nodes' waits and preemptions per request, each as
    C{waits/preempted} (C{-} for results written before they were
    counted).
    """
    if "waits" not in route:
        return "-"
    return " + ".join(
        f"{route['waits'][n]:.2f}/{route['preempted'][n]:.2f}" for n in nodes
    )


def throughputTable(rows: list) -> str:
    lines = [
        "| nodes | request | clients | req/s | forwarded | server µs/request "
        "| server cores busy |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['nodes']} | {r['op']} | {r['clients']} | {r['req_s']:,} "
            f"| {r['forwarded_share']:.0%} | {r['server_cpu_us_per_request']:,} "
            f"| {r['server_cores_busy']} |"
        )
    return "\n".join(lines)


def parseOptions(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("cost", "throughput"))
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--queues", type=int, default=12)
    parser.add_argument("--nodes", default="1,2,3")
    parser.add_argument("--ops", default="post1,list10")
    parser.add_argument(
        "--cost-ops",
        default=",".join(OPS),
        help="cost: the requests measured (default: all)",
    )
    parser.add_argument(
        "--cost-routes",
        default="local,forwarded",
        help="cost: local (sent to the owner), forwarded (sent to another node)",
    )
    parser.add_argument("--clients", default="ring-aware,random-entry")
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--client-cpus", default="1")
    parser.add_argument("--json", help="write the results there")
    parser.add_argument(
        "--sched-batch",
        action="store_true",
        help="run the nodes with the SCHED_BATCH policy (chrt --batch 0): a node "
        "woken by another's packet waits for the running one's turn to end "
        "instead of preempting it",
    )
    parser.add_argument(
        "--health",
        action="store_true",
        help="after the runs of each cluster, read /v2/health and the logs",
    )
    parser.add_argument(
        "--root",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="a checkout to measure (cost: repeat to compare several in one run; "
        "default: this one)",
    )
    options = parser.parse_args(argv)
    options.nodes = [int(n) for n in options.nodes.split(",")]
    options.ops = options.ops.split(",")
    options.costOps = options.cost_ops.split(",")
    owners = {"local": "a", "forwarded": "b"}
    options.costRoutes = [(r, owners[r]) for r in options.cost_routes.split(",")]
    options.clients = options.clients.split(",")
    # Absolute: the nodes run in their own directories.
    options.roots = {
        label: os.path.abspath(root)
        for label, root in (r.partition("=")[::2] for r in options.root)
    } or {"this": ROOT}
    options.root = next(iter(options.roots.values()))
    return options


def main(argv=None) -> int:
    options = parseOptions(argv)
    # Stop the nodes (the finally clauses) on SIGTERM too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if options.client_cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in options.client_cpus.split(",")})
    print(f"load average before: {os.getloadavg()}", flush=True)
    if options.mode == "cost":
        result = asyncio.run(cost(options))
        print(costTable(result))
    else:
        result = asyncio.run(throughput(options))
        print(throughputTable(result))
    print(f"load average after: {os.getloadavg()}")
    if options.json:
        with open(options.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
