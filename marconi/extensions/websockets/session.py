"""
One socket's conversation: each request frame authenticated, validated
and served through the bus's public operations, as the HTTP API serves the
same request.
"""

import json
import re
import uuid
from typing import Any, Awaitable, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from marconi.api import render
from marconi.api.errors import statusOf
from marconi.core import jsontext, validation
from marconi.core.errors import (
    DoesNotExist,
    Forbidden,
    InvalidBody,
    MarconiError,
    Unauthorized,
    ValidationFailed,
)
from marconi.core.text import parseBoolean
from marconi.extensions.websockets import frames
from marconi.extensions.websockets.push import Fanout
from marconi.extensions.websockets.settings import WebsocketSettings

log = Logger()

_DIGITS = re.compile(r"[0-9]{1,19}")

#: The longest a socket's subscription may last (seconds); by default it
#: lasts as long as the socket.
MAX_SUBSCRIPTION_TTL = 365 * 24 * 3600
MIN_SUBSCRIPTION_TTL = 60


class NotServedHere(MarconiError):
    """
    The queue is served by another node of the cluster.
    """

    title = "Queue served by another node"
    status = 421

    def __init__(self, queue: str, owner: str, url: Optional[str]) -> None:
        where = f" at {url}" if url else ""
        super().__init__(
            f"Queue {queue!r} is served by node {owner!r}: open a websocket "
            f"to that node{where} (/ws) for its operations and pushes."
        )
        self.owner = owner
        self.url = url


class TooManySubscriptions(ValidationFailed):
    title = "Too many subscriptions"


class Request:
    """
    One request frame, authenticated.

    @ivar frame: the parsed frame.
    @ivar project: the project it acts for.
    @ivar clientId: its C{Client-ID}.
    @ivar body: its C{body} (an object).
    @ivar headers: its own credentials and headers (lower-case bytes), the
        token kept by C{authenticate} not added.
    """

    def __init__(
        self,
        frame: dict,
        project: str,
        clientId: str,
        body: dict,
        headers: Optional[dict] = None,
    ) -> None:
        self.frame = frame
        self.project = project
        self.clientId = clientId
        self.body = body
        self.headers = headers or {}

    def field(self, name: str, kind: type = str, required: bool = True) -> Any:
        value = self.body.get(name)
        if value is None:
            if required:
                raise InvalidBody(f'Missing "{name}" field.')
            return None
        if kind is int and isinstance(value, str) and _DIGITS.fullmatch(value):
            value = int(value)
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise InvalidBody(
                f'The value of the "{name}" field must be a {kind.__name__}.'
            )
        return value

    def flag(self, name: str) -> bool:
        value = self.body.get(name)
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        try:
            return parseBoolean(str(value))
        except ValueError:
            raise InvalidBody(f'"{name}" must be true or false.') from None


