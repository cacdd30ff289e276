"""
Signing of the requests one node forwards to another.

The sending node adds the headers of L{HEADERS}: its name, the project it
already resolved, a timestamp from its clock, a random nonce, and an
HMAC-SHA256, keyed with the cluster secret, over a canonical form of all of
these and of the request: method, path (percent-decoded), query (decoded,
sorted) and the SHA-256 of the body.  Each field is length-prefixed, so no
two different requests share a canonical form.

The receiving node (L{Verifier}) accepts the request only if the signature
matches (compared in constant time), the sender is a node of the cluster,
the timestamp is within the clock window of its own clock, and the nonce
was not seen within that window.  Anything less is refused: a request that
carries any of these headers without a valid signature is never served.
"""

import hashlib
import hmac
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional
from urllib.parse import parse_qsl, unquote_to_bytes

VERSION = b"marconi-forward-1"
NODE = b"x-marconi-node"
PROJECT = b"x-marconi-project"
TIMESTAMP = b"x-marconi-timestamp"
NONCE = b"x-marconi-nonce"
SIGNATURE = b"x-marconi-signature"
#: Every header this module sets; a client may send none of them.
HEADERS = (NODE, PROJECT, TIMESTAMP, NONCE, SIGNATURE)
PREFIX = b"x-marconi-"


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
    project: bytes,
    timestamp: bytes,
    nonce: bytes,
) -> bytes:
    """
    The bytes that are signed.  The path is percent-decoded and the query
    parsed, decoded and sorted, so that re-encoding on the way (which HTTP
    clients may do) does not change them.
    """
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    fields = [
        VERSION,
        method.upper(),
        unquote_to_bytes(path),
        b"&".join(_lp(k) + _lp(v) for k, v in pairs),
        hashlib.sha256(body).hexdigest().encode(),
        node,
        project,
        timestamp,
        nonce,
    ]
    return b"".join(_lp(f) for f in fields)


def _lp(value: bytes) -> bytes:
    return b"%d:%s" % (len(value), value)


def _split(uri: bytes) -> tuple:
    path, _, query = uri.partition(b"?")
    return path, query


class Signer:
    """
    Signs the requests this node sends.
    """

    def __init__(self, node: str, secret: bytes, clock: Any) -> None:
        self.node = node.encode("ascii")
        self._secret = secret
        self._clock = clock

    def headers(self, method: bytes, uri: bytes, body: bytes, project: str) -> dict:
        """
        The headers to add to a request for C{uri} (path and query).
        """
        timestamp = b"%d" % int(self._clock.seconds())
        nonce = os.urandom(16).hex().encode()
        path, query = _split(uri)
        projectBytes = project.encode("ascii")
        mac = hmac.new(
            self._secret,
            canonical(
                method, path, query, body, self.node, projectBytes, timestamp, nonce
            ),
            hashlib.sha256,
        ).hexdigest()
        return {
            NODE: self.node,
            PROJECT: projectBytes,
            TIMESTAMP: timestamp,
            NONCE: nonce,
            SIGNATURE: mac.encode(),
        }


class Verifier:
    """
    Checks the signature of a request a node received.

    @ivar maxNonces: how many nonces are remembered at most; past it the
        oldest are forgotten first (they are also forgotten once outside the
        clock window, when a replay would be refused anyway).
    """

    maxNonces = 200_000

    def __init__(
        self, nodes: Iterable[str], secret: bytes, clock: Any, window: float = 300.0
    ) -> None:
        self._nodes = frozenset(n.encode("ascii") for n in nodes)
        self._secret = secret
        self._clock = clock
        self._window = window
        self._nonces: OrderedDict = OrderedDict()

    def verify(
        self, method: bytes, uri: bytes, body: bytes, headers: Mapping[bytes, bytes]
    ) -> Optional[Signed]:
        """
        @param headers: lower-case header names to their first value.
        @return: L{None} if the request carries no forwarding header, else
            what its valid signature vouches for.
        @raise BadSignature: it carries forwarding headers but they do not
            prove it comes from a node of this cluster.
        """
        if not any(name.startswith(PREFIX) for name in headers):
            return None
        values = [headers.get(name) for name in HEADERS]
        if any(not v for v in values):
            raise BadSignature("forwarding headers are missing or empty")
        node, project, timestamp, nonce, signature = values
        if node not in self._nodes:
            raise BadSignature("the sender is not a node of this cluster")
        if not timestamp.isdigit() or len(timestamp) > 12:
            raise BadSignature("the timestamp is malformed")
        now = self._clock.seconds()
        if abs(now - int(timestamp)) > self._window:
            raise BadSignature("the timestamp is outside the clock window")
        path, query = _split(uri)
        expected = hmac.new(
            self._secret,
            canonical(method, path, query, body, node, project, timestamp, nonce),
            hashlib.sha256,
        ).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature):
            raise BadSignature("the signature does not match")
        self._forgetOld(now)
        if nonce in self._nonces:
            raise BadSignature("the nonce was already used")
        self._nonces[nonce] = int(timestamp)
        try:
            return Signed(node.decode("ascii"), project.decode("ascii"))
        except UnicodeDecodeError:
            raise BadSignature("the project is not ASCII") from None

    def _forgetOld(self, now: float) -> None:
        nonces = self._nonces
        while nonces:
            oldest = next(iter(nonces.values()))
            if len(nonces) < self.maxNonces and now - oldest <= self._window:
                break
            nonces.popitem(last=False)
