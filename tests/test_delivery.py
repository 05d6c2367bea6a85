"""Delivery to the upstream: retries, per-recipient results and bounces (SPEC 4)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given, settings
from hypothesis import strategies as st

from career_relay.settings import UpstreamSettings
from gateway import upstream as upstream_mod
from gateway.smtp_replies import Reply
from gateway.upstream import Upstream, wire_data
from tests.conftest import (
    ConfigMaker,
    GatewayThread,
    PipeliningHandler,
    Sink,
    crlf,
    free_port,
    run_cli,
    strip_received,
    wait_until,
)

MSG = crlf("From: HR <hr@acme.example>\nTo: a@example.net\nSubject: 選考結果\n"
           "Message-ID: <orig-1@acme.example>\n\nHello\n")


@pytest.fixture(params=[False, True], ids=["one-by-one", "pipelining"])
def sink(request: pytest.FixtureRequest) -> Iterator[Sink]:
    """Every test here runs against an upstream with and one without PIPELINING."""
    s = Sink(free_port())
    if request.param:
        s.handler = PipeliningHandler()
    s.start()
    yield s
    s.stop()


def send(port: int, rcpts: list[str], sender: str = "hr@acme.example", msg: bytes = MSG) -> str:
    with smtplib.SMTP("127.0.0.1", port) as c:
        c.ehlo()
        assert c.mail(sender)[0] == 250
        for r in rcpts:
            assert c.rcpt(r)[0] == 250
        code, text = c.data(msg)
        assert code == 250
        return text.decode().rsplit(" ", 1)[1]


def dsns(sink: Sink) -> list[email.message.EmailMessage]:
    out = []
    for m in sink.messages:
        if m.mail_from in ("", "<>"):
            out.append(email.message_from_bytes(m.data, policy=email.policy.default))
    return out  # type: ignore[return-value]


def test_upstream_down_then_back_delivers_everything_on_schedule(
        make_config: ConfigMaker, tmp_path: object) -> None:
    port = free_port()  # nothing listens here yet: the upstream is down
    config = make_config(upstream_port=port, queue={"retry_schedule": [1, 2]})
    gw = GatewayThread(config).start()
    sink = Sink(port)
    try:
        ids = [send(gw.port, [f"c{i}@example.net"]) for i in range(5)]
        wait_until(lambda: all(gw.gateway.spool.load_state(i).attempts >= 1 for i in ids),
                   what="a first failed attempt for every message")
        listing = run_cli("queue", "list", "--config", str(config))
        assert listing.returncode == 0
        for queue_id in ids:
            assert queue_id in listing.stdout
        assert "upstream unavailable" in listing.stdout
        for st in (gw.gateway.spool.load_state(i) for i in ids):
            # retry_schedule[0] after the first attempt; a loaded machine may have made the
            # second (1 s later) by now, whose wait is the last, repeated.
            wait = 1 if st.attempts == 1 else 2
            assert st.next_attempt - st.last_attempt == pytest.approx(wait), st
        wait_until(lambda: all(gw.gateway.spool.load_state(i).attempts >= 3 for i in ids),
                   what="two more attempts")
        for st in (gw.gateway.spool.load_state(i) for i in ids):
            assert st.next_attempt - st.last_attempt == pytest.approx(2)  # the last repeats
        sink.start()  # the upstream comes back
        got = sink.wait_for(5, timeout=20)
        assert sorted(m.rcpts[0] for m in got) == [f"c{i}@example.net" for i in range(5)]
        assert all(strip_received(m.data) == MSG for m in got)
        wait_until(lambda: gw.queue_ids() == [], what="an empty queue")
        assert run_cli("queue", "list", "--config", str(config)).stdout.startswith(
            "the queue is empty")
    finally:
        gw.stop()
        sink.stop()


def test_permanent_failure_sends_a_dsn_to_the_sender(gateway: GatewayThread, sink: Sink) -> None:
    sink.handler.rcpt_replies["gone@example.net"] = "550 5.1.1 <gone@example.net>: no such user"
    queue_id = send(gateway.port, ["gone@example.net", "ok@example.net"])
    wait_until(lambda: len(sink.messages) >= 2, what="the message and the DSN")
    wait_until(lambda: gateway.queue_ids() == [], what="an empty queue")
    normal = [m for m in sink.messages if m.mail_from not in ("", "<>")]
    assert [m.rcpts for m in normal] == [["ok@example.net"]]  # only the good one got it
    (dsn,) = dsns(sink)
    (bounce,) = [m for m in sink.messages if m.mail_from in ("", "<>")]
    assert bounce.rcpts == ["hr@acme.example"]
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["Auto-Submitted"] == "auto-replied"
    human, status, headers = dsn.iter_parts()
    assert "gone@example.net" in human.get_content()
    report = status.as_string()
    assert "Final-Recipient: rfc822; gone@example.net" in report
    assert "Status: 5.1.1" in report and "Action: failed" in report
    assert f"X-Career-Relay-Queue-ID: {queue_id}" in report
    assert "ok@example.net" not in report
    assert headers.get_content_type() == "text/rfc822-headers"
    assert "Message-ID: <orig-1@acme.example>" in headers.as_string()
    assert "Hello" not in headers.as_string()  # headers only, never the body


def test_data_refused_permanently_bounces_every_recipient(gateway: GatewayThread,
                                                          sink: Sink) -> None:
    sink.handler.data_replies["hr@acme.example"] = "554 5.7.1 content rejected"
    send(gateway.port, ["a@example.net", "b@example.net"])
    wait_until(lambda: gateway.queue_ids() == [], what="an empty queue")
    wait_until(lambda: len(dsns(sink)) == 1, what="one DSN")
    report = dsns(sink)[0].as_string()
    assert "Final-Recipient: rfc822; a@example.net" in report
    assert "Final-Recipient: rfc822; b@example.net" in report
    assert "Status: 5.7.1" in report


def test_no_dsn_for_a_null_sender(gateway: GatewayThread, sink: Sink) -> None:
    sink.handler.rcpt_replies["gone@example.net"] = "550 5.1.1 no such user"
    send(gateway.port, ["gone@example.net"], sender="<>")
    wait_until(lambda: gateway.queue_ids() == [], what="an empty queue")
    time.sleep(0.3)
    assert sink.messages == []


def test_temporary_recipient_failure_is_retried_without_resending_to_others(
        gateway: GatewayThread, sink: Sink) -> None:
    sink.handler.rcpt_replies["busy@example.net"] = "452 4.2.2 mailbox full, try later"
    queue_id = send(gateway.port, ["busy@example.net", "ok@example.net"])
    sink.wait_for(1)
    # At least one: the retry comes 1 s later, and a loaded machine may look after it.
    wait_until(lambda: gateway.gateway.spool.load_state(queue_id).attempts >= 1,
               what="a recorded deferral")
    state = gateway.gateway.spool.load_state(queue_id)
    assert state.delivered == ["ok@example.net"]
    assert "4.2.2" in state.last_error
    del sink.handler.rcpt_replies["busy@example.net"]
    got = sink.wait_for(2)
    assert [m.rcpts for m in got] == [["ok@example.net"], ["busy@example.net"]]
    wait_until(lambda: gateway.queue_ids() == [], what="an empty queue")
    time.sleep(0.3)
    assert len(sink.messages) == 2 and dsns(sink) == []


def test_message_older_than_max_age_bounces(make_config: ConfigMaker, sink: Sink) -> None:
    config = make_config(upstream_port=sink.port, queue={"retry_schedule": [1], "max_age": 2})
    gw = GatewayThread(config).start()
    try:
        sink.handler.rcpt_replies["slow@example.net"] = "451 4.3.0 try again"
        send(gw.port, ["slow@example.net"])
        wait_until(lambda: gw.queue_ids() == [], timeout=15, what="expiry")
        del sink.handler.rcpt_replies["slow@example.net"]
        wait_until(lambda: len(dsns(sink)) == 1, what="one DSN")
        report = dsns(sink)[0].as_string()
        assert "Status: 4.4.7" in report and "expired" in report
    finally:
        gw.stop()


def test_queue_retry_and_purge(make_config: ConfigMaker) -> None:
    port = free_port()
    config = make_config(upstream_port=port, queue={"retry_schedule": [3600]})
    gw = GatewayThread(config).start()
    sink = Sink(port)
    try:
        keep = send(gw.port, ["keep@example.net"])
        drop = send(gw.port, ["drop@example.net"])
        wait_until(lambda: all(gw.gateway.spool.load_state(i).attempts == 1
                               for i in (keep, drop)), what="two deferrals")
        purged = run_cli("queue", "purge", drop, "--config", str(config))
        assert purged.returncode == 0 and drop in purged.stdout
        assert run_cli("queue", "purge", drop, "--config", str(config)).returncode == 1
        sink.start()
        retried = run_cli("queue", "retry", "--config", str(config))
        assert retried.returncode == 0 and retried.stdout.startswith("1 deferred")
        (got,) = sink.wait_for(1, timeout=10)  # not an hour: the retry was honoured
        assert got.rcpts == ["keep@example.net"]
        wait_until(lambda: gw.queue_ids() == [], what="an empty queue")
        time.sleep(0.3)
        assert len(sink.messages) == 1  # the purged one never went out
    finally:
        gw.stop()
        sink.stop()


def test_many_messages_in_flight_share_few_connections(make_config: ConfigMaker,
                                                       sink: Sink) -> None:
    config = make_config(upstream_port=sink.port, upstream={"connections": 3})
    gw = GatewayThread(config).start()
    try:
        for i in range(40):
            send(gw.port, [f"c{i}@example.net"])
        sink.wait_for(40)
    finally:
        gw.stop()
    # Each upstream connection has its own client port: at most 3 were used.
    assert len({m.peer for m in sink.messages}) <= 3


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60) | st.lists(st.sampled_from(
    [b"\r\n", b"\n", b"\r", b".", b"..", b"a", b" ", b"\r\n.\r\n"]), max_size=12).map(b"".join))
def test_wire_data_is_what_aiosmtplib_would_send(data: bytes) -> None:
    # The upstream's DATA skips aiosmtplib's regular expressions; the bytes must not change.
    expected = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data)) + b".\r\n"
    assert wire_data(data) == expected


# -- PIPELINING (RFC 2920): MAIL, RCPT and DATA go out in one write --------------------


def upstream_to(port: int, timeout: int = 10) -> Upstream:
    return Upstream(UpstreamSettings(host="127.0.0.1", port=port, timeout=timeout), "relay.test")


def test_pipelined_transactions_stay_in_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # Mixed outcomes on one kept-open connection: every reply is paired with its
    # command, the dots survive, and the session is reset after a refused DATA.
    used: list[int] = []
    real = upstream_mod._pipelined

    async def spy(*args: Any) -> dict[str, Reply]:
        used.append(1)
        return await real(*args)

    monkeypatch.setattr(upstream_mod, "_pipelined", spy)
    s = Sink(free_port())
    s.handler = PipeliningHandler()
    s.handler.rcpt_replies.update({"gone@example.net": "550 5.1.1 no such user",
                                   "full@example.net": "452 4.2.2 mailbox full"})
    s.start()
    dotted = crlf("Subject: dots\n\n.\n..\n.leading\nend\n")

    async def run() -> list[dict[str, Reply]]:
        up = upstream_to(s.port)
        try:
            return [
                await up.send("hr@acme.example", ["a@example.net", "gone@example.net"], dotted,
                              []),
                await up.send("hr@acme.example", ["gone@example.net", "full@example.net"], MSG,
                              []),
                await up.send("hr@acme.example", ["b@example.net"], MSG, []),
            ]
        finally:
            await up.quit()

    try:
        first, refused, last = asyncio.run(run())
        got = s.wait_for(2)
    finally:
        s.stop()
    assert len(used) == 3
    assert first["a@example.net"].ok and first["gone@example.net"].code == 550
    assert refused["gone@example.net"].code == 550 and refused["full@example.net"].code == 452
    assert last["b@example.net"].ok
    assert [m.rcpts for m in got] == [["a@example.net"], ["b@example.net"]]
    assert got[0].data == dotted


async def _fake_upstream(replies: list[bytes], port: int, ready: asyncio.Event) -> None:
    """An upstream that announces PIPELINING and then answers the group with ``replies``
    (an empty item: close the connection instead)."""
    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 fake ESMTP\r\n")
        await reader.readline()  # EHLO
        writer.write(b"250-fake\r\n250 PIPELINING\r\n")
        await reader.readuntil(b"DATA\r\n")
        for reply in replies:
            if not reply:
                break
            writer.write(reply)
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", port)
    ready.set()
    async with server:
        await asyncio.sleep(5)


@pytest.mark.parametrize(("replies", "code"), [
    ([b"250 ok\r\n", b""], 451),  # the connection ends in the middle of the group
    ([b"250 ok\r\n", b"25O ok\r\n"], -1),  # a malformed reply: retried later, never a bounce
])
def test_a_broken_pipelined_session_defers(replies: list[bytes], code: int) -> None:
    port = free_port()

    async def run() -> dict[str, Reply]:
        ready = asyncio.Event()
        server = asyncio.create_task(_fake_upstream(replies, port, ready))
        await ready.wait()
        up = upstream_to(port, timeout=5)
        try:
            return await up.send("hr@acme.example", ["a@example.net"], MSG, [])
        finally:
            up.close()
            server.cancel()

    reply = asyncio.run(run())["a@example.net"]
    assert reply.code == code and not reply.ok and not reply.permanent


def test_a_deferral_logged_at_info_names_no_address(
        gateway: GatewayThread, sink: Sink, caplog: pytest.LogCaptureFixture) -> None:
    # Smarthosts quote the recipient in their replies; the log keeps the reply, not them.
    sink.handler.rcpt_replies["taro@example.net"] = (
        "450 4.2.1 <taro@example.net>: mailbox busy, try later")
    with caplog.at_level(logging.INFO, logger="career_relay"):
        queue_id = send(gateway.port, ["taro@example.net"])
        # The line itself: it is logged after the state file is saved, so a saved state
        # did not mean the line was there yet.
        wait_until(lambda: any(f"queue_id={queue_id} deferred" in r.getMessage()
                               for r in caplog.records), what="the deferral logged")
    deferred = [r.getMessage() for r in caplog.records if "deferred" in r.getMessage()]
    assert deferred and "4.2.1 <address>: mailbox busy" in deferred[0]
    assert not any("taro@" in r.getMessage() for r in caplog.records
                   if r.levelno >= logging.INFO)


def test_an_internal_error_on_every_attempt_still_expires_at_max_age(
        make_config: ConfigMaker, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    """The internal-error retry path applies queue.max_age like the others: a message
    whose attempts always fail inside the gateway is bounced (4.4.7), not kept for ever."""
    config = make_config(upstream_port=sink.port, queue={"retry_schedule": [1], "max_age": 2})
    gw = GatewayThread(config).start()
    try:
        delivery = gw.gateway.delivery
        real = delivery._attempt
        broken: set[str] = set()

        async def attempt(upstream: Any, entry: Any) -> None:
            if entry.env.mail_from:  # the message itself; its DSN (null sender) goes out
                broken.add(entry.env.id)
                raise RuntimeError("a bug in the delivery path")
            await real(upstream, entry)

        monkeypatch.setattr(delivery, "_attempt", attempt)
        queue_id = send(gw.port, ["stuck@example.net"])
        wait_until(lambda: len(dsns(sink)) == 1, timeout=20, what="a DSN after max_age")
        report = dsns(sink)[0].as_string()
        assert "Status: 4.4.7" in report and "internal error" in report
        wait_until(lambda: gw.queue_ids() == [], what="an empty queue")
        assert queue_id in broken
        assert [m for m in sink.messages if m.rcpts == ["stuck@example.net"]] == []
    finally:
        gw.stop()


def test_queue_retry_asks_every_worker_the_gateway_runs(make_config: ConfigMaker,
                                                         tmp_path: Path) -> None:
    """`queue retry` writes a request for each of `gateway.workers` (it assumed one: a
    deferred message of worker 1 waited its whole schedule; test_metrics saw it under
    load), and for one id the request of the worker that owns it."""
    from gateway.envelope import new_id
    from gateway.retry_requests import take

    config = make_config(gateway={"workers": 3}, queue={"dir": str(tmp_path / "spool")})
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    assert run_cli("queue", "retry", "--config", str(config)).returncode == 0
    assert [take(spool_dir, w) for w in range(3)] == [{"*"}, {"*"}, {"*"}]
    queue_id = new_id(2, 3)  # one of worker 2's
    (spool_dir / "queue").mkdir()
    (spool_dir / "queue" / queue_id).write_bytes(b"")
    assert run_cli("queue", "retry", queue_id, "--config", str(config)).returncode == 0
    assert [take(spool_dir, w) for w in range(3)] == [set(), set(), {queue_id}]
