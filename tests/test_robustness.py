"""The hard cases: shutdown mid-transaction, damaged files, a disk refusing writes,
clients that vanish, slow clients, and a change in the number of workers."""

from __future__ import annotations

import asyncio
import os
import smtplib
import socket
import threading
import time
from pathlib import Path

import pytest

import gateway.journal
from career_relay import settings as settings_mod
from gateway.envelope import Envelope, new_id
from gateway.spool import Spool
from tests.conftest import (
    ConfigMaker,
    GatewayThread,
    Sink,
    crlf,
    queue_listing,
    run_cli,
    strip_received,
    wait_until,
)
from tests.test_intake import Raw

MSG = crlf("From: hr@acme.example\nTo: a@example.net\nSubject: s\n\nbody\n")


def test_shutdown_lets_a_transaction_finish_and_refuses_new_ones(
        make_config: ConfigMaker, sink: Sink) -> None:
    config = make_config(upstream_port=sink.port)
    gw = GatewayThread(config).start()
    busy, idle = Raw(gw.port), Raw(gw.port)
    busy.cmd("EHLO client.test")
    busy.cmd("MAIL FROM:<hr@acme.example>")
    busy.cmd("RCPT TO:<late@example.net>")
    assert busy.cmd("DATA").startswith("354")
    busy.send(MSG[:20])
    idle.cmd("EHLO idle.test")
    stopper = threading.Thread(target=gw.stop)
    stopper.start()
    # The stop runs in another thread: a fixed sleep was not always long enough for it
    # to begin on a loaded machine.  Wait until it has (it then waits for the transaction).
    wait_until(lambda: gw.gateway.sessions.closing, what="the gateway stopping")
    assert idle.cmd("MAIL FROM:<hr@acme.example>").startswith("421 4.3.2")
    busy.send(MSG[20:] + b".\r\n")
    reply = busy.reply()
    stopper.join(20)
    assert reply.startswith("250"), reply  # it finished, and it is ours now
    busy.close()
    idle.close()
    restarted = GatewayThread(config).start()  # whatever was not sent goes out now
    try:
        got = sink.wait_for(1)
        assert got[0].rcpts == ["late@example.net"]
        assert strip_received(got[0].data) == MSG
    finally:
        restarted.stop()


def test_a_stopped_journal_refuses_instead_of_losing(gateway: GatewayThread) -> None:
    gateway.gateway.spool.journal.close()
    env = Envelope(new_id(), "hr@acme.example", ["a@example.net"], time.time())
    future = asyncio.run_coroutine_threadsafe(
        gateway.gateway.spool.store(env, MSG), gateway.loop)
    with pytest.raises(Exception, match="shutting down"):
        future.result(5)


@pytest.mark.parametrize("command", ["MAIL FROM:<josé@acme.example>",
                                     "RCPT TO:<候補者@example.net>"])
def test_non_ascii_address_without_smtputf8_is_refused(gateway: GatewayThread,
                                                       command: str) -> None:
    r = Raw(gateway.port)
    r.cmd("EHLO client.test")
    if command.startswith("RCPT"):
        assert r.cmd("MAIL FROM:<hr@acme.example>").startswith("250")
    assert r.cmd(command).startswith("553 5.6.7")
    r.close()


def test_a_damaged_queue_file_stops_nothing(make_config: ConfigMaker, sink: Sink) -> None:
    config = make_config(upstream_port=sink.port, queue={"retry_schedule": [1]})
    spool = Spool(settings_mod.load(config).queue.dir)
    spool.create_dirs()
    (spool.queue / "0000000000000DAMAGED0").write_bytes(b'CRQ1 {"id":"x"}\nbody')
    (spool.queue / "0000000000001GARBAGE0").write_bytes(b"not a queue file at all")
    gw = GatewayThread(config).start()
    try:
        sink.handler.rcpt_replies["later@example.net"] = "451 4.2.0 not yet"
        with smtplib.SMTP("127.0.0.1", gw.port) as c:
            c.sendmail("hr@acme.example", ["later@example.net"], MSG)
        wait_until(lambda: any(gw.gateway.spool.load_state(i).attempts >= 3
                               for i in gw.gateway.spool.ids()),
                   what="retries going on beside the damaged files")
        listing = queue_listing(config)  # and the operator's view does not crash
        assert "the queue is empty" not in listing
    finally:
        gw.stop()


