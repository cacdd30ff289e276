"""
The asynchronous Marconi client, on treq.

    client = Client("http://127.0.0.1:8888", project="demo")
    await client.createQueue("jobs")
    ids = await client.post("jobs", [OutgoingMessage({"n": 1}, tags=["a"])])
    async for message in client.messages("jobs", echo=True):
        ...
    await client.close()

Every call is a coroutine (use L{Deferred.fromCoroutine} to get a Deferred).
The reactor, the clock (for timeouts and retry delays) and the HTTP client
can be injected; by default the client makes one persistent
L{HTTPConnectionPool} of its own, which L{Client.close} closes.

Ring-aware routing: when the server is a node of a cluster, the client
fetches the ring it publishes (C{GET /v2/ring}) before its first request
for a queue, and sends each queue's requests straight to the node that
owns it.  Every answer of a cluster node carries the version of its ring
(C{X-Marconi-Ring-Version}); an answer with another version than the
client's makes it fetch the ring again before its next request.  A request
to an owner that cannot be connected to is sent to the entry URL instead
(which forwards it), and the ring is fetched again.  Calls that span the
project (listing queues, health) go to the entry URL.  C{ringAware=False}
sends everything to the entry URL.
"""

import json
import uuid
from dataclasses import dataclass
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Iterable,
    Optional,
    Sequence,
    TypeVar,
)
from urllib.parse import quote, unquote, urljoin, urlsplit

import treq
from twisted.internet import error as ierror
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)

from marconi.client.errors import (
    BadResponse,
    ConnectionFailed,
    RequestTimedOut,
    ServiceUnavailable,
    TransportError,
    errorFor,
)
from marconi.client.models import (
    Claim,
    Health,
    Message,
    OutgoingMessage,
    Page,
    Queue,
    QueueStats,
    RingInfo,
    compactJSON,
    nextLink,
)

__all__ = ["Backoff", "Client", "PATCH_MEDIA_TYPE"]

T = TypeVar("T")

PATCH_MEDIA_TYPE = "application/openstack-messaging-v2.0-json-patch"
USER_AGENT = "marconi-client/0.1"
#: The header with which a cluster node states the version of its ring.
RING_VERSION_HEADER = "X-Marconi-Ring-Version"
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_TRANSPORT = (
    ierror.ConnectError,
    ierror.ConnectionLost,
    ierror.ConnectionDone,
    ResponseFailed,
    ResponseNeverReceived,
    RequestTransmissionFailed,
)
_encode = compactJSON


@dataclass(frozen=True)
class Backoff:
    """
    How idempotent requests answered 503 are retried: up to C{attempts}
    tries in all, waiting C{initial} seconds before the second, then
    C{factor} times longer each time, never more than C{maximum} (a
    C{Retry-After} from the server is honoured up to C{maximum} too).
    """

    attempts: int = 4
    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 10.0

    def delay(self, retry: int, retryAfter: Optional[str] = None) -> float:
        """
        Seconds to wait before retry number C{retry} (0 for the first).
        """
        if retryAfter is not None and retryAfter.strip().isdigit():
            return min(float(retryAfter.strip()), self.maximum)
        return min(self.initial * self.factor**retry, self.maximum)


NO_RETRY = Backoff(attempts=1)


@dataclass(frozen=True)
class _Answer:
    code: int
    headers: Any
    body: bytes

    def header(self, name: str) -> Optional[str]:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def json(self) -> Any:
        if not self.body:
            raise BadResponse(f"the server's {self.code} answer has no body")
        try:
            return json.loads(self.body)
        except ValueError:
            raise BadResponse("the server's answer is not valid JSON") from None


