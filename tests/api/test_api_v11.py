"""
v1.1 answers as Zaqar's v1.1 did, and v2 keeps its documented differences:
each case below is a difference the side-by-side comparison with Zaqar
(C{python -m tests.zaqar_compare}) found, checked here against Marconi
alone.
"""

from twisted.trial.unittest import SynchronousTestCase, TestCase

from marconi.api import versions
from tests.api.test_api_unit import InMemoryNode
from tests.apihelpers import Node
from tests.zaqar_compare import Answer, allowed, differences, shape

MSG = {"body": {"event": "x"}, "ttl": 300}


class V11Tests(SynchronousTestCase):
    def setUp(self) -> None:
        self.node = InMemoryNode(self)

    def both(self, method: str, path: str, *args, **kwargs) -> tuple:
        """
        The same request under /v1.1 and under /v2.
        """
        return tuple(
            self.node.request(method, f"/{version}{path}", *args, **kwargs)
            for version in ("v1.1", "v2")
        )

    def test_queueMetadataAsStored(self) -> None:
        """
        C{GET /v1.1/queues/q} gives only what the user stored; v2 adds the
        reserved settings with their defaults.
        """
        self.node.request("PUT", "/v1.1/queues/q", {"owner": "a"})
        old, new = self.both("GET", "/queues/q")
        self.assertEqual(old.json, {"owner": "a"})
        self.assertEqual(new.json["owner"], "a")
        self.assertEqual(new.json["_default_message_ttl"], 3600)

    def test_statsWithoutDelayed(self) -> None:
        """
        v1.1 stats count free, claimed and total only; the oldest and newest
        messages are shown as Zaqar shows them (no id); v2 adds C{delayed}
        and the ids.
        """
        self.node.post("q", MSG)
        old, new = self.both("GET", "/queues/q/stats")
        self.assertEqual(
            sorted(old.json["messages"]),
            ["claimed", "free", "newest", "oldest", "total"],
        )
        self.assertEqual(
            sorted(old.json["messages"]["oldest"]),
            ["age", "body", "claim_count", "claim_id", "created", "href", "ttl"],
        )
        self.assertEqual(old.json["messages"]["oldest"]["body"], {"event": "x"})
        self.assertEqual(new.json["messages"]["delayed"], 0)
        self.assertIn("id", new.json["messages"]["oldest"])

    def test_headOnQueue(self) -> None:
        """
        C{HEAD} on a v1.1 queue is 405 with an C{Allow} header without
        HEAD; v2 answers it as GET without a body.
        """
        old, new = self.both("HEAD", "/queues/q")
        self.assertEqual(old.code, 405)
        allow = old.header("allow").split(", ")
        self.assertIn("GET", allow)
        self.assertNotIn("HEAD", allow)
        self.assertEqual(new.code, 200)

    def test_patchQueue(self) -> None:
        """
        v1.1 has no queue PATCH (405, PATCH not in C{Allow}); v2 has.
        """
        body = b'[{"op": "add", "path": "/metadata/k", "value": 1}]'
        headers = {"Content-Type": "application/openstack-messaging-v2.0-json-patch"}
        self.node.request("PUT", "/v2/queues/q", {})
        old, new = self.both("PATCH", "/queues/q", raw=body, headers=headers)
        self.assertEqual(old.code, 405)
        self.assertNotIn("PATCH", old.header("allow"))
        self.assertEqual(new.code, 200)

    def test_clientIdMustBeUUID(self) -> None:
        """
        v1.1 refuses a C{Client-ID} that is not a UUID with Zaqar's title;
        v2 accepts any printable token.
        """
        old, new = self.both("GET", "/queues/q/messages", client="1234")
        self.assertEqual(old.code, 400)
        self.assertEqual(old.json["title"], "Wrong UUID value")
        self.assertEqual(new.code, 200)
        missing = self.node.request("GET", "/v1.1/queues/q/messages", client=None)
        self.assertEqual(missing.code, 400)
        self.assertEqual(missing.json["title"], "Missing header value")

    def test_claimGrace(self) -> None:
        """
        v1.1 claims need a grace of at least 60 (0, 1, 30 and 59 are 400,
        and nothing is claimed); v2 accepts them.
        """
        self.node.post("q", MSG)
        for grace in (0, 1, 30, 59):
            r = self.node.request(
                "POST", "/v1.1/queues/q/claims", {"ttl": 60, "grace": grace}
            )
            self.assertEqual(r.code, 400, grace)
            self.assertEqual(r.json["title"], "Invalid API request")
        self.assertEqual(self.node.stats("q")["claimed"], 0)
        for body in ({"ttl": 60, "grace": 50_000}, {"ttl": 50_000, "grace": 60}):
            r = self.node.request("POST", "/v1.1/queues/q/claims", body)
            self.assertEqual(r.code, 400, body)
        r = self.node.request("POST", "/v2/queues/q/claims", {"ttl": 60, "grace": 0})
        self.assertEqual(r.code, 201)

    def test_claimShape(self) -> None:
        """
        A v1.1 claim shows C{href}, C{ttl}, C{age} and its messages without
        checksums; v2 adds C{id} and C{grace}.
        """
        self.node.post("q", MSG)
        r = self.node.request("POST", "/v1.1/queues/q/claims", {"ttl": 60})
        self.assertEqual(r.code, 201)
        self.assertNotIn("checksum", r.json["messages"][0])
        location = r.header("location")
        old = self.node.request("GET", location)
        self.assertEqual(sorted(old.json), ["age", "href", "messages", "ttl"])
        new = self.node.request("GET", location.replace("/v1.1/", "/v2/"))
        self.assertEqual(new.json["grace"], 60)
        self.assertIn("id", new.json)

    def test_noChecksums(self) -> None:
        """
        v1.1 messages have no checksum; v2 messages have one.
        """
        self.node.post("q", MSG)
        old, new = self.both("GET", "/queues/q/messages?echo=true")
        self.assertEqual(
            sorted(old.json["messages"][0]), ["age", "body", "href", "id", "ttl"]
        )
        self.assertTrue(new.json["messages"][0]["checksum"].startswith("MD5:"))

    def test_malformedMarker(self) -> None:
        """
        On v1.1 a malformed marker is ignored (200, listing from the start,
        an empty page for a missing queue); on v2 it is 400.
        """
        self.node.post("q", MSG)
        old, new = self.both("GET", "/queues/q/messages?echo=true&marker=invalid")
        self.assertEqual(old.code, 200)
        self.assertEqual([m["body"] for m in old.json["messages"]], [{"event": "x"}])
        self.assertEqual(new.code, 400)
        empty = self.node.request("GET", "/v1.1/queues/none/messages?marker=invalid")
        self.assertEqual((empty.code, empty.json), (200, {"messages": [], "links": []}))
        bad = self.node.request("GET", "/v1.1/queues/q/messages?marker=x&limit=99")
        self.assertEqual(bad.code, 400)

    def test_bareListRefused(self) -> None:
        """
        v1.1 posts must be C{{"messages": [...]}}: a bare list is 400 and
        stores nothing; v2 takes it.
        """
        old, new = self.both("POST", "/queues/q/messages", [MSG])
        self.assertEqual(old.code, 400)
        self.assertEqual(new.code, 201)
        self.assertEqual(self.node.stats("q")["total"], 1)

    def test_locationOnExistingQueue(self) -> None:
        """
        PUT of an existing queue answers 204 with its C{Location}, as Zaqar.
        """
        self.node.request("PUT", "/v1.1/queues/q", {})
        r = self.node.request("PUT", "/v1.1/queues/q", {})
        self.assertEqual(r.code, 204)
        self.assertEqual(r.header("location"), "/v1.1/queues/q")


