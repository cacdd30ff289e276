"""
Sending: webhooks with treq, mail with Twisted's SMTP client, and the
outbox worker that runs deliveries as they come due.
"""

import hashlib
import hmac
import json
from email.message import EmailMessage
from typing import Any, Awaitable, Callable, Optional

import treq
from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

# Imported here, when the extension is made: the module looks up this
# host's name (a blocking call) when it is first imported.
from twisted.mail.smtp import sendmail
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from marconi.core.errors import ClaimMismatch
from marconi.core.models import Message
from marconi.extensions.subscriptions.policy import privateAddress
from marconi.extensions.subscriptions.records import Records

#: The header of a webhook delivery's signature: C{sha256=} and the hex
#: HMAC-SHA256 of the request body, keyed with the subscription's secret.
SIGNATURE_HEADER = "X-Marconi-Signature"
SUBSCRIPTION_HEADER = "X-Marconi-Subscription"
#: Answers after which a delivery is tried again; any other answer from
#: 400 to 499 is final (the receiver refused it), from 200 to 299 success.
RETRIED_STATUSES = frozenset({408, 425, 429})
#: Deliveries claimed at once.
BATCH = 50

log = Logger()


def signature(secret: str, body: bytes) -> str:
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return "sha256=" + digest


def bounded(d: Deferred, timeout: float, clock: Any) -> Deferred:
    """
    C{d}, given C{timeout} seconds on C{clock}.

    @return: a L{Deferred} firing as C{d} does, except that it fails with
        L{TimeoutError} when C{d} takes too long, and with
        L{CancelledError} when it is cancelled, whatever C{d} then fails
        with: a cancelled connection attempt fails with
        C{ConnectingCancelledError} and a cancelled request awaiting its
        answer with C{ResponseNeverReceived}, which would otherwise look
        like a failed delivery (and be retried) when its caller stops.
    """
    cancelled = False

    def cancel(_: Deferred) -> None:
        nonlocal cancelled
        cancelled = True
        d.cancel()

    outer: Deferred = Deferred(cancel)

    def settle(result: Any) -> None:
        if outer.called:
            return
        if cancelled:
            outer.errback(CancelledError())
        elif isinstance(result, Failure):
            outer.errback(result)
        else:
            outer.callback(result)

    d.addTimeout(timeout, clock).addBoth(settle)
    return outer


class DeliveryFailed(Exception):
    """
    A delivery did not reach its subscriber.

    @ivar final: trying again would not help (the receiver refused it).
    """

    def __init__(self, reason: str, final: bool = False) -> None:
        super().__init__(reason)
        self.final = final


class PrivateAddress(Exception):
    """
    A webhook's host is, or resolves to, an address it may not have.
    """


@implementer(IAgentEndpointFactory)
class PublicEndpoints:
    """
    Connects webhooks to public addresses only: the host is resolved (with
    the reactor's resolver, without blocking) when a connection is made,
    checked, and the connection made to that very address, so a second
    lookup cannot give another.
    """

    def __init__(self, reactor: Any, timeout: float) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.tls = BrowserLikePolicyForHTTPS()

    def endpointForURI(self, uri: Any) -> "PublicEndpoint":
        return PublicEndpoint(self, uri.scheme, uri.host, uri.port)


@implementer(IStreamClientEndpoint)
class PublicEndpoint:
    def __init__(
        self, factory: PublicEndpoints, scheme: bytes, host: bytes, port: int
    ) -> None:
        self.factory = factory
        self.scheme = scheme
        self.host = host
        self.port = port

    def connect(self, protocolFactory: Any) -> Deferred:
        return Deferred.fromCoroutine(self._connect(protocolFactory))

    async def _connect(self, protocolFactory: Any) -> Any:
        reactor = self.factory.reactor
        host = self.host.decode("ascii")
        try:
            privateAddress(host)
            address = host
        except ValueError:
            address = await reactor.resolve(host)
        if privateAddress(address):
            raise PrivateAddress(
                f"{host} is the private address {address} (allow_private is off)"
            )
        kind = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        endpoint: IStreamClientEndpoint = kind(
            reactor, address, self.port, timeout=self.factory.timeout
        )
        if self.scheme == b"https":
            creator = self.factory.tls.creatorForNetloc(self.host, self.port)
            endpoint = wrapClientTLS(creator, endpoint)
        return await endpoint.connect(protocolFactory)


