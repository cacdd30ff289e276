"""
Requests pipelined on a connection that offered pipelining are served side
by side and answered in order (L{marconi.api.pipeline}); without the offer,
one after another, as twisted.web serves them.
"""

import json
import re
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from marconi.api import pipeline
from marconi.api.http import MarconiSite
from tests.api.test_api_unit import InMemoryNode
from tests.apihelpers import CLIENT, connectChannel

OFFER = b"Marconi-Pipelining: 1\r\n"


def request(line: bytes, body: bytes = b"", headers: bytes = b"") -> bytes:
    """
    A request of project C{p}: C{line}, then C{headers}, and C{body} with
    its length when given.
    """
    head = line + b"\r\nHost: x\r\nClient-ID: " + CLIENT.encode()
    head += b"\r\nX-Project-ID: p\r\n" + headers
    if body:
        head += b"Content-Type: application/json\r\n"
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def offering(data: bytes) -> bytes:
    """
    C{data}, its first request offering pipelining.
    """
    at = data.find(b"\r\n") + 2
    return data[:at] + OFFER + data[at:]


def createQueue(name: bytes) -> bytes:
    return request(b"PUT /v2/queues/" + name + b" HTTP/1.1", b"{}")


def post(queue: bytes, n: int) -> bytes:
    body = json.dumps({"messages": [{"ttl": 300, "body": n}]}).encode()
    return request(b"POST /v2/queues/" + queue + b"/messages HTTP/1.1", body)


def stats(queue: bytes) -> bytes:
    return request(b"GET /v2/queues/" + queue + b"/stats HTTP/1.1")


LONG_POLL = request(b"GET /v2/queues/empty/messages?wait=5 HTTP/1.1")


def exists(node: InMemoryNode, queue: str) -> bool:
    """
    Whether C{queue} was created on C{node}.
    """
    listed = node.request("GET", "/v2/queues").json["queues"]
    return queue in [found["name"] for found in listed]


def answers(data: bytes) -> list:
    """
    The status codes and bodies of the answers in C{data}, in order.
    """
    found = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        code = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"\r\nContent-Length: (\d+)", head).group(1))
        found.append((code, rest[:length]))
        data = rest[length:]
    return found


class PipelineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.node = InMemoryNode(self)
        self.site = MarconiSite(
            self.node.api.resource(), maxRequestBody=10_000, reactor=self.node.clock
        )
        self.transport = connectChannel(self, self.site)
        self.writes: list = []
        write = self.transport.write

        def counted(data: bytes) -> None:
            self.writes.append(data)
            write(data)

        self.transport.write = counted

    def send(self, data: bytes) -> None:
        self.transport.protocol.dataReceived(data)

    def turn(self, seconds: float = 0) -> None:
        """
        The reactor's clock moves on C{seconds}, running what is due.
        """
        self.node.clock.advance(seconds)

    def exists(self, queue: str) -> bool:
        return exists(self.node, queue)

    def test_answersInOrderInOneWrite(self) -> None:
        """
        The answers to pipelined requests come in the order of the
        requests, those ready together in one write; the first says the
        connection serves pipelined requests.
        """
        self.send(
            offering(
                createQueue(b"q1") + post(b"q1", 1) + post(b"q1", 2) + stats(b"q1")
            )
        )
        self.assertEqual(self.transport.value(), b"")
        self.turn()
        self.assertEqual(len(self.writes), 1)
        value = self.transport.value()
        self.assertTrue(value.startswith(b"HTTP/1.1 201 Created\r\n" + OFFER))
        self.assertEqual(value.count(OFFER), 1)
        found = answers(value)
        self.assertEqual([code for code, _ in found], [201, 201, 201, 200])
        self.assertEqual(json.loads(found[3][1])["messages"]["total"], 2)
        self.assertFalse(self.transport.disconnecting)

    def test_servedSideBySide(self) -> None:
        """
        A request behind one that waits is served at once; its answer
        waits its turn.
        """
        self.send(offering(LONG_POLL + createQueue(b"q2")))
        self.turn()
        self.assertTrue(self.exists("q2"))
        self.assertEqual(self.transport.value(), b"")
        self.turn(5)
        self.assertEqual(
            [code for code, _ in answers(self.transport.value())], [200, 201]
        )

    def test_withoutOfferOneAfterAnother(self) -> None:
        """
        Without the offer, pipelined requests are served one after
        another, and no answer says more.
        """
        self.send(LONG_POLL + createQueue(b"q3"))
        self.turn()
        self.assertFalse(self.exists("q3"))
        self.turn(5)
        self.assertTrue(self.exists("q3"))
        value = self.transport.value()
        self.assertEqual([code for code, _ in answers(value)], [200, 201])
        self.assertNotIn(OFFER, value)

    def test_offerLaterIgnored(self) -> None:
        """
        The offer counts only with the first request of a connection.
        """
        self.send(createQueue(b"q4"))
        self.send(offering(LONG_POLL) + createQueue(b"q5"))
        self.turn()
        self.assertFalse(self.exists("q5"))
        self.assertNotIn(OFFER, self.transport.value())

    def test_arrivingInPieces(self) -> None:
        """
        Requests split anywhere across reads are read whole.
        """
        data = offering(createQueue(b"q6") + post(b"q6", 1) + stats(b"q6"))
        for at in range(0, len(data), 7):
            self.send(data[at : at + 7])
        self.turn()
        self.assertEqual(
            [code for code, _ in answers(self.transport.value())], [201, 201, 200]
        )

    def refused(self, bad: bytes) -> list:
        """
        Send a good request, C{bad}, and another: what is answered, and
        that the connection is closed.
        """
        self.send(offering(createQueue(b"a1")) + bad + createQueue(b"a2"))
        self.turn()
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(self.exists("a1"))
        self.assertFalse(self.exists("a2"))
        found = answers(self.transport.value())
        self.assertEqual(found[0][0], 201)
        self.assertIn(b"Connection: close", self.transport.value())
        for _, body in found[1:]:
            self.assertEqual(set(json.loads(body)), {"title", "description"})
        return [code for code, _ in found[1:]]

    def refusedInTurn(self, bad: bytes) -> int:
        """
        Send a good request, C{bad}, and another: C{bad} is answered with
        an error in its turn, and the requests around it are served on
        the connection, which stays open.
        """
        self.send(offering(createQueue(b"a1")) + bad + createQueue(b"a2"))
        self.turn()
        self.assertFalse(self.transport.disconnecting)
        self.assertTrue(self.exists("a1"))
        self.assertTrue(self.exists("a2"))
        found = answers(self.transport.value())
        self.assertEqual([found[0][0], found[2][0]], [201, 201])
        self.assertEqual(len(found), 3)
        self.assertNotIn(b"Connection: close", self.transport.value())
        self.assertEqual(set(json.loads(found[1][1])), {"title", "description"})
        # The connection serves on.
        self.send(createQueue(b"a3") + stats(b"a3"))
        self.turn()
        self.assertEqual(
            [code for code, _ in answers(self.transport.value())[3:]], [201, 200]
        )
        return found[1][0]

    def test_chunkedRefused(self) -> None:
        """
        A chunked request cannot be read whole ahead of its turn: it is
        answered 400, in its turn, and the connection closed.
        """
        bad = request(
            b"PUT /v2/queues/bad HTTP/1.1",
            headers=b"Transfer-Encoding: chunked\r\n",
        )
        self.assertEqual(self.refused(bad + b"2\r\n{}\r\n0\r\n\r\n"), [400])
        self.assertFalse(self.exists("bad"))

    def test_badLengthRefused(self) -> None:
        for lengths in (b"Content-Length: x\r\n", b"Content-Length: 2\r\n" * 2):
            self.setUp()
            bad = request(b"PUT /v2/queues/bad HTTP/1.1", headers=lengths) + b"{}"
            self.assertEqual(self.refused(bad), [400], lengths)

    def test_upgradeRefused(self) -> None:
        """
        A request that would take the connection over is refused, in its
        turn.
        """
        bad = request(
            b"GET /v2/queues HTTP/1.1",
            headers=b"Connection: Upgrade\r\nUpgrade: websocket\r\n",
        )
        self.assertEqual(self.refusedInTurn(bad), 400)

    def test_tooLargeRefused(self) -> None:
        """
        A body over the site's limit is refused in its turn, and skipped,
        however it arrives.
        """
        bad = request(b"POST /v2/queues/big/messages HTTP/1.1", b"x" * 10_001)
        self.assertEqual(self.refusedInTurn(bad), 413)
        self.assertFalse(self.exists("big"))
        self.setUp()
        data = offering(bad + createQueue(b"b2"))
        for at in range(0, len(data), 1000):
            self.send(data[at : at + 1000])
        self.turn()
        self.assertEqual(
            [code for code, _ in answers(self.transport.value())], [413, 201]
        )
        self.assertTrue(self.exists("b2"))

    def test_headTooLong(self) -> None:
        """
        A head that does not end within the channel's bounds is refused.
        """
        self.send(offering(createQueue(b"h1")) + b"GET /" + b"x" * 30_000)
        self.turn()
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(
            [code for code, _ in answers(self.transport.value())], [201, 431]
        )

    def test_connectionClose(self) -> None:
        """
        A request that closes the connection is answered in its turn;
        nothing after it is read.
        """
        closing = request(
            b"GET /v2/queues/c1/stats HTTP/1.1", headers=b"Connection: close\r\n"
        )
        self.send(offering(createQueue(b"c1")) + closing + createQueue(b"c2"))
        self.turn()
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(
            [code for code, _ in answers(self.transport.value())], [201, 200]
        )
        self.assertFalse(self.exists("c2"))

    def test_refusedRequestAnsweredInTurn(self) -> None:
        """
        A request the API refuses (a bad body) is answered like any other,
        in its turn, and the connection serves on.
        """
        bad = request(b"POST /v2/queues/e1/messages HTTP/1.1", b"[1")
        self.send(offering(createQueue(b"e1")) + bad + stats(b"e1"))
        self.turn()
        self.assertEqual(
            [code for code, _ in answers(self.transport.value())], [201, 400, 200]
        )
        self.assertFalse(self.transport.disconnecting)

    def test_depth(self) -> None:
        """
        Past C{DEPTH} requests being served, the connection stops reading
        until answers are written.
        """
        polls = LONG_POLL * pipeline.DEPTH
        self.send(offering(polls) + createQueue(b"d1"))
        self.turn()
        self.assertEqual(self.transport.producerState, "paused")
        self.assertFalse(self.exists("d1"))
        self.turn(5)
        self.assertEqual(self.transport.producerState, "producing")
        self.turn()
        self.assertTrue(self.exists("d1"))
        found = answers(self.transport.value())
        self.assertEqual(len(found), pipeline.DEPTH + 1)
        self.assertEqual(found[-1][0], 201)

    def test_depthHoldsWhenAnswersDrain(self) -> None:
        """
        At the depth, the connection stays paused when its transport
        drains (twisted.web resumes a channel's reading then).
        """
        self.send(offering(LONG_POLL * pipeline.DEPTH) + createQueue(b"d2"))
        self.turn()
        self.assertEqual(self.transport.producerState, "paused")
        channel = self.transport.protocol
        channel.pauseProducing()
        channel.resumeProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.assertFalse(self.exists("d2"))

    def test_deadlineClearedAtDepth(self) -> None:
        """
        Requests that arrived whole but wait for room are no slow
        arrival: a deadline set while one of them was arriving is cleared.
        """
        data = offering(LONG_POLL * pipeline.DEPTH + stats(b"s"))
        cut = len(data) - len(stats(b"s")) - 10
        self.send(data[:cut])
        self.send(data[cut:])
        bound = self.site.headerTimeout + self.site.bodyTimeout
        self.turn(4)
        self.turn(bound)
        self.assertFalse(self.transport.disconnecting)

    def test_arrivingIsNotIdle(self) -> None:
        """
        A request that has begun to arrive is bounded by the arrival
        deadline, not the idle timeout.
        """
        self.send(offering(createQueue(b"i1")))
        self.turn()
        self.turn(self.site.timeOut - 0.5)
        self.send(b"GET /v2/queues HTTP/1.1\r\nHo")
        self.turn(1)
        self.assertFalse(self.transport.disconnecting)
        self.turn(self.site.headerTimeout + self.site.bodyTimeout)
        self.assertTrue(self.transport.disconnecting)

    def test_closingRequestEndsReading(self) -> None:
        """
        Nothing after a request that closes the connection (HTTP/1.0, or
        C{Connection: close}) is served, even while it is being served.
        """
        for closing in (
            request(
                b"GET /v2/queues/empty/messages?wait=5 HTTP/1.1",
                headers=b"Connection: close\r\n",
            ),
            request(b"GET /v2/queues/empty/messages?wait=5 HTTP/1.0"),
        ):
            self.setUp()
            self.send(offering(createQueue(b"x1")) + closing + createQueue(b"x2"))
            self.turn()
            self.assertFalse(self.exists("x2"), closing)
            self.turn(5)
            self.assertEqual(
                [code for code, _ in answers(self.transport.value())], [201, 200]
            )
            self.assertTrue(self.transport.disconnecting)
            self.assertFalse(self.exists("x2"), closing)

    def test_malformedHeadRefusedFirst(self) -> None:
        """
        A head twisted.web would refuse or read in a special way is
        refused, in its turn, with an error of the API's form; the
        requests around it are served.
        """
        for bad in (
            b"get /v2/queues HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /v2/queues HTTP/1.1\r\nHost: x\r\n Folded: y\r\n\r\n",
            b"GET /v2/queues HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET /v2/queues HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 120 + b"\r\n",
            b"GET /" + b"x" * 9000 + b" HTTP/1.1\r\n\r\n",
        ):
            self.setUp()
            self.assertIn(self.refusedInTurn(bad), (400, 414), bad[:40])

    def test_closingAsTheChannelReadsIt(self) -> None:
        """
        Whether a request closes the connection is what its channel makes
        of it: C{Connection: Close} does; C{Connection: keep-alive} does
        not.
        """
        for value, closes in ((b"Close", True), (b"keep-alive", False)):
            self.setUp()
            closing = request(
                b"GET /v2/queues/empty/messages?wait=5 HTTP/1.1",
                headers=b"Connection: " + value + b"\r\n",
            )
            self.send(offering(createQueue(b"k1")) + closing + createQueue(b"k2"))
            self.turn()
            self.assertEqual(self.exists("k2"), not closes, value)
            self.turn(5)
            found = [code for code, _ in answers(self.transport.value())]
            self.assertEqual(found, [201, 200] if closes else [201, 200, 201])
            self.assertEqual(self.transport.disconnecting, closes)

    def test_offerMustSayOne(self) -> None:
        """
        C{Marconi-Pipelining: 0} asks for nothing.
        """
        data = LONG_POLL + createQueue(b"o1")
        at = data.find(b"\r\n") + 2
        self.send(data[:at] + b"Marconi-Pipelining: 0\r\n" + data[at:])
        self.turn()
        self.assertFalse(self.exists("o1"))

    def test_roomForForwardingHeaders(self) -> None:
        """
        A request with as many headers as a client may send, and those a
        relaying node adds, is served.
        """
        many = b"".join(b"X-H%d: %d\r\n" % (n, n) for n in range(95))
        added = b"".join(b"X-Added-%d: %s\r\n" % (n, b"v" * 60) for n in range(8))
        big = request(b"PUT /v2/queues/r1 HTTP/1.1", b"{}", many + added)
        self.send(offering(big) + createQueue(b"r2"))
        self.turn()
        found = answers(self.transport.value())
        self.assertEqual([code for code, _ in found], [201, 201], found)
        self.assertTrue(self.exists("r1"))

    def test_lostWhileServing(self) -> None:
        """
        A connection lost while requests are served: nothing more is
        written, and no timer is left.
        """
        self.send(offering(LONG_POLL + LONG_POLL))
        self.turn()
        self.transport.protocol.connectionLost(Failure(ConnectionDone()))
        self.turn(5)
        self.assertEqual(self.transport.value(), b"")
        self.turn(3600)
        self.assertEqual(self.node.clock.getDelayedCalls(), [])

    def test_idleTimeout(self) -> None:
        """
        The site's idle timeout closes a connection with nothing being
        served, not one serving a request.
        """
        self.site = MarconiSite(
            self.node.api.resource(),
            maxRequestBody=10_000,
            reactor=self.node.clock,
            timeout=3,
        )
        self.transport = connectChannel(self, self.site)
        self.send(offering(LONG_POLL))
        self.turn(4.5)
        self.assertFalse(self.transport.disconnecting)
        self.turn(0.5)
        self.assertEqual(len(answers(self.transport.value())), 1)
        self.turn(2.9)
        self.assertFalse(self.transport.disconnecting)
        self.turn(0.2)
        self.assertTrue(self.transport.disconnecting)

    def test_slowRequest(self) -> None:
        """
        A request that does not arrive whole within the site's header and
        body timeouts closes the connection.
        """
        self.send(offering(createQueue(b"s1")) + b"GET /v2/queues HT")
        self.turn(self.site.headerTimeout + self.site.bodyTimeout - 1)
        self.send(b"T")
        self.assertFalse(self.transport.disconnecting)
        self.turn(2)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual([code for code, _ in answers(self.transport.value())], [201])

    def test_busyStreamNotTooSlow(self) -> None:
        """
        A connection whose reads keep ending inside a request, each request
        arriving in time, is not closed: each request has its own
        deadline.
        """
        data = b"".join(stats(b"b%d" % n) for n in range(200))
        bound = self.site.headerTimeout + self.site.bodyTimeout
        step = len(stats(b"b0")) + 5
        self.send(offering(data[:step]))
        for at in range(step, len(data), step):
            self.turn(bound / 20)
            self.send(data[at : at + step])
        self.turn()
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(len(answers(self.transport.value())), 200)

    def test_sameAddresses(self) -> None:
        """
        Every pipelined request has the connection's addresses.
        """
        seen = []
        resource = self.site.resource

        class Recording:
            isLeaf = True

            def render(self, request: Any) -> Any:
                seen.append((request.getClientAddress(), request.getHost()))
                return resource.render(request)

        self.site.resource = Recording()
        self.send(offering(stats(b"x") + stats(b"y")))
        self.turn()
        peer, host = self.transport.getPeer(), self.transport.getHost()
        self.assertEqual(seen, [(peer, host), (peer, host)])


