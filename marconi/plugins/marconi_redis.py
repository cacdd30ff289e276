"""
The Redis storage driver (txredisapi), imported only when it is used.
"""

from marconi.core.drivers import StorageDriverPlugin

redis = StorageDriverPlugin(
    name="redis",
    schemes=("redis", "redis+unix"),
    description=(
        "Redis server (redis://[:password@]host:port/db, redis+unix:///path.sock?db=N)"
    ),
    uriChecker="marconi.storage.redis_uri.checkURI",
    factory="marconi.storage.redis.makeStore",
)
