"""gateway.dkim: our signatures verify in dkimpy and in OpenDKIM, and fail when tampered with.

Two verifiers that are not ours check every signature: dkimpy, with
``dnsfunc=`` serving the public key, and OpenDKIM's own filter in test mode
(``opendkim -x CONF -t FILE``; the config's ``TestPublicKeys`` file replaces
DNS). ``opendkim-testmsg`` from opendkim-tools cannot do this: in verify mode
it always queries DNS and has no option for a key file. The OpenDKIM tests
fail, never skip, when the Debian ``opendkim`` package is missing.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings

from career_relay.dkimkeys import generate_key, load_key, public_record
from career_relay.errors import ConfigError
from gateway.dkim import (
    BodyFacts,
    Signer,
    SigningError,
    _canonical_body,
    _parse,
    _whitespace,
    chunk_facts,
    remove_signatures,
)
from tests.conftest import line_end_mixtures
from tests.peers.opendkim import OpenDkim

DOMAIN = "acme.example"
SELECTOR = "cr2026"
NOW = int(time.time()) - 60  # a frozen clock; verifiers refuse a t= in the future

PLAIN = (b"From: Acme HR <hr@acme.example>\r\nTo: taro@example.org\r\n"
         b"Subject: Thank you for applying\r\nDate: Thu, 01 Jan 2026 09:00:00 +0900\r\n"
         b"Message-ID: <plain@acme.example>\r\n\r\nDear Taro,\r\n\r\nThank you.\r\n")

MULTIPART = (
    b"From: hr@acme.example\r\nTo: taro@example.org\r\nSubject: Result\r\n"
    b"MIME-Version: 1.0\r\nMessage-ID: <mp@acme.example>\r\n"
    b'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
    b"Hello\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"<p style=3D\"color:red\">Hello, a long line that is soft-broken by quoted-pri=\r\n"
    b"ntable</p>\r\n--b1--\r\n")

UTF8 = ("From: =?UTF-8?B?5Lq65LqL6YOo?= <hr@acme.example>\r\nTo: taro@example.org\r\n"
        "Subject: =?UTF-8?B?6YG46ICD57WQ5p6c44Gu44GU6YCj57Wh?=\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "山田 太郎 様\r\n\r\n誠に残念ながら、今回は採用を見送らせていただくことになりました。\r\n"
        ).encode()

LONG_FOLDED = (
    b"From: hr@acme.example\r\n"
    b"To: a@example.org, b@example.org, c@example.org, d@example.org,\r\n"
    b" e@example.org, f@example.org,\r\n\tg@example.org\r\n"
    b"Subject: A subject line that goes on and on and on, well past the seventy-eight\r\n"
    b" column limit, and then folds a second time for good measure because\r\n"
    b"  some mailers do that\r\n"
    b"References: <1@acme.example> <2@acme.example> <3@acme.example> <4@acme.example>\r\n"
    b" <5@acme.example> <6@acme.example>\r\n"
    b"In-Reply-To: <6@acme.example>\r\n\r\nbody\r\n")

ODD_WHITESPACE = (
    b"FROM:hr@acme.example   \r\nto:\t taro@example.org\r\n"
    b"Subject:\t  spaced \t  out  \t\r\nreply-to:   hr@acme.example\r\n"
    b"X-Unsigned:  not in h=\r\n\r\n"
    b"line with trailing spaces   \r\ntabs\t\tinside  and  spaces\t\r\n\r\n\r\n\r\n")

EMPTY_BODY = b"From: hr@acme.example\r\nTo: taro@example.org\r\nSubject: empty\r\n\r\n"
NO_FINAL_CRLF = b"From: hr@acme.example\r\nSubject: no newline\r\n\r\nlast line without CRLF"
NO_BODY = b"From: hr@acme.example\r\nSubject: headers only\r\n"

CORPUS = {
    "plain": PLAIN, "multipart": MULTIPART, "utf8-8bit": UTF8, "long-folded": LONG_FOLDED,
    "odd-whitespace": ODD_WHITESPACE, "empty-body": EMPTY_BODY,
    "no-final-crlf": NO_FINAL_CRLF, "no-body": NO_BODY,
}
corpus = pytest.mark.parametrize("message", list(CORPUS.values()), ids=list(CORPUS))


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def signer(key: rsa.RSAPrivateKey) -> Signer:
    return Signer(DOMAIN, SELECTOR, key, clock=lambda: NOW + 0.75)


DnsFunc = Callable[..., bytes | None]


@pytest.fixture(scope="module")
def dnsfunc(key: rsa.RSAPrivateKey) -> DnsFunc:
    record = public_record(key).encode()
    wanted = f"{SELECTOR}._domainkey.{DOMAIN}.".encode()

    def txt(name: bytes, timeout: float = 5) -> bytes | None:
        return record if name == wanted else None
    return txt


@pytest.fixture(scope="module")
def opendkim(tmp_path_factory: pytest.TempPathFactory, key: rsa.RSAPrivateKey) -> OpenDkim:
    return OpenDkim(tmp_path_factory.mktemp("opendkim"), SELECTOR, DOMAIN, key)


def tags(field: bytes) -> dict[bytes, bytes]:
    name, _, value = field.partition(b":")
    assert name == b"DKIM-Signature"
    parsed: dict[bytes, bytes] = dkim.util.parse_tag_value(re.sub(rb"\r\n[ \t]", b" ", value))
    return parsed


def header_names(field: bytes) -> list[bytes]:
    return [n.strip() for n in re.sub(rb"\s+", b"", tags(field)[b"h"]).split(b":")]


# -- both verifiers accept what we sign ---------------------------------------------------


@corpus
def test_dkimpy_verifies(signer: Signer, dnsfunc: DnsFunc, message: bytes) -> None:
    assert dkim.verify(signer.sign(message) + message, dnsfunc=dnsfunc)


def test_copies_sharing_a_header_section_each_verify(signer: Signer,
                                                       dnsfunc: DnsFunc) -> None:
    # The header section's hash is computed once and reused: one copy's signature
    # must not leak into the next, in either order, and a changed header must count.
    head = b"From: hr@acme.example\r\nTo: a@example.net\r\nSubject: x\r\n\r\n"
    copies = [head + b"link one\r\n", head + b"link two\r\n", head + b"link one\r\n",
              head.replace(b"Subject: x", b"Subject: y") + b"link one\r\n"]
    fields = [signer.sign(copy) for copy in copies]
    for copy, field in zip(copies, fields, strict=True):
        assert dkim.verify(field + copy, dnsfunc=dnsfunc)
    assert not dkim.verify(fields[0] + copies[1], dnsfunc=dnsfunc)
    assert not dkim.verify(fields[0] + copies[3], dnsfunc=dnsfunc)


@pytest.mark.peer
@corpus
def test_opendkim_verifies(signer: Signer, opendkim: OpenDkim, message: bytes) -> None:
    assert opendkim.passes(signer.sign(message) + message)


@pytest.mark.peer
def test_replaces_a_broken_signature(signer: Signer, dnsfunc: DnsFunc,
                                     opendkim: OpenDkim) -> None:
    """The gateway's path: remove the signature the change broke, then sign the copy."""
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption())
    theirs = dkim.sign(PLAIN, b"esp", b"acme.example", pem, canonicalize=(b"relaxed", b"simple"))
    changed = remove_signatures(theirs + PLAIN).replace(b"Thank you.", b"Thank you. [link]")
    assert b"DKIM-Signature" not in changed
    signed = signer.sign(changed) + changed
    assert dkim.verify(signed, dnsfunc=dnsfunc)
    assert opendkim.passes(signed)


