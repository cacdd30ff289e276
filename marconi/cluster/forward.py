"""
Talking to the other nodes: requests through the L{Agent} of one shared
connection pool, bodies read with L{treq.collect}; forwarded requests, the
hot call, over the connections of L{marconi.cluster.wire}.  Either way a
timeout on the response headers and another on the body, and a bound on
the body's size.
"""

import errno
import functools
import re
import socket
from dataclasses import dataclass
from typing import Any, Callable, Optional
from urllib.parse import parse_qsl, quote_from_bytes, unquote_to_bytes

import treq
from hyperlink import DecodedURL
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    NoRouteError,
)
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure
from twisted.web.client import (
    URI,
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseFailed,
    ResponseNeverReceived,
    SchemeNotSupported,
)
from twisted.web.http import parse_qs
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer

from marconi.cluster import signing, wire
from marconi.cluster.errors import LOST, REFUSED, REQUEST, SHORT, NodeUnavailable
from marconi.cluster.settings import ClusterConfig, Peer
from marconi.cluster.wire import Abandoned, BodyTooLarge
from marconi.core.errors import ValidationFailed
from marconi.core.waiting import MAXIMUM_WAIT

# Hop-by-hop headers (RFC 9110 7.6.1), and those the client library sets.
_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"accept-encoding",
        # The relaying node has the whole body already.
        b"expect",
        # Between a node and its peer only (see marconi.api.pipeline).
        b"marconi-pipelining",
    )
)


class NotAPath(ValidationFailed):
    """
    A request target that is not a path (C{/...}): it is never forwarded.
    """

    def __init__(self) -> None:
        super().__init__("The request target must be a path beginning with '/'.")


@dataclass(slots=True)
class Answer:
    """
    A peer's whole response (not changed once made; not frozen, which
    made each of the relay's answers cost a microsecond more).

    @ivar head: of a forwarded request's answer, its head as it came, when
        the body is delimited by its C{Content-Length} alone and it holds
        no hop-by-hop header (see L{wire.Head.raw}); else empty.
    @ivar lowered: C{head} in lower case.
    """

    code: int
    phrase: bytes
    headers: Headers
    body: bytes
    head: bytes = b""
    lowered: bytes = b""


class Target:
    """
    A parsed request target.

    @ivar path: the path's segments, percent-decoded (of a plain target,
        split only when asked: a forwarded request needs its C{uri} only).
    @ivar uri: the path and query, percent-encoded as hyperlink encodes
        them.
    """

    __slots__ = ("_path", "uri")

    def __init__(self, path: Optional[tuple], uri: bytes) -> None:
        self._path = path
        self.uri = uri

    @property
    def path(self) -> tuple:
        path = self._path
        if path is None:
            plain = self.uri.partition(b"?")[0]
            path = self._path = tuple(plain[1:].decode("ascii").split("/"))
        return path

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Target):
            return NotImplemented
        return (self.path, self.uri) == (other.path, other.uri)

    def __hash__(self) -> int:
        return hash((self.path, self.uri))

    def __repr__(self) -> str:
        return f"Target(path={self.path!r}, uri={self.uri!r})"


# A target hyperlink would give back unchanged: a path of unreserved
# characters (RFC 3986 2.3) in non-empty segments, and a query of
# KEY=VALUE pairs of them.  Everything else takes the long way.
_UNRESERVED = rb"[A-Za-z0-9._~-]"
_PLAIN = re.compile(rb"(?:/%s+)+/?(?:\?%s+=%s*(?:&%s+=%s*)*)?" % ((_UNRESERVED,) * 5))


def target(uri: bytes) -> Target:
    """
    The path and query of a received request target, parsed.

    @raise NotAPath: the target is not a path (it does not begin with a
        single C{/}, carries a fragment, its path does not decode as
        UTF-8, or its query is not ASCII).
    """
    found = _targets.get(uri)
    if found is None:
        found = Target(None, uri) if _PLAIN.fullmatch(uri) else _parsed(uri)
        if len(uri) <= _MAX_TARGET:
            if len(_targets) >= _MAX_TARGETS:
                _targets.clear()
            _targets[uri] = found
    return found


