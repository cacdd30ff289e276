"""
Long-polling against polling, and what idle waiters cost (docs/longpoll.rst).

    python bench/longpoll.py consumers --messages 200 --consumers 4
    python bench/longpoll.py idle --waiters 10000

C{consumers} starts a node (SQLite) and, for each mode, a producer that
posts one message every C{--gap} seconds (its body is the time it was
sent, on this machine's monotonic clock) to a fresh queue, and
C{--consumers} consumers that claim one message at a time and delete it:

  - C{longpoll}: C{POST .../claims?limit=1&wait=W}, again at once after
    every answer;
  - C{poll-I}: C{POST .../claims?limit=1}, sleeping I seconds after an
    empty answer (for each I of C{--intervals}).

It reports, per mode, the claim requests per delivered message and the
latency from post to delivery (the claim's answer) in milliseconds.

C{idle} starts a node allowing C{--waiters} waiters, measures its resident
memory (VmRSS) after a few ordinary requests, opens C{--waiters}
connections each holding one waiting listing (C{wait=300}) spread over
C{--queues} queues, measures its RSS and CPU time over C{--idle} seconds
while they wait, then wakes them all with one post per queue and checks
that every listing was answered with its message.

Each prints one line C{MARCONI-LONGPOLL <json>}.  Run on a quiet machine;
numbers from a shared one say little about speed (they still count
requests).
"""

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from driver import Client, percentile, processesCPU  # noqa: E402
from run import Servers, startNode  # noqa: E402

PROJECT = "bench-longpoll"


def nodeOptions(workdir: str, limits: dict) -> argparse.Namespace:
    """
    The options L{run.startNode} reads, for a SQLite node with C{limits}.
    """
    config = os.path.join(workdir, "longpoll.ini")
    with open(config, "w") as f:
        f.write("[limits]\n")
        for name, value in limits.items():
            f.write(f"{name} = {value}\n")
    return argparse.Namespace(
        storage=None, node_args=f"--config {config}", server_cpus=None
    )