# -- and reject what was changed after signing --------------------------------------------


def tampered(message: bytes) -> dict[str, bytes]:
    head, _, body = message.partition(b"\r\n\r\n")
    return {
        "body": message.replace(b"Thank you.", b"Thank you!"),
        "appended body": message + b"P.S. appended by someone else\r\n",
        "subject": message.replace(b"Subject: Thank", b"Subject: Spank"),
        "second From on top": b"From: ceo@acme.example\r\n" + message,
        "second From below": head + b"\r\nFrom: ceo@acme.example\r\n\r\n" + body,
    }


@pytest.mark.parametrize("change", list(tampered(PLAIN)))
def test_dkimpy_rejects_tampering(signer: Signer, dnsfunc: DnsFunc, change: str) -> None:
    signed = signer.sign(PLAIN) + PLAIN
    assert dkim.verify(signed, dnsfunc=dnsfunc)
    assert not dkim.verify(tampered(signed)[change], dnsfunc=dnsfunc)


@pytest.mark.peer
@pytest.mark.parametrize("change", list(tampered(PLAIN)))
def test_opendkim_rejects_tampering(signer: Signer, opendkim: OpenDkim, change: str) -> None:
    signed = signer.sign(PLAIN) + PLAIN
    assert opendkim.passes(signed)
    assert not opendkim.passes(tampered(signed)[change])


