"""Fuzzing the rejection step with mutated mail, fed to it as the gateway feeds it.

Seeds: CPython's ``test_email`` corpus (CRLF), our golden inputs and rejections
built from ``templates/emails/`` with the marker, each sent as a configured
company (``acme``: detect = "marker", ``kumo``: detect = "auto").  Hypothesis
draws a seed, a few mutations (byte flips; lines inserted, deleted or
duplicated; header fields and boundary parameters twice; every charset label
Python knows, codecs that are not text encodings and a NUL among them; odd
transfer encodings and broken base64; broken encoded words and 8-bit text in
X-Career-Relay-Job/-Stage/-Channel; a From of hundreds of nested comments;
deep nesting, many parts; floods of ``;"`` and of unclosed ``<script``; many
markers, markers split by quoted-printable soft breaks, in ``img src``, a
style, a form action, a comment, inside longer URLs, URL-encoded), one to three
recipients outside the company and sometimes one inside, and whether the client
authenticated.  Every input stays CRLF-clean with lines of at most 998
octets: the SMTP layer refuses anything else before this step.

Each example goes through ``strip_relay_headers``, ``first_look`` and, for a
candidate, ``prepare``, after the pipeline's ``_whose`` has decided whose mail
it is (the client authenticated as the company, or sends from a network the
companies own and the From names one of them), and must satisfy:

1. the outcome is Ordinary, Rejection or NotInjectable; the only exception
   is TemporaryFailure, and only under ``on_error = "tempfail"``;
2. every copy of a Rejection is CRLF-clean, has no line over 998 octets,
   maps to the input's MIME tree (our map and Python's ``email``, compat32),
   differs from the input only in inline text parts (and its own
   DKIM-Signature), carries exactly one distinct personal link (an outside
   recipient's, whose offer the ledger has) or none (inside recipients), and
   no inline text part keeps a bare marker where a link belongs (plain
   text, HTML text as browsers tokenise it, the whole ``href`` of an
   ``<a>``; markers left in ``img src``, a style, a comment, a script or a
   longer URL are allowed);
3. first_look + prepare take under 2 s of CPU time.

The default run is derandomised and short.  A long run (docs/fuzzing.md):

    CAREER_RELAY_FUZZ_EXAMPLES=20000 CAREER_RELAY_FUZZ_SECONDS=600 \\
    CAREER_RELAY_FUZZ_REPORT=fuzz-report.json \\
    .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_rejection_fuzz.py

or ``.venv/bin/python -m tests.test_rejection_fuzz --examples 20000 --seconds 600``,
which does the same and prints the figures.
"""

from __future__ import annotations

import base64
import binascii
import collections
import email
import email.policy
import encodings.aliases
import gc
import html
import json
import os
import quopri
import random
import re
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st

from career_relay import settings as settings_mod
from career_relay.dkimkeys import generate_key
from career_relay.errors import PolicyRejection, TemporaryFailure
from career_relay.ledger import Ledger, open_ledger
from career_relay.settings import CompanySettings, Settings
from career_relay.tokens import LinkSigner
from gateway import email_templates, mime
from gateway.charsets import codec_for
from gateway.message import has_bare_newline, strip_relay_headers
from gateway.pipeline import Submission, _whose
from gateway.rejection import Candidate, NotInjectable, Ordinary, Rejection, Rejections
from tests.conftest import _PASSWORD_HASH
from tests.injection_checks import decode_iso2022jp, inline_text_leaves

REPO = Path(__file__).resolve().parent.parent
CORPUS_DIR = Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data"
GOLDEN = REPO / "tests" / "data" / "golden"
TEMPLATES = REPO / "templates" / "emails"

PUBLIC_URL = "http://consent.test"
SECRET = "fuzz-secret-0123456789"
LINK = re.compile(rb"http://consent\.test/c/([A-Za-z0-9_.\-]+)")
MARKER = "[[CAREER_RELAY_LINK]]"
BMARKER = MARKER.encode()
ENCODED_MARKER = "%5B%5BCAREER_RELAY_LINK%5D%5D"
MAX_LINE = 998
CPU_LIMIT = 2.0  # seconds of CPU for first_look + prepare, per message

# Read and removed: the settings loader refuses CAREER_RELAY_* variables it does not know,
# so a gateway started later in the same session would fail with them in the environment.
LONG_RUN = "CAREER_RELAY_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.pop("CAREER_RELAY_FUZZ_EXAMPLES", "2500"))
SECONDS = float(os.environ.pop("CAREER_RELAY_FUZZ_SECONDS", "0"))  # 0: no time budget
REPORT = os.environ.pop("CAREER_RELAY_FUZZ_REPORT", "")
SEED = os.environ.pop("CAREER_RELAY_FUZZ_SEED", "")

COMPANIES = {  # id -> (the domain its From uses, an inside recipient)
    "acme": ("acme.example", "boss@acme.example"),
    "kumo": ("kumo.example", "team@jobs.kumo.example"),
}
OUTSIDE = ["a@example.net", "b@example.org", "c@example.com", "Upper.Case@Example.NET",
           "d@acme.example.net"]


# -- seeds ---------------------------------------------------------------------------------


def crlf(data: bytes) -> bytes:
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return data if data.endswith(b"\r\n") else data + b"\r\n"


_FROM_FIELD = re.compile(rb"(?im)^from[ \t]*:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*\r\n")
SEED_FROM = b"From: =?UTF-8?B?5Lq65LqL6YOo?= <hr@acme.example>\r\n"


def with_company_from(data: bytes) -> bytes:
    """``data`` with one From field, of acme, first; an mbox "From " line goes."""
    if data.startswith(b"From "):
        data = data[data.index(b"\r\n") + 2:]
    end = data.find(b"\r\n\r\n")
    head, body = (data, b"") if end < 0 else (data[:end + 2], data[end + 2:])
    return SEED_FROM + _FROM_FIELD.sub(b"", head) + body


def _template(name: str, values: dict[str, str]) -> str:
    return Template((TEMPLATES / name).read_text(encoding="utf-8")).safe_substitute(values)


JA_VALUES = {"candidate_name": "山田 太郎", "hr_contact_name": "佐藤 花子",
             "hr_department": "人事部", "company_name": "株式会社アクメ",
             "job_title": "バックエンドエンジニア",
             "hr_email": "saiyo@acme.example", "hr_phone": "03-0000-0000",
             "agency_name": "エージェント", "agency_license_no": "13-ユ-000000"}
EN_VALUES = {"candidate_name": "Alex Doe", "hr_contact_name": "Sam Lee",
             "hr_department": "People team", "company_name": "Acme Inc.",
             "job_title": "Backend Engineer", "hr_email": "jobs@acme.example",
             "hr_phone": "+1 555 0100", "agency_name": "Agency", "agency_license_no": "00-0000"}


