"""
Wiring logging and monitoring into a node, for L{marconi.kernel} and
L{marconi.tap}: finding the drivers named in the configuration, checking
their settings, and instrumenting the store.

Logging: C{twistd} starts logging, after C{makeService} returned.  Its
L{twisted.application.app.AppLogger} uses the L{ILogObserver} component of
the application when there is one (and C{--logger} was not given), in
place of C{--logfile}/C{--syslog}.  So when the configuration names a
logging driver, L{makeService} returns the node inside an
L{ObservedNode}, which sets that component when twistd adds it to the
application: twistd stays the one that begins logging, and the observer
comes from the configuration file.
"""

from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, TypeVar, cast

from twisted.application.service import IService, IServiceCollection, MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.logger import ILogObserver
from twisted.plugin import getPlugins
from twisted.python.components import Componentized
from twisted.web.resource import IResource

import marconi.plugins
from marconi.core.interfaces import (
    ILoggingDriverPlugin,
    IMessageStore,
    IMonitor,
    IMonitoringDriverPlugin,
    IQueueDepths,
    IStoreEvents,
)
from marconi.core.monitoring import NullMonitor
from marconi.observability import logs
from marconi.observability import settings as monitoringSettings
from marconi.observability.measured import DepthSampler, MeasuredStore

if TYPE_CHECKING:
    from marconi.config import Config

_Plugin = TypeVar("_Plugin")


def loggingDrivers() -> Dict[str, ILoggingDriverPlugin]:
    return {p.name: p for p in getPlugins(ILoggingDriverPlugin, marconi.plugins)}


def monitoringDrivers() -> Dict[str, IMonitoringDriverPlugin]:
    return {p.name: p for p in getPlugins(IMonitoringDriverPlugin, marconi.plugins)}


def _driver(
    kind: str, drivers: Mapping[str, _Plugin], settings: Mapping[str, str]
) -> Optional[_Plugin]:
    name = settings.get("driver", "").strip()
    if not name:
        return None
    if name not in drivers:
        known = ", ".join(sorted(drivers))
        raise ValueError(f"unknown {kind} driver {name!r} (known: {known})")
    return drivers[name]


def check(config: "Config") -> None:
    """
    Check the C{[logging]} and C{[monitoring]} settings.

    @raise ValueError: with a one-line reason.
    """
    logging = _driver("logging", loggingDrivers(), config.logging)
    if logging is not None:
        logging.checkSettings(dict(config.logging))
    monitoringSettings.boolean(config.logging, "access_log", True)
    logs.flushInterval(config.logging)
    monitoring = _driver("monitoring", monitoringDrivers(), config.monitoring)
    if monitoring is not None:
        monitoring.checkSettings(dict(config.monitoring))


def accessLog(config: "Config") -> bool:
    return monitoringSettings.boolean(config.logging, "access_log", True)


def makeLogObserver(
    config: "Config",
    twistdOptions: Optional[Mapping[str, Any]] = None,
    reactor: Optional[IReactorThreads] = None,
) -> Optional[ILogObserver]:
    """
    The observer of the configured logging driver; without one, the
    observer of L{logs.twistdObserver} for twistd's own options (unless
    C{flush_interval} is 0); L{None} where twistd's own observer stays.
    """
    plugin = _driver("logging", loggingDrivers(), config.logging)
    if plugin is not None:
        return plugin.makeObserver(dict(config.logging))
    if reactor is None or logs.flushInterval(config.logging) == 0:
        return None
    return logs.twistdObserver(twistdOptions, reactor)


def flushInterval(config: "Config") -> float:
    return logs.flushInterval(config.logging)


def makeMonitor(config: "Config", reactor: IReactorTime) -> IMonitor:
    """
    The configured monitor, or a L{NullMonitor}.
    """
    plugin = _driver("monitoring", monitoringDrivers(), config.monitoring)
    if plugin is None:
        return NullMonitor()
    return plugin.makeMonitor(dict(config.monitoring), reactor)


def instrumentStore(
    store: IMessageStore,
    monitor: IMonitor,
    config: "Config",
    reactor: IReactorTime,
    node: MultiService,
) -> IMessageStore:
    """
    Connect a store to the monitor: its events, its depth samples (a
    L{DepthSampler} added to C{node}) and the timing of its calls.

    @return: the store to give to the domain (C{store} itself when nothing
        is monitored).
    """
    if isinstance(monitor, NullMonitor):
        return store
    if IStoreEvents.providedBy(store):
        store.observeEvents(monitor.messagesCounted)
    sampling = monitoringSettings.sampling(config.monitoring)
    if IQueueDepths.providedBy(store) and sampling.interval > 0:
        DepthSampler(
            store, monitor, sampling.interval, sampling.limit, reactor
        ).setServiceParent(node)
    # MeasuredStore provides IMessageStore through classImplements.
    return cast(IMessageStore, MeasuredStore(store, monitor, reactor))


def publicResources(monitor: IMonitor) -> Dict[bytes, IResource]:
    resource = monitor.publicResource()
    return {} if resource is None else {b"/metrics": resource}


class ObservedNode(MultiService):
    """
    A node with the log observer its configuration asks for: when added to
    a twistd application it becomes the application's L{ILogObserver}
    component (unless one is set already).

    While the node runs, a L{logs.StreamObserver} keeps the access log's
    lines for up to C{flushInterval} seconds of C{clock} to write them
    together; once the node's services have stopped (a reactor stop,
    C{SIGTERM}) it writes what it kept and every line at once after that.
    """

    def __init__(
        self,
        node: IService,
        observer: ILogObserver,
        clock: Optional[IReactorTime] = None,
        flushInterval: float = 0.0,
    ) -> None:
        super().__init__()
        self.logObserver = observer
        self.clock = clock
        self.flushInterval = flushInterval
        node.setServiceParent(self)

    def setServiceParent(self, parent: IServiceCollection) -> None:
        # A twistd application is also a Componentized.
        if (
            isinstance(parent, Componentized)
            and parent.getComponent(ILogObserver, None) is None
        ):
            parent.setComponent(ILogObserver, self.logObserver)
        super().setServiceParent(parent)

    def _buffered(self) -> Optional[logs.StreamObserver]:
        observer = self.logObserver
        if (
            isinstance(observer, logs.StreamObserver)
            and self.clock is not None
            and self.flushInterval > 0
        ):
            return observer
        return None

    def startService(self) -> None:
        observer = self._buffered()
        if observer is not None:
            observer.startBuffering(cast(IReactorTime, self.clock), self.flushInterval)
        super().startService()

    def stopService(self) -> Deferred:
        stopped = super().stopService()
        observer = self._buffered()
        if observer is not None:

            def flush(result: object) -> object:
                observer.stopBuffering()
                return result

            stopped.addBoth(flush)
        return stopped
