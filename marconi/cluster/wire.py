"""
The hot call between nodes — a forwarded request — over persistent HTTP/1.1
connections of its own.

Everything else a node asks its peers (probes, listings, the ring, the
audit river) goes through L{marconi.cluster.forward.PeerClient.call}, the
Agent treq wraps.  A forwarded request is only passed through: its request
is written in one piece from bytes already at hand, and its answer is read
as a status, a list of raw headers and the body's bytes (C{Content-Length},
chunked, or up to the close), nothing decoded.  The Agent's layers (a
request object, a response object with a body protocol, a header
container, a state machine per connection and per response) were half of
the relaying node's CPU; see docs/cluster.rst, "What a forwarded request
costs".

Requests that may share a connection (C{pipelined}: those that do not
wait for messages) are pipelined on one, up to C{depth} at once, once
the peer granted it (see L{marconi.api.pipeline}): the first request on
a connection offers it, and the first answer says whether the peer
serves pipelined requests.  While a connection to a peer that granted it
is being made, such requests wait for it and go out on it together.  A
request that waits for messages has a connection to itself.  Up to
C{maxIdle} idle connections per peer are kept, the most recently used
taken first, and one idle longer than C{maxIdleTime} (below the peers'
idle timeout) is closed instead of used, or when a connection to the
same peer is released after it.  C{maxIdle} is meant to be above the
number of requests a node forwards to one peer at once: past it, every
request over the bound opens a connection (a TCP handshake, and a TLS
one between nodes with mutual TLS) and closes it again.

A peer may close an idle connection just as a request is written on it
(its idle timeout fired, it restarted).  A request the caller gives the
bytes of a second sending (C{again}: one that may be sent twice, see
L{marconi.cluster.forward.retrySafe}, signed anew) whose reused connection
is lost before any byte of the answer arrived is sent once more, on a new
connection; any other request fails with the connection's error.

A connection this node closes with requests pipelined on it (one of them
had an answer that could not be read, or an answer closed the
connection) fails those that cannot be sent again with L{Abandoned}: no
failure of the peer.  A request given up (its caller went away, or its
deadline passed) while others wait on its connection is left there, its
answer read and dropped; the connection takes no new request until it is
idle, and is closed once no request on it is waited for.
"""

import re
from collections import deque
from functools import partial
from typing import Any, Callable, Optional

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from marconi.net import PIPELINING, TOKEN, headerPairs, headerValues, writeNow

_log = Logger()

#: A response head (status line and headers) longer than this is refused.
MAX_HEAD = 65536
#: Header lines, each a name (RFC 9110 5.6.2), a colon and a value, ending
#: with CRLF.
_HEADER_LINES = re.compile(rb"(?:" + TOKEN + rb":[^\r\n]*\r\n)*")
_NO_BODY = (204, 304)
#: The length's header line, in a head in lower case.
_LENGTH = b"\r\ncontent-length:"
#: A header line, in a head in lower case, that the body's framing or the
#: connection depends on, or another hop-by-hop header (RFC 9110 7.6.1):
#: an answer with one is read line by line, and never passed on as it
#: came.
_SPECIAL = re.compile(
    rb"\r\n(?:transfer-encoding|connection|keep-alive|proxy-authenticate"
    rb"|proxy-connection|te|trailer|upgrade):"
)
#: A reason phrase (RFC 9112 4): it is written to the client as it came.
_PHRASE = re.compile(rb"[\t \x21-\x7e\x80-\xff]*")
#: Status lines read (L{_status}), bounded: peers answer with few.
_STATUS: dict = {}
_MAX_STATUS = 64


def _status(line: bytes) -> tuple:
    """
    The code, the reason phrase and whether the connection persists by
    default (HTTP/1.1) of a status line, kept for the next answers with
    the same.

    @raise BadAnswer: the line is not an HTTP/1.1 or HTTP/1.0 status line.
    """
    version, _, rest = line.partition(b" ")
    code, _, phrase = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3:
        raise BadAnswer("the status line is malformed")
    if not code.isdigit() or not _PHRASE.fullmatch(phrase):
        raise BadAnswer("the status line is malformed")
    found = (int(code), phrase, version == b"HTTP/1.1")
    if len(line) <= 64:
        if len(_STATUS) >= _MAX_STATUS:
            _STATUS.clear()
        _STATUS[line] = found
    return found


