"""
Growing and shrinking a live cluster of real nodes (C{twistd -n marconi}
subprocesses on node-local SQLite files): the C{[cluster]} section is
changed and the nodes get a real C{SIGHUP} while a producer and a consumer
run; the queues whose owner changed move with their messages and claims.
"""

import json
import os
import random
import sqlite3
import sys

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from marconi.cluster.ring import Ring, key
from marconi.storage.redis import store as redisStore
from tests import redisserver
from tests.integration.test_cluster import freePort
from tests.nodeprocess import ROOT, NodeProcess, environment

CLIENT = "5b0c3d1e-2f4a-4c6b-8d7e-9f0a1b2c3d4e"
PROJECT = "grow"
QUEUES = [f"q{i}" for i in range(20)]
PER_QUEUE = 50
DEADLINE = 90.0


class Traffic:
    """
    A producer and a consumer running against the cluster until stopped:
    what each was told was done, and every error status they saw.
    """

    def __init__(self, case: "RebalanceTestCase") -> None:
        self.case = case
        self.posted: set = set()
        self.consumed: set = set()
        self.errors: dict = {}
        self.running = True
        self.done: list = []

    def start(self) -> None:
        for loop in (self._produce, self._consume):
            self.done.append(Deferred.fromCoroutine(loop()))

    async def stop(self) -> None:
        self.running = False
        for d in self.done:
            await d

    def _error(self, code: int) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    async def _post(self, path: str, body: dict) -> tuple:
        """
        POST to C{path} (with C{{queue}} filled in with a random queue)
        through a random node.
        """
        path = path.format(queue=random.choice(QUEUES))
        return await self.case.call(self.case.anyNode(), "POST", path, body)

    async def _produce(self) -> None:
        while self.running:
            r, body = await self._post(
                "/v2/queues/{queue}/messages",
                {"messages": [{"body": {"n": 1}, "ttl": 3600}]},
            )
            if r.code == 201:
                self.posted.update(h.rsplit("/", 1)[1] for h in body["resources"])
            else:
                self._error(r.code)
            await deferLater(reactor, 0.01, lambda: None)

    async def _consume(self) -> None:
        while self.running:
            r, body = await self._post(
                "/v2/queues/{queue}/claims?limit=3", {"ttl": 300, "grace": 60}
            )
            if r.code == 201:
                for message in body["messages"]:
                    href = message["href"]
                    d, _ = await self.case.call(self.case.anyNode(), "DELETE", href)
                    if d.code == 204:
                        self.consumed.add(message["id"])
                    else:
                        self._error(d.code)
            elif r.code != 204:
                self._error(r.code)
            await deferLater(reactor, 0.01, lambda: None)


