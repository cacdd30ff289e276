"""
The Redis storage driver, on txredisapi.

Every operation that reads and then writes is one Lua script (see
L{marconi.storage.redis.lua} for the scripts and the key layout), so posts,
claims and pops are atomic however many nodes and connections use the same
server.  Times are never read here: each call carries the caller's C{now}.

The connections are ours rather than txredisapi's pool: each one is kept up
by a L{ClientService} on the injected reactor, which reconnects with a
backoff, and a request that finds no usable connection within a short wait
fails at once with L{StorageUnavailable} instead of queueing until the
server comes back.  txredisapi provides the protocol (replies, AUTH,
SELECT, script caching with EVALSHA) and, for C{redis+sentinel://}, the
Sentinel client that finds the primary: every connection attempt asks the
Sentinels where the primary is now, and a connection is offered to requests
only once C{ROLE} says it reaches a primary, so the store follows a failover.

Safety levels (L{marconi.core.durability}; docs/storage-redis.rst says
what each does and does not promise): C{fast} answers once the script ran,
as Redis' own C{appendfsync} setting makes it durable.  C{durable} does
the same, and on a server that has C{WAITAOF} (Redis 7.2 and later) and
writes an append-only file, waits with C{WAITAOF 1 0} until the change is
fsynced to the local AOF.  C{replicated} adds C{WAIT replicas timeout}
on the same connection; a change fewer replicas acknowledged in time
fails with L{StorageUnavailable}.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from typing import Any, Callable, Iterable, Optional, Sequence

import txredisapi
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet import error, tcp
from twisted.internet.defer import (
    Deferred,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.defer import (
    TimeoutError as DeferredTimeoutError,
)
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from marconi.core import errors, models
from marconi.core.audit import RIVER
from marconi.core.deferreds import deferred
from marconi.core.durability import (
    DURABLE,
    FAST,
    LEVELS,
    LOCAL_LEVELS,
    REPLICATED,
    parseDurability,
)
from marconi.core.interfaces import IMessageStore
from marconi.core.models import Claim, ClaimSpec, Message, newId
from marconi.net import writeNow
from marconi.storage import transfer
from marconi.storage.events import StoreEvents
from marconi.storage.redis import lua
from marconi.storage.redis.uri import RedisLocation, parseURI

hiredis: Any
try:
    import hiredis
except ImportError:  # txredisapi then parses replies in Python
    hiredis = None

log = Logger()

_ID = re.compile("[0-9a-f]{32}")

#: Messages and claims purged by one script run; a purge repeats the script
#: so that Redis is never blocked for long.
PURGE_BATCH = 500

#: The transports L{writeNow} sends to at once.
_PLAIN = (tcp.Client, tcp.Server)

#: The commands of one turn of the reactor go out on one connection (see
#: L{RedisStore._pick}), not all at the turn's end: the turn's first command
#: is sent at once, and then every C{SEND_EVERY}th with those before it, so
#: that the server works on them while the node handles the rest of the
#: turn.  Sent only after the turn, a turn's commands left the node waiting
#: for the server about a fifth of the time of a listing benchmark (16
#: connections, redis-server on another core).
SEND_EVERY = 8


def _lp(text: str) -> str:
    """
    Length-prefix C{text} (length in UTF-8 bytes, as Redis counts), so that
    the concatenation of prefixed strings can be split in only one way.
    """
    return f"{len(text.encode('utf-8'))}:{text}"


def projectPrefix(project: str) -> str:
    """
    The prefix of a project's keys.
    """
    return "marconi:p:" + _lp(project)


def queuePrefix(project: str, queue: str) -> str:
    """
    The prefix of a queue's keys.  Both names are length-prefixed, so no
    two C{(project, queue)} pairs share a prefix, and no prefix followed by
    one of the driver's suffixes equals another's.
    """
    return "marconi:q:" + _lp(project) + _lp(queue)


def _validIds(ids: Iterable[str]) -> list[str]:
    """
    Keep the ids that the driver could have made; others cannot exist, and
    never go into a key.
    """
    return [i for i in ids if isinstance(i, str) and _ID.fullmatch(i)]


def _time(value: float) -> str:
    return repr(float(value))


# Lua script text -> its SHA-1, for EVALSHA.
_scriptHashes: dict = {}

#: The first Redis version with C{WAITAOF}.
WAITAOF_VERSION = (7, 2)


def redisVersion(info: str) -> tuple:
    """
    The C{redis_version} of an C{INFO server} reply as a tuple of numbers,
    or C{()} when it has none.
    """
    for line in info.splitlines():
        if line.startswith("redis_version:"):
            parts = line.split(":", 1)[1].strip().split(".")
            return tuple(int(p) for p in parts if p.isdigit())
    return ()


async def _hasWaitAOF(protocol: Any) -> bool:
    """
    Whether the server behind C{protocol} has C{WAITAOF}.
    """
    try:
        info = await protocol.execute_command("INFO", "server")
    except (txredisapi.ResponseError, txredisapi.ConnectionError):
        return False
    if isinstance(info, bytes):
        info = info.decode("utf-8", "replace")
    return isinstance(info, str) and redisVersion(info) >= WAITAOF_VERSION


#: The tags of most messages: no JSON to parse.
_NO_TAGS: tuple = ()


def _records(rows: Iterable[Sequence[Any]]) -> list[Message]:
    """
    Messages of records as C{frow} writes them (see
    L{marconi.storage.redis.lua}): id, marker, body, TTL, client id, claim
    id (a false value for none), tags JSON, checksum, claim count, and the
    times as one text (created, expires, visible-at, and the claim expiry,
    empty for none, separated by spaces).  A message visible from its
    creation has both times as the same text, parsed once; so are the
    times of a message that has the same text as the one before it, as
    the messages of one post have.
    """
    make = models.makeMessage
    messages: list[Message] = []
    append = messages.append
    last = None
    created = expires = visible = 0.0
    claimExpires: Optional[float] = None
    for i, k, b, t, ci, cid, g, s, n, times in rows:
        if times != last:
            last = times
            c, e, v, ce = times.split(" ")
            created = float(c)
            expires = float(e)
            visible = created if v == c else float(v)
            claimExpires = float(ce) if ce else None
        append(
            make(
                i,
                k,
                b,
                t,
                created,
                expires,
                visible,
                ci,
                cid or None,
                claimExpires,
                n,
                _NO_TAGS if g == "[]" else tuple(json.loads(g)),
                s,
            )
        )
    return messages


def _flatMessages(reply: Any) -> list[Message]:
    """
    The messages of a script that answers with C{frow} (see
    L{marconi.storage.redis.lua}): 10 values per message, as L{_records}
    reads them.
    """
    if not reply:
        return []
    if len(reply) % 10:
        raise errors.StorageUnavailable(
            "The Redis server answered a listing with a reply of the wrong shape."
        )
    values = iter(reply)
    return _records(zip(*(values,) * 10, strict=True))


def _sortedMessages(reply: Any) -> list[Message]:
    """
    L{_flatMessages}, in marker order.
    """
    return sorted(_flatMessages(reply), key=_marker)


def _parsed(d: Deferred, parse: Optional[Callable[[Any], Any]]) -> Deferred:
    """
    C{d}, with C{parse} as its next callback when there is one.
    """
    return d if parse is None else d.addCallback(parse)


def _marker(m: Message) -> int:
    return m.marker


def _deleted(result: Any, messageId: str, claimId: Optional[str]) -> None:
    """
    The outcome of the C{DELETE_MESSAGE} script's answer: nothing, or the
    error it stands for.
    """
    if result == -1:
        raise errors.MessageIsClaimed(messageId)
    if result == -2:
        raise errors.ClaimMismatch(
            f"Message {messageId!r} is not held by claim {claimId!r}: "
            "the claim expired, was released, or never held it."
        )


def _message(row: Sequence[Any]) -> Message:
    (
        mid,
        marker,
        body,
        ttl,
        created,
        expires,
        visible,
        client,
        claimId,
        claimExpires,
        count,
        tags,
        checksum,
    ) = row
    return Message(
        id=mid,
        marker=int(marker),
        body=body,
        ttl=int(float(ttl)),
        created=float(created),
        expires=float(expires),
        visibleAt=float(visible),
        clientId=client,
        claimId=claimId or None,
        claimExpires=float(claimExpires) if claimExpires else None,
        claimCount=int(count),
        tags=_NO_TAGS if tags == "[]" else tuple(json.loads(tags)),
        checksum=checksum or "",
    )


class _SentinelEndpoint:
    """
    A client endpoint that asks the Sentinels where the primary is before
    each connection attempt, then connects there.

    The Sentinels are asked in the order given, each over a connection of
    its own that lasts one C{SENTINEL GET-MASTER-ADDR-BY-NAME} (with
    txredisapi's protocol, on the injected reactor); the first answer wins.
    An answer may name a primary that is down, or one just demoted: the
    connection then fails, or is dropped after its C{ROLE} check, and the
    next attempt asks again.

    txredisapi's own L{txredisapi.Sentinel} client is not used: it keeps
    connections to the Sentinels whose reply parsing and discovery timers
    run on the global reactor and are left behind when the store stops,
    and its endpoint of this kind is private and tied to its own pool,
    while the store keeps its own connections (see L{RedisStore}).
    """

    def __init__(
        self,
        reactor: Any,
        sentinels: Sequence[tuple[str, int]],
        master: str,
        timeout: float,
    ) -> None:
        self._reactor = reactor
        self._sentinels = tuple(sentinels)
        self._master = master
        self._timeout = timeout
        self.current: Optional[tuple[str, int]] = None

    async def _ask(self, host: str, port: int) -> Optional[tuple[str, int]]:
        """
        The primary's address as one Sentinel names it, or L{None}.
        """

        def build() -> txredisapi.RedisProtocol:
            p = txredisapi.RedisProtocol(
                replyTimeout=self._timeout, convertNumbers=False
            )
            p.callLater = self._reactor.callLater
            return p

        endpoint = HostnameEndpoint(self._reactor, host, port, timeout=self._timeout)
        try:
            protocol: txredisapi.RedisProtocol = await endpoint.connect(
                Factory.forProtocol(build)
            )
        except (OSError, error.ConnectError, DeferredTimeoutError):
            return None
        try:
            await protocol.whenConnected()
            reply = await protocol.sentinel_get_master_addr_by_name(self._master)
        except (txredisapi.ConnectionError, txredisapi.ResponseError):
            return None
        finally:
            protocol.transport.loseConnection()
        if not reply or len(reply) != 2:
            return None
        return reply[0], int(reply[1])

    async def _connect(self, factory: Any) -> Any:
        for host, port in self._sentinels:
            found = await self._ask(host, port)
            if found is not None:
                break
        else:
            raise errors.StorageUnavailable(
                f"No Sentinel named the primary {self._master!r}."
            )
        if self.current != found:
            log.info(
                "Sentinel names {host}:{port} as the primary {master}",
                host=found[0],
                port=found[1],
                master=self._master,
            )
            self.current = found
        endpoint = HostnameEndpoint(self._reactor, found[0], found[1], timeout=5)
        return await endpoint.connect(factory)

    def connect(self, factory: Any) -> Deferred:
        return Deferred.fromCoroutine(self._connect(factory))


class _Protocol(txredisapi.RedisProtocol):
    """
    txredisapi's protocol, which parses replies with hiredis (in C) when
    C{hiredis} is installed, with a request encoder that builds a command
    in one pass: txredisapi's own encodes each argument through several
    calls, which made it the driver's largest cost for a batch post (68
    arguments).  Text is encoded with the connection's charset; any other
    value is sent as C{str(value)}, as the scripts expect their arguments.

    L{send} is the store's way to run a command: txredisapi's
    C{execute_command} makes three L{Deferred}s, four callbacks and a timer
    of its own per command, a sizeable part of a listing's cost on the
    node; L{send} makes one L{Deferred}, and one timer per connection
    watches every command sent with it (see L{_check}).  Both take their
    replies, in order, from txredisapi's reply queue, so they can be mixed
    on one connection.
    """

    #: The clock of the reply timeouts (the store's reactor).
    clock: Any = None

    #: C{WAIT} and C{WAITAOF} commands sent and not yet answered: the
    #: server answers nothing sent after them on this connection until
    #: they return.
    holds = 0

    #: Whether the next command L{send} sends goes out at once: the store
    #: sets it for the first command of a turn of the reactor.
    sendNow = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # With hiredis, the reader decodes bulk strings as UTF-8 itself, in
        # C, instead of txredisapi's tryConvertData calling decode() on each
        # one in Python (a listing's reply holds 130).  Everything the store
        # writes is UTF-8; bytes that are not (no Marconi data) come back
        # with surrogate escapes rather than as bytes.
        self._decoded = False
        if getattr(self, "_reader", None) is not None and self.charset:
            try:
                self._reader = hiredis.Reader(
                    protocolError=txredisapi.InvalidData,
                    replyError=txredisapi.ResponseError,
                    encoding=self.charset,
                    errors="surrogateescape",
                )
            except TypeError:
                # A hiredis without these options: txredisapi decodes.
                pass
            else:
                self._decoded = True
        # (when sent, its Deferred) of the commands sent with send(),
        # oldest first; an entry whose Deferred has fired (answered, or
        # cancelled by its caller) is dropped when next looked at.
        self._sent: deque = deque()
        self._watchdog: Any = None
        # The commands send() holds back, to go out together (see _flushHeld).
        self._unsent: list[bytes] = []
        self._flushing: Any = None

    def tryConvertData(self, data: Any) -> Any:
        if self._decoded:
            return data
        return super().tryConvertData(data)

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:
        """
        Hand each reply to the command waiting for it, as txredisapi does,
        without its steps for text and transactions when they have nothing
        to do: the reader decodes the text, and only C{MULTI} or C{WATCH}
        (which the store never sends) open a transaction.
        """
        if not self._decoded:
            return super().dataReceived(data, unpause)
        reader = self._reader
        if data:
            reader.feed(data)
        waiting = self.replyQueue.waiting
        reply = reader.gets()
        while reply is not False:
            if waiting and type(reply) is not str and not self.inTransaction:
                waiting.pop(0).callback(reply)
            else:
                if reply == "QUEUED":
                    self.transactions += 1
                else:
                    reply = self.handleTransactionData(reply)
                self.replyReceived(reply)
            reply = reader.gets()
        return None

    def send(self, *args: Any) -> Deferred:
        """
        Send one command.

        @return: a L{Deferred} that fires with the reply, which is an
            exception (not a failure) when the server answered with an
            error, the connection was lost, or no reply came within the
            reply timeout.  It has no canceller: cancelling it leaves its
            place in the reply queue, and its reply is dropped.
        @raise txredisapi.ConnectionError: the connection is not usable.
        @raise txredisapi.InvalidData: an argument cannot be encoded.
        """
        if not self.connected:
            raise txredisapi.ConnectionError("Not connected")
        command = self._build_command(*args)
        if self.replyTimeout and self.clock is None:
            from twisted.internet import reactor

            self.clock = reactor
        if type(self.transport) not in _PLAIN or self.clock is None:
            # A transport that writeNow would not write to at once buffers
            # the commands itself until the reactor's next turn.
            self.transport.write(command)
        else:
            unsent = self._unsent
            unsent.append(command)
            if self.sendNow or len(unsent) >= SEND_EVERY:
                self.sendNow = False
                self._flushHeld()
            elif self._flushing is None:
                self._flushing = self.clock.callLater(0, self._endTurn)
        d: Deferred = Deferred()
        queue = self.replyQueue
        if queue.pending:
            d.callback(queue.pending.pop(0))
        else:
            queue.waiting.append(d)
        if self.replyTimeout:
            sent = self._sent
            while sent and sent[0][1].called:
                sent.popleft()
            sent.append((self.clock.seconds(), d))
            if self._watchdog is None:
                self._watchdog = self.clock.callLater(self.replyTimeout, self._check)
        return d

    def _flushHeld(self) -> None:
        """
        Send the commands L{send} holds back (on a plain TCP connection), in
        one write: at once when nothing else is buffered (L{writeNow}, no
        turn of the reactor in between), else through the transport.  It
        runs at the end of the turn in which they were sent, if nothing
        sent them earlier.  (Not C{flush}, which would override
        txredisapi's deprecated C{flush(all_dbs)}, a C{FLUSHDB}.)
        """
        unsent = self._unsent
        if not unsent or not self.connected:
            return
        data = unsent[0] if len(unsent) == 1 else b"".join(unsent)
        unsent.clear()
        writeNow(self.transport, data)

    def _endTurn(self) -> None:
        self._flushing = None
        self._flushHeld()

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        # txredisapi writes its commands to the transport itself: those
        # held back go first, so that the replies come in the order the
        # reply queue expects.
        self._flushHeld()
        return super().execute_command(*args, **kwargs)

    def _check(self) -> None:
        """
        The reply timer: when the oldest command L{send} sent that is still
        waiting has waited C{replyTimeout}, fail every waiting command and
        drop the connection, as txredisapi does for its own commands; else
        look again when it will have.
        """
        self._watchdog = None
        sent = self._sent
        while sent and sent[0][1].called:
            sent.popleft()
        if not sent:
            return
        now = self.clock.seconds()
        due = sent[0][0] + self.replyTimeout
        if due > now:
            self._watchdog = self.clock.callLater(due - now, self._check)
            return
        text = f"Not received Redis response in {self.replyTimeout} seconds"
        while self.replyQueue.waiting:
            self.replyQueue.put(txredisapi.TimeoutError(text))
        self.transport.abortConnection()

    def connectionLost(self, why: Any) -> None:
        self._unsent.clear()
        if self._flushing is not None and self._flushing.active():
            self._flushing.cancel()
        self._flushing = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        # txredisapi answers every waiting command with ConnectionError.
        super().connectionLost(why)
        self._sent.clear()

    def _build_command(self, *args: Any, **kwargs: Any) -> bytes:
        # Most commands are ASCII text and integers, whose lengths in bytes
        # are their lengths in characters: the command is built as text and
        # encoded once.  Anything else is encoded argument by argument.
        parts = [f"*{len(args)}\r\n"]
        for arg in args:
            kind = type(arg)
            if kind is int:
                arg = str(arg)
            elif kind is not str or not arg.isascii():
                return self._encodeEach(args)
            parts.append(f"${len(arg)}\r\n{arg}\r\n")
        return "".join(parts).encode("ascii")

    def _encodeEach(self, args: Sequence[Any]) -> bytes:
        charset, errors = self.charset or "utf-8", self.errors
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            if isinstance(arg, str):
                try:
                    arg = arg.encode(charset, errors)
                except UnicodeEncodeError as e:
                    raise txredisapi.InvalidData(
                        f"Error encoding text {arg!r}: {e}"
                    ) from None
            elif not isinstance(arg, bytes):
                arg = str(arg).encode("ascii")
            parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
        return b"".join(parts)


class _ProtocolFactory(Factory):
    """
    Builds the txredisapi protocols of a store's connections, with reply
    timeouts on the injected reactor, and tells the store when one becomes
    usable (after txredisapi's AUTH and SELECT) and when it is lost.

    txredisapi's protocol calls back into its factory when AUTH or SELECT
    fails (L{stopTrying}, L{connectionError}); we log the reason and let the
    L{ClientService} keep retrying with its backoff, since an operator may
    well fix the server's configuration while we run.  L{retryDelay} keeps
    backing off while connections are made but never become usable:
    L{ClientService} alone would start again from its shortest delay after
    every successful TCP connect.
    """

    isLazy = False
    noisy = False

    def __init__(
        self,
        location: RedisLocation,
        reactor: Any,
        replyTimeout: float,
        maxRetryDelay: float,
        ready: Any,
        lost: Any,
    ) -> None:
        self._location = location
        self._reactor = reactor
        self._replyTimeout = replyTimeout
        self._ready = ready
        self._lost = lost
        self._backoff = backoffPolicy(
            initialDelay=0.1, maxDelay=maxRetryDelay, factor=2.0
        )
        self._unusable = 0

    def buildProtocol(self, addr: Any) -> txredisapi.RedisProtocol:
        p = _Protocol(
            charset="utf-8",
            replyTimeout=self._replyTimeout,
            password=self._location.password,
            dbid=self._location.db,
            convertNumbers=False,
            username=self._location.username,
        )
        p.callLater = self._reactor.callLater
        p.clock = self._reactor
        p.factory = self
        self._unusable += 1
        p.whenConnected().addCallback(self._usable)
        p.whenDisconnected().addCallback(self._lost)
        return p

    def _usable(self, protocol: txredisapi.RedisProtocol) -> None:
        self._unusable = 0
        self._ready(protocol)

    def retryDelay(self, attempt: int) -> float:
        return self._backoff(max(attempt, self._unusable))

    def stopTrying(self) -> None:
        pass

    def connectionError(self, why: str) -> None:
        log.error(
            "Redis at {where} refused the connection: {why}",
            where=self._location.describe(),
            why=why,
        )


@implementer(IMessageStore)
class RedisStore(StoreEvents, Service):
    """
    An L{IMessageStore} on a Redis server.

    @param location: where the server is.
    @param reactor: provides L{IReactorTCP}, L{IReactorUNIX} and
        L{IReactorTime}.
    @param connectWait: how long a request waits for a usable connection
        before it fails with L{StorageUnavailable}.
    @param replyTimeout: how long a command may wait for its reply; then
        the connection is dropped and re-established.
    @param maxRetryDelay: the longest pause between reconnection attempts;
        by default 5 s, and 1 s with Sentinel, where each attempt asks the
        Sentinels anew and a promotion should be followed promptly.
    @param durability: the default level of L{marconi.core.durability} of
        the changes; a write method's C{durability} keyword overrides it.
    @param discoveryTimeout: with Sentinel, how long connecting to one
        Sentinel, and its answer, may take.
    """

    log = Logger()

    def __init__(
        self,
        location: RedisLocation,
        reactor: Any = None,
        connectWait: float = 2.0,
        replyTimeout: float = 10.0,
        maxRetryDelay: Optional[float] = None,
        durability: str = DURABLE,
        discoveryTimeout: float = 1.0,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self._location = location
        self._reactor = reactor
        self._connectWait = connectWait
        self._replyTimeout = replyTimeout
        if maxRetryDelay is None:
            maxRetryDelay = 1.0 if location.master is not None else 5.0
        self._maxRetryDelay = maxRetryDelay
        self._services: list[ClientService] = []
        self._ready: list[txredisapi.RedisProtocol] = []
        self._waiting: list[Deferred] = []
        self._next = 0
        # The connection this turn's commands go out on (see _pick).
        self._batch: Optional[Any] = None
        self._checkWaiters: list[Deferred] = []
        self._durability = parseDurability(durability)
        self._discoveryTimeout = discoveryTimeout
        # Whether the server fsyncs on request (WAITAOF, with an AOF);
        # learnt on each new connection, None until first learnt.
        self._waitAOF: Optional[bool] = None

    def __repr__(self) -> str:
        return f"<RedisStore {self._location.describe()}>"

    # Connections.

    def _endpoint(self) -> Any:
        loc = self._location
        if loc.master is not None:
            return _SentinelEndpoint(
                self._reactor, loc.sentinels, loc.master, self._discoveryTimeout
            )
        if loc.path is not None:
            return UNIXClientEndpoint(self._reactor, loc.path, timeout=5)
        assert loc.host is not None  # exactly one of host and path is set
        return HostnameEndpoint(self._reactor, loc.host, loc.port, timeout=5)

    def startService(self) -> None:
        super().startService()
        endpoint = self._endpoint()
        factory = _ProtocolFactory(
            self._location,
            self._reactor,
            self._replyTimeout,
            self._maxRetryDelay,
            self._connectionReady,
            self._connectionLost,
        )
        for _ in range(self._location.poolsize):
            service = ClientService(
                endpoint, factory, retryPolicy=factory.retryDelay, clock=self._reactor
            )
            self._services.append(service)
            service.startService()

    def stopService(self) -> Deferred:  # type: ignore[override]
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        Service.stopService(self)
        services, self._services = self._services, []
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(errors.StorageUnavailable("The store is stopping."))
        self._ready = []
        await gatherResults([s.stopService() for s in services], consumeErrors=True)
        # txredisapi's protocol hands buffered replies to itself with
        # callLater(0); let those run so nothing of ours is left pending.
        await deferLater(self._reactor, 0, lambda: None)

    def _connectionReady(self, protocol: txredisapi.RedisProtocol) -> None:
        """
        A connection has sent AUTH and SELECT: offer it to requests (with
        Sentinel, once it proves to reach the primary).
        """
        if self._location.master is not None:
            check = Deferred.fromCoroutine(self._checkRole(protocol))
            check.addErrback(
                lambda f: self.log.failure("Checking the role of a Redis server", f)
            )
            return
        self._offer(protocol)

    async def _checkRole(self, protocol: txredisapi.RedisProtocol) -> None:
        """
        Offer the connection if it reaches a primary; drop it otherwise, so
        that the next attempt asks the Sentinels again (they may name a
        server that has just been demoted, or not yet promoted).
        """
        try:
            role = await protocol.execute_command("ROLE")
        except (txredisapi.ConnectionError, txredisapi.ResponseError):
            role = None
        if role and role[0] == "master":
            self._offer(protocol)
            return
        self.log.info(
            "The server Sentinel named is not the primary yet ({role}); asking again",
            role=role[0] if role else "no answer",
        )
        if protocol.transport is not None:
            protocol.transport.loseConnection()

    def _offer(self, protocol: txredisapi.RedisProtocol) -> None:
        if not self.running or not protocol.connected:
            return
        recovered = not self._ready
        self._ready.append(protocol)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(protocol)
        if recovered:
            # The first connection, or the first after every connection was
            # lost (the server may have been restarted with other settings).
            self._startPersistenceCheck(protocol)

    def _connectionLost(self, protocol: txredisapi.RedisProtocol) -> None:
        if protocol in self._ready:
            self._ready.remove(protocol)
            if self.running:
                self.log.warn(
                    "Lost a connection to Redis at {where}",
                    where=self._location.describe(),
                )

    def _pick(self) -> Optional[txredisapi.RedisProtocol]:
        """
        A usable connection, or L{None}.

        The commands of one turn of the reactor go out on one connection,
        in a few writes (see L{SEND_EVERY}) instead of one or more per
        connection (see L{_endBatch}); each turn starts on the next connection,
        round-robin.  A connection waiting for C{WAIT} or C{WAITAOF}, which
        hold everything sent after them, is passed over while another one
        is free.
        """
        batch = self._batch
        if batch is not None and batch.connected and not batch.holds:
            return batch
        ready = self._ready
        held = None
        for _ in range(len(ready)):
            self._next = (self._next + 1) % len(ready)
            conn = ready[self._next]
            if conn.connected:
                if not conn.holds:
                    if self._batch is None:
                        self._reactor.callLater(0, self._endBatch)
                    self._batch = conn
                    # The turn's first command goes out at once.
                    conn.sendNow = True
                    return conn
                held = held or conn
        return held

    def _endBatch(self) -> None:
        """
        The turn of the reactor in which the batch connection was picked
        has ended (its writes go out in the next): the next command starts
        a new batch.
        """
        self._batch = None

    async def _connection(self) -> txredisapi.RedisProtocol:
        """
        A usable connection, round-robin; wait at most C{connectWait} for
        one.

        @raise StorageUnavailable: there is none.
        """
        conn = self._pick()
        if conn is not None:
            return conn
        if not self.running:
            raise errors.StorageUnavailable("The Redis store is not running.")

        def cancel(d: Deferred) -> None:
            if d in self._waiting:
                self._waiting.remove(d)

        waiter: Deferred = Deferred(cancel)
        self._waiting.append(waiter)
        waiter.addTimeout(self._connectWait, self._reactor)
        try:
            return await waiter
        except DeferredTimeoutError:
            raise errors.StorageUnavailable(
                f"The Redis server at {self._location.describe()} cannot be "
                "reached; try again later."
            ) from None

    async def _call(self, method: str, *args: Any, conn: Optional[Any] = None) -> Any:
        """
        Run one txredisapi protocol method on C{conn}, or on any usable
        connection.

        @raise StorageUnavailable: the server cannot be reached, did not
            answer in time, or failed the command.
        """
        if conn is None:
            conn = await self._connection()
        try:
            reply = await getattr(conn, method)(*args)
        except txredisapi.RedisError as e:
            raise self._failure(e, conn, method, args) from None
        if isinstance(reply, Exception):
            # _Protocol.send answers errors as values.
            raise self._failure(reply, conn, method, args) from None
        return reply

    def _failure(
        self, e: Exception, conn: Any, method: str, args: Sequence[Any]
    ) -> Exception:
        """
        The exception to raise for the error C{e} of a command sent on
        C{conn}.

        @return: L{ValidationFailed} for a value that cannot be sent;
            L{txredisapi.ScriptDoesNotExist} for a script the server does
            not know (L{_eval} then sends its text); else
            L{StorageUnavailable}.
        """
        if isinstance(e, txredisapi.InvalidData):
            return errors.ValidationFailed(f"A value cannot be stored: {e}")
        if isinstance(e, txredisapi.ConnectionError):
            return errors.StorageUnavailable(
                f"The Redis server at {self._location.describe()} did not "
                f"answer ({e}); try again later."
            )
        if not isinstance(e, txredisapi.ResponseError):
            return e
        if isinstance(e, txredisapi.ScriptDoesNotExist):
            return e
        if str(e).startswith("NOSCRIPT"):
            return txredisapi.ScriptDoesNotExist(str(e))
        if str(e).startswith("READONLY"):
            # A primary demoted under us: find the new one.
            self._drop(conn)
            return errors.StorageUnavailable(
                "The Redis server is a replica now; try again shortly."
            )
        self.log.error(
            "Redis at {where} failed {method}: {error}",
            where=self._location.describe(),
            method=args[0] if method == "execute_command" and args else method,
            error=str(e),
        )
        return errors.StorageUnavailable(
            "The Redis server failed the request; try again later."
        )

    def _drop(self, conn: Any) -> None:
        if self._batch is conn:
            self._batch = None
        if conn in self._ready:
            self._ready.remove(conn)
        if conn.transport is not None:
            conn.transport.loseConnection()

    async def _eval(self, script: str, *args: Any, conn: Optional[Any] = None) -> Any:
        """
        Run a Lua script by its SHA-1 (the server keeps the scripts it has
        seen), sending its text only when the server does not know it yet.
        """
        sha = _scriptHashes.get(script)
        if sha is None:
            sha = _scriptHashes[script] = hashlib.sha1(script.encode()).hexdigest()
        if conn is None:
            conn = self._pick() or await self._connection()
        # The protocol's own EVALSHA adds callbacks of its script cache,
        # which these calls do not use; the command is sent as it is (the
        # encoder writes numbers as str() does).
        command = "send"
        try:
            return await self._call(command, "EVALSHA", sha, 0, *args, conn=conn)
        except txredisapi.ScriptDoesNotExist:
            return await self._call(command, "EVAL", script, 0, *args, conn=conn)

    def _read(
        self, script: str, *args: Any, parse: Optional[Callable[[Any], Any]] = None
    ) -> Deferred:
        """
        Run a script that only reads, as L{_eval} does, when a connection is
        ready: the L{Deferred} of the command's reply, with no coroutine in
        between (a listing is the most frequent call, and three coroutines
        and their L{Deferred} were a fifth of what the store cost the node
        per listing).

        @param parse: what makes the result of the reply, in the callback
            that checks the reply (one callback less than adding it).
        @return: a L{Deferred} of the script's reply, or of what C{parse}
            makes of it, which fails as L{_call} does.
        """
        conn = self._pick()
        if conn is None:
            return _parsed(Deferred.fromCoroutine(self._eval(script, *args)), parse)
        sha = _scriptHashes.get(script)
        if sha is None:
            sha = _scriptHashes[script] = hashlib.sha1(script.encode()).hexdigest()
        try:
            sent = conn.send("EVALSHA", sha, 0, *args)
        except txredisapi.RedisError:
            return _parsed(
                Deferred.fromCoroutine(self._eval(script, *args, conn=conn)), parse
            )
        return sent.addCallback(self._readReply, conn, script, args, parse)

    def _readReply(
        self,
        reply: Any,
        conn: Any,
        script: str,
        args: tuple,
        parse: Optional[Callable[[Any], Any]] = None,
    ) -> Any:
        if not isinstance(reply, Exception):
            return reply if parse is None else parse(reply)
        failure = self._failure(reply, conn, "send", ())
        if isinstance(failure, txredisapi.ScriptDoesNotExist):
            return _parsed(
                Deferred.fromCoroutine(
                    self._call("send", "EVAL", script, 0, *args, conn=conn)
                ),
                parse,
            )
        raise failure

    def _write(
        self, script: str, *args: Any, durability: Optional[str] = None
    ) -> Deferred:
        """
        L{_change} as a L{Deferred}: when the change's level waits for
        nothing (C{fast}, or C{durable} on a server known to be without
        C{WAITAOF}),
        the script is sent as L{_read} sends it, with no coroutine in
        between (three coroutines and their L{Deferred}s per post, claim or
        delete); otherwise L{_change} runs it and waits.
        """
        try:
            level = (
                self._durability if durability is None else parseDurability(durability)
            )
        except Exception:
            return fail()
        # Until the server's persistence is known, a durable change waits
        # for the answer in _change, which asks again after it.
        if level == REPLICATED or (level != FAST and self._waitAOF is not False):
            return Deferred.fromCoroutine(
                self._change(script, *args, durability=durability)
            )
        try:
            return self._read(script, *args)
        except Exception:
            return fail()

    async def _change(
        self, script: str, *args: Any, durability: Optional[str] = None
    ) -> Any:
        """
        Run a script that changes data, and with C{replicated} durability
        wait on the same connection until enough replicas have the change
        (C{WAIT} covers every earlier write of the connection).

        @raise StorageUnavailable: fewer replicas acknowledged it in time;
            the change was made on the primary and may or may not survive
            a failover.
        """
        level = self._durability if durability is None else parseDurability(durability)
        conn = self._pick() or await self._connection()
        result = await self._eval(script, *args, conn=conn)
        if level != FAST and self._waitAOF:
            await self._waitForAOF(conn)
        if level == REPLICATED:
            loc = self._location
            acknowledged = int(
                await self._held(conn, "WAIT", loc.replicas, loc.replicaTimeout)
            )
            if acknowledged < loc.replicas:
                raise errors.StorageUnavailable(
                    f"Only {acknowledged} of the {loc.replicas} Redis replica(s) "
                    f"asked for acknowledged the change within "
                    f"{loc.replicaTimeout} ms; it is not known to be replicated. "
                    "It may or may not have been applied: retrying can repeat it."
                )
        return result

    async def _held(self, conn: Any, *command: Any) -> Any:
        """
        Run a command that holds C{conn} until it returns (C{WAIT},
        C{WAITAOF}); meanwhile L{_pick} passes the connection over.
        """
        conn.holds += 1
        try:
            return await self._call("send", *command, conn=conn)
        finally:
            conn.holds -= 1

    async def _waitForAOF(self, conn: Any) -> None:
        """
        Wait until the local append-only file has every earlier write of
        C{conn} fsynced (C{WAITAOF 1 0}, bounded by the reply timeout).
        """
        local, _ = await self._held(conn, "WAITAOF", 1, 0, self._replyTimeoutMS())
        if int(local) < 1:
            raise errors.StorageUnavailable(
                "Redis did not fsync the change to its append-only file in "
                "time; it is not known to be on disk. It may or may not have "
                "been applied: retrying can repeat it."
            )

    def _replyTimeoutMS(self) -> int:
        # Below the reply timeout, so that the answer comes before the
        # connection is given up.
        return max(1, int(self._replyTimeout * 1000) // 2)

    def durabilities(self) -> tuple:
        """
        Every level when the configuration names replicas (Sentinel, a
        C{replicas} option, or C{replicated} as the node's default); else
        C{fast} and C{durable}.
        """
        loc = self._location
        if loc.master is not None or loc.replicasNamed:
            return LEVELS
        return LEVELS if self._durability == REPLICATED else LOCAL_LEVELS

    def _startPersistenceCheck(self, protocol: txredisapi.RedisProtocol) -> None:
        check = Deferred.fromCoroutine(self._checkPersistence(protocol))
        check.addErrback(
            lambda f: self.log.failure("Checking the Redis persistence settings", f)
        )
        check.addCallback(self._persistenceChecked)

    def _persistenceChecked(self, _: object) -> None:
        waiting, self._checkWaiters = self._checkWaiters, []
        for d in waiting:
            d.callback(None)

    async def _checkPersistence(self, protocol: txredisapi.RedisProtocol) -> None:
        """
        Warn when the server does not write an append-only file: then an
        acknowledged message is lost if Redis stops (see
        docs/storage-redis.rst).
        """
        where = self._location.describe()
        try:
            reply = await protocol.execute_command("CONFIG", "GET", "appendonly")
        except txredisapi.ResponseError as e:
            self._waitAOF = False
            self.log.warn(
                "Cannot read the persistence settings of Redis at {where} "
                "({error}); make sure it runs with appendonly yes.",
                where=where,
                error=str(e),
            )
            return
        except txredisapi.ConnectionError:
            # Lost again; the next connection made checks again.
            return
        settings = dict(zip(reply[::2], reply[1::2], strict=True)) if reply else {}
        value = settings.get("appendonly")
        self._waitAOF = value == "yes" and await _hasWaitAOF(protocol)
        if value != "yes":
            self.log.warn(
                "Redis at {where} runs without appendonly: acknowledged "
                "messages are lost when it stops or crashes. Set "
                "'appendonly yes' (see docs/storage-redis.rst).",
                where=where,
                appendonly=value,
            )

    def whenPersistenceChecked(self) -> Deferred:
        """
        A L{Deferred} that fires once the next check of the server's
        persistence settings (made on the first connection, and again after
        every connection was lost) has logged what it found.
        """
        d: Deferred = Deferred()
        self._checkWaiters.append(d)
        return d

    # IMessageStore.

    @deferred
    async def ping(self) -> bool:
        try:
            reply = await self._call("execute_command", "PING")
        except errors.StorageUnavailable:
            return False
        return reply == "PONG"

    @deferred
    async def createQueue(
        self, project: str, name: str, metadata: dict, now: float
    ) -> bool:
        created = await self._change(
            lua.CREATE_QUEUE, projectPrefix(project), name, json.dumps(metadata)
        )
        return bool(created)

    @deferred
    async def getQueueMetadata(self, project: str, name: str) -> dict:
        meta = await self._call("hget", projectPrefix(project) + ":meta", name)
        if meta is None:
            raise errors.QueueDoesNotExist(name)
        return json.loads(meta)

    @deferred
    async def setQueueMetadata(self, project: str, name: str, metadata: dict) -> None:
        done = await self._change(
            lua.SET_QUEUE_METADATA, projectPrefix(project), name, json.dumps(metadata)
        )
        if not done:
            raise errors.QueueDoesNotExist(name)

    @deferred
    async def deleteQueue(self, project: str, name: str) -> None:
        await self._change(
            lua.DELETE_QUEUE, queuePrefix(project, name), projectPrefix(project), name
        )

    @deferred
    async def listQueues(
        self, project: str, marker: Optional[str], limit: int, detailed: bool
    ) -> list[models.QueueInfo]:
        if limit < 1:
            return []
        lower = "-" if marker is None else "(" + marker
        flat = await self._eval(
            lua.LIST_QUEUES,
            projectPrefix(project),
            lower,
            int(limit),
            "1" if detailed else "0",
        )
        return [
            models.QueueInfo(name=name, metadata=json.loads(meta) if detailed else None)
            for name, meta in zip(flat[::2], flat[1::2], strict=True)
        ]

    @deferred
    async def countQueues(self, project: str) -> int:
        return int(await self._call("zcard", projectPrefix(project) + ":q"))

    @deferred
    async def purgeMessages(self, project: str, name: str) -> int:
        return int(await self._change(lua.PURGE_MESSAGES, queuePrefix(project, name)))

    @deferred
    async def queueStats(
        self, project: str, name: str, now: float
    ) -> models.QueueStats:
        total, claimed, delayed, oldest, newest = await self._eval(
            lua.QUEUE_STATS, queuePrefix(project, name), _time(now)
        )
        total, claimed, delayed = int(total), int(claimed), int(delayed)
        return models.QueueStats(
            free=max(0, total - claimed - delayed),
            claimed=claimed,
            delayed=delayed,
            oldest=_message(oldest) if oldest else None,
            newest=_message(newest) if newest else None,
        )

    def postMessages(
        self,
        project: str,
        queue: str,
        messages: Sequence[models.NewMessage],
        clientId: str,
        now: float,
        *,
        durability: Optional[str] = None,
    ) -> Deferred:
        try:
            ids = [newId() for _ in messages]
            if not ids:
                return succeed([])
            args: list[Any] = [
                queuePrefix(project, queue),
                projectPrefix(project),
                queue,
                _time(now),
                clientId,
            ]
            for mid, m in zip(ids, messages, strict=True):
                args += [
                    mid,
                    m.body,
                    int(m.ttl),
                    int(m.delay),
                    json.dumps(list(m.tags)) if m.tags else "[]",
                    m.checksum,
                ]
        except Exception:
            return fail()
        return self._write(lua.POST_MESSAGES, *args, durability=durability).addCallback(
            lambda _: ids
        )

    def listMessages(
        self, project: str, queue: str, query: models.MessageQuery, now: float
    ) -> Deferred:
        after = "-inf" if query.marker is None else f"({int(query.marker)}"
        return self._read(
            lua.LIST_MESSAGES,
            queuePrefix(project, queue),
            _time(now),
            after,
            int(query.limit),
            query.clientId,
            1 if query.echo else 0,
            1 if query.includeClaimed else 0,
            1 if query.includeDelayed else 0,
            json.dumps(list(query.tags)) if query.tags else "[]",
            parse=_flatMessages,
        )

    def getMessages(
        self, project: str, queue: str, ids: Sequence[str], now: float
    ) -> Deferred:
        wanted = list(dict.fromkeys(_validIds(ids)))
        if not wanted:
            return succeed([])
        return self._read(
            lua.GET_MESSAGES,
            queuePrefix(project, queue),
            _time(now),
            *wanted,
            parse=_sortedMessages,
        )

    def deleteMessage(
        self,
        project: str,
        queue: str,
        messageId: str,
        claimId: Optional[str],
        now: float,
        *,
        durability: Optional[str] = None,
    ) -> Deferred:
        try:
            if not _validIds([messageId]):
                return succeed(None)
            if claimId is not None and not _validIds([claimId]):
                # No claim can have this id, so it holds nothing; but a
                # message that does not exist is still deleted successfully.
                claimId = "-"
            args = (queuePrefix(project, queue), messageId, claimId or "", _time(now))
        except Exception:
            return fail()
        return self._write(
            lua.DELETE_MESSAGE, *args, durability=durability
        ).addCallback(_deleted, messageId, claimId)

    def deleteMessages(
        self,
        project: str,
        queue: str,
        ids: Sequence[str],
        claimIds: Optional[Sequence[str]],
        now: float,
        *,
        durability: Optional[str] = None,
    ) -> Deferred:
        try:
            wanted = list(dict.fromkeys(_validIds(ids)))
            if not wanted:
                return succeed(0)
            if claimIds is None:
                claims: list[str] = []
                count = -1
            else:
                claims = _validIds(claimIds)
                count = len(claims)
            args = (queuePrefix(project, queue), _time(now), count, *claims, *wanted)
        except Exception:
            return fail()
        return self._write(
            lua.DELETE_MESSAGES, *args, durability=durability
        ).addCallback(int)

    @deferred
    async def popMessages(
        self,
        project: str,
        queue: str,
        limit: int,
        tags: Sequence[str],
        now: float,
        *,
        durability: Optional[str] = None,
    ) -> list[Message]:
        rows = await self._change(
            lua.POP_MESSAGES,
            queuePrefix(project, queue),
            _time(now),
            int(limit),
            json.dumps(list(tags or ())),
            durability=durability,
        )
        return _flatMessages(rows)

    def createClaim(
        self,
        project: str,
        queue: str,
        spec: ClaimSpec,
        now: float,
        *,
        durability: Optional[str] = None,
    ) -> Deferred:
        try:
            claimId = newId()
            deadLetter = spec.maxClaimCount is not None and spec.deadLetterQueue
            args = (
                queuePrefix(project, queue),
                projectPrefix(project),
                _time(now),
                claimId,
                int(spec.ttl),
                int(spec.grace),
                int(spec.limit),
                json.dumps(list(spec.tags)),
                int(spec.maxClaimCount or 0) if deadLetter else "",
                queuePrefix(project, spec.deadLetterQueue or "") if deadLetter else "",
                spec.deadLetterQueue if deadLetter else "",
                int(spec.deadLetterTTL) if deadLetter and spec.deadLetterTTL else "",
            )
        except Exception:
            return fail()
        return self._write(lua.CREATE_CLAIM, *args, durability=durability).addCallback(
            self._claimed, project, queue, claimId, spec, now
        )

    def _claimed(
        self,
        reply: Any,
        project: str,
        queue: str,
        claimId: str,
        spec: ClaimSpec,
        now: float,
    ) -> Optional[Claim]:
        """
        The claim the C{CREATE_CLAIM} script's answer C{reply} made, or
        L{None} when it took no message; its dead-lettered messages are
        reported.
        """
        moved, rows = reply
        self._report("dead_lettered", int(moved), project, queue)
        messages = _flatMessages(rows)
        if not messages:
            return None
        return Claim(
            id=claimId,
            ttl=int(spec.ttl),
            grace=int(spec.grace),
            updated=float(now),
            expires=float(now) + int(spec.ttl),
            messages=tuple(messages),
        )

    @deferred
    async def getClaim(
        self, project: str, queue: str, claimId: str, now: float
    ) -> Claim:
        if not _validIds([claimId]):
            raise errors.ClaimDoesNotExist(claimId)
        reply = await self._eval(
            lua.GET_CLAIM, queuePrefix(project, queue), claimId, _time(now)
        )
        if not reply:
            raise errors.ClaimDoesNotExist(claimId)
        ttl, grace, updated, expires, rows = reply
        messages = sorted((_message(row) for row in rows), key=lambda m: m.marker)
        return Claim(
            id=claimId,
            ttl=int(float(ttl)),
            grace=int(float(grace)),
            updated=float(updated),
            expires=float(expires),
            messages=tuple(messages),
        )

    @deferred
    async def renewClaim(
        self, project: str, queue: str, claimId: str, ttl: int, grace: int, now: float
    ) -> None:
        if not _validIds([claimId]):
            raise errors.ClaimDoesNotExist(claimId)
        done = await self._change(
            lua.RENEW_CLAIM,
            queuePrefix(project, queue),
            claimId,
            _time(now),
            int(ttl),
            int(grace),
        )
        if not done:
            raise errors.ClaimDoesNotExist(claimId)

    @deferred
    async def releaseClaim(
        self, project: str, queue: str, claimId: str, now: float
    ) -> None:
        if not _validIds([claimId]):
            return
        await self._change(lua.RELEASE_CLAIM, queuePrefix(project, queue), claimId)

    @deferred
    async def purgeExpired(self, now: float) -> int:
        removed = 0
        while True:
            gone, messagesSeen, claimsSeen, byQueue = await self._eval(
                lua.PURGE_EXPIRED, _time(now), PURGE_BATCH, _lp(RIVER)
            )
            removed += int(gone)
            self._reportExpired(byQueue)
            if int(messagesSeen) < PURGE_BATCH and int(claimsSeen) < PURGE_BATCH:
                return removed

    def _reportExpired(self, byQueue: Any) -> None:
        """
        Report the messages one purge script removed, queue by queue
        (C{byQueue} is its JSON object of counts by queue prefix).
        """
        counts = json.loads(byQueue) if isinstance(byQueue, (str, bytes)) else {}
        for prefix, count in counts.items():
            queue = queueOfPrefix(prefix)
            if queue is not None:
                self._reportQueue("expired", queue[0], queue[1], int(count))

    # Handing queues over (marconi.cluster.rebalance).

    @deferred
    async def heldQueues(self, after: Optional[tuple], limit: int) -> list:
        held = []
        cursor = "0"
        start = "marconi:p:"
        while True:
            cursor, keys = await self._call(
                "execute_command", "SCAN", cursor, "MATCH", start + "*:q", "COUNT", 1000
            )
            for name in keys:
                project = _unprefixed(name[len(start) : -len(":q")])
                if project is not None:
                    held += [
                        (project, q) for q in await self._call("zrange", name, 0, -1)
                    ]
            if str(cursor) == "0":
                break
        held.sort()
        if after is not None:
            held = [k for k in held if k > tuple(after)]
        return held[: max(limit, 0)]

    @deferred
    async def exportQueue(
        self, project: str, name: str, after: Optional[int], limit: int
    ) -> Optional[dict]:
        reply = await self._eval(
            lua.EXPORT_QUEUE,
            queuePrefix(project, name),
            projectPrefix(project),
            name,
            "-inf" if after is None else f"({int(after)}",
            max(limit, 0) + 1,
            "1" if after is None else "0",
        )
        if not reply:
            return None
        meta, last, claims, rows = json.loads(reply)
        return transfer.page(
            None if meta is None else json.loads(meta),
            None,
            int(last),
            [
                transfer.claimDoc(c[0], int(c[1]), int(c[2]), float(c[3]), float(c[4]))
                for c in claims or ()
            ],
            [transfer.messageDoc(_message(row)) for row in rows or ()],
            limit,
        )

    @deferred
    async def importQueue(
        self, project: str, name: str, page: dict, first: bool
    ) -> None:
        claims = [
            [
                c["id"],
                str(int(c["ttl"])),
                str(int(c["grace"])),
                _time(c["updated"]),
                _time(c["expires"]),
            ]
            for c in page["claims"]
        ]
        rows = []
        for doc in page["messages"]:
            m = transfer.messageOf(doc)
            rows.append(
                [
                    m.id,
                    str(m.marker),
                    m.body,
                    str(m.ttl),
                    _time(m.created),
                    _time(m.expires),
                    _time(m.visibleAt),
                    m.clientId,
                    m.claimId or "",
                    "" if m.claimExpires is None else _time(m.claimExpires),
                    str(m.claimCount),
                    json.dumps(list(m.tags)),
                    m.checksum,
                ]
            )
        metadata = page["metadata"]
        await self._change(
            lua.IMPORT_QUEUE,
            queuePrefix(project, name),
            projectPrefix(project),
            name,
            "1" if first else "0",
            "" if metadata is None else json.dumps(metadata),
            int(page["last"]),
            json.dumps(claims),
            json.dumps(rows),
        )

    @deferred
    async def dropQueue(self, project: str, name: str) -> None:
        await self._change(
            lua.DELETE_QUEUE, queuePrefix(project, name), projectPrefix(project), name
        )


def _unprefixed(text: str) -> Optional[str]:
    """
    The name length-prefixed in C{text} by L{_lp}, or L{None}.
    """
    data = text.encode("utf-8")
    length, colon, rest = data.partition(b":")
    if not colon or not length.isdigit() or len(rest) != int(length):
        return None
    return rest.decode("utf-8")


def queueOfPrefix(prefix: str) -> Optional[tuple[str, str]]:
    """
    The C{(project, queue)} of a queue prefix made by L{queuePrefix}, or
    L{None} when C{prefix} is not one.
    """
    start = "marconi:q:"
    if not prefix.startswith(start):
        return None
    rest = prefix[len(start) :].encode("utf-8")
    names = []
    for _ in range(2):
        length, colon, rest = rest.partition(b":")
        if not colon or not length.isdigit() or len(rest) < int(length):
            return None
        names.append(rest[: int(length)].decode("utf-8", "replace"))
        rest = rest[int(length) :]
    if rest:
        return None
    return names[0], names[1]


def makeStore(uri: str, reactor: Any, durability: str = DURABLE) -> RedisStore:
    """
    Make a L{RedisStore} for a C{redis://}, C{redis+unix://} or
    C{redis+sentinel://} URI.
    """
    return RedisStore(parseURI(uri), reactor, durability=durability)
