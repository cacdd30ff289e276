"""
The exceptions of the Marconi client.

Every error the server answers with is an L{APIError} carrying the HTTP
status, the C{title} and C{description} of the server's error body, and the
request id the server gave the request (for its logs).  The common statuses
have their own subclasses, so callers can write C{except NotFound}.

Failures to talk to the server at all are L{TransportError}s.
"""

from typing import Optional


class ClientError(Exception):
    """
    Base of every exception the client raises on purpose.
    """


class TransportError(ClientError):
    """
    The server could not be reached, or the exchange broke off.
    """


class ConnectionFailed(TransportError):
    """
    No connection could be made to the server: the request was not sent.
    """


class RequestTimedOut(TransportError):
    """
    The server did not answer (headers and body) within the timeout.
    """


class BadResponse(ClientError):
    """
    The server answered with something the client cannot read: a body
    that is not JSON, too large, or of an unexpected shape.
    """


class APIError(ClientError):
    """
    The server refused or failed the request.

    @ivar code: the HTTP status.
    @ivar title: the short title of the server's error body.
    @ivar description: its human description.
    @ivar requestId: the server's C{X-OpenStack-Request-Id}, if it sent one.
    """

    def __init__(
        self,
        code: int,
        title: str,
        description: str,
        requestId: Optional[str] = None,
    ) -> None:
        super().__init__(f"{code} {title}: {description}")
        self.code = code
        self.title = title
        self.description = description
        self.requestId = requestId


class BadRequest(APIError):
    """400: the request is malformed or a value is out of range."""


class Unauthorized(APIError):
    """401: the credentials are missing or invalid."""


class Forbidden(APIError):
    """403: not allowed (for example: deleting a message claimed by another)."""


class NotFound(APIError):
    """404: the queue, message or claim does not exist (or has expired)."""


class MethodNotAllowed(APIError):
    """405."""


class NotAcceptable(APIError):
    """406."""


class Conflict(APIError):
    """409: the request conflicts with the current state."""


class PayloadTooLarge(APIError):
    """413: the request body is over the server's limit."""


class ServerError(APIError):
    """5xx: the server failed."""


class ServiceUnavailable(ServerError):
    """503: the server or its storage is unavailable; retrying may help."""


_BY_CODE = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    406: NotAcceptable,
    409: Conflict,
    413: PayloadTooLarge,
    503: ServiceUnavailable,
}


def errorFor(
    code: int, title: str, description: str, requestId: Optional[str] = None
) -> APIError:
    """
    The exception for an error answer with status C{code}.
    """
    kind = _BY_CODE.get(code)
    if kind is None:
        kind = ServerError if code >= 500 else APIError
    return kind(code, title, description, requestId)