class Client:
    """
    A client of one Marconi server (or cluster entry point), acting for one
    project as one client id.

    @param url: the server's base URL, such as C{http://127.0.0.1:8888}.
    @param project: sent as C{X-Project-ID}.
    @param token: sent as C{X-Auth-Token}.
    @param clientId: sent as C{Client-ID}; a fresh UUID by default.  Message
        listings leave out this client's own messages unless C{echo=True}.
    @param reactor: for the connection pool and the default clock.
    @param clock: for timeouts and retry delays.
    @param http: a treq L{HTTPClient} (or L{treq.testing.StubTreq}); when
        given, the client does not make or close a pool of its own.
    @param timeout: seconds a whole exchange (headers and body) may take.
    @param retry: the L{Backoff} for idempotent requests answered 503.
    @param maxResponseSize: bytes of response body read at most.
    @param ringAware: send each queue's requests to the node that owns it,
        by the ring the server publishes (see the module's description);
        when false, every request goes to C{url}.
    @param connections: the idle connections kept open per node (server
        address) in the client's own pool: above the requests it sends one
        node at once, or those over it open and close a connection each.
    """

    def __init__(
        self,
        url: str,
        project: Optional[str] = None,
        token: Optional[str] = None,
        clientId: Optional[str] = None,
        *,
        reactor: Any = None,
        clock: Any = None,
        http: Any = None,
        timeout: float = 30.0,
        retry: Backoff = Backoff(),
        maxResponseSize: int = 8 * 1024 * 1024,
        version: str = "v2",
        ringAware: bool = True,
        connections: int = 16,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self.url = url.rstrip("/")
        self.project = project
        self.token = token
        self.clientId = clientId or str(uuid.uuid4())
        self.timeout = timeout
        self.retry = retry
        self.maxResponseSize = maxResponseSize
        self.version = version
        self.ringAware = ringAware
        #: The ring the client routes by: L{None} until it is fetched, and
        #: again when it is stale.
        self.routes: Optional[RingInfo] = None
        self._ringLock = DeferredLock()
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._pool: Optional[HTTPConnectionPool] = None
        if http is None:
            self._pool = HTTPConnectionPool(reactor, persistent=True)
            self._pool.maxPersistentPerHost = connections
            http = treq.client.HTTPClient(
                Agent(reactor, pool=self._pool, connectTimeout=timeout)
            )
        self._http = http

    async def close(self) -> None:
        """
        Close the client's own connections.
        """
        if self._pool is not None:
            await self._pool.closeCachedConnections()

    # Plumbing.

    def _path(self, *segments: str) -> str:
        quoted = "/".join(quote(s, safe="") for s in segments)
        return f"/{self.version}/{quoted}"

    async def _baseFor(self, queue: Optional[str]) -> str:
        """
        The base URL to send a request for C{queue} to: its owner's, by the
        ring, when the client routes by one; else the entry URL.
        """
        if queue is None or not self.ringAware or self.project is None:
            return self.url
        if self.routes is None:
            await self._ringLock.run(
                lambda: Deferred.fromCoroutine(self._fetchRoutes())
            )
        routes = self.routes
        owner = None if routes is None else routes.owner(self.project, queue)
        if owner is None or owner.url is None:
            return self.url
        return owner.url

    async def _fetchRoutes(self) -> None:
        """
        Fetch the ring unless another call just did.  A server that
        publishes no ring, or a bad one, is taken as one with no ring
        (until an answer names a ring version).  When the entry URL cannot
        be reached, neither can the request: its L{TransportError} is
        raised.
        """
        if self.routes is not None:
            return
        url = f"{self.url}/{self.version}/ring"
        try:
            answer = await self._once("GET", url, None, None, self._headers(None))
            if answer.code != 200:
                raise BadResponse(f"status {answer.code}")
            self.routes = RingInfo.fromJSON(answer.json())
        except BadResponse:
            self.routes = RingInfo(None, None, (), {})

    def _noteRing(self, answer: "_Answer") -> None:
        """
        Forget the ring when an answer names another version of it.
        """
        version = answer.header(RING_VERSION_HEADER)
        routes = self.routes
        if version is not None and routes is not None and routes.version != version:
            self.routes = None

    def _headers(self, contentType: Optional[str]) -> dict:
        headers = {
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            "Client-ID": self.clientId,
        }
        if self.project is not None:
            headers["X-Project-ID"] = self.project
        if self.token is not None:
            headers["X-Auth-Token"] = self.token
        if contentType is not None:
            headers["Content-Type"] = contentType
        return headers

    async def _exchange(
        self, method: str, url: str, params: Any, data: Optional[bytes], headers: dict
    ) -> _Answer:
        response = await self._http.request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            unbuffered=True,
            reactor=self._reactor,
        )
        chunks: list[bytes] = []
        size = 0

        def collect(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            if size > self.maxResponseSize:
                raise BadResponse(
                    f"the server's answer is over {self.maxResponseSize} bytes"
                )
            chunks.append(chunk)

        await treq.collect(response, collect)
        return _Answer(response.code, response.headers, b"".join(chunks))

    async def _once(
        self,
        method: str,
        url: str,
        params: Any,
        data: Optional[bytes],
        headers: dict,
        wait: float = 0,
    ) -> _Answer:
        """
        One exchange, given the client's C{timeout} plus the C{wait} the
        server may take before it answers.
        """
        exchange = Deferred.fromCoroutine(
            self._exchange(method, url, params, data, headers)
        )

        def timedOut(result: Any, timeout: float) -> Failure:
            return Failure(
                RequestTimedOut(f"{method} {url}: no answer within {timeout} seconds")
            )

        exchange.addTimeout(self.timeout + wait, self._clock, onTimeoutCancel=timedOut)
        try:
            return await exchange
        except ierror.ConnectError as e:
            raise ConnectionFailed(f"cannot reach {_base(url)}: {_reason(e)}") from None
        except _TRANSPORT as e:
            raise TransportError(f"cannot reach {_base(url)}: {_reason(e)}") from None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        body: Any = None,
        contentType: str = "application/json",
        accept: Sequence[int] = (),
        idempotent: Optional[bool] = None,
        wait: Optional[int] = None,
    ) -> _Answer:
        """
        Send a request for C{path} (from the server's root, as in the
        C{next} links) -- to the owner of the queue when the path is one
        queue's -- retrying a 503 if the request is idempotent, and raise
        the L{APIError} of any error answer not in C{accept}.

        @param wait: the seconds the server may wait for messages before
            it answers (long-polling): sent as the C{wait} parameter, and
            added to the timeout.
        """
        if wait:
            params = {**(params or {}), "wait": str(wait)}
        data = None
        if body is not None:
            data = _encode(body).encode("utf-8")
        headers = self._headers(contentType if data is not None else None)
        if idempotent is None:
            idempotent = method in _IDEMPOTENT
        policy = self.retry if idempotent else NO_RETRY
        queue = _queueOf(path)
        attempt = 0
        while True:
            base = await self._baseFor(queue)
            try:
                answer = await self._once(
                    method, _join(base, path), params, data, headers, wait or 0
                )
            except ConnectionFailed:
                if base == self.url:
                    raise
                # The owner is out of reach: the entry node forwards.
                self.routes = None
                answer = await self._once(
                    method, _join(self.url, path), params, data, headers, wait or 0
                )
            if self.ringAware:
                self._noteRing(answer)
            if answer.code < 400 or answer.code in accept:
                return answer
            error = _error(answer)
            attempt += 1
            if not isinstance(error, ServiceUnavailable) or attempt >= policy.attempts:
                raise error
            delay = policy.delay(attempt - 1, answer.header("Retry-After"))
            await deferLater(self._clock, delay, lambda: None)

    async def _pages(
        self, first: Page[T], parse: Callable[[Any], Page[T]]
    ) -> AsyncIterator[T]:
        page = first
        while True:
            for item in page.items:
                yield item
            if page.next is None or not page.items:
                return
            answer = await self._request("GET", page.next)
            page = parse(answer.json())

    # Health.

    async def ping(self) -> bool:
        """
        Whether the node is up and its storage reachable.
        """
        answer = await self._request(
            "GET", f"/{self.version}/ping", accept=(503,), idempotent=False
        )
        return answer.code == 204

    async def health(self) -> Health:
        """
        The node's health report; an unhealthy node's report (its 503) is
        returned, not raised.
        """
        answer = await self._request(
            "GET", f"/{self.version}/health", accept=(503,), idempotent=False
        )
        return Health.fromJSON(answer.json())

    async def ring(self) -> RingInfo:
        """
        The ring the server publishes (fetched now): its version, scheme
        and nodes; a node on its own publishes none (version L{None}).  A
        ring-aware client routes by it from now on.
        """
        answer = await self._request("GET", f"/{self.version}/ring")
        info = RingInfo.fromJSON(answer.json())
        if self.ringAware:
            self.routes = info
        return info

    # Queues.

    async def listQueues(
        self,
        limit: Optional[int] = None,
        marker: Optional[str] = None,
        detailed: bool = False,
        withCount: bool = False,
    ) -> Page[Queue]:
        """
        One page of the project's queues, in name order, after C{marker}.
        """
        params = _params(
            limit=limit, marker=marker, detailed=detailed, with_count=withCount
        )
        answer = await self._request("GET", self._path("queues"), params=params)
        return _queuePage(answer.json())

    def queues(
        self, detailed: bool = False, pageSize: Optional[int] = None
    ) -> AsyncIterator[Queue]:
        """
        Every queue of the project, fetching pages as the iteration needs
        them.
        """

        async def iterate() -> AsyncIterator[Queue]:
            first = await self.listQueues(limit=pageSize, detailed=detailed)
            async for queue in self._pages(first, _queuePage):
                yield queue

        return iterate()

    async def createQueue(self, name: str, metadata: Optional[dict] = None) -> bool:
        """
        Create a queue; L{True} if it was created, L{False} if it existed.
        """
        answer = await self._request(
            "PUT", self._path("queues", name), body=metadata or {}
        )
        return answer.code == 201

    async def deleteQueue(self, name: str) -> None:
        await self._request("DELETE", self._path("queues", name))

    async def queueMetadata(self, name: str) -> dict:
        """
        The queue's metadata, with the server's defaults for the reserved
        C{_...} keys.
        """
        answer = await self._request("GET", self._path("queues", name))
        doc = answer.json()
        if not isinstance(doc, dict):
            raise BadResponse("the queue's metadata is not a JSON object")
        return doc

    async def patchQueue(self, name: str, operations: Sequence[dict]) -> dict:
        """
        Apply JSON-patch C{operations} (C{add}, C{replace}, C{remove} on
        C{/metadata/KEY}) and return the new metadata.
        """
        answer = await self._request(
            "PATCH",
            self._path("queues", name),
            body=list(operations),
            contentType=PATCH_MEDIA_TYPE,
        )
        doc = answer.json()
        if not isinstance(doc, dict):
            raise BadResponse("the queue's metadata is not a JSON object")
        return doc

    async def updateQueueMetadata(
        self,
        name: str,
        set: Optional[dict] = None,
        remove: Iterable[str] = (),
    ) -> dict:
        """
        Set the keys of C{set} and remove the keys of C{remove}; returns the
        new metadata.
        """
        operations = [
            {"op": "add", "path": f"/metadata/{_pointer(key)}", "value": value}
            for key, value in (set or {}).items()
        ]
        operations += [
            {"op": "remove", "path": f"/metadata/{_pointer(key)}"} for key in remove
        ]
        return await self.patchQueue(name, operations)

    async def queueStats(self, name: str) -> QueueStats:
        answer = await self._request("GET", self._path("queues", name, "stats"))
        return QueueStats.fromJSON(answer.json())

    # Messages.

    async def post(
        self, queue: str, messages: Iterable[OutgoingMessage | Any]
    ) -> list[str]:
        """
        Post one batch of messages; returns their ids, in order.  Anything
        in C{messages} that is not an L{OutgoingMessage} is taken as a body.
        A batch is not retried: a 503 may have stored it.
        """
        batch = [_outgoing(m).toJSON() for m in messages]
        answer = await self._request(
            "POST", self._path("queues", queue, "messages"), body={"messages": batch}
        )
        return _resourceIds(answer.json())

    def postBatches(
        self,
        queue: str,
        messages: Iterable[OutgoingMessage | Any],
        batchSize: int = 100,
        maxBytes: int = 262144,
    ) -> AsyncIterator[list[str]]:
        """
        Post any number of messages in batches of at most C{batchSize}
        messages and C{maxBytes} bytes of request body (the server's
        defaults), yielding the ids of each batch as it is stored.  A single
        message over C{maxBytes} is sent alone and the server decides.
        """

        async def iterate() -> AsyncIterator[list[str]]:
            for batch in _batches(messages, batchSize, maxBytes):
                yield await self.post(queue, batch)

        return iterate()

    async def listMessages(
        self,
        queue: str,
        limit: Optional[int] = None,
        marker: Optional[str] = None,
        echo: bool = False,
        includeClaimed: bool = False,
        includeDelayed: bool = False,
        tags: Sequence[str] = (),
        wait: Optional[int] = None,
    ) -> Page[Message]:
        """
        One page of a queue's messages, oldest first, after C{marker}.
        C{tags} keeps the messages that carry every tag given.  With
        C{wait}, the server answers as soon as there is a message to list,
        or empty after that many seconds.
        """
        params = _params(
            limit=limit,
            marker=marker,
            echo=echo,
            include_claimed=includeClaimed,
            include_delayed=includeDelayed,
            tags=",".join(tags) if tags else None,
        )
        answer = await self._request(
            "GET", self._path("queues", queue, "messages"), params=params, wait=wait
        )
        return _messagePage(answer.json())

    def messages(
        self,
        queue: str,
        echo: bool = False,
        includeClaimed: bool = False,
        includeDelayed: bool = False,
        tags: Sequence[str] = (),
        pageSize: Optional[int] = None,
        marker: Optional[str] = None,
    ) -> AsyncIterator[Message]:
        """
        Every message of a queue (as L{listMessages} filters them), following
        the C{next} links page after page.
        """

        async def iterate() -> AsyncIterator[Message]:
            first = await self.listMessages(
                queue,
                pageSize,
                marker,
                echo,
                includeClaimed,
                includeDelayed,
                tags,
            )
            async for message in self._pages(first, _messagePage):
                yield message

        return iterate()

    async def getMessage(self, queue: str, messageId: str) -> Message:
        answer = await self._request(
            "GET", self._path("queues", queue, "messages", messageId)
        )
        return Message.fromJSON(answer.json())

    async def getMessages(self, queue: str, ids: Sequence[str]) -> list[Message]:
        """
        The messages with these ids that still exist.
        """
        answer = await self._request(
            "GET",
            self._path("queues", queue, "messages"),
            params={"ids": ",".join(ids)},
        )
        return _messagePage(answer.json()).items

    async def deleteMessage(
        self, queue: str, messageId: str, claimId: Optional[str] = None
    ) -> None:
        """
        Delete a message; a claimed message needs the id of its live claim.
        """
        await self._request(
            "DELETE",
            self._path("queues", queue, "messages", messageId),
            params=_params(claim_id=claimId),
        )

    async def deleteMessages(
        self, queue: str, ids: Sequence[str], claimIds: Sequence[str] = ()
    ) -> None:
        await self._request(
            "DELETE",
            self._path("queues", queue, "messages"),
            params=_params(
                ids=",".join(ids), claim_ids=",".join(claimIds) if claimIds else None
            ),
        )

    async def pop(
        self,
        queue: str,
        count: int = 1,
        tags: Sequence[str] = (),
        wait: Optional[int] = None,
    ) -> list[Message]:
        """
        Take and delete up to C{count} messages at once (waiting up to
        C{wait} seconds for one).  Not retried.
        """
        answer = await self._request(
            "DELETE",
            self._path("queues", queue, "messages"),
            params=_params(pop=count, tags=",".join(tags) if tags else None),
            idempotent=False,
            wait=wait,
        )
        return _messagePage(answer.json()).items

    # Claims.

    async def claim(
        self,
        queue: str,
        ttl: Optional[int] = None,
        grace: Optional[int] = None,
        limit: Optional[int] = None,
        tags: Sequence[str] = (),
        wait: Optional[int] = None,
    ) -> Optional[Claim]:
        """
        Claim up to C{limit} free messages for C{ttl} seconds; L{None} when
        there is nothing to claim (after waiting up to C{wait} seconds for
        something).  Not retried: a 503 may have claimed.
        """
        options = {}
        if ttl is not None:
            options["ttl"] = ttl
        if grace is not None:
            options["grace"] = grace
        answer = await self._request(
            "POST",
            self._path("queues", queue, "claims"),
            params=_params(limit=limit, tags=",".join(tags) if tags else None),
            body=options,
            wait=wait,
        )
        if answer.code == 204:
            return None
        location = answer.header("Location")
        if location is None:
            raise BadResponse("the server's claim has no Location")
        doc = answer.json()
        messages = _messagePage(doc).items
        return Claim(
            id=location.rstrip("/").rsplit("/", 1)[-1],
            href=location,
            messages=tuple(messages),
            ttl=ttl,
            grace=grace,
        )

    async def getClaim(self, queue: str, claimId: str) -> Claim:
        answer = await self._request(
            "GET", self._path("queues", queue, "claims", claimId)
        )
        return Claim.fromJSON(answer.json())

    async def renewClaim(
        self, queue: str, claimId: str, ttl: int, grace: Optional[int] = None
    ) -> None:
        """
        Give the claim C{ttl} more seconds from now.  Retried (it is
        idempotent).
        """
        body: dict = {"ttl": ttl}
        if grace is not None:
            body["grace"] = grace
        await self._request(
            "PATCH",
            self._path("queues", queue, "claims", claimId),
            body=body,
            idempotent=True,
        )

    async def releaseClaim(self, queue: str, claimId: str) -> None:
        """
        Release the claim: the messages it holds are claimable again.
        """
        await self._request("DELETE", self._path("queues", queue, "claims", claimId))

    # Following a queue.

    async def readAfter(
        self,
        queue: str,
        marker: Optional[str],
        echo: bool = True,
        includeClaimed: bool = True,
        tags: Sequence[str] = (),
        pageSize: int = 20,
        wait: Optional[int] = None,
    ) -> tuple[list[Message], Optional[str]]:
        """
        The messages after C{marker} (all of them, page by page), and the
        marker to read after them next time.  With C{wait}, the first page
        waits up to that many seconds for a message.

        Every non-empty page carries a C{next} link, whose marker is where
        the following read starts.
        """
        found: list[Message] = []
        while True:
            page = await self.listMessages(
                queue, pageSize, marker, echo, includeClaimed, False, tags, wait
            )
            wait = None
            found += page.items
            if page.nextMarker is not None:
                marker = page.nextMarker
            if len(page.items) < pageSize:
                return found, marker

    def follow(
        self,
        queue: str,
        interval: float = 1.0,
        fromStart: bool = False,
        echo: bool = True,
        includeClaimed: bool = True,
        tags: Sequence[str] = (),
        wait: Optional[int] = None,
    ) -> AsyncIterator[Message]:
        """
        The messages posted to C{queue} from now on (or, with C{fromStart},
        those already there first), polling every C{interval} seconds of the
        client's clock.  The iteration ends only when the caller stops it.

        With C{wait}, each read waits on the server up to that many
        seconds for new messages (long-polling) and the next read follows
        at once; only a read answered empty sooner than half its wait (a
        server that does not long-poll) is followed after C{interval}.
        """

        async def iterate() -> AsyncIterator[Message]:
            marker: Optional[str] = None
            if not fromStart:
                _, marker = await self.readAfter(
                    queue, None, echo, includeClaimed, tags
                )
            while True:
                started = self._clock.seconds()
                messages, marker = await self.readAfter(
                    queue, marker, echo, includeClaimed, tags, wait=wait
                )
                for message in messages:
                    yield message
                if not messages and not self._waited(started, wait):
                    await deferLater(self._clock, interval, lambda: None)

        return iterate()

    def _waited(self, started: float, wait: Optional[int]) -> bool:
        """
        Whether an empty answer to a request sent at C{started} with
        C{wait} came late enough to be the server's deadline: at least half
        the wait later, by the client's clock.
        """
        return bool(wait) and self._clock.seconds() - started >= (wait or 0) / 2


