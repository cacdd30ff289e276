"""
The pass-through of requests for queues another node owns
(L{marconi.api.passthrough}): which requests it takes, and what clients
and nodes see of them, on real nodes driven over raw sockets.
"""

import gzip
import json
import re
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from marconi.api import passthrough, presigned
from marconi.api.http import MarconiSite
from marconi.api.passthrough import PassThrough
from marconi.api.presigned import SignedURLs
from marconi.auth.noauth import NoAuth
from marconi.cluster.errors import NodeUnavailable
from marconi.cluster.forward import Answer, answerOf, forwardPairs
from marconi.cluster.wire import Pool, RawHeaders
from marconi.core.errors import Unauthorized
from marconi.core.monitoring import NullMonitor
from tests.api.test_api_unit import InMemoryNode
from tests.apihelpers import connectChannel
from tests.integration.test_cluster import (
    CLIENT,
    PROJECT,
    ClusterTestCase,
    queueOwnedBy,
)
from tests.rawhttp import connect


def _wireAnswer(data: bytes) -> Answer:
    """
    The L{Answer} the forwarding client (L{marconi.cluster.wire}) reads
    from the bytes C{data} of a node's answer.
    """

    def connect(key: str, factory: Any) -> Deferred:
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        connected.append(protocol)
        return succeed(protocol)

    connected: list = []
    pool = Pool(Clock(), connect)
    d = pool.request("b", b"GET / HTTP/1.1\r\n\r\n", False, 1 << 20, 5, 5)
    connected[0].dataReceived(data)
    read: list = []
    d.addCallback(read.append)
    return answerOf(*read[0])


class _Site:
    maxRequestBody = 1000
    reactor = reactor


class _Channel:
    MAX_LENGTH = 8192
    maxHeaders = 100
    totalHeadersSize = 16384
    site = _Site()


class _Membership:
    def isUp(self, node: str) -> bool:
        return node != "c"


class _Router:
    """
    Node A's view: queues named C{mine} are A's, C{gone...} C's (down),
    C{moving} are being moved, the others B's.
    """

    membership = _Membership()

    class config:
        nodeName = "a"

    def holder(self, project: str, queue: str) -> str:
        if queue == "moving":
            raise RuntimeError("moving")
        if queue.startswith("gone"):
            return "c"
        return "a" if queue.startswith(("mine", "near")) else "b"


class _API:
    class app:
        labels: dict = {}


def _request(
    method: bytes = b"POST",
    target: bytes = b"/v2/queues/q/messages",
    headers: bytes = b"",
    body: bytes = b'{"messages": []}',
    version: bytes = b"HTTP/1.1",
) -> bytes:
    head = b"%s %s %s\r\nHost: h\r\nClient-ID: %s\r\nX-Project-ID: p\r\n" % (
        method,
        target,
        version,
        CLIENT.encode(),
    )
    if body:
        head += b"Content-Length: %d\r\n" % len(body)
    return head + headers + b"\r\n" + body


def _unusualRequests() -> list:
    """
    Requests that are not simple: each takes the usual way.
    """
    return [
        _request(version=b"HTTP/1.0"),
        _request(headers=b"Transfer-Encoding: chunked\r\n", body=b""),
        _request(headers=b"Content-Encoding: gzip\r\n"),
        _request(headers=b"Expect: 100-continue\r\n"),
        _request(headers=b"X-Marconi-Project: other\r\n"),
        _request(headers=b"x-marconi-anything: 1\r\n"),
        _request(headers=b"Content-Length: 16\r\n"),
        _request(headers=b"Upgrade: websocket\r\n"),
        _request(headers=b"Bad Name: 1\r\n"),
        _request(headers=b" folded\r\n"),
        _request(headers=b"Host: \xff\xfe\r\n"),
        _request(body=b"x" * 1001),
        _request(target=b"/v2/queues/q"),
        _request(target=b"/v2/queues/q/stats", body=b""),
        _request(target=b"*"),
        _request(target=b"http://h/v2/queues/q/messages"),
        _request(target=b"/v2/queues/q/messages/%ff"),
        _request(target=b"/v2/queues/q/messages?a=\x01"),
        _request(target=b"/v2/queues/q/messages?a=\x7f"),
        _request(b"PUT"),
        _request(target=b"/v2/queues/mine/messages"),
        _request(target=b"/v2/queues/moving/messages"),
        _request(target=b"/v2/queues/gone/messages"),
        _request(headers=b"X-Long: " + b"x" * 8200 + b"\r\n"),
        b"\r\n" + _request(),
        _request()[:40],
    ]


