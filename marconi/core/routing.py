"""
The router of a node on its own: every request is served here.
"""

from dataclasses import replace
from typing import Any, Optional

from twisted.internet.defer import Deferred
from zope.interface import implementer

from marconi.core import audit
from marconi.core.interfaces import IRouter


@implementer(IRouter)
class LocalRouter:
    """
    An L{IRouter} with no other node: no request is forwarded, none is
    taken as forwarded, and listings are this node's own.
    """

    def verify(self, request: Any) -> Optional[str]:
        return None

    def route(self, project: str, queue: str) -> Optional[str]:
        return None

    def forward(self, request: Any, project: str, owner: str) -> Deferred:
        raise AssertionError(f"a node on its own has no owner {owner!r} to ask")

    def publishedRing(self) -> dict:
        """
        No ring: every request is served here.
        """
        return {"scheme": None, "version": None, "nodes": []}

    def listQueues(
        self, project, marker, limit, detailed, withCount, local, queueFilter=None
    ):
        """
        This node's own page: what C{local} finds (filtered by it).
        """

        async def mine() -> Any:
            return await local()

        return Deferred.fromCoroutine(mine())

    def readAudit(self, project, query, marker, local):
        """
        This node's own river: what C{local} finds from C{marker}.
        """

        async def mine() -> Any:
            part = await local(replace(query, marker=audit.position(marker)))
            following = None if part.position is None else str(part.position)
            return audit.RiverPage(part.events, following)

        return Deferred.fromCoroutine(mine())
