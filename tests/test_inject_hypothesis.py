"""Hypothesis: random MIME trees with markers in random places (SPEC 5).

The trees nest multipart/mixed, alternative, related (and now and then
signed) up to depth 4, with text/plain and text/html leaves in five
charsets and every transfer encoding valid for them, binary and text
attachments, attached messages, random preambles and epilogues, and lines
up to 990 octets.  Markers go into random leaves, attachments and attached
messages included.  The model built alongside the bytes says which parts
must take the link; ``tests/injection_checks.py`` checks everything else.
"""

from __future__ import annotations

import base64
import quopri
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import event, given, settings
from hypothesis import strategies as st

from career_relay.settings import AgencySettings, CompanySettings
from gateway import email_templates, mime
from gateway.inject import NotInjectable, inject
from tests.injection_checks import (
    MARKER,
    MAX_LINE,
    check_marker_injection,
    leaves,
    longest_line,
)

REPO = Path(__file__).resolve().parent.parent
URL = "https://consent.example/c/TESTTOKEN"
REPL = email_templates.load(REPO / "templates" / "emails",
                            CompanySettings(id="acme", name="株式会社アクメ", locale="ja"),
                            AgencySettings()).for_candidate(URL)

ASCII = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;!?()-_/'\"@#%+=[]"
JAPANESE = "あいうえおかきくけこ漢字選考結果様ーソ表能予、。「」【】（）　"
CODECS = {"us-ascii": "ascii", "utf-8": "utf-8", "iso-2022-jp": "iso2022_jp",
          "shift_jis": "cp932", "euc-jp": "euc_jp"}
CTES = {"us-ascii": ["7bit", "quoted-printable", "base64"],
        "iso-2022-jp": ["7bit", "quoted-printable", "base64"],
        "utf-8": ["8bit", "quoted-printable", "base64"],
        "shift_jis": ["8bit", "quoted-printable", "base64"],
        "euc-jp": ["8bit", "quoted-printable", "base64"]}
LINE_LIMIT = 990
for _codec in ("iso2022_jp", "cp932", "euc_jp"):
    JAPANESE.encode(_codec)  # the pool fits every Japanese charset


@dataclass
class Built:
    data: bytes
    walk: list[str] = field(default_factory=list)  # content type of each entity, walk order
    must_change: list[int] = field(default_factory=list)  # walk indices that take the link
    keep: list[int] = field(default_factory=list)  # unmarked inline text: same bytes
    never: list[int] = field(default_factory=list)  # attachments, attached messages, signed


@st.composite
def text_lines(draw: st.DrawFn, charset: str, html: bool) -> list[str]:
    alphabet = ASCII if charset == "us-ascii" else ASCII + JAPANESE
    if html:
        alphabet = alphabet.replace("\"", "")
    count = draw(st.integers(0, 6))
    lines = []
    for _ in range(count):
        # Now and then a line at the limit (fit() trims it to 990 octets).
        base = draw(st.sampled_from(alphabet)) * LINE_LIMIT if draw(st.integers(0, 9)) == 0 else ""
        lines.append(base + draw(st.text(alphabet, max_size=80)))
    return lines


def fit(segments: list[str], codec: str, limit: int) -> str:
    """Join segments (markers are whole segments), trimming text until the line fits."""
    segs = list(segments)
    while len("".join(segs).encode(codec)) > limit:
        for i in range(len(segs) - 1, -1, -1):
            if segs[i] and MARKER not in segs[i] and "%5B" not in segs[i]:
                segs[i] = segs[i][:-1]
                break
        else:
            break
    return "".join(segs)