class BadAnswer(Exception):
    """
    A peer's response is not HTTP/1.1 this client reads.
    """


class Abandoned(Exception):
    """
    A request was not answered because this node closed the connection it
    was pipelined on: another request's answer could not be read, or
    closed the connection.
    """


class BodyTooLarge(Exception):
    """
    A peer's response body went past the bound.
    """


class RawHeaders:
    """
    A response's headers as they came, read like L{twisted.web.http_headers.Headers}.
    """

    __slots__ = ("_pairs", "_block")

    def __init__(self, pairs: list) -> None:
        self._pairs: Optional[list] = pairs
        self._block = b""

    @classmethod
    def fromBlock(cls, block: bytes) -> "RawHeaders":
        """
        The headers of C{block}, header lines (each a name, a colon and a
        value, ending with CRLF) already checked: split only when read
        (most forwarded answers are relayed with only their status and
        length read).
        """
        headers = cls.__new__(cls)
        headers._pairs = None
        headers._block = block
        return headers

    def items(self) -> list:
        """
        The headers as pairs of a name and a value, in the order they came.
        """
        pairs = self._pairs
        if pairs is None:
            pairs = self._pairs = headerPairs(self._block)
        return pairs

    def getAllRawHeaders(self) -> Any:
        for name, value in self.items():
            yield name, [value]

    def getRawHeaders(self, name: bytes, default: Any = None) -> Any:
        lower = name.lower()
        found = [v for n, v in self.items() if n.lower() == lower]
        return found or default

    def hasHeader(self, name: bytes) -> bool:
        return self.getRawHeaders(name) is not None


class Head:
    """
    A response's status and headers.

    @ivar raw: the response's head as it came (status line, header lines
        and the empty line), when it is HTTP/1.1, its body is delimited by
        its one C{Content-Length} alone, and it holds no hop-by-hop header
        (no C{Transfer-Encoding}, no C{Connection}, none of L{_SPECIAL});
        else empty.
    @ivar lowered: C{raw} in lower case.
    """

    __slots__ = ("code", "phrase", "headers", "raw", "lowered")

    def __init__(
        self,
        code: int,
        phrase: bytes,
        headers: RawHeaders,
        raw: bytes = b"",
        lowered: bytes = b"",
    ) -> None:
        self.code = code
        self.phrase = phrase
        self.headers = headers
        self.raw = raw
        self.lowered = lowered


def requestBytes(
    method: bytes, uri: bytes, host: bytes, headers: Any, body: bytes
) -> bytes:
    """
    A whole HTTP/1.1 request: C{headers} are pairs of a name and a value,
    a CR or LF in either made a space (no header can be smuggled); or
    header lines already checked (each a name, a colon and a value without
    CR or LF, ending with CRLF), as bytes, sent as they are.
    """
    if type(headers) is bytes:
        block = headers
    else:
        block = b"".join([b"%s: %s\r\n" % pair for pair in headers])
        count = len(headers)
        if block.count(b"\n") != count or block.count(b"\r") != count:
            # Some name or value holds a CR or LF (rare): line by line.
            block = b"".join([_line(name, value) for name, value in headers])
    if body or method not in (b"GET", b"HEAD", b"DELETE"):
        return _WITH_BODY % (method, uri, host, block, len(body), body)
    return _WITHOUT_BODY % (method, uri, host, block)


#: L{requestBytes}'s layouts.
_WITH_BODY = b"%s %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %d\r\n\r\n%s"
_WITHOUT_BODY = b"%s %s HTTP/1.1\r\nHost: %s\r\n%s\r\n"


def _line(name: bytes, value: bytes) -> bytes:
    """
    A header line, any CR or LF in its name or value made a space.
    """
    line = b"%s: %s" % (name, value)
    return line.replace(b"\r", b" ").replace(b"\n", b" ") + b"\r\n"


