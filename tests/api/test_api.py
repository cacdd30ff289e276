"""
The HTTP API, end to end through the real site on a loopback socket.
"""

import hashlib
import json

from twisted.trial.unittest import TestCase

from marconi.core.limits import Limits
from tests.apihelpers import Node

PATCH = {"Content-Type": "application/openstack-messaging-v2.0-json-patch"}


class APITestCase(TestCase):
    def setUp(self) -> None:
        self.node = Node(self)

    def assertError(self, response, code: int) -> None:
        self.assertEqual(response.code, code, response.body)
        self.assertEqual(sorted(response.json), ["description", "title"])
        self.assertTrue(response.header("content-type").startswith("application/json"))


class VersionTests(APITestCase):
    async def test_versions(self) -> None:
        """
        C{GET /} lists v1.1 and v2 with 300 Multiple Choices, without
        needing any header.
        """
        r = await self.node.request("GET", "/", project=None, client=None)
        self.assertEqual(r.code, 300)
        self.assertEqual([v["id"] for v in r.json["versions"]], ["1.1", "2"])

    async def test_home(self) -> None:
        """
        C{GET /v2/} and C{/v2} give the JSON-Home document.
        """
        for path in ("/v2/", "/v2", "/v1.1/"):
            r = await self.node.request("GET", path)
            self.assertEqual(r.code, 200)
            self.assertIn("rel/queues", r.json["resources"])
        self.assertEqual(r.header("content-type"), "application/json-home")

    async def test_pingAndHealth(self) -> None:
        """
        Ping answers 204 with no body; health reports the storage.
        """
        r = await self.node.request("GET", "/v2/ping")
        self.assertEqual((r.code, r.body), (204, b""))
        r = await self.node.request("GET", "/v2/health")
        self.assertEqual(r.code, 200)
        self.assertTrue(r.json["storage_reachable"])

    async def test_requestId(self) -> None:
        """
        Every response carries a fresh X-OpenStack-Request-Id, errors too.
        """
        a = await self.node.request("GET", "/v2/ping")
        b = await self.node.request("GET", "/v2/nowhere")
        ids = [a.header("x-openstack-request-id"), b.header("x-openstack-request-id")]
        self.assertTrue(all(i.startswith("req-") for i in ids))
        self.assertNotEqual(ids[0], ids[1])

    async def test_requestIdShape(self) -> None:
        """
        A request id is C{req-} and 32 lowercase hex digits (128 random
        bits), on a hot route (a post) as on any other.
        """
        post = await self.node.request(
            "POST", "/v2/queues/q/messages", {"messages": [{"body": 1}]}
        )
        ping = await self.node.request("GET", "/v2/ping")
        self.assertEqual(post.code, 201)
        for r in (post, ping):
            self.assertRegex(
                r.header("x-openstack-request-id"), r"\Areq-[0-9a-f]{32}\Z"
            )

    async def test_notFoundAndMethod(self) -> None:
        """
        Unknown paths give a JSON 404; a wrong method a JSON 405 with Allow.
        """
        self.assertError(await self.node.request("GET", "/v2/nowhere"), 404)
        r = await self.node.request("POST", "/v2/queues/q/stats")
        self.assertError(r, 405)
        self.assertIn("GET", r.header("allow"))

    async def test_notAcceptable(self) -> None:
        """
        An Accept header that admits no JSON gets 406.
        """
        r = await self.node.request(
            "GET", "/v2/queues", headers={"Accept": "text/html"}
        )
        self.assertError(r, 406)
        r = await self.node.request(
            "GET", "/v2/queues", headers={"Accept": "text/html, application/*"}
        )
        self.assertEqual(r.code, 200)


