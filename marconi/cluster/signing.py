"""
Signing of the requests one node forwards to another.

The sending node adds the headers of L{HEADERS}: its name, the name of the
node it sends to, the project it already resolved, a timestamp from its
clock (in milliseconds), a random nonce, and an HMAC-SHA256, keyed with the cluster secret,
over a canonical form of all of these and of the request: method, path
(percent-decoded), query (decoded, sorted) and the SHA-256 of the body.
Each field is length-prefixed, so no two different requests share a
canonical form.

The receiving node (L{Verifier}) accepts the request only if the signature
matches (compared in constant time), the sender is another node of the
cluster, the request is addressed to this node, the timestamp is within
the clock window of its own clock and not earlier than the moment this
node started, and the nonce was not seen before.  Anything less is
refused: a request that carries any of these headers without a valid
signature is never served.

Why a captured request cannot be replayed:

 - to another node, or back to its sender: the destination is signed;
 - to the same node while it runs: every nonce is remembered until its
   timestamp leaves the clock window, after which the request is refused
   for its timestamp.  The memory holds at most C{maxNonces}; when it is
   full, signed requests are refused until nonces leave the window (a
   nonce inside the window is never forgotten);
 - to the same node after it restarted (its memory is empty): a request
   stamped before the node started is refused.  The clock window is
   not allowed for below the start: a request stamped a millisecond
   before it is refused, even from a sender whose clock is behind.  What
   remains rests on the clocks agreeing (NTP): a sender whose clock runs
   ahead by M{s} seconds stamps the requests it sent in the M{s} seconds
   before the restart as if they came after it, so keep M{s} small.
"""

import hashlib
import hmac
import os
import re
from binascii import hexlify
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional
from urllib.parse import parse_qsl, unquote_to_bytes

VERSION = b"marconi-forward-2"
NODE = b"x-marconi-node"
DESTINATION = b"x-marconi-destination"
PROJECT = b"x-marconi-project"
TIMESTAMP = b"x-marconi-timestamp"
NONCE = b"x-marconi-nonce"
SIGNATURE = b"x-marconi-signature"
#: Every header this module sets; a client may send none of them.
HEADERS = (NODE, DESTINATION, PROJECT, TIMESTAMP, NONCE, SIGNATURE)
PREFIX = b"x-marconi-"
#: A query of KEY=VALUE pairs of unreserved characters (RFC 3986 2.3).
_PLAIN_QUERY = re.compile(
    rb"[A-Za-z0-9._~-]+=[A-Za-z0-9._~-]*(?:&[A-Za-z0-9._~-]+=[A-Za-z0-9._~-]*)*"
)
#: Nonces made at a time (see L{Signer._moreNonces}).
NONCES = 256


class BadSignature(Exception):
    """
    A request carries forwarding headers that do not prove it comes from a
    node of the cluster; the message says why (for the log, not for the
    client).
    """


@dataclass(frozen=True, slots=True)
class Signed:
    """
    What a valid signature vouches for.
    """

    node: str
    project: str


def canonical(
    method: bytes,
    path: bytes,
    query: bytes,
    body: bytes,
    node: bytes,
    destination: bytes,
    project: bytes,
    timestamp: bytes,
    nonce: bytes,
) -> bytes:
    """
    The bytes that are signed.  The path is percent-decoded and the query
    parsed, decoded and sorted, so that re-encoding on the way (which HTTP
    clients may do) does not change them.

    @raise UnicodeError: the query is not ASCII.
    """
    return _requestPart(method, path, query) + _rest(
        body, node, destination, project, timestamp, nonce
    )


def _requestPart(method: bytes, path: bytes, query: bytes) -> bytes:
    """
    The start of L{canonical}: the version and the request's method, path
    and query.

    @raise UnicodeError: the query is not ASCII.
    """
    if query:
        query = _queryForm(query)
    if b"%" in path:
        path = unquote_to_bytes(path)
    method = method.upper()
    return _REQUEST % (len(method), method, len(path), path, len(query), query)


def _rest(
    body: bytes,
    node: bytes,
    destination: bytes,
    project: bytes,
    timestamp: bytes,
    nonce: bytes,
) -> bytes:
    """
    The rest of L{canonical}: the body's digest and the forwarding's
    fields.
    """
    return _REST % (
        _sha256(body).hexdigest().encode() if body else _EMPTY,
        len(node),
        node,
        len(destination),
        destination,
        len(project),
        project,
        len(timestamp),
        timestamp,
        len(nonce),
        nonce,
    )


