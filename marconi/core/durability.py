"""
Durability levels ("safety"): how safe a change is when the store
acknowledges it.

    - C{fast}: the store has applied the change, but need not have flushed
      it to disk yet (SQLite commits without waiting for the disk, MongoDB
      answers before its journal commit); what a crash can take back is
      said for each store in its C{docs/storage*} page.
    - C{durable}: the store has it as its own configuration makes it
      durable (SQLite's C{synchronous} commit, Redis' C{appendfsync} or
      C{WAITAOF}, the MongoDB journal).
    - C{replicated}: as C{durable}, and at least one replica of the store
      has it too before the change is acknowledged (Redis C{WAIT}, MongoDB
      C{w=majority}).

A node has a default level (C{[storage] durability}, C{durable} unless
set); a request can ask for another one with C{?safety=LEVEL} on the
writes that take it (posting, claiming, deleting and popping messages),
and a store's write methods take it as their C{durability} keyword.  A
store says which levels a request may ask of it with its C{durabilities}
method (see L{marconi.core.interfaces.IMessageStore}).
"""

from typing import Any, Optional

from marconi.core.errors import ValidationFailed

FAST = "fast"
DURABLE = "durable"
REPLICATED = "replicated"

#: Every level, weakest first.
LEVELS = (FAST, DURABLE, REPLICATED)

#: The levels of a store that has no replicas.
LOCAL_LEVELS = (FAST, DURABLE)


def parseDurability(text: str) -> str:
    """
    The level named by C{text} (case and surrounding space ignored).

    @raise ValueError: naming the levels, when C{text} is none of them.
    """
    level = text.strip().lower() if isinstance(text, str) else ""
    if level not in LEVELS:
        raise ValueError(f"unknown durability {text!r} (known: {', '.join(LEVELS)})")
    return level


def levelsOf(store: Any) -> tuple:
    """
    The levels a request may ask of C{store}: what its C{durabilities()}
    says, or L{LOCAL_LEVELS} for a store that does not say.
    """
    levels = getattr(store, "durabilities", None)
    return LOCAL_LEVELS if levels is None else tuple(levels())


def requestedSafety(store: Any, text: Optional[str]) -> Optional[str]:
    """
    The level a request asks for with its C{safety} parameter, checked
    against what C{store} can give.

    @param text: the parameter as given, or L{None} when it was not.
    @return: the level, or L{None} for the store's default.
    @raise ValidationFailed: the value names no level, or one the store
        cannot give (C{replicated} on a store without replicas).
    """
    if text is None:
        return None
    try:
        level = parseDurability(text)
    except ValueError:
        raise ValidationFailed(
            f"safety must be one of {', '.join(LEVELS)}; {text!r} is none of them."
        ) from None
    levels = levelsOf(store)
    if level not in levels:
        raise ValidationFailed(
            f"This queue's store cannot give safety={level}: it has no "
            "replicas configured (it gives "
            f"{', '.join(levels)}).  Ask for durable, or use a store with "
            "replicas (redis+sentinel://, or a MongoDB replica set)."
        )
    return level


def writeOptions(level: Optional[str]) -> dict:
    """
    The keyword arguments of a store's write method for C{level}: none for
    the store's default, so that a store wrapper that does not know the
    keyword keeps working.
    """
    return {} if level is None else {"durability": level}