class HeaderTests(APITestCase):
    async def test_projectRequired(self) -> None:
        """
        Without X-Project-ID or a project in the URL the request is 400.
        """
        self.assertError(
            await self.node.request("GET", "/v2/queues", project=None), 400
        )

    async def test_clientIdRequired(self) -> None:
        """
        Queue resources need a Client-ID header; a malformed one is 400.
        """
        self.assertError(await self.node.request("GET", "/v2/queues", client=None), 400)
        r = await self.node.request("GET", "/v2/queues", client="has space")
        self.assertError(r, 400)

    async def test_badProjectId(self) -> None:
        """
        A project id with spaces or over 256 characters is 400.
        """
        for project in ("a b", "x" * 257):
            r = await self.node.request("GET", "/v2/queues", project=project)
            self.assertError(r, 400)

    async def test_projectInURL(self) -> None:
        """
        C{/v2/projects/P/queues/...} reaches the same resources as the
        header, with hrefs under the same prefix; a header that disagrees
        is 400.
        """
        await self.node.post("q", {"body": 1}, project="alpha")
        r = await self.node.request(
            "GET", "/v2/projects/alpha/queues/q/messages?echo=true", project=None
        )
        self.assertEqual(r.code, 200)
        [m] = r.json["messages"]
        self.assertTrue(m["href"].startswith("/v2/projects/alpha/queues/q/messages/"))
        r = await self.node.request(
            "GET", "/v2/projects/alpha/queues/q/messages", project="alpha"
        )
        self.assertEqual(r.code, 200)
        r = await self.node.request(
            "GET", "/v2/projects/alpha/queues/q/messages", project="beta"
        )
        self.assertError(r, 400)

    async def test_postAnswerText(self) -> None:
        """
        The answer to a post is the compact JSON document of the messages'
        hrefs, under the project's prefix when the URL names it (quoted
        there).
        """
        for path, prefix in [
            ("/v2/queues/q.1/messages", "/v2/queues/q.1/messages/"),
            (
                "/v2/projects/a%3Ab/queues/q.1/messages",
                "/v2/projects/a%3Ab/queues/q.1/messages/",
            ),
        ]:
            r = await self.node.request(
                "POST", path, {"messages": [{"body": 1}] * 3}, project="a:b"
            )
            self.assertEqual(r.code, 201)
            hrefs = r.json["resources"]
            self.assertEqual(len(hrefs), 3)
            for href in hrefs:
                self.assertTrue(href.startswith(prefix), href)
            self.assertEqual(
                r.body, json.dumps({"resources": hrefs}, separators=(",", ":")).encode()
            )

    async def test_v11(self) -> None:
        """
        The same API is served under /v1.1, with /v1.1 hrefs.
        """
        r = await self.node.request(
            "POST", "/v1.1/queues/q/messages", {"messages": [{"body": 1}]}
        )
        self.assertEqual(r.code, 201)
        self.assertTrue(r.json["resources"][0].startswith("/v1.1/queues/q/messages/"))


