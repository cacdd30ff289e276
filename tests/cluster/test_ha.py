"""
High availability of a cluster: declared stores, the routing decision of a
stand-in, and two nodes serving one queue from one Redis at once.
"""

from typing import Any

from twisted.internet.task import Clock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from marconi import tap
from marconi.cluster.errors import NodeUnavailable, QueueMoving
from marconi.cluster.membership import DOWN, UP
from marconi.cluster.placement import OwnedStore, PlacedStore
from marconi.cluster.ring import key
from marconi.cluster.router import ClusterRouter
from marconi.cluster.settings import ClusterConfig, Peer
from marconi.cluster.stores import ClusterStores
from marconi.core.limits import Limits
from marconi.core.models import ClaimSpec, NewMessage
from marconi.storage.memory.store import MemoryStore
from tests import redisserver
from tests.apihelpers import Node
from tests.storage.test_claimrace import claimAll

SECRET = "a-cluster-secret-of-enough-bytes\n"
NAMES = ("a", "b", "c")


class StoreOptionsTests(SynchronousTestCase):
    """
    C{--cluster-store} and C{[cluster] stores}.
    """

    def setUp(self) -> None:
        self.secret = self.mktemp()
        with open(self.secret, "w") as f:
            f.write(SECRET)

    def parse(self, storage: str, *args: str) -> tap.Options:
        options = tap.Options()
        nodes = []
        for i, name in enumerate(NAMES):
            nodes += ["--cluster-node", f"{name}=http://127.0.0.1:{9000 + i}"]
        options.parseOptions(
            [
                "--storage",
                storage,
                "--node-name",
                "a",
                "--cluster-secret-file",
                self.secret,
                *nodes,
                *args,
            ]
        )
        return options

    def test_declared(self) -> None:
        """
        Each C{--cluster-store NAME=URI} lands in the cluster settings,
        sorted by name.
        """
        options = self.parse(
            "redis://127.0.0.1:7001/0",
            "--cluster-store",
            "c=redis://127.0.0.1:7003/0",
            "--cluster-store",
            "b=redis://127.0.0.1:7002/0",
        )
        self.assertEqual(
            options.loaded.cluster.stores,
            (("b", "redis://127.0.0.1:7002/0"), ("c", "redis://127.0.0.1:7003/0")),
        )

    def test_configFile(self) -> None:
        """
        C{[cluster] stores} takes the same C{NAME=URI} words.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                "[cluster]\nstores = a=redis://127.0.0.1:7001/0\n"
                "  b=redis://127.0.0.1:7002/0\n"
            )
        options = self.parse("redis://127.0.0.1:7001/0", "--config", path)
        self.assertEqual(
            dict(options.loaded.cluster.stores),
            {"a": "redis://127.0.0.1:7001/0", "b": "redis://127.0.0.1:7002/0"},
        )

    def test_refused(self) -> None:
        """
        A store of a node that is not in the cluster, a node-local store, a
        store of this node that is not its C{--storage}, an unknown scheme,
        a store given twice and text that is not C{NAME=URI} are refused
        with a message naming the problem.
        """
        cases = [
            ("z=redis://127.0.0.1:7009/0", "is not one of the cluster nodes"),
            ("b=sqlite:/tmp/b.sqlite3", "can only be opened by its own node"),
            ("a=redis://127.0.0.1:7999/0", "names this node's store"),
            ("b=nosuch://x", "unknown storage scheme"),
            ("b", "is not NAME=URI"),
            ("b=", "is not NAME=URI"),
        ]
        for text, why in cases:
            with self.assertRaises(UsageError) as caught:
                self.parse("redis://127.0.0.1:7001/0", "--cluster-store", text)
            self.assertIn(why, str(caught.exception), text)
        with self.assertRaises(UsageError) as caught:
            self.parse(
                "redis://127.0.0.1:7001/0",
                "--cluster-store",
                "b=redis://127.0.0.1:7002/0",
                "--cluster-store",
                "b=redis://127.0.0.1:7003/0",
            )
        self.assertIn("given twice", str(caught.exception))


def makeRouter(me: str, declared: tuple) -> tuple:
    """
    A router of node C{me} of the cluster a, b, c whose declared stores
    are memory stores (one per distinct URI), on a L{Clock}.
    """
    config = ClusterConfig(
        nodeName=me,
        nodes=tuple(
            Peer(n, f"http://127.0.0.1:{9000 + i}") for i, n in enumerate(NAMES)
        ),
        secret=SECRET.strip().encode(),
        stores=declared,
    )
    opened: dict = {}

    def makeStore(uri: str) -> Any:
        opened[uri] = MemoryStore()
        return opened[uri]

    home = MemoryStore()
    home.startService()
    stores = ClusterStores(config, home, "home-uri", makeStore, Clock())
    stores.startService()
    return ClusterRouter(config, Clock(), stores=stores), stores, opened


def queueWithSuccessors(router: ClusterRouter, *order: str) -> str:
    """
    A queue of project C{p} whose ring successors start with C{order}.
    """
    for i in range(5000):
        if router.ring.successors(key("p", f"q{i}"))[: len(order)] == list(order):
            return f"q{i}"
    raise AssertionError(f"no queue with successors {order}")


class RoutingTests(SynchronousTestCase):
    """
    The routing decision with the owner up, down with a declared store, and
    down with a store only it opens.
    """

    def setUp(self) -> None:
        self.router, self.stores, self.opened = makeRouter(
            "a",
            (("b", "redis://b"), ("c", "redis://c")),
        )

    def setState(self, node: str, state: str) -> None:
        self.router.membership.states[node].state = state

    def test_ownerUp(self) -> None:
        """
        A queue whose owner is up goes to the owner (or is served here when
        this node owns it).
        """
        queue = queueWithSuccessors(self.router, "b")
        self.assertEqual(self.router.route("p", queue), "b")
        mine = queueWithSuccessors(self.router, "a")
        self.assertIsNone(self.router.route("p", mine))

    def test_standIn(self) -> None:
        """
        While B is down, a queue of B whose next node is this one is served
        here, from B's store, and counted; one whose next node is C goes to
        C while C is up, and is served here once C is down too.  When B is
        up again, its queues go to B.
        """
        here = queueWithSuccessors(self.router, "b", "a")
        there = queueWithSuccessors(self.router, "b", "c")
        self.setState("b", DOWN)
        self.assertIsNone(self.router.route("p", here))
        self.assertEqual(self.router.standins, {"b": 1})
        self.assertEqual(self.router.route("p", there), "c")
        self.setState("c", DOWN)
        self.assertIsNone(self.router.route("p", there))
        self.setState("b", UP)
        self.assertEqual(self.router.route("p", here), "b")
        placed = PlacedStore(self.stores, self.router.holder)
        self.assertIs(placed.storeFor("p", here), self.opened["redis://b"])
        mine = queueWithSuccessors(self.router, "a")
        self.assertIs(placed.storeFor("p", mine), self.stores.home)

    def test_purgePlaced(self) -> None:
        """
        A purge goes to the store that holds the queue, like every call
        about one queue: a stand-in purges the down owner's store, not its
        own; while the queue is frozen for a handover, a purge answers
        QueueMoving and removes nothing.
        """
        here = queueWithSuccessors(self.router, "b", "a")
        self.setState("b", DOWN)
        theirs = self.opened["redis://b"]
        message = [NewMessage("1", 60)]
        self.successResultOf(theirs.postMessages("p", here, message, "c", 0))
        self.successResultOf(self.stores.home.postMessages("p", here, message, "c", 0))
        placed = PlacedStore(self.stores, self.router.holder)
        self.assertEqual(self.successResultOf(placed.purgeMessages("p", here)), 1)
        stats = self.successResultOf(self.stores.home.queueStats("p", here, 0))
        self.assertEqual(stats.free, 1)
        mine = queueWithSuccessors(self.router, "a")
        self.successResultOf(self.stores.home.postMessages("p", mine, message, "c", 0))
        self.router.outgoing = {key("p", mine): "b"}
        self.router.frozen.add(key("p", mine))
        self.assertRaises(QueueMoving, placed.purgeMessages, "p", mine)
        stats = self.successResultOf(self.stores.home.queueStats("p", mine, 0))
        self.assertEqual(stats.free, 1)

    def test_unreachableStore(self) -> None:
        """
        While B is down and its store does not answer its pings (it is
        stopped), B's
        queues answer 503 naming B; once the store answers, a stand-in
        serves them.
        """
        here = queueWithSuccessors(self.router, "b", "a")
        self.setState("b", DOWN)
        store = self.opened["redis://b"]
        store.stopService()
        self.stores.pingAll()
        self.assertEqual(self.router.health()["stores"][1]["reachable"], False)
        with self.assertRaises(NodeUnavailable) as caught:
            self.router.route("p", here)
        self.assertEqual(caught.exception.node, "b")
        store.startService()
        self.stores.pingAll()
        self.assertIsNone(self.router.route("p", here))

    def test_localStore(self) -> None:
        """
        A down node that declared no store (an embedded SQLite file) has its
        queues answer 503, and this node refuses forwarded requests for
        them; it takes forwarded requests for the queues of nodes whose
        store it opens, whatever it thinks of their state.
        """
        router, _, _ = makeRouter("a", (("b", "redis://b"),))
        onC = queueWithSuccessors(router, "c", "a")
        router.membership.states["c"].state = DOWN
        with self.assertRaises(NodeUnavailable):
            router.route("p", onC)
        self.assertFalse(router.serves("p", onC))
        onB = queueWithSuccessors(router, "b")
        self.assertTrue(router.serves("p", onB))
        router.membership.states["b"].state = DOWN
        self.assertTrue(router.serves("p", onB))

    def test_health(self) -> None:
        """
        C{/v2/health}'s cluster part says, for a down node, whether its
        queues are served by stand-ins, how many requests this node served
        for it, and which stores this node opens.
        """
        here = queueWithSuccessors(self.router, "b", "a")
        self.setState("b", DOWN)
        self.router.route("p", here)
        doc = self.router.health()
        nodes = {n["name"]: n for n in doc["nodes"]}
        self.assertEqual(nodes["b"]["queues"], "stand-in")
        self.assertEqual(nodes["b"]["stand_in_requests"], 1)
        self.assertNotIn("queues", nodes["c"])
        self.assertEqual([s["nodes"] for s in doc["stores"]], [["a"], ["b"], ["c"]])

    def test_metrics(self) -> None:
        """
        The Prometheus collector reports each node up or down, whether a
        down node's queues are served by stand-ins, each opened store's
        reachability and the requests served as a stand-in.
        """
        from prometheus_client import CollectorRegistry, generate_latest

        from marconi.cluster.metrics import ClusterCollector

        registry = CollectorRegistry()
        registry.register(ClusterCollector(self.router))
        self.setState("b", DOWN)
        self.router.route("p", queueWithSuccessors(self.router, "b", "a"))
        text = generate_latest(registry).decode()
        for line in (
            'marconi_cluster_node_up{node="a"} 1.0',
            'marconi_cluster_node_up{node="b"} 0.0',
            'marconi_cluster_node_up{node="c"} 1.0',
            'marconi_cluster_node_standin{node="b"} 1.0',
            'marconi_cluster_node_standin{node="c"} 0.0',
            'marconi_cluster_store_reachable{nodes="b"} 1.0',
            'marconi_cluster_standin_requests_total{node="b"} 1.0',
        ):
            self.assertIn(line, text.splitlines())

    def test_sharedStore(self) -> None:
        """
        Nodes declaring one URI share one store, opened once; their queues
        may name each other's as dead-letter queues.
        """
        router, stores, opened = makeRouter(
            "a", (("b", "redis://shared"), ("c", "redis://shared"))
        )
        self.assertEqual(list(opened), ["redis://shared"])
        self.assertTrue(stores.shared("b", "c"))
        self.assertFalse(stores.shared("a", "b"))
        onB = queueWithSuccessors(router, "b")
        onC = queueWithSuccessors(router, "c")
        onA = queueWithSuccessors(router, "a")
        self.assertTrue(router.together("p", onB, onC))
        self.assertFalse(router.together("p", onA, onB))


class DeadLetterDuringMoveTests(SynchronousTestCase):
    """
    A claim that dead-letters into another queue of the same store while
    one of the two queues is being handed over to another node's store
    (node A holds both, B owns both on the new ring).
    """

    def setUp(self) -> None:
        self.router, self.stores, self.opened = makeRouter(
            "a", (("b", "redis://b"), ("c", "redis://c"))
        )
        onB = [
            f"q{i}"
            for i in range(5000)
            if self.router.ring.owner(key("p", f"q{i}")) == "b"
        ]
        self.source, self.target = onB[:2]
        self.router.outgoing = {key("p", self.source): "b", key("p", self.target): "b"}
        self.store = OwnedStore(
            PlacedStore(self.stores, self.router.holder), self.router.together
        )
        home = self.stores.home
        message = [NewMessage("1", 600)]
        self.successResultOf(home.createQueue("p", self.target, {}, 0))
        self.successResultOf(home.postMessages("p", self.source, message, "c", 0))
        first = ClaimSpec(ttl=60, grace=60, limit=1, maxClaimCount=1)
        self.successResultOf(home.createClaim("p", self.source, first, 0))
        self.spec = ClaimSpec(
            ttl=60, grace=60, limit=1, maxClaimCount=1, deadLetterQueue=self.target
        )

    def counts(self, store, queue: str) -> tuple:
        stats = self.successResultOf(store.queueStats("p", queue, 200))
        return stats.free + stats.claimed + stats.delayed

    def test_heldTogether(self) -> None:
        """
        While this node holds both queues and neither is being copied, the
        claim dead-letters as usual: the message moves to the dead-letter
        queue in this node's store.
        """
        claim = self.successResultOf(
            self.store.createClaim("p", self.source, self.spec, 200)
        )
        self.assertIsNone(claim)
        self.assertEqual(self.counts(self.stores.home, self.source), 0)
        self.assertEqual(self.counts(self.stores.home, self.target), 1)

    def test_targetFrozen(self) -> None:
        """
        While the dead-letter queue is frozen for its copy, the claim is
        refused with QueueMoving (503, Retry-After) and moves nothing: the
        copy being read cannot miss a message written into the old copy.
        """
        self.router.frozen.add(key("p", self.target))
        with self.assertRaises(QueueMoving) as caught:
            self.store.createClaim("p", self.source, self.spec, 200)
        self.assertEqual(caught.exception.headers, {b"retry-after": b"1"})
        self.assertEqual(self.counts(self.stores.home, self.source), 1)
        self.assertEqual(self.counts(self.stores.home, self.target), 0)

    def test_targetHandedOver(self) -> None:
        """
        Once the dead-letter queue was handed over (its new owner's store
        holds it) while the claimed queue is still held here, the claim
        claims without dead-lettering: the message stays in its queue,
        and no copy of the dead-letter queue is written here to be dropped
        later.
        """
        del self.router.outgoing[key("p", self.target)]
        self.successResultOf(self.stores.home.deleteQueue("p", self.target))
        claim = self.successResultOf(
            self.store.createClaim("p", self.source, self.spec, 200)
        )
        self.assertEqual([m.body for m in claim.messages], ["1"])
        self.assertEqual(self.counts(self.stores.home, self.source), 1)
        self.assertEqual(self.counts(self.stores.home, self.target), 0)
        held = self.successResultOf(self.stores.home.heldQueues(None, 100))
        self.assertNotIn(["p", self.target], [list(k) for k in held])


class TwoServersOneRedisTests(TestCase):
    """
    The claim race with the claimers split over two nodes, each with its
    own connection to one Redis: what two nodes serving the same queue at
    once (an owner and a stand-in with split views) do.
    """

    skip = redisserver.skipReason()
    timeout = 120
    claimers = 60
    messages = 300

    async def test_concurrentClaimers(self) -> None:
        """
        Claimers alternating between two nodes on one Redis claim every
        message, no message is in two live claims, and deleting each with
        its claim (through the other node) empties the queue.
        """
        from tests.storage.test_redis import startStore

        server = redisserver.sharedServer()
        server.flush()
        nodes = [
            Node(
                self,
                Limits(maxMessagesPerPost=100),
                store=await startStore(self, server.uri()),
            )
            for _ in range(2)
        ]
        posted: list = []
        for start in range(0, self.messages, 100):
            posted += await nodes[start // 100 % 2].post(
                "race", *({"body": {"n": n}} for n in range(start, start + 100))
            )
        claims = await claimAll(nodes, self.claimers)
        holders: dict = {}
        for _, claimId, ids in claims:
            for messageId in ids:
                holders.setdefault(messageId, []).append(claimId)
        self.assertEqual({m: c for m, c in holders.items() if len(c) > 1}, {})
        self.assertEqual(set(holders), set(posted))
        self.assertEqual({i % 2 for i, _, _ in claims}, {0, 1})
        for index, claimId, ids in claims:
            r = await nodes[(index + 1) % 2].request(
                "DELETE",
                f"/v2/queues/race/messages?ids={','.join(ids)}&claim_ids={claimId}",
            )
            self.assertEqual(r.code, 204)
        r = await nodes[0].request("GET", "/v2/queues/race/stats")
        self.assertEqual(r.json["messages"]["total"], 0)
