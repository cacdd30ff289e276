"""
HMAC message signing (see C{docs/signing.rst}).

A queue holds signing keys in its reserved setting C{_signing_keys}, a list
of C{{"id": ..., "secret": <base64>}}, oldest first.  The secrets are
write-only: every read of the queue shows L{publicMetadata}, which names the
keys by id (C{_signing_key_ids}) and never shows a secret.

The node signs each message it delivers from such a queue with its newest
key; a queue with C{_require_signed_posts} refuses posted messages that are
not signed with one of its keys.  Both signatures are HMAC-SHA256 over the
RFC 8785 (JCS) canonical JSON of a small document, so any language can
compute them.
"""

import base64
import binascii
import hashlib
import hmac
import json
import re
from typing import Any, Callable, Optional, Sequence

import jcs

from marconi.core.errors import Forbidden, ValidationFailed
from marconi.core.models import Message

KEYS = "_signing_keys"
KEY_IDS = "_signing_key_ids"
REQUIRE = "_require_signed_posts"
ALGORITHM = "HMAC-SHA256"
MAX_KEYS = 4
MIN_SECRET_BYTES = 32
MAX_SECRET_BYTES = 256
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class SignatureRefused(Forbidden):
    """
    A posted message's signature is missing, malformed or does not verify.
    """

    title = "Invalid signature"


def _secret(text: Any) -> Optional[bytes]:
    if not isinstance(text, str):
        return None
    try:
        secret = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not MIN_SECRET_BYTES <= len(secret) <= MAX_SECRET_BYTES:
        return None
    return secret


def checkSettings(metadata: dict, stored: dict) -> dict:
    """
    Check the signing settings of queue metadata about to be stored.

    An entry of C{_signing_keys} with an id and no secret keeps the secret
    C{stored} holds under that id, so keys rotate without sending the old
    secrets again.  C{_signing_key_ids}, which reads show, is dropped.

    @param stored: the queue's metadata as stored now.
    @raise ValidationFailed: for settings that are not valid.
    """
    metadata.pop(KEY_IDS, None)
    keys = metadata.get(KEYS)
    if keys is None:
        metadata.pop(KEYS, None)
    else:
        metadata[KEYS] = _checkKeys(keys, stored.get(KEYS) or [])
    require = metadata.get(REQUIRE)
    if require is None:
        metadata.pop(REQUIRE, None)
    elif not isinstance(require, bool):
        raise ValidationFailed(f"{REQUIRE} must be true or false.")
    elif require and not metadata.get(KEYS):
        raise ValidationFailed(f"{REQUIRE} needs at least one key in {KEYS}.")
    return metadata


def _checkKeys(keys: Any, stored: list) -> list:
    shape = (
        f"{KEYS} must be a list of 1 to {MAX_KEYS} objects "
        '{"id": ..., "secret": <base64>}, oldest first.'
    )
    if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_KEYS:
        raise ValidationFailed(shape)
    known = {k["id"]: k["secret"] for k in stored}
    result: list[dict] = []
    for key in keys:
        if not isinstance(key, dict) or set(key) - {"id", "secret"}:
            raise ValidationFailed(shape)
        keyId = key.get("id")
        if not isinstance(keyId, str) or not _KEY_ID.fullmatch(keyId):
            raise ValidationFailed(
                "Signing key ids are 1 to 64 ASCII letters, digits, "
                "underscores, dashes and dots."
            )
        if any(k["id"] == keyId for k in result):
            raise ValidationFailed(f"Signing key id {keyId!r} is given twice.")
        secret = key.get("secret", known.get(keyId))
        if secret is None:
            raise ValidationFailed(
                f"Signing key {keyId!r} has no secret and is not a key of the queue."
            )
        if _secret(secret) is None:
            raise ValidationFailed(
                f"The secret of signing key {keyId!r} must be base64 of "
                f"{MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes."
            )
        result.append({"id": keyId, "secret": secret})
    return result


