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

    def observeEvents(self, observer: Callable[[str, int], None]) -> None:
        self._events = observer

    def _report(self, kind: str, count: int) -> None:
        if count and self._events is not None:
            self._events(kind, count)
