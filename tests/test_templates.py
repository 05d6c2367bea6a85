"""The mail templates in templates/emails/ (SPEC 5) and their README.

These are files companies paste into their ATS and files the gateway splices
into mail in any charset, so the checks are about what breaks in the field:
the marker present exactly once and in a form the gateway finds, HTML that
every mail client renders (balanced, inline styles, nothing external, no
script), placeholders that are all documented and all of one syntax, and
text that fits the charsets Japanese mail is sent in.
"""

from __future__ import annotations

import difflib
import re
import string
from html.parser import HTMLParser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "templates" / "emails"
README = TEMPLATES / "README.md"
MARKER = "[[CAREER_RELAY_LINK]]"

REJECTIONS = ["rejection_ja.txt", "rejection_ja.html", "rejection_en.txt", "rejection_en.html"]
BLOCKS = ["block_ja.txt", "block_ja.html", "block_en.txt", "block_en.html"]
INTERNAL = ["internal_ja.txt", "internal_en.txt"]
#: The company link's mail with the personal link (SPEC 10): the site fills ``${link}``.
LINK_MAILS = ["link_ja.txt", "link_en.txt"]
#: Rejections for mail that does not pass the gateway: the company link instead of the marker.
COMPANY_LINK = ["company_link_ja.txt", "company_link_ja.html", "company_link_en.txt",
                "company_link_en.html"]
WITH_MARKER = REJECTIONS + BLOCKS
ALL = WITH_MARKER + INTERNAL + LINK_MAILS + COMPANY_LINK
HTML = [name for name in ALL if name.endswith(".html")]
TEXT = [name for name in ALL if name.endswith(".txt")]

# ${name}: the one placeholder syntax (string.Template, as dsn.txt).
PLACEHOLDER = re.compile(r"\$\{([a-z][a-z0-9_]*)\}")
VOID_ELEMENTS = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
    ]
)


