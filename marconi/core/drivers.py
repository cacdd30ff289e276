"""
Lazy plugin descriptors for drivers.

A descriptor is what a module in L{marconi.plugins} exposes: it names a
driver and where its code lives, and imports that code only when the driver
is used, so that listing the drivers (or C{twistd marconi --help}) never
imports a backend's client library.
"""

from typing import Any, Sequence

from twisted.plugin import IPlugin
from twisted.python.reflect import namedAny
from zope.interface import implementer

from marconi.core.interfaces import IAuthDriverPlugin, IStorageDriverPlugin


@implementer(IPlugin, IStorageDriverPlugin)
class StorageDriverPlugin:
    """
    A storage driver whose code is imported on first use.

    @param uriChecker: dotted name of a function C{(uri) -> None} raising
        L{ValueError}; its module must not import the backend's client.
    @param factory: dotted name of a callable C{(uri, reactor)} returning the
        store.
    """

    def __init__(
        self,
        name: str,
        schemes: Sequence[str],
        description: str,
        uriChecker: str,
        factory: str,
    ) -> None:
        self.name = name
        self.schemes = tuple(schemes)
        self.description = description
        self._uriChecker = uriChecker
        self._factory = factory

    def checkURI(self, uri: str) -> None:
        namedAny(self._uriChecker)(uri)

    def makeStore(self, uri: str, reactor: Any) -> Any:
        return namedAny(self._factory)(uri, reactor)


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