def rss(pid: int) -> int:
    """
    The resident memory of process C{pid}, in KiB.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def client(url: str, timeout: float, clientId: str = "") -> Client:
    host, port = url.rsplit("//", 1)[1].split(":")
    return Client(
        asyncio.get_running_loop(),
        host,
        int(port),
        PROJECT,
        clientId or str(uuid.uuid4()),
        timeout,
    )


async def produce(url: str, queue: str, count: int, gap: float) -> None:
    producer = client(url, 30)
    path = f"/v2/queues/{queue}/messages".encode()
    for _ in range(count):
        body = json.dumps({"messages": [{"ttl": 600, "body": time.monotonic()}]})
        status, answer = await producer.send(
            producer.build(b"POST", path, body.encode())
        )
        if status != 201:
            raise SystemExit(f"post failed: {status} {answer[:200]!r}")
        await asyncio.sleep(gap)
    producer.close()


async def consume(
    url: str, queue: str, wait: int, interval: float, state: dict
) -> None:
    consumer = client(url, wait + 30)
    query = f"?limit=1&wait={wait}" if wait else "?limit=1"
    claim = consumer.build(
        b"POST", f"/v2/queues/{queue}/claims{query}".encode(), b'{"ttl":60}'
    )
    while state["delivered"] < state["expected"]:
        status, body = await consumer.send(claim)
        state["requests"] += 1
        if status == 204:
            if interval:
                await asyncio.sleep(interval)
            continue
        if status != 201:
            raise SystemExit(f"claim failed: {status} {body[:200]!r}")
        now = time.monotonic()
        for message in json.loads(body)["messages"]:
            state["latencies"].append((now - message["body"]) * 1000)
            state["delivered"] += 1
            path = message["href"].encode()
            status, _ = await consumer.send(consumer.build(b"DELETE", path))
            if status != 204:
                raise SystemExit(f"delete failed: {status}")
    consumer.close()


async def runMode(url: str, options, wait: int, interval: float) -> dict:
    queue = "lp-" + uuid.uuid4().hex[:12]
    state = {
        "requests": 0,
        "delivered": 0,
        "expected": options.messages,
        "latencies": [],
    }
    consumers = [
        asyncio.ensure_future(consume(url, queue, wait, interval, state))
        for _ in range(options.consumers)
    ]
    # Let the consumers find the queue empty first.
    await asyncio.sleep(1)
    await produce(url, queue, options.messages, options.gap)
    done, pending = await asyncio.wait(consumers, timeout=wait + 60)
    for task in pending:
        task.cancel()
    for task in done:
        task.result()
    latencies = sorted(state["latencies"])
    return {
        "mode": f"longpoll-{wait}" if wait else f"poll-{interval}",
        "delivered": state["delivered"],
        "claimRequests": state["requests"],
        "requestsPerMessage": round(state["requests"] / max(state["delivered"], 1), 2),
        "latencyMs": {
            "p50": round(percentile(latencies, 0.5), 1),
            "p99": round(percentile(latencies, 0.99), 1),
            "max": round(latencies[-1], 1) if latencies else None,
        },
    }


async def consumers(url: str, options) -> dict:
    results = [await runMode(url, options, options.wait, 0)]
    for interval in options.intervals:
        results.append(await runMode(url, options, 0, interval))
    return {
        "messages": options.messages,
        "gap": options.gap,
        "consumers": options.consumers,
        "modes": results,
    }


async def idle(url: str, pid: int, options) -> dict:
    warm = client(url, 30)
    for i in range(20):
        await warm.send(warm.build(b"GET", f"/v2/queues/warm{i}/messages".encode()))
    await asyncio.sleep(2)
    before = rss(pid)
    queues = [f"idle{i}" for i in range(options.queues)]
    waiters = [client(url, 400) for _ in range(options.waiters)]
    pending = []
    for i, waiter in enumerate(waiters):
        path = f"/v2/queues/{queues[i % len(queues)]}/messages?wait=300"
        pending.append(
            asyncio.ensure_future(waiter.send(waiter.build(b"GET", path.encode())))
        )
        if i % 50 == 49:
            # Let the node accept the connections: past its listen backlog
            # (50) the kernel drops them, and they come back seconds later.
            await asyncio.sleep(0.1)
    await asyncio.sleep(options.settle)
    cpuStart = processesCPU([pid])
    await asyncio.sleep(options.idle)
    cpuIdle = processesCPU([pid]) - cpuStart
    during = rss(pid)
    answeredEarly = sum(task.done() for task in pending)
    poster = client(url, 30, str(uuid.uuid4()))
    wakeStart = time.monotonic()
    for queue in queues:
        body = b'{"messages":[{"ttl":600,"body":"wake"}]}'
        await poster.send(
            poster.build(b"POST", f"/v2/queues/{queue}/messages".encode(), body)
        )
    answers = await asyncio.gather(*pending, return_exceptions=True)
    wakeSeconds = time.monotonic() - wakeStart
    failed = [a for a in answers if isinstance(a, BaseException)]
    woken = sum(
        1
        for a in answers
        if not isinstance(a, BaseException) and a[0] == 200 and b'"wake"' in a[1]
    )
    for waiter in waiters:
        waiter.close()
    await asyncio.sleep(2)
    return {
        "waiters": options.waiters,
        "queues": options.queues,
        "rssBeforeKiB": before,
        "rssWaitingKiB": during,
        "perWaiterBytes": round((during - before) * 1024 / options.waiters),
        "cpuSecondsWhileIdle": round(cpuIdle, 3),
        "idleSeconds": options.idle,
        "answeredBeforeWake": answeredEarly,
        "wokenWithMessage": woken,
        "failed": len(failed),
        "failures": sorted({repr(e) for e in failed})[:5],
        "secondsToWakeAll": round(wakeSeconds, 2),
        "rssAfterKiB": rss(pid),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("consumers", help="long-polling against polling consumers")
    c.add_argument("--messages", type=int, default=200)
    c.add_argument("--gap", type=float, default=0.05, help="seconds between posts")
    c.add_argument("--consumers", type=int, default=4)
    c.add_argument("--wait", type=int, default=20)
    c.add_argument(
        "--intervals",
        type=lambda text: [float(x) for x in text.split(",")],
        default=[1.0, 0.1],
        help="polling intervals to compare, comma-separated",
    )
    i = sub.add_parser("idle", help="memory and CPU of idle waiters")
    i.add_argument("--waiters", type=int, default=10000)
    i.add_argument("--queues", type=int, default=100)
    i.add_argument("--idle", type=float, default=10.0, help="seconds measured idle")
    i.add_argument("--settle", type=float, default=5.0)
    options = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    workdir = tempfile.mkdtemp(prefix="marconi-longpoll-")
    servers = Servers(workdir)
    limits = {"max_wait": 300, "max_waiters": 20000}
    try:
        target = startNode(servers, nodeOptions(workdir, limits), "sqlite")
        if options.what == "consumers":
            report = asyncio.run(consumers(target.url, options))
        else:
            report = asyncio.run(idle(target.url, target.pids[0], options))
    finally:
        servers.stop()
    report["what"] = options.what
    print("MARCONI-LONGPOLL " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
