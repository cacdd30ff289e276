"""
The decorator that gives C{async def} store methods their L{Deferred}, and
the signature check that looks through it.
"""

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface, implementer
from zope.interface.verify import verifyObject

from marconi.core.deferreds import checkSignatures, deferred


class IExample(Interface):
    def fetch(project, queue):
        """
        Fetch something.
        """


@implementer(IExample)
class Right:
    @deferred
    async def fetch(self, project: str, queue: str) -> str:
        return project + "/" + queue


@implementer(IExample)
class Wrong:
    @deferred
    async def fetch(self, queue: str) -> str:
        return queue


class DeferredTests(SynchronousTestCase):
    def test_returnsDeferred(self) -> None:
        """
        Calling a decorated method returns a L{Deferred} of its result,
        and an exception it raises becomes that Deferred's failure.
        """
        d = Right().fetch("p", "q")
        self.assertIsInstance(d, Deferred)
        self.assertEqual(self.successResultOf(d), "p/q")
        self.failureResultOf(Right().fetch("p", None), TypeError)

    def test_keepsName(self) -> None:
        """
        The wrapper keeps the method's name and docstring, and points at it
        through C{__wrapped__}.
        """
        self.assertEqual(Right.fetch.__name__, "fetch")
        self.assertEqual(
            Right.fetch.__wrapped__.__code__.co_varnames[:3],
            ("self", "project", "queue"),
        )

    def test_verifyObjectSeesOnlyTheWrapper(self) -> None:
        """
        C{verifyObject} reads parameters from the wrapper's C{__code__}
        (C{*args, **kwargs}), so it accepts a wrong signature; the
        signature check refuses it and accepts the right one.
        """
        self.assertTrue(verifyObject(IExample, Wrong()))
        self.assertTrue(verifyObject(IExample, Right()))
        checkSignatures(IExample, Right())
        error = self.assertRaises(TypeError, checkSignatures, IExample, Wrong())
        self.assertIn("Wrong.fetch takes ['queue']", str(error))
