"""
L{marconi.core.waiting}: waiters woken by the bus's events, with deadlines
on a L{Clock}.
"""

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from marconi.core.events import Events
from marconi.core.waiting import TooManyWaiters, Waiters, found, waitersOf


class Query:
    """
    A query whose answers a test gives: each run answers the next of
    C{answers} (the last one again when they run out), at once or when
    the test fires it.
    """

    def __init__(self, *answers: Any, held: bool = False) -> None:
        self.answers = list(answers)
        self.runs = 0
        self.held = held
        self.pending: list[Deferred] = []

    def __call__(self) -> Deferred:
        self.runs += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if not self.held:
            return succeed(answer)
        d: Deferred = Deferred()
        self.pending.append(d)
        d.addCallback(lambda _: answer)
        return d


class WaitersTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.events = Events(self.clock)
        self.waiters = Waiters(self.events, self.clock, limit=3, perProject=3)

    def wait(
        self, query: Query, seconds: int = 10, queue: str = "q", project: str = "p"
    ) -> Deferred:
        return Deferred.fromCoroutine(
            self.waiters.wait(project, queue, seconds, query, found)
        )

    def assertGone(self) -> None:
        self.assertEqual(self.waiters.count, 0)
        self.assertEqual(self.waiters.asleep(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_foundAtOnce(self) -> None:
        """
        A query that finds something at once is answered with it, and
        nothing waits.
        """
        query = Query(["m"])
        self.assertEqual(self.successResultOf(self.wait(query)), ["m"])
        self.assertEqual(query.runs, 1)
        self.assertGone()

    def test_noWait(self) -> None:
        """
        With no seconds to wait the query runs once, found or not.
        """
        query = Query([])
        self.assertEqual(self.successResultOf(self.wait(query, 0)), [])
        self.assertGone()

    def test_wokenByPost(self) -> None:
        """
        A post to the waiter's queue runs its query again; what it finds
        answers, before the deadline, and the deadline is cancelled.
        """
        query = Query([], ["m"])
        d = self.wait(query)
        self.assertNoResult(d)
        self.assertEqual(self.waiters.asleep(), 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.events.emit("p", "posted", "q", messages=["m"])
        self.assertEqual(self.successResultOf(d), ["m"])
        self.assertEqual(query.runs, 2)
        self.assertGone()

    def test_wokenByRelease(self) -> None:
        """
        A released claim wakes the waiters of its queue.
        """
        d = self.wait(Query([], ["m"]))
        self.events.emit("p", "released", "q", claim="c")
        self.assertEqual(self.successResultOf(d), ["m"])

    def test_otherEvents(self) -> None:
        """
        Events of other queues, other projects, or that make nothing
        available, do not run the query.
        """
        query = Query([])
        d = self.wait(query)
        self.events.emit("p", "posted", "other", messages=["m"])
        self.events.emit("p2", "posted", "q", messages=["m"])
        self.events.emit("p", "claimed", "q", claim="c")
        self.events.emit("p", "deleted", "q", messages=["m"])
        self.events.emit("p", "queue_created", None)
        self.assertEqual(query.runs, 1)
        self.assertNoResult(d)

    def test_stillEmptyKeepsWaiting(self) -> None:
        """
        A waiter woken whose query still finds nothing sleeps again until
        its deadline, where the query runs a last time.
        """
        query = Query([])
        d = self.wait(query, 10)
        self.clock.advance(3)
        self.events.emit("p", "posted", "q")
        self.assertEqual(query.runs, 2)
        self.assertNoResult(d)
        self.assertEqual(self.waiters.asleep(), 1)
        self.clock.advance(6.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), [])
        self.assertEqual(query.runs, 3)
        self.assertGone()

    def test_postWhileTheFirstQueryRuns(self) -> None:
        """
        A post while the first query is still running is not missed: the
        query runs again as soon as it returns.
        """
        query = Query([], ["m"], held=True)
        d = self.wait(query)
        self.events.emit("p", "posted", "q")
        query.pending.pop().callback(None)
        self.assertEqual(query.runs, 2)
        query.pending.pop().callback(None)
        self.assertEqual(self.successResultOf(d), ["m"])
        self.assertGone()

    def test_cancel(self) -> None:
        """
        Cancelling a waiting request (its client went away) removes the
        waiter and its deadline.
        """
        d = self.wait(Query([]))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertGone()
        self.events.emit("p", "posted", "q")

    def test_cancelWhileQuerying(self) -> None:
        """
        Cancelled while its query runs, a waiter is removed as well.
        """
        query = Query([], held=True)
        d = self.wait(query)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertGone()

    def test_oneListener(self) -> None:
        """
        The waiters share one listener of the bus, however many wait.
        """
        before = len(self.events._listeners)
        self.assertEqual(before, 1)
        for queue in ("a", "b", "c"):
            self.wait(Query([]), queue=queue)
        self.assertEqual(len(self.events._listeners), before)
        self.assertEqual(self.waiters.count, 3)

    def test_limit(self) -> None:
        """
        Past the limit of waiters, a query that finds nothing raises
        L{TooManyWaiters}; one that finds something is answered.
        """
        for _ in range(3):
            self.wait(Query([]))
        self.failureResultOf(self.wait(Query([])), TooManyWaiters)
        self.assertEqual(self.successResultOf(self.wait(Query(["m"]))), ["m"])
        self.assertEqual(self.waiters.count, 3)

    def test_projectLimit(self) -> None:
        """
        Past its project's limit of waiters, a query that finds nothing
        raises L{TooManyWaiters} while other projects still wait; one that
        finds something is answered; a waiter that ends frees its place.
        By default a project may hold a tenth of the node's waiters, at
        least one.
        """
        self.waiters.perProject = 2
        first = self.wait(Query([]), queue="a")
        self.wait(Query([]), queue="b")
        self.failureResultOf(self.wait(Query([]), queue="c"), TooManyWaiters)
        self.assertEqual(self.successResultOf(self.wait(Query(["m"]))), ["m"])
        self.wait(Query([]), project="other")
        self.assertEqual((self.waiters.count, self.waiters.counts["p"]), (3, 2))
        first.cancel()
        self.failureResultOf(first)
        self.assertEqual(self.waiters.counts, {"p": 1, "other": 1})
        self.wait(Query([]), queue="c")
        self.assertEqual(self.waiters.counts, {"p": 2, "other": 1})
        self.assertEqual(Waiters(self.events, self.clock, 10000).perProject, 1000)
        self.assertEqual(Waiters(self.events, self.clock, 5).perProject, 1)
        self.assertEqual(Waiters(self.events, self.clock, 50, 7).perProject, 7)

    def test_wakesEveryWaiterOfTheQueue(self) -> None:
        """
        One post wakes every waiter of its queue, each running its own
        query.
        """
        one, two = Query([], ["1"]), Query([], ["2"])
        d1, d2 = self.wait(one), self.wait(two)
        self.events.emit("p", "posted", "q")
        self.assertEqual(self.successResultOf(d1), ["1"])
        self.assertEqual(self.successResultOf(d2), ["2"])
        self.assertGone()

    def test_oneWaitersPerBus(self) -> None:
        """
        L{waitersOf} gives the sites of one bus the same L{Waiters} (one
        listener, one limit), and another bus its own.
        """
        events = Events(self.clock)
        shared = waitersOf(events, self.clock, 5)
        self.assertIs(waitersOf(events, self.clock, 5), shared)
        self.assertEqual(len(events._listeners), 1)
        self.assertIsNot(waitersOf(Events(self.clock), self.clock, 5), shared)

    def test_found(self) -> None:
        """
        L{found}: a claim or a listing with messages; not L{None}, an empty
        list or a claim without messages.
        """

        class Claim:
            def __init__(self, messages: tuple) -> None:
                self.messages = messages

        self.assertTrue(found(["m"]))
        self.assertTrue(found(Claim(("m",))))
        self.assertFalse(found(None))
        self.assertFalse(found([]))
        self.assertFalse(found(Claim(())))
