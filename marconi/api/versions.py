"""
What differs between the API versions served, in one place.

C{/v2} is the Zaqar v2 API with the improvements listed in C{docs/api.rst};
C{/v1.1} is a frozen contract: it answers as Zaqar's v1.1 did (its last
release serving it), field for field and status for status, even where v2
chose otherwise.  The handlers ask the request's L{VersionPolicy} instead of
comparing version strings.
"""

import uuid
from dataclasses import dataclass, replace
from typing import Any, Optional

from marconi.core import validation
from marconi.core.errors import (
    MarconiError,
    MissingHeader,
    PayloadTooLarge,
    StorageUnavailable,
    ValidationFailed,
)
from marconi.core.limits import Limits


class WrongUUID(ValidationFailed):
    """
    A C{Client-ID} that is not a UUID, where the version requires one.
    """

    title = "Wrong UUID value"


@dataclass(frozen=True)
class VersionPolicy:
    """
    How one API version answers where versions differ.
    """

    #: The version as it appears in paths (C{v2}, C{v1.1}).
    name: str
    #: C{GET} of a queue fills in the reserved settings with their defaults.
    reservedDefaults: bool
    #: Queue stats count delayed messages.
    statsDelayed: bool
    #: C{HEAD} is answered wherever C{GET} is (otherwise 405).
    head: bool
    #: C{Client-ID} must be a UUID.
    uuidClientId: bool
    #: The smallest claim grace accepted, when stricter than the limits.
    minClaimGrace: Optional[int]
    #: The status of a request body over a size limit.
    tooLargeStatus: int
    #: A malformed message marker is ignored (the listing starts from the
    #: oldest message) rather than refused as invalid input (400).
    lenientMarker: bool
    #: Messages show their body's checksum.
    checksums: bool
    #: Claims and the oldest and newest messages of stats show their ids
    #: (and claims their grace).
    identities: bool
    #: Queue metadata can be changed with C{PATCH}.
    queuePatch: bool
    #: A bare list of messages may be posted (as v1 clients send).
    bareMessageList: bool
    #: The fields of a posted message that are read, when not all are
    #: (the others are dropped unchecked, and the message has no delay).
    messageFields: Optional[tuple] = None
    #: Renewing a claim checks its grace against the limits (otherwise a
    #: grace out of range is brought within them).
    renewGraceChecked: bool = True
    #: Routing errors (404, 405) have a description beside their title,
    #: and 406 has a body.
    routingDescriptions: bool = True
    #: Messages delivered from a queue with signing keys carry their
    #: C{signature}.
    signatures: bool = True
    #: Titles of error answers by error kind, where the version's differ
    #: from the kinds' own.
    titles: tuple = ()
    #: Queues can be purged (C{POST .../purge}; Zaqar added it in v2).
    purge: bool = False
    #: A queue listing is filtered by C{name} and metadata (Zaqar added
    #: it to v2 only); otherwise those parameters are ignored.
    queueFilters: bool = False
    #: Listings, claims and pops take C{wait=SECONDS} (long-polling, see
    #: L{marconi.core.waiting}); otherwise the parameter is ignored, as any
    #: other the version does not know.
    longPolling: bool = True

    def clientId(self, value: Optional[str], limits: Limits) -> str:
        """
        Check the C{Client-ID} header as this version does.
        """
        if not self.uuidClientId:
            return validation.clientId(value, limits)
        if value is None:
            raise MissingHeader('The "Client-ID" header is required.')
        try:
            uuid.UUID(value)
        except ValueError:
            raise WrongUUID("Malformed hexadecimal UUID.") from None
        return value

    def claimOptions(self, options: Any, limits: Limits) -> None:
        """
        Refuse claim options this version does not accept although the
        limits would; the domain checks the rest.
        """
        if self.minClaimGrace is not None:
            strict = replace(
                limits, minClaimGrace=max(limits.minClaimGrace, self.minClaimGrace)
            )
            validation.claimOptions(options, strict)

    def messagesDocument(self, document: Any) -> Any:
        """
        A message post document as this version reads it.
        """
        if self.messageFields is None or not isinstance(document, dict):
            return document
        items = document.get("messages")
        if not isinstance(items, list):
            return document
        read = [
            {"delay": 0, **{k: item[k] for k in self.messageFields if k in item}}
            if isinstance(item, dict)
            else item
            for item in items
        ]
        return {**document, "messages": read}

    def renewOptions(self, options: Any, limits: Limits) -> Any:
        """
        Claim renewal options as this version reads them.
        """
        if self.renewGraceChecked or not isinstance(options, dict):
            return options
        grace = options.get("grace")
        if isinstance(grace, bool) or not isinstance(grace, int):
            return options
        grace = min(max(grace, limits.minClaimGrace), limits.maxClaimGrace)
        return {**options, "grace": grace}

    def status(self, error: MarconiError, default: int) -> int:
        """
        The status of C{error}, given its status in the domain's terms.
        """
        if isinstance(error, PayloadTooLarge):
            return self.tooLargeStatus
        return default

    def title(self, error: MarconiError) -> str:
        """
        The title of C{error}'s answer: the version's title for the most
        specific kind of error it names, or the error's own.
        """
        titles = dict(self.titles)
        for kind in type(error).__mro__:
            if kind in titles:
                return titles[kind]
        return error.title


V2 = VersionPolicy(
    name="v2",
    reservedDefaults=True,
    statsDelayed=True,
    head=True,
    uuidClientId=False,
    minClaimGrace=None,
    tooLargeStatus=413,
    lenientMarker=False,
    checksums=True,
    identities=True,
    queuePatch=True,
    bareMessageList=True,
    purge=True,
    queueFilters=True,
)

#: Zaqar 21.0.3's v1.1, the last release that served it.
V1_1 = VersionPolicy(
    name="v1.1",
    reservedDefaults=False,
    statsDelayed=False,
    head=False,
    uuidClientId=True,
    minClaimGrace=60,
    tooLargeStatus=400,
    lenientMarker=True,
    checksums=False,
    identities=False,
    queuePatch=False,
    bareMessageList=False,
    messageFields=("ttl", "body"),
    renewGraceChecked=False,
    routingDescriptions=False,
    signatures=False,
    longPolling=False,
    titles=(
        (PayloadTooLarge, ValidationFailed.title),
        (StorageUnavailable, "Service temporarily unavailable"),
    ),
)

POLICIES = {policy.name: policy for policy in (V2, V1_1)}


def forPath(path: bytes) -> VersionPolicy:
    """
    The policy of the version a request path names (v2 for any other path).
    """
    if path == b"/v1.1" or path.startswith(b"/v1.1/"):
        return V1_1
    return V2
