"""
The domain: strict JSON, validation, and the purge job.
"""

import hashlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from marconi.core import jsontext, validation
from marconi.core.errors import ValidationFailed
from marconi.core.limits import Limits
from marconi.core.messaging import Messaging
from marconi.kernel import PurgeService
from marconi.storage.sqlite.store import SQLiteStore
from tests.storage.contract import msg
from tests.strategies import jsonValues

LIMITS = Limits()


class JSONTests(SynchronousTestCase):
    def test_refused(self) -> None:
        """
        Non-finite numbers, duplicate keys, invalid UTF-8, deep nesting and
        huge integers are refused with L{ValidationFailed}.
        """
        for raw in (
            b"NaN",
            b"[Infinity]",
            b"-Infinity",
            b"1e999",
            b'{"a":1,"a":2}',
            b"\xff",
            b"[" * 100 + b"]" * 100,
            b"[" * 100000,
            b"9" * 5000,
            b'{"a":',
            b"",
        ):
            self.assertRaises(ValidationFailed, jsontext.loads, raw)

    def test_loneSurrogate(self) -> None:
        """
        A lone surrogate is refused when parsed, and a value holding one
        (built some other way) cannot become a stored body.
        """
        self.assertRaises(ValidationFailed, jsontext.loads, b'"\\ud800"')
        self.assertRaises(ValidationFailed, jsontext.dumpBody, "\ud800")
        self.assertEqual(
            jsontext.dumpBody(jsontext.loads(b'"\\ud83d\\ude00"')), '"\U0001f600"'
        )

    @settings(deadline=None)
    @given(jsonValues(maxLeaves=20))
    def test_roundTrip(self, value) -> None:
        """
        Any JSON value without lone surrogates survives dump and load.
        """
        try:
            text = jsontext.dumpBody(value)
        except ValidationFailed:
            return
        self.assertEqual(jsontext.loads(text.encode("utf-8")), value)


class TagTests(SynchronousTestCase):
    @settings(deadline=None)
    @given(st.lists(st.text(min_size=1, max_size=64), max_size=16))
    def test_validTagsKeptInOrder(self, tags) -> None:
        """
        Valid tags come back deduplicated in their first order; invalid
        ones are refused, never silently changed.
        """
        try:
            result = validation.tags(tags, LIMITS)
        except ValidationFailed:
            self.assertTrue(
                any(
                    "," in t
                    or "/" in t
                    or any(ord(c) <= 0x20 or c == "\x7f" for c in t)
                    for t in tags
                )
            )
            return
        self.assertEqual(list(result), list(dict.fromkeys(tags)))

    def test_filter(self) -> None:
        """
        A tag filter is a comma-separated list; empty means no filter.
        """
        self.assertEqual(validation.tagFilter("a,b", LIMITS), ("a", "b"))
        self.assertEqual(validation.tagFilter("", LIMITS), ())
        self.assertRaises(ValidationFailed, validation.tagFilter, "a,,b", LIMITS)


class IntegerTests(SynchronousTestCase):
    @given(st.integers(), st.integers(0, 100), st.integers(0, 100))
    def test_bounds(self, value, low, span) -> None:
        """
        An integer is accepted exactly when it lies within the bounds.
        """
        high = low + span
        if low <= value <= high:
            self.assertEqual(validation.integer(value, "x", low, high), value)
        else:
            self.assertRaises(
                ValidationFailed, validation.integer, value, "x", low, high
            )

    def test_notIntegers(self) -> None:
        """
        Booleans, floats and strings are not integers.
        """
        for value in (True, 1.0, "1", None):
            self.assertRaises(ValidationFailed, validation.integer, value, "x", 0, 10)


