"""
The Klein application: the Zaqar v2 (and v1.1) API, and the same resources
under C{/{version}/projects/{project_id}/...} for clients that cannot set
headers.

Handlers are thin: they read the request, call L{Messaging}, and answer
JSON text (documents through L{render.document}, messages through its
templates); L{_send} writes it in the media type negotiated for the request
(L{marconi.api.media}), gzip'd when asked.  All errors are turned into
answers by the handlers at the end of the class.
"""

import functools
import re
import uuid
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional
from urllib.parse import quote, quote_plus, urlencode, urlsplit

from twisted.logger import Logger
from twisted.python.failure import Failure
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import BaseConverter

from marconi.api import homedoc, identity, media, openapi, presigned, render, versions
from marconi.api.errors import HTTPError, statusOf
from marconi.api.fast import FastResource
from marconi.api.http import RoutedKlein
from marconi.api.media import gzip
from marconi.core import audit, jsontext, queuefilter, signing, validation, waiting
from marconi.core.errors import (
    Forbidden,
    InvalidBody,
    MarconiError,
    MessageDoesNotExist,
    ValidationFailed,
)
from marconi.core.interfaces import IAuthDriver, IHealth, IRouter
from marconi.core.messaging import PATCH_MEDIA_TYPE, Messaging
from marconi.core.queuefilter import QueueFilter
from marconi.core.routing import LocalRouter
from marconi.core.text import parseBoolean
from marconi.extensions import ROUTES, ExtensionRequest, Extensions, notEnabled

JSON = media.JSON_MEDIA.contentType
# ASCII only: str.isdigit() also admits characters int() refuses, such as
# superscript digits.
_INTEGER = re.compile(r"-?[0-9]{1,9}|[0-9]{10}")
_MARKER = re.compile(r"[0-9]{1,19}")
_SECONDS = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
_SHARDING_METHODS = ["GET", "PUT", "PATCH", "DELETE"]
_QUEUE_IN_PATH = re.compile(r"/queues/([a-zA-Z0-9_.-]+)(?:/|$)")


class VersionConverter(BaseConverter):
    """
    The API versions served: C{v2} and C{v1.1}.
    """

    regex = "|".join(re.escape(name) for name in versions.POLICIES)


class ShareVersion(BaseConverter):
    """
    The API versions that make pre-signed URLs.
    """

    regex = "|".join(re.escape(name) for name in presigned.VERSIONS)


class QueuePatchVersion(BaseConverter):
    """
    The API versions whose queues can be changed with C{PATCH}: under the
    others the method is not routed, so it is 405 like any other.
    """

    regex = "|".join(
        re.escape(name) for name, p in versions.POLICIES.items() if p.queuePatch
    )


class PurgeVersion(BaseConverter):
    """
    The API versions whose queues can be purged.
    """

    regex = "|".join(
        re.escape(name) for name, p in versions.POLICIES.items() if p.purge
    )


def _routes(
    app: RoutedKlein, path: str, methods: list, served: str = "version"
) -> Callable:
    """
    Route C{path} under C{/<version>} and under
    C{/<version>/projects/<project_id>}; both routes are measured under the
    handler's name.

    @param served: the converter naming the versions that serve the route.
    """

    def register(handler: Callable) -> Callable:
        for index, prefix in enumerate(
            (f"/<{served}:version>", f"/<{served}:version>/projects/<project_id>")
        ):
            endpoint = f"{handler.__name__}_{index}"
            app.labels[endpoint] = handler.__name__
            app.route(
                prefix + path,
                methods=methods,
                endpoint=endpoint,
                strict_slashes=False,
            )(handler)
        return handler

    return register


def _queueRoute(
    app: RoutedKlein, path: str, methods: list, served: str = "version"
) -> Callable:
    """
    Route a handler of one queue's resources (see L{_routes}).  The
    handler is called as C{handler(self, request, ctx, queue, **ids)} with
    the request's L{Context} resolved; a request for a queue that another
    node owns is forwarded there instead and its answer relayed.
    """

    def register(handler: Callable) -> Callable:
        @functools.wraps(handler)
        async def serve(
            self: "MarconiAPI",
            request: Any,
            version: str,
            queue: str,
            project_id: Optional[str] = None,
            **ids: str,
        ) -> bytes:
            ctx = await self._context(request, version, project_id)
            owner = None if ctx.forwarded else self.router.route(ctx.project, queue)
            if owner is not None:
                answer = await self.router.forward(request, ctx.project, owner)
                return _encoded(request, answer)
            return await handler(self, request, ctx, queue, **ids)

        return _routes(app, path, methods, served)(serve)

    return register


class AuditVersion(BaseConverter):
    """
    The API versions serving the audit river: C{v2} only.
    """

    regex = re.escape("v2")