#: L{canonical}'s layout: each field length-prefixed (C{LENGTH:BYTES}),
#: the version first, the body by its SHA-256 in hex (64 digits).
_REQUEST = b"%d:%s" % (len(VERSION), VERSION) + b"%d:%s" * 3
_REST = b"64:%s" + b"%d:%s" * 5
_EMPTY = hashlib.sha256(b"").hexdigest().encode()
_sha256 = hashlib.sha256
#: The signed form of recent queries (nodes send few different ones),
#: bounded: emptied when full, and long queries are not kept.
_queries: dict = {}
_MAX_QUERIES = 1024
_MAX_QUERY = 256


#: The start of the signed form (L{_requestPart}) of recent requests by
#: their method and target, bounded as L{_queries}.
_requests: dict = {}
_MAX_REQUESTS = 1024
_MAX_TARGET = 512


def _requestForm(method: bytes, uri: bytes) -> bytes:
    """
    L{_requestPart} of a request for C{uri} (path and query), kept for the
    next requests with the same method and target (a relay forwards the
    same few again and again).

    @raise UnicodeError: the query is not ASCII.
    """
    key = (method, uri)
    form = _requests.get(key)
    if form is None:
        path, _, query = uri.partition(b"?")
        form = _requestPart(method, path, query)
        if len(uri) <= _MAX_TARGET:
            if len(_requests) >= _MAX_REQUESTS:
                _requests.clear()
            _requests[key] = form
    return form


def _queryForm(query: bytes) -> bytes:
    """
    The signed form of a query: its pairs percent-decoded and sorted, each
    key and value length-prefixed.

    @raise UnicodeError: the query is not ASCII.
    """
    form = _queries.get(query)
    if form is not None:
        return form
    if _PLAIN_QUERY.fullmatch(query):
        # Nothing to decode (what parse_qsl would give, faster).
        pairs = sorted([tuple(p.split(b"=", 1)) for p in query.split(b"&")])
    else:
        # Each key and value percent-decoded to its exact bytes, whether
        # they are UTF-8 or not.
        pairs = sorted(
            [
                (
                    k.encode("utf-8", "surrogateescape"),
                    v.encode("utf-8", "surrogateescape"),
                )
                for k, v in parse_qsl(
                    query.decode("ascii"),
                    keep_blank_values=True,
                    errors="surrogateescape",
                )
            ]
        )
    form = b"&".join([b"%d:%s%d:%s" % (len(k), k, len(v), v) for k, v in pairs])
    if len(query) <= _MAX_QUERY:
        if len(_queries) >= _MAX_QUERIES:
            _queries.clear()
        _queries[query] = form
    return form


def _keyed(secret: bytes) -> Any:
    """
    An HMAC-SHA256 that took the key C{secret} and nothing else (see
    L{_digest}): OpenSSL's own object when L{hmac} wraps one (copied and
    used directly, it costs half as much), else L{hmac}'s.
    """
    keyed = hmac.new(secret, digestmod=hashlib.sha256)
    return getattr(keyed, "_hmac", None) or keyed


def _digest(keyed: Any, data: bytes) -> bytes:
    """
    The HMAC of C{data}, hex-encoded, from a copy of C{keyed} (from
    L{_keyed}: the key's padding is hashed once, not on every request).
    """
    mac = keyed.copy()
    mac.update(data)
    return hexlify(mac.digest())


#: L{Signer.lines}: the lines of L{HEADERS}, in order.
_LINES = b"".join([name + b": %s\r\n" for name in HEADERS])


class Signer:
    """
    Signs the requests this node sends.
    """

    def __init__(self, node: str, secret: bytes, clock: Any) -> None:
        self.node = node.encode("ascii")
        self._mac = _keyed(secret)
        self._clock = clock
        self._nonces: list = []

    def _moreNonces(self) -> bytes:
        """
        A new nonce, 128 random bits in hex, and more for the next requests:
        random bytes are read for L{NONCES} nonces at a time rather than
        with a system call for each request.
        """
        data = os.urandom(16 * NONCES).hex().encode()
        self._nonces = [data[i : i + 32] for i in range(0, len(data), 32)]
        return self._nonces.pop()

    def _sign(
        self, method: bytes, uri: bytes, body: bytes, project: bytes, to: bytes
    ) -> tuple:
        """
        The timestamp, nonce and signature of a request for C{uri} (path
        and query) sent to the node C{to}.
        """
        timestamp = b"%d" % int(self._clock.seconds() * 1000)
        try:
            nonce = self._nonces.pop()
        except IndexError:
            nonce = self._moreNonces()
        mac = _digest(
            self._mac,
            _requestForm(method, uri)
            + _rest(body, self.node, to, project, timestamp, nonce),
        )
        return timestamp, nonce, mac

    def headers(
        self, method: bytes, uri: bytes, body: bytes, project: str, destination: str
    ) -> dict:
        """
        The headers to add to a request for C{uri} (path and query) sent to
        the node C{destination}.
        """
        projectBytes = project.encode("ascii")
        to = destination.encode("ascii")
        timestamp, nonce, mac = self._sign(method, uri, body, projectBytes, to)
        return {
            NODE: self.node,
            DESTINATION: to,
            PROJECT: projectBytes,
            TIMESTAMP: timestamp,
            NONCE: nonce,
            SIGNATURE: mac,
        }

    def lines(
        self, method: bytes, uri: bytes, body: bytes, project: str, destination: str
    ) -> bytes:
        """
        L{headers} as header lines, each ending with CRLF, in the same
        order: the same bytes on the wire, formatted in one step.  The
        project is a project id (printable ASCII, no spaces: see
        L{marconi.core.validation.projectId}) and the names are node names,
        so no line holds a CR or LF.
        """
        projectBytes = project.encode("ascii")
        to = destination.encode("ascii")
        timestamp, nonce, mac = self._sign(method, uri, body, projectBytes, to)
        return _LINES % (self.node, to, projectBytes, timestamp, nonce, mac)