class QueueTests(APITestCase):
    async def test_createGetDelete(self) -> None:
        """
        PUT creates a queue (201 with Location, then 204), GET shows its
        metadata with reserved defaults, DELETE removes it.
        """
        r = await self.node.request("PUT", "/v2/queues/q", {"color": "red"})
        self.assertEqual(r.code, 201)
        self.assertEqual(r.header("location"), "/v2/queues/q")
        r = await self.node.request("PUT", "/v2/queues/q", {"color": "blue"})
        self.assertEqual(r.code, 204)
        r = await self.node.request("GET", "/v2/queues/q")
        self.assertEqual(r.json["color"], "red")
        self.assertEqual(r.json["_default_message_ttl"], 3600)
        self.assertEqual(r.json["_max_messages_post_size"], 262144)
        self.assertIsNone(r.json["_dead_letter_queue"])
        r = await self.node.request("DELETE", "/v2/queues/q")
        self.assertEqual(r.code, 204)
        r = await self.node.request("GET", "/v2/queues")
        self.assertEqual(r.json["queues"], [])

    async def test_lazyQueue(self) -> None:
        """
        A queue that was never created reads as an empty one: its metadata
        are the defaults and its stats are zero.
        """
        r = await self.node.request("GET", "/v2/queues/never")
        self.assertEqual(r.code, 200)
        self.assertEqual(r.json["_default_message_ttl"], 3600)
        self.assertNotIn("color", r.json)

    async def test_metadataRoundTrip(self) -> None:
        """
        Metadata read from a queue (reserved keys included, some null) can
        be written back as it is; null reserved keys mean unset.
        """
        await self.node.request("PUT", "/v2/queues/q", {"a": 1})
        r = await self.node.request("GET", "/v2/queues/q")
        self.assertIsNone(r.json["_dead_letter_queue"])
        r2 = await self.node.request("PUT", "/v2/queues/q2", r.json)
        self.assertEqual(r2.code, 201, r2.body)
        # Empty, but typed JSON as Zaqar's is.
        self.assertEqual(r2.body, b"")
        self.assertTrue(r2.header("content-type").startswith("application/json"))
        r3 = await self.node.request("GET", "/v2/queues/q2")
        self.assertEqual(r3.json, r.json)

    async def test_createWithoutBody(self) -> None:
        """
        A queue can be created with no body at all.
        """
        r = await self.node.request("PUT", "/v2/queues/q")
        self.assertEqual(r.code, 201)

    async def test_badNames(self) -> None:
        """
        Names that are too long or have other characters are 400, and
        nothing is created.
        """
        for name in ("x" * 65, "sp%20ace", "star*", "%C3%A9"):
            r = await self.node.request("PUT", f"/v2/queues/{name}")
            self.assertError(r, 400)
        r = await self.node.request("GET", "/v2/queues")
        self.assertEqual(r.json["queues"], [])

    async def test_badMetadata(self) -> None:
        """
        Metadata that is not an object, or reserved keys out of range, are
        400; oversized metadata is 413.
        """
        for body in (
            [1],
            {"_default_message_ttl": 10},
            {"_max_claim_count": "x"},
            {"_dead_letter_queue": "q"},
            {"_default_message_delay": 901},
        ):
            self.assertError(await self.node.request("PUT", "/v2/queues/q", body), 400)
        r = await self.node.request("PUT", "/v2/queues/q", {"x": "y" * 70000})
        self.assertError(r, 413)
        r = await self.node.request("GET", "/v2/queues")
        self.assertEqual(r.json["queues"], [])

    async def test_list(self) -> None:
        """
        Listing pages through queues in name order with a next link, with
        metadata when detailed and a count when asked.
        """
        for name in ["c", "a", "e", "b", "d"]:
            await self.node.request("PUT", f"/v2/queues/{name}", {"n": name})
        await self.node.request("PUT", "/v2/queues/other", project="p2")
        r = await self.node.request("GET", "/v2/queues?limit=2&with_count=true")
        self.assertEqual([q["name"] for q in r.json["queues"]], ["a", "b"])
        self.assertEqual(r.json["queues"][0]["href"], "/v2/queues/a")
        self.assertEqual(r.json["count"], 5)
        names = []
        path = "/v2/queues?limit=2&detailed=true"
        while path:
            r = await self.node.request("GET", path)
            names += [(q["name"], q["metadata"]["n"]) for q in r.json["queues"]]
            links = [link["href"] for link in r.json["links"] if link["rel"] == "next"]
            path = links[0] if links else None
        self.assertEqual(names, [(n, n) for n in "abcde"])

    async def test_listLimits(self) -> None:
        """
        A limit over 20, under 1 or not a number is 400.
        """
        for limit in ("21", "0", "x", "-1"):
            r = await self.node.request("GET", f"/v2/queues?limit={limit}")
            self.assertError(r, 400)

    async def test_patch(self) -> None:
        """
        PATCH with the JSON-patch media type adds, replaces and removes
        metadata keys and answers with the result.
        """
        await self.node.request("PUT", "/v2/queues/q", {"a": 1, "b": 2})
        ops = [
            {"op": "add", "path": "/metadata/c", "value": 3},
            {"op": "replace", "path": "/metadata/a", "value": 10},
            {"op": "remove", "path": "/metadata/b"},
            {"op": "replace", "path": "/metadata/_default_message_ttl", "value": 120},
        ]
        r = await self.node.request("PATCH", "/v2/queues/q", ops, headers=PATCH)
        self.assertEqual(r.code, 200, r.body)
        self.assertEqual((r.json["a"], r.json["c"]), (10, 3))
        self.assertNotIn("b", r.json)
        self.assertEqual(r.json["_default_message_ttl"], 120)

    async def test_patchErrors(self) -> None:
        """
        PATCH without the media type or with a bad operation is 400; removing
        a missing key is 409; a missing queue is 404; nothing changes.
        """
        await self.node.request("PUT", "/v2/queues/q", {"a": 1})
        add = [{"op": "add", "path": "/metadata/x", "value": 1}]
        self.assertError(await self.node.request("PATCH", "/v2/queues/q", add), 400)
        for ops in (
            [{"op": "move", "path": "/metadata/a"}],
            [{"op": "add", "path": "/a"}],
            {"op": "add"},
            [{"op": "add", "path": "/metadata/x"}],
            [{"op": "add", "path": "/metadata/_default_message_ttl", "value": 1}],
        ):
            r = await self.node.request("PATCH", "/v2/queues/q", ops, headers=PATCH)
            self.assertError(r, 400)
        gone = [{"op": "remove", "path": "/metadata/zz"}]
        r = await self.node.request("PATCH", "/v2/queues/q", gone, headers=PATCH)
        self.assertError(r, 409)
        r = await self.node.request("PATCH", "/v2/queues/nope", add, headers=PATCH)
        self.assertError(r, 404)
        r = await self.node.request("GET", "/v2/queues/q")
        self.assertEqual(r.json["a"], 1)
        self.assertNotIn("x", r.json)

    async def test_stats(self) -> None:
        """
        Stats count free and claimed messages and show the oldest and newest;
        a missing queue has zero counts.
        """
        r = await self.node.request("GET", "/v2/queues/q/stats")
        self.assertEqual(
            r.json, {"messages": {"free": 0, "claimed": 0, "delayed": 0, "total": 0}}
        )
        ids = await self.node.post("q", {"body": 1}, {"body": 2}, {"body": 3})
        await self.node.request("POST", "/v2/queues/q/claims?limit=1", {})
        self.node.clock.advance(5)
        r = await self.node.request("GET", "/v2/queues/q/stats")
        stats = r.json["messages"]
        self.assertEqual((stats["free"], stats["claimed"], stats["total"]), (2, 1, 3))
        self.assertEqual(stats["oldest"]["id"], ids[0])
        self.assertEqual(stats["newest"]["id"], ids[2])
        self.assertEqual(stats["oldest"]["age"], 5)
        self.assertTrue(stats["oldest"]["created"].endswith("Z"))


