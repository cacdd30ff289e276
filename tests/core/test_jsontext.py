"""
Strict JSON parsing of untrusted input.
"""

from twisted.trial.unittest import SynchronousTestCase

from marconi.core import jsontext
from marconi.core.errors import ValidationFailed


class LoadsTests(SynchronousTestCase):
    def test_loneSurrogateAnywhere(self) -> None:
        """
        A lone surrogate is refused wherever it is, in a key or in a value
        no handler reads (claim options carry such fields), not only in a
        message body.
        """
        for text in (
            b'{"ttl": 60, "note": "\\ud800"}',
            b'{"\\udfff": 1}',
            b'[[["x\\ud83d"]]]',
            b'"\\ude00"',
        ):
            self.assertRaises(ValidationFailed, jsontext.loads, text)

    def test_surrogatePairAccepted(self) -> None:
        """
        An escaped surrogate pair is one valid character and is accepted.
        """
        self.assertEqual(
            jsontext.loads(b'{"e": "\\ud83d\\ude00"}'), {"e": "\U0001f600"}
        )
