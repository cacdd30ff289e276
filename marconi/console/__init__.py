"""
The operator console: a web page served by the node at C{/console/} that
shows a project's queues, one queue's messages and claims, the cluster ring
and the node's health.  See C{docs/console.rst}.
"""

from marconi.console.activity import Activity, ObservedRouter
from marconi.console.web import PATH, Console, Mount

__all__ = ["PATH", "Activity", "Console", "Mount", "ObservedRouter"]
