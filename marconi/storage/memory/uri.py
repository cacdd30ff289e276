"""
The C{memory:} storage URI.
"""


def checkURI(uri: str) -> None:
    """
    Accept C{memory:}, the only URI of this store.

    @raise ValueError: for anything else.
    """
    if uri != "memory:":
        raise ValueError(
            f"the memory store takes no path or options: use 'memory:', not {uri!r}"
        )