@st.composite
def text_body(draw: st.DrawFn, charset: str, html: bool) -> tuple[list[str], bool]:
    """Lines of a text leaf, with 0-2 markers placed at random; and whether it has any."""
    lines = draw(text_lines(charset, html))
    codec = CODECS[charset]
    markers = draw(st.integers(0, 2))
    if markers and not lines:
        lines = [""]
    segmented = [[line] for line in lines]
    for _ in range(markers):
        segs = segmented[draw(st.integers(0, len(segmented) - 1))]
        j = draw(st.integers(0, len(segs) - 1))
        style = draw(st.sampled_from(["text", "href", "encoded"] if html else ["text"]))
        # A word of its own (SPEC 5: a marker glued to a longer URL is left as it is).
        token = {"text": f" {MARKER} ", "href": f' <a href="{MARKER}">link</a> ',
                 "encoded": ' <a href="%5B%5BCAREER_RELAY_LINK%5D%5D">link</a> '}[style]
        if MARKER in segs[j] or "%5B" in segs[j]:  # never inside an earlier token
            segs.insert(j + 1, token)
        else:
            col = draw(st.integers(0, len(segs[j])))
            segs[j:j + 1] = [segs[j][:col], token, segs[j][col:]]
    lines = [fit(segs, codec, LINE_LIMIT) for segs in segmented]
    if html:
        wrap = draw(st.sampled_from(["full", "body-less"]))
        if wrap == "full":
            lines = ["<html><head><meta charset=\"x\"></head><body>", *lines,
                     "<!--[if mso]><p>x</p><![endif]--></body></html>"]
    return lines, markers > 0


