"""
An in-process node for API tests: the real site on a real loopback socket,
over an in-memory SQLite store, with a L{Clock} for the domain's time, and a
treq client that talks to it.
"""

import json
from typing import Any, Optional

import treq
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool

from marconi.api.app import MarconiAPI
from marconi.api.http import MarconiSite
from marconi.api.presigned import SignedURLs
from marconi.auth.noauth import NoAuth
from marconi.core.audit import AuditRiver
from marconi.core.health import HealthCheck
from marconi.core.limits import Limits
from marconi.core.messaging import Messaging
from marconi.observability.measured import MeasuredStore
from marconi.storage.sqlite.store import SQLiteStore

CLIENT = "3381af92-2b9e-11e3-b191-71861300734c"
START = 1_700_000_000.0


def connectChannel(testCase: Any, site: MarconiSite, port: int = 50000) -> Any:
    """
    A new connection to C{site} over a L{StringTransport} (its
    C{protocol} is the site's channel), lost when the test ends.
    """
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
    transport = StringTransport()
    channel.makeConnection(transport)
    testCase.addCleanup(channel.connectionLost, Failure(ConnectionDone()))
    transport.protocol = channel
    return transport


class Response:
    """
    A response read whole: status, headers and parsed JSON (or None).
    """

    def __init__(self, code: int, headers: Any, body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body
        self.json = json.loads(body) if body else None

    def header(self, name: str) -> Optional[str]:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


def requestParts(
    body: Any,
    project: Optional[str],
    client: Optional[str],
    headers: Optional[dict],
    raw: Optional[bytes],
) -> tuple:
    """
    The body and headers of a test request: C{body} (JSON-encoded) wins
    over C{raw}; the identity headers come first, then C{headers}.
    """
    sent = {}
    if project is not None:
        sent["X-Project-ID"] = project
    if client is not None:
        sent["Client-ID"] = client
    if body is not None:
        raw = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    sent.update(headers or {})
    return raw, sent


class HTTPNode:
    """
    A client of the node at C{url}, with the request helpers of the API
    tests.
    """

    def __init__(self, testCase: Any, url: str) -> None:
        self.url = url
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.http = HTTPClient(Agent(reactor, pool=pool))
        testCase.addCleanup(pool.closeCachedConnections)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        project: Optional[str] = "p",
        client: Optional[str] = CLIENT,
        headers: Optional[dict] = None,
        raw: Optional[bytes] = None,
    ) -> Response:
        raw, sent = requestParts(body, project, client, headers, raw)
        response = await self.http.request(
            method, self.url + path, data=raw, headers=sent
        )
        content = await treq.content(response)
        return Response(response.code, response.headers, content)

    async def post(self, queue: str, *messages: Any, **kwargs: Any) -> list:
        response = await self.request(
            "POST",
            f"/v2/queues/{queue}/messages",
            {"messages": list(messages)},
            **kwargs,
        )
        assert response.code == 201, (response.code, response.body)
        return [href.rsplit("/", 1)[1] for href in response.json["resources"]]


class Node(HTTPNode):
    """
    A running in-process node.
    """

    def __init__(
        self,
        testCase: Any,
        limits: Optional[Limits] = None,
        monitor: Optional[Any] = None,
        store: Any = None,
        auth: Any = None,
        secret: Optional[str] = None,
        extensions: Any = None,
    ) -> None:
        """
        @param store: a running store to serve (stopped at the end of the
            test); by default a new in-memory SQLite store.
        @param auth: the auth driver; L{NoAuth} by default.
        @param secret: the secret of pre-signed URLs, if any.
        @param extensions: the L{marconi.extensions.Extensions} it runs.
        """
        limits = limits or Limits()
        self.clock = Clock()
        self.clock.advance(START)
        if store is None:
            store = SQLiteStore(":memory:", reactor)
            store.startService()
        self.store = store
        if monitor is not None:
            # As the kernel wires a monitored node (timed with the real
            # reactor: the Clock only drives the domain's time).
            self.store.observeEvents(monitor.messagesCounted)
            store = MeasuredStore(self.store, monitor, reactor)
        river = AuditRiver(self.store, self.clock)
        self.bus = Messaging(store, self.clock, limits, monitor, audit=river)
        self.bus.watch(self.store)
        self.api = MarconiAPI(
            self.bus,
            auth or NoAuth(),
            HealthCheck(store, self.clock),
            signedURLs=SignedURLs(secret, self.clock),
            extensions=extensions,
        )
        public = monitor.publicResource() if monitor is not None else None
        self.site = MarconiSite(
            self.api.resource(),
            maxRequestBody=limits.maxMessagesPostSize,
            monitor=monitor,
            extraResources={b"/metrics": public} if public is not None else None,
        )
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        super().__init__(testCase, f"http://127.0.0.1:{self.port.getHost().port}")
        testCase.addCleanup(self.store.stopService)
        testCase.addCleanup(self.port.stopListening)
        # Cleanups run last first: the river's writes end before the store.
        testCase.addCleanup(river.flush)
