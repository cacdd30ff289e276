"""
Tests for L{marconi.core.events}: the bus's one hook for listeners.
"""

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from marconi.core.events import Event, Events
from marconi.core.limits import Limits
from marconi.core.messaging import Messaging
from marconi.storage.memory.store import MemoryStore

CLIENT = "3381af92-2b9e-11e3-b191-71861300734c"


class EventsTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.events = Events(self.clock)

    def test_listenersInOrder(self) -> None:
        """
        Every listener gets each event, in the order they were added, with
        the clock's time and the fields given, L{None} values left out.
        """
        seen: list = []
        self.events.listen(lambda e: seen.append(("a", e)))
        self.events.listen(lambda e: seen.append(("b", e)))
        self.events.emit("p", "posted", "q", messages=["m1"], client=None)
        expected = Event("p", "posted", "q", 1000.0, {"messages": ["m1"]})
        self.assertEqual(seen, [("a", expected), ("b", expected)])
        self.assertEqual(expected.count, 1)

    def test_eventsAreEvents(self) -> None:
        """
        An emitted event is a frozen L{Event}, equal to the one its
        constructor makes, with every field given when none is L{None}.
        """
        from dataclasses import FrozenInstanceError

        seen: list = []
        self.events.listen(seen.append)
        self.events.emit("p", "claimed", "q", claim="c", count=2)
        [event] = seen
        expected = Event("p", "claimed", "q", 1000.0, {"claim": "c", "count": 2})
        self.assertIs(type(event), Event)
        self.assertEqual((event, repr(event)), (expected, repr(expected)))
        with self.assertRaises(FrozenInstanceError):
            event.queue = "r"  # type: ignore[misc]

    def test_failingListener(self) -> None:
        """
        What a listener raises is logged; the emitter and the listeners
        after it are not affected.
        """
        seen: list = []

        def broken(event: Event) -> None:
            raise RuntimeError("listener bug")

        self.events.listen(broken)
        self.events.listen(seen.append)
        self.events.emit("p", "deleted", "q", count=3)
        self.assertEqual([e.count for e in seen], [3])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stop(self) -> None:
        """
        A stopped listener hears nothing more; stopping twice is harmless.
        """
        seen: list = []
        stop = self.events.listen(seen.append)
        stop()
        stop()
        self.events.emit("p", "queue_created", "q")
        self.assertEqual(seen, [])


class BusEventsTests(TestCase):
    def test_operations(self) -> None:
        """
        L{Messaging} emits one event per operation, after the store
        answered, with the ids and counts involved and never a body.
        """
        clock = Clock()
        store = MemoryStore()
        store.startService()
        self.addCleanup(store.stopService)
        bus = Messaging(store, clock, Limits())
        seen: list[Event] = []
        bus.events.listen(seen.append)

        def run(coroutine: Any) -> Any:
            return self.successResultOf(Deferred.fromCoroutine(coroutine))

        run(bus.createQueue("p", "q", {}))
        document = {"messages": [{"body": {"secret": 1}, "ttl": 300}] * 3}
        ids = run(bus.postMessages("p", "q", document, 100, CLIENT))
        claim = run(bus.createClaim("p", "q", {"ttl": 60, "grace": 30}, 2))
        run(bus.deleteMessage("p", "q", claim.messages[0].id, claim.id))
        run(bus.releaseClaim("p", "q", claim.id))
        run(bus.popMessages("p", "q", 5))
        run(bus.deleteQueue("p", "q"))
        self.assertEqual(
            [(e.project, e.action, e.queue, e.count) for e in seen],
            [
                ("p", "queue_created", "q", 0),
                ("p", "posted", "q", 3),
                ("p", "claimed", "q", 2),
                ("p", "deleted", "q", 1),
                ("p", "released", "q", 0),
                ("p", "popped", "q", 2),
                ("p", "queue_deleted", "q", 0),
            ],
        )
        self.assertEqual(seen[1].fields["messages"], ids)
        self.assertEqual(seen[2].fields["claim"], claim.id)
        self.assertNotIn("secret", repr(seen))
