"""
The C{safety} parameter end to end: through the HTTP API of an in-process
node, and under SIGKILL with the fault harness (C{bench/faults}) against
the real daemon on SQLite.
"""

import re

from twisted.trial.unittest import TestCase

from marconi.api.openapi import document
from tests.apihelpers import Node
from tests.integration.test_faults import runHarness


class HarnessSafetyTests(TestCase):
    """
    Short harness runs (load, the node killed with SIGKILL and frozen past
    the claim TTL) at each level a SQLite node gives: docs/storage.rst
    says neither C{fast} nor C{durable} loses an acknowledged change to a
    SIGKILL of the node.
    """

    timeout = 120

    async def checkedRun(self, *options: str) -> dict:
        r, _ = await runHarness(self, "6", "20261130", *options)
        self.assertGreaterEqual(r["pauses"], 1)
        # Every level asked for was accepted: no post was refused.
        self.assertEqual(r["counts"].get("post_400", 0), 0)
        return r

    async def test_fastLosesNothingToKill(self) -> None:
        """
        Every write asking for C{safety=fast}: nothing acknowledged is
        lost, nothing deleted comes back.
        """
        r = await self.checkedRun("--safety", "fast")
        self.assertEqual(r["safety"], "fast")

    async def test_durableOverFastDefault(self) -> None:
        """
        A node whose default is C{fast}, every write asking for
        C{safety=durable}: nothing acknowledged is lost.
        """
        r = await self.checkedRun("--default-safety", "fast", "--safety", "durable")
        self.assertEqual((r["default_safety"], r["safety"]), ("fast", "durable"))


WRITES = (
    ("POST", "/v2/queues/q/messages", {"messages": [{"body": 1, "ttl": 60}]}),
    ("POST", "/v2/queues/q/claims", {"ttl": 60, "grace": 60}),
    ("DELETE", "/v2/queues/q/messages/{id}", None),
    ("DELETE", "/v2/queues/q/messages?ids={id}", None),
    ("DELETE", "/v2/queues/q/messages?pop=1", None),
)


class APISafetyTests(TestCase):
    """
    C{?safety=} on the writes of the HTTP API, on a SQLite node.
    """

    async def setUp(self) -> None:
        self.node = Node(self)
        [self.kept] = await self.node.post("q", {"body": 0, "ttl": 60})

    async def send(self, method: str, path: str, body: object, safety: str) -> object:
        separator = "&" if "?" in path else "?"
        path = path.format(id=self.kept) + separator + "safety=" + safety
        return await self.node.request(method, path, body)

    async def test_unknownLevel(self) -> None:
        """
        An unknown level on any write is a 400 with a title and a
        description naming the levels, and changes nothing.
        """
        for method, path, body in WRITES:
            for safety in ("eventual", "", "fast%00"):
                response = await self.send(method, path, body, safety)
                self.assertEqual(response.code, 400, (method, path, safety))
                self.assertEqual(response.json["title"], "Invalid API request")
                self.assertIn("fast, durable, replicated", response.json["description"])
        await self.assertUnchanged()

    async def test_replicatedWithoutReplicas(self) -> None:
        """
        C{safety=replicated} on a store without replicas is a 400 saying
        so, on every write, and changes nothing.
        """
        for method, path, body in WRITES:
            response = await self.send(method, path, body, "replicated")
            self.assertEqual(response.code, 400, (method, path))
            self.assertIn("no replicas", response.json["description"])
        await self.assertUnchanged()

    async def assertUnchanged(self) -> None:
        response = await self.node.request("GET", "/v2/queues/q/stats")
        self.assertEqual(response.json["messages"]["free"], 1)
        self.assertEqual(response.json["messages"]["claimed"], 0)

    async def test_levelsAccepted(self) -> None:
        """
        C{fast} and C{durable} (in any case) are accepted on every write,
        which does what it does without the parameter.
        """
        for safety in ("fast", "DURABLE"):
            ids = await self.node.post(
                "r", {"body": 1, "ttl": 60}, {"body": 2, "ttl": 60}
            )
            response = await self.node.request(
                "POST", f"/v2/queues/r/messages?safety={safety}",
                {"messages": [{"body": 3, "ttl": 60}]},
            )  # fmt: skip
            self.assertEqual(response.code, 201)
            ids += [h.rsplit("/", 1)[1] for h in response.json["resources"]]
            response = await self.node.request(
                "POST", f"/v2/queues/r/claims?limit=1&safety={safety}", {"ttl": 60}
            )
            self.assertEqual(response.code, 201)
            claimed = response.json["messages"][0]
            self.assertEqual(claimed["id"], ids[0])
            response = await self.node.request(
                "DELETE", claimed["href"] + f"&safety={safety}"
            )
            self.assertEqual(response.code, 204)
            response = await self.node.request(
                "DELETE", f"/v2/queues/r/messages?ids={ids[1]}&safety={safety}"
            )
            self.assertEqual(response.code, 204)
            response = await self.node.request(
                "DELETE", f"/v2/queues/r/messages?pop=5&safety={safety}"
            )
            self.assertEqual(response.code, 200)
            self.assertEqual([m["id"] for m in response.json["messages"]], ids[2:])


class OpenAPISafetyTests(TestCase):
    """
    The OpenAPI document describes C{safety}.
    """

    def test_onEveryWrite(self) -> None:
        """
        C{safety} is a parameter of exactly the writes that take it
        (posting, claiming, deleting one or several, popping), under both
        forms of the queue paths, with a pattern naming the three levels.
        """
        found = set()
        for path, item in document()["paths"].items():
            for method, operation in item.items():
                if method == "parameters":
                    continue
                for parameter in operation.get("parameters", []):
                    if parameter.get("name") == "safety":
                        found.add((method, path.split("/queues/{queue}")[1]))
                        pattern = parameter["schema"]["pattern"]
                        for level in ("fast", " Durable", "REPLICATED"):
                            self.assertTrue(re.match(pattern, level), level)
                        self.assertIsNone(re.match(pattern, "eventual"))
        self.assertEqual(
            found,
            {
                ("post", "/messages"),
                ("delete", "/messages"),
                ("delete", "/messages/{message_id}"),
                ("post", "/claims"),
            },
        )
