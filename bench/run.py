"""
Run Marconi's benchmark: start the server under test and the bare
twisted.web baseline, drive every scenario against both from another CPU,
and print requests/s, messages/s and latency with the ratio of the target to
the baseline (ratios survive a noisy machine better than absolute numbers).

    python bench/run.py --target sqlite                  # baseline + a sqlite node
    python bench/run.py --target baseline --duration 5   # the baseline alone
    python bench/run.py --target url:http://127.0.0.1:8888 --scenarios post1,list10
    python bench/run.py --target sqlite --markdown bench/RESULTS.md
    python bench/run.py --render saved.json    # the table of a run saved with --json

Everything is bounded: each scenario runs --warmup + --duration seconds (the
engines have their own timeouts, and this script kills an engine that
overstays), and the servers it started are stopped when it ends, Ctrl-C
included.  See bench/README.md.
"""

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from driver import processesCPU  # noqa: E402

ROOT = os.path.dirname(HERE)
SCENARIOS = [
    "post1",
    "post10",
    "list10",
    "getbyid",
    "claim-each",
    "claim-bulk",
    "mixed",
]
TITLES = {
    "post1": "post 1 message",
    "post10": "post a batch of 10",
    "list10": "list 10",
    "getbyid": "get by id",
    "claim-each": "claim 10 + delete each",
    "claim-bulk": "claim 10 + bulk delete",
    "mixed": "mixed producer/consumer",
}
# Targets whose answers are canned: nothing to seed for the claim scenarios.
CANNED = ("baseline", "klein")
# Scenarios wrk can run: (script, argument, messages per answered request).
WRK_SCENARIOS = {
    "post1": ("post.lua", "1", 1),
    "post10": ("post.lua", "10", 10),
    "list10": ("list.lua", "10", 10),
    "getbyid": ("getbyid.lua", None, 1),
}
MESSAGES_ARE = {
    "post1": "posted",
    "post10": "posted",
    "list10": "listed",
    "getbyid": "read",
    "claim-each": "consumed",
    "claim-bulk": "consumed",
    "mixed": "consumed",
}


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def waitForPort(port: int, process, deadline: float, logPath=None):
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                "server exited with %s before listening%s"
                % (process.returncode, tail(logPath))
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("nothing listened on port %d in time%s" % (port, tail(logPath)))


def tail(path, lines=20) -> str:
    if not path or not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        return ":\n" + "".join(f.readlines()[-lines:])


def pinned(cpus, command):
    if cpus and shutil.which("taskset"):
        return ["taskset", "-c", cpus] + command
    return command


class Servers:
    """
    The processes this run started, each in its own session so that it and
    its children can be stopped together.
    """

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.processes = []

    def start(self, name, command, env=None):
        log = os.path.join(self.workdir, name + ".log")
        with open(log, "wb") as output:
            process = subprocess.Popen(
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
            )
        self.processes.append((name, process))
        return process, log

    def stop(self):
        for _name, process in reversed(self.processes):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for _name, process in reversed(self.processes):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
        self.processes = []


class Target:
    """
    A server under test: its URL and the pids whose CPU use is watched.
    """

    def __init__(self, name, url, pids=(), redis=None):
        self.name = name
        self.url = url
        self.pids = list(pids)
        self.redis = redis


def startBaseline(servers, options, name="baseline") -> Target:
    port = freePort()
    command = [sys.executable, os.path.join(HERE, "baseline.py"), "--port", str(port)]
    if name == "klein":
        command.append("--klein")
    process, log = servers.start(name, pinned(options.server_cpus, command))
    waitForPort(port, process, time.monotonic() + 30, log)
    return Target(name, "http://127.0.0.1:%d" % (port,), [process.pid])


def storeCpus(options):
    """
    The taskset list for a store server (redis-server, SecantusDB): the
    node's CPUs unless --store-cpus names others.
    """
    return getattr(options, "store_cpus", None) or options.server_cpus


def startRedis(servers, options):
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit(
            "redis-server is not installed (apt-get install -y redis-server)"
        )
    port = freePort()
    command = pinned(
        storeCpus(options),
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            servers.workdir,
        ]
        + shlex.split(options.redis_args),
    )
    process, log = servers.start("redis", command)
    waitForPort(port, process, time.monotonic() + 30, log)
    return port, process.pid


