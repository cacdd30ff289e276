"""
Marconi's own load driver, for the scenarios that need state between
requests (claim then delete the claimed messages) and as a fallback engine
for the fixed ones when wrk is not installed.

It is one asyncio process with one keep-alive HTTP/1.1 connection per
virtual user, written on a bare C{asyncio.Protocol} so that it spends a few
microseconds per request: the server under test, not the driver, must be the
bottleneck, and the driver reports its own CPU use over the measured window
to show it.

Scenarios (C{--scenario}):

  post1, post10     POST .../messages with 1 or 10 messages per request
  list10            GET .../messages?limit=10&echo=true on a seeded queue
  getbyid           GET .../messages/ID over the ids given with --ids
  claim-each        POST .../claims?limit=10, then DELETE each message with
                    its claim id (the href the claim returned)
  claim-bulk        POST .../claims?limit=10, then one DELETE .../messages?ids=
  mixed             half the users post batches of 10 while the other half
                    run claim-each; producers pause while the backlog is over
                    --backlog messages, so the run measures the steady state
  seed              post --seed messages (in batches of --batch) and report
                    the ids of the first ones; not timed

Each run lasts --warmup + --duration seconds (or stops after --max-requests
measured requests, or when a claim scenario drains its queue) and prints one
line C{MARCONI-BENCH <json>} with the counts, rates, latency percentiles per
operation, errors and CPU.  Every request has a --timeout.
"""

import argparse
import asyncio
import json
import math
import os
import sys
import time
from urllib.parse import urlsplit

MESSAGE_TEMPLATE = '{"body":{"event":"bench","n":%d,"payload":"%s"},"ttl":3600}'
PAYLOAD = "x" * 64


def messagesBody(n: int) -> bytes:
    """
    The JSON body posting C{n} messages; the same bytes as bench/wrk/common.lua.
    """
    parts = [MESSAGE_TEMPLATE % (i, PAYLOAD) for i in range(n)]
    return ('{"messages":[' + ",".join(parts) + "]}").encode()


class ResponseParser:
    """
    An incremental parser of HTTP/1.1 responses: Content-Length or chunked
    bodies; a response with neither is taken to have no body (Twisted always
    sends one of them on a keep-alive connection).
    """

    def __init__(self):
        self.buffer = bytearray()
        self._head = None

    def feed(self, data: bytes):
        """
        Add bytes; return C{(status, body, close)} once a whole response is
        buffered, else L{None}.  Call again with C{b""} to take a next
        response that is already buffered.
        """
        buf = self.buffer
        buf += data
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return None
            head = bytes(buf[:end])
            del buf[: end + 4]
            status = int(head[9:12])
            length = 0
            chunked = close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    close = b"close" in value.lower()
            if status in (204, 304) or status < 200:
                length, chunked = 0, False
            self._head = (status, -1 if chunked else length, close)
            self._chunks = []
        status, length, close = self._head
        if length >= 0:
            if len(buf) < length:
                return None
            body = bytes(buf[:length])
            del buf[:length]
        else:
            body = self._chunked()
            if body is None:
                return None
        self._head = None
        return status, body, close

    def _chunked(self):
        buf = self.buffer
        while True:
            end = buf.find(b"\r\n")
            if end < 0:
                return None
            size = int(bytes(buf[:end]).split(b";")[0], 16)
            if size == 0:
                if buf[end + 2 : end + 4] == b"\r\n":
                    del buf[: end + 4]
                else:
                    trailer = buf.find(b"\r\n\r\n", end)
                    if trailer < 0:
                        return None
                    del buf[: trailer + 4]
                return b"".join(self._chunks)
            if len(buf) < end + 2 + size + 2:
                return None
            self._chunks.append(bytes(buf[end + 2 : end + 2 + size]))
            del buf[: end + 2 + size + 2]


