"""
Requests pipelined on one connection, served at once and answered in
order: how a node serves the requests its peers forward to it.

twisted.web reads a connection's requests one after another: the next
request is read only once the answer to the one before is written.  A
node relaying many requests to a peer would then need a connection for
each request in flight, and the peer would write each answer to its own
connection, waking the relaying node once per answer (see docs/cluster.rst,
"What a forwarded request costs").

A connection whose first request carries C{Marconi-Pipelining: 1} is
served by a L{Pipeline} instead: each request is read whole (its head and
the body its C{Content-Length} declares, none without one) and handed at
once to a channel of its own (a L{marconi.api.http.MarconiChannel} on a
L{_Slot}, which keeps what the channel writes), so the requests are served
side by side, as each would be on a connection of its own.  The answers are written in
the order of their requests, those ready in one turn of the reactor in one
send.  The first answer says C{Marconi-Pipelining: 1} too, which tells the
client it may send its next requests before the answers.

At most C{depth} requests are served at once on a connection; past it,
reading stops until answers are written.  A request whose head its channel
would refuse or read in a special way (a malformed request or header line,
too many or too large headers), with too large a body, or an upgrade, is
answered with an error in its turn, its body skipped, and the requests
after it are read as usual.  One whose end cannot be known (a chunked
body, a doubled or malformed length, a head too long) is refused in its
turn, nothing after it is read, and the connection is closed once the
answers before it are written; so is one that closes the connection
itself (HTTP/1.0, C{Connection: close}), after its own answer.
"""

from collections import deque
from typing import Any, Callable

from twisted.internet.interfaces import ISSLTransport
from zope.interface import directlyProvides

from marconi.net import PIPELINING, headerValues, writeNow

#: The name of the header that asks for pipelining, in lower case.
OFFER = b"marconi-pipelining"
#: Requests served at once on one connection (as many as nodes pipeline
#: to a peer by default).
DEPTH = 128


