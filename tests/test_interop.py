"""Real peers on both sides of the gateway: Postfix in front of it, swaks as a client.

* Postfix -> gateway -> sink: a private Postfix instance (``tests/peers/postfix.py``)
  configured with the blocks of ``docs/integrations/postfix.md`` (STARTTLS and SMTP
  AUTH to the gateway) relays a batch of distinct messages through the gateway
  subprocess; each one must arrive exactly once with its body unchanged, and both
  queues must drain. With the guide's selective set-up, only the listed sender's
  mail goes through the gateway; another sender's goes to Postfix's own relayhost.
* swaks -> gateway: the everyday command-line client, with and without AUTH,
  and with an 8-bit UTF-8 body.
"""

from __future__ import annotations

import contextlib
import os
import signal
import smtplib
import subprocess
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest

from career_relay.passwords import hash_password
from tests.conftest import (
    COMPANY_PASSWORD,
    ConfigMaker,
    GatewayProcess,
    Sink,
    free_port,
    queue_is_empty,
    self_signed,
    strip_received,
    wait_until,
)
from tests.peers.postfix import PostfixInstance, postfix_available, private_postfix

pytestmark = pytest.mark.peer

SWAKS = "/usr/bin/swaks"
SENDER = "hr@acme.example"




def split_message(data: bytes) -> tuple[bytes, bytes]:
    """Header block and body, split at the first empty line."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, data[:200]
    return head + b"\r\n", body


def header_value(data: bytes, name: str) -> str:
    """The unfolded value of the first header field called ``name``."""
    head, _ = split_message(data)
    unfolded = head.replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ")
    prefix = name.lower().encode() + b":"
    for line in unfolded.split(b"\r\n"):
        if line.lower().startswith(prefix):
            return line[len(prefix):].strip().decode("utf-8", "replace")
    raise AssertionError(f"no {name} header in {head[:300]!r}")


def gateway_pids(config: Path) -> list[int]:
    """Live processes running ``career_relay`` with this config (parent and workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0] if args else "X"
        except OSError:
            continue
        if state not in ("Z", "X") and b"career_relay" in args and str(config).encode() in args:
            pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def running_gateway(config: Path) -> Iterator[GatewayProcess]:
    """The gateway command (default workers: one per CPU), stopped with SIGTERM after."""
    gw = GatewayProcess(config).start()
    try:
        yield gw
    finally:
        try:
            gw.terminate()
        finally:
            gw.kill()
            leftovers = gateway_pids(config)
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"gateway processes still running after SIGTERM: {leftovers}"


@pytest.fixture
def started_gateway(make_config: ConfigMaker, sink: Sink) -> Iterator[GatewayProcess]:
    with running_gateway(make_config(upstream_port=sink.port)) as gw:
        yield gw


# -- Postfix in front of the gateway ------------------------------------------------------


def postfix_batch_message(i: int) -> tuple[bytes, bytes, list[str]]:
    """Message ``i`` of the batch: (whole message, its body, MAIL FROM options).

    Every tenth body is 8-bit UTF-8 and is sent with BODY=8BITMIME, so Postfix
    has to pass that on; some bodies have lines that begin with a dot, so the
    dot-stuffing of both hops is exercised.
    """
    lines = [f"Message {i} of the Postfix batch.", f"Line {i * 7 % 13} " + "x" * (i % 90)]
    if i % 3 == 0:
        lines += [".a line that begins with a dot", "..and one with two", "."]
    options: list[str] = []
    if i % 10 == 0:
        lines.append(f"8-bit: 選考結果のお知らせ {i} — Grüße")
        options = ["BODY=8BITMIME"]
    lines.append("-- ")
    lines.append("end")
    body = ("\r\n".join(lines) + "\r\n").encode("utf-8")
    head = (f"From: HR <{SENDER}>\r\nTo: candidate{i}@example.net\r\n"
            f"Subject: postfix batch {i}\r\nMessage-ID: <pf-{i}@acme.example>\r\n"
            "Date: Mon, 01 Jun 2026 09:00:00 +0900\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: {'8bit' if options else '7bit'}\r\n\r\n").encode()
    return head + body, body, options


