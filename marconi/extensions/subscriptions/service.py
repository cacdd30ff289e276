"""
The subscriptions extension of one node: Zaqar v2's subscription
resources, and push delivery of every message posted to a subscribed
queue (see C{docs/subscriptions.rst}).
"""

import json
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Optional
from urllib.parse import urlencode

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from marconi.core.errors import (
    Conflict,
    DoesNotExist,
    Forbidden,
    InvalidBody,
    ValidationFailed,
)
from marconi.core.events import Event
from marconi.core.interfaces import IExtension
from marconi.extensions import ExtensionAnswer, ExtensionHost, ExtensionRequest
from marconi.extensions.subscriptions import policy
from marconi.extensions.subscriptions.delivery import (
    SIGNATURE_HEADER,
    SUBSCRIPTION_HEADER,
    DeliveryFailed,
    Mailer,
    Outbox,
    Webhooks,
    signature,
)
from marconi.extensions.subscriptions.records import (
    Records,
    Subscription,
    newId,
    walk,
)
from marconi.extensions.subscriptions.settings import Settings, parseSettings

#: Zaqar's paging of subscription listings.
DEFAULT_PAGE = 10
MAX_PAGE = 20
#: Seconds between records that the node runs, and how far before the
#: last one recovery after an unclean stop looks for posts.
HEARTBEAT = 5.0
RECOVERY_MARGIN = 10.0
RECOVERY_BATCH = 10
#: How long a confirmation link lasts.
CONFIRMATION_LIFETIME = 24 * 3600

log = Logger()


class SubscriptionDoesNotExist(DoesNotExist):
    title = "Not found"