def test_relaxed_survives_refolding(signer: Signer, dnsfunc: DnsFunc) -> None:
    """What relays do (re-fold, re-space headers, strip trailing blanks) does not break it."""
    signed = signer.sign(LONG_FOLDED) + LONG_FOLDED
    refolded = (signed.replace(b",\r\n e@", b", e@").replace(b"Subject: A", b"Subject:    A")
                .replace(b"body\r\n", b"body   \r\n\r\n"))
    assert refolded != signed
    assert dkim.verify(refolded, dnsfunc=dnsfunc)


# -- the signature's shape ----------------------------------------------------------------


def test_tags(signer: Signer) -> None:
    field = signer.sign(PLAIN)
    t = tags(field)
    assert t[b"v"] == b"1"
    assert t[b"a"] == b"rsa-sha256"
    assert t[b"c"] == b"relaxed/relaxed"
    assert (t[b"d"], t[b"s"], t[b"t"]) == (DOMAIN.encode(), SELECTOR.encode(), str(NOW).encode())
    assert b"l" not in t  # a body length limit would let anyone append under our name
    assert set(t) == {b"v", b"a", b"c", b"d", b"s", b"t", b"h", b"bh", b"b"}


@corpus
def test_h_lists_present_headers_then_oversigns_spec_5s_list(signer: Signer,
                                                              message: bytes) -> None:
    names = header_names(signer.sign(message))
    head = message.partition(b"\r\n\r\n")[0]
    present = [line.split(b":", 1)[0].strip().lower() for line in head.split(b"\r\n")
               if line and line[:1] not in b" \t"]
    spec5 = [b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
             b"in-reply-to", b"references", b"mime-version", b"content-type",
             b"content-transfer-encoding"]
    signed = [n for n in present if n in {*spec5, b"sender"}]
    assert names[:len(signed)] == signed
    for name in spec5:  # RFC 6376 section 8.15: one more than occurs
        assert names.count(name) == present.count(name) + 1, name
    assert b"x-unsigned" not in names


@pytest.mark.parametrize("added", [b"Subject: a new subject", b"To: someone@else.example",
                                   b"Reply-To: thief@evil.example", b"Cc: x@evil.example",
                                   b"From: ceo@acme.example"])
def test_a_field_added_after_signing_breaks_the_signature(signer: Signer, added: bytes,
                                                          dnsfunc: DnsFunc) -> None:
    signed = signer.sign(PLAIN) + PLAIN
    assert dkim.verify(signed, dnsfunc=dnsfunc)
    head, _, body = signed.partition(b"\r\n\r\n")
    assert not dkim.verify(added + b"\r\n" + signed, dnsfunc=dnsfunc)  # above
    assert not dkim.verify(head + b"\r\n" + added + b"\r\n\r\n" + body, dnsfunc=dnsfunc)


@corpus
def test_folded_crlf_and_short_lines(signer: Signer, message: bytes) -> None:
    field = signer.sign(message)
    assert field.endswith(b"\r\n") and not field.endswith(b"\r\n\r\n")
    lines = field[:-2].split(b"\r\n")
    assert all(len(line) <= 78 for line in lines), lines
    assert all(line[:1] in (b" ", b"\t") for line in lines[1:])
    assert b"\n" not in field.replace(b"\r\n", b"") and b"\r" not in field.replace(b"\r\n", b"")


@corpus
def test_body_hash_is_dkimpys(signer: Signer, key: rsa.RSAPrivateKey, message: bytes) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    theirs = dkim.sign(message, SELECTOR.encode(), DOMAIN.encode(), pem,
                       canonicalize=(b"relaxed", b"relaxed"))
    assert tags(signer.sign(message))[b"bh"] == tags(theirs)[b"bh"]