@dataclass(frozen=True, slots=True)
class Context:
    """
    Who a request acts for, and the base of the hrefs it gets back.
    """

    project: str
    clientId: str
    base: str
    forwarded: bool = False
    policy: versions.VersionPolicy = versions.V2

    def queueHref(self, queue: str) -> str:
        return f"{self.base}/queues/{queue}"


def _extensionHandler(name: str, label: str) -> Callable:
    """
    The handler of a resource of extension C{name}, measured as C{label}.
    """

    async def serve(
        self: "MarconiAPI", request: Any, ctx: Context, queue: str, **ids: str
    ) -> bytes:
        return await self._extension(name, request, ctx, queue, ids)

    serve.__name__ = label
    return serve


class MarconiAPI:
    """
    The HTTP API of one node.
    """

    app = RoutedKlein()
    app.url_map.converters["version"] = VersionConverter
    app.url_map.converters["queuePatchVersion"] = QueuePatchVersion
    app.url_map.converters["shareVersion"] = ShareVersion
    app.url_map.converters["auditVersion"] = AuditVersion
    app.url_map.converters["v2Only"] = AuditVersion
    app.url_map.converters["purgeVersion"] = PurgeVersion
    log = Logger()

    def __init__(
        self,
        bus: Messaging,
        auth: IAuthDriver,
        health: IHealth,
        router: Optional[IRouter] = None,
        signedURLs: Optional[presigned.SignedURLs] = None,
        extensions: Optional[Extensions] = None,
    ) -> None:
        """
        @param router: the node's router in a cluster; by default a
            L{LocalRouter}, for a node on its own.
        @param signedURLs: makes and checks pre-signed URLs; by default
            none are made or accepted.
        @param extensions: the extensions the node runs; by default none.
        """
        self.bus = bus
        self.auth = auth
        self.healthCheck = health
        self.router: Any = LocalRouter() if router is None else router
        self.signedURLs = signedURLs or presigned.SignedURLs(None, bus.clock)
        self.limits = bus.limits
        self.extensions = Extensions() if extensions is None else extensions
        self._openapi = render.document(openapi.document(self.limits))
        self.waiters = waiting.waitersOf(
            bus.events,
            bus.clock,
            self.limits.maxWaiters,
            self.limits.maxWaitersPerProject,
        )

    def resource(self) -> Any:
        # The hot routes first, Klein for everything (see marconi.api.fast).
        return FastResource(self.app, self.app.resource(), self)

    # Request helpers.

    async def _context(
        self, request: Any, version: str, projectId: Optional[str]
    ) -> Context:
        """
        Resolve who the request acts for.  A request a node of the cluster
        forwarded here, with a valid signature, acts for the project it
        carries.
        """
        policy = versions.POLICIES[version]
        if request.method == b"HEAD" and not policy.head:
            raise MethodNotAllowed(self._allowed(request))
        _negotiate(request)
        signed = self.router.verify(request)
        if signed is None:
            # A client: by its pre-signed URL headers if it sends them,
            # else by the auth driver.
            headers = identity.authHeaders(request)
            project = self.signedURLs.verify(request, headers, projectId)
            if project is None:
                project = await self.auth.authenticate(headers, projectId)
            client = headers.get(b"client-id")
        elif projectId is not None and projectId != signed:
            raise Forbidden("The project in the URL is not the forwarded project.")
        else:
            # Forwarded by a node, which authenticated the client: the
            # signed project is the one it acts for.
            project = signed
            client = (request.requestHeaders.getRawHeaders(b"client-id") or [None])[0]
        project = validation.projectId(project, self.limits)
        request.project = project
        request.forwarded = signed is not None
        clientId = policy.clientId(
            client.decode("latin-1") if client is not None else None, self.limits
        )
        if projectId is None:
            base = f"/{version}"
        else:
            base = f"/{version}/projects/{quote(project, safe='')}"
        return Context(
            project=project,
            clientId=clientId,
            base=base,
            forwarded=signed is not None,
            policy=policy,
        )

    def _allowed(self, request: Any) -> list:
        """
        The methods other than C{HEAD} routed at the request's path.
        """
        adapter = self.app.url_map.bind("localhost")
        methods = adapter.allowed_methods(request.path.decode("latin-1"))
        return sorted(m for m in methods if m != "HEAD")

    async def isAdmin(self, request: Any) -> bool:
        """
        Whether the request may use the admin-only resources: a request
        forwarded by a node of the cluster acts for its project only, so
        never.
        """
        if self.router.verify(request) is not None:
            return False
        if presigned.carriesSignature(request):
            return False
        return bool(await self.auth.isAdmin(identity.authHeaders(request)))

    async def _signer(self, ctx: Context, queue: str) -> Optional[Callable]:
        """
        What signs the messages delivered from C{queue}, if it has keys and
        the version shows signatures.
        """
        if not ctx.policy.signatures:
            return None
        return await self.bus.signer(ctx.project, queue)

    def _body(self, request: Any) -> bytes:
        request.content.seek(0)
        return request.content.read()

    def _json(
        self,
        request: Any,
        optional: bool = False,
        reader: Optional[media.Serializer] = None,
    ) -> Any:
        """
        The request's body document, read in its C{Content-Type} (or by
        C{reader}).
        """
        data = self._body(request)
        if not data.strip():
            if optional:
                return None
            raise InvalidBody("The request body is empty.")
        if reader is None:
            reader = media.ofBody(request.getHeader(b"content-type"))
        return reader.load(data, self.limits.maxJSONDepth)

    # Versions, home, ping, health, ring.

    @app.route("/", methods=["GET"])
    def versions(self, request: Any) -> bytes:
        request.setResponseCode(300)
        return _send(request, homedoc.versions())

    @app.route("/<version:version>", methods=["GET"], strict_slashes=False)
    def home(self, request: Any, version: str) -> bytes:
        _negotiate(request)
        request.setHeader(b"cache-control", b"max-age=86400")
        return _send(request, homedoc.home(version), b"application/json-home")

    @app.route(openapi.OPENAPI_PATH, methods=["GET"])
    def openapiDocument(self, request: Any) -> bytes:
        return _send(request, self._openapi)

    @app.route("/<version:version>/ping", methods=["GET"])
    async def ping(self, request: Any, version: str) -> bytes:
        alive = await self.bus.ping()
        request.setResponseCode(204 if alive else 503)
        return b""

    @app.route("/<version:version>/health", methods=["GET"])
    async def health(self, request: Any, version: str) -> bytes:
        """
        The detailed report for operators (its probe writes to storage and
        it names the nodes); liveness only for everyone else.
        """
        _negotiate(request)
        if not await self.isAdmin(request):
            alive = await self.bus.ping()
            doc = {"storage_reachable": alive}
            problem = self.healthCheck.problem()
            if problem is not None:
                doc["error"] = problem
            request.setResponseCode(200 if alive and problem is None else 503)
            return _send(request, render.document(doc))
        healthy, doc = await self.healthCheck.report()
        request.setResponseCode(200 if healthy else 503)
        return _send(request, render.document(doc))

    @app.route("/<version:version>/ring", methods=["GET"])
    def ring(self, request: Any, version: str) -> bytes:
        """
        The ring clients route by; no project or token is needed (it names
        nodes and URLs, no tenant's data).
        """
        _negotiate(request)
        return _send(request, render.document(self.router.publishedRing()))

    # Zaqar's pools and flavors: the ring places queues instead.

    @app.route("/<version:version>/pools", methods=_SHARDING_METHODS)
    @app.route("/<version:version>/pools/<name>", methods=_SHARDING_METHODS)
    @app.route("/<version:version>/flavors", methods=_SHARDING_METHODS)
    @app.route("/<version:version>/flavors/<name>", methods=_SHARDING_METHODS)
    def sharding(self, request: Any, version: str, name: str = "") -> bytes:
        """
        Pools and flavors are not served: say so, and what does their work.
        """
        raise HTTPError(
            404,
            "Not supported",
            "Marconi has no pools or flavors: it places each queue on a node "
            "of its cluster by a consistent-hash ring (GET /v2/ring), and "
            "each node's store is set in its configuration.",
        )

    # Queues.

    @_routes(app, "/queues", ["GET"])
    async def listQueues(
        self, request: Any, version: str, project_id: Optional[str] = None
    ) -> bytes:
        ctx = await self._context(request, version, project_id)
        limit = _int(request, "limit")
        marker = _arg(request, "marker")
        detailed = _bool(request, "detailed")
        withCount = _bool(request, "with_count")
        queueFilter = _queueFilter(request, ctx, self.limits)
        page = limit if limit is not None else self.limits.defaultQueuesPerPage

        def local() -> Any:
            return self.bus.listQueues(
                ctx.project, marker, page, detailed, withCount, queueFilter
            )

        missing = None
        if ctx.forwarded:
            # A node gathering the listing asks for this node's own part.
            queues, count = await local()
        else:
            listing = await self.router.listQueues(
                ctx.project,
                marker,
                page,
                detailed,
                withCount,
                local,
                queueFilter,
            )
            queues, count = listing
            # Nodes of a cluster whose queues could not be read.
            missing = getattr(listing, "missing", None)
        items = []
        for q in queues:
            item: dict = {"name": q.name, "href": ctx.queueHref(q.name)}
            if detailed:
                item["metadata"] = signing.publicMetadata(q.metadata)
            items.append(item)
        links = []
        pageSize = limit or self.limits.defaultQueuesPerPage
        if queues:
            params: dict = {"marker": queues[-1].name, "limit": pageSize}
            if detailed:
                params["detailed"] = "true"
            params.update(queueFilter.parameters())
            links.append(
                {"rel": "next", "href": f"{ctx.base}/queues?{urlencode(params)}"}
            )
        doc: dict = {"queues": items, "links": links}
        if count is not None:
            doc["count"] = count
        if missing:
            doc["missing_nodes"] = missing
        return _send(request, render.document(doc))

    @_queueRoute(app, "/queues/<queue>", ["PUT"])
    async def createQueue(self, request: Any, ctx: Context, queue: str) -> bytes:
        metadata = self._json(request, optional=True)
        if metadata is None:
            metadata = {}
        created = await self.bus.createQueue(ctx.project, queue, metadata)
        request.setHeader(b"location", ctx.queueHref(queue).encode())
        if not created:
            return _noContent(request)
        request.setResponseCode(201)
        # Empty, but typed as Zaqar types it.
        return _send(request, b"")

    @_queueRoute(app, "/queues/<queue>", ["GET"])
    async def getQueue(self, request: Any, ctx: Context, queue: str) -> bytes:
        metadata = await self.bus.getQueue(
            ctx.project, queue, ctx.policy.reservedDefaults
        )
        return _send(request, render.document(metadata))

    @_queueRoute(app, "/queues/<queue>", ["PATCH"], "queuePatchVersion")
    async def patchQueue(self, request: Any, ctx: Context, queue: str) -> bytes:
        contentType = request.getHeader(b"content-type") or b""
        if contentType.split(b";")[0].strip().decode("latin-1") != PATCH_MEDIA_TYPE:
            raise ValidationFailed(
                f"PATCH requests must use the media type {PATCH_MEDIA_TYPE}."
            )
        metadata = await self.bus.patchQueue(
            ctx.project, queue, self._json(request, reader=media.JSON_MEDIA)
        )
        return _send(request, render.document(metadata))

    @_queueRoute(app, "/queues/<queue>", ["DELETE"])
    async def deleteQueue(self, request: Any, ctx: Context, queue: str) -> bytes:
        await self.bus.deleteQueue(ctx.project, queue)
        return _noContent(request)

    @_queueRoute(app, "/queues/<queue>/purge", ["POST"], "purgeVersion")
    async def purgeQueue(self, request: Any, ctx: Context, queue: str) -> bytes:
        """
        Purge the queue's messages and/or subscriptions, keeping the queue
        and its metadata; served by the queue's owner.
        """
        document = self._json(request, optional=True)
        if document is None and self._body(request).strip():
            raise ValidationFailed('The body must be an object with "resource_types".')
        await self.bus.purgeQueue(ctx.project, queue, document)
        return _noContent(request)

    @_queueRoute(app, "/queues/<queue>/stats", ["GET"])
    async def queueStats(self, request: Any, ctx: Context, queue: str) -> bytes:
        stats = await self.bus.queueStats(ctx.project, queue)
        return _send(
            request,
            render.stats(
                stats,
                ctx.queueHref(queue),
                self.bus.now(),
                ctx.policy.statsDelayed,
                ctx.policy.identities,
            ),
        )

    @_routes(app, "/queues/<queue>/share", ["POST"], "shareVersion")
    async def shareQueue(
        self,
        request: Any,
        version: str,
        queue: str,
        project_id: Optional[str] = None,
    ) -> bytes:
        """
        A pre-signed URL on the queue (see L{presigned}); made by the
        node that receives it, with the secret every node shares.
        """
        ctx = await self._context(request, version, project_id)
        validation.queueName(queue, self.limits)
        grant = self.signedURLs.share(
            ctx.project, ctx.queueHref(queue), self._json(request, optional=True)
        )
        return _send(request, render.document(grant))

    # Messages.

    @_queueRoute(app, "/queues/<queue>/messages", ["POST"])
    async def postMessages(self, request: Any, ctx: Context, queue: str) -> bytes:
        body = self._body(request)
        if not body.strip():
            raise InvalidBody("The request body is empty.")
        reader = media.ofBody(request.getHeader(b"content-type"))
        document = reader.load(body, self.limits.maxJSONDepth)
        size = len(body)
        if reader is not media.JSON_MEDIA:
            # The post size limit counts the messages as compact JSON.
            size = len(jsontext.dumps(document))
        if not ctx.policy.bareMessageList and not isinstance(document, dict):
            raise ValidationFailed('The body must have a "messages" list.')
        document = ctx.policy.messagesDocument(document)
        ids = await self.bus.postMessages(
            ctx.project, queue, document, size, ctx.clientId, _safety(request)
        )
        href = ctx.queueHref(queue) + "/messages"
        request.setResponseCode(201)
        request.setHeader(b"location", f"{href}?ids={','.join(ids)}".encode())
        # The document render.document writes, joined: no href needs a JSON
        # escape (the base quotes the project, queue names and ids are
        # plain ASCII).
        resources = ('","' + href + "/").join(ids)
        return _send(request, f'{{"resources":["{href}/{resources}"]}}'.encode("utf-8"))

    @_queueRoute(app, "/queues/<queue>/messages", ["GET"])
    async def listMessages(self, request: Any, ctx: Context, queue: str) -> bytes:
        queueHref = ctx.queueHref(queue)
        ids = _list(request, "ids")
        if ids is not None:
            found = await self.bus.getMessages(
                ctx.project, queue, validation.ids(ids, self.limits.maxMessagesPerPage)
            )
            if not found:
                raise MessageDoesNotExist(ids)
            now = self.bus.now()
            signer = await self._signer(ctx, queue)
            return _send(
                request,
                render.messageList(
                    render.messages(
                        found, queueHref, now, None, ctx.policy.checksums, signer
                    )
                ),
            )
        limit = _int(request, "limit")
        marker = _arg(request, "marker")
        markerValue = None
        if marker:
            if not _MARKER.fullmatch(marker) or int(marker) >= 2**63:
                if not ctx.policy.lenientMarker:
                    raise ValidationFailed("marker is not valid.")
                # A marker no message carries: the listing starts over.
                marker = None
            else:
                markerValue = int(marker)
        echo = _bool(request, "echo")
        includeClaimed = _bool(request, "include_claimed")
        includeDelayed = _bool(request, "include_delayed")
        tagArg = _list(request, "tags")
        tags = validation.tagFilter(tagArg, self.limits)
        messages = await self._waiting(
            request,
            ctx,
            queue,
            lambda: self.bus.listMessages(
                ctx.project,
                queue,
                ctx.clientId,
                limit=limit,
                marker=markerValue,
                echo=echo,
                includeClaimed=includeClaimed,
                includeDelayed=includeDelayed,
                tags=tags,
            ),
        )
        now = self.bus.now()
        signer = await self._signer(ctx, queue) if messages else None
        pageSize = limit or self.limits.defaultMessagesPerPage
        links = []
        if messages:
            # As urlencode would write it: an int needs no quoting.
            last = messages[-1].marker
            if type(last) is not int:
                last = quote_plus(str(last))
            query = f"marker={last}&limit={pageSize:d}"
            if echo:
                query += "&echo=true"
            if includeClaimed:
                query += "&include_claimed=true"
            if includeDelayed:
                query += "&include_delayed=true"
            if tagArg:
                query += "&tags=" + quote_plus(tagArg)
            links.append({"rel": "next", "href": f"{queueHref}/messages?{query}"})
        return _send(
            request,
            render.messageList(
                render.messages(
                    messages, queueHref, now, None, ctx.policy.checksums, signer
                ),
                links,
            ),
        )

    @_queueRoute(app, "/queues/<queue>/messages", ["DELETE"])
    async def deleteMessages(self, request: Any, ctx: Context, queue: str) -> bytes:
        ids = _list(request, "ids")
        pop = _arg(request, "pop")
        if (ids is None) == (pop is None):
            raise ValidationFailed("Give either ids or pop, not both and not neither.")
        if pop is not None:
            limit = _int(request, "pop")
            assert limit is not None
            tags = validation.tagFilter(_list(request, "tags"), self.limits)
            safety = _safety(request)
            messages = await self._waiting(
                request,
                ctx,
                queue,
                lambda: self.bus.popMessages(ctx.project, queue, limit, tags, safety),
            )
            now = self.bus.now()
            # As Zaqar does, popped messages name the claim that took them
            # out, one for the whole pop; it is gone by the time it is seen.
            claimId = str(uuid.uuid4())
            signer = await self._signer(ctx, queue) if messages else None
            return _send(
                request,
                render.messageList(
                    render.popped(m, now, claimId, ctx.policy.checksums, signer)
                    for m in messages
                ),
            )
        assert ids is not None
        claimIds = _list(request, "claim_ids")
        await self.bus.deleteMessages(
            ctx.project,
            queue,
            validation.ids(ids, self.limits.maxMessagesPerPage),
            None
            if claimIds is None
            else validation.ids(claimIds, self.limits.maxMessagesPerPage),
            _safety(request),
        )
        return _noContent(request)

    @_queueRoute(app, "/queues/<queue>/messages/<message_id>", ["GET"])
    async def getMessage(
        self, request: Any, ctx: Context, queue: str, message_id: str
    ) -> bytes:
        message = await self.bus.getMessage(ctx.project, queue, message_id)
        return _send(
            request,
            render.message(
                message,
                ctx.queueHref(queue),
                self.bus.now(),
                None,
                ctx.policy.checksums,
                await self._signer(ctx, queue),
            ).encode("utf-8"),
        )

    @_queueRoute(app, "/queues/<queue>/messages/<message_id>", ["DELETE"])
    async def deleteMessage(
        self, request: Any, ctx: Context, queue: str, message_id: str
    ) -> bytes:
        claimId = _arg(request, "claim_id") or None
        await self.bus.deleteMessage(
            ctx.project, queue, message_id, claimId, _safety(request)
        )
        return _noContent(request)

    # Claims.

    @_queueRoute(app, "/queues/<queue>/claims", ["POST"])
    async def createClaim(self, request: Any, ctx: Context, queue: str) -> bytes:
        options = self._json(request, optional=True)
        ctx.policy.claimOptions(options, self.limits)
        limit = _int(request, "limit")
        tags = validation.tagFilter(_list(request, "tags"), self.limits)
        safety = _safety(request)
        claim = await self._waiting(
            request,
            ctx,
            queue,
            lambda: self.bus.createClaim(
                ctx.project, queue, options, limit, tags, safety
            ),
        )
        if claim is None:
            return _noContent(request)
        queueHref = ctx.queueHref(queue)
        now = self.bus.now()
        request.setResponseCode(201)
        request.setHeader(b"location", f"{queueHref}/claims/{claim.id}".encode())
        signer = await self._signer(ctx, queue)
        return _send(
            request,
            render.messageList(
                render.messages(
                    claim.messages,
                    queueHref,
                    now,
                    claim.id,
                    ctx.policy.checksums,
                    signer,
                )
            ),
        )

    @_queueRoute(app, "/queues/<queue>/claims/<claim_id>", ["GET"])
    async def getClaim(
        self, request: Any, ctx: Context, queue: str, claim_id: str
    ) -> bytes:
        claim = await self.bus.getClaim(ctx.project, queue, claim_id)
        return _send(
            request,
            render.claim(
                claim,
                ctx.queueHref(queue),
                self.bus.now(),
                ctx.policy.identities,
                ctx.policy.checksums,
                await self._signer(ctx, queue),
            ),
        )

    @_queueRoute(app, "/queues/<queue>/claims/<claim_id>", ["PATCH"])
    async def renewClaim(
        self, request: Any, ctx: Context, queue: str, claim_id: str
    ) -> bytes:
        options = ctx.policy.renewOptions(self._json(request), self.limits)
        await self.bus.renewClaim(ctx.project, queue, claim_id, options)
        return _noContent(request)

    @_queueRoute(app, "/queues/<queue>/claims/<claim_id>", ["DELETE"])
    async def releaseClaim(
        self, request: Any, ctx: Context, queue: str, claim_id: str
    ) -> bytes:
        await self.bus.releaseClaim(ctx.project, queue, claim_id)
        return _noContent(request)

    # Long-polling (marconi.core.waiting).

    async def _waiting(
        self, request: Any, ctx: Context, queue: str, query: Callable
    ) -> Any:
        """
        The result of C{query}, run again as the queue's events wake it
        while it finds nothing, until the request's C{wait} runs out (at
        once without one).  A C{wait} that is not valid is refused before
        C{query} ever runs.
        """
        seconds = _wait(request, ctx, self.limits)
        try:
            return await self.waiters.wait(
                ctx.project, queue, seconds, query, waiting.found
            )
        except waiting.TooManyWaiters as e:
            request.setHeader(b"retry-after", b"%d" % e.retryAfter)
            raise HTTPError(503, e.title, e.description) from None

    # The audit river.

    @_routes(app, "/audit", ["GET"], served="auditVersion")
    async def readAudit(
        self, request: Any, version: str, project_id: Optional[str] = None
    ) -> bytes:
        """
        The project's audit river, oldest first, gathered from every node
        of a cluster; a node gathering it asks each other node for its own
        part (a forwarded request).
        """
        ctx = await self._context(request, version, project_id)
        query = _auditQuery(request, self.limits)
        marker = _arg(request, "marker")

        def local(query: audit.AuditQuery, store: Any = None) -> Any:
            return self.bus.audit.readPart(ctx.project, query, store)

        if ctx.forwarded:
            part = await local(replace(query, marker=audit.position(marker)))
            own = {"position": part.position, "horizon": part.horizon}
            return _send(request, render.document({"events": part.events, **own}))
        page = await self.router.readAudit(ctx.project, query, marker, local)
        links = []
        if page.next is not None:
            params: dict = {"marker": page.next, "limit": query.limit}
            for name in ("queue", "action", "since", "until", "tags"):
                if _arg(request, name) is not None:
                    params[name] = _list(request, name)
            links.append(
                {"rel": "next", "href": f"{ctx.base}/audit?{urlencode(params)}"}
            )
        doc: dict = {"events": page.events, "links": links}
        if page.missing:
            doc["partial"] = True
            doc["missing_nodes"] = list(page.missing)
        return _send(request, render.document(doc))

    # The resources extensions serve (see marconi.extensions): each route
    # hands the request to its extension, or answers 404 "Not enabled" when it is off.

    for _index, (_name, _path, _methods) in enumerate(ROUTES):
        _queueRoute(app, _path, list(_methods), served="v2Only")(
            _extensionHandler(_name, f"extension_{_name}_{_index}")
        )
    del _index, _name, _path, _methods

    async def _extension(
        self, name: str, request: Any, ctx: Context, queue: str, ids: dict
    ) -> bytes:
        if name not in self.extensions.enabled:
            raise notEnabled(name)
        body = None
        if request.method in (b"POST", b"PUT", b"PATCH"):
            body = self._json(request, optional=True)
        answer = await self.extensions.serve(
            name,
            ExtensionRequest(
                method=request.method.decode("ascii"),
                project=ctx.project,
                clientId=ctx.clientId,
                queue=queue,
                ids=ids,
                args={
                    k.decode("latin-1"): [v.decode("utf-8", "replace") for v in vs]
                    for k, vs in request.args.items()
                },
                body=body,
                base=ctx.base,
                headers={
                    k.decode("latin-1").lower(): vs[-1].decode("latin-1")
                    for k, vs in request.requestHeaders.getAllRawHeaders()
                },
            ),
        )
        request.setResponseCode(answer.code)
        for header, value in answer.headers.items():
            request.setHeader(header.encode("latin-1"), value.encode("latin-1"))
        if answer.document is None:
            return b""
        return _send(request, render.document(answer.document))

    def _recordRefusal(self, request: Any, code: int, title: str) -> None:
        """
        Record a refused request of a known project in its audit river:
        the method, the path (without the query) and the answer, never the
        body or the headers.
        """
        project = getattr(request, "project", None)
        if project is None or not 400 <= code < 500:
            return
        path = request.path.decode("latin-1")
        queue = _QUEUE_IN_PATH.search(path)
        self.bus.events.emit(
            project,
            "refused",
            queue.group(1) if queue else None,
            status=code,
            title=title,
            method=request.method.decode("latin-1"),
            path=path,
            request=getattr(request, "requestId", None),
        )

    # Errors: specific first, the catch-all last.

    @app.handle_errors(MarconiError)
    def domainError(self, request: Any, failure: Failure) -> bytes:
        error = failure.value
        identity.challenge(request, error)
        policy = versions.forPath(request.path)
        code = policy.status(error, statusOf(error))
        for name, value in getattr(error, "headers", {}).items():
            request.setHeader(name, value)
        self._recordRefusal(request, code, policy.title(error))
        if code == 406 and not policy.routingDescriptions:
            request.setResponseCode(code)
            return _send(request, b"")
        return _error(request, code, policy.title(error), error.description)

    @app.handle_errors(HTTPException)
    def routingError(self, request: Any, failure: Failure) -> bytes:
        error = failure.value
        code = error.code or 500
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            request.setHeader(b"allow", ", ".join(error.valid_methods).encode())
        if 300 <= code < 400 and getattr(error, "new_url", None):
            # werkzeug names the host the client sent: keep only the path.
            target = urlsplit(error.new_url)
            location = target.path + (f"?{target.query}" if target.query else "")
            request.setResponseCode(code)
            request.setHeader(b"location", location.encode())
            return b""
        title = error.name
        if not versions.forPath(request.path).routingDescriptions:
            request.setResponseCode(code)
            _errorMedia(request)
            return _send(request, render.document({"title": f"{code} {title}"}))
        description = {
            404: "The resource could not be found.",
            405: "The method is not allowed on this resource.",
        }.get(code, error.description or title)
        return _error(request, code, title, description)

    @app.handle_errors(Exception)
    def unexpectedError(self, request: Any, failure: Failure) -> bytes:
        self.log.failure(
            "Unexpected error handling {method} {path}",
            failure,
            method=request.method,
            path=request.path,
        )
        return _error(
            request, 500, "Internal error", "The server failed to handle the request."
        )