def send_batch(port: int, indices: list[int]) -> list[int]:
    """Send some of the batch over one session; returns the indices Postfix accepted."""
    accepted = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        for i in indices:
            data, _, options = postfix_batch_message(i)
            client.sendmail(SENDER, [f"candidate{i}@example.net"], data, mail_options=options)
            accepted.append(i)
    return accepted


@pytest.fixture
def tls_auth_gateway(make_config: ConfigMaker, sink: Sink,
                     tmp_path: Path) -> Iterator[GatewayProcess]:
    """The gateway as the Postfix guide expects it: STARTTLS offered, AUTH required."""
    cert, key = self_signed(tmp_path)
    # Both domains the guide's sender map lists belong to the company.
    company = {"id": "acme", "name": "株式会社アクメ",
               "domains": ["acme.example", "recruit.acme.example"],
               "smtp_username": "acme", "smtp_password_hash": hash_password(COMPANY_PASSWORD)}
    config = make_config(upstream_port=sink.port,
                         gateway={"allow_ips": ["192.0.2.0/24"], "require_auth": True,
                                  "tls_cert": str(cert), "tls_key": str(key)},
                         companies=[company])
    with running_gateway(config) as gw:
        yield gw


def guide_postfix(setup: str, gateway: GatewayProcess,
                  relayhost: str) -> contextlib.AbstractContextManager[PostfixInstance]:
    """A private Postfix with set-up ``setup`` of docs/integrations/postfix.md."""
    return private_postfix(free_port(), relayhost, guide_setup=setup,
                           guide_next_hop=f"[127.0.0.1]:{gateway.port}",
                           guide_password=COMPANY_PASSWORD)


def through_gateway_with_tls_and_auth(data: bytes) -> bool:
    """Our Received field (the first) says STARTTLS and AUTH: ESMTPSA (RFC 3848)."""
    ours = data[: len(data) - len(strip_received(data))]
    return b" with ESMTPSA id " in ours


@pytest.mark.skipif(not postfix_available(), reason="needs Postfix and root")
def test_postfix_relays_a_batch_through_the_gateway(
        tls_auth_gateway: GatewayProcess, sink: Sink) -> None:
    count, sessions = 200, 4
    started_gateway = tls_auth_gateway
    # Postfix's own relayhost is a closed port: with the guide's "relayhost" set-up,
    # the guide's relayhost line replaces it, so nothing may ever go there.
    with guide_postfix("all", started_gateway, f"[127.0.0.1]:{free_port()}") as mta:
        assert mta.main_cf_settings()["relayhost"] == f"[127.0.0.1]:{started_gateway.port}"
        with ThreadPoolExecutor(sessions) as pool:
            parts = [list(range(s, count, sessions)) for s in range(sessions)]
            accepted = sorted(i for done in pool.map(lambda p: send_batch(mta.smtpd_port, p),
                                                     parts) for i in done)
        assert accepted == list(range(count))

        got = sink.wait_for(count, timeout=90)
        assert mta.wait_for_sent(count, timeout=30), (
            f"Postfix logged {mta.sent_count()} status=sent, queue files: "
            f"{mta.queued_files()[:5]}")
        assert mta.sent_count() == count
        assert mta.queue_empty()
        wait_until(lambda: queue_is_empty(started_gateway.config), timeout=20,
                   what="an empty gateway queue")

        # Nothing more trickles in: every message exactly once.
        got = sink.messages
        ids = Counter(header_value(m.data, "Message-ID") for m in got)
        assert ids == Counter({f"<pf-{i}@acme.example>": 1 for i in range(count)})
        for m in got:
            i = int(header_value(m.data, "Message-ID")[4:].split("@")[0])
            _, body, options = postfix_batch_message(i)
            assert m.rcpts == [f"candidate{i}@example.net"]
            assert m.mail_from == SENDER
            relayed = strip_received(m.data)
            assert relayed.startswith(b"Received: "), "Postfix's own Received follows ours"
            assert through_gateway_with_tls_and_auth(m.data), m.data[:300]
            assert split_message(relayed)[1] == body, f"body of message {i} changed"
            if options:
                assert "BODY=8BITMIME" in [o.upper() for o in m.mail_options], i


