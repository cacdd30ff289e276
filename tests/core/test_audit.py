"""
Tests for the audit river: what a scripted run records, how it is read
(filters, pages), what it never holds, and who can see it.
"""

import json
import os
from typing import Any

from twisted.trial.unittest import TestCase

from marconi.config import ConfigError, load
from marconi.core import audit
from marconi.core.audit import RIVER, AuditRiver, AuditSettings
from marconi.core.limits import Limits
from marconi.core.messaging import Messaging
from marconi.storage.memory.store import MemoryStore
from tests.apihelpers import START, Node
from tests.integration.test_node import NodeTestCase

SECRET = "top-secret-body-text"


class AuditRiverTests(TestCase):
    """
    The river of a node over in-memory SQLite, driven through the API.
    """

    def setUp(self) -> None:
        self.node = Node(self)

    async def events(self, query: str = "", project: str = "p") -> list:
        r = await self.node.request("GET", f"/v2/audit{query}", project=project)
        self.assertEqual(r.code, 200, r.body)
        return r.json["events"]

    async def script(self) -> dict:
        """
        Create a queue with a dead letter queue, then post, claim, renew,
        release, delete, pop, expire and dead-letter, and make one request
        that is refused.
        """
        n = self.node
        meta = {"_max_claim_count": 2, "_dead_letter_queue": "dlq"}
        r = await n.request("PUT", "/v2/queues/orders", meta)
        self.assertEqual(r.code, 201)
        first, second = await n.post(
            "orders",
            {"body": {"card": SECRET}, "ttl": 300, "tags": ["eu"]},
            {"body": SECRET, "ttl": 300},
        )
        r = await n.request("POST", "/v2/queues/orders/claims?limit=1", {"ttl": 60})
        claim = r.json["messages"][0]["href"].rsplit("claim_id=", 1)[1]
        r = await n.request("PATCH", f"/v2/queues/orders/claims/{claim}", {"ttl": 90})
        self.assertEqual(r.code, 204)
        r = await n.request("DELETE", f"/v2/queues/orders/claims/{claim}")
        self.assertEqual(r.code, 204)
        r = await n.request("POST", "/v2/queues/orders/claims?limit=1", {"ttl": 60})
        again = r.json["messages"][0]["href"].rsplit("claim_id=", 1)[1]
        r = await n.request(
            "DELETE", f"/v2/queues/orders/messages/{first}?claim_id={again}"
        )
        self.assertEqual(r.code, 204)
        r = await n.request("DELETE", "/v2/queues/orders/messages?pop=1")
        self.assertEqual([m["id"] for m in r.json["messages"]], [second])
        # One that expires, purged on the node's clock.
        [short] = await n.post("orders", {"body": SECRET, "ttl": 60})
        n.clock.advance(61)
        self.assertEqual(await n.bus.purgeExpired(), 1)
        # One claimed twice, moved to the dead letter queue by the third.
        [doomed] = await n.post("orders", {"body": SECRET, "ttl": 300})
        for _ in range(2):
            r = await n.request("POST", "/v2/queues/orders/claims", {"ttl": 60})
            held = r.json["messages"][0]["href"].rsplit("claim_id=", 1)[1]
            await n.request("DELETE", f"/v2/queues/orders/claims/{held}")
        r = await n.request("POST", "/v2/queues/orders/claims", {"ttl": 60})
        self.assertEqual(r.code, 204)
        r = await n.request("GET", "/v2/queues/orders/claims/nonexistent")
        self.assertEqual(r.code, 404)
        return {"first": first, "second": second, "short": short, "doomed": doomed}

    async def test_scriptedRun(self) -> None:
        """
        Every action of the script is in the river, in order, with its
        queue, ids and counts.
        """
        ids = await self.script()
        events = await self.events("?limit=20")
        self.assertEqual(
            [e["action"] for e in events],
            [
                "queue_created",
                "posted",
                "claimed",
                "renewed",
                "released",
                "claimed",
                "deleted",
                "popped",
                "posted",
                "expired",
                "posted",
                "claimed",
                "released",
                "claimed",
                "released",
                "dead_lettered",
                "refused",
            ],
        )
        self.assertEqual({e["queue"] for e in events}, {"orders"})
        posted = events[1]
        self.assertEqual(posted["messages"], [ids["first"], ids["second"]])
        self.assertEqual(posted["count"], 2)
        self.assertEqual(events[2]["messages"], [ids["first"]])
        self.assertEqual(events[3]["claim"], events[2]["claim"])
        self.assertEqual(events[3]["ttl"], 90)
        self.assertEqual(events[6]["messages"], [ids["first"]])
        self.assertEqual(events[6]["claim"], events[5]["claim"])
        self.assertEqual(events[7]["messages"], [ids["second"]])
        self.assertEqual(events[9]["count"], 1)
        self.assertEqual(events[9]["at"], START + 61)
        self.assertEqual(events[15]["count"], 1)
        refused = events[16]
        self.assertEqual(refused["status"], 404)
        self.assertEqual(refused["method"], "GET")
        self.assertEqual(refused["path"], "/v2/queues/orders/claims/nonexistent")
        self.assertEqual(events[0]["at"], START)

    async def test_noBodies(self) -> None:
        """
        No message body, metadata value or secret text is in the river.
        """
        await self.script()
        r = await self.node.request("GET", "/v2/audit?limit=20")
        self.assertNotIn(SECRET.encode(), r.body)
        self.assertNotIn(b"card", r.body)
        self.assertNotIn(b"body", r.body)

    async def test_otherProject(self) -> None:
        """
        Another project's river is empty, under the header and the path.
        """
        await self.script()
        self.assertEqual(await self.events(project="other"), [])
        r = await self.node.request("GET", "/v2/projects/other/audit", project=None)
        self.assertEqual((r.code, r.json["events"]), (200, []))
        r = await self.node.request("GET", "/v2/projects/p/audit", project=None)
        self.assertEqual(len(r.json["events"]), 10)

    async def test_filters(self) -> None:
        """
        Filters by action, queue, tags and time range.
        """
        await self.script()
        claimed = await self.events("?action=claimed")
        self.assertEqual([e["action"] for e in claimed], ["claimed"] * 4)
        r = await self.node.request("PUT", "/v2/queues/other")
        self.assertEqual(r.code, 201)
        other = await self.events("?queue=other")
        self.assertEqual([e["action"] for e in other], ["queue_created"])
        tagged = await self.events("?tags=action:posted,queue:orders")
        self.assertEqual(len(tagged), 3)
        late = await self.events(f"?since={START + 61}&action=posted")
        self.assertEqual(len(late), 1)
        early = await self.events(f"?until={START + 60}&limit=20")
        self.assertEqual(len(early), 9)
        self.assertEqual(await self.events("?queue=nothing"), [])

    async def test_pages(self) -> None:
        """
        Markers page through the river without gaps or repeats.
        """
        await self.script()
        seen = []
        path = "/v2/audit?limit=4"
        while True:
            r = await self.node.request("GET", path)
            seen.extend(e["id"] for e in r.json["events"])
            if not r.json["links"]:
                break
            path = r.json["links"][0]["href"]
        everything = await self.events("?limit=20")
        self.assertEqual(seen, [e["id"] for e in everything])
        self.assertEqual(len(seen), 17)
        r = await self.node.request("GET", "/v2/audit?limit=2&action=claimed")
        after = r.json["links"][0]["href"]
        self.assertIn("action=claimed", after)
        r = await self.node.request("GET", after)
        self.assertEqual([e["action"] for e in r.json["events"]], ["claimed"] * 2)
        r = await self.node.request("GET", r.json["links"][0]["href"])
        self.assertEqual((r.json["events"], r.json["links"]), ([], []))

    async def test_badParameters(self) -> None:
        """
        Bad filters are 400 with a JSON error.
        """
        for query in (
            "limit=0",
            "marker=x",
            "action=nope",
            "queue=~audit",
            "since=yesterday",
            "until=-1",
        ):
            r = await self.node.request("GET", f"/v2/audit?{query}")
            self.assertEqual(r.code, 400, query)
            self.assertIn("title", r.json)
        r = await self.node.request("GET", "/v1.1/audit")
        self.assertEqual(r.code, 404)

    async def test_riverHidden(self) -> None:
        """
        No client path names the river's queue, and queue listings leave it
        out (count included).
        """
        await self.script()
        for method, path in (
            ("PUT", "/v2/queues/~audit"),
            ("GET", "/v2/queues/~audit"),
            ("DELETE", "/v2/queues/~audit"),
            ("GET", "/v2/queues/~audit/messages?echo=true"),
            ("POST", "/v2/queues/~audit/claims"),
            ("DELETE", "/v2/queues/~audit/messages?pop=5"),
            ("GET", "/v2/queues/%7Eaudit/stats"),
        ):
            r = await self.node.request(method, path, {} if method != "GET" else None)
            self.assertEqual(r.code, 400, (method, path, r.body))
        r = await self.node.request("GET", "/v2/queues?with_count=true")
        self.assertEqual([q["name"] for q in r.json["queues"]], ["dlq", "orders"])
        self.assertEqual(r.json["count"], 2)
        r = await self.node.request(
            "PUT", "/v2/queues/x", {"_dead_letter_queue": RIVER}
        )
        self.assertEqual(r.code, 400)


