"""
The typed results of the client, and the messages it posts.

Each result is a frozen dataclass built from the server's JSON by a
C{fromJSON} class method, which raises L{BadResponse} when the document does
not have the expected shape.  The results that the C{marconi} command
prints have a C{toJSON} method that gives the document back, with the API's
names.
"""

import functools
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, Optional, Sequence, TypeVar
from urllib.parse import parse_qs, urlsplit

from marconi.client.errors import BadResponse

T = TypeVar("T")

#: Compact JSON text: how the client writes request bodies, and how the
#: C{marconi} command prints message bodies.
compactJSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _get(doc: Any, key: str, kind: Any, optional: bool = False) -> Any:
    if not isinstance(doc, dict):
        raise BadResponse(f"expected a JSON object, got {type(doc).__name__}")
    if key not in doc or doc[key] is None:
        if optional:
            return None
        raise BadResponse(f"the server's answer lacks {key!r}")
    value = doc[key]
    if kind is int and isinstance(value, bool):
        raise BadResponse(f"{key!r} is not an integer")
    if not isinstance(value, kind):
        raise BadResponse(f"{key!r} has an unexpected type")
    return value


def _query(href: str, name: str) -> Optional[str]:
    values = parse_qs(urlsplit(href).query).get(name)
    return values[-1] if values else None


@dataclass(frozen=True)
class OutgoingMessage:
    """
    A message to post.

    @ivar body: any JSON value.
    @ivar ttl: seconds it lives; the queue's default when L{None}.
    @ivar delay: seconds before it can be listed or claimed.
    @ivar tags: tags for tag-filtered listing, claiming and popping.
    @ivar signature: the producer's signature, for a queue that requires
        signed posts (see L{marconi.client.signing.signMessage}).
    """

    body: Any
    ttl: Optional[int] = None
    delay: Optional[int] = None
    tags: Sequence[str] = ()
    signature: Optional[dict] = None

    def toJSON(self) -> dict:
        doc: dict = {"body": self.body}
        if self.ttl is not None:
            doc["ttl"] = self.ttl
        if self.delay is not None:
            doc["delay"] = self.delay
        if self.tags:
            doc["tags"] = list(self.tags)
        if self.signature is not None:
            doc["signature"] = self.signature
        return doc

    @classmethod
    def fromJSON(cls, doc: Any) -> "OutgoingMessage":
        """
        Read a message object (C{{"body": ..., "ttl": ..., "tags": [...]}})
        as a user wrote it, raising L{ValueError} if it is not one.
        """
        if not isinstance(doc, dict) or "body" not in doc:
            raise ValueError('a message must be an object with a "body"')
        unknown = set(doc) - {"body", "ttl", "delay", "tags"}
        if unknown:
            raise ValueError(f"unknown message fields: {', '.join(sorted(unknown))}")
        return cls(
            body=doc["body"],
            ttl=doc.get("ttl"),
            delay=doc.get("delay"),
            tags=tuple(doc.get("tags") or ()),
        )


@dataclass(frozen=True)
class Queue:
    """
    A queue as listed; C{metadata} only when the listing was detailed.
    """

    name: str
    href: str
    metadata: Optional[dict] = None

    @classmethod
    def fromJSON(cls, doc: Any) -> "Queue":
        return cls(
            name=_get(doc, "name", str),
            href=_get(doc, "href", str),
            metadata=_get(doc, "metadata", dict, optional=True),
        )