def _queueFilter(request: Any, ctx: Context, limits: Any) -> QueueFilter:
    """
    The filters of C{GET /v2/queues}: C{name}, and every other parameter
    as a metadata filter (see L{marconi.core.queuefilter}); none under a
    version that ignores them.
    """
    if not ctx.policy.queueFilters:
        return QueueFilter()
    others = []
    for key in request.args:
        try:
            name = key.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationFailed("A query parameter is not valid UTF-8.") from None
        if name not in queuefilter.LISTING_PARAMETERS:
            value = _arg(request, name)
            assert value is not None
            others.append((name, value))
    return queuefilter.parse(_arg(request, "name"), others, limits)


def _auditQuery(request: Any, limits: Any) -> audit.AuditQuery:
    """
    The filters of C{GET /v2/audit} (the marker is the router's to read).
    """
    limit = _int(request, "limit")
    if limit is None:
        limit = limits.defaultMessagesPerPage
    validation.integer(limit, "limit", 1, limits.maxMessagesPerPage)
    queue = _arg(request, "queue")
    if queue is not None:
        validation.queueName(queue, limits)
    action = _arg(request, "action")
    if action is not None and action not in audit.ACTIONS:
        raise ValidationFailed(f"action must be one of {', '.join(audit.ACTIONS)}.")
    return audit.AuditQuery(
        limit=limit,
        queue=queue,
        action=action,
        since=_time(request, "since"),
        until=_time(request, "until"),
        tags=validation.tagFilter(_list(request, "tags"), limits),
    )


