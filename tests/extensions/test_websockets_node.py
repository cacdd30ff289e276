"""
The websockets extension on a real daemon: python-zaqarclient's websocket
transport, autobahn's Twisted client for push and isolation, and the 404 "Not enabled" of
a node that does not enable it.
"""

import json
import os
import uuid
from typing import Any, Optional

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
)
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.apihelpers import HTTPNode
from tests.nodeprocess import NodeProcess, startNode
from tests.tlshelpers import CertificateDirectory


async def enabledNode(testCase: TestCase, settings: str = "") -> Any:
    """
    A real node with the websockets extension enabled.
    """
    path = os.path.abspath(testCase.mktemp())
    with open(path, "w") as f:
        f.write("[extensions]\nenabled = websockets\n")
        if settings:
            f.write(f"[extension:websockets]\n{settings}\n")
    return await startNode(testCase, "--config", path)


class _Socket(WebSocketClientProtocol):
    """
    A test client: every frame it receives goes to its C{frames} queue.
    """

    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.frames.put(json.loads(payload))

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.closed.callback((code, reason))
        if not self.factory.opened.called:
            self.factory.opened.errback(Exception(f"refused: {code} {reason}"))


class Socket:
    """
    A websocket to a node, speaking Zaqar's frames for one project.
    """

    def __init__(self, protocol: _Socket, project: Optional[str]) -> None:
        self.protocol = protocol
        self.project = project
        self.client = str(uuid.uuid4())
        self.pushes: list = []

    @classmethod
    async def open(
        cls,
        testCase: TestCase,
        url: str,
        project: Optional[str],
        caPath: Optional[str] = None,
    ) -> Any:
        """
        @param caPath: the CA to trust, for a node serving TLS.
        """
        port = int(url.rsplit(":", 1)[1])
        scheme = "ws" if caPath is None else "wss"
        factory = WebSocketClientFactory(f"{scheme}://127.0.0.1:{port}/ws")
        factory.protocol = _Socket
        factory.opened = Deferred()
        endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        if caPath is not None:
            with open(caPath, "rb") as f:
                ca = Certificate.loadPEM(f.read())
            endpoint = wrapClientTLS(optionsForClientTLS("127.0.0.1", ca), endpoint)
        protocol = await endpoint.connect(factory)
        protocol.frames = DeferredQueue()
        protocol.closed = Deferred()
        await factory.opened
        socket = cls(protocol, project)
        testCase.addCleanup(socket.close)
        return socket

    async def close(self) -> None:
        if not self.protocol.closed.called:
            self.protocol.sendClose()
            await self.protocol.closed

    def sendRaw(self, payload: bytes) -> None:
        self.protocol.sendMessage(payload, False)

    def send(self, action: str, body: Optional[dict] = None) -> None:
        headers = {"Client-ID": self.client}
        if self.project is not None:
            headers["X-Project-ID"] = self.project
        frame: dict = {"action": action, "headers": headers}
        if body is not None:
            frame["body"] = body
        self.sendRaw(json.dumps(frame).encode())

    async def answer(self) -> dict:
        """
        The next answer; pushed messages received before it are kept for
        L{pushed}.
        """
        while True:
            frame = await self.protocol.frames.get()
            if "Message_Type" not in frame:
                return frame
            self.pushes.append(frame)

    async def pushed(self) -> dict:
        """
        The next message pushed (no answer may come before it).
        """
        if self.pushes:
            return self.pushes.pop(0)
        frame = await self.protocol.frames.get()
        assert "Message_Type" in frame, frame
        return frame

    async def ask(self, action: str, body: Optional[dict] = None) -> tuple:
        """
        Send a request and wait for its answer: (status, body).
        """
        self.send(action, body)
        frame = await self.answer()
        assert frame["request"]["action"] == action, frame
        return frame["headers"]["status"], frame["body"]


