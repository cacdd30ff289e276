"""
The C{mongodb://} storage URI: checked and parsed without importing txmongo.

    mongodb://[user:password@]host[:port][,host2[:port]...]/dbname[?options]

The options Marconi understands (any other is refused, so a typo is not
silently ignored):

    - C{replicaSet=NAME}: connect only to members of this replica set.
    - C{w=N|majority}: write concern; Marconi's default is C{w=1}.
    - C{journal=true|false} (or C{j=...}): wait for the journal.
    - C{wtimeoutMS=N}: how long the server may wait for C{w}.
    - C{serverSelectionTimeoutMS=N}: how long an operation waits for a
      connection before it fails with a 503 (default 5000).
    - C{socketTimeoutMS=N}: how long one round trip may take (default 30000).
    - C{connectTimeoutMS=N}: TCP connect timeout (default 10000).
    - C{maxPoolSize=N}: number of connections (default 2).
    - C{authSource=DB}, C{authMechanism=NAME}: credentials' database and
      mechanism.
    - C{ttlIndexes=true|false}: Marconi's own; whether the server also
      removes expired messages and claims with TTL indexes (default true).
      See C{docs/storage-mongodb.rst}.
"""

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from marconi.core.text import parseBoolean

DEFAULT_PORT = 27017


@dataclass(frozen=True)
class MongoConfig:
    """
    Everything the MongoDB driver needs, parsed from its URI.

    @ivar hosts: C{(host, port)} pairs, in the order given.
    @ivar w: the write concern's C{w}: an L{int} or a tag such as
        C{"majority"}.
    @ivar ttlGrace: seconds a TTL index waits past a document's expiry
        before the server removes it, so a clock difference between the
        Marconi nodes and the server never removes a live message.
    """

    hosts: tuple[tuple[str, int], ...]
    database: str
    username: str | None = None
    password: str | None = None
    replicaSet: str | None = None
    w: int | str = 1
    journal: bool | None = None
    wtimeoutMS: int | None = None
    serverSelectionTimeout: float = 5.0
    socketTimeout: float = 30.0
    connectTimeout: float = 10.0
    poolSize: int = 2
    authSource: str | None = None
    authMechanism: str | None = None
    ttlIndexes: bool = True
    ttlGrace: int = 60
    reconnectMaxDelay: float = 5.0

    def clientURI(self) -> str:
        """
        The URI given to txmongo: hosts, database, credentials and the
        options txmongo reads from a URI; the write concern and timeouts are
        passed to it separately.
        """
        auth = ""
        if self.username is not None:
            auth = quote(self.username, safe="")
            if self.password is not None:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        hosts = ",".join(_formatHost(h, p) for h, p in self.hosts)
        options = []
        if self.replicaSet is not None:
            options.append("replicaSet=" + quote(self.replicaSet, safe=""))
        if self.authSource is not None:
            options.append("authSource=" + quote(self.authSource, safe=""))
        if self.authMechanism is not None:
            options.append("authMechanism=" + quote(self.authMechanism, safe=""))
        query = ("?" + "&".join(options)) if options else ""
        return f"mongodb://{auth}{hosts}/{quote(self.database, safe='')}{query}"

    def describe(self) -> str:
        """
        Where the store lives, for messages: hosts and database, no
        credentials.
        """
        hosts = ",".join(_formatHost(h, p) for h, p in self.hosts)
        return f"mongodb://{hosts}/{self.database}"


def _formatHost(host: str, port: int) -> str:
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


_FORBIDDEN_DB_CHARS = set('/\\. "$\0')


def _parseHost(text: str) -> tuple[str, int]:
    if not text:
        raise ValueError("empty host in the host list")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in host {text!r}")
        host = text[1:end]
        rest = text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad host {text!r}")
        portText = rest[1:] if rest else ""
    else:
        host, sep, portText = text.partition(":")
        if sep and not portText:
            raise ValueError(f"missing port after ':' in host {text!r}")
        if ":" in portText:
            raise ValueError(f"bad host {text!r} (put IPv6 addresses in [])")
    if not host:
        raise ValueError(f"empty host name in {text!r}")
    if not portText:
        return host, DEFAULT_PORT
    if not portText.isdigit() or not 0 < int(portText) < 65536:
        raise ValueError(f"bad port {portText!r} in host {text!r}")
    return host, int(portText)


