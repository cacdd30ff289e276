"""
Tests for the subscriptions extension (L{marconi.extensions.subscriptions}):
Zaqar's subscription resources, push delivery to a real webhook receiver
and a real SMTP server, retries on the bus's clock, confirmation, TTLs and
isolation between projects.
"""

import hashlib
import hmac
import json
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.mail import smtp
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from marconi.core.errors import ValidationFailed
from marconi.extensions import ExtensionHost, Extensions
from marconi.extensions.subscriptions import policy
from marconi.extensions.subscriptions.delivery import (
    DeliveryFailed,
    Mailer,
    PrivateAddress,
    PublicEndpoints,
    Webhooks,
)
from marconi.extensions.subscriptions.records import PROJECT
from marconi.extensions.subscriptions.service import SubscriptionsExtension
from marconi.extensions.subscriptions.settings import parseSettings
from tests.apihelpers import Node
from tests.core.test_encryption import encryptedNode

SUBS = "/v2/queues/q/subscriptions"
DEADLINE = 30.0
# One retry, 30 seconds after a failed attempt.
ONE_RETRY = {
    "retries_with_no_delay": 0,
    "minimum_delay_retries": 1,
    "minimum_delay": 30,
    "maximum_delay": 30,
    "maximum_delay_retries": 0,
}


async def waitUntil(predicate: Any, what: Any) -> None:
    """
    Poll C{predicate} on the real reactor until it is true, for at most
    L{DEADLINE} seconds.
    """
    waited = 0.0
    while not predicate():
        if waited > DEADLINE:
            raise AssertionError(
                f"gave up waiting for {what() if callable(what) else what}"
            )
        await deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


class Receiver(Resource):
    """
    A webhook receiver on a real loopback socket: it records each request
    and answers C{status}, or never answers while C{hang} is set.
    """

    isLeaf = True

    def __init__(self, testCase: Any) -> None:
        super().__init__()
        self.got: list[tuple[dict, bytes]] = []
        self.status = 200
        self.hang = False
        self.port = reactor.listenTCP(0, Site(self), interface="127.0.0.1")
        self.number = self.port.getHost().port
        self.url = f"http://127.0.0.1:{self.number}/hook"
        self._hanging: list = []
        testCase.addCleanup(self._close)

    def _close(self) -> Any:
        for request in self._hanging:
            if not request.finished:
                request.finish()
        return self.port.stopListening()

    def render_POST(self, request: Any) -> Any:
        headers = {
            k.decode().lower(): v[-1].decode()
            for k, v in request.requestHeaders.getAllRawHeaders()
        }
        self.got.append((headers, request.content.read()))
        if self.hang:
            self._hanging.append(request)
            return NOT_DONE_YET
        request.setResponseCode(self.status)
        return b""

    def documents(self) -> list[dict]:
        return [json.loads(body) for _, body in self.got]

    def stop(self) -> Any:
        return self.port.stopListening()

    def restart(self) -> None:
        self.port = reactor.listenTCP(self.number, Site(self), interface="127.0.0.1")


def signed(secret: str, headers: dict, body: bytes) -> bool:
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["x-marconi-signature"], "sha256=" + expected)


def enable(testCase: Any, node: Node, **settings: str) -> SubscriptionsExtension:
    """
    Run the extension on C{node}, its time on the node's clock; webhooks
    on loopback (the tests' receivers) are allowed unless C{settings} say.
    """
    settings.setdefault("allow_private", "true")
    host = ExtensionHost(node.bus, node.api.auth, node.api.router, reactor, settings)
    extension = SubscriptionsExtension(host, clock=node.clock, reactor=reactor)
    node.api.extensions = Extensions({"subscriptions": extension})
    extension.startService()
    testCase.addCleanup(extension.stopService)
    return extension


