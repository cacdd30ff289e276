"""
The XML form of the API's documents: every JSON value as typed elements.

  - C{<object>} holds one element per member, each naming its key in a
    C{key} attribute (any Unicode key works, order is kept);
  - C{<array>} holds its items in order;
  - C{<string>} holds its text as it is, C{<number>} the number's JSON text
    (so big integers and floats keep their digits), and C{<true/>},
    C{<false/>} and C{<null/>} are empty.

XML 1.0 cannot carry most C0 control characters, nor U+FFFE and U+FFFF,
even as character references.  A string holding one is written as
C{<string form="json">} whose text is the string as a JSON string literal
(quotes included), and a key holding one in a C{key-json} attribute, also
a JSON string literal; both are read back exactly.

Input is parsed with defusedxml (no DTDs, no entities, no external
references) into the value directly, refusing anything but this form with
L{InvalidBody}, and nesting of objects and arrays deeper than the same limit
as JSON documents.  The schema is in C{docs/media.rst}.
"""

import json
import re
from typing import Any, Optional

from defusedxml import DefusedXmlException  # type: ignore[import-untyped]
from defusedxml.ElementTree import DefusedXMLParser  # type: ignore[import-untyped]

from marconi.core import jsontext
from marconi.core.errors import InvalidBody

DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'

# What XML 1.0 cannot carry, even as a character reference (surrogates can
# only come from a JSON escape, which the API refuses, but are named for
# completeness).
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# A carriage return in text or attributes, and tabs and newlines in
# attributes, would be normalised by every parser: they are written as
# character references.
_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTRIBUTE = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\t": "&#9;",
        "\n": "&#10;",
        "\r": "&#13;",
    }
)
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_WHITESPACE = " \t\r\n"
_dumpNumber = json.JSONEncoder(allow_nan=False).encode


class _Number(str):
    """
    The JSON text of a number, as read from JSON text the API wrote.
    """


# Reads JSON text the API wrote itself (stored message bodies, rendered
# documents): numbers keep their text.
_decodeOwn = json.JSONDecoder(parse_float=_Number, parse_int=_Number).decode


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)


def _key(key: str) -> str:
    if _UNSAFE.search(key) is None:
        return ' key="' + key.translate(_ATTRIBUTE) + '"'
    return ' key-json="' + _literal(key).translate(_ATTRIBUTE) + '"'


def _write(value: Any, key: str, out: list) -> None:
    kind = type(value)
    if kind is str:
        if _UNSAFE.search(value) is None:
            out.append(f"<string{key}>{value.translate(_TEXT)}</string>")
        else:
            literal = _literal(value).translate(_TEXT)
            out.append(f'<string{key} form="json">{literal}</string>')
    elif kind is _Number:
        out.append(f"<number{key}>{value}</number>")
    elif kind is dict:
        if not value:
            out.append(f"<object{key}/>")
            return
        out.append(f"<object{key}>")
        for name, item in value.items():
            _write(item, _key(name), out)
        out.append("</object>")
    elif kind is list or kind is tuple:
        if not value:
            out.append(f"<array{key}/>")
            return
        out.append(f"<array{key}>")
        for item in value:
            _write(item, "", out)
        out.append("</array>")
    elif value is None:
        out.append(f"<null{key}/>")
    elif value is True:
        out.append(f"<true{key}/>")
    elif value is False:
        out.append(f"<false{key}/>")
    elif isinstance(value, (int, float)):
        out.append(f"<number{key}>{_dumpNumber(value)}</number>")
    elif isinstance(value, str):
        _write(str(value), key, out)
    else:
        raise TypeError(f"{kind.__name__} has no XML form")


def dumps(value: Any) -> bytes:
    """
    The XML document of a JSON value.
    """
    out = [DECLARATION]
    _write(value, "", out)
    return "".join(out).encode("utf-8")


def fromJSON(text: bytes) -> bytes:
    """
    The XML document of JSON text the API wrote (numbers keep their text).
    """
    return dumps(_decodeOwn(text.decode("utf-8")))


class _Element:
    __slots__ = ("tag", "key", "value", "text")

    def __init__(self, tag: str, key: Optional[str], value: Any) -> None:
        self.tag = tag
        self.key = key
        self.value = value
        self.text: list = []


_SCALARS = {"string", "number", "true", "false", "null"}
_CONSTANTS = {"true": True, "false": False, "null": None}