class _Exchange:
    """
    One request on a connection, and what is called with its answer.
    """

    __slots__ = (
        "pool",
        "data",
        "head",
        "limit",
        "then",
        "due",
        "bodyTimeout",
        "connection",
        "key",
        "again",
        "reused",
        "connecting",
        "pipelined",
    )

    def __init__(
        self,
        pool: "Pool",
        key: Any,
        data: bytes,
        head: bool,
        limit: int,
        bodyTimeout: float,
        again: Optional[Callable[[], bytes]],
        then: Callable[[Any], object],
        pipelined: bool = False,
    ):
        self.pool = pool
        #: It may be sent on a connection with other requests in flight.
        self.pipelined = pipelined
        self.key = key
        self.data = data
        self.head = head
        self.limit = limit
        self.bodyTimeout = bodyTimeout
        #: Makes its bytes to send once more if its reused connection dies
        #: first; L{None} if it may not be sent twice.
        self.again = again
        #: It was sent on a connection that had carried an answer before.
        self.reused = False
        #: Called with its result, once; L{None} once called, or once it
        #: was cancelled.
        self.then: Optional[Callable[[Any], object]] = then
        #: When it times out (the pool's clock).
        self.due = 0.0
        self.connection: Optional["_Connection"] = None
        #: The connection being made for it (with others, maybe).
        self.connecting: Optional[_Dialing] = None

    def cancel(self) -> None:
        """
        Give up on the request (see L{Pool.send}): its connection is
        closed, and C{then} is called with a L{CancelledError}, unless it
        was called already.
        """
        then = self.then
        if then is not None:
            self.pool._cancel(self)
            then(Failure(CancelledError()))


