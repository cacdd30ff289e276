"""
The micro-kernel: finds the configured drivers and wires a node together.

This module and L{marconi.tap} are the only ones that know every room.
"""

from typing import Any
from urllib.parse import urlsplit

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.plugin import getPlugins
from zope.interface import implementer

import marconi.plugins
from marconi import tls
from marconi.api.app import MarconiAPI
from marconi.api.http import MarconiSite
from marconi.config import Config
from marconi.console import Activity, Console, Mount, ObservedBus, ObservedRouter
from marconi.core.health import HealthCheck, SingleNode
from marconi.core.interfaces import IAuthDriverPlugin, IStorageDriverPlugin
from marconi.core.messaging import Messaging
from marconi.observability import wiring as observability

log = Logger()


def storageDrivers() -> dict:
    """
    The storage driver plugins found, by URI scheme.
    """
    drivers = {}
    for plugin in getPlugins(IStorageDriverPlugin, marconi.plugins):
        for scheme in plugin.schemes:
            drivers.setdefault(scheme, plugin)
    return drivers


def authDrivers() -> dict:
    return {p.name: p for p in getPlugins(IAuthDriverPlugin, marconi.plugins)}


def storageDriverFor(uri: str) -> Any:
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


def authDriverFor(name: str) -> Any:
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


def makeNode(config: Config, reactor: Any) -> MultiService:
    """
    A node's services: storage first, then the purge job, then (in a
    cluster) the router with its health probes, then the listeners.
    """
    node = MultiService()
    store = storageDriverFor(config.storage).makeStore(
        config.storage, reactor, config.durability
    )
    store.setServiceParent(node)
    monitor = observability.makeMonitor(config, reactor)
    if IService.providedBy(monitor):
        monitor.setServiceParent(node)
    store = observability.instrumentStore(store, monitor, config, reactor, node)
    auth = authDriverFor(config.auth).makeAuth(dict(config.authSettings), reactor)
    reloader = tls.TLSReloader(reactor)
    router = publicRouter = nodeRouter = None
    nodeName = "local"
    if config.cluster is not None:
        nodeName = config.cluster.nodeName
        from marconi.cluster import mtls
        from marconi.cluster.placement import OwnedStore
        from marconi.cluster.router import ClusterRouter

        policy = None
        if config.clusterTLS is not None:
            policy = tls.NodeClientPolicy(config.clusterTLS.files)
            reloader.add(policy)
        router = publicRouter = ClusterRouter(config.cluster, reactor, policy, monitor)
        store = OwnedStore(store, router.owns)
        if config.clusterTLS is not None:
            publicRouter = mtls.PublicRouter(router)
            nodeRouter = mtls.NodeRouter(router)
    bus = Messaging(store, reactor, config.limits, monitor)
    PurgeService(bus, config.purgeInterval, reactor).setServiceParent(node)
    if router is not None:
        router.setServiceParent(node)
    health = HealthCheck(
        store,
        reactor,
        SingleNode(store, nodeName),
        cluster=None if router is None else router.health,
    )
    activity = Activity(reactor)
    if publicRouter is not None:
        publicRouter = ObservedRouter(publicRouter, activity)
    if nodeRouter is not None:
        nodeRouter = ObservedRouter(nodeRouter, activity)

    def makeSite(router: Any) -> MarconiSite:
        api = MarconiAPI(ObservedBus(bus, activity), auth, health, router)
        console = Console(activity, auth, config.limits, router)
        return MarconiSite(
            Mount(api.resource(), console.resource()),
            maxRequestBody=config.limits.maxMessagesPostSize,
            reactor=reactor,
            monitor=monitor,
            accessLog=observability.accessLog(config),
            extraResources=observability.publicResources(monitor),
        )

    site = makeSite(publicRouter)
    listeners = [tls.serverFromDescription(reactor, d) for d in config.listen]
    for listener in listeners:
        if isinstance(listener, tls.TLSServerEndpoint):
            reloader.add(listener.tls)
    if nodeRouter is not None:
        clusterListener = mtls.clusterEndpoint(reactor, config.clusterTLS)
        reloader.add(clusterListener.tls)
    if reloader.contexts:
        # Certificates are read again on SIGHUP.
        reloader.setServiceParent(node)
    for listener in listeners:
        endpoint = AnnouncedEndpoint(listener)
        StreamServerEndpointService(endpoint, site).setServiceParent(node)
    if nodeRouter is not None:
        endpoint = AnnouncedEndpoint(clusterListener, "Marconi cluster listener on")
        StreamServerEndpointService(endpoint, makeSite(nodeRouter)).setServiceParent(
            node
        )
    return node


@implementer(IStreamServerEndpoint)
class AnnouncedEndpoint:
    """
    A server endpoint that logs the address it listens on (with the real
    port when the description asked for port 0).
    """

    def __init__(self, endpoint: Any, what: str = "Marconi listening on") -> None:
        self._endpoint = endpoint
        self._what = what
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
            return port

        return d.addCallback(announce)
