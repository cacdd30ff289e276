"""
The pieces of L{marconi.api.http} that need no node.
"""

import re
import threading
import time

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import datetimeToString

from marconi.api import http


class RequestIdTests(SynchronousTestCase):
    def test_shapeAndUnique(self) -> None:
        """
        Request ids are C{req-} and 32 hex digits, and never repeat, across
        the batches of random bytes they are cut from.
        """
        ids = http._RequestIds()
        made = [ids() for _ in range(ids._batch * 3 + 5)]
        self.assertEqual(len(set(made)), len(made))
        for requestId in made:
            self.assertRegex(requestId, r"\Areq-[0-9a-f]{32}\Z")

    def test_threads(self) -> None:
        """
        Threads taking ids at the same time each get their own, and none
        fails when the batch runs out under it.
        """
        ids = http._RequestIds()
        taken: list = []
        errors: list = []

        def take() -> None:
            try:
                taken.extend(ids() for _ in range(ids._batch * 2 + 1))
            except Exception as e:
                errors.append(e)

        threads = [threading.Thread(target=take) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(set(taken)), 4 * (ids._batch * 2 + 1))


class TargetTests(SynchronousTestCase):
    def test_problems(self) -> None:
        """
        A target that is not a path, or whose path (plain or %-encoded) is
        not UTF-8, is a problem; any UTF-8 path is not.
        """
        for uri in (b"/v2/queues/q/messages", b"/v2/queues/caf%C3%A9", "/é".encode()):
            self.assertIsNone(http._targetProblem(uri, uri.split(b"?")[0]), uri)
        self.assertIn("path", http._targetProblem(b"*", b"*"))
        for path in (b"/v2/queues/%FF", b"/v2/queues/\xff"):
            self.assertTrue(re.search("UTF-8", http._targetProblem(path, path)))


class DateTests(SynchronousTestCase):
    def test_sameAsTwisted(self) -> None:
        """
        The C{Date} of an answer, made once a second, is what twisted.web
        would write at that second.
        """
        for _ in range(3):
            before = int(time.time())
            made = http._httpDate()
            expected = datetimeToString(before)
            if int(time.time()) == before:
                self.assertEqual(made, expected)
                return
        self.fail("no second was long enough to compare")

    def test_nextSecond(self) -> None:
        """
        A new second makes a new C{Date}.
        """
        self.patch(http, "time", lambda: 1_700_000_000.5)
        first = http._httpDate()
        self.patch(http, "time", lambda: 1_700_000_001.0)
        self.assertEqual(http._httpDate(), datetimeToString(1_700_000_001))
        self.assertEqual(first, datetimeToString(1_700_000_000))
