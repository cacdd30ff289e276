"""
The Redis driver alone: CPU time of the node's process per store call.

    python bench/redisdriver.py [--seconds 3] [--concurrency 16] [--json FILE]

It starts a C{redis-server} (append-only file fsynced every second, as
docs/storage-redis.rst recommends; on CPU 1 when there are two), opens a
L{RedisStore} on it in this process (on CPU 0) and runs each operation from
C{--concurrency} loops at once for C{--seconds}: post 1, post 10, list 10,
claim 10 then delete each, claim 10 then one bulk delete.  For each it
prints calls/s and the process's CPU microseconds per call (user + system,
from C{os.times}), which is what the driver costs the node: redis-server's
own time is not in it, and other load on the machine changes it much less
than it changes a rate.  redis-server's own CPU time per call (from
C{/proc}) is printed beside it, with the commands it ran per call and the
microseconds it spent in scripts (C{INFO commandstats} deltas).  Whether txredisapi parses replies with hiredis is
printed too (it does when C{hiredis} can be imported).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# bench/profile.py would hide the standard library's profile module.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.dirname(HERE))

import cProfile  # noqa: E402

from twisted.internet import defer, task  # noqa: E402

from bench.run import Servers, parseOptions, startRedis  # noqa: E402
from marconi.core.models import ClaimSpec, MessageQuery, NewMessage  # noqa: E402
from marconi.storage.redis.store import makeStore  # noqa: E402

BODY = json.dumps({"event": "bench", "n": 1, "payload": "x" * 64})


def cpu() -> float:
    t = os.times()
    return t.user + t.system


async def post(store, queue, n):
    messages = [NewMessage(body=BODY, ttl=3600) for _ in range(n)]
    await store.postMessages("bench", queue, messages, "c" * 32, time.time())
    return n


async def list10(store, queue):
    query = MessageQuery(limit=10, clientId="c" * 32, echo=True)
    found = await store.listMessages("bench", queue, query, time.time())
    return len(found)


async def claim(store, queue, bulk):
    now = time.time()
    spec = ClaimSpec(ttl=300, grace=60, limit=10)
    c = await store.createClaim("bench", queue, spec, now)
    if c is None:
        return 0
    if bulk:
        ids = [m.id for m in c.messages]
        await store.deleteMessages("bench", queue, ids, [c.id], now)
    else:
        for m in c.messages:
            await store.deleteMessage("bench", queue, m.id, c.id, now)
    return len(c.messages)


async def seed(store, queue, count):
    batches = [min(100, count - start) for start in range(0, count, 100)]

    async def poster():
        while batches:
            await post(store, queue, batches.pop())

    await defer.gatherResults(
        [defer.Deferred.fromCoroutine(poster()) for _ in range(8)]
    )


def loadAverage() -> str:
    """
    The machine's load averages, as text.
    """
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def serverCPU(pid: int) -> float:
    """
    The CPU seconds (user + system) process C{pid} has used so far.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def commandStats(store) -> tuple:
    """
    The commands redis-server has run so far and the microseconds it spent
    in them (C{INFO commandstats}), by command, and in all.
    """
    info = await store._call("execute_command", "INFO", "commandstats")
    if isinstance(info, bytes):
        info = info.decode()
    stats = {}
    for name, calls, usec in re.findall(r"cmdstat_(\w+):calls=(\d+),usec=(\d+)", info):
        stats[name] = (int(calls), int(usec))
    return stats


