"""Whose mail is it (SPEC 4, DESIGN decision 4): proven by AUTH or the company's own
networks, never by the From header; a shared network only relays, unchanged, unsigned."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from career_relay.dkimkeys import generate_key
from career_relay.ledger import open_ledger
from tests.conftest import (
    _PASSWORD_HASH,
    COMPANY_PASSWORD,
    ConfigMaker,
    GatewayThread,
    Sink,
    crlf,
    strip_received,
)

MARKER = "[[CAREER_RELAY_LINK]]"


def rejection(sender: str = "hr@acme.example", from_field: str | None = None) -> bytes:
    return crlf(f"From: {from_field or sender}\nTo: cand@example.net\nSubject: 選考結果\n"
                f"Message-ID: <w-{abs(hash(from_field or sender))}@x.example>\n"
                "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
                f"誠に残念ながら今回は見送らせていただきます。\n{MARKER}\n")


@pytest.fixture
def gateway(make_config: ConfigMaker, sink: Sink, tmp_path: Path) -> Iterator[GatewayThread]:
    """127.0.0.0/8 may relay (the global list, like a provider's shared range); 127.0.0.1
    is acme's and kumo's own sending host; 127.0.0.5 is kumo's alone."""
    companies = []
    for cid, nets in (("acme", ["127.0.0.1/32"]), ("kumo", ["127.0.0.1/32", "127.0.0.5/32"])):
        key = tmp_path / "keys" / f"{cid}.pem"
        generate_key(key)
        companies.append({"id": cid, "name": cid, "domains": [f"{cid}.example"],
                          "dkim_selector": "cr1", "dkim_key_file": str(key),
                          "smtp_username": cid, "smtp_password_hash": _PASSWORD_HASH,
                          "allow_ips": nets})
    config = make_config(upstream_port=sink.port, gateway={"allow_ips": ["127.0.0.0/8"]},
                         site={"public_url": "http://consent.test"}, companies=companies)
    gw = GatewayThread(config).start()
    yield gw
    gw.stop()


def send(gw: GatewayThread, data: bytes, sender: str, source: str = "127.0.0.1",
         login: str | None = None) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", gw.port, source_address=(source, 0)) as c:
        c.ehlo()
        if login:
            c.login(login, COMPANY_PASSWORD)
        code, text = c.mail(sender)
        if code != 250:
            return code, text
        c.rcpt("cand@example.net")
        return c.data(data)


def offers(gw: GatewayThread) -> list[str]:
    with open_ledger(gw.settings.ledger.path) as ledger, ledger.read() as conn:
        return [row[0] for row in conn.execute("SELECT company FROM offers")]


def test_a_shared_network_relays_a_companys_from_unchanged_and_unsigned(
        gateway: GatewayThread, sink: Sink) -> None:
    """A neighbour on the shared range writes From: hr@acme.example: it is relayed as it
    came, with no link and no signature by acme's key, and acme's ledger is untouched."""
    data = rejection()
    assert send(gateway, data, "hr@acme.example", source="127.0.0.3")[0] == 250
    (got,) = sink.wait_for(1)
    assert strip_received(got.data) == data  # byte for byte: the marker stays bare
    assert b"DKIM-Signature" not in got.data
    assert offers(gateway) == []


def test_the_companys_own_host_makes_it_the_companys(gateway: GatewayThread,
                                                     sink: Sink) -> None:
    assert send(gateway, rejection(), "hr@acme.example")[0] == 250
    (got,) = sink.wait_for(1)
    assert MARKER.encode() not in got.data and b"DKIM-Signature" in got.data
    assert b"d=acme.example" in got.data.replace(b"\r\n\t", b" ")
    assert offers(gateway) == ["acme"]


def test_a_network_two_companies_share_is_decided_by_the_from_among_them(
        gateway: GatewayThread, sink: Sink) -> None:
    assert send(gateway, rejection("hr@kumo.example"), "hr@kumo.example")[0] == 250
    (got,) = sink.wait_for(1)
    assert b"d=kumo.example" in got.data.replace(b"\r\n\t", b" ")
    assert offers(gateway) == ["kumo"]


@pytest.mark.parametrize(("source", "sender", "from_field"), [
    ("127.0.0.5", "hr@acme.example", None),  # kumo's host sending as acme: envelope
    ("127.0.0.5", "hr@kumo.example", "hr@acme.example"),  # ... or only in From
    ("127.0.0.1", "hr@acme.example", "hr@acme.example, ceo@kumo.example"),  # a From list
    ("127.0.0.1", "hr@acme.example", "hr@other.example"),  # none of the owners'
])
def test_a_proven_host_may_not_send_as_another_company(
        gateway: GatewayThread, sink: Sink, source: str, sender: str,
        from_field: str | None) -> None:
    code, text = send(gateway, rejection(sender, from_field), sender, source=source)
    assert (code, text[:5]) == (550, b"5.7.1"), text
    assert sink.messages == [] and offers(gateway) == []


@pytest.mark.parametrize("head", [
    "From: hr@acme.example\nFrom: hr@kumo.example\n",  # two From fields
    "From: hr@acme.example, hr@kumo.example\n",  # two mailboxes
    "From: " + "\n ".join(["(" * 250] * 2) + " x " + "\n ".join([")" * 250] * 2)
    + " hr@kumo.example\n",  # 500 nested comments, folded: no RecursionError, a clear 550
    "From: Acme <hr@acme.example> <hr@kumo.example>\n",  # two addresses in one mailbox
])
def test_an_authenticated_company_needs_exactly_one_from_mailbox_of_its_own(
        gateway: GatewayThread, sink: Sink, head: str) -> None:
    """RFC 5322 3.6.2; parsed strictly here, since Python 3.11.7's email.utils reads some
    lists as one address (CVE-2023-27043)."""
    data = crlf(f"{head}To: cand@example.net\nSubject: x\nMessage-ID: <one@acme.example>\n"
                f"MIME-Version: 1.0\n\n{MARKER}\n")
    code, text = send(gateway, data, "hr@acme.example", source="127.0.0.3", login="acme")
    assert (code, text[:5]) == (550, b"5.7.1"), text
    assert sink.messages == []
