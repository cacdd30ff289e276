"""
Ring-aware routing in the client (L{marconi.client.api.Client}), against a
fake cluster served by L{StubTreq}: one resource answers for every node's
host, records which host each request reached, and publishes a ring built
with L{marconi.cluster.ring.Ring}.
"""

import json
from typing import Any, Optional

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from marconi.client import errors
from marconi.client.api import Client
from marconi.client.models import RingInfo
from marconi.cluster.ring import Ring, key

PROJECT = "p"


def url(name: str) -> str:
    return f"http://{name}.invalid"


def description(weights: dict, urls: Optional[dict] = None) -> dict:
    """
    The document a cluster of nodes with these weights publishes; every
    node at L{url} of its name unless C{urls} says otherwise.
    """
    doc = Ring(weights).describe()
    urls = urls or {}
    doc["nodes"] = [
        dict(n, url=urls.get(n["name"], url(n["name"]))) for n in doc["nodes"]
    ]
    return doc


def queueOwnedBy(ring: Ring, node: str, avoid: Optional[Ring] = None) -> str:
    """
    A queue that C{node} owns on C{ring} (and does not own on C{avoid}).
    """
    for i in range(1000):
        name = f"q{i}"
        if ring.owner(key(PROJECT, name)) == node and (
            avoid is None or avoid.owner(key(PROJECT, name)) != node
        ):
            return name
    raise AssertionError("no such queue")


class FakeCluster(Resource):
    """
    Nodes at C{http://NAME.invalid}: each answers C{GET /v2/ring} with
    C{self.published} (or C{self.ringAnswer} when set), and any other
    request with C{200 {"host": ...}} (queue listings with an empty page),
    every answer carrying C{self.version} as its ring-version header.
    """

    isLeaf = True

    def __init__(self, weights: dict) -> None:
        super().__init__()
        self.publish(description(weights))
        self.requests: list = []
        self.ringAnswer: Optional[tuple] = None

    def publish(self, doc: dict) -> None:
        self.published = doc
        self.version = doc["version"]

    def render(self, request: Any) -> bytes:
        host = request.getHeader(b"host").decode()
        self.requests.append((host.split(".")[0], request.method, request.uri))
        if self.version is not None:
            request.setHeader(b"x-marconi-ring-version", self.version.encode())
        request.setHeader(b"content-type", b"application/json")
        if request.uri == b"/v2/ring":
            if self.ringAnswer is not None:
                code, body = self.ringAnswer
                request.setResponseCode(code)
                return body
            return json.dumps(self.published).encode()
        if request.path == b"/v2/queues":
            return b'{"queues": [], "links": []}'
        return json.dumps(
            {"host": host, "messages": {"free": 0, "claimed": 0, "total": 0}}
        ).encode()

    def hosts(self, path: bytes) -> list:
        """
        The nodes that received requests whose URI starts with C{path}.
        """
        return [h for h, _, uri in self.requests if uri.startswith(path)]


class Unreachable:
    """
    A treq-like HTTP client: connections to C{down} hosts are refused,
    the rest go to C{http}.
    """

    def __init__(self, http: Any, down: set) -> None:
        self.http = http
        self.down = down

    def request(self, method: str, url: str, **kw: Any) -> Any:
        if any(url.startswith(f"http://{d}.invalid") for d in self.down):
            return Deferred.fromCoroutine(self._refuse())
        return self.http.request(method, url, **kw)

    async def _refuse(self) -> Any:
        raise ConnectionRefusedError()


class RoutingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.weights = {"a": 1, "b": 1, "c": 2}
        self.ring = Ring(self.weights)
        self.cluster = FakeCluster(self.weights)
        self.stub = StubTreq(self.cluster)

    def client(self, http: Any = None, **kw: Any) -> Client:
        return Client(
            url("a"),
            project=kw.pop("project", PROJECT),
            clientId="me",
            http=http or self.stub,
            clock=Clock(),
            **kw,
        )

    def wait(self, coroutine: Any) -> Any:
        d = Deferred.fromCoroutine(coroutine)
        self.stub.flush()
        return self.successResultOf(d)

    def test_toTheOwner(self) -> None:
        """
        Each queue's requests go to the node owning the queue by the
        published ring, fetched once from the entry URL before the first
        of them; listing queues and health go to the entry URL.
        """
        client = self.client()
        for node in ("a", "b", "c"):
            queue = queueOwnedBy(self.ring, node)
            self.wait(client.createQueue(queue))
            self.wait(client.queueStats(queue))
            path = f"/v2/queues/{queue}".encode()
            self.assertEqual(self.cluster.hosts(path), [node, node])
        self.wait(client.listQueues())
        listings = [h for h, _, uri in self.cluster.requests if uri == b"/v2/queues"]
        self.assertEqual(listings, ["a"])
        self.assertEqual(self.cluster.hosts(b"/v2/ring"), ["a"])
        self.assertEqual(client.routes.version, self.ring.version)

    def test_nextLinksToTheOwner(self) -> None:
        """
        The next pages of a queue's messages are read from its owner too.
        """
        queue = queueOwnedBy(self.ring, "c")
        client = self.client()
        self.wait(client._request("GET", f"/v2/queues/{queue}/messages?marker=5"))
        self.assertEqual(self.cluster.hosts(f"/v2/queues/{queue}".encode()), ["c"])

    def test_refreshOnNewVersion(self) -> None:
        """
        An answer carrying another ring version makes the client fetch the
        ring again before its next request, and route by the new ring.
        """
        client = self.client()
        self.wait(client.queueStats("q0"))
        grown = {"a": 1, "b": 1, "c": 2, "d": 4}
        self.cluster.publish(description(grown))
        queue = queueOwnedBy(Ring(grown), "d", avoid=self.ring)
        # Sent by the old ring; its answer names the new version.
        self.wait(client.queueStats(queue))
        self.assertIsNone(client.routes)
        self.wait(client.queueStats(queue))
        self.assertEqual(self.cluster.hosts(b"/v2/ring"), ["a", "a"])
        self.assertEqual(self.cluster.hosts(f"/v2/queues/{queue}".encode())[-1], "d")
        self.assertEqual(client.routes.version, Ring(grown).version)

    def test_staleRingStillAnswers(self) -> None:
        """
        A client given a ring of other nodes sends a request by it; the
        answer (the fake node's, as a forwarding node relays it) is
        returned, and the ring is fetched again from its version header.
        """
        client = self.client()
        client.routes = RingInfo.fromJSON(description({"a": 1, "b": 1}))
        queue = queueOwnedBy(Ring({"a": 1, "b": 1}), "b")
        stats = self.wait(client.queueStats(queue))
        self.assertEqual(stats.total, 0)
        self.assertIsNone(client.routes)
        self.wait(client.queueStats(queue))
        self.assertEqual(client.routes.version, self.ring.version)

    def test_ownerUnreachable(self) -> None:
        """
        A connection refused by the owner sends the request to the entry
        URL instead (which forwards it) and makes the client fetch the ring
        again; a refused entry URL is an error.
        """
        http = Unreachable(self.stub, {"c"})
        client = self.client(http)
        queue = queueOwnedBy(self.ring, "c")
        stats = self.wait(client.queueStats(queue))
        self.assertEqual(stats.total, 0)
        self.assertEqual(self.cluster.hosts(f"/v2/queues/{queue}".encode()), ["a"])
        self.assertIsNone(client.routes)
        http.down = {"a"}
        d = Deferred.fromCoroutine(client.queueStats(queue))
        self.stub.flush()
        failure = self.failureResultOf(d, errors.ConnectionFailed)
        self.assertIn("cannot reach http://a.invalid", str(failure.value))

    def test_notRingAware(self) -> None:
        """
        With ringAware=False every request goes to the entry URL and the
        ring is never fetched.
        """
        client = self.client(ringAware=False)
        queue = queueOwnedBy(self.ring, "b")
        self.wait(client.queueStats(queue))
        self.assertEqual(
            self.cluster.requests, [("a", b"GET", f"/v2/queues/{queue}/stats".encode())]
        )

    def test_noProject(self) -> None:
        """
        Without a project (the server resolves it from the token) the
        owner cannot be known: requests go to the entry URL.
        """
        client = self.client(project=None)
        self.wait(client.queueStats(queueOwnedBy(self.ring, "b")))
        self.assertEqual(self.cluster.hosts(b"/v2/"), ["a"])

    def test_nodeWithoutClientURL(self) -> None:
        """
        A node published without a URL (a mutual-TLS cluster listener with
        no public URL) has its queues' requests sent to the entry URL.
        """
        self.cluster.publish(description(self.weights, {"b": None}))
        client = self.client()
        self.wait(client.queueStats(queueOwnedBy(self.ring, "b")))
        self.wait(client.queueStats(queueOwnedBy(self.ring, "c")))
        self.assertEqual(self.cluster.hosts(b"/v2/queues/"), ["a", "c"])

    def test_noRing(self) -> None:
        """
        A node on its own (null version), a server without the endpoint
        (404), or a ring that does not build its stated version: every
        request goes to the entry URL, and the ring is not asked for again
        while no answer names a ring version.
        """
        alone = {"scheme": None, "version": None, "nodes": []}
        broken = dict(description(self.weights), version="0123456789abcdef")
        for code, body in (
            (200, json.dumps(alone).encode()),
            (404, b'{"title": "Not found", "description": ""}'),
            (200, json.dumps(broken).encode()),
            (200, b"not json"),
        ):
            self.cluster.requests.clear()
            self.cluster.ringAnswer = (code, body)
            self.cluster.version = None
            client = self.client()
            for node in ("b", "c"):
                self.wait(client.queueStats(queueOwnedBy(self.ring, node)))
            self.assertEqual(self.cluster.hosts(b"/v2/"), ["a", "a", "a"], body)
            self.assertIsNone(client.routes.version)

    def test_ringCall(self) -> None:
        """
        Client.ring fetches the ring now, typed, with each node's URL and
        exact share, and routes by it from then on.
        """
        client = self.client()
        info = self.wait(client.ring())
        self.assertEqual(info.version, self.ring.version)
        self.assertEqual(
            [(n.name, n.weight, n.url) for n in info.nodes],
            [("a", 1, url("a")), ("b", 1, url("b")), ("c", 2, url("c"))],
        )
        self.assertEqual(info.shares(), self.ring.shares())
        self.assertIs(client.routes, info)
        self.wait(client.queueStats(queueOwnedBy(self.ring, "c")))
        self.assertEqual(self.cluster.hosts(b"/v2/ring"), ["a"])
