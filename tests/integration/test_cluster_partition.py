"""
A network partition between the nodes of a cluster whose queues live in
Redis: node C is cut off from nodes A and B while all three keep running
and keep reaching the stores, under load sent to both sides.

Topology (L{tests.netns}): A and B run in one network namespace, C in
another, joined by a veth pair, the one that is cut.  The test process
(the clients) and the three C{redis-server}s are in the test's own
namespace, with a veth pair to each side, so that both sides reach every
store and the clients reach both sides during the cut.  Each side's nodes
see the other side down and stand in for its queues from the same store:
two nodes serve one queue at once, and the stores' atomic claims must keep
that safe.

The figures of each run are written to C{figures.json} in the test's
directory; docs/reliability.rst records one run.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests import netns, redisserver
from tests.integration.test_cluster import NAMES, ClusterTestCase, queueOwnedBy
from tests.integration.test_cluster_ha_faults import MAX_REQUESTS, Load, remaining
from tests.nodeprocess import NodeProcess

#: Seconds of load before the cut, during it, and after healing.
BEFORE, CUT, AFTER = 3.0, 8.0, 4.0
#: The claims' ttl (the configuration lowers min_claim_ttl to allow it).
TTL = 3
#: Every ABANDON-th claim is not deleted, as by a consumer that died: its
#: messages must be claimed again only after the claim expired.
ABANDON = 4
#: The ports of the nodes, each side in a namespace of its own.
PORTS = {"a": 7101, "b": 7102, "c": 7103}


@dataclass
class Claim:
    """
    A claim answered 201: its id, its message ids, the times its request
    was sent and answered, and when its delete was answered 204 in time.
    """

    id: str
    ids: list
    sent: float
    answered: float
    ttl: float
    deleted: Optional[float] = None


class SideLoad(Load):
    """
    L{Load} whose consumers claim with a short ttl, abandon some claims,
    and record each claim's times.
    """

    async def claimOnce(self, turn: int, ttl: float, limit: int) -> Any:
        """
        Claim up to C{limit} messages and delete them with the claim
        (unless this turn abandons it); the answer's status, or L{None}.
        """
        base = f"/v2/queues/{self.queue}"
        sent = reactor.seconds()
        r, doc = await self._send(
            turn, "POST", f"{base}/claims?limit={limit}", {"ttl": ttl, "grace": 60}
        )
        if r is None or r.code != 201:
            return None if r is None else r.code
        claimId = r.headers.getRawHeaders("location")[0].rsplit("/", 1)[1]
        ids = [m["id"] for m in doc["messages"]]
        claim = Claim(claimId, ids, sent, reactor.seconds(), ttl)
        self.claims.append(claim)
        if ttl == TTL and turn % ABANDON == ABANDON - 1:
            return 201
        r, _ = await self._send(
            turn + 1,
            "DELETE",
            f"{base}/messages?ids={','.join(ids)}&claim_ids={claimId}",
        )
        # A 204 deletes for sure only while the claim is live: later, a
        # message claimed again by another is left alone, and still 204.
        if r is not None and r.code == 204 and reactor.seconds() < sent + ttl:
            claim.deleted = reactor.seconds()
            self.deleted.update(ids)
        else:
            self.uncertain.update(ids)
        return 201

    async def consumer(self, index: int) -> None:
        for turn in range(MAX_REQUESTS):
            if self.stopped:
                return
            if await self.claimOnce(turn + index, TTL, 5) == 204:
                await deferLater(reactor, 0.02, lambda: None)

    def during(self, start: float, end: float) -> list:
        """
        The records of the requests sent and answered within C{start},
        C{end}.
        """
        return [r for r in self.records if r[0] >= start and r[1] <= end]


def doubleClaims(claims: list) -> list:
    """
    The pairs of claims that surely held one message at once: the later
    was answered before the earlier, sent first, could have expired.
    """
    held: dict = {}
    for claim in claims:
        for messageId in claim.ids:
            held.setdefault(messageId, []).append(claim)
    found = []
    for messageId, holders in held.items():
        holders.sort(key=lambda c: c.sent)
        for i, first in enumerate(holders):
            for later in holders[i + 1 :]:
                if later.answered < first.sent + first.ttl:
                    found.append((messageId, first.id, later.id))
    return found


def resurrected(claims: list) -> set:
    """
    The messages claimed (during the run or at the end) after a delete
    surely removed them.
    """
    gone = {}
    for claim in claims:
        if claim.deleted is not None:
            for messageId in claim.ids:
                gone[messageId] = min(gone.get(messageId, claim.deleted), claim.deleted)
    return {m for c in claims for m in c.ids if m in gone and c.sent > gone[m]}


class PartitionTests(ClusterTestCase):
    skip = redisserver.skipReason()
    timeout = 180

    def setUp(self) -> None:
        reason = netns.skipReason()
        if reason is not None:
            raise SkipTest(reason)
        super().setUp()
        with open(os.path.join(self.root, "cluster.ini"), "w") as f:
            f.write(
                "[cluster]\nprobe_interval = 0.2\nprobe_timeout = 1\n"
                "forward_timeout = 3\n[limits]\nmin_claim_ttl = 1\n"
            )
        self.network = network = netns.Network(self)
        sideAB, sideC = network.namespace("ab"), network.namespace("c")
        toAB, toC = network.link(None, sideAB), network.link(None, sideC)
        self.between = network.link(sideAB, sideC)
        self.side = {"a": sideAB, "b": sideAB, "c": sideC}
        # The clients reach each side by its own link, never cut.
        self.reach = {"a": toAB.rightAddress, "b": toAB.rightAddress}
        self.reach["c"] = toC.rightAddress
        # The stores are reached from each side by that side's link.
        storeAddress = {"a": toAB.leftAddress, "b": toAB.leftAddress}
        storeAddress["c"] = toC.leftAddress
        bind = ("--bind", "127.0.0.1", toAB.leftAddress, toC.leftAddress)
        # Bound to loopback and the test's own links only.
        bind += ("--protected-mode", "no")
        ports = {}
        for name in NAMES:
            server = redisserver.RedisServer(appendonly=True, extraArgs=bind).start()
            self.addCleanup(server.stop)
            ports[name] = server.port
        nodeAddress = {"a": self.between.leftAddress, "b": self.between.leftAddress}
        nodeAddress["c"] = self.between.rightAddress
        nodes = []
        for name in NAMES:
            url = f"http://{nodeAddress[name]}:{PORTS[name]}"
            nodes += ["--cluster-node", f"{name}={url}"]
        for name in NAMES:
            directory, args = self.args[name]
            stores = {
                peer: f"redis://{storeAddress[name]}:{ports[peer]}/0" for peer in NAMES
            }
            args = [
                "--listen",
                f"tcp:{PORTS[name]}",
                "--storage",
                stores[name],
                "--config",
                os.path.join(self.root, "cluster.ini"),
                "--node-name",
                name,
                *nodes,
                "--cluster-secret-file",
                args[args.index("--cluster-secret-file") + 1],
            ]
            for peer in NAMES:
                args += ["--cluster-store", f"{peer}={stores[peer]}"]
            self.args[name] = (directory, args)

    async def startNode(self, name: str) -> NodeProcess:
        directory, args = self.args[name]
        prefix = self.network.command(self.side[name], [])
        node = await NodeProcess(self, directory, args, prefix).start()
        node.url = f"http://{self.reach[name]}:{PORTS[name]}"
        self.nodes[name] = node
        return node

    async def views(self) -> dict:
        """
        Each node's view of the others' states.
        """
        seen = {}
        for via in NAMES:
            _, health = await self.call(via, "GET", "/v2/health")
            seen[via] = {n["name"]: n for n in health["cluster"]["nodes"]}
        return seen

    async def drain(self, queue: str) -> tuple:
        """
        Claim and delete everything left in C{queue}, through both sides.
        """
        load = SideLoad(self, queue, ("a", "c"))
        empty = 0
        for turn in range(500):
            if empty >= 2:
                break
            status = await load.claimOnce(turn, 30, 20)
            self.assertIn(status, (201, 204))
            empty = empty + 1 if status == 204 else 0
        drained = {m for claim in load.claims for m in claim.ids}
        return load.claims, drained

    async def test_partitionUnderLoad(self) -> None:
        """
        C is cut off from A and B (packets dropped silently) while clients
        post, claim and delete on a queue of C and a queue of A through
        both sides.  During the cut each side sees the other down and
        serves both queues (stand-ins from the owner's store) within the
        cut; after healing, every node sees the others up, and consuming
        everything shows: no acknowledged message lost, no message in two
        live claims, no message back after a sure delete, and every
        message claimed twice claimed again only after its claim expired.
        """
        await self.startCluster()
        queues = {"c": queueOwnedBy("c"), "a": queueOwnedBy("a")}
        loads = {
            (owner, side): SideLoad(self, queue, via)
            for owner, queue in queues.items()
            for side, via in (("ab", ("a", "b")), ("c", ("c",)))
        }
        running = gatherResults(
            [load.run(posters=1, consumers=1) for load in loads.values()],
            consumeErrors=True,
        )
        await deferLater(reactor, BEFORE, lambda: None)
        cutAt = reactor.seconds()
        self.between.cut()
        await deferLater(reactor, CUT, lambda: None)
        split = await self.views()
        healAt = reactor.seconds()
        self.between.heal()
        await deferLater(reactor, AFTER, lambda: None)
        for load in loads.values():
            load.stopped = True
        await running
        for via in NAMES:
            await self.waitFor(
                via, lambda n: all(p["state"] in ("self", "up") for p in n.values())
            )
        healed = await self.views()
        # Abandoned claims and claims whose delete failed expire first.
        await deferLater(reactor, TTL + 0.5, lambda: None)

        figures: dict = {"cut_seconds": CUT, "sides": {}}
        for (owner, side), load in loads.items():
            during = load.during(cutAt, healAt)
            answered = [r[1] - cutAt for r in during if r[2]]
            figures["sides"][f"queue of {owner} via {side}"] = {
                "seconds_to_2xx": round(min(answered), 2) if answered else None,
                "failed_during_cut": sum(1 for r in during if not r[2]),
                "requests_during_cut": len(during),
                "failed_in_all": sum(1 for r in load.records if not r[2]),
                "requests_in_all": len(load.records),
            }
        for owner, queue in queues.items():
            mine = [load for (o, _), load in loads.items() if o == owner]
            drainClaims, drained = await self.drain(queue)
            claims = [c for load in mine for c in load.claims] + drainClaims
            acknowledged = set().union(*(load.acknowledged for load in mine))
            deleted = set().union(*(load.deleted for load in mine))
            uncertain = set().union(*(load.uncertain for load in mine))
            claimedTwice = {
                m
                for m in acknowledged
                if sum(m in c.ids for c in claims if c.ttl == TTL) > 1
            }
            figures[f"queue of {owner}"] = result = {
                "acknowledged": len(acknowledged),
                "claims": len(claims),
                "lost": sorted(acknowledged - deleted - uncertain - drained),
                "double_claims": doubleClaims(claims),
                "resurrected": sorted(resurrected(claims)),
                "redelivered_after_expiry": len(claimedTwice),
                "stored_without_201": len(drained - acknowledged),
            }
            for via in ("a", "c"):
                self.assertEqual(await remaining(self, via, queue), set(), result)
            self.assertEqual(result["lost"], [], result)
            self.assertEqual(result["double_claims"], [], result)
            self.assertEqual(result["resurrected"], [], result)
        figures["stand_in_requests"] = {
            "for c on a, b": sum(
                healed[v]["c"].get("stand_in_requests", 0) for v in ("a", "b")
            ),
            "for a on c": healed["c"]["a"].get("stand_in_requests", 0),
        }
        with open(os.path.join(self.root, "figures.json"), "w") as f:
            json.dump(figures, f, indent=2)
        # The views really split, and each side stood in for the other.
        for via, other in (("a", "c"), ("b", "c"), ("c", "a"), ("c", "b")):
            self.assertEqual(split[via][other]["state"], "down", figures)
            self.assertEqual(split[via][other]["queues"], "stand-in", figures)
        self.assertGreater(figures["stand_in_requests"]["for c on a, b"], 0)
        self.assertGreater(figures["stand_in_requests"]["for a on c"], 0)
        # Both queues answered 2xx on both sides within the cut.
        for side, seen in figures["sides"].items():
            self.assertIsNotNone(seen["seconds_to_2xx"], (side, figures))
            self.assertLess(seen["seconds_to_2xx"], CUT, (side, figures))


_CONNECT = """
import socket, sys
s = socket.socket()
s.settimeout(1)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("connected")
except socket.timeout:
    print("timeout")
except OSError as e:
    print("refused" if e.errno == 111 else e.strerror)
"""


class NetworkTests(SynchronousTestCase):
    """
    L{netns.Network}: links carry traffic, a cut drops it silently, and
    closing removes everything.
    """

    def setUp(self) -> None:
        reason = netns.skipReason()
        if reason is not None:
            raise SkipTest(reason)
        self.network = netns.Network(self)
        self.inside = self.network.namespace("x")
        self.link = self.network.link(None, self.inside)
        self.listener = socket.socket()
        self.addCleanup(self.listener.close)
        self.listener.bind((self.link.leftAddress, 0))
        self.listener.listen(8)

    def connect(self, port: int) -> str:
        argv = [sys.executable, "-c", _CONNECT, self.link.leftAddress, str(port)]
        done = subprocess.run(
            self.network.command(self.inside, argv),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout.strip()

    def test_cutAndHeal(self) -> None:
        """
        A connection from the namespace across the link succeeds; while
        the link is cut it times out (nothing refuses it); once healed it
        succeeds again.  The namespace reaches nothing but the link.
        """
        port = self.listener.getsockname()[1]
        self.assertEqual(self.connect(port), "connected")
        self.link.cut()
        self.assertEqual(self.connect(port), "timeout")
        self.link.heal()
        self.assertEqual(self.connect(port), "connected")
        self.assertEqual(self.connect(1), "refused")
        self.assertEqual(
            subprocess.run(
                self.network.command(
                    self.inside, [sys.executable, "-c", _CONNECT, "192.0.2.1", "80"]
                ),
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.strip(),
            "Network is unreachable",
        )

    def test_close(self) -> None:
        """
        Closing kills what runs in the namespaces and deletes them and
        their links; closing again does nothing.
        """
        sleeper = subprocess.Popen(
            self.network.command(self.inside, [sys.executable, "-c", "input()"]),
            stdin=subprocess.PIPE,
        )
        self.addCleanup(sleeper.wait, 10)
        # Close once the process has entered the namespace (ip netns exec
        # joins it, then becomes the command with the same pid).
        for _ in range(100):
            if str(sleeper.pid) in netns.ip("netns", "pids", self.inside).split():
                break
            time.sleep(0.1)
        self.network.close()
        self.assertEqual(sleeper.wait(10), -signal.SIGKILL)
        self.assertNotIn(self.inside, netns.ip("netns", "list"))
        self.assertNotIn(self.link.leftName, netns.ip("link"))
        self.network.close()
