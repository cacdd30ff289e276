"""
The one interface between the API and the cluster.
"""

from zope.interface import Interface


class IRouter(Interface):
    """
    Decides where a request is served, and relays it when that is on
    another node.

    The API asks, in this order: L{verify} (is this a request forwarded by a
    node of the cluster?), then for a queue-scoped request that was not
    forwarded, L{route} (which node owns the queue?) and, if another node
    does, L{forward}.  A forwarded request is served where it arrives and
    never forwarded again.
    """

    def verify(request):
        """
        Check the forwarding headers of a received request.

        @param request: the L{twisted.web.iweb.IRequest}, its body read.
        @return: L{None} when the request carries no forwarding header; the
            project (L{str}) resolved by the node that forwarded it when it
            carries them with a valid signature.
        @raise marconi.core.errors.Forbidden: it carries forwarding headers
            without a valid signature.
        """

    def route(project, queue):
        """
        @return: L{None} when this node owns the queue; else the name
            (L{str}) of the node that does.
        @raise marconi.cluster.errors.NodeUnavailable: the owner is down.
        """

    def forward(request, project, owner):
        """
        Send the request to C{owner}, signed and carrying C{project}, and
        put the owner's status and headers on C{request}.

        @return: a L{Deferred} firing with the owner's response body.
        @raise marconi.cluster.errors.NodeUnavailable: (asynchronously) the
            owner could not be reached or did not answer in time, or
            answered with a body over the bound.
        """

    def listQueues(project, marker, limit, detailed, withCount, local):
        """
        A page of the project's queues, gathered from every node.

        @param local: a callable returning an awaitable of this node's own
            C{(list of QueueInfo, count or None)} for the same arguments.
        @return: a L{Deferred} firing with C{(list of QueueInfo in name
            order, at most C{limit} of them; total count or None)}.
        @raise marconi.cluster.errors.NodeUnavailable: a node is down.
        """

    def health():
        """
        @return: a JSON-able L{dict} describing this node, the ring and the
            state of every node.
        """