@dataclass(frozen=True)
class Message:
    """
    A message as the server shows it.

    @ivar age: seconds since it was posted, when it was read.
    @ivar claimId: the claim it was read through (from a claim, or the
        C{claim_id} of its href), else L{None}.
    @ivar claimCount: how many claims took it; only popped messages say.
    """

    id: str
    ttl: int
    age: int
    body: Any
    checksum: Optional[str] = None
    href: Optional[str] = None
    tags: tuple[str, ...] = ()
    claimId: Optional[str] = None
    claimCount: Optional[int] = None
    #: The node's signature, from a queue with signing keys (see
    #: L{marconi.client.signing.verifyMessage}).
    signature: Optional[dict] = None

    @classmethod
    def fromJSON(cls, doc: Any) -> "Message":
        if not isinstance(doc, dict) or "body" not in doc:
            raise BadResponse("a message in the server's answer lacks 'body'")
        href = _get(doc, "href", str, optional=True)
        claimId = _get(doc, "claim_id", str, optional=True)
        if claimId is None and href is not None:
            claimId = _query(href, "claim_id")
        tags = _get(doc, "tags", list, optional=True) or []
        return cls(
            id=_get(doc, "id", str),
            ttl=_get(doc, "ttl", int),
            age=_get(doc, "age", int),
            body=doc["body"],
            checksum=_get(doc, "checksum", str, optional=True),
            href=href,
            tags=tuple(str(t) for t in tags),
            claimId=claimId,
            claimCount=_get(doc, "claim_count", int, optional=True),
            signature=_get(doc, "signature", dict, optional=True),
        )

    def toJSON(self) -> dict:
        doc: dict = {"id": self.id, "ttl": self.ttl, "age": self.age, "body": self.body}
        if self.href is not None:
            doc["href"] = self.href
        if self.checksum is not None:
            doc["checksum"] = self.checksum
        doc["tags"] = list(self.tags)
        if self.claimId is not None:
            doc["claim_id"] = self.claimId
        if self.claimCount is not None:
            doc["claim_count"] = self.claimCount
        if self.signature is not None:
            doc["signature"] = self.signature
        return doc


@dataclass(frozen=True)
class Page(Generic[T]):
    """
    One page of a listing.

    @ivar next: the href of the next page (the C{links} entry with
        C{rel=next}), or L{None} on the last page.
    @ivar count: the total, when the listing was asked to count.
    """

    items: list[T]
    next: Optional[str] = None
    count: Optional[int] = None

    @property
    def nextMarker(self) -> Optional[str]:
        """
        The marker the next page starts after.
        """
        return None if self.next is None else _query(self.next, "marker")


def nextLink(doc: Any) -> Optional[str]:
    links = _get(doc, "links", list, optional=True) or []
    for link in links:
        if isinstance(link, dict) and link.get("rel") == "next":
            href = link.get("href")
            if isinstance(href, str):
                return href
    return None


@dataclass(frozen=True)
class Claim:
    """
    A claim and the messages it holds.

    @ivar ttl: seconds the claim lasts (L{None} when the server's default
        was used and not read back).
    @ivar grace: seconds its messages' lives were extended by, if known.
    """

    id: str
    href: str
    messages: tuple[Message, ...]
    ttl: Optional[int] = None
    grace: Optional[int] = None
    age: int = 0

    @classmethod
    def fromJSON(cls, doc: Any) -> "Claim":
        return cls(
            id=_get(doc, "id", str),
            href=_get(doc, "href", str),
            messages=tuple(Message.fromJSON(m) for m in _get(doc, "messages", list)),
            ttl=_get(doc, "ttl", int, optional=True),
            grace=_get(doc, "grace", int, optional=True),
            age=_get(doc, "age", int, optional=True) or 0,
        )

    def toJSON(self) -> dict:
        return {
            "id": self.id,
            "href": self.href,
            "ttl": self.ttl,
            "grace": self.grace,
            "messages": [m.toJSON() for m in self.messages],
        }


@dataclass(frozen=True)
class MessageRef:
    """
    The oldest or newest message of a queue, in its statistics.
    """

    id: str
    href: str
    age: int
    created: str

    @classmethod
    def fromJSON(cls, doc: Any) -> "MessageRef":
        return cls(
            id=_get(doc, "id", str),
            href=_get(doc, "href", str),
            age=_get(doc, "age", int),
            created=_get(doc, "created", str),
        )


@dataclass(frozen=True)
class QueueStats:
    """
    How many messages a queue holds, by state.
    """

    free: int
    claimed: int
    total: int
    delayed: int = 0
    oldest: Optional[MessageRef] = None
    newest: Optional[MessageRef] = None

    @classmethod
    def fromJSON(cls, doc: Any) -> "QueueStats":
        counts = _get(doc, "messages", dict)
        oldest = _get(counts, "oldest", dict, optional=True)
        newest = _get(counts, "newest", dict, optional=True)
        return cls(
            free=_get(counts, "free", int),
            claimed=_get(counts, "claimed", int),
            total=_get(counts, "total", int),
            delayed=_get(counts, "delayed", int, optional=True) or 0,
            oldest=None if oldest is None else MessageRef.fromJSON(oldest),
            newest=None if newest is None else MessageRef.fromJSON(newest),
        )

    def toJSON(self) -> dict:
        counts = {
            name: getattr(self, name)
            for name in ("free", "claimed", "delayed", "total")
        }
        for name in ("oldest", "newest"):
            ref = getattr(self, name)
            if ref is not None:
                counts[name] = asdict(ref)  # id, href, age, created: the API's names
        return {"messages": counts}


