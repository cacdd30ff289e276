"""
twisted.web pieces: a request that refuses oversized bodies before
buffering them, a channel that bounds request lines, headers and how long a
request may take to arrive, and the site that uses them; the site measures
every request and writes one access log event for it.
"""

import re
from os import urandom
from time import time
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple
from urllib.parse import unquote_to_bytes

from klein import Klein
from twisted.internet.interfaces import IDelayedCall, ITransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.protocols import basic
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http_headers import Headers

from marconi.api import media, pipeline, versions
from marconi.api.media import gzip
from marconi.core.errors import InvalidBody, PayloadTooLarge
from marconi.core.interfaces import IMonitor
from marconi.core.monitoring import NullMonitor
from marconi.net import TOKEN, headerPairs, writeNow

_log = Logger()

#: The access log: one event per answered request, in the namespace
#: C{marconi.access}.  It never holds bodies, headers or query strings (which
#: may carry claim ids and signatures).
accessLog = Logger(namespace="marconi.access")
#: The header of every answer of a cluster node: the version of its ring,
#: so that a ring-aware client sees when the ring it routes by is stale.
RING_VERSION_HEADER = b"x-marconi-ring-version"
ACCESS_FORMAT = (
    "{method} {path} {status} {duration:.6f}s {size}B "
    "project={project} request_id={request_id} route={route}"
)

#: L{ACCESS_FORMAT} for the % operator.
_ACCESS_LINE = "%s %s %s %.6fs %sB project=%s request_id=%s route=%s"


class RoutedKlein(Klein):
    """
    A L{Klein} app that records on the request which route served it, so
    that the site can measure requests by route.

    @ivar labels: the metric label of an endpoint, where it is not the
        endpoint's own name (one handler served at two paths has one label).
    """

    def __init__(self) -> None:
        super().__init__()
        self.labels: dict = {}
        # werkzeug would answer "//" in a path with a redirect to the
        # merged path, on the host the client named.
        self.url_map.merge_slashes = False

    def __get__(self, instance: Any, owner: object) -> Klein:
        bound = super().__get__(instance, owner)
        # The app bound to an instance shares the routes, and their labels.
        bound.labels = self.labels  # type: ignore[attr-defined]
        return bound

    def execute_endpoint(
        self, endpoint: str, request: Any, *args: Any, **kwargs: Any
    ) -> Any:
        request.route = self.labels.get(endpoint, endpoint)
        return super().execute_endpoint(endpoint, request, *args, **kwargs)


class _RequestIds:
    """
    Request ids: C{req-} and 128 random bits in hex (what C{uuid4().hex}
    gave), cut from random bytes read 256 ids at a time rather than with
    a system call for each request.
    """

    _batch = 256

    def __init__(self) -> None:
        self._ids: list = []

    def __call__(self) -> str:
        try:
            return self._ids.pop()
        except IndexError:
            data = urandom(16 * self._batch).hex()
            fresh = ["req-" + data[i : i + 32] for i in range(0, len(data), 32)]
            mine = fresh.pop()
            # Any thread may take one of these: each is handed out once.
            self._ids.extend(fresh)
            return mine


#: A new request id (see L{_RequestIds}).
newRequestId = _RequestIds()


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _printable(path: Any) -> str:
    text = _text(path)
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


#: Header names as twisted.web's L{http.Headers} keeps them (C{Header-Case}),
#: by the names met so far: requests name the same few headers again and
#: again, and a name looked up here is not canonicalised again.
_NAMES: dict = {}
#: At most this many names, of at most C{_MAX_NAME} bytes, are kept
#: (clients choose the names).
_MAX_NAMES = 1000
_MAX_NAME = 64


def _canonical(name: bytes) -> bytes:
    """
    The name twisted.web's L{http.Headers} keeps the header C{name} (a
    token, as bytes) under.
    """
    canonical = _NAMES.get(name)
    if canonical is None:
        canonical = next(Headers({name: [b""]}).getAllRawHeaders())[0]
        if len(_NAMES) < _MAX_NAMES and len(name) <= _MAX_NAME:
            _NAMES[name] = canonical
    return canonical


def _rawError(
    code: int,
    reason: bytes,
    title: str,
    description: str,
    requestId: str,
    serializer: media.Serializer = media.JSON_MEDIA,
    close: bool = True,
) -> bytes:
    body = serializer.document({"title": title, "description": description})
    return (
        b"HTTP/1.1 %d %s\r\n"
        b"Content-Type: %s\r\n"
        b"Content-Length: %d\r\n"
        b"X-OpenStack-Request-Id: %s\r\n"
        b"%s\r\n"
        % (
            code,
            reason,
            serializer.contentType,
            len(body),
            requestId.encode("ascii"),
            b"Connection: close\r\n" if close else b"",
        )
    ) + body


