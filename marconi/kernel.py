"""
The micro-kernel: finds the configured drivers and wires a node together.

This module and L{marconi.tap} are the only ones that know every room.
"""

import ipaddress
from typing import TYPE_CHECKING, Any, Callable, Optional
from urllib.parse import urlsplit

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.plugin import getPlugins
from zope.interface import implementer

import marconi.plugins
from marconi import tls
from marconi.api.app import MarconiAPI
from marconi.api.http import MarconiSite
from marconi.api.passthrough import PassThrough
from marconi.api.presigned import SignedURLs
from marconi.config import Config
from marconi.console import Activity, Console, Mount, ObservedRouter
from marconi.core import audit
from marconi.core.health import HealthCheck, SingleNode
from marconi.core.interfaces import IAuthDriverPlugin, IRouter, IStorageDriverPlugin
from marconi.core.messaging import Messaging
from marconi.core.routing import LocalRouter
from marconi.extensions import ExtensionHost, Extensions
from marconi.observability import wiring as observability

if TYPE_CHECKING:
    from marconi.cluster.router import ClusterRouter

log = Logger()


def storageDrivers() -> dict[str, IStorageDriverPlugin]:
    """
    The storage driver plugins found, by URI scheme.
    """
    drivers: dict[str, IStorageDriverPlugin] = {}
    for plugin in getPlugins(IStorageDriverPlugin, marconi.plugins):
        for scheme in plugin.schemes:
            drivers.setdefault(scheme, plugin)
    return drivers


def authDrivers() -> dict[str, IAuthDriverPlugin]:
    return {p.name: p for p in getPlugins(IAuthDriverPlugin, marconi.plugins)}


def storageDriverFor(uri: str) -> IStorageDriverPlugin:
    """
    The plugin serving C{uri}.

    @raise ValueError: naming the known schemes if none serves it, or saying
        what is wrong with the URI.
    """
    scheme = urlsplit(uri).scheme if "://" in uri else uri.partition(":")[0]
    drivers = storageDrivers()
    if scheme not in drivers:
        known = ", ".join(sorted(drivers))
        raise ValueError(f"unknown storage scheme {scheme!r} (known: {known})")
    plugin = drivers[scheme]
    plugin.checkURI(uri)
    return plugin


def checkClusterStores(config: Config) -> None:
    """
    Check the stores declared with C{--cluster-store}: each URI is one a
    driver serves, and a network store (see L{marconi.cluster.stores}).

    @raise ValueError: saying which is wrong and why.
    """
    if config.cluster is None:
        return
    from marconi.cluster.stores import checkDeclared

    for name, uri in config.cluster.stores:
        try:
            storageDriverFor(uri)
        except ValueError as e:
            raise ValueError(f"--cluster-store {name}={uri}: {e}") from None
    checkDeclared(config.cluster, config.storage)


def authDriverFor(name: str) -> IAuthDriverPlugin:
    drivers = authDrivers()
    if name not in drivers:
        known = ", ".join(sorted(drivers))
        raise ValueError(f"unknown auth driver {name!r} (known: {known})")
    return drivers[name]


class PurgeService(TimerService):
    """
    Removes expired messages and claims every C{interval} seconds; a
    failure is logged and the next run goes ahead.
    """

    def __init__(self, bus: Messaging, interval: float, clock: Any) -> None:
        super().__init__(interval, self._purge)
        self.clock = clock
        self._bus = bus

    def _purge(self) -> Deferred:
        d = Deferred.fromCoroutine(self._bus.purgeExpired())

        def done(count: int) -> None:
            if count:
                log.info("Purged {count} expired messages", count=count)

        d.addCallback(done)
        d.addErrback(lambda f: log.failure("Purging expired data failed", f))
        return d


class NodeService(MultiService):
    """
    A node's services.  They stop as a L{MultiService}'s do (all at once,
    the last started first), except the first, the storage: it stops
    only once every other has, so that what they write while stopping (an
    outbox giving its claims back, the deliveries owed by the last posts,
    a state marked clean) still reaches the store.
    """

    def stopService(self) -> Deferred:
        services = list(self)
        if not services:
            return super().stopService()
        Service.stopService(self)
        storage, others = services[0], services[1:]
        stopping = DeferredList(
            [maybeDeferred(s.stopService) for s in reversed(others)]
        )
        stopping.addCallback(lambda _: maybeDeferred(storage.stopService))
        stopping.addCallback(lambda _: None)
        return stopping