class RebalanceTestCase(TestCase):
    timeout = 300

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.secret = os.path.join(self.root, "secret")
        with open(self.secret, "w") as f:
            f.write(os.urandom(32).hex())
        self.config = os.path.join(self.root, "cluster.ini")
        self.ports = {name: freePort() for name in "abc"}
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = treq.client.HTTPClient(Agent(reactor, pool=pool))
        self.nodes: dict = {}

    def writeConfig(self, weights: dict) -> None:
        """
        Write the shared configuration file with these nodes and weights.
        """
        lines = "\n".join(
            f"    {name}=http://127.0.0.1:{self.ports[name]} weight={weight}"
            for name, weight in sorted(weights.items())
        )
        with open(self.config, "w") as f:
            f.write(
                "[cluster]\nprobe_interval = 0.2\nprobe_timeout = 1\n"
                f"forward_timeout = 5\nsecret_file = {self.secret}\n"
                f"nodes =\n{lines}\n"
            )

    def database(self, name: str) -> str:
        return os.path.join(self.root, name, "marconi.sqlite3")

    def storageOf(self, name: str) -> str:
        """
        The C{--storage} of node C{name}: a SQLite file of its own.
        """
        return f"sqlite:{self.database(name)}"

    async def startNode(self, name: str) -> NodeProcess:
        directory = os.path.join(self.root, name)
        os.makedirs(directory, exist_ok=True)
        args = [
            "--listen",
            f"tcp:{self.ports[name]}:interface=127.0.0.1",
            "--storage",
            self.storageOf(name),
            "--config",
            self.config,
            "--node-name",
            name,
        ]
        node = await NodeProcess(self, directory, args).start()
        self.nodes[name] = node
        return node

    def anyNode(self) -> str:
        return random.choice(sorted(self.nodes))

    async def call(self, name, method, path, body=None):
        headers = {"Client-ID": CLIENT, "X-Project-ID": PROJECT}
        data = json.dumps(body).encode() if body is not None else None
        url = self.nodes[name].url + path
        response = await self.http.request(method, url, data=data, headers=headers)
        content = await treq.content(response)
        try:
            doc = json.loads(content) if content else None
        except ValueError:
            doc = None
        return response, doc

    async def retrying(self, name, method, path, body=None, want=(200, 201, 204)):
        """
        Call until the answer is not a 503 (a queue being moved, or rings
        not agreeing yet), within the deadline.
        """
        waited = 0.0
        while True:
            r, doc = await self.call(name, method, path, body)
            if r.code in want:
                return r, doc
            if r.code != 503 or waited > DEADLINE:
                self.fail(f"{method} {path} via {name}: {r.code} {doc}")
            await deferLater(reactor, 0.1, lambda: None)
            waited += 0.1

    async def waitUntil(self, condition, what: str) -> None:
        waited = 0.0
        while not await condition():
            if waited > DEADLINE:
                self.fail(f"not done within {DEADLINE}s: {what}")
            await deferLater(reactor, 0.1, lambda: None)
            waited += 0.1

    async def settled(self, version: str) -> bool:
        """
        Whether every running node routes and publishes ring C{version},
        sees no mismatch and has no move left.
        """
        for name in self.nodes:
            r, doc = await self.call(name, "GET", "/v2/health")
            cluster = (doc or {}).get("cluster")
            if cluster is None:
                return False
            moves = cluster["moves"]
            if (
                cluster["ring"]["version"] != version
                or moves["published_version"] != version
                or moves["outgoing"]
                or moves["incoming"]
                or cluster.get("ring_mismatch")
            ):
                return False
        return True

    async def ringCommand(self, name: str, *args: str) -> tuple:
        """
        Run C{marconi ring} against node C{name}: its output, errors and
        exit code.
        """
        env = {k: v for k, v in environment().items() if not k.startswith("MARCONI_")}
        env["MARCONI_URL"] = self.nodes[name].url
        return await getProcessOutputAndValue(
            sys.executable,
            ["-m", "marconi.client.cli", "ring", *args],
            env=env,
            path=ROOT,
        )

    def logShows(self, name: str, text: str):
        async def condition() -> bool:
            return text in self.nodes[name].log()

        return condition

    async def populate(self) -> dict:
        """
        Post 50 messages to each of 20 queues, and claim 10 in five of
        them.

        @return: the claims taken, C{{queue: (claim id, message ids)}}.
        """
        for queue in QUEUES:
            for _ in range(PER_QUEUE // 10):
                await self.retrying(
                    self.anyNode(),
                    "POST",
                    f"/v2/queues/{queue}/messages",
                    {"messages": [{"body": {"i": i}, "ttl": 3600} for i in range(10)]},
                )
        claims = {}
        for queue in QUEUES[:5]:
            r, doc = await self.retrying(
                self.anyNode(),
                "POST",
                f"/v2/queues/{queue}/claims?limit=10",
                {"ttl": 600, "grace": 60},
            )
            claimId = r.headers.getRawHeaders("location")[0].rsplit("/", 1)[1]
            claims[queue] = (claimId, sorted(m["id"] for m in doc["messages"]))
        return claims

    async def messagesVia(self, name: str, queue: str) -> list:
        """
        Every message of C{queue}, claimed or not, paged through node
        C{name}.
        """
        ids: list = []
        path = f"/v2/queues/{queue}/messages?include_claimed=true&echo=true&limit=20"
        while True:
            r, doc = await self.retrying(name, "GET", path)
            if r.code == 204 or not doc["messages"]:
                return ids
            ids += [m["id"] for m in doc["messages"]]
            path = next(link["href"] for link in doc["links"] if link["rel"] == "next")

    async def check(self, traffic: Traffic, claims: dict, before: set) -> None:
        """
        Every message is readable exactly once through every node, the
        claims are still valid, and consumed + remaining = posted.
        """
        remaining: set = set()
        for queue in QUEUES:
            views = []
            for name in sorted(self.nodes):
                ids = await self.messagesVia(name, queue)
                self.assertEqual(len(ids), len(set(ids)), f"{queue} via {name}")
                views.append(sorted(ids))
            self.assertTrue(all(v == views[0] for v in views), queue)
            remaining.update(views[0])
        posted = before | traffic.posted
        self.assertEqual(remaining & traffic.consumed, set())
        self.assertEqual(remaining | traffic.consumed, posted)
        self.assertEqual(len(remaining) + len(traffic.consumed), len(posted))
        for queue, (claimId, ids) in claims.items():
            for name in sorted(self.nodes):
                r, doc = await self.retrying(
                    name, "GET", f"/v2/queues/{queue}/claims/{claimId}"
                )
                held = sorted(m["id"] for m in doc["messages"])
                self.assertEqual(held, sorted(set(ids) - traffic.consumed))

    async def allIds(self) -> set:
        ids: set = set()
        for queue in QUEUES:
            ids.update(await self.messagesVia(self.anyNode(), queue))
        return ids

    def holdsOnly(self, ring: Ring, names) -> None:
        """
        Each node's SQLite file holds exactly the queues it owns on C{ring}.
        """
        for name in names:
            with sqlite3.connect(self.database(name)) as db:
                held = {
                    q
                    for (q,) in db.execute(
                        "SELECT DISTINCT queue FROM messages WHERE project = ? "
                        "AND queue NOT LIKE '~%'",
                        (PROJECT,),
                    )
                }
            owned = {q for q in QUEUES if ring.owner(key(PROJECT, q)) == name}
            self.assertEqual(held, owned, name)

    async def grow(self) -> Ring:
        """
        Two nodes hold 20 queues of 50 messages, some claimed; a third
        node is added with SIGHUP while a producer and a consumer run.
        Afterwards every message is readable exactly once through every
        node, the claims still hold their messages, and consumed +
        remaining = posted.

        @return: the new ring.
        """
        self.writeConfig({"a": 1, "b": 1})
        await self.startNode("a")
        await self.startNode("b")
        old = Ring(["a", "b"])
        await self.waitUntil(lambda: self.settled(old.version), "two nodes up")
        claims = await self.populate()
        before = await self.allIds()
        self.assertEqual(len(before), len(QUEUES) * PER_QUEUE)
        traffic = Traffic(self)
        traffic.start()
        self.writeConfig({"a": 1, "b": 1, "c": 1})
        await self.startNode("c")
        self.nodes["a"].signal("HUP")
        self.nodes["b"].signal("HUP")
        new = Ring(["a", "b", "c"])
        await self.waitUntil(lambda: self.settled(new.version), "the move")
        await traffic.stop()
        self.assertTrue(traffic.posted and traffic.consumed)
        for name in "ab":
            log = self.nodes[name].log()
            self.assertIn(f"The ring changed from {old.version}", log)
            self.assertIn("Handed queue", log)
        self.assertIn("Took queue", self.nodes["c"].log())
        await self.check(traffic, claims, before)
        self.assertFalse(set(traffic.errors) - {503}, traffic.errors)
        return new


class GrowAndShrinkTests(RebalanceTestCase):
    async def test_addNode(self) -> None:
        """
        A third node joins two on SQLite files of their own while a
        producer and a consumer run (L{RebalanceTestCase.grow}): the
        queues the new ring gives it move there with every message and
        claim, and each file holds exactly the queues its node owns.
        """
        new = await self.grow()
        self.holdsOnly(new, "abc")

    async def test_removeNode(self) -> None:
        """
        Node c of three gets weight 0 and every node SIGHUP while a
        producer and a consumer run: c hands all its queues over and
        exits; nothing is lost and a and b hold every queue.
        """
        self.writeConfig({"a": 1, "b": 1, "c": 1})
        for name in "abc":
            await self.startNode(name)
        old = Ring(["a", "b", "c"])
        await self.waitUntil(lambda: self.settled(old.version), "three nodes up")
        claims = await self.populate()
        before = await self.allIds()
        traffic = Traffic(self)
        traffic.start()
        self.writeConfig({"a": 1, "b": 1, "c": 0})
        c = self.nodes.pop("c")
        for node in (c, self.nodes["a"], self.nodes["b"]):
            node.signal("HUP")
        reason = await c._watcher.ended
        self.assertIn("Drained: every queue was handed over; stopping", c.log())
        self.assertTrue(c.exitedCleanly(reason), c.log())
        new = Ring(["a", "b"])
        await self.waitUntil(lambda: self.settled(new.version), "the move")
        await traffic.stop()
        await self.check(traffic, claims, before)
        self.holdsOnly(new, "abc")
        self.assertFalse(set(traffic.errors) - {503}, traffic.errors)

    async def test_crashDuringMove(self) -> None:
        """
        Both sides of a move are killed with SIGKILL in the middle of it:
        the old owner after it recorded what it must hand over but before
        the new node could take any, and the new node after it took its
        first queue.  Restarted, they finish the move and nothing is lost.
        """
        self.writeConfig({"a": 1, "b": 1})
        await self.startNode("a")
        await self.startNode("b")
        old = Ring(["a", "b"])
        await self.waitUntil(lambda: self.settled(old.version), "two nodes up")
        claims = await self.populate()
        before = await self.allIds()
        self.writeConfig({"a": 1, "b": 1, "c": 1})
        # c is not started yet: a and b record their moves and cannot
        # announce them.
        self.nodes["a"].signal("HUP")
        self.nodes["b"].signal("HUP")
        new = Ring(["a", "b", "c"])
        owed = [q for q in QUEUES if new.owner(key(PROJECT, q)) == "c"]
        self.assertTrue(owed)

        await self.waitUntil(
            self.logShows("a", "Moving queues to node c: announce failed"),
            "a recorded its moves",
        )
        await self.nodes["a"].kill()
        await self.startNode("a")
        await self.waitUntil(self.logShows("a", "Resuming the moves of"), "resumed")
        # Until c took the announcement, a still tells its peers the old
        # ring, so that c does not serve c's new queues from nothing.
        r, _ = await self.call("a", "GET", "/v2/ping")
        self.assertEqual(
            r.headers.getRawHeaders("x-marconi-ring-version"), [old.version]
        )
        await self.startNode("c")
        await self.waitUntil(self.logShows("c", "Took queue"), "c took a queue")
        await self.nodes["c"].kill()
        await self.startNode("c")
        await self.waitUntil(lambda: self.settled(new.version), "the move")
        await self.check(Traffic(self), claims, before)
        self.holdsOnly(new, "abc")


class MismatchTests(RebalanceTestCase):
    async def test_wrongRing(self) -> None:
        """
        A node started with a ring its peers do not share says so in its
        log and its health, and neither it nor its peers serve the queues
        the two rings place differently (503 with Retry-After), while the
        queues both rings agree on are served; once its configuration is
        fixed and it gets SIGHUP, it serves them again.
        """
        self.writeConfig({"a": 1, "b": 1, "c": 1})
        await self.startNode("a")
        await self.startNode("b")
        self.config = os.path.join(self.root, "wrong.ini")
        self.writeConfig({"a": 1, "b": 1, "c": 2})
        await self.startNode("c")
        good, wrong = Ring(["a", "b", "c"]), Ring({"a": 1, "b": 1, "c": 2})
        disputed = next(
            f"d{i}"
            for i in range(1000)
            if wrong.owner(key(PROJECT, f"d{i}")) == "c"
            and good.owner(key(PROJECT, f"d{i}")) != "c"
        )
        agreed = next(
            f"e{i}"
            for i in range(1000)
            if wrong.owner(key(PROJECT, f"e{i}")) == good.owner(key(PROJECT, f"e{i}"))
        )

        async def reported() -> bool:
            r, doc = await self.call("c", "GET", "/v2/health")
            return doc["cluster"].get("ring_mismatch") == ["a", "b"]

        await self.waitUntil(reported, "c reports the mismatch")
        self.assertIn("RING MISMATCH", self.nodes["c"].log())
        r, doc = await self.call("c", "GET", "/v2/health")
        self.assertEqual(r.code, 503, doc)
        self.assertIn("RING MISMATCH", doc["error"])
        self.assertIn(wrong.version, doc["error"])
        # a and b share their ring: they stay healthy and name c.
        for name in "ab":

            async def listed(name=name) -> bool:
                r, doc = await self.call(name, "GET", "/v2/health")
                return doc["cluster"].get("ring_mismatch") == ["c"]

            await self.waitUntil(listed, f"{name} names c")
            r, doc = await self.call(name, "GET", "/v2/health")
            self.assertEqual(r.code, 200, doc)
        out, err, code = await self.ringCommand("c", "--json")
        self.assertEqual(code, 0, err)
        shown = json.loads(out)
        self.assertEqual(shown["version"], wrong.version)
        self.assertEqual(shown["ring_mismatch"], ["a", "b"])
        self.assertEqual(
            {n["name"]: n["ring_version"] for n in shown["nodes"]},
            {"a": good.version, "b": good.version, "c": None},
        )
        out, err, code = await self.ringCommand("c")
        self.assertIn(b"RING MISMATCH: a routes by " + good.version.encode(), err)
        # Refused through every node, and nothing of it in c's file.
        body = {"messages": [{"body": 1}]}
        for name in "cab":
            r, doc = await self.call(
                name, "POST", f"/v2/queues/{disputed}/messages", body
            )
            self.assertEqual(r.code, 503, doc)
            self.assertEqual(r.headers.getRawHeaders("retry-after"), ["1"])
        with sqlite3.connect(self.database("c")) as db:
            self.assertEqual(
                db.execute(
                    "SELECT count(*) FROM queues WHERE project = ?", (PROJECT,)
                ).fetchone()[0],
                0,
            )
        await self.retrying("c", "POST", f"/v2/queues/{agreed}/messages", body)
        self.writeConfig({"a": 1, "b": 1, "c": 1})
        self.nodes["c"].signal("HUP")
        await self.waitUntil(lambda: self.settled(good.version), "the rings agree")
        await self.retrying("c", "POST", f"/v2/queues/{disputed}/messages", body)


class PerNodeStoreTests(RebalanceTestCase):
    """
    Each node on a Redis store of its own (two real C{redis-server}s; the
    third node on another database of the first): the queues that change
    owner are handed over between the stores as between SQLite files.
    """

    skip = redisserver.skipReason()

    def setUp(self) -> None:
        super().setUp()
        servers = []
        for _ in range(2):
            server = redisserver.RedisServer(appendonly=False).start()
            self.addCleanup(server.stop)
            servers.append(server)
        self.storages = {
            "a": servers[0].uri(0),
            "b": servers[1].uri(0),
            "c": servers[0].uri(1),
        }

    def storageOf(self, name: str) -> str:
        return self.storages[name]

    async def heldIn(self, name: str) -> set:
        """
        The client queues in node C{name}'s Redis store, read with the
        driver.
        """
        store = redisStore.makeStore(self.storages[name], reactor)
        store.startService()
        try:
            held = await store.heldQueues(None, 1000)
        finally:
            await store.stopService()
        return {q for p, q in held if p == PROJECT and not q.startswith("~")}

    async def test_addNode(self) -> None:
        """
        Growing from two nodes to three moves the new node's queues from
        the other two Redis stores into its own: every message readable
        exactly once afterwards, claims kept, consumed + remaining =
        posted, and each store holds exactly the queues its node owns.
        """
        new = await self.grow()
        for name in "abc":
            owned = {q for q in QUEUES if new.owner(key(PROJECT, q)) == name}
            self.assertEqual(await self.heldIn(name), owned, name)
