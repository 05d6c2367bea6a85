"""Crashes and outages in the middle of a stream of mail (SPEC 4).

"A crash or ``kill -9`` at any moment loses no message that got a 250; a
restart delivers what was in the spool." These tests run the real
``career-relay gateway`` command, SIGKILL it (and its extra worker process)
while senders are in the middle of their sessions, start it again on the
same spool, and then account for every message at the upstream.  They also
take the upstream away during a stream and bring it back.

Everything is observed from outside: SMTP replies, ``career-relay queue``
and what the upstream received.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    ConfigMaker,
    GatewayProcess,
    Sink,
    SinkHandler,
    free_port,
    queue_is_empty,
    queue_listing,
    run_cli,
    strip_received,
    wait_until,
)

pytestmark = pytest.mark.slow

SENDER = "hr@acme.example"
UPSTREAM_CONNECTIONS = 5  # per worker; bounds how many deliveries are in flight at a kill


# -- observing the gateway from outside ------------------------------------------------------




def queued_count(listing: str) -> int:
    """The "N message(s)" total of ``queue list`` (0 for an empty queue)."""
    if listing.startswith("the queue is empty"):
        return 0
    last = listing.strip().splitlines()[-1]
    assert last.endswith("message(s)"), listing[-300:]
    return int(last.split()[0])


def gateway_pids(config: Path) -> list[int]:
    """Live processes (parent and workers) running ``career_relay`` with this config."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state in ("Z", "X"):
            continue
        if b"career_relay" in args and str(config).encode() in args:
            pids.append(int(entry.name))
    return sorted(pids)


def listeners(port: int) -> int:
    """Sockets in LISTEN state on 127.0.0.1:port (one per worker with SO_REUSEPORT)."""
    wanted = f"0100007F:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":
            count += 1
    return count


def start_gateway(config: Path, workers: int) -> GatewayProcess:
    gw = GatewayProcess(config).start()
    wait_until(lambda: len(gateway_pids(config)) == workers and listeners(gw.port) == workers,
               timeout=20, what=f"{workers} gateway process(es) listening")
    return gw


def kill_all(gw: GatewayProcess) -> list[int]:
    """SIGKILL the gateway and every worker it runs, at once; returns their pids.

    The parent goes first, so it cannot restart a worker it sees dying; a
    worker would stop by itself once its parent is gone, but not at once.
    """
    assert gw.proc is not None
    parent = gw.proc.pid
    killed: list[int] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = sorted(gateway_pids(gw.config), key=lambda pid: pid != parent)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed += [pid for pid in pids if pid not in killed]
        time.sleep(0.02)
    gw.kill()  # reaps our direct child
    assert not gateway_pids(gw.config), "gateway processes survived SIGKILL"
    return killed


def stop_gateway(gw: GatewayProcess | None, config: Path) -> list[int]:
    """Normal shutdown; anything still running afterwards is killed and returned."""
    if gw is not None and gw.proc is not None and gw.proc.poll() is None:
        try:
            gw.terminate()
        except Exception:
            gw.kill()
    leftovers = gateway_pids(config)
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return leftovers


def gateway_log(config: Path) -> str:
    try:
        return (config.parent / "gateway.log").read_text(errors="replace")
    except FileNotFoundError:
        return ""


# -- the mail stream ----------------------------------------------------------------------------


def message(i: int) -> bytes:
    filler = "".join(f"line {n} of message {i}\r\n" for n in range(i % 40))
    return (f"From: HR <{SENDER}>\r\nTo: c{i}@example.net\r\nSubject: stream {i}\r\n"
            f"Message-ID: <crash-{i}@acme.example>\r\n\r\nMessage {i}.\r\n{filler}"
            ".leading dot\r\nend\r\n").encode()


def message_number(data: bytes) -> int:
    """The i of <crash-i@acme.example> in a relayed message."""
    start = data.index(b"Message-ID: <crash-") + len(b"Message-ID: <crash-")
    return int(data[start:data.index(b"@", start)])


