"""
The pass-through of a request for a queue another node of the cluster
owns.

A node's channel (L{marconi.api.http.MarconiChannel}) offers the bytes of
each request, as they arrive between requests, to L{PassThrough.take}.  A
simple request on one of the hot routes (see L{marconi.api.fast}) is read
here from its bytes, with no L{twisted.web.server.Request}: an HTTP/1.1
request line with a path, well-formed headers within the channel's bounds,
a body of a declared C{Content-Length} within the site's limit.  It is
authenticated exactly as the API does (L{MarconiAPI._context}: the auth
driver, pre-signed URL headers, the project and client ids, the version's
rules), and if its queue belongs to another node it is forwarded there,
signed (the cluster router's C{forwardRaw}, which keeps its retries, its
timeouts and the failure detector), and the owner's answer is written to
the client as it came, less the hop-by-hop headers.  The relaying node
writes the request's one access log line, under the owner's request id.

Anything else takes the usual way, unchanged: the bytes taken are given to
twisted.web as if they had just arrived (L{Relay.fallBack}).  That is so
for another HTTP version, a chunked, gzip'd or C{Expect}ing request, a
request carrying forwarding headers (C{X-Marconi-*}: only the usual way
checks them, and refuses them from clients), a head split over several
reads, a target that is not a plain path, a route other than the hot ones,
a queue this node serves itself, and any request the API would answer with
an error before forwarding it (the usual way finds the error again).  See
docs/cluster.rst, "What a forwarded request costs".
"""

import re
from typing import Any, Callable, Optional
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES

from marconi.api import media, presigned, render, versions
from marconi.api.errors import statusOf
from marconi.api.fast import findRoute
from marconi.api.http import RING_VERSION_HEADER, _targetProblem, newRequestId
from marconi.api.media import gzip
from marconi.cluster.forward import NOT_FORWARDED
from marconi.core.errors import MarconiError
from marconi.net import TOKEN, headerPairs, headerValues, writeNow

_log = Logger()

#: Request headers that make a request take the usual way; and any header
#: whose name starts with C{x-marconi-} (forwarding headers).
_UNUSUAL = frozenset(
    (b"expect", b"content-encoding", b"transfer-encoding", b"upgrade", b"trailer")
)
_FORWARDING = b"x-marconi-"
#: A forwarding header line as nodes send it (see
#: L{marconi.cluster.signing}).
_SIGNED = b"\r\n" + _FORWARDING
#: Header lines (a name, RFC 9110 5.6.2, and a value without NUL, CR or
#: LF), each ending with CRLF, and one of them split into its name and
#: value.
_HEADERS = re.compile(rb"(?:" + TOKEN + rb":[^\r\n\x00]*\r\n)*")
#: Bytes twisted.web refuses in a request target.
_CONTROL = re.compile(rb"[\x00-\x20\x7f]")
#: Answer headers not passed on: hop-by-hop (RFC 9110 7.6.1), and the
#: length, which is written anew.
_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    )
)
#: The request id's header line, in a head in lower case.
_REQUEST_ID = b"\r\nx-openstack-request-id:"
#: The one C{Vary} a large answer is written with, as a line of a head in
#: lower case.
_VARY = b"\r\nvary: accept-encoding\r\n"
#: Contexts kept for one header block (L{_Block.contexts}), at most.
_CONTEXTS = 16
#: Bytes of requests pipelined behind one being passed through that are
#: kept before the client is no longer read from.
PIPELINED = 65536