def publicMetadata(metadata: Any) -> Any:
    """
    Queue metadata as reads show it: the keys by id, no secret.
    """
    if not isinstance(metadata, dict) or KEYS not in metadata:
        return metadata
    keys = metadata[KEYS] or []
    shown = {k: v for k, v in metadata.items() if k != KEYS}
    shown[KEY_IDS] = [k["id"] for k in keys if isinstance(k, dict)]
    return shown


def mac(secret: bytes, document: dict) -> str:
    """
    The base64 HMAC-SHA256 of C{document}'s canonical JSON.
    """
    digest = hmac.new(secret, jcs.canonicalize(document), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def deliveryDocument(project: str, queue: str, m: Message, enqueued: int) -> dict:
    """
    What a delivery signature covers.
    """
    return {
        "use": "delivery",
        "project": project,
        "queue": queue,
        "id": m.id,
        "enqueued": enqueued,
        "tags": list(m.tags),
        "body": json.loads(m.body),
    }


def postDocument(project: str, queue: str, item: dict) -> dict:
    """
    What a producer's signature covers: the posted message but its
    C{signature}, and where it is posted.
    """
    message = {k: v for k, v in item.items() if k != "signature"}
    return {"use": "post", "project": project, "queue": queue, "message": message}


def signer(project: str, queue: str, metadata: dict) -> Optional[Callable]:
    """
    A function rendering the C{signature} field of a message delivered from
    the queue (as JSON text), or L{None} for a queue without keys.
    """
    keys = metadata.get(KEYS)
    if not keys:
        return None
    newest = keys[-1]
    keyId = newest["id"]
    secret = base64.b64decode(newest["secret"])

    def sign(m: Message) -> str:
        enqueued = int(m.created)
        value = mac(secret, deliveryDocument(project, queue, m, enqueued))
        return json.dumps(
            {"key_id": keyId, "alg": ALGORITHM, "enqueued": enqueued, "value": value},
            separators=(",", ":"),
        )

    return sign


def checkShapes(items: Sequence) -> None:
    """
    Check that every producer signature given is shaped as one, whatever the
    queue: null (no signature) or C{{"key_id": str, "value": str}}.

    @raise ValidationFailed: for the first message whose signature is not.
    """
    for index, item in enumerate(items):
        given = item.get("signature") if isinstance(item, dict) else None
        if given is None:
            continue
        if not (
            isinstance(given, dict)
            and isinstance(given.get("key_id"), str)
            and isinstance(given.get("value"), str)
        ):
            raise ValidationFailed(
                f'Message {index}: "signature" must be an object with the '
                'strings "key_id" and "value".'
            )


def checkPosts(project: str, queue: str, metadata: dict, items: Sequence) -> None:
    """
    Check the producers' signatures of posted messages: each must be signed
    with one of the queue's keys when the queue requires it, and a
    signature given to a queue with keys must verify.

    @raise SignatureRefused: for the first message that fails.
    """
    keys = metadata.get(KEYS)
    required = bool(metadata.get(REQUIRE))
    if not keys or not isinstance(items, list):
        return
    secrets = {k["id"]: k["secret"] for k in keys}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        given = item.get("signature")
        if given is None and not required:
            continue
        where = f"Message {index}"
        if not isinstance(given, dict):
            raise SignatureRefused(
                f'{where} needs a "signature": {{"key_id": ..., "value": ...}}: '
                "this queue requires signed posts."
            )
        keyId = given.get("key_id")
        value = given.get("value")
        secret = secrets.get(keyId) if isinstance(keyId, str) else None
        if secret is None or not isinstance(value, str):
            raise SignatureRefused(f"{where} is not signed with a key of this queue.")
        expected = mac(base64.b64decode(secret), postDocument(project, queue, item))
        if not hmac.compare_digest(expected.encode(), value.encode("utf-8", "replace")):
            raise SignatureRefused(f"{where}: the signature does not verify.")
