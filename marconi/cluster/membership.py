"""
Membership: which nodes of the cluster are up, told by failures of the
peers and never by failures of single requests.

Every C{probeInterval} seconds (a L{LoopingCall} on the injected clock) a
node asks each peer C{GET /v2/ping}, waiting at most C{probeTimeout}
seconds.  The probes and the forwarded requests feed one failure detector:

 - any answer of the peer (a 204 to a probe, and any HTTP status at all to
   a forwarded request, a refusal included) shows it alive and resets its
   count of failures;
 - a refused connection (nothing listens at its address) marks it down at
   once;
 - a timeout or a connection lost before the answer counts one failure;
   C{downAfter} of them in a row, with no answer in between, mark it down
   (a probe answering anything but 204 counts as one too);
 - anything else (an answer over the size bound, a request target that is
   not a path) is the failure of that one request and says nothing about
   the peer; so is a connection this node could not make, or a peer name
   it could not look up, for want of its own file descriptors or memory
   (a warning is logged, once until a peer answers again).

A peer that is down is probed like the others and is used again as soon as
a probe succeeds.  A peer no probe has answered yet is "unknown" and
treated as up, so that a cluster starting all at once serves without
waiting for a probe round.
"""

from dataclasses import dataclass
from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from marconi.cluster.errors import REFUSED, REQUEST, SHORT, NodeUnavailable
from marconi.cluster.forward import PeerClient, target
from marconi.cluster.settings import ClusterConfig, Peer

log = Logger()

UNKNOWN, UP, DOWN = "unknown", "up", "down"
_PING = target(b"/v2/ping")
_RING_VERSION = b"x-marconi-ring-version"


@dataclass
class PeerState:
    peer: Peer
    state: str = UNKNOWN
    failures: int = 0
    since: Optional[float] = None
    error: Optional[str] = None
    #: The ring version the peer's last answer carried.
    ringVersion: Optional[str] = None


class Membership(Service):
    """
    The state of every other node, kept current by probes.
    """

    def __init__(self, config: ClusterConfig, client: PeerClient, clock: Any) -> None:
        self._config = config
        self._client = client
        self._clock = clock
        self.states = {
            p.name: PeerState(p) for p in config.nodes if p.name != config.nodeName
        }
        self._loop: Optional[LoopingCall] = None
        self._running: Optional[Deferred] = None
        #: Called with C{(name, version)} when a peer's ring version changes.
        self.onRingVersion: Any = None
        #: A connection failed for want of this node's own resources, and
        #: no peer has answered since (see L{reportFailure}).
        self._short = False

    def reconfigure(self, config: ClusterConfig) -> None:
        """
        The node list changed: probe the new peers, forget the removed
        ones, and keep what is known of the others.
        """
        self._config = config
        states = {}
        for p in config.nodes:
            if p.name == config.nodeName:
                continue
            state = self.states.get(p.name)
            if state is None or state.peer != p:
                state = PeerState(p)
            states[p.name] = state
        self.states = states

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.probeAll)
        self._loop.clock = self._clock
        self._running = self._loop.start(self._config.probeInterval, now=True)
        self._running.addErrback(
            lambda f: log.failure("The membership probes stopped", f)
        )

    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def isUp(self, name: str) -> bool:
        state = self.states.get(name)
        return state is None or state.state != DOWN

    def probeAll(self) -> Deferred:
        """
        Probe every peer once; never fails (each probe handles its errors).
        """
        return gatherResults(
            [
                Deferred.fromCoroutine(self._probe(state))
                for state in self.states.values()
            ],
            consumeErrors=True,
        ).addErrback(lambda f: log.failure("A membership probe failed", f))

    async def _probe(self, state: PeerState) -> None:
        try:
            answer = await self._client.call(
                state.peer,
                b"GET",
                _PING,
                Headers(),
                b"",
                timeout=self._config.probeTimeout,
            )
        except CancelledError:
            raise
        except NodeUnavailable as e:
            self.reportFailure(state.peer.name, e)
            return
        if answer.code == 204:
            self.reportAnswer(state.peer.name)
            version = answer.headers.getRawHeaders(_RING_VERSION, [None])[0]
            if version is not None:
                version = version.decode("ascii", "replace")
            if version != state.ringVersion:
                state.ringVersion = version
                if self.onRingVersion is not None:
                    self.onRingVersion(state.peer.name, version)
        else:
            self._failed(state, f"ping answered {answer.code}", self._config.downAfter)

    def reportFailure(self, name: str, error: NodeUnavailable) -> None:
        """
        A call to C{name} failed with C{error}: count it against the peer
        as its kind says (see the module's description).
        """
        state = self.states.get(name)
        if error.kind == SHORT:
            if not self._short:
                # Once, until a peer answers again: every request to a
                # peer fails the same way meanwhile.
                self._short = True
                log.warn(
                    "This node could not connect to cluster node {node}: {error}",
                    node=name,
                    error=error.description,
                )
            return
        if state is None or error.kind in (None, REQUEST):
            return
        threshold = 1 if error.kind == REFUSED else self._config.downAfter
        self._failed(state, error.description, threshold)

    def reportAnswer(self, name: str) -> None:
        """
        C{name} answered a call (with any status): it is alive.
        """
        self._short = False
        state = self.states.get(name)
        if state is not None:
            self._up(state)

    def _up(self, state: PeerState) -> None:
        state.failures = 0
        state.error = None
        if state.state != UP:
            if state.state == DOWN:
                log.info("Cluster node {node} is up again", node=state.peer.name)
            state.state = UP
            state.since = self._clock.seconds()

    def _failed(self, state: PeerState, error: str, threshold: int) -> None:
        state.failures += 1
        state.error = error
        if state.failures >= threshold and state.state != DOWN:
            log.warn(
                "Cluster node {node} is down: {error}",
                node=state.peer.name,
                error=error,
            )
            state.state = DOWN
            state.since = self._clock.seconds()
