"""
L{ClusterRouter}: the L{IRouter} of a node in a cluster.
"""

import heapq
import itertools
import json
from dataclasses import replace
from functools import partial
from typing import Any, Awaitable, Callable, Optional
from urllib.parse import urlencode

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from zope.interface import implementer

from marconi.cluster import signing
from marconi.cluster.errors import (
    HELD_BY,
    NodeUnavailable,
    QueueElsewhere,
    QueueMoving,
    RingMismatch,
)
from marconi.cluster.forward import (
    Answer,
    PeerClient,
    answerOf,
    forwardFailed,
    forwardPairs,
    pathAndQuery,
    relayHeaders,
    target,
)
from marconi.cluster.membership import DOWN, UNKNOWN, Membership
from marconi.cluster.ring import Ring, key
from marconi.cluster.settings import ClusterConfig
from marconi.cluster.wire import fire
from marconi.core import audit, queuefilter
from marconi.core.errors import Forbidden, MarconiError
from marconi.core.interfaces import IRouter
from marconi.core.models import QueueInfo
from marconi.core.monitoring import NullMonitor
from marconi.core.queuefilter import QueueFilter

log = Logger()
_PREFIX_LENGTH = len(signing.PREFIX)


class _Forwarding:
    """
    A request the router forwards (L{ClusterRouter}'s C{forwardRaw}, with
    C{then} or its L{Deferred}): the pool calls it with the owner's answer
    or the failure, it tells the failure detector and the monitor and
    sends the request on where the queue moved, then calls C{then} once.

    @ivar then: called with the L{Answer} or the L{Failure}; L{None} once
        called.
    @ivar running: what is being waited for (the pool's request, or the
        L{Deferred} of the node the queue moved to), if anything.
    """

    __slots__ = ("_router", "then", "_sent", "running")

    def __init__(
        self, router: "ClusterRouter", then: Optional[Callable], sent: tuple
    ) -> None:
        self._router = router
        self.then = then
        #: The peer, the owner, and the request: method, target, headers
        #: received, body and project.
        self._sent = sent
        self.running: Any = None

    def cancel(self) -> None:
        """
        Give up on the request: C{then} is called with a
        L{twisted.internet.defer.CancelledError}.
        """
        running, self.running = self.running, None
        if running is not None:
            running.cancel()

    def __call__(self, result: Any) -> None:
        self.running = None
        router = self._router
        peer, owner, method, path, received, body, project = self._sent
        try:
            if isinstance(result, Failure):
                result = router._ownerFailed(result, peer, method, path)
            else:
                result = router._ownerAnswered(
                    result, owner, method, path, received, body, project
                )
                if isinstance(result, Deferred):
                    self.running = result
                    result.addBoth(self._settled)
                    return
        except Exception:
            result = Failure()
        self._settled(result)

    def _settled(self, result: Any) -> None:
        self.running = None
        then, self.then = self.then, None
        if then is not None:
            then(result)


