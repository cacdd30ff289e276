"""
Parsing of the Redis storage URIs.

This module does not import txredisapi: the plugin descriptor checks a
C{--storage} URI with L{checkURI} while the options are parsed, long before
(and even without) the driver itself being loaded.

Accepted forms::

    redis://[[user]:password@]host[:port][/db][?poolsize=N]
    redis+unix://[[user]:password@]/path/to/redis.sock[?db=N][&poolsize=N]
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/MASTER[/db]

The port defaults to 6379 (26379 for a Sentinel) and the database to 0.
The user name and the password are percent-decoded; with Sentinel they are
those of the Redis servers (the Sentinels are asked without credentials).

Every form also takes C{replicas=N} (default 1) and C{replica_timeout=MS}
(default 1000): what the C{replicated} durability waits for, with Redis'
C{WAIT N MS} after each change.  Giving C{replicas} (or using Sentinel)
says that the server has replicas: only then may a request ask for
C{safety=replicated}.
"""

import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import parse_qsl, unquote, urlsplit

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_REPLICAS = 1
DEFAULT_REPLICA_TIMEOUT = 1000
MAX_REPLICAS = 64
#: Below the store's reply timeout (10 s), which also bounds C{WAIT}.
MAX_REPLICA_TIMEOUT = 5000
DEFAULT_POOLSIZE = 4
MAX_POOLSIZE = 64
MAX_DB = 65535


@dataclass(frozen=True)
class RedisLocation:
    """
    Where a Redis server is and how to talk to it.

    Exactly one of C{host} (with C{port}), C{path} and C{master} (with
    C{sentinels}) is set.

    @ivar master: the name the Sentinels know the primary by.
    @ivar sentinels: C{(host, port)} of each Sentinel, in the order given.
    @ivar replicas: how many replicas C{replicated} durability waits for.
    @ivar replicaTimeout: for how long, in milliseconds.
    @ivar replicasNamed: whether the URI gave C{replicas}.
    """

    host: Optional[str] = None
    port: int = DEFAULT_PORT
    path: Optional[str] = None
    db: int = 0
    username: Optional[str] = None
    password: Optional[str] = None
    poolsize: int = DEFAULT_POOLSIZE
    master: Optional[str] = None
    sentinels: tuple[tuple[str, int], ...] = ()
    replicas: int = DEFAULT_REPLICAS
    replicaTimeout: int = DEFAULT_REPLICA_TIMEOUT
    replicasNamed: bool = False

    def describe(self) -> str:
        """
        Say where the server is, without the credentials, for messages.
        """
        if self.master is not None:
            hosts = ",".join(_hostPort(h, p) for h, p in self.sentinels)
            return f"redis+sentinel://{hosts}/{self.master}/{self.db}"
        if self.path is not None:
            return f"redis+unix://{self.path}?db={self.db}"
        return f"redis://{_hostPort(self.host or '', self.port)}/{self.db}"


def _hostPort(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_DIGITS = re.compile("[0-9]{1,9}")


def _integer(text: str, what: str, low: int, high: int) -> int:
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"{what} must be a whole number, not {text!r}")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{what} must be between {low} and {high}")
    return value


_SENTINEL_HOST = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([^\[\]:/@,]+))(?::([0-9]*))?")
_MASTER_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


def _sentinelHosts(netloc: str) -> tuple[tuple[str, int], ...]:
    """
    The C{host[:port]} list of a C{redis+sentinel://} URI.
    """
    hosts = []
    for item in netloc.split(","):
        match = _SENTINEL_HOST.fullmatch(item)
        if match is None:
            raise ValueError(f"malformed Sentinel address {item!r}: use host:port")
        host = match.group(1) or match.group(2)
        port = DEFAULT_SENTINEL_PORT
        if match.group(3) is not None:
            port = _integer(match.group(3), "a Sentinel port", 1, 65535)
        if (host, port) in hosts:
            raise ValueError(f"Sentinel {_hostPort(host, port)} is given twice")
        hosts.append((host, port))
    return tuple(hosts)


