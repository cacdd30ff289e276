"""
The API's hot routes without werkzeug: posting, listing, claiming and
deleting messages are found from the request's path segments by a table
lookup and run by the same endpoint functions, the same error handlers
and with the same cancellation as under Klein.  Any request the table does
not name exactly (another method, a trailing slash, an encoded slash in a
segment, a host name that is not UTF-8, every other route) goes to Klein.
"""

from inspect import iscoroutinefunction
from typing import Any, Optional

from twisted.internet.defer import CancelledError, ensureDeferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from marconi.api import versions
from marconi.core.errors import ValidationFailed

_log = Logger()

# (method, path segments after the version, with None for a variable
# segment) -> (the handler's name, the names of the variable segments).
_QUEUE_ROUTES = {
    (b"POST", (b"queues", None, b"messages")): ("postMessages", ("queue",)),
    (b"GET", (b"queues", None, b"messages")): ("listMessages", ("queue",)),
    (b"DELETE", (b"queues", None, b"messages")): ("deleteMessages", ("queue",)),
    (b"GET", (b"queues", None, b"messages", None)): (
        "getMessage",
        ("queue", "message_id"),
    ),
    (b"DELETE", (b"queues", None, b"messages", None)): (
        "deleteMessage",
        ("queue", "message_id"),
    ),
    (b"POST", (b"queues", None, b"claims")): ("createClaim", ("queue",)),
}
_VERSIONS = {name.encode("ascii"): name for name in versions.POLICIES}


def _shape(segments: list) -> Optional[tuple]:
    """
    The path segments after the version with the variable ones (the queue
    and the ids) left out, or L{None} if they do not have the shape of a
    hot route.
    """
    if len(segments) == 3:
        return (segments[0], None, segments[2])
    if len(segments) == 4:
        return (segments[0], None, segments[2], None)
    return None


def findRoute(method: bytes, postpath: list) -> Optional[tuple]:
    """
    The Klein endpoint and its arguments that serve a request, if it is
    one of the hot routes (C{/VERSION/...} or
    C{/VERSION/projects/PROJECT/...}).

    @param postpath: the request's path segments, unquoted.
    @return: C{(endpoint, kwargs)} or L{None}.
    """
    if not postpath:
        return None
    version = _VERSIONS.get(postpath[0])
    if version is None:
        return None
    kwargs = {"version": version}
    rest = postpath[1:]
    index = 0
    if rest[:1] == [b"projects"] and len(rest) > 2:
        kwargs["project_id"] = rest[1]
        rest = rest[2:]
        index = 1
    shape = _shape(rest)
    if shape is None:
        return None
    route = _QUEUE_ROUTES.get((method, shape))
    if route is None:
        return None
    name, variables = route
    values = [rest[1], *rest[3:]]
    if "project_id" in kwargs:
        values.append(kwargs.pop("project_id"))
        variables = (*variables, "project_id")
    for variable, value in zip(variables, values, strict=True):
        # werkzeug's default converter takes one non-empty segment.
        if not value or b"/" in value:
            return None
        try:
            kwargs[variable] = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return f"{name}_{index}", kwargs


class FastResource(Resource):
    """
    The API's resource: the hot routes (see L{findRoute}) served directly,
    everything else by the Klein resource.

    @param app: the API's Klein app, bound to the API.
    @param klein: the app's Klein resource.
    @param api: the API, whose methods of the hot routes' names are the
        coroutine functions Klein calls, bound; they are called directly,
        without Klein's layers.  Without it, Klein calls them.
    """

    isLeaf = True

    def __init__(self, app: Any, klein: Resource, api: Any = None) -> None:
        super().__init__()
        self.app = app
        self.klein = klein
        self.handlers: dict = {}
        if api is not None:
            for name, _ in _QUEUE_ROUTES.values():
                handler = getattr(api, name)
                if iscoroutinefunction(handler):
                    self.handlers[name] = handler

    def render(self, request: Any) -> Any:
        # The last Host line (getHeader's) is the one Klein reads.
        host = request.getHeader(b"host")
        if host is not None and not host.isascii():
            try:
                request.getRequestHostname().decode("utf-8")
            except UnicodeDecodeError:
                # Klein would answer it with a text of its own.
                self._failed(
                    Failure(ValidationFailed("The Host header is not valid UTF-8.")),
                    request,
                    self.app._error_handlers,
                )
                return server.NOT_DONE_YET
        found = findRoute(request.method, request.postpath)
        if found is None:
            return self.klein.render(request)
        endpoint, kwargs = found
        handler = self.handlers.get(endpoint.rpartition("_")[0])
        if handler is None:
            d = maybeDeferred(self.app.execute_endpoint, endpoint, request, **kwargs)
        else:
            # What Klein's execute_endpoint does for a coroutine function.
            request.route = self.app.labels.get(endpoint, endpoint)
            d = ensureDeferred(handler(request, **kwargs))
        # A client that goes away cancels its request (a long poll, say).
        whenLost = getattr(request, "whenLost", None)
        if whenLost is not None:
            whenLost(lambda reason: d.cancel())
        else:
            request.notifyFinish().addErrback(lambda reason: d.cancel())
        d.addCallbacks(
            self._answer,
            self._failed,
            callbackArgs=(request,),
            errbackArgs=(request, self.app._error_handlers),
        )
        d.addErrback(lambda f: _log.failure("Unhandled error writing a response", f))
        return server.NOT_DONE_YET

    def _failed(self, failure: Failure, request: Any, handlers: list) -> Any:
        """
        Answer an error with the first of the app's error handlers that
        takes it; an error in a handler goes to the handlers after it.
        """
        if _ended(request):
            if not failure.check(CancelledError):
                _log.failure("Unhandled error processing a request", failure)
            return None
        for index, (types, handler) in enumerate(handlers):
            if failure.check(*types):
                d = maybeDeferred(
                    self.app.execute_error_handler, handler, request, failure
                )
                return d.addCallbacks(
                    self._answer,
                    self._failed,
                    callbackArgs=(request,),
                    errbackArgs=(request, handlers[index + 1 :]),
                )
        request.processingFailed(failure)
        return None

    def _answer(self, body: Any, request: Any) -> None:
        if isinstance(body, str):
            body = body.encode("utf-8")
        if isinstance(body, bytes):
            request.write(body)
        if not _ended(request):
            request.finish()


def _ended(request: Any) -> bool:
    """
    Whether the request was answered, or its client went away.
    """
    return bool(request.finished or request._disconnected)