@implementer(IExtension)
class SubscriptionsExtension(MultiService):
    """
    @ivar outbox: the delivery worker (L{Outbox}).
    """

    name = "subscriptions"  # type: ignore[assignment]

    def __init__(
        self,
        host: ExtensionHost,
        settings: Optional[Settings] = None,
        clock: Any = None,
        reactor: Any = None,
    ) -> None:
        """
        @param clock: the time of subscriptions and retries; the bus's
            clock by default.
        @param reactor: the network's reactor; the host's by default.
        """
        super().__init__()
        self.bus = host.bus
        self.settings = settings or parseSettings(host.settings)
        self.clock = clock or host.bus.clock
        reactor = reactor or host.reactor
        # The node's own store (the one its audit river writes to), not
        # the cluster's placement of client queues.
        self.records = Records(
            host.bus.audit.store, self.clock, self.settings.outboxTTL
        )
        self.webhooks = Webhooks(
            reactor, self.settings.timeout, self.settings.allowPrivate
        )
        self.mailer = Mailer(
            reactor,
            self.settings.smtpHost,
            self.settings.smtpPort,
            self.settings.timeout,
        )
        self.outbox = Outbox(
            self.records,
            self.clock,
            self._deliver,
            self.settings.maxInFlight,
            self.settings.redeliverAfter,
            self.settings.pollInterval,
        )
        self.outbox.setServiceParent(self)
        sweeper = TimerService(self.settings.sweepInterval, self._sweep)
        sweeper.clock = self.clock
        sweeper.setServiceParent(self)
        beat = TimerService(HEARTBEAT, self._beat)
        beat.clock = self.clock
        beat.setServiceParent(self)
        self.nodeName = host.nodeName
        # By (project, queue): the subscriptions by id.  Loaded when the
        # service starts, kept by every change made here.
        self._known: dict[tuple[str, str], dict[str, Subscription]] = {}
        self._loaded: Optional[Deferred] = None
        self._stopListening: Any = None
        self._posting: set[Deferred] = set()
        self._loadedOK = False
        host.bus.acceptSetting(policy.RETRY_POLICY, policy.checkRetryPolicy)
        # POST .../purge with resource_types ["subscriptions"].
        host.bus.onPurge("subscriptions", self.purge)

    # The service.

    def startService(self) -> None:
        self._loaded = Deferred.fromCoroutine(self._loadSoon())
        self._stopListening = self.bus.events.listen(self._observe)
        super().startService()

    def stopService(self) -> Deferred:
        if self._stopListening is not None:
            self._stopListening()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        loading = self._loaded
        if loading is not None and not loading.called:
            loading.addErrback(lambda f: f.trap(CancelledError))
            loading.cancel()
        await super().stopService()
        # The deliveries owed by posts seen before the stop are recorded
        # (and run after the next start) before the store may stop.
        while self._posting:
            await DeferredList(list(self._posting))
        await self.webhooks.close()
        if self._loadedOK:
            # The next start need not look for posts whose deliveries were
            # not recorded.
            state = {"clean": True, "at": self.clock.seconds()}
            await self.records.setState(self.nodeName, state)

    async def _beat(self) -> None:
        """
        Record that the node runs (see L{_recover}).
        """
        await self._ready()
        state = {"clean": False, "at": self.clock.seconds()}
        try:
            await self.records.setState(self.nodeName, state)
        except Exception:
            log.failure("Could not record that the node runs")

    async def _loadSoon(self) -> None:
        """
        Load the subscriptions, trying again every C{pollInterval} seconds
        while the store fails (nothing is delivered meanwhile).
        """
        while True:
            try:
                return await self._load()
            except CancelledError:
                raise
            except Exception:
                log.failure("Loading the subscriptions failed; trying again")
            await deferLater(self.clock, self.settings.pollInterval, lambda: None)

    async def _load(self) -> None:
        known: dict = {}
        now = self.clock.seconds()
        for subscription in await self.records.everything():
            if subscription.live(now):
                key = (subscription.project, subscription.queue)
                known.setdefault(key, {})[subscription.id] = subscription
        self._known = known
        state = await self.records.state(self.nodeName)
        if state and not state.get("clean"):
            await self._recover(state["at"] - RECOVERY_MARGIN)
        self._loadedOK = True

    async def _recover(self, since: float) -> None:
        """
        After a node stopped without order, record the deliveries of the
        messages posted since it was last seen running that are not in the
        outbox: a post's deliveries are recorded just after its answer, so
        the node may have stopped in between.  Those delivered meanwhile
        are delivered again (at least once).
        """
        owed = await self.records.owed()
        now = self.clock.seconds()
        entries = []
        for (project, queue), found in list(self._known.items()):
            recent = [
                m.id
                async for m in walk(self.bus.store, project, queue, now)
                if m.created >= since
            ]
            for subscription in found.values():
                if not self._receives(subscription, now):
                    continue
                missing = [i for i in recent if (subscription.id, i) not in owed]
                for start in range(0, len(missing), RECOVERY_BATCH):
                    entries.append(
                        _notify(subscription, missing[start : start + RECOVERY_BATCH])
                    )
        if entries:
            log.info(
                "Recovered {count} deliveries after an unclean stop",
                count=len(entries),
            )
        await self.outbox.owe(entries)

    async def _ready(self) -> None:
        if self._loaded is not None and not self._loaded.called:
            await self._loaded

    async def _sweep(self) -> None:
        """
        Remove the subscriptions whose TTL ran out.
        """
        await self._ready()
        now = self.clock.seconds()
        try:
            for subscription in await self.records.everything():
                if not subscription.live(now):
                    self._forget(subscription)
                    await self.records.remove(subscription)
        except Exception:
            log.failure("Removing expired subscriptions failed")

    def settled(self) -> Deferred:
        """
        @return: a L{Deferred} firing once the deliveries owed by the posts
            seen so far are recorded and no delivery runs.
        """

        async def settle() -> None:
            while self._posting:
                await DeferredList(list(self._posting))
            await self.outbox.settled()

        return Deferred.fromCoroutine(settle())

    def resource(self) -> None:
        return None

    # Events: a post owes a delivery to each subscriber of its queue.

    def _observe(self, event: Event) -> None:
        if event.action != "posted" or event.queue is None:
            return
        if self._loaded is not None and self._loaded.called:
            if not self._known.get((event.project, event.queue)):
                return
        d = Deferred.fromCoroutine(self._posted(event))
        self._posting.add(d)
        d.addBoth(_forget, self._posting, d)
        d.addErrback(
            lambda f: log.failure(
                "Could not record the deliveries of a post to {queue} "
                "(project {project})",
                f,
                queue=event.queue,
                project=event.project,
            )
        )

    async def _posted(self, event: Event) -> None:
        await self._ready()
        assert event.queue is not None
        now = self.clock.seconds()
        ids = list(event.fields.get("messages", ()))
        entries = [
            _notify(s, ids)
            for s in self._subscriptions(event.project, event.queue)
            if self._receives(s, now)
        ]
        await self.outbox.owe(entries)

    def _receives(self, subscription: Subscription, now: float) -> bool:
        return subscription.live(now) and (
            subscription.confirmed or not self.settings.requireConfirmation
        )

    def _subscriptions(self, project: str, queue: str) -> list[Subscription]:
        return list(self._known.get((project, queue), {}).values())

    def _remember(self, subscription: Subscription) -> None:
        key = (subscription.project, subscription.queue)
        self._known.setdefault(key, {})[subscription.id] = subscription

    def _forget(self, subscription: Subscription) -> None:
        key = (subscription.project, subscription.queue)
        found = self._known.get(key, {})
        found.pop(subscription.id, None)
        if not found:
            self._known.pop(key, None)

    # Deliveries.

    async def _deliver(self, entry: dict) -> Optional[tuple[dict, int]]:
        """
        Deliver one outbox entry (see L{Outbox}).
        """
        await self._ready()
        project, queue = entry["project"], entry["queue"]
        subscription = self._known.get((project, queue), {}).get(entry["subscription"])
        if subscription is None or not subscription.live(self.clock.seconds()):
            return None
        if entry["kind"] == "confirm":
            pending: list = [None]
        else:
            ids = entry["messages"]
            found = {m.id: m for m in await self.bus.getMessages(project, queue, ids)}
            # A message deleted or expired before its delivery is not pushed.
            pending = [found[i] for i in ids if i in found]
        for index, message in enumerate(pending):
            try:
                if message is None:
                    await self._sendConfirmation(subscription)
                else:
                    await self._send(subscription, message)
            except DeliveryFailed as e:
                if e.final:
                    log.warn(
                        "Subscriber {subscriber} refused a delivery ({reason}); "
                        "not retried",
                        subscriber=subscription.subscriber,
                        reason=str(e),
                    )
                    continue
                return await self._retry(subscription, entry, pending[index:], e)
        return None

    async def _retry(
        self,
        subscription: Subscription,
        entry: dict,
        pending: list,
        error: Exception,
    ) -> Optional[tuple[dict, int]]:
        metadata = await self.bus.getQueue(
            subscription.project, subscription.queue, defaults=False
        )
        chosen = policy.effectivePolicy(
            metadata.get(policy.RETRY_POLICY),
            subscription.options.get(policy.RETRY_POLICY),
        )
        delays = policy.schedule(chosen)
        attempt = entry["attempt"]
        if attempt >= len(delays):
            log.error(
                "Delivery to {subscriber} given up after {attempts} attempts: {reason}",
                subscriber=subscription.subscriber,
                attempts=attempt + 1,
                reason=str(error),
            )
            return None
        retry = dict(entry, attempt=attempt + 1)
        if entry["kind"] == "notify":
            retry["messages"] = [m.id for m in pending]
        delay = int(-(-delays[attempt] // 1))
        return retry, delay

    def _notification(self, subscription: Subscription, message: Any) -> dict:
        return {
            "id": message.id,
            "body": json.loads(message.body),
            "ttl": message.ttl,
            "age": max(0, int(self.clock.seconds() - message.created)),
            "queue_name": subscription.queue,
            "Message_Type": "Notification",
        }

    async def _send(self, subscription: Subscription, message: Any) -> None:
        document = self._notification(subscription, message)
        if subscription.isMail:
            await self._mail(
                subscription,
                f"Message from queue {subscription.queue}",
                json.dumps(document, indent=2, sort_keys=True),
            )
            return
        text = json.dumps(document)
        template = subscription.options.get("post_data")
        if template is not None:
            text = template.replace('"$zaqar_message$"', text)
        await self._post(subscription, text.encode("utf-8"))

    async def _post(self, subscription: Subscription, body: bytes) -> None:
        headers = {"Content-Type": "application/json"}
        headers.update(subscription.options.get("post_headers", {}))
        headers[SIGNATURE_HEADER] = signature(subscription.secret, body)
        headers[SUBSCRIPTION_HEADER] = subscription.id
        await self.webhooks.post(subscription.subscriber, body, headers)

    async def _mail(self, subscription: Subscription, subject: str, text: str) -> None:
        options = subscription.options
        await self.mailer.send(
            self.settings.smtpFrom,
            subscription.subscriber[len("mailto:") :].split("?", 1)[0],
            options.get("subject", subject),
            text,
        )

    async def _sendConfirmation(self, subscription: Subscription) -> None:
        from marconi.api import presigned

        path = _confirmPath(subscription)
        expires = datetime.fromtimestamp(
            self.clock.seconds() + CONFIRMATION_LIFETIME, timezone.utc
        ).strftime(presigned.EXPIRES_FORMAT)
        key = (self.settings.signedURLKey or "").encode("utf-8")
        document = {
            "Message_Type": "SubscriptionConfirmation",
            "Message": f"You have chosen to subscribe to the queue: {subscription.queue}",
            "URL-Signature": presigned.sign(
                key, [path], ["PUT"], subscription.project, expires
            ),
            "URL-Methods": "PUT",
            "URL-Paths": path,
            "X-Project-ID": subscription.project,
            "URL-Expires": expires,
            "SubscribeBody": {"confirmed": True},
            "UnsubscribeBody": {"confirmed": False},
            "queue_name": subscription.queue,
        }
        if self.settings.publicURL:
            document["WSGISubscribeURL"] = self.settings.publicURL.rstrip("/") + path
        text = json.dumps(document)
        if subscription.isMail:
            await self._mail(subscription, "Confirm your subscription", text)
        else:
            await self._post(subscription, text.encode("utf-8"))

    # The API resources.

    def serve(self, request: ExtensionRequest) -> Deferred:
        return Deferred.fromCoroutine(self._serve(request))

    async def _serve(self, request: ExtensionRequest) -> ExtensionAnswer:
        await self._ready()
        assert request.queue is not None
        sid = request.ids.get("subscription_id")
        method = request.method
        if sid is None:
            if method == "POST":
                return await self.create(request)
            return self.list(request)
        if method == "PUT":  # only .../confirm takes PUT
            return await self.confirm(request, sid)
        if method == "GET":
            return ExtensionAnswer(
                200, self._find(request, sid).document(self.clock.seconds())
            )
        if method == "PATCH":
            return await self.update(request, sid)
        return await self.delete(request, sid)

    def _find(self, request: ExtensionRequest, sid: str) -> Subscription:
        assert request.queue is not None
        found = self._known.get((request.project, request.queue), {}).get(sid)
        if found is None or not found.live(self.clock.seconds()):
            raise SubscriptionDoesNotExist(f"Subscription {sid!r} does not exist.")
        return found

    def _duplicate(self, subscription: Subscription) -> bool:
        return any(
            s.subscriber == subscription.subscriber and s.id != subscription.id
            for s in self._subscriptions(subscription.project, subscription.queue)
            if s.live(self.clock.seconds())
        )

    def _check(self, request: ExtensionRequest, creating: bool) -> dict:
        return policy.checkDocument(
            request.body if request.body is not None else {},
            self.settings.subscriberTypes,
            creating=creating,
            allowPrivate=self.settings.allowPrivate,
        )

    async def create(self, request: ExtensionRequest) -> ExtensionAnswer:
        assert request.queue is not None
        document = self._check(request, creating=True)
        now = self.clock.seconds()
        ttl = document.get("ttl", self.settings.defaultTTL)
        subscription = Subscription(
            id=newId(),
            project=request.project,
            queue=request.queue,
            subscriber=document["subscriber"],
            ttl=ttl,
            created=now,
            expires=now + ttl,
            options=document.get("options", {}),
            confirmed=not self.settings.requireConfirmation,
        )
        if self._duplicate(subscription):
            raise Conflict(
                f"Queue {request.queue!r} already has a subscription for "
                f"{subscription.subscriber}."
            )
        most = self.settings.maxSubscriptionsPerQueue
        live = [
            s
            for s in self._subscriptions(request.project, request.queue)
            if s.live(now)
        ]
        if len(live) >= most:
            raise ValidationFailed(
                f"Queue {request.queue!r} already has {most} subscriptions, "
                "the most a queue may have (max_subscriptions_per_queue)."
            )
        # Remembered before the write: a second create of the same
        # subscriber meanwhile is a conflict.
        self._remember(subscription)
        try:
            await self.records.add(subscription)
        except BaseException:
            self._forget(subscription)
            raise
        if self.settings.requireConfirmation:
            await self._askConfirmation(subscription)
        return ExtensionAnswer(
            201,
            {"subscription_id": subscription.id, "secret": subscription.secret},
            {"Location": f"{request.base}/queues/{request.queue}/subscriptions"},
        )

    def list(self, request: ExtensionRequest) -> ExtensionAnswer:
        assert request.queue is not None
        limit = _limit(request.args)
        marker = _one(request.args, "marker")
        now = self.clock.seconds()
        live = sorted(
            (
                s
                for s in self._subscriptions(request.project, request.queue)
                if s.live(now)
            ),
            key=lambda s: s.id,
        )
        if marker:
            live = [s for s in live if s.id > marker]
        page = live[:limit]
        links = []
        if page:
            query = urlencode({"marker": page[-1].id, "limit": limit})
            links.append(
                {
                    "rel": "next",
                    "href": f"{request.base}/queues/{request.queue}/subscriptions?{query}",
                }
            )
        return ExtensionAnswer(
            200,
            {"subscriptions": [s.document(now) for s in page], "links": links},
        )

    async def update(self, request: ExtensionRequest, sid: str) -> ExtensionAnswer:
        found = self._find(request, sid)
        document = self._check(request, creating=False)
        changed = replace(found, **document)
        # A new subscriber has not confirmed anything: it is asked anew.
        ask = (
            self.settings.requireConfirmation and changed.subscriber != found.subscriber
        )
        if ask:
            changed = replace(changed, confirmed=False)
        if "ttl" in document:
            changed = replace(changed, expires=self.clock.seconds() + document["ttl"])
        if "subscriber" in document and self._duplicate(changed):
            raise Conflict(
                f"Queue {found.queue!r} already has a subscription for "
                f"{changed.subscriber}."
            )
        await self._store(changed)
        if ask:
            await self._askConfirmation(changed)
        return ExtensionAnswer(204)

    async def _askConfirmation(self, subscription: Subscription) -> None:
        await self.outbox.owe(
            [
                {
                    "kind": "confirm",
                    "project": subscription.project,
                    "queue": subscription.queue,
                    "subscription": subscription.id,
                    "attempt": 0,
                }
            ]
        )

    async def confirm(self, request: ExtensionRequest, sid: str) -> ExtensionAnswer:
        found = self._find(request, sid)
        # Only the subscriber may confirm: through the pre-signed URL sent
        # to it (the API checked its signature covers this very path), not
        # with the project's own credentials.
        signedPaths = request.headers.get("url-paths", "").split(",")
        if (
            "url-signature" not in request.headers
            or _confirmPath(found) not in signedPaths
        ):
            raise Forbidden(
                "A subscription is confirmed through the pre-signed URL sent "
                "to its subscriber."
            )
        body = request.body
        if not isinstance(body, dict) or not isinstance(body.get("confirmed"), bool):
            raise InvalidBody("The 'confirmed' should be boolean.")
        await self._store(replace(found, confirmed=body["confirmed"]))
        return ExtensionAnswer(204)

    async def _store(self, subscription: Subscription) -> None:
        await self.records.put(subscription)
        self._remember(subscription)

    async def delete(self, request: ExtensionRequest, sid: str) -> ExtensionAnswer:
        assert request.queue is not None
        found = self._known.get((request.project, request.queue), {}).get(sid)
        if found is not None:
            self._forget(found)
            await self.records.remove(found)
        return ExtensionAnswer(204)

    def purge(self, project: str, queue: str) -> Deferred:
        """
        Remove every subscription of C{queue} of C{project} (for
        C{POST /v2/queues/{queue}/purge} with C{resource_types}
        C{["subscriptions"]}); their pending deliveries are dropped when
        they come due.

        @return: a L{Deferred} firing with how many were removed.
        """
        return Deferred.fromCoroutine(self._purge(project, queue))

    async def _purge(self, project: str, queue: str) -> int:
        await self._ready()
        removed = self._subscriptions(project, queue)
        for subscription in removed:
            self._forget(subscription)
            await self.records.remove(subscription)
        return len(removed)


def _confirmPath(subscription: Subscription) -> str:
    """
    The path the subscriber confirms C{subscription} at (signed for it).
    """
    return f"/v2/queues/{subscription.queue}/subscriptions/{subscription.id}/confirm"


def _notify(subscription: Subscription, ids: list) -> dict:
    """
    The outbox entry of the delivery of messages C{ids} to C{subscription}.
    """
    return {
        "kind": "notify",
        "project": subscription.project,
        "queue": subscription.queue,
        "subscription": subscription.id,
        "messages": ids,
        "attempt": 0,
    }


def _one(args: Any, name: str) -> Optional[str]:
    values = args.get(name)
    return values[-1] if values else None


def _limit(args: Any) -> int:
    raw = _one(args, "limit")
    if raw is None or raw == "":
        return DEFAULT_PAGE
    try:
        limit = int(raw)
    except ValueError:
        raise ValidationFailed("limit must be an integer.") from None
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed(
            f"Limit must be at least 1 and may not be greater than {MAX_PAGE}."
        )
    return limit


def makeExtension(host: ExtensionHost) -> SubscriptionsExtension:
    return SubscriptionsExtension(host)


def _forget(result: Any, pending: set, d: Deferred) -> Any:
    """
    Take C{d} out of C{pending} once it fired, passing its result on.
    """
    pending.discard(d)
    return result
