"""
The running extension: an autobahn websocket resource mounted at C{/ws},
one L{Session} per socket, and one L{Fanout} listening to the bus.
"""

from collections import deque
from dataclasses import replace
from typing import Any, Optional

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from zope.interface import implementer

from marconi.core.interfaces import IExtension
from marconi.extensions import notEnabled
from marconi.extensions.websockets import frames
from marconi.extensions.websockets.outbox import Outbox
from marconi.extensions.websockets.push import Fanout
from marconi.extensions.websockets.session import Session
from marconi.extensions.websockets.settings import FRAME_OVERHEAD, parse

log = Logger()

#: Request frames a socket may have waiting before the node stops reading
#: from it (they are served one after the other, in order).
MAX_PENDING = 16

#: The close code of a socket that read too slowly (its send buffer
#: filled up).
TOO_SLOW = 4008


class MarconiSocket(WebSocketServerProtocol):
    """
    One client's socket: its frames are served in order, its answers and
    pushes go through a bounded L{Outbox}.
    """

    session: Optional[Session] = None
    outbox: Optional[Outbox] = None

    def onOpen(self) -> None:
        extension = self.factory.extension
        self.outbox = Outbox(
            lambda payload: self.sendMessage(payload, False),
            extension.settings.sendBufferBytes,
            self._tooSlow,
        )
        # The HTTP channel the socket was upgraded from was the transport's
        # producer; the socket's outbox is now.
        transport: Any = self.transport
        transport.unregisterProducer()
        transport.registerProducer(self.outbox, True)
        self.session = Session(
            extension.host, extension.fanout, extension.settings, self.outbox.send
        )
        self._pending: deque = deque()
        self._serving = False
        self._readingPaused = False
        extension.sockets.add(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.session is None or self.outbox is None:
            return
        if isBinary:
            self.outbox.send(
                frames.answer(
                    None,
                    400,
                    frames.error(
                        "Invalid API request", "Request frames must be JSON text."
                    ),
                )
            )
            return
        self._pending.append(payload)
        if len(self._pending) >= MAX_PENDING and not self._readingPaused:
            self._readingPaused = True
            self._transport().pauseProducing()
        if not self._serving:
            d = Deferred.fromCoroutine(self._serve())
            d.addErrback(lambda f: log.failure("Serving a websocket failed", f))

    async def _serve(self) -> None:
        self._serving = True
        try:
            while self._pending and self.session is not None:
                await self.session.handle(self._pending.popleft())
                if self._readingPaused and len(self._pending) <= MAX_PENDING // 2:
                    self._readingPaused = False
                    self._transport().resumeProducing()
        finally:
            self._serving = False

    def _transport(self) -> Any:
        """
        The socket's transport, which reads (an L{IPushProducer}).
        """
        return self.transport

    def _tooSlow(self) -> None:
        log.info("Closing a websocket that reads too slowly: {peer}", peer=self.peer)
        self.sendClose(TOO_SLOW, "Send buffer full: the socket reads too slowly.")

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        session, self.session = self.session, None
        self._pending = deque()
        if session is not None:
            session.close()
        if self.outbox is not None:
            self.outbox.stopProducing()
        self.factory.extension.sockets.discard(self)


class SocketFactory(WebSocketServerFactory):
    """
    Makes the sockets of one L{Websockets} extension.
    """

    protocol = MarconiSocket

    def __init__(self, extension: "Websockets") -> None:
        super().__init__()
        self.extension = extension


@implementer(IExtension)
class Websockets(Service):
    """
    The websockets extension of one node.

    @ivar sockets: the open sockets.
    """

    name = "websockets"  # type: ignore[assignment]

    def __init__(self, host: Any) -> None:
        self.host = host
        settings = parse(host.settings)
        if settings.maxFrameBytes is None:
            limit = host.bus.limits.maxMessagesPostSize + FRAME_OVERHEAD
            settings = replace(settings, maxFrameBytes=limit)
        self.settings = settings
        self.fanout = Fanout(host.bus, host.reactor)
        self.sockets: set = set()
        self.factory = SocketFactory(self)
        self.factory.setProtocolOptions(
            maxFramePayloadSize=settings.maxFrameBytes,
            maxMessagePayloadSize=settings.maxFrameBytes,
            autoPingInterval=settings.pingInterval or None,
            autoPingTimeout=settings.pingInterval or None,
            # A refused frame is told with a close code (1009: too big),
            # not a dropped connection.
            failByDrop=False,
        )

    def startService(self) -> None:
        super().startService()
        self.fanout.start()

    def stopService(self) -> None:
        super().stopService()
        self.fanout.stop()
        for socket in list(self.sockets):
            socket.sendClose(1001, "The node is stopping.")

    def serve(self, request: Any) -> Deferred:
        # No API resource is routed to this extension (see ROUTES).
        return fail(notEnabled(self.name))

    def resource(self) -> Any:
        return WebSocketResource(self.factory)