def zaqarCalls(url: str, project: str) -> list:
    """
    Drive python-zaqarclient's websocket transport (it blocks: run it in a
    thread) through queue, message and claim operations; return what each
    answered.
    """
    import websocket
    from zaqarclient.transport import get_transport_for
    from zaqarclient.transport.request import Request

    websocket.setdefaulttimeout(20)
    endpoint = "ws://" + url.split("://", 1)[1] + "/ws"
    options = {
        "auth_opts": {
            "backend": "noauth",
            "options": {"os_auth_token": "token", "os_project_id": project},
        }
    }
    seen = []
    with get_transport_for(endpoint, options=options) as ws:

        def call(action: str, **body: Any) -> Any:
            response = ws.send(
                Request(endpoint, action, content=json.dumps(body) if body else None)
            )
            seen.append((action, response.status_code, json.loads(response.content)))
            return json.loads(response.content)

        call("queue_create", queue_name="jobs", metadata={"owner": "tests"})
        call("queue_get", queue_name="jobs")
        posted = call(
            "message_post",
            queue_name="jobs",
            messages=[{"body": {"n": 1}, "ttl": 300}, {"body": {"n": 2}, "ttl": 300}],
        )
        call("message_list", queue_name="jobs", echo=True)
        call("message_get", queue_name="jobs", message_id=posted["message_ids"][0])
        claim = call("claim_create", queue_name="jobs", ttl=60, grace=30, limit=1)
        call(
            "message_delete",
            queue_name="jobs",
            message_id=claim["messages"][0]["id"],
            claim_id=claim["claim_id"],
        )
        call("queue_get_stats", queue_name="jobs")
        call("queue_list")
        try:
            call("message_get", queue_name="jobs", message_id="0" * 32)
        except Exception as e:
            seen.append(("missing", type(e).__name__, str(e)))
    return seen


class ZaqarClientTests(TestCase):
    timeout = 120

    async def test_zaqarclient(self) -> None:
        """
        python-zaqarclient's websocket transport authenticates, creates a
        queue, posts, lists, claims and deletes messages and reads stats
        through a node's /ws, with Zaqar's statuses and bodies; what it
        posted is there over HTTP; a missing message is its NotFound.
        """
        node = await enabledNode(self)
        seen = await deferToThread(zaqarCalls, node.url, "alpha")
        answers = {action: (status, body) for action, status, body in seen}
        self.assertEqual(answers["queue_create"][0], 201)
        status, metadata = answers["queue_get"]
        self.assertEqual((status, metadata["owner"]), (200, "tests"))
        status, posted = answers["message_post"]
        self.assertEqual(status, 201)
        self.assertEqual(len(posted["message_ids"]), 2)
        status, listed = answers["message_list"]
        self.assertEqual(status, 200)
        self.assertEqual([m["body"] for m in listed["messages"]], [{"n": 1}, {"n": 2}])
        self.assertEqual(answers["message_get"][1]["messages"]["body"], {"n": 1})
        status, claim = answers["claim_create"]
        self.assertEqual(status, 201)
        self.assertEqual(len(claim["messages"]), 1)
        self.assertEqual(claim["messages"][0]["claim_id"], claim["claim_id"])
        self.assertEqual(answers["message_delete"][0], 204)
        status, stats = answers["queue_get_stats"]
        self.assertEqual((status, stats["messages"]["total"]), (200, 1))
        self.assertEqual(
            [q["name"] for q in answers["queue_list"][1]["queues"]], ["jobs"]
        )
        self.assertEqual(answers["missing"][0], "ResourceNotFound")
        self.assertIn("does not exist", answers["missing"][1])
        response = await HTTPNode(self, node.url).request(
            "GET", "/v2/queues/jobs/messages?echo=true", project="alpha"
        )
        self.assertEqual([m["body"] for m in response.json["messages"]], [{"n": 2}])