#: Recent targets parsed (a L{Target} is never changed once made: they
#: are shared), bounded.
_targets: dict = {}
_MAX_TARGETS = 1024
_MAX_TARGET = 512


def _parsed(uri: bytes) -> Target:
    """
    L{target} the long way: decoded, then encoded again by hyperlink.
    """
    path, _, query = uri.partition(b"?")
    if not path.startswith(b"/") or path.startswith(b"//") or b"#" in uri:
        raise NotAPath()
    try:
        segments = tuple(
            unquote_to_bytes(s).decode("utf-8") for s in path[1:].split(b"/")
        )
        text = query.decode("ascii")
    except UnicodeError:
        raise NotAPath() from None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict")
    except UnicodeError:
        # Percent-encoded bytes that are not UTF-8: the owner reads them as
        # bytes (a parameter it does not know is ignored, one it knows is
        # refused), so they are passed on, each pair encoded again.
        url = DecodedURL.from_text("/").replace(path=segments)
        encoded = "&".join(
            quote_from_bytes(name.encode("latin-1"), _QUERY_SAFE)
            + "="
            + quote_from_bytes(value.encode("latin-1"), _QUERY_SAFE)
            for name, value in parse_qsl(
                text, keep_blank_values=True, encoding="latin-1"
            )
        ).encode("ascii")
        plain = url.to_uri().to_text().encode("ascii")
        return Target(tuple(url.path), plain + b"?" + encoded)
    url = DecodedURL.from_text("/").replace(path=segments, query=pairs)
    return Target(tuple(url.path), url.to_uri().to_text().encode("ascii"))


# What a query's names and values keep unencoded when they are passed on
# as bytes: the unreserved characters only (quote_from_bytes adds them).
_QUERY_SAFE = ""


#: A whole number as the API reads one (L{marconi.api.app}).
_WHOLE = re.compile(r"-?[0-9]{1,9}|[0-9]{10}")


def waitOf(path: Target) -> int:
    """
    The seconds a request may wait for messages on the node it is sent to
    (its C{wait} parameter, at most L{MAXIMUM_WAIT}; 0 without one or with
    one the API refuses): the time its answer may take beyond the
    forwarding timeout, and whether it may share a connection with others
    (see L{marconi.cluster.wire}).  The parameter is read as the receiving
    node reads it (its last value, decoded, without the blanks around it),
    which checks it; here it only lengthens a timeout.
    """
    uri = path.uri
    if b"wait=" not in uri:
        return 0
    values = parse_qs(uri.partition(b"?")[2]).get(b"wait")
    if not values:
        return 0
    try:
        value = values[-1].decode("utf-8").strip()
    except UnicodeDecodeError:
        return 0
    if not _WHOLE.fullmatch(value):
        return 0
    return max(0, min(int(value), MAXIMUM_WAIT))


_SAFE = frozenset((b"GET", b"HEAD", b"PUT", b"DELETE"))


def retrySafe(method: bytes, path: Target) -> bool:
    """
    Whether a forwarded request may be sent twice (once more on a new
    connection when the pooled one it went out on turns out closed, see
    L{marconi.cluster.wire}): the idempotent methods of the API, C{GET},
    C{HEAD}, C{PUT} (a queue's creation or metadata) and C{DELETE} (a
    queue, a message, messages by id, a claim: done twice, the second
    finds nothing more to do), except a C{DELETE} that pops messages
    (C{?pop=N}), which would take N more.  C{POST} (posting, claiming)
    and C{PATCH} never are.
    """
    if method not in _SAFE:
        return False
    if method == b"DELETE":
        query = path.uri.partition(b"?")[2]
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            return all(name != b"pop" for name, _ in pairs)
    return True