class TakeTests(SynchronousTestCase):
    def take(self, data: bytes):
        return PassThrough(_API(), _Router()).take(_Channel(), data)

    def test_simpleRequests(self) -> None:
        """
        A complete HTTP/1.1 request of a hot route, with or without its
        body yet, is taken, and knows where its body ends.
        """
        data = _request()
        relay = self.take(data)
        self.assertIsNotNone(relay)
        self.assertEqual(relay.end, len(data))
        self.assertEqual(relay.route, None)
        self.assertEqual(relay.kwargs["queue"], "q")
        self.assertIsNotNone(self.take(data[: len(data) - 3]))
        for target in (
            b"/v2/queues/q/messages?limit=10&echo=true",
            b"/v2/queues/q/messages?ids=a,b",
            b"/v2/projects/p/queues/q/messages",
        ):
            self.assertIsNotNone(self.take(_request(b"GET", target, body=b"")), target)
        claim = _request(b"POST", b"/v2/queues/q/claims?limit=10", body=b"{}")
        self.assertIsNotNone(self.take(claim))
        self.assertIsNotNone(
            self.take(_request(b"DELETE", b"/v2/queues/q/messages/m1", body=b""))
        )

    def test_forwardLines(self) -> None:
        """
        The header lines forwarded to the owner are the client's, in the
        order they came, less hop-by-hop ones, C{Host}, C{Content-Length}
        and C{Accept-Encoding}.
        """
        relay = self.take(
            _request(
                headers=b"Connection: keep-alive\r\nAccept: application/json\r\n"
                b"Accept-Encoding: gzip\r\nTE: trailers\r\nX-Other:  v \r\n"
                b"X-Other: w\r\n"
            )
        )
        self.assertEqual(
            relay.requestHeaders.forwardLines,
            b"Client-ID: %s\r\nX-Project-ID: p\r\nAccept: application/json\r\n"
            b"X-Other: v\r\nX-Other: w\r\n" % CLIENT.encode(),
        )
        self.assertEqual(relay.requestHeaders.getRawHeaders(b"x-other"), [b"v", b"w"])
        self.assertEqual(relay.requestHeaders.getRawHeaders(b"host"), [b"h"])

    def test_forwardLinesAsForwardPairs(self) -> None:
        """
        The lines forwarded are the headers the usual way forwards
        (L{forward.forwardPairs} of the headers twisted.web reads), each
        name's values in the same order: no hop-by-hop header, proxy
        credentials, length or host reaches the owner either way.
        """
        extra = (
            b"Proxy-Authorization: Basic eDp5\r\n",
            b"Keep-Alive: timeout=5\r\n",
            b"Proxy-Connection: keep-alive\r\n",
            b"Connection: keep-alive\r\n",
            b"Upgrade-Insecure-Requests: 1\r\n",
            b"Trailer: X-T\r\n",
            b"accept-encoding: gzip\r\n",
            b"X-A: 1\r\n",
            b"x-a: 2\r\n",
            b"X-Empty: \r\n",
            b"User-Agent: t/1\r\n",
            # Between a node and its peer only.
            b"Marconi-Pipelining: 1\r\n",
        )
        for count in range(len(extra) + 1):
            headers = b"".join(extra[count:] + extra[:count])
            relay = self.take(_request(headers=headers))
            if b"Trailer" in headers:
                self.assertIsNone(relay)
                headers = headers.replace(b"Trailer: X-T\r\n", b"")
                relay = self.take(_request(headers=headers))
            received = Headers()
            head = _request(headers=headers).split(b"\r\n\r\n")[0]
            for line in head.split(b"\r\n")[1:]:
                if line:
                    name, value = line.split(b":", 1)
                    received.addRawHeader(name, value.strip())
            expected: dict = {}
            for name, value in forwardPairs(received, {}):
                expected.setdefault(name.lower(), []).append(value)
            got: dict = {}
            for line in relay.requestHeaders.forwardLines.split(b"\r\n")[:-1]:
                name, value = line.split(b": ", 1)
                got.setdefault(name.lower(), []).append(value)
            self.assertEqual(got, expected)
            for name in (
                b"proxy-authorization",
                b"keep-alive",
                b"host",
                b"marconi-pipelining",
            ):
                self.assertNotIn(name, got)

    def test_unusualRequests(self) -> None:
        """
        Every request that is not simple takes the usual way.
        """
        for data in _unusualRequests():
            self.assertIsNone(self.take(data), data)


class _Small(_Channel):
    MAX_LENGTH = 200
    maxHeaders = 4

    class site:
        maxRequestBody = 10


