"""
The connections forwarded requests travel on (L{marconi.cluster.wire}):
what is sent, how answers are read (length, chunked, up to the close), the
reuse of connections, the bounds (timeouts on a clock, body size), and
L{PeerClient.forward} against real loopback servers.
"""

import socket

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import resource, server
from twisted.web.http_headers import Headers

from marconi.api import passthrough
from marconi.cluster import signing
from marconi.cluster.errors import LOST, REFUSED, REQUEST, NodeUnavailable
from marconi.cluster.forward import NotAPath, PeerClient, retrySafe, target
from marconi.cluster.router import ClusterRouter
from marconi.cluster.settings import ClusterConfig, Peer
from marconi.cluster.wire import Abandoned, BadAnswer, BodyTooLarge, Pool, requestBytes
from tests.cluster.test_forward import _config, _Peer, _queueOf
from tests.integration.test_cluster import freePort


class _Wired:
    """
    A L{Pool} on a L{Clock} whose connections are L{StringTransport}s.
    """

    def __init__(self) -> None:
        self.clock = Clock()
        self.connections: list = []
        self.pending: list = []
        self.pool = Pool(self.clock, self.connect)
        self.hold = False

    def connect(self, key, factory: Factory) -> Deferred:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        self.connections.append((protocol, transport))
        if self.hold:
            d: Deferred = Deferred()
            self.pending.append((d, protocol, transport))
            return d
        protocol.makeConnection(transport)
        return succeed(protocol)

    def request(
        self,
        data=b"GET / HTTP/1.1\r\n\r\n",
        head=False,
        limit=100,
        retry=False,
        pipelined=False,
    ):
        again = (lambda: data + b", SIGNED ANEW") if retry else None
        return self.pool.request("b", data, head, limit, 5, 7, again, pipelined)


class PoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.wired = _Wired()

    def answer(self, d: Deferred, data: bytes, index: int = -1) -> tuple:
        protocol, _ = self.wired.connections[index]
        protocol.dataReceived(data)
        return self.successResultOf(d)

    def assertNoTimerLeft(self) -> None:
        """
        Once the pool's one timer has fired (it may outlive the requests
        that ended before their deadline), it is not scheduled again.
        """
        self.wired.clock.advance(60)
        self.assertEqual(self.wired.clock.getDelayedCalls(), [])

    def test_lengthAndReuse(self) -> None:
        """
        An answer with a Content-Length is read whole, its headers kept as
        they came; the connection then carries the next request.
        """
        d = self.wired.request(b"REQUEST ONE")
        _, transport = self.wired.connections[0]
        self.assertEqual(transport.value(), b"REQUEST ONE")
        head, body = self.answer(
            d, b"HTTP/1.1 201 Created\r\nLocation: /x\r\nContent-Length: 2\r\n\r\n{}"
        )
        self.assertEqual((head.code, head.phrase, body), (201, b"Created", b"{}"))
        self.assertEqual(head.headers.getRawHeaders(b"location"), [b"/x"])
        self.assertEqual(
            list(head.headers.getAllRawHeaders()),
            [(b"Location", [b"/x"]), (b"Content-Length", [b"2"])],
        )
        transport.clear()
        d = self.wired.request(b"REQUEST TWO")
        self.assertEqual(len(self.wired.connections), 1)
        self.assertEqual(transport.value(), b"REQUEST TWO")
        self.assertEqual(
            self.answer(d, b"HTTP/1.1 204 No Content\r\n\r\n")[0].code, 204
        )

    def test_headAsItCame(self) -> None:
        """
        The head of an HTTP/1.1 answer whose one Content-Length delimits
        its body is kept as it came; not that of an answer with two, with
        a Connection header, or of HTTP/1.0.
        """
        head = b"HTTP/1.1 200 OK\r\nX-Id:  a \r\nContent-Length: 2\r\n\r\n"
        self.assertEqual(self.answer(self.wired.request(), head + b"{}")[0].raw, head)
        for other in (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
        ):
            answered, body = self.answer(self.wired.request(), other + b"{}")
            self.assertEqual((answered.raw, body), (b"", b"{}"), other)

    def test_headWithHopByHopNotAsItCame(self) -> None:
        """
        A head with any hop-by-hop header (in any case) is not kept as it
        came: the pass-through writes such an answer anew, without them.
        Only a header's name counts, not a value that holds one.
        """
        for name in (
            b"Keep-Alive",
            b"UPGRADE",
            b"te",
            b"Trailer",
            b"Proxy-Authenticate",
            b"Proxy-Connection",
        ):
            head = b"HTTP/1.1 200 OK\r\n%s: x\r\nContent-Length: 2\r\n\r\n" % name
            answered, body = self.answer(self.wired.request(), head + b"{}")
            self.assertEqual((answered.raw, answered.lowered, body), (b"", b"", b"{}"))
            self.assertEqual(answered.headers.getRawHeaders(name), [b"x"])
        head = (
            b"HTTP/1.1 200 OK\r\nLocation: /connection/te: upgrade\r\n"
            b"Tea: 1\r\nContent-Length: 2\r\n\r\n"
        )
        answered, _ = self.answer(self.wired.request(), head + b"{}")
        self.assertEqual((answered.raw, answered.lowered), (head, head.lower()))

    def test_bodyWithHeadOrAfter(self) -> None:
        """
        An answer is the same whether its body comes with its head, after
        it, or byte by byte; bytes beyond the body close the connection.
        """
        data = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcde"
        for pieces in ([data], [data[:-5], data[-5:]], [bytes([b]) for b in data]):
            d = self.wired.request()
            protocol, transport = self.wired.connections[-1]
            for piece in pieces:
                self.assertNoResult(d)
                protocol.dataReceived(piece)
            head, body = self.successResultOf(d)
            self.assertEqual((head.code, head.raw, body), (200, data[:-5], b"abcde"))
            self.assertFalse(transport.disconnecting)
        d = self.wired.request()
        protocol, transport = self.wired.connections[-1]
        protocol.dataReceived(data + b"HTTP")
        self.assertEqual(self.successResultOf(d)[1], b"abcde")
        self.assertTrue(transport.disconnecting)

    def test_statusLinesRead(self) -> None:
        """
        A status line is read the same the first time and after (what it
        reads as is kept), and a malformed one is refused each time.
        """
        for _ in range(2):
            head = b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"
            answered, _ = self.answer(self.wired.request(), head)
            self.assertEqual((answered.code, answered.phrase), (404, b"Not Found"))
            # HTTP/1.0: the connection is not kept, nor the head as it came.
            self.assertEqual(answered.raw, b"")
            self.assertTrue(self.wired.connections[-1][1].disconnecting)
            for bad in (b"HTTP/1.1 2x0 OK", b"HTTP/2 200 OK", b"HTTP/1.1 2000 OK"):
                d = self.wired.request()
                protocol, transport = self.wired.connections[-1]
                protocol.dataReceived(bad + b"\r\nContent-Length: 0\r\n\r\n")
                self.failureResultOf(d, BadAnswer)
                self.assertTrue(transport.disconnecting)

    def test_chunked(self) -> None:
        """
        A chunked answer, arriving in pieces, is decoded; trailers are
        dropped.
        """
        d = self.wired.request()
        protocol, _ = self.wired.connections[0]
        for piece in (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
            b"c\r\n2;x=y\r\nde\r\n0\r\n",
            b"Trailer: t\r\n\r\n",
        ):
            self.assertNoResult(d)
            protocol.dataReceived(piece)
        self.assertEqual(self.successResultOf(d)[1], b"abcde")
        self.assertEqual(len(self.wired.pool._idle["b"]), 1)

    def test_untilClose(self) -> None:
        """
        An answer with neither length nor chunks ends with the connection,
        which is not kept.
        """
        d = self.wired.request()
        protocol, transport = self.wired.connections[0]
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\n\r\nsome")
        protocol.dataReceived(b" body")
        self.assertNoResult(d)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(d)[1], b"some body")
        self.assertEqual(len(self.wired.pool._idle.get("b", ())), 0)

    def test_connectionClose(self) -> None:
        """
        An answer with C{Connection: close} is read and its connection
        closed, not reused.
        """
        d = self.wired.request()
        _, transport = self.wired.connections[0]
        self.answer(
            d, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertTrue(transport.disconnecting)
        self.wired.request()
        self.assertEqual(len(self.wired.connections), 2)

    def test_headHasNoBody(self) -> None:
        """
        The answer to a HEAD ends with its headers, whatever length they
        give.
        """
        d = self.wired.request(head=True)
        head, body = self.answer(d, b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
        self.assertEqual((head.code, body), (200, b""))

    def test_interim(self) -> None:
        """
        A 100 Continue is skipped; the final answer is returned.
        """
        d = self.wired.request()
        head, body = self.answer(
            d,
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
        )
        self.assertEqual((head.code, body), (200, b"x"))

    def test_tooLarge(self) -> None:
        """
        A body over the bound fails the request with L{BodyTooLarge} and
        closes the connection, whether its length is given or it is
        chunked.
        """
        for answer in (
            b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"40\r\n"
            + b"x" * 64
            + b"\r\n"
            + b"40\r\n"
            + b"x" * 64
            + b"\r\n",
        ):
            d = self.wired.request()
            protocol, transport = self.wired.connections[-1]
            protocol.dataReceived(answer)
            self.assertIn(
                "over 100 bytes", str(self.failureResultOf(d, BodyTooLarge).value)
            )
            self.assertTrue(transport.disconnecting)

    def test_hugeChunkRefusedAtOnce(self) -> None:
        """
        A chunk whose announced size passes the bound fails the request as
        soon as its size line arrives, before any of its bytes are kept.
        """
        d = self.wired.request()
        protocol, transport = self.wired.connections[-1]
        protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffff\r\n"
        )
        self.assertIn(
            "over 100 bytes", str(self.failureResultOf(d, BodyTooLarge).value)
        )
        self.assertTrue(transport.disconnecting)

    def test_badAnswers(self) -> None:
        """
        What is not an HTTP/1.1 answer fails the request with L{BadAnswer}
        and closes the connection.
        """
        for answer in (
            b"SMTP 220 hello\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 200 O\nK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 O\rK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\ncontent-length: 01\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\nKeep-Alive: 1\r\nContent-Length: 1\r\n"
            b"Content-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\rX: y\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\nX: y\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxyz",
            b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20000,
        ):
            d = self.wired.request()
            protocol, transport = self.wired.connections[-1]
            protocol.dataReceived(answer)
            self.failureResultOf(d, BadAnswer)
            self.assertTrue(transport.disconnecting, answer[:60])

    def test_headerTimeout(self) -> None:
        """
        No answer's head within the header timeout fails the request with
        L{TimeoutError} and aborts the connection.
        """
        d = self.wired.request()
        _, transport = self.wired.connections[0]
        self.wired.clock.advance(4.9)
        self.assertNoResult(d)
        self.wired.clock.advance(0.2)
        self.failureResultOf(d, TimeoutError)
        self.assertTrue(transport.disconnecting)

    def test_connectTimeout(self) -> None:
        """
        The header timeout counts from the request, connecting included:
        a connection not made in time is given up.
        """
        self.wired.hold = True
        d = self.wired.request()
        self.wired.clock.advance(5.1)
        self.failureResultOf(d, TimeoutError)
        self.assertTrue(self.wired.pending[0][0].called)

    def test_bodyTimeout(self) -> None:
        """
        Once the head came, the body has the body timeout, counted from the
        head.
        """
        d = self.wired.request()
        protocol, transport = self.wired.connections[0]
        self.wired.clock.advance(4)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart")
        self.wired.clock.advance(6.9)
        self.assertNoResult(d)
        self.wired.clock.advance(0.2)
        self.failureResultOf(d, TimeoutError)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.wired.clock.getDelayedCalls(), [])

    def test_cancel(self) -> None:
        """
        A cancelled request fails with L{CancelledError}, aborts its
        connection and leaves no timer.
        """
        d = self.wired.request()
        _, transport = self.wired.connections[0]
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(transport.disconnecting)
        self.assertNoTimerLeft()

    def test_sendCallsThenOnce(self) -> None:
        """
        L{Pool.send} calls its C{then} once with what L{Pool.request}'s
        L{Deferred} would fire with: the answer, a timeout's failure, or a
        L{CancelledError} when cancelled (its connection aborted), after
        which nothing more.
        """
        called: list = []
        pool = self.wired.pool
        exchange = pool.send(
            "b", b"GET / HTTP/1.1\r\n\r\n", False, 100, 5, 7, None, called.append
        )
        protocol, transport = self.wired.connections[0]
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
        [(head, body)] = called
        self.assertEqual((head.code, body), (200, b"x"))
        exchange.cancel()
        self.assertEqual(len(called), 1)
        self.assertFalse(transport.disconnecting)
        called.clear()
        exchange = pool.send(
            "b", b"GET / HTTP/1.1\r\n\r\n", False, 100, 5, 7, None, called.append
        )
        exchange.cancel()
        exchange.cancel()
        [failure] = called
        failure.trap(CancelledError)
        self.assertTrue(transport.disconnecting)
        self.wired.clock.advance(10)
        self.assertEqual(len(called), 1)
        called.clear()
        pool.send("b", b"GET / HTTP/1.1\r\n\r\n", False, 100, 5, 7, None, called.append)
        self.wired.clock.advance(5.1)
        [failure] = called
        failure.trap(TimeoutError)
        self.assertNoTimerLeft()

    def test_connectingRaises(self) -> None:
        """
        A request whose connecting raises at once (a peer name the TLS
        options refuse, say) raises to the caller, and nothing is left
        waiting for it: C{then} is never called, even past the deadline.
        """

        def refuse(key, factory):
            raise ValueError("no such name")

        self.wired.pool._connect = refuse
        self.assertRaises(ValueError, self.wired.request)
        called: list = []
        self.assertRaises(
            ValueError,
            self.wired.pool.send,
            "b",
            b"GET / HTTP/1.1\r\n\r\n",
            False,
            100,
            5,
            7,
            None,
            called.append,
        )
        self.assertEqual(self.wired.pool._waiting, set())
        self.wired.clock.advance(60)
        self.assertEqual(called, [])

    def test_thenRaisingKeepsOthersTimed(self) -> None:
        """
        A C{then} that raises on its timeout is logged, and the requests
        after it still fail at their own deadlines.
        """
        called: list = []
        bad: list = []

        def raising(result) -> None:
            bad.append(result)
            raise RuntimeError("a caller's error")

        pool = self.wired.pool
        pool.send("b", b"GET / HTTP/1.1\r\n\r\n", False, 100, 5, 7, None, raising)
        pool.send("b", b"GET / HTTP/1.1\r\n\r\n", False, 100, 5, 7, None, called.append)
        self.wired.clock.advance(1)
        pool.send("b", b"GET / HTTP/1.1\r\n\r\n", False, 100, 5, 7, None, called.append)
        self.wired.clock.advance(4.1)
        self.assertEqual((len(bad), len(called)), (1, 1))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.wired.clock.advance(1)
        self.assertEqual(len(called), 2)
        for failure in called:
            failure.trap(TimeoutError)
        self.assertEqual(pool._waiting, set())

    def test_oneTimer(self) -> None:
        """
        The requests in flight share one timer, which fails each at its
        own deadline: the header timeout from its sending, the body
        timeout from its head.
        """
        first = self.wired.request()
        self.wired.clock.advance(3)
        second = self.wired.request()
        third = self.wired.request()
        self.assertEqual(len(self.wired.clock.getDelayedCalls()), 1)
        protocol, _ = self.wired.connections[2]
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
        self.wired.clock.advance(2.1)
        self.failureResultOf(first, TimeoutError)
        self.assertNoResult(second)
        self.assertNoResult(third)
        self.wired.clock.advance(3)
        self.failureResultOf(second, TimeoutError)
        self.assertNoResult(third)
        self.wired.clock.advance(4)
        self.failureResultOf(third, TimeoutError)
        self.assertEqual(self.wired.clock.getDelayedCalls(), [])

    def test_requestMadeWhileExpiring(self) -> None:
        """
        A request made by the callback of one that timed out (the next
        pipelined request of a client, say) does not push back the
        deadline of another request due sooner.
        """
        first = self.wired.request()
        self.wired.clock.advance(3)
        other = self.wired.request()
        made = []

        def again(failure):
            made.append(
                self.wired.pool.request(
                    "b", b"GET / HTTP/1.1\r\n\r\n", False, 100, 60, 7
                )
            )

        first.addErrback(again)
        self.wired.clock.advance(2.1)
        self.assertEqual(len(made), 1)
        self.assertNoResult(other)
        self.wired.clock.advance(3)
        self.failureResultOf(other, TimeoutError)
        self.assertNoResult(made[0])

    def test_soonerRequestMovesTheTimer(self) -> None:
        """
        A request with a shorter deadline than the one the timer waits for
        (a forward lengthened by a long poll's wait, say) moves the timer
        sooner.
        """
        long = self.wired.pool.request(
            "b", b"GET / HTTP/1.1\r\n\r\n", False, 100, 60, 7
        )
        short = self.wired.request()
        self.wired.clock.advance(5.1)
        self.failureResultOf(short, TimeoutError)
        self.assertNoResult(long)

    def test_closeKeepsDeadlines(self) -> None:
        """
        Closing the pool leaves a request that is still connecting its
        deadline.
        """
        self.wired.hold = True
        d = self.wired.request()
        self.wired.pool.close()
        self.wired.clock.advance(5.1)
        self.failureResultOf(d, TimeoutError)
        self.assertTrue(self.wired.pending[0][0].called)

    def test_lost(self) -> None:
        """
        A connection lost before the whole answer fails the request with
        a connection error; a lost idle connection is not used again.
        """
        d = self.wired.request()
        protocol, _ = self.wired.connections[0]
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.successResultOf(d)
        protocol.connectionLost(Failure(ConnectionDone()))
        d = self.wired.request()
        self.assertEqual(len(self.wired.connections), 2)
        self.wired.connections[1][0].connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, ConnectionLost, ConnectionDone)

    def reusedAndLost(self, retry: bool, heard: bytes = b"") -> Deferred:
        """
        Answer a first request, send a second on the same (pooled)
        connection, then lose that connection after C{heard} of an answer.
        """
        self.answer(
            self.wired.request(), b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        )
        d = self.wired.request(b"AGAIN", retry=retry)
        protocol, _ = self.wired.connections[0]
        if heard:
            protocol.dataReceived(heard)
        protocol.connectionLost(Failure(ConnectionDone()))
        return d

    def test_retriedOnceOnNewConnection(self) -> None:
        """
        A request marked retry, whose pooled connection is lost before any
        byte of the answer, is sent again, made anew, on a new connection;
        if that one is lost too, it fails.
        """
        d = self.reusedAndLost(retry=True)
        self.assertNoResult(d)
        self.assertEqual(len(self.wired.connections), 2)
        protocol, transport = self.wired.connections[1]
        self.assertEqual(transport.value(), b"AGAIN, SIGNED ANEW")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, ConnectionLost, ConnectionDone)
        self.assertEqual(len(self.wired.connections), 2)
        self.assertNoTimerLeft()

    def test_retryAnswered(self) -> None:
        """
        The request sent again is answered on its new connection, within
        the timeout it had from the start.
        """
        d = self.reusedAndLost(retry=True)
        self.assertEqual(
            self.answer(d, b"HTTP/1.1 204 No Content\r\n\r\n")[0].code, 204
        )
        self.assertNoTimerLeft()

    def test_noRetryUnmarked(self) -> None:
        """
        A request not marked retry fails when its pooled connection is
        lost, and is not sent again.
        """
        d = self.reusedAndLost(retry=False)
        self.failureResultOf(d, ConnectionLost, ConnectionDone)
        self.assertEqual(len(self.wired.connections), 1)

    def test_noRetryOnceHeard(self) -> None:
        """
        A connection lost after part of the answer arrived fails the
        request, even one marked retry.
        """
        d = self.reusedAndLost(retry=True, heard=b"HTTP/1.1 200 OK\r\n")
        self.failureResultOf(d, ConnectionLost, ConnectionDone)
        self.assertEqual(len(self.wired.connections), 1)

    def test_noRetryOnFreshConnection(self) -> None:
        """
        A request's first connection, new, is not retried when lost.
        """
        d = self.wired.request(retry=True)
        self.wired.connections[0][0].connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, ConnectionLost, ConnectionDone)
        self.assertEqual(len(self.wired.connections), 1)

    def test_cancelWhileResending(self) -> None:
        """
        A request cancelled while its new connection is being made stops
        the connecting.
        """
        self.answer(
            self.wired.request(), b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        )
        d = self.wired.request(b"AGAIN", retry=True)
        self.wired.hold = True
        self.wired.connections[0][0].connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.wired.pending), 1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        # The pending connection was cancelled (its failure is handled).
        self.assertTrue(self.wired.pending[0][0].called)
        self.assertNoTimerLeft()

    def test_idleTooLong(self) -> None:
        """
        A connection idle longer than maxIdleTime is closed rather than
        used.
        """
        d = self.wired.request()
        _, transport = self.wired.connections[0]
        self.answer(d, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.wired.clock.advance(Pool.maxIdleTime + 1)
        self.wired.request()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.wired.connections), 2)

    def test_manyAtOnceKeptIdle(self) -> None:
        """
        Every connection of a burst of requests to a peer is kept for the
        next (up to 256 by default): the same number of requests again
        opens none.
        """
        count = 40
        first = [self.wired.request() for _ in range(count)]
        for index, d in enumerate(first):
            self.answer(d, b"HTTP/1.1 204 No Content\r\n\r\n", index)
        second = [self.wired.request() for _ in range(count)]
        self.assertEqual(len(self.wired.connections), count)
        # The most recently released taken first.
        for index, d in enumerate(second):
            self.answer(d, b"HTTP/1.1 204 No Content\r\n\r\n", count - 1 - index)
        self.assertFalse(
            any(transport.disconnecting for _, transport in self.wired.connections)
        )

    def test_maxIdle(self) -> None:
        """
        Past C{maxIdle} idle connections to a peer, a connection released
        is closed.
        """
        self.wired.pool = Pool(self.wired.clock, self.wired.connect, maxIdle=3)
        requests = [self.wired.request() for _ in range(5)]
        for index, d in enumerate(requests):
            self.answer(d, b"HTTP/1.1 204 No Content\r\n\r\n", index)
        closed = [t.disconnecting for _, t in self.wired.connections]
        self.assertEqual(closed, [False, False, False, True, True])
        for _ in range(3):
            self.wired.request()
        self.assertEqual(len(self.wired.connections), 5)

    def test_oldIdleClosedOnRelease(self) -> None:
        """
        Connections a burst left idle, which the usual load no longer
        reaches (the most recently used are taken first), are closed once
        idle longer than maxIdleTime, when another connection to the peer
        is released.
        """
        requests = [self.wired.request() for _ in range(3)]
        for index, d in enumerate(requests):
            self.answer(d, b"HTTP/1.1 204 No Content\r\n\r\n", index)
        transports = [t for _, t in self.wired.connections]
        for _ in range(2):
            self.wired.clock.advance(Pool.maxIdleTime * 0.6)
            # Taken from the end: the last released, the third.
            self.answer(self.wired.request(), b"HTTP/1.1 204 No Content\r\n\r\n", 2)
        self.assertEqual(len(self.wired.connections), 3)
        self.assertEqual([t.disconnecting for t in transports], [True, True, False])

    def test_unasked(self) -> None:
        """
        Bytes from a peer on an idle connection drop the connection.
        """
        d = self.wired.request()
        protocol, transport = self.wired.connections[0]
        self.answer(d, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\n")
        self.assertTrue(transport.disconnecting)
        # The dropped connection is not handed to the next request, even
        # before the transport reports it lost.
        self.wired.request()
        self.assertEqual(len(self.wired.connections), 2)


#: An answer that grants pipelining (the first on a connection, from a
#: node that serves pipelined requests).
GRANTED = b"HTTP/1.1 200 OK\r\nMarconi-Pipelining: 1\r\nX-Id: 1\r\nContent-Length: 2\r\n\r\n{}"


def _get(n: int) -> bytes:
    return b"GET /%d HTTP/1.1\r\n\r\n" % n


def _offered(data: bytes) -> bytes:
    """
    A request as sent first on a connection: offering pipelining.
    """
    at = data.find(b"\r\n") + 2
    return data[:at] + b"Marconi-Pipelining: 1\r\n" + data[at:]


def _again(n: int) -> bytes:
    """
    L{_get} sent again (made anew, see L{_Wired.request}) on a new
    connection, whose first request offers pipelining.
    """
    return b"GET /%d HTTP/1.1\r\nMarconi-Pipelining: 1\r\n\r\n, SIGNED ANEW" % n


def _answer(n: int) -> bytes:
    body = b'{"n": %d}' % n
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


class PipeliningTests(SynchronousTestCase):
    """
    Requests that may share a connection (C{pipelined}) are sent on one
    with others in flight once the peer granted it (see
    L{marconi.api.pipeline}); the answers are read in order.
    """

    def setUp(self) -> None:
        self.wired = _Wired()

    def granted(self) -> tuple:
        """
        A connection whose first answer granted pipelining.
        """
        d = self.wired.request(b"GET /1 HTTP/1.1\r\nHost: b\r\n\r\n", pipelined=True)
        protocol, transport = self.wired.connections[0]
        self.assertEqual(
            transport.value(),
            b"GET /1 HTTP/1.1\r\nMarconi-Pipelining: 1\r\nHost: b\r\n\r\n",
        )
        protocol.dataReceived(GRANTED)
        head, body = self.successResultOf(d)
        # The grant goes no further than the connection.
        self.assertEqual(
            head.raw, b"HTTP/1.1 200 OK\r\nX-Id: 1\r\nContent-Length: 2\r\n\r\n"
        )
        self.assertEqual(
            list(head.headers.getAllRawHeaders()),
            [(b"X-Id", [b"1"]), (b"Content-Length", [b"2"])],
        )
        self.assertEqual(body, b"{}")
        transport.clear()
        return protocol, transport

    def test_pipelinedInOrder(self) -> None:
        """
        Once granted, requests go out on the one connection without
        waiting for answers, and each gets its own answer, in order,
        however the answers' bytes arrive.
        """
        protocol, transport = self.granted()
        sent = [
            self.wired.request(b"R%d" % n, pipelined=True, retry=True) for n in range(5)
        ]
        self.assertEqual(len(self.wired.connections), 1)
        self.assertEqual(transport.value(), b"R0R1R2R3R4")
        answers = b"".join(_answer(n) for n in range(5))
        protocol.dataReceived(answers[:30])
        protocol.dataReceived(answers[30:100])
        protocol.dataReceived(answers[100:])
        self.assertEqual(
            [self.successResultOf(d)[1] for d in sent],
            [b'{"n": %d}' % n for n in range(5)],
        )
        # Back in the pool, answered whole: taken by the next request.
        self.wired.request(b"NEXT", pipelined=True)
        self.assertEqual(transport.value()[-4:], b"NEXT")

    def test_notGranted(self) -> None:
        """
        A peer that does not grant pipelining (a node of an earlier
        version) gets one request at a time on a connection.
        """
        d = self.wired.request(pipelined=True)
        protocol, _ = self.wired.connections[0]
        protocol.dataReceived(_answer(0))
        self.successResultOf(d)
        for _ in range(3):
            self.wired.request(pipelined=True)
        self.assertEqual(len(self.wired.connections), 3)

    def test_grantOnlyFirst(self) -> None:
        """
        Only the first answer on a connection grants pipelining; the
        header later is an answer's own.
        """
        d = self.wired.request(pipelined=True)
        protocol, _ = self.wired.connections[0]
        protocol.dataReceived(_answer(0))
        self.successResultOf(d)
        d = self.wired.request(pipelined=True)
        protocol.dataReceived(GRANTED)
        head, _ = self.successResultOf(d)
        self.assertEqual(head.headers.getRawHeaders(b"marconi-pipelining"), [b"1"])
        self.wired.request(pipelined=True)
        self.wired.request(pipelined=True)
        self.assertEqual(len(self.wired.connections), 2)

    def test_notPipelinedAlone(self) -> None:
        """
        A request that may not share its connection (one that waits for
        messages) is never sent behind others, nor others behind it.
        """
        protocol, transport = self.granted()
        waiting = self.wired.request(b"WAIT")
        self.assertEqual(transport.value(), b"WAIT")
        self.wired.request(_get(1), pipelined=True)
        self.assertEqual(len(self.wired.connections), 2)
        self.assertEqual(transport.value(), b"WAIT")
        protocol.dataReceived(_answer(1))
        self.assertEqual(self.successResultOf(waiting)[1], b'{"n": 1}')
        # The new connection to a peer that granted takes the next.
        _, second = self.wired.connections[1]
        self.wired.request(b"A", pipelined=True)
        self.assertEqual(second.value(), _offered(_get(1)) + b"A")
        # A waiting request is not sent behind them, but alone on the
        # connection that is free again.
        self.wired.request(b"WAIT2")
        self.assertEqual(len(self.wired.connections), 2)
        self.assertEqual(transport.value(), b"WAITWAIT2")

    def test_dialingTakesPipelined(self) -> None:
        """
        While a connection is being made to a peer that granted
        pipelining, the requests that may share it wait for it (up to the
        depth), and go out on it in order, the first offering pipelining.
        """
        self.wired.pool.depth = 3
        self.granted()
        busy = [self.wired.request(_get(n), pipelined=True) for n in range(3)]
        self.wired.hold = True
        waiting = [self.wired.request(_get(n), pipelined=True) for n in range(3, 7)]
        # Three wait for the second connection, the fourth for a third.
        self.assertEqual(len(self.wired.pending), 2)
        d, protocol, transport = self.wired.pending[0]
        protocol.makeConnection(transport)
        d.callback(protocol)
        self.assertEqual(transport.value(), _offered(_get(3)) + _get(4) + _get(5))
        protocol.dataReceived(b"".join(_answer(n) for n in (3, 4, 5)))
        self.assertEqual(
            [self.successResultOf(d)[1] for d in waiting[:3]],
            [b'{"n": %d}' % n for n in (3, 4, 5)],
        )
        self.assertNoResult(waiting[3])
        self.assertNoResult(busy[0])

    def test_dialingGrantWithdrawn(self) -> None:
        """
        A new connection whose first answer does not grant pipelining
        (the peer now runs an earlier version) gets its requests answered
        one after another, and the peer's next connections are not
        pipelined on.
        """
        self.granted()
        self.wired.request(b"WAIT")
        second = [self.wired.request(_get(n), pipelined=True) for n in (1, 2)]
        protocol, transport = self.wired.connections[1]
        self.assertEqual(transport.value(), _offered(_get(1)) + _get(2))
        protocol.dataReceived(_answer(1))
        self.assertEqual(self.successResultOf(second[0])[1], b'{"n": 1}')
        self.assertNoResult(second[1])
        self.wired.request(_get(3), pipelined=True)
        self.wired.request(_get(4), pipelined=True)
        self.assertEqual(len(self.wired.connections), 4)
        protocol.dataReceived(_answer(2))
        self.assertEqual(self.successResultOf(second[1])[1], b'{"n": 2}')

    def dialingTwo(self) -> tuple:
        """
        Two pipelined requests waiting for a new connection to a peer that
        granted pipelining (its other connection busy with a request that
        waits).
        """
        self.granted()
        self.wired.request(b"WAIT")
        self.wired.hold = True
        waiting = [self.wired.request(_get(n), pipelined=True) for n in (1, 2)]
        self.assertEqual(len(self.wired.pending), 1)
        return waiting, self.wired.pending[0][0]

    def test_cancelWhileDialing(self) -> None:
        """
        Giving up on one of the requests waiting for a connection leaves
        the connecting to the others; giving up on the last stops it.
        """
        waiting, connecting = self.dialingTwo()
        waiting[0].cancel()
        self.failureResultOf(waiting[0], CancelledError)
        self.assertFalse(connecting.called)
        waiting[1].cancel()
        self.failureResultOf(waiting[1], CancelledError)
        self.assertTrue(connecting.called)
        # Not taken by the next request.
        self.wired.request(_get(3), pipelined=True)
        self.assertEqual(len(self.wired.pending), 2)

    def test_connectingFailsAll(self) -> None:
        """
        A connection that cannot be made fails every request waiting for
        it.
        """
        waiting, connecting = self.dialingTwo()
        connecting.errback(ConnectionRefusedError())
        for d in waiting:
            self.failureResultOf(d, ConnectionRefusedError)
        self.wired.request(_get(3), pipelined=True)
        self.assertEqual(len(self.wired.pending), 2)

    def test_lostTogetherSentAgainTogether(self) -> None:
        """
        Requests sent again after their connection was lost go out
        together on one new connection.
        """
        protocol, _ = self.granted()
        sent = [
            self.wired.request(_get(n), pipelined=True, retry=True) for n in range(3)
        ]
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.wired.connections), 2)
        protocol, transport = self.wired.connections[1]
        self.assertEqual(
            transport.value(),
            _again(0) + b"GET /1 HTTP/1.1\r\n\r\n, SIGNED ANEW"
            b"GET /2 HTTP/1.1\r\n\r\n, SIGNED ANEW",
        )
        protocol.dataReceived(b"".join(_answer(n) for n in range(3)))
        self.assertEqual(
            [self.successResultOf(d)[1] for d in sent],
            [b'{"n": %d}' % n for n in range(3)],
        )

    def test_grantOnlyWhenOffered(self) -> None:
        """
        The first answer on a connection whose first request did not offer
        pipelining (one that waits) says nothing of the peer: a new
        connection to it is still taken as pipelining.
        """
        self.granted()
        self.wired.request(b"WAIT")
        protocol, transport = self.wired.connections[0]
        other = self.wired.request(b"WAIT2")
        protocol2, _ = self.wired.connections[1]
        protocol2.dataReceived(_answer(2))
        self.successResultOf(other)
        self.wired.hold = True
        # The third takes that idle connection, alone; the fourth and
        # fifth wait together for a new one.
        for n in (3, 4, 5):
            self.wired.request(_get(n), pipelined=True)
        self.assertEqual(len(self.wired.pending), 1)

    def test_depthOneOffersNothing(self) -> None:
        """
        A pool that sends one request at a time does not offer pipelining.
        """
        self.wired.pool.depth = 1
        self.wired.request(_get(0), pipelined=True)
        self.assertEqual(self.wired.connections[0][1].value(), _get(0))

    def test_depth(self) -> None:
        """
        At most C{depth} requests are in flight on one connection; past
        it, another connection takes the next.
        """
        self.wired.pool.depth = 3
        protocol, transport = self.granted()
        for n in range(3):
            self.wired.request(b"R%d" % n, pipelined=True)
        self.assertEqual(len(self.wired.connections), 1)
        self.wired.request(b"R3", pipelined=True)
        self.assertEqual(len(self.wired.connections), 2)
        self.assertEqual(transport.value(), b"R0R1R2")

    def inFlight(self) -> tuple:
        """
        Three pipelined requests in flight on a granted connection: the
        first and last may be sent twice, the second may not.
        """
        protocol, transport = self.granted()
        sent = [
            self.wired.request(_get(0), pipelined=True, retry=True),
            self.wired.request(_get(1), pipelined=True),
            self.wired.request(_get(2), pipelined=True, retry=True),
        ]
        return protocol, sent

    def test_lostBeforeAnswers(self) -> None:
        """
        A connection lost with requests in flight and no byte of their
        answers: those that may be sent twice are sent again, together on
        a new connection, the others fail.
        """
        protocol, sent = self.inFlight()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(sent[1], ConnectionLost, ConnectionDone)
        self.assertNoResult(sent[0])
        self.assertNoResult(sent[2])
        self.assertEqual(
            [t.value() for _, t in self.wired.connections[1:]],
            [_again(0) + _get(2) + b", SIGNED ANEW"],
        )
        self.wired.connections[1][0].dataReceived(_answer(0) + _answer(2))
        self.assertEqual(self.successResultOf(sent[0])[1], b'{"n": 0}')
        self.assertEqual(self.successResultOf(sent[2])[1], b'{"n": 2}')

    def test_lostDuringAnAnswer(self) -> None:
        """
        The request whose answer had begun fails; those after it that may
        be sent twice are sent again.
        """
        protocol, sent = self.inFlight()
        protocol.dataReceived(_answer(0) + b"HTTP/1.1 200")
        self.assertEqual(self.successResultOf(sent[0])[1], b'{"n": 0}')
        protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(sent[1], ConnectionLost, ConnectionDone)
        self.assertNoResult(sent[2])
        self.assertEqual(len(self.wired.connections), 2)

    def test_closeAnswer(self) -> None:
        """
        An answer that closes the connection ends it for the requests
        behind it: sent again when they may be, failed otherwise.
        """
        protocol, sent = self.inFlight()
        protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(self.successResultOf(sent[0])[0].code, 200)
        self.assertTrue(self.wired.connections[0][1].disconnecting)
        # Not taken by the next request, even before it is reported lost.
        self.wired.request(_get(3), pipelined=True)
        self.assertEqual(len(self.wired.connections), 2)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(sent[1], Abandoned)
        # Sent again behind the next request, on its new connection.
        self.assertEqual(len(self.wired.connections), 2)
        self.assertEqual(
            self.wired.connections[1][1].value(),
            _offered(_get(3)) + _get(2) + b", SIGNED ANEW",
        )

    def test_cancelOne(self) -> None:
        """
        Giving up on one of the requests in flight (its client went away)
        leaves the connection to the others: its answer is read and
        dropped.
        """
        protocol, sent = self.inFlight()
        sent[1].cancel()
        self.failureResultOf(sent[1], CancelledError)
        _, transport = self.wired.connections[0]
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"".join(_answer(n) for n in range(3)))
        self.assertEqual(self.successResultOf(sent[0])[1], b'{"n": 0}')
        self.assertEqual(self.successResultOf(sent[2])[1], b'{"n": 2}')
        self.assertFalse(transport.disconnecting)
        # Back in the pool.
        self.wired.request(b"NEXT", pipelined=True)
        self.assertEqual(len(self.wired.connections), 1)

    def test_cancelAlone(self) -> None:
        """
        Giving up on the only request on a connection closes it.
        """
        protocol, transport = self.granted()
        d = self.wired.request(_get(0), pipelined=True)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(transport.disconnecting)

    def test_timeout(self) -> None:
        """
        Requests in flight on a connection time out on their own
        deadlines; the connection is closed.
        """
        protocol, sent = self.inFlight()
        self.wired.clock.advance(5)
        for d in sent:
            self.failureResultOf(d, TimeoutError)
        self.assertTrue(self.wired.connections[0][1].disconnecting)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(len(self.wired.connections), 1)

    def test_timeoutOfOneLeavesOthers(self) -> None:
        """
        When one request times out while others wait on its connection,
        it fails alone: the connection takes no new request, its answer
        is read and dropped, and the others get theirs.
        """
        protocol, transport = self.granted()
        first = self.wired.request(_get(0), pipelined=True)
        self.wired.clock.advance(3)
        later = [
            self.wired.request(_get(1), pipelined=True),
            self.wired.request(_get(2), pipelined=True, retry=True),
        ]
        self.wired.clock.advance(2)
        self.failureResultOf(first, TimeoutError)
        self.assertFalse(transport.disconnecting)
        # Not taken by the next request while it drains.
        self.wired.request(_get(3), pipelined=True)
        self.assertEqual(len(self.wired.connections), 2)
        protocol.dataReceived(b"".join(_answer(n) for n in range(3)))
        self.assertEqual(
            [self.successResultOf(d)[1] for d in later],
            [b'{"n": 1}', b'{"n": 2}'],
        )
        self.assertFalse(transport.disconnecting)
        # Idle again, it is used again.
        self.wired.request(_get(4), pipelined=True)
        self.assertEqual(len(self.wired.connections), 2)

    def test_allGivenUpCloses(self) -> None:
        """
        Once no request on a connection is waited for any more (each timed
        out, or its caller went away), the connection is closed, and a
        request given up whose answer never comes does not keep it busy.
        """
        protocol, transport = self.granted()
        first = self.wired.request(_get(0), pipelined=True)
        self.wired.clock.advance(3)
        second = self.wired.request(_get(1), pipelined=True)
        self.wired.clock.advance(2)
        self.failureResultOf(first, TimeoutError)
        self.assertFalse(transport.disconnecting)
        self.wired.clock.advance(3)
        self.failureResultOf(second, TimeoutError)
        self.assertTrue(transport.disconnecting)
        # A caller gone, then the answers of the others, but never its
        # own: the connection is closed at its deadline.
        self.setUp()
        protocol, transport = self.granted()
        sent = [self.wired.request(_get(n), pipelined=True) for n in range(2)]
        sent[1].cancel()
        self.failureResultOf(sent[1], CancelledError)
        protocol.dataReceived(_answer(0))
        self.successResultOf(sent[0])
        self.assertFalse(transport.disconnecting)
        self.wired.clock.advance(5)
        self.assertTrue(transport.disconnecting)
        self.assertNoTimerLeft()

    def assertNoTimerLeft(self) -> None:
        self.wired.clock.advance(60)
        self.assertEqual(self.wired.clock.getDelayedCalls(), [])

    def test_badAnswerAbandonsOthers(self) -> None:
        """
        An answer that cannot be read fails its request, and the others
        on the connection are sent again or abandoned once it is closed,
        at once rather than at their deadlines.
        """
        protocol, sent = self.inFlight()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
        self.failureResultOf(sent[0], BadAnswer)
        self.assertTrue(self.wired.connections[0][1].disconnecting)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(sent[1], Abandoned)
        self.assertEqual(self.wired.connections[1][1].value(), _again(2))

    def test_nothingReadAfterClose(self) -> None:
        """
        Nothing is read after an answer that closes the connection, and
        the connection is never used again.
        """
        protocol, sent = self.inFlight()
        protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            + _answer(1)
            + _answer(2)
        )
        self.successResultOf(sent[0])
        self.assertNoResult(sent[1])
        self.wired.request(_get(3))
        self.assertEqual(len(self.wired.connections), 2)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(sent[1], Abandoned)

    def test_unaskedAfterAnswers(self) -> None:
        """
        Bytes beyond the answers to the requests in flight drop the
        connection.
        """
        protocol, transport = self.granted()
        d = self.wired.request(b"R0", pipelined=True)
        protocol.dataReceived(_answer(0) + b"HTTP/1.1 200 OK\r\n")
        self.successResultOf(d)
        self.assertTrue(transport.disconnecting)


