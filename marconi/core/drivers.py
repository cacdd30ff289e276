"""
Lazy plugin descriptors for drivers.

A descriptor is what a module in L{marconi.plugins} exposes: it names a
driver and where its code lives, and imports that code only when the driver
is used, so that listing the drivers (or C{twistd marconi --help}) never
imports a backend's client library.
"""

from typing import Any, Optional, Sequence

from twisted.plugin import IPlugin
from twisted.python.reflect import namedAny
from zope.interface import implementer

from marconi.core.durability import DURABLE, LOCAL_LEVELS
from marconi.core.interfaces import (
    IAuthDriverPlugin,
    IExtensionPlugin,
    ILoggingDriverPlugin,
    IMonitoringDriverPlugin,
    IStorageDriverPlugin,
)


@implementer(IPlugin, IStorageDriverPlugin)
class StorageDriverPlugin:
    """
    A storage driver whose code is imported on first use, from the package
    C{marconi.storage.<name>} (see L{marconi.storage}).

    @param uriChecker: dotted name of a function C{(uri) -> None} raising
        L{ValueError}; its module must not import the backend's client.
        By default C{checkURI} of the driver's C{uri} module.
    @param factory: dotted name of a callable C{(uri, reactor,
        durability=LEVEL)} returning the store.  By default C{makeStore} of
        the driver's C{store} module.
    @param durabilities: the levels of L{marconi.core.durability} the
        driver can give as a node's default; the factory gets that default
        as its C{durability} keyword.
    """

    def __init__(
        self,
        name: str,
        schemes: Sequence[str],
        description: str,
        uriChecker: Optional[str] = None,
        factory: Optional[str] = None,
        durabilities: Sequence[str] = LOCAL_LEVELS,
    ) -> None:
        self.name = name
        self.schemes = tuple(schemes)
        self.description = description
        self.durabilities = tuple(durabilities)
        package = "marconi.storage." + name
        self._uriChecker = uriChecker or package + ".uri.checkURI"
        self._factory = factory or package + ".store.makeStore"

    def checkURI(self, uri: str) -> None:
        namedAny(self._uriChecker)(uri)

    def checkDurability(self, durability: str) -> None:
        if durability not in self.durabilities:
            raise ValueError(
                f"the {self.name} store cannot give {durability!r} durability "
                f"(it gives: {', '.join(self.durabilities)}); use a store "
                "with replicas, such as redis+sentinel:// or a MongoDB "
                "replica set"
            )

    def makeStore(self, uri: str, reactor: Any, durability: str = DURABLE) -> Any:
        self.checkDurability(durability)
        return namedAny(self._factory)(uri, reactor, durability=durability)


@implementer(IPlugin, IAuthDriverPlugin)
class AuthDriverPlugin:
    """
    An auth driver whose code is imported on first use.

    @param factory: dotted name of a callable C{(settings, reactor)}.
    """

    def __init__(self, name: str, description: str, factory: str) -> None:
        self.name = name
        self.description = description
        self._factory = factory

    def makeAuth(self, settings: dict, reactor: Any) -> Any:
        return namedAny(self._factory)(settings, reactor)


class _ConfiguredDriverPlugin:
    """
    A driver configured by a section of the configuration file, whose code
    is imported on first use.

    @param checker: dotted name of a function C{(settings) -> None} raising
        L{ValueError}; its module must not import the driver's libraries.
    @param factory: dotted name of the callable that makes the driver.
    """

    def __init__(self, name: str, description: str, checker: str, factory: str):
        self.name = name
        self.description = description
        self._checker = checker
        self._factory = factory

    def checkSettings(self, settings: dict) -> None:
        namedAny(self._checker)(settings)


@implementer(IPlugin, ILoggingDriverPlugin)
class LoggingDriverPlugin(_ConfiguredDriverPlugin):
    """
    A logging driver; its factory is called as C{(settings)} and returns
    the observer.
    """

    def makeObserver(self, settings: dict) -> Any:
        return namedAny(self._factory)(settings)


@implementer(IPlugin, IMonitoringDriverPlugin)
class MonitoringDriverPlugin(_ConfiguredDriverPlugin):
    """
    A monitoring driver; its factory is called as C{(settings, reactor)}.
    """

    def makeMonitor(self, settings: dict, reactor: Any) -> Any:
        return namedAny(self._factory)(settings, reactor)


@implementer(IPlugin, IExtensionPlugin)
class ExtensionPlugin(_ConfiguredDriverPlugin):
    """
    An extension; its factory is called as C{(host)} with an
    L{marconi.extensions.ExtensionHost}.

    @param mount: the first path segment under which the extension's own
        web resource is mounted on the node's listeners, if it has one.
    """

    def __init__(
        self,
        name: str,
        description: str,
        checker: str,
        factory: str,
        mount: Optional[str] = None,
    ) -> None:
        super().__init__(name, description, checker, factory)
        self.mount = mount

    def makeExtension(self, host: Any) -> Any:
        return namedAny(self._factory)(host)