def pathAndQuery(url: Target) -> bytes:
    """
    The request target (path and query, percent-encoded) of C{url}.
    """
    return url.uri


@functools.lru_cache(maxsize=256)
def _origin(url: str) -> bytes:
    """
    The scheme, host and port of C{url}, encoded.
    """
    origin = DecodedURL.from_text(url).replace(path=(), query=(), fragment="")
    return origin.to_uri().to_text().rstrip("/").encode("ascii")


def peerURL(peer: Peer, path: Target) -> bytes:
    """
    The URL of C{path} (from L{target}) on C{peer}: the peer's scheme, host
    and port (parsed from its URL), then the path and query in the form
    hyperlink encodes them.
    """
    return _origin(peer.url) + path.uri


#: The errors of a connection attempt that are this node's, not the
#: peer's: no file descriptor (of the process or of the system), no buffer
#: or memory.  (Not C{EADDRNOTAVAIL}: besides running out of local ports,
#: it is what an address this host cannot reach gives.)
_SHORTAGES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


def _short() -> bool:
    """
    Whether this node can open no socket now, for want of its own
    resources: asked only when a connection or a name lookup failed.
    """
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    except OSError as e:
        return e.errno in _SHORTAGES
    return False


def _failure(peer: Peer, error: Exception) -> NodeUnavailable:
    """
    The L{NodeUnavailable} of a call to C{peer} that failed with C{error},
    with the kind of failure it is.
    """
    if isinstance(error, BodyTooLarge):
        return NodeUnavailable(peer.name, f"sent an answer {error}", REQUEST)
    if isinstance(error, Abandoned):
        # Another request's failure on the same connection, not the peer's.
        return NodeUnavailable(peer.name, f"could not be reached ({error})", REQUEST)
    if isinstance(error, (TimeoutError, ConnectingCancelledError, ConnectTimeout)):
        return NodeUnavailable(peer.name, "did not answer in time", LOST)
    if isinstance(error, (ConnectError, DNSLookupError)) and (
        getattr(error, "osError", None) in _SHORTAGES or _short()
    ):
        # This node could not make the connection (or resolve the peer's
        # name: getaddrinfo fails too when no descriptor is left).
        return NodeUnavailable(
            peer.name,
            f"could not be reached: this node is short of resources ({error})",
            SHORT,
        )
    why = f"could not be reached ({type(error).__name__})"
    if isinstance(error, (ConnectionRefusedError, NoRouteError, DNSLookupError)):
        return NodeUnavailable(peer.name, why, REFUSED)
    if isinstance(error, (ResponseNeverReceived, ResponseFailed)):
        reasons = error.reasons
        if all(r.check(ConnectionLost, ConnectionDone) for r in reasons):
            return NodeUnavailable(peer.name, why, LOST)
    if isinstance(error, (ConnectError, ConnectionLost, ConnectionDone)):
        return NodeUnavailable(peer.name, why, LOST)
    return NodeUnavailable(peer.name, why, REQUEST)


class _Abortable:
    """
    A response whose body connection can be closed while nothing arrives
    (L{treq.collect} closes it only when its collector raises).
    """

    def __init__(self, response: Any) -> None:
        self._response = response
        self.length = response.length
        self._protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        self._protocol = protocol
        self._response.deliverBody(protocol)

    def abort(self, *ignored: Any) -> None:
        transport = getattr(self._protocol, "transport", None)
        if transport is not None:
            transport.stopProducing()


