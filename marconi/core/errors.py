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
    The request is malformed or a value is out of range.  The titles of
    this error and of its kinds below are Zaqar's, which clients read.
    """

    title = "Invalid API request"


class InvalidBody(ValidationFailed):
    """
    The request body is not a JSON document of the expected shape: not
    JSON, empty, a list where an object is expected, a field missing or of
    the wrong type.  (A value of the right type out of range is a plain
    L{ValidationFailed}.)
    """

    title = "Invalid request body"


class InvalidQueueName(ValidationFailed):
    """
    A queue name is empty, too long or has characters a name may not have.
    """

    title = "Invalid queue identification"


class MissingProject(ValidationFailed):
    """
    The request names no project (no C{X-Project-ID}, no project in the URL).
    """

    title = "Project-Id Missing"


class MissingHeader(ValidationFailed):
    """
    A required header is missing.
    """

    title = "Missing header value"


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

    title = "Unable to delete"

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

    title = "Unable to delete"


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


class NotEnabled(MarconiError):
    """
    The resource belongs to an extension that this node does not run (see
    L{marconi.extensions}).
    """

    title = "Not enabled"
