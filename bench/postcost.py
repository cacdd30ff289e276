"""
What a post costs a node in CPU time, measured in process.

Request rates (bench/run.py) on a shared machine spread more than the
differences being looked for; this builds a real node in this process (the
same services C{twistd marconi --storage sqlite:PATH} runs, its log
written to a file as twistd writes it) and drives its site with
C{--concurrency} connections, each posting as soon as its previous post
was answered, and counts the CPU time of the whole process (the reactor
thread and the SQLite thread) per request with L{time.process_time}::

    python bench/postcost.py                        # post1 and post10
    python bench/postcost.py --requests 4000 --repeat 5
    python bench/postcost.py --scenarios post10 --profile /tmp/post10
    python bench/postcost.py --mode socket          # real loopback sockets
    python bench/postcost.py --sql --root /tmp/before   # the SQLite part alone
    python bench/postcost.py --scenarios claim10,list10,claimbulk10

C{claim10} claims 10 messages (C{POST .../claims?limit=10}),
C{list10} lists 10 (C{GET .../messages?limit=10&echo=true}) and
C{claimbulk10} claims 10 and deletes them with one
C{DELETE .../messages?ids=...} (a request pair counted as one); their
queues are filled with posts of 10 before each round, outside the
measurement (see L{measureRead}).

C{--mode transport} (the default) hands the request bytes to each
connection's HTTP channel through an in-memory transport, so the cost is
the node's alone (parsing, the API, the bus, the store, the answer) less
the kernel's socket work; C{--mode socket} goes through real TCP
connections to the site instead, and then the process's CPU includes the
client side too (a small, constant part).  The requests are the ones
bench/wrk/post.lua sends.  Each round posts to a fresh queue; the rounds
of the scenarios alternate, and the median of C{--repeat} rounds is
printed.

C{--profile PREFIX} also runs cProfile, timed by each thread's CPU time,
during the measured rounds: on the reactor thread (PREFIX.reactor.pstats)
and on the SQLite thread (PREFIX.db.pstats), and prints the heaviest
functions of each.

C{--sql} times the database thread's part alone: the SQLite store's own
post transactions, C{--group} posts per commit each in its savepoint (as
a group commit runs them), on the calling thread.

To compare two checkouts, run this same file with each one's
C{marconi} (C{--root DIR}), interleaved, and compare the medians.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# bench/profile.py would hide the standard library's profile module.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Optional  # noqa: E402


def _parse(argv: list) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="post1,post10")
    parser.add_argument("--requests", type=int, default=3000, help="per round")
    parser.add_argument("--warmup", type=int, default=500, help="requests before")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per scenario")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--mode", choices=("transport", "socket"), default="transport")
    parser.add_argument("--storage", default=None, help="URI (default: a new file)")
    parser.add_argument("--data-dir", default=None, help="where the database goes")
    parser.add_argument(
        "--root", default=os.path.dirname(HERE), help="the checkout to measure"
    )
    parser.add_argument(
        "--cpus",
        default="0",
        help="the CPUs to run on, as bench/run.py pins its servers ('' for any)",
    )
    parser.add_argument("--profile", default=None, metavar="PREFIX")
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("ROOT_A", "ROOT_B"),
        help="run this with each checkout in turn, --runs times, and compare",
    )
    parser.add_argument("--runs", type=int, default=4, help="with --compare")
    parser.add_argument("--json", action="store_true", help="one JSON line too")
    parser.add_argument(
        "--sql",
        action="store_true",
        help="time the SQLite store's post transactions alone, on this thread",
    )
    parser.add_argument("--group", type=int, default=8, help="posts per commit")
    return parser.parse_args(argv)


OPTIONS = _parse(sys.argv[1:]) if __name__ == "__main__" else None
if OPTIONS is not None and not OPTIONS.compare:
    sys.path.insert(0, os.path.abspath(OPTIONS.root))

from twisted.internet import reactor  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.protocol import ClientFactory, Protocol  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.logger import globalLogBeginner, textFileLogObserver  # noqa: E402

PROJECT = "bench-project"
CLIENT_ID = str(uuid.uuid4())


def messages(n: int) -> bytes:
    """
    The body bench/wrk/common.lua posts for C{n} messages.
    """
    parts = [
        '{"body":{"event":"bench","n":%d,"payload":"%s"},"ttl":3600}' % (i, "x" * 64)
        for i in range(n)
    ]
    return ('{"messages":[' + ",".join(parts) + "]}").encode("ascii")


def postRequest(queue: str, count: int, host: str = "127.0.0.1:8888") -> bytes:
    return request(b"POST", queue, b"messages", messages(count), host)


def request(method: bytes, queue: str, path: bytes, body: bytes, host: str) -> bytes:
    """
    A request of the bench's client for C{/v2/queues/QUEUE/PATH}.
    """
    return (
        b"%s /v2/queues/%s/%s HTTP/1.1\r\n"
        b"Host: %s\r\n"
        b"X-Project-ID: %s\r\n"
        b"Client-ID: %s\r\n"
        b"Accept: application/json\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n"
        % (
            method,
            queue.encode(),
            path,
            host.encode(),
            PROJECT.encode(),
            CLIENT_ID.encode(),
            len(body),
        )
    ) + body


class Poster(Protocol):
    """
    One keep-alive connection posting C{request} again as soon as the last
    answer is complete, while the round has requests left.
    """

    def __init__(self, round: "Round") -> None:
        self.round = round
        self.buffer = b""

    def connectionMade(self) -> None:
        self.send()

    def send(self) -> None:
        if self.round.left <= 0:
            self.round.closed(self)
            return
        self.round.left -= 1
        self.output(self.round.request)

    def output(self, data: bytes) -> None:
        self.transport.write(data)

    def answer(self) -> Optional[tuple]:
        """
        The next complete answer in the buffer, taken out of it, as
        C{(head, body)}; or L{None}.
        """
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = self.buffer[:end]
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return None
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        return head, body

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while True:
            answer = self.answer()
            if answer is None:
                return
            self.round.answered(answer[0][9:12])
            reactor.callLater(0, self.send)


class InMemory(StringTransport):
    """
    The node's side of an in-memory connection: what the channel writes
    goes to the client at once.
    """

    def __init__(self, client: Poster) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.client = client

    def write(self, data: bytes) -> None:
        self.client.dataReceived(data)

    def writeSequence(self, seq: list) -> None:
        self.client.dataReceived(b"".join(seq))


class Round:
    """
    C{requests} posts from C{concurrency} connections; L{done} fires when
    every connection has had its last answer.
    """

    def __init__(self, request: bytes, requests: int, concurrency: int) -> None:
        self.request = request
        self.left = requests
        self.open = concurrency
        self.statuses: dict = {}
        self.done: Deferred = Deferred()
        self.clients: list = []

    def answered(self, status: bytes) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def closed(self, client: Poster) -> None:
        if client.transport is not None and hasattr(client.transport, "loseConnection"):
            client.transport.loseConnection()
        self.open -= 1
        if self.open == 0:
            self.done.callback(self.statuses)

    def startInMemory(self, site, make=None) -> None:
        """
        Start the round's connections in memory; C{make} makes each
        connection's client from the round (by default a L{Poster}).
        """
        for _ in range(self.open):
            client = (make or Poster)(self)
            channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
            transport = InMemory(client)
            client.output = channel.dataReceived  # type: ignore[method-assign]
            client.transport = transport
            self.clients.append(channel)
            channel.makeConnection(transport)
            reactor.callLater(0, client.connectionMade)

    def startSockets(self, port: int) -> None:
        factory = ClientFactory()
        factory.protocol = lambda: Poster(self)  # type: ignore[assignment]
        for _ in range(self.open):
            reactor.connectTCP("127.0.0.1", port, factory)


class Profiles:
    """
    cProfile on the reactor thread and on the SQLite store's thread, on
    while L{on} is set.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        # CPU time of the thread, not wall time: on a shared machine a
        # function that was preempted would look slow.
        self.reactor = cProfile.Profile(time.thread_time)
        self.db = cProfile.Profile(time.thread_time)
        self.on = False
        from marconi.storage.sqlite.store import SQLiteStore

        original = SQLiteStore._runBatch
        profiles = self

        def _runBatch(store, batch):
            if not profiles.on:
                return original(store, batch)
            profiles.db.enable()
            try:
                return original(store, batch)
            finally:
                profiles.db.disable()

        SQLiteStore._runBatch = _runBatch  # type: ignore[method-assign]

    def report(self) -> None:
        for name, profile in (("reactor", self.reactor), ("db", self.db)):
            path = f"{self.prefix}.{name}.pstats"
            profile.dump_stats(path)
            print(f"\n== {name} thread ({path}) ==")
            pstats.Stats(profile).sort_stats("tottime").print_stats(30)


