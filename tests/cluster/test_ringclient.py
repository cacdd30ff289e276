"""
The ring published to clients: the C{public=URL} word of the node list,
C{GET /v2/ring}, the C{X-Marconi-Ring-Version} header, and ring-aware
clients against three real nodes.
"""

import json
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from marconi.client.api import Client
from marconi.client.models import RingInfo
from marconi.cluster.ring import Ring, key
from marconi.cluster.router import ClusterRouter
from marconi.cluster.settings import ClusterConfigError, Peer, build, parseNode
from marconi.core.routing import LocalRouter
from tests.apihelpers import Node
from tests.integration.test_cluster import (
    NAMES,
    PROJECT,
    ClusterTestCase,
    queueOwnedBy,
)
from tests.nodeprocess import ROOT, environment


class PublicURLTests(SynchronousTestCase):
    def test_publicWord(self) -> None:
        """
        A node may name the URL clients reach it at with public=URL, before
        or after its weight; without it, a plain http:// node URL is also
        the client URL, and an https:// one (a mutual-TLS cluster listener)
        gives none.
        """
        self.assertEqual(
            parseNode("a=https://10.0.0.1:9443 public=https://a.example:443/"),
            Peer("a", "https://10.0.0.1:9443", 1, "https://a.example:443"),
        )
        self.assertEqual(
            parseNode("a=https://10.0.0.1:9443  public=http://a.example weight=3"),
            Peer("a", "https://10.0.0.1:9443", 3, "http://a.example"),
        )
        self.assertEqual(
            parseNode("a=http://10.0.0.1:8888 public=http://a.example").clientURL,
            "http://a.example",
        )
        self.assertEqual(
            parseNode("a=http://10.0.0.1:8888 weight=2").clientURL,
            "http://10.0.0.1:8888",
        )
        self.assertIsNone(parseNode("a=https://10.0.0.1:9443").clientURL)

    def test_badPublicWord(self) -> None:
        """
        A public URL that is not a base URL, an empty one, one given twice,
        or an unknown word is refused in one line naming the node.
        """
        for text, words in (
            ("a=http://10.0.0.1:1 public=ftp://x", "public='ftp://x'"),
            ("a=http://10.0.0.1:1 public=http://x/path", "base URL"),
            ("a=http://10.0.0.1:1 public=", "public=''"),
            ("a=http://10.0.0.1:1 public=http://x:0", "bad port"),
            ("a=http://10.0.0.1:1 public=http://x public=http://y", "at most once"),
            ("a=http://10.0.0.1:1 publik=http://x", "public=URL"),
            ("a=http://10.0.0.1:1 weight=2 public=http://x extra", "NAME=URL"),
        ):
            e = self.assertRaises(ClusterConfigError, parseNode, text)
            self.assertIn(words, str(e))
            self.assertNotIn("\n", str(e))

    def test_publishedRing(self) -> None:
        """
        A cluster node publishes its ring's description with each node's
        client URL and its own name; the client rebuilds the same ring from
        it.  A node on its own publishes no ring.
        """
        secret = self.mktemp()
        with open(secret, "w") as f:
            f.write("a-cluster-secret-of-enough-bytes")
        config = build(
            "b",
            [
                "a=https://10.0.0.1:9443 public=https://a.example",
                "b=https://10.0.0.2:9443 weight=2",
            ],
            secret,
        )
        doc = ClusterRouter(config, MemoryReactorClock()).publishedRing()
        ring = Ring({"a": 1, "b": 2})
        self.assertEqual(doc["version"], ring.version)
        self.assertEqual(doc["node"], "b")
        self.assertEqual(
            doc["nodes"],
            [
                {"name": "a", "weight": 1, "url": "https://a.example"},
                {"name": "b", "weight": 2, "url": None},
            ],
        )
        info = RingInfo.fromJSON(json.loads(json.dumps(doc)))
        for i in range(50):
            owner = info.owner("p", f"q{i}")
            self.assertEqual(owner.name, ring.owner(key("p", f"q{i}")))
        self.assertEqual(
            LocalRouter().publishedRing(),
            {"scheme": None, "version": None, "nodes": []},
        )


class SingleNodeTests(TestCase):
    async def test_ringEndpoint(self) -> None:
        """
        A node on its own answers GET /v2/ring (no project or client id
        needed) with no ring, and sends no ring-version header.
        """
        node = Node(self)
        for path in ("/v2/ring", "/v1.1/ring"):
            r = await node.request("GET", path, project=None, client=None)
            self.assertEqual(r.code, 200)
            self.assertEqual(r.json, {"scheme": None, "version": None, "nodes": []})
            self.assertIsNone(r.header("x-marconi-ring-version"))
        r = await node.request("POST", "/v2/ring", project=None)
        self.assertEqual(r.code, 405)

    async def test_ringCommand(self) -> None:
        """
        marconi ring against a node on its own says there is no ring.
        """
        node = Node(self)
        env = {k: v for k, v in environment().items() if not k.startswith("MARCONI_")}
        env["MARCONI_URL"] = node.url
        for args, expected in (
            (["--json"], {"version": None, "scheme": None, "nodes": []}),
            ([], "No ring: a node on its own serves every queue.\n"),
        ):
            out, err, code = await getProcessOutputAndValue(
                sys.executable,
                ["-m", "marconi.client.cli", "ring", *args],
                env=env,
                path=ROOT,
            )
            self.assertEqual(code, 0, err)
            got = json.loads(out) if args else out.decode()
            self.assertEqual(got, expected)


def accessLines(node, queue: str) -> list:
    """
    The access-log lines of C{node} for the queue C{queue}.
    """
    with open(node.logPath, encoding="utf-8") as f:
        return [
            line
            for line in f
            if "marconi.access" in line
            and any(f"/v2/queues/{queue}{end}" in line for end in " /")
        ]


