"""
twisted.web pieces: a request that refuses oversized bodies before
buffering them, a channel that bounds request lines, headers and how long a
request may take to arrive, and the site that uses them.
"""

import json
from typing import Any, Optional
from uuid import uuid4

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.web import http, server

_log = Logger()


def _rawError(code: int, reason: bytes, title: str, description: str) -> bytes:
    body = json.dumps({"title": title, "description": description}).encode()
    return (
        b"HTTP/1.1 %d %s\r\n"
        b"Content-Type: application/json; charset=UTF-8\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % (code, reason, len(body))
    ) + body


class LimitedRequest(server.Request):
    """
    A request that refuses a body larger than its site's C{maxRequestBody}:
    a declared C{Content-Length} over the limit is answered with 413 at once,
    before any of the body is read, and a chunked body that grows past the
    limit is cut off the same way.  Either way the connection is closed and
    nothing more is read from it.
    """

    _refused = False
    _received = 0

    def _limit(self) -> int:
        return self.channel.site.maxRequestBody

    def _refuse(self) -> None:
        self._refused = True
        limit = self._limit()
        _log.info("Refused a request body over {limit} bytes", limit=limit)
        self.channel.transport.write(
            _rawError(
                413,
                b"Payload Too Large",
                "Payload too large",
                f"Request bodies may not exceed {limit} bytes.",
            )
        )
        self.channel.loseConnection()

    def gotLength(self, length: Optional[int]) -> None:
        if length is not None and length > self._limit():
            # Do not invite the client to send the body.
            self.requestHeaders.removeHeader(b"expect")
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._limit():
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return
        super().requestReceived(command, path, version)

    def process(self) -> None:
        self.setHeader(b"x-openstack-request-id", b"req-" + uuid4().hex.encode())
        super().process()


class MarconiChannel(http.HTTPChannel):
    """
    An HTTP channel with explicit bounds on what a client may make it hold
    and for how long:

      - the request line and each header line are at most C{MAX_LENGTH}
        bytes (414 URI Too Long, 431 Request Header Fields Too Large);
      - all header lines together are at most C{totalHeadersSize} bytes
        (431), and there are at most C{maxHeaders} of them (400);
      - once the first byte of a request has arrived, its headers must be
        complete within the site's C{headerTimeout} seconds and its body
        within C{bodyTimeout} more (408), however slowly the bytes drip in.
        Twisted's own idle timeout restarts on every byte, which lets a
        slow client hold a connection for ever.

    Between requests the site's idle C{timeout} applies as usual.
    """

    MAX_LENGTH = 8192
    maxHeaders = 100
    totalHeadersSize = 16384

    _deadline: Optional[IDelayedCall] = None
    _sawRequestLine = False
    _refused = False

    def dataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        if data and self._deadline is None and not self._handlingRequest:
            self._arm(self.site.headerTimeout)
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._refused:
            return
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._refuse(
                431,
                b"Request Header Fields Too Large",
                f"The request headers may not exceed {self.totalHeadersSize} bytes.",
            )
            return
        if line:
            self._sawRequestLine = True
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._sawRequestLine:
            self._refuse(
                431,
                b"Request Header Fields Too Large",
                f"A header line may not exceed {self.MAX_LENGTH} bytes.",
            )
        else:
            self._refuse(
                414,
                b"URI Too Long",
                f"The request line may not exceed {self.MAX_LENGTH} bytes.",
            )

    def allHeadersReceived(self) -> None:
        self._sawRequestLine = False
        self._arm(self.site.bodyTimeout)
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        self._disarm()
        super().allContentReceived()

    def connectionLost(self, reason: Any) -> None:
        self._disarm()
        super().connectionLost(reason)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.callLater(seconds, self._tooSlow)

    def _disarm(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _tooSlow(self) -> None:
        self._deadline = None
        _log.info(
            "Closing a connection whose request arrived too slowly: {peer}",
            peer=str(self.transport.getPeer()),
        )
        self._refuse(
            408,
            b"Request Timeout",
            "The request did not arrive in time.",
            timedOut=True,
        )

    def _refuse(
        self, code: int, reason: bytes, description: str, timedOut: bool = False
    ) -> None:
        self._refused = True
        self._disarm()
        self.transport.write(_rawError(code, reason, reason.decode(), description))
        if timedOut:
            # Like an idle timeout: close, and abort if the client does not
            # read what is left.
            self.timeoutConnection()
        else:
            self.loseConnection()


class MarconiSite(server.Site):
    """
    The site of a Marconi node: L{MarconiChannel}s and L{LimitedRequest}s,
    no tracebacks to clients, and a bound on how long an idle connection
    stays open.

    @ivar headerTimeout: seconds from the first byte of a request to the end
        of its headers.
    @ivar bodyTimeout: seconds from the end of a request's headers to the
        end of its body.
    """

    protocol = MarconiChannel
    requestFactory = LimitedRequest
    displayTracebacks = False

    def __init__(
        self,
        resource,
        maxRequestBody: int,
        reactor=None,
        timeout: float = 60,
        headerTimeout: float = 10,
        bodyTimeout: float = 60,
    ):
        super().__init__(resource, reactor=reactor, timeout=timeout)
        self.maxRequestBody = maxRequestBody
        self.headerTimeout = headerTimeout
        self.bodyTimeout = bodyTimeout
