"""
Durability levels: how safe a change is when the store acknowledges it.

    - C{durable}: the store has it as its own configuration makes it
      durable (SQLite's synchronous setting, Redis' C{appendfsync}, a
      MongoDB journal).
    - C{replicated}: as C{durable}, and at least one replica of the store
      has it too before the change is acknowledged (Redis C{WAIT}, MongoDB
      C{w=majority}); what each store promises is in its C{docs/storage-*}
      page.

A node has a default level (C{[storage] durability}); a store's write
methods that take a C{durability} keyword use it for one request instead.
"""

DURABLE = "durable"
REPLICATED = "replicated"

#: Every level, weakest first.
LEVELS = (DURABLE, REPLICATED)


def parseDurability(text: str) -> str:
    """
    The level named by C{text} (case and surrounding space ignored).

    @raise ValueError: naming the levels, when C{text} is none of them.
    """
    level = text.strip().lower() if isinstance(text, str) else ""
    if level not in LEVELS:
        raise ValueError(f"unknown durability {text!r} (known: {', '.join(LEVELS)})")
    return level
