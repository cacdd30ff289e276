"""
The C{sqlite:} storage URI, checked without opening the database.
"""

import os
from urllib.parse import parse_qs

_SYNCHRONOUS = ("full", "normal", "extra", "off")


def parseURI(uri: str) -> tuple[str, str]:
    """
    Split a C{sqlite:PATH[?synchronous=LEVEL]} URI.

    @return: the database path (C{":memory:"} for C{sqlite::memory:}) and the
        C{synchronous} level.
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
    unknown = set(options) - {"synchronous"}
    if unknown:
        raise ValueError(f"unknown sqlite option(s): {', '.join(sorted(unknown))}")
    synchronous = options.get("synchronous", ["full"])[-1].lower()
    if synchronous not in _SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
    return path, synchronous


def _options(query: str) -> dict:
    return parse_qs(query, keep_blank_values=True)


def checkURI(uri: str) -> None:
    path, _ = parseURI(uri)
    if path != ":memory:":
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise ValueError(f"the directory {directory!r} does not exist")