def test_signer_from_key_file(tmp_path: Path, dnsfunc: DnsFunc) -> None:
    path = tmp_path / "k.pem"
    generate_key(path)
    fresh = Signer(DOMAIN, SELECTOR, load_key(str(path)))
    record = public_record(load_key(str(path))).encode()
    assert dkim.verify(fresh.sign(PLAIN) + PLAIN, dnsfunc=lambda name, timeout=5: record)
    assert not dkim.verify(fresh.sign(PLAIN) + PLAIN, dnsfunc=dnsfunc)  # another key


def test_refuses_a_message_without_from(signer: Signer) -> None:
    with pytest.raises(SigningError, match="no From"):
        signer.sign(b"To: taro@example.org\r\nSubject: x\r\n\r\nbody\r\n")


@pytest.mark.parametrize("message", [b"From: hr@acme.example\r\nnot a header\r\n\r\nbody\r\n",
                                     b" folded first\r\nFrom: hr@acme.example\r\n\r\nbody\r\n"])
def test_refuses_an_unparsable_header(signer: Signer, message: bytes) -> None:
    with pytest.raises(SigningError):
        signer.sign(message)


@pytest.mark.parametrize("domain, selector", [("acme.example; x=1", "s"), ("acme.example", "a b"),
                                              ("例え.jp", "s"), ("", "s")])
def test_refuses_bad_domain_or_selector(key: rsa.RSAPrivateKey, domain: str,
                                        selector: str) -> None:
    with pytest.raises(ConfigError):
        Signer(domain, selector, key)


# -- our shortcuts give exactly dkimpy's results -----------------------------------------

_POLICY = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_PIECES = [b"a", b"b c", b" ", b"  ", b"\t", b"\r\n", b"\r\n", b"\r\n\r\n", b"\n", b"\r",
           b"X-H: v", b"From: a@b", b"\r\n ", b"\r\n\t", b":", "é".encode()]


def random_messages(count: int) -> list[bytes]:
    rng = random.Random(6376)
    crlf_only = [p for p in _PIECES if b"\n" not in p.replace(b"\r\n", b"")]
    out = list(CORPUS.values())
    for i in range(count):
        pieces = crlf_only if i % 2 else _PIECES  # half of them with bare LF / CR
        out.append(b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 60))))
        out.append(b"From: a@b\r\nX-H: v\r\n\r\n" + out[-1])  # a valid header, random body
    return out


def test_parse_is_rfc822_parse() -> None:
    for message in random_messages(3000):
        try:
            expected: object = dkim.rfc822_parse(message)
        except (dkim.MessageFormatError, IndexError):  # IndexError: leading folded line
            expected = "error"
        try:
            got: object = _parse(message)
        except SigningError:
            got = "error"
        assert got == expected, message


def test_canonical_body_is_dkimpys() -> None:
    for body in random_messages(3000):
        assert _canonical_body(body) == _POLICY.canonicalize_body(body), body


