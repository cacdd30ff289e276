"""
The errors of the domain.

Each error carries a short C{title} and a human C{description}; the API layer
turns them into HTTP answers (see L{marconi.api.errors}).  Drivers raise the
ones their interface documents and nothing else escapes them on purpose.
"""

from typing import Optional


class MarconiError(Exception):
    """
    Base of every error Marconi reports to a client.
    """

    title = "Error"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class ValidationFailed(MarconiError):
    """
    The request is malformed or a value is out of range.
    """

    title = "Invalid request"


class PayloadTooLarge(ValidationFailed):
    """
    A request body exceeds a size limit.
    """

    title = "Payload too large"


class DoesNotExist(MarconiError):
    """
    Base of the "not found" errors.
    """

    title = "Not found"


class QueueDoesNotExist(DoesNotExist):
    def __init__(self, name: str) -> None:
        super().__init__(f"Queue {name!r} does not exist.")


class MessageDoesNotExist(DoesNotExist):
    def __init__(self, messageId: str) -> None:
        super().__init__(f"Message {messageId!r} does not exist.")


class ClaimDoesNotExist(DoesNotExist):
    def __init__(self, claimId: str) -> None:
        super().__init__(f"Claim {claimId!r} does not exist or has expired.")


class MessageIsClaimed(MarconiError):
    """
    The message is held by a live claim and the caller did not present it.
    """

    title = "Message is claimed"

    def __init__(self, messageId: str) -> None:
        super().__init__(
            f"Message {messageId!r} is claimed; it cannot be deleted "
            "without a valid claim ID."
        )


class ClaimMismatch(MarconiError):
    """
    A claim id was presented but it does not hold the message (the claim
    expired, was released, or never held it).
    """

    title = "Claim mismatch"


class Conflict(MarconiError):
    """
    The request conflicts with the current state (a JSON patch that removes
    or replaces a missing key, for example).
    """

    title = "Conflict"


class Forbidden(MarconiError):
    """
    The caller may not do this.
    """

    title = "Forbidden"


class Unauthorized(MarconiError):
    """
    The caller's credentials are missing or invalid.

    @ivar challenge: the C{WWW-Authenticate} value telling the caller how
        to authenticate, or L{None}.
    """

    title = "Unauthorized"

    def __init__(self, description: str, challenge: Optional[str] = None) -> None:
        super().__init__(description)
        self.challenge = challenge


class IdentityUnavailable(MarconiError):
    """
    The identity service (Keystone) cannot say who the caller is; the
    request may be retried.
    """

    title = "Service unavailable"


class StorageUnavailable(MarconiError):
    """
    The storage backend cannot be reached; the request may be retried.
    """

    title = "Service unavailable"