class PolicyTests(SynchronousTestCase):
    def test_defaultSchedule(self) -> None:
        """
        Zaqar's defaults: 3 retries at once, 3 after 5 s, linear backoff
        from 5 to 30 s in steps of 5, 3 after 30 s.
        """
        self.assertEqual(
            policy.schedule({}),
            [0.0] * 3 + [5.0] * 3 + [5.0, 10.0, 15.0, 20.0, 25.0] + [30.0] * 3,
        )

    def test_backoffFunctions(self) -> None:
        """
        Every backoff function grows from the minimum delay to at most the
        maximum, never shrinking.
        """
        for function in policy.BACKOFF_FUNCTIONS:
            delays = policy.backoff(function, 5, 60)
            self.assertEqual(round(delays[0]), 5, function)
            self.assertLessEqual(max(delays), 60.0001, function)
            self.assertEqual(delays, sorted(delays), function)

    def test_override(self) -> None:
        """
        The subscription's policy wins over the queue's unless either says
        ignore_subscription_override.
        """
        queue = {"minimum_delay": 7}
        mine = {"minimum_delay": 9}
        self.assertEqual(policy.effectivePolicy(queue, mine)["minimum_delay"], 9)
        self.assertEqual(policy.effectivePolicy(queue, {})["minimum_delay"], 7)
        ignoring = dict(queue, ignore_subscription_override=True)
        self.assertEqual(policy.effectivePolicy(ignoring, mine)["minimum_delay"], 7)

    def test_badPolicies(self) -> None:
        """
        Unknown fields, wrong types, out-of-range values, a minimum above
        the maximum and unknown functions are refused.
        """
        for bad in [
            [],
            {"nope": 1},
            {"minimum_delay": "5"},
            {"minimum_delay": True},
            {"retries_with_no_delay": -1},
            {"minimum_delay": 40, "maximum_delay": 30},
            {"retry_backoff_function": "cubic"},
            {"ignore_subscription_override": "yes"},
        ]:
            self.assertRaises(ValidationFailed, policy.checkRetryPolicy, bad)

    def test_settings(self) -> None:
        """
        The settings section is checked: unknown names, wrong numbers and
        confirmation without a key to sign its link are refused.
        """
        self.assertEqual(parseSettings({"smtp_port": "2525"}).smtpPort, 2525)
        self.assertFalse(parseSettings({}).allowPrivate)
        self.assertEqual(parseSettings({}).maxSubscriptionsPerQueue, 100)
        for section, words in [
            ({"nope": "1"}, "unknown setting"),
            ({"smtp_port": "x"}, "smtp_port must be an integer"),
            ({"timeout": "0"}, "timeout must be at least"),
            ({"subscriber_types": "ftp"}, "not ftp"),
            ({"require_confirmation": "true"}, "signed_url_key"),
            ({"smtp_from": "a@b\nBcc: c@d"}, "smtp_from must be text"),
            ({"allow_private": "maybe"}, "allow_private must be true or false"),
            ({"max_subscriptions_per_queue": "0"}, "must be at least 1"),
        ]:
            e = self.assertRaises(ValueError, parseSettings, section)
            self.assertIn(words, str(e))


class _Resolving(MemoryReactorClock):
    """
    A memory reactor whose resolver answers one address for every name.
    """

    def __init__(self, address: str) -> None:
        super().__init__()
        self.address = address
        self.looked: list[str] = []

    def resolve(self, name: str, timeout: Any = None) -> Any:
        self.looked.append(name)
        return defer.succeed(self.address)


class PublicEndpointTests(SynchronousTestCase):
    def connect(self, address: str, url: bytes) -> tuple[_Resolving, Any]:
        from twisted.web.client import URI

        reactor = _Resolving(address)
        endpoint = PublicEndpoints(reactor, 5.0).endpointForURI(URI.fromBytes(url))
        return reactor, endpoint.connect(Factory())

    def test_pinned(self) -> None:
        """
        A host name is resolved once and the connection is made to the
        address that was checked, not to the name.
        """
        reactor, d = self.connect("93.184.216.34", b"https://hooks.example.test/x")
        self.assertEqual(reactor.looked, ["hooks.example.test"])
        [(host, port, *_)] = reactor.tcpClients
        self.assertEqual((host, port), ("93.184.216.34", 443))
        self.assertNoResult(d)

    def test_private(self) -> None:
        """
        A name that resolves to a private address fails with
        L{PrivateAddress} and nothing is connected; so does a literal one.
        """
        for address, url in [
            ("10.0.0.7", b"http://hooks.example.test/"),
            ("169.254.169.254", b"http://metadata.example.test/"),
            ("93.184.216.34", b"http://[::1]:8080/"),
        ]:
            reactor, d = self.connect(address, url)
            self.failureResultOf(d, PrivateAddress)
            self.assertEqual(reactor.tcpClients, [])


class WebhookCancelTests(SynchronousTestCase):
    """
    A webhook call that is cancelled (its service stops) fails with
    L{CancelledError}, not as a failed delivery to retry, and leaves no
    timer behind, whether it is connecting or awaiting its answer; one
    that takes too long is a failed delivery.
    """

    def post(self, allowPrivate: bool) -> tuple[_Resolving, Deferred]:
        network = _Resolving("93.184.216.34")
        webhooks = Webhooks(network, 10.0, allowPrivate=allowPrivate)
        d = Deferred.fromCoroutine(
            webhooks.post("http://hooks.example.test/", b"{}", {})
        )
        self.assertEqual(len(network.tcpClients), 1)
        self.assertNoResult(d)
        return network, d

    def test_cancelConnecting(self) -> None:
        for allowPrivate in (False, True):
            network, d = self.post(allowPrivate)
            d.cancel()
            self.failureResultOf(d, CancelledError)
            self.assertEqual(network.getDelayedCalls(), [])

    def test_cancelAwaitingAnswer(self) -> None:
        network, d = self.post(False)
        factory = network.tcpClients[0][2]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertIn(b"POST / HTTP/1.1", transport.value())
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(network.getDelayedCalls(), [])

    def test_timeout(self) -> None:
        network, d = self.post(False)
        network.advance(10)
        failure = self.failureResultOf(d, DeliveryFailed)
        self.assertFalse(failure.value.final)
        self.assertEqual(network.getDelayedCalls(), [])


