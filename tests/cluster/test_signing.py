"""
Signatures of requests forwarded between nodes.
"""

import hashlib
import hmac

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from marconi.cluster import signing
from marconi.cluster.signing import BadSignature, Signer, Verifier

SECRET = b"0123456789abcdef0123456789abcdef"
URI = b"/v2/queues/jobs/messages?echo=true&limit=5"
BODY = b'{"messages": [{"body": 1}]}'


class SigningTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.signer = Signer("a", SECRET, self.clock)
        self.verifier = self.verifierOf("b")

    def verifierOf(self, node: str, **kwargs) -> Verifier:
        return Verifier(node, ["a", "b", "c"], SECRET, self.clock, 300, **kwargs)

    def sign(self, method=b"POST", uri=URI, body=BODY, project="p1", to="b") -> dict:
        return self.signer.headers(method, uri, body, project, to)

    def test_roundTrip(self) -> None:
        """
        A signed request verifies, naming its sender and project.
        """
        signed = self.verifier.verify(b"POST", URI, BODY, self.sign())
        self.assertEqual((signed.node, signed.project), ("a", "p1"))

    def test_lines(self) -> None:
        """
        L{Signer.lines} are the lines of L{Signer.headers}: the same names
        in the same order, and they verify, once.
        """
        lines = self.signer.lines(b"POST", URI, BODY, "p1", "b")
        self.assertTrue(lines.endswith(b"\r\n"))
        pairs = [line.split(b": ", 1) for line in lines.split(b"\r\n")[:-1]]
        self.assertEqual([name for name, _ in pairs], list(self.sign()))
        headers = dict(pairs)
        signed = self.verifier.verify(b"POST", URI, BODY, headers)
        self.assertEqual((signed.node, signed.project), ("a", "p1"))
        self.assertRaises(
            BadSignature, self.verifier.verify, b"POST", URI, BODY, headers
        )
        other = dict(
            line.split(b": ", 1)
            for line in self.signer.lines(b"POST", URI, BODY, "p1", "c").split(b"\r\n")[
                :-1
            ]
        )
        self.assertRaises(BadSignature, self.verifier.verify, b"POST", URI, BODY, other)

    def test_noHeaders(self) -> None:
        """
        A request without forwarding headers is not forwarded: None.
        """
        self.assertIsNone(self.verifier.verify(b"GET", URI, b"", {b"x-other": b"1"}))

    def test_reencodedRequest(self) -> None:
        """
        Percent-encoding the path differently or reordering the query (as an
        HTTP client may) keeps the signature valid.
        """
        headers = self.sign()
        other = b"/v2/queues/%6Aobs/messages?limit=5&echo=true"
        self.assertEqual(
            self.verifier.verify(b"POST", other, BODY, headers).project, "p1"
        )

    def test_anyChangeIsRefused(self) -> None:
        """
        Changing the method, path, query, body, project, sender, timestamp
        or nonce, or using another secret, makes the signature invalid.
        """
        cases = [
            (b"DELETE", URI, BODY, {}),
            (b"POST", b"/v2/queues/other/messages?echo=true&limit=5", BODY, {}),
            (b"POST", b"/v2/queues/jobs/messages?echo=true&limit=6", BODY, {}),
            (b"POST", URI + b"&tags=x", BODY, {}),
            (b"POST", URI, BODY + b" ", {}),
            (b"POST", URI, BODY, {signing.PROJECT: b"p2"}),
            (b"POST", URI, BODY, {signing.NODE: b"c"}),
            (b"POST", URI, BODY, {signing.DESTINATION: b"c"}),
            (b"POST", URI, BODY, {signing.TIMESTAMP: b"1800000001000"}),
            (b"POST", URI, BODY, {signing.NONCE: b"00" * 16}),
        ]
        for method, uri, body, changes in cases:
            headers = dict(self.sign())
            headers.update(changes)
            self.assertRaises(
                BadSignature, self.verifier.verify, method, uri, body, headers
            )
        forged = Signer("a", b"another secret of 32 bytes......", self.clock)
        self.assertRaises(
            BadSignature,
            self.verifier.verify,
            b"POST",
            URI,
            BODY,
            forged.headers(b"POST", URI, BODY, "p1", "b"),
        )

    def test_missingOrEmptyHeader(self) -> None:
        """
        Any forwarding header present with another missing or empty is
        refused; so is a lone unknown X-Marconi-* header.
        """
        for name in signing.HEADERS:
            headers = dict(self.sign())
            del headers[name]
            self.assertRaises(
                BadSignature, self.verifier.verify, b"POST", URI, BODY, headers
            )
            headers = dict(self.sign())
            headers[name] = b""
            self.assertRaises(
                BadSignature, self.verifier.verify, b"POST", URI, BODY, headers
            )
        self.assertRaises(
            BadSignature,
            self.verifier.verify,
            b"GET",
            URI,
            b"",
            {b"x-marconi-anything": b"1"},
        )

    def test_unknownSender(self) -> None:
        """
        A request signed with the right secret by a name that is not a node
        of the cluster is refused.
        """
        stranger = Signer("z", SECRET, self.clock)
        self.assertRaises(
            BadSignature,
            self.verifier.verify,
            b"POST",
            URI,
            BODY,
            stranger.headers(b"POST", URI, BODY, "p1", "b"),
        )

    def test_clockWindow(self) -> None:
        """
        A signature is accepted up to the window away from the verifier's
        clock, either way, and refused past it.
        """
        headers = self.sign()
        self.clock.advance(300)
        self.assertIsNotNone(self.verifier.verify(b"POST", URI, BODY, headers))
        headers = self.sign()
        self.clock.advance(301)
        self.assertRaises(
            BadSignature, self.verifier.verify, b"POST", URI, BODY, headers
        )
        early = Clock()
        early.advance(self.clock.seconds() + 301)
        ahead = Signer("a", SECRET, early).headers(b"POST", URI, BODY, "p1", "b")
        self.assertRaises(BadSignature, self.verifier.verify, b"POST", URI, BODY, ahead)

    def test_nonceOfEachRequest(self) -> None:
        """
        Every signed request carries its own nonce (of 32 hex digits), also
        beyond the nonces made at a time.
        """
        nonces = [self.sign()[signing.NONCE] for _ in range(2 * signing.NONCES + 1)]
        self.assertEqual(len(set(nonces)), len(nonces))
        for nonce in nonces:
            self.assertEqual(len(nonce), 32)
            int(nonce, 16)

    def test_replay(self) -> None:
        """
        The same signed request is accepted once; a replay inside the window
        is refused.
        """
        headers = self.sign()
        self.verifier.verify(b"POST", URI, BODY, headers)
        self.clock.advance(10)
        self.assertRaises(
            BadSignature, self.verifier.verify, b"POST", URI, BODY, headers
        )

    def test_nonceMemoryNeverForgetsInsideTheWindow(self) -> None:
        """
        When the memory of nonces is full, new signed requests are refused
        and every remembered request stays refused as a replay; once
        nonces leave the clock window they are forgotten and requests are
        taken again.
        """
        self.verifier.maxNonces = 5
        first = self.sign(b"GET", URI, b"")
        self.verifier.verify(b"GET", URI, b"", first)
        for _ in range(4):
            self.verifier.verify(b"GET", URI, b"", self.sign(b"GET", URI, b""))
        for _ in range(20):
            e = self.assertRaises(
                BadSignature,
                self.verifier.verify,
                b"GET",
                URI,
                b"",
                self.sign(b"GET", URI, b""),
            )
            self.assertIn("full", str(e))
        e = self.assertRaises(
            BadSignature, self.verifier.verify, b"GET", URI, b"", first
        )
        self.assertIn("already used", str(e))
        self.clock.advance(301)
        self.verifier.verify(b"GET", URI, b"", self.sign(b"GET", URI, b""))
        self.assertEqual(len(self.verifier._nonces), 1)

    def test_nonceMemoryUnderSteadyTraffic(self) -> None:
        """
        Under steady traffic the nonces that left the clock window are
        forgotten, so the memory never fills, and a request stamped near
        the end of its window is still refused as a replay.
        """
        self.verifier.maxNonces = 40
        sent = []
        for _ in range(100):
            headers = self.sign(b"GET", URI, b"")
            self.verifier.verify(b"GET", URI, b"", headers)
            sent.append(headers)
            self.clock.advance(10)
        # Stamped 290 s ago, of a 300 s window.
        e = self.assertRaises(
            BadSignature, self.verifier.verify, b"GET", URI, b"", sent[-29]
        )
        self.assertIn("already used", str(e))

    def test_addressedToAnotherNode(self) -> None:
        """
        A request signed for node b is refused by node c (a third node) and
        by node a (its sender), with the same headers that b accepts.
        """
        headers = self.sign()
        for node in ("c", "a"):
            e = self.assertRaises(
                BadSignature,
                self.verifierOf(node).verify,
                b"POST",
                URI,
                BODY,
                headers,
            )
            self.assertIn("another node", str(e))
        self.assertIsNotNone(self.verifier.verify(b"POST", URI, BODY, headers))

    def test_restartDoesNotReopen(self) -> None:
        """
        A request accepted before a node restarted (a new verifier, its
        memory empty) is refused after it, though inside the clock window;
        requests stamped after the restart are taken.
        """
        headers = self.sign()
        self.verifier.verify(b"POST", URI, BODY, headers)
        self.clock.advance(5.5)
        restarted = self.verifierOf("b")
        self.clock.advance(0.001)
        e = self.assertRaises(
            BadSignature, restarted.verify, b"POST", URI, BODY, headers
        )
        self.assertIn("before this node started", str(e))
        self.assertIsNotNone(restarted.verify(b"POST", URI, BODY, self.sign()))


