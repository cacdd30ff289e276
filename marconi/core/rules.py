"""
What stored messages mean: the rules every storage driver follows.

The drivers call these functions on the messages they hold (memory, SQLite,
MongoDB's reads); where a rule runs inside the backend (the Lua scripts of
the Redis driver, MongoDB's query filters), the backend's code mirrors the
function named in its comment, and the storage contract suite holds every
driver to the same answers.
"""

from dataclasses import replace
from typing import Collection, Optional

from marconi.core.errors import ClaimMismatch, MessageIsClaimed
from marconi.core.models import ClaimSpec, Message


def isClaimable(message: Message, now: float) -> bool:
    """
    Whether a message can be claimed (or popped) at C{now}: it is live,
    past its delay, and no live claim holds it.
    """
    return (
        message.expires > now
        and message.visibleAt <= now
        and not message.claimedAt(now)
    )


def hasTags(message: Message, tags: Collection[str]) -> bool:
    """
    Whether a message carries every one of C{tags}.
    """
    return all(tag in message.tags for tag in tags)


def goesToDeadLetter(claimCount: int, spec: ClaimSpec) -> bool:
    """
    Whether a claimable message that has been claimed C{claimCount} times
    moves to the dead letter queue of C{spec} instead of being claimed: the
    queue names one, has a maximum claim count, and the message reached it.
    """
    return (
        spec.maxClaimCount is not None
        and bool(spec.deadLetterQueue)
        and claimCount >= spec.maxClaimCount
    )


def deadLetterTTL(ttl: int, spec: ClaimSpec) -> int:
    """
    The TTL a message of TTL C{ttl} has in the dead letter queue.
    """
    return spec.deadLetterTTL or ttl


def claimed(message: Message, claimId: str, claimExpires: float, grace: int) -> Message:
    """
    The message as a new claim C{claimId} takes it: held until
    C{claimExpires}, counted once more, and living at least C{grace}
    seconds beyond the claim.
    """
    return replace(
        message,
        claimId=claimId,
        claimExpires=claimExpires,
        claimCount=message.claimCount + 1,
        expires=max(message.expires, claimExpires + grace),
    )


def unclaimed(message: Message) -> Message:
    """
    The message with no claim holding it (released, popped, dead-lettered).
    """
    return replace(message, claimId=None, claimExpires=None)


def checkDelete(
    messageId: str,
    holder: Optional[str],
    holderExpires: Optional[float],
    claimId: Optional[str],
    now: float,
) -> None:
    """
    Decide whether a live message held by C{holder} until C{holderExpires}
    (both L{None} when no claim ever held it) may be deleted by a caller
    presenting C{claimId} (or L{None}).

    @raise MessageIsClaimed: a live claim holds it and C{claimId} is not
        that claim.
    @raise ClaimMismatch: C{claimId} is given but does not hold it.
    """
    held = holder is not None and holderExpires is not None and holderExpires > now
    if held and holder == claimId:
        return
    if held:
        raise MessageIsClaimed(messageId)
    if claimId is not None:
        raise ClaimMismatch(
            f"Message {messageId!r} is not held by claim {claimId!r}: "
            "the claim expired, was released, or never held it."
        )


def deletableWith(
    holder: Optional[str],
    holderExpires: Optional[float],
    claimIds: Optional[Collection[str]],
    now: float,
) -> bool:
    """
    Whether a bulk delete presenting C{claimIds} (L{None}: any) removes a
    message held by C{holder} until C{holderExpires}: no live claim holds
    it, or one of C{claimIds} does.
    """
    return (
        claimIds is None
        or holder is None
        or holderExpires is None
        or holderExpires <= now
        or holder in claimIds
    )