class PushTests(TestCase):
    timeout = 60

    async def test_pushAndIsolation(self) -> None:
        """
        A socket subscribed to a queue is pushed each message posted to it
        (over HTTP or by a socket), in order; a socket of another project
        subscribed to a queue of the same name is pushed only its own
        project's messages.
        """
        node = await enabledNode(self)
        alpha = await Socket.open(self, node.url, "alpha")
        beta = await Socket.open(self, node.url, "beta")
        status, body = await alpha.ask("subscription_create", {"queue_name": "news"})
        self.assertEqual(status, 201, body)
        status, body = await beta.ask(
            "subscription_create", {"queue_name": "news", "ttl": 3600}
        )
        self.assertEqual(status, 201, body)
        http = HTTPNode(self, node.url)
        await http.post("news", {"body": {"n": "a1"}, "ttl": 60}, project="alpha")
        pushed = await alpha.pushed()
        self.assertEqual(
            (pushed["Message_Type"], pushed["queue_name"], pushed["body"]),
            ("Notification", "news", {"n": "a1"}),
        )
        self.assertEqual(pushed["ttl"], 60)
        status, body = await beta.ask(
            "message_post",
            {"queue_name": "news", "messages": [{"body": {"n": "b1"}}]},
        )
        self.assertEqual(status, 201, body)
        await http.post("news", {"body": {"n": "a2"}, "ttl": 60}, project="alpha")
        await http.post("news", {"body": {"n": "b2"}, "ttl": 60}, project="beta")
        self.assertEqual((await beta.pushed())["body"], {"n": "b1"})
        self.assertEqual((await beta.pushed())["body"], {"n": "b2"})
        self.assertEqual((await alpha.pushed())["body"], {"n": "a2"})
        # Unsubscribed, a socket is pushed nothing more.
        status, listed = await alpha.ask("subscription_list", {"queue_name": "news"})
        self.assertEqual(len(listed["subscriptions"]), 1)
        status, _ = await alpha.ask(
            "subscription_delete",
            {"queue_name": "news", "subscription_id": listed["subscriptions"][0]["id"]},
        )
        self.assertEqual(status, 204)
        await http.post("news", {"body": {"n": "a3"}, "ttl": 60}, project="alpha")
        self.assertEqual((await alpha.ask("queue_list"))[0], 200)
        self.assertEqual(alpha.pushes, [])

    async def test_isolation(self) -> None:
        """
        A socket acts for the project its frames authenticate as: it
        cannot read, claim or delete another project's messages in a queue
        of the same name, nor read its subscriptions.
        """
        node = await enabledNode(self)
        alpha = await Socket.open(self, node.url, "alpha")
        beta = await Socket.open(self, node.url, "beta")
        status, posted = await alpha.ask(
            "message_post",
            {"queue_name": "q", "messages": [{"body": "secret", "ttl": 60}]},
        )
        self.assertEqual(status, 201)
        secret = posted["message_ids"][0]
        _, subscribed = await alpha.ask("subscription_create", {"queue_name": "q"})
        self.assertEqual(
            await beta.ask("message_list", {"queue_name": "q", "echo": True}),
            (200, {"messages": []}),
        )
        status, _ = await beta.ask(
            "message_get", {"queue_name": "q", "message_id": secret}
        )
        self.assertEqual(status, 404)
        self.assertEqual((await beta.ask("claim_create", {"queue_name": "q"}))[0], 204)
        status, _ = await beta.ask(
            "message_delete", {"queue_name": "q", "message_id": secret}
        )
        status, _ = await beta.ask("message_delete_many", {"queue_name": "q", "pop": 5})
        self.assertEqual((await beta.ask("queue_list"))[1]["queues"], [])
        status, _ = await beta.ask(
            "subscription_get",
            {"queue_name": "q", "subscription_id": subscribed["subscription_id"]},
        )
        self.assertEqual(status, 404)
        status, listed = await alpha.ask(
            "message_list", {"queue_name": "q", "echo": True}
        )
        self.assertEqual([m["id"] for m in listed["messages"]], [secret])

    async def test_badFrames(self) -> None:
        """
        A frame that is not JSON, names no known action, has no project or
        no Client-ID, or a body of the wrong shape is answered 400 with an
        error body, and the socket goes on serving.
        """
        node = await enabledNode(self)
        socket = await Socket.open(self, node.url, "alpha")
        socket.sendRaw(b"{nope")
        frame = await socket.answer()
        self.assertEqual(frame["headers"]["status"], 400)
        self.assertIn("not valid JSON", frame["body"]["description"])
        status, body = await socket.ask("nosuch", {})
        self.assertEqual(status, 400)
        self.assertIn("Unknown action", body["error"])
        for frame in [
            {"action": "queue_list", "headers": {"Client-ID": socket.client}},
            {"action": "queue_list", "headers": {"X-Project-ID": "alpha"}},
            {"action": "queue_list", "headers": {"X-Project-ID": 1}},
            {
                "action": "message_post",
                "headers": {"X-Project-ID": "alpha", "Client-ID": socket.client},
                "body": {"queue_name": "q", "messages": "no"},
            },
            {
                "action": "queue_create",
                "headers": {"X-Project-ID": "alpha", "Client-ID": socket.client},
                "body": {"queue_name": "bad name"},
            },
        ]:
            socket.sendRaw(json.dumps(frame).encode())
            answer = await socket.answer()
            self.assertEqual(answer["headers"]["status"], 400, (frame, answer))
            self.assertIn("description", answer["body"])
        self.assertEqual((await socket.ask("queue_list"))[0], 200)

    async def test_frameLimit(self) -> None:
        """
        A frame larger than max-frame-bytes closes the socket (autobahn's
        1009, message too big) before it is served.
        """
        node = await enabledNode(self, "max-frame-bytes = 2048")
        socket = await Socket.open(self, node.url, "alpha")
        socket.send(
            "message_post",
            {"queue_name": "q", "messages": [{"body": "x" * 4096}]},
        )
        await socket.protocol.closed
        self.assertEqual(socket.protocol.remoteCloseCode, 1009)
        response = await HTTPNode(self, node.url).request(
            "GET", "/v2/queues/q/messages?echo=true", project="alpha"
        )
        self.assertEqual(response.json["messages"], [])


