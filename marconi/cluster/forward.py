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
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from marconi.cluster import signing
from marconi.cluster.errors import NodeUnavailable
from marconi.cluster.settings import ClusterConfig, Peer

log = Logger()

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
    return done.addTimeout(timeout, clock)


class PeerClient:
    """
    The HTTP client of a node towards its peers.  It owns one persistent
    L{HTTPConnectionPool}; L{close} closes it.
    """

    def __init__(self, config: ClusterConfig, reactor: Any) -> None:
        self._config = config
        self._reactor = reactor
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 16
        self.pool.retryAutomatically = False
        agent = Agent(reactor, connectTimeout=config.forwardTimeout, pool=self.pool)
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
            response = await self._http.request(
                method.decode("ascii"),
                url,
                headers=headers,
                data=body or None,
                timeout=self._config.forwardTimeout,
                reactor=self._reactor,
                allow_redirects=False,
                unbuffered=True,
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
            log.error(
                "Node {node} answered {method} with a body over {limit} bytes",
                node=peer.name,
                method=method,
                limit=self._config.maxResponseBody,
            )
            raise NodeUnavailable(peer.name, "sent an answer over the size bound") from None
        except Exception as e:
            log.error(
                "Node {node} did not answer {method}: {error}",
                node=peer.name,
                method=method,
                error=repr(e),
            )
            raise NodeUnavailable(peer.name, "did not answer in time") from None
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
