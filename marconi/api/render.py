"""
JSON documents of the API.

Message bodies are stored as JSON text and are embedded as they are, never
parsed again; everything else goes through L{json.dumps}.
"""

import json
from datetime import datetime, timezone
from typing import Iterable, Optional

from marconi.core.models import Claim, Message, QueueStats

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def message(
    m: Message, queueHref: str, now: float, claimId: Optional[str] = None
) -> str:
    """
    One message as the API shows it.

    @param queueHref: the href of the message's queue.
    @param claimId: the claim the caller holds, added to the href.
    """
    href = f"{queueHref}/messages/{m.id}"
    if claimId is not None:
        href += f"?claim_id={claimId}"
    extra = ""
    if m.tags:
        extra = ',"tags":' + _dumps(list(m.tags))
    return '{"id":"%s","href":%s,"ttl":%d,"age":%d,"body":%s,"checksum":"%s"%s}' % (
        m.id,
        _dumps(href),
        m.ttl,
        m.age(now),
        m.body,
        m.checksum,
        extra,
    )


def popped(m: Message, now: float) -> str:
    return (
        '{"id":"%s","ttl":%d,"age":%d,"body":%s,"checksum":"%s",'
        '"claim_id":null,"claim_count":%d%s}'
        % (
            m.id,
            m.ttl,
            m.age(now),
            m.body,
            m.checksum,
            m.claimCount,
            (',"tags":' + _dumps(list(m.tags))) if m.tags else "",
        )
    )


def messageList(items: Iterable[str], links: Optional[list] = None) -> bytes:
    text = '{"messages":[' + ",".join(items) + "]"
    if links is not None:
        text += ',"links":' + _dumps(links)
    return (text + "}").encode("utf-8")


def claim(c: Claim, queueHref: str, now: float) -> bytes:
    head = _dumps(
        {
            "id": c.id,
            "href": f"{queueHref}/claims/{c.id}",
            "ttl": c.ttl,
            "grace": c.grace,
            "age": c.age(now),
        }
    )
    items = ",".join(message(m, queueHref, now, c.id) for m in c.messages)
    return (head[:-1] + ',"messages":[' + items + "]}").encode("utf-8")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def stats(s: QueueStats, queueHref: str, now: float, delayed: bool = True) -> bytes:
    """
    A queue's stats; C{delayed} counts delayed messages apart.
    """
    counts: dict = {"free": s.free, "claimed": s.claimed}
    if delayed:
        counts["delayed"] = s.delayed
    counts["total"] = s.total
    for name, m in (("oldest", s.oldest), ("newest", s.newest)):
        if m is not None:
            counts[name] = {
                "id": m.id,
                "href": f"{queueHref}/messages/{m.id}",
                "age": m.age(now),
                "created": _iso(m.created),
            }
    return document({"messages": counts})


def document(value: object) -> bytes:
    return _dumps(value).encode("utf-8")
