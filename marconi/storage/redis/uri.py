"""
Parsing of the Redis storage URIs.

This module does not import txredisapi: the plugin descriptor checks a
C{--storage} URI with L{checkURI} while the options are parsed, long before
(and even without) the driver itself being loaded.

Accepted forms::

    redis://[[user]:password@]host[:port][/db][?poolsize=N]
    redis+unix://[[user]:password@]/path/to/redis.sock[?db=N][&poolsize=N]

The port defaults to 6379 and the database to 0.  The user name and the
password are percent-decoded.
"""

import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import parse_qsl, unquote, urlsplit

DEFAULT_PORT = 6379
DEFAULT_POOLSIZE = 4
MAX_POOLSIZE = 64
MAX_DB = 65535


@dataclass(frozen=True)
class RedisLocation:
    """
    Where a Redis server is and how to talk to it.

    Exactly one of C{host} (with C{port}) and C{path} is set.
    """

    host: Optional[str] = None
    port: int = DEFAULT_PORT
    path: Optional[str] = None
    db: int = 0
    username: Optional[str] = None
    password: Optional[str] = None
    poolsize: int = DEFAULT_POOLSIZE

    def describe(self) -> str:
        """
        Say where the server is, without the credentials, for messages.
        """
        if self.path is not None:
            return f"redis+unix://{self.path}?db={self.db}"
        host = self.host if ":" not in (self.host or "") else f"[{self.host}]"
        return f"redis://{host}:{self.port}/{self.db}"


_DIGITS = re.compile("[0-9]{1,9}")


def _integer(text: str, what: str, low: int, high: int) -> int:
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"{what} must be a whole number, not {text!r}")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{what} must be between {low} and {high}")
    return value


def parseURI(uri: str) -> RedisLocation:
    """
    Parse a C{redis://} or C{redis+unix://} URI.

    @raise ValueError: with a one-line reason when the URI is not one.
    """
    if not isinstance(uri, str):
        raise ValueError("the storage URI must be text")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in uri):
        raise ValueError("the Redis URI must not contain spaces or controls")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"malformed Redis URI: {e}") from None
    if parts.scheme not in ("redis", "redis+unix"):
        raise ValueError(
            f"unknown scheme {parts.scheme!r}: use redis:// or redis+unix://"
        )
    if parts.fragment:
        raise ValueError("a Redis URI has no #fragment")

    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password == "":
        password = None
    if username and password is None:
        raise ValueError("a user name needs a password, as user:password@")

    query: dict[str, str] = {}
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        if parts.query:
            raise ValueError(f"malformed query {parts.query!r}") from None
        pairs = []
    for key, value in pairs:
        if key in query:
            raise ValueError(f"query parameter {key!r} is given twice")
        query[key] = value

    allowed = {"poolsize"} | ({"db"} if parts.scheme == "redis+unix" else set())
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise ValueError(
            f"unknown query parameter {unknown[0]!r} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
    poolsize = DEFAULT_POOLSIZE
    if "poolsize" in query:
        poolsize = _integer(query["poolsize"], "poolsize", 1, MAX_POOLSIZE)

    if parts.scheme == "redis":
        host = parts.hostname
        if not host:
            raise ValueError("a redis:// URI needs a host, as redis://host:port/db")
        db = 0
        path = parts.path
        if path not in ("", "/"):
            db = _integer(path[1:], "the database number", 0, MAX_DB)
        if port is None:
            port = DEFAULT_PORT
        if port == 0:
            raise ValueError("the Redis port must not be 0")
        return RedisLocation(
            host=host,
            port=port,
            db=db,
            username=username,
            password=password,
            poolsize=poolsize,
        )

    # redis+unix
    if parts.hostname or port is not None:
        raise ValueError(
            "a redis+unix:// URI has no host: use redis+unix:///path/to.sock"
        )
    path = unquote(parts.path)
    if not path.startswith("/") or path == "/":
        raise ValueError("a redis+unix:// URI needs an absolute socket path")
    db = 0
    if "db" in query:
        db = _integer(query["db"], "the database number", 0, MAX_DB)
    return RedisLocation(
        path=path,
        db=db,
        username=username,
        password=password,
        poolsize=poolsize,
    )


def checkURI(uri: str) -> None:
    """
    Check a Redis storage URI without connecting or importing txredisapi.

    @raise ValueError: with a one-line reason if the URI is invalid.
    """
    parseURI(uri)
