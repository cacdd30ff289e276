"""
The audit river of a cluster of three real nodes: each node records the
operations it serves in its own store, and C{GET /v2/audit} through any
node gathers every node's river, in time order, with markers that page
across nodes.
"""

from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests.integration.test_cluster import NAMES, ClusterTestCase, queueOwnedBy


class AuditClusterTests(ClusterTestCase):
    async def script(self) -> list:
        """
        Create a queue owned by each node and post to each twice, through
        changing nodes, and make one request that is refused (on C's
        queue, through A).

        @return: the C{(action, queue)} of the events, in the order made.
        """
        done = []
        queues = [queueOwnedBy(owner) for owner in NAMES]
        for i, queue in enumerate(queues):
            r, _ = await self.call(NAMES[i - 1], "PUT", f"/v2/queues/{queue}")
            self.assertEqual(r.code, 201)
            done.append(("queue_created", queue))
        for round in range(2):
            for i, queue in enumerate(queues):
                r, _ = await self.call(
                    NAMES[(i + round) % 3],
                    "POST",
                    f"/v2/queues/{queue}/messages",
                    {"messages": [{"body": round}]},
                )
                self.assertEqual(r.code, 201)
                done.append(("posted", queue))
        r, _ = await self.call("a", "GET", f"/v2/queues/{queues[2]}/claims/nothing")
        self.assertEqual(r.code, 404)
        done.append(("refused", queues[2]))
        return done

    async def recorded(self, via: str, count: int, seconds: float = 15) -> None:
        """
        Wait until the river read through C{via} holds C{count} events.
        """
        waited = 0.0
        while True:
            r, body = await self.call(via, "GET", "/v2/audit?limit=20")
            if len(body.get("events", ())) >= count:
                return
            if waited > seconds:
                self.fail(f"{count} events not recorded: {body}")
            await deferLater(reactor, 0.1, lambda: None)
            waited += 0.1

    async def pages(self, path: str, vias: tuple = NAMES) -> tuple[list, list]:
        """
        Follow the next links from C{path}, asking the nodes in turn.

        @return: the events, and the answers' bodies.
        """
        events: list = []
        bodies: list = []
        for turn in range(100):
            r, body = await self.call(vias[turn % len(vias)], "GET", path)
            self.assertEqual(r.code, 200, body)
            bodies.append(body)
            events.extend(body["events"])
            if not body["links"]:
                return events, bodies
            path = body["links"][0]["href"]
        self.fail("the pages never end")

    async def test_gatheredThroughAnyNode(self) -> None:
        """
        Through every node the river holds the events of every node, in
        the order they happened, and is whole (not partial); pages of two
        asked of changing nodes give the same events without gaps or
        repeats; filters apply on every node; another project sees
        nothing; a marker that was changed, made up or taken from another
        project is refused with 400.
        """
        await self.startCluster()
        done = await self.script()
        for via in NAMES:
            r, body = await self.call(via, "GET", "/v2/audit?limit=20")
            self.assertEqual(r.code, 200, body)
            self.assertNotIn("partial", body)
            self.assertNotIn("missing_nodes", body)
            events = body["events"]
            self.assertEqual([(e["action"], e["queue"]) for e in events], done)
            self.assertEqual(sorted(e["at"] for e in events), [e["at"] for e in events])
        ids = [e["id"] for e in events]
        paged, bodies = await self.pages("/v2/audit?limit=2")
        self.assertEqual([e["id"] for e in paged], ids)
        self.assertTrue(all(len(b["events"]) <= 2 for b in bodies))
        # An event's marker reads on after it.
        r, body = await self.call(
            "b", "GET", f"/v2/audit?limit=20&marker={quote(events[3]['marker'])}"
        )
        self.assertEqual([e["id"] for e in body["events"]], ids[4:])

        # A time range, on every node.
        since, until = events[3]["at"], events[-2]["at"]
        r, body = await self.call("c", "GET", f"/v2/audit?since={since}&until={until}")
        self.assertEqual([e["id"] for e in body["events"]], ids[3:-1])
        posted, _ = await self.pages("/v2/audit?limit=2&action=posted")
        self.assertEqual(len(posted), 6)
        self.assertEqual({e["action"] for e in posted}, {"posted"})
        queue = queueOwnedBy("b")
        r, body = await self.call("c", "GET", f"/v2/audit?queue={queue}")
        self.assertEqual(
            [e["action"] for e in body["events"]],
            ["queue_created", "posted", "posted"],
        )
        r, body = await self.call("a", "GET", "/v2/audit", project="other")
        self.assertEqual((r.code, body["events"]), (200, []))
        r, body = await self.call(
            "a", "GET", "/v2/projects/other/audit?limit=20", project=None
        )
        self.assertEqual(body["events"], [])

        marker = events[3]["marker"]
        payload, _, mac = marker.partition(".")
        flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
        for bad in (f"{flipped}.{mac}", "5", "x", marker + "x", "a.b.c", ""):
            r, body = await self.call(
                "b", "GET", f"/v2/audit?marker={quote(bad, safe='')}"
            )
            self.assertEqual(r.code, 400, (bad, body))
            self.assertIn("title", body)
        r, body = await self.call(
            "b", "GET", f"/v2/audit?marker={quote(marker)}", project="other"
        )
        self.assertEqual(r.code, 400, body)

    async def test_nodeDownAndBack(self) -> None:
        """
        While C is down the river through A and B is partial and names C,
        and gives no next link once A's and B's events are read; paging on
        from its last event's marker once C is back brings C's events, so
        the pages together hold every event once.
        """
        await self.startCluster()
        done = await self.script()
        # A node records its events after it answered (recording never
        # waits): C is killed once its events are written, not before.
        await self.recorded("c", len(done))
        await self.nodes["c"].kill()
        r, body = await self.call("a", "GET", "/v2/audit?limit=20")
        self.assertEqual(r.code, 200, body)
        self.assertEqual(
            (body.get("partial"), body.get("missing_nodes")), (True, ["c"])
        )
        onC = queueOwnedBy("c")
        seen = body["events"]
        self.assertEqual(
            [(e["action"], e["queue"]) for e in seen],
            [event for event in done if event[1] != onC],
        )
        self.assertEqual(body["links"], [])
        await self.startNode("c")
        await self.waitFor("a", lambda nodes: nodes["c"]["state"] == "up")
        await self.waitFor("b", lambda nodes: nodes["c"]["state"] == "up")
        after = quote(seen[-1]["marker"])
        rest, bodies = await self.pages(f"/v2/audit?limit=20&marker={after}", ("b",))
        self.assertFalse(any("partial" in b for b in bodies))
        self.assertEqual(
            sorted((e["action"], e["queue"]) for e in seen + rest), sorted(done)
        )
        self.assertEqual(len({e["id"] for e in seen + rest}), len(done))