class ZaqarAnswersTests(SynchronousTestCase):
    """
    What both versions answer as Zaqar does, and what v1.1 alone does.
    """

    def setUp(self) -> None:
        self.node = InMemoryNode(self)

    def both(self, method: str, path: str, *args, **kwargs) -> tuple:
        return tuple(
            self.node.request(method, f"/{version}{path}", *args, **kwargs)
            for version in ("v1.1", "v2")
        )

    def assertTitle(self, answers: tuple, code: int, title: str) -> None:
        for answer in answers:
            self.assertEqual((answer.code, answer.json["title"]), (code, title))

    def test_errorTitles(self) -> None:
        """
        Errors carry Zaqar's titles under both versions: the body's shape,
        the queue name, a missing project or Client-ID, a value out of
        range each have their own.
        """
        body = "Invalid request body"
        cases = [
            (("PUT", "/queues/a@b", {}), "Invalid queue identification"),
            (("PUT", "/queues/" + "q" * 65, {}), "Invalid queue identification"),
            (("PUT", "/queues/q2", None), body, {"raw": b"{"}),
            (("PUT", "/queues/q2", [1]), body),
            (("POST", "/queues/q/messages", {"messages": [{"ttl": 60}]}), body),
            (
                ("POST", "/queues/q/messages", {"messages": [{"body": 1, "ttl": "6"}]}),
                body,
            ),
            (("POST", "/queues/q/messages", None), body, {"raw": b""}),
            (("POST", "/queues/q/claims", None), body, {"raw": b"{"}),
            (("POST", "/queues/q/claims", {"ttl": "60"}), body),
            (("GET", "/queues?limit=0"), "Invalid API request"),
            (("POST", "/queues/q/claims?limit=0", {"ttl": 60}), "Invalid API request"),
            (("GET", "/queues", None), "Project-Id Missing", {"project": None}),
            (
                ("GET", "/queues/q/messages", None),
                "Missing header value",
                {"client": None},
            ),
        ]
        for case in cases:
            args, title = case[0], case[1]
            kwargs = case[2] if len(case) > 2 else {}
            self.assertTitle(self.both(*args, **kwargs), 400, title)

    def test_deleteWithUnknownClaim(self) -> None:
        """
        Deleting a claimed message with a claim id that does not exist is
        400 (as Zaqar), without one 403, both titled C{Unable to delete};
        the message stays.
        """
        [mid] = self.node.post("q", MSG)
        self.node.claim("q", ttl=60)
        self.assertTitle(
            self.both("DELETE", f"/queues/q/messages/{mid}?claim_id=nosuch"),
            400,
            "Unable to delete",
        )
        self.assertTitle(
            self.both("DELETE", f"/queues/q/messages/{mid}"), 403, "Unable to delete"
        )
        self.assertEqual(self.node.stats("q")["total"], 1)

    def test_deleteWithOtherLiveClaim(self) -> None:
        """
        A live claim that holds another message is refused with 403.
        """
        [first, second] = self.node.post("q", MSG, MSG)
        self.node.claim("q", "?limit=1", ttl=60)
        other = self.node.claim("q", "?limit=1", ttl=60).header("location")
        claimId = other.rsplit("/", 1)[-1]
        answers = self.both("DELETE", f"/queues/q/messages/{first}?claim_id={claimId}")
        self.assertTitle(answers, 403, "Unable to delete")

    def test_emptyCreatedIsTyped(self) -> None:
        """
        The empty 201 of a created queue has a JSON Content-Type, as Zaqar's.
        """
        for version in ("v1.1", "v2"):
            answer = self.node.request("PUT", f"/{version}/queues/new-{version}", {})
            self.assertEqual((answer.code, answer.body), (201, b""))
            self.assertTrue(
                answer.header("content-type").startswith("application/json")
            )

    def test_poppedClaimId(self) -> None:
        """
        Popped messages name the (gone) claim that took them out: one id,
        a string, for the whole pop.
        """
        self.node.post("q", MSG, MSG, MSG)
        for answer in self.both("DELETE", "/queues/q/messages?pop=1"):
            [message] = answer.json["messages"]
            self.assertIsInstance(message["claim_id"], str)
        r = self.node.request("DELETE", "/v2/queues/q/messages?pop=2")
        ids = {m["claim_id"] for m in r.json["messages"]}
        self.assertEqual(len(ids), 1)
        [claimId] = ids
        self.assertEqual(
            self.node.request("GET", f"/v2/queues/q/claims/{claimId}").code, 404
        )

    def test_routingErrorsV11(self) -> None:
        """
        Under v1.1, 404 and 405 have only a title and 406 no body, as Zaqar;
        v2 keeps its title and description.
        """
        old, new = self.both("GET", "/nosuch")
        self.assertEqual(old.json, {"title": "404 Not Found"})
        self.assertEqual(sorted(new.json), ["description", "title"])
        old = self.node.request("PATCH", "/v1.1/queues/q", raw=b"[]")
        self.assertEqual(
            (old.code, old.json), (405, {"title": "405 Method Not Allowed"})
        )
        self.assertNotIn("PATCH", old.header("allow"))
        old, new = self.both("GET", "/queues", headers={"Accept": "text/plain"})
        self.assertEqual((old.code, old.body), (406, b""))
        self.assertEqual(new.code, 406)
        self.assertEqual(sorted(new.json), ["description", "title"])

    def test_delayAndTagsDropped(self) -> None:
        """
        v1.1 reads only a message's ttl and body: a delay (even one that is
        not an integer) and tags are dropped, and the queue's default delay
        does not apply; v2 honours them.
        """
        self.node.request("PUT", "/v2/queues/q", {"_default_message_delay": 300})
        tagged = {"body": 1, "ttl": 300, "delay": 300, "tags": ["a"]}
        r = self.node.request("POST", "/v1.1/queues/q/messages", {"messages": [tagged]})
        self.assertEqual(r.code, 201, r.body)
        bad = {"messages": [{"body": 2, "ttl": 300, "delay": "x", "tags": 5}]}
        old, new = self.both("POST", "/queues/q/messages", bad)
        self.assertEqual((old.code, new.code), (201, 400))
        listed = self.node.request("GET", "/v1.1/queues/q/messages?echo=true")
        self.assertEqual([m["body"] for m in listed.json["messages"]], [1, 2])
        self.assertNotIn("tags", listed.json["messages"][0])
        self.node.request("POST", "/v2/queues/q/messages", {"messages": [tagged]})
        listed = self.node.request("GET", "/v2/queues/q/messages?echo=true")
        self.assertEqual([m["body"] for m in listed.json["messages"]], [1, 2])

    def test_renewGrace(self) -> None:
        """
        Renewing a claim does not check its grace under v1.1 (a grace out
        of range is brought within the limits) but does under v2; a grace
        that is not an integer is refused by both.
        """
        self.node.post("q", MSG)
        claimId = self.node.claim("q", ttl=60).header("location").rsplit("/", 1)[-1]
        path = f"/queues/q/claims/{claimId}"
        old, new = self.both("PATCH", path, {"ttl": 120, "grace": 50_000})
        self.assertEqual((old.code, new.code), (204, 400))
        self.assertEqual(self.node.request("GET", "/v2" + path).json["grace"], 43200)
        self.assertTitle(
            self.both("PATCH", path, {"ttl": 120, "grace": "x"}),
            400,
            "Invalid request body",
        )