class PassThrough:
    """
    Decides which requests a node's public site passes through to their
    owner, and passes them.

    @param api: the node's L{marconi.api.app.MarconiAPI} (it authenticates
        and routes).
    @param router: the node's cluster router: C{forwardRaw} forwards.
    @param forwarded: called with the owner's name for every request passed
        through (the console's activity).
    """

    def __init__(
        self, api: Any, router: Any, forwarded: Optional[Callable] = None
    ) -> None:
        self.api = api
        self.router = router
        self.labels = api.app.labels
        self.forwarded = forwarded
        #: What recent request lines and header blocks read as.
        self._targets = _Recent()
        self._blocks = _Recent()

    def take(self, channel: Any, data: bytes) -> Optional["Relay"]:
        """
        The L{Relay} of the request C{data} begins with, if it may be passed
        through; L{None} if it takes the usual way.  C{data} is what
        arrived at the start of a request.

        What is read of a request line, and of a block of header lines, is
        a function of their bytes alone (the channel's bounds are checked
        apart): it is kept for the next request that sends the same bytes
        (L{_Recent}), as a client's requests on a queue mostly do.
        """
        end = data.find(b"\r\n\r\n")
        if end < 0 or end > channel.totalHeadersSize:
            return None
        if data.find(_SIGNED, 0, end) >= 0:
            # A request a node forwarded here (their names are sent in
            # lower case): the usual way checks its signature, and nothing
            # here is worth reading it for.
            return None
        first = data.find(b"\r\n")
        if first > channel.MAX_LENGTH:
            return None
        requestLine = data[:first]
        target = self._targets.get(requestLine, _UNREAD)
        if target is _UNREAD:
            target = self._targets.keep(requestLine, _readTarget(requestLine))
        if target is None:
            return None
        method, uri, path, found = target
        lines = data[first : end + 2]
        block = self._blocks.get(lines)
        if block is None:
            # Read at once only for a queue another node serves: a request
            # for one of this node's own takes the usual way at once.
            named = _namedProject(lines)
        else:
            if block is _USUAL:
                return None
            named = block.named
        guess = self._elsewhere(found[1], named)
        if guess is None:
            return None
        if block is None:
            block = self._blocks.keep(lines, _readBlock(lines, named))
            if block is _USUAL:
                return None
        if (
            block.count > channel.maxHeaders
            or block.longest > channel.MAX_LENGTH
            or block.length > channel.site.maxRequestBody
        ):
            return None
        relay = Relay(
            self,
            channel,
            method,
            uri,
            path,
            block.headers,
            end + 4,
            block.length,
            block.close,
            found,
        )
        relay.guess = guess
        relay.block = block
        return relay

    def _elsewhere(self, kwargs: dict, named: Optional[str]) -> Optional[tuple]:
        """
        Whether the request is likely for a queue another node serves, by
        the project it names (in its path, or its C{X-Project-ID}), before
        it is authenticated: a request for one of this node's own queues
        takes the usual way at once, and pays nothing more here.  Once
        authenticated, the request is routed by its project again (unless
        it is the one named).

        @param named: the project its first C{X-Project-ID} names, if any.
        @return: L{None} if the request takes the usual way, else the
            project named and its queue's node (C{(None, None)} if it names
            none).
        """
        project = kwargs.get("project_id")
        if project is None:
            if named is None:
                return (None, None)
            project = named
        owner = self.owner(project, kwargs["queue"])
        return None if owner is None else (project, owner)

    def owner(self, project: str, queue: str) -> Optional[str]:
        """
        The node a request for C{queue} of C{project} is passed to: its
        holder, if that is another node and up.  Whatever else the router
        would decide (this node serves the queue, or stands in for its
        holder; the queue is moving; the rings disagree) the usual way
        decides.  Nothing is counted here: the router's own C{route} is
        left to the usual way.
        """
        router = self.router
        try:
            holder = router.holder(project, queue)
        except Exception:
            return None
        if holder == router.config.nodeName or not router.membership.isUp(holder):
            return None
        return holder


class _Sending:
    """
    What a relay waits for while the router sends its request: nothing to
    cancel yet.
    """

    def cancel(self) -> None:
        pass


_SENDING = _Sending()


#: A request line not read yet (L{None} is one that takes the usual way).
_UNREAD = object()


def _readTarget(requestLine: bytes) -> Optional[tuple]:
    """
    What a request line holds, if it may be passed through: its method,
    target, path and hot route (L{findRoute}); else L{None}.
    """
    parts = requestLine.split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1":
        return None
    method, uri, _ = parts
    path = uri.partition(b"?")[0]
    if _targetProblem(uri, path) is not None or _CONTROL.search(uri):
        # twisted.web answers a target with control bytes itself.
        return None
    segments = path[1:].split(b"/")
    if b"%" in path:
        segments = [unquote_to_bytes(s) for s in segments]
    found = findRoute(method, segments)
    if found is None:
        return None
    return (method, uri, path, found)


