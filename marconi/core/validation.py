"""
Validation of what clients send, against L{marconi.core.limits.Limits}.

Each function takes parsed values (JSON already decoded, query strings
already split) and either returns a clean value or raises
L{ValidationFailed} with a description a client can act on; a document of
the wrong shape (a missing field, a field of the wrong type) is the
L{InvalidBody} kind of it, as Zaqar tells them apart.
"""

import hashlib
import re
from json.encoder import encode_basestring_ascii
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional

from marconi.core.errors import (
    InvalidBody,
    InvalidQueueName,
    MissingHeader,
    MissingProject,
    PayloadTooLarge,
    ValidationFailed,
)
from marconi.core.jsontext import dumpBody, encoder
from marconi.core.limits import Limits
from marconi.core.models import NewMessage, makeNewMessage

# Each is matched against the whole value (fullmatch): "$" would also
# match before a trailing newline.
_QUEUE_NAME = re.compile(r"[a-zA-Z0-9_.-]+")
# Printable, no separators used by the API (comma lists, slashes in paths).
_TAG = re.compile(r"[^\x00-\x20\x7f,/]+")
_PROJECT = re.compile(r"[\x21-\x7e]+")
_CLIENT_ID = re.compile(r"[\x21-\x7e]+")

RESERVED_METADATA = (
    "_default_message_ttl",
    "_max_messages_post_size",
    "_default_message_delay",
    "_max_claim_count",
    "_dead_letter_queue",
    "_dead_letter_queue_messages_ttl",
    "_enable_encrypt_messages",
    "_flavor",
    "_retry_policy",
)

# Reserved settings of Zaqar that Marconi refuses rather than store
# without effect (null is accepted: it means unset).
_REFUSED_SETTINGS = {
    "_flavor": (
        "_flavor is not supported: Marconi has no flavors or pools; queues "
        "are placed on nodes by the cluster's ring."
    ),
    "_retry_policy": (
        "_retry_policy is not supported on this node: it is the retry "
        "policy of subscriptions, and there are no subscriptions here (the "
        "subscriptions extension is not enabled)."
    ),
}


def queueName(name: str, limits: Limits) -> str:
    if not name or len(name) > limits.maxQueueNameLength:
        raise InvalidQueueName(
            f"Queue names must be 1 to {limits.maxQueueNameLength} characters long."
        )
    if not _QUEUE_NAME.fullmatch(name):
        raise InvalidQueueName(
            "Queue names may only contain ASCII letters, digits, "
            "underscores, dashes and dots."
        )
    return name


def projectId(project: Optional[str], limits: Limits) -> str:
    if not project:
        raise MissingProject(
            "No project given: send an X-Project-ID header or use "
            "/v2/projects/{project_id}/..."
        )
    if len(project) > limits.maxProjectIdLength or not _PROJECT.fullmatch(project):
        raise ValidationFailed(
            f"Project ids must be 1 to {limits.maxProjectIdLength} printable "
            "ASCII characters without spaces."
        )
    return project


def clientId(value: Optional[str], limits: Limits) -> str:
    if not value:
        raise MissingHeader('The "Client-ID" header is required.')
    if len(value) > limits.maxClientIdLength or not _CLIENT_ID.fullmatch(value):
        raise ValidationFailed(
            f"Client-ID must be 1 to {limits.maxClientIdLength} printable "
            "ASCII characters without spaces (a UUID is recommended)."
        )
    return value