def buildNode(storage: str, logPath: str):
    from twisted.application.internet import StreamServerEndpointService

    from marconi import tap

    options = tap.Options()
    options.parseOptions(
        ["--listen", "tcp:0:interface=127.0.0.1", "--storage", storage]
    )
    node = tap.makeService(options, reactor)
    log = open(logPath, "w")
    # As twistd -n --logfile runs a node: its own observer, which gathers
    # the access lines for 0.1 s, where the checkout has it.
    try:
        from marconi.observability.logs import StreamObserver

        observer = StreamObserver(log)
        observer.startBuffering(reactor, 0.1)
    except (ImportError, AttributeError):
        observer = textFileLogObserver(log)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    sites = [s.factory for s in node if isinstance(s, StreamServerEndpointService)]
    return node, sites[0]


async def measure(site, port, scenario: str, index: int, count: int, o) -> dict:
    queue = f"{scenario}-{index}"
    perRequest = int(scenario[len("post") :])
    request = postRequest(queue, perRequest)
    r = Round(request, count, o.concurrency)
    return await timed(r, site, port, o, b"201", scenario, perRequest)


async def timed(r, site, port, o, expected, scenario, messages, make=None) -> dict:
    """
    Run the round C{r}, every answer of which must be C{expected}, and
    measure it; C{make} makes its in-memory clients (see
    L{Round.startInMemory}).
    """
    count = r.left
    wall = time.perf_counter()
    cpu = time.process_time()
    reactorCPU = time.thread_time()
    if o.mode == "transport" or make is not None:
        r.startInMemory(site, make)
    else:
        r.startSockets(port)
    statuses = await r.done
    reactorCPU = time.thread_time() - reactorCPU
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    if set(statuses) != {expected}:
        raise RuntimeError(f"unexpected answers: {statuses}")
    return {
        "scenario": scenario,
        "cpu_us": cpu / count * 1e6,
        "reactor_us": reactorCPU / count * 1e6,
        "req_s": count / wall,
        "messages": messages,
    }


