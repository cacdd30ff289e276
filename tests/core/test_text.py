"""
Tests for L{marconi.core.text}.
"""

from twisted.trial.unittest import SynchronousTestCase

from marconi.core.text import parseBoolean, snakeToCamel


class ParseBooleanTests(SynchronousTestCase):
    def test_words(self) -> None:
        """
        Every true and false word is read in any case and with white space.
        """
        for word in ("true", "YES", " on ", "1"):
            self.assertIs(parseBoolean(word), True)
        for word in ("False", "no", "OFF", "0 "):
            self.assertIs(parseBoolean(word), False)

    def test_other(self) -> None:
        """
        Any other word is a L{ValueError} that quotes it.
        """
        for word in ("", "2", "truthy", "y"):
            with self.assertRaises(ValueError) as caught:
                parseBoolean(word)
            self.assertIn(repr(word), str(caught.exception))


class SnakeToCamelTests(SynchronousTestCase):
    def test_convert(self) -> None:
        """
        Each underscore followed by a letter becomes that letter in capitals.
        """
        self.assertEqual(snakeToCamel("max_messages_post_size"), "maxMessagesPostSize")
        self.assertEqual(snakeToCamel("vnodes"), "vnodes")