class MessageTests(APITestCase):
    async def test_postAndList(self) -> None:
        """
        A batch post answers 201 with the hrefs and a Location listing the
        ids; listing with echo shows the messages with every field.
        """
        r = await self.node.request(
            "POST",
            "/v2/queues/q/messages",
            {"messages": [{"body": {"event": "x"}, "ttl": 300}, {"body": [1, 2]}]},
        )
        self.assertEqual(r.code, 201)
        ids = [h.rsplit("/", 1)[1] for h in r.json["resources"]]
        self.assertEqual(
            r.header("location"), "/v2/queues/q/messages?ids=" + ",".join(ids)
        )
        self.node.clock.advance(7)
        r = await self.node.request("GET", "/v2/queues/q/messages?echo=true")
        first, second = r.json["messages"]
        self.assertEqual(first["id"], ids[0])
        self.assertEqual(first["href"], f"/v2/queues/q/messages/{ids[0]}")
        self.assertEqual(
            (first["body"], first["ttl"], first["age"]), ({"event": "x"}, 300, 7)
        )
        expected = hashlib.md5(b'{"event": "x"}').hexdigest()
        self.assertEqual(first["checksum"], "MD5:" + expected)
        self.assertEqual(second["ttl"], 3600)
        self.assertNotIn("tags", first)

    async def test_echo(self) -> None:
        """
        Without echo a client does not see its own messages.
        """
        await self.node.post("q", {"body": "mine"})
        await self.node.post("q", {"body": "theirs"}, client="another-client")
        r = await self.node.request("GET", "/v2/queues/q/messages")
        self.assertEqual([m["body"] for m in r.json["messages"]], ["theirs"])

    async def test_paging(self) -> None:
        """
        Following the next links walks every message once in posting order.
        """
        for i in range(5):
            await self.node.post("q", *({"body": i * 5 + j} for j in range(5)))
        seen = []
        path = "/v2/queues/q/messages?echo=true&limit=7"
        while path:
            r = await self.node.request("GET", path)
            seen += [m["body"] for m in r.json["messages"]]
            links = [link["href"] for link in r.json["links"] if link["rel"] == "next"]
            path = links[0] if links else None
        self.assertEqual(seen, list(range(25)))

    async def test_badMarker(self) -> None:
        """
        A marker that is not one we gave out is 400, including numbers too
        large for a marker.
        """
        for marker in ("abc", "-1", "9999999999999999999", "9223372036854775808"):
            r = await self.node.request("GET", f"/v2/queues/q/messages?marker={marker}")
            self.assertError(r, 400)

    async def test_badUTF8InURL(self) -> None:
        """
        A path that is not valid UTF-8 once unquoted is a JSON 400.
        """
        for path in (
            "/v2/queues/%FF",
            "/v2/projects/%FF/queues",
            "/v2/queues/q/claims/x%FFy",
        ):
            self.assertError(await self.node.request("GET", path), 400)

    async def test_tags(self) -> None:
        """
        Tags are stored, shown, and filter listings, claims and pops; a
        message matches when it has every tag asked for.
        """
        await self.node.post(
            "q",
            {"body": "a", "tags": ["red"]},
            {"body": "b", "tags": ["red", "big"]},
            {"body": "c", "tags": ["big"]},
        )
        r = await self.node.request("GET", "/v2/queues/q/messages?echo=true&tags=red")
        self.assertEqual([m["body"] for m in r.json["messages"]], ["a", "b"])
        self.assertEqual(r.json["messages"][1]["tags"], ["red", "big"])
        r = await self.node.request(
            "GET", "/v2/queues/q/messages?echo=true&tags=red,big"
        )
        self.assertEqual([m["body"] for m in r.json["messages"]], ["b"])
        r = await self.node.request("POST", "/v2/queues/q/claims?tags=big", {})
        self.assertEqual([m["body"] for m in r.json["messages"]], ["b", "c"])
        r = await self.node.request("DELETE", "/v2/queues/q/messages?pop=5&tags=red")
        self.assertEqual([m["body"] for m in r.json["messages"]], ["a"])

    async def test_badTags(self) -> None:
        """
        Tags that are not a list of short strings are 400 and store nothing.
        """
        for tags in (
            "red",
            [1],
            [""],
            ["a,b"],
            ["x" * 65],
            [f"t{i}" for i in range(17)],
        ):
            r = await self.node.request(
                "POST",
                "/v2/queues/q/messages",
                {"messages": [{"body": 1, "tags": tags}]},
            )
            self.assertError(r, 400)
        r = await self.node.request("GET", "/v2/queues/q/stats")
        self.assertEqual(r.json["messages"]["total"], 0)

    async def test_badPosts(self) -> None:
        """
        Malformed or out-of-range posts are 400 and store nothing, even when
        other messages of the batch are fine.
        """
        bad = [
            {},
            {"messages": []},
            {"messages": "x"},
            {"messages": [{"ttl": 60}]},
            {"messages": [{"body": 1, "ttl": 59}]},
            {"messages": [{"body": 1, "ttl": 1209601}]},
            {"messages": [{"body": 1, "ttl": "60"}]},
            {"messages": [{"body": 1, "ttl": True}]},
            {"messages": [{"body": 1, "ttl": 60.5}]},
            {"messages": [{"body": 1, "delay": 901}]},
            {"messages": [{"body": 1}, 7]},
        ]
        for body in bad:
            r = await self.node.request("POST", "/v2/queues/q/messages", body)
            self.assertError(r, 400)
        for raw in (
            b"",
            b"{",
            b'{"messages": [{"body": NaN}]}',
            b"\xff\xfe",
            b'{"messages": [{"body": 1e999}]}',
            b'{"messages": [{"body": 1, "body": 2}]}',
            b'{"messages": [{"body": "\\ud800"}]}',
            b'{"messages": [{"body": ' + b"[" * 5000 + b"]" * 5000 + b"}]}",
        ):
            r = await self.node.request("POST", "/v2/queues/q/messages", raw=raw)
            self.assertError(r, 400)
        r = await self.node.request("GET", "/v2/queues/q/stats")
        self.assertEqual(r.json["messages"]["total"], 0)

    async def test_queueDefaultsAndPostSize(self) -> None:
        """
        A queue's default TTL and delay apply to messages without their own,
        and its maximum post size is enforced with 413.
        """
        meta = {
            "_default_message_ttl": 120,
            "_default_message_delay": 30,
            "_max_messages_post_size": 100,
        }
        await self.node.request("PUT", "/v2/queues/q", meta)
        await self.node.post("q", {"body": "x"})
        r = await self.node.request("GET", "/v2/queues/q/messages?echo=true")
        self.assertEqual(r.json["messages"], [])
        r = await self.node.request(
            "GET", "/v2/queues/q/messages?echo=true&include_delayed=true"
        )
        self.assertEqual(r.json["messages"][0]["ttl"], 120)
        self.node.clock.advance(30)
        r = await self.node.request("GET", "/v2/queues/q/messages?echo=true")
        self.assertEqual(len(r.json["messages"]), 1)
        r = await self.node.request(
            "POST", "/v2/queues/q/messages", {"messages": [{"body": "y" * 200}]}
        )
        self.assertError(r, 413)

    async def test_delayWithoutQueueDefault(self) -> None:
        """
        A message's own delay is honoured on any queue.
        """
        await self.node.post("q", {"body": "later", "delay": 60})
        r = await self.node.request("POST", "/v2/queues/q/claims", {})
        self.assertEqual(r.code, 204)
        self.node.clock.advance(60)
        r = await self.node.request("POST", "/v2/queues/q/claims", {})
        self.assertEqual(r.code, 201)

    async def test_expiry(self) -> None:
        """
        An expired message is gone at once for every read.
        """
        [mid] = await self.node.post("q", {"body": 1, "ttl": 60})
        self.node.clock.advance(60)
        r = await self.node.request("GET", f"/v2/queues/q/messages/{mid}")
        self.assertError(r, 404)
        r = await self.node.request("GET", "/v2/queues/q/messages?echo=true")
        self.assertEqual(r.json["messages"], [])

    async def test_getById(self) -> None:
        """
        A message is got by id, several by C{ids}; unknown ids are skipped
        and none found is 404.
        """
        ids = await self.node.post("q", {"body": 1}, {"body": 2})
        r = await self.node.request("GET", f"/v2/queues/q/messages/{ids[1]}")
        self.assertEqual((r.json["id"], r.json["body"]), (ids[1], 2))
        r = await self.node.request(
            "GET", f"/v2/queues/q/messages?ids={ids[0]},nope&ids={ids[1]}"
        )
        self.assertEqual([m["body"] for m in r.json["messages"]], [1, 2])
        self.assertError(
            await self.node.request("GET", "/v2/queues/q/messages?ids=x,y"), 404
        )
        self.assertError(
            await self.node.request("GET", "/v2/queues/q/messages/nope"), 404
        )
        too_many = ",".join(f"i{i}" for i in range(21))
        r = await self.node.request("GET", f"/v2/queues/q/messages?ids={too_many}")
        self.assertError(r, 400)

    async def test_deleteById(self) -> None:
        """
        Deleting one message or several by ids answers 204 and removes them;
        deleting a missing message is 204 too.
        """
        ids = await self.node.post("q", {"body": 1}, {"body": 2}, {"body": 3})
        r = await self.node.request("DELETE", f"/v2/queues/q/messages/{ids[0]}")
        self.assertEqual(r.code, 204)
        r = await self.node.request("DELETE", f"/v2/queues/q/messages/{ids[0]}")
        self.assertEqual(r.code, 204)
        r = await self.node.request(
            "DELETE", f"/v2/queues/q/messages?ids={ids[1]},{ids[2]}"
        )
        self.assertEqual(r.code, 204)
        r = await self.node.request("GET", "/v2/queues/q/stats")
        self.assertEqual(r.json["messages"]["total"], 0)

    async def test_deleteNeedsOneMode(self) -> None:
        """
        DELETE on the collection needs exactly one of ids and pop.
        """
        self.assertError(
            await self.node.request("DELETE", "/v2/queues/q/messages"), 400
        )
        r = await self.node.request("DELETE", "/v2/queues/q/messages?ids=a&pop=1")
        self.assertError(r, 400)
        for pop in ("0", "21", "x", ""):
            r = await self.node.request("DELETE", f"/v2/queues/q/messages?pop={pop}")
            self.assertError(r, 400)

    async def test_pop(self) -> None:
        """
        Pop removes and returns the oldest messages.
        """
        await self.node.post("q", {"body": 1}, {"body": 2}, {"body": 3})
        r = await self.node.request("DELETE", "/v2/queues/q/messages?pop=2")
        self.assertEqual(r.code, 200)
        self.assertEqual([m["body"] for m in r.json["messages"]], [1, 2])
        r = await self.node.request("GET", "/v2/queues/q/stats")
        self.assertEqual(r.json["messages"]["total"], 1)

    async def test_isolation(self) -> None:
        """
        Another project cannot read, delete or claim a project's messages by
        id or by queue name.
        """
        [mid] = await self.node.post("q", {"body": "secret"})
        other = {"project": "intruder"}
        r = await self.node.request("GET", f"/v2/queues/q/messages/{mid}", **other)
        self.assertError(r, 404)
        r = await self.node.request("GET", f"/v2/queues/q/messages?ids={mid}", **other)
        self.assertError(r, 404)
        r = await self.node.request("GET", "/v2/queues/q/messages?echo=true", **other)
        self.assertEqual(r.json["messages"], [])
        r = await self.node.request("POST", "/v2/queues/q/claims", {}, **other)
        self.assertEqual(r.code, 204)
        await self.node.request("DELETE", f"/v2/queues/q/messages/{mid}", **other)
        await self.node.request("DELETE", f"/v2/queues/q/messages?ids={mid}", **other)
        await self.node.request("DELETE", "/v2/queues/q/messages?pop=5", **other)
        await self.node.request("DELETE", "/v2/queues/q", **other)
        r = await self.node.request("GET", f"/v2/queues/q/messages/{mid}")
        self.assertEqual(r.json["body"], "secret")


