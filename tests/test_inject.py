"""MIME splicing: the link goes in, nothing else changes (SPEC 5, DESIGN decision 2)."""

from __future__ import annotations

import base64
import email
import email.policy
import quopri
import re
import sysconfig
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import inject as inj
from gateway import mime
from gateway.inject import NotInjectable, Replacement, inject, marked_parts
from gateway.part_writing import encode_cte
from tests.conftest import crlf, line_end_mixtures

URL = "https://consent.example/c/AbC-123_xyz"
REPL = Replacement(
    text=URL,
    html_attr=URL,
    html_text=f'<a href="{URL}">{URL}</a>',
    text_block=f"ご希望の方はこちら:\n{URL}",
    html_block=f'<div><p>ご希望の方は<a href="{URL}">こちら</a></p></div>',
)
M = "[[CAREER_RELAY_LINK]]"


def parts(data: bytes) -> list[email.message.EmailMessage]:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    return [p for p in msg.walk() if not p.is_multipart()]  # type: ignore[misc]


def text_of(part: email.message.EmailMessage) -> str:
    content = part.get_content()
    return content if isinstance(content, str) else content.decode()


def unchanged_outside(before: bytes, after: bytes, start: bytes, end: bytes) -> None:
    """Everything before ``start`` and after ``end`` (first/last occurrences) is identical."""
    i, j = before.index(start), before.rindex(end)
    assert after.startswith(before[:i])
    assert after.endswith(before[j:])


def test_plain_utf8_marker_becomes_the_url_on_its_own_line() -> None:
    msg = crlf(f"Subject: x\nContent-Type: text/plain; charset=utf-8\n\n"
               f"田中様\nご登録はこちら {M} からどうぞ。\n以上\n")
    out = inject(msg, REPL, append=False)
    assert out == msg.replace(f" {M} ".encode(), f" \r\n{URL}\r\n ".encode())


def test_marker_alone_on_its_line_adds_no_blank_lines() -> None:
    msg = crlf(f"Content-Type: text/plain\n\nline\n{M}\nend\n")
    assert inject(msg, REPL, append=False) == msg.replace(M.encode(), URL.encode())


def test_iso_2022_jp_with_cp50220_characters_is_spliced_without_decoding() -> None:
    # ① (NEC row 13) in ISO-2022-JP: Python's codec cannot decode it; Outlook sends it.
    jis = b"\x1b$B$3$s$K$A$O\x1b(B\r\n\x1b$B-!\x1b(B " + M.encode() + b"\r\n"
    msg = b"Content-Type: text/plain; charset=ISO-2022-JP\r\n\r\n" + jis
    out = inject(msg, REPL, append=False)
    assert out == msg.replace(b" " + M.encode(), b" \r\n" + URL.encode())


def test_iso_2022_jp_kanji_bytes_never_match_the_marker() -> None:
    # In kanji state, "[[" would be two ideographs: not a marker.
    body = b"\x1b$B" + M.encode() + b"\x1b(B\r\n"
    msg = b"Content-Type: text/plain; charset=iso-2022-jp\r\n\r\n" + body
    assert marked_parts(msg) == 0
    with pytest.raises(NotInjectable):
        inject(msg, REPL, append=False)


def test_shift_jis_trail_bytes_are_not_a_marker() -> None:
    # 0x83 0x5B is カ's neighbour "ー"... a lead byte followed by "[": one character.
    tricky = "ー".encode("cp932")
    assert tricky[1:] == b"["
    body = tricky + b"[CAREER_RELAY_LINK]]\r\n" + "本当の".encode("cp932") + M.encode() + b"\r\n"
    msg = b"Content-Type: text/plain; charset=Shift_JIS\r\n\r\n" + body
    out = inject(msg, REPL, append=False)
    assert out.count(URL.encode()) == 1
    assert out.startswith(msg[:msg.index(b"\r\n\r\n") + 4] + tricky + b"[CAREER_RELAY_LINK]]")


