"""
The C{keystone} auth driver, against a real Keystone (see
L{tests.keystoneserver}), and the API's refusals that do not depend on the
driver.

The driver's clock is a L{Clock} set to the real time, so the cache and the
service token expire when a test says; Keystone's own clock is real, so the
one test of a token that Keystone considers expired waits for it.
"""

import json
import os

from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from marconi.auth.keystone import KeystoneAuth, parseSettings
from marconi.auth.noauth import NoAuth
from marconi.core.errors import Forbidden, IdentityUnavailable, Unauthorized
from marconi.core.interfaces import IAuthDriver
from tests import keystoneserver
from tests.apihelpers import Node
from tests.redisserver import freePort

TTL = 30.0


class SettingsTests(SynchronousTestCase):
    """
    L{parseSettings} reads the C{[auth:keystone]} section.
    """

    def test_defaults(self) -> None:
        """
        A URL and service credentials suffice; the URL gets C{/v3}, the
        cache lasts a minute and the admin role is C{admin}.
        """
        s = parseSettings(
            {
                "url": "http://ks:5000/",
                "username": "u",
                "password": "p",
                "project_name": "s",
            }
        )
        self.assertEqual(s.url, "http://ks:5000/v3")
        self.assertEqual(s.cacheTTL, 60.0)
        self.assertEqual(s.adminRoles, frozenset({"admin"}))
        self.assertEqual(s.allowedRoles, frozenset())

    def test_applicationCredential(self) -> None:
        """
        An application credential replaces the user and password; its id
        without its secret is refused.
        """
        s = parseSettings(
            {
                "url": "https://ks/v3",
                "application_credential_id": "i",
                "application_credential_secret": "x",
                "admin_roles": "admin, operator",
            }
        )
        self.assertEqual(s.applicationCredentialId, "i")
        self.assertEqual(s.adminRoles, frozenset({"admin", "operator"}))
        self.assertRaises(
            ValueError,
            parseSettings,
            {"url": "https://ks/v3", "application_credential_id": "i"},
        )

    def test_refused(self) -> None:
        """
        A missing or non-HTTP URL, missing credentials, an unknown setting
        and a non-positive TTL are refused with a message naming them.
        """
        creds = {"username": "u", "password": "p", "project_name": "s"}
        for bad, word in [
            (creds, "url"),
            ({"url": "ftp://ks", **creds}, "url"),
            ({"url": "http://ks"}, "username"),
            ({"url": "http://ks", "colour": "red", **creds}, "colour"),
            ({"url": "http://ks", "cache_ttl": "0", **creds}, "cache_ttl"),
            ({"url": "http://ks", "cache_ttl": "x", **creds}, "cache_ttl"),
        ]:
            e = self.assertRaises(ValueError, parseSettings, bad)
            self.assertIn(word, str(e))


class KeystoneCase(TestCase):
    """
    Tests that need the shared Keystone.
    """

    timeout = 240

    def setUp(self) -> None:
        try:
            self.keystone = keystoneserver.shared()
        except keystoneserver.Unavailable as e:
            raise SkipTest(f"Keystone cannot run here: {e}") from None

    def driver(self, clock: Clock | None = None, **overrides: str) -> KeystoneAuth:
        settings = parseSettings(
            self.keystone.settings(cache_ttl=str(TTL), **overrides)
        )
        auth = KeystoneAuth(settings, reactor, clock)
        self.addCleanup(auth.close)
        return auth

    def clock(self) -> Clock:
        clock = Clock()
        clock.advance(reactor.seconds())
        return clock


def token(value: str, project: str | None = None) -> dict:
    headers = {b"x-auth-token": value.encode()}
    if project is not None:
        headers[b"x-project-id"] = project.encode()
    return headers


