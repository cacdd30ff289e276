"""
The C{sqlite:} storage URI, checked without opening the database.
"""

import os
from urllib.parse import parse_qs

_SYNCHRONOUS = ("full", "normal", "extra", "off")

#: The page size of a database file the store creates, in bytes (a file
#: that exists keeps its own): small enough that a commit of a few small
#: messages writes few bytes to the WAL (docs/storage.rst).
DEFAULT_PAGE_SIZE = 2048
_PAGE_SIZES = tuple(2**n for n in range(9, 17))


def parseURI(uri: str) -> tuple[str, str, int]:
    """
    Split a C{sqlite:PATH[?synchronous=LEVEL][&page_size=BYTES]} URI.

    @return: the database path (C{":memory:"} for C{sqlite::memory:}), the
        C{synchronous} level and the page size of a new file.
    @raise ValueError: if the URI is not a SQLite URI.
    """
    scheme, sep, rest = uri.partition(":")
    if scheme != "sqlite" or not sep:
        raise ValueError(f"not a sqlite: URI: {uri!r}")
    path, _, query = rest.partition("?")
    if path.startswith("//"):
        path = path[2:]
    if not path:
        raise ValueError("a sqlite: URI needs a path (sqlite:PATH or sqlite::memory:)")
    options = _options(query)
    unknown = set(options) - {"synchronous", "page_size"}
    if unknown:
        raise ValueError(f"unknown sqlite option(s): {', '.join(sorted(unknown))}")
    synchronous = options.get("synchronous", ["full"])[-1].lower()
    if synchronous not in _SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
    size = options.get("page_size", [str(DEFAULT_PAGE_SIZE)])[-1]
    if not (size.isascii() and size.isdigit()) or int(size) not in _PAGE_SIZES:
        raise ValueError("page_size must be a power of two from 512 to 65536")
    return path, synchronous, int(size)


def _options(query: str) -> dict:
    return parse_qs(query, keep_blank_values=True)


def checkURI(uri: str) -> None:
    path, _, _ = parseURI(uri)
    if path != ":memory:":
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise ValueError(f"the directory {directory!r} does not exist")
