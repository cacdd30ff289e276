"""
Encryption at rest of message bodies (the C{_enable_encrypt_messages} queue
setting), with AES-256-GCM.

A body posted to an encrypted queue is stored as an I{envelope}: JSON text
of the form::

    {"$enc": "v1:KEYID:QUEUE:BASE64"}

with one space after the colon.  C{BASE64} holds a random 96-bit nonce
followed by the ciphertext and its tag; the plaintext is the message's
checksum, a newline and its body as JSON text.  The associated data binds
the ciphertext to its project, the queue it was posted to and the key id,
so a ciphertext copied into another project or queue does not decrypt.

Client bodies are stored in compact form (no space after a colon, see
L{marconi.core.jsontext.dumpBody}), so no body a client posts can ever be
taken for an envelope.  Every store keeps the body text as it is given,
so the stores need no change.
"""

import base64
import binascii
import os
import re
from dataclasses import dataclass
from typing import Mapping, Optional

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from marconi.core.errors import DoesNotExist, StorageUnavailable

PREFIX = '{"$enc": "v1:'
SUFFIX = '"}'
KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


class KeyConfigError(ValueError):
    """
    The C{[encryption]} settings are wrong; the message says how.
    """


class Undecryptable(Exception):
    """
    A stored envelope cannot be opened: its key is not configured, or it
    was changed or moved.
    """

    def __init__(self, keyId: str, reason: str) -> None:
        super().__init__(reason)
        self.keyId = keyId
        self.reason = reason


class MessageUnreadable(DoesNotExist):
    """
    The message exists but its body cannot be decrypted by this node: it
    is answered as not found, with the reason.
    """

    def __init__(self, messageId: str, reason: str) -> None:
        super().__init__(f"Message {messageId!r} cannot be read: {reason}.")


class EncryptionUnavailable(StorageUnavailable):
    """
    The queue encrypts its messages but this node has no key to do it.
    """


def isEnvelope(text: str) -> bool:
    return text.startswith(PREFIX)


def _aad(project: str, queue: str, keyId: str) -> bytes:
    return b"\0".join(
        (b"marconi-message-v1", project.encode(), queue.encode(), keyId.encode())
    )


@dataclass(frozen=True)
class Envelope:
    """
    The parts of a stored envelope.
    """

    keyId: str
    queue: str
    sealed: bytes

    @classmethod
    def parse(cls, text: str) -> "Envelope":
        if not (isEnvelope(text) and text.endswith(SUFFIX)):
            raise Undecryptable("", "not an encrypted message")
        parts = text[len(PREFIX) : -len(SUFFIX)].split(":")
        if len(parts) != 3:
            raise Undecryptable("", "malformed envelope")
        keyId, queue, data = parts
        try:
            sealed = base64.b64decode(data, validate=True)
        except binascii.Error:
            raise Undecryptable(keyId, "malformed envelope") from None
        return cls(keyId, queue, sealed)


class KeyRing:
    """
    The AES-256 keys of a node, by id: the current one encrypts, all of
    them decrypt.
    """

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if current not in keys:
            raise KeyConfigError(f"the current key {current!r} is not listed")
        self.current = current
        self._ciphers = {keyId: AESGCM(key) for keyId, key in keys.items()}

    @classmethod
    def parse(cls, keys: str, current: Optional[str] = None) -> "KeyRing":
        """
        Read C{ID:BASE64KEY} items separated by white space; the first
        is current unless C{current} names another.

        @raise KeyConfigError: saying which item is wrong.
        """
        parsed: dict[str, bytes] = {}
        for item in keys.split():
            keyId, sep, encoded = item.partition(":")
            if not sep or not _KEY_ID.fullmatch(keyId):
                raise KeyConfigError(
                    "each key must be ID:BASE64KEY, with an ID of 1 to 32 "
                    "letters, digits, '-' or '_'"
                )
            if keyId in parsed:
                raise KeyConfigError(f"key {keyId!r} is listed twice")
            try:
                key = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                raise KeyConfigError(f"key {keyId!r} is not valid base64") from None
            if len(key) != KEY_BYTES:
                raise KeyConfigError(
                    f"key {keyId!r} must be {KEY_BYTES} bytes (AES-256), not {len(key)}"
                )
            parsed[keyId] = key
        if not parsed:
            raise KeyConfigError("no keys are listed")
        return cls(parsed, current or next(iter(parsed)))

    def seal(self, plaintext: str, project: str, queue: str) -> str:
        """
        The envelope of C{plaintext} posted to C{queue} of C{project}.
        """
        nonce = os.urandom(NONCE_BYTES)
        cipher = self._ciphers[self.current]
        sealed = nonce + cipher.encrypt(
            nonce, plaintext.encode("utf-8"), _aad(project, queue, self.current)
        )
        data = base64.b64encode(sealed).decode("ascii")
        return f"{PREFIX}{self.current}:{queue}:{data}{SUFFIX}"

    def open(self, envelope: Envelope, project: str) -> str:
        """
        The plaintext of C{envelope}, stored in C{project}.

        @raise Undecryptable: if its key is unknown or it does not
            authenticate (changed, or moved from another project or queue).
        """
        cipher = self._ciphers.get(envelope.keyId)
        if cipher is None:
            raise Undecryptable(
                envelope.keyId, f"key {envelope.keyId!r} is not configured"
            )
        nonce, body = envelope.sealed[:NONCE_BYTES], envelope.sealed[NONCE_BYTES:]
        try:
            plain = cipher.decrypt(
                nonce, body, _aad(project, envelope.queue, envelope.keyId)
            )
        except InvalidTag:
            raise Undecryptable(
                envelope.keyId, "the ciphertext does not authenticate"
            ) from None
        return plain.decode("utf-8")


def sealMessage(
    ring: KeyRing, checksum: str, body: str, project: str, queue: str
) -> str:
    """
    The envelope of a message's checksum and body.
    """
    return ring.seal(f"{checksum}\n{body}", project, queue)


def openMessage(
    ring: Optional[KeyRing], envelope: Envelope, project: str
) -> tuple[str, str]:
    """
    The checksum and body sealed in C{envelope}.

    @raise Undecryptable: as L{KeyRing.open}, or when no keys are
        configured.
    """
    if ring is None:
        raise Undecryptable(envelope.keyId, "no encryption keys are configured")
    checksum, _, body = ring.open(envelope, project).partition("\n")
    return checksum, body