def _redisReply(stream):
    """
    Read one RESP reply from the binary file C{stream}.
    """
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("redis-server closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError("redis-server: " + rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = stream.read(size + 2)
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        return [_redisReply(stream) for _ in range(max(0, int(rest)))]
    raise RuntimeError("unexpected redis reply %r" % (line[:40],))


class RedisStore:
    """
    The redis-server behind a C{redis} target, watched for what changes the
    conditions of a measurement: the automatic rewrites of its append-only
    file.  Such a rewrite runs in a forked child of redis-server, on the
    store's CPUs, for a second or more; its CPU is not part of the server
    CPU of the table (that is the node and redis-server's own threads), and
    with C{--store-cpus} beside the load it takes the load generator's CPU.

    L{settle} waits for a rewrite in progress (the prefill's) to end before a
    measurement; L{watch} samples C{INFO} every 0.1 s while the engine runs
    and sums up the rewrites that overlapped the measured window, their CPU
    (redis-server's reaped children), and what rewrites cost per request in
    a steady state: a rewrite starts whenever the file has grown by
    C{auto-aof-rewrite-percentage} of its size after the last rewrite, and
    rewriting costs about the same CPU per byte written, so the steady cost
    per request is (rewrite CPU per byte of rewritten file) x (bytes the file
    grows by per request) / (percentage / 100), whatever the data set's
    size.  With the CPUs it is pinned to, the samples also carry their busy
    time, from which the summary tells what other processes took of them.
    """

    interval = 0.1

    def __init__(self, port, pid, cpus=None, loadShares=False):
        """
        @param cpus: the taskset list redis-server is pinned to, whose busy
            time the samples carry, or L{None}.
        @param loadShares: whether the load generator runs on those CPUs.
        """
        self.port = port
        self.pid = pid
        self.cpus = cpus
        self.loadShares = loadShares
        self.cpuPerByte = None
        self._connection = None
        # The last sample taken with no rewrite left running, from which
        # settle looks for a rewrite that ran (in a prefill) since.
        self.lastSample = None

    def command(self, *args):
        if self._connection is None:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            self._connection = (sock, sock.makefile("rb"))
        sock, stream = self._connection
        encoded = [str(a).encode() for a in args]
        try:
            sock.sendall(
                b"*%d\r\n" % (len(encoded),)
                + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in encoded)
            )
            return _redisReply(stream)
        except (OSError, ConnectionError):
            self.close()
            raise

    def close(self):
        if self._connection is not None:
            sock, stream = self._connection
            self._connection = None
            stream.close()
            sock.close()

    def info(self) -> dict:
        """
        The fields of C{INFO persistence} and C{INFO cpu}, as numbers where
        they are numbers, with the time they were read (C{time.monotonic}).
        """
        fields = {}
        for section in ("persistence", "cpu"):
            for line in self.command("INFO", section).splitlines():
                name, sep, value = line.partition(":")
                if not sep:
                    continue
                try:
                    fields[name] = float(value) if "." in value else int(value)
                except ValueError:
                    fields[name] = value
        fields["at"] = time.monotonic()
        if self.cpus:
            fields["cores_busy"] = coresBusy(self.cpus)
        fields["children_cpu"] = fields.get("used_cpu_sys_children", 0.0) + fields.get(
            "used_cpu_user_children", 0.0
        )
        fields["own_cpu"] = fields.get("used_cpu_sys", 0.0) + fields.get(
            "used_cpu_user", 0.0
        )
        return fields

    @staticmethod
    def rewriting(fields) -> bool:
        return _rewriting(fields)

    def settle(self, bound=300.0) -> dict:
        """
        Wait (at most C{bound} seconds) until no rewrite of the append-only
        file is in progress or scheduled; say how long that took and learn
        the CPU per byte of a rewrite that ended meanwhile.
        """
        first = last = self.info()
        while self.rewriting(last) and last["at"] - first["at"] < bound:
            time.sleep(self.interval)
            last = self.info()
        if self.rewriting(last):
            raise RuntimeError(
                "redis-server still rewrites its append-only file after %.0f s"
                % (bound,)
            )
        self.learn(self.lastSample or first, last)
        return {
            "waited_s": round(last["at"] - first["at"], 2),
            "rewrites": int(self.rewriting(first)),
        }

    def learn(self, before, after):
        """
        Learn the CPU per byte of rewritten file of the one rewrite that
        ended between two samples, the second taken with none running.
        redis-server counts a rewrite when it starts it, and adds its
        child's CPU to its children's when the child has ended.
        """
        ended = (
            after["aof_rewrites"] - before["aof_rewrites"] + int(self.rewriting(before))
        )
        if ended == 1 and after.get("aof_base_size"):
            self.cpuPerByte = (after["children_cpu"] - before["children_cpu"]) / after[
                "aof_base_size"
            ]
        self.lastSample = after

    def watch(self):
        """
        Start sampling in a thread; call the returned object's C{stop} with
        the engine's report when it has exited.
        """
        return _RedisWatch(self)


class _RedisWatch:
    def __init__(self, store):
        self.store = store
        self.samples = [store.info()]
        self.percentage = int(
            store.command("CONFIG", "GET", "auto-aof-rewrite-percentage")[1]
        )
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self):
        while not self.done.wait(self.store.interval):
            try:
                self.samples.append(self.store.info())
            except (OSError, ConnectionError, RuntimeError):
                return

    def cancel(self):
        self.done.set()
        self.thread.join()

    def stop(self, report) -> dict:
        """
        Stop sampling once the rewrites in progress have ended; return what
        they did to the window of C{report} (which ended when the engine
        exited, just now).
        """
        ended = time.monotonic()
        windowStart = ended - report["window_s"]
        self.cancel()
        while True:
            sample = self.store.info()
            self.samples.append(sample)
            if not _rewriting(sample) or sample["at"] - ended > 300:
                break
            time.sleep(self.store.interval)
        result, cpuPerByte = rewriteSummary(
            self.samples,
            windowStart,
            ended,
            report.get("requests"),
            self.percentage,
            self.store.cpuPerByte,
            report.get("client_cpu_pct") if self.store.loadShares else 0.0,
        )
        self.store.cpuPerByte = cpuPerByte
        self.store.lastSample = self.samples[-1]
        return result