def test_a_disk_refusing_state_updates_causes_no_duplicates(
        gateway: GatewayThread, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = gateway.gateway.spool
    real_save = spool.save_state
    refusing = threading.Event()
    refusing.set()

    def save_state(queue_id: str, state: object) -> None:
        if refusing.is_set():
            raise OSError(28, "No space left on device")
        real_save(queue_id, state)  # type: ignore[arg-type]

    monkeypatch.setattr(spool, "save_state", save_state)
    sink.handler.rcpt_replies["later@example.net"] = "451 4.2.0 not yet"
    with smtplib.SMTP("127.0.0.1", gateway.port) as c:
        c.sendmail("hr@acme.example", ["ok@example.net", "later@example.net"], MSG)
    sink.wait_for(1)
    time.sleep(3.5)  # several retries (retry_schedule is [1, 1]) while the disk refuses
    refusing.clear()
    del sink.handler.rcpt_replies["later@example.net"]
    wait_until(lambda: gateway.queue_ids() == [], what="an empty queue")
    received = [r for m in sink.messages for r in m.rcpts]
    assert sorted(received) == ["later@example.net", "ok@example.net"]  # each exactly once


def test_client_vanishing_before_its_250_leaves_nothing_to_deliver(
        gateway: GatewayThread, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(0.5)
        real_fsync(fd)

    monkeypatch.setattr(gateway_journal_os(), "fsync", slow_fsync)
    r = Raw(gateway.port)
    r.cmd("EHLO client.test")
    r.cmd("MAIL FROM:<hr@acme.example>")
    r.cmd("RCPT TO:<gone@example.net>")
    r.cmd("DATA")
    r.send(MSG + b".\r\n")
    journal = gateway.gateway.spool.journal_dir
    wait_until(lambda: any(b"gone@example.net" in p.read_bytes()
                           for p in journal.glob("*.jnl")),
               what="the message being written to the journal")
    r.sock.shutdown(socket.SHUT_RDWR)
    r.close()  # before the reply, while its fsync runs: the client still owns the message
    time.sleep(1.5)
    assert sink.messages == []
    assert gateway.queue_ids() == []


def gateway_journal_os() -> object:
    return gateway.journal.os


def test_slow_client_is_not_cut_off_while_sending(make_config: ConfigMaker,
                                                  sink: Sink) -> None:
    gw = GatewayThread(make_config(upstream_port=sink.port, gateway={"timeout": 1})).start()
    try:
        r = Raw(gw.port)
        r.cmd("EHLO client.test")
        r.cmd("MAIL FROM:<hr@acme.example>")
        r.cmd("RCPT TO:<a@example.net>")
        r.cmd("DATA")
        for line in MSG.split(b"\r\n")[:-1]:
            r.send(line + b"\r\n")
            time.sleep(0.4)  # 2.4 s in all: longer than the idle timeout, never idle
        r.send(b".\r\n")
        assert r.reply().startswith("250")
        r.close()
        sink.wait_for(1)
    finally:
        gw.stop()


def test_bare_lf_is_named_even_in_a_long_line(gateway: GatewayThread) -> None:
    r = Raw(gateway.port)
    r.cmd("EHLO client.test")
    r.cmd("MAIL FROM:<hr@acme.example>")
    r.cmd("RCPT TO:<a@example.net>")
    r.cmd("DATA")
    r.send(b"Subject: x\r\n\r\n" + b"a\n" * 600 + b"\r\n.\r\n")
    assert r.reply().startswith("554 5.6.0")
    r.close()


def test_auth_is_refused_when_not_offered(make_config: ConfigMaker, sink: Sink) -> None:
    gw = GatewayThread(make_config(upstream_port=sink.port, gateway={
        "require_auth": False, "allow_ips": ["192.0.2.0/24"]})).start()
    try:
        r = Raw(gw.port)
        r.cmd("EHLO client.test")
        assert r.cmd("AUTH PLAIN AGFjbWUAeA==").startswith("502")
        assert r.cmd("MAIL FROM:<hr@acme.example>").startswith("550 5.7.1")
        r.close()
    finally:
        gw.stop()


def test_port_in_use_is_a_one_line_error(make_config: ConfigMaker, sink: Sink) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = make_config(upstream_port=sink.port, gateway={
            "listen": f"127.0.0.1:{port}", "workers": 1})
        result = run_cli("gateway", "--config", str(config))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"gateway.listen: cannot listen on 127.0.0.1:{port}" in result.stderr


def test_journal_of_a_worker_that_no_longer_exists_is_delivered(
        make_config: ConfigMaker, sink: Sink, tmp_path: Path) -> None:
    config = make_config(upstream_port=sink.port)
    root = settings_mod.load(config).queue.dir
    # What worker 1 of 2 accepted before a crash; the gateway now runs one worker.
    old = Spool(root, worker=1, workers=2)
    old.create_dirs()

    async def accept_without_delivering() -> list[str]:
        ids = []
        for i in range(6):
            env = Envelope(new_id(1, 2), "hr@acme.example", [f"w{i}@example.net"], time.time())
            await old.store(env, MSG)
            ids.append(env.id)
        return ids

    asyncio.run(accept_without_delivering())
    assert list(gateway.journal.segments(old.journal_dir))
    gw = GatewayThread(config).start()
    try:
        got = sink.wait_for(6)
        assert sorted(r for m in got for r in m.rcpts) == [f"w{i}@example.net" for i in range(6)]
        wait_until(lambda: gw.queue_ids() == [], what="an empty queue")
    finally:
        gw.stop()


def test_open_relay_networks_are_refused_however_written(make_config: ConfigMaker,
                                                         sink: Sink) -> None:
    for net in ("0.0.0.0/0.0.0.0", "::/0", "0.0.0.0/0"):
        config = make_config(upstream_port=sink.port, gateway={"allow_ips": [net]})
        result = run_cli("check-config", "--config", str(config))
        assert result.returncode == 1 and "open relay" in result.stderr, net


def test_a_retry_request_written_while_its_worker_takes_the_file_is_not_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`queue retry` opened the request file, the worker renamed, read and unlinked it, and
    only then was the request written: into a file nobody would read (a retry that did
    nothing, seen under load).  The writer now finds its file renamed and writes anew."""
    import gateway.spool as spool_mod

    spool = Spool(tmp_path / "spool")
    spool.create_dirs()
    spool.request_retry(["EARLIER"])
    real_flock = spool_mod.fcntl.flock
    interleaved: list[set[str]] = []
    taking = False

    def flock(fd: int, op: int) -> None:
        nonlocal taking
        if not taking:  # the writer has its file open: the worker takes it now
            taking = True
            interleaved.append(spool.take_retry_requests(0))
        real_flock(fd, op)

    monkeypatch.setattr(spool_mod.fcntl, "flock", flock)
    spool.request_retry(["LATE"])
    monkeypatch.setattr(spool_mod.fcntl, "flock", real_flock)
    assert interleaved == [{"EARLIER"}]
    assert spool.take_retry_requests(0) == {"LATE"}
    assert spool.take_retry_requests(0) == set()