class CanonicalFormTests(SynchronousTestCase):
    def test_fixedForm(self) -> None:
        """
        The signed form is the one every version of the node computes (a
        node of a mixed cluster must verify what another signed): fields
        length-prefixed, the path decoded, the query decoded and sorted.
        """
        self.assertEqual(
            signing.canonical(
                b"post",
                b"/v2/queues/q%201/messages",
                b"b=2&a=1&a=",
                b"{}",
                b"a",
                b"b",
                b"p",
                b"1700000000000",
                b"00ff",
            ),
            b"17:marconi-forward-24:POST23:/v2/queues/q 1/messages"
            b"19:1:a0:&1:a1:1&1:b1:2"
            b"64:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
            b"1:a1:b1:p13:17000000000004:00ff",
        )

    def test_plainQueryAsDecoded(self) -> None:
        """
        A query with nothing to decode has the form of the same query
        percent-encoded, or with a pair without C{=} (which are decoded
        and parsed).
        """

        def form(query: bytes) -> bytes:
            return signing.canonical(
                b"GET", b"/v2/x", query, b"", b"a", b"b", b"p", b"1", b"00"
            )

        self.assertEqual(form(b"limit=10&echo=true"), form(b"echo=tru%65&limit=10"))
        self.assertEqual(form(b"b=&a=1&a=0"), form(b"a=1&b&a=%30"))
        self.assertNotEqual(form(b"a=1&b=2"), form(b"a=1&b=3"))

    def test_queryFormsKept(self) -> None:
        """
        The signed forms of queries are remembered, at most
        C{_MAX_QUERIES} and none longer than C{_MAX_QUERY}; a query signs
        alike whether its form was remembered or not.
        """

        def form(query: bytes) -> bytes:
            return signing.canonical(
                b"GET", b"/v2/x", query, b"", b"a", b"b", b"p", b"1", b"00"
            )

        first = form(b"b=2&a=1")
        for i in range(signing._MAX_QUERIES + 10):
            form(b"limit=%d" % i)
            self.assertLessEqual(len(signing._queries), signing._MAX_QUERIES)
        self.assertEqual(form(b"b=2&a=1"), first)
        self.assertEqual(form(b"b=2&a=1"), first)
        self.assertIn(b"b=2&a=1", signing._queries)
        long = b"a=" + b"x" * signing._MAX_QUERY
        self.assertIn(b"%d:%s" % (len(long) - 2, b"x" * signing._MAX_QUERY), form(long))
        self.assertNotIn(long, signing._queries)

    def test_requestFormsKept(self) -> None:
        """
        The start of the signed forms of recent requests (method, path and
        query) is remembered, at most C{_MAX_REQUESTS} and none of a target
        longer than C{_MAX_TARGET}; a request signs alike, and verifies,
        whether its form was remembered or not.
        """
        signing._requests.clear()
        uri = b"/v2/queues/q%201/messages?b=2&a=1"
        first = signing._requestForm(b"post", uri)
        self.assertEqual(
            first + signing._rest(b"{}", b"a", b"b", b"p", b"1", b"00"),
            signing.canonical(
                b"POST",
                b"/v2/queues/q 1/messages",
                b"a=1&b=2",
                b"{}",
                b"a",
                b"b",
                b"p",
                b"1",
                b"00",
            ),
        )
        self.assertIn((b"post", uri), signing._requests)
        for i in range(signing._MAX_REQUESTS + 10):
            signing._requestForm(b"GET", b"/v2/x?limit=%d" % i)
            self.assertLessEqual(len(signing._requests), signing._MAX_REQUESTS)
        self.assertEqual(signing._requestForm(b"post", uri), first)
        long = b"/v2/" + b"x" * signing._MAX_TARGET
        signing._requestForm(b"GET", long)
        self.assertNotIn((b"GET", long), signing._requests)
        clock = Clock()
        clock.advance(1_800_000_000)
        signer = Signer("a", SECRET, clock)
        verifier = Verifier("b", ["a", "b"], SECRET, clock, 300)
        for _ in range(2):
            for target in (long, uri):
                signed = signer.headers(b"POST", target, BODY, "p1", "b")
                self.assertEqual(
                    verifier.verify(b"POST", target, BODY, signed).project, "p1"
                )
                self.assertRaises(
                    BadSignature, verifier.verify, b"POST", target + b"&c", BODY, signed
                )

    def test_digestOfEitherHMAC(self) -> None:
        """
        The signature is the HMAC-SHA256 in hex, whether it is made from
        OpenSSL's object or from L{hmac}'s own.
        """
        data = b"some canonical form"
        expected = hmac.new(SECRET, data, hashlib.sha256).hexdigest().encode()
        self.assertEqual(signing._digest(signing._keyed(SECRET), data), expected)
        wrapper = hmac.new(SECRET, digestmod=hashlib.sha256)
        self.assertEqual(signing._digest(wrapper, data), expected)
        self.assertEqual(signing._digest(wrapper, data), expected)

    def test_undecodableQuery(self) -> None:
        """
        Forwarding headers on a request whose query does not decode are
        refused like any bad signature, never an error of the node.
        """
        clock = Clock()
        clock.advance(1_800_000_000)
        verifier = Verifier("b", ["a", "b"], SECRET, clock, 300)
        signed = Signer("a", SECRET, clock).headers(b"GET", b"/v2/x", b"", "p", "b")
        self.assertRaises(
            BadSignature, verifier.verify, b"GET", b"/v2/x?a=%ab", b"", signed
        )
        self.assertRaises(
            BadSignature, verifier.verify, b"GET", b"/v2/x?a=\xe9", b"", signed
        )

    def test_queryOfAnyBytes(self) -> None:
        """
        A query whose values percent-encode bytes that are not ASCII (UTF-8
        or not) is signed and verified; each such value signs as its own
        bytes, so two of them never share a signature.
        """
        clock = Clock()
        clock.advance(1_800_000_000)
        verifier = Verifier("b", ["a", "b"], SECRET, clock, 300)
        signer = Signer("a", SECRET, clock)

        def form(query: bytes) -> bytes:
            return signing.canonical(
                b"GET", b"/v2/x", query, b"", b"a", b"b", b"p", b"1", b"00"
            )

        for uri in (b"/v2/x?a=%C3%A9&b=1", b"/v2/x?a=%ab", b"/v2/x?%E9=%ff+x"):
            signed = signer.headers(b"GET", uri, b"", "p", "b")
            self.assertEqual(verifier.verify(b"GET", uri, b"", signed).project, "p")
        signed = signer.headers(b"GET", b"/v2/x?a=%ab", b"", "p", "b")
        self.assertRaises(
            BadSignature, verifier.verify, b"GET", b"/v2/x?a=%ac", b"", signed
        )
        self.assertEqual(form(b"a=%C3%A9"), form(b"a=%c3%a9"))
        self.assertNotEqual(form(b"a=%C3%A9"), form(b"a=%C3%A8"))