def _targetProblem(uri: bytes, path: bytes) -> Optional[str]:
    """
    What is wrong with a request target, if anything: only a path
    (origin-form, C{/...}) in UTF-8 is served, before any routing or
    forwarding sees it.
    """
    if not uri.startswith(b"/"):
        return "The request target must be a path starting with /."
    try:
        (unquote_to_bytes(path) if b"%" in path else path).decode("utf-8")
    except UnicodeDecodeError:
        return "The URL is not valid UTF-8."
    return None


class LimitedRequest(server.Request):
    """
    A request that refuses a body larger than its site's C{maxRequestBody}:
    a declared C{Content-Length} over the limit is answered with 413 at once,
    before any of the body is read, and a chunked body that grows past the
    limit is cut off the same way.  Either way the connection is closed and
    nothing more is read from it.

    A body with C{Content-Encoding: gzip} is inflated as it arrives (the
    application sees it plain, and the header is gone), and the limit
    applies to the inflated bytes too: a body that inflates past it is cut
    off as above once the limit is reached (see L{gzip.Inflater}).  A body
    that is not valid gzip is answered with 400, and any other content
    coding with 415.
    """

    _refused = False
    _received = 0
    # Answers with a body set their own type; empty ones (201, 204) have none.
    defaultContentType = None
    #: The endpoint that served the request (see L{RoutedKlein}).
    route: Optional[str] = None
    #: The project the request acts for, once the API resolved it.
    project: Optional[str] = None
    requestId: Optional[str] = None
    #: A node of the cluster forwarded the request here (its signature
    #: verified): the forwarding node writes its access log line.
    forwarded: bool = False
    #: When the request's headers were received (the site's clock).
    started: float = 0.0
    channel: "MarconiChannel"
    #: The serializer of the answer, once the API negotiated it.
    media: Optional["media.Serializer"] = None
    #: Inflates a gzip body as it arrives.
    _inflater: Optional[gzip.Inflater] = None
    #: The error (status, title, description) answered instead of the
    #: request, found while its body arrived.
    _problem: Optional[tuple] = None

    #: Called with the reason if the connection is lost before the
    #: request is answered (see L{whenLost}).
    _lost: Optional[Callable[[Failure], object]] = None

    def whenLost(self, f: Callable[[Failure], object]) -> None:
        """
        Call C{f} with the reason if the connection is lost before the
        request is answered: what an errback on L{notifyFinish} would do,
        without a L{Deferred}.  One function may wait at a time.
        """
        assert self._lost is None, "a function already waits for the loss"
        self._lost = f

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        lost, self._lost = self._lost, None
        if lost is not None:
            lost(reason)

    def _limit(self) -> int:
        return self.channel.site.maxRequestBody

    def _refuse(self, error: Optional[PayloadTooLarge] = None) -> None:
        self._refused = True
        self.requestId = newRequestId()
        limit = self._limit()
        _log.info(
            "Refused a request body over {limit} bytes (request_id={request_id})",
            limit=limit,
            request_id=self.requestId,
        )
        site = self.channel.site
        # The request line is all that is known of the request yet.
        policy = versions.forPath(getattr(self.channel, "_path", None) or b"")
        if error is None:
            error = PayloadTooLarge(f"Request bodies may not exceed {limit} bytes.")
        code = policy.status(error, 413)
        site.monitor.requestServed(
            "refused", code, site.reactor.seconds() - self.started
        )
        self.channel.transport.write(
            _rawError(
                code,
                b"Payload Too Large" if code == 413 else http.RESPONSES[code],
                policy.title(error),
                error.description,
                self.requestId,
                media.forErrors(
                    self.requestHeaders.getRawHeaders(b"accept", [None])[0]
                ),
            )
        )
        self.channel.loseConnection()

    def gotLength(self, length: Optional[int]) -> None:
        self.started = self.channel.site.reactor.seconds()
        if length is not None and length > self._limit():
            # Do not invite the client to send the body.
            self.requestHeaders.removeHeader(b"expect")
            self._refuse()
            return
        if length != 0:
            self._coding()
        super().gotLength(length)

    def _coding(self) -> None:
        """
        Prepare to read the body in its content coding.
        """
        try:
            coding = gzip.requestCoding(
                self.requestHeaders._rawHeaders.get(b"Content-Encoding") or None
            )
        except gzip.UnsupportedCoding as e:
            self._problem = (
                415,
                "Unsupported media type",
                f"Request bodies may be gzip'd, not {str(e)[:64]}.",
            )
        else:
            if coding is not None:
                self._inflater = gzip.Inflater(self._limit())

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._limit():
            self._refuse()
            return
        if self._inflater is not None:
            data = self._inflate(data)
        if self._problem is None and not self._refused:
            super().handleContentChunk(data)

    def _inflate(self, data: bytes) -> bytes:
        """
        Inflate the next piece of a gzip body; once it is found too large or
        not gzip, nothing more is inflated.
        """
        if self._problem is not None:
            return b""
        try:
            return self._inflater.feed(data)  # type: ignore[union-attr]
        except PayloadTooLarge as e:
            self._refuse(e)
        except InvalidBody as e:
            self._problem = (400, e.title, e.description)
        return b""

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return
        if self._inflater is not None:
            # The application sees the body as it was before gzip.
            self.requestHeaders.removeHeader(b"content-encoding")
            if self._problem is None and self._received:
                try:
                    self._inflater.close()
                except InvalidBody as e:
                    self._problem = (400, e.title, e.description)
        # What twisted.web's Request.requestReceived does, less its decoding
        # of HTML form bodies, which this API never takes (it parsed the
        # Content-Type of every POST with the email package to find them).
        self.content.seek(0, 0)  # type: ignore[attr-defined]
        self.method, self.uri = command, path
        self.clientproto = version
        self.path, query, argstring = path.partition(b"?")
        self.args = _parseQuery(argstring, 1) if query else {}
        self.process()

    def process(self) -> None:
        self.requestId = newRequestId()
        # The request's own headers go first, as setHeader would put them.
        headers = self.responseHeaders._rawHeaders
        headers[_REQUEST_ID] = [self.requestId.encode()]
        ringVersion = self.channel.site.ringVersion
        if ringVersion is not None:
            headers[_RING_VERSION] = [ringVersion().encode("ascii")]
        target = _targetProblem(self.uri, self.path)
        if target is not None:
            self._problem = (400, "Invalid request", target)
        if self._problem is not None:
            code, title, description = self._problem
            serializer = media.forErrors(self.getHeader(b"accept"))
            body = serializer.document({"title": title, "description": description})
            self.setResponseCode(code)
            self.setHeader(b"content-type", serializer.contentType)
            self.setHeader(b"content-length", b"%d" % len(body))
            self.write(body)
            self.finish()
            return
        self._serve()

    # twisted.web's L{http.Headers} canonicalises the name and sanitises
    # the value of each header it is given or asked for, every time.  The
    # API sets and reads the same few headers by the same names: those
    # are looked up once (see L{_canonical}) and values without a line
    # break (all of them) are kept as they are.

    def getHeader(self, key: Any) -> Any:
        if key.__class__ is not bytes:
            return super().getHeader(key)
        values = self.requestHeaders._rawHeaders.get(_canonical(key))
        return values[-1] if values else None

    def setHeader(self, name: Any, value: Any) -> None:
        if (
            name.__class__ is bytes
            and value.__class__ is bytes
            and b"\n" not in value
            and b"\r" not in value
        ):
            self.responseHeaders._rawHeaders[_canonical(name)] = [value]
        else:
            super().setHeader(name, value)

    def write(self, data: bytes) -> None:
        """
        Write the answer's head with its first data as twisted.web's
        L{server.Request.write} does, with fewer calls; the usual way in
        any case it handles specially (a C{Last-Modified}, an C{ETag} or
        cookies to send, a faked C{HEAD}, an encoder).
        """
        if (
            self.startedWriting
            or self.finished
            or self._disconnected
            or self._inFakeHead
            or self._encoder is not None
            or self.lastModified is not None
            or self.etag is not None
            or self.cookies
        ):
            super().write(data)
            return
        # This request has no default Content-Type (see defaultContentType).
        self.startedWriting = 1
        headers = self.responseHeaders._rawHeaders
        version = self.clientproto
        code = self.code
        method = self.method
        noBody = method == b"HEAD" or code in _NO_BODY_CODES
        if version == b"HTTP/1.1" and not headers.get(b"Content-Length") and not noBody:
            headers[b"Transfer-Encoding"] = [b"chunked"]
            self.chunked = 1
        self.channel.writeHeaders(
            version, b"%d" % code, self.code_message, self.responseHeaders
        )
        if noBody:
            self.write = _writeNothing  # type: ignore[method-assign]
            return
        self.sentLength += len(data)
        if data:
            if self.chunked:
                self.channel.writeSequence(_toChunk(data))
            else:
                self.channel.write(data)

    def _serve(self) -> None:
        """
        Find the resource of the request and render it, as twisted.web's
        L{server.Request.process} does (the same C{Server} and C{Date}
        headers first), with fewer calls: the C{Date} is formatted once a
        second, and a path without C{%} is not unquoted.  The site serves
        no resource that encodes its answers (this node gzips its answers
        itself, see L{marconi.api.media.gzip}).
        """
        site = self.site = self.channel.site
        headers = self.responseHeaders._rawHeaders
        headers[b"Server"] = [_SERVER]
        headers[b"Date"] = [_httpDate()]
        self.prepath = []
        segments = self.path[1:].split(b"/")
        if b"%" in self.path:
            segments = [unquote_to_bytes(segment) for segment in segments]
        self.postpath = segments
        try:
            self.render(site.getResourceFor(self))
        except BaseException:
            self.processingFailed(Failure())


