"""
The operations of the message bus, as the API offers them.

L{Messaging} checks what a client asks for against the limits and the
queue's reserved metadata, reads the time from its injected clock, and asks
the storage driver to do the rest.  It knows nothing of HTTP.
"""

import copy
from dataclasses import replace
from typing import Any, Callable, Optional, Sequence

from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from marconi.core import queuefilter, signing, validation
from marconi.core.audit import RIVER, AuditRiver, AuditSettings, idsOf
from marconi.core.durability import requestedSafety, writeOptions
from marconi.core.encryption import (
    EncryptionUnavailable,
    Envelope,
    KeyRing,
    MessageUnreadable,
    Undecryptable,
    isEnvelope,
    openMessage,
    sealMessage,
)
from marconi.core.errors import (
    ClaimDoesNotExist,
    ClaimMismatch,
    Conflict,
    MarconiError,
    MessageDoesNotExist,
    MessageIsClaimed,
    PayloadTooLarge,
    QueueDoesNotExist,
    ValidationFailed,
)
from marconi.core.events import Events
from marconi.core.interfaces import IMessageStore, IMonitor
from marconi.core.limits import Limits
from marconi.core.models import (
    Claim,
    ClaimSpec,
    Message,
    MessageQuery,
    NewMessage,
    QueueInfo,
    QueueStats,
)
from marconi.core.monitoring import NullMonitor
from marconi.core.queuefilter import QueueFilter

PATCH_MEDIA_TYPE = "application/openstack-messaging-v2.0-json-patch"

#: What C{POST /v2/queues/{q}/purge} can remove, as Zaqar names them.
PURGEABLE = ("messages", "subscriptions")

# How long queue metadata read for posts and claims is reused, and how many
# queues' metadata are kept.
METADATA_CACHE_SECONDS = 5.0
METADATA_CACHE_SIZE = 10000

# How many dead letter queues a message may have passed through and still
# be decrypted where it is.
DEAD_LETTER_HOPS = 8

log = Logger()


