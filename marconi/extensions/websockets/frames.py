"""
The JSON frames of Zaqar v2's websocket API.

A request::

    {"action": "message_post",
     "headers": {"Client-ID": "...", "X-Project-ID": "...", ...},
     "body": {"queue_name": "work", "messages": [...]}}

Its answer echoes the request (without its credentials) and carries the
status among its headers::

    {"request": {"action": ..., "headers": ..., "body": ..., "api": "v2"},
     "headers": {"status": 201},
     "body": {"message_ids": [...]}}

A subscription ended by the server (its credentials are no longer
valid) is told with::

    {"Message_Type": "SubscriptionEnded", "queue_name": "work",
     "subscription_id": "...", "status": 401, "title": ..., "description": ...}

A message pushed to a subscribed socket is the message as the HTTP API
shows it, with its queue::

    {"Message_Type": "Notification", "queue_name": "work",
     "id": "...", "href": "...", "ttl": 300, "age": 0, "body": ..., ...}
"""

import json
from typing import Any, Callable, Optional

from marconi.api import render
from marconi.core.models import Message

# Request headers never echoed back.
_SECRET = ("x-auth-token", "url-signature")

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def answer(request: Any, status: int, body: Any) -> bytes:
    """
    The answer to C{request} (the parsed request frame, or L{None} when it
    could not be parsed).
    """
    echo: dict = {"action": None, "headers": {}, "body": {}, "api": "v2"}
    if isinstance(request, dict):
        echo["action"] = request.get("action")
        headers = request.get("headers")
        if isinstance(headers, dict):
            echo["headers"] = {
                k: v
                for k, v in headers.items()
                if not (isinstance(k, str) and k.lower() in _SECRET)
            }
        echo["body"] = request.get("body", {})
    return _dumps(
        {"request": echo, "headers": {"status": status}, "body": body}
    ).encode("utf-8")


def error(title: str, description: str) -> dict:
    """
    An error body: Zaqar's C{error} and Marconi's C{title} and
    C{description}.
    """
    return {"error": description, "title": title, "description": description}


def message(
    m: Message,
    queue: str,
    now: float,
    claimId: Optional[str] = None,
    signer: Optional[Callable] = None,
) -> dict:
    """
    One message as the v2 HTTP API shows it, with the claim holding it for
    the caller (L{None} for none), as Zaqar's websocket API adds it.
    """
    shown = json.loads(
        render.message(m, f"/v2/queues/{queue}", now, claimId, True, signer)
    )
    shown["claim_id"] = claimId
    return shown


def notification(
    m: Message, queue: str, now: float, signer: Optional[Callable] = None
) -> bytes:
    """
    The frame pushing a new message to the sockets subscribed to its queue.
    """
    shown = {"Message_Type": "Notification", "queue_name": queue}
    shown.update(
        json.loads(render.message(m, f"/v2/queues/{queue}", now, None, True, signer))
    )
    return _dumps(shown).encode("utf-8")


def subscriptionEnded(
    queue: str, subscriptionId: str, status: int, title: str, description: str
) -> bytes:
    """
    The frame telling a socket that the server ended one of its
    subscriptions, and why.
    """
    return _dumps(
        {
            "Message_Type": "SubscriptionEnded",
            "queue_name": queue,
            "subscription_id": subscriptionId,
            "status": status,
            "title": title,
            "description": description,
        }
    ).encode("utf-8")