CLAIM_BODY = b'{"ttl": 300, "grace": 60}'
READS = ("claim10", "list10", "claimbulk10")


def readRequest(scenario: str, queue: str, host: str = "127.0.0.1:8888") -> bytes:
    """
    The request of a read scenario (a claim or a listing of 10).
    """
    if scenario == "list10":
        method, path, body = b"GET", b"messages?limit=10&echo=true", b""
    else:
        method, path, body = b"POST", b"claims?limit=10", CLAIM_BODY
    return request(method, queue, path, body, host)


class BulkDeleter(Poster):
    """
    A connection that claims, then deletes what it claimed with one
    C{DELETE .../messages?ids=...}, and counts the pair as one request.
    """

    claimed = False

    def __init__(self, round: "Round", queue: str) -> None:
        super().__init__(round)
        self.queue = queue

    def send(self) -> None:
        if self.claimed:
            return
        super().send()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        answer = self.answer()
        if answer is None:
            return
        head, body = answer
        if not self.claimed and head[9:12] == b"201":
            import json

            ids = [m["id"] for m in json.loads(body)["messages"]]
            self.claimed = True
            self.output(
                b"DELETE /v2/queues/%s/messages?ids=%s HTTP/1.1\r\n"
                b"Host: 127.0.0.1:8888\r\nX-Project-ID: %s\r\n"
                b"Client-ID: %s\r\nContent-Length: 0\r\n\r\n"
                % (
                    self.queue.encode(),
                    ",".join(ids).encode(),
                    PROJECT.encode(),
                    CLIENT_ID.encode(),
                )
            )
            return
        self.claimed = False
        # The pair answered: 201 then 204 count as one success.
        self.round.answered(b"201" if head[9:12] == b"204" else head[9:12])
        reactor.callLater(0, self.send)