class ClaimTests(APITestCase):
    async def test_claimLifecycle(self) -> None:
        """
        A claim answers 201 with its messages and Location; it can be read,
        renewed and released; its messages are deleted with its id.
        """
        ids = await self.node.post("q", {"body": 1}, {"body": 2}, {"body": 3})
        r = await self.node.request(
            "POST", "/v2/queues/q/claims?limit=2", {"ttl": 60, "grace": 30}
        )
        self.assertEqual(r.code, 201)
        location = r.header("location")
        cid = location.rsplit("/", 1)[1]
        self.assertEqual(location, f"/v2/queues/q/claims/{cid}")
        hrefs = [m["href"] for m in r.json["messages"]]
        self.assertEqual(
            hrefs, [f"/v2/queues/q/messages/{i}?claim_id={cid}" for i in ids[:2]]
        )
        self.node.clock.advance(10)
        r = await self.node.request("GET", location)
        self.assertEqual((r.json["ttl"], r.json["age"]), (60, 10))
        self.assertEqual([m["id"] for m in r.json["messages"]], ids[:2])
        r = await self.node.request("PATCH", location, {"ttl": 300, "grace": 60})
        self.assertEqual(r.code, 204)
        r = await self.node.request("GET", location)
        self.assertEqual((r.json["ttl"], r.json["age"]), (300, 0))
        r = await self.node.request("DELETE", hrefs[0])
        self.assertEqual(r.code, 204)
        r = await self.node.request("DELETE", location)
        self.assertEqual(r.code, 204)
        self.assertError(await self.node.request("GET", location), 404)
        r = await self.node.request("GET", "/v2/queues/q/stats")
        self.assertEqual(r.json["messages"]["free"], 2)

    async def test_nothingToClaim(self) -> None:
        """
        A claim on an empty or missing queue is 204 with no body.
        """
        r = await self.node.request("POST", "/v2/queues/none/claims", {})
        self.assertEqual((r.code, r.body), (204, b""))

    async def test_claimDefaults(self) -> None:
        """
        A claim without a body uses TTL 300 and takes up to 10 messages.
        """
        await self.node.post("q", *({"body": i} for i in range(12)))
        r = await self.node.request("POST", "/v2/queues/q/claims")
        self.assertEqual(len(r.json["messages"]), 10)
        r = await self.node.request("GET", r.header("location"))
        self.assertEqual(r.json["ttl"], 300)

    async def test_claimBounds(self) -> None:
        """
        TTL, grace and limit out of range are 400.
        """
        for path, body in [
            ("", {"ttl": 59}),
            ("", {"ttl": 43201}),
            ("", {"grace": -1}),
            ("", {"ttl": "x"}),
            ("", [1]),
            ("?limit=21", {}),
            ("?limit=0", {}),
        ]:
            r = await self.node.request("POST", f"/v2/queues/q/claims{path}", body)
            self.assertError(r, 400)

    async def test_deleteClaimedMessage(self) -> None:
        """
        A claimed message cannot be deleted without its claim (403) or with
        an expired one (400); with its live claim it is deleted.
        """
        [mid] = await self.node.post("q", {"body": 1})
        r = await self.node.request("POST", "/v2/queues/q/claims", {"ttl": 60})
        href = r.json["messages"][0]["href"]
        self.assertError(
            await self.node.request("DELETE", f"/v2/queues/q/messages/{mid}"), 403
        )
        self.node.clock.advance(60)
        self.assertError(await self.node.request("DELETE", href), 400)
        r = await self.node.request("POST", "/v2/queues/q/claims", {"ttl": 60})
        href = r.json["messages"][0]["href"]
        self.assertEqual((await self.node.request("DELETE", href)).code, 204)
        self.assertError(
            await self.node.request("GET", f"/v2/queues/q/messages/{mid}"), 404
        )

    async def test_claimExpiryReleases(self) -> None:
        """
        When a claim expires its messages can be claimed again.
        """
        await self.node.post("q", {"body": 1})
        await self.node.request("POST", "/v2/queues/q/claims", {"ttl": 60})
        r = await self.node.request("POST", "/v2/queues/q/claims", {})
        self.assertEqual(r.code, 204)
        self.node.clock.advance(60)
        r = await self.node.request("POST", "/v2/queues/q/claims", {})
        self.assertEqual(r.code, 201)

    async def test_renewMissing(self) -> None:
        """
        Renewing a claim that does not exist is 404.
        """
        r = await self.node.request("PATCH", "/v2/queues/q/claims/nope", {"ttl": 60})
        self.assertError(r, 404)

    async def test_bulkDeleteWithClaim(self) -> None:
        """
        A consumer deletes everything it claimed with one request naming the
        ids and its claim id; messages of another live claim stay.
        """
        await self.node.post("q", *({"body": i} for i in range(4)))
        mine = await self.node.request("POST", "/v2/queues/q/claims?limit=2", {})
        theirs = await self.node.request("POST", "/v2/queues/q/claims?limit=2", {})
        cid = mine.header("location").rsplit("/", 1)[1]
        ids = [m["id"] for m in mine.json["messages"] + theirs.json["messages"]]
        r = await self.node.request(
            "DELETE", f"/v2/queues/q/messages?ids={','.join(ids)}&claim_ids={cid}"
        )
        self.assertEqual(r.code, 204)
        r = await self.node.request("GET", "/v2/queues/q/stats")
        self.assertEqual(r.json["messages"]["claimed"], 2)
        self.assertEqual(r.json["messages"]["total"], 2)

    async def test_deadLetter(self) -> None:
        """
        A message claimed more than C{_max_claim_count} times moves to the
        dead letter queue with the dead letter TTL.
        """
        meta = {
            "_max_claim_count": 1,
            "_dead_letter_queue": "dead",
            "_dead_letter_queue_messages_ttl": 777,
        }
        await self.node.request("PUT", "/v2/queues/q", meta)
        [mid] = await self.node.post("q", {"body": "poison"})
        r = await self.node.request("POST", "/v2/queues/q/claims", {"ttl": 60})
        self.assertEqual(r.code, 201)
        self.node.clock.advance(60)
        r = await self.node.request("POST", "/v2/queues/q/claims", {"ttl": 60})
        self.assertEqual(r.code, 204)
        r = await self.node.request("GET", "/v2/queues/dead/messages?echo=true")
        [dead] = r.json["messages"]
        self.assertEqual((dead["id"], dead["body"], dead["ttl"]), (mid, "poison", 777))