class Messaging:
    """
    The message bus of one node, over one store.
    """

    def __init__(
        self,
        store: IMessageStore,
        clock: IReactorTime,
        limits: Limits,
        monitor: Optional[IMonitor] = None,
        encryption: Optional[KeyRing] = None,
        audit: Optional[AuditRiver] = None,
    ) -> None:
        """
        @param encryption: the keys of encrypted queues, or L{None} when
            none are configured (queues then cannot enable encryption).
        @param audit: the audit river, a listener of L{events}; by default
            none is kept.
        """
        self.store = store
        self.encryption = encryption
        self.clock = clock
        self.limits = limits
        self.monitor = NullMonitor() if monitor is None else monitor
        self._metadataCache: dict = {}
        self.audit = _defaultRiver(store, clock) if audit is None else audit
        self.events = Events(clock)
        self._accepted: dict = {}
        if self.audit.enabled:
            self.events.listen(self.audit.observe)
        self._purgeHooks: dict[str, list[Callable]] = {t: [] for t in PURGEABLE}

    def now(self) -> float:
        return self.clock.seconds()

    def acceptSetting(self, key: str, check: Callable[[Any], Any]) -> None:
        """
        Accept the reserved queue setting C{key}, which is refused while
        nothing on this node gives it an effect: an extension that does
        (the subscriptions' C{_retry_policy}) calls this when it is made.

        @param check: checks a value, raising
            L{marconi.core.errors.ValidationFailed}.
        """
        self._accepted[key] = check

    def watch(self, store: Any) -> None:
        """
        Emit what C{store} does on its own (dead-lettering, expiry) as
        events, when it reports it queue by queue (L{IStoreEvents}).
        """
        observe = getattr(store, "observeQueueEvents", None)
        if observe is not None:
            observe(self._storeEvent)

    def _storeEvent(self, kind: str, project: str, queue: str, count: int) -> None:
        self.events.emit(project, kind, queue, count=count)

    async def ping(self) -> bool:
        """
        Whether the store answers.
        """
        try:
            return bool(await self.store.ping())
        except MarconiError:
            return False

    # Queues.

    async def createQueue(self, project: str, name: str, metadata: Any) -> bool:
        validation.queueName(name, self.limits)
        metadata = validation.queueMetadata(metadata, self.limits, name, self._accepted)
        metadata = signing.checkSettings(metadata, {})
        self._checkEncryption(metadata)
        self._forget(project, name)
        created = await self.store.createQueue(project, name, metadata, self.now())
        self.events.emit(project, "queue_created" if created else "queue_updated", name)
        return created

    async def getQueue(self, project: str, name: str, defaults: bool = True) -> dict:
        """
        The queue's metadata, with the reserved keys it lacks filled in with
        their defaults (L{None} for the dead-letter settings) unless
        C{defaults} is false.  Queues are lazy: a queue that was never
        created reads as one with no metadata.
        """
        validation.queueName(name, self.limits)
        metadata = dict(signing.publicMetadata(await self._metadata(project, name)))
        if not defaults:
            return metadata
        reserved = {
            "_max_messages_post_size": self.limits.maxMessagesPostSize,
            "_default_message_ttl": self.limits.defaultMessageTTL,
            "_default_message_delay": self.limits.defaultMessageDelay,
            "_dead_letter_queue": None,
            "_dead_letter_queue_messages_ttl": None,
            "_max_claim_count": None,
        }
        for key, value in reserved.items():
            if metadata.get(key) is None:
                metadata[key] = value
        return metadata

    async def patchQueue(self, project: str, name: str, operations: Any) -> dict:
        """
        Apply a JSON patch (RFC 6902 subset: add, remove, replace on
        C{/metadata/<key>}) to the queue's metadata.
        """
        validation.queueName(name, self.limits)
        if not isinstance(operations, list) or not operations:
            raise ValidationFailed("The patch must be a non-empty JSON list.")
        current = await self.store.getQueueMetadata(project, name)
        metadata = copy.deepcopy(current)
        for op in operations:
            _applyPatch(metadata, op)
        metadata = validation.queueMetadata(metadata, self.limits, name, self._accepted)
        metadata = signing.checkSettings(metadata, current)
        self._checkEncryption(metadata)
        self._forget(project, name)
        await self.store.setQueueMetadata(project, name, metadata)
        self._forget(project, name)
        self.events.emit(project, "queue_updated", name)
        return await self.getQueue(project, name)

    async def deleteQueue(self, project: str, name: str) -> None:
        validation.queueName(name, self.limits)
        self._forget(project, name)
        await self.store.deleteQueue(project, name)
        self._forget(project, name)
        self.events.emit(project, "queue_deleted", name)

    async def listQueues(
        self,
        project: str,
        marker: Optional[str],
        limit: Optional[int],
        detailed: bool,
        withCount: bool,
        queueFilter: Optional[QueueFilter] = None,
    ) -> tuple[list[QueueInfo], Optional[int]]:
        """
        A page of the project's queues after C{marker}, with the count of
        them when C{withCount}; only those C{queueFilter} keeps, if given
        (see L{marconi.core.queuefilter}).
        """
        if limit is None:
            limit = self.limits.defaultQueuesPerPage
        validation.integer(limit, "limit", 1, self.limits.maxQueuesPerPage)
        queues, count = await queuefilter.listing(
            self.store, project, marker, limit, detailed, withCount, queueFilter
        )
        if queueFilter:
            # A filtered listing never keeps the river's queue.
            return queues, count
        return await self._withoutRiver(project, queues, count)

    # Purging a queue.

    def onPurge(self, resourceType: str, hook: Callable) -> None:
        """
        Have C{hook(project, queue)} called whenever C{resourceType} (one of
        L{PURGEABLE}) of a queue is purged, after the store's own part; it
        may return an awaitable or a L{Deferred}, which the purge waits for.

        Subscriptions live in an extension: it registers here the hook
        that removes a queue's subscriptions.  With no hook registered,
        purging C{subscriptions} does nothing.
        """
        if resourceType not in self._purgeHooks:
            raise ValueError(f"{resourceType!r} is not one of {PURGEABLE}")
        self._purgeHooks[resourceType].append(hook)

    async def purgeQueue(self, project: str, name: str, document: Any) -> int:
        """
        Purge the resource types a purge document names (all of
        L{PURGEABLE} when it is L{None}), keeping the queue and its
        metadata.

        @param document: C{{"resource_types": [...]}}, or L{None}.
        @return: the number of messages removed.
        """
        validation.queueName(name, self.limits)
        types = _purgeTypes(document)
        removed = 0
        if "messages" in types:
            removed = await self.store.purgeMessages(project, name)
            if removed:
                self.monitor.messagesCounted("deleted", removed)
            self.events.emit(project, "deleted", name, purged=True, count=removed)
        for resourceType in PURGEABLE:
            if resourceType in types:
                for hook in self._purgeHooks[resourceType]:
                    await maybeDeferred(hook, project, name)
        return removed

    async def _withoutRiver(
        self, project: str, queues: list[QueueInfo], count: Optional[int]
    ) -> tuple[list[QueueInfo], Optional[int]]:
        """
        A queue listing without the audit river's queue, which sorts last
        (and is kept in the river's own store, this node's).
        """
        if count:
            try:
                await self.audit.store.getQueueMetadata(project, RIVER)
                count -= 1
            except QueueDoesNotExist:
                pass
        return [q for q in queues if q.name != RIVER], count

    async def queueStats(self, project: str, name: str) -> QueueStats:
        validation.queueName(name, self.limits)
        stats = await self.store.queueStats(project, name, self.now())
        return await self._readableStats(project, name, stats)

    # Messages.

    async def _metadata(self, project: str, name: str) -> dict:
        """
        The queue's stored metadata (empty for a queue never created).

        Posts and claims read it on every call, so it is kept for
        L{METADATA_CACHE_SECONDS}; changes made through this node are seen
        at once, changes made by another node sharing the same store within
        that time.
        """
        key = (project, name)
        now = self.now()
        cached = self._metadataCache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            metadata = await self.store.getQueueMetadata(project, name)
        except QueueDoesNotExist:
            metadata = {}
        if len(self._metadataCache) >= METADATA_CACHE_SIZE:
            self._metadataCache.clear()
        self._metadataCache[key] = (now + METADATA_CACHE_SECONDS, metadata)
        return metadata

    def _forget(self, project: str, name: str) -> None:
        self._metadataCache.pop((project, name), None)

    async def postMessages(
        self,
        project: str,
        queue: str,
        document: Any,
        size: int,
        clientId: str,
        safety: Optional[str] = None,
    ) -> list[str]:
        """
        @param size: the length in bytes of the request body.
        @param safety: the level of L{marconi.core.durability} the request
            asked for, as given, or L{None} for the node's default (the
            same for the other writes that take it).
        """
        validation.queueName(queue, self.limits)
        level = requestedSafety(self.store, safety)
        metadata = await self._metadata(project, queue)
        maxSize = (
            metadata.get("_max_messages_post_size") or self.limits.maxMessagesPostSize
        )
        if size > maxSize:
            raise PayloadTooLarge(
                f"The messages posted to this queue may not exceed {maxSize} bytes."
            )
        messages = validation.messages(document, self.limits, metadata)
        items = _items(document)
        if signing.KEYS in metadata:
            signing.checkPosts(project, queue, metadata, items)
        else:
            signing.checkShapes(items)
        messages = self._seal(project, queue, metadata, messages)
        ids = await self.store.postMessages(
            project, queue, messages, clientId, self.now(), **writeOptions(level)
        )
        self.monitor.messagesCounted("posted", len(ids))
        self.events.emit(
            project,
            "posted",
            queue,
            messages=list(ids),
            count=len(ids),
            client=clientId,
        )
        return ids

    async def signer(self, project: str, queue: str) -> Optional[Callable]:
        """
        The function rendering the signature of a message delivered from
        the queue, or L{None} when the queue has no signing keys.
        """
        return signing.signer(project, queue, await self._metadata(project, queue))

    async def listMessages(
        self,
        project: str,
        queue: str,
        clientId: str,
        limit: Optional[int] = None,
        marker: Optional[int] = None,
        echo: bool = False,
        includeClaimed: bool = False,
        includeDelayed: bool = False,
        tags: Sequence[str] = (),
    ) -> list[Message]:
        validation.queueName(queue, self.limits)
        if limit is None:
            limit = self.limits.defaultMessagesPerPage
        validation.integer(limit, "limit", 1, self.limits.maxMessagesPerPage)
        query = MessageQuery(
            limit=limit,
            clientId=clientId,
            marker=marker,
            echo=echo,
            includeClaimed=includeClaimed,
            includeDelayed=includeDelayed,
            tags=tuple(tags),
        )
        listed = await self.store.listMessages(project, queue, query, self.now())
        return await self._readable(project, queue, listed)

    async def getMessage(self, project: str, queue: str, messageId: str) -> Message:
        validation.queueName(queue, self.limits)
        found = await self.store.getMessages(project, queue, (messageId,), self.now())
        if not found:
            raise MessageDoesNotExist(messageId)
        try:
            return await self._open(project, queue, found[0])
        except Undecryptable as e:
            raise MessageUnreadable(messageId, e.reason) from None

    async def getMessages(
        self, project: str, queue: str, ids: Sequence[str]
    ) -> list[Message]:
        validation.queueName(queue, self.limits)
        found = await self.store.getMessages(project, queue, ids, self.now())
        return await self._readable(project, queue, found)

    async def deleteMessage(
        self,
        project: str,
        queue: str,
        messageId: str,
        claimId: Optional[str],
        safety: Optional[str] = None,
    ) -> None:
        validation.queueName(queue, self.limits)
        options = writeOptions(requestedSafety(self.store, safety))
        now = self.now()
        try:
            await self.store.deleteMessage(
                project, queue, messageId, claimId, now, **options
            )
        except MessageIsClaimed:
            if claimId is None:
                raise
            # Another claim holds it: that is 403 only when the claim given
            # is live too; a claim that does not exist (or expired) is a
            # bad request, as Zaqar answers it.
            try:
                await self.store.getClaim(project, queue, claimId, now)
            except ClaimDoesNotExist:
                raise ClaimMismatch(
                    f"Claim {claimId!r} does not exist or has expired."
                ) from None
            raise
        # Counted once per successful request: the store does not say
        # whether the message was still there.
        self.monitor.messagesCounted("deleted", 1)
        self.events.emit(project, "deleted", queue, messages=[messageId], claim=claimId)

    async def deleteMessages(
        self,
        project: str,
        queue: str,
        ids: Sequence[str],
        claimIds: Optional[Sequence[str]],
        safety: Optional[str] = None,
    ) -> int:
        validation.queueName(queue, self.limits)
        options = writeOptions(requestedSafety(self.store, safety))
        count = await self.store.deleteMessages(
            project, queue, ids, claimIds, self.now(), **options
        )
        if count:
            self.monitor.messagesCounted("deleted", count)
        self.events.emit(project, "deleted", queue, messages=list(ids), count=count)
        return count

    async def popMessages(
        self,
        project: str,
        queue: str,
        limit: int,
        tags: Sequence[str] = (),
        safety: Optional[str] = None,
    ) -> list[Message]:
        validation.queueName(queue, self.limits)
        validation.integer(limit, "pop", 1, self.limits.maxMessagesPerClaim)
        options = writeOptions(requestedSafety(self.store, safety))
        popped = list(
            await self.store.popMessages(
                project, queue, limit, tuple(tags), self.now(), **options
            )
        )
        if popped:
            self.monitor.messagesCounted("deleted", len(popped))
            self.events.emit(
                project, "popped", queue, messages=idsOf(popped), count=len(popped)
            )
        return await self._readable(project, queue, popped)

    # Claims.

    async def createClaim(
        self,
        project: str,
        queue: str,
        options: Any,
        limit: Optional[int] = None,
        tags: Sequence[str] = (),
        safety: Optional[str] = None,
    ) -> Optional[Claim]:
        validation.queueName(queue, self.limits)
        level = requestedSafety(self.store, safety)
        ttl, grace = validation.claimOptions(options, self.limits)
        if limit is None:
            limit = self.limits.defaultMessagesPerClaim
        validation.integer(limit, "limit", 1, self.limits.maxMessagesPerClaim)
        metadata = await self._metadata(project, queue)
        spec = ClaimSpec(
            ttl=ttl,
            grace=grace,
            limit=limit,
            tags=tuple(tags),
            maxClaimCount=metadata.get("_max_claim_count"),
            deadLetterQueue=metadata.get("_dead_letter_queue"),
            deadLetterTTL=metadata.get("_dead_letter_queue_messages_ttl"),
        )
        claim = await self.store.createClaim(
            project, queue, spec, self.now(), **writeOptions(level)
        )
        if claim is not None and claim.messages:
            self.monitor.messagesCounted("claimed", len(claim.messages))
            self.events.emit(
                project,
                "claimed",
                queue,
                claim=claim.id,
                messages=idsOf(claim.messages),
                count=len(claim.messages),
                ttl=ttl,
                grace=grace,
            )
        return await self._readableClaim(project, queue, claim)

    async def getClaim(self, project: str, queue: str, claimId: str) -> Claim:
        validation.queueName(queue, self.limits)
        claim = await self.store.getClaim(project, queue, claimId, self.now())
        readable = await self._readableClaim(project, queue, claim)
        assert readable is not None  # getClaim raises for a missing claim
        return readable

    async def renewClaim(
        self, project: str, queue: str, claimId: str, options: Any
    ) -> None:
        validation.queueName(queue, self.limits)
        ttl, grace = validation.claimOptions(options, self.limits)
        await self.store.renewClaim(project, queue, claimId, ttl, grace, self.now())
        self.events.emit(project, "renewed", queue, claim=claimId, ttl=ttl, grace=grace)

    async def releaseClaim(self, project: str, queue: str, claimId: str) -> None:
        validation.queueName(queue, self.limits)
        await self.store.releaseClaim(project, queue, claimId, self.now())
        self.events.emit(project, "released", queue, claim=claimId)

    async def purgeExpired(self) -> int:
        count = await self.store.purgeExpired(self.now())
        if count:
            self.monitor.messagesCounted("expired", count)
        return count

    # Encryption at rest (see marconi.core.encryption).

    def _checkEncryption(self, metadata: dict) -> None:
        if metadata.get("_enable_encrypt_messages") and self.encryption is None:
            raise ValidationFailed(
                "_enable_encrypt_messages cannot be true: no encryption keys "
                "are configured on this server."
            )

    def _seal(
        self, project: str, queue: str, metadata: dict, messages: list[NewMessage]
    ) -> list[NewMessage]:
        """
        The messages to store: sealed when the queue encrypts its messages,
        with the checksum inside the envelope.
        """
        if not metadata.get("_enable_encrypt_messages"):
            return messages
        ring = self.encryption
        if ring is None:
            raise EncryptionUnavailable(
                f"Queue {queue!r} encrypts its messages, but no encryption keys "
                "are configured on this server."
            )
        return [
            replace(
                m,
                body=sealMessage(ring, m.checksum, m.body, project, queue),
                checksum="",
            )
            for m in messages
        ]

    async def _open(self, project: str, queue: str, message: Message) -> Message:
        """
        C{message} with its body and checksum decrypted, if it is sealed.

        A sealed message opens in the queue it was posted to, or in a dead
        letter queue it can have been moved to from there.

        @raise Undecryptable: saying why it cannot.
        """
        if not isEnvelope(message.body):
            return message
        envelope = Envelope.parse(message.body)
        if envelope.queue != queue and not await self._deadLettersTo(
            project, envelope.queue, queue
        ):
            raise Undecryptable(
                envelope.keyId, f"it was encrypted for queue {envelope.queue!r}"
            )
        checksum, body = openMessage(self.encryption, envelope, project)
        return replace(message, body=body, checksum=checksum)

    async def _deadLettersTo(self, project: str, origin: str, queue: str) -> bool:
        current = origin
        for _ in range(DEAD_LETTER_HOPS):
            following = (await self._metadata(project, current)).get(
                "_dead_letter_queue"
            )
            if not following:
                return False
            if following == queue:
                return True
            current = following
        return False

    async def _readable(
        self, project: str, queue: str, messages: Sequence[Message]
    ) -> list[Message]:
        """
        C{messages} decrypted; those that cannot be are left out, and
        logged.
        """
        if not any(isEnvelope(m.body) for m in messages):
            return list(messages)
        readable = []
        for m in messages:
            try:
                readable.append(await self._open(project, queue, m))
            except Undecryptable as e:
                log.error(
                    "Message {message} of queue {queue} (project {project}) "
                    "cannot be decrypted with key {key}: {reason}; left out",
                    message=m.id,
                    queue=queue,
                    project=project,
                    key=e.keyId,
                    reason=e.reason,
                )
        return readable

    async def _readableClaim(
        self, project: str, queue: str, claim: Optional[Claim]
    ) -> Optional[Claim]:
        if claim is None or not any(isEnvelope(m.body) for m in claim.messages):
            return claim
        messages = await self._readable(project, queue, claim.messages)
        return replace(claim, messages=tuple(messages))

    async def _readableStats(
        self, project: str, queue: str, stats: QueueStats
    ) -> QueueStats:
        """
        C{stats} with its oldest and newest messages decrypted (left out
        when they cannot be).
        """
        ends = []
        for m in (stats.oldest, stats.newest):
            readable = await self._readable(project, queue, [] if m is None else [m])
            ends.append(readable[0] if readable else None)
        oldest, newest = ends
        return replace(stats, oldest=oldest, newest=newest)