class TooLargeTests(TestCase):
    async def test_tooLarge(self) -> None:
        """
        A post over 262,144 bytes is 400 on v1.1 (as Zaqar) and 413 on v2,
        with a JSON error either way.
        """
        node = Node(self)
        big = {"messages": [{"body": "x" * 270_000, "ttl": 300}]}
        old = await node.request("POST", "/v1.1/queues/q/messages", big)
        self.assertEqual(old.code, 400)
        self.assertEqual(old.json["title"], "Invalid API request")
        new = await node.request("POST", "/v2/queues/q/messages", big)
        self.assertEqual(new.code, 413)


class PolicyTests(SynchronousTestCase):
    def test_forPath(self) -> None:
        """
        Paths under /v1.1 get the v1.1 policy; anything else v2's.
        """
        self.assertIs(versions.forPath(b"/v1.1/queues"), versions.V1_1)
        self.assertIs(versions.forPath(b"/v1.1"), versions.V1_1)
        self.assertIs(versions.forPath(b"/v1.10/x"), versions.V2)
        self.assertIs(versions.forPath(b"/v2/queues"), versions.V2)


class CompareTests(SynchronousTestCase):
    """
    The comparison's own logic, without the servers.
    """

    def test_shape(self) -> None:
        """
        Shapes keep keys, list lengths and types, and error titles.
        """
        self.assertEqual(
            shape({"a": [1, "x"], "b": None}), {"a": ["int", "str"], "b": "null"}
        )
        self.assertEqual(
            shape({"title": "T", "description": "d"}),
            {"title": "T", "description": "str"},
        )

    def test_differences(self) -> None:
        """
        Status, header names and shapes are each reported.
        """
        a = Answer(200, frozenset({"location"}), {"x": "int"})
        self.assertEqual(differences(a, a), [])
        b = Answer(201, frozenset(), {"x": "str"})
        self.assertEqual(len(differences(a, b)), 3)

    def test_allowedFromDocs(self) -> None:
        """
        The allow-list is read from docs/api.rst's differences section, and
        lists only steps of the corpus.
        """
        from tests.zaqar_compare import DOCS, corpus

        with open(DOCS, encoding="utf-8") as f:
            listed = allowed(f.read())
        self.assertIn(("v2", "head-queue"), listed)
        self.assertIn(("v2", "list-messages-bad-marker"), listed)
        names = {step.name for step in corpus()}
        self.assertEqual({name for _, name in listed} - names, set())
        self.assertEqual(
            allowed("Where Marconi differs from Zaqar\n``v2 x``\n"), {("v2", "x")}
        )