_REQUEST_ID = _canonical(b"x-openstack-request-id")
_RING_VERSION = _canonical(RING_VERSION_HEADER)


def _writeNothing(data: bytes) -> None:
    """
    The C{write} of a request whose answer has no body.
    """


#: twisted.web's C{Server} header.
_SERVER = server.version
#: The second of the last C{Date} header made, and that header.
_date: Tuple[int, bytes] = (-1, b"")


def _httpDate() -> bytes:
    """
    The C{Date} header of an answer now, made once a second.
    """
    global _date
    now = int(time())
    if _date[0] != now:
        _date = (now, http.datetimeToString(now))
    return _date[1]


# twisted.web.http is a module proxy whose attributes cost a call each.
_HTTPChannel = http.HTTPChannel
_NO_BODY_CODES = http.NO_BODY_CODES
_toChunk = http.toChunk
_parseQuery = http.parse_qs
_LineReceiver = basic.LineReceiver
#: A request line that twisted.web reads as it is (see
#: L{MarconiChannel._wholeHead}).
_REQUEST_LINE = re.compile(rb"[A-Z]{1,16} /[!-~]* HTTP/1\.[01]")
#: Header lines, each with a token for a name and no control character that
#: twisted.web refuses in its value, and each ending with CRLF.
_HEADER_LINES = re.compile(rb"(?:" + TOKEN + rb":[^\x00\r\n]*\r\n)*")


