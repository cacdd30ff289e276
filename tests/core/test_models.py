"""
The values passed between the domain and the stores.
"""

import inspect
from dataclasses import MISSING, FrozenInstanceError, fields

from twisted.trial.unittest import SynchronousTestCase

from marconi.core.models import Message, NewMessage, makeMessage, makeNewMessage


class MadeMessagesTests(SynchronousTestCase):
    """
    L{makeMessage} and L{makeNewMessage} make the same values as the
    constructors of L{Message} and L{NewMessage}.
    """

    def assertSameValue(self, made: object, expected: object) -> None:
        self.assertIs(type(made), type(expected))
        self.assertEqual(made, expected)
        self.assertEqual(hash(made), hash(expected))
        self.assertEqual(repr(made), repr(expected))

    def test_message(self) -> None:
        """
        A message made by L{makeMessage}, by position or by name and with
        its defaults, is a frozen L{Message} equal to the one its
        constructor makes.
        """
        args = ("a" * 32, 7, '"b"', 300, 1.5, 301.5, 2.5, "w")
        rest = ("c" * 32, 61.5, 2, ("t",), "MD5:1")
        self.assertSameValue(makeMessage(*args), Message(*args))
        self.assertSameValue(makeMessage(*args, *rest), Message(*args, *rest))
        self.assertSameValue(
            makeMessage(*args, tags=("u",), claimCount=3),
            Message(*args, tags=("u",), claimCount=3),
        )
        made = makeMessage(*args)
        with self.assertRaises(FrozenInstanceError):
            made.body = "x"  # type: ignore[misc]
        self.assertEqual(made.age(10.0), 8)

    def test_newMessage(self) -> None:
        """
        A message made by L{makeNewMessage} is a frozen L{NewMessage}
        equal to the one its constructor makes.
        """
        self.assertSameValue(makeNewMessage('"b"', 60), NewMessage('"b"', 60))
        self.assertSameValue(
            makeNewMessage('"b"', 60, 5, ("t",), "MD5:0"),
            NewMessage('"b"', 60, 5, ("t",), "MD5:0"),
        )
        with self.assertRaises(FrozenInstanceError):
            makeNewMessage('"b"', 60).ttl = 1  # type: ignore[misc]

    def test_sameFields(self) -> None:
        """
        The makers take the fields of their classes, in order, with the
        same defaults: a field added to one is added to its maker too.
        """
        empty = inspect.Parameter.empty
        for maker, cls in ((makeMessage, Message), (makeNewMessage, NewMessage)):
            parameters = list(inspect.signature(maker).parameters.values())
            self.assertEqual(
                [(p.name, p.default) for p in parameters],
                [
                    (f.name, empty if f.default is MISSING else f.default)
                    for f in fields(cls)
                ],
            )