def apply_cte(raw: bytes, cte: str) -> bytes:
    if cte == "base64":
        return base64.encodebytes(raw).replace(b"\n", b"\r\n")
    if cte == "quoted-printable":
        return quopri.encodestring(raw.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    return raw


@st.composite
def text_leaf(draw: st.DrawFn, attachment: bool) -> tuple[bytes, bool]:
    ctype = draw(st.sampled_from(["text/plain", "text/html"]))
    charset = draw(st.sampled_from(list(CODECS)))
    cte = draw(st.sampled_from(CTES[charset]))
    lines, marked = draw(text_body(charset, ctype == "text/html"))
    codec = CODECS[charset]
    raw = b"".join(line.encode(codec) + b"\r\n" for line in lines)
    label = draw(st.sampled_from([charset, charset.upper(), f'"{charset}"']))
    head = f"Content-Type: {ctype}; charset={label}\r\n"
    if attachment:
        head += 'Content-Disposition: attachment; filename="note.txt"\r\n'
    head += f"Content-Transfer-Encoding: {cte}\r\n"
    return head.encode() + b"\r\n" + apply_cte(raw, cte), marked


@st.composite
def binary_leaf(draw: st.DrawFn) -> bytes:
    data = draw(st.binary(max_size=300))
    if draw(st.booleans()):
        data += MARKER.encode()
    return (b'Content-Type: application/octet-stream; name="cv.bin"\r\n'
            b'Content-Disposition: attachment; filename="cv.bin"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + apply_cte(data, "base64"))


BOUNDARY_COUNTER = [0]


@st.composite
def node(draw: st.DrawFn, depth: int, built: Built, eligible: bool,
         root: bool = False) -> bytes:
    """One entity (headers and body), recorded in ``built`` in walk order."""
    kinds = ["text", "text", "text", "attachment", "binary", "rfc822"]
    if depth > 0:
        kinds += ["multipart"] * 3
    kind = "multipart" if root and draw(st.integers(0, 4)) else draw(st.sampled_from(kinds))
    index = len(built.walk)
    if kind in ("text", "attachment"):
        data, marked = draw(text_leaf(attachment=kind == "attachment"))
        built.walk.append("text")
        if kind == "attachment" or not eligible:
            built.never.append(index)
        elif marked:
            built.must_change.append(index)
        else:
            built.keep.append(index)
        return data
    if kind == "binary":
        built.walk.append("application/octet-stream")
        built.never.append(index)
        return draw(binary_leaf())
    if kind == "rfc822":
        built.walk.append("message/rfc822")
        built.never.append(index)
        inner = Built(b"")
        body = draw(node(min(depth, 1), inner, eligible=True))
        return (b"Content-Type: message/rfc822\r\n\r\n"
                b"Subject: forwarded\r\nMIME-Version: 1.0\r\n" + body)
    subtype = draw(st.sampled_from(["mixed", "alternative", "related", "mixed", "signed"]))
    built.walk.append(f"multipart/{subtype}")
    BOUNDARY_COUNTER[0] += 1
    boundary = f"----=_Part_{BOUNDARY_COUNTER[0]}~{draw(st.integers(0, 10**6))}"
    signed = subtype == "signed"
    count = draw(st.integers(1, 3))
    children = [draw(node(depth - 1, built, eligible and not signed)) for _ in range(count)]
    if signed:
        built.walk.append("application/pgp-signature")
        built.never.append(len(built.walk) - 1)
        children.append(b"Content-Type: application/pgp-signature\r\n\r\n"
                        b"-----BEGIN PGP SIGNATURE-----\r\nxx\r\n-----END PGP SIGNATURE-----")
    params = '; protocol="application/pgp-signature"; micalg=pgp-sha256' if signed else ""
    out = f'Content-Type: multipart/{subtype}; boundary="{boundary}"{params}\r\n\r\n'.encode()
    preamble = draw(st.text(ASCII, max_size=60))
    if preamble:
        out += preamble.encode() + b"\r\n"
    for child in children:
        out += f"--{boundary}\r\n".encode() + child + b"\r\n"
    out += f"--{boundary}--".encode()
    epilogue = draw(st.text(ASCII, max_size=60))
    if epilogue:
        out += b"\r\n" + epilogue.encode()
    return out


@st.composite
def messages(draw: st.DrawFn) -> Built:
    built = Built(b"")
    body = draw(node(4, built, eligible=True, root=True))
    head = (b"From: saiyo@acme.example\r\nTo: a@example.net\r\nSubject: test\r\n"
            b"Date: Tue, 14 May 2024 10:00:00 +0900\r\nMIME-Version: 1.0\r\n")
    built.data = head + body + b"\r\n"
    return built


@settings(max_examples=150, deadline=None, derandomize=True)
@given(messages())
def test_random_trees_take_the_link_and_lose_nothing(built: Built) -> None:
    before = built.data
    root = mime.parse(before)
    walk = root.walk()
    assert len(walk) == len(built.walk)  # the MIME map sees the tree we built
    event(f"parts that take the link: {min(len(built.must_change), 3)}")
    event(f"entities: {min(len(walk) // 4 * 4, 12)}+")
    try:
        after = inject(before, REPL, append=False)
    except NotInjectable:
        assert not built.must_change
        return
    assert built.must_change, "a message with no eligible marker was changed"
    outcome = check_marker_injection(before, after, URL)
    assert outcome.changed == built.must_change
    walk_after = mime.parse(after).walk()
    for i in built.keep + built.never:
        old, new = walk[i], walk_after[i]
        assert before[old.header_start:old.body_end] == after[new.header_start:new.body_end]
    assert longest_line(after) <= MAX_LINE


@settings(max_examples=150, deadline=None, derandomize=True)
@given(messages())
def test_random_trees_take_the_block_and_lose_nothing(built: Built) -> None:
    before = built.data
    try:
        after = inject(before, REPL, append=True)
    except NotInjectable:
        return
    root_b, root_a = mime.parse(before), mime.parse(after)
    assert [p.content_type for p in root_b.walk()] == [p.content_type for p in root_a.walk()]
    walk_b, walk_a = root_b.walk(), root_a.walk()
    for i in built.never:  # attachments, attached messages, signed content
        old, new = walk_b[i], walk_a[i]
        assert before[old.header_start:old.body_end] == after[new.header_start:new.body_end]
    assert len(leaves(root_a)) == len(leaves(root_b))
    assert longest_line(after) <= MAX_LINE
    assert after != before
