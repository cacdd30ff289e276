"""
Tests for the parts of membership changes that run inside one node: the
copy of a queue between two SQLite stores, the handover endpoint's
authentication, the SIGHUP reload and the router's view of moves and of
peers with another ring.
"""

import json
import os
import sqlite3
from io import BytesIO

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest

from marconi.cluster import rebalance
from marconi.cluster.errors import NodeUnavailable, QueueMoving, RingMismatch
from marconi.cluster.forward import Answer, pathAndQuery
from marconi.cluster.membership import DOWN, UP
from marconi.cluster.reload import ClusterReloader
from marconi.cluster.ring import Ring, key
from marconi.cluster.router import ClusterRouter
from marconi.cluster.settings import ClusterConfig, Peer
from marconi.core import reserved
from marconi.core.errors import QueueDoesNotExist, ValidationFailed
from marconi.core.health import HealthCheck
from marconi.core.limits import Limits
from marconi.core.models import ClaimSpec, MessageQuery, NewMessage
from marconi.core.validation import projectId
from marconi.extensions.subscriptions import records
from marconi.storage.memory.store import MemoryStore
from marconi.storage.sqlite.store import SQLiteStore

SECRET = b"0123456789abcdef0123456789abcdef"
NOW = 1_800_000_000.0


def _config(nodeName="a", weights=None) -> ClusterConfig:
    weights = weights or {"a": 1, "b": 1}
    return ClusterConfig(
        nodeName=nodeName,
        nodes=tuple(
            Peer(n, f"http://127.0.0.1:{i + 1}", w)
            for i, (n, w) in enumerate(sorted(weights.items()))
        ),
        secret=SECRET,
    )


def _queueOwnedBy(ring: Ring, node: str, project: str = "p") -> str:
    return next(
        f"q{i}" for i in range(1000) if ring.owner(key(project, f"q{i}")) == node
    )


class HandoverResourceTests(SynchronousTestCase):
    """
    The handover endpoint takes only requests signed by another node.
    """

    def setUp(self) -> None:
        clock = Clock()
        clock.advance(NOW)
        self.router = ClusterRouter(_config(), clock)
        self.rebalancer = rebalance.Rebalancer(self.router, None, clock)
        self.inner: list = []

        class Inner:
            def render(inner, request):
                self.inner.append(request)
                return b"inner"

        self.inner_ = Inner()

    def render(self, path: bytes, headers=None, nodesOnly=False) -> tuple:
        resource = rebalance.HandoverResource(self.rebalancer, self.inner_, nodesOnly)
        request = DummyRequest(path.split(b"/")[1:])
        request.method = b"POST"
        request.uri = path
        request.content = BytesIO(b"{}")
        request.requestHeaders = Headers({k: [v] for k, v in (headers or {}).items()})
        result = resource.render(request)
        return result, request

    def test_unsigned(self) -> None:
        """
        A client's request (unsigned, or with a forged signature) gets a
        403 and reaches no move.
        """
        for headers in (None, {b"x-marconi-node": b"b", b"x-marconi-signature": b"x"}):
            _, request = self.render(b"/v2/_cluster/handover", headers)
            self.assertEqual(request.responseCode, 403)
            self.assertIn(b"Only the nodes", b"".join(request.written))

    def test_publicSite(self) -> None:
        """
        With a cluster listener, the public site does not have the endpoint.
        """
        _, request = self.render(b"/v2/_cluster/announce", nodesOnly=True)
        self.assertEqual(request.responseCode, 404)

    def test_signedButNotLocal(self) -> None:
        """
        A signed announcement to a node without an SQLite store is refused
        with 503 (it takes no queue).
        """
        b = ClusterRouter(_config("b"), self.router.membership._clock)
        headers = b.signer.headers(b"POST", b"/v2/_cluster/announce", b"{}", "-", "a")
        _, request = self.render(b"/v2/_cluster/announce", headers)
        self.assertEqual(request.responseCode, 503)

    def test_otherPaths(self) -> None:
        """
        Every other path goes to the API.
        """
        result, _ = self.render(b"/v2/queues")
        self.assertEqual(result, b"inner")
        self.assertEqual(len(self.inner), 1)


