"""
Pre-signed URLs, as Zaqar makes them and python-zaqarclient sends them.

C{POST /v2/queues/{queue}/share}, by a caller the auth driver accepts,
answers the paths, methods, project and expiry of a grant and its
signature: the hex HMAC-SHA256, keyed with the node's C{[signed_url]
secret_key}, of::

    PATHS\\nMETHODS\\nPROJECT\\nEXPIRES

where PATHS and METHODS are the sorted values joined with commas, EXPIRES
is the UTC time C{YYYY-MM-DDTHH:MM:SS}, and C{\\n} is a backslash followed
by the letter C{n} (Zaqar's format, kept for its clients).

Whoever holds the grant sends it back in the C{URL-Signature},
C{URL-Expires}, C{URL-Methods} and C{URL-Paths} headers, with the project
in C{X-Project-ID}, and acts for that project on exactly the signed
methods at exactly the signed paths until the grant expires.
"""

import hashlib
import hmac
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Optional

from twisted.internet.interfaces import IReactorTime

from marconi.api.errors import HTTPError
from marconi.core.errors import Forbidden, InvalidBody, ValidationFailed

#: The API versions that serve C{/share} (Zaqar's v1.1 had none).
VERSIONS = ("v2",)
#: The resources of a queue a grant may name, as Zaqar names them.
SHAREABLE = frozenset({"messages", "subscriptions", "claims"})
#: The methods a grant may name.
METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})
EXPIRES_FORMAT = "%Y-%m-%dT%H:%M:%S"
#: How long a grant lasts when its maker names no expiry (Zaqar's day).
DEFAULT_LIFETIME = timedelta(days=1)

HEADERS = {
    b"url-signature": "URL-Signature",
    b"url-expires": "URL-Expires",
    b"url-methods": "URL-Methods",
    b"url-paths": "URL-Paths",
}
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


class BadSignature(Forbidden):
    """
    A request's pre-signed URL headers do not grant what it asks.
    """

    title = "Invalid pre-signed URL"


def sign(key: bytes, paths: list, methods: list, project: str, expires: str) -> str:
    """
    The signature of a grant, as Zaqar computes it.
    """
    text = "\\n".join(
        (",".join(sorted(paths)), ",".join(sorted(methods)), project, expires)
    )
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def carriesSignature(request: Any) -> bool:
    """
    Whether the request sends any of the pre-signed URL headers.
    """
    return any(request.requestHeaders.hasHeader(name) for name in HEADERS)


