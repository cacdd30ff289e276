"""
Tests for L{marconi.extensions}: how extensions are enabled, reach the
core through the bus's events, serve API resources and mounts, and what a
node without them answers.
"""

from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from zope.interface import implementer

from marconi.config import ConfigError, load
from marconi.console.web import Mount
from marconi.core.drivers import ExtensionPlugin
from marconi.core.interfaces import IExtension
from marconi.extensions import (
    ExtensionAnswer,
    ExtensionHost,
    Extensions,
    parseEnabled,
)
from tests.apihelpers import HTTPNode, Node
from tests.nodeprocess import startNode


@implementer(IExtension)
class Recorder(Service):
    """
    An extension that records the bus's events and the requests it serves,
    and answers each with what it was asked.
    """

    name = "subscriptions"

    def __init__(self, host: ExtensionHost) -> None:
        self.host = host
        self.events: list = []
        self.requests: list = []
        host.bus.events.listen(self.events.append)

    def serve(self, request: Any) -> defer.Deferred:
        self.requests.append(request)
        return defer.succeed(
            ExtensionAnswer(
                201 if request.method == "POST" else 200,
                {"queue": request.queue, "ids": dict(request.ids)},
                {"Location": f"{request.base}/queues/{request.queue}/x"},
            )
        )

    def resource(self) -> Any:
        page = Resource()
        page.isLeaf = True
        page.render = lambda request: b"mounted " + request.path  # type: ignore
        return page


def checkRecorder(settings: dict) -> None:
    if settings.get("bad"):
        raise ValueError("bad is bad")


RECORDER = ExtensionPlugin(
    "subscriptions",
    "records what it sees",
    "tests.extensions.test_extensions.checkRecorder",
    "tests.extensions.test_extensions.Recorder",
    mount="recorder",
)


class EnabledTests(TestCase):
    def test_parseEnabled(self) -> None:
        """
        C{[extensions] enabled} takes names separated by spaces or commas,
        each once; a name no plugin announces is refused, naming the known
        ones.
        """
        self.assertEqual(
            parseEnabled("a, b a", known=["a", "b"]),
            ("a", "b"),
        )
        self.assertEqual(parseEnabled("", known=[]), ())
        e = self.assertRaises(ValueError, parseEnabled, "a c", known=["a", "b"])
        self.assertIn("c (known: a, b)", str(e))

    def test_configFile(self) -> None:
        """
        The configuration file names unknown extensions and sections of
        extensions that do not exist as errors.
        """
        path = self.mktemp()
        for text, message in [
            ("[extensions]\nenabled = nosuch\n", "unknown extension(s)"),
            ("[extensions]\nwhatever = 1\n", "unknown setting(s) in [extensions]"),
            ("[extension:nosuch]\nx = 1\n", "[extension:nosuch] names no known"),
        ]:
            with open(path, "w") as f:
                f.write(text)
            e = self.assertRaises(ConfigError, load, path, {})
            self.assertIn(message, str(e))
        with open(path, "w") as f:
            f.write("[marconi]\nstorage = memory:\n")
        self.assertEqual(load(path, {}).extensions, ())

    def test_startChecksSettings(self) -> None:
        """
        Starting an extension checks its settings section first.
        """
        host = ExtensionHost(bus=None, auth=None, router=None, reactor=None)
        e = self.assertRaises(
            ValueError,
            Extensions.start,
            ["subscriptions"],
            {"subscriptions": {"bad": "1"}},
            host,
            known={"subscriptions": RECORDER},
        )
        self.assertEqual(str(e), "bad is bad")