def makeNode(
    config: Config, reactor: Any, reread: Optional[Callable[[], Config]] = None
) -> MultiService:
    """
    A node's services: storage first, then the purge job, then (in a
    cluster) the router with its health probes, then the listeners.

    @param reread: reads the configuration again (on SIGHUP, in a cluster).
    """
    node = NodeService()
    store = storageDriverFor(config.storage).makeStore(
        config.storage, reactor, config.durability
    )
    # The store stops only once the audit river's writes in flight are done.
    storage = audit.RiverService(store)
    storage.setServiceParent(node)
    homeStore = store
    monitor = observability.makeMonitor(config, reactor)
    if IService.providedBy(monitor):
        monitor.setServiceParent(node)
    # The river writes to the node's own store, unmeasured.
    river = audit.AuditRiver(store, reactor, audit.parseSettings(config.audit))
    home = store
    store = observability.instrumentStore(store, monitor, config, reactor, node)
    # The health probe walks a message through this node's own store, in a
    # reserved project that stays with its node whatever the ring says.
    probed = store
    auth = authDriverFor(config.auth).makeAuth(dict(config.authSettings), reactor)
    announceAuth(config.auth, auth)
    if hasattr(auth, "close"):
        AuthService(auth).setServiceParent(node)
    reloader = tls.TLSReloader(reactor)
    router: "Optional[ClusterRouter]" = None
    publicRouter: Optional[IRouter] = None
    nodeRouter: Optional[IRouter] = None
    nodeName = "local"
    if config.cluster is not None:
        nodeName = config.cluster.nodeName
        from marconi.cluster import mtls
        from marconi.cluster.metrics import ClusterCollector
        from marconi.cluster.placement import OwnedStore, PlacedStore
        from marconi.cluster.router import ClusterRouter
        from marconi.cluster.stores import ClusterStores

        policy = None
        if config.clusterTLS is not None:
            policy = tls.NodeClientPolicy(config.clusterTLS.files)
            reloader.add(policy)
        stores = ClusterStores(
            config.cluster,
            store,
            config.storage,
            lambda uri: storageDriverFor(uri).makeStore(
                uri, reactor, config.durability
            ),
            reactor,
        )
        stores.setServiceParent(node)
        router = publicRouter = ClusterRouter(
            config.cluster, reactor, policy, monitor, stores
        )
        store = OwnedStore(PlacedStore(stores, router.holder), router.together)
        registry = getattr(monitor, "registry", None)
        if registry is not None:
            registry.register(ClusterCollector(router))
        if config.clusterTLS is not None:
            publicRouter = mtls.PublicRouter(router)
            nodeRouter = mtls.NodeRouter(router)
    bus = Messaging(store, reactor, config.limits, monitor, config.encryption, river)
    bus.watch(home)
    PurgeService(bus, config.purgeInterval, reactor).setServiceParent(node)
    if router is not None:
        router.setServiceParent(node)
        from marconi.cluster import rebalance

        rebalancer = rebalance.Rebalancer(router, homeStore, reactor)
        rebalancer.setServiceParent(node)
    storage.river = river
    health = HealthCheck(
        probed,
        reactor,
        SingleNode(probed, nodeName),
        cluster=None if router is None else router.health,
    )
    activity = Activity(reactor)
    bus.events.listen(activity.observe)
    if publicRouter is not None:
        publicRouter = ObservedRouter(publicRouter, activity)
    if nodeRouter is not None:
        nodeRouter = ObservedRouter(nodeRouter, activity)

    ringVersion = None
    clusterRouter = None
    if router is not None:
        # The cluster router itself: makeSite's argument may be a wrapper.
        clusterRouter = router
        ringVersion = lambda: clusterRouter.published.version  # noqa: E731

    signedURLs = SignedURLs(config.signedURLKey, reactor)
    extensions = Extensions.start(
        config.extensions,
        config.extensionSettings,
        ExtensionHost(
            bus,
            auth,
            router if router is not None else LocalRouter(),
            reactor,
            nodeName=nodeName,
        ),
    )
    if extensions.enabled:
        extensions.setServiceParent(node)
    mounts = extensions.mounts()

    def makeSite(router: Optional[IRouter]) -> MarconiSite:
        api = MarconiAPI(bus, auth, health, router, signedURLs, extensions)
        console = Console(activity, auth, config.limits, router)
        root: Any = Mount(api.resource(), {b"console": console.resource(), **mounts})
        if clusterRouter is not None:
            root = rebalance.HandoverResource(
                rebalancer,
                root,
                nodesOnly=router is not nodeRouter and config.clusterTLS is not None,
            )
        site = MarconiSite(
            root,
            maxRequestBody=config.limits.maxMessagesPostSize,
            reactor=reactor,
            monitor=monitor,
            accessLog=observability.accessLog(config),
            extraResources=observability.publicResources(monitor),
            ringVersion=ringVersion,
        )
        if clusterRouter is not None and router is publicRouter:
            # Requests for queues other nodes own skip the API's rendering.
            site.passThrough = PassThrough(api, clusterRouter, activity.forwarded)
        return site

    site = makeSite(publicRouter)
    listeners = [tls.serverFromDescription(reactor, d) for d in config.listen]
    for listener in listeners:
        if isinstance(listener, tls.TLSServerEndpoint):
            reloader.add(listener.tls)
    if nodeRouter is not None:
        assert config.clusterTLS is not None  # nodeRouter exists only with it
        clusterListener = mtls.clusterEndpoint(reactor, config.clusterTLS)
        reloader.add(clusterListener.tls)
    if reloader.contexts:
        # Certificates are read again on SIGHUP.
        reloader.setServiceParent(node)
    if router is not None and reread is not None:
        # And so is the [cluster] section (after the certificates' handler,
        # which it calls).
        from marconi.cluster.reload import ClusterReloader

        ClusterReloader(reactor, reread, rebalancer.reconfigure).setServiceParent(node)
    for listener in listeners:
        endpoint = AnnouncedEndpoint(listener, trustsHeaders=auth.trustsHeaders)
        StreamServerEndpointService(endpoint, site).setServiceParent(node)
    if nodeRouter is not None:
        endpoint = AnnouncedEndpoint(clusterListener, "Marconi cluster listener on")
        StreamServerEndpointService(endpoint, makeSite(nodeRouter)).setServiceParent(
            node
        )
    return node


