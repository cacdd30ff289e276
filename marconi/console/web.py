"""
The console's HTTP side: the static page under C{/console/} and the two
read-only JSON documents the API has no equivalent for.

The page itself reads the node's public API from the browser, with the
project (and token) the operator typed in, so it sees exactly what the API
lets that project see.  The two documents here go through the same auth
driver:

  - C{GET /console/api/queues/{queue}/activity}: the queue's message rates
    and live claims, for the project the request authenticates as.  In a
    cluster it is forwarded to the queue's owner, like any queue request.
  - C{GET /console/api/node}: this node's forwarding rates (cluster-wide
    numbers, no tenant data).

Every answer carries a strict Content-Security-Policy (scripts and styles
from this origin only, no inline script) and C{X-Content-Type-Options:
nosniff}.
"""

import json
from importlib import resources
from typing import Any, Optional

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from werkzeug.exceptions import HTTPException

from marconi.api import identity
from marconi.api.errors import statusOf
from marconi.console.activity import Activity
from marconi.core import validation
from marconi.core.errors import Forbidden, MarconiError
from marconi.core.interfaces import IAuthDriver, IRouter
from marconi.core.limits import Limits

PATH = "/console/"
JSON = b"application/json; charset=UTF-8"
CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; "
    b"img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
    b"form-action 'none'; frame-ancestors 'none'"
)
_TYPES = {
    ".html": b"text/html; charset=UTF-8",
    ".js": b"text/javascript; charset=UTF-8",
    ".css": b"text/css; charset=UTF-8",
    ".png": b"image/png",
    ".svg": b"image/svg+xml",
}


def staticFiles() -> dict:
    """
    The files of C{marconi/console/static}, by name, read once: they ship
    in the package (see C{setup.py}'s C{package_data}).
    """
    folder = resources.files("marconi.console").joinpath("static")
    files = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _TYPES:
            files[entry.name] = (_TYPES[suffix], entry.read_bytes())
    return files


class _Relayed(Exception):
    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body


class Console:
    """
    The console of one node.

    @param router: the node's L{marconi.core.interfaces.IRouter}, or
        L{None} for a node on its own.
    """

    app = Klein()
    log = Logger()

    def __init__(
        self,
        activity: Activity,
        auth: IAuthDriver,
        limits: Limits,
        router: Optional[IRouter] = None,
    ) -> None:
        self.activity = activity
        self.auth = auth
        self.limits = limits
        self.router = router
        self.files = staticFiles()

    def resource(self) -> Any:
        return self.app.resource()

    async def _project(self, request: Any, queue: Optional[str] = None) -> str:
        """
        The project the request acts for, by the auth driver (or, for a
        request a node forwarded here, by its verified signature).  A queue
        request this node does not own goes to the owner (L{_Relayed}).
        """
        headers = identity.authHeaders(request)
        signed = None if self.router is None else self.router.verify(request)
        if signed is None:
            project = await self.auth.authenticate(headers, None)
        else:
            project = signed
        project = validation.projectId(project, self.limits)
        request.project = project
        if queue is not None and signed is None and self.router is not None:
            owner = self.router.route(project, queue)
            if owner is not None:
                raise _Relayed(await self.router.forward(request, project, owner))
        return project

    # The page.

    @app.route("/console", methods=["GET"])
    def bare(self, request: Any) -> bytes:
        request.setResponseCode(301)
        request.setHeader(b"location", PATH.encode())
        return _send(request, b"", b"text/plain; charset=UTF-8")

    @app.route(PATH, methods=["GET"])
    def index(self, request: Any) -> bytes:
        return self.static(request, "index.html")

    @app.route(PATH + "static/<name>", methods=["GET"])
    def static(self, request: Any, name: str) -> bytes:
        found = self.files.get(name)
        if found is None:
            return _error(request, 404, "Not found", "No such console file.")
        contentType, body = found
        request.setHeader(b"cache-control", b"no-cache")
        return _send(request, body, contentType)

    # Documents.

    @app.route(PATH + "api/queues/<queue>/activity", methods=["GET"])
    async def queueActivity(self, request: Any, queue: str) -> bytes:
        validation.queueName(queue, self.limits)
        project = await self._project(request, queue)
        return _json(request, self.activity.queue(project, queue))

    @app.route(PATH + "api/node", methods=["GET"])
    async def node(self, request: Any) -> bytes:
        await self._project(request)
        # The node's forwarding counts are cluster-wide facts: for operators.
        if not await self.auth.isAdmin(identity.authHeaders(request)):
            raise Forbidden("The node's forwarding counts need the admin role.")
        return _json(request, self.activity.forwarding())

    # Errors.

    @app.handle_errors(MarconiError)
    def domainError(self, request: Any, failure: Failure) -> bytes:
        error = failure.value
        identity.challenge(request, error)
        return _error(request, statusOf(error), error.title, error.description)

    @app.handle_errors(_Relayed)
    def relayed(self, request: Any, failure: Failure) -> bytes:
        _secure(request)
        return failure.value.body

    @app.handle_errors(HTTPException)
    def routingError(self, request: Any, failure: Failure) -> bytes:
        code = failure.value.code or 404
        return _error(request, code, failure.value.name, "No such console resource.")

    @app.handle_errors(Exception)
    def unexpectedError(self, request: Any, failure: Failure) -> bytes:
        self.log.failure("Unexpected error in the console", failure)
        return _error(request, 500, "Internal error", "The console failed.")


def _secure(request: Any) -> None:
    request.setHeader(b"content-security-policy", CSP)
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"referrer-policy", b"no-referrer")


def _send(request: Any, body: bytes, contentType: bytes) -> bytes:
    _secure(request)
    request.setHeader(b"content-type", contentType)
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def _json(request: Any, value: Any) -> bytes:
    request.setHeader(b"cache-control", b"no-store")
    return _send(request, json.dumps(value, separators=(",", ":")).encode(), JSON)


def _error(request: Any, code: int, title: str, description: str) -> bytes:
    request.setResponseCode(code)
    body = json.dumps({"title": title, "description": description}).encode()
    return _send(request, body, JSON)


class Mount(Resource):
    """
    The root of a node's site: requests whose first path segment names a
    mounted resource (C{console}, an extension's) go to it, all others to
    the API.  Each is a leaf that sees the whole path.
    """

    isLeaf = True

    def __init__(self, api: Any, mounts: dict) -> None:
        """
        @param mounts: the resources by first path segment (L{bytes}).
        """
        super().__init__()
        self.api = api
        self.mounts = mounts

    def render(self, request: Any) -> Any:
        if request.postpath:
            mounted = self.mounts.get(request.postpath[0])
            if mounted is not None:
                request.route = request.postpath[0].decode("ascii")
                return mounted.render(request)
        return self.api.render(request)
