"""
Writing to a TCP connection at once, polling without a logging context
per event (L{leanPolling}), and room for the connections a node keeps
(L{raiseFileLimit}).

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

import errno
import resource
from typing import Any, Iterable, Optional

from twisted.internet import tcp
from twisted.python import log as legacyLog

#: A header name (a token, RFC 9110 5.6.2), as a regular expression of
#: bytes: the HTTP readers of the node (the channel's, the pass-through's,
#: the forwarding client's) share it.
TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
#: The header line that offers, with a connection's first request, and
#: grants, with its first answer, requests pipelined on the connection and
#: served side by side (see L{marconi.api.pipeline}).
PIPELINING = b"Marconi-Pipelining: 1\r\n"


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


def leanPolling(reactor: Any) -> bool:
    """
    Have Twisted's epoll reactor C{reactor} hand each ready socket to its
    connection without wrapping the call in a legacy logging context.

    For every event of every turn, the epoll reactor calls
    L{twisted.python.log.callWithLogger}, which asks the connection for its
    log prefix and copies a context dictionary around the call, so that a
    legacy C{log.msg} made while the event is handled names the connection
    as its C{system}.  Marconi logs with L{twisted.logger}, whose events
    never carry that context.  It costs a few µs an event: once for a
    local request, three times for a forwarded one (on the relay, the
    client's request and the owner's answer; on the owner, the request),
    with caches colder when the two nodes take turns on a core.

    The events are dispatched as before (L{_doReadOrWrite}: a read, a
    write, a disconnection; an exception from a connection is logged and
    closes it); an exception escaping that is logged with the
    connection's log prefix as its system, as C{callWithLogger} does, and
    the other events of the turn are still handled.  The legacy log
    messages written while an event is handled lose the connection's
    prefix: among them Twisted's own report of an exception a protocol
    raised (its C{log_system} is C{-} instead of the connection's name;
    the traceback and the closing of the connection are as before).

    @param reactor: the reactor; anything but an
        L{twisted.internet.epollreactor.EPollReactor} (the default on
        Linux) is left as it is.
    @return: whether C{reactor} now polls this way.
    """
    from twisted.internet.epollreactor import EPollReactor

    if type(reactor) is not EPollReactor:
        return False
    # What _leanPoll uses of Twisted's epoll reactor, which is not public:
    # a Twisted whose reactor differs polls its own way.
    if EPollReactor.doIteration is not EPollReactor.doPoll or not all(
        hasattr(reactor, name) for name in ("_poller", "_selectables", "_doReadOrWrite")
    ):
        return False
    instance: Any = reactor
    if getattr(instance.doPoll, "__func__", None) is not _leanPoll:
        # The instance's, in place of the class's (doIteration is doPoll).
        poll = _leanPoll.__get__(instance)
        instance.doPoll = poll
        instance.doIteration = poll
    return True


def _leanPoll(self: Any, timeout: Optional[float]) -> None:
    """
    L{twisted.internet.epollreactor.EPollReactor.doPoll}, without the
    logging context around each event (see L{leanPolling}).
    """
    if timeout is None:
        timeout = -1
    try:
        ready = self._poller.poll(timeout, len(self._selectables))
    except OSError as err:
        if err.errno == errno.EINTR:
            return
        raise
    selectables = self._selectables
    doReadOrWrite = self._doReadOrWrite
    for fd, event in ready:
        selectable = selectables.get(fd)
        if selectable is None:
            continue
        try:
            doReadOrWrite(selectable, fd, event)
        except KeyboardInterrupt:
            raise
        except BaseException:
            try:
                system = selectable.logPrefix()
            except BaseException:
                system = "(buggy logPrefix method)"
            legacyLog.err(system=system)


#: The most open files a process may have when C{/proc/sys/fs/nr_open}
#: cannot be read: Linux's default.
MAX_OPEN_FILES = 1 << 20


def raiseFileLimit(reactor: Any) -> Optional[tuple]:
    """
    Raise this process's soft limit on open files to its hard limit, as a
    server that keeps many connections does: clients', and to each peer up
    to C{[cluster] idle_connections} kept for forwarded requests.  Many
    systems start services with a soft limit of 1,024 and a far higher
    hard one; a node at the soft limit can accept no client and open no
    connection, and its forwarded requests fail.  A hard limit that is
    unlimited, or above what the kernel lets a process have
    (C{fs.nr_open}), gives that.

    Left as it is under a C{select()} reactor, which cannot watch a file
    descriptor of 1,024 or more.

    @param reactor: the reactor the node runs on.
    @return: the soft limit before and after, if it was raised; else
        L{None}.
    @raise OSError: the kernel refused the new limit.
    """
    from twisted.internet.selectreactor import SelectReactor

    if isinstance(reactor, SelectReactor):
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = _nrOpen()
    wanted = ceiling if hard == resource.RLIM_INFINITY or hard > ceiling else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except ValueError as e:
            # What Python makes of EPERM and EINVAL.
            raise OSError(str(e)) from None
        return soft, wanted
    return None


def _nrOpen() -> int:
    """
    The most open files the kernel lets a process have.
    """
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return MAX_OPEN_FILES