class Connection(asyncio.Protocol):
    """
    One keep-alive connection carrying one request at a time.
    """

    def __init__(self, loop, timeout: float):
        self.loop = loop
        self.timeout = timeout
        self.transport = None
        self.closed = False
        self.parser = ResponseParser()
        self._waiter = None
        self._timer = None

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        self._fail(ConnectionError("connection lost"))

    def data_received(self, data):
        if self._waiter is None:
            return
        result = self.parser.feed(data)
        if result is not None:
            waiter, self._waiter = self._waiter, None
            self._timer.cancel()
            waiter.set_result(result)

    def _fail(self, exc):
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            if self._timer is not None:
                self._timer.cancel()
            if not waiter.done():
                waiter.set_exception(exc)

    def _timedOut(self):
        self._fail(TimeoutError("no answer within %s s" % (self.timeout,)))
        self.closed = True
        self.transport.abort()

    def request(self, data: bytes):
        self._waiter = waiter = self.loop.create_future()
        self._timer = self.loop.call_later(self.timeout, self._timedOut)
        self.transport.write(data)
        return waiter


class Client:
    """
    A virtual user: one connection, reopened when the server closes it.
    """

    def __init__(self, loop, host, port, project, clientId, timeout):
        self.loop = loop
        self.host = host
        self.port = port
        self.timeout = timeout
        self.connection = None
        self.headers = (
            "Host: %s:%d\r\nClient-ID: %s\r\nX-Project-ID: %s\r\n"
            "Accept: application/json\r\n" % (host, port, clientId, project)
        ).encode()
        token = os.environ.get("MARCONI_BENCH_TOKEN")
        if token:
            # A node with Keystone auth (bench/keystone_auth.py).
            self.headers += b"X-Auth-Token: %s\r\n" % token.encode("ascii")

    @classmethod
    def fromOptions(cls, loop, options):
        """
        A client for the server and identity given on the command line.
        """
        return cls(
            loop,
            options.host,
            options.port,
            options.project,
            options.client_id,
            options.timeout,
        )

    def build(self, method: bytes, path: bytes, body: bytes = b"") -> bytes:
        """
        Build the bytes of a request once, to be sent many times.
        """
        head = method + b" " + path + b" HTTP/1.1\r\n" + self.headers
        if body or method in (b"POST", b"PUT", b"PATCH"):
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % (
                len(body),
            )
        return head + b"\r\n" + body

    async def send(self, data: bytes):
        """
        Send a built request; return C{(status, body)}.
        """
        connection = self.connection
        if connection is None or connection.closed:
            _, connection = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: Connection(self.loop, self.timeout), self.host, self.port
                ),
                self.timeout,
            )
            self.connection = connection
        status, body, close = await connection.request(data)
        if close:
            connection.closed = True
            connection.transport.close()
        return status, body

    def close(self):
        if self.connection is not None and not self.connection.closed:
            self.connection.transport.close()


def percentile(ordered, fraction: float) -> float:
    """
    Nearest-rank percentile of a sorted list (0 when it is empty).
    """
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