class ReloadTests(SynchronousTestCase):
    """
    SIGHUP reads the configuration again; a wrong one changes nothing.
    """

    def test_wrongKeepsOld(self) -> None:
        """
        A configuration that does not parse, or has no cluster, is logged
        and not applied.
        """
        applied: list = []

        def wrong():
            raise ValueError("bad node")

        class NoCluster:
            cluster = None

        for reread in (wrong, NoCluster):
            reloader = ClusterReloader(Clock(), reread, applied.append, signum=None)
            self.assertFalse(reloader.reload())
        self.assertEqual(applied, [])
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_applies(self) -> None:
        """
        A good configuration's cluster settings are applied.
        """
        applied: list = []

        class Good:
            cluster = _config()

        reloader = ClusterReloader(Clock(), Good, applied.append, signum=None)
        self.assertTrue(reloader.reload())
        self.assertEqual(applied, [Good.cluster])


class RouterTests(SynchronousTestCase):
    """
    The router's view of moves and of peers routing by another ring.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.router = ClusterRouter(_config(), self.clock)

    def test_reconfigure(self) -> None:
        """
        A new node list swaps the ring in one step and probes the new peer;
        without a rebalancer the new ring is published at once.
        """
        old = self.router.ring
        self.assertTrue(
            self.router.reconfigure(_config(weights={"a": 1, "b": 1, "c": 1}))
        )
        self.assertEqual(self.router.ring.names, ("a", "b", "c"))
        self.assertIs(self.router.published, self.router.ring)
        self.assertNotEqual(old.version, self.router.ring.version)
        self.assertIn("c", self.router.membership.states)
        self.assertFalse(
            self.router.reconfigure(_config(weights={"a": 1, "b": 1, "c": 1}))
        )

    def test_holderFollowsNewRing(self) -> None:
        """
        The owners the router remembers are those of its ring: once a new
        ring replaces it, queues are placed by the new one.
        """
        queues = [f"q{i}" for i in range(50)]
        before = {q: self.router.holder("p", q) for q in queues}
        self.assertEqual(set(before.values()), {"a", "b"})
        self.router.reconfigure(_config(weights={"a": 1, "b": 1, "c": 1}))
        after = {q: self.router.holder("p", q) for q in queues}
        self.assertEqual(
            after, {q: self.router.ring.owner(key("p", q)) for q in queues}
        )
        self.assertIn("c", after.values())

    def test_moves(self) -> None:
        """
        A queue handed over is served here until it is frozen for its copy
        (503); one being taken over is sent to the node holding it.
        """
        ring = self.router.ring
        mine = _queueOwnedBy(ring, "a")
        theirs = _queueOwnedBy(ring, "b")
        self.assertEqual(self.router.route("p", theirs), "b")
        self.router.outgoing[key("p", theirs)] = "b"
        self.assertIsNone(self.router.route("p", theirs))
        self.router.frozen.add(key("p", theirs))
        self.assertRaises(QueueMoving, self.router.route, "p", theirs)
        self.router.incoming[key("p", mine)] = "b"
        self.assertEqual(self.router.route("p", mine), "b")
        self.assertFalse(self.router.serves("p", mine))

    def test_mismatch(self) -> None:
        """
        A live peer with another ring makes the queues the two rings place
        differently refused, and is reported in the health; a peer that is
        down does not count.
        """
        other = Ring({"a": 1, "b": 3})
        state = self.router.membership.states["b"]
        state.state, state.ringVersion = UP, other.version
        self.router.peerRings[other.version] = other
        ring = self.router.ring
        disputed = next(
            f"q{i}"
            for i in range(1000)
            if ring.owner(key("p", f"q{i}")) != other.owner(key("p", f"q{i}"))
        )
        agreed = next(
            f"q{i}"
            for i in range(1000)
            if ring.owner(key("p", f"q{i}")) == other.owner(key("p", f"q{i}"))
        )
        self.assertRaises(RingMismatch, self.router.route, "p", disputed)
        self.router.route("p", agreed)
        self.assertEqual(self.router.health()["ring_mismatch"], ["b"])
        state.state = DOWN
        self.assertNotIn("ring_mismatch", self.router.health())
        self.assertFalse(self.router.disagrees(key("p", disputed)))


class StartingNodeTests(SynchronousTestCase):
    """
    A node with a node-local store that just started serves no queue
    until its live peers told their ring.
    """

    def test_unknownPeers(self) -> None:
        """
        While a peer has answered no probe, every queue is refused (503):
        a queue the node's ring gives it may still be held by that peer,
        and creating it here would make the peer's handover find it
        "had".  Once the peer answered with the same ring, or is down,
        the queues are served.
        """
        clock = Clock()
        router = ClusterRouter(_config("c", {"a": 1, "b": 1, "c": 1}), clock)
        rebalance.Rebalancer(router, SQLiteStore("unused", clock), clock)
        mine = _queueOwnedBy(router.ring, "c")
        self.assertRaises(RingMismatch, router.route, "p", mine)
        a, b = router.membership.states["a"], router.membership.states["b"]
        a.state, a.ringVersion = UP, router.ring.version
        self.assertRaises(RingMismatch, router.route, "p", mine)
        b.state = DOWN
        self.assertIsNone(router.route("p", mine))

    def test_sharedStores(self) -> None:
        """
        Without a node-local store, a peer not heard from yet is taken to
        route by the same ring.
        """
        router = ClusterRouter(_config("c", {"a": 1, "b": 1, "c": 1}), Clock())
        self.assertIsNone(router.route("p", _queueOwnedBy(router.ring, "c")))


class TwoNodes(TestCase):
    """
    Two nodes, a and b, each with its own SQLite store, whose move
    requests reach each other's rebalancer in process.
    """

    def setUp(self) -> None:
        self.stores: dict = {}
        self.lose = False

    async def node(self, name: str, path: str = "") -> rebalance.Rebalancer:
        store = SQLiteStore(path or os.path.join(self.mktemp() + name), reactor)
        store.startService()
        self.addCleanup(store.stopService)
        clock = Clock()
        clock.advance(NOW)
        router = ClusterRouter(_config(name), clock)
        for state in router.membership.states.values():
            state.state, state.ringVersion = UP, router.ring.version
        node = rebalance.Rebalancer(router, store, clock)
        # The tests run the rounds themselves.
        node.kick = lambda: None
        await node._start()
        self.stores[name] = store
        return node

    def connect(self, sender: rebalance.Rebalancer, peer: rebalance.Rebalancer):
        """
        Deliver C{sender}'s move requests to C{peer}; while C{self.lose}
        is set, the answer to a final part is lost after C{peer} took it.
        """

        async def call(node, method, path, headers, body):
            doc = json.loads(body)
            name = sender.router.config.nodeName
            if b"announce" in pathAndQuery(path):
                code, answer = await peer.announced(name, doc)
            else:
                code, answer = await peer.handedOver(name, doc)
                if self.lose and doc["final"]:
                    raise NodeUnavailable(node, "timed out")
            return Answer(code, b"", Headers(), json.dumps(answer).encode())

        sender.router._call = call

    async def pair(self) -> tuple:
        a, b = await self.node("a"), await self.node("b")
        self.connect(a, b)
        return a, b, _queueOwnedBy(a.router.ring, "b")


class CopyTests(TwoNodes):
    """
    A queue handed over from one node's store to another's is the same
    queue: messages with their ids, markers and tags, claims with their
    expiry, metadata.
    """

    async def test_roundTrip(self) -> None:
        """
        The copy (in several pages of several parts) reproduces the queue
        in the new owner's store; the old owner's copy is dropped; the new
        owner's markers go on after the moved ones.
        """
        self.patch(rebalance, "PART_BYTES", 2000)
        self.patch(rebalance, "PAGE_MESSAGES", 25)
        a, b, queue = await self.pair()
        old, new = self.stores["a"], self.stores["b"]
        await old.createQueue("p", queue, {"_default_message_ttl": 300}, NOW)
        posted = await old.postMessages(
            "p",
            queue,
            [NewMessage(f'{{"n":{i}}}', 3600, tags=("t",)) for i in range(60)],
            "client",
            NOW,
        )
        claim = await old.createClaim(
            "p", queue, ClaimSpec(ttl=100, grace=10, limit=5), NOW
        )
        sent: list = []
        deliver = a.router._call

        async def counting(node, method, path, headers, body):
            sent.append(json.loads(body))
            return await deliver(node, method, path, headers, body)

        a.router._call = counting
        self.assertTrue(await a._pass())
        parts = [doc for doc in sent if "part" in doc]
        self.assertGreater(len(parts), 3)
        self.assertEqual([doc["final"] for doc in parts][-2:], [False, True])
        self.assertIsNone(await old.exportQueue("p", queue, None, 10))
        self.assertEqual(b.router.incoming, {})
        self.assertEqual(a.router.outgoing, {})
        query = MessageQuery(
            limit=100, clientId="client", echo=True, includeClaimed=True
        )
        moved = await new.listMessages("p", queue, query, NOW + 1)
        self.assertEqual([m.id for m in moved], posted)
        self.assertEqual(
            await new.getQueueMetadata("p", queue), {"_default_message_ttl": 300}
        )
        held = await new.getClaim("p", queue, claim.id, NOW + 1)
        self.assertEqual(
            sorted(m.id for m in held.messages), sorted(m.id for m in claim.messages)
        )
        self.assertEqual(held.expires, claim.expires)
        later = await new.postMessages("p", queue, [NewMessage("1", 60)], "c", NOW + 2)
        listed = await new.listMessages("p", queue, query, NOW + 2)
        self.assertEqual(listed[-1].id, later[0])
        self.assertGreater(listed[-1].marker, moved[-1].marker)
        again = await b.handedOver(
            "a", {"project": "p", "queue": queue, "part": 0, "final": True, "page": {}}
        )
        self.assertEqual(again, (200, {"result": "have"}))

    async def test_scanSkipsReserved(self) -> None:
        """
        The queues a node would hand over are its clients' queues only:
        none of a reserved project (the subscriptions extension's records
        and outbox, the health probes', the moves' own record) and no
        reserved C{~} queue.
        """
        a = await self.node("a")
        store = self.stores["a"]
        await store.createQueue("p", "q", {}, NOW)
        await store.postMessages("p", "posted", [NewMessage("1", 60)], "c", NOW)
        await store.createQueue(records.PROJECT, "s.key.id", {"ttl": 60}, NOW)
        await store.postMessages(
            records.PROJECT, records.OUTBOX, [NewMessage("1", 60)], "c", NOW
        )
        await store.createQueue(reserved.PROBE_PROJECT, "probe", {}, NOW)
        await store.postMessages("p", "~audit", [NewMessage("1", 60)], "c", NOW)
        await a._save()
        self.assertIn(
            (reserved.CLUSTER_PROJECT, "moves.a"), await store.heldQueues(None, 100)
        )
        self.assertEqual(sorted(await a._held()), [("p", "posted"), ("p", "q")])

    def test_reservedUnnameable(self) -> None:
        """
        No client can name a reserved project, and the subscriptions
        extension keeps its records in one.
        """
        self.assertIn(records.PROJECT, reserved.PROJECTS)
        for project in reserved.PROJECTS:
            self.assertRaises(ValidationFailed, projectId, project, Limits())

    async def test_notAnnounced(self) -> None:
        """
        A queue that was not announced by the sender is not imported.
        """
        a, b, queue = await self.pair()
        page = {"metadata": {}, "created": NOW, "last": 1, "claims": []}
        page["messages"] = []
        result = await b.handedOver(
            "a",
            {"project": "p", "queue": queue, "part": 0, "final": True, "page": page},
        )
        self.assertEqual(result[0], 409)
        self.assertIsNone(await self.stores["b"].exportQueue("p", queue, None, 1))

    async def test_restartResumes(self) -> None:
        """
        The moves in progress survive a restart: the old owner's queue
        comes back frozen (its copy may have been taken), the new owner's
        incoming entry comes back, and the move then completes.
        """
        a, b, queue = await self.pair()
        ids = await self.stores["a"].postMessages(
            "p", queue, [NewMessage("1", 600)], "c", NOW
        )
        self.lose = True
        self.assertFalse(await a._pass())
        again = rebalance.Rebalancer(a.router, self.stores["a"], a.reactor)
        again.kick = lambda: None
        a.router.frozen.clear()
        await again._start()
        self.assertRaises(QueueMoving, a.router.holder, "p", queue)
        self.connect(again, b)
        self.lose = False
        self.assertTrue(await again._pass())
        self.assertEqual(a.router.holder("p", queue), "b")
        query = MessageQuery(limit=10, clientId="c", echo=True)
        held = await self.stores["b"].listMessages("p", queue, query, NOW)
        self.assertEqual([m.id for m in held], ids)


# The tables in which the version before the moves were kept in a record
# of the store (commit caf7345) recorded them.
_OLD_MOVE_TABLES = """
CREATE TABLE cluster_moves (
 project TEXT NOT NULL, queue TEXT NOT NULL,
 direction TEXT NOT NULL, peer TEXT NOT NULL,
 PRIMARY KEY (project, queue)) WITHOUT ROWID;
