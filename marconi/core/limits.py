"""
The limits and defaults of the domain.

The defaults match OpenStack Zaqar's so that its clients find what they
expect; every value can be changed in the configuration file.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """
    Bounds on what clients may ask for, and the defaults used when they do
    not ask.
    """

    # Messages.
    minMessageTTL: int = 60
    maxMessageTTL: int = 1209600
    defaultMessageTTL: int = 3600
    maxMessageDelay: int = 900
    defaultMessageDelay: int = 0
    maxMessagesPostSize: int = 262144
    maxMessagesPerPost: int = 100
    maxMessagesPerPage: int = 20
    defaultMessagesPerPage: int = 10

    # Claims and pops.
    minClaimTTL: int = 60
    maxClaimTTL: int = 43200
    defaultClaimTTL: int = 300
    minClaimGrace: int = 0
    maxClaimGrace: int = 43200
    defaultClaimGrace: int = 60
    maxMessagesPerClaim: int = 20
    defaultMessagesPerClaim: int = 10

    # Long-polling (marconi.core.waiting): the most seconds a request may
    # wait (never more than waiting.MAXIMUM_WAIT), how many may wait at
    # once on a node, and how many of one project (0: a tenth of
    # maxWaiters, at least 1).
    maxWait: int = 20
    maxWaiters: int = 10000
    maxWaitersPerProject: int = 0

    # Queues.
    maxQueueNameLength: int = 64
    maxQueueMetadata: int = 65536
    maxQueuesPerPage: int = 20
    defaultQueuesPerPage: int = 10

    # Tags.
    maxTagsPerMessage: int = 16
    maxTagLength: int = 64
    maxTagsPerFilter: int = 16

    # Identity.
    maxProjectIdLength: int = 256
    maxClientIdLength: int = 256

    # JSON.
    maxJSONDepth: int = 32
