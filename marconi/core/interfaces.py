"""
The interfaces of Marconi's drivers.

Every method that touches a backend returns a L{Deferred}.  The times given
to a store (C{now}) come from the caller's clock: a store never reads the
wall clock itself, so a test drives expiry with L{twisted.internet.task.Clock}
and, in a cluster, only the owner of a queue decides what has expired.

Errors that belong to a contract are named in its docstring; any backend
failure is reported as L{marconi.core.errors.StorageUnavailable}.
"""

from zope.interface import Attribute, Interface


class IMessageStore(Interface):
    """
    Durable storage of queues, messages and claims, scoped by project.

    A queue is identified by the pair C{(project, name)}: no operation ever
    reads or changes what belongs to another pair.  Message and claim ids are
    looked up only inside the queue named in the call.

    The writes a client can ask a safety level of (L{postMessages},
    L{deleteMessage}, L{deleteMessages}, L{popMessages}, L{createClaim})
    take a keyword-only C{durability}: a level of
    L{marconi.core.durability} for this one change, given only when the
    request asked for one (else the store's default applies).  What each
    level means for a store is in its C{docs/storage*} page.
    """

    def durabilities():
        """
        The levels of L{marconi.core.durability} a request may ask of this
        store, weakest first: C{(fast, durable)} for a store without
        replicas, C{(fast, durable, replicated)} for one whose
        configuration names replicas.  A request asking for a level not in
        it is refused with a 400 before anything changes.

        @return: a L{tuple} (not a L{Deferred}: it comes from the store's
            configuration, never from the backend).
        """

    def ping():
        """
        @return: a L{Deferred} firing with C{True} when the backend answers.
        """

    def createQueue(project, name, metadata, now):
        """
        Create a queue, or leave an existing one as it is.

        @type metadata: L{dict}
        @return: a L{Deferred} firing with C{True} if the queue was created,
            C{False} if it existed.
        """

    def getQueueMetadata(project, name):
        """
        @return: a L{Deferred} firing with the queue's metadata L{dict}.
        @raise QueueDoesNotExist: (asynchronously) if there is no such queue.
        """

    def setQueueMetadata(project, name, metadata):
        """
        Replace the queue's metadata.

        @raise QueueDoesNotExist: (asynchronously) if there is no such queue.
        """

    def deleteQueue(project, name):
        """
        Delete the queue with all its messages and claims; deleting a queue
        that does not exist succeeds.
        """

    def listQueues(project, marker, limit, detailed):
        """
        @param marker: list names strictly greater than this one, or L{None}.
        @return: a L{Deferred} firing with up to C{limit}
            L{marconi.core.models.QueueInfo} in name order, with their
            metadata when C{detailed}.
        """

    def countQueues(project):
        """
        @return: a L{Deferred} firing with the number of the project's queues.
        """

    def purgeMessages(project, name):
        """
        Remove every message and claim of the queue at once, claimed or
        not, keeping the queue and its metadata (and its markers: a message
        posted afterwards never reuses one).  Purging a queue that does not
        exist succeeds and does not create it.

        @return: a L{Deferred} firing with the number of messages removed.
        """

    def queueStats(project, name, now):
        """
        @return: a L{Deferred} firing with L{marconi.core.models.QueueStats};
            a queue that does not exist has all counts zero.
        """

    def postMessages(project, queue, messages, clientId, now):
        """
        Store a batch of L{marconi.core.models.NewMessage} atomically: all of
        them or none.  The queue is created (with no metadata) when it does
        not exist.  When the L{Deferred} fires the batch is durable at the
        level asked for (C{durability} keyword) or the store's default.

        @return: a L{Deferred} firing with the new message ids, in order.
        """

    def listMessages(project, queue, query, now):
        """
        @type query: L{marconi.core.models.MessageQuery}
        @return: a L{Deferred} firing with up to C{query.limit} live
            L{marconi.core.models.Message} in marker order, after
            C{query.marker}.  Claimed messages are left out unless
            C{query.includeClaimed}; delayed ones unless
            C{query.includeDelayed}; those posted by C{query.clientId}
            unless C{query.echo}; those missing any of C{query.tags}.
        """

    def getMessages(project, queue, ids, now):
        """
        @return: a L{Deferred} firing with the live messages among C{ids}
            (unknown ids are skipped), in marker order.
        """

    def deleteMessage(project, queue, messageId, claimId, now):
        """
        Delete one message.  Deleting a message that does not exist succeeds.

        @param claimId: the claim the caller holds, or L{None}.
        @raise MessageIsClaimed: a live claim holds the message and
            C{claimId} is not that claim.
        @raise ClaimMismatch: C{claimId} is given but does not hold the
            message (it expired, was released, or never held it).
        """

    def deleteMessages(project, queue, ids, claimIds, now):
        """
        Delete several messages.  When C{claimIds} is L{None} every listed
        message is deleted; otherwise only those held by one of those live
        claims (or not claimed at all).

        @return: a L{Deferred} firing with the number deleted.
        """

    def popMessages(project, queue, limit, tags, now):
        """
        Atomically remove and return up to C{limit} messages that could be
        claimed now (live, not delayed, not claimed), oldest first.
        """

    def createClaim(project, queue, spec, now):
        """
        Atomically claim up to C{spec.limit} messages that are live, not
        delayed and not held by a live claim, oldest first; apply the
        dead-letter policy of C{spec}.  No message is ever held by two live
        claims.  Each claimed message's C{claimCount} grows by one and it
        lives at least C{spec.ttl + spec.grace} seconds from C{now}.

        @type spec: L{marconi.core.models.ClaimSpec}
        @return: a L{Deferred} firing with a L{marconi.core.models.Claim},
            or L{None} when nothing could be claimed.
        """

    def getClaim(project, queue, claimId, now):
        """
        @return: a L{Deferred} firing with the live claim and the messages
            it still holds.
        @raise ClaimDoesNotExist: no such live claim in this queue.
        """

    def renewClaim(project, queue, claimId, ttl, grace, now):
        """
        Restart a live claim with a new TTL and grace; its messages live at
        least C{ttl + grace} seconds from C{now}.

        @raise ClaimDoesNotExist: no such live claim in this queue.
        """

    def releaseClaim(project, queue, claimId, now):
        """
        End a claim; the messages it held can be claimed again.  Releasing
        a claim that does not exist succeeds.
        """

    def purgeExpired(now):
        """
        Remove expired messages and claims of every project.

        @return: a L{Deferred} firing with the number of messages removed,
            a record of an audit river counted as the events it holds
            (L{marconi.core.audit.recordEvents}); each queue's share is
            reported the same way (L{IStoreEvents}).
        """

    def heldQueues(after, limit):
        """
        Every queue this store holds, of every project (reserved ones
        included): a queue is held while it has metadata or messages.  For
        the handover of queues between the nodes of a cluster
        (L{marconi.cluster.rebalance}).

        @param after: list the pairs strictly after this C{(project, name)}
            pair, or L{None} to start.
        @return: a L{Deferred} firing with up to C{limit} C{(project,
            name)} tuples, in order.
        """

    def exportQueue(project, name, after, limit):
        """
        One page of a queue as it is stored, to be written elsewhere with
        L{importQueue}: its messages in marker order (claimed, delayed and
        expired ones included, with every field), and on the first page
        (C{after} is L{None}) its metadata and its claims.  The format is
        L{marconi.storage.transfer}'s, plain JSON values.

        @param after: the marker the previous page ended at, or L{None}.
        @return: a L{Deferred} firing with L{None} when the store holds no
            such queue, else a L{dict}: C{metadata} (a L{dict}, or L{None}
            when the queue has messages but no metadata), C{created}, C{last}
            (the queue's marker counter), C{claims} (a list of claim
            L{dict}s; empty after the first page), C{messages} (up to
            C{limit} message L{dict}s) and C{next} (the C{after} of the
            next page, or L{None} when this one is the last).
        """

    def importQueue(project, name, page, first):
        """
        Write one page made by L{exportQueue} (of any store) into this
        store: the messages with their ids, markers and fields.  With
        C{first}, whatever the store held of the queue (messages, claims,
        metadata) is replaced by the page's metadata and claims, and the
        queue's marker counter is raised to the page's C{last}, so later
        posts get later markers.  Writing a page again leaves the queue as
        it was after the first time.  No events are emitted.
        """

    def dropQueue(project, name):
        """
        Remove the queue's messages, claims and metadata after its copy
        was imported elsewhere; the marker counter stays, no events are
        emitted.  Dropping a queue the store does not hold succeeds.
        """