class ServedTests(TestCase):
    async def test_servesResources(self) -> None:
        """
        An enabled extension is handed its resources' requests with the
        authenticated project, the queue, the path's ids and the parsed
        body, and its answer is sent as JSON with its status and headers;
        it hears the bus's events.
        """
        holder: list = []

        class Late:
            # The extension needs the node's bus, which the node makes.
            def makeExtension(self, host: Any) -> Any:
                holder.append(Recorder(host))
                return holder[0]

            def checkSettings(self, settings: dict) -> None:
                pass

        node = Node(self)
        extensions = Extensions.start(
            ["subscriptions"],
            {},
            ExtensionHost(node.bus, node.api.auth, node.api.router, node.clock),
            known={"subscriptions": Late()},
        )
        node.api.extensions = extensions
        recorder = holder[0]
        response = await node.request(
            "POST",
            "/v2/queues/work/subscriptions",
            {"subscriber": "http://example.test", "ttl": 300},
            project="alpha",
        )
        self.assertEqual(response.code, 201, response.body)
        self.assertEqual(response.json, {"queue": "work", "ids": {}})
        self.assertEqual(
            response.headers.getRawHeaders("location"),
            ["/v2/queues/work/x"],
        )
        response = await node.request(
            "PUT",
            "/v2/projects/alpha/queues/work/subscriptions/s1/confirm",
            {"confirmed": True},
            project=None,
        )
        self.assertEqual(response.code, 200, response.body)
        request = recorder.requests[-1]
        self.assertEqual(
            (request.method, request.project, request.queue, dict(request.ids)),
            ("PUT", "alpha", "work", {"subscription_id": "s1"}),
        )
        self.assertEqual(request.body, {"confirmed": True})
        self.assertEqual(request.base, "/v2/projects/alpha")
        await node.post("work", {"body": 1, "ttl": 60}, project="alpha")
        self.assertEqual(
            [(e.project, e.action) for e in recorder.events], [("alpha", "posted")]
        )

    async def test_badBody(self) -> None:
        """
        A body that is not JSON is refused before the extension sees it.
        """
        node = Node(self)
        recorder = Recorder(ExtensionHost(node.bus, None, None, node.clock))
        node.api.extensions = Extensions({"subscriptions": recorder})
        response = await node.request(
            "POST", "/v2/queues/work/subscriptions", raw=b"{nope"
        )
        self.assertEqual(response.code, 400)
        self.assertEqual(recorder.requests, [])

    def test_mounts(self) -> None:
        """
        An enabled extension's resource is mounted under its plugin's
        segment; a disabled one's segment answers 404 with a JSON error.
        """
        recorder = Recorder(ExtensionHost(_Bus(), None, None, None))
        known = {"subscriptions": RECORDER}
        mounted = Extensions({"subscriptions": recorder}).mounts(known)
        self.assertEqual(list(mounted), [b"recorder"])
        off = Extensions().mounts(known)[b"recorder"]
        request = _Request()
        body = Mount(None, {b"recorder": off}).render(request)
        self.assertEqual(request.code, 404)
        self.assertIn(b'"title": "Not enabled"', body)
        self.assertIn(b"subscriptions extension is not enabled", body)


class NodeWithoutExtensionsTests(TestCase):
    async def test_notEnabled(self) -> None:
        """
        A real node with no extension enabled answers the resources
        extensions serve with 404 and a JSON error naming the extension,
        after authenticating; v1.1 never had them (404).
        """
        node = await startNode(self)
        client = HTTPNode(self, node.url)
        for method, path in [
            ("GET", "/v2/queues/q/subscriptions"),
            ("POST", "/v2/queues/q/subscriptions"),
            ("DELETE", "/v2/queues/q/subscriptions/abc"),
            ("PUT", "/v2/queues/q/subscriptions/abc/confirm"),
        ]:
            response = await client.request(method, path, {})
            self.assertEqual(response.code, 404, (method, path, response.body))
            self.assertEqual(response.json["title"], "Not enabled")
            self.assertIn("subscriptions", response.json["description"])
        response = await client.request(
            "GET", "/v2/queues/q/subscriptions", project=None
        )
        self.assertEqual(response.code, 400)
        response = await client.request("GET", "/v1.1/queues/q/subscriptions")
        self.assertEqual(response.code, 404)
        self.assertNotEqual(response.json["title"], "Not enabled")


class _Bus:
    def __init__(self) -> None:
        from marconi.core.events import Events

        self.events = Events(None)


class _Request:
    def __init__(self) -> None:
        self.postpath = [b"recorder", b"x"]
        self.code = 200
        self.headers: dict = {}

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.headers[name] = value