def read(name: str) -> str:
    return (TEMPLATES / name).read_bytes().decode("utf-8")


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def readme_rows() -> dict[str, set[str]]:
    """The README's Files table: file name -> the placeholders listed in its row."""
    rows: dict[str, set[str]] = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*`([^`$]+\.(?:txt|html))`\s*\|", line)
        if m:
            rows[m.group(1)] = placeholders(line)
    return rows


class _Checker(HTMLParser):
    """Collects what the HTML rules need: nesting problems, tags, attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.hrefs_with_text: list[tuple[str, str]] = []
        self._link: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "a":
            self._link = (dict(attrs).get("href") or "", [])
        if tag not in VOID_ELEMENTS:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID_ELEMENTS:
            self.problems.append(f"self-closed non-void <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_ELEMENTS:
            self.problems.append(f"end tag for void element </{tag}>")
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> does not close the open {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag == "a" and self._link is not None:
            href, text = self._link
            self.hrefs_with_text.append((href, "".join(text).strip()))
            self._link = None

    def handle_data(self, data: str) -> None:
        if self._link is not None:
            self._link[1].append(data)

    def close(self) -> None:
        super().close()
        if self.stack:
            self.problems.append(f"unclosed tags at the end: {self.stack}")


def parse(name: str) -> _Checker:
    checker = _Checker()
    checker.feed(read(name))
    checker.close()
    return checker


# --- files and encoding -------------------------------------------------------------


@pytest.mark.parametrize("name", [*ALL, "README.md"])
def test_exists_and_is_utf8_with_lf(name: str) -> None:
    raw = (TEMPLATES / name).read_bytes()
    assert raw, f"{name} is empty"
    assert not raw.startswith(b"\xef\xbb\xbf"), f"{name} starts with a byte-order mark"
    raw.decode("utf-8")  # raises on invalid UTF-8
    assert b"\r" not in raw, f"{name} must use LF line endings"
    assert raw.endswith(b"\n"), f"{name} must end with a newline"


@pytest.mark.parametrize("name", ALL)
def test_no_tabs_or_trailing_spaces(name: str) -> None:
    for number, line in enumerate(read(name).split("\n"), 1):
        assert "\t" not in line, f"{name}:{number} has a tab"
        assert line == line.rstrip(" "), f"{name}:{number} has trailing spaces"


@pytest.mark.parametrize("name", [n for n in ALL if "_ja." in n])
def test_japanese_fits_legacy_japanese_charsets(name: str) -> None:
    # So the gateway can splice into ISO-2022-JP / Shift_JIS / EUC-JP parts as they are.
    text = read(name)
    for charset in ("iso2022_jp", "shift_jis", "euc_jp"):
        text.encode(charset)


@pytest.mark.parametrize("name", [n for n in ALL if "_en." in n])
def test_english_is_ascii(name: str) -> None:
    read(name).encode("ascii")


# --- the marker ---------------------------------------------------------------------


@pytest.mark.parametrize("name", WITH_MARKER)
def test_marker_exactly_once(name: str) -> None:
    assert read(name).count(MARKER) == 1


@pytest.mark.parametrize("name", INTERNAL)
def test_internal_sentence_has_no_marker_no_link_and_is_one_line(name: str) -> None:
    text = read(name)
    assert "CAREER_RELAY_LINK" not in text
    assert "http" not in text.lower()
    assert "www." not in text.lower()
    assert "<" not in text and ">" not in text, "the sentence is spliced into HTML too"
    assert "&" not in text, "the sentence is spliced into HTML too"
    assert text.count("\n") == 1 and text.strip(), "one sentence on one line"


@pytest.mark.parametrize("name", ALL)
def test_no_encoded_or_mangled_marker(name: str) -> None:
    text = read(name)
    assert "%5B" not in text.upper(), "URL-encoded marker"
    assert "&#91;" not in text and "&lsqb;" not in text, "entity-encoded marker"
    assert "［" not in text, "full-width bracket"


@pytest.mark.parametrize("name", [n for n in TEXT if n in WITH_MARKER])
def test_text_marker_stands_on_its_own_line(name: str) -> None:
    lines = read(name).split("\n")
    assert MARKER in lines, "the URL must end up on a line of its own (SPEC 5)"


@pytest.mark.parametrize("name", [n for n in HTML if n in WITH_MARKER])
def test_html_marker_is_the_href_of_a_described_link(name: str) -> None:
    assert f'href="{MARKER}"' in read(name)
    links = [(h, t) for h, t in parse(name).hrefs_with_text if h == MARKER]
    assert len(links) == 1
    link_text = links[0][1]
    assert link_text and MARKER not in link_text
    assert not link_text.lower().startswith(("http", "www")), "the text says what it is"
    assert "agency_name" in link_text, "the link text names where it leads"


# --- HTML rules ---------------------------------------------------------------------


@pytest.mark.parametrize("name", HTML)
def test_html_is_balanced(name: str) -> None:
    assert parse(name).problems == []


@pytest.mark.parametrize("name", HTML)
def test_html_has_nothing_active_or_external(name: str) -> None:
    text = read(name)
    assert "<script" not in text.lower()
    assert "javascript:" not in text.lower()
    for tag, attrs in parse(name).tags:
        assert tag not in ("script", "style", "link", "iframe", "object", "embed", "form", "img")
        assert "src" not in attrs, f"<{tag} src=...>: no external resources"
        assert "background" not in attrs, f"<{tag} background=...>: no external resources"
        for attr in attrs:
            assert not attr.startswith("on"), f"<{tag} {attr}=...>: no event handlers"
        assert "url(" not in (attrs.get("style") or ""), f"<{tag}> loads a resource from CSS"


@pytest.mark.parametrize("name", [n for n in REJECTIONS + COMPANY_LINK if n.endswith(".html")])
def test_full_html_document_head(name: str) -> None:
    checker = parse(name)
    tags = dict((tag, attrs) for tag, attrs in reversed(checker.tags))
    lang = "ja" if "_ja." in name else "en"
    assert tags["html"].get("lang") == lang
    metas = [attrs for tag, attrs in checker.tags if tag == "meta"]
    assert any((m.get("charset") or "").lower() == "utf-8" for m in metas)
    assert any(m.get("name") == "viewport" for m in metas), "readable on phones"
    assert "body" in tags


@pytest.mark.parametrize("name", [n for n in BLOCKS if n.endswith(".html")])
def test_html_block_is_one_self_contained_element(name: str) -> None:
    text = read(name).strip()
    assert not re.search(r"<(html|head|body|meta|title)\b", text, re.I)
    first = re.match(r"<(div|table)\b", text)
    assert first, "the block is one <div> or <table>"
    outer = first.group(1)
    assert text.endswith(f"</{outer}>")
    # The outer element closes only at the very end: it is a single element.
    checker = _Checker()
    depth_zero_at: list[int] = []
    for index, piece in enumerate(re.split(r"(?=<)", text)[1:]):
        checker.feed(piece)
        if not checker.stack:
            depth_zero_at.append(index)
    checker.close()
    assert checker.problems == []
    assert len(depth_zero_at) == 1, "more than one top-level element"
    lang = "ja" if "_ja." in name else "en"
    assert checker.tags[0][1].get("lang") == lang
    assert "style" in checker.tags[0][1]


# --- placeholders -------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_one_placeholder_syntax(name: str) -> None:
    text = read(name)
    assert "{{" not in text and "}}" not in text, "placeholders are ${name}, not {{name}}"
    template = string.Template(text)
    assert template.is_valid(), f"{name} has a '$' that is not ${{name}} or $$"
    # Every identifier string.Template sees is a braced one: no bare $name.
    assert set(template.get_identifiers()) == placeholders(text)


def test_readme_lists_every_file() -> None:
    rows = readme_rows()
    assert set(ALL) <= set(rows), f"missing from README: {sorted(set(ALL) - set(rows))}"
    for name in rows:
        assert (TEMPLATES / name).exists(), f"README lists {name}, which does not exist"


@pytest.mark.parametrize("name", ALL)
def test_placeholders_are_the_ones_documented_for_the_file(name: str) -> None:
    assert placeholders(read(name)) == readme_rows()[name]


@pytest.mark.parametrize("name", ALL)
def test_every_placeholder_has_a_meaning_in_the_readme(name: str) -> None:
    readme = README.read_text(encoding="utf-8")
    for placeholder in placeholders(read(name)):
        assert re.search(rf"^\| `\$\{{{placeholder}\}}`", readme, re.M), (
            f"${{{placeholder}}} has no row in the README's meaning table"
        )


@pytest.mark.parametrize("name", WITH_MARKER)
def test_filled_template_keeps_the_marker_and_leaves_nothing_unfilled(name: str) -> None:
    text = read(name)
    values = {p: f"<{p}>" if name.endswith(".txt") else p.upper() for p in placeholders(text)}
    filled = string.Template(text).substitute(values)
    assert filled.count(MARKER) == 1
    assert "${" not in filled


# --- what the referral paragraph says -----------------------------------------------


@pytest.mark.parametrize("name", WITH_MARKER)
def test_names_who_operates_it(name: str) -> None:
    found = placeholders(read(name))
    assert {"agency_name", "agency_license_no"} <= found


@pytest.mark.parametrize("name", WITH_MARKER)
def test_says_optional_no_effect_nothing_shared_how_to_decline(name: str) -> None:
    text = read(name)
    if "_ja." in name:
        must = [
            "任意",
            "影響することは一切ございません",
            "同意された場合に限り",
            "何もしていただく必要はございません",
        ]
    else:
        must = [
            "entirely optional",
            "has no",
            "Opening the page shares nothing",
            "simply do nothing",
        ]
    for phrase in must:
        assert phrase in text, f"{name} lost {phrase!r}"


@pytest.mark.parametrize("name", REJECTIONS)
def test_rejection_follows_the_oinori_structure(name: str) -> None:
    text = read(name)
    if "_ja." in name:
        order = [
            "ご応募いただき",
            "誠にありがとうございました",
            "残念ながら",
            "お祈り申し上げます",
            MARKER,
        ]
    else:
        order = [
            "Thank you very much for applying",
            "we regret to inform you",
            "We wish you every success",
            MARKER,
        ]
    positions = [text.find(phrase) for phrase in order]
    assert -1 not in positions, dict(zip(order, positions, strict=True))
    assert positions == sorted(positions), "thanks, result, お祈り, then the optional referral"
    for placeholder in ("candidate_name", "company_name", "job_title", "hr_contact_name"):
        assert placeholder in placeholders(text)


@pytest.mark.parametrize("name", LINK_MAILS)
def test_the_link_mail_has_no_marker_and_its_link_on_a_line_of_its_own(name: str) -> None:
    text = read(name)
    assert MARKER not in text
    assert [line for line in text.splitlines() if "${link}" in line] == ["${link}"]


@pytest.mark.parametrize("name", COMPANY_LINK)
def test_company_link_templates_carry_the_fixed_link_where_the_marker_would_be(
        name: str) -> None:
    text = read(name)
    assert MARKER not in text and text.count("${company_link}") == 1
    if name.endswith(".txt"):
        assert "${company_link}" in text.splitlines()  # on a line of its own
    else:
        assert 'href="${company_link}"' in text
    # The rest is the rejection template's, word for word where the link is not concerned.
    twin = read(name.replace("company_link_", "rejection_")).splitlines()
    blocks = difflib.SequenceMatcher(None, twin, text.splitlines()).get_matching_blocks()
    assert len(twin) - sum(b.size for b in blocks) <= 4