@dataclass
class Stream:
    """Senders that keep going through a crash: a failed message is tried again."""

    port: int
    count: int
    sessions: int = 4
    deadline: float = 0.0
    attempted: set[int] = field(default_factory=set)
    accepted: set[int] = field(default_factory=set)
    failed_tries: Counter[int] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        for s in range(self.sessions):
            t = threading.Thread(target=self._run, args=(range(s, self.count, self.sessions),),
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def join(self) -> None:
        for t in self._threads:
            t.join(max(0.0, self.deadline - time.monotonic()) + 5)
        assert not any(t.is_alive() for t in self._threads), "senders did not finish"

    @property
    def accepted_count(self) -> int:
        with self.lock:
            return len(self.accepted)

    def _run(self, numbers: range) -> None:
        client: smtplib.SMTP | None = None
        for i in numbers:
            while time.monotonic() < self.deadline:
                try:
                    if client is None:
                        client = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
                        client.ehlo("stream.test")
                    with self.lock:
                        self.attempted.add(i)
                    client.sendmail(SENDER, [f"c{i}@example.net"], message(i))
                except OSError as exc:  # smtplib's exceptions are OSErrors too
                    # Refused, reset or cut off by the kill: no 250, so try again.
                    # A reply from the gateway other than 250 is not expected at all.
                    with self.lock:
                        self.failed_tries[i] += 1
                        if isinstance(exc, smtplib.SMTPResponseException
                                      | smtplib.SMTPRecipientsRefused):
                            self.unexpected.append(f"message {i}: {exc!r}")
                    if client is not None:
                        with contextlib.suppress(Exception):
                            client.close()
                    client = None
                    time.sleep(0.05)
                    continue
                with self.lock:
                    self.accepted.add(i)
                break
        if client is not None:
            with contextlib.suppress(Exception):
                client.quit()


class SlowSinkHandler(SinkHandler):
    """Takes a little time per message, so mail is still queued when the gateway dies."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0.03)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def slow_sink() -> Iterator[Sink]:
    s = Sink(free_port())
    s.handler = SlowSinkHandler()
    s.start()
    yield s
    s.stop()


# -- kill -9 in the middle of a stream ---------------------------------------------------------


def stream_config(make_config: ConfigMaker, sink: Sink, workers: int) -> Path:
    return make_config(upstream_port=sink.port, gateway={"workers": workers},
                       upstream={"connections": UPSTREAM_CONNECTIONS})


def account_for(stream: Stream, sink: Sink, config: Path, *, redelivery_bound: int,
                note: str) -> None:
    """After the stream: every message accepted, arrived, unchanged; few duplicates."""
    stream.join()
    assert stream.unexpected == [], stream.unexpected[:5]
    assert stream.accepted == set(range(stream.count)), "every message got its 250 in the end"
    wait_until(lambda: queue_is_empty(config), timeout=40, what="an empty gateway queue")
    time.sleep(0.3)  # anything still on its way to the sink
    got = sink.messages
    numbers = Counter(message_number(m.data) for m in got)
    duplicates = {i: n - 1 for i, n in numbers.items() if n > 1}
    interrupted = {i for i in stream.failed_tries if i in stream.accepted}
    print(f"\n{note}; {len(interrupted)} message(s) had to be sent again by the client; "
          f"{sum(duplicates.values())} duplicate(s) at the upstream: {sorted(duplicates)}")

    missing = sorted(set(range(stream.count)) - set(numbers))
    assert not missing, f"{len(missing)} accepted message(s) never arrived: {missing[:20]}"
    never_sent = sorted(set(numbers) - stream.attempted)
    assert not never_sent, f"arrived but never sent: {never_sent}"
    # Copies beyond one come only from what was in flight at the kill: a client
    # session between its final dot and the 250 (the client sends it again, at
    # most one per session), or a delivery between the upstream's 250 and the
    # gateway's record of it (at most one per upstream connection).
    resent = {i: n for i, n in duplicates.items() if i in interrupted}
    redelivered = {i: n for i, n in duplicates.items() if i not in interrupted}
    assert sum(resent.values()) <= stream.sessions, resent
    assert sum(redelivered.values()) <= redelivery_bound, redelivered
    assert sum(duplicates.values()) <= 20, duplicates
    for m in got:
        i = message_number(m.data)
        assert strip_received(m.data) == message(i), f"message {i} changed"
        assert m.rcpts == [f"c{i}@example.net"]
    log = gateway_log(config)
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_mid_stream_loses_nothing_that_got_a_250(
        make_config: ConfigMaker, slow_sink: Sink, workers: int) -> None:
    count, kill_after = 500, 150
    config = stream_config(make_config, slow_sink, workers)
    gw: GatewayProcess | None = None
    try:
        gw = start_gateway(config, workers)
        stream = Stream(gw.port, count)
        # One deadline for the whole stream, the kill and the restart included: generous
        # (about 10 s unloaded; only a failure ever waits for it).
        stream.start(timeout=120)
        wait_until(lambda: stream.accepted_count >= kill_after, timeout=30,
                   what=f"{kill_after} messages accepted")
        killed = kill_all(gw)
        accepted_before = stream.accepted_count
        assert len(killed) == workers, killed
        spooled = queued_count(queue_listing(config))
        time.sleep(0.5)  # the senders hit a closed port for a while
        gw = start_gateway(config, workers)  # same config, same spool
        account_for(stream, slow_sink, config, redelivery_bound=UPSTREAM_CONNECTIONS * workers,
                    note=f"workers={workers}: killed {killed} after {accepted_before} accepted "
                         f"with {spooled} message(s) queued")
    finally:
        leftovers = stop_gateway(gw, config)
    assert not leftovers, f"gateway processes still running after SIGTERM: {leftovers}"


def test_kill_9_of_one_worker_it_is_restarted_and_loses_nothing(
        make_config: ConfigMaker, slow_sink: Sink) -> None:
    count, kill_after = 500, 150
    config = stream_config(make_config, slow_sink, 2)
    gw: GatewayProcess | None = None
    try:
        gw = start_gateway(config, 2)
        assert gw.proc is not None
        parent = gw.proc.pid
        (worker,) = [pid for pid in gateway_pids(config) if pid != parent]
        stream = Stream(gw.port, count)
        # One deadline for the whole stream, the kill and the restart included: generous
        # (about 10 s unloaded; only a failure ever waits for it).
        stream.start(timeout=120)
        wait_until(lambda: stream.accepted_count >= kill_after, timeout=30,
                   what=f"{kill_after} messages accepted")
        os.kill(worker, signal.SIGKILL)
        accepted_before = stream.accepted_count
        # The parent goes on taking mail and starts the worker again, which
        # delivers what the dead one had accepted.
        port = gw.port
        wait_until(lambda: worker not in gateway_pids(config) and len(gateway_pids(config)) == 2
                   and listeners(port) == 2, timeout=20, what="worker 1 restarted")
        assert parent in gateway_pids(config)
        account_for(stream, slow_sink, config, redelivery_bound=UPSTREAM_CONNECTIONS,
                    note=f"killed worker {worker} after {accepted_before} accepted")
    finally:
        leftovers = stop_gateway(gw, config)
    assert not leftovers, f"gateway processes still running after SIGTERM: {leftovers}"


@pytest.mark.parametrize("moment", ["worker starting", "worker listening"])
def test_workers_stop_when_the_gateway_is_killed(
        make_config: ConfigMaker, sink: Sink, moment: str) -> None:
    # kill -9 of the supervising process alone: its worker must not go on
    # taking mail unsupervised (and holding the port and its part of the spool).
    config = stream_config(make_config, sink, 2)
    gw = GatewayProcess(config).start()  # returns once the parent listens
    try:
        assert gw.proc is not None
        if moment == "worker listening":
            port = gw.port
            wait_until(lambda: len(gateway_pids(config)) == 2 and listeners(port) == 2,
                       timeout=20, what="worker 1 listening")
        gw.kill()
        # A worker looks for its parent once a second, once it has started (a Python start
        # and the spool's recovery, slow on a loaded machine), then stops in order.
        wait_until(lambda: not gateway_pids(config), timeout=30,
                   what="the orphaned worker to stop by itself")
    finally:
        leftovers = stop_gateway(gw, config)
    assert not leftovers


# -- the upstream goes away during a stream and comes back -------------------------------------


def send_one(port: int, i: int) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as client:
        client.ehlo("stream.test")
        client.mail(SENDER)
        assert client.rcpt(f"c{i}@example.net")[0] == 250
        code, text = client.data(message(i))
        assert code == 250, (code, text)
        return text.decode()


def test_upstream_down_mid_stream_then_back(make_config: ConfigMaker) -> None:
    before, during = 20, 30
    port = free_port()
    sink = Sink(port)
    # A long schedule: only `queue retry` can explain a prompt delivery afterwards.
    config = make_config(upstream_port=port, queue={"retry_schedule": [120]},
                         upstream={"timeout": 5}, gateway={"workers": 1})
    sink.start()
    gw: GatewayProcess | None = None
    try:
        gw = start_gateway(config, 1)
        for i in range(before):
            send_one(gw.port, i)
        sink.wait_for(before, timeout=20)
        wait_until(lambda: queue_is_empty(config), timeout=20, what="an empty gateway queue")

        sink.stop()  # the upstream goes away; the gateway still holds idle connections to it
        for i in range(before, before + during):
            send_one(gw.port, i)  # intake does not depend on the upstream

        def all_tried_once() -> bool:
            listing = queue_listing(config)
            return (queued_count(listing) == during
                    and listing.count("last error:") == during)

        wait_until(all_tried_once, timeout=30, what=f"{during} deferred messages")
        listing = queue_listing(config)
        assert f"{during} message(s)" in listing
        assert len(sink.messages) == before

        sink.start()  # back on the same port
        retried = run_cli("queue", "retry", "--config", str(config))
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout.startswith(f"{during} deferred message(s)"), retried.stdout
        got = sink.wait_for(before + during, timeout=20)
        wait_until(lambda: queue_is_empty(config), timeout=20, what="an empty gateway queue")
        time.sleep(0.3)
        got = sink.messages
        numbers = Counter(message_number(m.data) for m in got)
        assert numbers == Counter(range(before + during)), "each message exactly once"
        for m in got:
            assert strip_received(m.data) == message(message_number(m.data))
    finally:
        leftovers = stop_gateway(gw, config)
        sink.stop()
    assert not leftovers, f"gateway processes still running after SIGTERM: {leftovers}"
