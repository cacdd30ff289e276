"""
The fault-injection harness (C{bench/faults/harness.py}): a short run
against the real daemon, and its checker on made-up histories.
"""

import importlib.util
import json
import os
import subprocess
import sys

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.nodeprocess import ROOT, environment

HARNESS = os.path.join(ROOT, "bench", "faults", "harness.py")


def loadHarness():
    spec = importlib.util.spec_from_file_location("marconi_fault_harness", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def runHarness(
    test: TestCase, duration: str, seed: str, *options: str
) -> tuple[dict, str]:
    """
    Run the harness for C{duration} seconds with C{seed} and C{options};
    check that nothing acknowledged was lost, nothing unexpected was
    delivered, no message was in two live claims at once, no acknowledged
    delete came back, the queue drained and the node was killed at least
    once.

    @return: the report, and the harness's output.
    """
    directory = os.path.abspath(test.mktemp())
    os.makedirs(directory)
    report = os.path.join(directory, "report.json")
    argv = [sys.executable, HARNESS, "--duration", duration, "--seed", seed,
            "--directory", directory, "--report", report, *options]  # fmt: skip
    result = await deferToThread(
        subprocess.run, argv, env=environment(), capture_output=True,
        text=True, timeout=100,
    )  # fmt: skip
    output = result.stdout + result.stderr
    test.assertTrue(os.path.exists(report), output)
    with open(report) as f:
        r = json.load(f)
    test.assertEqual(
        (r["lost"], r["unexpected"], r["overlaps"], r["resurrected"]),
        ([], [], [], []),
    )
    test.assertTrue(r["drained"])
    test.assertGreaterEqual(r["kills"], 1)
    test.assertGreater(r["acked"], 0)
    test.assertEqual(result.returncode, 0, output)
    return r, output


class ShortRunTests(TestCase):
    timeout = 120

    async def test_killAndPause(self) -> None:
        """
        A short run (8 s of load) with the node killed with SIGKILL and
        frozen past the claim TTL: nothing acknowledged is lost, nothing
        unexpected is delivered, no message is in two live claims at once,
        no acknowledged delete comes back, and the queue drains.
        """
        r, _ = await runHarness(self, "8", "20261128")
        self.assertGreaterEqual(r["pauses"], 1)


class CheckerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.harness = loadHarness()
        self.history = self.harness.History()

    def deliver(self, value, mid, cid, invoked, completed, ttl=1):
        self.history.deliveries.append((value, mid, cid, invoked, completed, ttl, "c"))

    def test_clean(self) -> None:
        """
        A history where every acknowledged value was delivered once, or
        again only after its claim expired, has no violation.
        """
        h = self.history
        h.attempted |= {"a", "b"}
        h.acked |= {"a", "b"}
        self.deliver("a", "m1", "c1", 100.0, 100.1)
        self.deliver("b", "m2", "c1", 100.0, 100.1)
        self.deliver("b", "m2", "c2", 101.05, 101.2)
        r = self.harness.check(h)
        self.assertEqual((r["lost"], r["unexpected"], r["overlaps"]), ([], [], []))
        self.assertEqual(r["duplicated"], 1)

    def test_violations(self) -> None:
        """
        The checker reports an acknowledged value never delivered, a value
        never posted, two overlapping live claims and a delivery after an
        acknowledged delete.
        """
        h = self.history
        h.attempted |= {"a", "b", "c"}
        h.acked |= {"a", "b", "c"}
        self.deliver("b", "m2", "c1", 100.0, 100.1)
        self.deliver("b", "m2", "c2", 100.5, 100.6)
        self.deliver("c", "m3", "c3", 100.0, 100.1)
        h.deleted[("m3", "c3")] = 100.2
        self.deliver("c", "m3", "c4", 105.0, 105.1)
        self.deliver("z", "m9", "c5", 100.0, 100.1)
        r = self.harness.check(h)
        self.assertEqual(r["lost"], ["a"])
        self.assertEqual(r["unexpected"], ["z"])
        self.assertEqual([o[:3] for o in r["overlaps"]], [("b", "c1", "c2")])
        self.assertEqual(r["resurrected"], [("c", "c3", "c4")])