async def fillRead(site, scenario: str, index: int, count: int, o) -> None:
    """
    Fill the queue of a read scenario's round with posts of 10: enough for
    every claim of 10 to take 10, or 200 messages to list.
    """
    queue = f"{scenario}-{index}"
    posts = 20 if scenario == "list10" else count + o.concurrency
    fill = Round(postRequest(queue, 10), posts, o.concurrency)
    fill.startInMemory(site)
    await fill.done


async def measureRead(site, port, scenario: str, index: int, count: int, o) -> dict:
    """
    One round of a read scenario on its queue, filled by L{fillRead}.
    """
    queue = f"{scenario}-{index}"
    r = Round(readRequest(scenario, queue), count, o.concurrency)
    expected = b"200" if scenario == "list10" else b"201"
    make = None
    if scenario == "claimbulk10":
        make = lambda r: BulkDeleter(r, queue)  # noqa: E731
    return await timed(r, site, port, o, expected, scenario, 10, make)


async def main(o) -> None:
    directory = tempfile.mkdtemp(prefix="marconi-postcost-", dir=o.data_dir)
    try:
        storage = o.storage or "sqlite:" + os.path.join(directory, "node.sqlite")
        node, site = buildNode(storage, os.path.join(directory, "node.log"))
        node.startService()
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        scenarios = o.scenarios.split(",")
        profiles = Profiles(o.profile) if o.profile else None
        results: dict = {s: [] for s in scenarios}
        for s in scenarios:
            run = measureRead if s in READS else measure
            if s in READS:
                await fillRead(site, s, -1, o.warmup, o)
            await run(site, port.getHost().port, s, -1, o.warmup, o)
        for index in range(o.repeat):
            for s in scenarios:
                run = measureRead if s in READS else measure
                if s in READS:
                    await fillRead(site, s, index, o.requests, o)
                if profiles is not None:
                    profiles.on = True
                    profiles.reactor.enable()
                results[s].append(
                    await run(site, port.getHost().port, s, index, o.requests, o)
                )
                if profiles is not None:
                    profiles.reactor.disable()
                    profiles.on = False
        await port.stopListening()
        await node.stopService()
        load = os.getloadavg()
        print(
            f"root {os.path.abspath(o.root)}  mode {o.mode}  "
            f"concurrency {o.concurrency}  {o.requests} requests x {o.repeat}  "
            f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        )
        print(
            f"{'scenario':8} {'cpu us/req':>11} {'(min-max)':>15} "
            f"{'us/msg':>7} {'reactor us':>11} {'req/s wall':>11}"
        )
        summary = {}
        best = {}
        for s in scenarios:
            rows = results[s]
            cpu = [r["cpu_us"] for r in rows]
            median = statistics.median(cpu)
            summary[s] = round(median, 1)
            best[s] = round(min(cpu), 1)
            print(
                f"{s:8} {median:11.1f} {min(cpu):7.0f}-{max(cpu):<7.0f} "
                f"{median / rows[0]['messages']:7.1f} "
                f"{statistics.median(r['reactor_us'] for r in rows):11.1f} "
                f"{statistics.median(r['req_s'] for r in rows):11.0f}"
            )
        if o.json:
            import json

            print(
                "POSTCOST "
                + json.dumps({"load": load[0], "cpu_us": summary, "min_us": best})
            )
        if profiles is not None:
            profiles.report()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def sqlOnly(o) -> int:
    """
    The database thread's part of a post alone: the SQLite store's own
    post transactions run on this thread (C{--group} posts per commit,
    each in its savepoint, as a group commit runs them), and the CPU time
    per post.
    """
    from twisted.internet.defer import Deferred as D

    from marconi.core import jsontext, validation
    from marconi.core.limits import Limits
    from marconi.storage.sqlite.store import SQLiteStore

    directory = tempfile.mkdtemp(prefix="marconi-postcost-", dir=o.data_dir)
    try:
        store = SQLiteStore(os.path.join(directory, "node.sqlite"), reactor)
        store._open()
        # postMessages hands its transaction to _run: keep it instead.
        store._run = lambda work, *a, durability=None: work  # type: ignore
        results: dict = {}
        for index in range(o.repeat + 1):
            for s in o.scenarios.split(","):
                count = int(s[len("post") :])
                document = jsontext.loads(messages(count))
                new = validation.messages(document, Limits(), {})
                posts = o.requests if index else o.warmup
                started = time.process_time()
                for first in range(0, posts, o.group):
                    batch = [
                        (
                            store.postMessages("p", s, new, CLIENT_ID, 1e9 + first),
                            (),
                            D(),
                            store.synchronous,
                        )
                        for _ in range(min(o.group, posts - first))
                    ]
                    store._runBatch(batch)
                if index:
                    spent = (time.process_time() - started) / posts * 1e6
                    results.setdefault(s, []).append(spent)
        store._close()
        load = os.getloadavg()
        print(f"SQL only, {o.group} posts per commit, load {load[0]:.2f}")
        for s, spent in results.items():
            print(
                f"{s:8} median {statistics.median(spent):7.1f}  least {min(spent):7.1f}"
            )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


