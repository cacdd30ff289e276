"""
How long adding a node to a live cluster takes, and what clients see.

Two nodes on node-local SQLite files hold C{--messages} messages in 20
queues; a producer and a consumer run (one thread each, one request at a
time, entering at a random node); a third node is started and the two get
C{SIGHUP}.  Measured: the time from the signals until every node routes
by the new ring with no move left, the messages moved, every answer the
clients got while that went on, and the longest run of 503s one queue
gave.  At the end every message is checked: consumed + remaining = posted.

::

    python bench/rebalance.py --messages 5000
"""

import argparse
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from marconi.cluster.ring import Ring  # noqa: E402

PROJECT = "bench"
CLIENT = "9a7e0d2c-3f1b-4e5a-8c6d-7b8a9c0d1e2f"
QUEUES = [f"q{i}" for i in range(20)]
HEADERS = {"Client-ID": CLIENT, "X-Project-ID": PROJECT}


def freePort() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port: int, method: str, path: str, body=None) -> tuple:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, data, HEADERS)
        response = connection.getresponse()
        content = response.read()
        doc = json.loads(content) if content else None
        return response.status, doc, dict(response.getheaders())
    finally:
        connection.close()


class Cluster:
    def __init__(self, root: str) -> None:
        self.root = root
        self.ports = {n: freePort() for n in "abc"}
        self.processes: dict = {}
        #: The nodes that answered their first ping.
        self.ready: list = []
        self.config = os.path.join(root, "cluster.ini")
        self.secret = os.path.join(root, "secret")
        with open(self.secret, "w") as f:
            f.write(os.urandom(32).hex())

    def write(self, names: str) -> None:
        nodes = "\n".join(f"    {n}=http://127.0.0.1:{self.ports[n]}" for n in names)
        with open(self.config, "w") as f:
            f.write(
                "[cluster]\nprobe_interval = 0.2\nprobe_timeout = 1\n"
                f"secret_file = {self.secret}\nnodes =\n{nodes}\n"
            )

    def start(self, name: str) -> None:
        directory = os.path.join(self.root, name)
        os.makedirs(directory, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=ROOT)
        argv = [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            f"--logfile={os.path.join(directory, 'node.log')}",
            "marconi",
            "--listen",
            f"tcp:{self.ports[name]}:interface=127.0.0.1",
            "--storage",
            f"sqlite:{os.path.join(directory, 'marconi.sqlite3')}",
            "--config",
            self.config,
            "--node-name",
            name,
        ]
        self.processes[name] = subprocess.Popen(argv, env=env, cwd=directory)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if call(self.ports[name], "GET", "/v2/ping")[0] == 204:
                    self.ready.append(name)
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"node {name} did not start")

    def log(self, name: str) -> str:
        with open(os.path.join(self.root, name, "node.log")) as f:
            return f.read()

    def settled(self, version: str) -> bool:
        for name in self.processes:
            _, doc, _ = call(self.ports[name], "GET", "/v2/health")
            cluster = (doc or {}).get("cluster") or {}
            moves = cluster.get("moves") or {}
            states = [n.get("state") for n in cluster.get("nodes", [])]
            if (
                any(state not in ("self", "up") for state in states)
                or cluster.get("ring", {}).get("version") != version
                or moves.get("published_version") != version
                or moves.get("outgoing")
                or moves.get("incoming")
                or cluster.get("ring_mismatch")
            ):
                return False
        return True

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            process.wait(30)


