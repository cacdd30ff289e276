"""
The pass-through of a request for a queue another node of the cluster
owns: once twisted.web has parsed its head and read its body, a simple
request on one of the hot routes (see L{marconi.api.fast}) is
authenticated exactly as the API does (L{MarconiAPI._context}: the auth
driver, pre-signed URL headers, the project and client ids, the version's
rules), forwarded signed to the owner (L{IRouter}'s C{forwardRaw}), and the
owner's answer is written to the client as it came, less the hop-by-hop
headers.  No request is rendered: no resource, no Klein, no
L{twisted.web.server.Request} processing or answer serialization.

Anything else takes the usual way, unchanged (L{Relay} hands the request
back to twisted.web): another HTTP version, a chunked, gzip'd or
C{Expect}ing request, one carrying forwarding headers, a refused body, a
target that is not a plain path, a route other than the hot ones, a queue
this node serves itself, and any request the API would answer with an
error before forwarding it (it is answered by the usual way, which finds
the error again).  See docs/cluster.rst, "What a forwarded request costs".
"""

from typing import Any, Callable, Optional
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES

from marconi.api import media, render, versions
from marconi.api.errors import statusOf
from marconi.api.fast import findRoute
from marconi.api.http import RING_VERSION_HEADER, _targetProblem, newRequestId
from marconi.api.media import gzip
from marconi.core.errors import MarconiError

_log = Logger()