class IStorageDriverPlugin(Interface):
    """
    A storage driver, found with L{twisted.plugin.getPlugins} in
    L{marconi.plugins} and chosen by the scheme of the C{--storage} URI.
    """

    name = Attribute("The driver's name, used in messages.")
    schemes = Attribute("The URI schemes this driver serves (tuple of str).")
    description = Attribute("One line saying what the driver is.")

    def checkURI(uri):
        """
        Check a storage URI without touching the backend or importing the
        driver's client library.

        @raise ValueError: with a one-line reason if the URI is invalid.
        """

    durabilities = Attribute(
        "The levels of marconi.core.durability the driver can give."
    )

    def checkDurability(durability):
        """
        @raise ValueError: with a one-line reason if the driver cannot give
            this level of L{marconi.core.durability}.
        """

    def makeStore(uri, reactor, durability):
        """
        @param durability: the node's default level of
            L{marconi.core.durability}; checked as L{checkDurability} does.
        @return: an object providing L{IMessageStore} and
            L{twisted.application.service.IService}; it connects in
            C{startService} and lets go in C{stopService}.
        """


class IAuthDriver(Interface):
    """
    Decides which project a request acts for, and who is an operator.

    Headers a client can write that claim an identity (C{X-Roles},
    C{X-Identity-Status}, ...) are never believed; only a driver that
    trusts its callers (C{noauth}) takes C{X-Project-ID} as given.
    """

    trustsHeaders = Attribute(
        "True when the driver believes the project a request names without "
        "checking any credential (the node then warns on open listeners). "
        "Such a driver's answer must depend only on the headers and the "
        "project in the URL, with no side effect: a relaying node reuses "
        "it for requests sending the same headers (see "
        "marconi.api.passthrough)."
    )

    def authenticate(headers, urlProject):
        """
        @param headers: the request's headers, a mapping of lower-case
            header names (L{bytes}) to their first value (L{bytes}).
        @param urlProject: the project named in the URL, or L{None}.
        @return: a L{Deferred} firing with the project id (L{str}).
        @raise Unauthorized: the credentials are missing or wrong.
        @raise Forbidden: the credentials do not allow this project.
        @raise ValidationFailed: no project can be determined.
        @raise IdentityUnavailable: the identity service cannot say.
        """

    def isAdmin(headers):
        """
        Whether the request comes from an operator, who may use the
        admin-only resources (the detailed health report, cluster
        administration).

        @param headers: as for L{authenticate}.
        @return: a L{Deferred} firing with L{bool}; L{False} whenever the
            credentials are missing, wrong or cannot be checked.
        """


