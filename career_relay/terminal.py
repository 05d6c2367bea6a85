"""Text from elsewhere, made safe to print on an operator's terminal.

A mail's decoded Subject (RFC 2047 lets it carry any character), an SMTP reply,
another process's command line: printed raw, an ESC or a C1 CSI starts a
terminal escape sequence (recolour, retitle, move the cursor, on some terminals
write to the clipboard), a CR or LF forges a line of our output, and a bidi
control (Trojan Source, CVE-2021-42574) reorders what the reader sees.  Every
command prints such text through ``printable``: those characters are shown as
escapes (``\\x1b``, ``\\u202e``), everything else as it is.
"""

from __future__ import annotations

#: C0 controls and DEL, C1 controls; bidi embeddings, overrides and isolates, the
#: zero-width characters and marks (U+200B to U+200F), the Arabic letter mark; the line
#: and paragraph separators, which some terminals and viewers break a line at.
_UNSAFE = (*range(0x00, 0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F),
           *range(0x2066, 0x206A), *range(0x200B, 0x2010), 0x061C, 0x2028, 0x2029)
_ESCAPES = {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _UNSAFE}


def printable(text: str) -> str:
    """``text`` with every control, bidi control and zero-width character escaped."""
    return text.translate(_ESCAPES)