class Webhooks:
    """
    POSTs to webhook subscribers over one pool of persistent connections.

    @ivar allowPrivate: unless set, a webhook whose host is (or resolves
        to) a private address (L{privateAddress}) is refused.
    """

    def __init__(
        self, reactor: Any, timeout: float, allowPrivate: bool = False
    ) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.allowPrivate = allowPrivate
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 8
        if allowPrivate:
            agent = Agent(reactor, connectTimeout=timeout, pool=self.pool)
        else:
            agent = Agent.usingEndpointFactory(
                reactor, PublicEndpoints(reactor, timeout), pool=self.pool
            )
        self.http = HTTPClient(agent)

    async def post(self, url: str, body: bytes, headers: dict) -> None:
        """
        @raise DeliveryFailed: unless the receiver answered 2xx within the
            timeout (the answer's body is read and dropped); final when
            its host is a private address that is not allowed.
        """
        try:
            response = await self._bounded(
                self.http.post(url, data=body, headers=headers)
            )
            await self._bounded(treq.collect(response, lambda data: None))
        except CancelledError:
            raise
        except PrivateAddress as e:
            raise DeliveryFailed(str(e), final=True) from None
        except Exception as e:
            raise DeliveryFailed(f"{type(e).__name__}: {e}") from None
        if 200 <= response.code < 300:
            return
        final = 400 <= response.code < 500 and response.code not in RETRIED_STATUSES
        raise DeliveryFailed(f"answered {response.code}", final)

    def _bounded(self, d: Deferred) -> Deferred:
        return bounded(d, self.timeout, self.reactor)

    def close(self) -> Deferred:
        return self.pool.closeCachedConnections()


class Mailer:
    """
    Sends mail through the configured relay.
    """

    def __init__(self, reactor: Any, host: str, port: int, timeout: float) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.timeout = timeout

    async def send(self, sender: str, to: str, subject: str, text: str) -> None:
        """
        @raise DeliveryFailed: the relay did not take the mail in time;
            final when the mail cannot be made (a bad header).
        """
        mail = EmailMessage()
        try:
            mail["From"] = sender
            mail["To"] = to
            mail["Subject"] = subject
            mail.set_content(text)
            data = mail.as_bytes()
        except Exception as e:
            raise DeliveryFailed(f"{type(e).__name__}: {e}", final=True) from None
        try:
            d = sendmail(
                self.host,
                sender,
                [to],
                data,
                port=self.port,
                reactor=self.reactor,
            )
            await bounded(d, self.timeout, self.reactor)
        except CancelledError:
            raise
        except Exception as e:
            raise DeliveryFailed(f"{type(e).__name__}: {e}") from None


#: A delivery handler: given an outbox entry, it delivers it and answers
#: L{None} when done, or the entry to try again and the delay before it.
Handler = Callable[[dict], Awaitable[Optional[tuple[dict, int]]]]