class IAuthDriverPlugin(Interface):
    """
    An auth driver, found in L{marconi.plugins} and chosen by name.
    """

    name = Attribute("The name used in the configuration.")
    description = Attribute("One line saying what the driver is.")

    def makeAuth(settings, reactor):
        """
        @param settings: the driver's section of the configuration file, a
            L{dict} of L{str} to L{str}.
        @return: a provider of L{IAuthDriver}.
        """


class IExtensionPlugin(Interface):
    """
    An extension (see L{marconi.extensions}), found in L{marconi.plugins}
    and enabled by name in the C{[extensions]} section.
    """

    name = Attribute("The name used in the configuration.")
    description = Attribute("One line saying what the extension does.")

    def checkSettings(settings):
        """
        Check the extension's C{[extension:NAME]} section without importing
        the extension's code.

        @raise ValueError: with a one-line reason if a setting is wrong.
        """

    def makeExtension(host):
        """
        @param host: the node's parts the extension may use, a
            L{marconi.extensions.ExtensionHost}.
        @return: a provider of L{IExtension}.
        """


class IExtension(Interface):
    """
    A running extension of one node.  It reaches the core only through the
    bus's public operations and its events (L{marconi.core.events}), both
    on its L{marconi.extensions.ExtensionHost}.
    """

    name = Attribute("The extension's name.")

    def serve(request):
        """
        Answer a request for one of the API resources the extension serves
        (see L{marconi.extensions.ROUTES}); the project is authenticated
        and, in a cluster, the request has reached the queue's owner.

        @param request: a L{marconi.extensions.ExtensionRequest}.
        @return: a L{Deferred} firing with a
            L{marconi.extensions.ExtensionAnswer}, or failing with a
            L{marconi.core.errors.MarconiError} the API answers as usual.
        """

    def resource():
        """
        @return: a L{twisted.web.resource.IResource} mounted on the node's
            listeners at L{marconi.extensions.MOUNTS}'s path for this
            extension, or L{None}.
        """

    def startService():
        """
        Start what the extension runs in the background (it is a child
        service of the node).
        """

    def stopService():
        """
        Stop it; may return a L{Deferred} the node waits for.
        """


