"""
C{POST /v2/queues/{q}/purge}, and the pools and flavors Marconi does not
have, through the real site on a loopback socket.
"""

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import TestCase

from tests.api.test_api import APITestCase
from tests.apihelpers import Node


class PurgeTests(APITestCase):
    async def messages(self, queue: str = "q", project: str = "p") -> list:
        r = await self.node.request(
            "GET",
            f"/v2/queues/{queue}/messages?include_claimed=true&echo=true",
            project=project,
        )
        self.assertEqual(r.code, 200, r.body)
        return [m["body"] for m in r.json["messages"]]

    async def test_purgeMessagesKeepsQueue(self) -> None:
        """
        Purging messages removes every message, claimed or not, and the
        claims, and answers 204 with no body; the queue and its metadata
        stay, and new messages can be posted and claimed.
        """
        r = await self.node.request("PUT", "/v2/queues/q", {"color": "red"})
        self.assertEqual(r.code, 201)
        await self.node.post("q", {"body": 1, "ttl": 300}, {"body": 2, "ttl": 300})
        claim = await self.node.request("POST", "/v2/queues/q/claims?limit=1", {})
        self.assertEqual(claim.code, 201)
        claimHref = claim.header("location")
        r = await self.node.request(
            "POST", "/v2/queues/q/purge", {"resource_types": ["messages"]}
        )
        self.assertEqual((r.code, r.body), (204, b""))
        self.assertEqual(await self.messages(), [])
        r = await self.node.request("GET", claimHref)
        self.assertEqual(r.code, 404)
        r = await self.node.request("GET", "/v2/queues/q")
        self.assertEqual(r.json["color"], "red")
        r = await self.node.request("GET", "/v2/queues/q/stats")
        self.assertEqual(r.json["messages"]["total"], 0)
        await self.node.post("q", {"body": 3, "ttl": 300})
        self.assertEqual(await self.messages(), [3])
        r = await self.node.request("POST", "/v2/queues/q/claims", {})
        self.assertEqual(r.code, 201)

    async def test_noBodyPurgesEverything(self) -> None:
        """
        With no body, Zaqar purges both messages and subscriptions: the
        messages go and the subscription hook is called.
        """
        called = []
        self.node.bus.onPurge("subscriptions", lambda p, q: called.append((p, q)))
        await self.node.post("q", {"body": 1, "ttl": 300})
        r = await self.node.request("POST", "/v2/queues/q/purge")
        self.assertEqual(r.code, 204, r.body)
        self.assertEqual(await self.messages(), [])
        self.assertEqual(called, [("p", "q")])

    async def test_subscriptionsOnly(self) -> None:
        """
        Purging only subscriptions keeps the messages and waits for the
        hooks (which may return a Deferred); with no hook it does nothing
        and answers 204.
        """
        await self.node.post("q", {"body": 1, "ttl": 300})
        body = {"resource_types": ["subscriptions"]}
        r = await self.node.request("POST", "/v2/queues/q/purge", body)
        self.assertEqual(r.code, 204)
        waiting: Deferred = Deferred()
        self.node.bus.onPurge("subscriptions", lambda p, q: waiting)
        answer = Deferred.fromCoroutine(
            self.node.request("POST", "/v2/queues/q/purge", body)
        )
        self.assertNoResult(answer)
        waiting.callback(None)
        self.assertEqual((await answer).code, 204)
        self.assertEqual(await self.messages(), [1])

    async def test_missingQueue(self) -> None:
        """
        Purging a queue that does not exist answers 204 and does not
        create it.
        """
        r = await self.node.request("POST", "/v2/queues/nothing/purge")
        self.assertEqual(r.code, 204)
        r = await self.node.request("GET", "/v2/queues")
        self.assertEqual(r.json["queues"], [])

    async def test_badBodies(self) -> None:
        """
        A body that is not an object with a list of known resource types
        is refused with 400 and purges nothing.
        """
        await self.node.post("q", {"body": 1, "ttl": 300})
        for raw in (
            b"{}",
            b"[]",
            b'"messages"',
            b'{"resource_types": "messages"}',
            b'{"resource_types": ["messages", "claims"]}',
            b'{"resource_types": [{"a": 1}]}',
            b'{"resource_types": ["messages"',
            b"null",
        ):
            r = await self.node.request("POST", "/v2/queues/q/purge", raw=raw)
            self.assertError(r, 400)
        r = await self.node.request(
            "POST", "/v2/queues/q/purge", {"resource_types": ["messages"]}, project=""
        )
        self.assertError(r, 400)
        r = await self.node.request("POST", "/v2/queues/bad!name/purge")
        self.assertEqual(r.code, 400)
        self.assertEqual(await self.messages(), [1])

    async def test_emptyList(self) -> None:
        """
        An empty list of resource types purges nothing, as in Zaqar.
        """
        await self.node.post("q", {"body": 1, "ttl": 300})
        r = await self.node.request(
            "POST", "/v2/queues/q/purge", {"resource_types": []}
        )
        self.assertEqual(r.code, 204)
        self.assertEqual(await self.messages(), [1])

    async def test_isolation(self) -> None:
        """
        A purge removes only the messages of the project's own queue: the
        same queue name in another project, and the project's other
        queues, keep theirs, by the header or the project in the path.
        """
        await self.node.post("q", {"body": "mine", "ttl": 300})
        await self.node.post("other", {"body": "kept", "ttl": 300})
        r = await self.node.request(
            "POST",
            "/v2/queues/q/messages",
            {"messages": [{"body": "theirs", "ttl": 300}]},
            project="p2",
        )
        self.assertEqual(r.code, 201)
        r = await self.node.request("POST", "/v2/queues/q/purge", project="p2")
        self.assertEqual(r.code, 204)
        self.assertEqual(await self.messages(project="p2"), [])
        self.assertEqual(await self.messages(), ["mine"])
        r = await self.node.request(
            "POST", "/v2/projects/p/queues/q/purge", project=None
        )
        self.assertEqual(r.code, 204)
        self.assertEqual(await self.messages(), [])
        self.assertEqual(await self.messages("other"), ["kept"])

    async def test_audited(self) -> None:
        """
        A purge is recorded in the audit river as a deletion, with how
        many messages it removed.
        """
        await self.node.post("q", {"body": 1, "ttl": 300}, {"body": 2, "ttl": 300})
        await self.node.request("POST", "/v2/queues/q/purge")
        await self.node.bus.audit.flush()
        r = await self.node.request("GET", "/v2/audit?action=deleted")
        self.assertEqual(r.code, 200, r.body)
        [event] = r.json["events"]
        self.assertEqual((event["queue"], event["count"]), ("q", 2))
        self.assertTrue(event["purged"])

    async def test_notInV11(self) -> None:
        """
        Zaqar's v1.1 had no purge: the path is not routed there.
        """
        await self.node.post("q", {"body": 1, "ttl": 300})
        r = await self.node.request("POST", "/v1.1/queues/q/purge")
        self.assertEqual(r.code, 404)
        self.assertEqual(await self.messages(), [1])

    def test_unknownHook(self) -> None:
        """
        Only the purgeable resource types take hooks.
        """
        with self.assertRaises(ValueError):
            self.node.bus.onPurge("claims", lambda p, q: succeed(None))


class ShardingTests(TestCase):
    """
    Zaqar's pools and flavors are answered with 404 and a description
    naming what Marconi does instead.
    """

    async def test_poolsAndFlavors(self) -> None:
        """
        Every method on pools and flavors, listed or by name, under both
        versions, answers 404 with a JSON error naming the ring.
        """
        node = Node(self)
        for version in ("v2", "v1.1"):
            for path in ("pools", "pools/one", "flavors", "flavors/one"):
                for method in ("GET", "PUT", "PATCH", "DELETE"):
                    r = await node.request(method, f"/{version}/{path}", {"weight": 1})
                    self.assertEqual(r.code, 404, (version, path, method))
                    self.assertIn("ring", r.json["description"])
                    self.assertEqual(r.json["title"], "Not supported")