class _Deadline:
    """
    A deadline on the site's clock and the one timer that watches it.
    Setting the deadline schedules the timer when none is pending and
    moves it only sooner; a timer that fires early (the deadline moved
    later since) waits again, and one that finds the deadline passed
    clears it and calls C{expired}.  So a deadline set anew for every
    request schedules no timer of its own.

    @ivar due: the deadline, or L{None} for none (setting it to L{None}
        disarms it; the pending timer then finds nothing to do).
    """

    __slots__ = ("due", "_timer", "_clock", "_callLater", "_expired")

    def __init__(
        self, clock: Any, callLater: Callable, expired: Callable[[], object]
    ) -> None:
        self.due: Optional[float] = None
        self._timer: Optional[IDelayedCall] = None
        self._clock = clock
        self._callLater = callLater
        self._expired = expired

    def set(self, seconds: float) -> None:
        due = self.due = self._clock.seconds() + seconds
        timer = self._timer
        if timer is None:
            self._timer = self._callLater(seconds, self._check)
        elif timer.getTime() > due:
            timer.reset(seconds)

    def postpone(self, seconds: float) -> None:
        """
        Move an armed deadline C{seconds} from now, which is never sooner:
        the pending timer waits again when it fires.
        """
        self.due = self._clock.seconds() + seconds

    def stop(self) -> None:
        """
        Disarm, and cancel the timer.
        """
        self.due = None
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _check(self) -> None:
        self._timer = None
        if self.due is None:
            return
        left = self.due - self._clock.seconds()
        if left > 0:
            self._timer = self._callLater(left, self._check)
        else:
            self.due = None
            self._expired()


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

    # The deadline of the request arriving (the site's clock): see
    # _Deadline; requests that arrive in time schedule no timer of their
    # own.  Made with the connection.
    _arrival: "_Deadline"
    # The idle timeout (twisted.protocols.policies.TimeoutMixin's API) kept
    # as a deadline too: twisted.web suspends it while each request is
    # served and sets it again after, which cancelled one timer and
    # scheduled another for every request.
    _idle: "_Deadline"
    _sawRequestLine = False
    _refused = False
    # Set by the site that built the channel, before it is connected.
    site: "MarconiSite"
    transport: ITransport

    def dataReceived(self, data: bytes) -> None:
        # What follows a request passed through and answered at once is
        # read here, in turn, not by a call from inside that answer: a
        # long pipeline answered at once would otherwise nest a call per
        # request.
        while data:
            self._received(data)
            data, self._rest = self._rest, b""

    def _received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._pipelined is not None:
            self._pipelined.received(data)
            return
        if self._first:
            self._first = False
            if self.site.pipelining and pipeline.offered(data):
                self._pipeline(data)
                return
        if self._relay is not None:
            self._relayReceived(data)
            return
        if data and self._arrival.due is None and not self._handlingRequest:
            if self._passThrough(data):
                return
            self._arrival.set(self.site.headerTimeout)
            if self._wholeHead(data):
                return
        super().dataReceived(data)

    def _wholeHead(self, data: bytes) -> bool:
        """
        Read a request whose head arrived whole, and is plain, at once
        rather than a line at a time: what twisted.web would do for it line
        by line, with fewer calls.  A head with anything twisted.web would
        refuse or read in a special way (a folded line, a header name that
        is not a token, a value with a control character, a
        C{Transfer-Encoding}, two C{Content-Length}s, too long a line, too
        many or too large headers) is left to the usual way.

        @return: whether it read the request.
        """
        if (
            self._buffer
            or not self.line_mode
            or self._busyReceiving
            or self.paused
            or not self.persistent
            or self._receivedHeaderSize
        ):
            return False
        end = data.find(b"\r\n\r\n")
        if end < 0 or end > self.totalHeadersSize + 2 * self.maxHeaders + 2:
            return False
        first = data.find(b"\r\n")
        requestLine = data[:first]
        if len(requestLine) > self.MAX_LENGTH or not _REQUEST_LINE.fullmatch(
            requestLine
        ):
            return False
        # The header lines, each with its line end.
        block = data[first + 2 : end + 2]
        if not _HEADER_LINES.fullmatch(block):
            return False
        # Split, not matched again: a pattern that strips the blanks
        # around a value backtracks over a long run of them.
        pairs = headerPairs(block)
        if len(pairs) > self.maxHeaders:
            return False
        size = end - 2 * len(pairs)
        if size > self.totalHeadersSize:
            return False
        if len(block) > self.MAX_LENGTH and any(
            len(line) > self.MAX_LENGTH for line in block.split(b"\r\n")
        ):
            return False
        length = False
        headers: list = []
        for name, value in pairs:
            name = _NAMES.get(name) or _canonical(name)
            if name == b"Content-Length":
                if length:
                    return False
                length = True
                # twisted.web reads the length, and checks it, itself.
                headers.append((None, b"Content-Length:" + value))
            elif name == b"Transfer-Encoding":
                return False
            else:
                headers.append((name, value))
        self.resetTimeout()
        # As LineReceiver.dataReceived: what follows the head waits in the
        # buffer, and what arrives meanwhile is added to it.
        self._buffer = data[end + 4 :]
        self._busyReceiving = True
        try:
            _HTTPChannel.lineReceived(self, requestLine)
            if getattr(self.transport, "disconnecting", False):
                return True
            # The headers as twisted.web's headerReceived would add them,
            # in one step: their names are canonical, and the values hold
            # nothing it would sanitise.
            raw = self.requests[-1].requestHeaders._rawHeaders
            for name, value in headers:
                if name is None:
                    if not _HTTPChannel.headerReceived(self, value):
                        return True
                elif name in raw:
                    raw[name].append(value)
                else:
                    raw[name] = [value]
            self._receivedHeaderSize = size
            _HTTPChannel.lineReceived(self, b"")
            if getattr(self.transport, "disconnecting", False):
                return True
        finally:
            self._busyReceiving = False
        if self._buffer:
            _LineReceiver.dataReceived(self, b"")
        return True

    # The requests of a connection whose client pipelines them (see
    # marconi.api.pipeline), served side by side: its pipeline, and the
    # idle timeout it suspends while requests are served.
    _first = True
    _pipelined: Optional[pipeline.Pipeline] = None
    _pipelineTimeOut: Optional[float] = None

    def _pipeline(self, data: bytes) -> None:
        self._pipelineTimeOut = self.setTimeout(None)
        self._pipelined = pipeline.Pipeline(self, self._member, _refusal)
        self._pipelined.received(data)

    def _member(self, slot: Any) -> "_Member":
        """
        A channel for one pipelined request at a time, on C{slot}.
        """
        member = _Member()
        member.factory = self.factory
        member.site = self.site
        member.requestFactory = self.requestFactory
        member.callLater = self.callLater  # type: ignore[method-assign]
        member.timeOut = None  # type: ignore[assignment]
        member.pipeline = self._pipelined
        member.makeConnection(slot)
        return member

    def busy(self) -> None:
        """
        A pipelined request is being served: no idle timeout meanwhile.
        """
        self._idle.due = None

    def idle(self) -> None:
        """
        Every pipelined request is answered: the idle timeout runs.
        """
        self.setTimeout(self._pipelineTimeOut)

    def arriving(self, fresh: bool) -> None:
        """
        A pipelined request has begun to arrive (C{fresh}: in this read):
        it must be whole within the site's bounds.
        """
        self._idle.due = None
        if fresh or self._arrival.due is None:
            self._arrival.set(self.site.headerTimeout + self.site.bodyTimeout)

    def arrived(self) -> None:
        """
        No pipelined request is arriving.
        """
        self._arrival.due = None

    @property
    def pipelinedHeadBound(self) -> int:
        """
        The most bytes a pipelined request's head may take before its end
        (what L{pipelinedProblem} lets through, with its line ends).
        """
        return self.MAX_LENGTH + _Member.totalHeadersSize + 2 * _Member.maxHeaders + 4

    def pipelinedProblem(self, head: bytes) -> Optional[tuple]:
        """
        What is wrong with the head of a pipelined request (its request
        line and header lines, each ending with CRLF), as the code, reason
        and description of its refusal; L{None} for a plain head, which
        its channel (a L{_Member}) reads as it is.  A head twisted.web
        would refuse, or read in a special way (a folded line, say), is
        refused in its turn, with an error of the API's form, and the
        requests after it are read as usual.
        """
        first = head.find(b"\r\n")
        if first > self.MAX_LENGTH:
            return (
                414,
                b"URI Too Long",
                f"The request line may not exceed {self.MAX_LENGTH} bytes.",
            )
        if not _REQUEST_LINE.fullmatch(head, 0, first):
            return (400, b"Bad Request", "The request line is malformed.")
        block = head[first + 2 :]
        if not _HEADER_LINES.fullmatch(block):
            return (400, b"Bad Request", "A header line is malformed.")
        count = block.count(b"\r\n")
        if count > _Member.maxHeaders:
            return (400, b"Bad Request", "The request has too many headers.")
        if len(block) - 2 * count > _Member.totalHeadersSize or (
            len(block) > self.MAX_LENGTH
            and any(len(line) > self.MAX_LENGTH for line in block.split(b"\r\n"))
        ):
            return (
                431,
                b"Request Header Fields Too Large",
                "The request headers are too large.",
            )
        return None

    # The pass-through of requests for queues other nodes own (see
    # marconi.api.passthrough): the request being passed through, and the
    # idle timeout it suspended.
    _relay: Any = None
    _relayTimeOut: Optional[float] = None
    # A relay is starting (its answer may come at once), and the bytes
    # after a request answered meanwhile, for dataReceived to read next.
    _starting = False
    _rest = b""

    def _passThrough(self, data: bytes) -> bool:
        """
        Offer the bytes that begin a request to the site's pass-through.

        @return: whether it took them (the request, and what follows it
            until it is answered, are its own).
        """
        passThrough = self.site.passThrough
        if (
            passThrough is None
            or self._buffer
            or not self.line_mode
            or self._busyReceiving
            or self.paused
            or not self.persistent
        ):
            return False
        relay = passThrough.take(self, data)
        if relay is None:
            return False
        self._relay = relay
        self._relayTimeOut = self.setTimeout(None)
        # As while twisted.web handles a request: a transport that drains
        # does not resume reading (the relay pauses it past a bound).
        self._handlingRequest = True
        if relay.received(data):
            self._start(relay)
        else:
            # The body is still to come, within the body deadline.
            self._arrival.set(self.site.bodyTimeout)
        return True

    def _relayReceived(self, data: bytes) -> None:
        relay = self._relay
        waiting = len(relay.data) < relay.end
        if relay.received(data) and waiting:
            self._arrival.due = None
            self._start(relay)

    def _start(self, relay: Any) -> None:
        self._starting = True
        try:
            relay.start()
        finally:
            self._starting = False

    def _relayEnded(self) -> None:
        """
        The request passed through is done with: the channel reads on,
        unless the client is not reading its answers (then it reads once
        the transport drained, see L{http.HTTPChannel.resumeProducing}).
        """
        self._relay = None
        self._handlingRequest = False
        self.setTimeout(self._relayTimeOut)
        if self._waitingForTransport:
            self._networkProducer.pauseProducing()
        else:
            self._networkProducer.resumeProducing()

    def relayed(self, rest: bytes) -> None:
        """
        The request passed through was answered: read the next one.
        """
        self._relayEnded()
        if not rest:
            return
        if self._starting:
            # Answered at once: the dataReceived below reads it next.
            self._rest = rest
        else:
            self.dataReceived(rest)

    def replay(self, data: bytes) -> None:
        """
        The request the pass-through took goes the usual way: C{data}, what
        arrived since it began, is read as if it had just arrived.
        """
        self._relayEnded()
        self._arrival.set(self.site.headerTimeout)
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

    def headerReceived(self, line: bytes) -> bool:
        name, colon, value = line.partition(b":")
        if (
            colon
            and name.lower() == b"transfer-encoding"
            and value.strip(b" \t").lower() != b"chunked"
        ):
            # twisted.web would ignore "identity" and read the body as the
            # next request.
            self._refuse(
                501,
                b"Not Implemented",
                "Request bodies may only use the chunked transfer coding.",
            )
            return False
        return super().headerReceived(line)

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
        self._arrival.set(self.site.bodyTimeout)
        # What twisted.web's allHeadersReceived does, reading the headers
        # without asking L{http.Headers} for each.
        request = self.requests[-1]
        headers = request.requestHeaders._rawHeaders
        if b"Cookie" in headers:
            request.parseCookies()
        self.persistent = self.checkPersistence(request, self._version)
        request.gotLength(self.length)
        expect = headers.get(b"Expect")
        if (
            expect
            and expect[0].lower() == b"100-continue"
            and self._version == b"HTTP/1.1"
        ):
            self._send100Continue()

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        if version != b"HTTP/1.1":
            return False
        connection = request.requestHeaders._rawHeaders.get(b"Connection")
        if connection and b"close" in [t.lower() for t in connection[0].split(b" ")]:
            request.responseHeaders._rawHeaders[b"Connection"] = [b"close"]
            return False
        return True

    def allContentReceived(self) -> None:
        self._arrival.due = None
        super().allContentReceived()

    def connectionMade(self) -> None:
        reactor = self.site.reactor
        self._arrival = _Deadline(reactor, self.callLater, lambda: self._tooSlow())
        self._idle = _Deadline(
            reactor, self.callLater, lambda: self.timeoutConnection()
        )
        super().connectionMade()

    def setTimeout(self, period: Optional[float]) -> Optional[float]:
        previous = self.timeOut
        self.timeOut = period  # type: ignore[assignment]
        if period is None:
            self._idle.due = None
        else:
            self._idle.set(period)
        return previous

    def resetTimeout(self) -> None:
        if self._idle.due is not None and self.timeOut is not None:
            self._idle.postpone(self.timeOut)

    # The addresses of the connection, asked of the transport once: each
    # request takes them, and a TCP transport makes a new address each
    # time (its own with a system call).
    _peer: Any = None
    _host: Any = None

    def getPeer(self) -> Any:
        if self._peer is None:
            self._peer = self.transport.getPeer()
        return self._peer

    def getHost(self) -> Any:
        if self._host is None:
            self._host = self.transport.getHost()
        return self._host

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._arrival.stop()
        self._idle.stop()
        relay, self._relay = self._relay, None
        if relay is not None:
            relay.connectionLost(reason)
        if self._pipelined is not None:
            self._pipelined.connectionLost(reason)
        super().connectionLost(reason)

    def _tooSlow(self) -> None:
        _log.info(
            "Closing a connection whose request arrived too slowly: {peer}",
            peer=str(self.transport.getPeer()),
        )
        if self._pipelined is not None:
            # Answers may be waiting their turn: nothing is written out of
            # it.
            self._refused = True
            self.timeoutConnection()
            return
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
        self._arrival.due = None
        requestId = newRequestId()
        self.transport.write(
            _rawError(code, reason, reason.decode(), description, requestId)
        )
        if timedOut:
            # Like an idle timeout: close, and abort if the client does not
            # read what is left.
            self.timeoutConnection()
        else:
            self.loseConnection()

    # An answer goes to a plain TCP connection at once, in one send (see
    # marconi.net): twisted.web writes its head and its body separately,
    # so the head is held until the body (or the end of the request)
    # joins it.
    _head: Optional[list] = None

    def writeHeaders(self, version, code, reason, headers) -> None:  # type: ignore[no-untyped-def]
        if not isinstance(headers, Headers):
            self._flushHead()
            super().writeHeaders(version, code, reason, headers)
            return
        head = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        self._head = head

    def write(self, data: bytes) -> None:
        head, self._head = self._head, None
        if head is not None:
            head.append(data)
            data = b"".join(head)
        writeNow(self.transport, data)

    def writeSequence(self, iovec: Sequence[bytes]) -> None:
        head, self._head = self._head, None
        writeNow(
            self.transport, b"".join(iovec if head is None else head + list(iovec))
        )

    def _flushHead(self) -> None:
        head, self._head = self._head, None
        if head is not None:
            writeNow(self.transport, b"".join(head))

    def requestDone(self, request: Any) -> None:
        self._flushHead()
        super().requestDone(request)


