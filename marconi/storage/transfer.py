"""
The format of a queue exported by one store and imported into another
(L{marconi.core.interfaces.IMessageStore.exportQueue}): plain JSON values,
the same for every driver, so a queue can move between stores of
different kinds.

A message is a L{dict} of L{MESSAGE_FIELDS}; a claim a L{dict} of
L{CLAIM_FIELDS}.
"""

from typing import Any, Optional

from marconi.core.models import Message

MESSAGE_FIELDS = (
    "id",
    "marker",
    "body",
    "ttl",
    "created",
    "expires",
    "visible_at",
    "client_id",
    "claim_id",
    "claim_expires",
    "claim_count",
    "tags",
    "checksum",
)
CLAIM_FIELDS = ("id", "ttl", "grace", "updated", "expires")


def messageDoc(m: Message) -> dict:
    """
    A stored message as a page carries it.
    """
    return {
        "id": m.id,
        "marker": m.marker,
        "body": m.body,
        "ttl": m.ttl,
        "created": m.created,
        "expires": m.expires,
        "visible_at": m.visibleAt,
        "client_id": m.clientId,
        "claim_id": m.claimId,
        "claim_expires": m.claimExpires,
        "claim_count": m.claimCount,
        "tags": list(m.tags),
        "checksum": m.checksum,
    }


def messageOf(doc: dict) -> Message:
    """
    The message a page carries.
    """
    return Message(
        id=doc["id"],
        marker=int(doc["marker"]),
        body=doc["body"],
        ttl=int(doc["ttl"]),
        created=float(doc["created"]),
        expires=float(doc["expires"]),
        visibleAt=float(doc["visible_at"]),
        clientId=doc["client_id"],
        claimId=doc["claim_id"],
        claimExpires=_float(doc["claim_expires"]),
        claimCount=int(doc["claim_count"]),
        tags=tuple(doc["tags"]),
        checksum=doc["checksum"],
    )


def claimDoc(
    claimId: str, ttl: int, grace: int, updated: float, expires: float
) -> dict:
    return {
        "id": claimId,
        "ttl": ttl,
        "grace": grace,
        "updated": updated,
        "expires": expires,
    }


def page(
    metadata: Optional[dict],
    created: Optional[float],
    last: int,
    claims: list,
    messages: list,
    limit: int,
) -> dict:
    """
    An exported page; C{messages} holds up to C{limit + 1} message
    L{dict}s (one more tells whether a next page exists).
    """
    more = len(messages) > limit
    messages = messages[:limit]
    return {
        "metadata": metadata,
        "created": created,
        "last": last,
        "claims": claims,
        "messages": messages,
        "next": messages[-1]["marker"] if more and messages else None,
    }


def _float(value: Any) -> Optional[float]:
    return None if value is None else float(value)
