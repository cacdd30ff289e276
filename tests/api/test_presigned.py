"""
Pre-signed URLs (C{POST /v2/queues/{queue}/share} and the C{URL-*}
headers): the signature's wire format, the grants a node makes, and the
requests it accepts and refuses with them, over a real socket and with
python-zaqarclient against the real daemon.
"""

import hashlib
import hmac
import os
from datetime import datetime, timezone

from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from marconi.api import presigned
from marconi.api.errors import HTTPError
from marconi.config import ConfigError, load
from marconi.core.errors import ValidationFailed
from tests.apihelpers import START, Node
from tests.auth.test_keystone import KeystoneCase
from tests.integration.test_node import NodeTestCase

SECRET = "correct horse battery staple"
MESSAGES = "/v2/queues/q/messages"


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _headers(grant: dict, **changes: str) -> dict:
    """
    The headers python-zaqarclient sends for C{grant}, with C{changes}
    (header name with underscores for dashes) applied.
    """
    headers = {
        "URL-Signature": grant["signature"],
        "URL-Expires": grant["expires"],
        "URL-Methods": ",".join(grant["methods"]),
        "URL-Paths": ",".join(grant["paths"]),
        "X-Project-ID": grant["project"],
    }
    headers.update({k.replace("_", "-"): v for k, v in changes.items()})
    return headers


async def _postWithGrant(node: Node, grant: dict, body: object, **changes: str):
    """
    Post one message to C{q} with C{grant}'s headers (and C{changes}).
    """
    return await node.request(
        "POST",
        MESSAGES,
        {"messages": [{"body": body}]},
        project=None,
        headers=_headers(grant, **changes),
    )


class SignatureTests(SynchronousTestCase):
    def test_wireFormat(self) -> None:
        """
        The signature is the hex HMAC-SHA256 of the sorted paths, the sorted
        methods, the project and the expiry, joined by a literal backslash
        and C{n}, as Zaqar computes it.
        """
        expected = hmac.new(
            b"k",
            b"/v2/queues/q/claims,/v2/queues/q/messages\\nGET,POST\\np\\n"
            b"2030-01-01T00:00:00",
            hashlib.sha256,
        ).hexdigest()
        self.assertEqual(
            presigned.sign(
                b"k",
                ["/v2/queues/q/messages", "/v2/queues/q/claims"],
                ["POST", "GET"],
                "p",
                "2030-01-01T00:00:00",
            ),
            expected,
        )

    def test_shareDefaults(self) -> None:
        """
        Without paths, methods or expiry a grant is GET on the queue's
        messages for a day from the clock's now.
        """
        clock = Clock()
        clock.advance(START)
        grant = presigned.SignedURLs(SECRET, clock).share("p", "/v2/queues/q", {})
        self.assertEqual(grant["paths"], [MESSAGES])
        self.assertEqual(grant["methods"], ["GET"])
        self.assertEqual(grant["expires"], _stamp(START + 86400))
        self.assertEqual(grant["project"], "p")

    def test_expiresNormalizedToUTC(self) -> None:
        """
        An expiry with an offset is turned into UTC, and its fraction of a
        second dropped.
        """
        clock = Clock()
        grant = presigned.SignedURLs(SECRET, clock).share(
            "p", "/v2/queues/q", {"expires": "2030-01-01T02:00:00.5+02:00"}
        )
        self.assertEqual(grant["expires"], "2030-01-01T00:00:00")

    def test_badDocuments(self) -> None:
        """
        Unknown keys, unknown paths or methods, empty method lists and
        expiries that are integers, malformed or past are refused.
        """
        clock = Clock()
        clock.advance(START)
        signer = presigned.SignedURLs(SECRET, clock)
        for document in (
            [],
            {"project_id": "other"},
            {"paths": ["messages", "share"]},
            {"paths": "messages"},
            {"methods": []},
            {"methods": ["get"]},
            {"methods": ["GET", 1]},
            {"expires": 1900000000},
            {"expires": "tomorrow"},
            {"expires": _stamp(START)},
            {"expires": "9999-12-31T23:59:59-05:00"},
        ):
            self.assertRaises(
                ValidationFailed, signer.share, "p", "/v2/queues/q", document
            )

    def test_noSecret(self) -> None:
        """
        Without a secret no grant is made.
        """
        error = self.assertRaises(
            HTTPError,
            presigned.SignedURLs(None, Clock()).share,
            "p",
            "/v2/queues/q",
            {},
        )
        self.assertEqual(error.code, 400)
        self.assertIn("secret_key", error.description)


class ConfigTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_secretKey(self) -> None:
        """
        C{[signed_url] secret_key} is the secret; without the section there
        is none.
        """
        path = self.write("[signed_url]\nsecret_key = s3cret\n")
        self.assertEqual(load(path, {}).signedURLKey, "s3cret")
        self.assertIsNone(load(None, {}).signedURLKey)

    def test_badSection(self) -> None:
        """
        An empty secret or an unknown setting in the section is an error
        that names it.
        """
        for text, word in (
            ("[signed_url]\nsecret_key =\n", "empty"),
            ("[signed_url]\nsecret_key = x\nsecret = y\n", "secret"),
        ):
            error = self.assertRaises(ConfigError, load, self.write(text), {})
            self.assertIn(word, str(error))


class SharedAPITests(TestCase):
    """
    Grants made and used over a real socket, with the node's L{Clock}.
    """

    def setUp(self) -> None:
        self.node = Node(self, secret=SECRET)

    async def share(self, body: object = None, path: str = "/v2/queues/q/share"):
        response = await self.node.request("POST", path, body)
        self.assertEqual(response.code, 200, response.body)
        return response.json

    async def assertRefused(self, method: str, path: str, headers: dict, **kw) -> None:
        response = await self.node.request(
            method, path, project=None, headers=headers, **kw
        )
        self.assertEqual(response.code, 403, response.body)
        self.assertEqual(response.json["title"], "Invalid pre-signed URL")
        self.assertTrue(response.json["description"])

    async def count(self, queue: str = "q", project: str = "p") -> int:
        response = await self.node.request(
            "GET", f"/v2/queues/{queue}/stats", project=project
        )
        return response.json["messages"]["total"]

    async def test_shareAnswer(self) -> None:
        """
        The answer names the queue's full paths and the methods, sorted, the
        project, the expiry, and the signature of them with the secret.
        """
        grant = await self.share(
            {
                "paths": ["messages", "claims"],
                "methods": ["POST", "GET"],
                "expires": "2030-01-01T00:00:00",
            }
        )
        self.assertEqual(
            grant,
            {
                "paths": ["/v2/queues/q/claims", MESSAGES],
                "methods": ["GET", "POST"],
                "project": "p",
                "expires": "2030-01-01T00:00:00",
                "signature": presigned.sign(
                    SECRET.encode(),
                    ["/v2/queues/q/claims", MESSAGES],
                    ["GET", "POST"],
                    "p",
                    "2030-01-01T00:00:00",
                ),
            },
        )

    async def test_grantWorks(self) -> None:
        """
        A grant of GET and POST on the messages posts and lists them for
        the granting project, with no other credentials.
        """
        grant = await self.share({"methods": ["GET", "POST"]})
        posted = await _postWithGrant(self.node, grant, 1)
        self.assertEqual(posted.code, 201, posted.body)
        listed = await self.node.request(
            "GET", MESSAGES + "?echo=true", project=None, headers=_headers(grant)
        )
        self.assertEqual([m["body"] for m in listed.json["messages"]], [1])
        self.assertEqual(await self.count(), 1)
        self.assertEqual(await self.count(project="other"), 0)

    async def test_unsignedMethodOrPath(self) -> None:
        """
        A grant of GET on the messages allows neither another method there
        nor any other path (another queue, the queue itself, a message by
        id, the share endpoint); nothing changes.
        """
        ids = await self.node.post("q", {"body": 1})
        grant = await self.share()
        headers = _headers(grant)
        await self.assertRefused("DELETE", MESSAGES + f"?ids={ids[0]}", headers)
        await self.assertRefused("POST", MESSAGES, headers, body={"messages": []})
        await self.assertRefused("GET", "/v2/queues/other/messages", headers)
        await self.assertRefused("DELETE", "/v2/queues/q", headers)
        await self.assertRefused("DELETE", f"{MESSAGES}/{ids[0]}", headers)
        await self.assertRefused("GET", MESSAGES + "/", headers)
        await self.assertRefused("POST", "/v2/queues/q/share", headers, body={})
        await self.assertRefused("GET", "/v2/queues", headers)
        self.assertEqual(await self.count(), 1)

    async def test_widened(self) -> None:
        """
        A grant whose methods or paths are widened, or whose expiry is
        pushed back, no longer matches its signature.
        """
        await self.node.post("q", {"body": 1})
        grant = await self.share()
        for changes in (
            {"URL_Methods": "DELETE,GET"},
            {"URL_Paths": MESSAGES + ",/v2/queues/q/claims"},
            {"URL_Paths": "/v2/queues/other/messages"},
            {"URL_Expires": "2099-01-01T00:00:00"},
        ):
            await self.assertRefused(
                "DELETE", MESSAGES + "?pop=1", _headers(grant, **changes)
            )
        self.assertEqual(await self.count(), 1)

    async def test_badSignatures(self) -> None:
        """
        An altered, empty, missing, upper-case or short signature, a
        malformed expiry, or a header sent twice is refused, even under
        noauth where the project header alone would otherwise do.
        """
        grant = await self.share()
        flipped = ("0" if grant["signature"][0] != "0" else "1") + grant["signature"][
            1:
        ]
        missing = _headers(grant)
        del missing["URL-Signature"]
        for headers in (
            _headers(grant, URL_Signature=flipped),
            _headers(grant, URL_Signature=""),
            missing,
            _headers(grant, URL_Signature=grant["signature"].upper()),
            _headers(grant, URL_Signature=grant["signature"][:-1]),
            _headers(grant, URL_Expires=grant["expires"] + "Z"),
            _headers(grant, URL_Expires=""),
        ):
            await self.assertRefused("GET", MESSAGES, headers)
        twice = await self.node.http.request(
            "GET",
            self.node.url + MESSAGES,
            headers={
                **_headers(grant),
                "URL-Signature": [grant["signature"], flipped],
            },
        )
        self.assertEqual(twice.code, 403)

    async def test_expiry(self) -> None:
        """
        A grant works until its expiry and is refused from then on.
        """
        grant = await self.share({"expires": _stamp(START + 60)})
        self.node.clock.advance(59)
        ok = await self.node.request(
            "GET", MESSAGES, project=None, headers=_headers(grant)
        )
        self.assertEqual(ok.code, 200, ok.body)
        self.node.clock.advance(1)
        await self.assertRefused("GET", MESSAGES, _headers(grant))

    async def test_otherProject(self) -> None:
        """
        A grant sent for another project, or at another project's queue in
        the URL, is refused; the other project's queue is untouched.
        """
        await self.node.post("q", {"body": 1}, project="other")
        grant = await self.share({"methods": ["GET", "DELETE"]})
        await self.assertRefused(
            "DELETE", MESSAGES + "?pop=1", _headers(grant, X_Project_ID="other")
        )
        await self.assertRefused(
            "DELETE",
            "/v2/projects/other/queues/q/messages?pop=1",
            _headers(grant),
        )
        self.assertEqual(await self.count(project="other"), 1)

    async def test_projectInURL(self) -> None:
        """
        A grant made under C{/v2/projects/{project}} names those paths and
        works there without the header; under another project it does not.
        """
        await self.node.post("q", {"body": 1})
        grant = await self.share(path="/v2/projects/p/queues/q/share")
        self.assertEqual(grant["paths"], ["/v2/projects/p/queues/q/messages"])
        headers = _headers(grant)
        del headers["X-Project-ID"]
        ok = await self.node.request(
            "GET",
            "/v2/projects/p/queues/q/messages?echo=true",
            project=None,
            headers=headers,
        )
        self.assertEqual(len(ok.json["messages"]), 1)
        await self.assertRefused("GET", "/v2/projects/other/queues/q/messages", headers)

    async def test_notAdmin(self) -> None:
        """
        A request with a grant never sees the operators' health report,
        even under noauth.
        """
        grant = await self.share()
        response = await self.node.request(
            "GET", "/v2/health", project=None, headers=_headers(grant)
        )
        self.assertEqual(response.json, {"storage_reachable": True})

    async def test_shareNeedsProject(self) -> None:
        """
        Making a grant needs the caller's own credentials: without a
        project it is refused.
        """
        response = await self.node.request(
            "POST", "/v2/queues/q/share", {}, project=None
        )
        self.assertEqual(response.code, 400)
        self.assertEqual(response.json["title"], "Project-Id Missing")

    async def test_badBody(self) -> None:
        """
        A body the grant cannot be made from is a 400 with a JSON error.
        """
        for body in ({"paths": ["queues"]}, {"expires": 5}, {"ttl": 60}):
            response = await self.node.request("POST", "/v2/queues/q/share", body)
            self.assertEqual(response.code, 400, body)
            self.assertTrue(response.json["description"])

    async def test_notUnderV11(self) -> None:
        """
        v1.1 has no share endpoint.
        """
        response = await self.node.request("POST", "/v1.1/queues/q/share", {})
        self.assertEqual(response.code, 404)