class _Connection(Protocol):
    """
    A persistent connection to a peer: the exchanges sent on it, answered
    in order.
    """

    # Connected TCP or TLS transports: writable, abortable.
    transport: Any

    def __init__(self, pool: "Pool", key: Any) -> None:
        self._pool = pool
        self._key = key
        self._buffer = b""
        #: The exchange whose answer is being read: the first of
        #: C{_queue}, the exchanges sent and not answered yet.
        self._exchange: Optional[_Exchange] = None
        self._queue: deque = deque()
        self._answer: Any = None
        self._body: list = []
        self._size = 0
        self._mode = b""
        self._left = 0
        self._keep = True
        # Bytes of the current exchange's answer have arrived.
        self._heard = False
        self.idleSince = 0.0
        #: Answers read on this connection.
        self.answered = 0
        #: The peer serves requests pipelined on this connection (its first
        #: answer said so, see L{marconi.api.pipeline}).
        self.pipelines = False
        #: Exchanges sent that may not share the connection with others
        #: (those that wait: see L{Pool.send}).
        self.alone = 0
        #: Requests sent on this connection.
        self.sent = 0
        #: Its first request offered pipelining.
        self.offered = False
        #: A request on it was given up while others waited: no new one
        #: is sent on it until it is idle.
        self.draining = False
        self._aborted = False
        #: An answer closed the connection.
        self._closing = False

    def connectionMade(self) -> None:
        # A request pipelined behind one not yet acknowledged goes out at
        # once, not when Nagle's algorithm would let it (under TLS, on the
        # TCP connection beneath).
        transport = self.transport
        while transport is not None:
            setNoDelay = getattr(transport, "setTcpNoDelay", None)
            if setNoDelay is not None:
                setNoDelay(True)
                break
            transport = getattr(transport, "transport", None)

    def send(self, exchange: _Exchange) -> None:
        exchange.connection = self
        queue = self._queue
        queue.append(exchange)
        if not exchange.pipelined:
            self.alone += 1
        if len(queue) == 1:
            self._exchange = exchange
            self._answer = None
            self._body = []
            self._size = 0
            self._keep = True
            self._heard = False
        data = exchange.data
        if not self.sent and exchange.pipelined and self._pool.depth > 1:
            # Pipelining is offered with the first request (unless the
            # pool sends one request at a time).
            at = data.find(b"\r\n") + 2
            data = data[:at] + PIPELINING + data[at:]
            self.offered = True
        self.sent += 1
        writeNow(self.transport, data)

    def _granted(self, granted: bool) -> None:
        """
        The first answer on the connection granted pipelining or not: so
        will, it is assumed, the next connections to the same peer (see
        L{Pool._dial}).
        """
        self.pipelines = granted
        pool = self._pool
        if granted:
            pool._granted.add(self._key)
        else:
            pool._granted.discard(self._key)
            if pool._pipes.get(self._key) is self:
                del pool._pipes[self._key]

    def room(self, depth: int) -> bool:
        """
        Whether another pipelined request may be sent on this connection.
        """
        return (
            self.pipelines
            and self._keep
            and not self.alone
            and not self.draining
            and len(self._queue) < depth
        )

    def abort(self) -> None:
        if self._aborted:
            # Several requests on it given up at once (their deadline).
            return
        self._aborted = True
        self._keep = False
        # Out of the pool now: the transport reports the loss only later.
        self._pool.forget(self)
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            # An answer closed the connection: nothing after it is read.
            return
        if self._exchange is None:
            # Nothing was asked: a peer that talks out of turn is dropped.
            self.abort()
            return
        self._heard = True
        self._buffer = self._buffer + data if self._buffer else data
        try:
            self._parse()
        except (BadAnswer, BodyTooLarge) as e:
            self._fail(Failure(e))
            self.abort()

    def _parse(self) -> None:
        while self._exchange is not None and not self._closing:
            if self._answer is None:
                if not self._readHead():
                    return
            elif self._mode == b"length":
                if not self._take(self._left):
                    return
                self._done()
            elif self._mode in (b"chunked", b"trailers"):
                if not self._readChunk():
                    return
            else:
                # Up to the close.
                self._add(self._buffer)
                self._buffer = b""
                return

    def _readHead(self) -> bool:
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                raise BadAnswer("the response head is too long")
            return False
        first = buffer.find(b"\r\n")
        if first < 0 or first > end:
            first = end
        statusLine = buffer[:first]
        status, phrase, keep = _STATUS.get(statusLine) or _status(statusLine)
        if 100 <= status < 200:
            self._buffer = buffer[end + 4 :]
            return True  # an interim answer: the final one follows
        if self.offered and not self.answered:
            self._granted(buffer.startswith(PIPELINING, first + 2))
            if self.pipelines:
                # The grant, in the first header line, goes no further.
                cut = first + 2 + len(PIPELINING)
                buffer = self._buffer = buffer[: first + 2] + buffer[cut:]
                end -= len(PIPELINING)
        # Where the body begins: the buffer keeps what follows the head
        # (not cut before it is known how much of it is the body).
        start = end + 4
        block = buffer[first + 2 : end + 2]
        if not _HEADER_LINES.fullmatch(block):
            raise BadAnswer("a header line is malformed")
        length = None
        chunked = False
        asItCame = False
        self._keep = keep
        raw = buffer[:start]
        # The head in lower case, read once: the names of header lines are
        # found in it after a CRLF (the status line holds none).
        lowered = raw.lower()
        if _SPECIAL.search(lowered, first):
            # The transfer coding, the connection, or another hop-by-hop
            # header: each line is read.
            for name, value in headerPairs(block):
                lower = name.lower()
                if lower == b"content-length":
                    if not value.isdigit() or (length is not None and length != value):
                        raise BadAnswer("the content length is malformed")
                    length = value
                elif lower == b"transfer-encoding":
                    chunked = value.lower() == b"chunked"
                    if not chunked:
                        raise BadAnswer("the transfer coding is not chunked")
                elif lower == b"connection":
                    tokens = value.lower().replace(b" ", b"").split(b",")
                    if b"close" in tokens:
                        self._keep = False
                    elif b"keep-alive" in tokens:
                        self._keep = True
        else:
            # Most answers carry one length and nothing else to look at.
            at = lowered.find(_LENGTH)
            if at >= 0 and lowered.find(_LENGTH, at + 17) < 0:
                at += 17
                length = raw[at : raw.find(b"\r\n", at)].strip(b" \t")
                if not length.isdigit():
                    raise BadAnswer("the content length is malformed")
                # The head as it came, its one Content-Length delimiting
                # the body.
                asItCame = keep
            else:
                for value in headerValues(raw, lowered, b"content-length"):
                    if not value.isdigit() or (length is not None and length != value):
                        raise BadAnswer("the content length is malformed")
                    length = value
        exchange = self._exchange
        assert exchange is not None
        headers = RawHeaders.fromBlock(block)
        if exchange.head or status in _NO_BODY:
            self._answer = Head(status, phrase, headers)
            self._mode = b"length"
            self._left = 0
        elif chunked:
            self._answer = Head(status, phrase, headers)
            self._mode = b"chunked"
            self._left = -1
        elif length is not None:
            left = int(length)
            if left > exchange.limit:
                raise BodyTooLarge(f"over {exchange.limit} bytes")
            if asItCame:
                self._answer = Head(status, phrase, headers, raw, lowered)
            else:
                self._answer = Head(status, phrase, headers)
            if len(buffer) - start >= left:
                # The body came with the head (as it mostly does): the
                # answer is whole.
                self._size = left
                self._body = [buffer[start : start + left]]
                self._buffer = buffer[start + left :]
                self._done()
                return True
            self._mode = b"length"
            self._left = left
        else:
            self._answer = Head(status, phrase, headers)
            self._mode = b"close"
            self._keep = False
        self._buffer = buffer[start:]
        self._pool.headReceived(exchange)
        return True

    def _take(self, count: int) -> bool:
        if len(self._buffer) < count:
            return False
        self._add(self._buffer[:count])
        self._buffer = self._buffer[count:]
        return True

    def _add(self, data: bytes) -> None:
        if data:
            exchange = self._exchange
            assert exchange is not None
            self._size += len(data)
            if self._size > exchange.limit:
                raise BodyTooLarge(f"over {exchange.limit} bytes")
            self._body.append(data)

    def _readChunk(self) -> bool:
        if self._left < 0:
            end = self._buffer.find(b"\r\n")
            if end < 0:
                if len(self._buffer) > 1024:
                    raise BadAnswer("a chunk size is malformed")
                return False
            size = self._buffer[:end].partition(b";")[0].strip()
            try:
                self._left = int(size, 16)
            except ValueError:
                raise BadAnswer("a chunk size is malformed") from None
            if self._left < 0:
                raise BadAnswer("a chunk size is malformed")
            exchange = self._exchange
            assert exchange is not None
            if self._size + self._left > exchange.limit:
                # Refused before its bytes are buffered.
                raise BodyTooLarge(f"over {exchange.limit} bytes")
            self._buffer = self._buffer[end + 2 :]
            if self._left == 0:
                self._mode = b"trailers"
        if self._mode == b"trailers":
            # Trailers are read and dropped, up to the empty line.
            while True:
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_HEAD:
                        raise BadAnswer("the trailers are too long")
                    return False
                line = self._buffer[:end]
                self._buffer = self._buffer[end + 2 :]
                if not line:
                    self._done()
                    return True
        if len(self._buffer) < self._left + 2:
            return False
        if self._buffer[self._left : self._left + 2] != b"\r\n":
            raise BadAnswer("a chunk is not followed by CRLF")
        self._take(self._left)
        self._buffer = self._buffer[2:]
        self._left = -1
        return True

    def _done(self) -> None:
        exchange, head = self._exchange, self._answer
        assert exchange is not None and head is not None
        body = b"".join(self._body)
        queue = self._queue
        queue.popleft()
        if not exchange.pipelined:
            self.alone -= 1
        self.answered += 1
        self._answer = None
        self._body = []
        self._size = 0
        if queue:
            # The next answer follows.
            self._exchange = queue[0]
            self._heard = bool(self._buffer)
        else:
            self._exchange = None
            if self._buffer:
                # Bytes beyond the answers: the connection is not in step.
                self._keep = False
        if not self._keep:
            # Those still waiting are sent again or fail once the
            # connection is lost (see connectionLost).
            self._closing = True
            self._pool.forget(self)
            self.transport.loseConnection()
        elif not queue:
            self._pool.release(self)
        self._pool.finished(exchange, (head, body))

    def _fail(self, failure: Failure) -> None:
        """
        Fail the exchange whose answer is being read (the connection is
        then aborted: those behind it are sent again or fail once it is
        lost).
        """
        exchange = self._exchange
        if exchange is None:
            return
        queue = self._queue
        queue.popleft()
        if not exchange.pipelined:
            self.alone -= 1
        self._exchange = queue[0] if queue else None
        self._answer = None
        self._heard = False
        self._pool.finished(exchange, failure)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._pool.forget(self)
        if self._exchange is not None and self._answer is not None:
            if self._mode == b"close":
                self._done()
        queue, self._queue = self._queue, deque()
        self._exchange = None
        if not queue:
            return
        # Closed by this node (another request on it failed, or an answer
        # closed it): no failure of the peer.
        closedHere = self._aborted or self._closing
        if closedHere:
            error: Exception = Abandoned("its connection was closed before its answer")
        else:
            error = reason.value
            if not isinstance(error, (ConnectionLost, ConnectionDone)):
                error = ConnectionLost(str(error))
        heard = self._heard
        for exchange in queue:
            if (
                exchange.again is not None
                and (exchange.reused or closedHere)
                and not heard
            ):
                # A pooled connection the peer had already closed, or one
                # closed before this request's answer began: once more, on
                # a new one.
                try:
                    self._pool.resend(exchange)
                except Exception:
                    # It could not be sent again (made anew, or a new
                    # connection asked for): the others are still seen to.
                    self._pool.finished(exchange, Failure())
            else:
                self._pool.finished(exchange, Failure(error))
            heard = False


