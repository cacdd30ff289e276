"""
Tests for L{marconi.api.render}: the JSON documents of the API.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from marconi.api import render


class MessageListTests(SynchronousTestCase):
    def test_linksAsJSON(self) -> None:
        """
        A listing's links are written as compact JSON writes them, in
        their order and with their escapes, whatever they hold.
        """
        for links in (
            [],
            [{"rel": "next", "href": "/v2/queues/q/messages?marker=1&limit=10"}],
            [{"href": "/x", "rel": "next"}],
            [{"rel": "next", "href": '"\n\\\x01\x7f'}],
            [{"rel": "ç\u2028", "href": "é/😀"}],
            [{"rel": "next", "href": "/x", "extra": 1}],
            [{"rel": "next"}],
            [{"rel": "next", "href": 1}],
            [{"rel": "next", "href": "/a"}, {"rel": "prev", "href": "/b"}],
        ):
            text = render.messageList(['{"id":"m"}'], links)
            expected = json.dumps(
                {"messages": [{"id": "m"}], "links": links},
                ensure_ascii=False,
                separators=(",", ":"),
            )
            self.assertEqual(text, expected.encode("utf-8"), links)
        self.assertEqual(render.messageList([]), b'{"messages":[]}')
