"""
Tests for L{marconi.net}: answers written to a plain TCP connection at once,
through a real listening port.
"""

import os
import resource
import shutil
import socket
import struct
from os import urandom
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.protocol import ClientCreator, Factory, Protocol
from twisted.internet.selectreactor import SelectReactor
from twisted.internet.testing import MemoryReactorClock
from twisted.python import log as legacyLog
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web import server
from twisted.web.resource import Resource

from marconi import net
from marconi.api.http import MarconiSite
from marconi.net import headerPairs, headerValues, leanPolling, writeNow
from tests.rawhttp import closedWithin, connect


class _Answers(Resource):
    """
    Answers C{GET /N} with a body naming N (a body of C{N} bytes under
    C{/big/N}), C{/empty} with 204, and holds C{/held} for the test
    (L{held} fires with the request).
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: Deferred = Deferred()

    def render(self, request: Any) -> Any:
        path = request.path
        if path == b"/held":
            held, self.held = self.held, Deferred()
            held.callback(request)
            return server.NOT_DONE_YET
        if path == b"/empty":
            request.setResponseCode(204)
            return b""
        if path.startswith(b"/chunked/"):
            # No length: twisted.web writes the body in chunks.
            request.write(b"chunk " + path[9:])
            return b""
        body = b"answer " + path[1:]
        request.setHeader(b"content-length", b"%d" % len(body))
        return body


class _Reader(Protocol):
    """
    Keeps what arrives; C{closed} fires with it when the server closes the
    connection.
    """

    def __init__(self) -> None:
        self.pieces: list = []
        self.closed: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.pieces.append(data)

    def connectionLost(self, reason: Any) -> None:
        self.closed.callback(b"".join(self.pieces))


class WriteNowTests(TestCase):
    def setUp(self) -> None:
        self.answers = _Answers()
        self.site = MarconiSite(self.answers, maxRequestBody=100, accessLog=False)
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.portNumber = self.port.getHost().port

    def _socket(self, receiveBuffer: int = 0) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        if receiveBuffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
        sock.connect(("127.0.0.1", self.portNumber))
        return sock

    def _adopt(self, sock: socket.socket) -> _Reader:
        """
        Read what arrives on C{sock} through the reactor.
        """
        client = _Reader()
        factory = Factory.forProtocol(lambda: client)
        reactor.adoptStreamConnection(sock.fileno(), socket.AF_INET, factory)
        sock.close()
        return client

    async def test_pipelinedInOrder(self) -> None:
        """
        Requests pipelined on a kept-alive connection are answered whole and
        in order: answers with a length, without a body (204, HEAD), and in
        chunks.
        """
        client = await connect(self.portNumber)
        requests = []
        expected = []
        for n in range(30):
            if n % 5 == 1:
                requests.append(b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n")
                expected.append(b"HTTP/1.1 204 ")
            elif n % 5 == 2:
                requests.append(b"HEAD /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
                expected.append(b"HTTP/1.1 200 ")
            elif n % 5 == 3:
                requests.append(b"GET /chunked/%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
                expected.append(b"chunk %d\r\n0\r\n\r\n" % n)
            else:
                requests.append(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
                expected.append(b"\r\n\r\nanswer %d" % n)
        requests.append(b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        expected.append(b"\r\n\r\nanswer last")
        client.transport.write(b"".join(requests))
        received = await closedWithin(client, 30)
        self.assertEqual(received.count(b"HTTP/1.1 "), len(expected))
        at = 0
        for piece in expected:
            found = received.find(piece, at)
            self.assertNotEqual(found, -1, (piece, received[at : at + 200]))
            at = found + len(piece)
        self.assertTrue(received.endswith(b"answer last"))

    async def test_largeAnswerToSlowReader(self) -> None:
        """
        An answer larger than the socket takes at once (more than the
        kernel's largest send buffer and the client's small receive buffer
        hold) to a client not reading yet is partly sent at once and partly buffered by the
        transport, and arrives whole and in order once the client reads.
        """
        sock = self._socket(receiveBuffer=4096)
        sock.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        request = await self.answers.held
        transport = request.channel.transport
        body = urandom(16 * 1024 * 1024)
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()
        buffered = len(transport.dataBuffer) + transport._tempDataLen
        # Some went out at once, the rest waits for the client to read.
        self.assertTrue(0 < buffered < len(body), buffered)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024 * 1024)
        received = await self._adopt(sock).closed
        head, _, answer = received.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        self.assertEqual(len(answer), len(body))
        self.assertEqual(answer, body)

    async def test_vanishedClient(self) -> None:
        """
        An answer to a client that reset its connection closes the
        connection, logs no error, and the node answers the next client.
        """
        sock = self._socket()
        sock.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        request = await self.answers.held
        lost: Deferred = Deferred()
        channel = request.channel
        connectionLost = channel.connectionLost

        def recordLoss(reason: Any) -> None:
            connectionLost(reason)
            lost.callback(None)

        channel.connectionLost = recordLoss
        # Closed with a reset, before the answer.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        body = urandom(1024 * 1024)
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()
        await lost
        self.assertFalse(channel.transport.connected)
        self.assertEqual(self.flushLoggedErrors(), [])
        client = await connect(self.portNumber)
        client.transport.write(
            b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        received = await closedWithin(client, 30)
        self.assertTrue(received.endswith(b"\r\n\r\nanswer next"), received)


class _BufferedThenNow(Protocol):
    """
    On connecting, writes through the transport (which Twisted keeps until
    the reactor finds the socket writable), then with L{writeNow}, then
    closes.
    """

    def connectionMade(self) -> None:
        self.transport.write(b"A" * 10)
        writeNow(self.transport, b"B")
        self.transport.loseConnection()


class BehindBufferedTests(TestCase):
    async def test_behindBuffered(self) -> None:
        """
        What L{writeNow} is given while the transport still keeps earlier
        bytes goes after them, not ahead.
        """
        port = reactor.listenTCP(
            0, Factory.forProtocol(_BufferedThenNow), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        client = _Reader()
        await ClientCreator(reactor, lambda: client).connectTCP(
            "127.0.0.1", port.getHost().port
        )
        self.assertEqual(await client.closed, b"A" * 10 + b"B")


class HeaderLinesTests(SynchronousTestCase):
    """
    L{headerPairs} and L{headerValues} read checked header lines as the
    pattern of a header line would.
    """

    def test_pairs(self) -> None:
        """
        Each line is its name and its value, without the spaces and tabs
        around the value; an empty block has none.
        """
        block = b"Host: h\r\nX-Empty:\r\nX-Odd:\t a: b \t\r\n"
        self.assertEqual(
            headerPairs(block),
            [(b"Host", b"h"), (b"X-Empty", b""), (b"X-Odd", b"a: b")],
        )
        self.assertEqual(headerPairs(b""), [])

    def test_values(self) -> None:
        """
        The values of every line of a name, whatever its case, in order;
        a name that only ends another, or appears in a value, is not it.
        """
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-Content-Length: 9\r\n"
            b"X-A: content-length: 8\r\ncontent-length:  2 \r\n\r\n"
        )
        lowered = head.lower()
        self.assertEqual(headerValues(head, lowered, b"content-length"), [b"1", b"2"])
        self.assertEqual(headerValues(head, lowered, b"x-a"), [b"content-length: 8"])
        self.assertEqual(headerValues(head, lowered, b"location"), [])


class _Readable:
    """
    One end of a socket pair, read by a reactor: records what it read, and
    raises C{raising} from C{doRead} (and C{lost} from C{connectionLost})
    if set.
    """

    def __init__(self, prefix: str, raising: Any = None, lost: Any = None) -> None:
        self.socket, self.peer = socket.socketpair()
        self.prefix = prefix
        self.raising = raising
        self.lost = lost
        self.read: list = []
        self.reasons: list = []

    def fileno(self) -> int:
        return self.socket.fileno()

    def logPrefix(self) -> str:
        return self.prefix

    def doRead(self) -> None:
        self.read.append(self.socket.recv(100))
        if self.raising is not None:
            raise self.raising

    def connectionLost(self, reason: Any) -> None:
        self.reasons.append(reason)
        if self.lost is not None:
            raise self.lost

    def close(self) -> None:
        self.socket.close()
        self.peer.close()


class LeanPollingTests(SynchronousTestCase):
    """
    L{leanPolling} has an epoll reactor dispatch its events with no
    logging context, and leaves other reactors alone.
    """

    def reactor(self) -> EPollReactor:
        """
        A new epoll reactor (not run), closed after the test.
        """
        r = EPollReactor()

        def close() -> None:
            r.waker.connectionLost(None)
            r._poller.close()

        self.addCleanup(close)
        return r

    def readable(self, r: EPollReactor, *args: Any) -> _Readable:
        reader = _Readable(*args)
        self.addCleanup(reader.close)
        r.addReader(reader)
        return reader

    def test_dispatches(self) -> None:
        """
        A reader with bytes to read reads them in the reactor's next turn,
        through the lean poll; one with nothing to read is not called.
        """
        r = self.reactor()
        self.assertTrue(leanPolling(r))
        self.assertIs(r.doPoll.__func__, net._leanPoll)
        self.assertIs(r.doIteration.__func__, net._leanPoll)
        ready = self.readable(r, "ready")
        idle = self.readable(r, "idle")
        ready.peer.send(b"hello")
        r.doIteration(0)
        self.assertEqual(ready.read, [b"hello"])
        self.assertEqual(idle.read, [])

    def test_connectionErrorClosesIt(self) -> None:
        """
        An exception from a connection's C{doRead} is logged and closes that
        connection, as the reactor does; the other events of the turn are
        still handled.
        """
        r = self.reactor()
        leanPolling(r)
        failing = self.readable(r, "failing", ZeroDivisionError())
        other = self.readable(r, "other")
        failing.peer.send(b"a")
        other.peer.send(b"b")
        r.doIteration(0)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(failing.reasons), 1)
        self.assertNotIn(failing, r.getReaders())
        self.assertEqual(other.read, [b"b"])
        self.assertIn(other, r.getReaders())

    def test_escapingErrorLoggedWithPrefix(self) -> None:
        """
        An exception escaping the reactor's handling of an event (here,
        from the connection's C{connectionLost}) is logged with the
        connection's log prefix as its system, and the other events of the
        turn are still handled.
        """
        r = self.reactor()
        leanPolling(r)
        events: list = []
        legacyLog.addObserver(events.append)
        self.addCleanup(legacyLog.removeObserver, events.append)
        failing = self.readable(r, "failing-7", ZeroDivisionError(), KeyError())
        other = self.readable(r, "other")
        failing.peer.send(b"a")
        other.peer.send(b"b")
        r.doIteration(0)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        systems = [e.get("system") for e in events if e.get("isError")]
        self.assertIn("failing-7", systems)
        self.assertEqual(other.read, [b"b"])

    def test_once(self) -> None:
        """
        Installed twice, it is installed once.
        """
        r = self.reactor()
        self.assertTrue(leanPolling(r))
        poll = r.doPoll
        self.assertTrue(leanPolling(r))
        self.assertIs(r.doPoll, poll)

    def test_unknownInternals(self) -> None:
        """
        An epoll reactor without the private parts the lean poll uses (a
        Twisted that changed them) keeps its own poll.
        """
        r = self.reactor()
        selectables = r._selectables
        del r._selectables
        try:
            self.assertFalse(leanPolling(r))
        finally:
            r._selectables = selectables
        self.assertIs(r.doPoll.__func__, EPollReactor.doPoll)

    def test_otherReactors(self) -> None:
        """
        A reactor that is not Twisted's epoll reactor is left alone.
        """
        memory = MemoryReactorClock()
        self.assertFalse(leanPolling(memory))
        self.assertFalse(hasattr(memory, "doPoll"))

        class Derived(EPollReactor):
            pass

        derived = Derived()
        self.addCleanup(derived._poller.close)
        self.addCleanup(derived.waker.connectionLost, None)
        self.assertFalse(leanPolling(derived))
        self.assertIs(derived.doPoll.__func__, EPollReactor.doPoll)


class RaiseFileLimitTests(SynchronousTestCase):
    """
    L{net.raiseFileLimit} on this process's real limit on open files.
    """

    def setUp(self) -> None:
        self.original = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, self.original)
        self.hard = self.original[1]
        if self.hard != resource.RLIM_INFINITY and self.hard < 1024:
            raise SkipTest("the hard limit on open files is below 1,024")

    def test_raised(self) -> None:
        """
        A soft limit below the hard one is raised to it (to the kernel's
        C{fs.nr_open} when the hard limit is unlimited or above it).
        """
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, self.hard))
        with open("/proc/sys/fs/nr_open") as f:
            ceiling = int(f.read())
        wanted = (
            ceiling
            if self.hard == resource.RLIM_INFINITY or self.hard > ceiling
            else self.hard
        )
        self.assertEqual(net.raiseFileLimit(MemoryReactorClock()), (512, wanted))
        self.assertEqual(
            resource.getrlimit(resource.RLIMIT_NOFILE), (wanted, self.hard)
        )

    def test_atTheHardLimit(self) -> None:
        """
        A soft limit already at the hard one is left as it is.
        """
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.hard, self.hard))
        self.assertIsNone(net.raiseFileLimit(MemoryReactorClock()))
        self.assertEqual(
            resource.getrlimit(resource.RLIMIT_NOFILE), (self.hard, self.hard)
        )

    def test_selectReactor(self) -> None:
        """
        Under a C{select()} reactor, which cannot watch descriptors past
        1,024, the limit is left as it is.
        """
        selecting = SelectReactor()
        self.addCleanup(selecting.waker.connectionLost, None)
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, self.hard))
        self.assertIsNone(net.raiseFileLimit(selecting))
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 512)


class NodeFileLimitTests(TestCase):
    """
    C{twistd marconi} started with a low soft limit on open files.
    """

    async def test_nodeRaisesItsLimit(self) -> None:
        """
        The node raises its soft limit to the hard one and says so in its
        log.
        """
        from tests.nodeprocess import NodeProcess

        if shutil.which("prlimit") is None:
            raise SkipTest("prlimit (util-linux) is not installed")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        node = await NodeProcess(
            self,
            directory,
            ["--listen", "tcp:0:interface=127.0.0.1", "--storage", "sqlite::memory:"],
            prefix=["prlimit", "--nofile=256:2048", "--"],
        ).start()
        with open(f"/proc/{node._process.pid}/limits") as f:
            limits = [line for line in f if line.startswith("Max open files")]
        self.assertEqual(limits[0].split()[3:5], ["2048", "2048"])
        self.assertIn("Open files: the soft limit raised from 256 to 2048", node.log())
