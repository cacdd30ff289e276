"""
The storage drivers.  Each is imported only when it is used, so listing
them (or C{twistd marconi --help}) imports no backend's client library.
"""

from marconi.core.drivers import StorageDriverPlugin
from marconi.core.durability import LEVELS

sqlite = StorageDriverPlugin(
    "sqlite", ("sqlite",), "Embedded SQLite file (sqlite:PATH, sqlite::memory:)"
)
memory = StorageDriverPlugin(
    "memory", ("memory",), "In-process memory, lost when the node stops (memory:)"
)
redis = StorageDriverPlugin(
    "redis",
    ("redis", "redis+unix", "redis+sentinel"),
    "Redis server (redis://[:password@]host:port/db, redis+unix:///path.sock?db=N, "
    "redis+sentinel://host:port[,host:port...]/MASTERNAME/db)",
    durabilities=LEVELS,
)
mongodb = StorageDriverPlugin(
    "mongodb",
    ("mongodb",),
    "MongoDB (mongodb://host[:port][,host2...]/dbname?replicaSet=...)",
    durabilities=LEVELS,
)
