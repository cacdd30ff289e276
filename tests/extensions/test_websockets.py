"""
Tests for the parts of the websockets extension: its settings, the bounded
outbox of a socket, the fan-out of new messages, and a session's frames
served against a real bus (in-process, on SQLite, with a Clock).
"""

import json
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from marconi.auth.noauth import NoAuth
from marconi.core.routing import LocalRouter
from marconi.extensions import ExtensionHost
from marconi.extensions.websockets.outbox import Outbox
from marconi.extensions.websockets.push import Fanout
from marconi.extensions.websockets.session import Session
from marconi.extensions.websockets.settings import (
    WebsocketSettings,
    check,
    parse,
)
from tests.apihelpers import CLIENT, Node


class SettingsTests(SynchronousTestCase):
    def test_parse(self) -> None:
        """
        The settings are integers with a floor; unknown names and bad
        values are refused naming them; nothing given is the defaults.
        """
        self.assertEqual(parse({}), WebsocketSettings())
        self.assertEqual(
            parse(
                {
                    "send-buffer-bytes": "4096",
                    "ping-interval": "0",
                    "reauth-interval": "60",
                }
            ),
            WebsocketSettings(sendBufferBytes=4096, pingInterval=0, reauthInterval=60),
        )
        self.assertEqual(WebsocketSettings().reauthInterval, 300)
        for settings, message in [
            ({"nosuch": "1"}, "unknown setting(s): nosuch"),
            ({"max-subscriptions": "0"}, "max-subscriptions must be an integer"),
            ({"send-buffer-bytes": "1k"}, "send-buffer-bytes must be an integer"),
            ({"max-frame-bytes": "²"}, "max-frame-bytes must be an integer"),
            ({"reauth-interval": "0"}, "reauth-interval must be an integer"),
        ]:
            e = self.assertRaises(ValueError, check, settings)
            self.assertIn(message, str(e))


class OutboxTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.written: list = []
        self.overflows = 0

        def overflow() -> None:
            self.overflows += 1

        self.outbox = Outbox(self.written.append, 10, overflow)

    def test_writesAtOnce(self) -> None:
        """
        While the transport takes them, frames are written at once.
        """
        self.outbox.send(b"a")
        self.outbox.send(b"b")
        self.assertEqual(self.written, [b"a", b"b"])

    def test_waitsWhilePaused(self) -> None:
        """
        While the transport is full, frames wait, in order, and are written
        when it resumes; a frame sent after the resumption comes after
        them.
        """
        self.outbox.pauseProducing()
        self.outbox.send(b"1234")
        self.outbox.send(b"5678")
        self.assertEqual((self.written, self.outbox.waitingBytes), ([], 8))
        self.outbox.resumeProducing()
        self.outbox.send(b"9")
        self.assertEqual(self.written, [b"1234", b"5678", b"9"])
        self.assertEqual(self.outbox.waitingBytes, 0)

    def test_overflow(self) -> None:
        """
        More waiting bytes than the limit: the overflow is told once, what
        waited is dropped and so is everything sent after.
        """
        self.outbox.pauseProducing()
        self.outbox.send(b"123456")
        self.outbox.send(b"78901")
        self.assertEqual((self.overflows, self.outbox.waitingBytes), (1, 0))
        self.outbox.send(b"x")
        self.outbox.resumeProducing()
        self.assertEqual((self.written, self.overflows), ([], 1))

    def test_stopProducing(self) -> None:
        """
        When the transport stops, what waits is dropped.
        """
        self.outbox.pauseProducing()
        self.outbox.send(b"1")
        self.outbox.stopProducing()
        self.outbox.resumeProducing()
        self.outbox.send(b"2")
        self.assertEqual(self.written, [])


class Collector:
    """
    A subscriber that records the frames pushed to it and fires C{arrived}
    once it has C{expected} of them.
    """

    def __init__(self, expected: int = 1) -> None:
        self.frames: list = []
        self.expected = expected
        self.arrived: Deferred = Deferred()

    def __call__(self, payload: bytes) -> None:
        self.frames.append(json.loads(payload))
        if len(self.frames) == self.expected:
            self.arrived.callback(self.frames)


