"""
The Klein application: the Zaqar v2 (and v1.1) API, and the same resources
under C{/{version}/projects/{project_id}/...} for clients that cannot set
headers.

Handlers are thin: they read the request, call L{Messaging}, and write JSON
with an explicit Content-Type.  All errors are turned into answers by the
handlers at the end of the class.
"""

import re
from dataclasses import dataclass
from typing import Any, Callable, Optional
from urllib.parse import quote, urlencode

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from werkzeug.datastructures import MIMEAccept
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.http import parse_accept_header
from werkzeug.routing import BaseConverter

from marconi.api import homedoc, openapi, render
from marconi.api.errors import HTTPError, statusOf
from marconi.api.http import RoutedKlein
from marconi.core import jsontext, validation
from marconi.core.errors import (
    Forbidden,
    MarconiError,
    MessageDoesNotExist,
    ValidationFailed,
)
from marconi.core.health import HealthCheck
from marconi.core.interfaces import IAuthDriver, IHealth
from marconi.core.messaging import PATCH_MEDIA_TYPE, Messaging

JSON = b"application/json; charset=UTF-8"
_ACCEPTABLE = ("application/json", homedoc.MEDIA_TYPE)
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")
# ASCII only: str.isdigit() also admits characters int() refuses, such as
# superscript digits.
_INTEGER = re.compile(r"-?[0-9]{1,9}|[0-9]{10}")
_MARKER = re.compile(r"[0-9]{1,19}")


class VersionConverter(BaseConverter):
    """
    The API versions served: C{v2} and C{v1.1}.
    """

    regex = r"v2|v1\.1"


def _routes(app: Klein, path: str, methods: list) -> Callable:
    """
    Route C{path} under C{/<version>} and under
    C{/<version>/projects/<project_id>}.
    """

    def register(handler: Callable) -> Callable:
        for index, prefix in enumerate(
            ("/<version:version>", "/<version:version>/projects/<project_id>")
        ):
            app.route(
                prefix + path,
                methods=methods,
                endpoint=f"{handler.__name__}_{index}",
                strict_slashes=False,
            )(handler)
        return handler

    return register


@dataclass(frozen=True, slots=True)
class Context:
    """
    Who a request acts for, and the base of the hrefs it gets back.
    """

    project: str
    clientId: str
    base: str
    forwarded: bool = False

    def queueHref(self, queue: str) -> str:
        return f"{self.base}/queues/{queue}"


class _Relayed(Exception):
    """
    The request was served by the node that owns its queue; C{body} is that
    node's answer, whose status and headers are already on the request.
    """

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body