def plain_message(sender: str, rcpt: str, message_id: str) -> bytes:
    return (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: selective\r\n"
            f"Message-ID: <{message_id}>\r\nDate: Mon, 01 Jun 2026 09:00:00 +0900\r\n"
            "\r\nhello\r\n").encode()


@pytest.mark.skipif(not postfix_available(), reason="needs Postfix and root")
def test_postfix_sends_only_the_listed_senders_through_the_gateway(
        tls_auth_gateway: GatewayProcess, sink: Sink) -> None:
    # The mail server's usual next hop, for every sender the guide's map does not list.
    direct = Sink(free_port())
    direct.start()
    try:
        with guide_postfix("selective", tls_auth_gateway, f"[127.0.0.1]:{direct.port}") as mta:
            with smtplib.SMTP("127.0.0.1", mta.smtpd_port, timeout=30) as client:
                client.sendmail(SENDER, ["candidate@example.net"],
                                plain_message(SENDER, "candidate@example.net", "listed@acme"))
                # Listed by its domain (@recruit.acme.example), not by its address.
                client.sendmail("jobs@recruit.acme.example", ["candidate2@example.net"],
                                plain_message("jobs@recruit.acme.example",
                                              "candidate2@example.net", "domain@acme"))
                client.sendmail("sales@acme.example", ["customer@example.net"],
                                plain_message("sales@acme.example", "customer@example.net",
                                              "other@acme"))
            assert mta.wait_for_sent(3, timeout=60), mta.log_text()[-2000:]
    finally:
        direct.stop()

    (other,) = direct.messages
    assert other.mail_from == "sales@acme.example"
    assert other.rcpts == ["customer@example.net"]
    assert b"relay.test" not in other.data, "it did not pass the gateway"

    listed = {m.mail_from: m for m in sink.wait_for(2)}
    assert set(listed) == {SENDER, "jobs@recruit.acme.example"}
    for m in listed.values():
        assert through_gateway_with_tls_and_auth(m.data), m.data[:300]
    assert listed[SENDER].rcpts == ["candidate@example.net"]
    assert header_value(strip_received(listed[SENDER].data), "Message-ID") == "<listed@acme>"
    assert len(sink.messages) == 2 and len(direct.messages) == 1


# -- swaks as the client -----------------------------------------------------------------


def swaks(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SWAKS, "--server", f"127.0.0.1:{port}", "--from", SENDER, "--timeout", "20", *args],
        capture_output=True, text=True, timeout=60)


@cache
def swaks_has_8bitmime() -> bool:
    """``--8bitmime`` only exists in newer swaks releases (not in Debian's 20201014)."""
    usage = subprocess.run([SWAKS, "--help"], capture_output=True, text=True, timeout=30)
    return "--8bitmime" in usage.stdout


needs_swaks = pytest.mark.skipif(not Path(SWAKS).is_file(), reason="swaks is not installed")


@needs_swaks
def test_swaks_plain_send_arrives(started_gateway: GatewayProcess, sink: Sink) -> None:
    result = swaks(started_gateway.port, "--to", "candidate@example.net",
                   "--header", "Message-Id: <swaks-plain@acme.example>")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 OK: queued as" in result.stdout
    (got,) = sink.wait_for(1)
    assert got.mail_from == SENDER
    assert got.rcpts == ["candidate@example.net"]
    assert header_value(strip_received(got.data), "Message-Id") == "<swaks-plain@acme.example>"
    wait_until(lambda: queue_is_empty(started_gateway.config), timeout=20,
               what="an empty gateway queue")