class Traffic:
    """
    A producer and a consumer; every answer is counted, by status, with
    the time it came.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.running = True
        self.posted: set = set()
        self.consumed: set = set()
        self.answers: list = []  # (time, what, status, queue)
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self.produce, daemon=True),
            threading.Thread(target=self.consume, daemon=True),
        ]

    def port(self) -> int:
        return self.cluster.ports[random.choice(self.cluster.ready)]

    def note(self, what: str, status: int, queue: str) -> None:
        with self.lock:
            self.answers.append((time.monotonic(), what, status, queue))

    def produce(self) -> None:
        while self.running:
            queue = random.choice(QUEUES)
            status, doc, _ = call(
                self.port(),
                "POST",
                f"/v2/queues/{queue}/messages",
                {"messages": [{"body": {"p": 1}, "ttl": 3600}]},
            )
            self.note("post", status, queue)
            if status == 201:
                self.posted.update(h.rsplit("/", 1)[1] for h in doc["resources"])

    def consume(self) -> None:
        while self.running:
            queue = random.choice(QUEUES)
            status, doc, _ = call(
                self.port(),
                "POST",
                f"/v2/queues/{queue}/claims?limit=5",
                {"ttl": 300, "grace": 60},
            )
            self.note("claim", status, queue)
            if status != 201:
                continue
            for message in doc["messages"]:
                status, _, _ = call(self.port(), "DELETE", message["href"])
                self.note("delete", status, queue)
                if status == 204:
                    self.consumed.add(message["id"])

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.running = False
        for thread in self.threads:
            thread.join()


def remaining(cluster: Cluster) -> set:
    ids: set = set()
    port = cluster.ports["a"]
    for queue in QUEUES:
        path = f"/v2/queues/{queue}/messages?include_claimed=true&echo=true&limit=20"
        while True:
            status, doc, _ = call(port, "GET", path)
            if status == 503:
                time.sleep(0.1)
                continue
            if status == 204 or not doc["messages"]:
                break
            ids.update(m["id"] for m in doc["messages"])
            path = next(x["href"] for x in doc["links"] if x["rel"] == "next")
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="marconi-rebalance-")
    cluster = Cluster(root)
    try:
        run(cluster, args)
    finally:
        cluster.stop()


def run(cluster: Cluster, args: argparse.Namespace) -> None:
    cluster.write("ab")
    cluster.start("a")
    cluster.start("b")
    old, new = Ring(["a", "b"]), Ring(["a", "b", "c"])
    while not cluster.settled(old.version):
        time.sleep(0.1)
    before: set = set()
    for index in range(args.messages // 10):
        queue = QUEUES[index % len(QUEUES)]
        status = 503
        while status == 503:
            status, doc, _ = call(
                cluster.ports["a"],
                "POST",
                f"/v2/queues/{queue}/messages",
                {"messages": [{"body": {"i": i}, "ttl": 3600} for i in range(10)]},
            )
        assert status == 201, (status, doc)
        before.update(h.rsplit("/", 1)[1] for h in doc["resources"])
    traffic = Traffic(cluster)
    traffic.start()
    time.sleep(2)
    cluster.write("abc")
    cluster.start("c")
    started = time.monotonic()
    for name in "ab":
        cluster.processes[name].send_signal(signal.SIGHUP)
    while not cluster.settled(new.version):
        time.sleep(0.05)
    ended = time.monotonic()
    time.sleep(2)
    traffic.stop()
    left = remaining(cluster)
    posted = before | traffic.posted
    moved = [
        int(n)
        for name in "ab"
        for n in re.findall(
            r"Handed queue \S+ of bench over to c \((\d+) messages", cluster.log(name)
        )
    ]
    during: dict = {}
    streak: dict = {}
    longest = 0.0
    for at, what, status, queue in traffic.answers:
        if started <= at <= ended:
            during[f"{what} {status}"] = during.get(f"{what} {status}", 0) + 1
        if status == 503:
            streak.setdefault(queue, at)
            longest = max(longest, at - streak[queue])
        else:
            streak.pop(queue, None)
    other = sorted({s for _, _, s, _ in traffic.answers} - {200, 201, 204, 503})
    print(
        json.dumps(
            {
                "messages_before": len(before),
                "queues_moved": len(moved),
                "messages_moved": sum(moved),
                "seconds_sighup_to_settled": round(ended - started, 3),
                "answers_during_move": during,
                "longest_503_run_one_queue_seconds": round(longest, 3),
                "statuses_other_than_2xx_503": other,
                "posted": len(posted),
                "consumed": len(traffic.consumed),
                "remaining": len(left),
                "consumed_plus_remaining_equals_posted": (
                    left | traffic.consumed == posted and not left & traffic.consumed
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
