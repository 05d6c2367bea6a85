"""SMTP intake: who may relay, what is refused and with which reply (SPEC 4)."""

from __future__ import annotations

import base64
import os
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import gateway.server
from gateway.message import header_block
from gateway.mime import MAX_HEADER_LINES
from tests.conftest import (
    COMPANY_PASSWORD,
    ConfigMaker,
    GatewayThread,
    Sink,
    crlf,
    record_fsyncs,
    self_signed,
    strip_received,
    wait_until,
)

MSG = crlf("From: HR <hr@acme.example>\nTo: a@example.net\nSubject: test\n\nHello\n")


def start(make_config: ConfigMaker, sink: Sink, **sections: dict[str, object]) -> GatewayThread:
    return GatewayThread(make_config(upstream_port=sink.port, **sections)).start()


@pytest.fixture
def no_allow(make_config: ConfigMaker, sink: Sink) -> Iterator[GatewayThread]:
    """A gateway where loopback is not in allow_ips: every client must AUTH."""
    gw = start(make_config, sink, gateway={"allow_ips": ["192.0.2.0/24"]})
    yield gw
    gw.stop()


class Raw:
    """A line-level SMTP client, for what smtplib refuses to send."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> str:
        lines = []
        while True:
            line = self.file.readline().decode()
            lines.append(line.rstrip("\r\n"))
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def cmd(self, line: bytes | str) -> str:
        self.send(line if isinstance(line, bytes) else line.encode())
        self.send(b"\r\n")
        return self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


# -- who may relay ---------------------------------------------------------------------


def test_client_outside_allow_ips_must_authenticate(no_allow: GatewayThread, sink: Sink) -> None:
    with smtplib.SMTP("127.0.0.1", no_allow.port) as c:
        c.ehlo()
        code, text = c.mail("hr@acme.example")
        assert (code, text[:5]) == (530, b"5.7.0")
    assert sink.messages == []


def test_without_auth_offered_refusal_is_550(make_config: ConfigMaker, sink: Sink) -> None:
    gw = start(make_config, sink, gateway={"allow_ips": ["192.0.2.0/24"], "require_auth": False})
    try:
        with smtplib.SMTP("127.0.0.1", gw.port) as c:
            c.ehlo()
            assert not c.has_extn("auth")
            code, text = c.mail("hr@acme.example")
            assert (code, text[:5]) == (550, b"5.7.1")
    finally:
        gw.stop()


def test_auth_plain_on_loopback_relays(no_allow: GatewayThread, sink: Sink) -> None:
    with smtplib.SMTP("127.0.0.1", no_allow.port) as c:
        c.login("acme", COMPANY_PASSWORD)
        c.sendmail("hr@acme.example", ["a@example.net"], MSG)
    (got,) = sink.wait_for(1)
    assert b"with ESMTPA id" in got.data


def test_auth_login_mechanism(no_allow: GatewayThread, sink: Sink) -> None:
    r = Raw(no_allow.port)
    r.cmd("EHLO client.test")
    assert r.cmd("AUTH LOGIN").startswith("334")
    assert r.cmd(base64.b64encode(b"acme")).startswith("334")
    assert r.cmd(base64.b64encode(COMPANY_PASSWORD.encode())).startswith("235 2.7.0")
    assert r.cmd("MAIL FROM:<hr@acme.example>").startswith("250")
    r.close()


def test_wrong_password_is_535_and_mail_still_refused(no_allow: GatewayThread) -> None:
    with smtplib.SMTP("127.0.0.1", no_allow.port) as c:
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            c.login("acme", "wrong password")
        assert err.value.smtp_code == 535
        assert c.mail("hr@acme.example")[0] == 530


def test_unknown_user_is_535(no_allow: GatewayThread) -> None:
    with smtplib.SMTP("127.0.0.1", no_allow.port) as c, pytest.raises(
            smtplib.SMTPAuthenticationError):
        c.login("nobody", COMPANY_PASSWORD)


def test_authenticated_company_cannot_use_foreign_envelope_sender(
        no_allow: GatewayThread) -> None:
    with smtplib.SMTP("127.0.0.1", no_allow.port) as c:
        c.login("acme", COMPANY_PASSWORD)
        code, text = c.mail("ceo@other.example")
        assert (code, text[:5]) == (550, b"5.7.1")


def test_authenticated_company_cannot_use_foreign_from_header(
        no_allow: GatewayThread, sink: Sink) -> None:
    forged = crlf("From: CEO <ceo@bank.example>\nTo: a@example.net\nSubject: pay\n\nx\n")
    with smtplib.SMTP("127.0.0.1", no_allow.port) as c:
        c.login("acme", COMPANY_PASSWORD)
        with pytest.raises(smtplib.SMTPDataError) as err:
            c.sendmail("hr@acme.example", ["a@example.net"], forged)
        assert err.value.smtp_code == 550
        assert b"5.7.1" in err.value.smtp_error and b"bank.example" in err.value.smtp_error
    assert sink.messages == []


def test_remote_client_may_auth_only_after_starttls(
        make_config: ConfigMaker, sink: Sink, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Every test connection comes from loopback; the boundary that tells the
    # gateway where a client is gets replaced so it sees a remote client.
    monkeypatch.setattr(gateway.server, "_is_loopback", lambda peer: False)
    cert, key = self_signed(tmp_path)
    gw = start(make_config, sink, gateway={"allow_ips": ["192.0.2.0/24"],
                                           "tls_cert": str(cert), "tls_key": str(key)})
    try:
        with smtplib.SMTP("127.0.0.1", gw.port) as c:
            c.ehlo()
            assert c.has_extn("starttls") and not c.has_extn("auth")
            code, text = c.docmd("AUTH", "PLAIN " + base64.b64encode(
                b"\0acme\0" + COMPANY_PASSWORD.encode()).decode())
            assert (code, text[:6]) == (538, b"5.7.11")
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            c.starttls(context=ctx)
            c.ehlo()
            assert c.has_extn("auth")
            c.login("acme", COMPANY_PASSWORD)
            c.sendmail("hr@acme.example", ["a@example.net"], MSG)
        (got,) = sink.wait_for(1)
        assert b"with ESMTPSA id" in got.data
    finally:
        gw.stop()


# -- what is refused -------------------------------------------------------------------


def test_too_large_message_gets_552(make_config: ConfigMaker, sink: Sink) -> None:
    gw = start(make_config, sink, gateway={"max_message_size": 2000})
    try:
        with smtplib.SMTP("127.0.0.1", gw.port) as c:
            big = MSG + b"x" * 3000 + b"\r\n"
            with pytest.raises(smtplib.SMTPResponseException) as err:
                c.sendmail("hr@acme.example", ["a@example.net"], big)
            assert err.value.smtp_code == 552
        r = Raw(gw.port)
        r.cmd("EHLO client.test")
        assert r.cmd("MAIL FROM:<hr@acme.example> SIZE=5000").startswith("552")
        r.close()
    finally:
        gw.stop()
    assert sink.messages == []


@pytest.mark.parametrize("body", [b"line one\nline two\r\n", b"line one\rline two\r\n",
                                  b"smuggled\n.\r\nMAIL FROM:<x@evil.example>\r\n"])
def test_bare_lf_or_cr_is_refused(gateway: GatewayThread, sink: Sink, body: bytes) -> None:
    r = Raw(gateway.port)
    r.cmd("EHLO client.test")
    r.cmd("MAIL FROM:<hr@acme.example>")
    r.cmd("RCPT TO:<a@example.net>")
    assert r.cmd("DATA").startswith("354")
    r.send(b"Subject: x\r\n\r\n" + body + b".\r\n")
    reply = r.reply()
    assert reply.startswith("554 5.6.0") and "bare LF or CR" in reply
    r.close()
    assert sink.messages == [] and gateway.queue_ids() == []


def test_a_mail_loop_ends_at_the_hundredth_received_field(gateway: GatewayThread,
                                                           sink: Sink) -> None:
    """RFC 5321 6.3: an upstream routing mail back to the gateway is a loop; each pass adds
    a Received field, and the pass that finds 100 of them refuses the message (554 5.4.6)
    instead of relaying it once more.  Here each pass sends again what the upstream got."""
    trace = b"".join(b"%s: from hop%d.example (hop%d.example [192.0.2.%d])\r\n"
                     b"\tby next.example; Thu, 3 Dec 2026 10:00:00 +0900\r\n"
                     % (name, i, i, i) for i, name in
                     zip(range(98), [b"Received", b"RECEIVED", b"received"] * 33, strict=False))
    message = trace + MSG
    for passes in (1, 2):
        with smtplib.SMTP("127.0.0.1", gateway.port) as c:
            c.sendmail("hr@acme.example", ["a@example.net"], message)
        (got,) = sink.wait_for(passes)[-1:]
        assert got.data.lower().count(b"\nreceived:") + got.data.lower().startswith(
            b"received:") == 98 + passes
        message = got.data
    with smtplib.SMTP("127.0.0.1", gateway.port) as c, \
            pytest.raises(smtplib.SMTPDataError) as err:
        c.sendmail("hr@acme.example", ["a@example.net"], message)
    assert err.value.smtp_code == 554
    assert err.value.smtp_error.startswith(b"5.4.6 Too many hops")
    # Nothing kept of the third: the queue empties once the two relayed ones are done.
    wait_until(lambda: gateway.queue_ids() == [], what="an empty queue")
    assert len(sink.messages) == 2


def test_a_header_of_more_than_100000_lines_gets_552(gateway: GatewayThread,
                                                     sink: Sink) -> None:
    """Every step that reads the header pays for each of its lines (an attack review sent
    4.8 million, 24 MB, and held a worker for seconds): the limit is on the lines, and
    a header at the limit still passes, byte for byte."""
    head, rest = MSG.split(b"\r\n\r\n", 1)
    def with_lines(total: int) -> bytes:
        return head + b"\r\n" + b"X:y\r\n" * (total - head.count(b"\r\n") - 1) + b"\r\n" + rest
    at_limit = with_lines(MAX_HEADER_LINES)
    assert header_block(at_limit).count(b"\r\n") == MAX_HEADER_LINES
    with smtplib.SMTP("127.0.0.1", gateway.port) as c:
        c.sendmail("hr@acme.example", ["a@example.net"], at_limit)
        with pytest.raises(smtplib.SMTPDataError) as err:
            c.sendmail("hr@acme.example", ["a@example.net"], with_lines(MAX_HEADER_LINES + 1))
    assert err.value.smtp_code == 552 and err.value.smtp_error.startswith(b"5.3.4 ")
    (got,) = sink.wait_for(1)
    assert got.data.endswith(at_limit)
    wait_until(lambda: gateway.queue_ids() == [], what="an empty queue")  # nothing of the other


def test_malformed_commands_get_their_codes(gateway: GatewayThread) -> None:
    r = Raw(gateway.port)
    assert r.greeting.startswith("220")
    assert r.cmd("MAIL FROM:<hr@acme.example>").startswith("503")  # before EHLO
    r.cmd("EHLO client.test")
    assert r.cmd("RCPT TO:<a@example.net>").startswith("503")  # before MAIL
    assert r.cmd("DATA").startswith("503")
    assert r.cmd("FROBNICATE").startswith("500")
    assert r.cmd("MAIL FROM:<<broken@>").startswith(("501", "553"))
    assert r.cmd("MAIL FROM:<hr@acme.example>").startswith("250")
    assert r.cmd("MAIL FROM:<hr@acme.example>").startswith("503")  # nested
    assert r.cmd(b"RCPT TO:<" + b"a" * 2000 + b"@example.net>").startswith("500")
    r.close()


def test_null_sender_is_accepted_and_relayed(gateway: GatewayThread, sink: Sink) -> None:
    with smtplib.SMTP("127.0.0.1", gateway.port) as c:
        c.sendmail("<>", ["a@example.net"], MSG)
    (got,) = sink.wait_for(1)
    assert got.mail_from in ("", "<>")


def test_spool_unwritable_gets_451_not_250(gateway: GatewayThread, sink: Sink) -> None:
    queue_dir = gateway.gateway.spool.journal_dir
    locked = subprocess.run(["chattr", "+i", str(queue_dir)], capture_output=True).returncode == 0
    if not locked:  # a file system without attributes: make the directory a file instead
        os.rmdir(queue_dir)
        queue_dir.write_bytes(b"")
    try:
        with smtplib.SMTP("127.0.0.1", gateway.port) as c, pytest.raises(
                smtplib.SMTPDataError) as err:
            c.sendmail("hr@acme.example", ["a@example.net"], MSG)
        assert err.value.smtp_code == 451
        assert err.value.smtp_error.startswith(b"4.3.0")
    finally:
        if locked:
            subprocess.run(["chattr", "-i", str(queue_dir)], check=True)
    assert sink.messages == []
    assert list(gateway.gateway.spool.tmp.iterdir()) == []


def test_internal_error_is_451_never_500(gateway: GatewayThread,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(gateway.gateway.spool.journal, "append", broken)
    with smtplib.SMTP("127.0.0.1", gateway.port) as c, pytest.raises(
            smtplib.SMTPDataError) as err:
        c.sendmail("hr@acme.example", ["a@example.net"], MSG)
    assert err.value.smtp_code == 451
    assert b"secret" not in err.value.smtp_error


def test_client_disconnecting_mid_data_delivers_nothing(gateway: GatewayThread,
                                                        sink: Sink) -> None:
    r = Raw(gateway.port)
    r.cmd("EHLO client.test")
    r.cmd("MAIL FROM:<hr@acme.example>")
    r.cmd("RCPT TO:<a@example.net>")
    r.cmd("DATA")
    r.send(b"Subject: half\r\n\r\nthe first half of a message\r\n")
    r.close()
    # The gateway is still serving, and the half message went nowhere.
    with smtplib.SMTP("127.0.0.1", gateway.port) as c:
        c.sendmail("hr@acme.example", ["b@example.net"], MSG)
    (got,) = sink.wait_for(1)
    assert got.rcpts == ["b@example.net"]
    # The sink's reply comes before the gateway removes its queue file: wait for it.
    wait_until(lambda: gateway.queue_ids() == [], what="an empty queue")
    assert len(sink.messages) == 1
    assert list(gateway.gateway.spool.tmp.iterdir()) == []


# -- what is accepted, and when -----------------------------------------------------------


def test_250_comes_after_file_and_directory_fsync(gateway: GatewayThread, sink: Sink,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    synced = record_fsyncs(monkeypatch)
    with smtplib.SMTP("127.0.0.1", gateway.port) as c:
        c.ehlo()
        c.mail("hr@acme.example")
        c.rcpt("a@example.net")
        code, text = c.data(MSG)
        assert code == 250
        queue_id = text.decode().rsplit(" ", 1)[1]
        at_reply = list(synced)
    journal = gateway.gateway.spool.journal_dir
    segment = [p for p in at_reply if p.endswith(".jnl")]
    assert segment and segment[0].startswith(str(journal))  # the journal segment itself
    assert str(journal) in at_reply  # and the new segment's directory entry
    (got,) = sink.wait_for(1)
    assert queue_id in got.data.decode()
    segment_text = Path(segment[0]).read_bytes() if Path(segment[0]).exists() else b""
    assert not segment_text or queue_id.encode() in segment_text


def test_one_received_header_and_relay_fields_removed(gateway: GatewayThread,
                                                      sink: Sink) -> None:
    msg = crlf("X-Career-Relay-Job: Backend engineer\nFrom: hr@acme.example\n"
               "X-Career-Relay-Stage: final\n interview\nTo: a@example.net\n"
               "Subject: s\n\nbody mentions X-Career-Relay: rejection\n")
    with smtplib.SMTP("127.0.0.1", gateway.port) as c:
        c.sendmail("hr@acme.example", ["a@example.net", "b@example.net"], msg)
    (got,) = sink.wait_for(1)
    assert got.data.count(b"Received:") == 1
    assert b"for <" not in got.data.split(b"\r\n\r\n")[0]  # two recipients: none named
    assert strip_received(got.data) == crlf(
        "From: hr@acme.example\nTo: a@example.net\nSubject: s\n\n"
        "body mentions X-Career-Relay: rejection\n")


def test_every_recipient_of_a_message_gets_it(gateway: GatewayThread, sink: Sink) -> None:
    rcpts = [f"c{i}@example.net" for i in range(30)]
    with smtplib.SMTP("127.0.0.1", gateway.port) as c:
        c.sendmail("hr@acme.example", rcpts, MSG)
    (got,) = sink.wait_for(1)
    assert sorted(got.rcpts) == sorted(rcpts)
    wait_until(lambda: gateway.queue_ids() == [], what="an empty queue")


def test_full_disk_gets_451_and_the_spool_stays_usable(make_config: ConfigMaker, sink: Sink,
                                                       tmp_path: Path) -> None:
    # A real full file system: the spool on a 2 MB tmpfs (the tests run as root).
    spool = tmp_path / "small-spool"
    spool.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(spool)], check=True)
    try:
        gw = start(make_config, sink, queue={"dir": str(spool)})
        try:
            big = MSG + (b"y" * 76 + b"\r\n") * 40_000  # about 3 MB: more than the disk
            with smtplib.SMTP("127.0.0.1", gw.port) as c:
                with pytest.raises(smtplib.SMTPDataError) as err:
                    c.sendmail("hr@acme.example", ["big@example.net"], big)
                assert err.value.smtp_code == 451 and b"spool" in err.value.smtp_error
                c.sendmail("hr@acme.example", ["small@example.net"], MSG)  # room again
            (got,) = sink.wait_for(1)
            assert got.rcpts == ["small@example.net"]
            assert strip_received(got.data) == MSG
        finally:
            gw.stop()
    finally:
        subprocess.run(["umount", str(spool)], check=True)


def test_relay_fields_are_read_with_their_continuations() -> None:
    from gateway.message import strip_relay_headers

    data = crlf("X-Career-Relay-Job: backend\nX-Career-Relay-Stage: first\nSubject: s\n"
                "X-Career-Relay-Job: platform\n engineer\nTo: a@example.net\n\nbody\n")
    stripped, fields = strip_relay_headers(data)
    assert stripped == crlf("Subject: s\nTo: a@example.net\n\nbody\n")
    assert fields == {"x-career-relay-job": "platform engineer",
                      "x-career-relay-stage": "first"}


# -- envelope hygiene (SPEC 4) ---------------------------------------------------------


@pytest.mark.parametrize("address", ["a\x01b@example.net", "a\x7fb@example.net",
                                     "a\x85b@example.net", "a\u2028b@example.net",
                                     "a\u2029b@example.net"])
def test_control_characters_in_an_envelope_address_get_501(gateway: GatewayThread,
                                                           sink: Sink, address: str) -> None:
    """They would be written into Received: and the logs, where a line separator forges
    lines; 501 5.1.3 names the problem (and no 500 with internals)."""
    raw = Raw(gateway.port)
    try:
        assert raw.cmd("EHLO client.example").startswith("250")
        smtputf8 = " SMTPUTF8" if not address.isascii() else ""
        assert raw.cmd(f"MAIL FROM:<hr@acme.example>{smtputf8}".encode()).startswith("250")
        reply = raw.cmd(f"RCPT TO:<{address}>".encode())
        assert reply.startswith("501 5.1.3"), reply
        assert raw.cmd(f"MAIL FROM:<{address}>".encode()).startswith("503")  # one MAIL only
        raw.cmd("RSET")
        reply = raw.cmd(f"MAIL FROM:<{address}>{smtputf8}".encode())
        assert reply.startswith("501 5.1.3"), reply
    finally:
        raw.close()
    assert sink.messages == []


def test_recipients_beyond_max_recipients_get_452(make_config: ConfigMaker, sink: Sink) -> None:
    gw = start(make_config, sink, gateway={"max_recipients": 3})
    try:
        with smtplib.SMTP("127.0.0.1", gw.port) as c:
            c.ehlo()
            assert c.mail("hr@acme.example")[0] == 250
            assert [c.rcpt(f"r{i}@example.net")[0] for i in range(3)] == [250] * 3
            code, text = c.rcpt("r4@example.net")
            assert (code, text[:5]) == (452, b"4.5.3")
            assert c.data(MSG)[0] == 250  # the first three still get the message
        wait_until(lambda: len(sink.messages) == 1, what="the message")
        assert sorted(sink.messages[0].rcpts) == [f"r{i}@example.net" for i in range(3)]
    finally:
        gw.stop()


def test_auth_failures_are_counted_per_address_across_connections(no_allow: GatewayThread
                                                                  ) -> None:
    """SPEC 4: after 10 failures in 10 minutes an address gets 454 4.7.0 for AUTH, even
    with the right password and on a new connection; another address is not affected."""
    failures = 0
    while failures < 10:  # a guesser reconnects when a connection's AUTH limit is spent
        with smtplib.SMTP("127.0.0.1", no_allow.port) as c:
            c.ehlo()
            for _ in range(min(2, (10 - failures) // 2)):  # PLAIN, then LOGIN: two AUTH each
                with pytest.raises(smtplib.SMTPAuthenticationError) as wrong:
                    c.login("acme", "not the password")
                assert wrong.value.smtp_code == 535
                failures += 2
    with smtplib.SMTP("127.0.0.1", no_allow.port) as c:
        c.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as blocked:
            c.login("acme", COMPANY_PASSWORD)
        assert blocked.value.smtp_code == 454
        assert blocked.value.smtp_error.startswith(b"4.7.0")
    # The company's own server, elsewhere on the network, still logs in.
    with smtplib.SMTP("127.0.0.1", no_allow.port, source_address=("127.0.0.2", 0)) as c:
        c.ehlo()
        assert c.login("acme", COMPANY_PASSWORD)[0] == 235


@pytest.mark.parametrize("address", ["a", "a@", "@example.net"])
def test_a_recipient_without_a_domain_gets_501(gateway: GatewayThread, sink: Sink,
                                               address: str) -> None:
    """RFC 5321 4.1.1.3 (found by the attack review: each got a personal link)."""
    raw = Raw(gateway.port)
    try:
        assert raw.cmd("EHLO client.example").startswith("250")
        assert raw.cmd("MAIL FROM:<hr@acme.example>").startswith("250")
        reply = raw.cmd(f"RCPT TO:<{address}>")
        assert reply.startswith(("501 5.1.3", "553 5.1.3")), reply
        assert raw.cmd("RCPT TO:<postmaster>").startswith("250")  # the one exception
    finally:
        raw.close()