class DriverTests(KeystoneCase):
    """
    L{KeystoneAuth} validates tokens with Keystone and caches them.
    """

    def test_interface(self) -> None:
        """
        The driver provides L{IAuthDriver} and does not trust headers.
        """
        auth = self.driver()
        self.assertTrue(verifyObject(IAuthDriver, auth))
        self.assertFalse(auth.trustsHeaders)
        self.assertTrue(verifyObject(IAuthDriver, NoAuth()))

    async def test_validToken(self) -> None:
        """
        A valid token acts for the project it is scoped to, with or without
        a matching X-Project-ID or URL project.
        """
        auth = self.driver()
        alice, project = self.keystone.token("alice")
        self.assertEqual(await auth.authenticate(token(alice), None), project)
        self.assertEqual(
            await auth.authenticate(token(alice, project), project), project
        )

    async def test_wrongProject(self) -> None:
        """
        X-Project-ID or a URL project other than the token's is 403.
        """
        auth = self.driver()
        alice, _ = self.keystone.token("alice")
        _, other = self.keystone.token("bob")
        with self.assertRaises(Forbidden):
            await auth.authenticate(token(alice, other), None)
        with self.assertRaises(Forbidden):
            await auth.authenticate(token(alice), other)

    async def test_missingOrBadToken(self) -> None:
        """
        No token, a malformed one and one Keystone does not know are 401
        with a C{WWW-Authenticate} challenge naming Keystone.
        """
        auth = self.driver()
        for headers in (
            {},
            token("not a token!"),
            token("gAAAAABnotreal"),
            token("x" * 9000),
        ):
            with self.assertRaises(Unauthorized) as e:
                await auth.authenticate(headers, None)
            self.assertEqual(
                e.exception.challenge, f'Keystone uri="{self.keystone.url}"'
            )

    async def test_revokedAfterCacheTTL(self) -> None:
        """
        A revoked token keeps working from the cache until its entry is
        C{cache_ttl} old, then is refused.
        """
        clock = self.clock()
        auth = self.driver(clock)
        alice, project = self.keystone.token("alice")
        self.assertEqual(await auth.authenticate(token(alice), None), project)
        self.keystone.revoke(alice)
        clock.advance(TTL - 1)
        self.assertEqual(await auth.authenticate(token(alice), None), project)
        clock.advance(2)
        with self.assertRaises(Unauthorized):
            await auth.authenticate(token(alice), None)

    async def test_expiredToken(self) -> None:
        """
        A token is cached no longer than it lives, and once Keystone
        considers it expired it is refused.
        """
        short = self.keystone.shortLived(4)
        self.addCleanup(short.stop)
        alice, _ = keystoneserver.passwordToken(
            short.url, "alice", keystoneserver.PASSWORD, "tenant1"
        )
        short.stop()
        clock = self.clock()
        auth = self.driver(clock)
        await auth.authenticate(token(alice), None)
        ((identity, until),) = auth._cache.values()
        self.assertLessEqual(until, identity.expires)
        self.assertLess(identity.expires, reactor.seconds() + 5)
        # Keystone's clock is the real one: wait for the token to expire.
        await deferLater(
            reactor, identity.expires - reactor.seconds() + 0.5, lambda: None
        )
        clock.advance(identity.expires - clock.seconds() + 0.1)
        with self.assertRaises(Unauthorized):
            await auth.authenticate(token(alice), None)

    async def test_keystoneDown(self) -> None:
        """
        When Keystone cannot be reached, an uncached token is refused with
        L{IdentityUnavailable} (a 503), never let through.
        """
        port = freePort()
        auth = self.driver(url=f"http://127.0.0.1:{port}/v3")
        alice, _ = self.keystone.token("alice")
        with self.assertRaises(IdentityUnavailable):
            await auth.authenticate(token(alice), None)
        self.assertFalse(await auth.isAdmin(token(alice)))

    async def test_wrongServiceCredentials(self) -> None:
        """
        A service user Keystone refuses makes validation unavailable (503),
        not the caller's token invalid.
        """
        auth = self.driver(password="wrong")
        alice, _ = self.keystone.token("alice")
        with self.assertRaises(IdentityUnavailable):
            await auth.authenticate(token(alice), None)

    async def test_serviceTokenRenewed(self) -> None:
        """
        The service token is replaced once the clock reaches its renewal
        time, before it expires.
        """
        clock = self.clock()
        auth = self.driver(clock)
        alice, project = self.keystone.token("alice")
        await auth.authenticate(token(alice), None)
        first, renewAt = auth._service
        clock.advance(renewAt - clock.seconds() - 1)
        self.assertEqual(await auth.serviceToken(), first)
        clock.advance(2)
        self.assertNotEqual(await auth.serviceToken(), first)

    async def test_serviceTokenReacquiredOn401(self) -> None:
        """
        When Keystone answers 401 to the service token (revoked), the
        driver acquires another and the caller's validation succeeds.
        """
        auth = self.driver()
        first = (await auth.serviceToken()).decode()
        self.keystone.revoke(first)
        alice, project = self.keystone.token("alice")
        self.assertEqual(await auth.authenticate(token(alice), None), project)
        self.assertNotEqual(auth._service[0].decode(), first)

    async def test_concurrentValidationsShared(self) -> None:
        """
        Requests with the same uncached token wait for one validation.
        """
        auth = self.driver()
        calls = []
        validate = auth._validate

        async def counted(value: bytes):
            calls.append(value)
            return await validate(value)

        auth._validate = counted  # type: ignore[method-assign]
        alice, project = self.keystone.token("alice")
        first = auth.authenticate(token(alice), None)
        second = auth.authenticate(token(alice), None)
        self.assertEqual([await first, await second], [project, project])
        self.assertEqual(len(calls), 1)

    async def test_cacheBounded(self) -> None:
        """
        The cache holds at most C{cache_size} tokens, dropping the least
        recently used.
        """
        auth = self.driver(cache_size="2")
        for user in ("alice", "bob", "oper"):
            await auth.authenticate(token(self.keystone.token(user)[0]), None)
        self.assertEqual(len(auth._cache), 2)

    async def test_rolesAndAdmin(self) -> None:
        """
        C{allowed_roles} refuses tokens without one of them (403); the
        admin role makes an operator, nothing else does.
        """
        auth = self.driver(allowed_roles="admin")
        alice, _ = self.keystone.token("alice")
        oper, project = self.keystone.token("oper")
        with self.assertRaises(Forbidden):
            await auth.authenticate(token(alice), None)
        self.assertEqual(await auth.authenticate(token(oper), None), project)
        self.assertTrue(await auth.isAdmin(token(oper)))
        self.assertFalse(await auth.isAdmin(token(alice)))
        self.assertFalse(await auth.isAdmin({}))
        self.assertFalse(await auth.isAdmin(token("gAAAAAgarbage")))