class RiverUnitTests(TestCase):
    """
    The river and its settings, without HTTP.
    """

    def test_settings(self) -> None:
        """
        [audit] enabled and retention are parsed; bad values are refused.
        """
        self.assertEqual(audit.parseSettings({}), AuditSettings(True, 604800))
        self.assertEqual(
            audit.parseSettings({"enabled": "off", "retention": "3600"}),
            AuditSettings(False, 3600),
        )
        for bad in ({"enabled": "maybe"}, {"retention": "x"}, {"retention": "5"}):
            self.assertRaises(ValueError, audit.parseSettings, bad)
        self.assertRaises(ValueError, audit.parseSettings, {"colour": "red"})

    async def test_disabledAndRetention(self) -> None:
        """
        A disabled river records nothing; an enabled one keeps events for
        its retention and then they are purged with other expired data.
        """
        from twisted.internet.task import Clock

        clock = Clock()
        store = MemoryStore()
        store.startService()
        self.addCleanup(store.stopService)
        off = Messaging(
            store, clock, Limits(), audit=AuditRiver(store, clock, AuditSettings(False))
        )
        await off.createQueue("p", "q", {})
        self.assertEqual(
            await off.audit.read("p", audit.AuditQuery(limit=10)), ([], None)
        )
        river = AuditRiver(store, clock, AuditSettings(True, 100))
        on = Messaging(store, clock, Limits(), audit=river)
        await on.createQueue("p", "q", {})
        events, _ = await river.read("p", audit.AuditQuery(limit=10))
        self.assertEqual([e["action"] for e in events], ["queue_updated"])
        clock.advance(101)
        await on.purgeExpired()
        self.assertEqual(await river.read("p", audit.AuditQuery(limit=10)), ([], None))

    async def test_failedWriteLogged(self) -> None:
        """
        A river write that fails is logged, not raised to the caller.
        """
        from twisted.internet.defer import fail
        from twisted.internet.task import Clock

        class Broken:
            def postMessages(self, *args: Any) -> Any:
                return fail(RuntimeError("disk full"))

        river = AuditRiver(Broken(), Clock())  # type: ignore[arg-type]
        river.record("p", "posted", "q", count=1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class DaemonAuditTests(NodeTestCase):
    """
    The river of the real daemon, configured by its file.
    """

    async def test_daemonRecords(self) -> None:
        """
        Through C{twistd marconi} on SQLite with an C{[audit]} section: a
        post, a claim and a delete are in the river, and a file with a bad
        retention is refused at load.
        """
        config = os.path.join(self.directory, "marconi.ini")
        with open(config, "w") as f:
            f.write("[audit]\nenabled = yes\nretention = 3600\n")
        node = await self.startNode("--config", config)
        r, _ = await self.call(node, "PUT", "/v2/queues/work")
        self.assertEqual(r.code, 201)
        r, body = await self.call(
            node, "POST", "/v2/queues/work/messages", {"messages": [{"body": SECRET}]}
        )
        [mid] = [href.rsplit("/", 1)[1] for href in body["resources"]]
        r, body = await self.call(node, "POST", "/v2/queues/work/claims", {"ttl": 60})
        claim = body["messages"][0]["href"].rsplit("claim_id=", 1)[1]
        r, _ = await self.call(
            node, "DELETE", f"/v2/queues/work/messages/{mid}?claim_id={claim}"
        )
        self.assertEqual(r.code, 204)
        r, body = await self.call(node, "GET", "/v2/audit?queue=work")
        self.assertEqual(r.code, 200)
        self.assertEqual(
            [(e["action"], e.get("messages")) for e in body["events"]],
            [
                ("queue_created", None),
                ("posted", [mid]),
                ("claimed", [mid]),
                ("deleted", [mid]),
            ],
        )
        self.assertNotIn(SECRET, json.dumps(body))
        with open(config, "w") as f:
            f.write("[audit]\nretention = soon\n")
        self.assertRaises(ConfigError, load, config, {})
