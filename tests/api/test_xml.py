"""
The XML media type: the typed form of JSON values, its round trips through
the API, negotiation with Accept and Content-Type, and safe parsing.
"""

import json
import os
from typing import Any, Optional
from xml.etree import ElementTree

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from marconi.api.media import xml
from marconi.core import jsontext
from marconi.core.errors import InvalidBody
from marconi.core.limits import Limits
from tests.api.test_api_unit import InMemoryNode
from tests.apihelpers import CLIENT

XML = "application/xml"

# Any text a JSON document can carry: every code point but lone surrogates.
_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
)
jsonValues = st.recursive(
    st.one_of(st.none(), st.booleans(), _numbers, _text),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(_text, children, max_size=4),
    ),
    max_leaves=20,
)

# Documents out of the typed form, for the parser and the schema alike.
BAD_SHAPES = (
    b"<thing/>",
    b"<object><string>x</string></object>",
    b'<array><string key="a">x</string></array>',
    b"<array>text</array>",
    b"<string><null/></string>",
    b"<number>1.</number>",
    b"<number> 1</number>",
    b"<true>yes</true>",
    b'<string lang="en">x</string>',
    b'<string form="json">1</string>',
    b'<object><null key="a" key-json="&quot;a&quot;"/></object>',
)


def canonical(value: Any) -> str:
    """
    JSON text that tells apart what C{==} does not (1 and 1.0 and True,
    0.0 and -0.0) and keeps key order.
    """
    return json.dumps(value, ensure_ascii=True)