class IMonitor(Interface):
    """
    Receives a node's measurements and publishes them (a monitoring
    driver: Prometheus, statsd, ...).

    Every method is called on the reactor thread, on hot paths: it must
    return quickly, never block, and never raise.  Label values come from
    small sets (route names, status codes, operation names, peers), so a
    provider may cache one time series per value.
    """

    def requestServed(route, status, seconds):
        """
        An HTTP request was answered.

        @param route: the name of the API handler (C{"postMessages"}), or
            C{"unmatched"} when no route matched, C{"refused"} when the
            body was too large.
        @param status: the HTTP status code (L{int}).
        @param seconds: from the end of the request's headers to the end
            of the response (L{float}).
        """

    def messagesCounted(kind, count):
        """
        Messages changed state.

        @param kind: one of L{MESSAGE_EVENTS}.
        @param count: how many (L{int}, at least 1).
        """

    def storageCall(operation, seconds, succeeded):
        """
        A storage driver call ended.

        @param operation: the L{IMessageStore} method name.
        @param succeeded: L{False} when it failed.
        """

    def queueDepths(depths):
        """
        Replace the sampled queue depths.

        @param depths: a list of L{marconi.core.models.QueueDepth}.
        """

    def forwardingError(peer):
        """
        Forwarding a request to the cluster node C{peer} (its name) failed.
        """

    def publicResource():
        """
        @return: a L{twisted.web.resource.IResource} the API listener serves
            at C{/metrics}, or L{None} (the default: metrics are then only
            on the driver's own listener, if any).
        """


MESSAGE_EVENTS = ("posted", "claimed", "deleted", "expired", "dead_lettered")


class IMonitoringDriverPlugin(Interface):
    """
    A monitoring driver, found in L{marconi.plugins} and chosen by the
    C{driver} setting of the C{[monitoring]} section.
    """

    name = Attribute("The name used in the configuration.")
    description = Attribute("One line saying what the driver is.")

    def checkSettings(settings):
        """
        Check the driver's settings without starting anything.

        @param settings: the C{[monitoring]} section, a L{dict} of L{str}.
        @raise ValueError: with a one-line reason.
        """

    def makeMonitor(settings, reactor):
        """
        @return: a provider of L{IMonitor} and
            L{twisted.application.service.IService} (which runs the
            driver's own listener or connection, if it has one).
        """


class ILoggingDriverPlugin(Interface):
    """
    A logging driver, found in L{marconi.plugins} and chosen by the
    C{driver} setting of the C{[logging]} section.
    """

    name = Attribute("The name used in the configuration.")
    description = Attribute("One line saying what the driver is.")

    def checkSettings(settings):
        """
        @param settings: the C{[logging]} section, a L{dict} of L{str}.
        @raise ValueError: with a one-line reason.
        """

    def makeObserver(settings):
        """
        @return: a L{twisted.logger.ILogObserver} provider with a
            C{close()} method releasing what it holds (files, sockets).
            It may be called from any thread.
        """


class IQueueDepths(Interface):
    """
    Optional for stores: sampling how deep the deepest queues are.
    """

    def sampleDepths(now, limit):
        """
        @return: a L{Deferred} firing with up to C{limit}
            L{marconi.core.models.QueueDepth} of the deepest queues (by
            live messages), deepest first.
        """


