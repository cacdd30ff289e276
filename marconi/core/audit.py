"""
The audit river: every action on a project's queues, messages and claims,
and every request refused for that project, recorded as an event.

Events are kept in messages of a reserved queue of the project, L{RIVER},
whose name no client can give (queue names are letters, digits, C{_}, C{-}
and C{.}), so the river works on every store and is never read, claimed or
deleted through the queue API.  An event is a JSON object with its
C{action}, the C{queue}, the time (C{at}) and the ids and counts involved;
it never holds a message body, queue metadata or a credential.

One message, a I{record}, holds the events of one write: its body is the
JSON array of them, in the order recorded, each an array C{[action, queue,
at, fields]} (encoded once, when written), and it carries no tags (a record
of an earlier version holds one event, as a JSON object).  Readings
filter while they read.  An event's position is its record's store marker
times L{STRIDE} plus its place in the record (from 1), so a page may end
inside a record and the next goes on there.  A record lives for the
configured retention (its TTL).

Recording never waits: the write is started after the store answered the
operation, and a failed write is logged.  While a write of a project's
river is in flight, the events recorded meanwhile wait for the next one
(at most L{MAX_BATCH} a record).  The river keeps the writes in flight,
and L{RiverService} waits for them (for at most L{FLUSH_TIMEOUT} seconds)
before it stops the store when the node stops.
"""

import base64
import binascii
import hashlib
import heapq
import hmac
import json
import re
from dataclasses import dataclass, replace
from typing import Any, Iterator, Mapping, Optional, Sequence

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from marconi.core import events
from marconi.core.errors import ValidationFailed
from marconi.core.interfaces import IMessageStore
from marconi.core.models import MessageQuery, NewMessage
from marconi.core.text import parseBoolean

# Sorts after every valid queue name, so it can only end a queue listing.
RIVER = "~audit"
CLIENT_ID = "marconi-audit"
DEFAULT_RETENTION = 7 * 24 * 3600

# The actions recorded: every action of the bus (see L{marconi.core.events}).
ACTIONS = events.ACTIONS

# Seconds a stopping node waits for the river's writes in flight.
FLUSH_TIMEOUT = 5.0

# The most events one river write (one record) holds.
MAX_BATCH = 100

# An event's position: its record's store marker times this, plus its place
# in the record (1 to MAX_BATCH).
STRIDE = 1000

# How many store pages, and how many events, one read scans for events that
# pass its filters before it answers with what it found and a marker to go
# on from.
MAX_SCANNED_PAGES = 20
MAX_SCANNED_EVENTS = 2000

# Markers of a gathered river: how long their text may be, and how many
# bytes of HMAC they carry.
MAX_MARKER_LENGTH = 2048
MARKER_MAC_BYTES = 16
_POSITION = re.compile(r"[0-9]{1,19}")
_BASE64 = re.compile(r"[A-Za-z0-9_-]+")

log = Logger()


# The default of [audit] interval: the events recorded while a write of a
# project's river is in flight are written this many seconds after that
# write started, at the earliest (AuditRiver._write).
DEFAULT_INTERVAL = 0.1
MAX_INTERVAL = 10.0


@dataclass(frozen=True)
class AuditSettings:
    """
    The C{[audit]} section: C{enabled} (default true), C{retention},
    seconds an event is kept (default 7 days), and C{interval}: the events
    recorded while a write of a project's river is in flight wait, after
    it, until this many seconds have passed since it started (default 0.1;
    0 for none).
    """

    enabled: bool = True
    retention: int = DEFAULT_RETENTION
    interval: float = DEFAULT_INTERVAL