def _rewriting(sample) -> bool:
    return bool(
        sample.get("aof_rewrite_in_progress") or sample.get("aof_rewrite_scheduled")
    )


def rewriteSummary(
    samples, windowStart, windowEnd, requests, percentage, cpuPerByte, loadPct=None
):
    """
    Sum up samples of redis-server's C{INFO} (L{RedisStore.info}, the first
    taken before the engine started, the last once no rewrite was left
    running) for a window from C{windowStart} to C{windowEnd}
    (C{time.monotonic}) in which C{requests} were answered.

    @param percentage: redis-server's C{auto-aof-rewrite-percentage}.
    @param cpuPerByte: the CPU seconds per byte of rewritten file of the
        last rewrite measured before, or L{None}.
    @param loadPct: the load generator's CPU (% of a CPU) in the window when
        it runs on redis-server's CPUs, 0 when it does not, L{None} when
        unknown.
    @return: the summary (a JSON object), and the CPU seconds per byte of
        the rewrites seen here (C{cpuPerByte} if none was).
    """
    first, last = samples[0], samples[-1]
    rewrites = []
    current = None
    growth = 0
    inside = [x for x in samples if windowStart <= x["at"] <= windowEnd]
    for previous, sample in zip(samples, samples[1:], strict=False):
        if _rewriting(sample):
            if current is None:
                current = [previous["at"], None]
                rewrites.append(current)
        elif current is not None:
            current[1] = sample["at"]
            current = None
        # A rewrite's end starts the file anew, smaller: the growth across
        # it is not known, and is left out (0.1 s of a window).
        if previous["at"] >= windowStart and sample["at"] <= windowEnd:
            growth += max(0, sample["aof_current_size"] - previous["aof_current_size"])
    # redis-server counts a rewrite when it starts it; the last sample was
    # taken when none was left running, so the rewrites that ended are
    # those started and the one running at first, if any.
    count = last["aof_rewrites"] - first["aof_rewrites"] + int(_rewriting(first))
    cpu = last["children_cpu"] - first["children_cpu"]
    if count and last.get("aof_base_size"):
        cpuPerByte = cpu / count / last["aof_base_size"]
    spans = [(start, windowEnd if end is None else end) for start, end in rewrites]
    result = {
        "aof_rewrites": count,
        "aof_rewrites_in_window": sum(
            1 for start, end in spans if start < windowEnd and end > windowStart
        ),
        # Rewrites that began and ended between two samples.
        "aof_rewrites_unseen": max(0, count - len(rewrites)),
        "aof_rewrite_spans_s": [
            [round(start - windowStart, 1), round(end - windowStart, 1)]
            for start, end in spans
        ],
        "aof_rewrite_cpu_s": round(cpu, 3),
        "aof_rewrite_status": last.get("aof_last_bgrewrite_status"),
        "aof_bytes_per_request": round(growth / requests) if requests else None,
        "aof_rewrite_percentage": percentage,
        # redis-server's own CPU (its threads, not its children) in the
        # window: the rest of the server CPU is the node's.
        "redis_cpu_pct": (
            round(
                100
                * (inside[-1]["own_cpu"] - inside[0]["own_cpu"])
                / (inside[-1]["at"] - inside[0]["at"]),
                1,
            )
            if len(inside) > 1 and inside[-1]["at"] > inside[0]["at"]
            else None
        ),
    }
    # What the store's CPUs did in the window (samples with C{cores_busy}):
    # busy in all, and busy with other processes than redis-server, its
    # rewrites (their CPU spread over their spans) and the load generator.
    if len(inside) > 1 and "cores_busy" in inside[0]:
        seconds = inside[-1]["at"] - inside[0]["at"]
        rewriteInWindow = 0.0
        if count:
            for start, end in spans:
                overlap = min(end, windowEnd) - max(start, windowStart)
                if overlap > 0 and end > start:
                    rewriteInWindow += cpu / count * overlap / (end - start)
        busy = 100 * (inside[-1]["cores_busy"] - inside[0]["cores_busy"]) / seconds
        result["store_cpus_busy_pct"] = round(busy, 1)
        if loadPct is not None and result["redis_cpu_pct"] is not None:
            result["store_cpus_other_pct"] = round(
                max(
                    0.0,
                    busy
                    - result["redis_cpu_pct"]
                    - 100 * rewriteInWindow / seconds
                    - loadPct,
                ),
                1,
            )
    if cpuPerByte is not None and requests and percentage > 0:
        result["aof_rewrite_us_per_request"] = round(
            cpuPerByte * (growth / requests) / (percentage / 100) * 1e6, 1
        )
    return result, cpuPerByte


