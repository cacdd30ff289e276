"""
The in-memory storage driver: a throwaway node, everything lost when it
stops.
"""

from marconi.core.drivers import StorageDriverPlugin

memory = StorageDriverPlugin(
    name="memory",
    schemes=("memory",),
    description="In-process memory, lost when the node stops (memory:)",
    uriChecker="marconi.storage.memory.checkURI",
    factory="marconi.storage.memory.makeStore",
)
