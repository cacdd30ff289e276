"""
The bus's events: every action on a project's queues, messages and claims,
told once, where it is served, to whoever listens.

L{marconi.core.messaging.Messaging} emits an L{Event} after the store has
answered an operation (and for what a store does on its own: expiry,
dead-lettering).  The audit river, the operator console and the extensions
(long-polling waiters, push delivery) are listeners; none of them wraps or
patches the bus.

A listener is a plain callable taking the event.  It is called on the
reactor thread, in the order listeners were added, and must not block: it
starts whatever work it has (a write, a wake-up) and returns.  What a
listener raises is logged and does not reach the request or the other
listeners.  With no listener an emit costs a method call.

The actions and their fields (each field is left out when it does not
apply):

    - C{queue_created}, C{queue_updated}, C{queue_deleted}: no fields.
    - C{posted}: C{messages} (the new ids, in order), C{count},
      C{client}.
    - C{claimed}: C{claim}, C{messages}, C{count}, C{ttl}, C{grace}.
    - C{renewed}: C{claim}, C{ttl}, C{grace}.
    - C{released}: C{claim}.
    - C{deleted}: C{messages}, C{count} (of a bulk delete), C{claim} (of a
      delete by id under a claim).
    - C{popped}: C{messages}, C{count}.
    - C{expired}, C{dead_lettered}: C{count}, when the store tells.
    - C{refused}: C{method}, C{path}, C{status}, C{title} (a request of a
      known project that was refused).
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, cast

from twisted.logger import Logger

ACTIONS = (
    "queue_created",
    "queue_updated",
    "queue_deleted",
    "posted",
    "claimed",
    "renewed",
    "released",
    "deleted",
    "popped",
    "expired",
    "dead_lettered",
    "refused",
)

log = Logger()


@dataclass(frozen=True, slots=True)
class Event:
    """
    One action of one project.

    @ivar queue: the queue acted on, or L{None} for a project-wide action.
    @ivar at: when, by the bus's clock.
    @ivar fields: the action's details (see the module's docstring); never
        a message body, queue metadata or a credential.
    """

    project: str
    action: str
    queue: Optional[str]
    at: float
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """
        How many messages the action concerned (0 when it concerns none).
        """
        count = self.fields.get("count")
        if count is None:
            count = len(self.fields.get("messages", ()))
        return int(count)


class _MadeEvent:
    """
    An L{Event} in the making, set by plain slot assignment, which then
    becomes an L{Event} (see L{marconi.core.models.makeMessage}): the bus
    makes one for every write it serves.
    """

    __slots__ = Event.__slots__

    def __init__(
        self,
        project: str,
        action: str,
        queue: Optional[str],
        at: float,
        fields: Mapping[str, Any],
    ) -> None:
        self.project = project
        self.action = action
        self.queue = queue
        self.at = at
        self.fields = fields
        self.__class__ = Event  # type: ignore[assignment]


_makeEvent = cast(Callable[..., Event], _MadeEvent)

Listener = Callable[[Event], None]


class Events:
    """
    The listeners of one bus.
    """

    def __init__(self, clock: Any) -> None:
        """
        @param clock: an L{IReactorTime}, the time of the events.
        """
        self._clock = clock
        self._listeners: tuple[Listener, ...] = ()

    def listen(self, listener: Listener) -> Callable[[], None]:
        """
        Call C{listener} with every event from now on.

        @return: a function that stops it (calling it twice is harmless).
        """
        self._listeners = self._listeners + (listener,)

        def stop() -> None:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

        return stop

    def emit(
        self, project: str, action: str, queue: Optional[str] = None, **fields: Any
    ) -> None:
        """
        Tell every listener of an action.

        @param fields: the action's details; L{None} values are left out.
        """
        listeners = self._listeners
        if not listeners:
            return
        if None in fields.values():
            fields = {k: v for k, v in fields.items() if v is not None}
        event = _makeEvent(project, action, queue, self._clock.seconds(), fields)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.failure(
                    "A listener failed on the {action} event of project {project}",
                    action=action,
                    project=project,
                )
