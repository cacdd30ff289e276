"""
The MongoDB storage driver (txmongo), the spec's reference store.
"""

from marconi.core.drivers import StorageDriverPlugin

mongodb = StorageDriverPlugin(
    name="mongodb",
    schemes=("mongodb",),
    description="MongoDB (mongodb://host[:port][,host2...]/dbname?replicaSet=...)",
    uriChecker="marconi.storage.mongodb_uri.checkURI",
    factory="marconi.storage.mongodb_uri.makeStore",
)
