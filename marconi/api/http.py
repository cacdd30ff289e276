"""
twisted.web pieces: a request that refuses oversized bodies before
buffering them, and the site that uses it.
"""

import json
from typing import Optional
from urllib.parse import unquote_to_bytes
from uuid import uuid4

from twisted.logger import Logger
from twisted.web import server

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
        # twisted.web parses the Content-Type of every request (with the
        # email package, a tenth of the cost of a small request) to decode
        # HTML forms, which this API never takes: hide the header from it
        # and put it back before the request is rendered.
        contentType = self.requestHeaders.getRawHeaders(b"content-type")
        if contentType is not None:
            self.requestHeaders.removeHeader(b"content-type")
            self._contentType = contentType
        super().requestReceived(command, path, version)

    _contentType: Optional[list] = None

    def process(self) -> None:
        if self._contentType is not None:
            self.requestHeaders.setRawHeaders(b"content-type", self._contentType)
        self.setHeader(b"x-openstack-request-id", b"req-" + uuid4().hex.encode())
        try:
            unquote_to_bytes(self.path).decode("utf-8")
        except UnicodeDecodeError:
            self.setResponseCode(400)
            self.setHeader(b"content-type", b"application/json; charset=UTF-8")
            self.write(
                json.dumps(
                    {
                        "title": "Invalid request",
                        "description": "The URL is not valid UTF-8.",
                    }
                ).encode()
            )
            self.finish()
            return
        super().process()


class MarconiSite(server.Site):
    """
    The site of a Marconi node: L{LimitedRequest}s, no tracebacks to
    clients, and a bound on how long an idle connection stays open.
    """

    requestFactory = LimitedRequest
    displayTracebacks = False

    def __init__(
        self, resource, maxRequestBody: int, reactor=None, timeout: float = 60
    ):
        super().__init__(resource, reactor=reactor, timeout=timeout)
        self.maxRequestBody = maxRequestBody
