"""Rejections end to end: real SMTP in, one signed copy per recipient out (SPEC 5)."""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from career_relay.dkimkeys import generate_key, load_key, public_record
from career_relay.ledger import open_ledger
from career_relay.tokens import LinkSigner
from tests.conftest import (
    COMPANY_PASSWORD,
    ConfigMaker,
    GatewayThread,
    Sink,
    crlf,
    record_fsyncs,
    strip_received,
    wait_until,
)
from tests.peers.opendkim import OpenDkim

SECRET = "test-secret-0123456789"
LINK = re.compile(r"http://consent\.test/c/([A-Za-z0-9_.\-]+)")


@pytest.fixture
def company_key(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "keys" / "acme.pem"
    key = generate_key(path)
    return path, public_record(key).encode()


@pytest.fixture
def rejecting(make_config: ConfigMaker, sink: Sink,
              company_key: tuple[Path, bytes]) -> Iterator[GatewayThread]:
    from tests.conftest import _PASSWORD_HASH

    config = make_config(upstream_port=sink.port, site={"public_url": "http://consent.test"},
                         companies=[{"id": "acme", "name": "株式会社アクメ",
                                     "domains": ["acme.example"], "dkim_selector": "cr1",
                                     "dkim_key_file": str(company_key[0]),
                                     "smtp_username": "acme",
                                     "smtp_password_hash": _PASSWORD_HASH,
                                     "allow_ips": ["127.0.0.1/32"]}])
    gw = GatewayThread(config).start()
    yield gw
    gw.stop()


def rejection(message_id: str = "<r1@acme.example>", marker: bool = True,
              header: bool = False) -> bytes:
    body = ("田中様\n\n慎重に選考を重ねました結果、誠に残念ながら今回はご期待に添えない結果と"
            "なりました。\n")
    if marker:
        body += "\nご希望の方は次のページから:\n[[CAREER_RELAY_LINK]]\n"
    head = (f"From: 人事部 <hr@acme.example>\nTo: candidate@example.net\n"
            f"Subject: 選考結果のご連絡\nMessage-ID: {message_id}\nMIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n"
            "X-Career-Relay-Job: =?UTF-8?B?44OQ44OD44Kv44Ko44Oz44OJ?=\n")
    if header:
        head += "X-Career-Relay: rejection\n"
    return crlf(head + "\n" + body)


def send(port: int, data: bytes, rcpts: list[str]) -> str:
    with smtplib.SMTP("127.0.0.1", port) as c:
        c.ehlo()
        c.mail("hr@acme.example", ["BODY=8BITMIME"])
        for r in rcpts:
            c.rcpt(r)
        code, text = c.data(data)
        assert code == 250, text
        return text.decode()


def verify(data: bytes, public: bytes) -> bool:
    return bool(dkim.verify(data, dnsfunc=lambda name, timeout=5: public))


@pytest.fixture
def opendkim(tmp_path: Path, company_key: tuple[Path, bytes]) -> OpenDkim:
    workdir = tmp_path / "opendkim"
    workdir.mkdir()
    return OpenDkim(workdir, "cr1", "acme.example", load_key(str(company_key[0])))


def test_three_candidates_and_a_colleague_get_four_copies(
        rejecting: GatewayThread, sink: Sink, company_key: tuple[Path, bytes],
        opendkim: OpenDkim) -> None:
    rcpts = ["a@example.net", "b@example.org", "c@example.com", "boss@acme.example"]
    send(rejecting.port, rejection(), rcpts)
    got = sink.wait_for(4)
    by_rcpt = {tuple(m.rcpts): m.data for m in got}
    assert sorted(by_rcpt) == sorted((r,) for r in rcpts)
    signer = LinkSigner([SECRET], 90)
    ledger = open_ledger(rejecting.settings.ledger.path)
    offers = set()
    for rcpt in rcpts[:3]:
        data = by_rcpt[(rcpt,)]
        msg = email.message_from_bytes(data, policy=email.policy.default)
        text = msg.get_content()
        (token,) = LINK.findall(text)
        offer = ledger.offer(signer.offer_id(token))
        assert offer is not None and offer.recipient == rcpt and offer.company == "acme"
        assert offer.job == "バックエンド"
        offers.add(offer.id)
        assert "[[CAREER_RELAY_LINK]]" not in text
        assert verify(strip_received(data), company_key[1])
        assert opendkim.passes(data)  # an implementation that is not ours agrees
        assert b"X-Career-Relay" not in data
    assert len(offers) == 3
    internal = email.message_from_bytes(by_rcpt[("boss@acme.example",)],
                                        policy=email.policy.default).get_content()
    assert "http://consent.test" not in internal and "ご本人専用" in internal
    assert verify(strip_received(by_rcpt[("boss@acme.example",)]), company_key[1])
    assert ledger.counts("acme", offer.created.date())["rejections"] == 1
    ledger.close()


def test_a_retried_submission_creates_no_new_offer(rejecting: GatewayThread,
                                                    sink: Sink) -> None:
    send(rejecting.port, rejection("<retry@acme.example>"), ["a@example.net"])
    send(rejecting.port, rejection("<retry@acme.example>"), ["a@example.net"])
    first, second = sink.wait_for(2)
    signer = LinkSigner([SECRET], 90)
    ids = {signer.offer_id(LINK.findall(m.data.decode())[0]) for m in (first, second)}
    assert len(ids) == 1
    # the very same link, so its expiry does not restart either
    assert LINK.findall(first.data.decode()) == LINK.findall(second.data.decode())


def test_a_folded_message_id_is_the_offers_key(rejecting: GatewayThread, sink: Sink) -> None:
    # A long Message-ID folded onto a line of its own (RFC 5322 2.2.3), as Python's
    # email.policy.SMTP writes it: the offer is recorded under the id, not a digest, so a
    # retry with the same id (folded or not) finds it.
    long_id = f"<{'x' * 70}.folded@acme.example>"
    folded = rejection(long_id).replace(f"Message-ID: {long_id}".encode(),
                                        f"Message-ID:\r\n {long_id}".encode())
    assert f"Message-ID:\r\n {long_id}".encode() in folded
    send(rejecting.port, folded, ["a@example.net"])
    send(rejecting.port, rejection(long_id), ["a@example.net"])
    first, second = sink.wait_for(2)
    signer = LinkSigner([SECRET], 90)
    ids = {signer.offer_id(LINK.findall(m.data.decode())[0]) for m in (first, second)}
    assert len(ids) == 1
    offer = open_ledger(rejecting.settings.ledger.path).offer(ids.pop())
    assert offer is not None and offer.message_id == long_id


def test_header_only_rejection_gets_the_consent_block(rejecting: GatewayThread,
                                                      sink: Sink) -> None:
    send(rejecting.port, rejection(marker=False, header=True), ["a@example.net"])
    (got,) = sink.wait_for(1)
    text = email.message_from_bytes(got.data, policy=email.policy.default).get_content()
    assert "【任意のご案内】" in text and "株式会社アクメ" in text
    assert len(LINK.findall(text)) == 1


def test_ordinary_company_mail_passes_byte_for_byte(rejecting: GatewayThread,
                                                    sink: Sink) -> None:
    data = crlf("From: hr@acme.example\nTo: a@example.net\nSubject: 面接日程のご案内\n\n"
                "次の面接の日程をご連絡いたします。\n")
    send(rejecting.port, data, ["a@example.net"])
    (got,) = sink.wait_for(1)
    assert strip_received(got.data) == data


def test_signed_rejection_is_relayed_unchanged_and_counted(rejecting: GatewayThread,
                                                            sink: Sink) -> None:
    data = crlf('From: hr@acme.example\nTo: a@example.net\nX-Career-Relay: rejection\n'
                'Content-Type: multipart/signed; boundary="s"; protocol="x"\n\n--s\n'
                'Content-Type: text/plain\n\n[[CAREER_RELAY_LINK]]\n--s\n'
                'Content-Type: application/pgp-signature\n\nsig\n--s--\n')
    send(rejecting.port, data, ["a@example.net"])
    (got,) = sink.wait_for(1)
    assert strip_received(got.data) == data.replace(b"X-Career-Relay: rejection\r\n", b"")
    ledger = open_ledger(rejecting.settings.ledger.path)
    wait_until(lambda: sum(ledger.db.conn.execute(
        "SELECT not_injected FROM daily_counts WHERE company='acme'").fetchone() or (0,)) == 1,
        what="not_injected counted")
    ledger.close()


def test_authenticated_company_rejection(rejecting: GatewayThread, sink: Sink) -> None:
    with smtplib.SMTP("127.0.0.1", rejecting.port) as c:
        c.login("acme", COMPANY_PASSWORD)
        c.sendmail("hr@acme.example", ["a@example.net"], rejection("<auth@acme.example>"))
    (got,) = sink.wait_for(1)
    assert LINK.search(got.data.decode())


@pytest.mark.parametrize("on_error", ["pass", "tempfail"])
def test_on_error(make_config: ConfigMaker, sink: Sink, company_key: tuple[Path, bytes],
                  monkeypatch: pytest.MonkeyPatch, on_error: str) -> None:
    from gateway import inject

    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("a template that fails")

    monkeypatch.setattr(inject, "splice", broken)
    config = make_config(upstream_port=sink.port, gateway={"on_error": on_error},
                         companies=[{"id": "acme", "name": "Acme", "domains": ["acme.example"],
                                     "dkim_selector": "cr1",
                                     "dkim_key_file": str(company_key[0]),
                                     "allow_ips": ["127.0.0.1/32"]}])
    gw = GatewayThread(config).start()
    try:
        data = rejection("<broken@acme.example>")
        with smtplib.SMTP("127.0.0.1", gw.port) as c:
            c.ehlo()
            c.mail("hr@acme.example", ["BODY=8BITMIME"])
            c.rcpt("a@example.net")
            code, text = c.data(data)
        if on_error == "pass":  # relayed as it came, without our headers
            assert code == 250
            (got,) = sink.wait_for(1)
            assert strip_received(got.data) == data.replace(
                b"X-Career-Relay-Job: =?UTF-8?B?44OQ44OD44Kv44Ko44Oz44OJ?=\r\n", b"")
        else:  # the client keeps it and tries again later
            assert (code, text[:5]) == (451, b"4.3.0")
            assert gw.queue_ids() == [] and sink.messages == []
    finally:
        gw.stop()


def test_signed_as_the_from_domain(make_config: ConfigMaker, sink: Sink,
                                   company_key: tuple[Path, bytes]) -> None:
    config = make_config(upstream_port=sink.port, companies=[{
        "id": "acme", "name": "Acme", "domains": ["acme.example", "jobs.acme.example"],
        "dkim_selector": "cr1", "dkim_key_file": str(company_key[0]),
        "allow_ips": ["127.0.0.1/32"]}])
    gw = GatewayThread(config).start()
    try:
        data = rejection("<jobs@acme.example>").replace(b"hr@acme.example", b"hr@jobs.acme.example")
        with smtplib.SMTP("127.0.0.1", gw.port) as c:
            c.sendmail("hr@jobs.acme.example", ["a@example.net"], data, ["BODY=8BITMIME"])
        (got,) = sink.wait_for(1)
        assert b"d=jobs.acme.example;" in got.data  # aligned with From for DMARC
        assert verify(strip_received(got.data), company_key[1])
    finally:
        gw.stop()


def test_a_ledger_refusal_is_451_whatever_on_error_says(
        rejecting: GatewayThread, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write the ledger refuses (an id that collided) is tried again by the client; a
    ledger that is away holds the message instead (tests/test_ledger_away.py)."""
    from career_relay.errors import LedgerConflict

    def failing(*args: object, **kwargs: object) -> list[dict[str, str]]:
        raise LedgerConflict("UNIQUE constraint failed: offers.id")

    assert rejecting.gateway.ledger is not None  # in the loop's commit and in a thread's
    monkeypatch.setattr(rejecting.gateway.ledger, "record_rejections", failing)
    with smtplib.SMTP("127.0.0.1", rejecting.port) as c:
        c.ehlo()
        c.mail("hr@acme.example", ["BODY=8BITMIME"])
        c.rcpt("a@example.net")
        code, text = c.data(rejection("<dbfail@acme.example>"))
    assert (code, text[:5]) == (451, b"4.3.0")  # never a bare marker to the candidate
    assert rejecting.queue_ids() == [] and sink.messages == []


def test_offers_are_on_disk_before_the_250(rejecting: GatewayThread, sink: Sink,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # The ledger commits without waiting for the disk; the journal's group commit
    # fsyncs the ledger's WAL together with the copies, before the reply.
    synced = record_fsyncs(monkeypatch)
    send(rejecting.port, rejection("<durable@acme.example>"), ["a@example.net"])
    at_reply = list(synced)
    wal = str(Path(rejecting.settings.ledger.path).resolve()) + "-wal"
    assert wal in at_reply
    assert any(p.endswith(".jnl") for p in at_reply)
    # The offers first: a crash between the two fsyncs must never leave durable
    # copies whose links open no offer.
    first_journal = next(i for i, p in enumerate(at_reply) if p.endswith(".jnl"))
    assert at_reply.index(wal) < first_journal
    sink.wait_for(1)


def test_the_copies_are_journaled_together(rejecting: GatewayThread, sink: Sink,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # One write and one group commit for all copies: a rejection waits for one
    # fsync of the journal, not one per recipient.
    synced = record_fsyncs(monkeypatch)
    send(rejecting.port, rejection("<together@acme.example>"), ["a@example.net",
                                                                 "b@example.net"])
    assert len([p for p in synced if p.endswith(".jnl")]) == 1
    assert len(sink.wait_for(2)) == 2


def test_the_250_is_one_short_line_whatever_the_fan_out(rejecting: GatewayThread,
                                                        sink: Sink) -> None:
    """RFC 5321 4.5.3.1.5: a reply line is at most 512 octets.  One id per copy made the
    250 of a 1,000-recipient rejection 22 KB, which smtplib cannot read, so the client
    took its accepted message for a failure and sent it again."""
    rcpts = [f"c{i:04d}@example.net" for i in range(1000)]
    text = send(rejecting.port, rejection("<fanout@acme.example>"), rcpts)  # smtplib read it
    assert "\n" not in text and len(f"250 {text}\r\n".encode()) < 512
    assert text.startswith("2.0.0 OK: queued as ") and text.endswith(" and 999 more copies")
    got = sink.wait_for(1000, timeout=120)
    assert sorted(r for m in got for r in m.rcpts) == rcpts