# What the shortcuts of _canonical_body (a tab looked for once; the run fact taken before
# trailing WSP goes) and chunk_facts could get wrong.
@settings(max_examples=1000, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(line_end_mixtures())
def test_canonical_body_and_its_facts_for_any_whitespace(body: bytes) -> None:
    expected = _POLICY.canonicalize_body(body)
    assert _canonical_body(body) == expected
    assert _canonical_body(body, BodyFacts(True, *_whitespace(body))) == expected
    bare, trailing, run = chunk_facts(memoryview(body))
    assert bare == body.count(b"\n") - body.count(b"\r\n")
    assert trailing == (b" \r\n" in body or b"\t\r\n" in body)
    assert run == (b"\t" in body or b"  " in body)


# -- remove_signatures --------------------------------------------------------------------

SIGNED_TWICE = (
    b"Received: from x by y; Thu, 01 Jan 2026 09:00:00 +0900\r\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; d=esp.example; s=s1;\r\n"
    b"\th=from:to; bh=AAAA;\r\n"
    b"\tb=BBBB\r\n"
    b"From: hr@acme.example\r\n"
    b"dkim-signature : v=1; a=rsa-sha256; d=acme.example; s=s2; h=from; bh=CC; b=DD\r\n"
    b"X-DKIM-Signature: kept\r\n"
    b"DKIM-Signature-Report: kept too\r\n"
    b"Subject: hi\r\n"
    b"  folded subject\r\n"
    b"\r\n"
    b"DKIM-Signature: in the body, kept\r\n"
    b" indented body line\r\n")


def test_remove_signatures_drops_only_signature_fields() -> None:
    assert remove_signatures(SIGNED_TWICE) == (
        b"Received: from x by y; Thu, 01 Jan 2026 09:00:00 +0900\r\n"
        b"From: hr@acme.example\r\n"
        b"X-DKIM-Signature: kept\r\n"
        b"DKIM-Signature-Report: kept too\r\n"
        b"Subject: hi\r\n"
        b"  folded subject\r\n"
        b"\r\n"
        b"DKIM-Signature: in the body, kept\r\n"
        b" indented body line\r\n")


def test_remove_signatures_last_header_and_no_body() -> None:
    assert remove_signatures(b"From: a@b\r\nDKIM-Signature: v=1;\r\n b=x\r\n") == b"From: a@b\r\n"
    assert remove_signatures(b"From: a@b\r\nDKIM-Signature: b=x\r\n\r\n") == b"From: a@b\r\n\r\n"


@corpus
def test_remove_signatures_undoes_sign(signer: Signer, message: bytes) -> None:
    assert remove_signatures(message) is message  # nothing to remove: the same bytes
    assert remove_signatures(signer.sign(message) + message) == message
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:  # a message with no body: the header section runs to the end
        head, sep = message[:-2], b"\r\n"
    middle = head + b"\r\n" + signer.sign(message) + b"X-After: 1" + sep + body
    assert remove_signatures(middle) == head + b"\r\nX-After: 1" + sep + body


def test_facts_from_the_pieces_are_the_facts_of_the_whole(key: rsa.RSAPrivateKey) -> None:
    """A copy of a rejection is signed with what its pieces say of it (``pieces_facts``),
    cached per range of the shared message: the signature must be the one a scan of the
    whole copy gives.  Random messages and cuts, with CR, LF, spaces and tabs crowded at
    the seams and the header's end falling inside a piece or on a seam."""
    from gateway.dkim import BodyFacts, pieces_facts

    rng = random.Random(20261203)
    signer = Signer("acme.example", "cr1", key, clock=lambda: 1_700_000_000)
    alphabet = [b"a", b"b", b" ", b"\t", b"\r\n", b"\r\n", b"\n", b"\r", b"  ", b"x" * 5]
    for _ in range(400):
        head = b"From: hr@acme.example\r\nSubject: s\r\n" + (
            b"X-Folded: a\r\n\tb\r\n" if rng.random() < 0.5 else b"") + b"\r\n"
        body = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 60)))
        base = head + body
        cache: dict[tuple[int, int], tuple[int, bool, bool]] = {}
        for _copy in range(3):  # the second and third use the cache
            cuts = sorted(rng.sample(range(1, len(base)), k=min(len(base) - 1, 4)))
            pieces: list[bytes | tuple[int, int]] = []
            last = 0
            for cut in cuts:
                pieces.append((last, cut))
                if cut >= len(head):  # new bytes in the body only, as a copy has them
                    pieces.append(b"".join(rng.choice(alphabet)
                                           for _ in range(rng.randrange(3))))
                last = cut
            pieces.append((last, len(base)))
            pieces = [p for p in pieces if p != b""]
            message = b"".join(base[p[0]:p[1]] if isinstance(p, tuple) else p for p in pieces)
            facts = pieces_facts(message, base, pieces, cache)
            end = message.find(b"\r\n\r\n")
            whole = message[end + 4:] if end >= 0 else b""
            expected = BodyFacts(message.count(b"\n") == message.count(b"\r\n"),
                                 b" \r\n" in whole or b"\t\r\n" in whole,
                                 b"\t" in whole or b"  " in whole)
            assert facts.crlf_only == expected.crlf_only, (pieces, message)
            if facts.crlf_only:
                assert facts == expected, (pieces, message)
                assert signer.sign(message, facts) == signer.sign(message)
