"""
Tests for L{marconi.api.fast}: the hot routes found without werkzeug.
"""

import json
from urllib.parse import unquote_to_bytes

from twisted.trial.unittest import SynchronousTestCase
from werkzeug.exceptions import HTTPException

from marconi.api.app import MarconiAPI
from marconi.api.fast import _QUEUE_ROUTES, findRoute
from marconi.api.http import MarconiSite
from tests.api import test_framing
from tests.api.test_api_unit import InMemoryNode
from tests.apihelpers import connectChannel

_PATHS = [
    "/v2/queues/q/messages",
    "/v1.1/queues/q/messages",
    "/v2/queues/q/messages/m1",
    "/v2/queues/q/claims",
    "/v2/projects/p1/queues/q/messages",
    "/v2/projects/p1/queues/q/messages/m1",
    "/v2/projects/p1/queues/q/claims",
    "/v2/queues/q%C3%A9/messages/m%20x",
    "/v2/queues/q/messages/",
    "/v2/queues//messages",
    "/v2/queues/a%2Fb/messages",
    "/v2/queues/q/claims/c1",
    "/v2/queues/q",
    "/v2/queues/q/stats",
    "/v3/queues/q/messages",
    "/v2/projects/queues/q/messages",
    "/v2/queues/q/messages/m1/x",
    "/v2/queues/q/subscriptions",
    "/v2/projects/p1/queues/q/claims/c1",
    "/v2",
    "/",
]
_METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD"]


def _postpath(path: str) -> list:
    # As twisted.web splits and unquotes a request's path.
    return [unquote_to_bytes(s) for s in path.encode("ascii")[1:].split(b"/")]


class FindRouteTests(SynchronousTestCase):
    def test_sameAsWerkzeug(self) -> None:
        """
        Every route L{findRoute} finds is the endpoint, with the same
        arguments, that werkzeug matches for the same method and path; the
        paths it leaves to Klein include hot routes with a trailing slash,
        an empty or encoded-slash segment, and HEAD.
        """
        found = 0
        for method in _METHODS:
            for path in _PATHS:
                postpath = _postpath(path)
                route = findRoute(method.encode(), postpath)
                if route is None:
                    continue
                found += 1
                adapter = MarconiAPI.app.url_map.bind(
                    "localhost", path_info="/" + b"/".join(postpath).decode()
                )
                try:
                    endpoint, kwargs = adapter.match(method=method)
                except HTTPException as e:
                    self.fail(f"{method} {path}: werkzeug says {e}")
                self.assertEqual((endpoint, kwargs), route, f"{method} {path}")
        self.assertEqual(found, 17)

    def test_leftToKlein(self) -> None:
        """
        Requests that are not exactly a hot route are not found.
        """
        for method, path in [
            ("HEAD", "/v2/queues/q/messages"),
            ("PUT", "/v2/queues/q/messages"),
            ("GET", "/v2/queues/q/messages/"),
            ("GET", "/v2/queues//messages"),
            ("GET", "/v2/queues/a%2Fb/messages"),
            ("GET", "/v2/queues/q%FF/messages"),
            ("GET", "/v3/queues/q/messages"),
            ("DELETE", "/v2/queues/q/claims/c1"),
            ("GET", "/v2/queues/q"),
            ("GET", "/"),
        ]:
            self.assertIsNone(
                findRoute(method.encode(), _postpath(path)), f"{method} {path}"
            )

    def test_found(self) -> None:
        """
        The endpoint names the handler and the route under the version or
        under C{projects/PROJECT}; the arguments are the decoded segments.
        """
        self.assertEqual(
            findRoute(b"POST", _postpath("/v2/queues/q/messages")),
            ("postMessages_0", {"version": "v2", "queue": "q"}),
        )
        self.assertEqual(
            findRoute(b"DELETE", _postpath("/v2/projects/p%C3%A9/queues/q/messages/m")),
            (
                "deleteMessage_1",
                {
                    "version": "v2",
                    "queue": "q",
                    "message_id": "m",
                    "project_id": "p\u00e9",
                },
            ),
        )


class HostTests(SynchronousTestCase):
    def answer(
        self, host: bytes, path: bytes = b"/v2/queues/q/messages?echo=true"
    ) -> bytes:
        """
        The answer's status line and body to a C{GET} of C{path} (by
        default, a hot route) with the C{Host} header C{host}.
        """
        transport = test_framing.WholeHeadTests("test_sameAnswers").connect()
        transport.protocol.dataReceived(
            b"GET "
            + path
            + b" HTTP/1.1\r\nHost: "
            + host
            + b"\r\n"
            + test_framing.IDENTITY
            + b"\r\n"
        )
        head, _, body = transport.value().partition(b"\r\n\r\n")
        return head.split(b"\r\n")[0] + b" " + body

    def test_hostNotUTF8(self) -> None:
        """
        A request whose host name is not UTF-8 is refused with 400 and the
        API's JSON error, on a hot route or any other; any other host name
        is served.
        """
        for path in (b"/v2/queues/q/messages?echo=true", b"/v2/queues", b"/v2"):
            for host in (b"\xff\xfe", b"caf\xc3\xa9:\xff", b"x\r\nHost: \xff"):
                status, _, body = self.answer(host, path).partition(b" {")
                self.assertEqual(status, b"HTTP/1.1 400 Bad Request", (path, host))
                error = json.loads(b"{" + body)
                self.assertEqual(sorted(error), ["description", "title"])
                self.assertIn("Host", error["description"])
        for host in ("café".encode(), b"x:80", b"[::1]:8080", b"x"):
            self.assertEqual(
                self.answer(host), b'HTTP/1.1 200 OK {"messages":[],"links":[]}', host
            )


class DirectHandlerTests(SynchronousTestCase):
    def test_handlersOfHotRoutes(self) -> None:
        """
        The resource calls the API's own coroutine functions of the hot
        routes, the ones Klein would call; the request is measured under
        the route's name.
        """
        node = InMemoryNode(self)
        resource = node.api.resource()
        self.assertEqual(
            sorted(resource.handlers),
            sorted({name for name, _ in _QUEUE_ROUTES.values()}),
        )
        served = []
        site = MarconiSite(resource, maxRequestBody=10_000, reactor=node.clock)
        site.monitor.requestServed = lambda route, *rest: served.append(route)
        transport = connectChannel(self, site)
        channel = transport.protocol
        body = b'{"messages": [{"body": 1, "ttl": 60}]}'
        channel.dataReceived(
            b"POST /v2/queues/q/messages HTTP/1.1\r\nHost: x\r\n"
            + test_framing.IDENTITY
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(body)
            + body
        )
        channel.dataReceived(
            b"POST /v2/projects/p2/queues/q/claims HTTP/1.1\r\nHost: x\r\n"
            + test_framing.IDENTITY
            + b"Content-Length: 0\r\n\r\n"
        )
        self.assertEqual(
            transport.value().count(b"HTTP/1.1 201 Created\r\n"), 1, transport.value()
        )
        self.assertEqual(served, ["postMessages", "createClaim"])