class ResourceTests(TestCase):
    async def test_lifecycle(self) -> None:
        """
        A subscription is created (201 with its id), read in Zaqar's shape,
        listed, patched (204) and deleted (204, then 404); the same
        subscriber twice on a queue is a 409.
        """
        node = Node(self)
        enable(self, node)
        created = await node.request(
            "POST", SUBS, {"subscriber": "http://example.test/a", "ttl": 600}
        )
        self.assertEqual(created.code, 201, created.body)
        sid = created.json["subscription_id"]
        self.assertEqual(created.header("location"), SUBS)
        got = await node.request("GET", f"{SUBS}/{sid}")
        self.assertEqual(got.code, 200)
        self.assertEqual(
            {k: got.json[k] for k in ("id", "source", "subscriber", "ttl", "age")},
            {
                "id": sid,
                "source": "q",
                "subscriber": "http://example.test/a",
                "ttl": 600,
                "age": 0,
            },
        )
        self.assertEqual((got.json["options"], got.json["confirmed"]), ({}, True))
        again = await node.request(
            "POST", SUBS, {"subscriber": "http://example.test/a"}
        )
        self.assertEqual(again.code, 409)
        self.assertEqual(again.json["title"], "Conflict")
        patched = await node.request(
            "PATCH", f"{SUBS}/{sid}", {"ttl": 900, "options": {"k": "v"}}
        )
        self.assertEqual(patched.code, 204, patched.body)
        got = await node.request("GET", f"{SUBS}/{sid}")
        self.assertEqual((got.json["ttl"], got.json["options"]), (900, {"k": "v"}))
        self.assertEqual((await node.request("DELETE", f"{SUBS}/{sid}")).code, 204)
        self.assertEqual((await node.request("GET", f"{SUBS}/{sid}")).code, 404)
        self.assertEqual(
            (await node.request("PATCH", f"{SUBS}/{sid}", {"ttl": 90})).code, 404
        )
        self.assertEqual((await node.request("DELETE", f"{SUBS}/{sid}")).code, 204)

    async def test_paging(self) -> None:
        """
        Listings page with limit and marker and give a next link.
        """
        node = Node(self)
        enable(self, node)
        ids = []
        for i in range(5):
            r = await node.request("POST", SUBS, {"subscriber": f"http://h{i}.test/"})
            ids.append(r.json["subscription_id"])
        seen = []
        path = f"{SUBS}?limit=2"
        for _ in range(5):
            page = await node.request("GET", path)
            self.assertEqual(page.code, 200)
            seen.extend(s["id"] for s in page.json["subscriptions"])
            if not page.json["subscriptions"]:
                break
            self.assertLessEqual(len(page.json["subscriptions"]), 2)
            [link] = page.json["links"]
            path = link["href"]
        self.assertEqual(seen, sorted(ids))
        for bad in ("0", "21", "x"):
            r = await node.request("GET", f"{SUBS}?limit={bad}")
            self.assertEqual(r.code, 400, bad)

    async def test_badDocuments(self) -> None:
        """
        Bad subscription documents are 400 with a JSON error and create
        nothing.
        """
        node = Node(self)
        enable(self, node)
        for body in [
            {},
            [],
            {"subscriber": 5},
            {"subscriber": "ftp://example.test/"},
            {"subscriber": "http:///nohost"},
            {"subscriber": "mailto:nobody"},
            {"subscriber": "http://example.test/", "ttl": 10},
            {"subscriber": "http://example.test/", "ttl": "600"},
            {"subscriber": "http://example.test/", "options": []},
            {"subscriber": "http://example.test/", "what": 1},
            {"subscriber": "http://example.test/", "options": {"_retry_policy": 1}},
            {
                "subscriber": "http://example.test/",
                "options": {"post_headers": {"a": "b\r\nc: d"}},
            },
            # Control characters anywhere but the body template.
            {"subscriber": "mailto:a@example.test\r\nBcc: b@example.test"},
            {"subscriber": "mailto:a@example.test\x00"},
            {"subscriber": "http://example.test/\n"},
            {"subscriber": "mailto:a@example.test", "options": {"subject": "a\rb"}},
            {"subscriber": "mailto:a@example.test", "options": {"x": ["\x00"]}},
            {
                "subscriber": "http://example.test/",
                "options": {"post_headers": {"a": "\t"}},
            },
            # Mails come from smtp_from only.
            {"subscriber": "mailto:a@example.test", "options": {"from": "x@y.test"}},
            # Headers that would change where or how the request goes.
            *(
                {
                    "subscriber": "http://example.test/",
                    "options": {"post_headers": {name: "v"}},
                }
                for name in (
                    "Host",
                    "content-length",
                    "Transfer-Encoding",
                    "CONNECTION",
                    "X-Marconi-Signature",
                    "x-marconi-anything",
                )
            ),
        ]:
            r = await node.request("POST", SUBS, body)
            self.assertEqual(r.code, 400, (body, r.body))
            self.assertIn("description", r.json)
        listed = await node.request("GET", SUBS)
        self.assertEqual(listed.json["subscriptions"], [])

    async def test_limit(self) -> None:
        """
        A queue has at most max_subscriptions_per_queue live subscriptions:
        one more is a 400 saying so and is not made; other queues and
        other projects are not counted, and a deleted one frees its place.
        """
        node = Node(self)
        enable(self, node, max_subscriptions_per_queue="2")
        ids = []
        for n in range(2):
            r = await node.request("POST", SUBS, {"subscriber": f"http://h.test/{n}"})
            self.assertEqual(r.code, 201, r.body)
            ids.append(r.json["subscription_id"])
        r = await node.request("POST", SUBS, {"subscriber": "http://h.test/2"})
        self.assertEqual(r.code, 400, r.body)
        self.assertIn("max_subscriptions_per_queue", r.json["description"])
        self.assertEqual(
            len((await node.request("GET", SUBS)).json["subscriptions"]), 2
        )
        other = await node.request(
            "POST", "/v2/queues/r/subscriptions", {"subscriber": "http://h.test/2"}
        )
        self.assertEqual(other.code, 201, other.body)
        theirs = await node.request(
            "POST", SUBS, {"subscriber": "http://h.test/2"}, project="beta"
        )
        self.assertEqual(theirs.code, 201, theirs.body)
        await node.request("DELETE", f"{SUBS}/{ids[0]}")
        r = await node.request("POST", SUBS, {"subscriber": "http://h.test/2"})
        self.assertEqual(r.code, 201, r.body)

    async def test_privateHosts(self) -> None:
        """
        With the default allow_private = false a webhook whose host is a
        loopback, link-local, private, unspecified or multicast IP address
        is a 400, on create and on patch; a public one is accepted.
        """
        node = Node(self)
        enable(self, node, allow_private="false")
        for host in [
            "127.0.0.1",
            "169.254.169.254",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "0.0.0.0",
            "224.0.0.1",
            "[::1]",
            "[fd00::1]",
            "[fe80::1]",
            "[::ffff:127.0.0.1]",
        ]:
            r = await node.request("POST", SUBS, {"subscriber": f"http://{host}/"})
            self.assertEqual(r.code, 400, (host, r.body))
            self.assertIn("private", r.json["description"])
        r = await node.request("POST", SUBS, {"subscriber": "http://93.184.216.34/"})
        self.assertEqual(r.code, 201, r.body)
        sid = r.json["subscription_id"]
        patched = await node.request(
            "PATCH", f"{SUBS}/{sid}", {"subscriber": "http://127.0.0.1:1/"}
        )
        self.assertEqual(patched.code, 400, patched.body)
        got = await node.request("GET", f"{SUBS}/{sid}")
        self.assertEqual(got.json["subscriber"], "http://93.184.216.34/")

    async def test_isolation(self) -> None:
        """
        No project sees, changes, deletes or receives another's
        subscriptions, even on a queue of the same name.
        """
        node = Node(self)
        extension = enable(self, node)
        receiver = Receiver(self)
        r = await node.request(
            "POST", SUBS, {"subscriber": receiver.url}, project="alpha"
        )
        sid = r.json["subscription_id"]
        listed = await node.request("GET", SUBS, project="beta")
        self.assertEqual(listed.json["subscriptions"], [])
        self.assertEqual(
            (await node.request("GET", f"{SUBS}/{sid}", project="beta")).code, 404
        )
        self.assertEqual(
            (
                await node.request(
                    "PATCH", f"{SUBS}/{sid}", {"ttl": 99}, project="beta"
                )
            ).code,
            404,
        )
        await node.request("DELETE", f"{SUBS}/{sid}", project="beta")
        await node.post("q", {"body": "beta's"}, project="beta")
        await extension.settled()
        self.assertEqual(receiver.got, [])
        got = await node.request("GET", f"{SUBS}/{sid}", project="alpha")
        self.assertEqual(got.code, 200)
        # Nor are they among any project's queues, and the project that
        # keeps them cannot be named.
        queues = await node.request("GET", "/v2/queues", project="alpha")
        self.assertEqual(queues.json.get("queues", []), [])
        named = await node.request("GET", "/v2/queues", project=PROJECT)
        self.assertEqual(named.code, 400)
        quoted = PROJECT.replace(" ", "%20")
        named = await node.request(
            "GET",
            f"/v2/projects/{quoted}/queues/outbox/messages?echo=true",
            project=None,
        )
        self.assertEqual(named.code, 400)

    async def test_ttl(self) -> None:
        """
        A subscription whose TTL ran out is gone: not read, not listed, not
        delivered to, and removed from the store by the sweep.
        """
        node = Node(self)
        extension = enable(self, node)
        receiver = Receiver(self)
        r = await node.request("POST", SUBS, {"subscriber": receiver.url, "ttl": 60})
        sid = r.json["subscription_id"]
        node.clock.advance(61)
        self.assertEqual((await node.request("GET", f"{SUBS}/{sid}")).code, 404)
        self.assertEqual((await node.request("GET", SUBS)).json["subscriptions"], [])
        await node.post("q", {"body": 1})
        await extension.settled()
        self.assertEqual(receiver.got, [])
        # The sweep ran on the clock, 60 seconds after the start.
        await extension._sweep()
        self.assertEqual(await extension.records.everything(), [])

    async def test_purge(self) -> None:
        """
        purge(project, queue) removes that queue's subscriptions only.
        """
        node = Node(self)
        extension = enable(self, node)
        for project, queue in [("a", "q"), ("a", "q"), ("a", "other"), ("b", "q")]:
            await node.request(
                "POST",
                f"/v2/queues/{queue}/subscriptions",
                {"subscriber": f"http://{project}{queue}.test/{len(extension._known)}"},
                project=project,
            )
        self.assertEqual(await extension.purge("a", "q"), 2)
        self.assertEqual(
            (await node.request("GET", SUBS, project="a")).json["subscriptions"], []
        )
        for project, path in [("a", "/v2/queues/other/subscriptions"), ("b", SUBS)]:
            listed = await node.request("GET", path, project=project)
            self.assertEqual(len(listed.json["subscriptions"]), 1)
        self.assertEqual(len(await extension.records.everything()), 2)

    async def test_purgeThroughAPI(self) -> None:
        """
        C{POST .../purge} removes the queue's subscriptions when it names
        them (or names nothing), and keeps them when it names only
        messages.
        """
        node = Node(self)
        enable(self, node)
        for n in range(2):
            await node.request("POST", SUBS, {"subscriber": f"http://h.test/{n}"})
        purge = SUBS.replace("/subscriptions", "/purge")
        r = await node.request("POST", purge, {"resource_types": ["messages"]})
        self.assertEqual(r.code, 204, r.body)
        listed = await node.request("GET", SUBS)
        self.assertEqual(len(listed.json["subscriptions"]), 2)
        r = await node.request("POST", purge, {"resource_types": ["subscriptions"]})
        self.assertEqual(r.code, 204, r.body)
        self.assertEqual((await node.request("GET", SUBS)).json["subscriptions"], [])

    async def test_retryPolicySetting(self) -> None:
        """
        With the extension enabled a queue accepts a valid _retry_policy
        and refuses a wrong one.
        """
        node = Node(self)
        enable(self, node)
        r = await node.request("PUT", "/v2/queues/q", {"_retry_policy": ONE_RETRY})
        self.assertEqual(r.code, 201, r.body)
        got = await node.request("GET", "/v2/queues/q")
        self.assertEqual(got.json["_retry_policy"], ONE_RETRY)
        r = await node.request("PUT", "/v2/queues/r", {"_retry_policy": {"x": 1}})
        self.assertEqual(r.code, 400)
        self.assertIn("unknown field", r.json["description"])


