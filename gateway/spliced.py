"""A copy of a rejection as what makes it unique: ranges of the shared original and new bytes.

A rejection to a thousand recipients has a thousand copies that differ from
the message, and from each other, only in their link, their signature and
their ``Received`` line.  Holding and storing each whole costs a thousand
times the message (issue 12 measured 12 GB of memory and 2.9 GB of spool for
one 2.9 MB rejection).  So a copy is a ``Spliced``: the ``Base`` (the message,
held once, stored once) and the pieces that make the copy from it.  Its
bytes are rebuilt when they are needed (signing, delivery) and are the same
every time, across restarts too: the pieces are stored with the copy and
the base is checked against its length and CRC-32 (DESIGN decision 1:
retries send the same bytes).

The stored form of the pieces (``encode``) is one line per piece::

    R<start>,<end>\\n            bytes start..end of the base
    L<length>\\n<bytes>          these bytes
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

_RANGE = re.compile(rb"R(\d{1,12}),(\d{1,12})\n")
_LITERAL = re.compile(rb"L(\d{1,12})\n")

Piece = bytes | tuple[int, int]


@dataclass(eq=False)
class Base:
    """The message every copy of one rejection is made from.  ``key`` names it in the
    spool; ``stored`` is where a queue file of it already lies (hard-linked, not rewritten,
    by the next copy that needs one)."""

    key: str
    data: bytes
    stored: str | None = field(default=None, repr=False)
    _crc: int | None = field(default=None, repr=False)
    #: What signing needs to know of each range the copies take from it (gateway.dkim).
    facts: dict[tuple[int, int], tuple[int, bool, bool]] = field(default_factory=dict,
                                                                 repr=False)

    @property
    def crc(self) -> int:
        if self._crc is None:
            self._crc = zlib.crc32(self.data)
        return self._crc


@dataclass(frozen=True, eq=False)
class Spliced:
    base: Base
    pieces: tuple[Piece, ...]

    def __len__(self) -> int:
        return sum(p[1] - p[0] if isinstance(p, tuple) else len(p) for p in self.pieces)

    def __bytes__(self) -> bytes:
        view = memoryview(self.base.data)
        return b"".join(view[p[0]:p[1]] if isinstance(p, tuple) else p for p in self.pieces)

    def prepend(self, head: bytes) -> Spliced:
        return Spliced(self.base, (head, *self.pieces))

    def unique_bytes(self) -> int:
        """What this copy adds to the base (its new bytes), for the spool's accounting."""
        return sum(len(p) for p in self.pieces if isinstance(p, bytes))

    def encode(self) -> bytes:
        out: list[bytes] = []
        for p in self.pieces:
            if isinstance(p, tuple):
                out.append(b"R%d,%d\n" % p)
            else:
                out += [b"L%d\n" % len(p), p]
        return b"".join(out)

    @classmethod
    def decode(cls, base: Base, encoded: bytes) -> Spliced:
        """The copy ``encode`` wrote; ValueError for pieces that do not fit the base."""
        pieces: list[Piece] = []
        at, size = 0, len(base.data)
        while at < len(encoded):
            m = _RANGE.match(encoded, at)
            if m is not None:
                start, end = int(m[1]), int(m[2])
                if not 0 <= start <= end <= size:
                    raise ValueError(f"a range {start},{end} outside the base of {size} bytes")
                pieces.append((start, end))
                at = m.end()
                continue
            m = _LITERAL.match(encoded, at)
            if m is None:
                raise ValueError(f"no piece at offset {at}")
            length = int(m[1])
            if m.end() + length > len(encoded):
                raise ValueError("a piece cut short")
            pieces.append(encoded[m.end():m.end() + length])
            at = m.end() + length
        return cls(base, tuple(pieces))


def splice(base: Base, edits: list[tuple[int, int, bytes]]) -> Spliced:
    """The base with each (start, end) replaced by its bytes; edits in order, apart.

    Only what an edit really changes becomes a new piece: the bytes it shares
    with what it replaces at its start and at its end stay ranges of the base
    (a marker replaced in an 8-bit part adds the link, not the whole part).
    """
    data = base.data
    pieces: list[Piece] = []
    last = 0
    for start, end, new in edits:
        old = data[start:end]
        head = _common_prefix(old, new)
        tail = _common_suffix(old[head:], new[head:])
        if start + head > last:
            pieces.append((last, start + head))
        middle = new[head:len(new) - tail]
        if middle:
            pieces.append(middle)
        last = end - tail
    if last < len(data):
        pieces.append((last, len(data)))
    return Spliced(base, tuple(pieces))


def _common_prefix(a: bytes, b: bytes) -> int:
    """The length of the longest common prefix: a binary search of memcmp compares."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(a: bytes, b: bytes) -> int:
    lo, hi = 0, min(len(a), len(b))
    if hi == 0 or a[len(a) - hi:] == b[len(b) - hi:]:
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid:] == b[len(b) - mid:]:
            lo = mid
        else:
            hi = mid - 1
    return lo


#: What the spool and delivery carry for a message: its bytes, or a copy's pieces.
Body = bytes | Spliced


def materialised(body: Body) -> bytes:
    return body if isinstance(body, bytes) else bytes(body)
