"""
The fault harness of a cluster whose nodes keep their queues in Redis:
three real nodes (C{twistd -n marconi}), each with its own
C{redis-server} (appendonly) on loopback, every store declared with
C{--cluster-store}.  A node is killed with SIGKILL under a steady load of
posts and claim+delete sent through the other nodes (by a client that does
not know the ring, so requests are forwarded).

The figures of each run (time to stand-in, failed requests, throughput)
are written to C{figures.json} in the test's directory; docs/reliability.rst
records one run.
"""

import json
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater

from tests import redisserver
from tests.integration.test_cluster import NAMES, ClusterTestCase, queueOwnedBy

#: Seconds of load before the kill, and after it.
BEFORE, AFTER = 3.0, 7.0
#: Bound of each worker's requests, whatever the time.
MAX_REQUESTS = 2000
#: The time within which a dead node's queues must answer again.
STANDIN_SECONDS = 5.0


class RedisClusterTestCase(ClusterTestCase):
    """
    L{ClusterTestCase} with a Redis store per node, declared to every node.
    """

    skip = redisserver.skipReason()

    def setUp(self) -> None:
        super().setUp()
        self.redis = {}
        for name in NAMES:
            server = redisserver.RedisServer(appendonly=True).start()
            self.addCleanup(server.stop)
            self.redis[name] = server
        declared = []
        for name in NAMES:
            declared += ["--cluster-store", f"{name}={self.redis[name].uri()}"]
        for name in NAMES:
            directory, args = self.args[name]
            args = list(args)
            args[args.index("--storage") + 1] = self.redis[name].uri()
            self.args[name] = (directory, args + declared)


class Load:
    """
    Posters and consumers of one queue, each sending its requests to the
    nodes in turn, recording every answer with its time.
    """

    def __init__(self, test: ClusterTestCase, queue: str, via: tuple) -> None:
        self.test = test
        self.queue = queue
        self.via = via
        self.stopped = False
        #: (start, end, ok, node) of every request.
        self.records: list = []
        self.acknowledged: set = set()
        self.deleted: set = set()
        self.uncertain: set = set()
        #: (claim id, message ids) of every claim answered 201.
        self.claims: list = []

    async def _send(self, turn: int, method: str, path: str, body: Any = None) -> Any:
        node = self.via[turn % len(self.via)]
        started = reactor.seconds()
        try:
            r, doc = await self.test.call(node, method, path, body)
        except Exception:
            r, doc = None, None
        ok = r is not None and 200 <= r.code < 300
        self.records.append((started, reactor.seconds(), ok, node))
        return r, doc

    async def poster(self, index: int) -> None:
        base = f"/v2/queues/{self.queue}/messages"
        for turn in range(MAX_REQUESTS):
            if self.stopped:
                return
            r, doc = await self._send(
                turn + index, "POST", base, {"messages": [{"body": [index, turn]}]}
            )
            if r is not None and r.code == 201:
                self.acknowledged.update(h.rsplit("/", 1)[1] for h in doc["resources"])

    async def consumer(self, index: int) -> None:
        base = f"/v2/queues/{self.queue}"
        for turn in range(MAX_REQUESTS):
            if self.stopped:
                return
            r, doc = await self._send(
                turn + index,
                "POST",
                f"{base}/claims?limit=5",
                {"ttl": 300, "grace": 60},
            )
            if r is None or r.code != 201:
                if r is not None and r.code == 204:
                    await deferLater(reactor, 0.02, lambda: None)
                continue
            claimId = r.headers.getRawHeaders("location")[0].rsplit("/", 1)[1]
            ids = [m["id"] for m in doc["messages"]]
            self.claims.append((claimId, ids))
            r, _ = await self._send(
                turn + index + 1,
                "DELETE",
                f"{base}/messages?ids={','.join(ids)}&claim_ids={claimId}",
            )
            (
                self.deleted if r is not None and r.code == 204 else self.uncertain
            ).update(ids)

    def run(self, posters: int = 2, consumers: int = 2) -> Deferred:
        return gatherResults(
            [Deferred.fromCoroutine(self.poster(i)) for i in range(posters)]
            + [Deferred.fromCoroutine(self.consumer(i)) for i in range(consumers)],
            consumeErrors=True,
        )


