"""
The filters of a queue listing: C{GET /v2/queues?name=...&<key>=<value>}.

As Zaqar defines them: C{name} keeps the queues whose name contains it,
and every query parameter that is not one of the listing's own
(L{LISTING_PARAMETERS}) is a metadata filter, keeping the queues whose
metadata has that key with that value.  A value made only of digits (with
an optional minus sign) is compared as a number, any other as a string,
as Zaqar converts it; a number never equals C{true} or C{false}.

Filtering is done here, over pages of a store's own listing, so every store
answers alike and a page of a filtered listing holds up to C{limit}
matching queues: the marker of the next page is the last queue shown.
"""

import re
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterable, Optional

from marconi.core import validation
from marconi.core.audit import RIVER
from marconi.core.errors import ValidationFailed
from marconi.core.limits import Limits
from marconi.core.models import QueueInfo

#: The query parameters of a queue listing that are not metadata filters.
LISTING_PARAMETERS = frozenset({"marker", "limit", "detailed", "name", "with_count"})

#: The most metadata filters one listing may give.
MAX_METADATA_FILTERS = 20

#: How many queues a filtered listing reads from a store at a time.
SCAN_PAGE = 100

_NUMBER = re.compile(r"-?[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class QueueFilter:
    """
    What a listing keeps: queues whose name contains C{name} (when given)
    and whose metadata has each key of C{metadata} with its value.
    """

    name: Optional[str] = None
    metadata: tuple = ()

    def __bool__(self) -> bool:
        return bool(self.name) or bool(self.metadata)

    def matches(self, queue: QueueInfo) -> bool:
        """
        Whether C{queue} (read with its metadata when C{metadata} filters)
        is kept.  The audit river's queue never is.
        """
        if queue.name == RIVER:
            return False
        if self.name and self.name not in queue.name:
            return False
        stored = queue.metadata or {}
        return all(
            key in stored and _equal(stored[key], value) for key, value in self.metadata
        )

    def parameters(self) -> dict:
        """
        The filter as query parameters, for the link to the next page and
        for asking another node.
        """
        params: dict = {}
        if self.name:
            params["name"] = self.name
        for key, value in self.metadata:
            params[key] = str(value)
        return params


def _equal(stored: Any, wanted: Any) -> bool:
    if isinstance(wanted, int):
        return (
            isinstance(stored, (int, float))
            and not isinstance(stored, bool)
            and stored == wanted
        )
    return isinstance(stored, str) and stored == wanted


def parse(
    name: Optional[str], others: Iterable[tuple[str, str]], limits: Limits
) -> QueueFilter:
    """
    The filter of a listing's query.

    @param name: the C{name} parameter, if given (empty means no filter).
    @param others: the C{(key, value)} query parameters that are not
        listing parameters.
    @raise ValidationFailed: C{name} cannot be part of a queue name, or
        there are too many metadata filters.
    """
    if name:
        try:
            validation.queueName(name, limits)
        except ValidationFailed:
            raise ValidationFailed(
                "name must be part of a queue name: up to "
                f"{limits.maxQueueNameLength} ASCII letters, digits, "
                "underscores, dashes and dots."
            ) from None
    metadata = []
    for key, value in sorted(dict(others).items()):
        if key in LISTING_PARAMETERS:
            continue
        metadata.append((key, int(value) if _NUMBER.fullmatch(value) else value))
    if len(metadata) > MAX_METADATA_FILTERS:
        raise ValidationFailed(
            f"A queue listing takes at most {MAX_METADATA_FILTERS} metadata filters."
        )
    return QueueFilter(name=name or None, metadata=tuple(metadata))


async def listing(
    store: Any,
    project: str,
    marker: Optional[str],
    limit: int,
    detailed: bool,
    withCount: bool,
    queueFilter: Optional[QueueFilter],
) -> tuple[list[QueueInfo], Optional[int]]:
    """
    L{page}, with the L{count} when C{withCount} (else L{None}); without
    a filter, the store's own listing and count.
    """
    if not queueFilter:
        queues = list(await store.listQueues(project, marker, limit, detailed))
        return queues, (await store.countQueues(project) if withCount else None)
    queues = await page(store, project, marker, limit, detailed, queueFilter)
    total = await count(store, project, queueFilter) if withCount else None
    return queues, total


async def page(
    store: Any,
    project: str,
    marker: Optional[str],
    limit: int,
    detailed: bool,
    queueFilter: QueueFilter,
) -> list[QueueInfo]:
    """
    Up to C{limit} of the project's queues after C{marker} that
    C{queueFilter} keeps, in name order, read from C{store} (an
    L{marconi.core.interfaces.IMessageStore}) a page at a time.
    """
    found: list[QueueInfo] = []
    withMetadata = detailed or bool(queueFilter.metadata)
    async for queue in _scan(store, project, marker, queueFilter, withMetadata):
        found.append(queue if detailed else QueueInfo(queue.name))
        if len(found) >= limit:
            break
    return found


async def count(store: Any, project: str, queueFilter: QueueFilter) -> int:
    """
    How many of the project's queues in C{store} C{queueFilter} keeps.
    """
    total = 0
    async for _ in _scan(store, project, None, queueFilter, bool(queueFilter.metadata)):
        total += 1
    return total


async def _scan(
    store: Any,
    project: str,
    marker: Optional[str],
    queueFilter: QueueFilter,
    withMetadata: bool,
) -> AsyncIterator[QueueInfo]:
    after = marker
    while True:
        chunk = list(await store.listQueues(project, after, SCAN_PAGE, withMetadata))
        for queue in chunk:
            if queueFilter.matches(queue):
                yield queue
        if len(chunk) < SCAN_PAGE:
            return
        after = chunk[-1].name
