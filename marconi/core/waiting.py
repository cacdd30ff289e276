"""
Long-polling: requests that wait up to a deadline for messages.

A listing, a claim or a pop given C{wait=SECONDS} answers as soon as its
query finds something, or with the empty answer at the deadline.  The
waiting requests of a node are kept in one L{Waiters}, which listens to the
bus's events (L{marconi.core.events}) once for all of them: an event that
can make messages visible or claimable in a queue wakes the waiters of that
queue, and each re-runs its own query (tags, echo, markers and claim rules
apply as they do to a request that does not wait).  A waiter whose query is
still empty (another consumer was faster, the message carried other tags)
goes back to sleep until its deadline, where its query runs one last time.

What wakes a waiter: a post (C{posted}) and a released claim
(C{released}) on its queue.  Messages that become visible without an event
(a delayed message's delay ends, a claim expires) are found by the
deadline's last query, or by an earlier wake.

An idle waiter is a few small objects and one L{IDelayedCall} on the
injected clock; nothing runs until an event of its queue or its deadline.
When the request is cancelled (its client went away), the waiter is
removed and its deadline cancelled.
"""

from typing import Any, Awaitable, Callable, Optional, TypeVar
from weakref import WeakKeyDictionary

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from marconi.core.errors import MarconiError
from marconi.core.events import Event, Events

#: The events that wake the waiters of their queue.
WAKING = frozenset(("posted", "released"))

#: The most seconds any request may wait, whatever the configured
#: C{max_wait}; a relay extends its forwarding timeout by at most this.
MAXIMUM_WAIT = 300

T = TypeVar("T")


class TooManyWaiters(MarconiError):
    """
    The node, or the request's project on the node, holds as many waiting
    requests as it may; the request found nothing at once and cannot wait.
    """

    title = "Service unavailable"

    #: The seconds after which a client may try again.
    retryAfter = 1


class _Waiter:
    """
    One waiting request: asleep on a L{Deferred} until a wake or its
    deadline, or awake running its query.
    """

    __slots__ = ("_signal", "_pending", "expired", "deadline")

    def __init__(self) -> None:
        self._signal: Optional[Deferred] = None
        # A wake that came while the query ran: the query runs again.
        self._pending = False
        self.expired = False
        self.deadline: Optional[IDelayedCall] = None

    @property
    def asleep(self) -> bool:
        return self._signal is not None

    def wake(self) -> None:
        signal, self._signal = self._signal, None
        if signal is None:
            self._pending = True
        elif not signal.called:
            signal.callback(None)

    def expire(self) -> None:
        self.deadline = None
        self.expired = True
        self.wake()

    def sleep(self) -> Deferred:
        """
        A L{Deferred} that fires on the next wake or at the deadline (at
        once if one came since the last sleep).
        """
        if self._pending or self.expired:
            self._pending = False
            return succeed(None)
        self._signal = Deferred()
        return self._signal


class Waiters:
    """
    The waiting requests of one node, by (project, queue).
    """

    def __init__(
        self,
        events: Events,
        clock: IReactorTime,
        limit: int,
        perProject: Optional[int] = None,
    ) -> None:
        """
        @param events: the bus's events, listened to once.
        @param clock: where deadlines are scheduled.
        @param limit: how many requests may wait at once.
        @param perProject: how many requests of one project may wait at
            once; by default (L{None} or 0) L{projectLimit} of C{limit}.
        """
        self._clock = clock
        self.limit = limit
        self.perProject = perProject or projectLimit(limit)
        self._waiting: dict[tuple[str, str], dict[_Waiter, None]] = {}
        self.count = 0
        #: The waiting requests of each project that has some.
        self.counts: dict[str, int] = {}
        self.stopListening = events.listen(self._observe)

    def _observe(self, event: Event) -> None:
        if event.action not in WAKING or event.queue is None:
            return
        waiters = self._waiting.get((event.project, event.queue))
        if waiters:
            for waiter in list(waiters):
                waiter.wake()

    def asleep(self) -> int:
        """
        How many waiters sleep, waiting for a wake or their deadline.
        """
        return sum(w.asleep for ws in self._waiting.values() for w in ws)

    async def wait(
        self,
        project: str,
        queue: str,
        seconds: int,
        query: Callable[[], Awaitable[T]],
        found: Callable[[T], bool],
    ) -> T:
        """
        Run C{query} until C{found} says it found something, waking on the
        events of the queue, and at most C{seconds} from now.

        @return: the last result of C{query}: the first found, or the empty
            one of the deadline.
        @raise TooManyWaiters: the query found nothing and the node already
            holds C{limit} waiting requests, or C{perProject} of C{project}.
        """
        if seconds <= 0:
            return await query()
        full = None
        if self.count >= self.limit:
            full = "This server holds as many waiting requests as it may"
        elif self.counts.get(project, 0) >= self.perProject:
            full = "This server holds as many waiting requests of the project as it may"
        if full is not None:
            result = await query()
            if found(result):
                return result
            raise TooManyWaiters(
                f"{full}; try again in {TooManyWaiters.retryAfter} second(s), "
                "or without wait."
            )
        # Registered before the first query runs, so that a post made while
        # it runs is not missed.
        key = (project, queue)
        waiter = _Waiter()
        self._waiting.setdefault(key, {})[waiter] = None
        self.count += 1
        self.counts[project] = self.counts.get(project, 0) + 1
        waiter.deadline = self._clock.callLater(seconds, waiter.expire)
        try:
            while True:
                result = await query()
                if found(result) or waiter.expired:
                    return result
                await waiter.sleep()
        finally:
            self._forget(key, waiter)

    def _forget(self, key: tuple[str, str], waiter: _Waiter) -> None:
        self.count -= 1
        left = self.counts[key[0]] - 1
        if left:
            self.counts[key[0]] = left
        else:
            del self.counts[key[0]]
        waiters = self._waiting[key]
        del waiters[waiter]
        if not waiters:
            del self._waiting[key]
        if waiter.deadline is not None and waiter.deadline.active():
            waiter.deadline.cancel()
        waiter.deadline = None


_SHARED: "WeakKeyDictionary[Events, Waiters]" = WeakKeyDictionary()


def projectLimit(limit: int) -> int:
    """
    The default number of waiting requests of one project: a tenth of the
    node's C{limit}, at least 1.
    """
    return max(1, limit // 10)


def waitersOf(
    events: Events, clock: IReactorTime, limit: int, perProject: Optional[int] = None
) -> Waiters:
    """
    The L{Waiters} of the bus whose events are C{events}, made on first
    use: the sites of one node (its public listener and its cluster
    listener) share them, and with them the node's limits.
    """
    waiters = _SHARED.get(events)
    if waiters is None:
        waiters = _SHARED[events] = Waiters(events, clock, limit, perProject)
    return waiters


def found(result: Any) -> bool:
    """
    Whether a listing, a pop or a claim found messages.
    """
    if result is None:
        return False
    messages = getattr(result, "messages", result)
    return bool(messages)
