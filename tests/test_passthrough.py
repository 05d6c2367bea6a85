"""Pass-through is exact: apart from our Received header, the upstream gets what was sent.

The corpus is CPython's own collection of real-world messages
(``test/test_email/data/msg_*.txt`` in the standard library), sent as an
SMTP client would: CRLF line endings, dot-stuffed by smtplib.
"""

from __future__ import annotations

import base64
import os
import smtplib
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import GatewayThread, Sink, crlf, strip_received

CORPUS = sorted((Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data")
                .glob("msg_*.txt"))


def wire_form(raw: bytes) -> bytes:
    """What a client sends for a stored message: CRLF line ends, a final CRLF."""
    data = crlf(raw)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def test_the_corpus_is_there() -> None:
    assert len(CORPUS) >= 40


def test_corpus_passes_byte_for_byte(gateway: GatewayThread, sink: Sink) -> None:
    sent: dict[str, bytes] = {}
    with smtplib.SMTP("127.0.0.1", gateway.port) as client:
        for path in CORPUS:
            data = wire_form(path.read_bytes())
            rcpt = f"{path.stem}@example.net"
            client.sendmail("hr@acme.example", [rcpt], data)
            sent[rcpt] = data
    got = {m.rcpts[0]: m.data for m in sink.wait_for(len(sent))}
    assert got.keys() == sent.keys()
    for rcpt, data in sent.items():
        assert strip_received(got[rcpt]) == data, rcpt


def test_dot_stuffing_round_trips(gateway: GatewayThread, sink: Sink) -> None:
    # Lines that begin with dots are stuffed by the client (RFC 5321 4.5.2)
    # and must arrive upstream exactly as written.
    data = crlf("Subject: dots\n\n.\n..\n.leading\n...three\nend.\n.\n")
    with smtplib.SMTP("127.0.0.1", gateway.port) as client:
        client.sendmail("hr@acme.example", ["a@example.net"], data)
    (got,) = sink.wait_for(1)
    assert strip_received(got.data) == data


def test_empty_body_and_header_only_messages(gateway: GatewayThread, sink: Sink) -> None:
    samples = [b"Subject: no body\r\n", b"Subject: empty body\r\n\r\n", b"\r\n"]
    with smtplib.SMTP("127.0.0.1", gateway.port) as client:
        for i, data in enumerate(samples):
            client.sendmail("hr@acme.example", [f"s{i}@example.net"], data)
    got = {m.rcpts[0]: m.data for m in sink.wait_for(len(samples))}
    for i, data in enumerate(samples):
        assert strip_received(got[f"s{i}@example.net"]) == data


def test_8bit_message_keeps_its_bytes_and_body_parameter(gateway: GatewayThread,
                                                         sink: Sink) -> None:
    data = ("From: 人事部 <hr@acme.example>\r\nTo: a@example.net\r\n"
            "Subject: =?UTF-8?B?6YG46ICD57WQ5p6c?=\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n"
            "このたびはご応募いただき、誠にありがとうございました。\r\n").encode()
    sjis = (b"Content-Type: text/plain; charset=shift_jis\r\nContent-Transfer-Encoding: 8bit\r\n"
            b"\r\n") + "選考結果のご連絡\r\n".encode("cp932")
    with smtplib.SMTP("127.0.0.1", gateway.port) as client:
        client.sendmail("hr@acme.example", ["a@example.net"], data,
                        mail_options=["BODY=8BITMIME"])
        client.sendmail("hr@acme.example", ["b@example.net"], sjis,
                        mail_options=["BODY=8BITMIME"])
    got = {m.rcpts[0]: m for m in sink.wait_for(2)}
    assert strip_received(got["a@example.net"].data) == data
    assert strip_received(got["b@example.net"].data) == sjis
    assert "BODY=8BITMIME" in [o.upper() for o in got["a@example.net"].mail_options]


def test_smtputf8_addresses_and_headers(gateway: GatewayThread, sink: Sink) -> None:
    data = ("From: 採用担当 <採用@acme.example>\r\nTo: 候補者 <候補者@example.net>\r\n"
            "Subject: 選考結果のご連絡\r\n\r\n本文\r\n").encode()
    with smtplib.SMTP("127.0.0.1", gateway.port) as client:
        client.ehlo()
        assert client.has_extn("smtputf8") and client.has_extn("8bitmime")
        client.sendmail("採用@acme.example", ["候補者@example.net"], data,
                        mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    (got,) = sink.wait_for(1)
    assert got.rcpts == ["候補者@example.net"]
    assert got.mail_from == "採用@acme.example"
    assert "SMTPUTF8" in [o.upper() for o in got.mail_options]
    assert strip_received(got.data) == data


@pytest.mark.slow
def test_20_mb_message(gateway: GatewayThread, sink: Sink) -> None:
    payload = base64.encodebytes(os.urandom(15 * 1024 * 1024)).replace(b"\n", b"\r\n")
    data = (b"From: hr@acme.example\r\nTo: a@example.net\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            b"\r\n" + payload)
    assert len(data) > 20 * 1000 * 1000
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=120) as client:
        client.sendmail("hr@acme.example", ["a@example.net"], data)
    (got,) = sink.wait_for(1, timeout=120)
    assert strip_received(got.data) == data
