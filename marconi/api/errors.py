"""
The one place where errors become HTTP answers.
"""

from marconi.core import errors

# Most specific first.
STATUS = (
    (errors.PayloadTooLarge, 413),
    (errors.ValidationFailed, 400),
    (errors.DoesNotExist, 404),
    (errors.MessageIsClaimed, 403),
    (errors.ClaimMismatch, 400),
    (errors.Conflict, 409),
    (errors.Forbidden, 403),
    (errors.Unauthorized, 401),
    (errors.StorageUnavailable, 503),
    (errors.IdentityUnavailable, 503),
    (errors.NotEnabled, 404),
)


class HTTPError(errors.MarconiError):
    """
    An error that exists only in HTTP terms (406, 405, ...).
    """

    def __init__(self, code: int, title: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.title = title


def statusOf(error: errors.MarconiError) -> int:
    if isinstance(error, HTTPError):
        return error.code
    for kind, code in STATUS:
        if isinstance(error, kind):
            return code
    return 500