def startMongo(servers, options):
    """
    Start SecantusDB (a MongoDB-wire-compatible server, not MongoDB) the way
    tests/mongoserver.py does: standalone, with an empty configuration file
    so that no secantusd.toml is picked up.
    """
    if importlib.util.find_spec("secantus") is None:
        raise SystemExit("SecantusDB is not installed (pip install secantusdb)")
    port = freePort()
    data = os.path.join(servers.workdir, "mongo-data")
    os.makedirs(data, exist_ok=True)
    config = os.path.join(servers.workdir, "secantusd.toml")
    open(config, "w").close()
    command = pinned(
        storeCpus(options),
        [
            sys.executable,
            "-m",
            "secantus",
            "--config",
            config,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            data,
            "--standalone",
            "--log-level",
            "WARNING",
        ]
        + shlex.split(options.mongo_args),
    )
    process, log = servers.start("secantus", command)
    waitForPort(port, process, time.monotonic() + 60, log)
    return port, process.pid


def startNode(servers, options, name) -> Target:
    """
    Start a node; C{name} is C{sqlite} or C{redis}, optionally followed by
    C{?QUERY} appended to the storage URI (C{sqlite?synchronous=normal}).
    """
    kind = name
    extraPids = []
    redis = None
    kind, _, query = kind.partition("?")
    if options.storage:
        storage = options.storage
    elif kind == "sqlite":
        storage = "sqlite:" + os.path.join(
            servers.workdir, "marconi-%d.sqlite" % (len(servers.processes),)
        )
        if query:
            storage += "?" + query
    elif kind == "mongodb":
        mongoPort, mongoPid = startMongo(servers, options)
        extraPids.append(mongoPid)
        storage = options.mongo_storage.format(port=mongoPort)
        if query:
            storage += "?" + query
    else:
        redisPort, redisPid = startRedis(servers, options)
        extraPids.append(redisPid)
        cpus = storeCpus(options)
        redis = RedisStore(
            redisPort,
            redisPid,
            cpus,
            bool(cpus) and cpus == options.client_cpus,
        )
        redis.lastSample = redis.info()
        storage = options.redis_storage.format(port=redisPort)
    port = freePort()
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    if not os.path.exists(twistd):
        twistd = shutil.which("twistd") or "twistd"
    command = [
        twistd,
        "-n",
        "--pidfile=",
        "marconi",
        "--listen",
        "tcp:%d:interface=127.0.0.1" % (port,),
        "--storage",
        storage,
    ] + shlex.split(options.node_args)
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    logName = "node-%d" % (len(servers.processes),)
    process, log = servers.start(logName, pinned(options.server_cpus, command), env)
    waitForPort(port, process, time.monotonic() + 60, log)
    return Target(
        name, "http://127.0.0.1:%d" % (port,), [process.pid] + extraPids, redis
    )


def coresBusy(cpus) -> float:
    """
    The busy CPU seconds so far of the CPUs in the taskset list C{cpus}.
    """
    if not cpus:
        return 0.0
    wanted = set()
    for part in cpus.split(","):
        low, _, high = part.partition("-")
        wanted.update(range(int(low), int(high or low) + 1))
    ticks = os.sysconf("SC_CLK_TCK")
    busy = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if (
                name.startswith("cpu")
                and name[3:].isdigit()
                and int(name[3:]) in wanted
            ):
                values = [int(v) for v in fields]
                # user nice system irq softirq steal
                busy += (
                    values[0]
                    + values[1]
                    + values[2]
                    + values[5]
                    + values[6]
                    + values[7]
                )
    return busy / ticks


class NoiseMeter:
    """
    How much of the server's CPUs went to processes other than the servers
    under test while a scenario ran: the noise of a shared machine.
    """

    def __init__(self, cpus, pids):
        self.cpus = cpus
        self.pids = pids
        self.started = time.monotonic()
        self.busy = coresBusy(cpus)
        self.servers = processesCPU(pids)

    def percent(self):
        if not self.cpus:
            return None
        wall = time.monotonic() - self.started
        count = len(self.cpus.split(","))
        other = (coresBusy(self.cpus) - self.busy) - (
            processesCPU(self.pids) - self.servers
        )
        return round(max(0.0, 100.0 * other / (wall * count)), 1)


def runEngine(command, bound: float):
    """
    Run an engine to completion (killing it past C{bound} seconds); return
    its report line as a dict, its wall time and its CPU seconds.
    """
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=bound)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise RuntimeError(
            "engine overstayed %.0f s: %s" % (bound, " ".join(command))
        ) from None
    except BaseException:
        process.kill()
        process.wait()
        raise
    wall = time.monotonic() - started
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("MARCONI-BENCH "):
            return json.loads(line[len("MARCONI-BENCH ") :]), wall
    raise RuntimeError(
        "engine gave no report (exit %s): %s\n%s"
        % (process.returncode, " ".join(command), err.decode(errors="replace")[-2000:])
    )