@implementer(IRouter)
class ClusterRouter(MultiService):
    """
    Routes by the ring, forwards with a signature, checks the signatures of
    forwarded requests, and gathers listings from every store.

    A queue is served by its owner on the ring while the owner is up; while
    it is down, by the next live node on the ring (its stand-in), straight
    from the owner's store, when this node can open that store (see
    L{marconi.cluster.stores}); otherwise its requests answer 503.

    A service: its child L{Membership} probes the peers while it runs, and
    stopping it closes the connection pool to the peers.
    """

    def __init__(
        self,
        config: ClusterConfig,
        reactor: Any,
        tlsPolicy: Optional[Any] = None,
        monitor: Optional[Any] = None,
        stores: Optional[Any] = None,
    ) -> None:
        """
        @param tlsPolicy: the L{twisted.web.iweb.IPolicyForHTTPS} of the
            connections to peers (mutual TLS), or L{None} for the default.
        @param monitor: the node's L{marconi.core.interfaces.IMonitor}, told
            of every forwarding that failed.
        @param stores: the L{marconi.cluster.stores.ClusterStores} this
            node opens; without it, no node stands in for another.
        """
        super().__init__()
        self.config = config
        self.monitor = NullMonitor() if monitor is None else monitor
        self.ring = Ring.fromSettings(config)
        #: The ring this node tells peers and clients it routes by (sent on
        #: every answer): L{ring}, except while a new ring's moves are
        #: being announced (see L{marconi.cluster.rebalance}).
        self.published = self.ring
        #: The rings of peers whose version differs from L{ring}, by version
        #: (L{None} while not fetched yet).
        self.peerRings: dict = {}
        #: Queues this node holds but no longer owns, by ring key: the node
        #: they are being handed to.
        self.outgoing: dict = {}
        #: Queues this node owns whose previous owner still holds them, by
        #: ring key: that node.
        self.incoming: dict = {}
        #: Ring keys of queues being copied to their new owner right now.
        self.frozen: set = set()
        #: Called with no argument after the ring changed.
        self.onRingChange: Any = None
        #: Whether a peer no probe has answered yet counts as routing by
        #: a ring not read yet (set with node-local stores, see
        #: L{disagrees}).
        self.awaitPeerRings = False
        self.client = PeerClient(config, reactor, tlsPolicy)
        self.signer = signing.Signer(config.nodeName, config.secret, reactor)
        self.verifier = signing.Verifier(
            config.nodeName,
            config.names,
            config.secret,
            reactor,
            config.clockWindow,
            config.maxNonces,
        )
        self.membership = Membership(config, self.client, reactor)
        self.membership.onRingVersion = self._peerRingVersion
        self.membership.setServiceParent(self)
        self.stores = stores
        #: Requests this node served as a stand-in, by the down owner.
        self.standins: dict = {}

    def stopService(self) -> Deferred:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await super().stopService()
        await self.client.close()

    def reconfigure(self, config: ClusterConfig) -> bool:
        """
        Take a new configuration of the cluster (read again on SIGHUP): the
        ring is swapped in one step, the old and the new ring are logged,
        and the peers are probed as the new node list says.

        @return: whether the ring changed.
        """
        old, new = self.ring, Ring.fromSettings(config)
        self.config = config
        self.verifier.setNodes(config.names)
        self.client._config = config
        self.membership.reconfigure(config)
        if new.version == old.version:
            log.info(
                "Cluster configuration read again; the ring {version} is unchanged",
                version=old.version,
            )
            return False
        self.ring = new
        log.warn(
            "The ring changed from {old} ({oldNodes}) to {new} ({newNodes})",
            old=old.version,
            oldNodes=_nodeList(old),
            new=new.version,
            newNodes=_nodeList(new),
        )
        if self.onRingChange is not None:
            self.onRingChange()
        else:
            self.published = new
        return True

    def _peerRingVersion(self, name: str, version: Optional[str]) -> None:
        """
        A peer's probe answered with another ring version than before.
        """
        if version is None or version == self.ring.version:
            if version is not None:
                log.info("Node {node} routes by the same ring again", node=name)
            return
        log.error(
            "RING MISMATCH: node {node} routes by ring {theirs}, this node by "
            "{mine}; queues the two rings place differently are refused "
            "until they agree (check the [cluster] nodes of both)",
            node=name,
            theirs=version,
            mine=self.ring.version,
        )
        self._learnRing(name, version)

    def _learnRing(self, name: str, version: str) -> None:
        """
        Fetch the ring of peer C{name} unless it is known or being fetched.
        """
        if version not in self.peerRings:
            self.peerRings[version] = None
            Deferred.fromCoroutine(self._fetchRing(name, version))

    async def _fetchRing(self, name: str, version: str) -> None:
        try:
            answer = await self._call(name, b"GET", target(b"/v2/ring"), Headers(), b"")
            ring = Ring.fromDescription(json.loads(answer.body))
        except (NodeUnavailable, ValueError, TypeError) as e:
            log.warn(
                "Could not read the ring of node {node}: {error}",
                node=name,
                error=str(e),
            )
            self.peerRings.pop(version, None)
            return
        self.peerRings[ring.version] = ring

    def mismatched(self) -> list:
        """
        The peers that answered with another ring version than this node's.
        """
        mine = self.ring.version
        return sorted(
            name
            for name, state in self.membership.states.items()
            if state.state != DOWN
            and state.ringVersion is not None
            and state.ringVersion != mine
        )

    def _agreeing(self) -> int:
        """
        The live nodes known to route by this node's ring, this one included.
        """
        mine = self.ring.version
        return 1 + sum(
            1
            for state in self.membership.states.values()
            if state.state != DOWN and state.ringVersion == mine
        )

    def disagrees(self, ringKey: str) -> bool:
        """
        Whether a live peer routes by a ring that places C{ringKey} on
        another node than this node's ring does (or by a ring not read yet,
        or, with L{awaitPeerRings}, has not answered a probe yet).
        """
        mine = self.ring.version
        owner = None
        for state in self.membership.states.values():
            version = state.ringVersion
            if version is None and state.state == UNKNOWN and self.awaitPeerRings:
                # A node just started: a queue its ring gives it may still
                # be held by a peer (a new node joining), which hands it
                # over only if this node did not create it meanwhile.
                return True
            if version is None or version == mine or state.state == DOWN:
                continue
            theirs = self.peerRings.get(version)
            if theirs is None:
                self._learnRing(state.peer.name, version)
                return True
            if owner is None:
                owner = self.ring.owner(ringKey)
            if theirs.owner(ringKey) != owner:
                return True
        return False

    def holder(self, project: str, queue: str) -> str:
        """
        The node whose store holds C{queue} of C{project}: this node for a
        queue it is handing over, the previous owner for one it is waiting
        for, else the owner on the ring.

        @raise QueueMoving: the queue is being copied right now.
        @raise RingMismatch: a peer's ring places it elsewhere.
        """
        ringKey = key(project, queue)
        if self.outgoing:
            if ringKey in self.frozen:
                raise QueueMoving(queue)
            if ringKey in self.outgoing:
                return self.config.nodeName
        if self.disagrees(ringKey):
            raise RingMismatch(queue)
        if self.incoming:
            previous = self.incoming.get(ringKey)
            if previous is not None:
                return previous
        # The ring keeps the owners of the keys asked lately.
        return self.ring.owner(ringKey)

    # IRouter

    def verify(self, request: Any) -> Optional[str]:
        # Only the forwarding headers matter; most requests carry none, and
        # need neither their body read nor a signature checked.  A request
        # being passed through is known to carry none.
        if getattr(request, "unsigned", False):
            return None
        prefix = signing.PREFIX
        headers = {
            name.lower(): values[0]
            for name, values in request.requestHeaders.getAllRawHeaders()
            if name[:_PREFIX_LENGTH].lower() == prefix
        }
        if not headers:
            return None
        request.content.seek(0)
        body = request.content.read()
        try:
            signed = self.verifier.verify(request.method, request.uri, body, headers)
            if signed is not None:
                self._checkOwner(request.uri, signed.project)
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

    def _checkOwner(self, uri: bytes, project: str) -> None:
        """
        A forwarded request for a queue must be for one this node can
        serve (see L{serves}).

        @raise signing.BadSignature: it is not.
        """
        segments = _segments(uri)
        if len(segments) >= 4 and segments[1] == "projects" and segments[2] == project:
            segments = segments[:1] + segments[3:]
        if len(segments) >= 3 and segments[1] == "queues":
            if not self.serves(project, segments[2]):
                # The sender's view of the ring is behind: say where the
                # queue is (it forwards once more there).
                raise QueueElsewhere(segments[2], self.holder(project, segments[2]))

    def owns(self, project: str, queue: str) -> bool:
        """
        Whether this node owns C{queue} of C{project} on the ring.
        """
        return self.ring.owner(key(project, queue)) == self.config.nodeName

    def serves(self, project: str, queue: str) -> bool:
        """
        Whether this node may serve C{queue} of C{project} when a peer
        forwards a request for it: it owns the queue, or it opens the
        owner's store.  The second holds whether this node thinks the owner
        is down or not: two nodes whose views differ may both serve the
        queue, from the same store, whose atomic operations keep claims
        exclusive (see docs/cluster.rst).
        """
        owner = self.holder(project, queue)
        if owner == self.config.nodeName:
            return True
        if key(project, queue) in self.incoming:
            return False
        return self.stores is not None and self.stores.storeOf(owner) is not None

    def together(self, project: str, queue: str, other: str) -> bool:
        """
        Whether two queues of C{project} live in the same store.
        """
        one = self.ring.owner(key(project, queue))
        two = self.ring.owner(key(project, other))
        return one == two or (self.stores is not None and self.stores.shared(one, two))

    def standInFor(self, owner: str) -> bool:
        """
        Whether the queues of C{owner}, down, are served by stand-ins: this
        node opens its store and the store's last ping answered.
        """
        return self.stores is not None and self.stores.reachable(owner)

    def route(self, project: str, queue: str) -> Optional[str]:
        owner = self.holder(project, queue)
        if owner == self.config.nodeName:
            return None
        if self.incoming and key(project, queue) in self.incoming:
            return owner
        if self.membership.isUp(owner):
            return owner
        if not self.standInFor(owner):
            raise NodeUnavailable(owner)
        for node in self.ring.successors(key(project, queue))[1:]:
            if node == self.config.nodeName:
                self.standins[owner] = self.standins.get(owner, 0) + 1
                return None
            if self.membership.isUp(node):
                return node
        raise NodeUnavailable(owner)

    def forward(self, request: Any, project: str, owner: str) -> Deferred:
        try:
            path = target(request.uri)
        except Exception:
            return fail()
        request.content.seek(0)
        d = self._forwardRaw(
            request.method,
            path,
            request.requestHeaders,
            request.content.read(),
            project,
            owner,
        )
        return d.addCallback(_relayed, request)

    def forwardRaw(
        self,
        method: bytes,
        uri: bytes,
        headers: Any,
        body: bytes,
        project: str,
        owner: str,
        then: Optional[Callable[[Any], object]] = None,
    ) -> Any:
        """
        Forward a request, signed for C{project}, to C{owner} (from
        L{route}), without a L{twisted.web.server.Request}: what a resource
        that routes before the app (the pass-through) calls with the
        method, the raw target, the received headers (L{Headers}, or
        anything with its C{getAllRawHeaders}) and the body.

        @param then: if given, no L{Deferred}: C{then} is called once
            with what it would fire with, or its L{Failure} (from within
            this call, if it fails at once), and what is returned has a
            C{cancel}, which gives up on the request as cancelling the
            L{Deferred} would (C{then} is called with a
            L{twisted.internet.defer.CancelledError}).
        @raise NotAPath: C{uri} is not a path (before anything is sent).
        @return: a L{Deferred} firing with the owner's L{Answer} (put it on
            a request with L{relayHeaders}), failing with L{NodeUnavailable}.
        """
        path = target(uri)
        if then is not None:
            return self._forwardRawThen(
                method, path, headers, body, project, owner, then
            )
        return self._forwardRaw(method, path, headers, body, project, owner)

    def _forwardRaw(
        self,
        method: bytes,
        path: Any,
        received: Any,
        body: bytes,
        project: str,
        owner: str,
    ) -> Deferred:
        """
        L{forwardRaw} of a parsed target, as a L{Deferred}: that of
        L{_forwardRawThen}, whose cancelling cancels the forwarding.
        """
        result: Deferred = Deferred(lambda _: forwarding.cancel())
        forwarding = self._forwardRawThen(
            method, path, received, body, project, owner, partial(fire, result)
        )
        return result

    def _forwardRawThen(
        self,
        method: bytes,
        path: Any,
        received: Any,
        body: bytes,
        project: str,
        owner: str,
        then: Callable[[Any], object],
    ) -> "_Forwarding":
        """
        L{forwardRaw} of a parsed target with no L{Deferred} and no
        coroutine (the relay's hot path): the pool calls the
        L{_Forwarding}, which tells the failure detector and the monitor,
        has the request sent once more to the holder of a queue that moved
        (a 503 naming it), then calls C{then}.  A request that cannot be
        signed or sent fails at once, and is no failure of the owner.
        """
        try:
            sign = self._signing(method, path.uri, received, body, project, owner)
            peer = self.config.peer(owner)
            headers = sign()
        except Exception:
            then(Failure())
            return _Forwarding(self, None, ())
        forwarding = _Forwarding(
            self, then, (peer, owner, method, path, received, body, project)
        )
        try:
            sent = self.client.send(peer, method, path, headers, body, sign, forwarding)
        except Exception:
            forwarding._settled(Failure())
            return forwarding
        if forwarding.then is not None and forwarding.running is None:
            forwarding.running = sent
        return forwarding

    def _signing(
        self,
        method: bytes,
        uri: bytes,
        received: Any,
        body: bytes,
        project: str,
        node: str,
    ) -> Callable[[], Any]:
        """
        What gives the headers of a forwarding to C{node}, signed anew
        each time: pairs, or header lines when the received headers offer
        theirs to forward (C{forwardLines}, see
        L{marconi.api.passthrough.Headers}).
        """
        signer = self.signer
        lines = getattr(received, "forwardLines", None)
        if lines is not None:
            return lambda: lines + signer.lines(method, uri, body, project, node)
        return lambda: forwardPairs(
            received, signer.headers(method, uri, body, project, node)
        )

    def _ownerAnswered(
        self,
        result: tuple,
        owner: str,
        method: bytes,
        path: Any,
        received: Any,
        body: bytes,
        project: str,
    ) -> Any:
        """
        The owner answered (the pool's C{(Head, body)}): its L{Answer}, or
        the answer of the node the queue moved to.
        """
        answer = answerOf(*result)
        self.membership.reportAnswer(owner)
        if answer.code != 503:
            return answer
        moved = answer.headers.getRawHeaders(HELD_BY)
        if not moved:
            return answer
        # The queue moved since this node's view: once more, there.
        there = moved[0].decode("ascii", "replace")
        if there not in self.config.names or there in (owner, self.config.nodeName):
            return answer
        sign = self._signing(method, path.uri, received, body, project, there)
        return self._send(there, method, path, sign(), body, sign)

    def _send(
        self,
        node: str,
        method: bytes,
        path: Any,
        headers: Any,
        body: bytes,
        resign: Callable[[], Any],
    ) -> Deferred:
        """
        Send a forwarded request to C{node} (L{PeerClient.forward}); its
        answer (any status) or its failure goes to the failure detector
        and a failure to the monitor, as L{_call}.
        """
        d = self.client.forward(
            self.config.peer(node), method, path, headers, body, resign
        )
        return d.addCallbacks(
            self._answered,
            self._failed,
            callbackArgs=(node,),
            errbackArgs=(node, method, path),
        )

    def _ownerFailed(
        self, failure: Failure, peer: Any, method: bytes, path: Any
    ) -> Failure:
        """
        Sending to the owner failed: L{_failed}, of the pool's failure made
        a L{NodeUnavailable} (a cancellation stays one).
        """
        try:
            failure = forwardFailed(failure, peer)
        except Exception:
            failure = Failure()
        return self._failed(failure, peer.name, method, path)

    def _answered(self, answer: Answer, node: str) -> Answer:
        self.membership.reportAnswer(node)
        return answer

    def _failed(self, failure: Failure, node: str, method: bytes, path: Any) -> Failure:
        error = failure.value
        if isinstance(error, NodeUnavailable):
            self._unavailable(node, method, path, error)
        return failure

    def _unavailable(
        self, node: str, method: bytes, path: Any, error: NodeUnavailable
    ) -> None:
        """
        A call to C{node} failed: log it, and tell the monitor and the
        failure detector.
        """
        log.error(
            "{method} {uri} to node {node} failed: {error}",
            method=method,
            uri=pathAndQuery(path),
            node=node,
            error=error.description,
        )
        self.monitor.forwardingError(node)
        self.membership.reportFailure(node, error)

    async def _call(
        self,
        node: str,
        method: bytes,
        path: Any,
        headers: Headers,
        body: bytes,
    ) -> Answer:
        """
        Send a request to C{node} with L{PeerClient.call}; its answer (any
        status) or its failure goes to the failure detector and a failure
        to the monitor.
        """
        peer = self.config.peer(node)
        try:
            answer = await self.client.call(peer, method, path, headers, body)
        except NodeUnavailable as e:
            self._unavailable(node, method, path, e)
            raise
        self.membership.reportAnswer(node)
        return answer

    def listQueues(
        self,
        project: str,
        marker: Optional[str],
        limit: int,
        detailed: bool,
        withCount: bool,
        local: Callable[[], Awaitable],
        queueFilter: Optional[QueueFilter] = None,
    ) -> Deferred:
        """
        L{IRouter.listQueues}: every node's first C{limit} queues after
        C{marker} that C{queueFilter} keeps, merged by name.
        """
        return Deferred.fromCoroutine(
            self._listQueues(
                project,
                marker,
                limit,
                detailed,
                withCount,
                local,
                queueFilter or QueueFilter(),
            )
        )

    async def _listQueues(
        self,
        project: str,
        marker: Optional[str],
        limit: int,
        detailed: bool,
        withCount: bool,
        local: Callable[[], Awaitable],
        queueFilter: QueueFilter,
    ) -> "Listing":
        # This node's own store first: it validates the arguments.
        mine, count = await local()
        me = self.config.nodeName
        peers = [n for n in self.ring.names if n != me]
        parts: list = [Deferred.fromCoroutine(_done((mine, count)))]
        sources: list = [[me]]
        listed: dict = {}
        stores = self.stores
        for node in peers:
            store = None if stores is None else stores.storeOf(node)
            if store is not None:
                # A store this node opens is read straight, whether its
                # node is up or not, once however many nodes share it.
                if stores is not None and store is stores.home:
                    continue
                if id(store) in listed:
                    sources[listed[id(store)]].append(node)
                    continue
                listed[id(store)] = len(parts)
                call = self._storeQueues(
                    store, project, marker, limit, detailed, withCount, queueFilter
                )
            elif not self.membership.isUp(node):
                sources.append([node])
                parts.append(Deferred.fromCoroutine(_missing()))
                continue
            else:
                call = self._askNode(
                    node, project, marker, limit, detailed, withCount, queueFilter
                )
            sources.append([node])
            parts.append(Deferred.fromCoroutine(call))
        pages = await gatherResults(parts)
        missing = sorted(
            node
            for page, nodes in zip(pages, sources, strict=True)
            if page is None
            for node in nodes
        )
        found = [page for page in pages if page is not None]
        merged = heapq.merge(*(queues for queues, _ in found), key=lambda q: q.name)
        queues = list(itertools.islice(merged, limit))
        total = None
        if withCount:
            total = sum(c or 0 for _, c in found)
        return Listing((queues, total), missing)

    async def _storeQueues(
        self,
        store: Any,
        project: str,
        marker: Optional[str],
        limit: int,
        detailed: bool,
        withCount: bool,
        queueFilter: QueueFilter,
    ) -> Optional[tuple]:
        """
        A page of another node's store, or L{None} when it fails.
        """
        try:
            return await queuefilter.listing(
                store, project, marker, limit, detailed, withCount, queueFilter
            )
        except MarconiError as e:
            log.warn("Listing queues of a peer's store failed: {error}", error=str(e))
            return None

    async def _askNode(
        self,
        node: str,
        project: str,
        marker: Optional[str],
        limit: int,
        detailed: bool,
        withCount: bool,
        queueFilter: QueueFilter,
    ) -> Optional[tuple]:
        """
        A page of the store only C{node} opens, asked of C{node}, or
        L{None} when it does not answer.
        """
        params: dict = {"limit": limit, **queueFilter.parameters()}
        if marker:
            params["marker"] = marker
        if detailed:
            params["detailed"] = "true"
        if withCount:
            params["with_count"] = "true"
        uri = b"/v2/queues?" + urlencode(params).encode()
        try:
            return await self._remoteQueues(node, project, uri, detailed)
        except NodeUnavailable:
            return None

    async def _remoteQueues(
        self, node: str, project: str, uri: bytes, detailed: bool
    ) -> tuple:
        answer = await self._signedGet(node, project, uri)
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

    def readAudit(
        self,
        project: str,
        query: Any,
        marker: Optional[str],
        local: Callable[..., Awaitable],
    ) -> Deferred:
        return Deferred.fromCoroutine(self._readAudit(project, query, marker, local))

    async def _readAudit(
        self,
        project: str,
        query: Any,
        marker: Optional[str],
        local: Callable[..., Awaitable],
    ) -> audit.RiverPage:
        """
        A page of the project's audit river gathered from every store: this
        node's own and those it opens are read here (each once, however
        many nodes share it), the others are asked of their node; the pages
        are merged in time order (see L{audit.gather}).
        """
        markers = audit.RiverMarkers(self.config.secret)
        sources = self._riverSources()
        start: dict = {}
        if marker is not None:
            known = markers.decode(project, marker)
            start = {k: v for k, v in known.items() if k in sources}
        calls: list = []
        for name, (_, how, where) in sources.items():
            at = replace(query, marker=start.get(name) or None)
            if how == "home":
                call = local(at)
            elif how == "store":
                call = self._storeRiver(local, at, where)
            elif how == "node":
                call = self._askRiver(where, project, at)
            else:
                call = _missing()
            calls.append(Deferred.fromCoroutine(call))  # type: ignore[arg-type]
        parts = dict(zip(sources, await gatherResults(calls), strict=True))
        events, following = audit.gather(project, parts, start, query.limit, markers)
        missing = sorted(
            node
            for name, part in parts.items()
            if part is None
            for node in sources[name][0]
        )
        return audit.RiverPage(events, following, missing)

    def _riverSources(self) -> dict:
        """
        Where each river of the cluster is read, by source (the first name
        of the nodes keeping their queues in one store): C{(nodes, how,
        where)}, C{how} being C{"home"} (this node's store), C{"store"} (a
        store this node opens: C{where}), C{"node"} (ask node C{where}) or
        C{"down"}.
        """
        me = self.config.nodeName
        stores = self.stores
        home = [me]
        opened: dict = {}
        found = []
        for node in self.ring.names:
            if node == me:
                continue
            store = None if stores is None else stores.storeOf(node)
            if stores is not None and store is not None and store is stores.home:
                home.append(node)
            elif store is not None:
                opened.setdefault(id(store), ("store", store, []))[2].append(node)
            elif self.membership.isUp(node):
                found.append(("node", node, [node]))
            else:
                found.append(("down", None, [node]))
        found += [("home", None, home), *opened.values()]
        return {min(nodes): (sorted(nodes), how, where) for how, where, nodes in found}

    async def _storeRiver(
        self, local: Callable[..., Awaitable], query: Any, store: Any
    ) -> Optional[audit.RiverPart]:
        """
        The river of a peer's store this node opens, or L{None} when it
        fails.
        """
        try:
            return await local(query, store)
        except MarconiError as e:
            log.warn(
                "Reading the audit river of a peer's store failed: {error}",
                error=str(e),
            )
            return None

    async def _askRiver(
        self, node: str, project: str, query: Any
    ) -> Optional[audit.RiverPart]:
        """
        The river of the store only C{node} opens, asked of C{node}, or
        L{None} when it does not answer (or answers badly).
        """
        params: dict = {"limit": query.limit}
        if query.marker:
            params["marker"] = query.marker
        for name in ("queue", "action", "since", "until"):
            value = getattr(query, name)
            if value is not None:
                params[name] = f"{value:.9f}" if isinstance(value, float) else value
        if query.tags:
            params["tags"] = ",".join(query.tags)
        uri = b"/v2/audit?" + urlencode(params).encode()
        try:
            answer = await self._signedGet(node, project, uri)
            if answer.code != 200:
                raise ValueError(f"status {answer.code}")
            return _riverPart(json.loads(answer.body))
        except NodeUnavailable:
            return None
        except (ValueError, KeyError, TypeError) as e:
            log.error(
                "Node {node} answered an audit river page badly: {error}",
                node=node,
                error=str(e),
            )
            return None

    async def _signedGet(self, node: str, project: str, uri: bytes) -> Answer:
        """
        A C{GET} of C{uri} from C{node}, signed for C{project}.
        """
        headers = Headers(
            {
                b"accept": [b"application/json"],
                b"client-id": [b"marconi-node-" + self.config.nodeName.encode()],
            }
        )
        path = target(uri)
        signed = self.signer.headers(b"GET", pathAndQuery(path), b"", project, node)
        for name, value in signed.items():
            headers.setRawHeaders(name, [value])
        return await self._call(node, b"GET", path, headers, b"")

    def publishedRing(self) -> dict:
        """
        L{IRouter.publishedRing}: the ring's description, each node with the URL
        clients reach it at.
        """
        urls = {p.name: p.clientURL for p in self.config.nodes}
        doc = self.published.describe()
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
                "share": round(shares.get(peer.name, 0.0), 4),
                "store": self.stores is not None
                and self.stores.storeOf(peer.name) is not None,
            }
            if peer.name == self.config.nodeName:
                entry["state"] = "self"
            else:
                state = self.membership.states[peer.name]
                entry["state"] = state.state
                entry["since"] = state.since
                entry["ring_version"] = state.ringVersion
                if state.error:
                    entry["error"] = state.error
                if state.state == DOWN:
                    entry["queues"] = (
                        "stand-in" if self.standInFor(peer.name) else "unavailable"
                    )
                served = self.standins.get(peer.name)
                if served:
                    entry["stand_in_requests"] = served
            nodes.append(entry)
        doc = {
            "node": self.config.nodeName,
            "ring": {k: v for k, v in self.ring.describe().items() if k != "nodes"},
            "nodes": nodes,
        }
        if self.stores is not None:
            doc["stores"] = self.stores.describe()
        mismatched = self.mismatched()
        if mismatched:
            doc["ring_mismatch"] = mismatched
        if mismatched and len(mismatched) >= self._agreeing():
            # This node's ring is not the one most live nodes route by:
            # unfit to serve (the other nodes stay healthy).
            doc["unhealthy"] = (
                f"RING MISMATCH: this node routes by ring {self.ring.version}, "
                f"peers {', '.join(mismatched)} by another; the queues the rings "
                "place differently are refused until they agree (check the "
                "[cluster] nodes of each)"
            )
        doc["moves"] = {
            "published_version": self.published.version,
            "outgoing": len(self.outgoing),
            "incoming": len(self.incoming),
            "copying": len(self.frozen),
            "draining": self.config.draining,
        }
        return doc