def parseSettings(section: Mapping[str, str]) -> AuditSettings:
    """
    @raise ValueError: naming the setting that is wrong.
    """
    unknown = set(section) - {"enabled", "retention", "interval"}
    if unknown:
        raise ValueError(f"unknown [audit] settings: {', '.join(sorted(unknown))}")
    settings = AuditSettings()
    enabled = settings.enabled
    retention = settings.retention
    interval = settings.interval
    if "enabled" in section:
        try:
            enabled = parseBoolean(section["enabled"])
        except ValueError:
            raise ValueError("[audit] enabled must be true or false") from None
    if "retention" in section:
        try:
            retention = int(section["retention"])
        except ValueError:
            raise ValueError("[audit] retention must be an integer") from None
        if retention < 60:
            raise ValueError("[audit] retention must be at least 60 seconds")
    if "interval" in section:
        try:
            interval = float(section["interval"])
        except ValueError:
            raise ValueError("[audit] interval must be a number") from None
        if not 0 <= interval <= MAX_INTERVAL:
            raise ValueError(
                f"[audit] interval must be from 0 to {MAX_INTERVAL:g} seconds"
            )
    return AuditSettings(enabled, retention, interval)


@dataclass(frozen=True)
class AuditQuery:
    """
    What a reading of the river asks for; every filter given must match.

    @ivar marker: read after this position (exclusive).
    @ivar since: events at or after this time.
    @ivar until: events at or before this time.
    """

    limit: int
    marker: Optional[int] = None
    queue: Optional[str] = None
    action: Optional[str] = None
    since: Optional[float] = None
    until: Optional[float] = None
    tags: tuple[str, ...] = ()

    def matches(self, event: Mapping[str, Any]) -> bool:
        """
        Whether C{event} passes the filters but the time range.  An event
        carries the tags C{action:<action>} and C{queue:<queue>}.
        """
        action = event.get("action")
        queue = event.get("queue")
        if self.action is not None and action != self.action:
            return False
        if self.queue is not None and queue != self.queue:
            return False
        for tag in self.tags:
            kind, _, value = tag.partition(":")
            if not (
                (kind == "action" and value == action)
                or (kind == "queue" and queue is not None and value == queue)
            ):
                return False
        return True