def announceAuth(name: str, auth: Any) -> None:
    if auth.trustsHeaders:
        log.info(
            "Auth driver {name}: every caller is trusted; the project is the "
            "X-Project-ID header or the URL's, as the client gives it",
            name=name,
        )
    else:
        log.info("Auth driver {name}", name=name)


class AuthService(Service):
    """
    Lets the auth driver close its connections when the node stops.
    """

    def __init__(self, auth: Any) -> None:
        self.auth = auth

    def stopService(self) -> Deferred:
        super().stopService()
        return self.auth.close()


def _isLoopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


@implementer(IStreamServerEndpoint)
class AnnouncedEndpoint:
    """
    A server endpoint that logs the address it listens on (with the real
    port when the description asked for port 0).
    """

    def __init__(
        self,
        endpoint: Any,
        what: str = "Marconi listening on",
        trustsHeaders: bool = False,
    ) -> None:
        """
        @param trustsHeaders: the auth driver believes the project a
            request names: warn when the listener is not on loopback.
        """
        self._endpoint = endpoint
        self._what = what
        self._trustsHeaders = trustsHeaders
        self._security = ""
        if isinstance(endpoint, tls.TLSServerEndpoint):
            self._security = " with mutual TLS" if endpoint.mutual else " with TLS"

    def listen(self, factory: Any) -> Deferred:
        d = self._endpoint.listen(factory)

        def announce(port: Any) -> Any:
            address = port.getHost()
            where = getattr(address, "port", None)
            if where is None:
                where = getattr(address, "name", address)
                log.info(
                    "{what} unix:{path}{security}",
                    what=self._what,
                    path=where,
                    security=self._security,
                )
            else:
                log.info(
                    "{what} {kind}:{host}:{port}{security}",
                    what=self._what,
                    kind=address.type.lower(),
                    host=address.host,
                    port=where,
                    security=self._security,
                )
                if self._trustsHeaders and not _isLoopback(address.host):
                    log.warn(
                        "Listening on {host} with an auth driver that trusts "
                        "X-Project-ID: any caller that reaches this port can "
                        "act for any project. Use auth = keystone, or listen "
                        "on loopback behind a gateway that authenticates.",
                        host=address.host,
                    )
            return port

        return d.addCallback(announce)