class MarconiAPI:
    """
    The HTTP API of one node.
    """

    app = RoutedKlein()
    app.url_map.converters["version"] = VersionConverter
    log = Logger()

    def __init__(
        self,
        bus: Messaging,
        auth: IAuthDriver,
        health: Optional[IHealth] = None,
        router: Optional[Any] = None,
    ) -> None:
        """
        @param router: the node's L{marconi.cluster.interfaces.IRouter} in a
            cluster; L{None} for a node on its own.
        """
        self.bus = bus
        self.auth = auth
        self.router = router
        self.limits = bus.limits
        self._openapi = render.document(openapi.document(self.limits))
        self.healthCheck = (
            HealthCheck(bus.store, bus.clock) if health is None else health
        )

    def resource(self) -> Any:
        return self.app.resource()

    # Request helpers.

    async def _context(
        self,
        request: Any,
        version: str,
        projectId: Optional[str],
        queue: Optional[str] = None,
    ) -> Context:
        """
        Resolve who the request acts for.  In a cluster, a request for a
        C{queue} this node does not own is forwarded to its owner and the
        owner's answer is relayed (by raising L{_Relayed}); a request a node
        forwarded here, with a valid signature, acts for the project it
        carries and is served here.
        """
        _negotiate(request)
        headers = {
            name.lower(): values[0]
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        signed = None if self.router is None else self.router.verify(request)
        if signed is None:
            project = await self.auth.authenticate(headers, projectId)
        elif projectId is not None and projectId != signed:
            raise Forbidden("The project in the URL is not the forwarded project.")
        else:
            project = signed
        project = validation.projectId(project, self.limits)
        request.project = project
        client = headers.get(b"client-id")
        clientId = validation.clientId(
            client.decode("latin-1") if client is not None else None, self.limits
        )
        if projectId is None:
            base = f"/{version}"
        else:
            base = f"/{version}/projects/{quote(project, safe='')}"
        if queue is not None and signed is None and self.router is not None:
            owner = self.router.route(project, queue)
            if owner is not None:
                raise _Relayed(await self.router.forward(request, project, owner))
        return Context(
            project=project, clientId=clientId, base=base, forwarded=signed is not None
        )

    def _body(self, request: Any) -> bytes:
        request.content.seek(0)
        return request.content.read()

    def _json(self, request: Any, optional: bool = False) -> Any:
        data = self._body(request)
        if not data.strip():
            if optional:
                return None
            raise ValidationFailed("The request body is empty.")
        return jsontext.loads(data, self.limits.maxJSONDepth)

    # Versions, home, ping, health.

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
        try:
            alive = await self.bus.store.ping()
        except MarconiError:
            alive = False
        request.setResponseCode(204 if alive else 503)
        return b""

    @app.route("/<version:version>/health", methods=["GET"])
    async def health(self, request: Any, version: str) -> bytes:
        _negotiate(request)
        healthy, doc = await self.healthCheck.report()
        if self.router is not None:
            doc["cluster"] = self.router.health()
        request.setResponseCode(200 if healthy else 503)
        return _send(request, render.document(doc))

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
        if self.router is None or ctx.forwarded:
            queues, count = await self.bus.listQueues(
                ctx.project, marker, limit, detailed, withCount
            )
        else:
            page = limit if limit is not None else self.limits.defaultQueuesPerPage
            queues, count = await self.router.listQueues(
                ctx.project,
                marker,
                page,
                detailed,
                withCount,
                lambda: self.bus.listQueues(
                    ctx.project, marker, page, detailed, withCount
                ),
            )
        items = []
        for q in queues:
            item: dict = {"name": q.name, "href": ctx.queueHref(q.name)}
            if detailed:
                item["metadata"] = q.metadata
            items.append(item)
        links = []
        pageSize = limit or self.limits.defaultQueuesPerPage
        if queues:
            params: dict = {"marker": queues[-1].name, "limit": pageSize}
            if detailed:
                params["detailed"] = "true"
            links.append(
                {"rel": "next", "href": f"{ctx.base}/queues?{urlencode(params)}"}
            )
        doc: dict = {"queues": items, "links": links}
        if count is not None:
            doc["count"] = count
        return _send(request, render.document(doc))

    @_routes(app, "/queues/<queue>", ["PUT"])
    async def createQueue(
        self, request: Any, version: str, queue: str, project_id: Optional[str] = None
    ) -> bytes:
        ctx = await self._context(request, version, project_id, queue)
        metadata = self._json(request, optional=True)
        if metadata is None:
            metadata = {}
        created = await self.bus.createQueue(ctx.project, queue, metadata)
        if created:
            request.setResponseCode(201)
            request.setHeader(b"location", ctx.queueHref(queue).encode())
        else:
            request.setResponseCode(204)
        return b""

    @_routes(app, "/queues/<queue>", ["GET"])
    async def getQueue(
        self, request: Any, version: str, queue: str, project_id: Optional[str] = None
    ) -> bytes:
        ctx = await self._context(request, version, project_id, queue)
        metadata = await self.bus.getQueue(ctx.project, queue)
        return _send(request, render.document(metadata))

    @_routes(app, "/queues/<queue>", ["PATCH"])
    async def patchQueue(
        self, request: Any, version: str, queue: str, project_id: Optional[str] = None
    ) -> bytes:
        ctx = await self._context(request, version, project_id, queue)
        contentType = request.getHeader(b"content-type") or b""
        if contentType.split(b";")[0].strip().decode("latin-1") != PATCH_MEDIA_TYPE:
            raise ValidationFailed(
                f"PATCH requests must use the media type {PATCH_MEDIA_TYPE}."
            )
        metadata = await self.bus.patchQueue(ctx.project, queue, self._json(request))
        return _send(request, render.document(metadata))

    @_routes(app, "/queues/<queue>", ["DELETE"])
    async def deleteQueue(
        self, request: Any, version: str, queue: str, project_id: Optional[str] = None
    ) -> bytes:
        ctx = await self._context(request, version, project_id, queue)
        await self.bus.deleteQueue(ctx.project, queue)
        request.setResponseCode(204)
        return b""

    @_routes(app, "/queues/<queue>/stats", ["GET"])
    async def queueStats(
        self, request: Any, version: str, queue: str, project_id: Optional[str] = None
    ) -> bytes:
        ctx = await self._context(request, version, project_id, queue)
        stats = await self.bus.queueStats(ctx.project, queue)
        return _send(request, render.stats(stats, ctx.queueHref(queue), self.bus.now()))

    # Messages.

    @_routes(app, "/queues/<queue>/messages", ["POST"])
    async def postMessages(
        self, request: Any, version: str, queue: str, project_id: Optional[str] = None
    ) -> bytes:
        ctx = await self._context(request, version, project_id, queue)
        body = self._body(request)
        if not body.strip():
            raise ValidationFailed("The request body is empty.")
        document = jsontext.loads(body, self.limits.maxJSONDepth)
        ids = await self.bus.postMessages(
            ctx.project, queue, document, len(body), ctx.clientId
        )
        href = ctx.queueHref(queue) + "/messages"
        request.setResponseCode(201)
        request.setHeader(b"location", f"{href}?ids={','.join(ids)}".encode())
        return _send(
            request, render.document({"resources": [f"{href}/{i}" for i in ids]})
        )

    @_routes(app, "/queues/<queue>/messages", ["GET"])
    async def listMessages(
        self, request: Any, version: str, queue: str, project_id: Optional[str] = None
    ) -> bytes:
        ctx = await self._context(request, version, project_id, queue)
        queueHref = ctx.queueHref(queue)
        ids = _list(request, "ids")
        if ids is not None:
            found = await self.bus.getMessages(
                ctx.project, queue, validation.ids(ids, self.limits.maxMessagesPerPage)
            )
            if not found:
                raise MessageDoesNotExist(ids)
            now = self.bus.now()
            return _send(
                request,
                render.messageList(render.message(m, queueHref, now) for m in found),
            )
        limit = _int(request, "limit")
        marker = _arg(request, "marker")
        markerValue = None
        if marker:
            if not _MARKER.fullmatch(marker) or int(marker) >= 2**63:
                raise ValidationFailed("marker is not valid.")
            markerValue = int(marker)
        echo = _bool(request, "echo")
        includeClaimed = _bool(request, "include_claimed")
        includeDelayed = _bool(request, "include_delayed")
        tagArg = _list(request, "tags")
        tags = validation.tagFilter(tagArg, self.limits)
        messages = await self.bus.listMessages(
            ctx.project,
            queue,
            ctx.clientId,
            limit=limit,
            marker=markerValue,
            echo=echo,
            includeClaimed=includeClaimed,
            includeDelayed=includeDelayed,
            tags=tags,
        )
        now = self.bus.now()
        pageSize = limit or self.limits.defaultMessagesPerPage
        links = []
        if messages:
            params: dict = {"marker": messages[-1].marker, "limit": pageSize}
            for name, value in (
                ("echo", echo),
                ("include_claimed", includeClaimed),
                ("include_delayed", includeDelayed),
            ):
                if value:
                    params[name] = "true"
            if tagArg:
                params["tags"] = tagArg
            links.append(
                {"rel": "next", "href": f"{queueHref}/messages?{urlencode(params)}"}
            )
        return _send(
            request,
            render.messageList(
                (render.message(m, queueHref, now) for m in messages), links
            ),
        )

    @_routes(app, "/queues/<queue>/messages", ["DELETE"])
    async def deleteMessages(
        self, request: Any, version: str, queue: str, project_id: Optional[str] = None
    ) -> bytes:
        ctx = await self._context(request, version, project_id, queue)
        ids = _list(request, "ids")
        pop = _arg(request, "pop")
        if (ids is None) == (pop is None):
            raise ValidationFailed("Give either ids or pop, not both and not neither.")
        if pop is not None:
            limit = _int(request, "pop")
            assert limit is not None
            tags = validation.tagFilter(_list(request, "tags"), self.limits)
            messages = await self.bus.popMessages(ctx.project, queue, limit, tags)
            now = self.bus.now()
            return _send(
                request, render.messageList(render.popped(m, now) for m in messages)
            )
        claimIds = _list(request, "claim_ids")
        await self.bus.deleteMessages(
            ctx.project,
            queue,
            validation.ids(ids, self.limits.maxMessagesPerPage),
            None
            if claimIds is None
            else validation.ids(claimIds, self.limits.maxMessagesPerPage),
        )
        request.setResponseCode(204)
        return b""

    @_routes(app, "/queues/<queue>/messages/<message_id>", ["GET"])
    async def getMessage(
        self,
        request: Any,
        version: str,
        queue: str,
        message_id: str,
        project_id: Optional[str] = None,
    ) -> bytes:
        ctx = await self._context(request, version, project_id, queue)
        message = await self.bus.getMessage(ctx.project, queue, message_id)
        return _send(
            request,
            render.message(message, ctx.queueHref(queue), self.bus.now()).encode(
                "utf-8"
            ),
        )

    @_routes(app, "/queues/<queue>/messages/<message_id>", ["DELETE"])
    async def deleteMessage(
        self,
        request: Any,
        version: str,
        queue: str,
        message_id: str,
        project_id: Optional[str] = None,
    ) -> bytes:
        ctx = await self._context(request, version, project_id, queue)
        claimId = _arg(request, "claim_id") or None
        await self.bus.deleteMessage(ctx.project, queue, message_id, claimId)
        request.setResponseCode(204)
        return b""

    # Claims.

    @_routes(app, "/queues/<queue>/claims", ["POST"])
    async def createClaim(
        self, request: Any, version: str, queue: str, project_id: Optional[str] = None
    ) -> bytes:
        ctx = await self._context(request, version, project_id, queue)
        options = self._json(request, optional=True)
        limit = _int(request, "limit")
        tags = validation.tagFilter(_list(request, "tags"), self.limits)
        claim = await self.bus.createClaim(ctx.project, queue, options, limit, tags)
        if claim is None:
            request.setResponseCode(204)
            return b""
        queueHref = ctx.queueHref(queue)
        now = self.bus.now()
        request.setResponseCode(201)
        request.setHeader(b"location", f"{queueHref}/claims/{claim.id}".encode())
        return _send(
            request,
            render.messageList(
                render.message(m, queueHref, now, claim.id) for m in claim.messages
            ),
        )

    @_routes(app, "/queues/<queue>/claims/<claim_id>", ["GET"])
    async def getClaim(
        self,
        request: Any,
        version: str,
        queue: str,
        claim_id: str,
        project_id: Optional[str] = None,
    ) -> bytes:
        ctx = await self._context(request, version, project_id, queue)
        claim = await self.bus.getClaim(ctx.project, queue, claim_id)
        return _send(request, render.claim(claim, ctx.queueHref(queue), self.bus.now()))

    @_routes(app, "/queues/<queue>/claims/<claim_id>", ["PATCH"])
    async def renewClaim(
        self,
        request: Any,
        version: str,
        queue: str,
        claim_id: str,
        project_id: Optional[str] = None,
    ) -> bytes:
        ctx = await self._context(request, version, project_id, queue)
        await self.bus.renewClaim(ctx.project, queue, claim_id, self._json(request))
        request.setResponseCode(204)
        return b""

    @_routes(app, "/queues/<queue>/claims/<claim_id>", ["DELETE"])
    async def releaseClaim(
        self,
        request: Any,
        version: str,
        queue: str,
        claim_id: str,
        project_id: Optional[str] = None,
    ) -> bytes:
        ctx = await self._context(request, version, project_id, queue)
        await self.bus.releaseClaim(ctx.project, queue, claim_id)
        request.setResponseCode(204)
        return b""

    # Errors: specific first, the catch-all last.

    @app.handle_errors(MarconiError)
    def domainError(self, request: Any, failure: Failure) -> bytes:
        error = failure.value
        return _error(request, statusOf(error), error.title, error.description)

    @app.handle_errors(_Relayed)
    def relayed(self, request: Any, failure: Failure) -> bytes:
        return failure.value.body

    @app.handle_errors(HTTPException)
    def routingError(self, request: Any, failure: Failure) -> bytes:
        error = failure.value
        code = error.code or 500
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            request.setHeader(b"allow", ", ".join(error.valid_methods).encode())
        if 300 <= code < 400 and getattr(error, "new_url", None):
            request.setResponseCode(code)
            request.setHeader(b"location", error.new_url.encode())
            return b""
        title = error.name
        description = {
            404: "The resource could not be found.",
            405: "The method is not allowed on this resource.",
        }.get(code, error.description or title)
        return _error(request, code, title, description)

    @app.handle_errors
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


def _error(request: Any, code: int, title: str, description: str) -> bytes:
    request.setResponseCode(code)
    return _send(request, render.document({"title": title, "description": description}))


def _send(request: Any, body: bytes, contentType: bytes = JSON) -> bytes:
    request.setHeader(b"content-type", contentType)
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def _negotiate(request: Any) -> None:
    """
    Refuse a request whose Accept header admits no JSON.
    """
    accept = request.getHeader(b"accept")
    if not accept or accept in (b"*/*", b"application/json"):
        return
    parsed = parse_accept_header(accept.decode("latin-1"), MIMEAccept)
    if not any(parsed.quality(kind) for kind in _ACCEPTABLE):
        raise HTTPError(
            406, "Not acceptable", "This server only produces application/json."
        )


def _arg(request: Any, name: str) -> Optional[str]:
    values = request.args.get(name.encode())
    if not values:
        return None
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationFailed(f"{name} is not valid UTF-8.") from None


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
    value = value.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValidationFailed(f"{name} must be true or false.")
