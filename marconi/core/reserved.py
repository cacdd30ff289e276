"""
The projects Marconi keeps for itself.

Each name has a space, which no project id a client sends may have
(L{marconi.core.validation.projectId}), so no client can list, read or
delete what is kept there.  Their queues belong to the node that made
them: they are never handed over to another node when the ring changes
(L{marconi.cluster.rebalance}).
"""

#: The queues of the storage health probes (made and deleted at once).
PROBE_PROJECT = "marconi health probe"
#: The subscriptions extension's records and delivery outbox.
SUBSCRIPTIONS_PROJECT = "marconi subscriptions"

#: What a node of a cluster records of the queues it hands over or takes
#: (L{marconi.cluster.rebalance}).
CLUSTER_PROJECT = "marconi cluster"
#: The queue of L{CLUSTER_PROJECT} holding the moves a node's store
#: recorded in the tables of an earlier version (C{cluster_moves},
#: C{cluster_state}), written when the store is opened and taken over by
#: the rebalancer when it starts.  The C{~} keeps it apart from every
#: node's own record (C{moves.NODE}).
UPGRADED_MOVES = "moves~upgraded"

#: Every reserved project.
PROJECTS = frozenset({PROBE_PROJECT, SUBSCRIPTIONS_PROJECT, CLUSTER_PROJECT})
