"""Golden files: rejections as real mail clients write them, and what the gateway makes of them.

``tests/data/golden/NAME.eml`` is the input, byte for byte as the client
sends it; ``NAME.expected.eml`` is the output of ``inject`` for one fixed
link, reviewed by reading it (the golden files are the spec).  To regenerate
the expected files after a deliberate change, run this module with
``CAREER_RELAY_REGEN_GOLDEN=1`` and review the diff before committing.
See ``tests/data/golden/README.md`` for what each file imitates.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from career_relay.settings import AgencySettings, CompanySettings
from gateway import email_templates, mime
from gateway.inject import NotInjectable, Replacement, inject, marked_parts
from tests.injection_checks import (
    MAX_LINE,
    check_marker_injection,
    defects,
    inline_text_leaves,
    leaves,
    longest_line,
    part_text,
)

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "data" / "golden"
URL = "https://consent.example/c/TESTTOKEN"

# name -> (company locale, header-only)
CASES: dict[str, tuple[str, bool]] = {
    "outlook_iso2022jp": ("ja", False),
    "gmail_alternative_qp": ("en", False),
    "apple_mail_alternative": ("ja", False),
    "thunderbird_flowed": ("ja", False),
    "ats_sendgrid_html_base64": ("ja", False),
    "hr_system_shift_jis": ("ja", False),
    "hr_system_iso2022jp": ("ja", False),
    "outlook_iso2022jp_header_only": ("ja", True),
    "hr_system_shift_jis_header_only": ("ja", True),
}
MARKED = [name for name, (_, append) in CASES.items() if not append]
HEADER_ONLY = [name for name, (_, append) in CASES.items() if append]


def replacement(locale: str) -> Replacement:
    company = (CompanySettings(id="acme", name="株式会社アクメ", locale="ja") if locale == "ja"
               else CompanySettings(id="northwind", name="Northwind Labs", locale="en"))
    return email_templates.load(REPO / "templates" / "emails", company,
                                AgencySettings()).for_candidate(URL)


def source(name: str) -> bytes:
    return (GOLDEN / f"{name}.eml").read_bytes()


def produce(name: str) -> bytes:
    locale, append = CASES[name]
    return inject(source(name), replacement(locale), append=append)


def test_every_golden_input_has_its_expected_output() -> None:
    inputs = {p.name.removesuffix(".eml") for p in GOLDEN.glob("*.eml")
              if not p.name.endswith(".expected.eml")}
    expected = {p.name.removesuffix(".expected.eml") for p in GOLDEN.glob("*.expected.eml")}
    assert inputs == set(CASES) == expected


@pytest.mark.parametrize("name", list(CASES))
def test_output_is_byte_exact(name: str) -> None:
    out = produce(name)
    path = GOLDEN / f"{name}.expected.eml"
    if os.environ.get("CAREER_RELAY_REGEN_GOLDEN") == "1":
        path.write_bytes(out)
    assert out == path.read_bytes()


@pytest.mark.parametrize("name", list(CASES))
def test_inputs_are_wire_form(name: str) -> None:
    data = source(name)
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    assert data.endswith(b"\r\n") and longest_line(data) <= MAX_LINE
    assert defects(data) == []


@pytest.mark.parametrize("name", MARKED)
def test_marker_goes_where_it_was_and_nothing_else_changes(name: str) -> None:
    before = source(name)
    assert marked_parts(before) >= 1
    after = produce(name)
    outcome = check_marker_injection(before, after, URL)
    assert outcome.changed, "no part took the link"
    assert defects(after) == []
    # Every inline text part of these messages carried the marker.
    root = mime.parse(before)
    assert len(outcome.changed) == len(inline_text_leaves(root))


@pytest.mark.parametrize("name", HEADER_ONLY)
def test_header_only_appends_the_block_to_every_alternative(name: str) -> None:
    before = source(name)
    assert marked_parts(before) == 0 and b"\r\nX-Career-Relay: rejection\r\n" in before
    with pytest.raises(NotInjectable):
        inject(before, replacement("ja"), append=False)
    after = produce(name)
    assert defects(after) == []
    assert longest_line(after) <= MAX_LINE
    walk_b, walk_a = leaves(mime.parse(before)), leaves(mime.parse(after))
    assert [p.content_type for p in walk_b] == [p.content_type for p in walk_a]
    for pb, pa in zip(walk_b, walk_a, strict=True):
        text_b, text_a = part_text(before, pb), part_text(after, pa)
        assert URL in text_a and "[[CAREER_RELAY_LINK]]" not in text_a
        assert "提携人材紹介会社" in text_a
        assert pa.params.get("charset") == pb.params.get("charset")  # the block fit
        if pb.content_type == "text/html":
            at = [m.start() for m in re.finditer(r"</body\s*>", text_b, re.IGNORECASE)][-1]
            assert text_a.startswith(text_b[:at]) and text_a.endswith(text_b[at:])
            assert f'<a href="{URL}"' in text_a
        else:
            assert text_a.startswith(text_b)
            assert f"\n{URL}\n" in text_a
    # The headers and everything between the parts are as they were.
    first, last = walk_b[0], walk_b[-1]
    assert after.startswith(before[:first.header_start])
    assert after.endswith(before[last.body_end:])


def test_outlook_cp50220_characters_and_conditional_comments_survive() -> None:
    after = produce("outlook_iso2022jp")
    plain, html = leaves(mime.parse(after))
    assert plain.cte == "7bit" and html.cte == "quoted-printable"
    for part in (plain, html):
        text = part_text(after, part)
        assert "①書類選考、②適性検査、③一次面接" in text and "選考ステップⅡ" in text
    html_text = part_text(after, html)
    assert f'<span lang="EN-US"><a href="{URL}">{URL}</a><o:p></o:p></span>' in html_text
    assert "<!--[if gte mso 9]><xml>" in html_text
    # The kanji bytes of the text part are the input's: only ASCII was spliced in.
    before = source("outlook_iso2022jp")
    (plain_b, _) = leaves(mime.parse(before))
    assert after[plain.body_start:plain.body_end] == before[
        plain_b.body_start:plain_b.body_end].replace(b"[[CAREER_RELAY_LINK]]", URL.encode())


def test_shift_jis_text_keeps_its_bytes_around_the_url() -> None:
    before, after = source("hr_system_shift_jis"), produce("hr_system_shift_jis")
    assert after == before.replace(b"[[CAREER_RELAY_LINK]]", URL.encode())


def test_iso2022jp_marker_mid_line_gets_a_line_of_its_own() -> None:
    after = produce("hr_system_iso2022jp")
    (part,) = leaves(mime.parse(after))
    text = part_text(after, part)
    assert f"専用ページ→\n{URL}\n（中村 悠真様専用）" in text
    for line in after.split(b"\r\n"):  # RFC 1468: every line ends in ASCII state
        if b"\x1b" in line:
            assert line.rfind(b"\x1b(B") > line.rfind(b"\x1b$B")


def test_thunderbird_flowed_url_is_not_joined_to_the_flowed_line() -> None:
    after = produce("thunderbird_flowed")
    assert f"（任意です）： \r\n\r\n{URL}\r\n".encode() in after
    assert b"format=flowed; delsp=yes" in after


def test_ats_link_lands_in_the_href_and_the_text() -> None:
    after = produce("ats_sendgrid_html_base64")
    (part,) = leaves(mime.parse(after))
    assert part.cte == "base64"
    text = part_text(after, part)
    assert f'<a href="{URL}" style="display:inline-block;' in text
    assert f'<br><a href="{URL}">{URL}</a></p>' in text
    assert "https://u4815162.ct.sendgrid.net/wf/open?upn=" in text  # the pixel stays
    assert max(len(x) for x in after.split(b"\r\n\r\n", 1)[1].split(b"\r\n")) <= 76
