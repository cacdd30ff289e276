"""
Tests for L{marconi.api.fast}: the hot routes found without werkzeug.
"""

from urllib.parse import unquote_to_bytes

from twisted.trial.unittest import SynchronousTestCase
from werkzeug.exceptions import HTTPException

from marconi.api.app import MarconiAPI
from marconi.api.fast import findRoute

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
