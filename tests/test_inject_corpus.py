"""Properties of injection over real-world mail: CPython's test_email corpus and our golden inputs.

(a) A message without the marker is never changed: ``inject`` refuses it.
(b) For every inline text part of every message, the marker placed into the
    part's decoded text (on a line of its own, and in the middle of a line),
    re-encoded with the part's own charset and transfer encoding, comes out
    as the link, with every other byte of the message as it was
    (``tests/injection_checks.py`` states the contract).
"""

from __future__ import annotations

import base64
import quopri
import sysconfig
from pathlib import Path

import pytest

from career_relay.settings import AgencySettings, CompanySettings
from gateway import email_templates, mime
from gateway.charsets import codec_for
from gateway.inject import NotInjectable, inject, marked_parts
from tests.conftest import crlf
from tests.injection_checks import (
    MARKER,
    check_marker_injection,
    has_marker,
    inline_text_leaves,
    part_text,
    undo_cte,
)

REPO = Path(__file__).resolve().parent.parent
CORPUS_DIR = Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data"
GOLDEN = REPO / "tests" / "data" / "golden"
URL = "https://consent.example/c/TESTTOKEN"
REPL = email_templates.load(REPO / "templates" / "emails",
                            CompanySettings(id="acme", name="Acme", locale="en"),
                            AgencySettings()).for_candidate(URL)


def wire(raw: bytes) -> bytes:
    data = crlf(raw)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _messages() -> dict[str, bytes]:
    found = {f"corpus/{p.name}": wire(p.read_bytes()) for p in sorted(CORPUS_DIR.glob("msg_*.txt"))}
    found.update({f"golden/{p.name}": p.read_bytes() for p in sorted(GOLDEN.glob("*.eml"))
                  if not p.name.endswith(".expected.eml")})
    return found


def _mappable(data: bytes) -> mime.Part | None:
    try:
        return mime.parse(data)
    except mime.MimeError:
        return None


def _unmarked(data: bytes) -> bool:
    root = _mappable(data)
    if root is None:
        return MARKER.encode() not in data
    return not any(has_marker(part_text(data, p), html=p.content_type == "text/html")
                   for p in inline_text_leaves(root))


MESSAGES = _messages()
UNMARKED = [name for name, data in MESSAGES.items() if _unmarked(data)]


def test_the_corpus_is_there() -> None:
    assert sum(name.startswith("corpus/") for name in MESSAGES) >= 40
    assert sum(name.startswith("golden/") for name in MESSAGES) >= 9
    assert sum(name.startswith("corpus/") for name in UNMARKED) >= 40
    assert {"golden/outlook_iso2022jp_header_only.eml",
            "golden/hr_system_shift_jis_header_only.eml"} <= set(UNMARKED)


@pytest.mark.parametrize("name", UNMARKED)
def test_a_message_without_the_marker_is_never_changed(name: str) -> None:
    data = MESSAGES[name]
    if _mappable(data) is None:  # malformed on purpose: the map refuses, nothing is changed
        with pytest.raises(mime.MimeError):
            inject(data, REPL, append=False)
        return
    assert marked_parts(data) == 0
    with pytest.raises(NotInjectable):
        inject(data, REPL, append=False)


def place_marker(data: bytes, part: mime.Part, where: str) -> bytes | None:
    """``data`` with the marker put into ``part``'s text, in the part's charset and CTE.

    None when Python cannot decode the part strictly or encode the result.
    """
    if part.irregular:
        return None  # readers split its header block differently: never changed
    if data[part.body_start - 4:part.body_start] != b"\r\n\r\n":
        return None  # no empty line after the header: Python's parser and ours disagree
    body = data[part.body_start:part.body_end]
    codec = codec_for(part.params.get("charset", "us-ascii"))
    if codec is None:
        return None
    try:
        text = undo_cte(body, part.cte).decode(codec)
    except UnicodeDecodeError:
        return None
    nl = "\n" if "\n" in text and "\r\n" not in text else "\r\n"
    middle = len(text) // 2
    if where == "own-line":
        at = text.find(nl, middle)
        at = len(text) if at < 0 else at + len(nl)
        new_text = text[:at] + MARKER + nl + text[at:]
    else:
        at = text.find(" ", middle)
        at = text.rfind(" ", 0, middle) if at < 0 else at
        if part.content_type == "text/html":  # HTML text, not inside a tag (SPEC 5)
            while at >= 0 and text.rfind("<", 0, at) > text.rfind(">", 0, at):
                at = text.find(" ", at + 1)
        if at < 0:
            return None
        new_text = text[:at] + " " + MARKER + text[at:]
    try:
        raw = new_text.encode(codec)
    except UnicodeEncodeError:
        return None
    if part.cte == "base64":
        new_body = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    elif part.cte == "quoted-printable":
        new_body = crlf(quopri.encodestring(raw.replace(b"\r\n", b"\n")))
        if not body.endswith(b"\r\n"):
            new_body = new_body.removesuffix(b"\r\n")
    else:
        new_body = raw
    return data[:part.body_start] + new_body + data[part.body_end:]


def _placements() -> list[tuple[str, int, str]]:
    cases = []
    for name, data in MESSAGES.items():
        root = _mappable(data)
        if root is None:
            continue
        walk = root.walk()
        for leaf in inline_text_leaves(root):
            index = next(i for i, p in enumerate(walk) if p is leaf)
            # Only the placements this test can build (a header/body separator, a
            # charset Python round-trips strictly, a space for the mid-line case).
            cases += [(name, index, where) for where in ("own-line", "mid-line")
                      if place_marker(data, leaf, where) is not None]
    return cases


PLACEMENTS = _placements()


def test_there_are_enough_placements() -> None:
    assert len({name for name, _, _ in PLACEMENTS if name.startswith("corpus/")}) >= 30
    assert len(PLACEMENTS) >= 100


@pytest.mark.parametrize(("name", "index", "where"), PLACEMENTS)
def test_the_marker_in_any_text_part_becomes_the_link(name: str, index: int,
                                                      where: str) -> None:
    data = MESSAGES[name]
    part = mime.parse(data).walk()[index]
    marked = place_marker(data, part, where)
    assert marked is not None
    assert marked_parts(marked) >= 1
    out = inject(marked, REPL, append=False)
    outcome = check_marker_injection(marked, out, URL)
    assert index in outcome.changed