class IStoreEvents(Interface):
    """
    Optional for stores: reporting what a store does on its own inside an
    operation (moving messages to a dead letter queue during a claim).
    """

    def observeEvents(observer):
        """
        Set the observer, called as C{observer(kind, count)} on the reactor
        thread once the change is durable; C{kind} is one of
        L{MESSAGE_EVENTS}.
        """

    def observeQueueEvents(observer):
        """
        Set the observer of the same changes queue by queue, called as
        C{observer(kind, project, queue, count)}: messages moved to a dead
        letter queue (C{queue} is the queue they left) and, where the store
        can tell, messages removed by L{IMessageStore.purgeExpired}
        (C{"expired"}).
        """


class INodeStates(Interface):
    """
    What the cluster knows of its nodes, for C{/v2/health}.
    """

    def nodeStates():
        """
        @return: a L{Deferred} firing with a L{list} of L{dict}, one per
            node, each with at least C{"name"} (L{str}) and C{"state"}
            (C{"up"} or C{"down"}), and C{"self": True} on this node.
        """


class IHealth(Interface):
    """
    The health report of a node (C{/v2/health}).
    """

    def report():
        """
        @return: a L{Deferred} firing with C{(healthy, document)}: a
            L{bool} and the JSON-ready L{dict} to answer with.
        """

    def problem():
        """
        What makes this node unfit to serve whatever its storage says (in
        a cluster: its ring differs from its peers'), or L{None}.

        @return: a L{str} or L{None} (not a L{Deferred}: it is what the
            node knows already).
        """


class IRouter(Interface):
    """
    The one interface between the API and the cluster: decides where a
    request is served, and relays it when that is on another node.

    The API asks, in this order: L{verify} (is this a request forwarded by a
    node of the cluster?), then for a queue-scoped request that was not
    forwarded, L{route} (which node owns the queue?) and, if another node
    does, L{forward}.  A forwarded request is served where it arrives and
    never forwarded again.  A node on its own uses
    L{marconi.core.routing.LocalRouter}, which serves everything here.
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
        @raise marconi.core.errors.StorageUnavailable: the owner is down
            (the cluster raises its C{NodeUnavailable}).
        """

    def forward(request, project, owner):
        """
        Send the request to C{owner}, signed and carrying C{project}, and
        put the owner's status and headers on C{request}.

        @return: a L{Deferred} firing with the owner's response body.
        @raise marconi.core.errors.StorageUnavailable: (asynchronously) the
            owner could not be reached or did not answer in time, or
            answered with a body over the bound.
        """

    def publishedRing():
        """
        The ring clients route by (C{GET /v2/ring}): the ring's description
        (C{scheme}, C{parameters}, C{key}, C{version}) with, for each node,
        its C{name}, C{weight} and client-facing C{url} (L{None} when
        clients cannot reach it directly).  A node on its own answers
        C{{"scheme": None, "version": None, "nodes": []}}: everything is
        served where the request arrives.

        @return: a JSON-able L{dict}.
        """

    def listQueues(project, marker, limit, detailed, withCount, local, queueFilter):
        """
        A page of the project's queues, gathered from every node.

        @param local: a callable returning an awaitable of this node's own
            C{(list of QueueInfo, count or None)} for the same arguments.
        @param queueFilter: the L{marconi.core.queuefilter.QueueFilter} the
            listing keeps queues by (an empty one keeps every queue); the
            count is of the queues it keeps.
        @return: a L{Deferred} firing with C{(list of QueueInfo in name
            order, at most C{limit} of them; total count or None)}.
        @raise marconi.core.errors.StorageUnavailable: a node is down.
        """

    def readAudit(project, query, marker, local):
        """
        A page of the project's audit river, gathered from every node.

        @param query: the L{marconi.core.audit.AuditQuery} (its C{marker}
            unset).
        @param marker: the C{marker} the client gave, or L{None}.
        @param local: C{local(query, store=None)} returns an awaitable of
            the L{marconi.core.audit.RiverPart} of this node's river (or of
            C{store}'s).
        @return: a L{Deferred} firing with a
            L{marconi.core.audit.RiverPage}.
        @raise marconi.core.errors.ValidationFailed: the marker is not one
            this router made.
        """