def _queueOf(path: str) -> Optional[str]:
    """
    The queue a request path is about (C{/v2/queues/NAME...}), if any.
    """
    parts = urlsplit(path).path.split("/")
    if len(parts) >= 4 and parts[0] == "" and parts[2] == "queues" and parts[3]:
        return unquote(parts[3])
    return None


def _join(base: str, path: str) -> str:
    """
    The URL of C{path} (from the server's root) on the server at C{base}.
    """
    if path.startswith("/"):
        return base + path
    return urljoin(base + "/", path)


def _base(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _reason(e: BaseException) -> str:
    if isinstance(
        e, (ResponseFailed, ResponseNeverReceived, RequestTransmissionFailed)
    ):
        reasons = getattr(e, "reasons", None)
        if reasons:
            return reasons[0].getErrorMessage()
    text = str(e).strip()
    return text or type(e).__name__


def _error(answer: _Answer) -> Exception:
    title = f"HTTP {answer.code}"
    description = answer.body.decode("utf-8", "replace").strip()[:500]
    try:
        doc = json.loads(answer.body)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        title = str(doc.get("title") or title)
        description = str(doc.get("description") or description)
    return errorFor(
        answer.code,
        title,
        description or title,
        answer.header("X-OpenStack-Request-Id"),
    )


def _params(**values: Any) -> dict:
    params = {}
    for name, value in values.items():
        if value is None or value is False:
            continue
        params[name] = "true" if value is True else str(value)
    return params


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _outgoing(message: Any) -> OutgoingMessage:
    return message if isinstance(message, OutgoingMessage) else OutgoingMessage(message)


def _batches(
    messages: Iterable[Any], batchSize: int, maxBytes: int
) -> Iterable[list[OutgoingMessage]]:
    # The envelope {"messages":[...]} costs 15 bytes, each comma one more.
    batch: list[OutgoingMessage] = []
    size = 15
    for item in messages:
        message = _outgoing(item)
        cost = len(_encode(message.toJSON()).encode("utf-8")) + 1
        if batch and (len(batch) >= batchSize or size + cost > maxBytes):
            yield batch
            batch, size = [], 15
        batch.append(message)
        size += cost
    if batch:
        yield batch


def _resourceIds(doc: Any) -> list[str]:
    resources = doc.get("resources") if isinstance(doc, dict) else None
    if not isinstance(resources, list):
        raise BadResponse("the server's answer lacks 'resources'")
    return [str(href).rstrip("/").rsplit("/", 1)[-1] for href in resources]


def _queuePage(doc: Any) -> Page[Queue]:
    queues = doc.get("queues") if isinstance(doc, dict) else None
    if not isinstance(queues, list):
        raise BadResponse("the server's answer lacks 'queues'")
    count = doc.get("count")
    return Page(
        [Queue.fromJSON(q) for q in queues],
        nextLink(doc),
        count if isinstance(count, int) else None,
    )


def _messagePage(doc: Any) -> Page[Message]:
    messages = doc.get("messages") if isinstance(doc, dict) else None
    if not isinstance(messages, list):
        raise BadResponse("the server's answer lacks 'messages'")
    return Page([Message.fromJSON(m) for m in messages], nextLink(doc))