def test_quoted_printable_marker_split_by_a_soft_break() -> None:
    qp = b"Hello =E7=94=B0=E4=B8=AD=E6=A7=98\r\nPlease see [[CAREER_=\r\nRELAY_LINK]] soon.\r\n"
    msg = (b"Content-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp)
    out = inject(msg, REPL, append=False)
    (part,) = parts(out)
    assert part["Content-Transfer-Encoding"] == "quoted-printable"
    text = text_of(part)
    assert f"\n{URL}\n" in text.replace("\r\n", "\n") and "田中様" in text
    assert M not in text
    assert max(len(line) for line in out.split(b"\r\n")) <= 76


def test_base64_html_marker_in_href_and_in_text() -> None:
    html = (f'<html><body><p><a href="{M}">登録</a></p><p>{M}</p></body></html>\r\n'
            ).encode()
    msg = (b"Content-Type: text/html; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + base64.encodebytes(html).replace(b"\n", b"\r\n"))
    out = inject(msg, REPL, append=False)
    (part,) = parts(out)
    assert part["Content-Transfer-Encoding"] == "base64"
    text = text_of(part)
    assert f'<a href="{URL}">登録</a>' in text
    assert f'<p><a href="{URL}">{URL}</a></p>' in text


def test_url_encoded_marker_in_href() -> None:
    msg = crlf('Content-Type: text/html\n\n<a href="%5B%5BCAREER_RELAY_LINK%5D%5D">x</a>\n'
               )
    assert inject(msg, REPL, append=False) == msg.replace(
        b"%5B%5BCAREER_RELAY_LINK%5D%5D", URL.encode())


def test_multipart_alternative_changes_only_the_text_parts() -> None:
    msg = crlf(
        'From: hr@acme.example\nMIME-Version: 1.0\n'
        'Content-Type: multipart/mixed; boundary="outer"\n\npreamble\n--outer\n'
        'Content-Type: multipart/alternative; boundary="inner"\n\n--inner\n'
        f'Content-Type: text/plain; charset=utf-8\n\ntext {M}\n--inner\n'
        f'Content-Type: text/html; charset=utf-8\n\n<p>{M}</p>\n--inner--\n--outer\n'
        'Content-Type: application/pdf\nContent-Disposition: attachment; filename="a.pdf"\n'
        'Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n--outer\n'
        f'Content-Type: text/plain\nContent-Disposition: attachment\n\nnot this {M}\n'
        '--outer--\nepilogue\n')
    out = inject(msg, REPL, append=False)
    unchanged_outside(msg, out, b"text [[", b"</p>")
    assert out.count(URL.encode()) == 3  # text line, and href + text of the html anchor
    assert f"not this {M}".encode() in out  # the attachment kept its marker
    assert b"JVBERi0xLjQK" in out and out.endswith(b"--outer--\r\nepilogue\r\n")
    assert len(parts(out)) == 4


def test_one_parse_serves_every_copy() -> None:
    # The rejection path parses once and injects every copy from that map (the
    # decoded parts are kept on it): each copy must be what a fresh parse gives.
    msg = crlf(
        'Content-Type: multipart/alternative; boundary="b"\n\n--b\n'
        'Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n'
        + base64.encodebytes(f"text {M}\n".encode()).decode() + '--b\n'
        'Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n'
        f'\n<p><a href=3D"{M}">link</a></p>\n--b--\n')
    other = Replacement(text="https://consent.example/c/other", html_attr=None,
                        html_text="(no link)", text_block="", html_block="")
    root = mime.parse(msg)
    assert marked_parts(msg, root) == 2
    for repl in (REPL, other, REPL, other):
        assert inject(msg, repl, append=False, root=root) == inject(msg, repl, append=False)


def test_header_only_appends_blocks_to_both_alternatives() -> None:
    msg = crlf(
        'Content-Type: multipart/alternative; boundary="b"\n\n--b\n'
        'Content-Type: text/plain; charset=iso-2022-jp\nContent-Transfer-Encoding: 7bit\n\n'
        ) + "お祈り申し上げます。\r\n".encode("iso2022_jp") + crlf(
        '--b\nContent-Type: text/html; charset=utf-8\n\n'
        '<html><body><p>お祈り</p><!--[if mso]><p>x</p><![endif]--></BODY ></html>\n--b--\n'
        )
    out = inject(msg, REPL, append=True)
    plain, html = parts(out)
    assert plain.get_content_charset() == "iso-2022-jp"
    assert URL in text_of(plain) and "ご希望の方はこちら" in text_of(plain)
    html_text = text_of(html)
    assert html_text.index("ご希望の方は") < html_text.index("</BODY >")
    assert "<!--[if mso]><p>x</p><![endif]-->" in html_text


def test_block_in_a_charset_that_cannot_hold_it_becomes_utf8() -> None:
    msg = crlf("Content-Type: text/plain; charset=us-ascii\n\nWe regret to inform you.\n"
               )
    out = inject(msg, REPL, append=True)
    (part,) = parts(out)
    assert part.get_content_charset() == "utf-8"
    assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert "We regret to inform you." in text_of(part) and URL in text_of(part)


def test_html_without_body_end_gets_the_block_at_the_end() -> None:
    msg = crlf("Content-Type: text/html; charset=us-ascii\n\n<p>Sorry</p>\n")
    out = inject(msg, REPL, append=True)
    assert out.startswith(msg)  # only appended; the Japanese became numeric references
    assert out.isascii() and URL.encode() in out


@pytest.mark.parametrize("ctype", ["multipart/signed", "multipart/encrypted"])
def test_signed_or_encrypted_messages_are_never_touched(ctype: str) -> None:
    msg = crlf(f'Content-Type: {ctype}; boundary="s"\n\n--s\nContent-Type: text/plain\n\n'
               f'{M}\n--s\nContent-Type: application/pgp-signature\n\nsig\n--s--\n')
    with pytest.raises(NotInjectable):
        inject(msg, REPL, append=False)


def test_attached_message_is_not_touched() -> None:
    msg = crlf('Content-Type: multipart/mixed; boundary="m"\n\n--m\n'
               'Content-Type: text/plain\n\nhello\n--m\nContent-Type: message/rfc822\n\n'
               f'Subject: old\n\n{M}\n--m--\n')
    with pytest.raises(NotInjectable):
        inject(msg, REPL, append=False)


def test_a_long_line_is_reencoded_to_stay_within_998_octets() -> None:
    line = "x" * 990 + M
    msg = crlf(f"Content-Type: text/html; charset=utf-8\n\n{line}\n")
    out = inject(msg, REPL, append=False)
    assert max(len(x) for x in out.split(b"\r\n")) <= 998
    (part,) = parts(out)
    assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert URL in text_of(part)


def test_format_flowed_keeps_the_url_off_the_previous_paragraph() -> None:
    msg = crlf(f"Content-Type: text/plain; format=flowed\n\nsee the link \n{M}\n")
    out = inject(msg, REPL, append=False)
    assert f"see the link \r\n\r\n{URL}\r\n".encode() in out


def test_unmarked_corpus_messages_have_no_marker() -> None:
    corpus = sorted((Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data")
                    .glob("msg_*.txt"))
    mapped = 0
    for path in corpus:
        data = crlf(path.read_bytes())
        try:
            found = marked_parts(data)
        except (NotInjectable, ValueError):
            continue  # malformed on purpose in the corpus: never injected, relayed as is
        assert found == 0, path
        mapped += 1
    assert mapped >= 40  # the MIME map copes with nearly all of the real-world corpus


def test_qp_round_trip_helper_keeps_crlf() -> None:
    raw = "行1\r\n行2 \r\n".encode()
    encoded = encode_cte(raw, "quoted-printable", trailing=True)
    assert quopri.decodestring(encoded).replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")


def _qp_decode(wire: bytes) -> bytes | None:
    """RFC 2045 6.7, strictly: the octets, or None when ``wire`` is not quoted-printable
    on CRLF lines (a bare CR or LF, an "=" that starts no escape or soft break)."""
    if b"\r" in wire.replace(b"\r\n", b"") or b"\n" in wire.replace(b"\r\n", b""):
        return None
    out: list[bytes] = []
    lines = wire.split(b"\r\n")
    for i, line in enumerate(lines):
        line = line.rstrip(b" \t")
        soft = line.endswith(b"=") and not re.search(rb"=[0-9A-F]{2}$", line)
        text = line[:-1] if soft else line
        if re.search(rb"=(?![0-9A-F]{2})", text):
            return None
        out.append(re.sub(rb"=([0-9A-F]{2})", lambda m: bytes([int(m[1], 16)]), text))
        if not soft and i < len(lines) - 1:
            out.append(b"\r\n")
    return b"".join(out)


def _check_qp(raw: bytes, trailing: bool) -> None:
    wire = encode_cte(raw, "quoted-printable", trailing=trailing)
    want = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if trailing and not want.endswith(b"\r\n"):
        want += b"\r\n"
    assert _qp_decode(wire) == want, (raw, wire)
    assert max(len(line) for line in wire.split(b"\r\n")) <= 76, (raw, wire)


@pytest.mark.parametrize("raw", [
    b"x\r\ny\r\r\nz",        # the lone CR after y was dropped
    b"a\r\r\nb\r\nc",        # a CR was added before the second line break
    b"\r\r\n" + b"x" * 100,  # the soft line break became "==0D": not quoted-printable
    b"\r" * 400,             # lines of 226 octets (RFC 2045 6.7 allows 76)
])
def test_qp_keeps_a_lone_cr(raw: bytes) -> None:
    # Found by an attack review: b2a_qp read a CR before CRLF as a line break of its own.
    _check_qp(raw, trailing=False)


@settings(max_examples=1000, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(line_end_mixtures(), st.booleans())
def test_qp_round_trips_any_bytes(raw: bytes, trailing: bool) -> None:
    _check_qp(raw, trailing)


def test_base64_text_with_bare_lf_keeps_its_line_style() -> None:
    text = "山田様\nこちらから\n[[CAREER_RELAY_LINK]]\n以上\n".encode()
    msg = (b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + base64.encodebytes(text).replace(b"\n", b"\r\n"))
    (part,) = parts(inject(msg, REPL, append=False))
    assert part.get_payload(decode=True) == text.replace(M.encode(), URL.encode())


def test_internal_copy_loses_the_whole_link_element() -> None:
    internal = Replacement(text="(個人別リンク)", html_attr=None, html_text="(個人別リンク)",
                           text_block="", html_block="")
    msg = crlf(f'Content-Type: text/html; charset=utf-8\n\n<p>前<a href="{M}" style="x">'
               f'登録ページ</a>後</p>\n')
    out = inject(msg, internal, append=False)
    assert out.endswith("<p>前(個人別リンク)後</p>\r\n".encode())


def test_folded_part_headers_are_rewritten_cleanly() -> None:
    # Apple Mail folds Content-Type; the block cannot be us-ascii, so the part becomes UTF-8.
    msg = (b"Content-Type: text/plain;\r\n\tcharset=us-ascii\r\n"
           b"Content-Transfer-Encoding: 7bit\r\nX-Other: kept\r\n\r\nSorry.\r\n")
    out = inject(msg, REPL, append=True)
    head = out.split(b"\r\n\r\n", 1)[0]
    assert b"\r" not in head.replace(b"\r\n", b"") and b"\n" not in head.replace(b"\r\n", b"")
    assert head == (b"Content-Type: text/plain;\r\n\tcharset=utf-8\r\n"
                    b"Content-Transfer-Encoding: quoted-printable\r\nX-Other: kept")
    (part,) = parts(out)
    assert part.get_content_charset() == "utf-8" and URL in text_of(part)


def test_a_7bit_part_gaining_8bit_text_becomes_quoted_printable() -> None:
    msg = crlf(f"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n"
               f"Sorry.\n{M}\n")
    japanese = Replacement(text="こちら: " + URL, html_attr=URL, html_text=URL, text_block="",
                           html_block="")
    out = inject(msg, japanese, append=False)
    assert out.isascii()  # still 7-bit on the wire: no BODY=8BITMIME needed
    (part,) = parts(out)
    assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert "こちら: " + URL in text_of(part)


INTERNAL = Replacement(text="(個人別リンク)", html_attr=None, html_text="(個人別リンク)",
                       text_block="", html_block="")


@pytest.mark.parametrize("html", [
    f'<a href="x">home</a><!-- {M} --><p>keep me</p><a href="y">y</a>',
    f'<img alt="{M}"><p>keep me</p><a href="y">y</a>',
])
def test_a_marker_where_no_link_belongs_is_left_and_takes_no_link(html: str) -> None:
    """SPEC 5: a comment or an attribute other than an <a>'s href is no place for a link."""
    msg = crlf(f"Content-Type: text/html; charset=utf-8\n\n{html}\n")
    for repl in (INTERNAL, REPL):
        with pytest.raises(NotInjectable):
            inject(msg, repl, append=False)


def test_internal_copy_removes_only_the_link_that_holds_the_marker() -> None:
    html = f'<a href="x">home</a><p>keep me</p><a href="{M}">register</a><a href="y">y</a>'
    msg = crlf(f"Content-Type: text/html; charset=utf-8\n\n{html}\n")
    (part,) = parts(inject(msg, INTERNAL, append=False))
    out = text_of(part)
    assert "keep me" in out and '<a href="y">y</a>' in out and '<a href="x">home</a>' in out
    assert M not in out and "register" not in out and "(個人別リンク)" in out


def test_broken_base64_with_a_marker_is_marked_but_not_changed() -> None:
    """Readers repair the padding and show the marker; re-encoding a broken body could
    show something else, so the message is not changed (and is counted)."""
    msg = (b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           b"W1tDQVJFRVJfUkVMQVlfTElOS11d=x\r\n")
    assert marked_parts(msg) == 1
    with pytest.raises(NotInjectable):
        inject(msg, REPL, append=False)


def test_internal_sentence_in_a_us_ascii_part_becomes_utf8_not_question_marks() -> None:
    internal = Replacement(text="(社外の応募者様には個人別のリンクが入ります)", html_attr=None,
                           html_text="", text_block="", html_block="")
    msg = crlf(f"Content-Type: text/plain; charset=us-ascii\n\nSorry.\n{M}\nBye.\n")
    (part,) = parts(inject(msg, internal, append=False))
    assert part.get_content_charset() == "utf-8"
    assert "Sorry.\n(社外の応募者様には個人別のリンクが入ります)\nBye." in text_of(part).replace(
        "\r\n", "\n")


# -- the link only where a link belongs (SPEC 5) ------------------------------------------

ELSEWHERE = [
    f'<img src="{M}">',
    f'<img src="https://tracker.example/p?u={M}" width="1">',
    f'<form action="{M}"><input type="submit"></form>',
    f'<p style="background:url({M})">x</p>',
    f'<img srcset="{M} 2x">',
    '<a href="https://tracker.example/r?to=%5B%5BCAREER_RELAY_LINK%5D%5D">t</a>',
    f'<a href="https://tracker.example/r?to={M}">t</a>',
    f"<script>var u = '{M}';</script>",
    f"<style>a::after {{ content: '{M}' }}</style>",
    f"<!-- {M} -->",
]


@pytest.mark.parametrize("html", ELSEWHERE)
def test_a_marker_where_no_link_belongs_never_gets_the_personal_link(html: str) -> None:
    """An image host, a form target, a stylesheet or a tracker must never learn the
    token; the marker stays as it is there, and the proper href still gets the link."""
    body = f'<p>{html}</p><p><a href="{M}">register</a></p>\n'
    msg = crlf(f"Content-Type: text/html; charset=utf-8\n\n{body}")
    (part,) = parts(inject(msg, REPL, append=False))
    out = text_of(part)
    assert out.count(URL) == 1 and f'<a href="{URL}">register</a>' in out
    assert html in out  # left byte for byte


@pytest.mark.parametrize("html", ELSEWHERE)
def test_only_a_misplaced_marker_is_not_injectable(html: str) -> None:
    msg = crlf(f"Content-Type: text/html; charset=utf-8\n\n<p>{html}</p>\n")
    with pytest.raises(NotInjectable):
        inject(msg, REPL, append=False)


def test_a_plain_text_marker_glued_to_a_url_is_left() -> None:
    msg = crlf(f"Content-Type: text/plain; charset=utf-8\n\n"
               f"track: https://t.example/c?u={M}\nyours:\n{M}\n")
    (part,) = parts(inject(msg, REPL, append=False))
    out = text_of(part)
    assert out.count(URL) == 1 and f"https://t.example/c?u={M}" in out


def test_a_marker_split_by_a_soft_break_inside_an_img_src_is_left() -> None:
    """Quoted-printable may cut the marker anywhere, an attribute included: it is found
    after decoding, and still only the href takes the link."""
    html = f'<img src=3D"{M}"><a href=3D"{M}">x</a>'.encode()
    cut = html.index(b"CAREER") + 3  # inside the img's marker
    body = html[:cut] + b"=\r\n" + html[cut:] + b"\r\n"
    msg = (b"Content-Type: text/html; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + body)
    (part,) = parts(inject(msg, REPL, append=False))
    out = text_of(part)
    assert f'<img src="{M}">' in out and f'<a href="{URL}">x</a>' in out


# -- found by attacking the running build ---------------------------------------------------

NESTED = [
    f'<img src="https://evil.example/p.png?<a href={M}>">',
    f"<img src='https://evil.example/p.png?<a href={M}>'>",
    f'<iframe src="https://evil.example/?<a href={M}>"></iframe>',
    f'<link rel="stylesheet" href="https://evil.example/?<a href={M}>">',
    f"<p style=\"background:url('https://evil.example/?<a href={M}>')\">x</p>",
    f"<textarea name=u>{M}</textarea>",
    f"<select name=s><option>{M}</select>",
    f"<title>{M}</title>",
]


@pytest.mark.parametrize("html", NESTED)
def test_an_a_tag_written_inside_another_tags_attribute_takes_no_link(html: str) -> None:
    """'<img src="https://evil/p.png?<a href=[[...]]>">' is one img whose src holds
    '<a href=...': a link there would be fetched by every mail client that loads images.
    A textarea, option list or title submits or shows its text as it is."""
    body = f'<p>{html}</p><p><a href="{M}">register</a></p>\n'
    msg = crlf(f"Content-Type: text/html; charset=utf-8\n\n{body}")
    (part,) = parts(inject(msg, REPL, append=False))
    out = text_of(part)
    assert out.count(URL) == 1 and f'<a href="{URL}">register</a>' in out
    assert html in out


@pytest.mark.parametrize("html", [
    '<form action="https://evil.example/f"><textarea name=u></body></textarea></form>',
    "<p>x</p><!-- </body> -->",
])
def test_the_appended_block_never_lands_inside_a_textarea_or_a_comment(html: str) -> None:
    msg = crlf(f"Content-Type: text/html; charset=utf-8\n\n<html><body>{html}\n")
    try:
        (part,) = parts(inject(msg, REPL, append=True))
    except NotInjectable:
        return
    out = text_of(part)
    block_at = out.index(REPL.html_block)
    assert out.rfind("<textarea", 0, block_at) <= out.rfind("</textarea", 0, block_at)
    assert out.rfind("<!--", 0, block_at) <= out.rfind("-->", 0, block_at)


def test_a_flood_of_markers_is_not_injected() -> None:
    """A million markers turned a 25 MB message into 116 MB copies at 10 s each."""
    many = f"{M}\n" * (inj.MAX_MARKERS_PER_PART + 1)
    msg = crlf("Content-Type: text/plain; charset=utf-8\n\n" + many)
    with pytest.raises(NotInjectable, match="markers"):
        inject(msg, REPL, append=False)
    fine = crlf("Content-Type: text/plain; charset=utf-8\n\n" + f"{M}\n" * 3)
    assert inject(fine, REPL, append=False).count(URL.encode()) == 3
