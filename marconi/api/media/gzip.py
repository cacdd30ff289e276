"""
Content coding: gzip request bodies in, gzip answers out.

A gzip request body is inflated as it arrives, never to more than the
body limit: a small body that would inflate past it (a gzip bomb) is
refused after at most the limit plus one byte was inflated, whatever its
compressed size.  Answers are gzip'd when C{Accept-Encoding} admits gzip
and the body has at least L{THRESHOLD} bytes: below that, the gzip header,
trailer and the CPU cost outweigh what is saved.
"""

import zlib
from typing import Optional, Sequence

from werkzeug.http import parse_accept_header

from marconi.core.errors import InvalidBody, PayloadTooLarge

#: The smallest answer body that is gzip'd (bytes).
THRESHOLD = 1024
#: zlib's compression level for answers: its default, most of the gain of
#: level 9 at a fraction of its cost.
LEVEL = 6

_GZIP = 16 + zlib.MAX_WBITS
_NAMES = {b"gzip", b"x-gzip"}


class UnsupportedCoding(Exception):
    """
    A C{Content-Encoding} other than gzip (or identity).
    """


def requestCoding(values: Optional[Sequence[bytes]]) -> Optional[str]:
    """
    The content coding of a request body, from its C{Content-Encoding}
    header values: C{None} for none (or identity), C{"gzip"}.

    @raise UnsupportedCoding: for any other coding, or more than one.
    """
    if not values:
        return None
    codings = [
        token.strip().lower()
        for value in values
        for token in value.split(b",")
        if token.strip().lower() not in (b"", b"identity")
    ]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in _NAMES:
        return "gzip"
    raise UnsupportedCoding(b", ".join(codings).decode("latin-1"))


class Inflater:
    """
    Inflates a gzip body fed in pieces (several gzip members, one after
    the other, are one body), to at most C{limit} bytes.

    @ivar size: the bytes inflated so far.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._inflate = zlib.decompressobj(_GZIP)

    def feed(self, data: bytes) -> bytes:
        """
        Inflate the next piece of the body.

        @raise PayloadTooLarge: once the body inflates past the limit.
        @raise InvalidBody: if it is not gzip.
        """
        out = []
        try:
            while data:
                # One byte more than the limit allows shows it is exceeded;
                # what zlib did not inflate yet waits in unconsumed_tail.
                piece = self._inflate.decompress(data, self.limit - self.size + 1)
                self.size += len(piece)
                if self.size > self.limit:
                    raise PayloadTooLarge(
                        f"Request bodies may not exceed {self.limit} bytes"
                        " once inflated."
                    )
                out.append(piece)
                if self._inflate.eof:
                    data = self._inflate.unused_data
                    if data:
                        self._inflate = zlib.decompressobj(_GZIP)
                else:
                    data = self._inflate.unconsumed_tail
        except zlib.error as e:
            raise InvalidBody(f"The request body is not valid gzip: {e}") from None
        return b"".join(out)

    def close(self) -> None:
        """
        The body is complete.

        @raise InvalidBody: if the gzip stream was cut short.
        """
        if not self._inflate.eof:
            raise InvalidBody("The gzip request body is truncated.")


def wanted(acceptEncoding: Optional[bytes], size: int) -> bool:
    """
    Whether an answer of C{size} bytes is gzip'd for a request with the
    C{Accept-Encoding} header C{acceptEncoding}.
    """
    if size < THRESHOLD or not acceptEncoding:
        return False
    accepted = parse_accept_header(acceptEncoding.decode("latin-1"))
    return accepted.quality("gzip") > 0


def compress(body: bytes) -> bytes:
    """
    A gzip member holding C{body}, with no file name and a zero time (so
    the same body always gives the same bytes).
    """
    deflate = zlib.compressobj(LEVEL, zlib.DEFLATED, _GZIP)
    return deflate.compress(body) + deflate.flush()