def _wait(request: Any, ctx: Context, limits: Any) -> int:
    """
    The seconds a request may wait for messages: its C{wait} parameter,
    an integer from 0 to the configured maximum (0 without one, and under
    a version without long-polling).
    """
    if not ctx.policy.longPolling:
        return 0
    wait = _int(request, "wait")
    if wait is None:
        return 0
    high = min(limits.maxWait, waiting.MAXIMUM_WAIT)
    return validation.integer(wait, "wait", 0, high)


def _time(request: Any, name: str) -> Optional[float]:
    """
    A time parameter: seconds since the epoch.
    """
    value = _arg(request, name)
    if value is None:
        return None
    if not _SECONDS.fullmatch(value.strip()):
        raise ValidationFailed(f"{name} must be seconds since the epoch.")
    return float(value)


def _error(request: Any, code: int, title: str, description: str) -> bytes:
    request.setResponseCode(code)
    _errorMedia(request)
    return _send(request, render.document({"title": title, "description": description}))


def _errorMedia(request: Any) -> None:
    """
    Where the media type of the answer was not negotiated yet, choose it
    for an error (see L{media.forErrors}).
    """
    if getattr(request, "media", None) is None:
        request.media = media.forErrors(request.getHeader(b"accept"))


def _noContent(request: Any) -> bytes:
    request.setResponseCode(204)
    return b""