class RetrySafeTests(SynchronousTestCase):
    def test_methods(self) -> None:
        """
        GET, HEAD, PUT and DELETE may be sent twice; POST and PATCH never.
        """
        for method in (b"GET", b"HEAD", b"PUT", b"DELETE"):
            self.assertTrue(retrySafe(method, target(b"/v2/queues/q")), method)
        for method in (b"POST", b"PATCH", b"OPTIONS"):
            self.assertFalse(retrySafe(method, target(b"/v2/queues/q")), method)

    def test_pop(self) -> None:
        """
        A DELETE that pops messages is not idempotent, however its query
        is spelled; one by ids is.
        """
        for uri in (
            b"/v2/queues/q/messages?pop=2",
            b"/v2/queues/q/messages?x=1&pop=2",
            b"/v2/queues/q/messages?%70op=2",
        ):
            self.assertFalse(retrySafe(b"DELETE", target(uri)), uri)
        self.assertTrue(retrySafe(b"DELETE", target(b"/v2/queues/q/messages?ids=a")))


class RequestBytesTests(SynchronousTestCase):
    def test_request(self) -> None:
        """
        The request is written whole, with a Host and a Content-Length; CR
        and LF in a header become spaces.
        """
        data = requestBytes(
            b"POST",
            b"/v2/queues/q/messages",
            b"127.0.0.1:80",
            [(b"X-A", b"1\r\nX-Marconi-Node: a"), (b"X-B", b"2")],
            b"{}",
        )
        self.assertEqual(
            data,
            b"POST /v2/queues/q/messages HTTP/1.1\r\nHost: 127.0.0.1:80\r\n"
            b"X-A: 1  X-Marconi-Node: a\r\nX-B: 2\r\nContent-Length: 2\r\n\r\n{}",
        )

    def test_loneCarriageReturnOrLineFeed(self) -> None:
        """
        A CR or an LF alone, in a name or a value, becomes a space too.
        """
        data = requestBytes(
            b"GET",
            b"/v2/ping",
            b"h",
            [(b"X-A", b"1\rX-B: 2"), (b"X-C\nX-D", b"3"), (b"X-E", b"4")],
            b"",
        )
        self.assertEqual(
            data,
            b"GET /v2/ping HTTP/1.1\r\nHost: h\r\n"
            b"X-A: 1 X-B: 2\r\nX-C X-D: 3\r\nX-E: 4\r\n\r\n",
        )

    def test_headerLines(self) -> None:
        """
        Header lines given as bytes (already checked) are sent as they are.
        """
        data = requestBytes(b"POST", b"/v2/x", b"h", b"X-A: 1\r\nx-b: 2\r\n", b"{}")
        self.assertEqual(
            data,
            b"POST /v2/x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-b: 2\r\n"
            b"Content-Length: 2\r\n\r\n{}",
        )

    def test_noBody(self) -> None:
        """
        A GET without a body carries no Content-Length.
        """
        data = requestBytes(b"GET", b"/v2/ping", b"h", [], b"")
        self.assertEqual(data, b"GET /v2/ping HTTP/1.1\r\nHost: h\r\n\r\n")