class RecentTests(SynchronousTestCase):
    """
    One pass-through reads each request line and header block it was sent
    before as it read them the first time: the same decisions, with the
    channel's own bounds.
    """

    def setUp(self) -> None:
        self.passThrough = PassThrough(_API(), _Router())

    def test_sameDecisions(self) -> None:
        """
        Requests sent twice (or more) are taken, or left to the usual way,
        each time as the first.
        """
        unusual = _unusualRequests()
        usual = [
            _request(),
            _request(b"GET", b"/v2/queues/q/messages?limit=10", body=b""),
            _request(headers=b"Connection: close\r\n"),
        ]
        for _ in range(3):
            for data in unusual:
                self.assertIsNone(self.passThrough.take(_Channel(), data), data)
            relays = [self.passThrough.take(_Channel(), data) for data in usual]
            self.assertEqual(
                [(r.method, r.uri, r.end, r.close) for r in relays],
                [
                    (b"POST", b"/v2/queues/q/messages", len(usual[0]), False),
                    (b"GET", b"/v2/queues/q/messages?limit=10", len(usual[1]), False),
                    (b"POST", b"/v2/queues/q/messages", len(usual[2]), True),
                ],
            )

    def test_ownerAskedEachTime(self) -> None:
        """
        The node of a request's queue is found anew for each request, even
        when its lines were read before: the same headers for a queue of
        this node, or a node that is down, take the usual way.
        """
        headers = b"X-Project-ID: p\r\nHost: h\r\n\r\n"
        far = b"GET /v2/queues/q/messages HTTP/1.1\r\n" + headers
        mine = b"GET /v2/queues/mine/messages HTTP/1.1\r\n" + headers
        gone = b"GET /v2/queues/gone/messages HTTP/1.1\r\n" + headers
        take = self.passThrough.take
        self.assertIsNone(take(_Channel(), mine))
        self.assertEqual(take(_Channel(), far).guess, ("p", "b"))
        self.assertIsNone(take(_Channel(), mine))
        self.assertIsNone(take(_Channel(), gone))
        self.assertEqual(take(_Channel(), far).guess, ("p", "b"))

    def test_channelBounds(self) -> None:
        """
        A request read before on a channel with loose bounds is still held
        to those of the channel it comes on: too many headers, too long a
        line, too large a body.
        """
        # Bodiless but for the last: each is held to one bound only.
        many = _request(headers=b"A: 1\r\nB: 2\r\n", body=b"")
        long = _request(headers=b"X-Long: " + b"x" * 300 + b"\r\n", body=b"")
        large = _request()
        for data in (many, long, large):
            self.assertIsNotNone(self.passThrough.take(_Channel(), data))
            self.assertIsNone(self.passThrough.take(_Small(), data), data)
            self.assertIsNotNone(self.passThrough.take(_Channel(), data))

    def test_bounded(self) -> None:
        """
        No more than C{MAX_KEYS} request lines or header blocks are kept,
        nor more than C{MAX_BYTES} bytes of them, and none longer than
        C{MAX_KEY}.
        """
        recent = passthrough._Recent
        blocks = self.passThrough._blocks
        for i in range(recent.MAX_KEYS * 2):
            self.passThrough.take(
                _Channel(), _request(headers=b"X-N: %d\r\n" % i, body=b"")
            )
            self.assertLessEqual(len(blocks), recent.MAX_KEYS)
        self.assertGreater(len(blocks), recent.MAX_KEYS // 2)
        self.assertEqual(blocks.size, sum(len(key) for key in blocks))
        filler = b"X-Long: " + b"x" * (recent.MAX_KEY - 200) + b"\r\n"
        for i in range(2 * recent.MAX_BYTES // recent.MAX_KEY):
            self.passThrough.take(
                _Channel(), _request(headers=b"X-N: %d\r\n%s" % (i, filler), body=b"")
            )
            self.assertLessEqual(sum(len(key) for key in blocks), recent.MAX_BYTES)
            self.assertEqual(blocks.size, sum(len(key) for key in blocks))
        blocks.clear()
        self.assertEqual(blocks.size, 0)
        big = _request(headers=b"X-Big: " + b"x" * recent.MAX_KEY + b"\r\n")
        self.assertIsNotNone(self.passThrough.take(_Channel(), big))
        self.assertEqual(len(blocks), 0)


class _Routed(_Router):
    """
    The router of an API in memory, but queues named C{far...} belong to
    node B, where C{forwardRaw} sends them (its L{Deferred}s kept).
    """

    def __init__(self, router) -> None:
        self._router = router
        self.sent: list = []
        self.cancelled: list = []
        self.projects: list = []

    def __getattr__(self, name: str):
        return getattr(self._router, name)

    def route(self, project: str, queue: str):
        return None if self.holder(project, queue) == "a" else "b"

    def forwardRaw(
        self, method, uri, headers, body, project, owner, then=None
    ) -> Deferred:
        d: Deferred = Deferred(lambda _: self.cancelled.append(uri))
        self.projects.append(project)
        self.sent.append((method, uri, dict(headers.getAllRawHeaders()), body, d))
        if then is not None:
            d.addBoth(then)
        return d


class _Served(NullMonitor):
    def __init__(self) -> None:
        self.served: list = []

    def requestServed(self, route: str, status: int, seconds: float) -> None:
        self.served.append((route, status, seconds))


_OWNERS = [
    (b"Location", b"/v2/queues/far/messages?ids=1"),
    (b"Content-Type", b"application/json; charset=UTF-8"),
    (b"X-OpenStack-Request-Id", b"req-of-the-owner"),
    (b"X-Marconi-Ring-Version", b"owner-ring"),
    (b"Connection", b"keep-alive"),
    (b"Content-Length", b"2"),
]


class _TokenAuth(NoAuth):
    """
    An auth driver that answers later, as Keystone does: the token C{good}
    acts for project C{p}, any other is refused.
    """

    trustsHeaders = False

    def __init__(self) -> None:
        self.asked: list = []

    def authenticate(self, headers, urlProject) -> Deferred:
        d: Deferred = Deferred()
        self.asked.append((headers.get(b"x-auth-token"), d))
        return d

    def decide(self) -> None:
        for token, d in self.asked:
            if not d.called:
                if token == b"good":
                    d.callback("p")
                else:
                    d.errback(Unauthorized("The token is not valid."))


class ChannelTests(SynchronousTestCase):
    """
    The pass-through in a node's channel, over L{StringTransport} with the
    site's time from a L{Clock}: the API in memory, node B's answers given
    by the test.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.auth = _TokenAuth()
        api = InMemoryNode(self, auth=self.auth).api
        self.router = _Routed(api.router)
        api.router = self.router
        self.monitor = _Served()
        self.site = MarconiSite(
            api.resource(),
            maxRequestBody=10_000,
            reactor=self.clock,
            monitor=self.monitor,
            ringVersion=lambda: "this-ring",
        )
        self.site.passThrough = PassThrough(api, self.router)
        self.transport = connectChannel(self, self.site, 5)
        self.channel = self.transport.protocol
        self.events: list = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def post(self, queue: str, extra: bytes = b"X-Auth-Token: good\r\n") -> bytes:
        return _request(
            target=b"/v2/queues/%s/messages" % queue.encode(),
            headers=extra,
            body=b'{"messages": [{"body": 1}]}',
        )

    def dataReceived(self, data: bytes) -> None:
        self.channel.dataReceived(data)
        self.auth.decide()

    def test_authenticatedFirst(self) -> None:
        """
        Nothing is sent before the auth driver has answered; a request it
        refuses is answered 401 here and never sent, a request it accepts
        is sent for its project.
        """
        self.channel.dataReceived(self.post("far", b"X-Auth-Token: bad\r\n"))
        self.assertEqual(self.router.sent, [])
        self.auth.decide()
        self.auth.decide()
        self.assertEqual([a[0] for a in _answers(self.transport.value())], [401])
        self.assertEqual(self.router.sent, [])
        self.channel.dataReceived(self.post("far"))
        self.assertEqual(self.router.sent, [])
        self.auth.decide()
        self.assertEqual(len(self.router.sent), 1)

    def test_tokensAskedEachTime(self) -> None:
        """
        An auth driver that does not trust the headers is asked for every
        request, however alike: a token may expire, or be revoked.
        """
        for index in range(3):
            self.channel.dataReceived(self.post("far"))
            self.assertEqual(len(self.auth.asked), index + 1)
            self.auth.decide()
            self.answer()
        self.assertEqual(len(self.router.sent), 3)

    def answer(self, index: int = -1, code: int = 201, headers=_OWNERS) -> None:
        self.router.sent[index][4].callback(
            Answer(code, b"Created", RawHeaders(list(headers)), b"[]")
        )

    def answerAsItCame(self, head: bytes, body: bytes) -> None:
        """
        Give the last request sent node B's answer C{head} and C{body} as
        the forwarding client reads it (L{marconi.cluster.wire}).
        """
        self.router.sent[-1][4].callback(_wireAnswer(head + body))

    def test_headAsItCame(self) -> None:
        """
        The owner's head, with no hop-by-hop header, is written to the
        client as it came, before the body (it already holds the body's
        length); the access line has the owner's request id.
        """
        head = (
            b"HTTP/1.1 200 OK\r\nX-OpenStack-Request-Id:  req-owner \r\n"
            b"X-Marconi-Ring-Version: owner-ring\r\nContent-Length: 2\r\n\r\n"
        )
        self.dataReceived(self.post("far"))
        self.answerAsItCame(head, b"[]")
        self.assertEqual(self.transport.value(), head + b"[]")
        [event] = [e for e in self.events if e.get("log_namespace") == "marconi.access"]
        self.assertEqual(event["request_id"], "req-owner")

    def test_headNotAsItCame(self) -> None:
        """
        An owner's head that is not what the API would answer is written
        anew: its hop-by-hop headers dropped, a large body compressed for
        a client that asks, the connection's close announced.
        """
        self.dataReceived(self.post("far"))
        self.answerAsItCame(
            b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\n",
            b"[]",
        )
        [(status, headers, body)] = _answers(self.transport.value())
        self.assertEqual((status, body), (200, b"[]"))
        self.assertNotIn(b"keep-alive", headers)
        self.transport.clear()
        large = b"[%s]" % b",".join([b"1"] * 1000)
        head = b"HTTP/1.1 200 OK\r\nVary: Accept-Encoding\r\nContent-Length: %d\r\n\r\n"
        self.dataReceived(self.post("far", b"X-Auth-Token: good\r\n"))
        self.answerAsItCame(head % len(large), large)
        self.assertEqual(self.transport.value(), head % len(large) + large)
        self.transport.clear()
        self.dataReceived(
            self.post("far", b"X-Auth-Token: good\r\nAccept-Encoding: gzip\r\n")
        )
        self.answerAsItCame(head % len(large), large)
        [(status, headers, body)] = _answers(self.transport.value())
        self.assertEqual(headers[b"content-encoding"], b"gzip")
        self.assertEqual(headers[b"vary"], b"Accept-Encoding")
        self.assertEqual(gzip.decompress(body), large)
        self.transport.clear()
        self.dataReceived(
            self.post("far", b"X-Auth-Token: good\r\nConnection: close\r\n")
        )
        self.answerAsItCame(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", b"[]")
        [(status, headers, body)] = _answers(self.transport.value())
        self.assertEqual((status, headers[b"connection"], body), (200, b"close", b"[]"))
        self.assertTrue(self.transport.disconnecting)

    def test_passedThrough(self) -> None:
        """
        A request for a queue of node B is sent there with its body and
        headers, none of a twisted.web request's; B's answer reaches the
        client with B's request id and ring version, less hop-by-hop
        headers, and is logged and measured once, as the API's route.
        """
        data = self.post("far")
        self.dataReceived(data)
        [(method, uri, headers, body, _)] = self.router.sent
        self.assertEqual((method, uri), (b"POST", b"/v2/queues/far/messages"))
        self.assertEqual(body, b'{"messages": [{"body": 1}]}')
        self.assertEqual(headers[b"X-Project-ID"], [b"p"])
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(0.25)
        self.answer()
        [(status, headers, body)] = _answers(self.transport.value())
        self.assertEqual((status, body), (201, b"[]"))
        self.assertEqual(headers[b"x-openstack-request-id"], b"req-of-the-owner")
        self.assertEqual(headers[b"x-marconi-ring-version"], b"owner-ring")
        self.assertEqual(headers[b"location"], b"/v2/queues/far/messages?ids=1")
        self.assertNotIn(b"connection", headers)
        self.assertEqual(self.transport.value().count(b"Content-Length"), 1)
        self.assertEqual(self.monitor.served, [("postMessages", 201, 0.25)])
        [event] = [e for e in self.events if e.get("log_namespace") == "marconi.access"]
        self.assertEqual(event["request_id"], "req-of-the-owner")
        self.assertEqual(event["project"], "p")
        self.assertFalse(self.transport.disconnecting)

    def test_localRequestsTheUsualWay(self) -> None:
        """
        A request for a queue this node serves, and one the API refuses
        before routing (no client id), are answered here, never sent.
        """
        self.dataReceived(self.post("near"))
        self.dataReceived(self.post("far").replace(b"Client-ID", b"X-No"))
        answers = _answers(self.transport.value())
        self.assertEqual([a[0] for a in answers], [201, 400])
        self.assertEqual(
            answers[0][1][b"x-marconi-ring-version"], b"this-ring", answers[0]
        )
        self.assertEqual(self.router.sent, [])

    def test_pipelinedInOrder(self) -> None:
        """
        Requests pipelined behind one being passed through are answered
        after it, in order, whichever way each goes.
        """
        self.dataReceived(self.post("far") + self.post("far2") + self.post("near"))
        self.assertEqual(len(self.router.sent), 1)
        self.assertEqual(self.transport.value(), b"")
        self.answer()
        self.auth.decide()
        self.assertEqual(len(self.router.sent), 2)
        self.assertEqual(self.router.sent[1][1], b"/v2/queues/far2/messages")
        self.assertEqual(len(_answers(self.transport.value())), 1)
        self.answer(code=503)
        self.auth.decide()
        answers = _answers(self.transport.value())
        self.assertEqual([a[0] for a in answers], [201, 503, 201])
        self.assertEqual(
            [a[1][b"x-openstack-request-id"] == b"req-of-the-owner" for a in answers],
            [True, True, False],
        )
        self.assertFalse(self.transport.disconnecting)

    def test_longPipelineAnsweredAtOnce(self) -> None:
        """
        A long pipeline of requests whose forwarding fails at once (an auth
        driver that answers at once, a peer found down) is answered in
        full, in order: each request's answer does not read the next from
        inside itself.
        """
        api = InMemoryNode(self, auth=NoAuth()).api
        router = _Routed(api.router)
        router.forwardRaw = lambda *args: fail(NodeUnavailable("b")).addBoth(args[-1])
        api.router = router
        site = MarconiSite(api.resource(), maxRequestBody=10_000, reactor=self.clock)
        site.passThrough = PassThrough(api, router)
        transport = connectChannel(self, site, 6)
        channel = transport.protocol
        one = _request(method=b"GET", target=b"/v2/queues/far/messages", body=b"")
        channel.dataReceived(one * 1500)
        answers = _answers(transport.value())
        self.assertEqual(len(answers), 1500)
        self.assertEqual({a[0] for a in answers}, {503})
        self.assertFalse(transport.disconnecting)

    def test_clientNotReading(self) -> None:
        """
        A client that does not read its answers is not read from: a
        transport whose buffer filled while a request was passed through
        stays paused after the answer, and a transport that drains while
        the pass-through holds too many pipelined bytes does not resume
        reading before the answer.
        """
        self.dataReceived(self.post("far"))
        self.channel.pauseProducing()
        self.assertEqual(self.transport.producerState, "producing")
        self.answer()
        self.assertEqual(self.transport.producerState, "paused")
        self.channel.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")
        self.transport.clear()
        pipelined = self.post("far2") * (passthrough.PIPELINED // 100)
        self.dataReceived(self.post("far") + pipelined)
        self.assertEqual(self.transport.producerState, "paused")
        self.channel.resumeProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.answer()
        self.auth.decide()
        # The next request went on, with more than the bound behind it.
        self.assertEqual(self.router.sent[-1][1], b"/v2/queues/far2/messages")
        self.assertEqual(self.transport.producerState, "paused")

    def test_bodyDeadline(self) -> None:
        """
        A request whose body does not arrive within the body deadline is
        answered 408 and never sent.
        """
        data = self.post("far")
        self.dataReceived(data[:-5])
        self.clock.advance(self.site.bodyTimeout - 1)
        self.dataReceived(data[-5:-3])
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(1)
        self.assertEqual(_answers(self.transport.value())[0][0], 408)
        self.assertEqual(self.router.sent, [])

    def test_bodyInPieces(self) -> None:
        """
        A body that arrives after its head, in pieces, is sent whole; a head
        that arrives in pieces goes the usual way (to the API).
        """
        data = self.post("far")
        head = data.index(b"\r\n\r\n") + 4
        self.dataReceived(data[:head])
        for start in range(head, len(data), 7):
            self.assertEqual(self.router.sent, [])
            self.dataReceived(data[start : start + 7])
        [(_, _, _, body, _)] = self.router.sent
        self.assertEqual(body, b'{"messages": [{"body": 1}]}')
        self.clock.advance(self.site.bodyTimeout * 2)
        self.answer()
        self.assertEqual(_answers(self.transport.value())[0][0], 201)
        data = self.post("near")
        for start in range(0, len(data), 7):
            self.dataReceived(data[start : start + 7])
        self.assertEqual(len(self.router.sent), 1)
        self.assertEqual([a[0] for a in _answers(self.transport.value())], [201, 201])

    def test_clientGoesAway(self) -> None:
        """
        A client that goes away cancels its forwarding; nothing is written.
        """
        self.dataReceived(self.post("far"))
        self.channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.router.cancelled, [b"/v2/queues/far/messages"])
        self.assertEqual(self.transport.value(), b"")

    def test_clientGoesAwayWhileAuthenticating(self) -> None:
        """
        A client that goes away before the auth driver has answered stops
        its request there: it is never forwarded, nothing is written.
        """
        self.channel.dataReceived(self.post("far"))
        self.channel.connectionLost(Failure(ConnectionDone()))
        self.auth.decide()
        self.assertEqual(self.router.sent, [])
        self.assertEqual(self.transport.value(), b"")

    def test_ownerUnavailable(self) -> None:
        """
        A forwarding that fails is answered 503 with a JSON error, this
        node's request id and ring version.
        """
        self.dataReceived(self.post("far"))
        self.router.sent[0][4].errback(NodeUnavailable("b"))
        [(status, headers, body)] = _answers(self.transport.value())
        self.assertEqual(status, 503)
        self.assertIn("Cluster node b ", json.loads(body)["description"])
        self.assertEqual(headers[b"x-marconi-ring-version"], b"this-ring")
        self.assertTrue(headers[b"x-openstack-request-id"].startswith(b"req-"))

    def test_connectionClose(self) -> None:
        """
        A client that asks for the connection to be closed gets the answer,
        then the close.
        """
        self.dataReceived(
            self.post("far", b"X-Auth-Token: good\r\nConnection: close\r\n")
        )
        self.answer()
        [(status, headers, _)] = _answers(self.transport.value())
        self.assertEqual((status, headers[b"connection"]), (201, b"close"))
        self.assertTrue(self.transport.disconnecting)


class TrustedHeadersTests(SynchronousTestCase):
    """
    With an auth driver that trusts the headers, what a request was
    authenticated as serves the next ones that send the same header lines
    for the same version, path project and method.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.api = api = InMemoryNode(self).api
        self.router = _Routed(api.router)
        api.router = self.router
        self.contexts: list = []
        context = api._context

        def counted(request, version, projectId):
            # Of the pass-through (a request refused is then served the
            # usual way, and authenticated there again).
            if isinstance(request, passthrough.Relay):
                self.contexts.append((request.method, version, projectId))
            return context(request, version, projectId)

        api._context = counted
        self.site = MarconiSite(
            api.resource(), maxRequestBody=10_000, reactor=self.clock
        )
        self.site.passThrough = PassThrough(api, self.router)
        self.transport = connectChannel(self, self.site, 5)
        self.channel = self.transport.protocol

    def send(self, data: bytes) -> tuple:
        """
        Send C{data}, answer what it was forwarded as, and return the
        client's answer.
        """
        self.transport.clear()
        sent = len(self.router.sent)
        self.channel.dataReceived(data)
        if len(self.router.sent) > sent:
            self.router.sent[-1][4].callback(
                Answer(201, b"Created", RawHeaders(list(_OWNERS)), b"[]")
            )
        [answer] = _answers(self.transport.value())
        return answer

    def test_authenticatedOnce(self) -> None:
        """
        A request sending the same header lines as one before it is
        forwarded for the same project without being authenticated again;
        one with other headers, another version or a project in its path
        is authenticated.
        """
        post = _request(target=b"/v2/queues/far/messages")
        for _ in range(3):
            self.assertEqual(self.send(post)[0], 201)
        self.assertEqual(len(self.contexts), 1)
        other = _request(
            target=b"/v2/queues/far/messages",
            headers=b"Accept: application/json\r\n",
        )
        self.assertEqual(self.send(other)[0], 201)
        self.assertEqual(self.send(other)[0], 201)
        self.assertEqual(len(self.contexts), 2)
        self.send(_request(target=b"/v1.1/queues/far/messages"))
        self.send(_request(target=b"/v2/projects/p/queues/far/messages"))
        self.assertEqual(len(self.contexts), 4)
        self.assertEqual(self.router.projects, ["p"] * 7)

    def test_projectOfItsHeaders(self) -> None:
        """
        Requests naming other projects in their headers are forwarded each
        for its own, however often each is sent.
        """
        for _ in range(2):
            for project in (b"p", b"other"):
                data = _request(target=b"/v2/queues/far/messages").replace(
                    b"X-Project-ID: p", b"X-Project-ID: " + project
                )
                self.assertEqual(self.send(data)[0], 201)
        self.assertEqual(self.router.projects, ["p", "other"] * 2)
        self.assertEqual(len(self.contexts), 2)

    def test_refusedEachTime(self) -> None:
        """
        A request the API refuses before forwarding it is refused each
        time (nothing of it is kept), and a request sending pre-signed URL
        headers is authenticated each time.
        """
        noClient = _request(target=b"/v2/queues/far/messages").replace(
            b"Client-ID: " + CLIENT.encode() + b"\r\n", b""
        )
        for _ in range(2):
            self.assertEqual(self.send(noClient)[0], 400)
        presigned = _request(
            target=b"/v2/queues/far/messages", headers=b"URL-Expires: 1\r\n"
        )
        for _ in range(2):
            self.assertIn(self.send(presigned)[0], (400, 401, 403))
        self.assertEqual(len(self.contexts), 4)
        self.assertEqual(self.router.sent, [])

    def test_tokenDriverAskedEachTime(self) -> None:
        """
        A driver that does not trust the headers is asked for every
        request, even one it answers at once (as Keystone answers a token
        it checked before): a token refused the second time is refused.
        """
        self.api.auth = auth = _OnceThenRefused()
        post = _request(
            target=b"/v2/queues/far/messages", headers=b"X-Auth-Token: t\r\n"
        )
        self.assertEqual(self.send(post)[0], 201)
        self.assertEqual(self.send(post)[0], 401)
        self.assertEqual(auth.asked, 3)
        self.assertEqual(len(self.router.sent), 1)

    def test_presignedEachTime(self) -> None:
        """
        A request with valid pre-signed URL headers is checked each time:
        the same headers for a path they do not grant, or after they
        expire, are refused.
        """
        self.api.signedURLs = SignedURLs("secret", self.clock)
        path = "/v2/queues/far/messages"
        # Two seconds after the clock (1,000 s): it expires within the
        # channel's idle timeout.
        expires = "1970-01-01T00:16:42"
        signature = presigned.sign(b"secret", [path], ["POST"], "p", expires)
        grant = (
            b"URL-Signature: %s\r\nURL-Expires: %s\r\n"
            b"URL-Methods: POST\r\nURL-Paths: %s\r\n"
            % (signature.encode(), expires.encode(), path.encode())
        )
        post = _request(target=path.encode(), headers=grant)
        self.assertEqual(self.send(post)[0], 201)
        self.assertEqual(self.send(post)[0], 201)
        other = _request(target=b"/v2/queues/far2/messages", headers=grant)
        self.assertEqual(self.send(other)[0], 403)
        self.clock.advance(3)
        self.assertEqual(self.send(post)[0], 403)
        self.assertEqual(len(self.router.sent), 2)
        self.assertEqual(len(self.contexts), 4)

    def test_mediaOfItsHeaders(self) -> None:
        """
        A request served by what an earlier one was authenticated as is
        answered in the media type its headers ask for: an XML client's
        error is XML.
        """
        post = _request(
            target=b"/v2/queues/far/messages", headers=b"Accept: application/xml\r\n"
        )
        self.assertEqual(self.send(post)[0], 201)
        self.transport.clear()
        self.channel.dataReceived(post)
        self.router.sent[-1][4].errback(NodeUnavailable("b"))
        [(status, headers, body)] = _answers(self.transport.value())
        self.assertEqual(status, 503)
        self.assertTrue(headers[b"content-type"].startswith(b"application/xml"))
        self.assertTrue(body.startswith(b"<"))
        self.assertEqual(len(self.contexts), 1)

    def test_contextsBounded(self) -> None:
        """
        One header block keeps what it was authenticated as for at most
        C{_CONTEXTS} versions, path projects and methods.
        """
        for index in range(passthrough._CONTEXTS + 8):
            target = b"/v2/projects/p%d/queues/far/messages" % index
            data = _request(target=target).replace(b"X-Project-ID: p\r\n", b"")
            self.assertEqual(self.send(data)[0], 201)
            [block] = [
                b
                for b in self.site.passThrough._blocks.values()
                if isinstance(b, passthrough._Block)
            ]
            self.assertLessEqual(len(block.contexts), passthrough._CONTEXTS)
        self.assertEqual(
            self.router.projects, ["p%d" % i for i in range(passthrough._CONTEXTS + 8)]
        )

    def test_anotherDriver(self) -> None:
        """
        Once the node's auth driver is another, requests are authenticated
        anew by it.
        """
        post = _request(target=b"/v2/queues/far/messages")
        self.send(post)
        self.api.auth = _Refusing()
        self.assertEqual(self.send(post)[0], 401)
        self.assertEqual(len(self.contexts), 2)
        self.assertEqual(len(self.router.sent), 1)


class _OnceThenRefused(NoAuth):
    """
    A driver that does not trust the headers and answers at once: the
    first request acts for C{p}, every later one is refused.
    """

    trustsHeaders = False

    def __init__(self) -> None:
        self.asked = 0

    def authenticate(self, headers, urlProject) -> Deferred:
        self.asked += 1
        if self.asked == 1:
            return succeed("p")
        return fail(Unauthorized("The token was revoked."))


class _Refusing(NoAuth):
    """
    A driver that trusts the headers, and refuses every request.
    """

    def authenticate(self, headers, urlProject) -> Deferred:
        return fail(Unauthorized("No."))


def _answers(data: bytes) -> list:
    """
    The complete answers in C{data}: C{(status, headers, body)}, headers as
    a dict of lower-case names to their last value.
    """
    answers = []
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return answers
        lines = data[:end].split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        if len(data) < end + 4 + length:
            return answers
        answers.append(
            (int(lines[0].split(b" ")[1]), headers, data[end + 4 : end + 4 + length])
        )
        data = data[end + 4 + length :]


class PassThroughTests(ClusterTestCase):
    async def answers(self, client, count: int, seconds: float = 10) -> list:
        waited = 0.0
        while len(_answers(client.received)) < count:
            if waited > seconds or client.isClosed:
                self.fail(f"{count} answers expected: {client.received!r}")
            await deferLater(reactor, 0.02, lambda: None)
            waited += 0.02
        return _answers(client.received)

    def raw(self, method: str, path: str, body=None, extra: bytes = b"") -> bytes:
        data = b"" if body is None else json.dumps(body).encode()
        return _request(method.encode(), path.encode(), extra, data).replace(
            b"X-Project-ID: p", b"X-Project-ID: " + PROJECT.encode()
        )

    def accessLines(self, node: str) -> list:
        return [
            line
            for line in self.nodes[node].log().splitlines()
            if "[marconi.access#" in line
        ]

    async def test_keepAliveAndPipelined(self) -> None:
        """
        On one connection to node A, forwarded and local requests in turn,
        then pipelined in one write, are each answered, in order, as the
        owner answers them: post, list, claim and delete of a queue B owns,
        with the owner's request id and ring version.
        """
        await self.startCluster()
        there, here = queueOwnedBy("b"), queueOwnedBy("a")
        client = await connect(self.nodes["a"].port)
        self.addCleanup(client.close)
        sent = 0
        for queue in (there, here, there):
            client.transport.write(
                self.raw(
                    "POST", f"/v2/queues/{queue}/messages", {"messages": [{"body": 1}]}
                )
            )
            sent += 1
            status, headers, body = (await self.answers(client, sent))[-1]
            self.assertEqual(status, 201, body)
            self.assertTrue(headers[b"x-openstack-request-id"].startswith(b"req-"))
            self.assertIn(b"x-marconi-ring-version", headers)
            self.assertNotIn(b"connection", headers)
        client.transport.write(
            self.raw("GET", f"/v2/queues/{there}/messages?echo=true")
            + self.raw("GET", f"/v2/queues/{here}/messages?echo=true")
            + self.raw("POST", f"/v2/queues/{there}/claims?limit=5", {"ttl": 60})
        )
        answers = (await self.answers(client, sent + 3))[sent:]
        self.assertEqual([a[0] for a in answers], [200, 200, 201])
        self.assertEqual(len(json.loads(answers[0][2])["messages"]), 2)
        self.assertEqual(len(json.loads(answers[1][2])["messages"]), 1)
        claimed = json.loads(answers[2][2])["messages"]
        self.assertEqual(len(claimed), 2)
        for message in claimed:
            client.transport.write(self.raw("DELETE", message["href"]))
        answers = (await self.answers(client, sent + 5))[sent + 3 :]
        self.assertEqual([a[0] for a in answers], [204, 204])
        self.assertFalse(client.isClosed)
        client.transport.write(self.raw("GET", f"/v2/queues/{there}/messages"))
        [(status, _, body)] = (await self.answers(client, sent + 6))[sent + 5 :]
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["messages"], [])

    async def test_accessLog(self) -> None:
        """
        A request passed through is logged once in the cluster, by the node
        the client sent it to, under the request id of the owner's answer.
        """
        await self.startCluster()
        queue = queueOwnedBy("b")
        client = await connect(self.nodes["a"].port)
        self.addCleanup(client.close)
        client.transport.write(
            self.raw(
                "POST", f"/v2/queues/{queue}/messages", {"messages": [{"body": 1}]}
            )
        )
        [(status, headers, _)] = await self.answers(client, 1)
        self.assertEqual(status, 201)
        requestId = headers[b"x-openstack-request-id"].decode()
        for _ in range(100):
            lines = [line for line in self.accessLines("a") if requestId in line]
            if lines:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(f"POST /v2/queues/{queue}/messages 201", lines[0])
        self.assertIn(f"project={PROJECT}", lines[0])
        self.assertIn("route=postMessages", lines[0])
        self.assertEqual([line for line in self.accessLines("b") if queue in line], [])

    async def test_largeAnswer(self) -> None:
        """
        A large listing from the owner reaches the client whole, with the
        one C{Vary: Accept-Encoding} of the API, and compressed for a
        client that asks for gzip.
        """
        await self.startCluster()
        queue = queueOwnedBy("b")
        messages = [{"body": "x" * 100, "ttl": 300} for _ in range(20)]
        r, _ = await self.call(
            "b", "POST", f"/v2/queues/{queue}/messages", {"messages": messages}
        )
        self.assertEqual(r.code, 201)
        path = f"/v2/queues/{queue}/messages?limit=20&echo=true"
        client = await connect(self.nodes["a"].port)
        self.addCleanup(client.close)
        client.transport.write(self.raw("GET", path))
        [(status, headers, body)] = await self.answers(client, 1)
        self.assertEqual(status, 200)
        self.assertEqual(headers[b"vary"], b"Accept-Encoding")
        self.assertNotIn(b"content-encoding", headers)
        self.assertEqual(len(json.loads(body)["messages"]), 20)
        self.assertEqual(client.received.lower().count(b"\r\nvary:"), 1)
        client.transport.write(
            self.raw("GET", path, extra=b"Accept-Encoding: gzip\r\n")
        )
        [_, (status, headers, squeezed)] = await self.answers(client, 2)
        self.assertEqual((status, headers[b"content-encoding"]), (200, b"gzip"))
        self.assertEqual(json.loads(gzip.decompress(squeezed)), json.loads(body))

    async def test_unusualRequestsStillWork(self) -> None:
        """
        Chunked, gzip'd and C{Expect}ing requests for a queue another node
        owns take the usual way and are forwarded all the same; a request
        that closes the connection is answered, then the connection closed.
        """
        await self.startCluster()
        queue = queueOwnedBy("c")
        path = f"/v2/queues/{queue}/messages".encode()
        document = json.dumps({"messages": [{"body": "x"}]}).encode()
        head = (
            b"POST %s HTTP/1.1\r\nHost: h\r\nClient-ID: %s\r\nX-Project-ID: %s\r\n"
            % (
                path,
                CLIENT.encode(),
                PROJECT.encode(),
            )
        )
        squeezed = gzip.compress(document)
        for data in (
            head
            + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
            % (len(document), document),
            head
            + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(squeezed)
            + squeezed,
            head
            + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(document)
            + document,
        ):
            client = await connect(self.nodes["a"].port)
            self.addCleanup(client.close)
            client.transport.write(data)
            answers = await self.answers(client, 1)
            self.assertEqual(answers[-1][0], 201, answers)
        client = await connect(self.nodes["a"].port)
        client.transport.write(
            head
            + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(document)
            + document
        )
        await client.closed
        [(status, headers, _)] = _answers(client.received)
        self.assertEqual((status, headers[b"connection"]), (201, b"close"))
        r, body = await self.call("b", "GET", f"/v2/queues/{queue}/stats")
        self.assertEqual(body["messages"]["total"], 4)

    async def test_forwardingHeadersAndAuth(self) -> None:
        """
        A client's forwarding headers are refused, never forwarded; a
        request the API refuses (the project of the URL is not the
        caller's) is answered by the node it was sent to, and reaches no
        queue of either project.
        """
        await self.startCluster()
        queue = queueOwnedBy("b")
        post = {"messages": [{"body": 1}]}
        r, body = await self.call(
            "a",
            "POST",
            f"/v2/queues/{queue}/messages",
            post,
            headers={"X-Marconi-Project": "other"},
        )
        self.assertEqual(r.code, 403, body)
        r, body = await self.call(
            "a",
            "POST",
            f"/v2/projects/other/queues/{queue}/messages",
            post,
        )
        self.assertEqual(r.code, 400, body)
        for project in (PROJECT, "other"):
            r, body = await self.call(
                "b", "GET", f"/v2/queues/{queue}/messages", project=project
            )
            self.assertEqual(r.code, 200, body)
            self.assertEqual(body["messages"], [])

    async def test_ownerDown(self) -> None:
        """
        A request for a queue whose owner is down is answered 503 with a
        JSON error naming it, and the owner is seen down; the connection
        stays usable.
        """
        await self.startCluster()
        queue = queueOwnedBy("c")
        client = await connect(self.nodes["a"].port)
        self.addCleanup(client.close)
        await self.nodes["c"].kill()
        post = self.raw(
            "POST", f"/v2/queues/{queue}/messages", {"messages": [{"body": 1}]}
        )
        client.transport.write(post)
        [(status, headers, body)] = await self.answers(client, 1)
        self.assertEqual(status, 503, body)
        self.assertEqual(headers[b"content-type"], b"application/json; charset=UTF-8")
        error = json.loads(body)
        self.assertEqual(error["title"], "Service unavailable")
        self.assertIn("Cluster node c ", error["description"])
        await self.waitFor("a", lambda nodes: nodes["c"]["state"] == "down")
        client.transport.write(post)
        answers = await self.answers(client, 2)
        self.assertEqual(answers[1][0], 503)
        nodes = await self.waitFor("a", lambda nodes: True)
        self.assertEqual(nodes["b"]["state"], "up")

    async def test_clientGoesAway(self) -> None:
        """
        A client that closes its connection while its request waits at the
        owner leaves both nodes serving.
        """
        await self.startCluster()
        queue = queueOwnedBy("b")
        client = await connect(self.nodes["a"].port)
        client.transport.write(self.raw("GET", f"/v2/queues/{queue}/messages?wait=5"))
        await deferLater(reactor, 0.3, lambda: None)
        client.close()
        r, body = await self.call(
            "a", "POST", f"/v2/queues/{queue}/messages", {"messages": [{"body": 2}]}
        )
        self.assertEqual(r.code, 201, body)
        r, body = await self.call("a", "GET", f"/v2/queues/{queue}/messages?echo=true")
        self.assertEqual([m["body"] for m in body["messages"]], [2])
        nodes = await self.waitFor("a", lambda nodes: True)
        self.assertEqual(nodes["b"]["state"], "up")
        self.assertFalse(re.search("Traceback", self.nodes["a"].log()))