class AuditRiver:
    """
    The audit river of every project of one store.
    """

    def __init__(
        self,
        store: IMessageStore,
        clock: IReactorTime,
        settings: AuditSettings = AuditSettings(),
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        # The writes in flight, with how many events each holds.
        self._writing: dict[Deferred, int] = {}
        # By project with a write in flight or due: the events for the next
        # one.
        self._queued: dict[str, list] = {}
        # By project whose next write waits for its interval: the timer.
        self._due: dict[str, IDelayedCall] = {}

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def observe(self, event: events.Event) -> None:
        """
        Record an event of the bus (a listener of L{events.Events}).
        """
        self._add(event.project, (event.action, event.queue, event.at, event.fields))

    def record(
        self, project: str, action: str, queue: Optional[str] = None, **fields: Any
    ) -> None:
        """
        Add an event to C{project}'s river, without waiting for the write.

        @param fields: more of the event (ids, counts); L{None} values are
            left out.
        """
        fields = {k: v for k, v in fields.items() if v is not None}
        self._add(project, (action, queue, self.clock.seconds(), fields))

    def _add(self, project: str, event: tuple) -> None:
        """
        Write C{event}, C{(action, queue, at, fields)}, to C{project}'s
        river now, or with the next write if one is in flight.  Nothing is
        copied or encoded here: that is done once per write.
        """
        if not self.settings.enabled or event[1] == RIVER:
            return
        waiting = self._queued.get(project)
        if waiting is not None:
            # A write of this project's river is in flight or due: this
            # event goes in the next one, with every other that arrives
            # first, at once if that makes a full record.
            waiting.append(event)
            if len(waiting) >= MAX_BATCH and project in self._due:
                self._due.pop(project).cancel()
                self._writeQueued(project)
            return
        self._write(project, [event])

    def _writeQueued(self, project: str) -> None:
        """
        Write the events queued for C{project}'s river now.
        """
        queued = self._queued.pop(project, None)
        if queued:
            self._write(project, queued[:MAX_BATCH], queued[MAX_BATCH:])

    def _writeDue(self) -> None:
        """
        Write every project's queued events now, without waiting for the
        interval.
        """
        for project in list(self._due):
            self._due.pop(project).cancel()
            self._writeQueued(project)

    def _write(self, project: str, batch: list, rest: Sequence = ()) -> None:
        """
        Write C{batch} to C{project}'s river as one record; C{rest}, and
        the events recorded while it is in flight, are written together
        when it is done, or once the settings' C{interval} has passed since
        it started, whichever is later (at once if they fill a record), so
        a busy project costs the store one river write per interval, or
        per write when its writes take longer, not one per event.
        """
        self._queued[project] = list(rest)
        started = self.clock.seconds()
        try:
            record = NewMessage(body=_encode(batch), ttl=self.settings.retention)
            d = self.store.postMessages(
                project, RIVER, [record], CLIENT_ID, self.clock.seconds()
            )
        except Exception:
            d = fail()
        d.addErrback(
            lambda f: log.failure(
                "Could not record {count} event(s) of project {project}",
                f,
                count=len(batch),
                project=project,
            )
        )

        def written(_: Any) -> None:
            self._writing.pop(d, None)
            following = self._queued.get(project)
            if not following:
                self._queued.pop(project, None)
                return
            wait = started + self.settings.interval - self.clock.seconds()
            if wait > 0 and len(following) < MAX_BATCH:
                self._due[project] = self.clock.callLater(
                    wait, self._intervalEnded, project
                )
            else:
                self._writeQueued(project)

        if d.called:
            written(None)
        else:
            self._writing[d] = len(batch)
            d.addBoth(written)

    def _intervalEnded(self, project: str) -> None:
        """
        The interval of C{project}'s river has passed: write what waited.
        """
        del self._due[project]
        self._writeQueued(project)

    def flush(self) -> Deferred:
        """
        Write the events waiting for their interval now.

        @return: a L{Deferred} firing once the writes started or queued so
            far are done (stop the store only after it fired, or they are
            lost).
        """

        async def done() -> None:
            self._writeDue()
            while self._writing:
                await DeferredList(list(self._writing))
                self._writeDue()

        return Deferred.fromCoroutine(done())

    @property
    def pending(self) -> int:
        """
        How many writes are in flight.
        """
        return len(self._writing)

    async def drain(self, timeout: float) -> None:
        """
        Wait until no write is in flight (those started while waiting
        included), or C{timeout} seconds have passed; then log how many
        are left, if any.
        """
        deadline = self.clock.seconds() + timeout
        self._writeDue()
        while self._writing:
            left = deadline - self.clock.seconds()
            if left <= 0:
                log.warn(
                    "Stopping with {count} audit events not yet written",
                    count=sum(self._writing.values())
                    + sum(map(len, self._queued.values())),
                )
                return
            woken: Deferred = Deferred()
            DeferredList(list(self._writing)).addBoth(_wake, woken)
            timer = self.clock.callLater(left, _wake, None, woken)
            await woken
            if timer.active():
                timer.cancel()
            self._writeDue()

    async def read(
        self, project: str, query: AuditQuery
    ) -> tuple[list[dict], Optional[int]]:
        """
        Events of C{project}'s river in the order recorded.

        @return: the events (each with its C{id} and C{marker}) and the
            marker to read on from, or L{None} when the river has no more.
        """
        part = await self.readPart(project, query)
        return part.events, part.position

    async def readPart(
        self, project: str, query: AuditQuery, store: Optional[Any] = None
    ) -> "RiverPart":
        """
        Events of C{project}'s river in C{store} (by default the river's
        own), in the order recorded, and where to read on from.
        """
        store = self.store if store is None else store
        found: list[dict] = []
        after = query.marker or 0
        record = after // STRIDE
        storeQuery = MessageQuery(
            limit=query.limit,
            clientId=CLIENT_ID,
            echo=True,
            includeClaimed=True,
            includeDelayed=True,
            # From the record holding the position on, that record included.
            marker=record - 1 if record > 1 else None,
        )
        at = None
        last = after
        scanned = 0
        for _ in range(MAX_SCANNED_PAGES):
            page = await store.listMessages(
                project, RIVER, storeQuery, self.clock.seconds()
            )
            for message in page:
                for place, eventId, event in _decode(message):
                    spot = message.marker * STRIDE + place
                    if spot <= after:
                        continue
                    if scanned == MAX_SCANNED_EVENTS:
                        return RiverPart(found, last, at)
                    scanned += 1
                    last = spot
                    at = event["at"]
                    if query.until is not None and at > query.until:
                        return RiverPart(found, None)
                    if query.since is not None and at < query.since:
                        continue
                    if not query.matches(event):
                        continue
                    found.append({"id": eventId, "marker": str(spot), **event})
                    if len(found) == query.limit:
                        return RiverPart(found, spot)
            if len(page) < query.limit:
                return RiverPart(found, None)
            storeQuery = replace(storeQuery, marker=page[-1].marker)
        # Cut short: read only up to the time of the last event looked at.
        return RiverPart(found, last, at)


def _encode(batch: list) -> str:
    """
    The body of a record of C{batch}: a JSON array of the events, each an
    array C{[action, queue, at, fields]} (C{queue} may be null).
    """
    return json.dumps(batch, separators=(",", ":"))


def recordEvents(body: str) -> int:
    """
    How many events the river record of body C{body} holds: the length of
    its JSON array, or one for a record of an earlier version (a JSON
    object).  Every store counts an expired river record as its events, in
    what its purge reports and returns (so the C{expired} metric counts
    events, not records).
    """
    try:
        events = json.loads(body)
    except ValueError:
        return 1
    return len(events) if isinstance(events, list) and events else 1


def _decode(record: Any) -> list[tuple[int, str, dict]]:
    """
    The events of a record, each with its place in it (from 1) and its id.
    A record of an earlier version is one event, a JSON object, with the
    record's id.
    """
    events = json.loads(record.body)
    if isinstance(events, dict):
        return [(1, record.id, events)]
    return [
        (i, f"{record.id}.{i}", _event(*event)) for i, event in enumerate(events, 1)
    ]


def _event(action: str, queue: Optional[str], at: float, fields: dict) -> dict:
    """
    An event as it is read: its fields, C{action}, C{at} and C{queue} (when
    it has one), keys in order.
    """
    event = dict(fields, action=action, at=at)
    if queue is not None:
        event["queue"] = queue
    return dict(sorted(event.items()))


@dataclass(frozen=True)
class RiverPart:
    """
    A page of one store's river.

    @ivar events: the events, in the order recorded, each with its C{id}
        and its C{marker} in the store (a L{str} of digits).
    @ivar position: the marker to read on from, or L{None} when the store
        has no more.
    @ivar horizon: when the read was cut short before it found a full
        page, the time of the last event it looked at: the store was read
        up to then only.
    """

    events: list
    position: Optional[int]
    horizon: Optional[float] = None


@dataclass(frozen=True)
class RiverPage:
    """
    A page of a project's river gathered from every store of a cluster.

    @ivar next: the marker of the next page, or L{None} when there is no
        more.
    @ivar missing: the names of the nodes whose river could not be read.
    """

    events: list
    next: Optional[str]
    missing: Sequence[str] = ()


def position(marker: Optional[str]) -> Optional[int]:
    """
    The position of a marker of one store's river.

    @raise ValidationFailed: it is not one.
    """
    if marker is None:
        return None
    if not _POSITION.fullmatch(marker) or int(marker) >= 2**63:
        raise ValidationFailed("marker is not valid.")
    return int(marker) or None


class RiverMarkers:
    """
    The markers of a river gathered from several stores: one position per
    store (keyed by a name of a node keeping its queues there), signed, so
    that a marker this cluster did not make is refused.  Clients see them
    as opaque text.
    """

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"marconi audit markers", hashlib.sha256).digest()

    def _sign(self, project: str, payload: bytes) -> bytes:
        mac = hmac.new(self._key, project.encode("utf-8") + b"\0" + payload, "sha256")
        return mac.digest()[:MARKER_MAC_BYTES]

    def encode(self, project: str, positions: Mapping[str, int]) -> str:
        text = json.dumps(dict(sorted(positions.items())), separators=(",", ":"))
        payload = text.encode("utf-8")
        return f"{_b64(payload)}.{_b64(self._sign(project, payload))}"

    def decode(self, project: str, marker: str) -> dict[str, int]:
        """
        @return: the positions, by source.
        @raise ValidationFailed: C{marker} is malformed, or was not made
            by this cluster for this project.
        """
        try:
            if len(marker) > MAX_MARKER_LENGTH:
                raise ValueError("too long")
            payloadText, _, macText = marker.partition(".")
            payload = _unb64(payloadText)
            if not hmac.compare_digest(_unb64(macText), self._sign(project, payload)):
                raise ValueError("bad signature")
            positions = json.loads(payload)
            if not isinstance(positions, dict) or not all(
                type(v) is int and 0 <= v < 2**63 for v in positions.values()
            ):
                raise ValueError("bad positions")
        except ValueError:
            raise ValidationFailed("marker is not valid.") from None
        return positions