def readBody(response: Any, limit: int, timeout: float, clock: Any) -> Deferred:
    """
    Read a response's body with L{treq.collect}, failing with
    L{BodyTooLarge} past C{limit} bytes and with
    L{twisted.internet.defer.TimeoutError} after C{timeout} seconds; either
    way the connection is closed.
    """
    chunks: list = []
    size = 0

    def keep(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > limit:
            raise BodyTooLarge(f"over {limit} bytes")
        chunks.append(data)

    body = _Abortable(response)
    d = treq.collect(body, keep)  # type: ignore[arg-type]  # only deliverBody is used
    d.addTimeout(timeout, clock, onTimeoutCancel=_closing(body))
    return d.addCallback(lambda _: b"".join(chunks))


def _timedOut(result: Any, timeout: float) -> Any:
    """
    The C{onTimeoutCancel} of L{Deferred.addTimeout}: whatever error the
    cancellation gave (the HTTP client wraps it), the call timed out.
    """
    if isinstance(result, Failure):
        raise TimeoutError(f"no answer after {timeout} seconds")
    return result


def _closing(body: _Abortable) -> Any:
    def onTimeout(result: Any, timeout: float) -> Any:
        body.abort()
        return _timedOut(result, timeout)

    return onTimeout


@implementer(IBodyProducer)
class _BytesProducer:
    """
    A request body already in memory, written at once (treq's
    C{FileBodyProducer} would write it from a cooperator task, a reactor
    turn later).
    """

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(IStreamClientEndpoint)
class _LazyEndpoint:
    """
    The endpoint of a peer, built only when a new connection is needed.
    The L{Agent} asks for an endpoint on every request, pooled connection or
    not, and building one (a L{HostnameEndpoint}, which IDNA-encodes the
    host) is a tenth of a forwarded request's cost on the relay.
    """

    __slots__ = ("_endpoints", "_uri")

    def __init__(self, endpoints: "_LazyEndpoints", uri: Any) -> None:
        self._endpoints = endpoints
        self._uri = uri

    def connect(self, protocolFactory: Any) -> Deferred:
        return self._endpoints.build(self._uri).connect(protocolFactory)


@implementer(IAgentEndpointFactory)
class _LazyEndpoints:
    """
    The endpoints of the L{Agent}: TCP for C{http}, TLS under the policy
    for C{https}, built at connection time (so a policy whose certificates
    were reloaded is asked as it is then).
    """

    def __init__(self, reactor: Any, tlsPolicy: Any, connectTimeout: float) -> None:
        self._reactor = reactor
        self._tlsPolicy = tlsPolicy
        self._connectTimeout = connectTimeout

    def endpointForURI(self, uri: Any) -> Any:
        if uri.scheme not in (b"http", b"https"):
            raise SchemeNotSupported(f"Unsupported scheme: {uri.scheme!r}")
        return _LazyEndpoint(self, uri)

    def build(self, uri: Any) -> Any:
        host = uri.host.decode("ascii")
        endpoint = HostnameEndpoint(
            self._reactor, host, uri.port, timeout=self._connectTimeout
        )
        if uri.scheme == b"https":
            creator = self._tlsPolicy.creatorForNetloc(uri.host, uri.port)
            return wrapClientTLS(creator, endpoint)
        return endpoint


class PeerClient:
    """
    The HTTP client of a node towards its peers.  It owns one persistent
    L{HTTPConnectionPool}; L{close} closes it.
    """

    def __init__(
        self, config: ClusterConfig, reactor: Any, tlsPolicy: Optional[Any] = None
    ) -> None:
        self._config = config
        self._reactor = reactor
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 16
        self.pool.retryAutomatically = False
        agent = Agent.usingEndpointFactory(
            reactor,
            _LazyEndpoints(
                reactor,
                tlsPolicy or BrowserLikePolicyForHTTPS(),
                config.forwardTimeout,
            ),
            pool=self.pool,
        )
        # No cookie jar: nothing a peer sends is remembered between requests.
        self._agent = agent
        self._endpoints = _LazyEndpoints(
            reactor, tlsPolicy or BrowserLikePolicyForHTTPS(), config.forwardTimeout
        )
        self.wire = wire.Pool(
            reactor, self._connect, config.idleConnections, config.pipelineDepth
        )

    def _connect(self, url: str, factory: Any) -> Deferred:
        return self._endpoints.build(_uri(url)).connect(factory)

    def call(
        self,
        peer: Peer,
        method: bytes,
        path: Target,
        headers: Headers,
        body: bytes,
        timeout: Optional[float] = None,
    ) -> Deferred:
        """
        Send one request to C{peer} and read its whole answer.

        @param path: the path and query (from L{target}).
        @param timeout: seconds for the headers and again for the body;
            the configured C{forwardTimeout} and C{bodyTimeout} if L{None}.
            A request that may wait for messages (L{waitOf}) has that much
            longer for its headers.
        @return: a L{Deferred} firing with the L{Answer}.  It fails with
            L{NodeUnavailable} when the peer could not be reached, did not
            answer in time or sent a body over the bound (its C{kind} says
            which).  Cancelled (its client went away), it fails with
            L{CancelledError}, whatever the layers below made of the
            cancellation, so that it is never taken for a failure of the
            peer.
        """
        return self._guarded(self._call(peer, method, path, headers, body, timeout))

    def _guarded(self, call: Any) -> Deferred:
        """
        The L{Deferred} of the coroutine C{call}: cancelled, it fails with
        L{CancelledError} whatever the layers below made of it.
        """
        abandoned = False

        def cancel(outer: Deferred) -> None:
            nonlocal abandoned
            abandoned = True
            inner.cancel()

        def settle(result: Any) -> None:
            if outer.called:
                return
            if abandoned and isinstance(result, Failure):
                outer.errback(CancelledError("the caller went away"))
            elif isinstance(result, Failure):
                outer.errback(result)
            else:
                outer.callback(result)

        outer: Deferred = Deferred(cancel)
        inner = Deferred.fromCoroutine(call)
        inner.addBoth(settle)
        return outer

    def forward(
        self,
        peer: Peer,
        method: bytes,
        path: Target,
        headers: Any,
        body: bytes,
        resign: Optional[Callable[[], Any]] = None,
    ) -> Deferred:
        """
        Send a forwarded request to C{peer} over the connections of
        L{wire}: as L{call} with the configured timeouts, but C{headers} are
        pairs of a raw name and value, or header lines already checked, as
        bytes (see L{wire.requestBytes}), and the L{Answer}'s headers are
        L{wire.RawHeaders}, as they came.  Callbacks on the pool's
        L{Deferred}, no coroutine: this is the relay's hot path.

        A request that L{retrySafe} allows is sent once more on a new
        connection if its pooled one turns out closed (see L{wire}).

        @param resign: gives the headers anew for that second sending
            (signed again: the owner refuses a nonce twice, and a request
            stamped before it restarted); without it the same are sent.
        """
        d = self.send(peer, method, path, headers, body, resign)
        return d.addCallbacks(_answered, forwardFailed, errbackArgs=(peer,))

    def send(
        self,
        peer: Peer,
        method: bytes,
        path: Target,
        headers: list,
        body: bytes,
        resign: Optional[Callable[[], list]] = None,
        then: Optional[Callable[[Any], object]] = None,
    ) -> Any:
        """
        L{forward}, but the L{Deferred} of the connection pool as it is:
        firing with C{(Head, body)} (L{answerOf} makes the L{Answer}),
        failing with the pool's error (L{forwardFailed} makes it a
        L{NodeUnavailable}).  For a caller that adds its own callbacks to
        these, in one step.

        @param then: if given, no L{Deferred}: C{then} is called once with
            what it would fire with, or its L{Failure}, and the pool's
            request is returned (its C{cancel} gives up on it, see
            L{wire.Pool.send}).
        """
        host = _host(peer.url)
        data = wire.requestBytes(method, path.uri, host, headers, body)
        again = None
        if retrySafe(method, path):

            def again() -> bytes:
                fresh = headers if resign is None else resign()
                return wire.requestBytes(method, path.uri, host, fresh, body)

        config = self._config
        wait = waitOf(path)
        sending = (
            peer.url,
            data,
            method == b"HEAD",
            config.maxResponseBody,
            config.forwardTimeout + wait,
            config.bodyTimeout,
            again,
        )
        # A request that waits for messages has a connection to itself.
        if then is not None:
            return self.wire.send(*sending, then, not wait)
        return self.wire.request(*sending, not wait)

    async def _call(
        self,
        peer: Peer,
        method: bytes,
        path: Target,
        headers: Headers,
        body: bytes,
        timeout: Optional[float],
    ) -> Answer:
        headerTimeout = (timeout or self._config.forwardTimeout) + waitOf(path)
        bodyTimeout = timeout or self._config.bodyTimeout
        try:
            # The Agent treq wraps, called directly: treq's request() would
            # parse the URL again with hyperlink and pass through a cookie
            # jar and a gzip decoder, a quarter of the relay's CPU.
            response = await self._agent.request(
                method,
                peerURL(peer, path),
                headers,
                _BytesProducer(body) if body else None,
            ).addTimeout(headerTimeout, self._reactor, onTimeoutCancel=_timedOut)
            content = await readBody(
                response, self._config.maxResponseBody, bodyTimeout, self._reactor
            )
        except Exception as e:
            raise _failure(peer, e) from None
        return Answer(response.code, response.phrase, response.headers, content)

    def close(self) -> Deferred:
        self.wire.close()
        return self.pool.closeCachedConnections()


def answerOf(head: Any, content: bytes) -> Answer:
    """
    The L{Answer} of a forwarded request's head and body.
    """
    return Answer(head.code, head.phrase, head.headers, content, head.raw, head.lowered)


def _answered(result: tuple) -> Answer:
    return answerOf(*result)


def forwardFailed(failure: Failure, peer: Peer) -> Failure:
    """
    A forwarded request's failure as L{NodeUnavailable}, but a
    cancellation (its client went away) as L{CancelledError}.
    """
    if failure.check(CancelledError):
        return failure
    raise _failure(peer, failure.value)


@functools.lru_cache(maxsize=256)
def _uri(url: str) -> URI:
    """
    A peer's URL, parsed for its endpoint.
    """
    return URI.fromBytes(_origin(url))


@functools.lru_cache(maxsize=256)
def _host(url: str) -> bytes:
    """
    The C{Host} header of requests to a peer.
    """
    return _uri(url).netloc


def forwardHeaders(received: Headers, signed: dict) -> Headers:
    """
    The headers to send on: those received, less hop-by-hop and forwarding
    headers, plus the signed forwarding headers.
    """
    headers = Headers()
    for name, value in forwardPairs(received, signed):
        headers.addRawHeader(name, value)
    return headers


#: The request headers a forwarded request does not carry on (the client
#: library sets those it needs).
NOT_FORWARDED = _HOP


def forwardPairs(received: Headers, signed: dict) -> list:
    """
    L{forwardHeaders} as pairs of a raw name and a value, for
    L{PeerClient.forward}.
    """
    pairs: list = []
    for name, values in received.getAllRawHeaders():
        lower = name.lower()
        if lower in _HOP or lower.startswith(signing.PREFIX):
            continue
        pairs.extend((name, value) for value in values)
    pairs.extend(signed.items())
    return pairs


def relayHeaders(answer: Answer, request: Any) -> None:
    """
    Put a peer's status and headers on C{request}.  C{Location} and the
    hrefs in bodies are paths (no host), so they are relayed unchanged.
    """
    request.setResponseCode(answer.code, answer.phrase or None)
    for name, values in answer.headers.getAllRawHeaders():
        lower = name.lower()
        if lower in _HOP or lower in (b"date", b"server"):
            continue
        if lower == b"content-encoding" and not any(values):
            # What treq's decoder leaves when it decoded everything.
            continue
        request.responseHeaders.setRawHeaders(name, values)
    request.setHeader(b"content-length", b"%d" % len(answer.body))
