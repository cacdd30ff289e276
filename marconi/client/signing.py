"""
Message signatures on the client's side (the scheme is in
C{docs/signing.rst}): L{verifyMessage} checks the signature a node gives a
message it delivers, L{signMessage} signs a message for a queue that
requires signed posts.

A key is the base64 text of its secret, as it was given in the queue's
C{_signing_keys}, or the secret's bytes.
"""

import base64
import dataclasses
import hashlib
import hmac
from typing import Any, Union

import jcs

from marconi.client.models import Message, OutgoingMessage

ALGORITHM = "HMAC-SHA256"


def _secret(key: Union[str, bytes]) -> bytes:
    return base64.b64decode(key, validate=True) if isinstance(key, str) else key


def _mac(key: Union[str, bytes], document: dict) -> str:
    digest = hmac.new(_secret(key), jcs.canonicalize(document), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode("ascii")


def verifyMessage(
    message: Union[Message, dict],
    key: Union[str, bytes],
    queue: str,
    project: str,
) -> bool:
    """
    Whether C{message}, as a node of C{project} delivered it from C{queue},
    carries a valid signature made with C{key}.

    @param message: a L{Message}, or a message object of the API as parsed
        JSON.
    """
    doc = message.toJSON() if isinstance(message, Message) else message
    signature = doc.get("signature")
    if not isinstance(signature, dict) or signature.get("alg") != ALGORITHM:
        return False
    value = signature.get("value")
    enqueued = signature.get("enqueued")
    if not isinstance(value, str) or not isinstance(enqueued, int):
        return False
    expected = _mac(
        key,
        {
            "use": "delivery",
            "project": project,
            "queue": queue,
            "id": doc.get("id"),
            "enqueued": enqueued,
            "tags": list(doc.get("tags") or ()),
            "body": doc.get("body"),
        },
    )
    return hmac.compare_digest(expected.encode(), value.encode("utf-8", "replace"))


def signMessage(
    message: OutgoingMessage,
    keyId: str,
    key: Union[str, bytes],
    queue: str,
    project: str,
) -> OutgoingMessage:
    """
    C{message} signed with the queue's key C{keyId}, to be posted to
    C{queue} of C{project}.
    """
    doc: Any = dataclasses.replace(message, signature=None).toJSON()
    value = _mac(
        key, {"use": "post", "project": project, "queue": queue, "message": doc}
    )
    return dataclasses.replace(message, signature={"key_id": keyId, "value": value})