class UnconfiguredAPITests(TestCase):
    def setUp(self) -> None:
        self.node = Node(self)

    async def test_shareSaysSo(self) -> None:
        """
        Without C{[signed_url] secret_key} the share endpoint answers a 400
        that says what is missing.
        """
        response = await self.node.request("POST", "/v2/queues/q/share", {})
        self.assertEqual(response.code, 400)
        self.assertEqual(response.json["title"], "Pre-signed URLs not configured")
        self.assertIn("[signed_url] secret_key", response.json["description"])

    async def test_headersRefused(self) -> None:
        """
        Without a secret, a request with a grant is refused rather than
        served by the project header it also carries.
        """
        grant = presigned.SignedURLs(SECRET, self.node.clock).share(
            "p", "/v2/queues/q", {}
        )
        response = await self.node.request(
            "GET", MESSAGES, project=None, headers=_headers(grant)
        )
        self.assertEqual(response.code, 403)
        self.assertIn("does not accept", response.json["description"])


class KeystoneTests(KeystoneCase):
    """
    Under Keystone a grant is made with a token of its project and used
    without one.
    """

    async def test_grantUnderKeystone(self) -> None:
        """
        Sharing without a token is 401; with alice's token the grant names
        her project and works with no token; sent for bob's project it is
        refused.
        """
        node = Node(self, auth=self.driver(), secret=SECRET)
        alice, project = self.keystone.token("alice")
        _, other = self.keystone.token("bob")
        refused = await node.request("POST", "/v2/queues/q/share", {}, project=None)
        self.assertEqual(refused.code, 401)
        shared = await node.request(
            "POST",
            "/v2/queues/q/share",
            {"methods": ["POST"]},
            project=None,
            headers={"X-Auth-Token": alice},
        )
        self.assertEqual(shared.json["project"], project)
        grant = shared.json
        posted = await _postWithGrant(node, grant, 1)
        self.assertEqual(posted.code, 201, posted.body)
        forged = await _postWithGrant(node, grant, 2, X_Project_ID=other)
        self.assertEqual(forged.code, 403)
        stats = await node.request(
            "GET", "/v2/queues/q/stats", project=None, headers={"X-Auth-Token": alice}
        )
        self.assertEqual(stats.json["messages"]["total"], 1)