def _refusal(code: int, reason: bytes, description: str, close: bool) -> bytes:
    """
    An error answer, which closes the connection if C{close}.
    """
    return _rawError(
        code, reason, reason.decode(), description, newRequestId(), close=close
    )


class _Member(MarconiChannel):
    """
    The channel of one pipelined request at a time (see
    L{marconi.api.pipeline}): served the usual way, its answer kept for
    the pipeline.
    """

    pipeline: Any
    _first = False
    # A forwarded request carries the headers its client sent, within the
    # relaying node's bounds, and those the relaying node adds (its
    # signature, the host, the length): room for them.
    maxHeaders = MarconiChannel.maxHeaders + 16
    totalHeadersSize = MarconiChannel.totalHeadersSize + 4096

    def _passThrough(self, data: bytes) -> bool:
        return False

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        self.pipeline.answered(self)


class MarconiSite(server.Site):
    """
    The site of a Marconi node: L{LimitedRequest}s, no tracebacks to
    clients, and a bound on how long an idle connection stays open.

    Each answered request is reported to the C{monitor} and, unless
    C{accessLog} is false, logged as one C{marconi.access} event, once in
    the cluster: a request another node forwarded here is logged by that
    node, under the request id of this node's answer.

    @param extraResources: resources served at exact paths beside the API
        (C{{b"/metrics": ...}}), tried before it.
    @param headerTimeout: seconds from the first byte of a request to the
        end of its headers (see L{MarconiChannel}).
    @param bodyTimeout: seconds from the end of a request's headers to the
        end of its body.
    @param ringVersion: in a cluster, returns the version of the node's
        ring, sent on every answer as C{X-Marconi-Ring-Version}.
    """

    # A plain HTTP/1.1 channel, where twisted.web's factory would build one
    # that can also switch to HTTP/2.
    protocol = MarconiChannel  # type: ignore[assignment]
    requestFactory = LimitedRequest
    displayTracebacks = False
    #: In a cluster, what passes requests through to the node owning
    #: their queue (L{marconi.api.passthrough.PassThrough}).
    passThrough: Any = None
    #: Whether a client may pipeline its requests (see
    #: L{marconi.api.pipeline}).
    pipelining = True

    def __init__(
        self,
        resource,
        maxRequestBody: int,
        reactor=None,
        timeout: float = 60,
        monitor: Optional[IMonitor] = None,
        accessLog: bool = True,
        extraResources: Optional[Mapping[bytes, Any]] = None,
        headerTimeout: float = 10,
        bodyTimeout: float = 60,
        ringVersion: Optional[Callable[[], str]] = None,
    ):
        super().__init__(resource, reactor=reactor, timeout=timeout)
        self.maxRequestBody = maxRequestBody
        self.headerTimeout = headerTimeout
        self.bodyTimeout = bodyTimeout
        self.monitor = NullMonitor() if monitor is None else monitor
        self.accessLog = accessLog
        self.extraResources = dict(extraResources or {})
        self.ringVersion = ringVersion

    def getResourceFor(self, request: Any) -> Any:
        if self.extraResources:
            extra = self.extraResources.get(request.path)
            if extra is not None:
                request.site = self
                request.sitepath = []
                request.route = request.path.decode("ascii").strip("/")
                return extra
        if self.resource.isLeaf:
            # What twisted.web's traversal would find, without it.
            request.site = self
            request.sitepath = list(request.prepath)
            return self.resource
        return super().getResourceFor(request)

    def log(self, request: Any) -> None:
        """
        Measure and log an answered request.  This replaces twisted.web's
        combined log line, which would hold the query string and headers.
        """
        route = request.route or "unmatched"
        status = request.code
        now = self.reactor.seconds()
        seconds = now - request.started if request.started else 0.0
        self.monitor.requestServed(route, status, seconds)
        if self.accessLog and not request.forwarded:
            requestId = _requestId(request)
            project = request.project or "-"
            method = _text(request.method)
            path = _printable(request.path)
            size = request.sentLength
            # ACCESS_FORMAT filled in, with %, which takes a third of the
            # time str.format_map does.
            line = _ACCESS_LINE % (
                method,
                path,
                status,
                seconds,
                size,
                project,
                requestId,
                route,
            )
            keep = _lineKeeper(accessLog)
            if keep is not None:
                try:
                    kept = keep(line, now)
                except Exception:
                    # The observer could not write (a full disk, a closed
                    # pipe): as for an event, which the log publisher
                    # guards, the request goes on; the failure is logged.
                    _log.failure("The access log could not be written")
                    return
                if kept:
                    return
            fields = {
                "request_id": requestId,
                "project": project,
                "method": method,
                "path": path,
                "status": status,
                "duration": seconds,
                "size": size,
                "route": route,
            }
            _emit(accessLog, _preformatted(line), fields, now)