class Runner:
    def __init__(self, options):
        self.options = options
        self.run = uuid.uuid4().hex[:8]
        # bench/keystone_auth.py names the project its token is scoped to.
        self.project = os.environ.get("MARCONI_BENCH_PROJECT") or "bench-" + self.run
        self.clientId = str(uuid.uuid4())
        self.allPids = []

    def driver(self, target, scenario, queue, **extra):
        o = self.options
        command = [
            sys.executable,
            os.path.join(HERE, "driver.py"),
            "--url",
            target.url,
            "--scenario",
            scenario,
            "--project",
            self.project,
            "--client-id",
            self.clientId,
            "--queue",
            queue,
            "--concurrency",
            str(o.concurrency),
            "--duration",
            str(o.duration),
            "--warmup",
            str(o.warmup),
            "--timeout",
            str(o.timeout),
            "--max-requests",
            str(o.max_requests),
        ]
        for pid in target.pids:
            command += ["--watch-pid", str(pid)]
        for key, value in extra.items():
            command += ["--" + key.replace("_", "-"), str(value)]
        return pinned(o.client_cpus, command)

    def seed(self, target, queue, count):
        report, _ = runEngine(
            self.driver(
                target, "seed", queue, seed=count, batch=self.options.seed_batch
            ),
            600,
        )
        if report["posted"] < count:
            raise RuntimeError(
                "seeding %s posted %d of %d" % (queue, report["posted"], count)
            )
        return report

    def wrk(self, target, scenario, queue, ids):
        o = self.options
        script, argument, perRequest = WRK_SCENARIOS[scenario]
        if argument is None:
            argument = ",".join(ids)
        threads = max(1, len(o.client_cpus.split(",")) if o.client_cpus else 1)

        def command(seconds):
            return pinned(
                o.client_cpus,
                [
                    "wrk",
                    "-t%d" % (threads,),
                    "-c%d" % (max(threads, o.concurrency),),
                    "-d%ds" % (seconds,),
                    "--timeout",
                    "%ds" % (max(1, int(o.timeout)),),
                    "--latency",
                    "-s",
                    os.path.join(HERE, "wrk", script),
                    target.url,
                    "--",
                    self.project,
                    self.clientId,
                    queue,
                    argument,
                ],
            )

        if o.warmup > 0:
            runEngine(command(max(1, round(o.warmup))), o.warmup + o.timeout + 30)
        seconds = max(1, round(o.duration))
        serverBefore = processesCPU(target.pids)
        started = time.monotonic()
        pid, status, usage, out = _runWithUsage(
            command(seconds), seconds + o.timeout + 30
        )
        wall = time.monotonic() - started
        serverCPU = processesCPU(target.pids) - serverBefore
        summary = None
        for line in out.splitlines():
            if line.startswith("MARCONI-BENCH "):
                summary = json.loads(line[len("MARCONI-BENCH ") :])
        if summary is None:
            raise RuntimeError("wrk gave no report:\n" + out[-2000:])
        window = summary["duration_us"] / 1e6
        errors = {k: v for k, v in summary["errors"].items() if v}
        ok = summary["requests"] - summary["errors"]["status"]
        return {
            "scenario": scenario,
            "engine": "wrk",
            "window_s": round(window, 3),
            "requests": summary["requests"],
            "req_s": round(summary["requests"] / window, 1),
            "messages": ok * perRequest,
            "msgs_s": round(ok * perRequest / window, 1),
            "messages_are": MESSAGES_ARE[scenario],
            "p50_ms": summary["latency_us"]["p50"] / 1000,
            "p99_ms": summary["latency_us"]["p99"] / 1000,
            "ops": {},
            "errors": errors,
            "drained": False,
            "client_cpu_pct": round(100 * (usage.ru_utime + usage.ru_stime) / wall, 1),
            "server_cpu_pct": round(100 * serverCPU / wall, 1) if target.pids else None,
        }

    def scenario(self, target, scenario):
        o = self.options
        queue = re.sub(
            r"[^a-zA-Z0-9_-]",
            "_",
            "%s-%s-%s" % (scenario, target.name, uuid.uuid4().hex[:6]),
        )[-64:]
        ids = []
        if scenario in ("list10", "getbyid"):
            ids = self.seed(target, queue, 200)["ids"]
        elif scenario in ("claim-each", "claim-bulk") and target.name not in CANNED:
            default = 60000 if scenario == "claim-each" else 150000
            self.seed(target, queue, o.claim_seed or default)
        settled = watch = None
        if target.redis is not None:
            settled = target.redis.settle()
        profiler = self.profile(target, scenario)
        noise = NoiseMeter(o.server_cpus, self.allPids)
        try:
            if target.redis is not None:
                watch = target.redis.watch()
            report = self.measure(target, scenario, queue, ids)
            report["noise_pct"] = noise.percent()
            report["server_us_per_request"] = cpuPerRequest(report)
            if watch is not None:
                report["redis"] = dict(watch.stop(report), settled=settled)
                watch = None
            return report
        finally:
            if watch is not None:
                watch.cancel()
            if profiler is not None:
                profiler.cancel()
                profiler.wait()

    def profile(self, target, scenario):
        """
        With --profile, record the node with py-spy over the measured window.
        """
        o = self.options
        if not o.profile or target.name in CANNED or not target.pids:
            return None
        os.makedirs(o.profile, exist_ok=True)
        name = re.sub(r"[^a-zA-Z0-9_.-]", "_", "%s-%s.txt" % (scenario, target.name))
        command = pinned(
            o.client_cpus,
            [
                o.py_spy,
                "record",
                "--pid",
                str(target.pids[0]),
                "--format",
                "raw",
                "--threads",
                "--nonblocking",
                "--rate",
                "100",
                "--duration",
                str(max(1, int(o.duration) - 1)),
                "-o",
                os.path.join(o.profile, name),
            ]
            + (["--idle"] if o.profile_idle else []),
        )
        return Profiler(command, o.warmup)

    def measure(self, target, scenario, queue, ids):
        o = self.options
        useWrk = o.engine == "wrk" or (o.engine == "auto" and shutil.which("wrk"))
        if scenario in WRK_SCENARIOS and useWrk:
            return self.wrk(target, scenario, queue, ids)
        extra = {}
        if scenario == "getbyid":
            extra["ids"] = ",".join(ids)
        bound = o.warmup + o.duration + o.timeout + 30
        report, _ = runEngine(self.driver(target, scenario, queue, **extra), bound)
        return report


