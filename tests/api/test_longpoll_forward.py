"""
A relay forwarding a request that waits for messages lengthens its
forwarding timeout by the wait (L{marconi.cluster.forward.waitOf}).
"""

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from marconi.cluster.errors import LOST, NodeUnavailable
from marconi.cluster.forward import PeerClient, target, waitOf
from marconi.cluster.settings import Peer
from marconi.core.waiting import MAXIMUM_WAIT
from tests.cluster.test_forward import _config, _Peer


class WaitOfTests(SynchronousTestCase):
    def test_waitOf(self) -> None:
        """
        The wait of a request target is its last C{wait} parameter when it
        is a whole number, at most L{MAXIMUM_WAIT}; otherwise 0.  It is
        read as the API reads it: decoded, without blanks around it.
        """
        for uri, seconds in (
            (b"/v2/queues/q/messages", 0),
            (b"/v2/queues/q/messages?wait=5", 5),
            (b"/v2/queues/q/claims?limit=2&wait=7&tags=a", 7),
            (b"/v2/queues/q/messages?await=3", 0),
            (b"/v2/queues/q/messages?wait=x", 0),
            (b"/v2/queues/q/messages?wait=1&wait=4", 4),
            (b"/v2/queues/q/messages?wait=999999", MAXIMUM_WAIT),
            (b"/v2/queues/wait=5/messages", 0),
            (b"/v2/queues/q/messages?wait=+20", 20),
            (b"/v2/queues/q/messages?wait=20+", 20),
            (b"/v2/queues/q/messages?wait=%2020", 20),
            (b"/v2/queues/q/messages?wait=%C2%A020", 20),
            (b"/v2/queues/q/messages?w%61it=6", 6),
            (b"/v2/queues/q/messages?wait=-3", 0),
            (b"/v2/queues/q/messages?wait=%FF", 0),
        ):
            self.assertEqual(waitOf(target(uri)), seconds, uri)


class ForwardTimeoutTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.peer = _Peer(self.reactor)
        self.client = PeerClient(_config(), self.reactor)

    def call(self, uri: bytes) -> Deferred:
        return self.client.call(
            Peer("b", "http://127.0.0.1:2"), b"GET", target(uri), Headers(), b""
        )

    def test_waitingRequest(self) -> None:
        """
        A waiting request's answer may come its wait after the forwarding
        timeout (5 seconds here), not later.
        """
        d = self.call(b"/v2/queues/q/messages?wait=20")
        self.peer.connect()
        self.reactor.advance(24.9)
        self.assertNoResult(d)
        self.reactor.advance(0.2)
        self.assertEqual(self.failureResultOf(d, NodeUnavailable).value.kind, LOST)

    def test_answeredWhileWaiting(self) -> None:
        """
        A waiting request answered past the forwarding timeout is relayed.
        """
        d = self.call(b"/v2/queues/q/messages?wait=20")
        protocol, _ = self.peer.connect()
        self.reactor.advance(12)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        self.assertEqual(self.successResultOf(d).body, b"{}")