class WebhookTests(TestCase):
    async def test_delivered(self) -> None:
        """
        Every message posted to a subscribed queue is POSTed to the
        webhook, one request each, with its body exactly as posted and a
        signature the receiver verifies with the subscription's secret.
        """
        node = Node(self)
        extension = enable(self, node)
        receiver = Receiver(self)
        r = await node.request("POST", SUBS, {"subscriber": receiver.url})
        secret = r.json["secret"]
        bodies: list[Any] = [{"n": 1, "text": "h\u00e9"}, [1, 2], "three"]
        ids = await node.post("q", {"body": bodies[0]}, {"body": bodies[1]})
        ids += await node.post("q", {"body": bodies[2], "ttl": 120})
        await waitUntil(lambda: len(receiver.got) == 3, "three deliveries")
        await extension.settled()
        self.assertEqual(len(receiver.got), 3)
        documents = sorted(receiver.documents(), key=lambda d: ids.index(d["id"]))
        self.assertEqual([d["body"] for d in documents], bodies)
        self.assertEqual({d["queue_name"] for d in documents}, {"q"})
        self.assertEqual({d["Message_Type"] for d in documents}, {"Notification"})
        for headers, body in receiver.got:
            self.assertTrue(signed(secret, headers, body))
            self.assertFalse(signed("wrong", headers, body))
            self.assertEqual(headers["content-type"], "application/json")
        # Nothing is owed any more.
        claim = await extension.records.take(10, 60)
        self.assertTrue(claim is None or not claim.messages)

    async def test_encrypted(self) -> None:
        """
        Messages of a queue encrypted at rest reach the webhook decrypted,
        as posted.
        """
        node = encryptedNode(self)
        extension = enable(self, node)
        receiver = Receiver(self)
        r = await node.request(
            "PUT", "/v2/queues/q", {"_enable_encrypt_messages": True}
        )
        self.assertEqual(r.code, 201, r.body)
        await node.request("POST", SUBS, {"subscriber": receiver.url})
        await node.post("q", {"body": {"secret": "plans"}})
        await waitUntil(lambda: len(receiver.got) == 1, "the delivery")
        await extension.settled()
        self.assertEqual(receiver.documents()[0]["body"], {"secret": "plans"})

    async def test_retries(self) -> None:
        """
        A failed delivery is tried again after the delay of the queue's
        _retry_policy, on the bus's clock, and given up when the policy
        is used up.
        """
        node = Node(self)
        extension = enable(self, node)
        receiver = Receiver(self)
        receiver.status = 503
        await node.request("PUT", "/v2/queues/q", {"_retry_policy": ONE_RETRY})
        await node.request("POST", SUBS, {"subscriber": receiver.url})
        await node.post("q", {"body": "late"})
        await waitUntil(lambda: len(receiver.got) == 1, "the first attempt")
        await extension.settled()
        node.clock.advance(29)
        await extension.settled()
        self.assertEqual(len(receiver.got), 1)
        node.clock.advance(1)
        await waitUntil(lambda: len(receiver.got) == 2, "the retry")
        await extension.settled()
        # The policy allowed one retry: nothing more comes.
        node.clock.advance(3600)
        extension.outbox.kick()
        await extension.settled()
        self.assertEqual(len(receiver.got), 2)

    async def test_outage(self) -> None:
        """
        A receiver that is down gets the messages posted meanwhile once it
        is back, and its outage neither slows posting nor another
        subscriber.
        """
        node = Node(self)
        extension = enable(self, node)
        down = Receiver(self)
        up = Receiver(self)
        await down.stop()
        await node.request("POST", SUBS, {"subscriber": down.url})
        await node.request("POST", SUBS, {"subscriber": up.url})
        await node.post("q", {"body": 1})
        await node.post("q", {"body": 2})
        await waitUntil(lambda: len(up.got) == 2, "the live subscriber")
        await extension.settled()
        down.restart()
        # The default policy: three at once, then after 5 s.
        node.clock.advance(5)
        await waitUntil(lambda: len(down.got) == 2, "the receiver back up")
        self.assertEqual(sorted(d["body"] for d in down.documents()), [1, 2])

    async def test_recovery(self) -> None:
        """
        After an unclean stop, the messages posted shortly before it whose
        deliveries were never recorded are delivered by the next start;
        after a clean stop nothing is sent again.
        """
        node = Node(self)
        first = enable(self, node)
        receiver = Receiver(self)
        await node.request("POST", SUBS, {"subscriber": receiver.url})
        await node.post("q", {"body": "seen"})
        await waitUntil(lambda: len(receiver.got) == 1, "the first delivery")
        await first.settled()
        # The node dies between a post's answer and its outbox write.
        first._stopListening()
        await node.post("q", {"body": "lost"})
        await first.stopService()
        await first.records.setState(
            "local", {"clean": False, "at": node.clock.seconds()}
        )
        second = enable(self, node)
        await waitUntil(lambda: len(receiver.got) >= 2, "the recovered delivery")
        await second.settled()
        bodies = [d["body"] for d in receiver.documents()]
        # The one delivered just before the stop comes again: at least once.
        self.assertEqual(sorted(set(bodies)), ["lost", "seen"])
        await second.stopService()
        third = enable(self, node)
        await third.settled()
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(len(receiver.got), len(bodies))

    async def test_hungReceiver(self) -> None:
        """
        A receiver that never answers holds only its own deliveries.
        """
        node = Node(self)
        enable(self, node)
        hung = Receiver(self)
        hung.hang = True
        up = Receiver(self)
        await node.request("POST", SUBS, {"subscriber": hung.url})
        await node.request("POST", SUBS, {"subscriber": up.url})
        for i in range(3):
            await node.post("q", {"body": i})
        await waitUntil(lambda: len(up.got) == 3, "the live subscriber")
        await waitUntil(lambda: len(hung.got) == 3, "the hung one's requests")

    async def test_loopbackNameRefused(self) -> None:
        """
        With the default allow_private = false a webhook named by a host
        name that resolves to loopback is accepted but never delivered to:
        its deliveries are given up at once, not retried.
        """
        node = Node(self)
        extension = enable(self, node, allow_private="false")
        receiver = Receiver(self)
        url = f"http://localhost:{receiver.number}/hook"
        r = await node.request("POST", SUBS, {"subscriber": url})
        self.assertEqual(r.code, 201, r.body)
        await node.post("q", {"body": "internal"})
        await extension.settled()
        node.clock.advance(3600)
        extension.outbox.kick()
        await extension.settled()
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(receiver.got, [])
        claim = await extension.records.take(10, 60)
        self.assertTrue(claim is None or not claim.messages)

    async def test_unexpectedErrorIsFinal(self) -> None:
        """
        A delivery that fails with an error other than a delivery failure
        is logged and removed from the outbox, not left to be tried again.
        """
        node = Node(self)
        extension = enable(self, node)
        receiver = Receiver(self)
        await node.request("POST", SUBS, {"subscriber": receiver.url})

        async def broken(entry: dict) -> None:
            raise RuntimeError("unexpected")

        extension.outbox.handle = broken
        await node.post("q", {"body": 1})
        await extension.settled()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        # Nothing is left claimed to come back once the claim runs out.
        node.clock.advance(3600)
        claim = await extension.records.take(10, 60)
        self.assertTrue(claim is None or not claim.messages)

    async def subscribeConfirming(self) -> tuple:
        """
        A node requiring confirmation with one new subscription, once its
        confirmation request arrived: the node, the extension, the
        receiver, the subscription's id and the request.
        """
        key = "shared secret"
        node = Node(self, secret=key)
        extension = enable(self, node, require_confirmation="true", signed_url_key=key)
        receiver = Receiver(self)
        r = await node.request("POST", SUBS, {"subscriber": receiver.url})
        sid = r.json["subscription_id"]
        await waitUntil(lambda: len(receiver.got) == 1, "the confirmation request")
        return node, extension, receiver, sid, receiver.documents()[-1]

    async def confirmedSubscription(self) -> tuple:
        """
        L{subscribeConfirming}, confirmed: all but the request.
        """
        node, extension, receiver, sid, request = await self.subscribeConfirming()
        await self.confirmWith(node, request, request["SubscribeBody"], 204)
        await extension.settled()
        return node, extension, receiver, sid

    async def confirmWith(
        self, node: Node, request: dict, body: Any, code: int
    ) -> None:
        """
        Send C{body} to the confirmation URL of C{request} as its
        subscriber does, and check the answer is C{code}.
        """
        names = ("URL-Signature", "URL-Methods", "URL-Paths", "URL-Expires")
        confirmed = await node.request(
            "PUT",
            request["URL-Paths"],
            body,
            project=None,
            headers={n: request[n] for n in names + ("X-Project-ID",)},
        )
        self.assertEqual(confirmed.code, code, confirmed.body)

    async def test_confirmation(self) -> None:
        """
        With require_confirmation a new subscriber gets a confirmation
        request with a pre-signed URL and nothing else; once it confirms
        with that URL it gets the messages.
        """
        node, extension, receiver, sid, request = await self.subscribeConfirming()
        self.assertEqual(request["Message_Type"], "SubscriptionConfirmation")
        self.assertFalse((await node.request("GET", f"{SUBS}/{sid}")).json["confirmed"])
        await node.post("q", {"body": "unseen"})
        await extension.settled()
        self.assertEqual(len(receiver.got), 1)
        await self.confirmWith(node, request, request["SubscribeBody"], 204)
        self.assertTrue((await node.request("GET", f"{SUBS}/{sid}")).json["confirmed"])
        await node.post("q", {"body": "seen"})
        await waitUntil(lambda: len(receiver.got) == 2, "the message")
        self.assertEqual(receiver.documents()[1]["body"], "seen")
        await self.confirmWith(node, request, {"confirmed": "yes"}, 400)

    async def test_newSubscriberConfirmsAgain(self) -> None:
        """
        A PATCH that changes a confirmed subscription's subscriber makes it
        unconfirmed and sends the new subscriber a confirmation request;
        the new subscriber gets no message until it confirms.  A PATCH of
        the TTL alone keeps it confirmed.
        """
        node, extension, first, sid = await self.confirmedSubscription()
        r = await node.request("PATCH", f"{SUBS}/{sid}", {"ttl": 900})
        self.assertEqual(r.code, 204, r.body)
        self.assertTrue((await node.request("GET", f"{SUBS}/{sid}")).json["confirmed"])
        second = Receiver(self)
        r = await node.request("PATCH", f"{SUBS}/{sid}", {"subscriber": second.url})
        self.assertEqual(r.code, 204, r.body)
        self.assertFalse((await node.request("GET", f"{SUBS}/{sid}")).json["confirmed"])
        await waitUntil(lambda: len(second.got) == 1, "the new confirmation request")
        [asked] = second.documents()
        self.assertEqual(asked["Message_Type"], "SubscriptionConfirmation")
        await node.post("q", {"body": "unseen"})
        await extension.settled()
        self.assertEqual((len(first.got), len(second.got)), (1, 1))
        await self.confirmWith(node, asked, asked["SubscribeBody"], 204)
        await node.post("q", {"body": "seen"})
        await waitUntil(lambda: len(second.got) == 2, "the message")
        self.assertEqual(second.documents()[1]["body"], "seen")

    async def test_stopWhileConnecting(self) -> None:
        """
        Stopping the service while a delivery is connecting cancels it:
        no timer is left, the store is not read for a retry, and the
        delivery is given back untried, to run after the next start.
        """
        node = Node(self)
        network = _Resolving("93.184.216.34")
        host = ExtensionHost(node.bus, node.api.auth, node.api.router, network, {})
        extension = SubscriptionsExtension(host, clock=node.clock, reactor=network)
        node.api.extensions = Extensions({"subscriptions": extension})
        extension.startService()
        stopped = False

        async def stop() -> None:
            if not stopped:
                await extension.stopService()

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        r = await node.request(
            "POST", SUBS, {"subscriber": "http://hooks.example.test/"}
        )
        self.assertEqual(r.code, 201, r.body)
        await node.post("q", {"body": "pending"})
        await waitUntil(lambda: network.tcpClients, "the connection attempt")
        read: list = []
        getQueue = node.bus.getQueue
        self.patch(
            node.bus, "getQueue", lambda *a, **k: read.append(a) or getQueue(*a, **k)
        )
        stopped = True
        await extension.stopService()
        self.assertEqual(network.getDelayedCalls(), [])
        self.assertEqual(read, [])
        claim = await extension.records.take(10, 60)
        [message] = claim.messages
        self.assertEqual(json.loads(message.body)["attempt"], 0)

    async def test_confirmNeedsSignedURL(self) -> None:
        """
        The project cannot confirm a subscription with its own credentials
        (403, still unconfirmed), nor with a pre-signed URL it made for its
        queue's subscriptions; only the URL sent to the subscriber confirms.
        """
        key = "shared secret"
        node = Node(self, secret=key)
        enable(self, node, require_confirmation="true", signed_url_key=key)
        r = await node.request("POST", SUBS, {"subscriber": "http://h.test/"})
        sid = r.json["subscription_id"]
        confirm = f"{SUBS}/{sid}/confirm"
        r = await node.request("PUT", confirm, {"confirmed": True})
        self.assertEqual(r.code, 403, r.body)
        self.assertIn("pre-signed URL", r.json["description"])
        share = await node.request(
            "POST",
            "/v2/queues/q/share",
            {"paths": ["subscriptions"], "methods": ["PUT"]},
        )
        self.assertEqual(share.code, 200, share.body)
        grant = share.json
        headers = {
            "URL-Signature": grant["signature"],
            "URL-Methods": ",".join(grant["methods"]),
            "URL-Paths": ",".join(grant["paths"]),
            "URL-Expires": grant["expires"],
            "X-Project-ID": grant["project"],
        }
        r = await node.request(
            "PUT", confirm, {"confirmed": True}, project=None, headers=headers
        )
        self.assertEqual(r.code, 403, r.body)
        self.assertFalse((await node.request("GET", f"{SUBS}/{sid}")).json["confirmed"])