class Profiler:
    """
    Starts a profiler after C{delay} seconds (the warmup), in the background.
    """

    def __init__(self, command, delay):
        self.command = command
        self.process = None
        self.timer = threading.Timer(delay, self._start)
        self.timer.daemon = True
        self.timer.start()

    def _start(self):
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def cancel(self):
        self.timer.cancel()

    def wait(self):
        self.timer.join()
        if self.process is not None:
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _runWithUsage(command, bound):
    """
    Run C{command}; return its pid, exit status, resource usage and output.
    """
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + bound
        try:
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    process.kill()
                    pid, status, usage = os.wait4(process.pid, 0)
                    raise RuntimeError(
                        "overstayed %.0f s: %s" % (bound, " ".join(command))
                    )
                time.sleep(0.05)
        except BaseException:
            if process.returncode is None:
                try:
                    process.kill()
                    os.waitpid(process.pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
            raise
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        return pid, status, usage, output.read().decode(errors="replace")


def machine() -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import twisted

        twistedVersion = twisted.__version__
    except ImportError:
        twistedVersion = "not installed"
    wrkVersion = "not installed"
    if shutil.which("wrk"):
        out = subprocess.run(
            ["wrk", "--version"], capture_output=True, text=True
        ).stdout
        wrkVersion = out.split("Copyright")[0].strip() or "unknown"
    try:
        commit = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "twisted": twistedVersion,
        "kernel": platform.release(),
        "wrk": wrkVersion,
        "commit": commit,
    }


def fmt(value, digits=0) -> str:
    if value is None:
        return "-"
    if digits == 0:
        return "{:,.0f}".format(value)
    return "{:,.{}f}".format(value, digits)


def table(results, targets, baselineName="baseline") -> list:
    """
    Rows of the results table, one per scenario and target.
    """
    header = [
        "scenario",
        "target",
        "engine",
        "req/s",
        "msgs/s",
        "p50 ms",
        "p99 ms",
        "× baseline",
        "client CPU %",
        "server CPU %",
        "other load %",
        "notes",
    ]
    rows = [header]
    for scenario in SCENARIOS:
        if scenario not in results:
            continue
        base = results[scenario].get(baselineName)
        for target in targets:
            r = results[scenario].get(target)
            if r is None:
                continue
            ratio = "-"
            if base is not None and target != baselineName and base["req_s"]:
                ratio = "%.3f" % (r["req_s"] / base["req_s"])
            notes = []
            if r.get("errors"):
                notes.append(
                    "errors: " + ", ".join("%s=%s" % kv for kv in r["errors"].items())
                )
            if r.get("drained"):
                notes.append("queue drained after %.1f s" % (r["window_s"],))
            if r.get("runs_req_s"):
                notes.append(
                    "runs: " + " / ".join(fmt(v) for v in r["runs_req_s"]) + " req/s"
                )
            if r.get("produced_s"):
                notes.append("produced %s msgs/s" % (fmt(r["produced_s"]),))
            if r.get("redis"):
                notes.append(redisNotes(r["redis"]))
            ops = r.get("ops") or {}
            if len(ops) > 1:
                notes.append(
                    "; ".join(
                        "%s %s/%s ms" % (op, fmt(v["p50_ms"], 1), fmt(v["p99_ms"], 1))
                        for op, v in ops.items()
                    )
                )
            rows.append(
                [
                    TITLES[scenario],
                    target,
                    r["engine"],
                    fmt(r["req_s"]),
                    "%s %s" % (fmt(r["msgs_s"]), r["messages_are"]),
                    fmt(r["p50_ms"], 2),
                    fmt(r["p99_ms"], 2),
                    ratio,
                    fmt(r.get("client_cpu_pct")),
                    fmt(r.get("server_cpu_pct")),
                    fmt(r.get("noise_pct")),
                    " | ".join(notes).replace("|", "/"),
                ]
            )
    return rows


