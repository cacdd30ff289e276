"""
The HTTP API in memory: treq's L{StubTreq} over L{MarconiAPI}'s resource,
the memory store, and a L{Clock} for the domain's time.  Every request is
answered before the call returns, so these tests turn the clock to exact
expiry boundaries and check edge cases cheaply; L{tests.test_api} covers the
same API end to end over a real socket.
"""

import json
from typing import Any, Optional

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from marconi.api.app import MarconiAPI
from marconi.auth.noauth import NoAuth
from marconi.core.limits import Limits
from marconi.core.messaging import PATCH_MEDIA_TYPE, Messaging
from marconi.storage.memory import MemoryStore
from tests.apihelpers import CLIENT, START, Response

PATCH = {"Content-Type": PATCH_MEDIA_TYPE}


class InMemoryNode:
    """
    A node without sockets or threads: the API over a memory store, with a
    L{Clock}, reached through L{StubTreq}.
    """

    def __init__(
        self,
        testCase: SynchronousTestCase,
        limits: Optional[Limits] = None,
        auth: Any = None,
    ) -> None:
        self.testCase = testCase
        self.clock = Clock()
        self.clock.advance(START)
        self.store = MemoryStore()
        self.store.startService()
        self.bus = Messaging(self.store, self.clock, limits or Limits())
        self.api = MarconiAPI(self.bus, auth or NoAuth())
        self.stub = StubTreq(self.api.resource())

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        project: Optional[str] = "p",
        client: Optional[str] = CLIENT,
        headers: Optional[dict] = None,
        raw: Optional[bytes] = None,
    ) -> Response:
        sent = {}
        if project is not None:
            sent["X-Project-ID"] = project
        if client is not None:
            sent["Client-ID"] = client
        if body is not None:
            raw = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        d = self.stub.request(
            method, "http://marconi.test" + path, data=raw, headers=sent
        )
        self.stub.flush()
        response = self.testCase.successResultOf(d)
        content = self.testCase.successResultOf(self.stub.content(response))
        return Response(response.code, response.headers, content)

    def post(self, queue: str, *messages: Any, **kwargs: Any) -> list:
        path = kwargs.pop("path", f"/v2/queues/{queue}/messages")
        r = self.request("POST", path, {"messages": list(messages)}, **kwargs)
        self.testCase.assertEqual(r.code, 201, r.body)
        return [href.rsplit("/", 1)[1] for href in r.json["resources"]]

    def claim(self, queue: str, query: str = "", **options: Any) -> Response:
        return self.request("POST", f"/v2/queues/{queue}/claims{query}", options)

    def bodies(self, path: str, **kwargs: Any) -> list:
        r = self.request("GET", path, **kwargs)
        self.testCase.assertEqual(r.code, 200, r.body)
        return [m["body"] for m in r.json["messages"]]

    def stats(self, queue: str) -> dict:
        return self.request("GET", f"/v2/queues/{queue}/stats").json["messages"]


def nextLink(response: Response) -> Optional[str]:
    links = [link["href"] for link in response.json["links"] if link["rel"] == "next"]
    return links[0] if links else None


class APIUnitTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.node = InMemoryNode(self)

    def assertError(self, response: Response, code: int, title: str = "") -> None:
        """
        The response is a JSON error with exactly a title and a description
        (and the given title, when there is one).
        """
        self.assertEqual(response.code, code, response.body)
        self.assertTrue(response.header("content-type").startswith("application/json"))
        self.assertEqual(sorted(response.json), ["description", "title"])
        self.assertTrue(response.json["description"])
        if title:
            self.assertEqual(response.json["title"], title)


class QueryParameterTests(APIUnitTestCase):
    def test_nonASCIIDigits(self) -> None:
        """
        Integer parameters and markers take ASCII digits only: characters
        that Python calls digits but C{int} refuses (superscripts), other
        scripts' digits and doubled signs are 400, never 500.
        """
        for path in (
            "/v2/queues?limit=%C2%B2",
            "/v2/queues?limit=--5",
            "/v2/queues?limit=%D9%A3",
            "/v2/queues/q/messages?limit=%C2%B2",
            "/v2/queues/q/messages?marker=%C2%B2",
            "/v2/queues/q/messages?marker=1%C2%B9",
            "/v2/queues/q/messages?marker=%D9%A3",
        ):
            self.assertError(self.node.request("GET", path), 400)
        r = self.node.request("DELETE", "/v2/queues/q/messages?pop=%C2%B2")
        self.assertError(r, 400)
        r = self.node.request("POST", "/v2/queues/q/claims?limit=%C2%B2", {})
        self.assertError(r, 400)