async def measure(reactor, store, redisPid, name, op, seconds, concurrency):
    done = {"calls": 0, "items": 0}
    stop = reactor.seconds() + seconds

    async def loop():
        while reactor.seconds() < stop:
            items = await op()
            done["calls"] += 1
            done["items"] += items
            if not items and name.startswith("claim"):
                return

    statsBefore = await commandStats(store)
    serverBefore = serverCPU(redisPid)
    before, wall = cpu(), time.monotonic()
    await defer.gatherResults(
        [defer.Deferred.fromCoroutine(loop()) for _ in range(concurrency)]
    )
    used, wall = cpu() - before, time.monotonic() - wall
    server = serverCPU(redisPid) - serverBefore
    statsAfter = await commandStats(store)
    calls = max(done["calls"], 1)
    # The INFO of the second reading is counted; one call among thousands.
    commands = {
        command: (
            (count - statsBefore.get(command, (0, 0))[0]) / calls,
            (usec - statsBefore.get(command, (0, 0))[1]) / calls,
        )
        for command, (count, usec) in statsAfter.items()
        if command != "info"
    }
    return {
        "operation": name,
        "calls": done["calls"],
        "calls/s": round(done["calls"] / wall),
        "items/s": round(done["items"] / wall),
        "cpu us/call": round(1e6 * used / calls, 1),
        "cpu %": round(100 * used / wall),
        "redis us/call": round(1e6 * server / calls, 1),
        "commands/call": round(sum(c for c, _ in commands.values()), 2),
        # A script's time includes the commands it ran, counted again on
        # their own lines: only the scripts' own lines are summed.
        "script us/call": round(
            sum(u for c, (_, u) in commands.items() if c in ("eval", "evalsha")), 1
        ),
        "commands": {
            command: round(count, 2)
            for command, (count, _) in commands.items()
            if count >= 0.01
        },
    }


async def run(reactor, options):
    try:
        import hiredis  # noqa: F401

        parser = "hiredis"
    except ImportError:
        parser = "python"
    workdir = tempfile.mkdtemp(prefix="marconi-redisdriver-")
    servers = Servers(workdir)
    # The redis-server of bench/run.py, with its persistence settings.
    redisOptions = parseOptions(["--server-cpus", options.redis_cpus])
    port, redisPid = startRedis(servers, redisOptions)
    store = makeStore(f"redis://127.0.0.1:{port}/0?poolsize=4", reactor)
    store.startService()
    results = []
    try:
        await store.whenPersistenceChecked()
        seconds, conc = options.seconds, options.concurrency
        claims = options.claim_seed
        plan = [
            ("post 1", lambda: post(store, "p1", 1), 0),
            ("post 10", lambda: post(store, "p10", 10), 0),
            ("list 10", lambda: list10(store, "l10"), 200),
            ("claim 10 + delete each", lambda: claim(store, "ce", False), claims),
            ("claim 10 + bulk delete", lambda: claim(store, "cb", True), claims),
        ]
        queues = {"list 10": "l10", "claim 10 + delete each": "ce"}
        queues["claim 10 + bulk delete"] = "cb"
        for name, op, seeded in plan:
            if seeded:
                await seed(store, queues[name], seeded)
            results.append(
                await measure(reactor, store, redisPid, name, op, seconds, conc)
            )
    finally:
        await store.stopService()
        servers.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    load = loadAverage()
    print(
        f"parser: {parser}; concurrency {options.concurrency}; "
        f"pid {os.getpid()}; load average {load}"
    )
    for r in results:
        print(
            "{operation:24} {calls/s:>7} calls/s {items/s:>7} items/s "
            "{cpu us/call:>8} us CPU/call  {cpu %:>3}% CPU  "
            "{redis us/call:>7} us redis-server CPU/call "
            "({commands/call} commands, {script us/call} us in scripts: "
            "{commands})".format(**r)
        )
    if options.json:
        with open(options.json, "a") as f:
            f.write(json.dumps({"parser": parser, "results": results}) + "\n")


def listRequest(queue: str, host: str = "127.0.0.1:8888") -> bytes:
    """
    The request bench/wrk/list.lua sends: list 10, echo on.
    """
    from bench.postcost import CLIENT_ID, PROJECT

    return (
        b"GET /v2/queues/%s/messages?limit=10&echo=true HTTP/1.1\r\n"
        b"Host: %s\r\nX-Project-ID: %s\r\nClient-ID: %s\r\n"
        b"Accept: application/json\r\n\r\n"
        % (queue.encode(), host.encode(), PROJECT.encode(), CLIENT_ID.encode())
    )


