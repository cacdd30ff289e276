"""
Media types: one serializer per type, chosen once per request.

Handlers answer either a document (a JSON value) or JSON text that
L{marconi.api.render}'s templates built around stored message bodies (the
fast path, which never parses a body again).  A L{Serializer} writes
either in its media type and reads request bodies of that type:
L{JSON_MEDIA} passes JSON text on as it is, L{XML_MEDIA} reads it back and
writes the typed XML form of L{marconi.api.media.xml}.  A new media type is
one more serializer.

C{Accept} picks the serializer of the answer (JSON where the client has no
preference), C{Content-Type} the one that reads the body (JSON where
there is none); a type neither serializer handles is 406 or 415.
"""

from dataclasses import dataclass
from typing import Any, Callable, Optional

from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from marconi.api import render
from marconi.api.errors import HTTPError
from marconi.api.media import xml
from marconi.core import jsontext


@dataclass(frozen=True)
class Serializer:
    """
    Writes answers in one media type and reads request bodies in it.
    """

    #: The answer's C{Content-Type}.
    contentType: bytes
    #: A document (a JSON value) as the answer's body.
    document: Callable[[Any], bytes]
    #: JSON text the API wrote (see L{render}) as the answer's body.
    text: Callable[[bytes], bytes]
    #: Parse a request body: C{load(data, maxDepth)}.
    load: Callable[[bytes, int], Any]


def _same(body: bytes) -> bytes:
    return body


JSON_MEDIA = Serializer(
    b"application/json; charset=UTF-8", render.document, _same, jsontext.loads
)
XML_MEDIA = Serializer(
    b"application/xml; charset=UTF-8", xml.dumps, xml.fromJSON, xml.loads
)

#: The media types of answers and what they admit, for 406 descriptions.
PRODUCED = "application/json and application/xml"
_JSON_TYPES = ("application/json",)
_XML_TYPES = ("application/xml",)


def negotiate(accept: Optional[bytes], alsoJSON: tuple = ()) -> Serializer:
    """
    The serializer of an answer to a request with the C{Accept} header
    C{accept}: the type the client prefers, JSON on a tie.

    @param alsoJSON: more media types that JSON answers satisfy.
    @raise HTTPError: 406 if the header admits neither.
    """
    if not accept or accept in (b"*/*", b"application/json"):
        return JSON_MEDIA
    found = preferred(accept, alsoJSON)
    if found is None:
        raise HTTPError(406, "Not acceptable", f"This server produces {PRODUCED}.")
    return found


def preferred(accept: Optional[bytes], alsoJSON: tuple = ()) -> Optional[Serializer]:
    """
    Like L{negotiate}, but L{None} where nothing is acceptable.
    """
    if not accept:
        return JSON_MEDIA
    parsed = parse_accept_header(accept.decode("latin-1"), MIMEAccept)
    jsonQuality = max(parsed.quality(kind) for kind in _JSON_TYPES + alsoJSON)
    xmlQuality = max(parsed.quality(kind) for kind in _XML_TYPES)
    if xmlQuality > jsonQuality:
        return XML_MEDIA
    if jsonQuality > 0:
        return JSON_MEDIA
    return None


def forErrors(accept: Optional[bytes]) -> Serializer:
    """
    The serializer of an error answer: the negotiated one, JSON where none
    is acceptable (the error is told anyway).
    """
    return preferred(accept) or JSON_MEDIA


def ofBody(contentType: Optional[bytes]) -> Serializer:
    """
    The serializer that reads a request body with the C{Content-Type}
    C{contentType}.

    @raise HTTPError: 415 for a type no serializer reads.
    """
    if contentType is None or contentType == b"application/json":
        return JSON_MEDIA
    kind = contentType.split(b";", 1)[0].strip().lower()
    if kind in (b"application/json", b"") or kind.endswith(b"+json"):
        return JSON_MEDIA
    if kind in (b"application/xml", b"text/xml") or kind.endswith(b"+xml"):
        return XML_MEDIA
    raise HTTPError(
        415,
        "Unsupported media type",
        "Request bodies must be application/json or application/xml, "
        f"not {kind[:64].decode('latin-1')}.",
    )