class _Echo(resource.Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list = []

    def render(self, request):
        self.seen.append(
            (
                request.method,
                request.uri,
                request.requestHeaders.getRawHeaders(b"x-thing"),
                request.content.read(),
                request.transport.getPeer().port,
            )
        )
        request.setResponseCode(202)
        request.setHeader(b"x-answer", b"yes")
        if request.args.get(b"chunked"):
            request.write(b"chunked ")
            request.write(b"answer")
            request.finish()
            return server.NOT_DONE_YET
        return b"echo"


class _ClosesReused(Protocol):
    """
    A peer that answers the first request of each connection and keeps it
    open, but closes it, unanswered, when a second request arrives on it:
    as if its idle timeout fired just as the request came.
    """

    def connectionMade(self) -> None:
        self.factory.connections += 1
        self.buffer = b""
        self.answered = False

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            line = head.split(b"\r\n")[0]
            if self.answered:
                self.factory.dropped.append(line)
                self.transport.loseConnection()
                return
            self.answered = True
            self.factory.served.append(line)
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


class PeerClientForwardTests(TestCase):
    def setUp(self) -> None:
        config = ClusterConfig(
            nodeName="a",
            nodes=(Peer("a", "http://127.0.0.1:1"),),
            secret=b"s" * 32,
            forwardTimeout=2,
            bodyTimeout=2,
            maxResponseBody=1000,
        )
        self.client = PeerClient(config, reactor)
        self.addCleanup(self.client.close)
        self.addCleanup(deferLater, reactor, 0.05, lambda: None)

    def serve(self, site) -> Peer:
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return Peer("b", f"http://127.0.0.1:{port.getHost().port}")

    def test_idleConnections(self) -> None:
        """
        The pool of forwarded requests keeps as many idle connections per
        peer as the cluster's C{idle_connections} says.
        """
        self.assertEqual(self.client.wire.maxIdle, 256)
        self.assertEqual(self.client.wire.depth, 128)
        client = PeerClient(_config(idleConnections=7, pipelineDepth=3), reactor)
        self.addCleanup(client.close)
        self.assertEqual((client.wire.maxIdle, client.wire.depth), (7, 3))

    async def test_roundTrip(self) -> None:
        """
        Method, target, headers and body reach the peer; its status,
        headers and body (by length or chunked) come back, over one
        connection kept between requests.
        """
        echo = _Echo()
        peer = self.serve(server.Site(echo))
        answer = await self.client.forward(
            peer, b"POST", target(b"/v2/x?a=1"), [(b"X-Thing", b"t")], b"body"
        )
        self.assertEqual((answer.code, answer.body), (202, b"echo"))
        self.assertEqual(answer.headers.getRawHeaders(b"x-answer"), [b"yes"])
        chunked = await self.client.forward(
            peer, b"GET", target(b"/v2/x?chunked=1"), [], b""
        )
        self.assertEqual(chunked.body, b"chunked answer")
        self.assertEqual(echo.seen[0][:4], (b"POST", b"/v2/x?a=1", [b"t"], b"body"))
        self.assertEqual(echo.seen[0][4], echo.seen[1][4])

    async def test_noDelay(self) -> None:
        """
        A connection to a peer sends at once what is written on it
        (C{TCP_NODELAY}): a request pipelined behind one not yet
        acknowledged would otherwise wait.
        """
        peer = self.serve(server.Site(_Echo()))
        await self.client.forward(peer, b"GET", target(b"/v2/x"), [], b"")
        [connection] = self.client.wire._idle[peer.url]
        handle = connection.transport.getHandle()
        self.assertTrue(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    def closesReused(self) -> tuple:
        factory = Factory.forProtocol(_ClosesReused)
        factory.connections = 0
        factory.served = []
        factory.dropped = []
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return Peer("b", f"http://127.0.0.1:{port.getHost().port}"), factory

    async def test_idempotentRetried(self) -> None:
        """
        A GET or DELETE whose pooled connection the peer closed unanswered
        is sent again on a new connection and answered.
        """
        peer, factory = self.closesReused()
        for method in (b"GET", b"DELETE", b"GET"):
            answer = await self.client.forward(
                peer, method, target(b"/v2/queues/q"), [], b""
            )
            self.assertEqual((answer.code, answer.body), (200, b"ok"))
        self.assertEqual(
            factory.served,
            [
                b"GET /v2/queues/q HTTP/1.1",
                b"DELETE /v2/queues/q HTTP/1.1",
                b"GET /v2/queues/q HTTP/1.1",
            ],
        )
        self.assertEqual(len(factory.dropped), 2)
        self.assertEqual(factory.connections, 3)

    async def test_postNotRetried(self) -> None:
        """
        A POST whose pooled connection the peer closed unanswered fails
        (the peer lost) and is not sent again; nor is a DELETE that pops.
        """
        peer, factory = self.closesReused()
        for uri, method in (
            (b"/v2/queues/q/messages", b"POST"),
            (b"/v2/queues/q/messages?pop=1", b"DELETE"),
        ):
            await self.client.forward(peer, b"GET", target(b"/v2/queues/q"), [], b"")
            with self.assertRaises(NodeUnavailable) as caught:
                await self.client.forward(peer, method, target(uri), [], b"[]")
            self.assertEqual(caught.exception.kind, LOST)
        self.assertEqual(
            factory.dropped,
            [
                b"POST /v2/queues/q/messages HTTP/1.1",
                b"DELETE /v2/queues/q/messages?pop=1 HTTP/1.1",
            ],
        )
        self.assertEqual(factory.connections, 2)

    async def test_refused(self) -> None:
        """
        A peer nobody listens for is unavailable, refused.
        """
        peer = Peer("b", f"http://127.0.0.1:{freePort()}")
        with self.assertRaises(NodeUnavailable) as caught:
            await self.client.forward(peer, b"GET", target(b"/v2/x"), [], b"")
        self.assertEqual(caught.exception.kind, REFUSED)

    async def test_tooLarge(self) -> None:
        """
        An answer over maxResponseBody fails the request, not the peer.
        """

        class Big(resource.Resource):
            isLeaf = True

            def render_GET(self, request):
                return b"x" * 5000

        peer = self.serve(server.Site(Big()))
        with self.assertRaises(NodeUnavailable) as caught:
            await self.client.forward(peer, b"GET", target(b"/v2/x"), [], b"")
        self.assertEqual(caught.exception.kind, REQUEST)
        self.assertIn("over 1000 bytes", caught.exception.description)


class ForwardRawTests(SynchronousTestCase):
    """
    L{ClusterRouter.forwardRaw}, the entry point of a front end that routes
    before the app.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.peer = _Peer(self.reactor)
        self.router = ClusterRouter(_config(), self.reactor)
        self.queue = _queueOf(self.router, "b")

    def forwardRaw(self, router: ClusterRouter, *args) -> Deferred:
        """
        C{router.forwardRaw(*args)}.
        """
        return router.forwardRaw(*args)

    def test_failureReported(self) -> None:
        """
        An owner that does not answer in time fails the request with
        L{NodeUnavailable}; the failure detector and the monitor hear of
        it once.
        """
        reported: list = []
        self.router.membership.reportFailure = lambda *a: reported.append(a[0])
        self.router.monitor.forwardingError = lambda *a: reported.append(a[0])
        uri = f"/v2/queues/{self.queue}/messages".encode()
        d = self.forwardRaw(self.router, b"POST", uri, Headers(), b"{}", "p", "b")
        self.peer.connect()
        self.reactor.advance(5.1)
        self.assertEqual(self.failureResultOf(d, NodeUnavailable).value.kind, LOST)
        self.assertEqual(reported, ["b", "b"])

    def test_pipelinedFailuresCountOnce(self) -> None:
        """
        Requests pipelined on one connection that fail together because
        this node closed it (an answer it could not read closes it; a
        client that went away does not) are no failure of the peer: it is
        not marked down, however many fail.  The requests whose client
        went away leave the others answered.
        """
        uri = f"/v2/queues/{self.queue}/messages".encode()

        def post() -> Deferred:
            return self.forwardRaw(
                self.router, b"POST", uri, Headers(), b"{}", "p", "b"
            )

        first = post()
        protocol, transport = self.peer.connect()
        self.assertIn(b"\r\nMarconi-Pipelining: 1\r\n", transport.value())
        protocol.dataReceived(
            b"HTTP/1.1 201 Created\r\nMarconi-Pipelining: 1\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(self.successResultOf(first).code, 201)
        posts = [post() for _ in range(6)]
        self.assertEqual(len(self.reactor.tcpClients), 1)
        # Two clients go away: the others are answered.
        for gone in (posts[0], posts[3]):
            gone.cancel()
            self.failureResultOf(gone, CancelledError)
        protocol.dataReceived(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n" * 3)
        self.assertEqual(self.successResultOf(posts[1]).code, 201)
        self.assertEqual(self.successResultOf(posts[2]).code, 201)
        self.assertFalse(transport.disconnecting)
        # An answer that cannot be read: its request and those behind it
        # fail.
        protocol.dataReceived(b"HTTP/1.1 201 Created\r\nContent-Length: x\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionLost()))
        for d in posts[4:]:
            self.assertEqual(
                self.failureResultOf(d, NodeUnavailable).value.kind, REQUEST
            )
        self.assertEqual(self.router.membership.states["b"].state, "up")

    def test_failsAtOnce(self) -> None:
        """
        A request that cannot be signed (a project that is not ASCII) fails
        at once, nothing sent, and is no failure of the owner.
        """
        reported: list = []
        self.router.membership.reportFailure = lambda *a: reported.append(a)
        uri = f"/v2/queues/{self.queue}/messages".encode()
        d = self.forwardRaw(self.router, b"POST", uri, Headers(), b"{}", "\xe9", "b")
        self.failureResultOf(d, UnicodeEncodeError)
        self.assertEqual((self.reactor.tcpClients, reported), ([], []))

    def test_connectingRaises(self) -> None:
        """
        A request whose connecting to the owner raises at once fails at
        once, once, and is no failure of the owner.
        """
        reported: list = []
        self.router.membership.reportFailure = lambda *a: reported.append(a)
        self.router.monitor.forwardingError = lambda *a: reported.append(a)

        def refuse(key, factory):
            raise ValueError("no such name")

        self.router.client.wire._connect = refuse
        uri = f"/v2/queues/{self.queue}/messages".encode()
        d = self.forwardRaw(self.router, b"POST", uri, Headers(), b"{}", "p", "b")
        self.assertIsInstance(self.failureResultOf(d).value, Exception)
        self.reactor.advance(60)
        self.assertEqual((self.reactor.tcpClients, reported), ([], []))

    def test_signedAndRelayed(self) -> None:
        """
        The request reaches the owner with the received headers, less
        hop-by-hop and forged forwarding ones, signed for the owner (its
        verifier accepts it once); the owner's answer comes back as it was.
        """
        uri = f"/v2/queues/{self.queue}/messages".encode()
        received = Headers(
            {
                b"X-Project-ID": [b"p"],
                b"Connection": [b"keep-alive"],
                b"X-Marconi-Node": [b"forged"],
            }
        )
        d = self.forwardRaw(self.router, b"POST", uri, received, b"{}", "p", "b")
        protocol, transport = self.peer.connect()
        head, _, body = transport.value().partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.assertEqual(lines[0], b"POST " + uri + b" HTTP/1.1")
        pairs = [line.split(b": ", 1) for line in lines[1:]]
        lower = {name.lower(): value for name, value in pairs}
        self.assertEqual(len(lower), len(pairs))
        self.assertEqual(lower[b"x-project-id"], b"p")
        self.assertNotIn(b"connection", lower)
        self.assertEqual(lower[b"x-marconi-node"], b"a")
        self.assertEqual(body, b"{}")
        verifier = signing.Verifier("b", ["a", "b"], _config().secret, self.reactor)
        signed = verifier.verify(b"POST", uri, body, lower)
        self.assertEqual((signed.node, signed.project), ("a", "p"))
        self.assertRaises(
            signing.BadSignature, verifier.verify, b"POST", uri, body, lower
        )
        protocol.dataReceived(
            b"HTTP/1.1 201 Created\r\nLocation: /x\r\nContent-Length: 2\r\n\r\n[]"
        )
        answer = self.successResultOf(d)
        self.assertEqual((answer.code, answer.body), (201, b"[]"))
        self.assertEqual(answer.headers.getRawHeaders(b"location"), [b"/x"])

    def test_cancelledIsNoFailure(self) -> None:
        """
        A forwarding cancelled (its client went away) fails with
        L{CancelledError}, and is no failure of the owner: neither the
        failure detector nor the monitor hears of it.
        """
        reported: list = []
        self.router.membership.reportFailure = lambda *a: reported.append(a)
        self.router.monitor.forwardingError = lambda *a: reported.append(a)
        uri = f"/v2/queues/{self.queue}/messages".encode()
        d = self.forwardRaw(self.router, b"POST", uri, Headers(), b"{}", "p", "b")
        self.peer.connect()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(reported, [])

    def test_forwardLines(self) -> None:
        """
        Received headers that offer the lines to forward (those the
        pass-through read, L{passthrough.Headers}) are sent with those
        lines as they are, then the signed ones: the owner's verifier
        accepts them; a second sending (a retry) is signed anew.
        """
        uri = f"/v2/queues/{self.queue}/messages".encode()
        received = passthrough.Headers()
        received.add(b"Host", b"host", b"client-side")
        received.add(b"X-Project-ID", b"x-project-id", b"p")
        received.forwardLines = b"X-Project-ID: p\r\nAccept: */*\r\n"

        def sent(transport) -> dict:
            head = transport.value().partition(b"\r\n\r\n")[0]
            lines = head.split(b"\r\n")
            # The first request on a connection offers pipelining.
            if lines[1] == b"Marconi-Pipelining: 1":
                del lines[1]
            self.assertEqual(
                lines[:4],
                [
                    b"GET " + uri + b" HTTP/1.1",
                    b"Host: 127.0.0.1:2",
                    b"X-Project-ID: p",
                    b"Accept: */*",
                ],
            )
            pairs = [line.split(b": ", 1) for line in lines[4:]]
            self.assertEqual([name for name, _ in pairs], list(signing.HEADERS))
            return dict(pairs)

        d, protocol = self.retried(uri, received, sent)
        protocol.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual(self.successResultOf(d).code, 204)

    def retried(self, uri: bytes, received, sent) -> tuple:
        """
        Forward a GET of C{uri} with the C{received} headers, answered on
        a pooled connection; forward another that finds that connection
        closed and is sent again on a new one: each sending is signed
        anew, as C{sent} reads its headers from a transport, and accepted
        by the owner.

        @return: the second forwarding's L{Deferred}, and the protocol of
            the connection it was sent again on.
        """
        verifier = signing.Verifier("b", ["a", "b"], _config().secret, self.reactor)
        d = self.forwardRaw(self.router, b"GET", uri, received, b"", "p", "b")
        protocol, transport = self.peer.connect()
        first = sent(transport)
        self.assertEqual(verifier.verify(b"GET", uri, b"", first).project, "p")
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.successResultOf(d)
        transport.clear()
        d = self.forwardRaw(self.router, b"GET", uri, received, b"", "p", "b")
        second = sent(transport)
        self.assertEqual(verifier.verify(b"GET", uri, b"", second).project, "p")
        self.reactor.advance(1)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertNoResult(d)
        protocol, transport = self.peer.connect()
        again = sent(transport)
        self.assertNotEqual(again[signing.NONCE], second[signing.NONCE])
        self.assertEqual(verifier.verify(b"GET", uri, b"", again).project, "p")
        return d, protocol

    def test_retrySignedAnew(self) -> None:
        """
        A GET sent again because its pooled connection was closed is signed
        anew: the owner, which may have seen the first sending's nonce (or
        restarted since its timestamp), accepts the second.
        """
        uri = f"/v2/queues/{self.queue}/messages".encode()

        def sent(transport) -> dict:
            head = transport.value().partition(b"\r\n\r\n")[0]
            pairs = [line.split(b": ", 1) for line in head.split(b"\r\n")[1:]]
            return {name.lower(): value for name, value in pairs}

        d, protocol = self.retried(uri, Headers(), sent)
        protocol.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual(self.successResultOf(d).code, 204)

    def test_notAPath(self) -> None:
        """
        A target that is not a path is refused before anything is sent.
        """
        self.assertRaises(
            NotAPath,
            self.forwardRaw,
            self.router,
            b"GET",
            b"X/v2/queues/q",
            Headers(),
            b"",
            "p",
            "b",
        )
        self.assertEqual(self.reactor.tcpClients, [])

    def test_movedQueueSentToItsHolder(self) -> None:
        """
        An owner that answers 503 naming another node as the queue's holder
        (C{X-Marconi-Held-By}) gets the request sent there once more, signed
        for that node; the holder's answer is the one given.
        """
        nodes = (
            Peer("a", "http://127.0.0.1:1"),
            Peer("b", "http://127.0.0.1:2"),
            Peer("c", "http://127.0.0.1:3"),
        )
        router = ClusterRouter(_config(nodes=nodes), self.reactor)
        uri = f"/v2/queues/{self.queue}/messages".encode()
        d = self.forwardRaw(router, b"POST", uri, Headers(), b"{}", "p", "b")
        protocol, _ = self.peer.connect()
        protocol.dataReceived(
            b"HTTP/1.1 503 Service Unavailable\r\nX-Marconi-Held-By: c\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )
        self.assertNoResult(d)
        self.assertEqual(self.reactor.tcpClients[-1][1], 3)
        protocol, transport = self.peer.connect()
        head = transport.value().partition(b"\r\n\r\n")[0]
        pairs = [line.split(b": ", 1) for line in head.split(b"\r\n")[1:]]
        lower = {name.lower(): value for name, value in pairs}
        self.assertEqual(lower[signing.DESTINATION], b"c")
        protocol.dataReceived(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n[]")
        answer = self.successResultOf(d)
        self.assertEqual((answer.code, answer.body), (201, b"[]"))
        self.assertTrue(router.membership.isUp("b"))


class ForwardRawThenTests(ForwardRawTests):
    """
    L{ClusterRouter.forwardRaw} with a callback, no L{Deferred}: the same
    as with one.
    """

    def forwardRaw(self, router: ClusterRouter, *args) -> Deferred:
        """
        C{router.forwardRaw(*args)} with a callback, which is called once,
        made a L{Deferred} again; cancelling it cancels the forwarding.
        """
        calls: list = []

        def then(result) -> None:
            calls.append(result)
            self.assertEqual(len(calls), 1)
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

        d: Deferred = Deferred(lambda _: forwarding.cancel())
        forwarding = router.forwardRaw(*args, then=then)
        return d