@implementer(smtp.IMessageDelivery)
class _Mailbox:
    def __init__(self) -> None:
        self.mails: list[tuple[str, bytes]] = []

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> bytes:
        return b"Received: by the test"

    def validateFrom(self, helo: Any, origin: Any) -> Any:
        return origin

    def validateTo(self, user: Any) -> Any:
        return lambda: _Mail(self, str(user.dest))


@implementer(smtp.IMessage)
class _Mail:
    def __init__(self, box: _Mailbox, to: str) -> None:
        self.box = box
        self.to = to
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> Any:
        self.box.mails.append((self.to, b"\n".join(self.lines)))
        return defer.succeed(None)

    def connectionLost(self) -> None:
        pass


class _SMTPFactory(smtp.SMTPFactory):
    domain = b"test.example"

    def __init__(self, box: _Mailbox) -> None:
        super().__init__()
        self.box = box

    open = 0

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        protocol.delivery = self.box
        factory = self
        lost = protocol.connectionLost
        factory.open += 1

        def connectionLost(reason: Any) -> None:
            factory.open -= 1
            lost(reason)

        protocol.connectionLost = connectionLost
        return protocol


class MailTests(TestCase):
    async def test_mailto(self) -> None:
        """
        A mailto: subscriber gets each message as a mail through the
        configured relay (a real Twisted SMTP server), from smtp_from and
        with the subject its options name.
        """
        box = _Mailbox()
        factory = _SMTPFactory(box)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        node = Node(self)
        extension = enable(
            self,
            node,
            smtp_host="127.0.0.1",
            smtp_port=str(port.getHost().port),
            smtp_from="bus@example.test",
        )
        await node.request(
            "POST",
            SUBS,
            {
                "subscriber": "mailto:ops@example.test",
                "options": {"subject": "News"},
            },
        )
        await node.post("q", {"body": {"alert": "disk full"}})
        await waitUntil(lambda: len(box.mails) == 1, "the mail")
        await extension.settled()
        await waitUntil(lambda: factory.open == 0, "the client to hang up")
        await deferLater(reactor, 0.01, lambda: None)
        to, text = box.mails[0]
        self.assertEqual(to, "ops@example.test")
        self.assertIn(b"From: bus@example.test", text)
        self.assertIn(b"Subject: News", text)
        body = text.split(b"\n\n", 1)[1]
        self.assertEqual(json.loads(body)["body"], {"alert": "disk full"})

    async def test_badHeaderIsFinal(self) -> None:
        """
        A mail whose headers cannot be made (a line break in the subject)
        fails for good, before any connection to the relay.
        """
        mailer = Mailer(reactor, "127.0.0.1", 1, 1.0)
        with self.assertRaises(DeliveryFailed) as caught:
            await mailer.send(
                "bus@example.test", "a@example.test", "x\r\nBcc: b@example.test", "t"
            )
        self.assertTrue(caught.exception.final)
