#!/usr/bin/env python3
"""
Fault-injection harness for one Marconi node.

Runs the real daemon (C{twistd -n marconi}, SQLite on disk, claim TTLs
lowered through a config file) and, for a bounded time:

  - producers post unique values and record every one acknowledged with
    201 (a 4xx is a definite failure, a timeout or a reset is unknown);
  - consumers claim, then delete with the claim id what they got (some
    "crash" instead and let the claim expire), recording each claim's
    invoke and completion times;
  - a nemesis kills the node with SIGKILL and restarts it, or freezes it
    with SIGSTOP for longer than a claim TTL and resumes it.

Then it heals the node, drains the queue (claim and delete until empty)
and checks the history:

  - lost: acknowledged values never delivered (must be 0);
  - unexpected: delivered values never posted (must be 0);
  - overlaps: a message delivered under two claims whose certainly-live
    windows overlap; a claim made at server time s (between its invoke and
    completion) lives until s + ttl, so it is certainly live over
    [completed, invoked + ttl] (must be 0);
  - resurrected: delivered again after a delete with its claim was
    acknowledged (must be 0);
  - duplicated: delivered more than once (allowed: at-least-once).

With C{--safety LEVEL} every post, claim and delete asks for that safety
level (C{?safety=fast|durable}); C{--default-safety LEVEL} sets the node's
C{[storage] durability} instead.  On SQLite both C{fast} and C{durable}
must lose nothing to SIGKILL of the node (docs/storage.rst says why: a
C{fast} commit is in the operating system's cache, which outlives the
process); what C{fast} may lose to a power loss cannot be shown here.

Plain C{http.client} and threads, no Twisted: the client side shares no
code with the server.  Exit status 0 when every safety check holds.

    python bench/faults/harness.py --duration 60 --seed 7 --report out.json
    python bench/faults/harness.py --duration 60 --safety fast
"""

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWISTD = "from twisted.scripts.twistd import run; run()"
PROJECT = "faults"
QUEUE = "work"

CONFIG = """\
[marconi]
purge_interval = 1

[limits]
min_claim_ttl = 1
min_claim_grace = 0
"""


