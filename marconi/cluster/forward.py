"""
Talking to the other nodes with treq: one shared connection pool, a
timeout on the response headers and another on the body, and a bound on
the body's size.
"""

from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, Optional
from urllib.parse import quote

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseDone,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from marconi.cluster import signing
from marconi.cluster.errors import NodeUnavailable
from marconi.cluster.settings import ClusterConfig, Peer

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
    )
)
_URI_SAFE = "/?&=%:@!$'()*+,;~-._"


class BodyTooLarge(Exception):
    """
    A peer's response body went past the bound.
    """


@dataclass(frozen=True, slots=True)
class Answer:
    """
    A peer's whole response.
    """

    code: int
    phrase: bytes
    headers: Headers
    body: bytes


class _Collector(Protocol):
    def __init__(self, limit: int, done: Deferred) -> None:
        self._limit = limit
        self._done = done
        self._chunks: list = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        if self._done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self.transport.stopProducing()
            self._done.errback(BodyTooLarge(f"over {self._limit} bytes"))
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Any) -> None:
        if self._done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._chunks))
        else:
            self._done.errback(reason)


def withTimeout(d: Deferred, seconds: float, clock: Any) -> Deferred:
    """
    C{d}, cancelled after C{seconds}.  Whatever error the cancellation
    gives, the result then fails with L{TimeoutError}; cancelling the result
    cancels C{d} and fails with L{CancelledError}, so a caller that went
    away is never taken for a peer that failed.
    """
    why: list = []

    def cancel(outer: Deferred) -> None:
        why.append(CancelledError)
        d.cancel()

    def expire() -> None:
        why.append(TimeoutError)
        d.cancel()

    outer: Deferred = Deferred(cancel)
    timer = clock.callLater(seconds, expire)

    def done(result: Any) -> None:
        if timer.active():
            timer.cancel()
        if outer.called:
            return
        if isinstance(result, Failure):
            if why:
                result = Failure(why[0](f"no answer after {seconds} seconds"))
            outer.errback(result)
        else:
            outer.callback(result)

    d.addBoth(done)
    return outer


def readBody(response: Any, limit: int, timeout: float, clock: Any) -> Deferred:
    """
    Read a response's body, failing with L{BodyTooLarge} past C{limit}
    bytes and with L{twisted.internet.defer.TimeoutError} after C{timeout}
    seconds; either way the connection is closed.
    """
    collector: Optional[_Collector] = None

    def cancel(d: Deferred) -> None:
        if collector is not None and collector.transport is not None:
            collector.transport.stopProducing()

    done: Deferred = Deferred(cancel)
    collector = _Collector(limit, done)
    response.deliverBody(collector)
    return withTimeout(done, timeout, clock)


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
        agent = Agent(
            reactor,
            tlsPolicy or BrowserLikePolicyForHTTPS(),
            connectTimeout=config.forwardTimeout,
            pool=self.pool,
        )
        # Nothing a peer sends is remembered between requests.
        jar = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
        self._http = HTTPClient(agent, cookiejar=jar)

    async def call(
        self, peer: Peer, method: bytes, uri: bytes, headers: Headers, body: bytes
    ) -> Answer:
        """
        Send one request to C{peer} and read its whole answer.

        @param uri: the path and query, as received (re-encoded if needed).
        @raise NodeUnavailable: the peer could not be reached, did not
            answer in time or sent a body over the bound.
        """
        url = peer.url.encode("ascii") + quote(uri, safe=_URI_SAFE).encode("ascii")
        try:
            # Our own timer rather than treq's timeout=, so that a timeout
            # (TimeoutError) is told apart from a cancelled caller
            # (CancelledError, passed on as is).
            response = await withTimeout(
                self._http.request(
                    method.decode("ascii"),
                    url,
                    headers=headers,
                    data=body or None,
                    allow_redirects=False,
                    unbuffered=True,
                ),
                self._config.forwardTimeout,
                self._reactor,
            )
            content = await readBody(
                response,
                self._config.maxResponseBody,
                self._config.bodyTimeout,
                self._reactor,
            )
        except CancelledError:
            raise
        except BodyTooLarge:
            raise NodeUnavailable(
                peer.name,
                f"sent an answer over {self._config.maxResponseBody} bytes",
            ) from None
        except TimeoutError:
            raise NodeUnavailable(peer.name, "did not answer in time") from None
        except Exception as e:
            raise NodeUnavailable(
                peer.name, f"could not be reached ({type(e).__name__})"
            ) from None
        return Answer(response.code, response.phrase, response.headers, content)

    def close(self) -> Deferred:
        return self.pool.closeCachedConnections()


def forwardHeaders(received: Headers, signed: dict) -> Headers:
    """
    The headers to send on: those received, less hop-by-hop and forwarding
    headers, plus the signed forwarding headers.
    """
    headers = Headers()
    for name, values in received.getAllRawHeaders():
        lower = name.lower()
        if lower in _HOP or lower.startswith(signing.PREFIX):
            continue
        headers.setRawHeaders(name, values)
    for name, value in signed.items():
        headers.setRawHeaders(name, [value])
    return headers


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
