"""
The values that pass between the domain and its storage drivers.

Message bodies travel as JSON text, serialised once when they are posted and
embedded as they are in every answer, so no driver ever parses a body.
"""

from dataclasses import dataclass, field
from os import urandom
from typing import Callable, Optional, Sequence, cast


@dataclass(frozen=True, slots=True)
class NewMessage:
    """
    A validated message about to be stored.

    @ivar body: the body as compact JSON text.
    @ivar ttl: seconds the message lives after it is posted.
    @ivar delay: seconds after posting before it may be listed or claimed.
    @ivar tags: the tags it carries, without duplicates, in the order given.
    @ivar checksum: C{"MD5:<hex>"}, as Zaqar computes it.
    """

    body: str
    ttl: int
    delay: int = 0
    tags: tuple[str, ...] = ()
    checksum: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """
    A stored message as a driver returns it.

    @ivar marker: the message's position in its queue; strictly increasing
        in posting order and stable across restarts.
    @ivar created: when it was posted (seconds since the epoch, server clock).
    @ivar expires: when it stops existing.
    @ivar visibleAt: when its delay ends.
    @ivar claimId: the claim holding it, or L{None}.  The claim may have
        expired: use L{Message.claimedAt} to ask whether it is live.
    @ivar claimExpires: when that claim ends, or L{None}.
    @ivar claimCount: how many claims have taken it.
    @ivar clientId: the Client-ID of the producer.
    """

    id: str
    marker: int
    body: str
    ttl: int
    created: float
    expires: float
    visibleAt: float
    clientId: str
    claimId: Optional[str] = None
    claimExpires: Optional[float] = None
    claimCount: int = 0
    tags: tuple[str, ...] = ()
    checksum: str = ""

    def age(self, now: float) -> int:
        return max(0, int(now - self.created))

    def claimedAt(self, now: float) -> bool:
        """
        Whether a live claim holds the message at C{now}.
        """
        return (
            self.claimId is not None
            and self.claimExpires is not None
            and self.claimExpires > now
        )


class _MadeNewMessage:
    """
    A L{NewMessage} in the making.  A frozen dataclass sets each field
    through C{object.__setattr__}, several times slower than a plain
    assignment; this class has the same slots in the same order, sets
    them by plain assignment and then becomes a L{NewMessage} (Python
    allows the class of an object to be assigned between classes of the
    same layout): the result is a L{NewMessage} like any other, equal to
    one made by its constructor, hashed alike and as frozen.
    """

    __slots__ = NewMessage.__slots__

    def __init__(
        self,
        body: str,
        ttl: int,
        delay: int = 0,
        tags: tuple = (),
        checksum: str = "",
    ) -> None:
        self.body = body
        self.ttl = ttl
        self.delay = delay
        self.tags = tags
        self.checksum = checksum
        self.__class__ = NewMessage  # type: ignore[assignment]


class _MadeMessage:
    """
    A L{Message} in the making, as L{_MadeNewMessage} makes a
    L{NewMessage}: for the many messages a listing or a claim returns.
    """

    __slots__ = Message.__slots__

    def __init__(
        self,
        id: str,
        marker: int,
        body: str,
        ttl: int,
        created: float,
        expires: float,
        visibleAt: float,
        clientId: str,
        claimId: Optional[str] = None,
        claimExpires: Optional[float] = None,
        claimCount: int = 0,
        tags: tuple = (),
        checksum: str = "",
    ) -> None:
        self.id = id
        self.marker = marker
        self.body = body
        self.ttl = ttl
        self.created = created
        self.expires = expires
        self.visibleAt = visibleAt
        self.clientId = clientId
        self.claimId = claimId
        self.claimExpires = claimExpires
        self.claimCount = claimCount
        self.tags = tags
        self.checksum = checksum
        self.__class__ = Message  # type: ignore[assignment]


#: Make a L{NewMessage} (the same arguments as its constructor), faster.
makeNewMessage = cast(Callable[..., NewMessage], _MadeNewMessage)

#: Make a L{Message} (the same arguments as its constructor), faster.
makeMessage = cast(Callable[..., Message], _MadeMessage)


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """
    A queue in a listing; C{metadata} is L{None} unless asked for.
    """

    name: str
    metadata: Optional[dict] = None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """
    Counts of a queue's live messages.

    C{free} counts messages that can be claimed now; C{delayed} those still
    in their delay; C{claimed} those held by a live claim.
    """

    free: int
    claimed: int
    delayed: int
    oldest: Optional[Message] = None
    newest: Optional[Message] = None

    @property
    def total(self) -> int:
        return self.free + self.claimed + self.delayed


@dataclass(frozen=True, slots=True)
class MessageQuery:
    """
    What a listing asks for.

    @ivar marker: list messages after this marker (exclusive).
    @ivar echo: include messages posted by C{clientId}.
    """

    limit: int
    clientId: str
    marker: Optional[int] = None
    echo: bool = False
    includeClaimed: bool = False
    includeDelayed: bool = False
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ClaimSpec:
    """
    What a claim asks for, with the queue's dead-letter policy.

    When C{maxClaimCount} is set and C{deadLetterQueue} names a queue, a
    message that has already been claimed C{maxClaimCount} times is moved
    to that queue (same project) instead of being claimed again, with its
    TTL reset to C{deadLetterTTL} (or its own TTL when that is L{None}).
    """

    ttl: int
    grace: int
    limit: int
    tags: tuple[str, ...] = ()
    maxClaimCount: Optional[int] = None
    deadLetterQueue: Optional[str] = None
    deadLetterTTL: Optional[int] = None


@dataclass(frozen=True, slots=True)
class Claim:
    """
    A live claim and the messages it still holds.

    @ivar updated: when it was made or last renewed.
    """

    id: str
    ttl: int
    grace: int
    updated: float
    expires: float
    messages: Sequence[Message] = field(default_factory=tuple)

    def age(self, now: float) -> int:
        return max(0, int(now - self.updated))


def newId() -> str:
    """
    A new server-generated id for a message or a claim: 128 random bits.
    """
    return urandom(16).hex()


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """
    A sample of how many live messages a queue holds, and how many of them
    are claimed.
    """

    project: str
    queue: str
    messages: int
    claimed: int