def integer(
    value: Any, name: str, low: int, high: int, kind: type = ValidationFailed
) -> int:
    """
    Check that C{value} is an integer (not a boolean, not a float) within
    C{[low, high]}.

    @param kind: the error raised when C{value} is not an integer (a
        field of a request document is L{InvalidBody}).
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise kind(f"{name} must be an integer.")
    if not low <= value <= high:
        raise ValidationFailed(f"{name} must be between {low} and {high}.")
    return value


def tags(value: Any, limits: Limits, maxCount: Optional[int] = None) -> tuple:
    """
    Check a list of tags; duplicates are dropped, order kept.
    """
    maxCount = limits.maxTagsPerMessage if maxCount is None else maxCount
    if not isinstance(value, list):
        raise ValidationFailed("tags must be a list of strings.")
    if len(value) > maxCount:
        raise ValidationFailed(f"At most {maxCount} tags are allowed.")
    seen: dict[str, None] = {}
    for tag in value:
        if not isinstance(tag, str):
            raise ValidationFailed("tags must be a list of strings.")
        if not 1 <= len(tag) <= limits.maxTagLength or not _TAG.fullmatch(tag):
            raise ValidationFailed(
                f"Each tag must be 1 to {limits.maxTagLength} printable "
                "characters without spaces, commas or slashes."
            )
        seen[tag] = None
    return tuple(seen)


def tagFilter(raw: Optional[str], limits: Limits) -> tuple:
    """
    Parse the C{tags} query parameter (comma-separated).
    """
    if raw is None or raw == "":
        return ()
    return tags(raw.split(","), limits, limits.maxTagsPerFilter)


_md5 = hashlib.md5


# The text of a message's checksum: the default encoding of json.dumps, as
# Zaqar computes it.
_checksumText = encoder(encode_basestring_ascii, ": ", ", ")


def checksum(body: Any) -> str:
    """
    The checksum Zaqar gives a message: MD5 over its default JSON encoding.
    """
    return "MD5:" + _md5(_checksumText(body).encode("ascii")).hexdigest()


def queueMetadata(
    metadata: Any,
    limits: Limits,
    queue: str,
    accepted: Mapping[str, Callable[[Any], Any]] = MappingProxyType({}),
) -> dict:
    """
    Check queue metadata, including the reserved keys.

    @param accepted: reserved settings otherwise refused that something
        running on this node gives an effect (an extension), each with
        the function checking its value (raising L{ValidationFailed}).
    """
    if not isinstance(metadata, dict):
        raise InvalidBody("Queue metadata must be a JSON object.")
    size = len(dumpBody(metadata).encode("utf-8"))
    if size > limits.maxQueueMetadata:
        raise PayloadTooLarge(
            f"Queue metadata may not exceed {limits.maxQueueMetadata} bytes."
        )
    # A reserved key set to null means "unset": reading a queue gives null
    # for the dead-letter settings, and writing what was read must work.
    metadata = {
        key: value
        for key, value in metadata.items()
        if not (value is None and key in RESERVED_METADATA)
    }
    for key, value in metadata.items():
        if not key.startswith("_"):
            continue
        if key == "_default_message_ttl":
            integer(value, key, limits.minMessageTTL, limits.maxMessageTTL)
        elif key == "_max_messages_post_size":
            integer(value, key, 1, limits.maxMessagesPostSize)
        elif key == "_default_message_delay":
            integer(value, key, 0, limits.maxMessageDelay)
        elif key == "_max_claim_count":
            integer(value, key, 1, 2**31)
        elif key == "_dead_letter_queue_messages_ttl":
            integer(value, key, limits.minMessageTTL, limits.maxMessageTTL)
        elif key in accepted:
            accepted[key](value)
        elif key in _REFUSED_SETTINGS:
            raise ValidationFailed(_REFUSED_SETTINGS[key])
        elif key == "_enable_encrypt_messages":
            if not isinstance(value, bool):
                raise ValidationFailed("_enable_encrypt_messages must be a boolean.")
        elif key == "_dead_letter_queue":
            if not isinstance(value, str):
                raise ValidationFailed("_dead_letter_queue must be a queue name.")
            queueName(value, limits)
            if value == queue:
                raise ValidationFailed("A queue cannot be its own dead letter queue.")
    return metadata


def messages(document: Any, limits: Limits, queueMeta: dict) -> list[NewMessage]:
    """
    Check a message post document, C{{"messages": [...]}} (or a bare list,
    as API v1 clients send), applying the queue's defaults.
    """
    if isinstance(document, dict):
        if "messages" not in document:
            raise ValidationFailed('The body must have a "messages" list.')
        items = document["messages"]
    else:
        items = document
    if not isinstance(items, list):
        raise InvalidBody('"messages" must be a non-empty list.')
    if not items:
        raise ValidationFailed('"messages" must be a non-empty list.')
    if len(items) > limits.maxMessagesPerPost:
        raise ValidationFailed(
            f"At most {limits.maxMessagesPerPost} messages may be posted at once."
        )
    defaultTTL = queueMeta.get("_default_message_ttl") or limits.defaultMessageTTL
    defaultDelay = queueMeta.get("_default_message_delay") or 0
    minTTL, maxTTL = limits.minMessageTTL, limits.maxMessageTTL
    maxDelay = limits.maxMessageDelay
    result = []
    for item in items:
        if not isinstance(item, dict):
            raise InvalidBody("Each message must be a JSON object.")
        if "body" not in item:
            raise InvalidBody('Each message must have a "body".')
        ttl = item.get("ttl", defaultTTL)
        # type() is int: an int in range passes as integer() would pass it.
        if type(ttl) is not int or not minTTL <= ttl <= maxTTL:
            integer(ttl, "ttl", minTTL, maxTTL, InvalidBody)
        delay = item.get("delay", defaultDelay)
        if type(delay) is not int or not 0 <= delay <= maxDelay:
            integer(delay, "delay", 0, maxDelay, InvalidBody)
        messageTags = tags(item["tags"], limits) if "tags" in item else ()
        body = item["body"]
        result.append(
            makeNewMessage(dumpBody(body), ttl, delay, messageTags, checksum(body))
        )
    return result


def claimOptions(document: Any, limits: Limits) -> tuple[int, int]:
    """
    Check a claim's C{{"ttl": ..., "grace": ...}} and fill in defaults.
    """
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise InvalidBody("The claim body must be a JSON object.")
    ttl = integer(
        document.get("ttl", limits.defaultClaimTTL),
        "ttl",
        limits.minClaimTTL,
        limits.maxClaimTTL,
        InvalidBody,
    )
    grace = integer(
        document.get("grace", limits.defaultClaimGrace),
        "grace",
        limits.minClaimGrace,
        limits.maxClaimGrace,
        InvalidBody,
    )
    return ttl, grace


def ids(raw: str, limit: int) -> tuple:
    """
    Parse a comma-separated list of ids; empty items are dropped.
    """
    values = tuple(dict.fromkeys(i for i in raw.split(",") if i))
    if not values:
        raise ValidationFailed("No ids were given.")
    if len(values) > limit:
        raise ValidationFailed(f"At most {limit} ids may be given at once.")
    for value in values:
        if len(value) > 128:
            raise ValidationFailed("Ids are at most 128 characters long.")
    return values
