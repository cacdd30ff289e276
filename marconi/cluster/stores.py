"""
The stores of a cluster, kept apart from its nodes.

A node (a process serving HTTP, on the ring) has a home store, its
C{--storage}.  A node whose home store is a network store (Redis, MongoDB)
declares it to the others with C{--cluster-store NAME=URI}; every node
opens every declared store, so that when a queue's owner is down the next
live node on the ring serves the queue straight from the owner's store (a
stand-in).  Nothing is copied between nodes: replication is the store's
own (Redis replicas with Sentinel, MongoDB replica sets).

Nodes that share one store declare the same URI for each of them; the URI
is opened once.  A node that declares no store (an embedded SQLite file)
has a store only it can reach: its queues answer 503 while it is down.

Each peer's store is pinged every C{probeInterval} seconds; a store that
does not answer is unreachable, and its queues answer 503 on the nodes that
would stand in for its node, without waiting for a request to time out.
"""

from typing import Any, Callable, Optional

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from marconi.cluster.settings import ClusterConfig
from marconi.core.errors import MarconiError

log = Logger()

#: Storage schemes whose store only its own node can open.
LOCAL_SCHEMES = ("sqlite", "memory")


def scheme(uri: str) -> str:
    """
    The scheme of a storage URI (C{sqlite:PATH} has no C{//}).
    """
    return uri.partition(":")[0]


def checkDeclared(config: ClusterConfig, homeURI: str) -> None:
    """
    Check the declared stores against this node's own storage.

    @raise ValueError: a declared store is a node-local one, or the store
        declared for this node is not its C{--storage}.
    """
    for name, uri in config.stores:
        if scheme(uri) in LOCAL_SCHEMES:
            raise ValueError(
                f"--cluster-store {name}={uri}: a {scheme(uri)} store can only "
                "be opened by its own node; declare network stores only "
                "(see docs/cluster.rst)"
            )
        if name == config.nodeName and uri != homeURI:
            raise ValueError(
                f"--cluster-store {name}={uri} names this node's store, "
                f"which is --storage {homeURI}"
            )


class StoreState:
    """
    What this node knows of one opened store.

    @ivar nodes: the names of the nodes keeping their queues in it.
    @ivar reachable: whether its last ping answered (L{True} until one
        fails).
    """

    def __init__(self, store: Any, nodes: list) -> None:
        self.store = store
        self.nodes = nodes
        self.reachable = True
        self.error: Optional[str] = None


class ClusterStores(MultiService):
    """
    Every store this node can open, by the node that keeps its queues in
    it; a service whose children are the peers' stores (the home store is
    started by the kernel).

    @param home: this node's own store, already made.
    @param makeStore: C{makeStore(uri)} opens a declared store.
    """

    def __init__(
        self,
        config: ClusterConfig,
        home: Any,
        homeURI: str,
        makeStore: Callable[[str], Any],
        clock: Any,
    ) -> None:
        super().__init__()
        self._config = config
        self._clock = clock
        self._makeStore = makeStore
        self.home = home
        self._opened = {homeURI: StoreState(home, [config.nodeName])}
        self._byNode: dict = {}
        self._loop: Optional[LoopingCall] = None
        self.reconfigure(config)

    def reconfigure(self, config: ClusterConfig) -> None:
        """
        Take the declared stores of a new configuration (read again on
        SIGHUP): a store declared for the first time is opened; a store
        no longer declared is no longer used (it stays open until the node
        stops, for the calls in flight).
        """
        self._config = config
        homeURI = next(u for u, s in self._opened.items() if s.store is self.home)
        for opened in self._opened.values():
            opened.nodes = [config.nodeName] if opened.store is self.home else []
        self._byNode = {config.nodeName: self._opened[homeURI]}
        for name, uri in config.stores:
            if name == config.nodeName:
                continue
            state = self._opened.get(uri)
            if state is None:
                store = self._makeStore(uri)
                store.setServiceParent(self)
                state = self._opened[uri] = StoreState(store, [])
            state.nodes.append(name)
            self._byNode[name] = state
        self._states = [s for s in self._opened.values() if s.nodes]

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.pingAll)
        self._loop.clock = self._clock
        self._loop.start(self._config.probeInterval, now=False).addErrback(
            lambda f: log.failure("The store pings stopped", f)
        )

    def stopService(self) -> Any:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return super().stopService()

    def storeOf(self, node: str) -> Any:
        """
        The store C{node} keeps its queues in, or L{None} when this node
        cannot open it.
        """
        state = self._byNode.get(node)
        return None if state is None else state.store

    def reachable(self, node: str) -> bool:
        """
        Whether this node can open C{node}'s store and its last ping
        answered.
        """
        state = self._byNode.get(node)
        return state is not None and state.reachable

    def shared(self, one: str, other: str) -> bool:
        """
        Whether nodes C{one} and C{other} keep their queues in the same
        store.
        """
        state = self._byNode.get(one)
        return state is not None and state is self._byNode.get(other)

    def pingAll(self) -> Deferred:
        """
        Ping every peer's store once; never fails.
        """
        return gatherResults(
            [
                Deferred.fromCoroutine(self._ping(state))
                for state in self._states
                if state.store is not self.home
            ],
            consumeErrors=True,
        ).addErrback(lambda f: log.failure("A store ping failed", f))

    async def _ping(self, state: StoreState) -> None:
        try:
            up, error = bool(await state.store.ping()), "ping failed"
        except MarconiError as e:
            up, error = False, e.description
        if up != state.reachable:
            if up:
                log.info("The store of {nodes} is reachable", nodes=state.nodes)
            else:
                log.warn(
                    "The store of {nodes} is unreachable: {error}",
                    nodes=state.nodes,
                    error=error,
                )
        state.reachable = up
        state.error = None if up else error

    def describe(self) -> list:
        """
        The stores as C{/v2/health} reports them: by the nodes keeping
        their queues in each (URIs are left out: they may hold passwords).
        """
        return [
            {
                "nodes": sorted(state.nodes),
                "home": state.store is self.home,
                "reachable": state.reachable,
                **({"error": state.error} if state.error else {}),
            }
            for state in self._states
        ]