async def remaining(test: ClusterTestCase, via: str, queue: str) -> set:
    """
    The ids of every message left in C{queue}, claimed or not.
    """
    ids: set = set()
    path = f"/v2/queues/{queue}/messages?include_claimed=true&echo=true&limit=20"
    for _ in range(10000):
        r, doc = await test.call(via, "GET", path)
        test.assertIn(r.code, (200, 204), doc)
        if r.code == 204 or not doc["messages"]:
            return ids
        ids.update(m["id"] for m in doc["messages"])
        path = next(link["href"] for link in doc["links"] if link["rel"] == "next")
    raise AssertionError("the listing did not end")


class KillTests(RedisClusterTestCase):
    async def test_killUnderLoad(self) -> None:
        """
        Node C is killed with SIGKILL while clients post to and claim and
        delete from a queue of C through A and B.  Within 5 seconds the
        queue answers 2xx again through both; no acknowledged message is
        lost, no message is in two claims (no claim expires during the
        run), the queue listing misses nothing, and C serves the queue
        again once it is restarted.
        """
        await self.startCluster()
        queue = queueOwnedBy("c")
        load = Load(self, queue, ("a", "b"))
        running = load.run()
        await deferLater(reactor, BEFORE, lambda: None)
        killed = reactor.seconds()
        await self.nodes["c"].kill()
        await deferLater(reactor, AFTER, lambda: None)
        load.stopped = True
        await running
        before = [r for r in load.records if r[1] < killed]
        after = [r for r in load.records if r[1] >= killed]
        backAt = {}
        for node in ("a", "b"):
            answered = [r[1] for r in after if r[2] and r[3] == node and r[0] >= killed]
            self.assertTrue(answered, f"no request through {node} succeeded")
            backAt[node] = min(answered) - killed
        lastFailure = max((r[1] for r in after if not r[2]), default=killed)
        settled = [r for r in after if r[0] > lastFailure]
        settledSeconds = max(killed + AFTER - lastFailure, 1e-9)
        figures = {
            "seconds_to_standin": backAt,
            "failed_requests_after_kill": sum(1 for r in after if not r[2]),
            "requests_after_kill": len(after),
            "ops_per_second_before": round(len(before) / BEFORE, 1),
            "ops_per_second_after_switch": round(len(settled) / settledSeconds, 1),
            "acknowledged": len(load.acknowledged),
            "claims": len(load.claims),
        }
        with open(os.path.join(self.root, "figures.json"), "w") as f:
            json.dump(figures, f, indent=2)
        self.assertLess(max(backAt.values()), STANDIN_SECONDS, figures)
        holders: dict = {}
        for claimId, ids in load.claims:
            for messageId in ids:
                holders.setdefault(messageId, []).append(claimId)
        self.assertEqual({m: c for m, c in holders.items() if len(c) > 1}, {})
        left = await remaining(self, "a", queue)
        lost = load.acknowledged - load.deleted - load.uncertain - left
        self.assertEqual(lost, set(), figures)
        self.assertEqual(left & load.deleted, set())
        # The listing reads C's store directly: nothing is missing.
        r, doc = await self.call("b", "GET", "/v2/queues")
        self.assertEqual(r.code, 200, doc)
        self.assertNotIn("missing_nodes", doc)
        self.assertIn(queue, [q["name"] for q in doc["queues"]])
        # C comes back and serves its queue again, from its own store.
        await self.startNode("c")
        for via in ("a", "b"):
            await self.waitFor(via, lambda nodes: nodes["c"]["state"] == "up")
        r, doc = await self.call(
            "a",
            "POST",
            f"/v2/queues/{queue}/messages",
            {"messages": [{"body": "back"}]},
        )
        self.assertEqual(r.code, 201, doc)
        self.assertEqual(
            await remaining(self, "c", queue),
            left | {doc["resources"][0].rsplit("/", 1)[1]},
        )
        served = 0
        for via in ("a", "b"):
            _, health = await self.call(via, "GET", "/v2/health")
            nodes = {n["name"]: n for n in health["cluster"]["nodes"]}
            self.assertNotIn("queues", nodes["c"])
            served += nodes["c"].get("stand_in_requests", 0)
        self.assertGreater(served, 0)