def redisNotes(redis) -> str:
    """
    What the append-only file of redis-server did around a measurement.
    """
    parts = []
    settled = redis.get("settled") or {}
    if settled.get("waited_s"):
        parts.append("waited %.1f s for an AOF rewrite before" % (settled["waited_s"],))
    inWindow = redis.get("aof_rewrites_in_window", 0)
    parts.append(
        "AOF rewrites in window: %d%s"
        % (
            inWindow,
            " (%s; %s s of rewrite CPU in all)"
            % (
                ", ".join(
                    "%s to %s s" % (start, end)
                    for start, end in redis.get("aof_rewrite_spans_s", [])
                ),
                fmt(redis["aof_rewrite_cpu_s"], 2),
            )
            if redis.get("aof_rewrites")
            else "",
        )
    )
    if redis.get("store_cpus_other_pct") is not None:
        parts.append(
            "other load on the store's CPUs %s%%"
            % (fmt(redis["store_cpus_other_pct"]),)
        )
    if redis.get("aof_rewrite_us_per_request") is not None:
        parts.append(
            "rewrites cost ~%s us/request in steady state"
            % (fmt(redis["aof_rewrite_us_per_request"], 1),)
        )
    return "; ".join(parts)


def textTable(rows) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(
                str(c).ljust(w) for c, w in zip(row, widths, strict=False)
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdownTable(rows) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    for row in rows[1:]:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def markdown(rows, info, options, argv) -> str:
    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in argv)
    return "\n".join(
        [
            "## %s: %s vs baseline (%s)"
            % (
                datetime.date.today().isoformat(),
                ", ".join(options.targetNames),
                info["commit"],
            ),
            "",
            "Command: `%s`" % (command,),
            "",
            "Machine: %s CPUs, %s; Python %s, Twisted %s, Linux %s, %s."
            % (
                info["nproc"],
                info["cpu"],
                info["python"],
                info["twisted"],
                info["kernel"],
                info["wrk"],
            ),
            "Server on CPU %s (a store server on CPU %s), load on CPU %s; "
            "%d connections, %s s warmup + %s s measured, "
            '%s of %d run(s); node data under %s. "other load" is the share of the '
            "server's CPU that other processes took during the scenario."
            % (
                options.server_cpus or "any",
                storeCpus(options) or "any",
                options.client_cpus or "any",
                options.concurrency,
                options.warmup,
                options.duration,
                options.pick,
                options.repeat,
                options.data_dir or tempfile.gettempdir(),
            ),
            "",
            markdownTable(rows),
            "",
        ]
    )


def parseOptions(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        help="baseline | klein | sqlite | redis | mongodb | url:http://HOST:PORT "
        "(repeatable; "
        "default sqlite); sqlite and redis take ?QUERY for the storage URI, e.g. "
        "sqlite?synchronous=normal; the baseline is always measured too unless "
        "--no-baseline",
    )
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated, from: " + ",".join(SCENARIOS),
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="unmeasured seconds first"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="connections")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request")
    parser.add_argument(
        "--max-requests",
        type=int,
        default=10_000_000,
        help="per scenario (python engine; wrk is bound by time)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario")
    parser.add_argument(
        "--pick",
        choices=["median", "best"],
        default="median",
        help="which of the repeated runs to report",
    )
    parser.add_argument(
        "--engine",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="for the fixed scenarios (the claim ones always use python)",
    )
    parser.add_argument(
        "--claim-seed",
        type=int,
        default=None,
        help="messages posted before each claim scenario "
        "(default 60,000 for claim-each, 150,000 for claim-bulk)",
    )
    parser.add_argument("--seed-batch", type=int, default=100)
    parser.add_argument(
        "--storage",
        default="",
        help="storage URI for the node instead of the default one",
    )
    parser.add_argument(
        "--redis-storage",
        default="redis://127.0.0.1:{port}",
        help="storage URI template for --target redis",
    )
    parser.add_argument(
        "--mongo-storage",
        default="mongodb://127.0.0.1:{port}/bench",
        help="storage URI template for --target mongodb (SecantusDB)",
    )
    parser.add_argument(
        "--mongo-args",
        default="",
        help="more arguments for SecantusDB (e.g. --sync-on-commit)",
    )
    parser.add_argument(
        "--redis-args",
        default="--appendonly yes --appendfsync everysec",
        help="more arguments for redis-server (default: the append-only file, "
        "fsynced every second, as docs/storage-redis.rst recommends; RDB "
        "snapshots are off)",
    )
    parser.add_argument(
        "--node-args", default="", help="more arguments for twistd marconi"
    )
    parser.add_argument("--server-cpus", default=None, help="taskset list (default 0)")
    parser.add_argument("--client-cpus", default=None, help="taskset list (default 1)")
    parser.add_argument(
        "--store-cpus",
        default=None,
        help="taskset list for the store server of --target redis or mongodb "
        "(default: the server's CPUs, beside the node)",
    )
    parser.add_argument("--markdown", metavar="FILE", help="append a markdown section")
    parser.add_argument("--json", metavar="FILE", help="write every report as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="where the work directory (node data, logs) goes; "
        "e.g. /dev/shm to take the disk out of the measurement",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record each node with py-spy during each scenario "
        "(collapsed stacks; summarise with bench/profile.py)",
    )
    parser.add_argument(
        "--profile-idle",
        action="store_true",
        help="keep idle samples too (where threads wait)",
    )
    options = parser.parse_args(argv)
    options.scenarios = [s for s in options.scenarios.split(",") if s]
    for s in options.scenarios:
        if s not in SCENARIOS:
            parser.error("unknown scenario %r" % (s,))
    if not options.target:
        options.target = ["sqlite"]
    for t in options.target:
        if t.partition("?")[0] not in (
            "baseline",
            "klein",
            "sqlite",
            "redis",
            "mongodb",
        ) and not (t.startswith("url:http://")):
            parser.error("unknown target %r" % (t,))
    if options.engine == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install -y wrk)")
    if options.profile:
        options.py_spy = shutil.which("py-spy") or os.path.join(
            os.path.dirname(sys.executable), "py-spy"
        )
        if not os.path.exists(options.py_spy):
            parser.error(
                "--profile needs py-spy (pip install -r bench/requirements.txt)"
            )
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        if options.server_cpus is None:
            options.server_cpus = str(cpus[0])
        if options.client_cpus is None:
            options.client_cpus = str(cpus[1])
    return options


