"""
Where subscriptions and pending deliveries are kept: in the node's own
store, through the store's public operations, so they work on every store
and survive a restart.

Both live in a reserved project, L{PROJECT}, whose name no client can give
(project ids have no spaces), so no client ever lists, reads or deletes
them through the API, and they never appear among a project's queues:

 - each subscription is one queue of that project, named
   C{s.<key>.<id>} where C{key} is a digest of the subscribed project and
   queue, and its metadata is the subscription's record; a queue's
   subscriptions are the queues named after its key, in id order, read
   with the store's queue listing from that prefix;
 - the delivery outbox is the queue L{OUTBOX}: one message per delivery
   owed (a post to one subscriber, or a confirmation request), claimed by
   the node delivering it.  A delivery finished is deleted; one that must
   be retried is posted again with the retry's delay; one whose node
   stopped before finishing is claimable again when its claim expires.
"""

import hashlib
import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from marconi.core.errors import QueueDoesNotExist
from marconi.core.models import Claim, ClaimSpec, MessageQuery, NewMessage
from marconi.core.reserved import SUBSCRIPTIONS_PROJECT

#: The reserved project (L{marconi.core.reserved}): a space makes it a
#: name no client can send.
PROJECT = SUBSCRIPTIONS_PROJECT
OUTBOX = "outbox"
CLIENT_ID = "marconi-subscriptions"
_PREFIX = "s."
_PAGE = 100


def newId() -> str:
    return secrets.token_hex(16)


def isId(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def queueKey(project: str, queue: str) -> str:
    return hashlib.sha256(f"{project}\n{queue}".encode("utf-8")).hexdigest()[:40]


@dataclass(frozen=True)
class Subscription:
    """
    One subscription of one project's queue.

    @ivar expires: when it ends, by the node's clock.
    @ivar secret: the key of the signature of its webhook deliveries.
    """

    id: str
    project: str
    queue: str
    subscriber: str
    ttl: int
    created: float
    expires: float
    options: dict = field(default_factory=dict)
    confirmed: bool = True
    secret: str = field(default_factory=lambda: secrets.token_hex(32))

    @property
    def name(self) -> str:
        return f"{_PREFIX}{queueKey(self.project, self.queue)}.{self.id}"

    @property
    def isMail(self) -> bool:
        return self.subscriber.startswith("mailto:")

    def live(self, now: float) -> bool:
        return self.expires > now

    def document(self, now: float) -> dict:
        """
        As Zaqar shows it (with its signing secret).
        """
        return {
            "id": self.id,
            "source": self.queue,
            "subscriber": self.subscriber,
            "ttl": self.ttl,
            "age": max(0, int(now - self.created)),
            "options": self.options,
            "confirmed": self.confirmed,
            "secret": self.secret,
        }


def _fromRecord(record: Any) -> Optional[Subscription]:
    try:
        return Subscription(**record)
    except TypeError:
        return None


class Records:
    """
    The subscriptions and the outbox of one store.

    @param store: the node's own L{marconi.core.interfaces.IMessageStore}.
    @param clock: the bus's clock.
    """

    def __init__(self, store: Any, clock: Any, outboxTTL: int) -> None:
        self.store = store
        self.clock = clock
        self.outboxTTL = outboxTTL

    def now(self) -> float:
        return self.clock.seconds()

    # Subscriptions.

    async def add(self, subscription: Subscription) -> None:
        await self.store.createQueue(
            PROJECT, subscription.name, asdict(subscription), self.now()
        )

    async def put(self, subscription: Subscription) -> None:
        await self.store.setQueueMetadata(
            PROJECT, subscription.name, asdict(subscription)
        )

    async def remove(self, subscription: Subscription) -> None:
        await self.store.deleteQueue(PROJECT, subscription.name)

    async def get(self, project: str, queue: str, sid: str) -> Optional[Subscription]:
        """
        The subscription, live or expired, or L{None}.
        """
        if not isId(sid):
            return None
        name = f"{_PREFIX}{queueKey(project, queue)}.{sid}"
        try:
            found = _fromRecord(await self.store.getQueueMetadata(PROJECT, name))
        except QueueDoesNotExist:
            return None
        if found is None or (found.project, found.queue) != (project, queue):
            return None
        return found

    async def everything(self) -> list[Subscription]:
        """
        Every subscription kept, live or expired.
        """
        found: list = []
        marker = _PREFIX
        while True:
            page = await self.store.listQueues(PROJECT, marker, _PAGE, True)
            for info in page:
                if not info.name.startswith(_PREFIX):
                    return found
                subscription = _fromRecord(info.metadata or {})
                if subscription is not None:
                    found.append(subscription)
            if len(page) < _PAGE:
                return found
            marker = page[-1].name

    # The outbox.

    async def owe(self, entries: list[dict], delay: int = 0) -> None:
        """
        Record deliveries owed, due after C{delay} seconds.
        """
        if not entries:
            return
        messages = [
            NewMessage(
                body=json.dumps(entry, separators=(",", ":")),
                ttl=self.outboxTTL,
                delay=delay,
            )
            for entry in entries
        ]
        await self.store.postMessages(PROJECT, OUTBOX, messages, CLIENT_ID, self.now())

    async def take(self, limit: int, ttl: int) -> Optional[Claim]:
        """
        Claim up to C{limit} deliveries that are due, for C{ttl} seconds.
        """
        spec = ClaimSpec(ttl=ttl, grace=0, limit=limit)
        return await self.store.createClaim(PROJECT, OUTBOX, spec, self.now())

    async def done(self, messageId: str, claimId: str) -> None:
        await self.store.deleteMessage(PROJECT, OUTBOX, messageId, claimId, self.now())

    async def giveBack(self, claimId: str) -> None:
        await self.store.releaseClaim(PROJECT, OUTBOX, claimId, self.now())

    async def owed(self) -> set[tuple[str, str]]:
        """
        The deliveries owed, as (subscription id, message id) pairs.
        """
        owed = set()
        async for message in walk(self.store, PROJECT, OUTBOX, self.now()):
            entry = json.loads(message.body)
            for messageId in entry.get("messages", ()):
                owed.add((entry["subscription"], messageId))
        return owed

    # The node's state: whether it stopped in order, and when it was last
    # seen running.

    async def state(self, node: str) -> dict:
        try:
            return await self.store.getQueueMetadata(PROJECT, f"state.{node}")
        except QueueDoesNotExist:
            return {}

    async def setState(self, node: str, state: dict) -> None:
        name = f"state.{node}"
        if not await self.store.createQueue(PROJECT, name, state, self.now()):
            await self.store.setQueueMetadata(PROJECT, name, state)


async def walk(store: Any, project: str, queue: str, now: float) -> Any:
    """
    Every live message of a queue, claimed and delayed ones too, in order.
    """
    marker = None
    while True:
        query = MessageQuery(
            limit=_PAGE,
            clientId=CLIENT_ID,
            marker=marker,
            echo=True,
            includeClaimed=True,
            includeDelayed=True,
        )
        page = await store.listMessages(project, queue, query, now)
        for message in page:
            yield message
            marker = message.marker
        if len(page) < _PAGE:
            return
