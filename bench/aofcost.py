"""
What a claim of 10 and a bulk delete cost redis-server: bytes appended to
its append-only file and its CPU time, per cycle, through a whole node.

    python bench/aofcost.py [--cycles 2000] [--repeat 3] [--ttl 3600] [--root DIR]
    python bench/aofcost.py --compare /tmp/before . --runs 2

It starts a C{redis-server} with the append-only file of bench/run.py
(fsynced every second) but with automatic rewrites off, so the file only
grows, builds a node on it in this process (as bench/postcost.py does,
with the audit river on as a node has it), fills a queue with posts of 10
and then runs C{--cycles} cycles of the C{claim-bulk} scenario of
bench/run.py (claim 10, then delete them with one
C{DELETE .../messages?ids=...}) from C{--concurrency} in-memory
connections.  For each round it prints the file's growth per cycle
(C{aof_current_size} of C{INFO persistence}), redis-server's CPU
microseconds per cycle (C{used_cpu_user} + C{used_cpu_sys} of C{INFO
cpu}), and which commands the appended bytes are, by command and kind of
key, with the audit river's records apart (decoded from the file itself).
The bytes are what sets how often an automatic rewrite runs in
bench/run.py, and so what the rewrites cost per request.

C{--root DIR} measures the C{marconi} of another checkout; C{--compare A
B} runs this file with each in turn, C{--runs} times, and prints both.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# bench/profile.py would hide the standard library's profile module.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402


def _parse(argv: list) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=2000, help="per round")
    parser.add_argument("--warmup", type=int, default=200, help="cycles before")
    parser.add_argument("--repeat", type=int, default=3, help="rounds")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="fill one queue with this many messages first, in posts of 100, "
        "as bench/run.py does (150000 for claim-bulk), and run every round "
        "on it (default: a queue per round, just large enough)",
    )
    parser.add_argument(
        "--ttl",
        type=int,
        default=3600,
        help="of the messages (3600 as in bench/run.py; below 360, the claims "
        "of 300 s with a grace of 60 s keep them alive longer)",
    )
    parser.add_argument(
        "--root", default=os.path.dirname(HERE), help="the checkout to measure"
    )
    parser.add_argument("--cpus", default="0", help="this process's CPUs")
    parser.add_argument("--redis-cpus", default="1", help="redis-server's CPUs")
    parser.add_argument(
        "--redis-args", default="", help="more arguments for redis-server"
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("ROOT_A", "ROOT_B"),
        help="run this with each checkout in turn, --runs times",
    )
    parser.add_argument("--runs", type=int, default=2, help="with --compare")
    parser.add_argument("--json", action="store_true", help="one JSON line too")
    return parser.parse_args(argv)


OPTIONS = _parse(sys.argv[1:]) if __name__ == "__main__" else None
if OPTIONS is not None and not OPTIONS.compare:
    sys.path.insert(0, os.path.abspath(OPTIONS.root))
sys.path.insert(1, os.path.dirname(HERE))

from twisted.internet import reactor, task  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402

#: Where a queue prefix holds the audit river's name (length-prefixed).
RIVER_MARK = "6:~audit"

_SUFFIX = re.compile(r":(h|c|cm):[0-9a-f]{32}$|:(n|m|f|cl|x|d|cs|q|meta)$")


def keyKind(key: str) -> str:
    """
    What kind of key C{key} is: its suffix in the key layout
    (L{marconi.storage.redis.lua}), or the key itself for a global one.
    """
    found = _SUFFIX.search(key)
    if found is None or not key.startswith(("marconi:q:", "marconi:p:")):
        return key
    return ":" + (found.group(1) or found.group(2))


def commands(data: bytes):
    """
    The commands of a stretch of an append-only file, each as its list of
    arguments (bytes) and its size in the file.
    """
    at = 0
    while at < len(data):
        if data[at : at + 1] != b"*":
            raise ValueError(f"not a command at {at}: {data[at : at + 20]!r}")
        end = data.index(b"\r\n", at)
        count = int(data[at + 1 : end])
        start, at = at, end + 2
        args = []
        for _ in range(count):
            end = data.index(b"\r\n", at)
            size = int(data[at + 1 : end])
            args.append(data[end + 2 : end + 2 + size])
            at = end + 2 + size + 2
        yield args, at - start


def breakdown(data: bytes) -> dict:
    """
    The bytes of C{data} (a stretch of an append-only file) by command and
    kind of key, the audit river's apart.
    """
    sizes: dict = {}
    for args, size in commands(data):
        name = args[0].decode().upper()
        key = args[1].decode("utf-8", "replace") if len(args) > 1 else ""
        river = any(RIVER_MARK.encode() in a for a in args[1:])
        label = ("river " if river else "") + name + " " + keyKind(key)
        sizes[label] = sizes.get(label, 0) + size
    return sizes


def aofFile(workdir: str) -> str:
    """
    The file redis-server appends to now (Redis 7: the newest incremental
    file of its append-only directory).
    """
    found = glob.glob(os.path.join(workdir, "appendonlydir", "*.incr.aof"))
    if not found:
        raise SystemExit("redis-server wrote no append-only file")
    return max(found, key=lambda p: int(p.rsplit(".", 3)[-3]))


def info(store, section: str) -> dict:
    text = store.command("INFO", section)
    values = {}
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        if colon:
            values[name] = value.strip()
    return values


def commandStats(store) -> dict:
    """
    The calls and microseconds of each command redis-server ran so far.
    """
    stats = {}
    for name, value in info(store, "commandstats").items():
        fields = dict(part.split("=") for part in value.split(","))
        stats[name[len("cmdstat_") :]] = (int(fields["calls"]), int(fields["usec"]))
    return stats


def serverCPU(store) -> float:
    cpu = info(store, "cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def settle(seconds: float = 0.3) -> None:
    # The audit river's writes of the last cycles are in flight.
    await task.deferLater(reactor, seconds, lambda: None)


async def run(o) -> dict:
    from bench.postcost import (
        BulkDeleter,
        Round,
        buildNode,
        messages,
        readRequest,
        request,
    )
    from bench.run import RedisStore, Servers, parseOptions, startRedis

    workdir = tempfile.mkdtemp(prefix="marconi-aofcost-")
    servers = Servers(workdir)
    options = parseOptions(
        [
            "--store-cpus",
            o.redis_cpus,
            "--redis-args",
            "--appendonly yes --appendfsync everysec --auto-aof-rewrite-percentage 0 "
            + o.redis_args,
        ]
    )
    port, pid = startRedis(servers, options)
    store = RedisStore(port, None)
    rounds = []
    node = None
    try:
        node, site = buildNode(
            f"redis://127.0.0.1:{port}/0", os.path.join(workdir, "node.log")
        )
        node.startService()
        if o.seed:
            # As bench/run.py seeds its claim queue: posts of 100.
            need = 10 * (o.warmup + o.repeat * o.cycles + o.concurrency)
            body = messages(100).replace(b'"ttl":3600', b'"ttl":%d' % o.ttl)
            fill = Round(
                request(b"POST", "claimbulk10", b"messages", body, "127.0.0.1:8888"),
                -(-max(o.seed, need) // 100),
                o.concurrency,
            )
            fill.startInMemory(site)
            await fill.done
        for index in range(o.repeat + 1):
            cycles = o.cycles if index else o.warmup
            queue = "claimbulk10" if o.seed else f"claimbulk10-{index}"
            if not o.seed:
                # As bench/postcost.py fills a claim queue, with --ttl.
                body = messages(10).replace(b'"ttl":3600', b'"ttl":%d' % o.ttl)
                fill = Round(
                    request(b"POST", queue, b"messages", body, "127.0.0.1:8888"),
                    cycles + o.concurrency,
                    o.concurrency,
                )
                fill.startInMemory(site)
                await fill.done
            await settle()
            path = aofFile(workdir)
            offset = os.path.getsize(path)
            size = int(info(store, "persistence")["aof_current_size"])
            cpu = serverCPU(store)
            stats = commandStats(store)
            if index:
                # For a profiler of redis-server (its pid is in the line).
                print(f"round {index}: redis-server {pid} runs the cycles", flush=True)
            r = Round(readRequest("claimbulk10", queue), cycles, o.concurrency)
            r.startInMemory(site, lambda r, queue=queue: BulkDeleter(r, queue))
            statuses = await r.done
            if set(statuses) != {b"201"}:
                raise RuntimeError(f"unexpected answers: {statuses}")
            await settle()
            cpu = serverCPU(store) - cpu
            after = commandStats(store)
            calls = {
                name: (
                    round((count - stats.get(name, (0, 0))[0]) / cycles, 2),
                    round((usec - stats.get(name, (0, 0))[1]) / cycles, 1),
                )
                for name, (count, usec) in after.items()
                if name != "info"
            }
            scripts = sum(
                usec - stats.get(name, (0, 0))[1]
                for name, (_, usec) in after.items()
                if name in ("eval", "evalsha")
            )
            grown = int(info(store, "persistence")["aof_current_size"]) - size
            if aofFile(workdir) != path:
                raise RuntimeError("redis-server rewrote its append-only file")
            with open(path, "rb") as f:
                f.seek(offset)
                sizes = breakdown(f.read())
            if index:
                rounds.append(
                    {
                        "bytes": grown / cycles,
                        "cpu_us": 1e6 * cpu / cycles,
                        "by": {k: v / cycles for k, v in sizes.items()},
                        "script_us": scripts / cycles,
                        "calls": {k: v for k, v in calls.items() if v[0] >= 0.01},
                    }
                )
    finally:
        if node is not None:
            await node.stopService()
        store.close()
        servers.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    by: dict = {}
    for r in rounds:
        for k, v in r["by"].items():
            by.setdefault(k, []).append(v)
    return {
        "root": os.path.abspath(o.root),
        "bytes": statistics.median(r["bytes"] for r in rounds),
        "cpu_us": statistics.median(r["cpu_us"] for r in rounds),
        "cpu_us_all": [round(r["cpu_us"], 1) for r in rounds],
        "river_bytes": statistics.median(
            sum(v for k, v in r["by"].items() if k.startswith("river")) for r in rounds
        ),
        "by": {k: statistics.median(v) for k, v in by.items()},
        "script_us": statistics.median(r["script_us"] for r in rounds),
        "calls": rounds[-1]["calls"],
    }


def show(result: dict) -> None:
    print(
        f"root {result['root']}: {result['bytes']:.0f} AOF bytes/cycle "
        f"(audit river {result['river_bytes']:.0f}), redis-server "
        f"{result['cpu_us']:.1f} us CPU/cycle {result['cpu_us_all']}, "
        f"{result['script_us']:.1f} us in scripts"
    )
    print(
        "  commands/cycle (calls, us): "
        + ", ".join(f"{k} {c:g} {u:g}" for k, (c, u) in result["calls"].items())
    )
    for label, size in sorted(result["by"].items(), key=lambda kv: -kv[1]):
        print(f"  {size:8.0f}  {label}")


def compare(o) -> None:
    results: dict = {root: [] for root in o.compare}
    for _ in range(o.runs):
        for root in o.compare:
            argv = [sys.executable, os.path.abspath(__file__), "--root", root]
            for name in (
                "cycles",
                "warmup",
                "repeat",
                "concurrency",
                "cpus",
                "ttl",
                "seed",
            ):
                argv += ["--" + name, str(getattr(o, name))]
            argv += ["--redis-cpus", o.redis_cpus, "--redis-args=" + o.redis_args]
            argv += ["--json"]
            out = subprocess.run(argv, capture_output=True, text=True, check=True)
            line = [x for x in out.stdout.splitlines() if x.startswith("AOFCOST ")]
            result = json.loads(line[-1][len("AOFCOST ") :])
            results[root].append(result)
            show(result)
    for root, rows in results.items():
        print(
            f"{root}: median {statistics.median(r['bytes'] for r in rows):.0f} "
            f"bytes/cycle, {statistics.median(r['cpu_us'] for r in rows):.1f} "
            f"us redis CPU/cycle"
        )


if __name__ == "__main__":
    assert OPTIONS is not None
    if OPTIONS.compare:
        compare(OPTIONS)
    else:
        out: dict = {}

        async def go(_: object) -> None:
            out.update(await run(OPTIONS))

        if (
            OPTIONS.cpus
            and hasattr(os, "sched_setaffinity")
            and (os.cpu_count() or 1) > 1
        ):
            os.sched_setaffinity(0, {int(c) for c in OPTIONS.cpus.split(",")})
        try:
            task.react(lambda r: Deferred.fromCoroutine(go(r)))
        except SystemExit as e:
            if e.code:
                raise
        show(out)
        if OPTIONS.json:
            print("AOFCOST " + json.dumps(out))