class Stats:
    """
    What one run measured.  Only requests that start after the warmup and
    end before the end of the window count.
    """

    def __init__(self, warmup: float, duration: float, maxRequests: int):
        now = time.perf_counter()
        self.begin = now
        self.start = now + warmup
        self.end = self.start + duration
        self.maxRequests = maxRequests
        self.latencies = {}
        self.errors = {}
        self.requests = 0
        self.messages = 0
        self.produced = 0
        self.backlog = 0
        self.drainedAt = None
        self.cpuStart = None
        self.cpuEnd = None
        self.watched = ()
        self.watchedStart = None
        self.watchedEnd = None

    def running(self) -> bool:
        return (
            self.drainedAt is None
            and time.perf_counter() < self.end
            and self.requests < self.maxRequests
        )

    def record(self, op: str, started: float, ended: float, ok: bool, messages=0):
        if started < self.start or ended > self.end:
            return
        if ok:
            self.latencies.setdefault(op, []).append(ended - started)
            self.requests += 1
            self.messages += messages
        else:
            self.error(op + " failed")

    def error(self, kind: str):
        if time.perf_counter() >= self.start:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def drained(self):
        if self.drainedAt is None:
            self.drainedAt = time.perf_counter()
            if self.drainedAt < self.end:
                self.end = self.drainedAt

    async def keepTime(self):
        """
        Take the CPU time of this process at the start and end of the window.
        """
        await asyncio.sleep(max(0.0, self.start - time.perf_counter()))
        self.cpuStart = time.process_time()
        self.watchedStart = processesCPU(self.watched)
        while time.perf_counter() < self.end:
            await asyncio.sleep(min(0.05, max(0.0, self.end - time.perf_counter())))
        self.stopClocks()

    def stopClocks(self):
        self.cpuEnd = time.process_time()
        self.watchedEnd = processesCPU(self.watched)
        if self.cpuStart is None:
            self.cpuStart = self.cpuEnd
            self.watchedStart = self.watchedEnd

    def report(self, scenario: str, messagesName: str) -> dict:
        window = max(1e-9, min(self.end, time.perf_counter()) - self.start)
        everything = sorted(x for values in self.latencies.values() for x in values)
        ops = {}
        for op, values in sorted(self.latencies.items()):
            values.sort()
            ops[op] = {
                "count": len(values),
                "p50_ms": round(percentile(values, 0.50) * 1000, 3),
                "p99_ms": round(percentile(values, 0.99) * 1000, 3),
            }
        cpu = serverCPU = None
        if self.cpuStart is not None and self.cpuEnd is not None:
            cpu = round(100.0 * (self.cpuEnd - self.cpuStart) / window, 1)
        if (
            self.watched
            and self.watchedStart is not None
            and self.watchedEnd is not None
        ):
            serverCPU = round(100.0 * (self.watchedEnd - self.watchedStart) / window, 1)
        return {
            "scenario": scenario,
            "engine": "python",
            "window_s": round(window, 3),
            "requests": self.requests,
            "req_s": round(self.requests / window, 1),
            "messages": self.messages,
            "msgs_s": round(self.messages / window, 1),
            "messages_are": messagesName,
            "produced_s": round(self.produced / window, 1) if self.produced else None,
            "p50_ms": round(percentile(everything, 0.50) * 1000, 3),
            "p99_ms": round(percentile(everything, 0.99) * 1000, 3),
            "ops": ops,
            "errors": self.errors,
            "drained": self.drainedAt is not None,
            "client_cpu_pct": cpu,
            "server_cpu_pct": serverCPU,
        }


