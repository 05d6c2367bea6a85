"""Where a byte offset stands in a text/html part, for the splicer (SPEC 5).

A link goes only into HTML text or the whole href of a real <a> tag; this
module tells those apart from tags, comments, scripts and the other elements
whose content is no HTML text, and from an "<a" written inside another tag's
attribute value.  ``gateway.inject`` asks it about each marker, in order.
"""

from __future__ import annotations

import bisect
import re

_LINK_CLOSE = re.compile(rb"</a\s*>", re.IGNORECASE)


class HtmlContext:
    """Where a byte offset stands in HTML: text, a tag, a comment, or script/style.

    Asked for offsets in increasing order, it searches back only as far as the
    previous offset and carries what it knew from there, so a part is read
    once whatever the number of markers (C-speed ``rfind``, no per-byte loop).
    """

    def __init__(self, raw: bytes):
        self.raw = raw
        self.low = raw.lower()
        self.done = 0  # everything before this offset has been looked at
        # The last position seen of each landmark (-1: none yet).
        self.last = dict.fromkeys((b"<", b">", b"<!--", b"-->", *_RAW_TEXT), -1)
        self.before_last = -1  # the tag opening before last["<"]: nesting shows there
        self._closings: list[int] | None = None

    def at(self, offset: int) -> tuple[int, int, str]:
        """(start of the tag, end of the tag, kind) for the region holding ``offset``;
        kind is "text", "tag", "comment" or "script"."""
        low, last = self.low, self.last
        for mark in last:
            if mark == b"<":
                continue
            # A landmark may straddle the previous boundary: look back its length.
            found = low.rfind(mark, max(0, self.done - len(mark)), offset)
            if found >= 0:
                last[mark] = found
        # A "<" opens a tag only before a letter, "/", "!" or "?" (HTML's tag open
        # state): "Salary < 5M" and "<[[...]]" are text to every reader.
        for opened in _TAG_OPEN.finditer(low, max(0, self.done - 1), offset):
            self.before_last, last[b"<"] = last[b"<"], opened.start()
        self.done = offset
        if last[b"<!--"] > last[b"-->"]:
            return last[b"<!--"], len(low), "comment"
        for i in range(0, len(_RAW_TEXT), 2):
            open_, close = _RAW_TEXT[i], _RAW_TEXT[i + 1]
            if last[open_] > last[close]:
                return last[open_], len(low), "script"
        if last[b"<"] > last[b">"]:
            if self.before_last > last[b">"]:
                # "<img src='x?<a href=[[...]]>'": a "<a" inside another tag's attribute
                # value is no tag; the link would go wherever that attribute points.
                return self.before_last, len(low), "nested"
            gt = low.find(b">", offset)
            return last[b"<"], len(low) if gt < 0 else gt + 1, "tag"
        return last[b">"] + 1, offset, "text"

    def closing_a(self, after: int) -> int | None:
        """Offset just past the first ``</a>`` at or after ``after``, if any."""
        if self._closings is None:
            self._closings = [m.end() for m in _LINK_CLOSE.finditer(self.raw)]
        i = bisect.bisect_left(self._closings, after + 1)
        return self._closings[i] if i < len(self._closings) else None


_TAG_OPEN = re.compile(rb"<[a-z/!?]")
# Elements whose content is no HTML text: scripts and styles, and what a form submits or a
# reader shows as literal text (textarea, title, option lists, xmp, noscript, iframe).
# A marker inside them takes no link.  In open/close pairs.
_RAW_TEXT = (b"<script", b"</script", b"<style", b"</style", b"<textarea", b"</textarea",
             b"<title", b"</title", b"<select", b"</select", b"<xmp", b"</xmp",
             b"<noscript", b"</noscript", b"<iframe", b"</iframe", b"<plaintext", b"</html")