class Verifier:
    """
    Checks the signature of a request this node received.

    @ivar started: this node's clock when the verifier was made (the node
        started); requests stamped earlier are refused.
    """

    def __init__(
        self,
        node: str,
        nodes: Iterable[str],
        secret: bytes,
        clock: Any,
        window: float = 60.0,
        maxNonces: int = 1_000_000,
    ) -> None:
        self.node = node.encode("ascii")
        self._nodes = frozenset(n.encode("ascii") for n in nodes) - {self.node}
        self._mac = _keyed(secret)
        self._clock = clock
        self._window = window
        self.maxNonces = maxNonces
        self.started = clock.seconds()
        self._nonces: set = set()
        self._order: deque = deque()

    def setNodes(self, nodes: Iterable[str]) -> None:
        """
        The cluster's nodes changed (its configuration was read again):
        take signed requests from these from now on.
        """
        self._nodes = frozenset(n.encode("ascii") for n in nodes) - {self.node}

    def verify(
        self, method: bytes, uri: bytes, body: bytes, headers: Mapping[bytes, bytes]
    ) -> Optional[Signed]:
        """
        @param headers: lower-case header names to their first value.
        @return: L{None} if the request carries no forwarding header, else
            what its valid signature vouches for.
        @raise BadSignature: it carries forwarding headers but they do not
            prove it comes from another node of this cluster, for this
            node, once.
        """
        get = headers.get
        node = get(NODE)
        if node is None and not any(name.startswith(PREFIX) for name in headers):
            return None
        destination = get(DESTINATION)
        project = get(PROJECT)
        timestamp = get(TIMESTAMP)
        nonce = get(NONCE)
        signature = get(SIGNATURE)
        if not (node and destination and project and timestamp and nonce and signature):
            raise BadSignature("forwarding headers are missing or empty")
        if node not in self._nodes:
            raise BadSignature("the sender is not another node of this cluster")
        if destination != self.node:
            raise BadSignature("the request is addressed to another node")
        if not timestamp.isdigit() or len(timestamp) > 15:
            raise BadSignature("the timestamp is malformed")
        now = self._clock.seconds()
        stamped = int(timestamp) / 1000
        if abs(now - stamped) > self._window:
            raise BadSignature("the timestamp is outside the clock window")
        if stamped < self.started:
            raise BadSignature("the request was stamped before this node started")
        try:
            form = _requestForm(method, uri) + _rest(
                body, node, destination, project, timestamp, nonce
            )
        except UnicodeError:
            raise BadSignature("the query does not decode") from None
        if not hmac.compare_digest(_digest(self._mac, form), signature):
            raise BadSignature("the signature does not match")
        try:
            signed = Signed(node.decode("ascii"), project.decode("ascii"))
        except UnicodeDecodeError:
            raise BadSignature("the project is not ASCII") from None
        order = self._order
        if order and now - order[0][0] > self._window:
            self._forgetOld(now)
        nonces = self._nonces
        if nonce in nonces:
            raise BadSignature("the nonce was already used")
        if len(nonces) >= self.maxNonces:
            raise BadSignature(
                "the memory of nonces is full (more signed requests than "
                "max_nonces within the clock window)"
            )
        nonces.add(nonce)
        order.append((stamped, nonce))
        return signed

    def _forgetOld(self, now: float) -> None:
        """
        Forget the nonces whose timestamp left the clock window: a request
        carrying one is refused for its timestamp.  The oldest entry is
        first in arrival order, not always in timestamp order, so a nonce
        may be kept a little longer, never less.
        """
        order = self._order
        while order and now - order[0][0] > self._window:
            self._nonces.discard(order.popleft()[1])