class LimitTests(APITestCase):
    def setUp(self) -> None:
        self.node = Node(self, Limits(maxMessagesPostSize=1000))

    async def test_contentLengthTooLarge(self) -> None:
        """
        A declared body over the limit is refused with 413 before it is read.
        """
        r = await self.node.request(
            "POST",
            "/v2/queues/q/messages",
            raw=b'{"messages":[{"body":"' + b"x" * 2000 + b'"}]}',
        )
        self.assertEqual(r.code, 413)
        self.assertEqual(r.json["title"], "Payload too large")
        r = await self.node.request("GET", "/v2/queues/q/stats")
        self.assertEqual(r.json["messages"]["total"], 0)

    async def test_withinLimit(self) -> None:
        """
        A body within the limit is accepted.
        """
        r = await self.node.request(
            "POST", "/v2/queues/q/messages", {"messages": [{"body": "x" * 500}]}
        )
        self.assertEqual(r.code, 201)

    async def test_chunkedBodyCutOff(self) -> None:
        """
        A chunked body that grows past the limit is cut off with 413 and the
        connection is closed; nothing is stored.
        """
        import socket

        from twisted.internet.threads import deferToThread

        port = self.node.port.getHost().port

        def send() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(
                    b"POST /v2/queues/q/messages HTTP/1.1\r\nHost: x\r\n"
                    b"Client-ID: abc\r\nX-Project-ID: p\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                answer = b""
                try:
                    for _ in range(100):
                        s.sendall(b"200\r\n" + b"x" * 0x200 + b"\r\n")
                except OSError:
                    pass
                try:
                    while chunk := s.recv(65536):
                        answer += chunk
                except OSError:
                    pass
                return answer

        answer = await deferToThread(send)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413"), answer[:80])
        r = await self.node.request("GET", "/v2/queues/q/stats")
        self.assertEqual(r.json["messages"]["total"], 0)


class TrailingNewlineTests(APITestCase):
    """
    Names are matched whole: a pattern ending in C{$} would also take a
    name with a trailing newline.
    """

    async def assertNothingCreated(self, project: str = "p") -> None:
        r = await self.node.request("GET", "/v2/queues", project=project)
        self.assertEqual(r.json["queues"], [])

    async def test_queueName(self) -> None:
        """
        C{PUT /v2/queues/foo%0A} is 400 and creates no queue C{"foo\\n"}.
        """
        r = await self.node.request("PUT", "/v2/queues/foo%0A")
        self.assertError(r, 400)
        self.assertIsNone(r.header("location"))
        await self.assertNothingCreated()

    async def test_projectInURL(self) -> None:
        """
        A project in the URL with a trailing newline is 400.
        """
        r = await self.node.request("PUT", "/v2/projects/p%0A/queues/q", project=None)
        self.assertError(r, 400)
        await self.assertNothingCreated("p\n")

    async def test_deadLetterQueue(self) -> None:
        """
        A C{_dead_letter_queue} with a trailing newline is 400.
        """
        r = await self.node.request(
            "PUT", "/v2/queues/q", {"_dead_letter_queue": "dead\n"}
        )
        self.assertError(r, 400)
        await self.assertNothingCreated()

    async def test_tags(self) -> None:
        """
        A message tag, or a tag in a filter, with a trailing newline is 400.
        """
        r = await self.node.request(
            "POST",
            "/v2/queues/q/messages",
            {"messages": [{"body": 1, "tags": ["a\n"]}]},
        )
        self.assertError(r, 400)
        r = await self.node.request("GET", "/v2/queues/q/messages?tags=a%0A")
        self.assertError(r, 400)
        r = await self.node.request("GET", "/v2/queues/q/stats")
        self.assertEqual(r.json["messages"]["total"], 0)


class RedirectTests(APITestCase):
    async def test_doubleSlashNoRedirect(self) -> None:
        """
        A path with C{//} is not redirected (werkzeug would merge the
        slashes and redirect to the host the client named): it is a JSON
        404 with no C{Location}.
        """
        r = await self.node.request(
            "GET", "/v2//queues/q/stats", headers={"Host": "evil.example"}
        )
        self.assertError(r, 404)
        self.assertIsNone(r.header("location"))