class RingClientTests(ClusterTestCase):
    def client(self, via: str, **kw) -> Client:
        client = Client(self.nodes[via].url, project=PROJECT, **kw)
        self.addCleanup(lambda: Deferred.fromCoroutine(client.close()))
        return client

    async def logged(self, queues: dict, seconds: float = 5) -> dict:
        """
        Wait until every queue's owner (or each node of a set given for
        it) logged its requests; then which nodes logged each queue's
        requests.  Nodes write their access lines in batches, so a line
        of one node may come after another's.
        """
        waited = 0.0
        expected = {
            q: {owner} if isinstance(owner, str) else set(owner)
            for q, owner in queues.items()
        }
        while True:
            seen = {
                queue: {n for n in NAMES if accessLines(self.nodes[n], queue)}
                for queue in queues
            }
            if all(expected[q] <= seen[q] for q in queues) or waited > seconds:
                return seen
            await deferLater(reactor, 0.1, lambda: None)
            waited += 0.1

    async def test_neverRelayed(self) -> None:
        """
        Through node a, a ring-aware client's requests for queues on every
        node reach only each queue's owner (no node logs a request for a
        queue it does not own), and every answer names the ring's version.
        """
        await self.startCluster()
        r, ring = await self.call("b", "GET", "/v2/ring", project=None)
        self.assertEqual(r.code, 200)
        expected = Ring(NAMES)
        self.assertEqual(ring["version"], expected.version)
        self.assertEqual(
            {n["name"]: n["url"] for n in ring["nodes"]},
            {n: self.nodes[n].url for n in NAMES},
        )
        self.assertEqual(
            r.headers.getRawHeaders("x-marconi-ring-version"), [expected.version]
        )
        client = self.client("a")
        queues = {queueOwnedBy(owner, prefix="rc"): owner for owner in NAMES}
        for queue in queues:
            await client.createQueue(queue)
            await client.post(queue, [{"n": 1}, {"n": 2}])
            claim = await client.claim(queue, ttl=60, grace=60, limit=1)
            await client.deleteMessage(queue, claim.messages[0].id, claim.id)
            bodies = [m.body async for m in client.messages(queue, echo=True)]
            self.assertEqual(bodies, [{"n": 2}])
        self.assertEqual(client.routes.version, expected.version)
        await self.logged(queues)
        # A relaying node's line would be written within its flush
        # interval (0.1 s) of the owner's; give it three.
        await deferLater(reactor, 0.3, lambda: None)
        seen = await self.logged(queues)
        self.assertEqual(seen, {q: {owner} for q, owner in queues.items()})
        # A client that does not route by the ring is relayed by a.
        plain = self.client("a", ringAware=False)
        queue = queueOwnedBy("c", prefix="rc")
        await plain.queueStats(queue)
        seen = await self.logged({queue: {"a", "c"}})
        self.assertEqual(seen[queue], {"a", "c"})

    async def test_staleRing(self) -> None:
        """
        A client holding a ring of another node set (a and b only, at the
        same URLs) sends requests to the wrong nodes: they forward, every
        answer is right, and the first answer's version header makes the
        client fetch the real ring.
        """
        await self.startCluster()
        stale = Ring(["a", "b"])
        doc = stale.describe()
        doc["nodes"] = [dict(n, url=self.nodes[n["name"]].url) for n in doc["nodes"]]
        client = self.client("a")
        client.routes = RingInfo.fromJSON(doc)
        queue = next(
            f"st{i}"
            for i in range(1000)
            if Ring(NAMES).owner(key(PROJECT, f"st{i}")) == "c"
        )
        wrong = stale.owner(key(PROJECT, queue))
        ids = await client.post(queue, [{"n": 1}])
        self.assertIsNone(client.routes)
        message = await client.getMessage(queue, ids[0])
        self.assertEqual(message.body, {"n": 1})
        self.assertEqual(client.routes.version, Ring(NAMES).version)
        stats = await client.queueStats(queue)
        self.assertEqual(stats.total, 1)
        seen = await self.logged({queue: {wrong, "c"}})
        self.assertEqual(seen[queue], {wrong, "c"})

    async def test_ringCommand(self) -> None:
        """
        marconi ring shows the version, and each node's weight, share and
        state as the node at --url sees it, as JSON or as a table.
        """
        await self.startCluster()
        env = {k: v for k, v in environment().items() if not k.startswith("MARCONI_")}
        env["MARCONI_URL"] = self.nodes["b"].url
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-m", "marconi.client.cli", "ring", "--json"],
            env=env,
            path=ROOT,
        )
        self.assertEqual(code, 0, err)
        doc = json.loads(out)
        ring = Ring(NAMES)
        self.assertEqual((doc["version"], doc["scheme"]), (ring.version, "slots"))
        self.assertEqual(doc["node"], "b")
        shares = ring.shares()
        self.assertEqual(
            [(n["name"], n["weight"], n["state"], n["share"]) for n in doc["nodes"]],
            [
                (name, 1, "self" if name == "b" else "up", round(shares[name], 4))
                for name in NAMES
            ],
        )
        out, err, code = await getProcessOutputAndValue(
            sys.executable, ["-m", "marconi.client.cli", "ring"], env=env, path=ROOT
        )
        self.assertEqual(code, 0, err)
        lines = out.decode().splitlines()
        self.assertTrue(lines[0].startswith(f"Ring {ring.version} (slots, slots=4096)"))
        self.assertEqual(lines[1].split(), ["NODE", "WEIGHT", "SHARE", "STATE", "URL"])
        self.assertEqual(
            lines[3].split(),
            ["b", "1", f"{shares['b']:.1%}", "self", self.nodes["b"].url],
        )