class TLSTests(TestCase):
    timeout = 60

    async def test_wss(self) -> None:
        """
        On a TLS listener the socket is wss://: frames are served and
        messages pushed through it.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        certs = CertificateDirectory(os.path.join(directory, "tls"))
        caPath = certs.ca()
        cert, key = certs.issue("node", hosts=("127.0.0.1",))
        config = os.path.join(directory, "marconi.ini")
        with open(config, "w") as f:
            f.write("[extensions]\nenabled = websockets\n")
        node = await NodeProcess(
            self,
            directory,
            [
                "--listen",
                f"ssl:0:privateKey={key}:certKey={cert}:interface=127.0.0.1",
                "--storage",
                "sqlite::memory:",
                "--config",
                config,
            ],
        ).start()
        listener = await Socket.open(self, node.url, "alpha", caPath)
        poster = await Socket.open(self, node.url, "alpha", caPath)
        status, _ = await listener.ask("subscription_create", {"queue_name": "q"})
        self.assertEqual(status, 201)
        status, posted = await poster.ask(
            "message_post",
            {"queue_name": "q", "messages": [{"body": "x" * 5000, "ttl": 60}]},
        )
        self.assertEqual(status, 201)
        pushed = await listener.pushed()
        self.assertEqual(pushed["id"], posted["message_ids"][0])


class NotEnabledTests(TestCase):
    async def test_notEnabled(self) -> None:
        """
        A node that does not enable the extension answers /ws with 404 "Not enabled" and
        a JSON error naming it.
        """
        node = await startNode(self)
        response = await HTTPNode(self, node.url).request("GET", "/ws")
        self.assertEqual(response.code, 404)
        self.assertEqual(response.json["title"], "Not enabled")
        self.assertIn("websockets extension", response.json["description"])
