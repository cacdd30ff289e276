"""
Writing to a TCP connection at once.

Twisted's TCP transport never sends in C{write}: it appends the bytes to
its buffer and registers the socket for writability (an C{epoll_ctl}); the
bytes go out when the reactor next reports the socket writable, in the
next turn of its loop, and once the buffer is drained the socket is
unregistered again (another C{epoll_ctl}).  For a server that answers one
request at a time that is two system calls and one more turn of the
reactor (C{epoll_wait}, the dispatch of the event, its logging context) for
every answer, paid once by a request answered locally and three times by a
forwarded one (the request to the owner, the owner's answer, the answer to
the client).

L{writeNow} sends the bytes with one C{send} when nothing is waiting in
the transport's buffer, which is what the socket's own buffer nearly
always takes whole; whatever it does not take is handed to the transport
as usual, behind what was sent, so the order of the bytes is kept and a
client that reads slowly gets the rest as the transport drains.  Anything
else (a TLS connection, an in-memory transport, a transport with bytes
buffered, closing, or whose producer it paused) is written to as before.
"""

from typing import Any, Iterable

from twisted.internet import tcp

#: A header name (a token, RFC 9110 5.6.2), as a regular expression of
#: bytes: the HTTP readers of the node (the channel's, the pass-through's,
#: the forwarding client's) share it.
TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"


def headerPairs(block: bytes) -> list:
    """
    The names and values of header lines already checked to be each a
    token, a colon and a value, ending with CRLF (as L{TOKEN} in a
    regular expression of them): the value without the spaces and tabs
    around it.  Split, rather than found again by a pattern, which is
    three times as slow.
    """
    return [
        (name, value.strip(b" \t"))
        for name, _, value in [line.partition(b":") for line in block.split(b"\r\n")]
    ][:-1]


def headerValues(head: bytes, lowered: bytes, name: bytes) -> list:
    """
    The values of the header lines named C{name} (in lower case) in
    C{head}, in order: C{head} holds header lines, each after a CRLF (a
    request or status line before them, or the CRLF alone), and
    C{lowered} is C{head.lower()}.
    """
    found = []
    key = b"\r\n" + name + b":"
    at = lowered.find(key)
    while at >= 0:
        start = at + len(key)
        end = head.find(b"\r\n", start)
        if end < 0:
            break
        found.append(head[start:end].strip(b" \t"))
        at = lowered.find(key, end)
    return found


# The transports whose socket may be written to directly: plain TCP, on
# either side.  Subclasses (UNIX sockets, which may queue file descriptors
# with their bytes) are not among them.
_PLAIN = (tcp.Server, tcp.Client)


def writeNow(transport: Any, data: bytes) -> None:
    """
    Write C{data} to C{transport}, sending it at once when the transport is
    a plain TCP connection with nothing buffered.

    @param transport: the transport of a connected protocol.
    @param data: the bytes to write.
    """
    if (
        type(transport) not in _PLAIN
        or not data
        or not transport.connected
        or transport.disconnecting
        or transport._aborting
        or transport._writeDisconnecting
        or transport.TLS
        or transport.producerPaused
        or transport.dataBuffer
        or transport._tempDataLen
    ):
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)
    except OSError:
        # Would block (EAGAIN): the transport sends it once the socket
        # drains.  Any other error: the transport meets it again when it
        # sends, and closes the connection as it always does.
        transport.write(data)
        return
    if sent < len(data):
        transport.write(data[sent:])


def writeSequenceNow(transport: Any, pieces: Iterable[bytes]) -> None:
    """
    L{writeNow} the bytes of C{pieces}, joined.
    """
    writeNow(transport, b"".join(pieces))
