"""
The cluster: a consistent-hash ring over the nodes, their health, signed
forwarding of a request to the node that owns its queue, and
scatter-gather for what spans queues.

The API reaches all of it through one interface,
L{marconi.core.interfaces.IRouter}; nothing here imports the API.
"""
