"""
The C{noauth} driver: the project is the one named in the URL or in the
C{X-Project-ID} header, trusted as given, and every caller is an operator.
For a developer's node on loopback, and for deployments behind a gateway
that authenticates callers and sets the header itself.
"""

from typing import Any, Mapping, Optional

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from marconi.core.errors import ValidationFailed
from marconi.core.interfaces import IAuthDriver


@implementer(IAuthDriver)
class NoAuth:
    trustsHeaders = True

    def isAdmin(self, headers: Mapping[bytes, bytes]) -> Deferred:
        return succeed(True)

    def authenticate(
        self, headers: Mapping[bytes, bytes], urlProject: Optional[str]
    ) -> Deferred:
        header = headers.get(b"x-project-id")
        headerProject = header.decode("latin-1") if header is not None else None
        if urlProject is not None and headerProject and urlProject != headerProject:
            return fail(
                ValidationFailed(
                    "The project in the URL and the X-Project-ID header differ."
                )
            )
        return succeed(urlProject if urlProject is not None else headerProject)


def makeAuth(settings: Mapping[str, str], reactor: Any) -> NoAuth:
    return NoAuth()