def gather(
    project: str,
    parts: Mapping[str, Optional[RiverPart]],
    start: Mapping[str, int],
    limit: int,
    markers: RiverMarkers,
) -> tuple[list[dict], Optional[str]]:
    """
    Merge the pages of several stores' rivers in time order.

    Each store's events are taken in their order, so a page is a prefix of
    each store's page and the next one goes on after it: nothing is
    skipped or repeated across pages.  A store read only up to a time (see
    L{RiverPart.horizon}) holds the merge at that time.

    @param parts: each store's page read from its position in C{start}, by
        source; L{None} for a store that could not be read (it keeps its
        position).
    @return: up to C{limit} events, each with the marker that reads on
        after it, and the marker of the next page (L{None} when every store
        that could be read was read to its end, even while some could not:
        following the next page would only repeat an empty one; the
        stores missing keep their positions in the events' markers).
    """
    positions = {source: start.get(source, 0) for source in parts}
    read = {source: part for source, part in parts.items() if part is not None}
    horizons = [p.horizon for p in read.values() if p.horizon is not None]
    horizon = min(horizons) if horizons else None
    merged = heapq.merge(
        *(_timed(source, part) for source, part in sorted(read.items()))
    )
    taken: dict[str, int] = dict.fromkeys(read, 0)
    events: list = []
    for at, source, _, event in merged:
        if len(events) == limit or (horizon is not None and at > horizon):
            break
        positions[source] = int(event["marker"])
        taken[source] += 1
        events.append({**event, "marker": markers.encode(project, positions)})
    more = False
    for source, part in read.items():
        if taken[source] < len(part.events):
            more = True
        elif part.position is not None:
            positions[source] = max(positions[source], part.position)
            more = True
    return events, markers.encode(project, positions) if more else None


def _timed(source: str, part: RiverPart) -> Iterator[tuple]:
    """
    The events of C{part}, in its order, keyed for L{heapq.merge}.
    """
    for i, event in enumerate(part.events):
        yield event["at"], source, i, event


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not _BASE64.fullmatch(text):
        raise ValueError("not base64")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not base64") from None


class RiverService(MultiService):
    """
    The parent of the store the river writes to: it starts the store, and
    when the node stops it waits for the writes in flight of its C{river}
    (at most C{timeout} seconds) before it stops the store, so that the
    events of the last operations are not lost.

    @ivar river: the L{AuditRiver} writing to the store, or L{None}.
    """

    def __init__(
        self,
        store: Any,
        river: Optional[AuditRiver] = None,
        timeout: float = FLUSH_TIMEOUT,
    ) -> None:
        super().__init__()
        self.river = river
        self.timeout = timeout
        store.setServiceParent(self)

    def stopService(self) -> Deferred:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self.river is not None:
            await self.river.drain(self.timeout)
        await super().stopService()


def _wake(_: object, woken: Deferred) -> None:
    if not woken.called:
        woken.callback(None)


def idsOf(items: Sequence[Any]) -> list[str]:
    return [item.id for item in items]