class MessagesTests(SynchronousTestCase):
    def assertStoredAsZaqar(self, m: Any, body: object) -> None:
        """
        C{m} holds C{body} as C{json.dumps} writes it compactly, and
        Zaqar's checksum: MD5 over the default C{json.dumps} encoding.
        """
        self.assertEqual(
            m.body, json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        )
        self.assertEqual(
            m.checksum,
            "MD5:" + hashlib.md5(json.dumps(body).encode("utf-8")).hexdigest(),
        )

    def test_bodyAndChecksum(self) -> None:
        """
        A posted message is stored as compact JSON text that keeps
        non-ASCII characters, with Zaqar's checksum: MD5 over the body's
        default C{json.dumps} encoding.
        """
        body = {"é": [1, 2.5, None, True], "b": "\U0001f600 x"}
        (m,) = validation.messages({"messages": [{"body": body}]}, LIMITS, {})
        self.assertStoredAsZaqar(m, body)

    @settings(max_examples=300, deadline=None)
    @given(jsonValues())
    def test_anyBodyAndChecksum(self, body: object) -> None:
        """
        Whatever JSON value a body is (a string alone, escapes, control
        characters, non-ASCII text, numbers of any size, nesting), it is
        stored as C{json.dumps} writes it compactly, and its checksum is
        MD5 over the default C{json.dumps} encoding.
        """
        (m,) = validation.messages({"messages": [{"body": body}]}, LIMITS, {})
        self.assertStoredAsZaqar(m, body)

    def test_ttlAndDelay(self) -> None:
        """
        C{ttl} and C{delay} are integers within the limits, given or the
        queue's defaults; a boolean, a float, a string or a value out of
        range is refused, whether given or a default.
        """
        low, high = LIMITS.minMessageTTL, LIMITS.maxMessageTTL
        for ttl in (low, high):
            for delay in (0, LIMITS.maxMessageDelay):
                item = {"body": 1, "ttl": ttl, "delay": delay}
                (m,) = validation.messages([item], LIMITS, {})
                self.assertEqual((m.ttl, m.delay), (ttl, delay))
        (m,) = validation.messages(
            [{"body": 1}],
            LIMITS,
            {"_default_message_ttl": low + 1, "_default_message_delay": 7},
        )
        self.assertEqual((m.ttl, m.delay), (low + 1, 7))
        for bad in (True, False, 1.0, "60", None, low - 1, high + 1):
            self.assertRaises(
                ValidationFailed,
                validation.messages,
                [{"body": 1, "ttl": bad}],
                LIMITS,
                {},
            )
        for bad in (True, 1.0, "0", -1, LIMITS.maxMessageDelay + 1):
            self.assertRaises(
                ValidationFailed,
                validation.messages,
                [{"body": 1, "delay": bad}],
                LIMITS,
                {},
            )
            self.assertRaises(
                ValidationFailed,
                validation.messages,
                [{"body": 1}],
                LIMITS,
                {"_default_message_delay": bad},
            )


class PurgeTests(TestCase):
    async def test_purgesOnSchedule(self) -> None:
        """
        The purge job runs every interval on the injected clock and removes
        expired messages; a failing run is logged and the next one goes on.
        """
        clock = Clock()
        clock.advance(1000)
        store = SQLiteStore(":memory:", reactor)
        store.startService()
        self.addCleanup(store.stopService)
        bus = Messaging(store, clock, LIMITS)
        await store.postMessages("p", "q", [msg(ttl=60)], "c", 1000)
        service = PurgeService(bus, 30, clock)
        service.startService()
        self.addCleanup(service.stopService)
        clock.advance(30)
        self.assertEqual(await store.purgeExpired(clock.seconds()), 0)
        clock.advance(30)
        await _settle(store)
        rows = await store._run(
            lambda c: c.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        )
        self.assertEqual(rows, 0)

    async def test_failureLogged(self) -> None:
        """
        A purge that fails is logged and does not stop the job.
        """
        clock = Clock()

        class Broken:
            def purgeExpired(self, now):
                raise RuntimeError("disk on fire")

        bus = Messaging(Broken(), clock, LIMITS)
        service = PurgeService(bus, 10, clock)
        service.startService()
        self.addCleanup(service.stopService)
        clock.advance(10)
        clock.advance(10)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)
        self.assertTrue(service._loop.running)


async def _settle(store) -> None:
    # One more round trip through the store's thread: work queued before it
    # (the purge) has finished when it returns.
    await store.ping()