class Session:
    """
    The state of one socket: its credentials (from C{authenticate}) and
    its subscriptions, and the actions it may ask for.
    """

    def __init__(
        self,
        host: Any,
        fanout: Fanout,
        settings: WebsocketSettings,
        send: Callable[[bytes], None],
    ) -> None:
        """
        @param host: the node's L{marconi.extensions.ExtensionHost}.
        @param send: sends one frame's payload to the socket.
        """
        self.host = host
        self.bus = host.bus
        self.limits = host.bus.limits
        self.fanout = fanout
        self.settings = settings
        self.send = send
        self.token: Optional[bytes] = None
        #: subscription id -> (project, queue, ttl, created, expiry call)
        self.subscriptions: dict[str, tuple] = {}
        #: subscription id -> the headers of the frame that made it, whose
        #: credentials are re-validated every reauthInterval seconds.
        self.credentials: dict[str, dict] = {}
        self._reauth: Any = None
        self._closed = False

    async def handle(self, payload: bytes) -> None:
        """
        Serve one request frame and send its answer.
        """
        frame: Any = None
        try:
            frame = jsontext.loads(payload, self.limits.maxJSONDepth)
            status, body = await self._serve(frame)
        except MarconiError as e:
            status = getattr(e, "status", None) or statusOf(e)
            body = frames.error(e.title, e.description)
        except Exception:
            log.failure("Unexpected error serving a websocket request")
            status = 500
            body = frames.error(
                "Internal error", "The server failed to handle the request."
            )
        self.send(frames.answer(frame, status, body))

    async def _serve(self, frame: Any) -> tuple[int, Any]:
        if not isinstance(frame, dict):
            raise InvalidBody("A request frame must be a JSON object.")
        action = frame.get("action")
        handler = ACTIONS.get(action) if isinstance(action, str) else None
        if handler is None:
            raise ValidationFailed(
                f"Unknown action {action!r}; the actions are "
                f"{', '.join(sorted(ACTIONS))}."
            )
        headers = frame.get("headers", {})
        body = frame.get("body", {})
        if body is None:
            body = {}
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise InvalidBody('"headers" must be an object of strings.')
        if not isinstance(body, dict):
            raise InvalidBody('"body" must be an object.')
        lowered = {
            k.lower().encode("latin-1", "replace"): v.encode("latin-1", "replace")
            for k, v in headers.items()
        }
        if action == "authenticate":
            return await self.authenticate(lowered)
        own = dict(lowered)
        if self.token is not None:
            lowered.setdefault(b"x-auth-token", self.token)
        project = validation.projectId(
            await self.host.auth.authenticate(lowered, None), self.limits
        )
        client = lowered.get(b"client-id")
        clientId = validation.clientId(
            None if client is None else client.decode("latin-1"), self.limits
        )
        return await handler(self, Request(frame, project, clientId, body, own))

    async def authenticate(self, headers: dict) -> tuple[int, Any]:
        """
        C{authenticate}: check the frame's credentials and keep its token
        for the frames that follow, which may leave it out.
        """
        await self.host.auth.authenticate(headers, None)
        self.token = headers.get(b"x-auth-token")
        return 200, {"message": "Authentified."}

    def _queue(self, request: Request) -> str:
        """
        The request's queue, which this node must serve.
        """
        queue = validation.queueName(request.field("queue_name"), self.limits)
        owner = self.host.router.route(request.project, queue)
        if owner is not None:
            urls = {
                n.get("name"): n.get("url")
                for n in self.host.router.publishedRing().get("nodes") or ()
            }
            raise NotServedHere(queue, owner, urls.get(owner))
        return queue

    # Queues.

    async def queue_list(self, request: Request) -> tuple[int, Any]:
        marker = request.field("marker", required=False)
        limit = request.field("limit", int, required=False)
        detailed = request.flag("detailed")
        withCount = request.flag("with_count")
        page = limit if limit is not None else self.limits.defaultQueuesPerPage

        def local() -> Awaitable:
            return self.bus.listQueues(
                request.project, marker, page, detailed, withCount
            )

        queues, count = await self.host.router.listQueues(
            request.project, marker, page, detailed, withCount, local
        )
        items = []
        for q in queues:
            item: dict = {"name": q.name, "href": f"/v2/queues/{q.name}"}
            if detailed:
                item["metadata"] = q.metadata or {}
            items.append(item)
        body: dict = {"queues": items}
        if count is not None:
            body["count"] = count
        return 200, body

    async def queue_create(self, request: Request) -> tuple[int, Any]:
        queue = self._queue(request)
        metadata = request.field("metadata", dict, required=False) or {}
        created = await self.bus.createQueue(request.project, queue, metadata)
        return (201 if created else 204), f"Queue {queue} created."

    async def queue_get(self, request: Request) -> tuple[int, Any]:
        queue = self._queue(request)
        return 200, await self.bus.getQueue(request.project, queue)

    async def queue_delete(self, request: Request) -> tuple[int, Any]:
        queue = self._queue(request)
        await self.bus.deleteQueue(request.project, queue)
        return 204, f"Queue {queue} removed."

    async def queue_get_stats(self, request: Request) -> tuple[int, Any]:
        queue = self._queue(request)
        stats = await self.bus.queueStats(request.project, queue)
        return 200, json.loads(
            render.stats(stats, f"/v2/queues/{queue}", self.bus.now())
        )

    # Messages.

    async def _shown(
        self,
        request: Request,
        queue: str,
        messages: Any,
        claimId: Optional[str] = None,
    ) -> list:
        """
        C{messages} as answers show them, held by C{claimId} for the caller.
        """
        signer = await self.bus.signer(request.project, queue) if messages else None
        now = self.bus.now()
        return [frames.message(m, queue, now, claimId, signer) for m in messages]

    async def message_post(self, request: Request) -> tuple[int, Any]:
        queue = self._queue(request)
        messages = request.field("messages", list)
        document = {"messages": messages}
        # Measured as the HTTP API measures a body: its bytes, as compact
        # UTF-8 JSON (not \uXXXX escapes, six bytes per character).
        size = len(
            json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode(
                "utf-8"
            )
        )
        ids = await self.bus.postMessages(
            request.project, queue, document, size, request.clientId
        )
        return 201, {"message_ids": list(ids)}

    async def message_list(self, request: Request) -> tuple[int, Any]:
        queue = self._queue(request)
        marker = request.field("marker", int, required=False)
        if marker is not None and not 0 <= marker < 2**63:
            raise ValidationFailed("marker is not valid.")
        tags = request.field("tags", list, required=False)
        messages = await self.bus.listMessages(
            request.project,
            queue,
            request.clientId,
            limit=request.field("limit", int, required=False),
            marker=marker,
            echo=request.flag("echo"),
            includeClaimed=request.flag("include_claimed"),
            includeDelayed=request.flag("include_delayed"),
            tags=validation.tags(tags, self.limits, self.limits.maxTagsPerFilter)
            if tags
            else (),
        )
        body: dict = {"messages": await self._shown(request, queue, messages)}
        if messages:
            body["marker"] = str(messages[-1].marker)
        return 200, body

    async def message_get(self, request: Request) -> tuple[int, Any]:
        queue = self._queue(request)
        message = await self.bus.getMessage(
            request.project, queue, request.field("message_id")
        )
        shown = await self._shown(request, queue, [message])
        return 200, {"messages": shown[0]}

    def _ids(self, request: Request, name: str) -> tuple:
        ids = request.field(name, list)
        if not ids or not all(isinstance(i, str) and i for i in ids):
            raise InvalidBody(f'"{name}" must be a non-empty list of ids.')
        if len(ids) > self.limits.maxMessagesPerPage:
            raise ValidationFailed(
                f"At most {self.limits.maxMessagesPerPage} ids are allowed."
            )
        return tuple(dict.fromkeys(ids))

    async def message_get_many(self, request: Request) -> tuple[int, Any]:
        queue = self._queue(request)
        ids = self._ids(request, "message_ids")
        messages = await self.bus.getMessages(request.project, queue, ids)
        return 200, {"messages": await self._shown(request, queue, messages)}

    async def message_delete(self, request: Request) -> tuple[int, Any]:
        queue = self._queue(request)
        await self.bus.deleteMessage(
            request.project,
            queue,
            request.field("message_id"),
            request.field("claim_id", required=False),
        )
        return 204, {}

    async def message_delete_many(self, request: Request) -> tuple[int, Any]:
        queue = self._queue(request)
        pop = request.field("pop", int, required=False)
        if (pop is None) == (request.body.get("message_ids") is None):
            raise ValidationFailed(
                "Give either message_ids or pop, not both and not neither."
            )
        if pop is not None:
            popped = await self.bus.popMessages(request.project, queue, pop)
            return 200, {"messages": await self._shown(request, queue, popped)}
        ids = self._ids(request, "message_ids")
        await self.bus.deleteMessages(request.project, queue, ids, None)
        return 204, {}

    # Claims.

    async def claim_create(self, request: Request) -> tuple[int, Any]:
        queue = self._queue(request)
        options = {
            name: request.field(name, int, required=False)
            for name in ("ttl", "grace")
            if request.body.get(name) is not None
        }
        claim = await self.bus.createClaim(
            request.project,
            queue,
            options,
            request.field("limit", int, required=False),
        )
        if claim is None or not claim.messages:
            return 204, {}
        shown = await self._shown(request, queue, claim.messages, claim.id)
        return 201, {"claim_id": claim.id, "messages": shown}

    async def claim_get(self, request: Request) -> tuple[int, Any]:
        queue = self._queue(request)
        claim = await self.bus.getClaim(
            request.project, queue, request.field("claim_id")
        )
        return 200, {
            "id": claim.id,
            "ttl": claim.ttl,
            "grace": claim.grace,
            "age": claim.age(self.bus.now()),
            "href": f"/v2/queues/{queue}/claims/{claim.id}",
            "messages": await self._shown(request, queue, claim.messages, claim.id),
        }

    async def claim_update(self, request: Request) -> tuple[int, Any]:
        queue = self._queue(request)
        claimId = request.field("claim_id")
        options = {
            name: request.field(name, int, required=False)
            for name in ("ttl", "grace")
            if request.body.get(name) is not None
        }
        await self.bus.renewClaim(request.project, queue, claimId, options)
        return 204, f"Claim {claimId} updated."

    async def claim_delete(self, request: Request) -> tuple[int, Any]:
        queue = self._queue(request)
        claimId = request.field("claim_id")
        await self.bus.releaseClaim(request.project, queue, claimId)
        return 204, f"Claim {claimId} deleted."

    # Subscriptions: this socket's, pushed the queue's new messages.

    async def subscription_create(self, request: Request) -> tuple[int, Any]:
        queue = self._queue(request)
        ttl = request.field("ttl", int, required=False)
        if ttl is not None:
            validation.integer(ttl, "ttl", MIN_SUBSCRIPTION_TTL, MAX_SUBSCRIPTION_TTL)
        request.field("options", dict, required=False)
        if len(self.subscriptions) >= self.settings.maxSubscriptions:
            raise TooManySubscriptions(
                f"A socket may hold at most {self.settings.maxSubscriptions} "
                "subscriptions."
            )
        subscriptionId = uuid.uuid4().hex
        expiry = None
        if ttl is not None:
            expiry = self.host.reactor.callLater(ttl, self.unsubscribe, subscriptionId)
        self.subscriptions[subscriptionId] = (
            request.project,
            queue,
            ttl,
            self.bus.now(),
            expiry,
        )
        self.credentials[subscriptionId] = request.headers
        self.fanout.subscribe(request.project, queue, subscriptionId, self.send)
        self._scheduleReauth()
        return 201, {
            "subscription_id": subscriptionId,
            "message": f"Subscription {queue} created.",
        }

    def _subscription(self, request: Request) -> tuple[str, str]:
        queue = validation.queueName(request.field("queue_name"), self.limits)
        subscriptionId = request.field("subscription_id")
        found = self.subscriptions.get(subscriptionId)
        if found is None or found[:2] != (request.project, queue):
            raise DoesNotExist(
                f"Subscription {subscriptionId} for queue {queue} does not exist."
            )
        return queue, subscriptionId

    def _described(self, subscriptionId: str) -> dict:
        project, queue, ttl, created, _ = self.subscriptions[subscriptionId]
        return {
            "id": subscriptionId,
            "source": queue,
            "subscriber": "websocket",
            "ttl": ttl,
            "age": max(0, int(self.bus.now() - created)),
            "options": {},
        }

    async def subscription_get(self, request: Request) -> tuple[int, Any]:
        _, subscriptionId = self._subscription(request)
        return 200, self._described(subscriptionId)

    async def subscription_list(self, request: Request) -> tuple[int, Any]:
        queue = validation.queueName(request.field("queue_name"), self.limits)
        return 200, {
            "subscriptions": [
                self._described(i)
                for i, s in self.subscriptions.items()
                if s[:2] == (request.project, queue)
            ]
        }

    async def subscription_delete(self, request: Request) -> tuple[int, Any]:
        _, subscriptionId = self._subscription(request)
        self.unsubscribe(subscriptionId)
        return 204, f"Subscription {subscriptionId} removed."

    def unsubscribe(self, subscriptionId: str) -> None:
        found = self.subscriptions.pop(subscriptionId, None)
        self.credentials.pop(subscriptionId, None)
        if found is None:
            return
        project, queue, _, _, expiry = found
        if expiry is not None and expiry.active():
            expiry.cancel()
        self.fanout.unsubscribe(project, queue, subscriptionId)

    def close(self) -> None:
        """
        The socket closed: end its subscriptions.
        """
        self._closed = True
        for subscriptionId in list(self.subscriptions):
            self.unsubscribe(subscriptionId)
        if self._reauth is not None and self._reauth.active():
            self._reauth.cancel()
        self._reauth = None

    # Re-authorisation of subscriptions: a push is sent for as long as the
    # credentials its subscription was made with stay valid.

    def _scheduleReauth(self) -> None:
        if (
            self._reauth is None
            and self.subscriptions
            and not self._closed
            and not getattr(self.host.auth, "trustsHeaders", False)
        ):
            self._reauth = self.host.reactor.callLater(
                self.settings.reauthInterval, self._reauthorise
            )

    def _reauthorise(self) -> None:
        self._reauth = None
        d = Deferred.fromCoroutine(self.revalidate())
        d.addErrback(lambda f: log.failure("Re-validating a websocket failed", f))
        d.addBoth(lambda _: self._scheduleReauth())

    async def revalidate(self) -> None:
        """
        Check again, through the auth driver, the credentials each
        subscription was made with (with the token C{authenticate} kept
        last, if its frame had none), once per set of credentials.  The
        subscriptions whose credentials are refused (401, 403) or now allow
        another project are ended, and the socket told with a
        C{SubscriptionEnded} frame each; when the driver cannot answer
        (Keystone unreachable), they are kept until the next check.
        """
        groups: dict[tuple, tuple[dict, str, list]] = {}
        for subscriptionId, headers in self.credentials.items():
            project = self.subscriptions[subscriptionId][0]
            effective = dict(headers)
            if self.token is not None:
                effective.setdefault(b"x-auth-token", self.token)
            key = (project, tuple(sorted(effective.items())))
            groups.setdefault(key, (effective, project, []))[2].append(subscriptionId)
        for effective, project, ids in groups.values():
            try:
                allowed = await self.host.auth.authenticate(effective, None)
            except (Unauthorized, Forbidden) as e:
                self._end(ids, statusOf(e), e.title, e.description)
                continue
            except MarconiError as e:
                log.warn(
                    "Re-validating the credentials of project {project} failed "
                    "({error}); its subscriptions are kept until the next check",
                    project=project,
                    error=e.description,
                )
                continue
            except Exception:
                log.failure(
                    "Re-validating the credentials of project {project} failed; "
                    "its subscriptions are kept until the next check",
                    project=project,
                )
                continue
            if allowed != project:
                self._end(
                    ids,
                    403,
                    Forbidden.title,
                    f"The credentials no longer allow project {project!r}.",
                )

    def _end(self, ids: list, status: int, title: str, description: str) -> None:
        for subscriptionId in ids:
            found = self.subscriptions.get(subscriptionId)
            if found is None:
                continue
            self.unsubscribe(subscriptionId)
            if not self._closed:
                self.send(
                    frames.subscriptionEnded(
                        found[1], subscriptionId, status, title, description
                    )
                )


#: The actions, by name.
ACTIONS: dict[str, Callable] = {
    name: getattr(Session, name)
    for name in (
        "queue_list",
        "queue_create",
        "queue_get",
        "queue_delete",
        "queue_get_stats",
        "message_post",
        "message_list",
        "message_get",
        "message_get_many",
        "message_delete",
        "message_delete_many",
        "claim_create",
        "claim_get",
        "claim_update",
        "claim_delete",
        "subscription_create",
        "subscription_get",
        "subscription_list",
        "subscription_delete",
    )
}
ACTIONS["authenticate"] = Session.authenticate