@dataclass(frozen=True)
class Health:
    """
    The node's report on itself (C{GET /v2/health}).

    @ivar operations: the C{operation_status} document, as sent.
    """

    storageReachable: bool
    operations: dict = field(default_factory=dict)
    error: Optional[str] = None
    cluster: Optional[dict] = None

    @property
    def ok(self) -> bool:
        return self.storageReachable

    @classmethod
    def fromJSON(cls, doc: Any) -> "Health":
        return cls(
            storageReachable=_get(doc, "storage_reachable", bool),
            operations=_get(doc, "operation_status", dict, optional=True) or {},
            error=_get(doc, "error", str, optional=True),
            cluster=_get(doc, "cluster", dict, optional=True),
        )

    def nodeStates(self) -> dict:
        """
        In a cluster, each node's state as the answering node sees it
        (C{self}, C{up}, C{suspect}, C{down}...), by name; empty for a node
        on its own.
        """
        nodes = (self.cluster or {}).get("nodes")
        if not isinstance(nodes, list):
            return {}
        return {
            n["name"]: n.get("state")
            for n in nodes
            if isinstance(n, dict) and isinstance(n.get("name"), str)
        }

    def toJSON(self) -> dict:
        doc: dict = {
            "storage_reachable": self.storageReachable,
            "operation_status": self.operations,
        }
        if self.error is not None:
            doc["error"] = self.error
        if self.cluster is not None:
            doc["cluster"] = self.cluster
        return doc


@dataclass(frozen=True)
class RingNode:
    """
    A node of a published ring: its name, its weight, and the base URL
    clients reach it at (L{None} when clients cannot reach it directly).
    """

    name: str
    weight: int
    url: Optional[str]


@dataclass(frozen=True)
class RingInfo:
    """
    The ring a server publishes (C{GET /v2/ring}): which node owns which
    queue.  A node on its own publishes no ring (C{version} L{None}):
    everything goes to the URL the client was given.

    @ivar document: the document as sent, from which the ring is rebuilt
        exactly as the servers build it.
    @ivar node: the name of the node that answered, in a cluster.
    """

    version: Optional[str]
    scheme: Optional[str]
    nodes: tuple
    document: dict = field(repr=False, compare=False)
    node: Optional[str] = None

    @classmethod
    def fromJSON(cls, doc: Any) -> "RingInfo":
        version = _get(doc, "version", str, optional=True)
        nodes = []
        for entry in _get(doc, "nodes", list):
            url = _get(entry, "url", str, optional=True)
            nodes.append(
                RingNode(
                    _get(entry, "name", str),
                    _get(entry, "weight", int, optional=True) or 1,
                    url.rstrip("/") if url else None,
                )
            )
        info = cls(
            version=version,
            scheme=_get(doc, "scheme", str, optional=True),
            nodes=tuple(nodes),
            document=doc,
            node=_get(doc, "node", str, optional=True),
        )
        if version is not None:
            info.ring  # noqa: B018 -- checks the description now
        return info

    @functools.cached_property
    def ring(self) -> Any:
        """
        The L{marconi.cluster.ring.Ring} described, or L{None} when there
        is none.

        @raise BadResponse: the description does not build the ring it
            names.
        """
        if self.version is None:
            return None
        from marconi.cluster.ring import Ring

        try:
            return Ring.fromDescription(self.document)
        except ValueError as e:
            raise BadResponse(f"the server's ring is not usable: {e}") from None

    def owner(self, project: str, queue: str) -> Optional[RingNode]:
        """
        The node that owns the queue, or L{None} without a ring.
        """
        if self.ring is None:
            return None
        from marconi.cluster.ring import key

        name = self.ring.owner(key(project, queue))
        return next(n for n in self.nodes if n.name == name)

    def shares(self) -> dict:
        """
        The fraction of the queues each node owns, by name (computed from
        the ring, exactly); empty without a ring.
        """
        return {} if self.ring is None else self.ring.shares()

    def toJSON(self) -> dict:
        return dict(self.document)