def _send(request: Any, body: bytes, contentType: bytes = JSON) -> bytes:
    """
    Answer the JSON text C{body} in the request's media type (as it is,
    typed C{contentType}, for JSON), gzip'd if the client asks and it
    gains.
    """
    serializer = getattr(request, "media", None)
    if serializer is not None and serializer is not media.JSON_MEDIA:
        contentType = serializer.contentType
        if body:
            body = serializer.text(body)
    request.setHeader(b"content-type", contentType)
    return _encoded(request, body)


def _encoded(request: Any, body: bytes) -> bytes:
    """
    C{body} gzip'd if the client asks and it is large enough to gain, with
    its C{Content-Length}.
    """
    if len(body) >= gzip.THRESHOLD:
        request.setHeader(b"vary", b"Accept-Encoding")
        if gzip.wanted(request.getHeader(b"accept-encoding"), len(body)):
            body = gzip.compress(body)
            request.setHeader(b"content-encoding", b"gzip")
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def _negotiate(request: Any) -> media.Serializer:
    """
    Choose the media type of the answer (see L{media.negotiate}); 406 if
    the Accept header admits none.
    """
    serializer = media.negotiate(request.getHeader(b"accept"), (homedoc.MEDIA_TYPE,))
    request.media = serializer
    return serializer


def _arg(request: Any, name: str) -> Optional[str]:
    values = request.args.get(name.encode())
    if not values:
        return None
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationFailed(f"{name} is not valid UTF-8.") from None


def _safety(request: Any) -> Optional[str]:
    """
    The C{safety} parameter of a write, as given (the domain checks it).
    """
    return _arg(request, "safety")


def _list(request: Any, name: str) -> Optional[str]:
    """
    A comma-separated list parameter, also accepted repeated
    (C{ids=a&ids=b}), as one comma-separated string.
    """
    values = request.args.get(name.encode())
    if not values:
        return None
    try:
        return ",".join(v.decode("utf-8") for v in values)
    except UnicodeDecodeError:
        raise ValidationFailed(f"{name} is not valid UTF-8.") from None


def _int(request: Any, name: str) -> Optional[int]:
    value = _arg(request, name)
    if value is None:
        return None
    value = value.strip()
    if not _INTEGER.fullmatch(value):
        raise ValidationFailed(f"{name} must be an integer.")
    return int(value)


def _bool(request: Any, name: str) -> bool:
    value = _arg(request, name)
    if value is None:
        return False
    try:
        return parseBoolean(value)
    except ValueError:
        raise ValidationFailed(f"{name} must be true or false.") from None