def _namedProject(lines: bytes) -> Optional[str]:
    """
    The project the first C{X-Project-ID} of the header C{lines} (each
    after a CRLF) names, if any.
    """
    named = headerValues(lines, lines.lower(), b"x-project-id")
    return named[0].decode("latin-1") if named else None


class _Block:
    """
    What a block of request header lines reads as.

    @ivar headers: the L{Headers} (never changed once read: the requests
        that send the same block share them).
    @ivar length: the body's declared length.
    @ivar close: the client asks to close the connection after it.
    @ivar count: how many header lines.
    @ivar longest: the length of the longest line.
    @ivar named: the project the first C{X-Project-ID} names, if any.
    @ivar contexts: what requests sending these headers were authenticated
        as, when that depends on nothing else (see L{Relay.start}).
    """

    __slots__ = (
        "headers",
        "length",
        "close",
        "count",
        "longest",
        "named",
        "contexts",
    )

    def __init__(
        self,
        headers: "Headers",
        length: int,
        close: bool,
        count: int,
        longest: int,
        named: Optional[str],
    ) -> None:
        self.headers = headers
        self.length = length
        self.close = close
        self.count = count
        self.longest = longest
        self.named = named
        self.contexts: dict = {}


#: A header block that makes a request take the usual way.
_USUAL: Any = object()


def _readBlock(lines: bytes, named: Optional[str]) -> Any:
    """
    Read the header C{lines} of a request (each after a CRLF, the last
    followed by one): a L{_Block}, or L{_USUAL} if the request takes the
    usual way for them (a malformed line, a header read in a special way,
    a forwarding header, a malformed length or host).
    """
    block = lines[2:]
    if not _HEADERS.fullmatch(block):
        return _USUAL
    pairs = headerPairs(block)
    headers = Headers()
    values = headers._values
    names = headers._names
    # The lines forwarded to the owner: those checked above, less the
    # ones not forwarded (hop-by-hop, the length, the host).
    forwarded = []
    length = None
    close = False
    for name, value in pairs:
        lower = name.lower()
        if lower in _UNUSUAL or lower.startswith(_FORWARDING):
            return _USUAL
        if lower in NOT_FORWARDED:
            if lower == b"content-length":
                if length is not None or not value.isdigit():
                    return _USUAL
                length = int(value)
            elif lower == b"connection":
                close = b"close" in value.lower().replace(b",", b" ").split()
            elif lower == b"host" and not _utf8(value):
                # Klein answers a host name that is not UTF-8 itself.
                return _USUAL
        else:
            forwarded.append(b"%s: %s\r\n" % (name, value))
        # Headers.add, inline.
        known = values.get(lower)
        if known is None:
            values[lower] = [value]
            names[lower] = name
        else:
            known.append(value)
    headers.forwardLines = b"".join(forwarded)
    longest = max(len(line) for line in block.split(b"\r\n"))
    return _Block(headers, length or 0, close, len(pairs), longest, named)


class _Recent(dict):
    """
    What recent keys (request lines, header blocks) read as, bounded: a
    key longer than L{MAX_KEY} is not kept, and when L{MAX_KEYS} keys or
    L{MAX_BYTES} bytes of keys are kept they are all forgotten.  The bound
    in bytes holds the memory a client can fill with long keys to a few
    times that; the count lets about a thousand clients, each with its own
    header block (its Client-ID), keep theirs.
    """

    MAX_KEYS = 4096
    MAX_KEY = 4096
    MAX_BYTES = 512 * 1024

    #: The bytes of the keys kept.
    size = 0

    def clear(self) -> None:
        super().clear()
        self.size = 0

    def keep(self, key: bytes, value: Any) -> Any:
        """
        Keep C{value} for C{key}, and return it.
        """
        length = len(key)
        if length <= self.MAX_KEY:
            if len(self) >= self.MAX_KEYS or self.size + length > self.MAX_BYTES:
                self.clear()
            self.size += length
            self[key] = value
        return value


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class Headers:
    """
    A request's headers as they came, read as the API reads
    L{twisted.web.http_headers.Headers}.
    """

    __slots__ = ("_values", "_names", "forwardLines")

    def __init__(self) -> None:
        self._values: dict = {}
        self._names: dict = {}
        #: The header lines to forward to the owner, if read (see
        #: L{marconi.cluster.router.ClusterRouter.forwardRaw}), which sends
        #: them as they are: only L{PassThrough.take} sets them, from lines
        #: it has checked (names are tokens, values hold no CR, LF or NUL).
        self.forwardLines: Optional[bytes] = None

    def add(self, name: bytes, lower: bytes, value: bytes) -> None:
        values = self._values.get(lower)
        if values is None:
            self._values[lower] = [value]
            self._names[lower] = name
        else:
            values.append(value)

    def getAllRawHeaders(self) -> Any:
        names = self._names
        for lower, values in self._values.items():
            yield names[lower], values

    def getRawHeaders(self, name: Any, default: Any = None) -> Any:
        if isinstance(name, str):
            name = name.encode("latin-1")
        return self._values.get(name.lower(), default)

    def hasHeader(self, name: Any) -> bool:
        return self.getRawHeaders(name) is not None


