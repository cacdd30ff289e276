"""
Server push: the node listens once to its bus's events and hands each new
message to the sockets subscribed to its queue.
"""

from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from marconi.core.events import Event
from marconi.extensions.websockets import frames

log = Logger()

#: A subscriber takes the payload of one frame and must not block (it
#: queues it in its socket's L{marconi.extensions.websockets.outbox.Outbox}).
Subscriber = Callable[[bytes], None]


class Fanout:
    """
    The subscribers of each (project, queue) on this node.

    Messages are posted, and their events emitted, on the queue's owner, so
    a socket hears the queues this node serves.  Each new message is read
    once, by id, through the bus (decrypted, as any reader gets it), and
    the same frame goes to every subscriber of its project's queue; a
    delayed message is pushed when its delay ends.
    """

    def __init__(self, bus: Any, clock: Any) -> None:
        self.bus = bus
        self.clock = clock
        self._subscribers: dict[tuple[str, str], dict[Any, Subscriber]] = {}
        self._stop: Optional[Callable[[], None]] = None
        self._delayed: set = set()

    def start(self) -> None:
        if self._stop is None:
            self._stop = self.bus.events.listen(self._observe)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None
        for call in list(self._delayed):
            if call.active():
                call.cancel()
        self._delayed.clear()

    def subscribe(self, project: str, queue: str, key: Any, send: Subscriber) -> None:
        """
        Push the new messages of C{queue} of C{project} to C{send}, until
        L{unsubscribe} is called with the same C{key}.
        """
        self._subscribers.setdefault((project, queue), {})[key] = send

    def unsubscribe(self, project: str, queue: str, key: Any) -> None:
        subscribers = self._subscribers.get((project, queue))
        if subscribers is None:
            return
        subscribers.pop(key, None)
        if not subscribers:
            del self._subscribers[(project, queue)]

    def subscribed(self, project: str, queue: str) -> int:
        """
        How many subscribers C{queue} of C{project} has.
        """
        return len(self._subscribers.get((project, queue), ()))

    def _observe(self, event: Event) -> None:
        if event.action != "posted" or event.queue is None:
            return
        if (event.project, event.queue) not in self._subscribers:
            return
        ids = tuple(event.fields.get("messages") or ())
        if ids:
            self._read(event.project, event.queue, ids)

    def _read(self, project: str, queue: str, ids: tuple) -> None:
        d = Deferred.fromCoroutine(self._deliver(project, queue, ids))
        d.addErrback(
            lambda f: log.failure(
                "Pushing new messages of queue {queue} (project {project}) failed",
                f,
                queue=queue,
                project=project,
            )
        )

    async def _deliver(self, project: str, queue: str, ids: tuple) -> None:
        messages = await self.bus.getMessages(project, queue, ids)
        signer = await self.bus.signer(project, queue) if messages else None
        now = self.bus.now()
        for m in sorted(messages, key=lambda m: m.marker):
            if m.visibleAt > now:
                # Read again when its delay ends: it may be gone by then.
                self._later(m.visibleAt - now, project, queue, m.id)
            else:
                self._push(project, queue, frames.notification(m, queue, now, signer))

    def _later(self, delay: float, project: str, queue: str, messageId: str) -> None:
        def due() -> None:
            self._delayed.discard(call)
            if (project, queue) in self._subscribers:
                self._read(project, queue, (messageId,))

        call = self.clock.callLater(delay, due)
        self._delayed.add(call)

    def _push(self, project: str, queue: str, payload: bytes) -> None:
        for send in list(self._subscribers.get((project, queue), {}).values()):
            try:
                send(payload)
            except Exception:
                log.failure(
                    "A subscriber of queue {queue} (project {project}) failed",
                    queue=queue,
                    project=project,
                )