def processesCPU(pids) -> float:
    """
    The CPU seconds (user + system, all threads) used so far by C{pids}.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % (pid,), "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def hrefPath(href: str) -> bytes:
    """
    The path (and query) of an href, which may be absolute or relative.
    """
    if href.startswith("http://") or href.startswith("https://"):
        parts = urlsplit(href)
        href = parts.path + ("?" + parts.query if parts.query else "")
    return href.encode()


class Scenarios:
    """
    The loops each virtual user runs, by scenario.
    """

    def __init__(self, options, stats: Stats):
        self.options = options
        self.stats = stats
        base = "/v2/queues/%s" % (options.queue,)
        self.messagesPath = (base + "/messages").encode()
        self.claimPath = (base + "/claims?limit=%d" % (options.limit,)).encode()
        self.claimBody = json.dumps({"ttl": 300, "grace": 60}).encode()

    async def fixed(
        self, client: Client, op: str, requests, expected: int, messages: int
    ):
        stats = self.stats
        clock = time.perf_counter
        n = 0
        while stats.running():
            data = requests[n % len(requests)]
            n += 1
            started = clock()
            status, _ = await client.send(data)
            stats.record(op, started, clock(), status == expected, messages)

    async def post(self, client: Client, batch: int):
        data = client.build(b"POST", self.messagesPath, messagesBody(batch))
        await self.fixed(client, "post", [data], 201, batch)

    async def list(self, client: Client):
        path = self.messagesPath + b"?limit=%d&echo=true" % (self.options.limit,)
        data = client.build(b"GET", path)
        await self.fixed(client, "list", [data], 200, self.options.limit)

    async def getById(self, client: Client):
        ids = self.options.ids.split(",")
        offset = hash(client) % len(ids)
        requests = [
            client.build(b"GET", self.messagesPath + b"/" + i.encode())
            for i in ids[offset:] + ids[:offset]
        ]
        await self.fixed(client, "get", requests, 200, 1)

    async def claimOnce(self, client: Client, claim: bytes):
        """
        Make one claim; return the claimed messages, or L{None} when there
        was nothing to claim.
        """
        clock = time.perf_counter
        started = clock()
        status, body = await client.send(claim)
        ended = clock()
        if status == 204:
            self.stats.record("claim (empty)", started, ended, True)
            return None
        self.stats.record("claim", started, ended, status == 201)
        if status != 201:
            return []
        return json.loads(body)["messages"]

    async def consumeEach(self, client: Client, claim: bytes, messages):
        stats = self.stats
        clock = time.perf_counter
        for message in messages:
            data = client.build(b"DELETE", hrefPath(message["href"]))
            started = clock()
            status, _ = await client.send(data)
            ok = status == 204
            stats.record("delete", started, clock(), ok, 1)
            if ok:
                stats.backlog -= 1

    async def consumeBulk(self, client: Client, claim: bytes, messages):
        ids = ",".join(message["id"] for message in messages).encode()
        data = client.build(b"DELETE", self.messagesPath + b"?ids=" + ids)
        started = time.perf_counter()
        status, _ = await client.send(data)
        ok = status == 204
        self.stats.record(
            "bulk delete", started, time.perf_counter(), ok, len(messages)
        )
        if ok:
            self.stats.backlog -= len(messages)

    async def claimLoop(self, client: Client, consume, stopWhenEmpty: bool):
        claim = client.build(b"POST", self.claimPath, self.claimBody)
        while self.stats.running():
            messages = await self.claimOnce(client, claim)
            if messages is None:
                if stopWhenEmpty:
                    self.stats.drained()
                    return
                await asyncio.sleep(0.005)
                continue
            await consume(client, claim, messages)

    async def claimEach(self, client: Client):
        await self.claimLoop(client, self.consumeEach, True)

    async def claimBulk(self, client: Client):
        await self.claimLoop(client, self.consumeBulk, True)

    async def produce(self, client: Client):
        stats = self.stats
        clock = time.perf_counter
        data = client.build(b"POST", self.messagesPath, messagesBody(10))
        while stats.running():
            if stats.backlog > self.options.backlog:
                await asyncio.sleep(0.002)
                continue
            started = clock()
            status, _ = await client.send(data)
            ended = clock()
            ok = status == 201
            stats.record("post", started, ended, ok)
            if ok:
                stats.backlog += 10
                if started >= stats.start and ended <= stats.end:
                    stats.produced += 10

    async def mixed(self, client: Client, index: int):
        if index % 2 == 0:
            await self.produce(client)
        else:
            await self.claimLoop(client, self.consumeEach, False)


async def user(loop, options, stats, scenarios, index):
    client = Client.fromOptions(loop, options)
    try:
        while stats.running():
            try:
                if options.scenario == "post1":
                    await scenarios.post(client, 1)
                elif options.scenario == "post10":
                    await scenarios.post(client, 10)
                elif options.scenario == "list10":
                    await scenarios.list(client)
                elif options.scenario == "getbyid":
                    await scenarios.getById(client)
                elif options.scenario == "claim-each":
                    await scenarios.claimEach(client)
                elif options.scenario == "claim-bulk":
                    await scenarios.claimBulk(client)
                elif options.scenario == "mixed":
                    await scenarios.mixed(client, index)
                return
            except (OSError, ConnectionError, TimeoutError, asyncio.TimeoutError) as e:
                stats.error(type(e).__name__)
                client.close()
                client.connection = None
                await asyncio.sleep(0.01)
    finally:
        client.close()


async def run(options) -> dict:
    loop = asyncio.get_running_loop()
    stats = Stats(options.warmup, options.duration, options.max_requests)
    stats.watched = options.watch_pid
    scenarios = Scenarios(options, stats)
    timekeeper = asyncio.ensure_future(stats.keepTime())
    users = [
        asyncio.ensure_future(user(loop, options, stats, scenarios, i))
        for i in range(options.concurrency)
    ]
    await asyncio.gather(*users)
    if stats.drainedAt is not None or stats.requests >= stats.maxRequests:
        stats.end = min(stats.end, time.perf_counter())
        timekeeper.cancel()
        stats.stopClocks()
    else:
        await timekeeper
    names = {
        "post1": "posted",
        "post10": "posted",
        "list10": "listed",
        "getbyid": "read",
        "claim-each": "consumed",
        "claim-bulk": "consumed",
        "mixed": "consumed",
    }
    report = stats.report(options.scenario, names[options.scenario])
    if stats.drainedAt is not None and stats.drainedAt < stats.start:
        report["errors"]["queue drained during warmup"] = 1
    return report


async def seed(options) -> dict:
    """
    Post C{options.seed} messages to the queue; report how many were stored
    and the ids of the first C{options.keep_ids}.
    """
    loop = asyncio.get_running_loop()
    path = ("/v2/queues/%s/messages" % (options.queue,)).encode()
    ids = []
    posted = 0
    errors = {}
    remaining = [options.seed]

    async def poster():
        nonlocal posted
        client = Client.fromOptions(loop, options)
        batch = options.batch
        try:
            while remaining[0] > 0:
                n = min(batch, remaining[0])
                remaining[0] -= n
                status, body = await client.send(
                    client.build(b"POST", path, messagesBody(n))
                )
                if status == 400 and n > 10:
                    remaining[0] += n
                    batch = 10
                    continue
                if status != 201:
                    errors[str(status)] = errors.get(str(status), 0) + 1
                    remaining[0] += n
                    if sum(errors.values()) > 20:
                        raise RuntimeError(
                            "seeding failed: %r %r" % (status, body[:200])
                        )
                    continue
                posted += n
                if len(ids) < options.keep_ids:
                    for resource in json.loads(body)["resources"]:
                        ids.append(resource.rsplit("/", 1)[-1])
        finally:
            client.close()

    started = time.perf_counter()
    await asyncio.gather(
        *[poster() for _ in range(max(1, min(options.concurrency, 8)))]
    )
    return {
        "scenario": "seed",
        "posted": posted,
        "seconds": round(time.perf_counter() - started, 3),
        "ids": ids[: options.keep_ids],
        "errors": errors,
    }


def parseOptions(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", required=True, help="http://HOST:PORT of the server")
    parser.add_argument(
        "--scenario",
        required=True,
        choices=[
            "post1",
            "post10",
            "list10",
            "getbyid",
            "claim-each",
            "claim-bulk",
            "mixed",
            "seed",
        ],
    )
    parser.add_argument("--project", default="bench")
    parser.add_argument("--client-id", default="3381af92-2b9e-11e3-b191-71861300734c")
    parser.add_argument("--queue", default="bench")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--max-requests", type=int, default=10_000_000)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--limit", type=int, default=10, help="list and claim limit")
    parser.add_argument("--ids", default="", help="comma-separated ids for getbyid")
    parser.add_argument(
        "--backlog", type=int, default=1000, help="mixed: producers' cap"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed: messages to post")
    parser.add_argument(
        "--batch", type=int, default=100, help="seed: messages per POST"
    )
    parser.add_argument("--keep-ids", type=int, default=200)
    parser.add_argument(
        "--watch-pid",
        type=int,
        action="append",
        default=[],
        help="report the CPU of this server process over the window (repeatable)",
    )
    options = parser.parse_args(argv)
    url = urlsplit(options.url)
    if url.scheme != "http" or not url.hostname:
        parser.error("--url must be http://HOST:PORT")
    options.host = url.hostname
    options.port = url.port or 80
    if options.scenario == "getbyid" and not options.ids:
        parser.error("getbyid needs --ids")
    return options


def main(argv=None) -> int:
    options = parseOptions(sys.argv[1:] if argv is None else argv)
    try:
        import uvloop  # noqa: F401

        uvloop.install()
        loopName = "uvloop"
    except ImportError:
        loopName = "asyncio"
    bound = options.warmup + options.duration + options.timeout + 10
    if options.scenario == "seed":
        bound = max(bound, 300)
        coroutine = seed(options)
    else:
        coroutine = run(options)

    async def bounded():
        return await asyncio.wait_for(coroutine, bound)

    report = asyncio.run(bounded())
    report["loop"] = loopName
    report["pid"] = os.getpid()
    sys.stdout.write("MARCONI-BENCH " + json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