def _segments(uri: bytes) -> Any:
    """
    The path segments of a received request target, as L{target} gives
    them; a path with nothing to decode is split without building the
    target.
    """
    path = uri.partition(b"?")[0]
    if path[:1] == b"/" and path[:2] != b"//" and b"%" not in path and b"#" not in uri:
        try:
            return path[1:].decode("ascii").split("/")
        except UnicodeDecodeError:
            pass
    return target(uri).path


def _nodeList(ring: Ring) -> str:
    return ", ".join(f"{name}={weight}" for name, weight in ring.weights.items())


class Listing(tuple):
    """
    A page of the queue listing, C{(queues, count)}, with the names of the
    nodes whose queues it could not read (C{missing}).
    """

    missing: list

    def __new__(cls, page: tuple, missing: list) -> "Listing":
        listing = super().__new__(cls, page)
        listing.missing = missing
        return listing


def _riverPart(doc: Any) -> audit.RiverPart:
    """
    A node's page of its own river, from its answer.

    @raise ValueError: the answer is not one.
    """
    events = doc["events"]
    position, horizon = doc["position"], doc["horizon"]
    if not isinstance(events, list) or not all(
        isinstance(e, dict)
        and isinstance(e["at"], (int, float))
        and audit.position(e["marker"]) is not None
        for e in events
    ):
        raise ValueError("bad events")
    if position is not None and (type(position) is not int or position < 0):
        raise ValueError("bad position")
    if horizon is not None and not isinstance(horizon, (int, float)):
        raise ValueError("bad horizon")
    return audit.RiverPart(events, position, horizon)


def _relayed(answer: Answer, request: Any) -> bytes:
    """
    Put a forwarded request's answer on C{request}; its body.
    """
    relayHeaders(answer, request)
    return answer.body


async def _done(value: Any) -> Any:
    return value


async def _missing() -> None:
    return None