@pytest.fixture
def auth_gateway(make_config: ConfigMaker, sink: Sink) -> Iterator[GatewayProcess]:
    # Loopback is not in allow_ips, so the client must authenticate.
    config = make_config(upstream_port=sink.port,
                         gateway={"allow_ips": ["192.0.2.0/24"], "require_auth": True})
    with running_gateway(config) as gw:
        yield gw


@needs_swaks
def test_swaks_needs_auth_when_not_in_allow_ips(auth_gateway: GatewayProcess,
                                                sink: Sink) -> None:
    result = swaks(auth_gateway.port, "--to", "candidate@example.net")
    assert result.returncode != 0
    assert "530 5.7.0" in result.stdout, result.stdout
    assert queue_is_empty(auth_gateway.config)
    assert sink.messages == []


@needs_swaks
def test_swaks_auth_plain_over_loopback(auth_gateway: GatewayProcess, sink: Sink) -> None:
    result = swaks(auth_gateway.port, "--to", "candidate@example.net",
                   "--header", "Message-Id: <swaks-auth@acme.example>",
                   "--auth", "PLAIN", "--auth-user", "acme",
                   "--auth-password", COMPANY_PASSWORD)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235" in result.stdout
    (got,) = sink.wait_for(1)
    assert got.rcpts == ["candidate@example.net"]
    relayed = strip_received(got.data)
    assert header_value(relayed, "Message-Id") == "<swaks-auth@acme.example>"
    ours = got.data[: len(got.data) - len(relayed)]
    assert b"ESMTPA" in ours, "our Received names the AUTH (RFC 3848)"


@needs_swaks
def test_swaks_auth_with_a_wrong_password_fails(auth_gateway: GatewayProcess,
                                                sink: Sink) -> None:
    result = swaks(auth_gateway.port, "--to", "candidate@example.net",
                   "--auth", "PLAIN", "--auth-user", "acme",
                   "--auth-password", COMPANY_PASSWORD + "!")
    assert result.returncode != 0
    assert "535" in result.stdout, result.stdout
    assert "250 2.0.0" not in result.stdout
    assert queue_is_empty(auth_gateway.config)
    assert sink.messages == []


UTF8_BODY = ("選考結果のお知らせ\n残念ながら今回は見送りとなりました。\n.dotted line\n"
             "Grüße, Ünïcödé ✓")
FIXED_HEADERS = ["--header", "Date: Mon, 01 Jun 2026 09:00:00 +0900",
                 "--header", "Message-Id: <swaks-8bit@acme.example>",
                 "--header", "Subject: =?UTF-8?B?6YG46ICD57WQ5p6c?=",
                 "--header", "MIME-Version: 1.0",
                 "--header", "Content-Type: text/plain; charset=utf-8",
                 "--header", "Content-Transfer-Encoding: 8bit"]


@needs_swaks
def test_swaks_8bit_utf8_body_arrives_byte_identical(started_gateway: GatewayProcess,
                                                     sink: Sink) -> None:
    # The reference: what this swaks puts on the wire, captured by a plain sink.
    reference = Sink(free_port())
    reference.start()
    try:
        extra = ["--8bitmime"] if swaks_has_8bitmime() else []
        args = ["--to", "candidate@example.net", *FIXED_HEADERS, "--body", UTF8_BODY, *extra]
        direct = swaks(reference.port, *args)
        assert direct.returncode == 0, direct.stdout + direct.stderr
        (expected,) = reference.wait_for(1)
    finally:
        reference.stop()
    assert "選考結果".encode() in expected.data  # swaks sent the raw UTF-8 bytes

    result = swaks(started_gateway.port, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    (got,) = sink.wait_for(1)
    relayed = strip_received(got.data)
    assert split_message(relayed)[1] == split_message(expected.data)[1]
    assert relayed == expected.data  # the headers are fixed too: the whole message
    if extra:
        assert "BODY=8BITMIME" in [o.upper() for o in got.mail_options]