def cpuPerRequest(report):
    """
    The server's CPU time per request over the measured window, in
    microseconds: steadier than the rates on a machine shared with other
    work, as long as the server is not starved of its core.
    """
    cpu, requests = report.get("server_cpu_pct"), report.get("requests")
    if cpu is None or not requests:
        return None
    return round(cpu / 100 * report["window_s"] * 1e6 / requests)


def pick(reports, how="median"):
    """
    The report to show of several runs: the median by requests/s, or the
    best (a busy machine only ever takes throughput away).
    """
    ordered = sorted(reports, key=lambda r: r["req_s"])
    chosen = dict(ordered[-1] if how == "best" else ordered[len(ordered) // 2])
    if len(reports) > 1:
        chosen["runs_req_s"] = [r["req_s"] for r in reports]
    return chosen


def render(path) -> int:
    """
    Print the table of a run saved with --json, as markdown.
    """
    with open(path) as f:
        saved = json.load(f)
    targets = []
    for byTarget in saved["results"].values():
        for name in byTarget:
            if name not in targets:
                targets.append(name)
    print(markdownTable(table(saved["results"], targets)))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--render"] and len(argv) == 2:
        return render(argv[1])
    options = parseOptions(argv)

    def terminated(signum, frame):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, terminated)
    workdir = tempfile.mkdtemp(prefix="marconi-bench-", dir=options.data_dir)
    servers = Servers(workdir)
    info = machine()
    results = {}
    try:
        targets = []
        if not options.no_baseline or "baseline" in options.target:
            targets.append(startBaseline(servers, options))
        for t in options.target:
            if t == "baseline":
                continue
            if t == "klein":
                targets.append(startBaseline(servers, options, "klein"))
            elif t.startswith("url:"):
                targets.append(Target(t[len("url:") :], t[len("url:") :]))
            else:
                targets.append(startNode(servers, options, t))
        options.targetNames = [t.name for t in targets]
        print("machine: %s" % (json.dumps(info),))
        print(
            "targets: %s (server CPU %s, store server CPU %s, load CPU %s); "
            "work directory %s"
            % (
                ", ".join("%s=%s" % (t.name, t.url) for t in targets),
                options.server_cpus,
                storeCpus(options),
                options.client_cpus,
                workdir,
            )
        )
        runner = Runner(options)
        runner.allPids = [pid for t in targets for pid in t.pids]
        for scenario in options.scenarios:
            results[scenario] = {}
            for target in targets:
                reports = []
                for _ in range(options.repeat):
                    reports.append(runner.scenario(target, scenario))
                report = pick(reports, options.pick)
                results[scenario][target.name] = report
                print(
                    "%-24s %-10s %10s req/s %12s msgs/s  p50 %7.2f ms  p99 %7.2f ms  "
                    "client CPU %s%%  server CPU %s%% (%s us/request)  "
                    "other load %s%%%s"
                    % (
                        TITLES[scenario],
                        target.name,
                        fmt(report["req_s"]),
                        fmt(report["msgs_s"]),
                        report["p50_ms"],
                        report["p99_ms"],
                        fmt(report.get("client_cpu_pct")),
                        fmt(report.get("server_cpu_pct")),
                        fmt(report.get("server_us_per_request")),
                        fmt(report.get("noise_pct")),
                        ("  errors %s" % (report["errors"],))
                        if report["errors"]
                        else "",
                    ),
                    flush=True,
                )
                if report.get("redis"):
                    print(
                        "    redis-server: " + redisNotes(report["redis"]), flush=True
                    )
    except KeyboardInterrupt:
        print("interrupted; stopping the servers", file=sys.stderr)
        return 130
    finally:
        servers.stop()
        if not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = table(results, options.targetNames)
    print()
    print(textTable(rows))
    if options.json:
        with open(options.json, "w") as f:
            json.dump({"machine": info, "argv": argv, "results": results}, f, indent=2)
    if options.markdown:
        with open(options.markdown, "a") as f:
            f.write("\n" + markdown(rows, info, options, argv))
        print("appended to %s" % (options.markdown,))
    if options.profile:
        print(
            "profiles in %s; summarise with: python bench/profile.py %s/*.txt"
            % (options.profile, options.profile)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
