"""
The HTTP API in memory: treq's L{StubTreq} over L{MarconiAPI}'s resource,
the memory store, and a L{Clock} for the domain's time.  Every request is
answered before the call returns, so these tests turn the clock to exact
expiry boundaries and check edge cases cheaply; L{tests.api.test_api} covers the
same API end to end over a real socket.
"""

from typing import Any, Optional
from urllib.parse import parse_qs, urlencode, urlsplit

from treq.testing import StubTreq
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from marconi.api.app import MarconiAPI
from marconi.auth.noauth import NoAuth
from marconi.core.errors import Forbidden, Unauthorized
from marconi.core.health import HealthCheck
from marconi.core.interfaces import IAuthDriver, IRouter
from marconi.core.limits import Limits
from marconi.core.messaging import PATCH_MEDIA_TYPE, Messaging
from marconi.core.routing import LocalRouter
from marconi.storage.memory.store import MemoryStore
from tests.apihelpers import CLIENT, START, Response, requestParts

PATCH = {"Content-Type": PATCH_MEDIA_TYPE}


class InMemoryNode:
    """
    A node without sockets or threads: the API over a memory store, with a
    L{Clock}, reached through L{StubTreq}.
    """

    def __init__(
        self,
        testCase: SynchronousTestCase,
        limits: Optional[Limits] = None,
        auth: Any = None,
    ) -> None:
        self.testCase = testCase
        self.clock = Clock()
        self.clock.advance(START)
        self.store = MemoryStore()
        self.store.startService()
        self.bus = Messaging(self.store, self.clock, limits or Limits())
        self.api = MarconiAPI(
            self.bus, auth or NoAuth(), HealthCheck(self.store, self.clock)
        )
        self.stub = StubTreq(self.api.resource())

    def request(
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
        d = self.stub.request(
            method, "http://marconi.test" + path, data=raw, headers=sent
        )
        self.stub.flush()
        response = self.testCase.successResultOf(d)
        content = self.testCase.successResultOf(self.stub.content(response))
        return Response(response.code, response.headers, content)

    def post(self, queue: str, *messages: Any, **kwargs: Any) -> list:
        path = kwargs.pop("path", f"/v2/queues/{queue}/messages")
        r = self.request("POST", path, {"messages": list(messages)}, **kwargs)
        self.testCase.assertEqual(r.code, 201, r.body)
        return [href.rsplit("/", 1)[1] for href in r.json["resources"]]

    def claim(
        self, queue: str, query: str = "", project: str = "p", **options: Any
    ) -> Response:
        """
        Claim from C{queue}; C{options} (ttl, grace) make the body.
        """
        path = f"/v2/queues/{queue}/claims{query}"
        return self.request("POST", path, options, project=project)

    def bodies(self, path: str, **kwargs: Any) -> list:
        r = self.request("GET", path, **kwargs)
        self.testCase.assertEqual(r.code, 200, r.body)
        return [m["body"] for m in r.json["messages"]]

    def stats(self, queue: str) -> dict:
        return self.request("GET", f"/v2/queues/{queue}/stats").json["messages"]


OTHER_CLIENT = "9a0b8c7d-2b9e-11e3-b191-71861300734c"


def nextLink(response: Response) -> Optional[str]:
    links = [link["href"] for link in response.json["links"] if link["rel"] == "next"]
    return links[0] if links else None


class APIUnitTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.node = InMemoryNode(self)

    def assertError(self, response: Response, code: int, title: str = "") -> None:
        """
        The response is a JSON error with exactly a title and a description
        (and the given title, when there is one).
        """
        self.assertEqual(response.code, code, response.body)
        self.assertTrue(response.header("content-type").startswith("application/json"))
        self.assertEqual(sorted(response.json), ["description", "title"])
        self.assertTrue(response.json["description"])
        if title:
            self.assertEqual(response.json["title"], title)


class QueryParameterTests(APIUnitTestCase):
    def test_nonASCIIDigits(self) -> None:
        """
        Integer parameters and markers take ASCII digits only: characters
        that Python calls digits but C{int} refuses (superscripts), other
        scripts' digits and doubled signs are 400, never 500.
        """
        for path in (
            "/v2/queues?limit=%C2%B2",
            "/v2/queues?limit=--5",
            "/v2/queues?limit=%D9%A3",
            "/v2/queues/q/messages?limit=%C2%B2",
            "/v2/queues/q/messages?marker=%C2%B2",
            "/v2/queues/q/messages?marker=1%C2%B9",
            "/v2/queues/q/messages?marker=%D9%A3",
        ):
            self.assertError(self.node.request("GET", path), 400)
        r = self.node.request("DELETE", "/v2/queues/q/messages?pop=%C2%B2")
        self.assertError(r, 400)
        r = self.node.request("POST", "/v2/queues/q/claims?limit=%C2%B2", {})
        self.assertError(r, 400)

    def test_booleans(self) -> None:
        """
        Boolean parameters take the words of L{parseBoolean} in any case;
        anything else is 400 saying the parameter must be true or false.
        """
        self.node.request("PUT", "/v2/queues/q", {"m": 1})
        for word in ("true", "On", " YES", "1"):
            r = self.node.request("GET", f"/v2/queues?detailed={word}")
            self.assertEqual(r.json["queues"][0]["metadata"], {"m": 1}, word)
        for word in ("false", "off", "No", "0"):
            r = self.node.request("GET", f"/v2/queues?detailed={word}")
            self.assertNotIn("metadata", r.json["queues"][0], word)
        r = self.node.request("GET", "/v2/queues?detailed=maybe")
        self.assertError(r, 400)
        self.assertEqual(r.json["description"], "detailed must be true or false.")


class LocalRouterTests(SynchronousTestCase):
    def test_interface(self) -> None:
        """
        L{LocalRouter} provides L{IRouter}: it takes nothing as forwarded,
        routes every queue here, and lists this node's own queues.
        """
        router = LocalRouter()
        self.assertTrue(verifyObject(IRouter, router))
        self.assertIsNone(router.verify(None))
        self.assertIsNone(router.route("p", "q"))

        async def local():
            return ["q"], 1

        listed = router.listQueues("p", None, 10, False, True, local)
        self.assertEqual(self.successResultOf(listed), (["q"], 1))


class ExpiryTests(APIUnitTestCase):
    def test_messageExpiresAtItsTTL(self) -> None:
        """
        A message is readable one second before its TTL ends and gone, for
        every read, the moment it ends; its age counts the seconds.
        """
        [mid] = self.node.post("q", {"body": 1, "ttl": 60})
        self.node.clock.advance(59)
        r = self.node.request("GET", f"/v2/queues/q/messages/{mid}")
        self.assertEqual((r.json["age"], r.json["ttl"]), (59, 60))
        self.node.clock.advance(1)
        self.assertError(self.node.request("GET", f"/v2/queues/q/messages/{mid}"), 404)
        self.assertError(
            self.node.request("GET", f"/v2/queues/q/messages?ids={mid}"), 404
        )
        self.assertEqual(self.node.bodies("/v2/queues/q/messages?echo=true"), [])
        self.assertEqual(self.node.stats("q")["total"], 0)
        self.assertEqual(self.node.claim("q").code, 204)

    def test_delayEndsExactly(self) -> None:
        """
        A delayed message is counted as delayed, listed only with
        C{include_delayed}, and becomes free at exactly its delay.
        """
        self.node.post("q", {"body": "later", "delay": 30})
        self.node.clock.advance(29)
        self.assertEqual(self.node.stats("q")["delayed"], 1)
        self.assertEqual(self.node.bodies("/v2/queues/q/messages?echo=true"), [])
        path = "/v2/queues/q/messages?echo=true&include_delayed=true"
        self.assertEqual(self.node.bodies(path), ["later"])
        self.assertEqual(
            self.node.request("DELETE", "/v2/queues/q/messages?pop=1").json,
            {"messages": []},
        )
        self.node.clock.advance(1)
        self.assertEqual(self.node.stats("q")["free"], 1)
        self.assertEqual(self.node.claim("q").code, 201)

    def test_queueDefaultDelayAndOwnDelayZero(self) -> None:
        """
        A message's own C{delay: 0} overrides the queue's default delay: it
        is visible at once, while a message without a delay waits the
        default.
        """
        self.node.request("PUT", "/v2/queues/q", {"_default_message_delay": 30})
        self.node.post("q", {"body": "now", "delay": 0}, {"body": "later"})
        self.assertEqual(self.node.bodies("/v2/queues/q/messages?echo=true"), ["now"])
        self.node.clock.advance(30)
        self.assertEqual(
            self.node.bodies("/v2/queues/q/messages?echo=true"), ["now", "later"]
        )


class ClaimTimeTests(APIUnitTestCase):
    def test_claimExpiresExactly(self) -> None:
        """
        A claim holds its messages until exactly its TTL: one second before,
        they cannot be claimed, listed without C{include_claimed} or
        deleted without it; at the TTL they can, and the claim is gone.
        """
        [mid] = self.node.post("q", {"body": 1})
        location = self.node.claim("q", ttl=60).header("location")
        self.node.clock.advance(59)
        self.assertEqual(self.node.claim("q").code, 204)
        self.assertEqual(self.node.bodies("/v2/queues/q/messages?echo=true"), [])
        self.assertEqual(self.node.stats("q")["claimed"], 1)
        self.assertError(
            self.node.request("DELETE", f"/v2/queues/q/messages/{mid}"), 403
        )
        self.assertEqual(self.node.request("GET", location).json["age"], 59)
        self.node.clock.advance(1)
        self.assertError(self.node.request("GET", location), 404)
        self.assertEqual(self.node.bodies("/v2/queues/q/messages?echo=true"), [1])
        self.assertEqual(self.node.claim("q").code, 201)

    def test_renewal(self) -> None:
        """
        Renewing restarts the claim's age and TTL, so it outlives its first
        TTL; renewing after it expired is 404.
        """
        self.node.post("q", {"body": 1})
        location = self.node.claim("q", ttl=60).header("location")
        self.node.clock.advance(50)
        r = self.node.request("PATCH", location, {"ttl": 60, "grace": 0})
        self.assertEqual(r.code, 204)
        self.node.clock.advance(59)
        r = self.node.request("GET", location)
        self.assertEqual((r.json["age"], r.json["ttl"], r.json["grace"]), (59, 60, 0))
        self.assertEqual(self.node.claim("q").code, 204)
        self.node.clock.advance(1)
        self.assertError(self.node.request("PATCH", location, {"ttl": 60}), 404)
        self.assertEqual(self.node.claim("q").code, 201)

    def test_renewalBounds(self) -> None:
        """
        A renewal checks TTL and grace like a new claim: out of range or
        not a number is 400 and the claim keeps its TTL.
        """
        self.node.post("q", {"body": 1})
        location = self.node.claim("q", ttl=60).header("location")
        for body in ({"ttl": 59}, {"ttl": 43201}, {"grace": -1}, {"ttl": 1.5}, [60]):
            self.assertError(self.node.request("PATCH", location, body), 400)
        self.assertEqual(self.node.request("GET", location).json["ttl"], 60)

    def test_graceZero(self) -> None:
        """
        With grace 0 a claimed message whose own TTL is shorter lives until
        exactly the claim's end, and then is gone rather than freed.
        """
        [mid] = self.node.post("q", {"body": 1, "ttl": 60})
        r = self.node.claim("q", ttl=120, grace=0)
        self.assertEqual(r.json["messages"][0]["ttl"], 60)
        self.node.clock.advance(119)
        r = self.node.request("GET", f"/v2/queues/q/messages/{mid}")
        self.assertEqual((r.code, r.json["age"]), (200, 119))
        self.node.clock.advance(1)
        self.assertError(self.node.request("GET", f"/v2/queues/q/messages/{mid}"), 404)
        self.assertEqual(self.node.claim("q").code, 204)

    def test_graceOutlivesClaim(self) -> None:
        """
        With a grace period a message outlives its claim by the grace and
        can be claimed again in that time; the new claim keeps it alive to
        that claim's end.
        """
        self.node.post("q", {"body": 1, "ttl": 60})
        self.node.claim("q", ttl=60, grace=30)
        self.node.clock.advance(60)
        again = self.node.claim("q", ttl=60, grace=0)
        self.assertEqual(again.code, 201)
        self.node.clock.advance(59)
        r = self.node.request("GET", again.header("location"))
        self.assertEqual(len(r.json["messages"]), 1)
        self.node.clock.advance(1)
        self.assertEqual(self.node.stats("q")["total"], 0)

    def test_deleteWithExpiredClaim(self) -> None:
        """
        Deleting with a claim that has expired is 400 titled as Zaqar's, and the message stays; with a claim that holds
        another message it is 400 as well.
        """
        ids = self.node.post("q", {"body": 1}, {"body": 2})
        first = self.node.claim("q", "?limit=1", ttl=60)
        href = first.json["messages"][0]["href"]
        self.node.clock.advance(60)
        self.assertError(self.node.request("DELETE", href), 400, "Unable to delete")
        cid = (
            self.node.claim("q", "?limit=1", ttl=60).header("location").rsplit("/")[-1]
        )
        r = self.node.request(
            "DELETE", f"/v2/queues/q/messages/{ids[1]}?claim_id={cid}"
        )
        self.assertError(r, 400, "Unable to delete")
        self.assertEqual(self.node.stats("q")["total"], 2)

    def test_claimOfDelayedAndTagged(self) -> None:
        """
        A claim with a tag filter skips delayed messages and messages
        without the tag, and takes the delayed one once its delay ends.
        """
        self.node.post(
            "q",
            {"body": "late", "tags": ["x"], "delay": 10},
            {"body": "untagged"},
            {"body": "tagged", "tags": ["x"]},
        )
        r = self.node.claim("q", "?tags=x")
        self.assertEqual([m["body"] for m in r.json["messages"]], ["tagged"])
        self.node.clock.advance(10)
        r = self.node.claim("q", "?tags=x")
        self.assertEqual([m["body"] for m in r.json["messages"]], ["late"])
        self.assertEqual(self.node.claim("q", "?tags=x").code, 204)


class DeadLetterTests(APIUnitTestCase):
    def setUp(self) -> None:
        super().setUp()
        meta = {"_max_claim_count": 2, "_dead_letter_queue": "dead"}
        self.node.request("PUT", "/v2/queues/q", meta)

    def test_movedAfterMaxClaims(self) -> None:
        """
        A message is claimed C{_max_claim_count} times; the next claim moves
        it to the dead letter queue, keeping its own TTL when the queue sets
        no dead letter TTL, and it can be popped there with its claim count.
        """
        [mid] = self.node.post("q", {"body": "poison", "ttl": 600})
        for _ in range(2):
            self.assertEqual(self.node.claim("q", ttl=60).code, 201)
            self.node.clock.advance(60)
        self.assertEqual(self.node.claim("q", ttl=60).code, 204)
        self.assertEqual(self.node.stats("q")["total"], 0)
        r = self.node.request("GET", f"/v2/queues/dead/messages/{mid}")
        self.assertEqual((r.json["ttl"], r.json["age"]), (600, 120))
        r = self.node.request("DELETE", "/v2/queues/dead/messages?pop=1")
        [popped] = r.json["messages"]
        self.assertEqual((popped["id"], popped["claim_count"]), (mid, 2))

    def test_deadLetterTTL(self) -> None:
        """
        With C{_dead_letter_queue_messages_ttl} the moved message lives that
        long from the move, not from its post.
        """
        ops = [
            {
                "op": "add",
                "path": "/metadata/_dead_letter_queue_messages_ttl",
                "value": 100,
            }
        ]
        r = self.node.request("PATCH", "/v2/queues/q", ops, headers=PATCH)
        self.assertEqual(r.code, 200, r.body)
        [mid] = self.node.post("q", {"body": "poison", "ttl": 3600})
        for _ in range(3):
            self.node.claim("q", ttl=60)
            self.node.clock.advance(60)
        self.node.clock.advance(-60 + 99)
        self.assertEqual(self.node.stats("dead")["total"], 1)
        self.node.clock.advance(1)
        self.assertEqual(self.node.stats("dead")["total"], 0)
        self.assertError(
            self.node.request("GET", f"/v2/queues/dead/messages/{mid}"), 404
        )

    def test_onlyOverusedMessagesMove(self) -> None:
        """
        A claim moves the messages that reached the maximum and claims the
        others in the same request.
        """
        self.node.post("q", {"body": "old"})
        for _ in range(2):
            self.node.claim("q", ttl=60)
            self.node.clock.advance(60)
        self.node.post("q", {"body": "new"})
        r = self.node.claim("q", ttl=60)
        self.assertEqual([m["body"] for m in r.json["messages"]], ["new"])
        self.assertEqual(
            self.node.bodies("/v2/queues/dead/messages?echo=true"), ["old"]
        )


class PagingTests(APIUnitTestCase):
    def test_messageLimitBounds(self) -> None:
        """
        A listing takes C{limit} 1 and 20 and refuses 0 and 21; every
        non-empty page has a next link (a short one too: its marker is where
        a consumer polls from), an empty one has none.
        """
        self.node.post("q", *({"body": i} for i in range(20)))
        r = self.node.request("GET", "/v2/queues/q/messages?echo=true&limit=1")
        self.assertEqual([m["body"] for m in r.json["messages"]], [0])
        self.assertIsNotNone(nextLink(r))
        r = self.node.request("GET", "/v2/queues/q/messages?echo=true&limit=20")
        self.assertEqual(len(r.json["messages"]), 20)
        self.assertIsNotNone(nextLink(r))
        r = self.node.request("GET", nextLink(r))
        self.assertEqual((r.json["messages"], nextLink(r)), ([], None))
        r = self.node.request(
            "GET", "/v2/queues/q/messages?echo=true&limit=19&marker=0"
        )
        self.assertEqual(len(r.json["messages"]), 19)
        r = self.node.request("GET", nextLink(r))
        self.assertEqual(len(r.json["messages"]), 1)
        self.assertIn("marker=", nextLink(r))
        r = self.node.request("GET", nextLink(r))
        self.assertEqual((r.json["messages"], nextLink(r)), ([], None))
        for limit in ("0", "21"):
            r = self.node.request("GET", f"/v2/queues/q/messages?limit={limit}")
            self.assertError(r, 400)

    def test_defaultPageSize(self) -> None:
        """
        Without C{limit} a page holds 10 messages, and its next link names
        that size.
        """
        self.node.post("q", *({"body": i} for i in range(11)))
        r = self.node.request("GET", "/v2/queues/q/messages?echo=true")
        self.assertEqual(len(r.json["messages"]), 10)
        self.assertIn("limit=10", nextLink(r))
        self.assertEqual(self.node.bodies(nextLink(r)), [10])

    def test_nextLinkExact(self) -> None:
        """
        The next link of a listing is the queue's messages href and its
        query in the order and the escaping of L{urlencode}: the marker,
        the page size, the flags given, and the tag filter as sent.
        """
        tag = "a&b=c+%é?#~"
        self.node.post("q", *({"body": i, "tags": [tag, "x"]} for i in range(3)))
        self.node.claim("q", "?limit=1")
        tags = f"{tag},x"
        for flags, base in (
            ({}, "/v2"),
            ({"echo": "true"}, "/v2"),
            ({"include_claimed": "true", "include_delayed": "true"}, "/v2"),
            (
                {"echo": "true", "include_claimed": "true", "include_delayed": "1"},
                "/v2/projects/p",
            ),
        ):
            query = urlencode({"limit": 2, **flags, "tags": tags})
            r = self.node.request(
                "GET", f"{base}/queues/q/messages?{query}", client=OTHER_CLIENT
            )
            self.assertEqual(r.code, 200, r.json)
            listed = r.json["messages"]
            marker = int(parse_qs(urlsplit(nextLink(r)).query)["marker"][0])
            expected = {"marker": marker, "limit": 2}
            for name in ("echo", "include_claimed", "include_delayed"):
                if name in flags:
                    expected[name] = "true"
            expected["tags"] = tags
            self.assertEqual(
                nextLink(r), f"{base}/queues/q/messages?{urlencode(expected)}"
            )
            self.assertTrue(listed)

    def test_tagsKeptInLinks(self) -> None:
        """
        The next link keeps the tag filter, so walking the pages returns
        exactly the tagged messages in order.
        """
        self.node.post(
            "q",
            *(
                {"body": i, "tags": ["even"] if i % 2 == 0 else ["odd"]}
                for i in range(12)
            ),
        )
        seen = []
        path: Optional[str] = "/v2/queues/q/messages?echo=true&limit=2&tags=even"
        while path:
            r = self.node.request("GET", path)
            seen += [m["body"] for m in r.json["messages"]]
            path = nextLink(r)
            if path:
                self.assertIn("tags=even", path)
                self.assertIn("echo=true", path)
        self.assertEqual(seen, [0, 2, 4, 6, 8, 10])

    def test_includeClaimedKeptInLinks(self) -> None:
        """
        The next link keeps C{include_claimed} and C{include_delayed}, so
        walking the pages shows claimed and delayed messages too; listed
        messages' hrefs carry no claim id.
        """
        self.node.post("q", *({"body": i} for i in range(4)))
        self.node.post("q", {"body": 4, "delay": 60})
        self.node.claim("q", "?limit=2")
        seen = []
        path: Optional[str] = (
            "/v2/queues/q/messages?echo=true&limit=2"
            "&include_claimed=true&include_delayed=true"
        )
        while path:
            r = self.node.request("GET", path)
            seen += [m["body"] for m in r.json["messages"]]
            self.assertTrue(
                all("claim_id" not in m["href"] for m in r.json["messages"])
            )
            path = nextLink(r)
            if path:
                self.assertIn("include_claimed=true", path)
                self.assertIn("include_delayed=true", path)
        self.assertEqual(seen, [0, 1, 2, 3, 4])
        self.assertEqual(self.node.bodies("/v2/queues/q/messages?echo=true"), [2, 3])

    def test_markerPastTheEnd(self) -> None:
        """
        A marker after every message gives an empty page without a link;
        the largest 64-bit marker is accepted, one past it and one of 20
        digits are 400.
        """
        self.node.post("q", {"body": 1})
        r = self.node.request(
            "GET", f"/v2/queues/q/messages?echo=true&marker={2**63 - 1}"
        )
        self.assertEqual((r.code, r.json["messages"], nextLink(r)), (200, [], None))
        for marker in (str(2**63), "9" * 20):
            r = self.node.request("GET", f"/v2/queues/q/messages?marker={marker}")
            self.assertError(r, 400)

    def test_idsBounds(self) -> None:
        """
        C{ids} takes up to 20 distinct ids, for reading and for deleting;
        21 is 400, while 21 with one repeated counts as 20.
        """
        ids = self.node.post("q", *({"body": i} for i in range(21)))
        r = self.node.request("GET", f"/v2/queues/q/messages?ids={','.join(ids[:20])}")
        self.assertEqual(len(r.json["messages"]), 20)
        self.assertError(
            self.node.request("GET", f"/v2/queues/q/messages?ids={','.join(ids)}"), 400
        )
        self.assertError(
            self.node.request("DELETE", f"/v2/queues/q/messages?ids={','.join(ids)}"),
            400,
        )
        self.assertEqual(self.node.stats("q")["total"], 21)
        repeated = ",".join(ids[:20] + ids[:1])
        r = self.node.request("DELETE", f"/v2/queues/q/messages?ids={repeated}")
        self.assertEqual(r.code, 204)
        self.assertEqual(self.node.stats("q")["total"], 1)

    def test_claimAndPopBounds(self) -> None:
        """
        A claim and a pop take 1 to 20 messages; 21 is 400 and takes none.
        """
        self.node.post("q", *({"body": i} for i in range(45)))
        for query in ("?limit=21", "?limit=0"):
            self.assertError(self.node.claim("q", query), 400)
        for pop in ("21", "0", "-1"):
            r = self.node.request("DELETE", f"/v2/queues/q/messages?pop={pop}")
            self.assertError(r, 400)
        self.assertEqual(len(self.node.claim("q", "?limit=1").json["messages"]), 1)
        self.assertEqual(len(self.node.claim("q", "?limit=20").json["messages"]), 20)
        r = self.node.request("DELETE", "/v2/queues/q/messages?pop=20")
        self.assertEqual(len(r.json["messages"]), 20)
        r = self.node.request("DELETE", "/v2/queues/q/messages?pop=1")
        self.assertEqual([m["body"] for m in r.json["messages"]], [41])
        self.assertEqual(self.node.stats("q")["free"], 3)

    def test_queueLimitBounds(self) -> None:
        """
        Queue listings take C{limit} 1 and 20; the next link keeps
        C{detailed}; a marker past every name gives an empty page.
        """
        for i in range(21):
            self.node.request("PUT", f"/v2/queues/q{i:02d}", {"i": i})
        r = self.node.request("GET", "/v2/queues?limit=1&detailed=true")
        self.assertEqual(
            r.json["queues"][0],
            {"name": "q00", "href": "/v2/queues/q00", "metadata": {"i": 0}},
        )
        self.assertIn("detailed=true", nextLink(r))
        r = self.node.request("GET", "/v2/queues?limit=20")
        self.assertEqual(len(r.json["queues"]), 20)
        r = self.node.request("GET", nextLink(r))
        self.assertEqual([q["name"] for q in r.json["queues"]], ["q20"])
        r = self.node.request("GET", nextLink(r))
        self.assertEqual((r.json["queues"], nextLink(r)), ([], None))
        r = self.node.request("GET", "/v2/queues?marker=z")
        self.assertEqual(r.json, {"queues": [], "links": []})


@implementer(IAuthDriver)
class RefusingAuth:
    """
    An auth driver that refuses every request with the error it is given.
    """

    trustsHeaders = False

    def __init__(self, error: Exception) -> None:
        self.error = error

    def authenticate(self, headers: Any, urlProject: Optional[str]) -> Any:
        return fail(self.error)

    def isAdmin(self, headers: Any) -> Any:
        return succeed(False)


class ErrorBodyTests(APIUnitTestCase):
    def test_eachClientErrorHasABody(self) -> None:
        """
        Every 4xx the API gives has a JSON body with exactly a title and a
        description: 400, 403, 404, 405, 406, 409 and 413.
        """
        [mid] = self.node.post("q", {"body": 1})
        self.node.claim("q")
        self.node.request("PUT", "/v2/queues/meta", {"a": 1})
        gone = [{"op": "remove", "path": "/metadata/zz"}]
        cases = [
            (("GET", "/v2/queues?limit=x"), 400, "Invalid API request"),
            (("DELETE", f"/v2/queues/q/messages/{mid}"), 403, "Unable to delete"),
            (("GET", "/v2/queues/q/claims/nope"), 404, "Not found"),
            (("GET", "/v2/queues/q/messages/nope"), 404, "Not found"),
            (("GET", "/v2/nowhere"), 404, "Not Found"),
            (("PUT", "/v2/queues/q/stats"), 405, "Method Not Allowed"),
            (("GET", "/v2/queues", None, "p", CLIENT, {"Accept": "text/xml"}), 406, ""),
            (("PATCH", "/v2/queues/meta", gone, "p", CLIENT, PATCH), 409, "Conflict"),
            (("PUT", "/v2/queues/big", {"x": "y" * 70000}), 413, "Payload too large"),
        ]
        for args, code, title in cases:
            self.assertError(self.node.request(*args), code, title)

    def test_authErrors(self) -> None:
        """
        An auth driver's refusals become 401 and 403 with JSON bodies.
        """
        for error, code in ((Unauthorized("No token."), 401), (Forbidden("No."), 403)):
            auth = RefusingAuth(error)
            self.assertTrue(verifyObject(IAuthDriver, auth))
            node = InMemoryNode(self, auth=auth)
            r = node.request("GET", "/v2/queues")
            self.assertError(r, code, error.title)
            self.assertEqual(r.json["description"], error.description)

    def test_storageDown(self) -> None:
        """
        While the store is down, ping is 503 without a body, health reports
        the reason, and queue requests are 503 with a JSON body.
        """
        self.node.store.stopService()
        r = self.node.request("GET", "/v2/ping")
        self.assertEqual((r.code, r.body), (503, b""))
        r = self.node.request("GET", "/v2/health")
        self.assertEqual(r.code, 503)
        self.assertFalse(r.json["storage_reachable"])
        self.assertIn("not running", r.json["error"])
        self.assertError(self.node.request("GET", "/v2/queues"), 503)
        self.assertError(
            self.node.request(
                "POST", "/v2/queues/q/messages", {"messages": [{"body": 1}]}
            ),
            503,
        )

    def test_badRequestsChangeNothing(self) -> None:
        """
        A request refused with 4xx leaves the queue as it was.
        """
        self.node.post("q", {"body": 1})
        before = self.node.stats("q")
        for method, path, body in (
            ("POST", "/v2/queues/q/messages", {"messages": [{"body": 2}, {"ttl": 60}]}),
            ("POST", "/v2/queues/q/claims?limit=21", {}),
            ("DELETE", "/v2/queues/q/messages?pop=21", None),
            ("DELETE", "/v2/queues/q/messages?ids=a&pop=1", None),
            ("PUT", "/v2/queues/q", {"_max_claim_count": 0}),
        ):
            self.assertEqual(self.node.request(method, path, body).code, 400)
        self.assertEqual(self.node.stats("q"), before)


class PatchTests(APIUnitTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.node.request("PUT", "/v2/queues/q", {"keep": 1})

    def patch(self, *ops: Any, headers: Optional[dict] = None) -> Response:
        return self.node.request(
            "PATCH", "/v2/queues/q", list(ops), headers=headers or PATCH
        )

    def test_mediaType(self) -> None:
        """
        PATCH takes the JSON-patch media type, with parameters too; plain
        JSON, JSON merge patch and no type at all are 400 and change nothing.
        """
        add = {"op": "add", "path": "/metadata/a", "value": 1}
        for contentType in (
            "application/json",
            "application/merge-patch+json",
            "application/json-patch+json",
            "",
        ):
            r = self.patch(add, headers={"Content-Type": contentType})
            self.assertError(r, 400)
        self.assertNotIn("a", self.node.request("GET", "/v2/queues/q").json)
        r = self.patch(
            add, headers={"Content-Type": PATCH_MEDIA_TYPE + "; charset=UTF-8"}
        )
        self.assertEqual((r.code, r.json["a"]), (200, 1))

    def test_reservedKeysWithBadValues(self) -> None:
        """
        Adding or replacing a reserved key with a value of the wrong type or
        out of range is 400 and leaves the metadata as it was.
        """
        for key, value in (
            ("_default_message_ttl", 59),
            ("_default_message_ttl", "300"),
            ("_default_message_delay", -1),
            ("_default_message_delay", 901),
            ("_max_messages_post_size", 0),
            ("_max_messages_post_size", 262145),
            ("_max_claim_count", 0),
            ("_max_claim_count", True),
            ("_max_claim_count", 1.5),
            ("_dead_letter_queue", "q"),
            ("_dead_letter_queue", "bad name"),
            ("_dead_letter_queue", 5),
            ("_dead_letter_queue_messages_ttl", 59),
        ):
            for op in ("add", "replace"):
                r = self.patch({"op": op, "path": f"/metadata/{key}", "value": value})
                self.assertError(r, 400)
        r = self.node.request("GET", "/v2/queues/q")
        self.assertEqual(r.json["keep"], 1)
        self.assertEqual(r.json["_default_message_ttl"], 3600)
        self.assertIsNone(r.json["_max_claim_count"])

    def test_reservedKeysAlwaysExist(self) -> None:
        """
        Reserved keys can be removed or replaced when never set (GET shows
        their defaults); ordinary missing keys are 409.
        """
        r = self.patch(
            {"op": "remove", "path": "/metadata/_dead_letter_queue"},
            {"op": "replace", "path": "/metadata/_default_message_ttl", "value": 60},
        )
        self.assertEqual((r.code, r.json["_default_message_ttl"]), (200, 60))
        r = self.patch({"op": "replace", "path": "/metadata/missing", "value": 1})
        self.assertError(r, 409, "Conflict")

    def test_patchAppliesAtomically(self) -> None:
        """
        A patch whose later operation fails applies none of its operations.
        """
        r = self.patch(
            {"op": "add", "path": "/metadata/a", "value": 1},
            {"op": "remove", "path": "/metadata/missing"},
        )
        self.assertError(r, 409)
        r = self.patch(
            {"op": "add", "path": "/metadata/a", "value": 1},
            {"op": "add", "path": "/metadata/_max_claim_count", "value": -1},
        )
        self.assertError(r, 400)
        self.assertNotIn("a", self.node.request("GET", "/v2/queues/q").json)

    def test_escapedPaths(self) -> None:
        """
        C{~1} and C{~0} in a patch path stand for C{/} and C{~}; an empty key
        is 400.
        """
        r = self.patch({"op": "add", "path": "/metadata/a~1b~0c", "value": 1})
        self.assertEqual(r.json["a/b~c"], 1)
        self.assertError(
            self.patch({"op": "add", "path": "/metadata/", "value": 1}), 400
        )

    def test_newTTLAppliesToNewMessages(self) -> None:
        """
        A default TTL set by PATCH applies to messages posted afterwards.
        """
        self.patch({"op": "add", "path": "/metadata/_default_message_ttl", "value": 60})
        [mid] = self.node.post("q", {"body": 1})
        self.node.clock.advance(60)
        self.assertError(self.node.request("GET", f"/v2/queues/q/messages/{mid}"), 404)


class ProjectPrefixTests(APIUnitTestCase):
    def test_v11UnderPrefix(self) -> None:
        """
        C{/v1.1/projects/P/...} serves the project's queues, and every href
        and Location it gives keeps the same prefix and version.
        """
        base = "/v1.1/projects/alpha"
        ids = self.node.post(
            "q", {"body": 1}, path=f"{base}/queues/q/messages", project=None
        )
        r = self.node.request(
            "GET", f"{base}/queues/q/messages?echo=true&limit=1", project=None
        )
        self.assertEqual(
            r.json["messages"][0]["href"], f"{base}/queues/q/messages/{ids[0]}"
        )
        self.assertTrue(nextLink(r).startswith(f"{base}/queues/q/messages?"))
        r = self.node.request("POST", f"{base}/queues/q/claims", {}, project=None)
        location = r.header("location")
        self.assertTrue(location.startswith(f"{base}/queues/q/claims/"))
        self.assertEqual(
            r.json["messages"][0]["href"].split("?")[0],
            f"{base}/queues/q/messages/{ids[0]}",
        )
        self.assertEqual(self.node.request("GET", location, project=None).code, 200)
        r = self.node.request("GET", f"{base}/queues", project=None)
        self.assertEqual(r.json["queues"], [{"name": "q", "href": f"{base}/queues/q"}])
        r = self.node.request("GET", "/v2/queues", project="alpha")
        self.assertEqual(r.json["queues"][0]["href"], "/v2/queues/q")

    def test_projectQuotedInHrefs(self) -> None:
        """
        A project id with characters that are special in URLs is quoted in
        the hrefs, and those hrefs lead back to the same project.
        """
        r = self.node.request("PUT", "/v2/projects/a:b%40c/queues/q", project=None)
        self.assertEqual(r.header("location"), "/v2/projects/a%3Ab%40c/queues/q")
        self.assertEqual(
            self.node.request("GET", r.header("location"), project=None).code, 200
        )
        r = self.node.request("GET", "/v2/queues", project="a:b@c")
        self.assertEqual([q["name"] for q in r.json["queues"]], ["q"])


class IsolationTests(APIUnitTestCase):
    def test_claimsBelongToTheirProject(self) -> None:
        """
        Another project cannot read, renew, release or delete with a
        project's claim, even on a queue of the same name.
        """
        [mid] = self.node.post("q", {"body": 1})
        self.node.post("q", {"body": 2}, project="other")
        location = self.node.claim("q", ttl=60).header("location")
        cid = location.rsplit("/", 1)[1]
        other = {"project": "other"}
        self.assertError(self.node.request("GET", location, **other), 404)
        self.assertError(
            self.node.request("PATCH", location, {"ttl": 300}, **other), 404
        )
        self.assertEqual(self.node.request("DELETE", location, **other).code, 204)
        r = self.node.request(
            "DELETE", f"/v2/queues/q/messages/{mid}?claim_id={cid}", **other
        )
        self.assertEqual(r.code, 204)
        self.assertEqual(self.node.claim("q").code, 204)
        self.assertEqual(self.node.request("GET", location).json["ttl"], 60)
        self.assertEqual(self.node.stats("q")["claimed"], 1)
        self.assertEqual(self.node.claim("q", **other).code, 201)

    def test_claimsBelongToTheirQueue(self) -> None:
        """
        A claim id is not found under another queue of the same project.
        """
        self.node.post("q", {"body": 1})
        cid = self.node.claim("q").header("location").rsplit("/", 1)[1]
        self.assertError(self.node.request("GET", f"/v2/queues/q2/claims/{cid}"), 404)

    def test_prefixAndHeaderAreOneProject(self) -> None:
        """
        The project in the URL and in the header are the same tenant: a
        message posted one way is claimed the other way, and nowhere else.
        """
        self.node.post(
            "q", {"body": 1}, path="/v2/projects/alpha/queues/q/messages", project=None
        )
        self.assertEqual(self.node.claim("q", project="beta").code, 204)
        r = self.node.claim("q", project="alpha")
        self.assertEqual([m["body"] for m in r.json["messages"]], [1])


class HTTPTests(APIUnitTestCase):
    def test_head(self) -> None:
        """
        HEAD on a readable resource answers like GET without a body.
        """
        self.node.post("q", {"body": 1})
        get = self.node.request("GET", "/v2/queues/q/stats")
        head = self.node.request("HEAD", "/v2/queues/q/stats")
        self.assertEqual((head.code, head.body), (200, b""))
        self.assertEqual(head.header("content-length"), str(len(get.body)))
        self.assertEqual(head.header("content-type"), get.header("content-type"))
        self.assertEqual(
            self.node.request("HEAD", "/v2/queues/q/claims/nope").code, 404
        )

    def test_allowListsHead(self) -> None:
        """
        A 405 names the allowed methods, HEAD included where GET is.
        """
        r = self.node.request("POST", "/v2/queues/q/stats")
        self.assertEqual(sorted(r.header("allow").split(", ")), ["GET", "HEAD"])

    def test_trailingSlashes(self) -> None:
        """
        Resources answer with or without a trailing slash, under either
        prefix.
        """
        self.node.post("q", {"body": 1})
        for path in (
            "/v2/queues/",
            "/v2/queues/q/",
            "/v2/queues/q/stats/",
            "/v2/projects/p/queues/q/messages/?echo=true",
            "/v1.1/queues/q/messages/?echo=true",
        ):
            self.assertEqual(self.node.request("GET", path).code, 200, path)
        r = self.node.request("POST", "/v2/queues/q/claims/", {})
        self.assertEqual(r.code, 201)

    def test_createThenGetUnderBothVersions(self) -> None:
        """
        Queues are shared between v1.1 and v2: one created under one
        version is seen under the other.
        """
        self.assertEqual(
            self.node.request("PUT", "/v1.1/queues/shared", {"x": 1}).code, 201
        )
        self.assertEqual(self.node.request("GET", "/v2/queues/shared").json["x"], 1)
