"""
Constant-rate (open-loop) load for Marconi: requests are scheduled at a
fixed rate whatever the server does, over N keep-alive connections, and each
request's latency is measured from the moment it was *scheduled*, so the
time it waited for a free connection (queueing) counts.  This is what "p99
at 80% of saturation" needs; wrk and driver.py are closed-loop (a connection
sends its next request only when the last one answered), which hides
queueing and cannot hold a rate.

    python bench/rate.py --url http://127.0.0.1:8888 --rate 2600 \\
        --scenario post1 --duration 20 --warmup 3 --watch-pid PID

Scenarios: post1, post10 (POST .../messages with 1 or 10 messages), list10
(GET .../messages?limit=10&echo=true on a queue seeded with 200 messages).
Every run uses a fresh queue.  It prints one line C{MARCONI-RATE <json>}:
the rate asked and achieved, latency percentiles (from schedule to answer),
errors, requests still unanswered at the end, the most requests that waited
for a connection at once, and the CPU of this process and of the watched
server pids over the window.  Run it pinned to another CPU than the server
(taskset -c 1).
"""

import argparse
import asyncio
import collections
import json
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from driver import Client, messagesBody, percentile, processesCPU  # noqa: E402


async def seedQueue(loop, options, queue):
    client = Client(
        loop, options.host, options.port, options.project, options.client_id, 10
    )
    path = ("/v2/queues/%s/messages" % (queue,)).encode()
    for _ in range(2):
        status, body = await client.send(client.build(b"POST", path, messagesBody(100)))
        if status != 201:
            raise SystemExit("seeding failed: %r %r" % (status, body[:200]))
    client.close()


async def run(options) -> dict:
    loop = asyncio.get_running_loop()
    queue = "rate-" + uuid.uuid4().hex[:12]
    if options.scenario == "list10":
        await seedQueue(loop, options, queue)
    base = "/v2/queues/%s/messages" % (queue,)
    clients = [Client.fromOptions(loop, options) for _ in range(options.connections)]
    if options.scenario == "list10":
        requests = [
            c.build(b"GET", (base + "?limit=10&echo=true").encode()) for c in clients
        ]
        expected = 200
    else:
        batch = 10 if options.scenario == "post10" else 1
        body = messagesBody(batch)
        requests = [c.build(b"POST", base.encode(), body) for c in clients]
        expected = 201
    idle = collections.deque(range(len(clients)))
    waiting = collections.deque()  # scheduled times waiting for a connection
    latencies = []
    errors = collections.Counter()
    state = {"maxWaiting": 0, "inFlight": 0, "answered": 0}
    clock = time.perf_counter
    interval = 1.0 / options.rate
    begin = clock() + 0.05
    start = begin + options.warmup
    end = start + options.duration

    async def serve(index, scheduled):
        client = clients[index]
        while True:
            state["inFlight"] += 1
            try:
                status, _ = await client.send(requests[index])
                ok = status == expected
                if not ok:
                    errors["status %d" % (status,)] += 1
            except (OSError, ConnectionError, TimeoutError, asyncio.TimeoutError) as e:
                ok = False
                errors[type(e).__name__] += 1
                client.close()
                client.connection = None
            state["inFlight"] -= 1
            if ok and start <= scheduled < end:
                latencies.append(clock() - scheduled)
                state["answered"] += 1
            if not waiting:
                idle.append(index)
                return
            scheduled = waiting.popleft()

    # Open connections before the clock starts.
    for c in clients:
        await c.send(c.build(b"GET", b"/v2/ping"))

    n = 0
    cpu0 = server0 = None
    tasks = set()
    while True:
        now = clock()
        if cpu0 is None and now >= start:
            cpu0 = time.process_time()
            server0 = processesCPU(options.watch_pid)
        if now >= end:
            break
        # Send everything that is due (catching up after a late wake-up).
        while True:
            scheduled = begin + n * interval
            if scheduled > now:
                break
            n += 1
            if idle:
                task = asyncio.ensure_future(serve(idle.popleft(), scheduled))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            else:
                waiting.append(scheduled)
                if scheduled >= start:
                    state["maxWaiting"] = max(state["maxWaiting"], len(waiting))
        await asyncio.sleep(max(0.0, begin + n * interval - clock()))
    cpu1 = time.process_time()
    server1 = processesCPU(options.watch_pid)
    window = clock() - start
    scheduledInWindow = sum(1 for i in range(n) if start <= begin + i * interval < end)
    # Let the requests of the window finish (bounded by the timeout).
    deadline = clock() + options.timeout
    while (tasks or waiting) and clock() < deadline:
        await asyncio.sleep(0.01)
    unanswered = scheduledInWindow - state["answered"] - sum(errors.values())
    for c in clients:
        c.close()
    latencies.sort()
    return {
        "scenario": options.scenario,
        "rate_asked": options.rate,
        "connections": options.connections,
        "window_s": round(window, 3),
        "scheduled": scheduledInWindow,
        "answered": state["answered"],
        "achieved_req_s": round(state["answered"] / window, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p90_ms": round(percentile(latencies, 0.90) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "p999_ms": round(percentile(latencies, 0.999) * 1000, 2),
        "max_ms": round((latencies[-1] if latencies else 0) * 1000, 2),
        "errors": dict(errors),
        "unanswered_at_end": max(0, unanswered),
        "max_waiting_for_connection": state["maxWaiting"],
        "client_cpu_pct": round(100.0 * (cpu1 - cpu0) / window, 1),
        "server_cpu_pct": (
            round(100.0 * (server1 - server0) / window, 1)
            if options.watch_pid
            else None
        ),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", required=True, help="http://HOST:PORT")
    parser.add_argument("--rate", type=float, required=True, help="requests/s")
    parser.add_argument(
        "--scenario", choices=["post1", "post10", "list10"], default="post1"
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--project", default="bench")
    parser.add_argument("--client-id", default="3381af92-2b9e-11e3-b191-71861300734c")
    parser.add_argument("--watch-pid", type=int, action="append", default=[])
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    host, _, port = options.url.split("://", 1)[1].rstrip("/").partition(":")
    options.host, options.port = host, int(port or 80)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    bound = options.warmup + options.duration + 2 * options.timeout + 30
    report = asyncio.run(asyncio.wait_for(run(options), bound))
    sys.stdout.write("MARCONI-RATE " + json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