class FanoutTests(TestCase):
    def setUp(self) -> None:
        self.node = Node(self)
        self.fanout = Fanout(self.node.bus, self.node.clock)
        self.fanout.start()
        self.addCleanup(self.fanout.stop)

    async def post(self, project: str, queue: str, *messages: dict) -> list:
        return await self.node.bus.postMessages(
            project, queue, {"messages": list(messages)}, 100, CLIENT
        )

    async def test_fanout(self) -> None:
        """
        Every subscriber of a project's queue is pushed its new messages,
        in order, each with the queue's name; another project's queue of
        the same name is not; a subscriber that fails does not stop the
        others.
        """
        first, second, other = Collector(2), Collector(2), Collector()
        self.fanout.subscribe("alpha", "q", "first", first)

        def broken(payload: bytes) -> None:
            raise RuntimeError("broken socket")

        self.fanout.subscribe("alpha", "q", "broken", broken)
        self.fanout.subscribe("alpha", "q", "second", second)
        self.fanout.subscribe("beta", "q", "other", other)
        await self.post("alpha", "q", {"body": 1, "ttl": 60}, {"body": 2, "ttl": 60})
        await self.post("beta", "q", {"body": "b", "ttl": 60})
        for collector in (first, second):
            frames = await collector.arrived
            self.assertEqual([f["body"] for f in frames], [1, 2])
            self.assertEqual({f["queue_name"] for f in frames}, {"q"})
        self.assertEqual([f["body"] for f in await other.arrived], ["b"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    async def test_delayed(self) -> None:
        """
        A delayed message is pushed when its delay ends, not before, and
        not at all if it is deleted meanwhile.
        """
        collector = Collector()
        self.fanout.subscribe("alpha", "q", "s", collector)
        kept, gone = None, None
        [gone] = await self.post("alpha", "q", {"body": "gone", "ttl": 60, "delay": 5})
        [kept] = await self.post("alpha", "q", {"body": "kept", "ttl": 60, "delay": 10})
        # Both were read (no push yet): wait until the reads are done.
        while len(self.fanout._delayed) < 2:
            await _turn()
        self.assertEqual(collector.frames, [])
        await self.node.bus.deleteMessage("alpha", "q", gone, None)
        self.node.clock.advance(10)
        frames = await collector.arrived
        self.assertEqual([f["id"] for f in frames], [kept])

    async def test_unsubscribe(self) -> None:
        """
        After unsubscribing, a subscriber is pushed nothing; the queue has
        no subscribers left.
        """
        stays, leaves = Collector(), Collector()
        self.fanout.subscribe("alpha", "q", "stays", stays)
        self.fanout.subscribe("alpha", "q", "leaves", leaves)
        self.fanout.unsubscribe("alpha", "q", "leaves")
        await self.post("alpha", "q", {"body": 1, "ttl": 60})
        await stays.arrived
        self.assertEqual(leaves.frames, [])
        self.fanout.unsubscribe("alpha", "q", "stays")
        self.assertEqual(self.fanout.subscribed("alpha", "q"), 0)


def _turn() -> Deferred:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    return deferLater(reactor, 0.01, lambda: None)


class OtherOwner(LocalRouter):
    """
    A router of a cluster where node C{n2} owns the queue C{far}.
    """

    def route(self, project: str, queue: str) -> Optional[str]:
        return "n2" if queue == "far" else None

    def publishedRing(self) -> dict:
        return {"nodes": [{"name": "n2", "url": "https://n2.example:8888"}]}


class SessionTests(TestCase):
    def setUp(self) -> None:
        self.node = Node(self)
        self.fanout = Fanout(self.node.bus, self.node.clock)
        self.sent: list = []
        self.session = Session(
            ExtensionHost(self.node.bus, NoAuth(), OtherOwner(), self.node.clock),
            self.fanout,
            WebsocketSettings(maxSubscriptions=2),
            self.sent.append,
        )

    async def ask(self, action: str, body: Any = None, project: str = "alpha") -> Any:
        frame: dict = {
            "action": action,
            "headers": {"X-Project-ID": project, "Client-ID": CLIENT},
        }
        if body is not None:
            frame["body"] = body
        await self.session.handle(json.dumps(frame).encode())
        answer = json.loads(self.sent.pop())
        return answer["headers"]["status"], answer["body"], answer["request"]

    async def test_otherNode(self) -> None:
        """
        A queue another node of the cluster serves is answered 421, naming
        the node and its URL; nothing is done here.
        """
        status, body, _ = await self.ask(
            "message_post", {"queue_name": "far", "messages": [{"body": 1}]}
        )
        self.assertEqual(status, 421)
        self.assertIn("'n2'", body["description"])
        self.assertIn("https://n2.example:8888", body["description"])
        stats = await self.node.bus.queueStats("alpha", "far")
        self.assertEqual(stats.total, 0)

    async def test_postSizeInBytes(self) -> None:
        """
        A post is measured as the HTTP API measures its body, in bytes of
        compact UTF-8 JSON: CJK text just under the post limit is accepted
        (its \\uXXXX escapes would be twice the limit), and just over it
        is refused 413.
        """
        limit = self.node.bus.limits.maxMessagesPostSize
        envelope = len(json.dumps({"messages": [{"body": ""}]}, separators=(",", ":")))
        text = "\u6f22" * ((limit - envelope) // 3)
        messages = [{"body": text}]
        status, body, _ = await self.ask(
            "message_post", {"queue_name": "q", "messages": messages}
        )
        self.assertEqual(status, 201, body)
        messages = [{"body": text + "\u6f22"}]
        status, _, _ = await self.ask(
            "message_post", {"queue_name": "q", "messages": messages}
        )
        self.assertEqual(status, 413)

    async def test_echo(self) -> None:
        """
        An answer echoes the request's action, headers and body, without
        its token.
        """
        frame = {
            "action": "queue_list",
            "headers": {
                "X-Project-ID": "alpha",
                "Client-ID": CLIENT,
                "X-Auth-Token": "secret",
            },
            "body": {"limit": 5},
        }
        await self.session.handle(json.dumps(frame).encode())
        answer = json.loads(self.sent.pop())
        self.assertEqual(
            answer["request"],
            {
                "action": "queue_list",
                "headers": {"X-Project-ID": "alpha", "Client-ID": CLIENT},
                "body": {"limit": 5},
                "api": "v2",
            },
        )
        self.assertEqual(answer["headers"], {"status": 200})

    async def test_subscriptions(self) -> None:
        """
        A socket's subscriptions are its own: listed, read and deleted by
        id within their project and queue, at most max-subscriptions of
        them, and those with a TTL end when it has passed.
        """
        status, made, _ = await self.ask(
            "subscription_create", {"queue_name": "q", "ttl": 60}
        )
        self.assertEqual(status, 201)
        status, _, _ = await self.ask(
            "subscription_create", {"queue_name": "q", "ttl": 59}
        )
        self.assertEqual(status, 400)
        self.assertEqual(
            (await self.ask("subscription_create", {"queue_name": "r"}))[0], 201
        )
        status, body, _ = await self.ask("subscription_create", {"queue_name": "s"})
        self.assertEqual(status, 400)
        self.assertIn("at most 2", body["description"])
        ident = {"queue_name": "q", "subscription_id": made["subscription_id"]}
        status, described, _ = await self.ask("subscription_get", ident)
        self.assertEqual(
            (status, described["source"], described["ttl"]), (200, "q", 60)
        )
        self.assertEqual((await self.ask("subscription_get", ident, "beta"))[0], 404)
        self.assertEqual(self.fanout.subscribed("alpha", "q"), 1)
        self.node.clock.advance(60)
        self.assertEqual(self.fanout.subscribed("alpha", "q"), 0)
        self.assertEqual((await self.ask("subscription_get", ident))[0], 404)
        self.session.close()
        self.assertEqual(self.fanout.subscribed("alpha", "r"), 0)

    async def test_claims(self) -> None:
        """
        A claim made over the socket can be read, renewed and released;
        its messages name it; a claim of nothing is 204.
        """
        self.assertEqual((await self.ask("claim_create", {"queue_name": "q"}))[0], 204)
        await self.ask(
            "message_post", {"queue_name": "q", "messages": [{"body": "m", "ttl": 60}]}
        )
        status, claim, _ = await self.ask(
            "claim_create", {"queue_name": "q", "ttl": 60, "grace": 60}
        )
        self.assertEqual(status, 201)
        ident = {"queue_name": "q", "claim_id": claim["claim_id"]}
        status, read, _ = await self.ask("claim_get", ident)
        self.assertEqual((status, read["ttl"]), (200, 60))
        self.assertEqual(read["messages"][0]["claim_id"], claim["claim_id"])
        status, _, _ = await self.ask("claim_update", {**ident, "ttl": 120})
        self.assertEqual(status, 204)
        self.assertEqual((await self.ask("claim_get", ident))[1]["ttl"], 120)
        self.assertEqual(
            (await self.ask("claim_update", {**ident, "ttl": "x"}))[0], 400
        )
        self.assertEqual((await self.ask("claim_delete", ident))[0], 204)
        self.assertEqual((await self.ask("claim_get", ident))[0], 404)

    async def test_deleteMany(self) -> None:
        """
        message_delete_many deletes by ids or pops, not both and not
        neither.
        """
        _, posted, _ = await self.ask(
            "message_post",
            {"queue_name": "q", "messages": [{"body": i, "ttl": 60} for i in range(3)]},
        )
        ids = posted["message_ids"]
        self.assertEqual(
            (await self.ask("message_delete_many", {"queue_name": "q"}))[0], 400
        )
        status, _, _ = await self.ask(
            "message_delete_many", {"queue_name": "q", "message_ids": ids[:1]}
        )
        self.assertEqual(status, 204)
        status, popped, _ = await self.ask(
            "message_delete_many", {"queue_name": "q", "pop": 1}
        )
        self.assertEqual([m["id"] for m in popped["messages"]], ids[1:2])
        status, many, _ = await self.ask(
            "message_get_many", {"queue_name": "q", "message_ids": ids}
        )
        self.assertEqual([m["id"] for m in many["messages"]], ids[2:])


class SlowSocketTests(TestCase):
    async def test_slowSocketClosed(self) -> None:
        """
        A socket whose transport stays full (it paused the socket's
        outbox) while more than send-buffer-bytes wait for it is closed
        with 4008; another socket subscribed to the same queue is pushed
        every message meanwhile.
        """
        from twisted.internet import reactor
        from twisted.web.server import Site

        from marconi.extensions.websockets.extension import TOO_SLOW, Websockets
        from tests.extensions.test_websockets_node import Socket

        node = Node(self)
        extension = Websockets(
            ExtensionHost(
                node.bus,
                NoAuth(),
                LocalRouter(),
                node.clock,
                {"send-buffer-bytes": "2048"},
            )
        )
        extension.startService()
        self.addCleanup(extension.stopService)
        port = reactor.listenTCP(0, Site(extension.resource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}"
        slow = await Socket.open(self, url, "alpha")
        self.assertEqual(
            (await slow.ask("subscription_create", {"queue_name": "q"}))[0], 201
        )
        [server] = extension.sockets
        server.outbox.pauseProducing()
        fast = await Socket.open(self, url, "alpha")
        self.assertEqual(
            (await fast.ask("subscription_create", {"queue_name": "q"}))[0], 201
        )
        for _ in range(4):
            await node.bus.postMessages(
                "alpha",
                "q",
                {"messages": [{"body": "x" * 1000, "ttl": 60}]},
                1100,
                CLIENT,
            )
        pushed = [await fast.pushed() for _ in range(4)]
        self.assertEqual(len({p["id"] for p in pushed}), 4)
        await slow.protocol.closed
        self.assertEqual(slow.protocol.remoteCloseCode, TOO_SLOW)
        self.assertEqual(slow.pushes, [])
        self.assertEqual(extension.fanout.subscribed("alpha", "q"), 1)


class TokenAuth:
    """
    An auth driver for the session's tests: token C{good} is scoped to
    project C{alpha}.
    """

    trustsHeaders = False

    def authenticate(self, headers: dict, urlProject: Optional[str]) -> Deferred:
        from twisted.internet.defer import fail, succeed

        from marconi.core.errors import Forbidden, Unauthorized

        token = headers.get(b"x-auth-token")
        if token != b"good":
            return fail(Unauthorized("The token is missing or wrong."))
        project = headers.get(b"x-project-id")
        if project not in (None, b"alpha"):
            return fail(Forbidden("X-Project-ID is not the token's project."))
        return succeed("alpha")

    def isAdmin(self, headers: dict) -> Deferred:
        from twisted.internet.defer import succeed

        return succeed(False)


class SessionAuthTests(TestCase):
    async def test_authenticate(self) -> None:
        """
        Every frame is authenticated by the auth driver; C{authenticate}
        keeps a good token for the frames that follow, which may leave it
        out, and a bad one is refused; a frame naming a project the token
        does not allow is refused.
        """
        node = Node(self)
        sent: list = []
        session = Session(
            ExtensionHost(node.bus, TokenAuth(), LocalRouter(), node.clock),
            Fanout(node.bus, node.clock),
            WebsocketSettings(),
            sent.append,
        )

        async def ask(action: str, **headers: str) -> int:
            frame = {"action": action, "headers": {"Client-ID": CLIENT, **headers}}
            await session.handle(json.dumps(frame).encode())
            return json.loads(sent.pop())["headers"]["status"]

        self.assertEqual(await ask("queue_list"), 401)
        self.assertEqual(await ask("authenticate", **{"X-Auth-Token": "bad"}), 401)
        self.assertEqual(await ask("queue_list"), 401)
        self.assertEqual(await ask("authenticate", **{"X-Auth-Token": "good"}), 200)
        self.assertEqual(await ask("queue_list"), 200)
        self.assertEqual(await ask("queue_list", **{"X-Project-ID": "beta"}), 403)
        self.assertEqual(await ask("queue_list", **{"X-Auth-Token": "bad"}), 401)


class SwitchableAuth:
    """
    An auth driver whose answers a test switches: the tokens in C{valid}
    are scoped to project C{alpha}, others are refused 401; when C{down},
    it cannot answer at all.
    """

    trustsHeaders = False

    def __init__(self) -> None:
        self.valid = {b"good"}
        self.down = False
        self.calls = 0

    def authenticate(self, headers: dict, urlProject: Optional[str]) -> Deferred:
        from twisted.internet.defer import fail, succeed

        from marconi.core.errors import Unauthorized

        self.calls += 1
        if self.down:
            return fail(RuntimeError("Keystone cannot be reached."))
        if headers.get(b"x-auth-token") not in self.valid:
            return fail(Unauthorized("The token has expired."))
        return succeed("alpha")


class ReauthTests(TestCase):
    def setUp(self) -> None:
        self.node = Node(self)
        self.sent: list = []
        self.auth = SwitchableAuth()
        self.fanout = Fanout(self.node.bus, self.node.clock)
        self.session = Session(
            ExtensionHost(self.node.bus, self.auth, LocalRouter(), self.node.clock),
            self.fanout,
            WebsocketSettings(reauthInterval=300),
            self.sent.append,
        )
        self.addCleanup(self.session.close)

    async def ask(self, action: str, body: Any = None, **headers: str) -> int:
        frame = {
            "action": action,
            "headers": {"Client-ID": CLIENT, **headers},
            "body": body or {},
        }
        await self.session.handle(json.dumps(frame).encode())
        return json.loads(self.sent.pop())["headers"]["status"]

    async def test_pushesEndWithTheToken(self) -> None:
        """
        The credentials a subscription was made with are checked again
        every reauth-interval seconds on the clock: while they are valid
        (or the auth driver cannot answer) the subscription stays; once
        they are refused, the socket's subscriptions of that project end
        and it is told so with a SubscriptionEnded frame naming each.
        """
        self.assertEqual(
            await self.ask("authenticate", **{"X-Auth-Token": "good"}), 200
        )
        for queue in ("q", "r"):
            self.assertEqual(
                await self.ask("subscription_create", {"queue_name": queue}), 201
            )
        calls = self.auth.calls
        self.node.clock.advance(299)
        self.assertEqual(self.auth.calls, calls)
        self.node.clock.advance(1)
        # One check for the two subscriptions made with the same token.
        self.assertEqual(self.auth.calls, calls + 1)
        self.assertEqual(self.sent, [])
        self.assertEqual(self.fanout.subscribed("alpha", "q"), 1)
        self.auth.down = True
        self.node.clock.advance(300)
        self.assertEqual(self.auth.calls, calls + 2)
        self.assertEqual(self.sent, [])
        self.assertEqual(self.fanout.subscribed("alpha", "q"), 1)
        self.flushLoggedErrors(RuntimeError)
        self.auth.down = False
        self.auth.valid.clear()
        self.node.clock.advance(300)
        self.assertEqual(self.fanout.subscribed("alpha", "q"), 0)
        self.assertEqual(self.fanout.subscribed("alpha", "r"), 0)
        self.assertEqual(self.session.subscriptions, {})
        ended = [json.loads(frame) for frame in self.sent]
        self.assertEqual(
            sorted((f["Message_Type"], f["queue_name"], f["status"]) for f in ended),
            [("SubscriptionEnded", "q", 401), ("SubscriptionEnded", "r", 401)],
        )
        # Nothing is left to check.
        self.node.clock.advance(3000)
        self.assertEqual(self.auth.calls, calls + 3)

    async def test_noauthUnchanged(self) -> None:
        """
        With an auth driver that trusts the headers (noauth) nothing is
        re-validated: a subscription lasts as long as the socket.
        """
        session = Session(
            ExtensionHost(self.node.bus, NoAuth(), LocalRouter(), self.node.clock),
            self.fanout,
            WebsocketSettings(),
            self.sent.append,
        )
        frame = {
            "action": "subscription_create",
            "headers": {"Client-ID": CLIENT, "X-Project-ID": "alpha"},
            "body": {"queue_name": "q"},
        }
        await session.handle(json.dumps(frame).encode())
        self.assertEqual(json.loads(self.sent.pop())["headers"]["status"], 201)
        self.node.clock.advance(10 * 365 * 24 * 3600)
        self.assertEqual(self.fanout.subscribed("alpha", "q"), 1)
        self.assertEqual(self.sent, [])
        session.close()

    async def test_refreshedToken(self) -> None:
        """
        A subscription made with the token C{authenticate} kept is checked
        with the token it keeps last: a socket that authenticates again
        with a fresh token keeps its subscriptions when the old one
        expires; one made with its own token in its frame is checked with
        that token, and ends with it.
        """
        self.assertEqual(
            await self.ask("authenticate", **{"X-Auth-Token": "good"}), 200
        )
        self.assertEqual(
            await self.ask("subscription_create", {"queue_name": "q"}), 201
        )
        self.auth.valid.add(b"own")
        self.assertEqual(
            await self.ask(
                "subscription_create", {"queue_name": "r"}, **{"X-Auth-Token": "own"}
            ),
            201,
        )
        self.auth.valid.add(b"fresh")
        self.assertEqual(
            await self.ask("authenticate", **{"X-Auth-Token": "fresh"}), 200
        )
        self.auth.valid -= {b"good", b"own"}
        self.node.clock.advance(300)
        self.assertEqual(self.fanout.subscribed("alpha", "q"), 1)
        self.assertEqual(self.fanout.subscribed("alpha", "r"), 0)
        [ended] = [json.loads(frame) for frame in self.sent]
        self.assertEqual((ended["queue_name"], ended["status"]), ("r", 401))