class Relay:
    """
    A request being passed through.  It is what the API reads of a request
    to authenticate it, and what L{marconi.api.http.MarconiSite.log} reads
    of an answered one.

    @ivar data: the bytes received since the request began: its head, its
        body, and any pipelined after it.
    """

    forwarded = False
    project: Optional[str] = None
    media: Any = None
    route: Optional[str] = None
    code = 0
    sentLength = 0
    requestId: Optional[str] = None
    responseHeaders: Any = None
    clientproto = b"HTTP/1.1"
    #: The project the request named, and the node of its queue.
    guess: tuple = (None, None)
    #: What its header lines read as (L{_Block}).
    block: Any = None
    #: It carries no forwarding header (L{PassThrough.take} leaves any
    #: such request to the usual way): the router has no signature to
    #: look for.
    unsigned = True

    def __init__(
        self,
        passThrough: PassThrough,
        channel: Any,
        method: bytes,
        uri: bytes,
        path: bytes,
        headers: Headers,
        bodyStart: int,
        length: int,
        close: bool,
        found: tuple,
    ) -> None:
        self.passThrough = passThrough
        self.channel = channel
        self.method = method
        self.uri = uri
        self.path = path
        self.requestHeaders = headers
        self.end = bodyStart + length
        self.bodyStart = bodyStart
        self.close = close
        self.endpoint, self.kwargs = found
        self.started = channel.site.reactor.seconds()
        self.data = b""
        #: What the relay waits for (its C{cancel} gives up on it).
        self._running: Any = None
        self._gone = False
        self._paused = False

    def getHeader(self, name: bytes) -> Optional[bytes]:
        values = self.requestHeaders.getRawHeaders(name)
        return None if values is None else values[-1]

    def getClientAddress(self) -> Any:
        return self.channel.transport.getPeer()

    def received(self, data: bytes) -> bool:
        """
        More bytes arrived: the body, or requests pipelined after this one
        (kept until it is answered, and the client no longer read from
        while they are more than L{PIPELINED}).

        @return: whether the body is complete.
        """
        self.data += data
        complete = len(self.data) >= self.end
        if complete and len(self.data) - self.end > PIPELINED and not self._paused:
            self._paused = True
            self.channel.transport.pauseProducing()
        return complete

    def start(self) -> None:
        """
        The whole request arrived: authenticate it, then pass it through.

        The API's C{_context} is a coroutine, run here by hand: with an
        auth driver that answers at once (its L{Deferred} already fired),
        it ends in its first step, and the request is forwarded from here
        with no L{Deferred} of its own.  One that waits for its driver is
        handed, where it waits, to L{Deferred.fromCoroutine}, which
        resumes it when the driver answers (a coroutine awaiting a
        L{Deferred} that has not fired looks at it again when resumed).

        With an auth driver that trusts the headers (C{trustsHeaders}: the
        project is the one they name), a request sending none of the
        pre-signed URL headers is authenticated by its headers, its
        version, the project in its path and its method alone: what the
        first request of a header block was authenticated as (its
        context, and the media type of its answer) serves the next ones
        with the same (L{_Block.contexts}).  Any other driver is asked for
        every request: a token may expire or be revoked.
        """
        kwargs = self.kwargs
        api = self.passThrough.api
        block = self.block
        key = (kwargs["version"], kwargs.get("project_id"), self.method)
        if block is not None:
            known = block.contexts.get(key)
            if known is not None and known[0] is api.auth and known[1] is api.limits:
                ctx = known[2]
                self.media = known[3]
                self.project = ctx.project
                try:
                    self._authenticated(ctx)
                except Exception:
                    self._failed(Failure())
                return
        context = api._context(self, kwargs["version"], kwargs.get("project_id"))
        try:
            context.send(None)
        except StopIteration as done:
            ctx = done.value
        except Exception:
            # An error the usual way answers (it finds it again).
            self.fallBack()
            return
        else:
            ctx = None
        if ctx is not None:
            if (
                block is not None
                and getattr(api.auth, "trustsHeaders", False)
                and not ctx.forwarded
                and block.headers._values.keys().isdisjoint(presigned.HEADERS)
            ):
                if len(block.contexts) >= _CONTEXTS:
                    block.contexts.clear()
                block.contexts[key] = (api.auth, api.limits, ctx, self.media)
            try:
                self._authenticated(ctx)
            except Exception:
                self._failed(Failure())
            return
        authenticating = Deferred.fromCoroutine(context)
        self._running = authenticating
        authenticating.addCallbacks(self._authenticated, self._notAuthenticated)
        authenticating.addErrback(self._failed)

    def connectionLost(self, reason: Failure) -> None:
        """
        The client went away: stop forwarding (the owner's answer, if it
        comes, is dropped).
        """
        self._gone = True
        running, self._running = self._running, None
        if running is not None:
            running.cancel()

    def _notAuthenticated(self, failure: Failure) -> None:
        self._running = None
        if not failure.check(CancelledError):
            # An error the usual way answers (it finds it again).
            self.fallBack()

    def _authenticated(self, ctx: Any) -> None:
        """
        Forward the request for the project C{ctx} acts for: the router
        calls L{_settled} with the owner's answer (no L{Deferred}).
        """
        self._running = None
        passThrough = self.passThrough
        project, owner = self.guess
        if ctx.project != project:
            owner = passThrough.owner(ctx.project, self.kwargs["queue"])
        if owner is None or ctx.forwarded:
            self.fallBack()
            return
        if passThrough.forwarded is not None:
            passThrough.forwarded(owner)
        # Until the router returns: L{_settled} may be called from within
        # (a request that fails at once), and then there is nothing to wait
        # for.
        self._running = _SENDING
        try:
            forwarding = passThrough.router.forwardRaw(
                self.method,
                self.uri,
                self.requestHeaders,
                self.data[self.bodyStart : self.end],
                ctx.project,
                owner,
                self._settled,
            )
        except MarconiError as e:
            self._running = None
            self._error(e)
            return
        if self._running is _SENDING:
            self._running = forwarding

    def _settled(self, result: Any) -> None:
        """
        The forwarding ended: write the owner's answer, or the error.
        """
        self._running = None
        try:
            if not isinstance(result, Failure):
                self._answered(result)
            elif isinstance(result.value, MarconiError):
                self._error(result.value)
            else:
                self._failed(result)
        except Exception:
            self._failed(Failure())

    def _answered(self, answer: Any) -> None:
        if self._gone:
            return
        head = answer.head
        body = answer.body
        if head and self._asItCame(answer.lowered, len(body)):
            lowered = answer.lowered
            # The last request id of the head, if any (names are found
            # after a CRLF; the status line holds none).
            at = lowered.rfind(_REQUEST_ID)
            if at < 0:
                requestId = None
            else:
                start = at + len(_REQUEST_ID)
                requestId = head[start : head.find(b"\r\n", start)].strip(b" \t")
            self._sent(answer.code, head + body, len(body), requestId)
        else:
            self._answer(answer.code, answer.phrase, answer.headers.items(), body)

    def _asItCame(self, lowered: bytes, length: int) -> bool:
        """
        Whether the owner's answer head (C{lowered}, in lower case; its
        body delimited by its one C{Content-Length}, and no hop-by-hop
        header in it, see L{marconi.cluster.wire.Head.raw}) is written to
        the client as it came: the body is written as it is (not
        compressed), and the client keeps the connection; so L{_answer}
        would write the same headers.
        """
        if self.close or self.method == b"HEAD":
            return False
        if length < gzip.THRESHOLD:
            return True
        # A large body: the one Vary an answer of the API has, and no
        # compression asked for.
        if lowered.count(b"\r\nvary:") != 1 or _VARY not in lowered:
            return False
        accepted = self.requestHeaders._values.get(b"accept-encoding")
        return not (accepted and gzip.wanted(accepted[-1], length))

    def fallBack(self) -> None:
        """
        Give the request to twisted.web, which serves it the usual way.
        """
        if not self._gone:
            self.channel.replay(self.data)

    def _failed(self, failure: Failure) -> None:
        if failure.check(CancelledError) or self._gone:
            return
        _log.failure(
            "Unexpected error passing {method} {path} through",
            failure,
            method=self.method,
            path=self.path,
        )
        body = render.document(
            {
                "title": "Internal error",
                "description": "The server failed to handle the request.",
            }
        )
        self._write(500, [], body, media.JSON_MEDIA.contentType)

    def _error(self, error: MarconiError) -> None:
        """
        Answer an error of the forwarding as the API's error handler does.
        """
        policy = versions.forPath(self.path)
        code = policy.status(error, statusOf(error))
        body = render.document(
            {"title": policy.title(error), "description": error.description}
        )
        serializer = self.media or media.JSON_MEDIA
        if serializer is not media.JSON_MEDIA:
            body = serializer.text(body)
        headers = list(getattr(error, "headers", {}).items())
        self._write(code, headers, body, serializer.contentType)

    def _write(self, code: int, headers: list, body: bytes, contentType: bytes) -> None:
        """
        Answer with this node's request id and ring version.
        """
        headers = [
            *headers,
            (b"Content-Type", contentType),
            (b"X-OpenStack-Request-Id", newRequestId().encode("ascii")),
        ]
        ringVersion = self.channel.site.ringVersion
        if ringVersion is not None:
            headers.append((RING_VERSION_HEADER, ringVersion().encode("ascii")))
        self._answer(code, RESPONSES.get(code, b"Error"), headers, body)

    def _answer(self, code: int, phrase: bytes, pairs: Any, body: bytes) -> None:
        """
        Write an answer to the client, log it, and let the channel read the
        next request.
        """
        if self._gone:
            return
        self._running = None
        lines = [b"HTTP/1.1 %d %s\r\n" % (code, phrase)]
        requestId = None
        large = len(body) >= gzip.THRESHOLD
        for name, value in pairs:
            lower = name.lower()
            if lower in _HOP or (large and lower == b"vary"):
                continue
            if lower == b"x-openstack-request-id":
                requestId = value
            lines.append(b"%s: %s\r\n" % (name, value))
        if large:
            # As the API answers (the owner was not asked for gzip).
            lines.append(b"Vary: Accept-Encoding\r\n")
            if gzip.wanted(self.getHeader(b"accept-encoding"), len(body)):
                body = gzip.compress(body)
                lines.append(b"Content-Encoding: gzip\r\n")
        lines.append(b"Content-Length: %d\r\n" % len(body))
        if self.close:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        lines.append(body)
        self._sent(code, b"".join(lines), len(body), requestId)

    def _sent(
        self, code: int, data: bytes, length: int, requestId: Optional[bytes]
    ) -> None:
        """
        Log the answer C{data} (its body C{length} bytes, with the request
        id C{requestId}), write it, and let the channel read the next
        request.
        """
        channel = self.channel
        self.code = code
        self.sentLength = length
        if requestId is not None:
            self.requestId = requestId.decode("latin-1")
        self.responseHeaders = _Sent(requestId)
        self.route = self.passThrough.labels.get(self.endpoint, self.endpoint)
        # Logged before it is written, since it leaves at once: the line is
        # kept before the client can have the answer.
        channel.site.log(self)
        writeNow(channel.transport, data)
        if self.close:
            channel.loseConnection()
        else:
            channel.relayed(self.data[self.end :])


class _Sent:
    """
    The headers of an answer written, as the access log reads them: the
    request id only.
    """

    __slots__ = ("_requestId",)

    def __init__(self, requestId: Optional[bytes]) -> None:
        self._requestId = requestId

    def getRawHeaders(self, name: bytes, default: Any = None) -> Any:
        if self._requestId and (
            name == _REQUEST_ID_NAME or name.lower() == _REQUEST_ID_NAME
        ):
            return [self._requestId]
        return default


_REQUEST_ID_NAME = b"x-openstack-request-id"