class _Builder:
    """
    A parser target that builds the JSON value of a document in the typed
    form as the parser reads it, refusing anything else.
    """

    def __init__(self, maxDepth: int) -> None:
        self.maxDepth = maxDepth
        self.depth = 0
        self.stack: list[_Element] = []
        self.result: Any = None

    def start(self, tag: str, attrib: dict) -> None:
        parent = self.stack[-1] if self.stack else None
        if parent is not None and parent.tag not in ("object", "array"):
            raise InvalidBody(f"<{parent.tag}> cannot hold elements.")
        if tag in ("object", "array"):
            self.depth += 1
            if self.depth > self.maxDepth:
                raise InvalidBody(
                    f"The XML document is nested deeper than {self.maxDepth} levels."
                )
            value: Any = {} if tag == "object" else []
        elif tag in _SCALARS:
            value = None
        else:
            raise InvalidBody(f"<{tag[:64]}> is not an element of the XML form.")
        attrib = dict(attrib)
        key = None
        if parent is not None and parent.tag == "object":
            key = self._memberKey(tag, attrib)
        if tag == "string" and attrib.get("form") == "json":
            del attrib["form"]
            value = False  # marks the JSON literal form
        if attrib:
            name = sorted(attrib)[0]
            raise InvalidBody(f"<{tag}> cannot have the attribute {name[:64]!r}.")
        self.stack.append(_Element(tag, key, value))

    def _memberKey(self, tag: str, attrib: dict) -> str:
        if "key" in attrib and "key-json" not in attrib:
            return attrib.pop("key")
        if "key-json" in attrib and "key" not in attrib:
            return _string(attrib.pop("key-json"))
        raise InvalidBody(
            f"<{tag}> in an <object> needs one of the attributes key and key-json."
        )

    def data(self, text: str) -> None:
        if self.stack:
            self.stack[-1].text.append(text)

    def end(self, tag: str) -> None:
        element = self.stack.pop()
        text = "".join(element.text)
        if element.tag in ("object", "array"):
            self.depth -= 1
            if text.strip(_WHITESPACE):
                raise InvalidBody(f"<{element.tag}> cannot hold text.")
            value = element.value
        elif element.tag == "string":
            value = text if element.value is None else _string(text)
        elif element.tag == "number":
            value = _number(text)
        elif text.strip(_WHITESPACE):
            raise InvalidBody(f"<{element.tag}/> must be empty.")
        else:
            value = _CONSTANTS[element.tag]
        if not self.stack:
            self.result = value
            return
        parent = self.stack[-1]
        if parent.tag == "array":
            parent.value.append(value)
            return
        key = element.key
        assert key is not None
        if key in parent.value:
            raise InvalidBody(f"The object has the key {key[:64]!r} twice.")
        parent.value[key] = value

    def close(self) -> Any:
        return self.result


def _string(literal: str) -> str:
    """
    A string written as a JSON string literal.
    """
    if not literal.startswith('"'):
        raise InvalidBody("A key-json or form=json value must be a JSON string.")
    value = jsontext.loads(literal.encode("utf-8"))
    if not isinstance(value, str):
        raise InvalidBody("A key-json or form=json value must be a JSON string.")
    return value


def _number(text: str) -> Any:
    """
    A number's JSON text, read as the JSON parser reads numbers.
    """
    if _NUMBER.fullmatch(text) is None:
        raise InvalidBody(f"<number> must hold a JSON number, not {text[:64]!r}.")
    return jsontext.loads(text.encode("ascii"))


def loads(data: bytes, maxDepth: int = 32) -> Any:
    """
    Parse an untrusted XML document in the typed form.

    @raise InvalidBody: for anything else, for a DTD, an entity or an
        external reference, or for nesting deeper than C{maxDepth}.
    """
    parser = DefusedXMLParser(
        target=_Builder(maxDepth),
        forbid_dtd=True,
        forbid_entities=True,
        forbid_external=True,
    )
    try:
        parser.feed(data)
        return parser.close()
    except DefusedXmlException as e:
        raise InvalidBody(
            f"The XML document may not hold a DTD, entities or external references"
            f" ({type(e).__name__})."
        ) from None
    except SyntaxError as e:
        raise InvalidBody(f"The request body is not well-formed XML: {e}") from None
