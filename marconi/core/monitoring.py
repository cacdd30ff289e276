"""
The monitor a node has when no monitoring driver is configured.
"""

from typing import Optional, Sequence

from twisted.web.resource import IResource
from zope.interface import implementer

from marconi.core.interfaces import IMonitor
from marconi.core.models import QueueDepth


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

    def queueDepths(self, depths: Sequence[QueueDepth]) -> None:
        pass

    def forwardingError(self, peer: str) -> None:
        pass

    def publicResource(self) -> Optional[IResource]:
        return None