def run(o) -> int:
    failures: list = []

    def start() -> None:
        d = Deferred.fromCoroutine(main(o))
        d.addErrback(failures.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    for f in failures:
        print(f.getTraceback(), file=sys.stderr)
    return 1 if failures else 0


def compare(o, argv: list) -> int:
    """
    Run this script with each of the two checkouts in turn (A, B, A, B,
    ...) in fresh processes, and print each one's medians over the runs.
    """
    import json
    import subprocess

    rest = []
    skip = 0
    for arg in argv:
        if skip:
            skip -= 1
        elif arg == "--compare":
            skip = 2
        elif arg in ("--runs", "--root", "--profile"):
            skip = 1
        elif not arg.startswith(("--runs=", "--root=", "--profile=", "--compare=")):
            rest.append(arg)
    runs: dict = {root: [] for root in o.compare}
    for attempt in range(o.runs):
        for root in o.compare:
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--root", root, "--json"]
                + rest,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            line = [x for x in out.splitlines() if x.startswith("POSTCOST ")][-1]
            result = json.loads(line[len("POSTCOST ") :])
            runs[root].append(result)
            print(
                f"run {attempt + 1} {root}: load {result['load']:.2f} "
                f"{result['cpu_us']}",
                flush=True,
            )
    scenarios = list(runs[o.compare[0]][0]["cpu_us"])
    print(
        f"\nCPU us per request over {o.runs} runs: the median of the runs' "
        f"medians, and the least round (A = {o.compare[0]}, B = {o.compare[1]})"
    )
    for s in scenarios:
        a, b = (
            statistics.median(r["cpu_us"][s] for r in runs[root]) for root in o.compare
        )
        lowA, lowB = (min(r["min_us"][s] for r in runs[root]) for root in o.compare)
        print(
            f"{s:8} median A {a:8.1f}  B {b:8.1f}  B/A {b / a:.3f}    "
            f"least A {lowA:8.1f}  B {lowB:8.1f}  B/A {lowB / lowA:.3f}"
        )
    return 0


if __name__ == "__main__":
    if OPTIONS.compare:
        sys.exit(compare(OPTIONS, sys.argv[1:]))
    if OPTIONS.cpus:
        os.sched_setaffinity(0, {int(c) for c in OPTIONS.cpus.split(",")})
    if OPTIONS.sql:
        sys.exit(sqlOnly(OPTIONS))
    threading.current_thread().name = "reactor"
    sys.exit(run(OPTIONS))
