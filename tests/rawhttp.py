"""
Raw HTTP clients for abuse tests: they write exactly the bytes a test gives
(malformed, oversized or dripped slowly) and record what comes back and
when the server closes the connection.
"""

from typing import Any, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater


class RawClient(Protocol):
    """
    Records every byte received; C{closed} fires with them when the server
    closes the connection.
    """

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred = Deferred()
        self.isClosed = False
        self._drip: Optional[Any] = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any) -> None:
        self.isClosed = True
        if self._drip is not None and self._drip.active():
            self._drip.cancel()
        self.closed.callback(self.received)

    def drip(self, data: bytes, interval: float) -> None:
        """
        Send C{data} one byte every C{interval} seconds, until it is all sent
        or the connection is closed.
        """

        def one(rest: bytes) -> None:
            self._drip = None
            if self.isClosed or not rest:
                return
            self.transport.write(rest[:1])
            self._drip = reactor.callLater(interval, one, rest[1:])

        one(data)

    def close(self) -> None:
        if not self.isClosed:
            self.transport.abortConnection()


async def connect(port: int) -> RawClient:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    return await connectProtocol(endpoint, RawClient())


async def exchange(port: int, data: bytes, wait: float = 10.0) -> bytes:
    """
    Send C{data} and return what the server answered by the time it closed
    the connection (or, failing that, after C{wait} seconds).
    """
    client = await connect(port)
    client.transport.write(data)
    return await closedWithin(client, wait)


async def closedWithin(client: RawClient, wait: float) -> bytes:
    """
    Wait (at most C{wait} seconds) for the server to close C{client}'s
    connection; raise if it does not.
    """
    waited = 0.0
    while not client.isClosed and waited < wait:
        await deferLater(reactor, 0.05, lambda: None)
        waited += 0.05
    if not client.isClosed:
        client.close()
        raise AssertionError(
            f"the server kept the connection open for {wait} s; "
            f"received {client.received[:200]!r}"
        )
    return client.received


def status(answer: bytes) -> int:
    """
    The status code of the first response in C{answer}.
    """
    return int(answer.split(b" ", 2)[1])
