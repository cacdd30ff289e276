"""
The monitor a node has when no monitoring driver is configured.
"""

from typing import Any, Optional

from zope.interface import implementer

from marconi.core.interfaces import IMonitor


@implementer(IMonitor)
class NullMonitor:
    """
    An L{IMonitor} that keeps nothing.
    """

    def requestServed(self, route: str, status: int, seconds: float) -> None:
        pass

    def messagesCounted(self, kind: str, count: int) -> None:
        pass

    def storageCall(self, operation: str, seconds: float, succeeded: bool) -> None:
        pass

    def queueDepths(self, depths: Any) -> None:
        pass

    def forwardingError(self, peer: str) -> None:
        pass

    def publicResource(self) -> Optional[Any]:
        return None