def _lineKeeper(logger: Logger) -> Optional[Callable[[str, float], bool]]:
    """
    How the only observer of C{logger}'s events keeps an access line as a
    line, if it is the only one and offers it (C{keepAccessLine}, see
    L{marconi.observability.logs.StreamObserver}): then no event is made,
    published and formatted for the line, which was most of what logging
    a request cost.  With any other observer (a JSON or syslog driver, a
    test's), or more than one, every access line is an event.
    """
    publisher = logger.observer
    if publisher.__class__ is not LogPublisher:
        return None
    observers = getattr(publisher, "_observers", None)
    if observers.__class__ is list and len(observers) == 1:
        return getattr(observers[0], "keepAccessLine", None)
    return None


def _emit(logger: Logger, text: str, fields: dict, when: float) -> None:
    """
    Emit the info event C{logger.info(text, **fields)} would, at C{when}
    (the site's clock), without the check of its level and the two copies
    of its fields that each call of L{Logger.info} makes: the access log
    emits one event for every request.
    """
    fields.update(
        log_logger=logger,
        log_level=LogLevel.info,
        log_namespace=logger.namespace,
        log_source=logger.source,
        log_format=text,
        log_time=when,
    )
    logger.observer(fields)


def _requestId(request: Any) -> Optional[str]:
    """
    The request id the client was answered with: a forwarded request's
    answer carries the owner's (see L{marconi.cluster.forward.relayHeaders}).
    """
    headers = request.responseHeaders
    if headers.__class__ is Headers:
        sent = headers._rawHeaders.get(_REQUEST_ID)
    else:
        sent = headers.getRawHeaders(b"x-openstack-request-id")
    return sent[-1].decode("latin-1") if sent else request.requestId


def _preformatted(text: str) -> str:
    """
    C{text}, already formatted, as a log format that formats to itself.

    An access log event carries its fields as any event does, but its
    format is its own line, formatted once here with C{str.format}: every
    observer then formats it without looking up a field (twisted.logger's
    formatting of each field in Python was most of the access log's cost).
    """
    if "{" in text or "}" in text:
        return text.replace("{", "{{").replace("}", "}}")
    return text
