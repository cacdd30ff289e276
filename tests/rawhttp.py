"""
Raw HTTP clients for abuse tests: they write exactly the bytes a test gives
(malformed or oversized) and record what comes back and
when the server closes the connection.
"""

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol


class RawClient(Protocol):
    """
    Records every byte received; C{closed} fires with them when the server
    closes the connection.
    """

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred = Deferred()
        self.isClosed = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any) -> None:
        self.isClosed = True
        self.closed.callback(self.received)

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
    if not client.isClosed:
        timer = reactor.callLater(wait, client.close)
        await client.closed
        if not timer.active():
            raise AssertionError(
                f"the server kept the connection open for {wait} s; "
                f"received {client.received[:200]!r}"
            )
        timer.cancel()
    return client.received


def status(answer: bytes) -> int:
    """
    The status code of the first response in C{answer}.
    """
    return int(answer.split(b" ", 2)[1])