def _splitSentinel(uri: str) -> tuple:
    """
    Split a C{redis+sentinel://} URI into its parts as L{urlsplit} would,
    with the comma-separated hosts (which L{urlsplit} cannot read) taken
    apart here: C{(hosts, username, password, path, query, fragment)}.
    """
    rest = uri[len("redis+sentinel://") :]
    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        name, colon, secret = userinfo.partition(":")
        username = name or None
        password = secret if colon else None
    if not hostlist:
        raise ValueError(
            "a redis+sentinel:// URI needs the Sentinels, as "
            "redis+sentinel://host:port,host:port/MASTERNAME/db"
        )
    return _sentinelHosts(hostlist), username, password, slash + path, query, fragment


def parseURI(uri: str) -> RedisLocation:
    """
    Parse a C{redis://}, C{redis+unix://} or C{redis+sentinel://} URI.

    @raise ValueError: with a one-line reason when the URI is not one.
    """
    if not isinstance(uri, str):
        raise ValueError("the storage URI must be text")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in uri):
        raise ValueError("the Redis URI must not contain spaces or controls")
    if uri.lower().startswith("redis+sentinel://"):
        return _parseSentinel(uri)
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

    username, password = _credentials(parts.username, parts.password)
    query = _query(parts.query, {"db"} if parts.scheme == "redis+unix" else set())
    common = _common(query, username, password)

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
        return RedisLocation(host=host, port=port, db=db, **common)

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
    return RedisLocation(path=path, db=db, **common)


def _parseSentinel(uri: str) -> RedisLocation:
    sentinels, username, password, path, rawQuery, fragment = _splitSentinel(uri)
    if fragment:
        raise ValueError("a Redis URI has no #fragment")
    username, password = _credentials(username, password)
    common = _common(_query(rawQuery, set()), username, password)
    segments = path.split("/")[1:] if path else []
    if not segments or not segments[0]:
        raise ValueError(
            "a redis+sentinel:// URI names the primary, as "
            "redis+sentinel://host:port/MASTERNAME/db"
        )
    if len(segments) > 2:
        raise ValueError(f"too many path segments in {path!r}: use /MASTERNAME/db")
    master = unquote(segments[0])
    if not _MASTER_NAME.fullmatch(master):
        raise ValueError(
            f"the primary's name {master!r} must be 1-128 letters, digits, "
            "'.', '_' or '-'"
        )
    db = 0
    if len(segments) == 2 and segments[1]:
        db = _integer(segments[1], "the database number", 0, MAX_DB)
    return RedisLocation(master=master, sentinels=sentinels, db=db, **common)


def _credentials(
    username: Optional[str], password: Optional[str]
) -> tuple[Optional[str], Optional[str]]:
    user = unquote(username) if username else None
    secret = unquote(password) if password else None
    if user and secret is None:
        raise ValueError("a user name needs a password, as user:password@")
    return user, secret


def _query(raw: str, extra: set) -> dict[str, str]:
    """
    The query parameters, each at most once and each one we know.
    """
    query: dict[str, str] = {}
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        if raw:
            raise ValueError(f"malformed query {raw!r}") from None
        pairs = []
    for key, value in pairs:
        if key in query:
            raise ValueError(f"query parameter {key!r} is given twice")
        query[key] = value
    allowed = {"poolsize", "replicas", "replica_timeout"} | extra
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise ValueError(
            f"unknown query parameter {unknown[0]!r} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
    return query


def _common(
    query: dict[str, str], username: Optional[str], password: Optional[str]
) -> dict:
    """
    The settings every form of the URI shares.
    """
    common: dict = {"username": username, "password": password}
    for key, name, low, high in (
        ("poolsize", "poolsize", 1, MAX_POOLSIZE),
        ("replicas", "replicas", 1, MAX_REPLICAS),
        ("replica_timeout", "replicaTimeout", 1, MAX_REPLICA_TIMEOUT),
    ):
        if key in query:
            common[name] = _integer(query[key], key, low, high)
    common["replicasNamed"] = "replicas" in query
    return common


def checkURI(uri: str) -> None:
    """
    Check a Redis storage URI without connecting or importing txredisapi.

    @raise ValueError: with a one-line reason if the URI is invalid.
    """
    parseURI(uri)