def _encode_body(text: str, charset: str, cte: str) -> tuple[bytes, str]:
    codec = {"iso-2022-jp": "iso2022_jp", "shift_jis": "cp932"}.get(charset, charset)
    raw = text.replace("\r\n", "\n").replace("\n", "\r\n").encode(codec)
    if cte == "base64":
        return base64.encodebytes(raw).replace(b"\n", b"\r\n"), cte
    if cte == "quoted-printable":
        return crlf(quopri.encodestring(raw.replace(b"\r\n", b"\n"))), cte
    return raw, cte


def _leaf(text: str, ctype: str, charset: str, cte: str) -> bytes:
    body, cte = _encode_body(text, charset, cte)
    return (f"Content-Type: {ctype}; charset=\"{charset}\"\r\n"
            f"Content-Transfer-Encoding: {cte}\r\n\r\n").encode() + crlf(body)


def _multipart(subtype: str, boundary: str, parts: list[bytes]) -> bytes:
    out = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode()
    for part in parts:
        out += f"--{boundary}\r\n".encode() + part
    return out + f"--{boundary}--\r\n".encode()


def _generated() -> dict[str, bytes]:
    """Rejections built from the templates, with the marker, as clients send them."""
    head = ("From: hr@acme.example\r\nTo: candidate@example.net\r\nSubject: {subject}\r\n"
            "Date: Tue, 14 May 2024 10:00:00 +0900\r\nMessage-ID: <{name}@acme.example>\r\n"
            "MIME-Version: 1.0\r\n")
    found: dict[str, bytes] = {}
    for locale, values in (("ja", JA_VALUES), ("en", EN_VALUES)):
        text = _template(f"rejection_{locale}.txt", values)
        markup = _template(f"rejection_{locale}.html", values)
        subject = "=?UTF-8?B?6YG46ICD57WQ5p6c?=" if locale == "ja" else "Your application"
        charsets = (["utf-8", "iso-2022-jp", "shift_jis"] if locale == "ja"
                    else ["us-ascii", "utf-8"])
        for i, charset in enumerate(charsets):
            for cte in ("8bit" if charset != "iso-2022-jp" and charset != "us-ascii"
                        else "7bit", "quoted-printable", "base64"):
                name = f"{locale}-{charset}-{cte}"
                plain = _leaf(text, "text/plain", charset, cte)
                html = _leaf(markup, "text/html", "utf-8" if i % 2 else charset,
                             "quoted-printable" if cte != "base64" else "base64")
                variants = {
                    "plain": plain,
                    "alt": _multipart("alternative", f"alt-{name}", [plain, html]),
                    "mixed": _multipart("mixed", f"mix-{name}", [
                        _multipart("alternative", f"alt-{name}", [plain, html]),
                        b'Content-Type: application/pdf; name="cv.pdf"\r\n'
                        b'Content-Disposition: attachment; filename="cv.pdf"\r\n'
                        b"Content-Transfer-Encoding: base64\r\n\r\n"
                        + base64.encodebytes(b"%PDF-1.4 " + BMARKER).replace(b"\n", b"\r\n")]),
                    "html": html,
                    "unmarked": _leaf(text.replace(MARKER, ""), "text/plain", charset, cte),
                }
                for kind, body in variants.items():
                    key = f"{name}-{kind}"
                    found[f"template/{key}"] = (
                        head.format(subject=subject, name=key).encode() + body)
    return found


def _seeds() -> list[tuple[str, bytes]]:
    found = {f"corpus/{p.name}": crlf(p.read_bytes())
             for p in sorted(CORPUS_DIR.glob("msg_*.txt"))}
    found.update({f"golden/{p.name}": p.read_bytes() for p in sorted(GOLDEN.glob("*.eml"))
                  if not p.name.endswith(".expected.eml")})
    found.update(_generated())
    return [(name, with_company_from(data)) for name, data in found.items()]


SEEDS = _seeds()


# -- mutations -----------------------------------------------------------------------------

CHARSETS = [
    *sorted(set(encodings.aliases.aliases.values())),
    "base64", "zlib", "hex", "rot13", "undefined", "utf\x00-8", "utf-8\x00", "utf-16",
    "utf-16le", "UTF-16BE", "utf-32", "utf-7", "x-unknown", "unknown-8bit", "", '"',
    "utf-8*ja", "us-ascii", "iso-2022-jp", "shift_jis", "euc-jp", "utf-8", "punycode",
    "idna", "unicode_escape", "raw_unicode_escape", "charmap", "mbcs", "x" * 300]
CTES = ["7-bit", "x-gzip64", "x-uuencode", "base64", "BASE64", "quoted-printable", "8bit",
        "binary", "7bit", "", "Quoted-Printable (x)", "base-64", "x-token"]
RELAY_VALUES = [
    "=?utf-8?B?!!!?=", "=?utf-8?Q?=ZZ=?=", "=?x-unknown?B?44OQ?=", "=?base64?B?YWJj?=",
    "=?zlib?B?eJwrSS0uAQAE2wHc?=", "=?rot13?Q?nop?=", "=?utf-16?B?AGEAYg==?=",
    "=?undefined?Q?abc?=", "=?utf\x00-8?Q?a?=", "=?iso-2022-jp?B?GyRCJCIbKEI?=",
    "=?utf-8?B?" + "A" * 700 + "?=", "バックエンド", "=?utf-8*ja?Q?x?=", "=?=?=?", "=??B??=",
    "=?utf-7?Q?+AGEAYg-?=", "=?hex?Q?41?=", "=?punycode?Q?xn--abc?=", "=?idna?B?eG4tLQ==?=",
    "=?unicode_escape?Q?\\x?=", "=?UTF-8?B?44OQ44OD44Kv44Ko44Oz44OJ?=",
    "=?shift_jis?B?g2+DYoNO?=", "\x7f\x1b$B\x1b(B", "a" * 900]
RELAY_FIELDS = ["X-Career-Relay-Job", "X-Career-Relay-Stage", "X-Career-Relay-Channel",
                "X-Career-Relay", "x-career-relay-JOB", "X-Career-Relay-Other"]