def offered(data: bytes) -> bool:
    """
    Whether the first request in C{data} asks for pipelining (its head is
    whole in C{data} and says C{Marconi-Pipelining: 1}).
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = data[: end + 2]
    lowered = head.lower()
    if lowered.find(b"\r\n" + OFFER + b":") < 0:
        return False
    return headerValues(head, lowered, OFFER) == [b"1"]


class _Slot:
    """
    The transport of one pipelined request's channel: it keeps what the
    channel writes, for the pipeline to send in turn, and answers for the
    connection (its addresses, its certificate) as the connection does.
    """

    disconnecting = False
    connected = True
    TLS = False

    def __init__(self, pipeline: "Pipeline", transport: Any) -> None:
        self._pipeline = pipeline
        self._transport = transport
        self.written: list = []
        #: The channel asked to close the connection after its answer.
        self.closing = False
        #: The channel's answer is whole.
        self.done = False
        if ISSLTransport.providedBy(transport):
            directlyProvides(self, ISSLTransport)
        getPeerCertificate = getattr(transport, "getPeerCertificate", None)
        if getPeerCertificate is not None:
            # The certificate the client presented (see marconi.tls).
            self.getPeerCertificate = getPeerCertificate

    def write(self, data: bytes) -> None:
        if data:
            self.written.append(data)

    def writeSequence(self, data: Any) -> None:
        self.written.extend(data)

    def loseConnection(self) -> None:
        if not self.closing:
            self.closing = True
            self._pipeline.closing(self)

    abortConnection = loseConnection

    def getPeer(self) -> Any:
        return self._transport.getPeer()

    def getHost(self) -> Any:
        return self._transport.getHost()

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class Pipeline:
    """
    The requests of one connection (its channel C{channel}) served side by
    side by channels from C{member}, answered in order.

    @param member: makes a channel for one request at a time, connected
        to the transport it is given (a L{_Slot}).
    @param refusal: the bytes of an error answer, from a status code, a
        reason, a description and whether it closes the connection.
    """

    def __init__(
        self,
        channel: Any,
        member: Callable[[Any], Any],
        refusal: Callable[[int, bytes, str, bool], bytes],
        depth: int = DEPTH,
    ) -> None:
        self._channel = channel
        self._transport = channel.transport
        self._site = channel.site
        self._member = member
        self._refusal = refusal
        self._depth = depth
        self._buffer = b""
        #: Bytes of a refused request's body still to come, dropped.
        self._skip = 0
        #: In the order of their requests: pairs of a slot and its channel.
        self._serving: deque = deque()
        self._free: list = []
        self._flush: Any = None
        self._paused = False
        self._granted = False
        #: No more requests are read (one closes the connection).
        self._ended = False
        #: The connection is lost: nothing more is written.
        self._gone = False

    def received(self, data: bytes) -> None:
        """
        Read the requests in C{data} (and what came before it), and hand
        each whole one to a channel of its own.
        """
        if self._ended:
            return
        if self._skip:
            # The body of a request refused in its turn.
            skipped = min(self._skip, len(data))
            self._skip -= skipped
            data = data[skipped:]
            if not data:
                return
        buffer = self._buffer + data if self._buffer else data
        # A request begins in this read (none was partly read before it).
        fresh = not self._buffer
        self._buffer = b""
        channel = self._channel
        site = self._site
        while buffer:
            if len(self._serving) >= self._depth:
                # Enough at once: the rest is read as answers are written.
                # The channel counts as handling a request meanwhile, so
                # that it does not resume reading when its transport
                # drains (see twisted.web's HTTPChannel.resumeProducing).
                self._buffer = buffer
                if not self._paused:
                    self._paused = True
                    channel._handlingRequest = True
                    self._transport.pauseProducing()
                channel.arrived()
                return
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > channel.pipelinedHeadBound:
                    self._refuse(
                        431,
                        b"Request Header Fields Too Large",
                        "The request head is too long.",
                    )
                    return
                break
            head = buffer[: end + 2]
            lowered = head.lower()
            # How the request is framed: a body of the length it declares,
            # or none.  Without that, nothing after it can be read.
            if lowered.find(b"\r\ntransfer-encoding:") >= 0:
                self._refuse(
                    400,
                    b"Bad Request",
                    "A pipelined request's body must have a Content-Length.",
                )
                return
            lengths = headerValues(head, lowered, b"content-length")
            if len(lengths) > 1 or (
                lengths and not (lengths[0].isdigit() and len(lengths[0]) <= 18)
            ):
                self._refuse(
                    400, b"Bad Request", "The request's Content-Length is malformed."
                )
                return
            length = int(lengths[0]) if lengths else 0
            whole = end + 4 + length
            # Refused in its turn, its body skipped: the requests after it
            # are read as usual.
            problem = channel.pipelinedProblem(head)
            if problem is None and lowered.find(b"\r\nupgrade:") >= 0:
                # It would take the connection over, out of turn.
                problem = (400, b"Bad Request", "A pipelined request cannot upgrade.")
            if problem is None and length > site.maxRequestBody:
                problem = (
                    413,
                    b"Request Entity Too Large",
                    f"The request body may not exceed {site.maxRequestBody} bytes.",
                )
            if problem is not None:
                self._answer(*problem)
                if len(buffer) < whole:
                    self._skip = whole - len(buffer)
                    buffer = b""
                    break
                buffer = buffer[whole:]
                fresh = True
                continue
            if len(buffer) < whole:
                break
            member = self._serve(buffer[:whole] if whole < len(buffer) else buffer)
            buffer = buffer[whole:]
            fresh = True
            if self._ended:
                return
            if not member.persistent:
                # HTTP/1.0, or Connection: close: nothing after it is read;
                # the connection closes after its answer.
                self._end()
                return
        self._buffer = buffer
        if buffer or self._skip:
            # A request begun: it must arrive whole within the channel's
            # bounds, from when it began.
            channel.arriving(fresh)
        else:
            channel.arrived()

    def _serve(self, request: bytes) -> Any:
        if self._free:
            slot, member = self._free.pop()
        else:
            slot = _Slot(self, self._transport)
            member = self._member(slot)
        self._serving.append((slot, member))
        self._channel.busy()
        member.dataReceived(request)
        return member

    def answered(self, member: Any) -> None:
        """
        The request of C{member} was answered: its answer is sent once
        those before it are (at the end of this turn of the reactor, with
        any others answered meanwhile).
        """
        member.transport.done = True
        self._due()

    def closing(self, slot: _Slot) -> None:
        """
        The request of C{slot} closes the connection after its answer: no
        request after it is read.
        """
        slot.done = True
        self._end()
        self._due()

    def _due(self) -> None:
        if self._flush is None and not self._gone:
            self._flush = self._site.reactor.callLater(0, self._send)

    def _send(self) -> None:
        self._flush = None
        serving = self._serving
        out: list = []
        close = False
        while serving and serving[0][0].done:
            slot, member = serving.popleft()
            out += slot.written
            slot.written = []
            slot.done = False
            if member is not None:
                # Kept for reuse, or (when it closes) to be told of the
                # end; an answer made here has no channel.
                self._free.append((slot, member))
            if slot.closing:
                close = True
                break
        if not out and not close:
            return
        if out:
            data = b"".join(out)
            if not self._granted:
                # The first answer grants pipelining, after its status line.
                self._granted = True
                at = data.find(b"\r\n") + 2
                data = data[:at] + PIPELINING + data[at:]
            writeNow(self._transport, data)
        if close:
            self._end()
            self._channel.loseConnection()
            return
        if self._paused and len(serving) < self._depth:
            self._paused = False
            channel = self._channel
            channel._handlingRequest = False
            if not channel._waitingForTransport:
                self._transport.resumeProducing()
            if self._buffer:
                self.received(b"")
        if not serving and not self._buffer:
            self._channel.idle()

    def _answer(self, code: int, reason: bytes, description: str) -> None:
        """
        Answer C{code}, in its turn, to a request that is not served.
        """
        slot = _Slot(self, self._transport)
        slot.written.append(self._refusal(code, reason, description, False))
        slot.done = True
        self._serving.append((slot, None))
        self._due()

    def _refuse(self, code: int, reason: bytes, description: str) -> None:
        """
        Answer C{code} once the requests before are answered, then close:
        where the request ends is not known, so nothing after it is read.
        """
        self._buffer = b""
        slot = _Slot(self, self._transport)
        slot.written.append(self._refusal(code, reason, description, True))
        slot.closing = True
        slot.done = True
        self._serving.append((slot, None))
        self._end()
        self._due()

    def _end(self) -> None:
        """
        Read no more requests.
        """
        self._ended = True
        self._buffer = b""
        self._channel.arrived()

    def connectionLost(self, reason: Any) -> None:
        """
        The connection is gone: the requests being served are told, and
        nothing more is written.
        """
        self._ended = self._gone = True
        flush, self._flush = self._flush, None
        if flush is not None and flush.active():
            flush.cancel()
        members = [member for _, member in self._serving] + [
            member for _, member in self._free
        ]
        self._serving.clear()
        self._free = []
        for member in members:
            if member is not None:
                member.connectionLost(reason)
