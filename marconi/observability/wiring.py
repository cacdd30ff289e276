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

from typing import Any, Optional

from twisted.application.service import MultiService
from twisted.logger import ILogObserver
from twisted.plugin import getPlugins

import marconi.plugins
from marconi.core.interfaces import (
    ILoggingDriverPlugin,
    IMonitor,
    IMonitoringDriverPlugin,
    IQueueDepths,
    IStoreEvents,
)
from marconi.core.monitoring import NullMonitor
from marconi.observability import settings as monitoringSettings
from marconi.observability.measured import DepthSampler, MeasuredStore


def loggingDrivers() -> dict:
    return {p.name: p for p in getPlugins(ILoggingDriverPlugin, marconi.plugins)}


def monitoringDrivers() -> dict:
    return {p.name: p for p in getPlugins(IMonitoringDriverPlugin, marconi.plugins)}


def _driver(kind: str, drivers: dict, settings: Any) -> Any:
    name = settings.get("driver", "").strip()
    if not name:
        return None
    if name not in drivers:
        known = ", ".join(sorted(drivers))
        raise ValueError(f"unknown {kind} driver {name!r} (known: {known})")
    return drivers[name]


def check(config: Any) -> None:
    """
    Check the C{[logging]} and C{[monitoring]} settings.

    @raise ValueError: with a one-line reason.
    """
    plugin = _driver("logging", loggingDrivers(), config.logging)
    if plugin is not None:
        plugin.checkSettings(dict(config.logging))
    monitoringSettings.boolean(config.logging, "access_log", True)
    plugin = _driver("monitoring", monitoringDrivers(), config.monitoring)
    if plugin is not None:
        plugin.checkSettings(dict(config.monitoring))


def accessLog(config: Any) -> bool:
    return monitoringSettings.boolean(config.logging, "access_log", True)


def makeLogObserver(config: Any) -> Optional[Any]:
    """
    The observer of the configured logging driver, or L{None} when the
    configuration names none (twistd's own options then apply).
    """
    plugin = _driver("logging", loggingDrivers(), config.logging)
    if plugin is None:
        return None
    return plugin.makeObserver(dict(config.logging))


def makeMonitor(config: Any, reactor: Any) -> IMonitor:
    """
    The configured monitor, or a L{NullMonitor}.
    """
    plugin = _driver("monitoring", monitoringDrivers(), config.monitoring)
    if plugin is None:
        return NullMonitor()
    return plugin.makeMonitor(dict(config.monitoring), reactor)


def instrumentStore(
    store: Any, monitor: IMonitor, config: Any, reactor: Any, node: MultiService
) -> Any:
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
    return MeasuredStore(store, monitor, reactor)


def publicResources(monitor: IMonitor) -> dict:
    resource = monitor.publicResource()
    return {} if resource is None else {b"/metrics": resource}


class ObservedNode(MultiService):
    """
    A node with the log observer its configuration asks for: when added to
    a twistd application it becomes the application's L{ILogObserver}
    component (unless one is set already).
    """

    def __init__(self, node: Any, observer: Any) -> None:
        super().__init__()
        self.logObserver = observer
        node.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        getComponent = getattr(parent, "getComponent", None)
        if getComponent is not None and getComponent(ILogObserver, None) is None:
            parent.setComponent(ILogObserver, self.logObserver)
        super().setServiceParent(parent)