class _Dialing:
    """
    A connection being made to a peer, and the requests that will go out
    on it: the one it was opened for, and, when the peer is known to
    serve pipelined requests, those sent meanwhile (up to the pool's
    depth).
    """

    __slots__ = ("exchanges", "deferred", "pipelines")

    def __init__(self, exchange: _Exchange, pipelines: bool) -> None:
        self.exchanges = [exchange]
        self.pipelines = pipelines
        #: Fires with the connected L{_Connection}; L{None} once it fired.
        self.deferred: Optional[Deferred] = None

    def room(self, depth: int) -> bool:
        return self.pipelines and len(self.exchanges) < depth


def fire(deferred: Deferred, result: Any) -> None:
    """
    Fire C{deferred} with C{result}: a L{Failure} fails it.
    """
    if isinstance(result, Failure):
        deferred.errback(result)
    else:
        deferred.callback(result)


class Pool:
    """
    Persistent connections to the peers, and the requests sent on them.

    @param connect: called with a peer's key and a protocol factory, returns
        the L{Deferred} of the connected protocol (an endpoint's C{connect}).
    @param maxIdle: the idle connections kept per peer.
    """

    maxIdleTime = 50.0

    def __init__(
        self,
        clock: Any,
        connect: Callable[[Any, Factory], Deferred],
        maxIdle: int = 256,
        depth: int = 128,
    ):
        self._clock = clock
        self._connect = connect
        self.maxIdle = maxIdle
        self.depth = depth
        #: By peer, the connection (or L{_Dialing}) pipelined requests go
        #: to while it has room.
        self._pipes: dict = {}
        #: The peers whose last connection granted pipelining.
        self._granted: set = set()
        #: By peer, its idle connections, the most recently released last.
        self._idle: dict = {}
        self._busy: set = set()
        #: The exchanges not answered yet, and the one timer that fails
        #: those past their deadline (each request scheduling and
        #: cancelling a timer of its own cost the reactor more than the
        #: rest of the exchange).
        self._waiting: set = set()
        self._timer: Any = None

    def request(
        self,
        key: Any,
        data: bytes,
        head: bool,
        limit: int,
        headerTimeout: float,
        bodyTimeout: float,
        again: Optional[Callable[[], bytes]] = None,
        pipelined: bool = False,
    ) -> Deferred:
        """
        Send C{data} (a whole request, L{requestBytes}) to the peer C{key}.

        @param head: the request is a C{HEAD} (its answer has no body).
        @param again: if given, the request may be sent twice: if the
            pooled connection it went out on is lost before any byte of the
            answer, C{again()} (the request's bytes, made anew) is sent on a
            new connection (within the same C{headerTimeout}).
        @return: a L{Deferred} firing with C{(Head, body)}; failing with
            L{twisted.internet.defer.TimeoutError} when the head did not
            come within C{headerTimeout} seconds (connecting included) or
            the body within C{bodyTimeout} more, L{BodyTooLarge} past
            C{limit} bytes, L{BadAnswer}, or the connection's error.
            Cancelled, it closes the connection and fails with
            L{CancelledError}.
        """
        result: Deferred = Deferred(lambda _: self._cancel(exchange))
        exchange = self.send(
            key,
            data,
            head,
            limit,
            headerTimeout,
            bodyTimeout,
            again,
            partial(fire, result),
            pipelined,
        )
        return result

    def send(
        self,
        key: Any,
        data: bytes,
        head: bool,
        limit: int,
        headerTimeout: float,
        bodyTimeout: float,
        again: Optional[Callable[[], bytes]],
        then: Callable[[Any], object],
        pipelined: bool = False,
    ) -> _Exchange:
        """
        L{request}, but with no L{Deferred}: C{then} is called once with
        the result, C{(Head, body)} or the L{Failure} the L{Deferred}
        would fail with (from within this call, if it fails at once).

        @raise Exception: what connecting or sending raised at once (then
            C{then} is never called).
        @return: the request, whose C{cancel} gives up on it.
        """
        exchange = _Exchange(
            self, key, data, head, limit, bodyTimeout, again, then, pipelined
        )
        self._waiting.add(exchange)
        now = self._clock.seconds()
        self._due(exchange, headerTimeout, now)
        try:
            connection = None
            if pipelined:
                connection = self._pipes.get(key)
                if connection is not None and not connection.room(self.depth):
                    connection = None
                if type(connection) is _Dialing:
                    # Out on the connection being made, once it is.
                    connection.exchanges.append(exchange)
                    exchange.connecting = connection
                    return exchange
            if connection is None:
                connection = self._take(key, now)
            if connection is not None:
                exchange.reused = True
                self._busy.add(connection)
                connection.send(exchange)
                if pipelined and connection.pipelines:
                    self._pipes[key] = connection
            else:
                self._dial(exchange)
        except BaseException:
            # Connecting or sending failed at once (a peer name the TLS
            # options refuse, say): an error of this node, raised to the
            # caller, with nothing left waiting for the request.
            exchange.then = None
            self._waiting.discard(exchange)
            self._stop(exchange)
            raise
        return exchange

    def _cancel(self, exchange: _Exchange) -> None:
        exchange.then = None
        if not self._stop(exchange):
            self._waiting.discard(exchange)

    def _due(
        self, exchange: _Exchange, seconds: float, now: Optional[float] = None
    ) -> None:
        """
        Give C{exchange} C{seconds} more from C{now} (the pool's clock, read
        if not given): its deadline is set, and the one timer of the pool
        is moved sooner only if it would fire after it.
        """
        if now is None:
            now = self._clock.seconds()
        due = exchange.due = now + seconds
        timer = self._timer
        if timer is None:
            self._timer = self._clock.callLater(seconds, self._expire)
        elif timer.getTime() > due:
            timer.reset(seconds)

    def _expire(self) -> None:
        """
        Fail the exchanges past their deadline with
        L{twisted.internet.defer.TimeoutError}, and wait for the next
        deadline.
        """
        self._timer = None
        now = self._clock.seconds()
        late = [exchange for exchange in self._waiting if exchange.due <= now]
        for exchange in late:
            self._waiting.discard(exchange)
            then, exchange.then = exchange.then, None
            if self._stop(exchange):
                # Left on its connection, where others still wait: looked
                # at again later, to close the connection once none does.
                self._waiting.add(exchange)
                exchange.due = now + exchange.bodyTimeout
            if then is not None:
                # One caller's error must not keep the others waiting.
                try:
                    then(Failure(TimeoutError("no answer in time")))
                except Exception:
                    _log.failure("Error handling a forwarded request's timeout")
        if self._waiting:
            # A callback above may have made a request, and with it a
            # timer set for that request alone: the soonest deadline wins.
            soonest = min(exchange.due for exchange in self._waiting)
            seconds = max(0.0, soonest - now)
            timer = self._timer
            if timer is None:
                self._timer = self._clock.callLater(seconds, self._expire)
            elif timer.getTime() > soonest:
                timer.reset(seconds)

    def resend(self, exchange: _Exchange) -> None:
        """
        Send C{exchange} once more, on a new connection: its reused one
        was lost before any byte of the answer.
        """
        again, exchange.again = exchange.again, None
        assert again is not None
        exchange.data = again()
        exchange.reused = False
        exchange.connection = None
        if exchange.then is None:
            return
        pipe = self._pipes.get(exchange.key) if exchange.pipelined else None
        if pipe is None or not pipe.room(self.depth):
            self._dial(exchange)
        elif type(pipe) is _Dialing:
            # Others lost with it go out together on one new connection.
            pipe.exchanges.append(exchange)
            exchange.connecting = pipe
        else:
            self._busy.add(pipe)
            pipe.send(exchange)

    def _dial(self, exchange: _Exchange) -> None:
        """
        Open a new connection to the exchange's peer and send it there.
        When the peer's last connection granted pipelining, the requests
        that may share a connection sent to the peer meanwhile go out on
        it too, behind the first, without waiting for its grant.
        """
        key = exchange.key
        dialing = _Dialing(exchange, exchange.pipelined and key in self._granted)
        exchange.connecting = dialing

        def ended() -> list:
            # The connecting is over: the requests that waited for it.
            dialing.deferred = None
            if self._pipes.get(key) is dialing:
                del self._pipes[key]
            exchanges, dialing.exchanges = dialing.exchanges, []
            for sending in exchanges:
                sending.connecting = None
            return exchanges

        def connected(connection: _Connection) -> None:
            exchanges = ended()
            if not exchanges:
                # Every request it was for was given up meanwhile.
                connection.transport.loseConnection()
                return
            self._busy.add(connection)
            connection.pipelines = dialing.pipelines
            for sending in exchanges:
                connection.send(sending)
            if connection.room(self.depth):
                self._pipes[key] = connection

        def failed(failure: Failure) -> None:
            for sending in ended():
                self.finished(sending, failure)

        factory: Any = Factory.forProtocol(lambda: _Connection(self, key))
        d = self._connect(key, factory)
        if dialing.pipelines and not d.called:
            self._pipes[key] = dialing
        dialing.deferred = d
        d.addCallbacks(connected, failed)

    def _stop(self, exchange: _Exchange) -> bool:
        """
        Give up on C{exchange} (its caller went away, or its deadline
        passed): stop its connecting, or abort its connection, unless other
        requests still wait for their answers on that connection: then it
        is left there, its answer read and dropped when it comes, so that
        the others are not lost with the connection (which takes no new
        request meanwhile).

        @return: whether it was left on its connection (it keeps its
            deadline: past it, with nothing else waiting there, the
            connection is aborted).
        """
        dialing, exchange.connecting = exchange.connecting, None
        if dialing is not None and exchange in dialing.exchanges:
            dialing.exchanges.remove(exchange)
            if not dialing.exchanges and dialing.deferred is not None:
                # No request is left for the connection being made.
                if self._pipes.get(exchange.key) is dialing:
                    del self._pipes[exchange.key]
                dialing.deferred.cancel()
        connection = exchange.connection
        if connection is not None and exchange in connection._queue:
            if any(other.then is not None for other in connection._queue):
                connection.draining = True
                if self._pipes.get(exchange.key) is connection:
                    del self._pipes[exchange.key]
                return True
            # The connection is out of step with its peer once a request
            # on it is given up: closed, and the others on it sent again or
            # failed (see _Connection.connectionLost).
            connection._queue.remove(exchange)
            if not exchange.pipelined:
                connection.alone -= 1
            if connection._exchange is exchange:
                queue = connection._queue
                connection._exchange = queue[0] if queue else None
                connection._answer = None
                connection._heard = False
            connection.abort()
        return False

    def _take(self, key: Any, now: float) -> Optional[_Connection]:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if now - connection.idleSince < self.maxIdleTime:
                return connection
            connection.transport.loseConnection()
        return None

    def headReceived(self, exchange: _Exchange) -> None:
        if exchange.then is not None:
            self._due(exchange, exchange.bodyTimeout)

    def finished(self, exchange: _Exchange, result: Any) -> None:
        self._waiting.discard(exchange)
        then, exchange.then = exchange.then, None
        if then is not None:
            try:
                then(result)
            except Exception:
                _log.failure("Error handling a forwarded request's answer")

    def release(self, connection: _Connection) -> None:
        connection.draining = False
        self._busy.discard(connection)
        if self._pipes.get(connection._key) is connection:
            del self._pipes[connection._key]
        idle = self._idle.get(connection._key)
        if idle is None:
            idle = self._idle[connection._key] = deque()
        now = self._clock.seconds()
        # The least recently used are taken last: those a burst of
        # requests left and the usual load never reaches again are closed
        # once too old, here rather than by the peer's idle timeout.
        while idle and now - idle[0].idleSince >= self.maxIdleTime:
            idle.popleft().transport.loseConnection()
        if len(idle) >= self.maxIdle:
            connection.transport.loseConnection()
            return
        connection.idleSince = now
        idle.append(connection)

    def forget(self, connection: _Connection) -> None:
        self._busy.discard(connection)
        if self._pipes.get(connection._key) is connection:
            del self._pipes[connection._key]
        idle = self._idle.get(connection._key)
        if idle and connection in idle:
            idle.remove(connection)

    def close(self) -> None:
        """
        Close every connection.  Requests still in flight (one that is
        connecting, one sent again after its connection was aborted) keep
        their deadlines: the pool's timer stays while any is waiting.
        """
        if not self._waiting:
            timer, self._timer = self._timer, None
            if timer is not None and timer.active():
                timer.cancel()
        for idle in self._idle.values():
            for connection in idle:
                connection.transport.loseConnection()
        self._idle.clear()
        for connection in list(self._busy):
            connection.abort()
