"""
What the API and the console read of a request before asking the auth
driver who it comes from.
"""

from typing import Any

from marconi.core.errors import MarconiError, Unauthorized, ValidationFailed

# Headers that name who the caller is: a second copy is refused rather than
# one of them picked, since a gateway that adds its own copy would
# otherwise be overridden by the client's.
SINGLE = {b"x-project-id": "X-Project-ID", b"x-auth-token": "X-Auth-Token"}


def authHeaders(request: Any) -> dict:
    """
    The request's headers as the auth driver takes them: lower-case names
    to their value.

    @raise ValidationFailed: an identity header came more than once.
    """
    headers = {}
    for name, values in request.requestHeaders.getAllRawHeaders():
        lower = name.lower()
        if len(values) > 1 and lower in SINGLE:
            raise ValidationFailed(f"{SINGLE[lower]} may be sent only once.")
        headers[lower] = values[0]
    return headers


def challenge(request: Any, error: MarconiError) -> None:
    """
    Tell a caller refused for its credentials how to authenticate.
    """
    if isinstance(error, Unauthorized) and error.challenge:
        request.setHeader(b"www-authenticate", error.challenge.encode("latin-1"))