class ZaqarClientTests(NodeTestCase):
    """
    python-zaqarclient's C{queue.signed_url()} against the real daemon,
    and a client configured from its result.
    """

    def setUp(self) -> None:
        super().setUp()
        try:
            import zaqarclient.queues.client  # noqa: F401
        except ImportError:
            raise SkipTest("python-zaqarclient is not installed") from None

    async def test_signedURLClient(self) -> None:
        """
        A grant of GET and POST on a queue's messages lets a signed-url
        client post and list there, and not delete the queue or post to
        another queue.
        """
        config = os.path.join(self.directory, "marconi.ini")
        with open(config, "w") as f:
            f.write(f"[signed_url]\nsecret_key = {SECRET}\n")
        node = await self.startNode("--config", config)
        results = await deferToThread(_signedSession, node.url)
        self.assertEqual(results["grant"]["paths"], ["/v2/queues/shared/messages"])
        self.assertEqual(results["grant"]["project"], "zq")
        self.assertEqual(results["listed"], [{"n": 1}, {"n": 2}])
        self.assertEqual(results["owner"], [{"n": 1}, {"n": 2}])
        self.assertEqual(results["deleteQueue"], 403)
        self.assertEqual(results["otherQueue"], 403)


def _signedSession(url: str) -> dict:
    from zaqarclient.queues import client
    from zaqarclient.transport import errors

    owner = client.Client(
        url,
        version=2,
        conf={"auth_opts": {"backend": "noauth", "options": {"os_project_id": "zq"}}},
    )
    queue = owner.queue("shared", force_create=True)
    grant = queue.signed_url(paths=["messages"], methods=["GET", "POST"])
    options = dict(grant, os_project_id=grant["project"])
    holder = client.Client(
        url,
        version=2,
        conf={"auth_opts": {"backend": "signed-url", "options": options}},
    )
    shared = holder.queue("shared", auto_create=False)
    shared.post([{"body": {"n": 1}}, {"body": {"n": 2}}])
    results: dict = {"grant": grant}
    results["listed"] = [m.body for m in shared.messages(echo=True)]
    results["owner"] = [m.body for m in queue.messages(echo=True)]
    for name, attempt in (
        ("deleteQueue", shared.delete),
        ("otherQueue", lambda: holder.queue("other", auto_create=False).post([{}])),
    ):
        try:
            attempt()
        except errors.TransportError as e:
            results[name] = e.code
        else:
            results[name] = None
    return results
