"""
What a socket sends, bounded: a socket that reads too slowly must not make
the node hold ever more for it, nor slow the other sockets down.
"""

from collections import deque
from typing import Callable

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


@implementer(IPushProducer)
class Outbox:
    """
    The frames a socket sends, written at once while its transport takes
    them; while the transport is full (it paused this producer) they wait
    here, up to C{limit} bytes.  One more frame than that and C{overflow}
    is called (the socket closes it: the client reconnects and reads what
    it missed with C{message_list}), and everything after is dropped.
    """

    def __init__(
        self,
        write: Callable[[bytes], None],
        limit: int,
        overflow: Callable[[], None],
    ) -> None:
        """
        @param write: sends one frame's payload.
        """
        self._write = write
        self._limit = limit
        self._overflow = overflow
        self._waiting: deque = deque()
        self.waitingBytes = 0
        self.paused = False
        self.overflowed = False

    def send(self, payload: bytes) -> None:
        if self.overflowed:
            return
        if not self.paused and not self._waiting:
            self._write(payload)
            return
        if self.waitingBytes + len(payload) > self._limit:
            self.overflowed = True
            self._waiting.clear()
            self.waitingBytes = 0
            self._overflow()
            return
        self._waiting.append(payload)
        self.waitingBytes += len(payload)

    # IPushProducer: the transport says when its buffer is full and when it
    # has drained.

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while self._waiting and not self.paused:
            payload = self._waiting.popleft()
            self.waitingBytes -= len(payload)
            self._write(payload)

    def stopProducing(self) -> None:
        self.overflowed = True
        self._waiting.clear()
        self.waitingBytes = 0