class Answer:
    def __init__(self, code: int, headers: Any, body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    def header(self, name: str) -> Optional[str]:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def xml(self) -> Any:
        return xml.loads(self.body)


def call(
    node: InMemoryNode,
    method: str,
    path: str,
    body: bytes = b"",
    headers: Optional[dict] = None,
) -> Answer:
    sent = {"X-Project-ID": "p", "Client-ID": CLIENT, **(headers or {})}
    d = node.stub.request(
        method, "http://marconi.test" + path, data=body or None, headers=sent
    )
    node.stub.flush()
    response = node.testCase.successResultOf(d)
    content = node.testCase.successResultOf(node.stub.content(response))
    return Answer(response.code, response.headers, content)


class FormTests(SynchronousTestCase):
    """
    The typed XML form of JSON values, without the API.
    """

    @settings(max_examples=300, deadline=None)
    @given(jsonValues)
    def test_roundTrip(self, value: Any) -> None:
        """
        Every JSON value read back from its XML form is the same value,
        down to number types, key order and every character of its strings
        and keys.
        """
        self.assertEqual(canonical(xml.loads(xml.dumps(value))), canonical(value))

    @settings(max_examples=300, deadline=None)
    @given(jsonValues)
    def test_fromStoredText(self, value: Any) -> None:
        """
        JSON text as the API stores it (a message body) written as XML reads
        back as the value the text holds, and the XML is well-formed for
        any XML parser.
        """
        text = jsontext.dumpBody(value)
        written = xml.fromJSON(text.encode())
        ElementTree.fromstring(written)
        self.assertEqual(canonical(xml.loads(written)), canonical(value))

    def test_typedElements(self) -> None:
        """
        Objects name their members' keys in attributes, in order; every
        kind of value has its element.
        """
        written = xml.dumps({"b": [1, "x", None, True, False], "a": {}})
        self.assertEqual(
            written,
            b'<?xml version="1.0" encoding="UTF-8"?>'
            b'<object><array key="b"><number>1</number><string>x</string>'
            b'<null/><true/><false/></array><object key="a"/></object>',
        )

    def test_numbersKeepTheirText(self) -> None:
        """
        Numbers are written with the text the JSON answer has: big
        integers whole, floats as JSON writes them.
        """
        stored = b'{"big":123456789012345678901234567890,"f":1.5e+300,"g":0.1}'
        written = xml.fromJSON(stored)
        self.assertIn(b'<number key="big">123456789012345678901234567890<', written)
        self.assertIn(b'<number key="f">1.5e+300</number>', written)
        self.assertIn(b'<number key="g">0.1</number>', written)
        self.assertEqual(
            canonical(xml.loads(written)), canonical(json.loads(stored.decode()))
        )

    def test_charactersXMLCannotCarry(self) -> None:
        """
        A string or key holding a character XML 1.0 cannot carry (a C0
        control, U+FFFF) is written as a JSON string literal, marked
        C{form="json"} or C{key-json}, and read back exactly; carriage
        returns, tabs and newlines survive in text and keys.
        """
        value = {"\x00k": "a\x01b<&>", "\uffff": "\r\n\t", "tab\tkey\r\n": " x "}
        written = xml.dumps(value)
        self.assertIn(b'key-json="&quot;\\u0000k&quot;"', written)
        self.assertIn(b'form="json">"a\\u0001b&lt;&amp;&gt;"</string>', written)
        self.assertEqual(xml.loads(written), value)

    def test_refusedForms(self) -> None:
        """
        Anything but the typed form is refused with L{InvalidBody}: unknown
        elements, members without keys, keys outside objects, text in
        containers, elements in scalars, bad numbers, duplicate keys,
        unknown attributes, and JSON literals that are not strings or hold
        lone surrogates.
        """
        for document in BAD_SHAPES + (
            b"<number>0x10</number>",
            b"<number>1e999</number>",
            b"<number>NaN</number>",
            b'<object><null key="a"/><null key="a"/></object>',
            b'<string form="json">"\\ud800"</string>',
            b'<x:object xmlns:x="urn:x"/>',
            b"<string>x</string><string>y</string>",
            b"<string>unclosed",
            b"",
        ):
            self.assertRaises(InvalidBody, xml.loads, document)

    def test_unsafeXMLRefused(self) -> None:
        """
        DTDs, internal entities (the billion laughs) and external entities
        are refused before anything is expanded or fetched.
        """
        laughs = (
            b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "lol">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><string>&b;</string>'
        )
        external = (
            b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY e SYSTEM '
            b'"file:///etc/passwd">]><string>&e;</string>'
        )
        doctype = b'<!DOCTYPE string SYSTEM "http://example.invalid/x.dtd"><string/>'
        for document in (laughs, external, doctype):
            error = self.assertRaises(InvalidBody, xml.loads, document)
            self.assertIn("DTD", error.description)

    def test_depthLimit(self) -> None:
        """
        Objects and arrays nested deeper than the limit are refused, as
        for JSON; exactly at the limit they are read.
        """
        self.assertEqual(xml.loads(b"<array>" * 3 + b"</array>" * 3, 3), [[[]]])
        error = self.assertRaises(
            InvalidBody, xml.loads, b"<array>" * 4 + b"</array>" * 4, 3
        )
        self.assertIn("deeper than 3", error.description)
        # Far deeper than the limit: refused as soon as the limit is passed.
        deep = b"<array>" * 100_000 + b"</array>" * 100_000
        self.assertRaises(InvalidBody, xml.loads, deep, 32)

    def test_otherEncodings(self) -> None:
        """
        An XML document in another encoding it declares is read.
        """
        document = '<?xml version="1.0" encoding="UTF-16"?><string>é€</string>'
        self.assertEqual(xml.loads(document.encode("utf-16")), "é€")


class APITests(SynchronousTestCase):
    """
    XML through the API, in memory.
    """

    def setUp(self) -> None:
        self.node = InMemoryNode(self)

    def postXML(self, queue: str, document: Any) -> Answer:
        return call(
            self.node,
            "POST",
            f"/v2/queues/{queue}/messages",
            xml.dumps(document),
            {"Content-Type": XML, "Accept": XML},
        )

    @settings(max_examples=60, deadline=None)
    @given(jsonValues)
    def test_bodyRoundTrips(self, body: Any) -> None:
        """
        A message body posted as JSON reads back the same as XML, and one
        posted as XML reads back the same as JSON and as XML.
        """
        node = InMemoryNode(self)
        posted = call(
            node,
            "POST",
            "/v2/queues/q/messages",
            json.dumps({"messages": [{"ttl": 300, "body": body}]}).encode(),
            {"Content-Type": "application/json"},
        )
        self.assertEqual(posted.code, 201, posted.body)
        href = json.loads(posted.body)["resources"][0]
        got = call(node, "GET", href, headers={"Accept": XML})
        self.assertEqual(got.code, 200)
        self.assertEqual(canonical(got.xml()["body"]), canonical(body))

        posted = call(
            node,
            "POST",
            "/v2/queues/q/messages",
            xml.dumps({"messages": [{"ttl": 300, "body": body}]}),
            {"Content-Type": XML, "Accept": XML},
        )
        self.assertEqual(posted.code, 201, posted.body)
        self.assertEqual(posted.header("content-type"), XML + "; charset=UTF-8")
        href = posted.xml()["resources"][0]
        got = call(node, "GET", href)
        self.assertEqual(canonical(json.loads(got.body)["body"]), canonical(body))
        got = call(node, "GET", href, headers={"Accept": XML})
        self.assertEqual(canonical(got.xml()["body"]), canonical(body))

    def test_everyAnswerTheSameDocument(self) -> None:
        """
        Listing, claims, stats, queue metadata and the queue list say in XML
        exactly what they say in JSON.
        """
        self.postXML("q", {"messages": [{"ttl": 300, "body": {"n": 2**70}}]})
        call(self.node, "PUT", "/v2/queues/q", xml.dumps({"color": "\x07red"}),
             {"Content-Type": XML})  # fmt: skip
        claim = call(self.node, "POST", "/v2/queues/q/claims?limit=1",
                     b'{"ttl": 60, "grace": 60}')  # fmt: skip
        claimHref = claim.header("location")
        for path in (
            "/v2/queues/q/messages?echo=true&include_claimed=true",
            "/v2/queues/q/stats",
            "/v2/queues/q",
            "/v2/queues?detailed=true",
            claimHref,
            "/v2/health",
        ):
            asJSON = call(self.node, "GET", path)
            asXML = call(self.node, "GET", path, headers={"Accept": XML})
            self.assertEqual(asXML.code, asJSON.code, path)
            self.assertEqual(
                canonical(asXML.xml()), canonical(json.loads(asJSON.body)), path
            )

    def test_negotiation(self) -> None:
        """
        C{Accept} picks the answer's type: XML where the client prefers it,
        JSON for no preference or a tie, and 406 where it admits neither.
        """
        call(self.node, "PUT", "/v2/queues/q")
        for accept, expected in (
            (None, "application/json"),
            ("*/*", "application/json"),
            ("application/*", "application/json"),
            ("application/xml", XML),
            ("application/json;q=0.5, application/xml", XML),
            ("application/json, application/xml;q=0.9", "application/json"),
            ("text/html, */*;q=0.1", "application/json"),
        ):
            headers = {"Accept": accept} if accept else {}
            r = call(self.node, "GET", "/v2/queues/q/stats", headers=headers)
            self.assertEqual(r.code, 200, accept)
            self.assertEqual(r.header("content-type").split(";")[0], expected, accept)
        r = call(self.node, "GET", "/v2/queues/q", headers={"Accept": "text/html"})
        self.assertEqual(r.code, 406)
        self.assertIn(b"application/xml", r.body)

    def test_contentType(self) -> None:
        """
        C{Content-Type} picks how the body is read; a body of another type
        is refused with 415 and changes nothing.
        """
        document = {"messages": [{"ttl": 300, "body": "b"}]}
        for contentType in ("application/xml", "text/xml; charset=UTF-8"):
            r = call(self.node, "POST", "/v2/queues/q/messages",
                     xml.dumps(document), {"Content-Type": contentType})  # fmt: skip
            self.assertEqual(r.code, 201, r.body)
        for contentType in ("text/plain", "application/x-www-form-urlencoded"):
            r = call(self.node, "POST", "/v2/queues/r/messages",
                     json.dumps(document).encode(), {"Content-Type": contentType})  # fmt: skip
            self.assertEqual(r.code, 415, r.body)
            self.assertEqual(json.loads(r.body)["title"], "Unsupported media type")
            self.assertEqual(
                json.loads(r.body)["description"],
                "Request bodies must be application/json or application/xml, "
                f"not {contentType}.",
            )
        names = [
            q["name"]
            for q in json.loads(call(self.node, "GET", "/v2/queues").body)["queues"]
        ]
        self.assertEqual(names, ["q"])

    def test_errorsInXML(self) -> None:
        """
        Errors are written in the negotiated type: malformed XML, a DTD,
        a routing 404 and a domain 404 all answer an XML error document
        with a title and a description to a client that asks for XML, and
        JSON to one that does not.
        """
        for body in (b"<object>", b'<!DOCTYPE a SYSTEM "x"><a/>'):
            r = call(self.node, "POST", "/v2/queues/q/messages", body,
                     {"Content-Type": XML, "Accept": XML})  # fmt: skip
            self.assertEqual(r.code, 400)
            self.assertEqual(r.header("content-type"), XML + "; charset=UTF-8")
            self.assertEqual(sorted(r.xml()), ["description", "title"])
            r = call(self.node, "POST", "/v2/queues/q/messages", body,
                     {"Content-Type": XML})  # fmt: skip
            self.assertEqual(r.code, 400)
            self.assertEqual(sorted(json.loads(r.body)), ["description", "title"])
        for path in ("/v2/queues/q/messages/nope", "/v2/nowhere"):
            r = call(self.node, "GET", path, headers={"Accept": XML})
            self.assertEqual(r.code, 404, path)
            self.assertEqual(sorted(r.xml()), ["description", "title"])

    def test_depthLimitApplies(self) -> None:
        """
        An XML body nested deeper than the API's JSON depth limit is
        refused with 400, as the same JSON body is.
        """
        node = InMemoryNode(self, Limits(maxJSONDepth=4))
        body = [[[[["deep"]]]]]
        document = {"messages": [{"ttl": 300, "body": body}]}
        r = call(node, "POST", "/v2/queues/q/messages", xml.dumps(document),
                 {"Content-Type": XML})  # fmt: skip
        self.assertEqual(r.code, 400)
        r = call(node, "POST", "/v2/queues/q/messages",
                 json.dumps(document).encode())  # fmt: skip
        self.assertEqual(r.code, 400)

    def test_postSizeCountsTheMessages(self) -> None:
        """
        The post size limit counts XML messages as their compact JSON, so
        a post of the same messages is allowed or refused alike in both
        types.
        """
        node = InMemoryNode(self, Limits(maxMessagesPostSize=200))
        fits = {"messages": [{"ttl": 300, "body": "x" * 100}]}
        self.assertGreater(len(xml.dumps(fits)), 200)
        r = call(node, "POST", "/v2/queues/q/messages", xml.dumps(fits),
                 {"Content-Type": XML})  # fmt: skip
        self.assertEqual(r.code, 201, r.body)
        tooLarge = {"messages": [{"ttl": 300, "body": "x" * 200}]}
        r = call(node, "POST", "/v2/queues/q/messages", xml.dumps(tooLarge),
                 {"Content-Type": XML})  # fmt: skip
        self.assertEqual(r.code, 413)


def documentedSchema() -> bytes:
    """
    The RELAX NG schema of the XML form, as C{docs/media.rst} gives it.
    """
    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "media.rst")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    block = text.split(".. code-block:: xml\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines).encode("utf-8")


class SchemaTests(SynchronousTestCase):
    """
    The schema in C{docs/media.rst} against what the API writes and reads.
    """

    def setUp(self) -> None:
        try:
            from lxml import etree
        except ImportError:
            raise SkipTest("lxml is not installed (pip install lxml)") from None
        self.etree = etree
        self.schema = etree.RelaxNG(etree.fromstring(documentedSchema()))

    def valid(self, document: bytes) -> bool:
        return self.schema.validate(self.etree.fromstring(document))

    @settings(max_examples=200, deadline=None)
    @given(jsonValues)
    def test_writtenIsValid(self, value: Any) -> None:
        """
        Every document the XML serializer writes is valid.
        """
        self.assertTrue(self.valid(xml.dumps(value)), self.schema.error_log)

    def test_refusedIsInvalid(self) -> None:
        """
        Documents the parser refuses for their shape are invalid too.
        """
        for document in BAD_SHAPES:
            self.assertFalse(self.valid(document), document)
            self.assertRaises(InvalidBody, xml.loads, document)
