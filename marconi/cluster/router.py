"""
L{ClusterRouter}: the L{IRouter} of a node in a cluster.
"""

import heapq
import itertools
import json
from typing import Any, Awaitable, Callable, Optional
from urllib.parse import urlencode

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from zope.interface import implementer

from marconi.cluster import signing
from marconi.cluster.errors import NodeUnavailable
from marconi.cluster.forward import Answer, PeerClient, forwardHeaders, relayHeaders
from marconi.cluster.membership import Membership
from marconi.cluster.ring import Ring, key
from marconi.cluster.settings import ClusterConfig
from marconi.core.errors import Forbidden
from marconi.core.interfaces import IRouter
from marconi.core.models import QueueInfo

log = Logger()


@implementer(IRouter)
class ClusterRouter(MultiService):
    """
    Routes by the ring, forwards with a signature, checks the signatures of
    forwarded requests, and gathers listings from every node.

    A service: its child L{Membership} probes the peers while it runs, and
    stopping it closes the connection pool to the peers.
    """

    def __init__(
        self, config: ClusterConfig, reactor: Any, tlsPolicy: Optional[Any] = None
    ) -> None:
        """
        @param tlsPolicy: the L{twisted.web.iweb.IPolicyForHTTPS} of the
            connections to peers (mutual TLS), or L{None} for the default.
        """
        super().__init__()
        self.config = config
        self.ring = Ring.fromSettings(config)
        self.client = PeerClient(config, reactor, tlsPolicy)
        self.signer = signing.Signer(config.nodeName, config.secret, reactor)
        self.verifier = signing.Verifier(
            config.names, config.secret, reactor, config.clockWindow
        )
        self.membership = Membership(config, self.client, reactor)
        self.membership.setServiceParent(self)

    def stopService(self) -> Deferred:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await super().stopService()
        await self.client.close()

    # IRouter

    def verify(self, request: Any) -> Optional[str]:
        headers = {
            name.lower(): values[0]
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        request.content.seek(0)
        body = request.content.read()
        try:
            signed = self.verifier.verify(request.method, request.uri, body, headers)
        except signing.BadSignature as e:
            log.warn(
                "Refused forwarding headers from {client}: {why}",
                client=str(request.getClientAddress()),
                why=str(e),
            )
            raise Forbidden(
                "Requests may not carry X-Marconi-* forwarding headers "
                "unless a node of this cluster signed them."
            ) from None
        return None if signed is None else signed.project

    def route(self, project: str, queue: str) -> Optional[str]:
        owner = self.ring.owner(key(project, queue))
        if owner == self.config.nodeName:
            return None
        if not self.membership.isUp(owner):
            raise NodeUnavailable(owner)
        return owner

    def forward(self, request: Any, project: str, owner: str) -> Deferred:
        return Deferred.fromCoroutine(self._forward(request, project, owner))

    async def _forward(self, request: Any, project: str, owner: str) -> bytes:
        request.content.seek(0)
        body = request.content.read()
        method, uri = request.method, request.uri
        headers = forwardHeaders(
            request.requestHeaders, self.signer.headers(method, uri, body, project)
        )
        answer = await self._call(owner, method, uri, headers, body)
        relayHeaders(answer, request)
        return answer.body

    async def _call(
        self, node: str, method: bytes, uri: bytes, headers: Headers, body: bytes
    ) -> Answer:
        try:
            return await self.client.call(
                self.config.peer(node), method, uri, headers, body
            )
        except NodeUnavailable as e:
            log.error(
                "{method} {uri} to node {node} failed: {error}",
                method=method,
                uri=uri,
                node=node,
                error=e.description,
            )
            self.membership.reportFailure(node, e.description)
            raise

    def listQueues(
        self,
        project: str,
        marker: Optional[str],
        limit: int,
        detailed: bool,
        withCount: bool,
        local: Callable[[], Awaitable],
    ) -> Deferred:
        return Deferred.fromCoroutine(
            self._listQueues(project, marker, limit, detailed, withCount, local)
        )

    async def _listQueues(
        self,
        project: str,
        marker: Optional[str],
        limit: int,
        detailed: bool,
        withCount: bool,
        local: Callable[[], Awaitable],
    ) -> tuple:
        # This node's own listing first: it validates the arguments.
        mine, count = await local()
        peers = [n for n in self.ring.names if n != self.config.nodeName]
        down = [n for n in peers if not self.membership.isUp(n)]
        if down:
            raise NodeUnavailable(
                ", ".join(down), "is down, so the list of queues would be incomplete"
            )
        params: dict = {"limit": limit}
        if marker:
            params["marker"] = marker
        if detailed:
            params["detailed"] = "true"
        if withCount:
            params["with_count"] = "true"
        uri = b"/v2/queues?" + urlencode(params).encode()
        pages = await gatherResults(
            [
                Deferred.fromCoroutine(self._remoteQueues(n, project, uri, detailed))
                for n in peers
            ],
            consumeErrors=True,
        ).addErrback(_firstError)
        lists = [mine] + [queues for queues, _ in pages]
        merged = heapq.merge(*lists, key=lambda q: q.name)
        queues = list(itertools.islice(merged, limit))
        total = None
        if withCount:
            total = (count or 0) + sum(c or 0 for _, c in pages)
        return queues, total

    async def _remoteQueues(
        self, node: str, project: str, uri: bytes, detailed: bool
    ) -> tuple:
        headers = Headers(
            {
                b"accept": [b"application/json"],
                b"client-id": [b"marconi-node-" + self.config.nodeName.encode()],
            }
        )
        for name, value in self.signer.headers(b"GET", uri, b"", project).items():
            headers.setRawHeaders(name, [value])
        answer = await self._call(node, b"GET", uri, headers, b"")
        try:
            if answer.code != 200:
                raise ValueError(f"status {answer.code}")
            doc = json.loads(answer.body)
            queues = [
                QueueInfo(q["name"], q.get("metadata") if detailed else None)
                for q in doc["queues"]
            ]
            count = doc.get("count")
        except (ValueError, KeyError, TypeError) as e:
            log.error(
                "Node {node} answered a queue listing badly: {error}",
                node=node,
                error=str(e),
            )
            raise NodeUnavailable(node, "answered a queue listing badly") from None
        return queues, count

    def publishedRing(self) -> dict:
        """
        L{IRouter.publishedRing}: the ring's description, each node with the URL
        clients reach it at.
        """
        urls = {p.name: p.clientURL for p in self.config.nodes}
        doc = self.ring.describe()
        doc["node"] = self.config.nodeName
        doc["nodes"] = [dict(n, url=urls[n["name"]]) for n in doc["nodes"]]
        return doc

    def health(self) -> dict:
        shares = self.ring.shares()
        nodes = []
        for peer in self.config.nodes:
            entry: dict = {
                "name": peer.name,
                "url": peer.url,
                "weight": peer.weight,
                "share": round(shares[peer.name], 4),
            }
            if peer.name == self.config.nodeName:
                entry["state"] = "self"
            else:
                state = self.membership.states[peer.name]
                entry["state"] = state.state
                entry["since"] = state.since
                if state.error:
                    entry["error"] = state.error
            nodes.append(entry)
        return {
            "node": self.config.nodeName,
            "ring": {k: v for k, v in self.ring.describe().items() if k != "nodes"},
            "nodes": nodes,
        }


def _firstError(failure: Any) -> Any:
    """
    Unwrap the first failure of a L{gatherResults}.
    """
    return failure.value.subFailure