async def nodeRound(site, request: bytes, count: int, concurrency: int, want: bytes):
    """
    C{count} requests from C{concurrency} in-memory connections; the
    process's CPU seconds they took.
    """
    from bench.postcost import Round

    r = Round(request, count, concurrency)
    before = os.times()
    r.startInMemory(site)
    statuses = await r.done
    after = os.times()
    if set(statuses) != {want}:
        raise RuntimeError(f"unexpected answers: {statuses}")
    return after.user - before.user, after.system - before.system


async def runNode(reactor, options):
    """
    C{--node}: list 10 through a whole node on Redis and on SQLite.
    """
    import statistics

    from bench.postcost import buildNode, postRequest

    workdir = tempfile.mkdtemp(prefix="marconi-redisdriver-")
    servers = Servers(workdir)
    redisOptions = parseOptions(["--server-cpus", options.redis_cpus])
    port, redisPid = startRedis(servers, redisOptions)
    storages = {
        "redis": f"redis://127.0.0.1:{port}/0",
        "sqlite": "sqlite:" + os.path.join(workdir, "node.sqlite"),
    }
    storages = {name: storages[name] for name in options.stores.split(",")}
    nodes, sites = [], {}
    times: dict = {name: [] for name in storages}
    kernel: dict = {name: [] for name in storages}
    redisTimes: list = []
    profiles = {name: cProfile.Profile(time.thread_time) for name in storages}
    request = listRequest("l10")
    try:
        for name, storage in storages.items():
            node, site = buildNode(storage, os.path.join(workdir, f"{name}.log"))
            node.startService()
            nodes.append(node)
            sites[name] = site
            await nodeRound(site, postRequest("l10", 10), 20, 1, b"201")
            await nodeRound(site, request, options.requests // 4, 16, b"200")
        for _ in range(options.repeat):
            for name, site in sites.items():
                server = serverCPU(redisPid)
                if options.profile:
                    profiles[name].enable()
                user, system = await nodeRound(
                    site, request, options.requests, options.concurrency, b"200"
                )
                profiles[name].disable()
                times[name].append(1e6 * (user + system) / options.requests)
                kernel[name].append(1e6 * system / options.requests)
                if name == "redis":
                    server = serverCPU(redisPid) - server
                    redisTimes.append(1e6 * server / options.requests)
    finally:
        for node in nodes:
            await node.stopService()
        servers.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    load = loadAverage()
    print(
        f"list 10 through a node: {options.requests} requests x {options.repeat}, "
        f"concurrency {options.concurrency}; load average {load}"
    )
    for name, rows in times.items():
        print(
            f"{name:7} node CPU us/request: median {statistics.median(rows):7.1f} "
            f"least {min(rows):7.1f} (kernel: median "
            f"{statistics.median(kernel[name]):5.1f})"
        )
    if redisTimes:
        print(
            f"redis-server CPU us/request: median {statistics.median(redisTimes):.1f}"
        )
    if options.profile:
        for name, profile in profiles.items():
            profile.dump_stats(f"{options.profile}.{name}.pstats")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", help="append the results as one JSON line")
    parser.add_argument(
        "--claim-seed",
        type=int,
        default=30000,
        help="messages posted before each claim operation (a claim scenario "
        "stops early when its queue runs dry)",
    )
    parser.add_argument(
        "--node", action="store_true", help="list 10 through a whole node"
    )
    parser.add_argument("--requests", type=int, default=3000, help="with --node")
    parser.add_argument("--repeat", type=int, default=5, help="with --node")
    parser.add_argument("--profile", metavar="PREFIX", help="with --node")
    parser.add_argument(
        "--stores", default="redis,sqlite", help="with --node: which to measure"
    )
    parser.add_argument("--cpus", default="0", help="taskset list for this process")
    parser.add_argument("--redis-cpus", default="1")
    options = parser.parse_args()
    if options.cpus and hasattr(os, "sched_setaffinity") and os.cpu_count() > 1:
        os.sched_setaffinity(0, {int(c) for c in options.cpus.split(",")})
    main = runNode if options.node else run
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, options)))


if __name__ == "__main__":
    main()