PAYLOADS: list[Callable[[int, bytes], bytes]] = [
    lambda n, b: BMARKER,
    lambda n, b: b" " + BMARKER + b" ",
    lambda n, b: (BMARKER + b"\r\n") * (1 + n % 3000),
    lambda n, b: BMARKER * (1 + n % 120),  # glued: up to 2,520 octets, past the word limit
    lambda n, b: b"<script" * (1 + n % 12000),
    lambda n, b: b'<a href="' + BMARKER + b'">link</a>',
    lambda n, b: b"<a href=" + BMARKER + b">link</a>",
    lambda n, b: b'<a href="' + ENCODED_MARKER.encode() + b'">link</a>',
    lambda n, b: b'<img src="' + BMARKER + b'">',
    lambda n, b: b'<div style="background:url(' + BMARKER + b')">x</div>',
    lambda n, b: b'<form action="' + BMARKER + b'"><input></form>',
    lambda n, b: b"<!-- " + BMARKER + b" -->",
    lambda n, b: b"<script>var u='" + BMARKER + b"';</script>",
    lambda n, b: b"https://t.example/?u=" + BMARKER,
    lambda n, b: b'<a href="https://t.example/r?u=' + BMARKER + b'">x</a>',
    lambda n, b: b"www.example.com/" + BMARKER,
    # Glued to a word, under or over the 2,048 octets where inject takes a word for a URL.
    lambda n, b: b"x" * (n % 600) + BMARKER,
    lambda n, b: b"x" * (2000 + n % 900) + BMARKER,
    lambda n, b: b"<p>1 < 2 " + BMARKER + b" ></p>",
    lambda n, b: b"[[CAREER_RELAY_LINK]" + b"]" * (n % 3),
    lambda n, b: b"%5B%5BCAREER_RELAY_LINK%5D%5D",
    lambda n, b: b"--" + b + b"--" if b else b"--",
    lambda n, b: b"x" * (n % 990) + b"--" + b,
    lambda n, b: b"</body></html>" * (1 + n % 3),
    lambda n, b: b"\x1b$B" + BMARKER + b"\x1b(B",
    lambda n, b: b"\x83" + BMARKER,
    lambda n, b: b"\xff\xfe" + BMARKER.decode().encode("utf-16-le"),
    lambda n, b: "誠に残念ながら今回は採用を見送らせていただきます。".encode(),
    lambda n, b: b"We regret to inform you that we will not move forward with your application.",
    lambda n, b: b"<a href='" + BMARKER + b"'>x</a><a href=\"" + BMARKER + b"\">y</a>",
    lambda n, b: b"<a title='x href=\"" + BMARKER + b"\"'>x</a>",
]
RAW_PAYLOADS = [  # put into a part's body as it is on the wire
    b"[[CAREER_=\r\nRELAY_LINK]]", b"[[CAREER_RELAY_LINK]=\r\n]", b"=5B=5BCAREER_RELAY_LINK]]",
    b"W1tDQVJFRVJfUkVMQVlfTElOS11d", b"====", b"=", b"=\r\n", b"=ZZ", b"\x00" * 3,
    b"begin 644 x\r\n`\r\nend",
]
INSERT_LINES = [
    b"", b"--", b"Content-Type: text/html; charset=utf-8",
    b"Content-Type: multipart/mixed; boundary=zz", b"Content-Transfer-Encoding: base64",
    BMARKER, b" " + BMARKER, b"\t folded", b"From: x@evil.example",
    b'<a href="' + BMARKER + b'">x</a>', b"=", b"X-Career-Relay: rejection",
    b"MIME-Version: 1.0", b"not a field", b"\xe3\x81\x82: value", b"--zz", b"--zz--",
    b"Content-Disposition: attachment", b".", b"From nobody",
]
CONTENT_TYPES = ["text/html", "text/plain", "multipart/signed", "multipart/alternative",
                 "application/octet-stream", "message/rfc822", "multipart/digest", "text",
                 "TEXT/PLAIN", "text/plain/x", "multipart/mixed", "application/pkcs7-mime"]


@dataclass(frozen=True)
class Mutation:
    kind: str
    a: int
    b: int
    c: int

    def __str__(self) -> str:
        return f"{self.kind}({self.a},{self.b},{self.c})"


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")


def _header_fields(data: bytes, name: bytes) -> list[tuple[int, int]]:
    """Spans (with continuation lines, without the CRLF) of every field ``name`` at a
    line start anywhere in the message: parts' headers too."""
    pattern = re.compile(rb"(?im)^" + re.escape(name) + rb"[ \t]*:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*")
    return [(m.start(), m.end()) for m in pattern.finditer(data)]


def _fold(text: bytes, width: int = 900) -> bytes:
    """Fold a long field value at spaces, or anywhere, so no line exceeds ``width``."""
    out: list[bytes] = []
    while len(text) > width:
        cut = text.rfind(b" ", 1, width)
        cut = width if cut <= 0 else cut
        out.append(text[:cut])
        text = b" " + text[cut:].lstrip(b" ") if text[cut:cut + 1] == b" " else b" " + text[cut:]
    out.append(text)
    return b"\r\n".join(out)


def _boundaries(data: bytes) -> list[bytes]:
    return [m.group(1).strip(b'"') for m in
            re.finditer(rb'(?i)boundary\s*=\s*("[^"\r\n]*"|[^;\s]+)', data)]


def _text_leaves(data: bytes) -> list[mime.Part]:
    try:
        root = mime.parse(data, max_parts=100_000)
    except (mime.MimeError, RecursionError):
        return []
    return [p for p in root.walk() if p.content_type in ("text/plain", "text/html")]


