"""
The embedded SQLite storage driver (the default).
"""

from marconi.core.drivers import StorageDriverPlugin

sqlite = StorageDriverPlugin(
    name="sqlite",
    schemes=("sqlite",),
    description="Embedded SQLite file (sqlite:PATH, sqlite::memory:)",
    uriChecker="marconi.storage.sqlite.checkURI",
    factory="marconi.storage.sqlite.makeStore",
)