class APITests(KeystoneCase):
    """
    A node with Keystone auth, over HTTP.
    """

    def node(self, **overrides: str) -> Node:
        return Node(self, auth=self.driver(**overrides))

    async def test_unauthorized(self) -> None:
        """
        A request without a token is 401 with a JSON error and a
        C{WWW-Authenticate} hint, and creates nothing.
        """
        node = self.node()
        response = await node.request("PUT", "/v2/queues/q", project=None)
        self.assertEqual(response.code, 401)
        self.assertEqual(response.json["title"], "Unauthorized")
        self.assertEqual(
            response.header("www-authenticate"), f'Keystone uri="{self.keystone.url}"'
        )

    async def test_forgedHeaders(self) -> None:
        """
        Identity headers a client writes are not believed: X-Roles and
        X-Identity-Status change nothing, another project's X-Project-ID or
        URL is 403, and the token's project is the one served.
        """
        node = self.node()
        alice, project = self.keystone.token("alice")
        bob, other = self.keystone.token("bob")
        forged = {
            "X-Auth-Token": alice,
            "X-Roles": "admin",
            "X-Identity-Status": "Confirmed",
            "X-Tenant-Id": other,
        }
        for path, sent in [
            ("/v2/queues/q", other),
            (f"/v2/projects/{other}/queues/q", None),
        ]:
            response = await node.request("PUT", path, project=sent, headers=forged)
            self.assertEqual(response.code, 403, response.body)
        response = await node.request(
            "PUT", "/v2/queues/q", project=None, headers=forged
        )
        self.assertEqual(response.code, 201)
        listed = await node.request("GET", "/v2/queues", project=None, headers=forged)
        self.assertEqual([q["name"] for q in listed.json["queues"]], ["q"])
        listed = await node.request(
            "GET", "/v2/queues", project=None, headers={"X-Auth-Token": bob}
        )
        self.assertEqual(listed.json["queues"], [])
        health = await node.request("GET", "/v2/health", project=None, headers=forged)
        self.assertEqual(health.json, {"storage_reachable": True})

    async def test_adminHealth(self) -> None:
        """
        The detailed health report is for the admin role; callers without
        it, or without a token, get liveness only.
        """
        node = self.node()
        oper, _ = self.keystone.token("oper")
        detailed = await node.request(
            "GET", "/v2/health", project=None, headers={"X-Auth-Token": oper}
        )
        self.assertEqual(detailed.code, 200)
        self.assertIn("operation_status", detailed.json)
        anonymous = await node.request("GET", "/v2/health", project=None)
        self.assertEqual(
            (anonymous.code, anonymous.json), (200, {"storage_reachable": True})
        )

    async def test_consoleNodeForAdmins(self) -> None:
        """
        The console's node document (forwarding counts, a cluster-wide
        fact) answers the admin role only: a project member's valid token
        gets 403, an operator's 200.
        """
        import treq
        from twisted.web.server import Site

        from marconi.console.activity import Activity
        from marconi.console.web import Console
        from marconi.core.limits import Limits

        console = Console(Activity(Clock()), self.driver(), Limits())
        port = reactor.listenTCP(0, Site(console.resource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        http = treq
        url = f"http://127.0.0.1:{port.getHost().port}/console/api/node"
        alice, _ = self.keystone.token("alice")
        oper, _ = self.keystone.token("oper")
        member = await http.get(url, headers={"X-Auth-Token": alice}, persistent=False)
        self.assertEqual(member.code, 403)
        self.assertEqual(json.loads(await member.content())["title"], "Forbidden")
        admin = await http.get(url, headers={"X-Auth-Token": oper}, persistent=False)
        self.assertEqual(admin.code, 200)
        self.assertIsInstance(json.loads(await admin.content()), dict)

    async def test_keystoneDown(self) -> None:
        """
        With Keystone unreachable the API answers 503 with a JSON error.
        """
        node = self.node(url=f"http://127.0.0.1:{freePort()}/v3")
        alice, _ = self.keystone.token("alice")
        response = await node.request(
            "GET", "/v2/queues", project=None, headers={"X-Auth-Token": alice}
        )
        self.assertEqual(response.code, 503)
        self.assertIn("identity service", response.json["description"])

    async def test_openstackCLI(self) -> None:
        """
        The C{openstack messaging} CLI (python-openstackclient with
        python-zaqarclient), logged in to Keystone as a member, creates,
        lists, posts to, claims from and deletes a queue.
        """
        node = self.node()
        self.keystone.registerMessaging(node.url)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/"),
            "PYTHONWARNINGS": "ignore",
            "OS_AUTH_URL": self.keystone.url,
            "OS_USERNAME": "alice",
            "OS_PASSWORD": keystoneserver.PASSWORD,
            "OS_PROJECT_NAME": "tenant1",
            "OS_USER_DOMAIN_ID": "default",
            "OS_PROJECT_DOMAIN_ID": "default",
            "OS_IDENTITY_API_VERSION": "3",
            "OS_INTERFACE": "public",
            "OS_MESSAGE_CLIENT_ID": "7f2c1a54-8a6b-4d3e-9c1f-2b5e6d7a8c90",
        }

        async def cli(*args: str) -> str:
            out, err, code = await getProcessOutputAndValue(
                self.keystone.bin("openstack"), ["messaging", *args], env=env
            )
            self.assertEqual(code, 0, (args, out, err))
            return out.decode()

        await cli("queue", "create", "cliq")
        listed = json.loads(await cli("queue", "list", "-f", "json"))
        self.assertIn("cliq", [q["Name"] for q in listed])
        await cli(
            "message", "post", "cliq", json.dumps([{"body": {"n": 1}, "ttl": 300}])
        )
        claimed = json.loads(
            await cli("claim", "create", "cliq", "--ttl", "60", "-f", "json")
        )
        self.assertEqual(len(claimed), 1, claimed)
        self.assertIn("'n': 1", str(claimed[0]), claimed)
        await cli("queue", "delete", "cliq")
        listed = json.loads(await cli("queue", "list", "-f", "json"))
        self.assertNotIn("cliq", [q["Name"] for q in listed])


class DuplicateHeaderTests(TestCase):
    """
    An identity header sent twice is refused, whatever the driver.
    """

    async def test_twoProjectHeaders(self) -> None:
        """
        Two X-Project-ID headers are 400 (never the first one picked), and
        nothing is created.
        """
        node = Node(self)
        response = await node.request(
            "PUT", "/v2/queues/q", project=None, headers={"X-Project-ID": ["a", "b"]}
        )
        self.assertEqual(response.code, 400)
        self.assertIn("X-Project-ID", response.json["description"])
        for project in ("a", "b"):
            listed = await node.request("GET", "/v2/queues", project=project)
            self.assertEqual(listed.json["queues"], [])
