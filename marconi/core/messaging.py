"""
The operations of the message bus, as the API offers them.

L{Messaging} checks what a client asks for against the limits and the
queue's reserved metadata, reads the time from its injected clock, and asks
the storage driver to do the rest.  It knows nothing of HTTP.
"""

import copy
from typing import Any, Optional, Sequence

from twisted.internet.interfaces import IReactorTime

from marconi.core import validation
from marconi.core.audit import RIVER, AuditRiver, AuditSettings, idsOf
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
from marconi.core.interfaces import IMessageStore, IMonitor
from marconi.core.limits import Limits
from marconi.core.models import (
    Claim,
    ClaimSpec,
    Message,
    MessageQuery,
    QueueInfo,
    QueueStats,
)
from marconi.core.monitoring import NullMonitor

PATCH_MEDIA_TYPE = "application/openstack-messaging-v2.0-json-patch"

# How long queue metadata read for posts and claims is reused, and how many
# queues' metadata are kept.
METADATA_CACHE_SECONDS = 5.0
METADATA_CACHE_SIZE = 10000


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
        audit: Optional[AuditRiver] = None,
    ) -> None:
        """
        @param audit: the audit river; by default none is kept.
        """
        self.store = store
        self.clock = clock
        self.limits = limits
        self.monitor = NullMonitor() if monitor is None else monitor
        self._metadataCache: dict = {}
        self.audit = _defaultRiver(store, clock) if audit is None else audit

    def now(self) -> float:
        return self.clock.seconds()

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
        metadata = validation.queueMetadata(metadata, self.limits, name)
        self._forget(project, name)
        created = await self.store.createQueue(project, name, metadata, self.now())
        self.audit.record(
            project, "queue_created" if created else "queue_updated", name
        )
        return created

    async def getQueue(self, project: str, name: str, defaults: bool = True) -> dict:
        """
        The queue's metadata, with the reserved keys it lacks filled in with
        their defaults (L{None} for the dead-letter settings) unless
        C{defaults} is false.  Queues are lazy: a queue that was never
        created reads as one with no metadata.
        """
        validation.queueName(name, self.limits)
        metadata = dict(await self._metadata(project, name))
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
        metadata = validation.queueMetadata(metadata, self.limits, name)
        self._forget(project, name)
        await self.store.setQueueMetadata(project, name, metadata)
        self._forget(project, name)
        self.audit.record(project, "queue_updated", name)
        return await self.getQueue(project, name)

    async def deleteQueue(self, project: str, name: str) -> None:
        validation.queueName(name, self.limits)
        self._forget(project, name)
        await self.store.deleteQueue(project, name)
        self._forget(project, name)
        self.audit.record(project, "queue_deleted", name)

    async def listQueues(
        self,
        project: str,
        marker: Optional[str],
        limit: Optional[int],
        detailed: bool,
        withCount: bool,
    ) -> tuple[list[QueueInfo], Optional[int]]:
        if limit is None:
            limit = self.limits.defaultQueuesPerPage
        validation.integer(limit, "limit", 1, self.limits.maxQueuesPerPage)
        queues = await self.store.listQueues(project, marker, limit, detailed)
        count = await self.store.countQueues(project) if withCount else None
        return await self._withoutRiver(project, list(queues), count)

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
        return await self.store.queueStats(project, name, self.now())

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
        self, project: str, queue: str, document: Any, size: int, clientId: str
    ) -> list[str]:
        """
        @param size: the length in bytes of the request body.
        """
        validation.queueName(queue, self.limits)
        metadata = await self._metadata(project, queue)
        maxSize = (
            metadata.get("_max_messages_post_size") or self.limits.maxMessagesPostSize
        )
        if size > maxSize:
            raise PayloadTooLarge(
                f"The messages posted to this queue may not exceed {maxSize} bytes."
            )
        messages = validation.messages(document, self.limits, metadata)
        ids = await self.store.postMessages(
            project, queue, messages, clientId, self.now()
        )
        self.monitor.messagesCounted("posted", len(ids))
        self.audit.record(
            project,
            "posted",
            queue,
            messages=list(ids),
            count=len(ids),
            client=clientId,
        )
        return ids

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
        return list(await self.store.listMessages(project, queue, query, self.now()))

    async def getMessage(self, project: str, queue: str, messageId: str) -> Message:
        validation.queueName(queue, self.limits)
        found = await self.store.getMessages(project, queue, (messageId,), self.now())
        if not found:
            raise MessageDoesNotExist(messageId)
        return found[0]

    async def getMessages(
        self, project: str, queue: str, ids: Sequence[str]
    ) -> list[Message]:
        validation.queueName(queue, self.limits)
        return list(await self.store.getMessages(project, queue, ids, self.now()))

    async def deleteMessage(
        self, project: str, queue: str, messageId: str, claimId: Optional[str]
    ) -> None:
        validation.queueName(queue, self.limits)
        now = self.now()
        try:
            await self.store.deleteMessage(project, queue, messageId, claimId, now)
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
        self.audit.record(
            project, "deleted", queue, messages=[messageId], claim=claimId
        )

    async def deleteMessages(
        self,
        project: str,
        queue: str,
        ids: Sequence[str],
        claimIds: Optional[Sequence[str]],
    ) -> int:
        validation.queueName(queue, self.limits)
        count = await self.store.deleteMessages(
            project, queue, ids, claimIds, self.now()
        )
        if count:
            self.monitor.messagesCounted("deleted", count)
        self.audit.record(project, "deleted", queue, messages=list(ids), count=count)
        return count

    async def popMessages(
        self, project: str, queue: str, limit: int, tags: Sequence[str] = ()
    ) -> list[Message]:
        validation.queueName(queue, self.limits)
        validation.integer(limit, "pop", 1, self.limits.maxMessagesPerClaim)
        popped = list(
            await self.store.popMessages(project, queue, limit, tuple(tags), self.now())
        )
        if popped:
            self.monitor.messagesCounted("deleted", len(popped))
            self.audit.record(
                project, "popped", queue, messages=idsOf(popped), count=len(popped)
            )
        return popped

    # Claims.

    async def createClaim(
        self,
        project: str,
        queue: str,
        options: Any,
        limit: Optional[int] = None,
        tags: Sequence[str] = (),
    ) -> Optional[Claim]:
        validation.queueName(queue, self.limits)
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
        claim = await self.store.createClaim(project, queue, spec, self.now())
        if claim is not None and claim.messages:
            self.monitor.messagesCounted("claimed", len(claim.messages))
            self.audit.record(
                project,
                "claimed",
                queue,
                claim=claim.id,
                messages=idsOf(claim.messages),
                count=len(claim.messages),
                ttl=ttl,
                grace=grace,
            )
        return claim

    async def getClaim(self, project: str, queue: str, claimId: str) -> Claim:
        validation.queueName(queue, self.limits)
        return await self.store.getClaim(project, queue, claimId, self.now())

    async def renewClaim(
        self, project: str, queue: str, claimId: str, options: Any
    ) -> None:
        validation.queueName(queue, self.limits)
        ttl, grace = validation.claimOptions(options, self.limits)
        await self.store.renewClaim(project, queue, claimId, ttl, grace, self.now())
        self.audit.record(
            project, "renewed", queue, claim=claimId, ttl=ttl, grace=grace
        )

    async def releaseClaim(self, project: str, queue: str, claimId: str) -> None:
        validation.queueName(queue, self.limits)
        await self.store.releaseClaim(project, queue, claimId, self.now())
        self.audit.record(project, "released", queue, claim=claimId)

    async def purgeExpired(self) -> int:
        count = await self.store.purgeExpired(self.now())
        if count:
            self.monitor.messagesCounted("expired", count)
        return count


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
