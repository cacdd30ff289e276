"""
Strict JSON for untrusted input.

Python's C{json} module accepts C{NaN}, C{Infinity}, numbers that overflow to
infinity, duplicate object keys and lone surrogates, and raises
L{RecursionError} on deep nesting.  Each of those would be a 500 or a
message no other client can read, so L{loads} refuses them all with
L{InvalidBody}, and L{dumpBody} refuses to store text that is not
valid UTF-8.
"""

import json
import math
import re
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any, Callable, Iterable

from marconi.core.errors import InvalidBody, ValidationFailed


def _rejectConstant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finiteFloat(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _noDuplicates(pairs: list) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:64]!r}")
            seen.add(key)
    return result


_decoder = json.JSONDecoder(
    parse_constant=_rejectConstant,
    parse_float=_finiteFloat,
    object_pairs_hook=_noDuplicates,
)


def _tooDeep(value: Any, maxDepth: int) -> bool:
    """
    Whether C{value} nests arrays and objects deeper than C{maxDepth}.

    Walks containers only, so its cost grows with their number, not with
    the size of the text.
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > maxDepth:
            return True
        stack.extend(
            (child, depth + 1) for child in children if isinstance(child, (dict, list))
        )
    return False


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def _hasLoneSurrogate(value: Any) -> bool:
    """
    Whether a string anywhere in C{value} (keys included) holds a lone
    surrogate, which the JSON escape C{\\udXXX} can produce but no UTF-8
    text can carry.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def loads(data: bytes, maxDepth: int = 32) -> Any:
    """
    Parse untrusted JSON.

    @raise InvalidBody: for anything but a well-formed UTF-8 JSON
        document without duplicate keys, non-finite numbers, lone
        surrogates or nesting deeper than C{maxDepth}.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidBody("The request body is not valid UTF-8.") from None
    try:
        value = _decoder.decode(text)
    except RecursionError:
        value = None
        tooDeep = True
    except ValueError as e:
        raise InvalidBody(f"The request body is not valid JSON: {e}") from None
    else:
        # Nesting deeper than maxDepth needs more than maxDepth brackets, and
        # a lone surrogate can only come from a \\uD800-\\uDFFF escape (the
        # UTF-8 decoding above refuses encoded ones): count and search the
        # text at C speed before walking the value.
        tooDeep = (
            isinstance(value, (dict, list))
            and text.count("[") + text.count("{") > maxDepth
            and _tooDeep(value, maxDepth)
        )
    if tooDeep:
        raise InvalidBody(f"The JSON document is nested deeper than {maxDepth} levels.")
    if _SURROGATE_ESCAPE.search(text) is not None and _hasLoneSurrogate(value):
        raise InvalidBody(
            "The request body holds a lone surrogate, which is not valid text."
        )
    return value


def encoder(asText: Callable[[str], str], colon: str, comma: str) -> Callable:
    """
    A JSON encoding function, as C{json.JSONEncoder(...).encode} with
    C{check_circular=False} gives, made once rather than on each call: a
    parsed request document cannot hold itself.

    @param asText: how strings are written (with or without C{\\uXXXX}
        escapes of non-ASCII characters).
    """
    try:
        from _json import make_encoder
    except ImportError:  # pragma: no cover (an interpreter without _json)
        return json.JSONEncoder(
            ensure_ascii=asText is encode_basestring_ascii,
            check_circular=False,
            separators=(comma, colon),
        ).encode
    chunks = make_encoder(
        None,  # no check for circular references
        json.JSONEncoder().default,
        asText,
        None,  # no indent
        colon,
        comma,
        False,  # keys in their order
        False,  # a key no JSON key can be written from is an error
        True,  # NaN and the infinities as JavaScript writes them
    )
    join = "".join
    return lambda value: join(chunks(value, 0))


# A stored body: compact, non-ASCII characters as they are.
_compact = encoder(encode_basestring, ":", ",")


def dumpBody(body: Any) -> str:
    """
    Serialise a parsed message body to compact JSON text.

    @raise ValidationFailed: if the body holds a lone surrogate.
    """
    text = _compact(body)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationFailed(
                "The message body holds a lone surrogate, which is not valid text."
            ) from None
    return text


def dumps(value: Any) -> bytes:
    """
    Serialise a response document.
    """
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