CREATE TABLE cluster_state (
 name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE cluster_parts (
 project TEXT NOT NULL, queue TEXT NOT NULL, part INTEGER NOT NULL,
 doc TEXT NOT NULL, PRIMARY KEY (project, queue, part)) WITHOUT ROWID;
"""


class UpgradeTests(TwoNodes):
    """
    A node upgraded in the middle of a move, from the version that kept
    its moves in tables of its SQLite store, resumes that move.
    """

    async def oldFile(self, name: str, rows: list, published=None) -> str:
        """
        A SQLite file holding the moves C{rows} and the ring C{published}
        in the tables of the earlier version.
        """
        path = self.mktemp() + name
        store = SQLiteStore(path, reactor)
        store.startService()
        await store.stopService()
        db = sqlite3.connect(path)
        db.executescript(_OLD_MOVE_TABLES)
        db.executemany("INSERT INTO cluster_moves VALUES (?, ?, ?, ?)", rows)
        if published is not None:
            db.execute(
                "INSERT INTO cluster_state VALUES ('published', ?)",
                (json.dumps(published),),
            )
        db.execute("INSERT INTO cluster_parts VALUES ('p', 'x', 0, '{}')")
        db.commit()
        db.close()
        return path

    async def tables(self, name: str) -> list:
        return await self.stores[name]._run(
            lambda c: [
                row[0]
                for row in c.execute(
                    "SELECT name FROM sqlite_master "
                    "WHERE type = 'table' AND name LIKE 'cluster%'"
                )
            ]
        )

    async def test_resumed(self) -> None:
        """
        Node a was handing a queue to b, which had recorded it incoming,
        when both were upgraded: a comes back with the queue outgoing and
        frozen, and the ring it had published; b with the queue incoming.
        The old tables are gone and the moves are in each node's own
        record; the move then completes with every message.
        """
        ring = ClusterRouter(_config("a"), Clock()).ring
        queue = _queueOwnedBy(ring, "b")
        older = ClusterRouter(_config("a", {"a": 2, "b": 1}), Clock()).ring
        pathA = await self.oldFile("a", [("p", queue, "out", "b")], older.describe())
        pathB = await self.oldFile("b", [("p", queue, "in", "a")])
        a = await self.node("a", pathA)
        b = await self.node("b", pathB)
        ringKey = key("p", queue)
        self.assertEqual(a.router.outgoing, {ringKey: "b"})
        self.assertRaises(QueueMoving, a.router.holder, "p", queue)
        self.assertEqual(a.router.published.version, older.version)
        self.assertEqual(b.router.incoming, {ringKey: "a"})
        for name, node in (("a", a), ("b", b)):
            self.assertEqual(await self.tables(name), [])
            record = await self.stores[name].getQueueMetadata(
                reserved.CLUSTER_PROJECT, node._record
            )
            self.assertEqual([row[:2] for row in record["moves"]], [["p", queue]], name)
            with self.assertRaises(QueueDoesNotExist):
                await self.stores[name].getQueueMetadata(
                    reserved.CLUSTER_PROJECT, reserved.UPGRADED_MOVES
                )
        ids = await self.stores["a"].postMessages(
            "p", queue, [NewMessage("1", 600)], "c", NOW
        )
        self.connect(a, b)
        self.assertTrue(await a._pass())
        self.assertEqual(a.router.holder("p", queue), "b")
        self.assertEqual(a.router.published.version, ring.version)
        self.assertEqual(b.router.incoming, {})
        query = MessageQuery(limit=10, clientId="c", echo=True)
        held = await self.stores["b"].listMessages("p", queue, query, NOW)
        self.assertEqual([m.id for m in held], ids)

    async def test_ownRecordWins(self) -> None:
        """
        When the node's own record already names a queue (the record of
        the earlier version was taken over, and the node stopped before
        deleting it), its entry is kept; the old record's other moves are
        added.
        """
        ring = ClusterRouter(_config("a"), Clock()).ring
        queue = _queueOwnedBy(ring, "b")
        other = next(
            f"r{i}" for i in range(1000) if ring.owner(key("p", f"r{i}")) == "b"
        )
        path = await self.oldFile(
            "a", [("p", queue, "out", "c"), ("p", other, "out", "b")]
        )
        store = SQLiteStore(path, reactor)
        store.startService()
        await store.createQueue(
            reserved.CLUSTER_PROJECT,
            "moves.a",
            {"moves": [["p", queue, "out", "b"]], "published": None},
            NOW,
        )
        await store.stopService()
        a = await self.node("a", path)
        self.assertEqual(
            a.router.outgoing, {key("p", queue): "b", key("p", other): "b"}
        )


class LostAnswerTests(TwoNodes):
    """
    A handover whose last answer is lost (a timeout under load, after the
    new owner imported the queue) loses no acknowledged write.
    """

    async def post(self, via: rebalance.Rebalancer, queue: str) -> list:
        """
        Post one message to C{queue} through node C{via} as its router
        says: into the store of the node holding it, or refused (503).
        """
        try:
            holder = via.router.holder("p", queue)
        except QueueMoving:
            return []
        if holder != via.router.config.nodeName:
            return []
        message = [NewMessage("1", 600)]
        return await self.stores[holder].postMessages("p", queue, message, "c", NOW)

    async def test_lastAnswerLost(self) -> None:
        """
        Node a holds a queue the ring gives to b.  Its last part reaches b
        (imported, served by b) but the answer is lost: the queue stays
        frozen on a until the next round's announcement, where b answers
        "have" and a drops its copy; every post acknowledged by either
        node on the way is in b's copy.
        """
        a, b, queue = await self.pair()
        messages = [NewMessage(str(i), 600) for i in range(5)]
        accepted = await self.stores["a"].postMessages("p", queue, messages, "c", NOW)
        self.lose = True
        self.assertFalse(await a._pass())
        self.assertNotIn(key("p", queue), b.router.incoming)
        for _ in range(3):
            accepted += await self.post(a, queue)
            accepted += await self.post(b, queue)
        self.lose = False
        self.assertTrue(await a._pass())
        self.assertEqual(a.router.holder("p", queue), "b")
        self.assertEqual(await a._held(), [])
        accepted += await self.post(b, queue)
        query = MessageQuery(limit=100, clientId="c", echo=True, includeClaimed=True)
        held = await self.stores["b"].listMessages("p", queue, query, NOW)
        self.assertEqual(sorted(m.id for m in held), sorted(accepted))
        self.assertEqual(len(accepted), 5 + 3 + 1)


class MismatchHealthTests(TestCase):
    """
    The health of a node whose ring differs from its live peers'.
    """

    def router(self, name: str, others: dict) -> ClusterRouter:
        """
        Node C{name} of three; C{others} maps each peer to whether it
        routes by the same ring.
        """
        router = ClusterRouter(_config(name, {"a": 1, "b": 1, "c": 1}), Clock())
        other = Ring({"a": 1, "b": 1, "c": 2})
        router.peerRings[other.version] = other
        for peer, same in others.items():
            state = router.membership.states[peer]
            state.state = UP
            state.ringVersion = router.ring.version if same else other.version
        return router

    async def report(self, router: ClusterRouter) -> tuple:
        store = MemoryStore()
        store.startService()
        check = HealthCheck(store, Clock(), cluster=router.health)
        return check.problem(), await check.report()

    async def test_minority(self) -> None:
        """
        A node both live peers disagree with is unhealthy (the health
        report is a 503 naming the mismatch), and so is each node of two
        that disagree.
        """
        for router in (
            self.router("c", {"a": False, "b": False}),
            ClusterRouter(_config("a"), Clock()),
        ):
            if router.config.nodeName == "a":
                state = router.membership.states["b"]
                state.state, state.ringVersion = UP, "another"
            problem, (healthy, doc) = await self.report(router)
            self.assertFalse(healthy)
            self.assertIn("RING MISMATCH", problem)
            self.assertEqual(doc["error"], problem)
            self.assertIn(router.ring.version, problem)

    async def test_majority(self) -> None:
        """
        A node whose ring one live peer shares stays healthy and lists the
        peer that disagrees.
        """
        problem, (healthy, doc) = await self.report(
            self.router("a", {"b": True, "c": False})
        )
        self.assertIsNone(problem)
        self.assertTrue(healthy)
        self.assertEqual(doc["cluster"]["ring_mismatch"], ["c"])
        self.assertNotIn("error", doc)