def _undo(body: bytes, cte: str) -> bytes:
    """The transfer encoding undone as readers do: base64 skips stray characters and
    keeps the longest decodable prefix; quoted-printable joins soft line breaks."""
    if cte == "base64":
        try:
            return binascii.a2b_base64(body)
        except binascii.Error:
            clean = re.sub(rb"[^A-Za-z0-9+/]", b"", body)
            return binascii.a2b_base64(clean[: len(clean) // 4 * 4])
    if cte == "quoted-printable":
        return binascii.a2b_qp(body)
    return body


def _redo(raw: bytes, cte: str) -> bytes:
    if cte == "base64":
        return base64.encodebytes(raw).replace(b"\n", b"\r\n")
    if cte == "quoted-printable":
        return crlf(quopri.encodestring(raw.replace(b"\r\n", b"\n")))
    return raw


def _clean_lines(raw: bytes) -> bytes:
    """CRLF only, and no line over 900 octets (a long one is broken)."""
    raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    out = []
    for line in raw.split(b"\n"):
        out += [line[i:i + 900] for i in range(0, max(len(line), 1), 900)]
    return b"\r\n".join(out)


def _edit_text(data: bytes, m: Mutation, payload: bytes) -> bytes | None:
    """Put ``payload`` into a text part's decoded body, re-encoded as it was."""
    leaves = _text_leaves(data)
    if not leaves:
        return None
    part = leaves[m.a % len(leaves)]
    body = data[part.body_start:part.body_end]
    cte = part.cte if part.cte in ("base64", "quoted-printable") else "8bit"
    raw = _undo(body, cte)
    lines = raw.split(b"\n")
    at = m.b % (len(lines) + 1)
    if m.c % 2:  # mid-line
        line = lines[at - 1] if at else b""
        col = (m.c // 2) % (len(line) + 1)
        if at:
            lines[at - 1] = line[:col] + payload + line[col:]
        else:
            lines.insert(0, payload)
    else:
        lines.insert(at, payload + (b"\r" if b"\r\n" in raw else b""))
    new = b"\n".join(lines)
    new = _clean_lines(new) if cte == "8bit" else new
    encoded = _redo(new, cte) if cte != "8bit" else new
    if cte != "8bit" and body.endswith(b"\r\n") is False:
        encoded = encoded.removesuffix(b"\r\n")
    return data[:part.body_start] + encoded + data[part.body_end:]


def _replace_value(data: bytes, span: tuple[int, int], value: bytes) -> bytes:
    start, end = span
    colon = data.index(b":", start, end)
    return data[:colon + 1] + b" " + _fold(value) + data[end:]


def mutate(data: bytes, m: Mutation, company: str) -> bytes | None:
    """One mutation; None when it does not apply to this message."""
    lines = _lines(data)
    kind = m.kind
    if kind == "flip":
        pos = m.a % len(data)
        while data[pos:pos + 1] in (b"\r", b"\n") and pos > 0:
            pos -= 1
        new = m.b % 256
        if new in (10, 13) or data[pos:pos + 1] in (b"\r", b"\n"):
            return None
        return data[:pos] + bytes([new]) + data[pos + 1:]
    if kind == "insert_line":
        pool = INSERT_LINES + [b"--" + b for b in _boundaries(data)]
        lines.insert(m.a % (len(lines) + 1), pool[m.b % len(pool)])
        return b"\r\n".join(lines)
    if kind == "delete_line":
        del lines[m.a % len(lines)]
        return b"\r\n".join(lines)
    if kind == "duplicate_line":
        i = m.a % len(lines)
        lines[i:i] = lines[i:i + 1 + m.b % 3]
        return b"\r\n".join(lines)
    if kind == "duplicate_field":
        name = [b"Content-Type", b"From", b"Content-Transfer-Encoding", b"X-Career-Relay",
                b"MIME-Version", b"Content-Disposition"][m.b % 6]
        spans = _header_fields(data, name)
        if not spans:
            return None
        start, end = spans[m.a % len(spans)]
        field_bytes = data[start:end]
        if m.c % 2:  # the same field with another value
            field_bytes = field_bytes.replace(b"text/", b"application/", 1).replace(
                b"acme", b"evil", 1)
        return data[:end] + b"\r\n" + field_bytes + data[end:]
    if kind == "duplicate_boundary":
        spans = [s for s in _header_fields(data, b"Content-Type")
                 if b"boundary" in data[s[0]:s[1]].lower()]
        if not spans:
            return None
        start, end = spans[m.a % len(spans)]
        value = [b'; boundary="other"', b"; boundary=" + (_boundaries(data[start:end]) or
                                                          [b"x"])[0],
                 b"; BOUNDARY*=utf-8''x", b"; boundary*0=a; boundary*1=b", b'; boundary=""',
                 b"; charset=utf-8; charset=iso-2022-jp"][m.b % 6]
        return data[:end] + b"\r\n " + value + data[end:]
    if kind == "charset":
        found = list(re.finditer(rb'(?i)(charset\*?\s*=\s*)("[^"\r\n]*"|[^;\s]*)', data))
        label = CHARSETS[m.b % len(CHARSETS)].encode("utf-8", "surrogateescape")
        style = m.c % 4
        value = (b'"' + label.replace(b'"', b"") + b'"' if style == 1 else
                 b"utf-8''" + label if style == 2 else label)
        if found and m.c % 5:
            hit = found[m.a % len(found)]
            name = b"charset*=" if style == 2 else b"charset="
            return data[:hit.start()] + name + value + data[hit.end():]
        spans = _header_fields(data, b"Content-Type")
        if not spans:
            return None
        start, end = spans[m.a % len(spans)]
        return data[:end] + b";\r\n charset=" + value + data[end:]
    if kind == "cte":
        spans = _header_fields(data, b"Content-Transfer-Encoding")
        value = CTES[m.b % len(CTES)].encode()
        if spans and m.c % 4:
            return _replace_value(data, spans[m.a % len(spans)], value)
        spans = _header_fields(data, b"Content-Type")
        if not spans:
            return None
        start, end = spans[m.a % len(spans)]
        return data[:end] + b"\r\nContent-Transfer-Encoding: " + value + data[end:]
    if kind == "content_type":
        spans = _header_fields(data, b"Content-Type")
        if not spans:
            return None
        start, end = spans[m.a % len(spans)]
        old = data[start:end]
        found_type = re.match(rb"(?i)content-type[ \t]*:[ \t]*([^;\r\n]*)", old)
        if found_type is None:
            return None
        new_type = CONTENT_TYPES[m.b % len(CONTENT_TYPES)].encode()
        return (data[:start + found_type.start(1)] + new_type
                + data[start + found_type.end(1):])
    if kind == "disposition":
        spans = _header_fields(data, b"Content-Type")
        if not spans:
            return None
        start, end = spans[m.a % len(spans)]
        value = [b"attachment", b"inline", b'attachment; filename="x.txt"', b"ATTACHMENT ",
                 b"form-data"][m.b % 5]
        return data[:end] + b"\r\nContent-Disposition: " + value + data[end:]
    if kind == "broken_base64":
        leaves = [p for p in _text_leaves(data) if p.cte == "base64"]
        if not leaves:
            return None
        part = leaves[m.a % len(leaves)]
        body = data[part.body_start:part.body_end]
        if len(body) < 8:
            return None
        at = m.b % len(body)
        while body[at:at + 1] in (b"\r", b"\n") and at > 0:
            at -= 1
        how = m.c % 4
        new_body = (body[:at] + body[at + 1:] if how == 0 else
                    body[:at] + b"=" + body[at:] if how == 1 else
                    body.rstrip(b"=\r\n") + b"\r\n" if how == 2 else
                    body[:at] + b"!*" + body[at:])
        if has_bare_newline(new_body):
            return None
        return data[:part.body_start] + new_body + data[part.body_end:]
    if kind == "relay_field":
        relay = RELAY_FIELDS[m.b % len(RELAY_FIELDS)]
        value = (b"rejection" if relay == "X-Career-Relay" and m.c % 3 else
                 RELAY_VALUES[m.c % len(RELAY_VALUES)].encode("utf-8", "surrogateescape"))
        if m.a % 3 == 0:  # as ISO-2022-JP or Shift_JIS bytes, not encoded words
            value = "選考結果".encode(["cp932", "euc_jp", "iso2022_jp"][m.a % 9 // 3])
        return relay.encode() + b": " + _fold(value) + b"\r\n" + data
    if kind == "nested_comments":
        spans = _header_fields(data, b"From")
        if not spans:
            return None
        depth = 1 + m.a % 700
        domain = COMPANIES[company][0].encode()
        value = b"(" * depth + b"x" + b")" * (depth - (m.b % 7 == 0)) + b" <hr@" + domain + b">"
        if m.c % 2:
            value = b"hr@" + domain + b" " + b"(" * depth + b"c" + b")" * depth
        return _replace_value(data, spans[0], value)
    if kind == "deep_nest":
        return nest(data, 1 + m.a % 40, m.b % 2 == 0)
    if kind == "many_parts":
        return many_parts(data, 1 + m.a % (1100 if m.b % 4 == 0 else 50))
    if kind == "semicolon_flood":
        spans = _header_fields(data, b"Content-Type")
        if not spans:
            return None
        start, end = spans[m.a % len(spans)]
        unit = [b';"', b";", b'"', b'; a="', b";\\"][m.c % 5]
        flood = unit * (1 + m.b % 2000)
        return data[:end] + b"\r\n " + _fold(flood, 400).replace(b"\r\n ", b"\r\n\t") + data[end:]
    if kind == "payload":
        bounds = _boundaries(data)
        payload = PAYLOADS[m.c % len(PAYLOADS)](m.b, bounds[0] if bounds else b"")
        return _edit_text(data, Mutation(kind, m.a, m.b // 7, m.b), payload)
    if kind == "raw_payload":
        leaves = _text_leaves(data)
        if not leaves:
            return None
        part = leaves[m.a % len(leaves)]
        body = data[part.body_start:part.body_end]
        body_lines = body.split(b"\r\n")
        body_lines.insert(m.b % (len(body_lines) + 1), RAW_PAYLOADS[m.c % len(RAW_PAYLOADS)])
        return data[:part.body_start] + b"\r\n".join(body_lines) + data[part.body_end:]
    if kind == "reencode":
        leaves = [p for p in _text_leaves(data) if p.cte in ("7bit", "8bit", "base64",
                                                             "quoted-printable", "")]
        if not leaves:
            return None
        part = leaves[m.a % len(leaves)]
        raw = _undo(data[part.body_start:part.body_end], part.cte)
        cte = ["base64", "quoted-printable", "8bit"][m.b % 3]
        body = _redo(raw, cte) if cte != "8bit" else _clean_lines(raw)
        head = data[part.header_start:part.body_start]
        spans = _header_fields(head, b"Content-Transfer-Encoding")
        if spans:
            head = _replace_value(head, spans[0], cte.encode())
        elif head.endswith(b"\r\n\r\n"):
            head = head[:-2] + b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n"
        else:
            return None
        return data[:part.header_start] + head + body + data[part.body_end:]
    raise AssertionError(kind)


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    end = data.find(b"\r\n\r\n")
    return (data, b"") if end < 0 else (data[:end + 2], data[end + 4:])


_CONTENT_FIELD = re.compile(
    rb"(?im)^content-(?:type|transfer-encoding|disposition)[ \t]*:[^\r\n]*"
    rb"(?:\r\n[ \t][^\r\n]*)*\r\n")


def nest(data: bytes, depth: int, mixed: bool) -> bytes:
    """The body (with its content fields) inside ``depth`` levels of multipart."""
    head, body = _split_head(data)
    inner = b"".join(m.group(0) for m in _CONTENT_FIELD.finditer(head)) + b"\r\n" + body
    head = _CONTENT_FIELD.sub(b"", head)
    subtype = b"mixed" if mixed else b"alternative"
    for level in range(depth):
        b = b"nest%d" % level
        inner = (b"Content-Type: multipart/" + subtype + b'; boundary="' + b + b'"\r\n\r\n--'
                 + b + b"\r\n" + inner + b"\r\n--" + b + b"--\r\n")
    return head + inner


def many_parts(data: bytes, count: int) -> bytes:
    head, body = _split_head(data)
    inner = b"".join(m.group(0) for m in _CONTENT_FIELD.finditer(head)) + b"\r\n" + body
    head = _CONTENT_FIELD.sub(b"", head)
    extra = b"--many\r\nContent-Type: text/plain\r\n\r\nx\r\n" * count
    return (head + b'Content-Type: multipart/mixed; boundary="many"\r\n\r\n--many\r\n' + inner
            + b"\r\n" + extra + b"--many--\r\n")


MUTATIONS = ["flip", "insert_line", "delete_line", "duplicate_line", "duplicate_field",
             "duplicate_boundary", "charset", "cte", "content_type", "disposition",
             "broken_base64", "relay_field", "nested_comments", "deep_nest", "many_parts",
             "semicolon_flood", "payload", "payload", "payload", "raw_payload", "reencode"]


# -- the rig: configured companies, a ledger, the rejection step -----------------------------


class Rig:
    def __init__(self, settings: Settings, ledger: Ledger, rejections: Rejections,
                 signer: LinkSigner):
        self.settings, self.ledger, self.rejections, self.signer = (
            settings, ledger, rejections, signer)
        # The sentence the colleagues' copy gets where the link would be, per company.
        self.internal = {c.id: email_templates.load(TEMPLATES, c, settings.agency).internal
                         for c in settings.companies}

    def __repr__(self) -> str:
        return f"Rig(on_error={self.settings.gateway.on_error!r})"

    def company(self, company_id: str) -> CompanySettings:
        return next(c for c in self.settings.companies if c.id == company_id)


def make_rig(directory: Path, key: Path, on_error: str) -> Rig:
    directory.mkdir(parents=True, exist_ok=True)
    raw: dict[str, Any] = {
        "gateway": {"listen": "127.0.0.1:2525", "hostname": "relay.test",
                    "on_error": on_error},
        "site": {"public_url": PUBLIC_URL},
        "ledger": {"path": str(directory / "ledger.db")},
        "queue": {"dir": str(directory / "spool")},
        "secrets": {"signing_keys": [SECRET]},
        "companies": [
            {"id": "acme", "name": "株式会社アクメ",
             "domains": ["acme.example", "ats.acme.example"], "detect": "marker",
             "locale": "ja", "dkim_selector": "cr1",
             "dkim_key_file": str(key), "smtp_username": "acme",
             "smtp_password_hash": _PASSWORD_HASH},
            {"id": "kumo", "name": "Kumo Ltd", "domains": ["kumo.example", "jobs.kumo.example"],
             "detect": "auto", "locale": "en", "dkim_selector": "cr1",
             "dkim_key_file": str(key), "smtp_username": "kumo",
             "smtp_password_hash": _PASSWORD_HASH},
        ],
    }
    settings = settings_mod.from_mapping(raw, base=directory)
    ledger = open_ledger(settings.ledger.path, sync_wal_elsewhere=True)
    return Rig(settings, ledger, Rejections(settings, ledger, TEMPLATES),
               LinkSigner.from_settings(settings))


@pytest.fixture(scope="module")
def rigs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Rig]]:
    base = tmp_path_factory.mktemp("fuzz")
    key = base / "acme.pem"
    generate_key(key)
    made = {mode: make_rig(base / mode, key, mode) for mode in ("tempfail", "pass")}
    yield made
    for rig in made.values():
        rig.rejections.close()
        rig.ledger.close()
    if REPORT:
        STATS.write(Path(REPORT))


# -- the figures of a run --------------------------------------------------------------------


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    runs: int = 0
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    mutations: collections.Counter[str] = field(default_factory=collections.Counter)
    skipped_after_budget: int = 0
    cpu_total: float = 0.0
    slowest: list[tuple[float, str]] = field(default_factory=list)
    largest: int = 0
    copies: int = 0

    def record(self, outcome: str, reason: str, cpu: float, what: str, size: int) -> None:
        self.runs += 1
        self.outcomes[outcome] += 1
        self.reasons[f"{outcome}: {reason}"] += 1
        self.cpu_total += cpu
        self.largest = max(self.largest, size)
        self.slowest.append((cpu, what))
        self.slowest = sorted(self.slowest, reverse=True)[:10]

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({
            "inputs_run": self.runs, "wall_seconds": round(time.monotonic() - self.started, 1),
            "skipped_after_time_budget": self.skipped_after_budget,
            "outcomes": dict(self.outcomes.most_common()),
            "reasons": dict(self.reasons.most_common()),
            "mutations_applied": dict(self.mutations.most_common()),
            "copies_checked": self.copies,
            "cpu_seconds_total": round(self.cpu_total, 2),
            "largest_input_bytes": self.largest,
            "slowest": [{"cpu_seconds": round(c, 4), "input": w} for c, w in self.slowest],
        }, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


STATS = Stats()


def _reason(text: str) -> str:
    """A reason without its particulars (charset names, numbers), for counting."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    return re.sub(r"\d+", "N", text)[:90]


# -- the case --------------------------------------------------------------------------------


class Case:
    def __init__(self, seed_name: str, data: bytes, company: str, authenticated: bool,
                 on_error: str, rcpts: list[str], applied: list[str]):
        self.seed_name, self.data, self.company = seed_name, data, company
        self.authenticated, self.on_error, self.rcpts, self.applied = (
            authenticated, on_error, rcpts, applied)

    def __repr__(self) -> str:
        return f"Case({self}, data={self.data[:3000]!r})"

    def __str__(self) -> str:
        return (f"{self.seed_name} as {self.company}"
                f"{' (AUTH)' if self.authenticated else ''}, on_error={self.on_error}, "
                f"{len(self.data)} bytes, rcpts={self.rcpts}, mutations={self.applied}")


@st.composite
def cases(draw: st.DrawFn) -> Case:
    seed_name, data = draw(st.sampled_from(SEEDS))
    company = draw(st.sampled_from(sorted(COMPANIES)))
    data = data.replace(b"<hr@acme.example>", b"<hr@" + COMPANIES[company][0].encode() + b">", 1)
    message_id = draw(st.integers(0, 3))
    if message_id:  # a fresh Message-ID now and then; else the seed's (a resent message)
        data = re.sub(rb"(?im)^message-id[ \t]*:[^\r\n]*\r\n", b"", data, count=1)
        data = b"Message-ID: <fuzz-%d@x.example>\r\n" % draw(st.integers(0, 2**40)) + data
    applied: list[str] = []
    mutations = draw(st.lists(st.builds(Mutation, st.sampled_from(MUTATIONS),
                                        st.integers(0, 2**20), st.integers(0, 2**20),
                                        st.integers(0, 2**20)), max_size=4))
    for m in mutations:
        new = mutate(data, m, company)
        if new is None or has_bare_newline(new) or max(map(len, _lines(new))) > MAX_LINE:
            continue  # not applicable, or what SMTP would refuse before this step
        data = new
        applied.append(str(m))
    rcpts = draw(st.lists(st.sampled_from(OUTSIDE), min_size=1, max_size=3, unique=True))
    if draw(st.integers(0, 3)) == 0:
        rcpts.insert(draw(st.integers(0, len(rcpts))), COMPANIES[company][1])
    return Case(seed_name, data, company, draw(st.booleans()),
                draw(st.sampled_from(["tempfail", "pass"])), rcpts, applied)


# -- the checks ------------------------------------------------------------------------------


def longest_line(data: bytes) -> int:
    return max(map(len, data.split(b"\r\n")))


def tree(data: bytes) -> list[str]:
    return [p.content_type for p in mime.parse(data, max_parts=100_000).walk()]


def email_tree(data: bytes) -> list[str]:
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    return [p.get_content_type() for p in msg.walk()]


def first_field_end(data: bytes) -> int:
    """Where the first header field (the DKIM-Signature the copy got) ends."""
    end = data.index(b"\r\n") + 2
    while data[end:end + 1] in (b" ", b"\t"):
        end = data.index(b"\r\n", end) + 2
    return end


_DKIM_FIELD = re.compile(rb"(?i)dkim-signature[ \t]*:")


def without_dkim(data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    end = len(data) if end < 0 else end + 2
    kept, dropping = [], False
    for line in data[:end].split(b"\r\n")[:-1]:
        if line[:1] not in (b" ", b"\t"):
            dropping = _DKIM_FIELD.match(line) is not None
        if not dropping:
            kept.append(line + b"\r\n")
    return b"".join(kept) + data[end:]


def tokens(data: bytes, root: mime.Part) -> set[bytes]:
    """Personal links anywhere a reader could see one: headers, and every leaf's body
    with its transfer encoding undone (a soft line break may split a link), as bytes
    and, for text, as characters in its charset (EBCDIC, UTF-16, ...)."""
    found: set[bytes] = set()
    for part in root.walk():
        found |= set(LINK.findall(data[part.header_start:part.body_start]))
        if not part.is_multipart:
            found |= set(LINK.findall(_undo(data[part.body_start:part.body_end], part.cte)))
            if part.content_type.startswith("text/"):
                found |= set(LINK.findall(part_text(data, part).encode("utf-8", "replace")))
    return found


def part_text(data: bytes, part: mime.Part) -> str:
    raw = _undo(data[part.body_start:part.body_end], part.cte)
    charset = part.params.get("charset", "us-ascii")
    codec = codec_for(charset) or "utf-8"
    if codec.startswith("iso2022_jp"):
        return decode_iso2022jp(raw)
    try:
        return raw.decode(codec, "replace")
    except (UnicodeError, LookupError):
        return raw.decode("latin-1")


_SEPARATORS = " \t\r\n\"'>"


def glued_to_url(text: str, at: int, codec: str = "utf-8") -> bool:
    """SPEC 5: the marker ends a longer URL (the personal link would reach that host).
    As inject reads it: the word in the 2,048 octets before the marker, in the part's
    charset; no separator at all there, with more before, is taken for a URL."""
    window = text[max(0, at - 2048):at]
    longer = at > 2048
    if not window.isascii():
        encoded = text[max(0, at - 2048):at].encode(codec, "replace")
        longer = longer or len(encoded) > 2048
        window = encoded[-2048:].decode(codec, "replace")
    cut = max(window.rfind(ch) for ch in _SEPARATORS)
    if cut < 0 and longer:
        return True
    word = window[cut + 1:].lower()
    return "://" in word or word.startswith("www.") or word.endswith(("=", "/", "?", "&"))


PLACEHOLDER = "#" * len(MARKER)


def as_the_input_had_it(text: str, inserted: list[str], *, html: bool) -> str:
    """``text`` with what the copy put where markers were (the link, the colleagues'
    sentence) turned back into a word of the marker's length, and in plain text without
    the line breaks put around it: inject judges on the input whether a marker ends a
    longer word (a run of glued markers over 2,048 octets is a word, not a link place)."""
    for piece in sorted(set(inserted), key=len, reverse=True):
        pattern = re.escape(piece) if html else r"(?:\r?\n)?" + re.escape(piece) + r"(?:\r?\n)?"
        text = re.sub(pattern, PLACEHOLDER, text)
    return text


def markers(text: str, start: int = 0, end: int | None = None) -> Iterator[int]:
    end = len(text) if end is None else end
    at = text.find(MARKER, start, end)
    while at >= 0:
        yield at
        at = text.find(MARKER, at + len(MARKER), end)


def bare_in_plain(text: str, codec: str = "utf-8") -> list[int]:
    return [at for at in markers(text) if not glued_to_url(text, at, codec)]


_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_RAW_TEXT = re.compile(r"(?i)<(script|style|textarea|title|xmp)\b")
_A_TAG = re.compile(r"(?i)<a[\s/>]")
_ATTRIBUTE = re.compile(r"""[\s/]*([^\s/>=][^\s/>=]*)"""
                        r"""(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?""")
_SOME_READER = re.compile(r"(?is)<!--.*?(?:-->|$)|<(script|style)\b.*?(?:</\1|$)")


def bare_in_html(text: str, codec: str = "utf-8") -> list[int]:
    """Markers that stand where a link belongs in HTML as browsers read it (HTML5
    tokenisation, simplified): in text, not glued to a URL, or as the whole href of an
    <a>.  Markup that readers split differently is given the benefit of the doubt: a
    marker that some reader finds in a comment, script or style (``</<script>``: a
    bogus comment to a browser, a script to a simpler reader) may stay, and so may an
    href after another ``<`` inside the same tag (``<a href<a href=...>``)."""
    bare: list[int] = []
    pos, n = 0, len(text)
    while pos < n:
        lt = _TAG_START.search(text, pos)
        stop = n if lt is None else lt.start()
        bare += [at for at in markers(text, pos, stop) if not glued_to_url(text, at, codec)]
        if lt is None:
            break
        at = lt.start()
        if text.startswith("<!--", at):
            close = text.find("-->", at + 4)
            pos = n if close < 0 else close + 3
            continue
        raw = _RAW_TEXT.match(text, at)
        gt = text.find(">", at + 1)
        tag_end = n if gt < 0 else gt + 1
        if _A_TAG.match(text, at):
            # Attributes one after the other, as the tokeniser reads them: a quoted value
            # may hold "<a href=..." that is no attribute of this tag at all.
            cursor = at + 2
            while True:
                m = _ATTRIBUTE.match(text, cursor)
                if m is None or not m.group(1):
                    break
                value = next((g for g in m.groups()[1:] if g is not None), None)
                # After another "<a" inside this tag, inject takes the rest to be an
                # attribute value (no link rather than one that might go elsewhere).
                nested = _TAG_START.search(text, at + 1, m.start(1)) is not None
                if m.group(1).lower() == "href" and value is not None and not nested and (
                        value == MARKER or value.upper() == ENCODED_MARKER):
                    bare.append(m.start(1))
                cursor = m.end()
            gt = text.find(">", cursor)
            tag_end = n if gt < 0 else gt + 1
        if raw is not None:
            close_m = re.compile(r"(?i)</" + raw.group(1) + r"\b").search(text, tag_end)
            if close_m is None:
                break
            gt = text.find(">", close_m.end())
            tag_end = n if gt < 0 else gt + 1
        pos = tag_end
    if bare and MARKER in text:
        hidden = [(m.start(), m.end()) for m in _SOME_READER.finditer(text)]
        bare = [at for at in bare if not any(s <= at < e for s, e in hidden)]
    return bare


def check_copy(rig: Rig, company: str, before: bytes, root_b: mime.Part, rcpts: list[str],
               copy: bytes) -> bytes | None:
    """Asserts property 2 of the module docstring; returns the copy's token (None inside)."""
    assert not has_bare_newline(copy), "a bare CR or LF in a copy"
    assert longest_line(copy) <= MAX_LINE, f"a line of {longest_line(copy)} octets"
    assert copy.lower().startswith(b"dkim-signature:"), "the copy is not signed"
    after = copy[first_field_end(copy):]
    root_a = mime.parse(after, max_parts=100_000)
    walk_b, walk_a = root_b.walk(), root_a.walk()
    assert [p.content_type for p in walk_a] == [p.content_type for p in walk_b], (
        "the copy's MIME tree is not the input's")
    assert email_tree(copy) == email_tree(before), "Python's email reads another tree"
    # Only inline text leaves changed; every other byte is the input's.
    inline = {id(p) for p in inline_text_leaves(root_b)}
    changed: list[tuple[mime.Part, mime.Part]] = []
    rebuilt, last = [], 0
    for pb, pa in zip(walk_b, walk_a, strict=True):
        if pb.is_multipart:
            continue
        old, new = before[pb.header_start:pb.body_end], after[pa.header_start:pa.body_end]
        if old != new:
            assert id(pb) in inline, f"a {pb.content_type} part that is not inline text changed"
            changed.append((pb, pa))
            rebuilt += [before[last:pb.header_start], new]
            last = pb.body_end
    rebuilt.append(before[last:])
    assert without_dkim(b"".join(rebuilt)) == after, "bytes outside the changed parts differ"
    assert changed, "a copy identical to the input"
    # The link: exactly one distinct, of this recipient's offer; none inside the company.
    found = tokens(after, root_a)
    found_token: bytes | None = None
    if rcpts == [COMPANIES[company][1]]:
        assert not found, "a personal link in the colleagues' copy"
        assert PUBLIC_URL.encode() + b"/c/" not in after
    else:
        assert len(rcpts) == 1
        assert len(found) == 1, f"{len(found)} distinct links in one copy"
        found_token = found.pop()
        offer = rig.ledger.offer(rig.signer.offer_id(found_token.decode()))
        assert offer is not None, "the link opens no offer in the ledger"
        assert (offer.recipient, offer.company) == (rcpts[0], company), "another's offer"
    # No bare marker where a link belongs, in any inline text part: a part the copy
    # changed, or one left as it was beside a part that took the link.
    if found_token is not None:
        url = f"{PUBLIC_URL}/c/{found_token.decode()}"
        inserted = [f'<a href="{url}">{url}</a>', url]
    else:
        inserted = [rig.internal[company], html.escape(rig.internal[company])]
    for pb, pa in zip(walk_b, walk_a, strict=True):
        if id(pb) not in inline:
            continue
        is_html = pa.content_type == "text/html"
        text = as_the_input_had_it(part_text(after, pa), inserted, html=is_html)
        codec = codec_for(pa.params.get("charset", "us-ascii")) or "utf-8"
        bare = bare_in_html(text, codec) if is_html else bare_in_plain(text, codec)
        state = "a changed" if any(pa is c for _, c in changed) else "an unchanged"
        assert not bare, (f"a bare marker in {state} {pa.content_type} part: "
                          f"{text[max(0, bare[0] - 80):bare[0] + 40]!r}")
    return found_token


def submission(rig: Rig, case: Case) -> Submission:
    """The client as the pipeline sees it: authenticated as the company, or sending from
    a network both companies own (companies.allow_ips), where the From tells them apart."""
    company = rig.company(case.company)
    return Submission("hr@x.example", list(case.rcpts), case.data, "127.0.0.1", "t",
                      "ESMTPA" if case.authenticated else "ESMTP",
                      company if case.authenticated else None,
                      owners=() if case.authenticated else tuple(rig.settings.companies))


def run_case(rigs: dict[str, Rig], case: Case) -> None:
    rig = rigs[case.on_error]
    try:  # whose mail it is: the pipeline's first step (SPEC 4)
        company = _whose(submission(rig, case))
    except PolicyRejection:
        STATS.record("PolicyRejection", "From not the company's", 0.0, str(case),
                     len(case.data))
        return
    data, fields = strip_relay_headers(case.data)
    rejections = rig.rejections
    # The collector paused while timed: a pass over Hypothesis's own heap took 1.5 s of
    # a long run's CPU for an input that needs 3 ms.
    gc.disable()
    started = time.process_time()
    failure: TemporaryFailure | None = None
    outcome: Ordinary | Rejection | NotInjectable | Candidate | None = None
    try:
        outcome = rejections.first_look(company, data, fields)
        if isinstance(outcome, Candidate):
            outcome = rejections.prepare(outcome, data, list(case.rcpts), fields)
    except TemporaryFailure as exc:
        failure = exc
    finally:
        cpu = time.process_time() - started
        gc.enable()
    if failure is not None:
        assert case.on_error == "tempfail", f"TemporaryFailure under on_error=pass: {failure}"
        STATS.record("TemporaryFailure", _reason(str(failure)), cpu, str(case), len(case.data))
        return
    STATS.record(type(outcome).__name__,
                 _reason(outcome.why if isinstance(outcome, Ordinary) else
                         outcome.reason if isinstance(outcome, NotInjectable) else
                         f"{len(outcome.copies)} copies" if isinstance(outcome, Rejection)
                         else "?"), cpu, str(case), len(case.data))
    event(f"outcome: {type(outcome).__name__}")
    assert cpu < CPU_LIMIT, f"{cpu:.2f} s of CPU"
    assert isinstance(outcome, Ordinary | Rejection | NotInjectable), outcome
    if isinstance(outcome, Rejection):
        assert outcome.company == case.company
        root_b = mime.parse(data, max_parts=rig.settings.gateway.max_mime_parts)
        outside = [r for r in case.rcpts if r != COMPANIES[case.company][1]]
        assert sorted(r for c in outcome.copies for r in c.rcpts) == sorted(case.rcpts)
        assert len(outcome.copies) == len(outside) + (len(outside) < len(case.rcpts))
        links = [check_copy(rig, case.company, data, root_b, copy.rcpts, copy.data)
                 for copy in outcome.copies]
        STATS.copies += len(links)
        personal = [t for t in links if t is not None]
        assert len(set(personal)) == len(personal) == len(outside), "a link shared by two"


def _fuzz_settings(test: Callable[..., None]) -> Callable[..., None]:
    wrapped = settings(max_examples=EXAMPLES, deadline=None, derandomize=not LONG_RUN,
                       database=None, print_blob=True,
                       suppress_health_check=list(HealthCheck))(test)
    if LONG_RUN and SEED:
        wrapped = seed(int(SEED))(wrapped)
    return wrapped


@_fuzz_settings
@given(case=cases())
def test_the_rejection_step_takes_hostile_mail(rigs: dict[str, Rig], case: Case) -> None:
    if SECONDS and time.monotonic() - STATS.started > SECONDS:
        STATS.skipped_after_budget += 1  # the long run's time budget is spent
        return
    for m in case.applied:
        STATS.mutations[m.split("(")[0]] += 1
    run_case(rigs, case)


def test_the_seeds_are_there() -> None:
    names = [name for name, _ in SEEDS]
    assert sum(n.startswith("corpus/") for n in names) >= 40
    assert sum(n.startswith("golden/") for n in names) >= 9
    assert sum(n.startswith("template/") for n in names) >= 40
    for _, data in SEEDS:
        assert not has_bare_newline(data) and longest_line(data) <= MAX_LINE
        assert data.startswith(SEED_FROM)


def test_the_checks_see_a_bare_marker() -> None:
    """The checker itself: where a link belongs, and where a marker may stay."""
    assert bare_in_plain(f"a\n{MARKER}\n") == [2]
    assert bare_in_plain(f"https://t.example/?u={MARKER}") == []
    assert bare_in_html(f"<p>{MARKER}</p>") == [3]
    assert bare_in_html(f'<a href="{MARKER}">x</a>') != []
    assert bare_in_html(f'<a class=x href={MARKER}>x</a>') != []
    assert bare_in_html(f'<img src="{MARKER}"><!-- {MARKER} --><script>{MARKER}</script>'
                        f'<div style="url({MARKER})">https://t.example/{MARKER}</div>') == []
    assert bare_in_html(f"<p>1 < 2 {MARKER}</p>") != []


def main(argv: list[str]) -> int:
    """The long run: ``python -m tests.test_rejection_fuzz --examples N --seconds S``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--examples", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--seed", type=int, default=random.randrange(2**32))
    parser.add_argument("--report", default="fuzz-report.json")
    args = parser.parse_args(argv)
    env = dict(os.environ, CAREER_RELAY_FUZZ_EXAMPLES=str(args.examples),
               CAREER_RELAY_FUZZ_SECONDS=str(args.seconds),
               CAREER_RELAY_FUZZ_SEED=str(args.seed),
               CAREER_RELAY_FUZZ_REPORT=str(Path(args.report).resolve()))
    import subprocess

    print(f"fuzzing with seed {args.seed}: up to {args.examples} inputs or {args.seconds} s")
    code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "-k", "hostile_mail", "--hypothesis-show-statistics",
                            str(Path(__file__).resolve())], env=env, cwd=REPO)
    if Path(args.report).exists():
        print(Path(args.report).read_text(encoding="utf-8"))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