def _purgeTypes(document: Any) -> tuple:
    """
    The resource types a purge document names, checked as Zaqar checks
    them: an object with a C{resource_types} list, drawn from
    L{PURGEABLE} (an empty list purges nothing).
    """
    if document is None:
        return PURGEABLE
    if not isinstance(document, dict) or "resource_types" not in document:
        raise ValidationFailed('The body must be an object with "resource_types".')
    types = document["resource_types"]
    if not isinstance(types, list) or not all(
        isinstance(t, str) and t in PURGEABLE for t in types
    ):
        raise ValidationFailed(
            f"resource_types must be a list of {', '.join(PURGEABLE)}."
        )
    return tuple(types)


def _items(document: Any) -> Any:
    """
    The messages of a valid post document.
    """
    return document["messages"] if isinstance(document, dict) else document


def _defaultRiver(store: IMessageStore, clock: IReactorTime) -> AuditRiver:
    return AuditRiver(store, clock, AuditSettings(enabled=False))


def _applyPatch(metadata: dict, op: Any) -> None:
    if not isinstance(op, dict):
        raise ValidationFailed("Each patch operation must be a JSON object.")
    kind = op.get("op")
    path = op.get("path")
    if kind not in ("add", "remove", "replace"):
        raise ValidationFailed('"op" must be one of add, remove, replace.')
    if not isinstance(path, str) or not path.startswith("/metadata/"):
        raise ValidationFailed('"path" must have the form /metadata/<key>.')
    key = path[len("/metadata/") :].replace("~1", "/").replace("~0", "~")
    if not key:
        raise ValidationFailed('"path" must name a metadata key.')
    # Reserved keys always exist: GET fills in their defaults, so clients
    # that diff against a GET remove or replace keys that were never stored.
    reserved = key in validation.RESERVED_METADATA
    if kind == "remove":
        if key not in metadata and not reserved:
            raise Conflict(f"Metadata key {key!r} does not exist.")
        metadata.pop(key, None)
        return
    if "value" not in op:
        raise ValidationFailed(f'A {kind} operation needs a "value".')
    if kind == "replace" and key not in metadata and not reserved:
        raise Conflict(f"Metadata key {key!r} does not exist.")
    metadata[key] = op["value"]
