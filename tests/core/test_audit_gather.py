"""
Merging the rivers of several stores (L{audit.gather}), the markers that
page across them (L{audit.RiverMarkers}), and which stores a cluster
router reads, without a running cluster.
"""

import base64
import json
from typing import Any, Optional

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from marconi.core import audit
from marconi.core.audit import AuditQuery, AuditRiver, RiverMarkers, RiverPart
from marconi.core.errors import ValidationFailed


def part(
    *events: tuple, position: Optional[int] = None, horizon: Optional[float] = None
) -> RiverPart:
    """
    A page of events given as C{(marker, at)}.
    """
    return RiverPart(
        [{"id": f"id{m}", "marker": str(m), "at": at} for m, at in events],
        position,
        horizon,
    )


class GatherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.markers = RiverMarkers(b"secret")

    def gather(self, parts: dict, start: Optional[dict] = None, limit: int = 10):
        events, following = audit.gather("p", parts, start or {}, limit, self.markers)
        positions = None
        if following is not None:
            positions = self.markers.decode("p", following)
        return [e["id"] for e in events], positions, events

    def test_timeOrder(self) -> None:
        """
        Events of every store come in time order; each carries the marker
        of every store's position after it; when every store was read to
        its end there is no next marker.
        """
        ids, positions, events = self.gather(
            {"a": part((1, 10.0), (2, 30.0)), "b": part((7, 20.0))}
        )
        self.assertEqual(ids, ["id1", "id7", "id2"])
        self.assertIsNone(positions)
        self.assertEqual(
            [self.markers.decode("p", e["marker"]) for e in events],
            [{"a": 1, "b": 0}, {"a": 1, "b": 7}, {"a": 2, "b": 7}],
        )

    def test_limit(self) -> None:
        """
        A full page takes the earliest events; the next marker goes on
        after what was taken from each store, however many each gave.
        """
        ids, positions, _ = self.gather(
            {
                "a": part((1, 10.0), (2, 30.0), position=2),
                "b": part((7, 20.0), (8, 40.0), position=8),
            },
            {"a": 0, "b": 6},
            limit=2,
        )
        self.assertEqual(ids, ["id1", "id7"])
        self.assertEqual(positions, {"a": 1, "b": 7})

    def test_horizon(self) -> None:
        """
        A store read only up to a time holds the merge there: later events
        of other stores wait for the next page, and that store reads on
        from where its reading stopped.
        """
        ids, positions, _ = self.gather(
            {
                "a": part((1, 10.0), position=40, horizon=15.0),
                "b": part((7, 12.0), (8, 20.0)),
            },
        )
        self.assertEqual(ids, ["id1", "id7"])
        self.assertEqual(positions, {"a": 40, "b": 7})

    def test_missing(self) -> None:
        """
        A store that could not be read keeps its position in the events'
        markers and in the next marker while another store has more.
        """
        ids, positions, events = self.gather(
            {"a": part((1, 10.0), position=1), "b": None}, {"b": 3}
        )
        self.assertEqual(ids, ["id1"])
        self.assertEqual(positions, {"a": 1, "b": 3})
        self.assertEqual(self.markers.decode("p", events[0]["marker"]), positions)

    def test_missingAtEnd(self) -> None:
        """
        When every store that could be read is at its end, there is no next
        marker even while a store is missing, so paging ends; the last
        event's marker keeps the missing store's position.
        """
        ids, positions, events = self.gather(
            {"a": part((1, 10.0)), "b": None}, {"b": 3}
        )
        self.assertEqual(ids, ["id1"])
        self.assertIsNone(positions)
        self.assertEqual(
            self.markers.decode("p", events[0]["marker"]), {"a": 1, "b": 3}
        )
        self.assertEqual(
            self.gather({"a": part(), "b": None}, {"b": 3})[:2], ([], None)
        )
        self.assertEqual(self.gather({"b": None}, {"b": 3})[:2], ([], None))


class MarkerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.markers = RiverMarkers(b"secret")
        self.marker = self.markers.encode("p", {"a": 3, "b": 0})

    def test_roundTrip(self) -> None:
        """
        A marker decodes to its positions, for its project.
        """
        self.assertEqual(self.markers.decode("p", self.marker), {"a": 3, "b": 0})

    def test_refused(self) -> None:
        """
        Markers that were changed, made with another secret, made for
        another project, malformed or too long are refused.
        """
        payload, _, mac = self.marker.partition(".")
        forged = base64.urlsafe_b64encode(json.dumps({"a": 9}).encode()).decode()
        bad = [
            f"{forged.rstrip('=')}.{mac}",
            RiverMarkers(b"other").encode("p", {"a": 3, "b": 0}),
            "",
            "abc",
            payload,
            f"{payload}.{mac}=",
            f"{payload}.!!",
            "x" * 5000,
        ]
        for marker in bad:
            self.assertRaises(ValidationFailed, self.markers.decode, "p", marker)
        self.assertRaises(ValidationFailed, self.markers.decode, "q", self.marker)
        for positions in ({"a": -1}, {"a": "1"}, {"a": 2**63}, [1]):
            text = json.dumps(positions).encode()
            encoded = base64.urlsafe_b64encode(text).rstrip(b"=").decode()
            signed = base64.urlsafe_b64encode(self.markers._sign("p", text))
            marker = f"{encoded}.{signed.rstrip(b'=').decode()}"
            self.assertRaises(ValidationFailed, self.markers.decode, "p", marker)

    def test_position(self) -> None:
        """
        The marker of one store's river is digits only.
        """
        self.assertEqual(audit.position("12"), 12)
        self.assertIsNone(audit.position(None))
        for bad in ("", "-1", "1.5", "x", "9" * 20, self.marker):
            self.assertRaises(ValidationFailed, audit.position, bad)


class ClusterSourcesTests(TestCase):
    """
    The router of node A gathering the river from the stores it opens:
    memory stores standing for declared network stores.
    """

    async def gathered(self, declared: tuple, down: tuple = ()) -> tuple:
        """
        Record one event in A's home store and two in each declared store,
        then read the river through A's router.
        """
        from marconi.cluster.membership import DOWN
        from tests.cluster.test_ha import makeRouter

        router, stores, opened = makeRouter("a", declared)
        for node in down:
            router.membership.states[node].state = DOWN
        clock = Clock()
        river = AuditRiver(stores.home, clock)
        river.record("p", "posted", "home", count=1)
        for uri, store in sorted(opened.items()):
            for _ in range(2):
                clock.advance(1)
                AuditRiver(store, clock).record("p", "posted", uri, count=1)
        river.record("other", "posted", "home", count=1)

        def local(query: AuditQuery, store: Any = None) -> Any:
            return river.readPart("p", query, store)

        page = await router.readAudit("p", AuditQuery(limit=10), None, local)
        return [e["queue"] for e in page.events], page.missing

    async def test_sharedStoreReadOnce(self) -> None:
        """
        Two peers sharing one store: its river is read once, from here,
        after this node's own.
        """
        queues, missing = await self.gathered(
            (("b", "redis://shared"), ("c", "redis://shared"))
        )
        self.assertEqual(queues, ["home"] + ["redis://shared"] * 2)
        self.assertEqual(missing, [])

    async def test_downWithoutStore(self) -> None:
        """
        A peer that is down and whose store this node does not open is
        missing; a peer that is down but whose store is opened here is
        read all the same.
        """
        queues, missing = await self.gathered((("b", "redis://b"),), down=("b", "c"))
        self.assertEqual(queues, ["home", "redis://b", "redis://b"])
        self.assertEqual(missing, ["c"])