class SignedURLs:
    """
    Makes and checks pre-signed URLs with one node's secret.

    @ivar key: the secret, or L{None} when the node has none configured
        (then no grant is made and none is accepted).
    """

    def __init__(self, key: Optional[str], clock: IReactorTime) -> None:
        self.key = key.encode("utf-8") if key else None
        self.clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), timezone.utc).replace(
            tzinfo=None
        )

    def share(self, project: str, queuePath: str, document: Any) -> dict:
        """
        Make a grant on one queue of C{project}.

        @param queuePath: the queue's path (C{/v2/queues/NAME}), which the
            granted paths are under.
        @param document: the request body: optional C{paths} (resource
            names of L{SHAREABLE}), C{methods} and C{expires} (an ISO 8601
            time, UTC when it names no offset).
        @raise HTTPError: the node has no secret.
        @raise ValidationFailed: the body is not such a document.
        """
        if self.key is None:
            raise HTTPError(
                400,
                "Pre-signed URLs not configured",
                "This node cannot make pre-signed URLs: its configuration "
                "has no [signed_url] secret_key.",
            )
        if document is None:
            document = {}
        if not isinstance(document, dict):
            raise InvalidBody("The body must be a JSON object.")
        unknown = set(document) - {"paths", "methods", "expires"}
        if unknown:
            raise InvalidBody(f"Unknown keys: {', '.join(sorted(unknown))}.")
        names = _strings(document.get("paths") or ["messages"], "paths", SHAREABLE)
        methods = _strings(document.get("methods", ["GET"]), "methods", METHODS)
        now = self._now()
        expiry = _expiry(document.get("expires"), now)
        if expiry <= now:
            raise ValidationFailed("expires must be in the future.")
        expires = expiry.strftime(EXPIRES_FORMAT)
        paths = sorted(f"{queuePath}/{name}" for name in names)
        return {
            "paths": paths,
            "methods": methods,
            "project": project,
            "expires": expires,
            "signature": sign(self.key, paths, methods, project, expires),
        }

    def verify(
        self, request: Any, headers: Mapping[bytes, bytes], urlProject: Optional[str]
    ) -> Optional[str]:
        """
        The project a request acts for by its pre-signed URL headers, or
        L{None} when it sends none of them.

        @param headers: the request's identity headers (see
            L{marconi.api.identity.authHeaders}).
        @param urlProject: the project named in the request's path, if any.
        @raise BadSignature: the headers are incomplete, malformed, repeated,
            expired, altered, or do not grant this method at this path for
            this project; or the node has no secret.
        """
        if headers.keys().isdisjoint(HEADERS):
            # The identity headers hold every header's name: none of these.
            return None
        values = {}
        for name, label in HEADERS.items():
            raw = request.requestHeaders.getRawHeaders(name)
            if raw is None:
                continue
            if len(raw) > 1:
                raise BadSignature(f"{label} may be sent only once.")
            values[name] = raw[0].decode("latin-1")
        if not values:
            return None
        if self.key is None:
            raise BadSignature("This node does not accept pre-signed URLs.")
        signature = values.get(b"url-signature", "")
        if not _SIGNATURE.fullmatch(signature):
            raise BadSignature("URL-Signature is missing or malformed.")
        expires = values.get(b"url-expires", "")
        try:
            expiry = datetime.strptime(expires, EXPIRES_FORMAT)
        except ValueError:
            raise BadSignature("URL-Expires is missing or malformed.") from None
        paths = values.get(b"url-paths", "").split(",")
        methods = values.get(b"url-methods", "").split(",")
        if "" in paths or "" in methods:
            raise BadSignature("URL-Paths and URL-Methods must name something.")
        header = headers.get(b"x-project-id")
        project = header.decode("latin-1") if header else urlProject
        if not project:
            raise BadSignature("A pre-signed URL needs its X-Project-ID.")
        if urlProject is not None and urlProject != project:
            raise BadSignature("The project in the URL is not the signed project.")
        expected = sign(self.key, paths, methods, project, expires)
        if not hmac.compare_digest(expected, signature):
            raise BadSignature("The signature does not match the URL's grant.")
        if expiry <= self._now():
            raise BadSignature("The pre-signed URL has expired.")
        if request.method.decode("latin-1") not in methods:
            raise BadSignature("The pre-signed URL does not grant this method.")
        if request.path.decode("latin-1") not in paths:
            raise BadSignature("The pre-signed URL does not grant this path.")
        return project


def _strings(value: Any, field: str, allowed: frozenset) -> list:
    """
    A grant's list of C{field}: distinct, sorted, each one of C{allowed}.
    """
    if not isinstance(value, list) or not value:
        raise InvalidBody(f"{field} must be a non-empty list of strings.")
    if not all(isinstance(item, str) for item in value):
        raise InvalidBody(f"{field} must be a non-empty list of strings.")
    wrong = set(value) - allowed
    if wrong:
        raise ValidationFailed(
            f"Invalid {field}: {', '.join(sorted(wrong))}; "
            f"allowed: {', '.join(sorted(allowed))}."
        )
    return sorted(set(value))


def _expiry(value: Any, now: datetime) -> datetime:
    """
    The expiry a grant asks for, as a naive UTC time to the second.
    """
    if value is None:
        return (now + DEFAULT_LIFETIME).replace(microsecond=0)
    if not isinstance(value, str):
        raise InvalidBody(
            "expires must be an ISO 8601 time such as 2030-01-01T00:00:00."
        )
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise ValidationFailed(
            "expires must be an ISO 8601 time such as 2030-01-01T00:00:00."
        ) from None
    return parsed.replace(microsecond=0)