class Outbox(Service):
    """
    Runs the deliveries of the outbox as they come due: at once when told
    (L{kick}), and every C{pollInterval} seconds for retries and for
    deliveries a stopped node left unfinished.  At most C{maxInFlight} run
    at once; each is independent, so a slow or dead subscriber only holds
    its own.
    """

    def __init__(
        self,
        records: Records,
        clock: Any,
        handle: Handler,
        maxInFlight: int,
        claimTTL: int,
        pollInterval: float,
    ) -> None:
        self.records = records
        self.clock = clock
        self.handle = handle
        self.maxInFlight = maxInFlight
        self.claimTTL = claimTTL
        self._poll = LoopingCall(self.kick)
        self._poll.clock = clock
        self.pollInterval = pollInterval
        self._running: dict[Deferred, str] = {}
        self._passing = False
        self._again = False
        self._timers: list = []
        self._idle: list[Deferred] = []

    def startService(self) -> None:
        super().startService()
        self._poll.start(self.pollInterval, now=True)

    async def _stop(self) -> None:
        if self._poll.running:
            self._poll.stop()
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers = []
        claims = set(self._running.values())
        for d in list(self._running):
            d.cancel()
        # The store is left alone once this is done: a read of the outbox
        # under way ends (giving its claim back), and so do the cancelled
        # deliveries.
        await self.settled()
        # What was started and not finished is claimable again at once.
        for claimId in claims:
            try:
                await self.records.giveBack(claimId)
            except Exception:
                log.failure("Could not give back outbox claim {claim}", claim=claimId)

    def stopService(self) -> Deferred:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def owe(self, entries: list[dict], delay: int = 0) -> None:
        """
        Add deliveries, due in C{delay} seconds, and run them when due.
        """
        await self.records.owe(entries, delay)
        if not self.running:
            # Run by the poll after the next start.
            return
        if delay:
            self._timers = [t for t in self._timers if t.active()]
            self._timers.append(self.clock.callLater(delay, self.kick))
        else:
            self.kick()

    def kick(self) -> None:
        """
        Start the deliveries that are due, as many as there is room for.
        """
        if not self.running:
            return
        if self._passing:
            self._again = True
            return
        self._passing = True
        d = Deferred.fromCoroutine(self._pass())
        d.addErrback(lambda f: log.failure("Reading the outbox failed", f))
        d.addBoth(self._passed)

    def _passed(self, _: Any) -> None:
        self._passing = False
        again, self._again = self._again, False
        if again:
            self.kick()
        self._checkIdle()

    async def _pass(self) -> None:
        while self.running:
            room = self.maxInFlight - len(self._running)
            if room <= 0:
                return
            claim = await self.records.take(min(room, BATCH), self.claimTTL)
            if claim is None or not claim.messages:
                return
            if not self.running:
                # Stopped meanwhile: nothing is started after a stop.
                await self.records.giveBack(claim.id)
                return
            for message in claim.messages:
                self._start(message, claim.id)

    def _start(self, message: Message, claimId: str) -> None:
        d = Deferred.fromCoroutine(self._deliver(message, claimId))
        self._running[d] = claimId
        d.addErrback(self._failed, message)

        def finished(_: Any) -> None:
            self._running.pop(d, None)
            self.kick()
            self._checkIdle()

        d.addBoth(finished)

    def _failed(self, failure: Any, message: Message) -> None:
        if failure.check(CancelledError):
            return
        # Left claimed: it is tried again when its claim expires.
        log.failure("Delivery {id} failed", failure, id=message.id)

    async def _deliver(self, message: Message, claimId: str) -> None:
        try:
            entry = json.loads(message.body)
            again = await self.handle(entry)
        except CancelledError:
            raise
        except Exception:
            # Trying again would fail the same way: it is given up.
            log.failure("Delivery {id} failed; given up", id=message.id)
            again = None
        if not self.running:
            # Stopping cancelled it (a cancelled webhook call can look like
            # a failed one): its claim is given back, so it runs again
            # after the restart, as at-least-once allows.
            return
        if again is not None:
            retry, delay = again
            await self.owe([retry], delay)
        try:
            await self.records.done(message.id, claimId)
        except ClaimMismatch:
            # It took longer than its claim: it is (or was) claimed and
            # delivered again, as at-least-once allows.
            log.warn("Delivery {id} outlived its claim", id=message.id)

    def settled(self) -> Deferred:
        """
        @return: a L{Deferred} firing when no delivery runs and no read of
            the outbox is under way (for tests and orderly shutdowns).
        """
        d: Deferred = Deferred()
        self._idle.append(d)
        self._checkIdle()
        return d

    def _checkIdle(self) -> None:
        if self._running or self._passing:
            return
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)
