"""What every injected message must satisfy, checked independently of gateway/inject.py.

Shared by the golden files, the corpus properties and the Hypothesis tests.
Text is decoded here with our own small decoders (ISO-2022-JP tolerant of
CP50220 characters such as ① and Ⅱ, which Python's codec refuses), so a
check never trusts the code it checks.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import quopri
import re
from dataclasses import dataclass

from gateway import mime
from gateway.charsets import codec_for

MARKER = "[[CAREER_RELAY_LINK]]"
ENCODED_MARKER = re.compile(r"%5B%5BCAREER_RELAY_LINK%5D%5D", re.IGNORECASE)
UNTOUCHABLE = ("multipart/signed", "multipart/encrypted", "application/pkcs7-mime",
               "application/x-pkcs7-mime")
MAX_LINE = 998


def leaves(root: mime.Part) -> list[mime.Part]:
    return [p for p in root.walk() if not p.is_multipart]


def inline_text_leaves(root: mime.Part) -> list[mime.Part]:
    """text/plain and text/html leaves a reader sees inline: not attachments, not under
    multipart/signed or encrypted (attached messages are leaves to the MIME map)."""
    if root.content_type in UNTOUCHABLE or root.disposition == "attachment":
        return []
    if root.is_multipart:
        return [leaf for child in root.children for leaf in inline_text_leaves(child)]
    return [root] if root.content_type in ("text/plain", "text/html") else []


def undo_cte(body: bytes, cte: str) -> bytes:
    if cte == "base64":
        try:
            return base64.b64decode(body)
        except binascii.Error:
            return body
    if cte == "quoted-printable":
        return quopri.decodestring(body)
    return body


def _jis_pair(j1: int, j2: int) -> str:
    try:
        return (b"\x1b$B" + bytes([j1, j2]) + b"\x1b(B").decode("iso2022_jp")
    except UnicodeDecodeError:  # CP50220 (NEC row 13, IBM extensions): map through CP932
        s1 = ((j1 + 1) >> 1) + (0x70 if j1 < 0x5F else 0xB0)
        s2 = j2 + (0x1F + (j2 >= 0x60) if j1 % 2 else 0x7E)
        return bytes([s1 & 0xFF, s2 & 0xFF]).decode("cp932", "replace")


def decode_iso2022jp(raw: bytes) -> str:
    """ISO-2022-JP as Outlook writes it (CP50220), decoded without Python's strict codec."""
    out: list[str] = []
    i, n, mode = 0, len(raw), "ascii"
    escapes = ((b"\x1b$B", "kanji"), (b"\x1b$@", "kanji"), (b"\x1b(B", "ascii"),
               (b"\x1b(J", "ascii"), (b"\x1b(I", "kana"))
    while i < n:
        if raw[i] == 0x1B:
            for esc, new_mode in escapes:
                if raw.startswith(esc, i):
                    mode, i = new_mode, i + len(esc)
                    break
            else:
                out.append("\ufffd")
                i += 1
            continue
        if mode == "kanji" and raw[i] not in (0x0D, 0x0A) and i + 1 < n:
            out.append(_jis_pair(raw[i], raw[i + 1]))
            i += 2
        elif mode == "kana" and 0x21 <= raw[i] <= 0x5F:
            out.append(bytes([raw[i] + 0x80]).decode("cp932"))
            i += 1
        else:
            out.append(chr(raw[i]) if raw[i] < 0x80 else "\ufffd")
            i += 1
    return "".join(out)


def decode_charset(raw: bytes, charset: str) -> str:
    codec = codec_for(charset) or "ascii"
    if codec.startswith("iso2022_jp"):
        return decode_iso2022jp(raw)
    return raw.decode(codec, "replace")


def part_text(message: bytes, part: mime.Part) -> str:
    """The part's text, transfer encoding and charset undone, line ends as LF."""
    raw = undo_cte(message[part.body_start:part.body_end], part.cte)
    text = decode_charset(raw, part.params.get("charset", "us-ascii"))
    return text.replace("\r\n", "\n")


def has_marker(text: str, *, html: bool) -> bool:
    return MARKER in text or (html and ENCODED_MARKER.search(text) is not None)


def expected_text(before: str, url: str, *, html: bool) -> str:
    """``before`` with every marker replaced by the URL (the comparison form)."""
    text = before.replace(MARKER, url)
    return ENCODED_MARKER.sub(url, text) if html else text


def comparable(text: str, url: str, *, html: bool) -> str:
    """Text in which a link reads as its URL and the URL's own line breaks do not count."""
    if html:
        return text.replace(f'<a href="{url}">{url}</a>', url)
    return re.sub(r"\n*" + re.escape(url) + r"\n*", url, text)


def longest_line(data: bytes) -> int:
    return max((len(line) for line in data.split(b"\r\n")), default=0)


def defects(data: bytes) -> list[str]:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    return [type(d).__name__ for part in msg.walk() for d in part.defects]


@dataclass
class Outcome:
    changed: list[int]  # walk indices (leaves) whose bytes changed


def check_marker_injection(before: bytes, after: bytes, url: str) -> Outcome:
    """The contract of a marker injection (SPEC 5), given the input and the output.

    * the same MIME tree: as many leaves, same content types, in the same order;
    * every inline text leaf with the marker: its text now has the URL, no marker,
      and is otherwise the same text (the URL's line breaks aside);
    * every other leaf, and every byte outside the changed leaves: identical;
    * no new parser defects, in the message or in a changed part on its own;
    * no line over 998 octets in a changed part (nor anywhere, if none was before).
    """
    root_b, root_a = mime.parse(before), mime.parse(after)
    walk_b, walk_a = root_b.walk(), root_a.walk()
    assert [p.content_type for p in walk_b] == [p.content_type for p in walk_a]
    eligible = {id(p) for p in inline_text_leaves(root_b)}
    changed: list[int] = []
    for i, (pb, pa) in enumerate(zip(walk_b, walk_a, strict=True)):
        if pb.is_multipart:
            continue
        html = pb.content_type == "text/html"
        marked = id(pb) in eligible and has_marker(part_text(before, pb), html=html)
        old = before[pb.header_start:pb.body_end]
        new = after[pa.header_start:pa.body_end]
        if not marked:
            assert new == old, f"unmarked part {i} ({pb.content_type}) changed"
            continue
        changed.append(i)
        text_b, text_a = part_text(before, pb), part_text(after, pa)
        assert url in text_a, f"part {i}: no link"
        assert not has_marker(text_a, html=html), f"part {i}: marker left"
        assert comparable(text_a, url, html=html) == comparable(
            expected_text(text_b, url, html=html), url, html=html), f"part {i}: text differs"
        assert longest_line(new) <= MAX_LINE
        assert defects(new) == defects(old), f"part {i}: {defects(new)}"
    # Outside the changed leaves, every byte is the original's.
    rebuilt, last = [], 0
    for i in changed:
        pb, pa = walk_b[i], walk_a[i]
        rebuilt += [before[last:pb.header_start], after[pa.header_start:pa.body_end]]
        last = pb.body_end
    rebuilt.append(before[last:])
    assert b"".join(rebuilt) == after
    assert sorted(defects(after)) == sorted(defects(before))
    if longest_line(before) <= MAX_LINE:
        assert longest_line(after) <= MAX_LINE
    return Outcome(changed)
