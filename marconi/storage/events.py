"""
What every store reports of the changes it makes on its own.
"""

from typing import Callable, Optional

from zope.interface import implementer

from marconi.core.interfaces import IStoreEvents


@implementer(IStoreEvents)
class StoreEvents:
    """
    A mixin providing L{IStoreEvents}: a store calls L{_report} once a
    change it made inside an operation is durable.
    """

    _events: Optional[Callable[[str, int], None]] = None
    _queueEvents: Optional[Callable[[str, str, str, int], None]] = None

    def observeEvents(self, observer: Callable[[str, int], None]) -> None:
        self._events = observer

    def observeQueueEvents(
        self, observer: Callable[[str, str, str, int], None]
    ) -> None:
        self._queueEvents = observer

    def _report(
        self,
        kind: str,
        count: int,
        project: Optional[str] = None,
        queue: Optional[str] = None,
    ) -> None:
        if count and self._events is not None:
            self._events(kind, count)
        if project is not None and queue is not None:
            self._reportQueue(kind, project, queue, count)

    def _reportQueue(self, kind: str, project: str, queue: str, count: int) -> None:
        """
        Report a change to one queue only to the queue observer (the
        per-queue share of what L{_report} or a purge counted in total).
        """
        if count and self._queueEvents is not None:
            self._queueEvents(kind, project, queue, count)
