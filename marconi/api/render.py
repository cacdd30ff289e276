"""
JSON documents of the API.

Message bodies are stored as JSON text and are embedded as they are, never
parsed again; everything else goes through L{json.dumps}.
"""

import json
from datetime import datetime, timezone
from typing import Callable, Iterable, Optional

from marconi.core.models import Claim, Message, QueueStats

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def message(
    m: Message,
    queueHref: str,
    now: float,
    claimId: Optional[str] = None,
    checksum: bool = True,
    signer: Optional[Callable[[Message], str]] = None,
) -> str:
    """
    One message as the API shows it.

    @param queueHref: the href of the message's queue.
    @param claimId: the claim the caller holds, added to the href.
    @param checksum: whether to show the body's checksum.
    @param signer: renders the message's C{signature} (JSON text), for a
        queue with signing keys.
    """
    href = f"{queueHref}/messages/{m.id}"
    if claimId is not None:
        href += f"?claim_id={claimId}"
    return _message(m, _dumps(href), now, checksum, signer)


def _message(
    m: Message,
    hrefText: str,
    now: float,
    checksum: bool,
    signer: Optional[Callable[[Message], str]],
) -> str:
    """
    L{message}, given the JSON text of the message's href.
    """
    extra = ""
    if m.tags:
        extra = ',"tags":' + _dumps(list(m.tags))
    if checksum:
        extra = ',"checksum":"%s"' % m.checksum + extra
    if signer is not None:
        extra += ',"signature":' + signer(m)
    return '{"id":"%s","href":%s,"ttl":%d,"age":%d,"body":%s%s}' % (
        m.id,
        hrefText,
        m.ttl,
        m.age(now),
        m.body,
        extra,
    )


def messages(
    ms: Iterable[Message],
    queueHref: str,
    now: float,
    claimId: Optional[str] = None,
    checksum: bool = True,
    signer: Optional[Callable[[Message], str]] = None,
) -> list:
    """
    Messages of one queue as L{message} shows each, for a listing or a
    claim: the JSON text of the hrefs' common parts is made once, and the
    href of a message whose id needs no escape is written from it.
    """
    # JSON escapes a string character by character: an href's text is
    # the text of its parts.
    hrefHead = _dumps(queueHref + "/messages/")[:-1]
    hrefTail = '"' if claimId is None else _dumps("?claim_id=" + claimId)[1:]
    return [
        _message(m, hrefHead + m.id + hrefTail, now, checksum, signer)
        if m.id.isalnum()
        else message(m, queueHref, now, claimId, checksum, signer)
        for m in ms
    ]


def popped(
    m: Message,
    now: float,
    claimId: str,
    checksum: bool = True,
    signer: Optional[Callable[[Message], str]] = None,
) -> str:
    """
    A popped message, naming the claim C{claimId} that took it out.
    """
    return (
        '{"id":"%s","ttl":%d,"age":%d,"body":%s%s,'
        '"claim_id":%s,"claim_count":%d%s%s}'
        % (
            m.id,
            m.ttl,
            m.age(now),
            m.body,
            ',"checksum":"%s"' % m.checksum if checksum else "",
            _dumps(claimId),
            m.claimCount,
            (',"tags":' + _dumps(list(m.tags))) if m.tags else "",
            (',"signature":' + signer(m)) if signer is not None else "",
        )
    )


def messageList(items: Iterable[str], links: Optional[list] = None) -> bytes:
    text = '{"messages":[' + ",".join(items) + "]"
    if links is not None:
        text += ',"links":' + _links(links)
    return (text + "}").encode("utf-8")


def _links(links: list) -> str:
    """
    C{links} as JSON, as L{_dumps} writes it; a list of the one link a
    listing has is written directly.
    """
    if len(links) == 1 and type(links[0]) is dict:
        link = links[0]
        rel = link.get("rel")
        href = link.get("href")
        if (
            isinstance(rel, str)
            and isinstance(href, str)
            and tuple(link) == ("rel", "href")
        ):
            return '[{"rel":' + _dumps(rel) + ',"href":' + _dumps(href) + "}]"
    return _dumps(links)


def claim(
    c: Claim,
    queueHref: str,
    now: float,
    identity: bool = True,
    checksum: bool = True,
    signer: Optional[Callable[[Message], str]] = None,
) -> bytes:
    """
    A claim and its messages; C{identity} adds its C{id} and C{grace}.
    """
    fields: dict = {"href": f"{queueHref}/claims/{c.id}", "ttl": c.ttl}
    if identity:
        fields = {"id": c.id, **fields, "grace": c.grace}
    fields["age"] = c.age(now)
    head = _dumps(fields)
    items = ",".join(
        message(m, queueHref, now, c.id, checksum, signer) for m in c.messages
    )
    return (head[:-1] + ',"messages":[' + items + "]}").encode("utf-8")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def stats(
    s: QueueStats, queueHref: str, now: float, delayed: bool = True, ids: bool = True
) -> bytes:
    """
    A queue's stats; C{delayed} counts delayed messages apart, C{ids} names
    the oldest and newest messages by id besides their href.
    """
    counts: dict = {"free": s.free, "claimed": s.claimed}
    if delayed:
        counts["delayed"] = s.delayed
    counts["total"] = s.total
    for name, m in (("oldest", s.oldest), ("newest", s.newest)):
        if m is not None:
            entry: dict = {"id": m.id} if ids else {}
            entry.update(
                href=f"{queueHref}/messages/{m.id}",
                ttl=m.ttl,
                age=m.age(now),
                created=_iso(m.created),
                claim_id=m.claimId if m.claimedAt(now) else None,
                claim_count=m.claimCount,
            )
            counts[name] = _dumps(entry)[:-1] + ',"body":' + m.body + "}"
    return _withRaw({"messages": counts})


def _withRaw(doc: dict) -> bytes:
    """
    C{doc} as JSON, where the stats entries are already JSON text.
    """
    counts = doc["messages"]
    plain = {k: v for k, v in counts.items() if not isinstance(v, str)}
    text = _dumps(plain)[:-1]
    for name in ("oldest", "newest"):
        if name in counts:
            text += f',"{name}":{counts[name]}'
    return ('{"messages":' + text + "}}").encode("utf-8")


def document(value: object) -> bytes:
    return _dumps(value).encode("utf-8")