def freePort():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """
    The daemon under test, on a fixed port across restarts.
    """

    def __init__(self, directory, port, defaultSafety=None):
        self.directory = directory
        self.port = port
        self.process = None
        self.paused = False
        self.config = os.path.join(directory, "node.ini")
        with open(self.config, "w") as f:
            f.write(CONFIG)
            if defaultSafety is not None:
                f.write(f"\n[storage]\ndurability = {defaultSafety}\n")
        self.lock = threading.Lock()

    def start(self, wait=30.0):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (ROOT, env.get("PYTHONPATH")) if p
        )
        argv = [
            sys.executable, "-c", TWISTD, "-n", "--pidfile=",
            "--logfile=" + os.path.join(self.directory, "node.log"),
            "marconi",
            "--config", self.config,
            "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--storage", "sqlite:" + os.path.join(self.directory, "faults.sqlite3"),
        ]  # fmt: skip
        self.process = subprocess.Popen(argv, env=env, cwd=self.directory)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the node exited while starting")
            try:
                status, _ = request(self.port, "GET", "/v2/ping", timeout=1)
                if status == 204:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the node did not start")

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.paused = False

    def pause(self):
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        if self.paused:
            self.resume()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def rss(self):
        try:
            with open(f"/proc/{self.process.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None


def withSafety(path, safety):
    """
    C{path} asking for the safety level C{safety} (none when L{None}).
    """
    if safety is None:
        return path
    return path + ("&" if "?" in path else "?") + "safety=" + safety


def request(port, method, path, body=None, client="harness", timeout=3.0):
    """
    One request on a fresh connection: (status, parsed JSON or None).
    Raises OSError (including timeouts) when the outcome is unknown.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"X-Project-ID": PROJECT, "Client-ID": client}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if raw else None)
    except (http.client.HTTPException, ValueError) as e:
        raise OSError(str(e)) from None
    finally:
        connection.close()


class History:
    def __init__(self):
        self.lock = threading.Lock()
        self.attempted = set()
        self.acked = set()
        self.failed = set()
        self.unknown = set()
        # message id -> value, from 201 answers
        self.idOf = {}
        # deliveries: (value, message id, claim id, invoked, completed, ttl, who)
        self.deliveries = []
        # (message id, claim id) -> time the delete was acknowledged
        self.deleted = {}
        self.counts = defaultdict(int)

    def count(self, name):
        with self.lock:
            self.counts[name] += 1


def producer(index, port, history, stop, batch, safety=None):
    seq = 0
    while not stop.is_set():
        values = []
        for _ in range(batch):
            values.append(f"p{index}-{seq}")
            seq += 1
        with history.lock:
            history.attempted.update(values)
        body = {
            "messages": [{"body": {"value": v, "project": PROJECT}} for v in values]
        }
        try:
            status, doc = request(port, "POST",
                                  withSafety(f"/v2/queues/{QUEUE}/messages", safety),
                                  body, client=f"producer-{index}")  # fmt: skip
        except OSError:
            with history.lock:
                history.unknown.update(values)
            history.count("post_unknown")
            time.sleep(0.05)
            continue
        with history.lock:
            if status == 201:
                history.acked.update(values)
                for value, href in zip(values, doc["resources"], strict=True):
                    history.idOf[href.rsplit("/", 1)[1]] = value
            elif 400 <= status < 500:
                history.failed.update(values)
            else:
                history.unknown.update(values)
        history.count(f"post_{status}")


def claimOnce(port, history, ttl, who, limit=5, safety=None):
    """
    Claim up to C{limit} messages; record the deliveries.  Returns the
    claim id and the message ids, or None when nothing was claimable, or
    raises OSError when the outcome is unknown.
    """
    invoked = time.time()
    path = withSafety(f"/v2/queues/{QUEUE}/claims?limit={limit}", safety)
    status, doc = request(port, "POST", path, {"ttl": ttl, "grace": 0},
                          client=who)  # fmt: skip
    completed = time.time()
    history.count(f"claim_{status}")
    if status == 204:
        return None
    if status != 201:
        raise OSError(f"claim answered {status}")
    held = []
    claimId = None
    for message in doc["messages"]:
        claimId = message["href"].rsplit("claim_id=", 1)[1]
        value = (
            message["body"].get("value") if isinstance(message["body"], dict) else None
        )
        with history.lock:
            history.deliveries.append(
                (value, message["id"], claimId, invoked, completed, ttl, who)
            )
        held.append(message["id"])
    return claimId, held


def consumer(index, port, history, stop, ttl, rng, safety=None):
    who = f"consumer-{index}"
    while not stop.is_set():
        try:
            claimed = claimOnce(port, history, ttl, who, safety=safety)
        except OSError:
            time.sleep(0.05)
            continue
        if claimed is None:
            time.sleep(0.02)
            continue
        claimId, ids = claimed
        if rng.random() < 0.1:
            history.count("consumer_crash")
            continue
        for messageId in ids:
            try:
                path = f"/v2/queues/{QUEUE}/messages/{messageId}?claim_id={claimId}"
                status, _ = request(port, "DELETE", withSafety(path, safety),
                                    client=who)  # fmt: skip
            except OSError:
                history.count("delete_unknown")
                continue
            history.count(f"delete_{status}")
            if status == 204:
                with history.lock:
                    history.deleted[(messageId, claimId)] = time.time()


def nemesis(node, stop, rng, ttl, log):
    # One kill and one pause first (in a random order), so that even a
    # short run sees both; then either at random.
    first = ["kill", "pause"]
    rng.shuffle(first)
    while not stop.wait(rng.uniform(1.0, 2.0)):
        kind = first.pop(0) if first else rng.choice(["kill", "pause"])
        with node.lock:
            if kind == "kill":
                log.append(("kill", time.time()))
                node.kill()
                time.sleep(rng.uniform(0.2, 0.8))
                node.start()
                log.append(("restarted", time.time()))
            else:
                log.append(("pause", time.time()))
                node.pause()
                stop.wait(ttl + rng.uniform(0.5, 1.5))
                node.resume()
                log.append(("resume", time.time()))


def drain(port, history, maxSeconds=60.0):
    """
    Claim and delete until three claims in a row find nothing.
    """
    empty = 0
    deadline = time.monotonic() + maxSeconds
    while empty < 3 and time.monotonic() < deadline:
        try:
            claimed = claimOnce(port, history, 60, "drain", limit=20)
        except OSError:
            time.sleep(0.1)
            continue
        if claimed is None:
            empty += 1
            time.sleep(0.2)
            continue
        empty = 0
        claimId, ids = claimed
        for messageId in ids:
            status, _ = request(port, "DELETE",
                                f"/v2/queues/{QUEUE}/messages/{messageId}?claim_id={claimId}",
                                client="drain")  # fmt: skip
            if status == 204:
                with history.lock:
                    history.deleted[(messageId, claimId)] = time.time()
    return empty >= 3


def check(history):
    """
    The checker: a pure function of the history.
    """
    delivered = defaultdict(list)
    for d in history.deliveries:
        delivered[d[0]].append(d)
    seen = set(delivered)
    lost = sorted(history.acked - seen)
    unexpected = sorted(v for v in seen if v not in history.attempted)
    duplicated = sorted(v for v, ds in delivered.items() if len({d[2] for d in ds}) > 1)
    overlaps = []
    resurrected = []
    epsilon = 0.01
    for value, ds in delivered.items():
        ds = sorted(ds, key=lambda d: d[3])
        for i, first in enumerate(ds):
            for second in ds[i + 1 :]:
                if first[2] == second[2]:
                    continue
                # Certain windows: [completed, invoked + ttl].
                start = max(first[4], second[4])
                end = min(first[3] + first[5], second[3] + second[5])
                if start < end - epsilon:
                    overlaps.append((value, first[2], second[2], round(end - start, 3)))
                acked = history.deleted.get((first[1], first[2]))
                if acked is not None and acked < second[3]:
                    resurrected.append((value, first[2], second[2]))
    recovered = sorted(history.unknown & seen)
    return {
        "attempted": len(history.attempted),
        "acked": len(history.acked),
        "failed": len(history.failed),
        "unknown": len(history.unknown),
        "recovered_unknown": len(recovered),
        "delivered": len(seen),
        "deliveries": len(history.deliveries),
        "lost": lost,
        "unexpected": unexpected,
        "duplicated": len(duplicated),
        "overlaps": overlaps,
        "resurrected": resurrected,
    }


def run(args):
    rng = random.Random(args.seed)
    directory = args.directory or tempfile.mkdtemp(prefix="marconi-faults-")
    node = Node(directory, freePort(), args.default_safety)
    node.start()
    history = History()
    stop = threading.Event()
    nemesisStop = threading.Event()
    events = []
    threads = [
        threading.Thread(target=producer, args=(i, node.port, history, stop, args.batch,
                                                args.safety))
        for i in range(args.producers)
    ] + [
        threading.Thread(target=consumer,
                         args=(i, node.port, history, stop, args.claim_ttl,
                               random.Random(rng.random()), args.safety))
        for i in range(args.consumers)
    ]  # fmt: skip
    nemesisThread = threading.Thread(
        target=nemesis,
        args=(node, nemesisStop, random.Random(rng.random()), args.claim_ttl, events),
    )
    started = time.time()
    rssStart = node.rss()
    try:
        for t in threads:
            t.start()
        if not args.no_nemesis:
            nemesisThread.start()
        time.sleep(args.duration)
        nemesisStop.set()
        if nemesisThread.is_alive():
            nemesisThread.join()
        stop.set()
        for t in threads:
            t.join()
        if node.paused:
            node.resume()
        drained = drain(node.port, history)
        rssEnd = node.rss()
    finally:
        nemesisStop.set()
        stop.set()
        node.stop()
    report = check(history)
    report.update(
        seed=args.seed,
        duration=round(time.time() - started, 1),
        producers=args.producers,
        consumers=args.consumers,
        claim_ttl=args.claim_ttl,
        safety=args.safety,
        default_safety=args.default_safety,
        nemesis=[e[0] for e in events],
        kills=sum(1 for e in events if e[0] == "kill"),
        pauses=sum(1 for e in events if e[0] == "pause"),
        drained=drained,
        counts=dict(history.counts),
        rss_start=rssStart,
        rss_end=rssEnd,
        directory=directory,
    )
    ok = (
        drained
        and not report["lost"]
        and not report["unexpected"]
        and not report["overlaps"]
        and not report["resurrected"]
    )
    report["ok"] = bool(ok)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--producers", type=int, default=3)
    parser.add_argument("--consumers", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--claim-ttl", type=int, default=1)
    parser.add_argument("--no-nemesis", action="store_true")
    parser.add_argument(
        "--safety",
        choices=("fast", "durable"),
        default=None,
        help="the safety level every write asks for",
    )
    parser.add_argument("--default-safety", choices=("fast", "durable"),
                        default=None, help="the node's [storage] durability")  # fmt: skip
    parser.add_argument("--directory", default=None)
    parser.add_argument("--report", default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    report = run(args)
    text = json.dumps(report, indent=1, default=str)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text)
    summary = {k: (len(v) if isinstance(v, list) and k not in ("nemesis",) else v)
               for k, v in report.items() if k not in ("counts", "nemesis")}  # fmt: skip
    print(json.dumps(summary, default=str))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