#: Request headers that make a request take the usual way; and any header
#: whose name starts with C{x-marconi-} (forwarding headers, which only the
#: usual way checks and refuses).
_UNUSUAL = frozenset(
    (b"expect", b"content-encoding", b"transfer-encoding", b"upgrade", b"trailer")
)
_FORWARDING = b"x-marconi-"
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

    def relay(
        self, channel: Any, request: Any, command: bytes, uri: bytes, version: bytes
    ) -> Optional["Relay"]:
        """
        The L{Relay} that takes C{request} (its head and body received,
        not yet processed) in its place, or L{None} if it takes the usual
        way at once.
        """
        if version != b"HTTP/1.1" or request.content is None:
            return None
        if getattr(request, "_refused", False):
            return None
        for name, values in request.requestHeaders.getAllRawHeaders():
            lower = name.lower()
            if lower in _UNUSUAL or lower.startswith(_FORWARDING):
                return None
            if lower == b"host" and not _utf8(values[0]):
                # Klein answers a host name that is not UTF-8 itself.
                return None
        path = uri.partition(b"?")[0]
        if _targetProblem(uri, path) is not None:
            return None
        postpath = [unquote_to_bytes(s) for s in path[1:].split(b"/")]
        found = findRoute(command, postpath)
        if found is None:
            return None
        return Relay(self, channel, request, command, uri, path, version, found)


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class Relay:
    """
    A request being passed through: it stands in the channel's queue of
    requests for the twisted.web request it was received as, until it is
    answered (or it hands that request back, see L{fallBack}).

    It carries what L{marconi.api.http.MarconiSite.log} reads of an
    answered request.
    """

    forwarded = False
    project: Optional[str] = None
    route: Optional[str] = None
    code = 0
    sentLength = 0
    requestId: Optional[str] = None
    responseHeaders: Any = None

    def __init__(
        self,
        passThrough: PassThrough,
        channel: Any,
        request: Any,
        command: bytes,
        uri: bytes,
        path: bytes,
        version: bytes,
        found: tuple,
    ) -> None:
        self.passThrough = passThrough
        self.channel = channel
        self.request = request
        self.method = command
        self.uri = uri
        self.path = path
        self.clientproto = version
        self.endpoint, self.kwargs = found
        self.started = request.started
        self._running: Optional[Deferred] = None
        self._gone = False

    def requestReceived(self, command: bytes, uri: bytes, version: bytes) -> None:
        """
        The channel hands over the request: pass it through.
        """
        self._running = Deferred.fromCoroutine(self._pass())
        self._running.addErrback(self._failed)

    def connectionLost(self, reason: Failure) -> None:
        """
        The client went away: stop forwarding (the owner's answer, if it
        comes, is dropped).
        """
        self._gone = True
        running, self._running = self._running, None
        if running is not None:
            running.cancel()

    async def _pass(self) -> None:
        request = self.request
        kwargs = self.kwargs
        # What the API reads of the request to authenticate it.
        request.method = self.method
        request.uri = self.uri
        request.path = self.path
        request.clientproto = self.clientproto
        passThrough = self.passThrough
        api = passThrough.api
        queue = kwargs["queue"]
        try:
            ctx = await api._context(
                request, kwargs["version"], kwargs.get("project_id")
            )
            owner = api.router.route(ctx.project, queue)
        except CancelledError:
            raise
        except Exception:
            # An error the usual way answers (it finds it again).
            owner = None
        if owner is None or ctx.forwarded:
            self.fallBack()
            return
        self.project = ctx.project
        if passThrough.forwarded is not None:
            passThrough.forwarded(owner)
        request.content.seek(0)
        try:
            answer = await passThrough.router.forwardRaw(
                self.method,
                self.uri,
                request.requestHeaders,
                request.content.read(),
                ctx.project,
                owner,
            )
        except MarconiError as e:
            self._error(e)
            return
        self._answer(answer.code, answer.phrase, answer.headers.items(), answer.body)

    def fallBack(self) -> None:
        """
        Hand the request back to twisted.web, which serves it the usual way.
        """
        if self._gone:
            return
        channel = self.channel
        channel.requests[channel.requests.index(self)] = self.request
        self.request.requestReceived(self.method, self.uri, self.clientproto)

    def _failed(self, failure: Failure) -> None:
        if failure.check(CancelledError) or self._gone:
            return
        _log.failure(
            "Unexpected error passing {method} {path} through",
            failure,
            method=self.method,
            path=self.path,
        )
        self._write(
            500,
            b"Internal Server Error",
            [],
            render.document(
                {
                    "title": "Internal error",
                    "description": "The server failed to handle the request.",
                }
            ),
            b"application/json",
        )

    def _error(self, error: MarconiError) -> None:
        """
        Answer an error of the forwarding as the API's error handler does.
        """
        policy = versions.forPath(self.path)
        code = policy.status(error, statusOf(error))
        body = render.document(
            {"title": policy.title(error), "description": error.description}
        )
        serializer = getattr(self.request, "media", None) or media.JSON_MEDIA
        if serializer is not media.JSON_MEDIA:
            body = serializer.text(body)
        headers = list(getattr(error, "headers", {}).items())
        self._write(code, None, headers, body, serializer.contentType)

    def _write(
        self,
        code: int,
        phrase: Optional[bytes],
        headers: list,
        body: bytes,
        contentType: bytes,
    ) -> None:
        """
        Answer with this node's request id and ring version.
        """
        self.requestId = newRequestId()
        headers = [
            *headers,
            (b"Content-Type", contentType),
            (b"X-OpenStack-Request-Id", self.requestId.encode("ascii")),
        ]
        ringVersion = self.channel.site.ringVersion
        if ringVersion is not None:
            headers.append((RING_VERSION_HEADER, ringVersion().encode("ascii")))
        if phrase is None:
            phrase = RESPONSES.get(code, b"Error")
        self._answer(code, phrase, headers, body)

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
            if gzip.wanted(self.request.getHeader(b"accept-encoding"), len(body)):
                body = gzip.compress(body)
                lines.append(b"Content-Encoding: gzip\r\n")
        lines.append(b"Content-Length: %d\r\n" % len(body))
        channel = self.channel
        if not channel.persistent:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        lines.append(body)
        channel.transport.write(b"".join(lines))
        self.code = code
        self.sentLength = len(body)
        if requestId is not None:
            self.requestId = requestId.decode("latin-1")
        self.responseHeaders = _Sent(self.requestId)
        self.route = self.passThrough.labels.get(self.endpoint, self.endpoint)
        channel.site.log(self)
        channel.requestDone(self)


class _Sent:
    """
    The headers of an answer written, as the access log reads them: the
    request id only.
    """

    __slots__ = ("_requestId",)

    def __init__(self, requestId: Optional[str]) -> None:
        self._requestId = requestId

    def getRawHeaders(self, name: bytes, default: Any = None) -> Any:
        if name.lower() == b"x-openstack-request-id" and self._requestId:
            return [self._requestId.encode("latin-1")]
        return default
