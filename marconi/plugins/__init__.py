"""
Driver plugins of Marconi, found with L{twisted.plugin.getPlugins}.

Each module here exposes lazy descriptors (see L{marconi.core.drivers}).
A third party adds a driver by installing a uniquely named module into this
package (there is no C{__init__.py} to ship); the path below also searches
every C{marconi/plugins} folder on C{sys.path}.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))  # type: ignore[name-defined]
__all__: list[str] = []
