"""
Tests for L{marconi.api.render}: the JSON documents of the API.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from marconi.api import render
from marconi.core.models import Message


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


class MessagesTests(SynchronousTestCase):
    def test_asEachMessage(self) -> None:
        """
        Messages are shown as L{render.message} shows each, whatever their
        ids, tags, checksums, claim and signer, and the queue's href.
        """

        def message(mid: str, tags: tuple = ()) -> Message:
            return Message(
                id=mid,
                marker=1,
                body='{"a":"é"}',
                ttl=60,
                created=1000.25,
                expires=1060.25,
                visibleAt=1000.25,
                clientId="c",
                tags=tags,
                checksum="MD5:00ff",
            )

        ms = [
            message("0123456789abcdef0123456789abcdef"),
            message("a-b"),
            message('q"\\\n'),
            message("é٣"),
            message("t", ("x", "y")),
            message(""),
        ]
        for href in ("/v2/queues/q", "/v2/projects/p%20q/queues/é\\", '/"\x01'):
            for claimId in (None, "c0ffee", 'c"\\\x7f'):
                for checksum in (True, False):
                    for signer in (None, lambda m: '"sig-%s"' % len(m.id)):
                        for now in (1000.0, 1030.9):
                            self.assertEqual(
                                render.messages(
                                    ms, href, now, claimId, checksum, signer
                                ),
                                [
                                    render.message(
                                        m, href, now, claimId, checksum, signer
                                    )
                                    for m in ms
                                ],
                                (href, claimId, checksum, signer, now),
                            )
        for text in render.messages(ms[:1], "/v2/queues/q", 1000.0, "c"):
            self.assertEqual(
                json.loads(text)["href"],
                "/v2/queues/q/messages/0123456789abcdef0123456789abcdef?claim_id=c",
            )