def _positiveInt(name: str, value: str) -> int:
    if not value.isdigit() or int(value) <= 0:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def _boolean(name: str, value: str) -> bool:
    try:
        return parseBoolean(value)
    except ValueError:
        raise ValueError(f"{name} must be true or false, not {value!r}") from None


def parseURI(uri: str) -> MongoConfig:
    """
    Parse a C{mongodb://} storage URI.

    @raise ValueError: with a one-line reason if it is not a valid one.
    """
    if not isinstance(uri, str):
        raise ValueError("the storage URI must be a string")  # noqa: TRY004
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() != "mongodb":
        raise ValueError(
            "a MongoDB storage URI looks like mongodb://host[:port][,host2...]/dbname"
        )
    # urllib's urlsplit cannot take a host list: split by hand.
    netloc, slash, pathAndQuery = rest.partition("/")
    if not slash:
        raise ValueError("the MongoDB URI must name a database: mongodb://host/dbname")
    path, _, query = pathAndQuery.partition("?")
    if "#" in query or "#" in path:
        raise ValueError("a MongoDB URI has no fragment ('#')")

    username = password = None
    if "@" in netloc:
        credentials, _, netloc = netloc.rpartition("@")
        user, colon, secret = credentials.partition(":")
        username = unquote(user)
        password = unquote(secret) if colon else None
        if not username:
            raise ValueError("empty user name before '@'")
    if not netloc:
        raise ValueError("the MongoDB URI names no host")
    hosts = tuple(_parseHost(part) for part in netloc.split(","))

    database = unquote(path)
    if not database:
        raise ValueError("the MongoDB URI must name a database: mongodb://host/dbname")
    bad = sorted(set(database) & _FORBIDDEN_DB_CHARS)
    if bad:
        raise ValueError(f"the database name {database!r} may not contain {bad[0]!r}")
    if len(database.encode("utf-8")) > 63:
        raise ValueError("the database name is longer than 63 bytes")

    options: dict[str, Any] = {}
    seen: set[str] = set()
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"bad option string {query!r}") from None
    for key, value in pairs:
        lowered = key.lower()
        if lowered == "j":
            lowered = "journal"
        if lowered in seen:
            raise ValueError(f"option {key!r} is given twice")
        seen.add(lowered)
        if lowered == "replicaset":
            if not value:
                raise ValueError("replicaSet needs a name")
            options["replicaSet"] = value
        elif lowered == "w":
            if value.isdigit():
                options["w"] = int(value)
            elif value:
                options["w"] = value
            else:
                raise ValueError("w needs a value (a number or 'majority')")
        elif lowered == "journal":
            options["journal"] = _boolean(key, value)
        elif lowered == "wtimeoutms":
            options["wtimeoutMS"] = _positiveInt(key, value)
        elif lowered == "serverselectiontimeoutms":
            options["serverSelectionTimeout"] = _positiveInt(key, value) / 1000.0
        elif lowered == "sockettimeoutms":
            options["socketTimeout"] = _positiveInt(key, value) / 1000.0
        elif lowered == "connecttimeoutms":
            options["connectTimeout"] = _positiveInt(key, value) / 1000.0
        elif lowered == "maxpoolsize":
            options["poolSize"] = _positiveInt(key, value)
        elif lowered == "authsource":
            options["authSource"] = value
        elif lowered == "authmechanism":
            options["authMechanism"] = value
        elif lowered == "ttlindexes":
            options["ttlIndexes"] = _boolean(key, value)
        else:
            raise ValueError(f"unknown MongoDB URI option {key!r}")
    if options.get("w") == 0:
        raise ValueError("w=0 (unacknowledged writes) would lose messages; use w>=1")
    return MongoConfig(
        hosts=hosts,
        database=database,
        username=username,
        password=password,
        **options,
    )


def checkURI(uri: str) -> None:
    """
    Check a C{mongodb://} storage URI without touching the server.

    @raise ValueError: with a one-line reason if it is invalid.
    """
    parseURI(uri)