class OfferedTests(SynchronousTestCase):
    def test_offered(self) -> None:
        self.assertTrue(
            pipeline.offered(b"GET / HTTP/1.1\r\nmarconi-PIPELINING: 1\r\n\r\n")
        )
        self.assertFalse(pipeline.offered(b"GET / HTTP/1.1\r\nX: 1\r\n\r\n"))
        # The head is not whole: no offer is seen.
        self.assertFalse(
            pipeline.offered(b"GET / HTTP/1.1\r\nMarconi-Pipelining: 1\r\n")
        )
        # A body's bytes are no header.
        self.assertFalse(
            pipeline.offered(
                b"PUT / HTTP/1.1\r\nContent-Length: 25\r\n\r\n\r\nMarconi-Pipelining: 1"
            )
        )

    def test_siteRefuses(self) -> None:
        """
        A site that does not allow pipelining serves the requests of a
        connection that offers it one after another.
        """
        node = InMemoryNode(self)
        site = MarconiSite(
            node.api.resource(), maxRequestBody=10_000, reactor=node.clock
        )
        site.pipelining = False
        transport = connectChannel(self, site)
        transport.protocol.dataReceived(offering(LONG_POLL + createQueue(b"n1")))
        node.clock.advance(0)
        self.assertFalse(exists(node, "n1"))
        node.clock.advance(5)
        self.assertNotIn(OFFER, transport.value())
        self.assertEqual([code for code, _ in answers(transport.value())], [200, 201])
