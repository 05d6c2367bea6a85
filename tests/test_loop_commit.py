"""The gateway's commits in its event loop (``LedgerWriter.record_rejection(wait=False)``).

A small rejection's offers are committed in the loop when nothing would wait; when
something would (this process's writer busy, another process holding SQLite's lock,
PostgreSQL), ``WouldWait`` says so, nothing is written, and the gateway commits from a
thread as before.  The loop never waits for the ledger: ordinary mail keeps flowing
while another process holds the lock.  The connection does not checkpoint by itself
and a head file it could not write is left to the flusher thread: both are done.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import errno
import fcntl
import os
import re
import smtplib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from career_relay.errors import LedgerConflict, LedgerUnavailable, TemporaryFailure, WouldWait
from career_relay.ledger import Ledger, LedgerWriter, open_ledger, open_shared, parse_head
from career_relay.ledger import head as head_mod
from career_relay.tokens import LinkSigner
from gateway import loop_commits
from gateway.loop_commits import LoopCommits
from gateway.pipeline import Submission
from gateway.rejection import Candidate, Outcome, Rejection
from tests.conftest import ConfigMaker, GatewayThread, Sink, crlf, wait_until
from tests.test_rejection import rejection

NOON = dt.datetime(2026, 4, 1, 3, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A SQLite ledger opened as the gateway opens it."""
    opened = open_ledger(tmp_path / "ledger.db", sync_wal_elsewhere=True, clock=lambda: NOON)
    yield opened
    opened.close()


@pytest.fixture
def head_file(ledger: Ledger) -> Path:
    """The ledger's head file (beside it, as the gateway's)."""
    assert ledger.head_file is not None
    return ledger.head_file


def _offer(n: int) -> list[tuple[str, str]]:
    return [(f"c{n}@example.jp", f"offerLOOP{n:07d}")]


def _in_database_file(path: Path, sql: str) -> int:
    """What the database file alone holds (its WAL unread): what a checkpoint copied; -1
    while that cannot be read yet (callers wait for it)."""
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return int(conn.execute(sql).fetchone()[0])
    except sqlite3.DatabaseError:
        # Not even the tables yet (the migrations are in the WAL), or a page read while the
        # flusher's checkpoint was writing it: immutable=1 takes no lock, so it may see a
        # checkpoint half done ("database disk image is malformed"); the next look will not.
        return -1
    finally:
        conn.close()


def test_a_free_ledger_commits_at_once_and_the_flusher_publishes_its_head(
        ledger: Ledger, head_file: Path) -> None:
    writer = LedgerWriter(ledger)
    try:
        got = writer.record_rejection("acme", "<a@acme.example>", _offer(1), wait=False)
        assert got == {"c1@example.jp": "offerLOOP0000001"}
        found = ledger.offer("offerLOOP0000001")
        assert found is not None and found.recipient == "c1@example.jp"
        assert ledger.counts("acme", NOON.date())["rejections"] == 1
        # The process's first commit writes the head file at once: a ledger's first
        # entries are never without one (verify would call them removed).
        first = ledger.head()
        assert first is not None and parse_head(head_file.read_text()) == first
        # Later ones leave it to the flusher, once for the commits of its interval.
        writer.record_rejection("acme", "<b@acme.example>", _offer(2), wait=False)
        wait_until(lambda: parse_head(head_file.read_text()) == ledger.head() != first,
                   what="the flusher writing the head file")
        # Sent again (a client retrying after a lost 250): the offer it had, counted once.
        again = writer.record_rejection("acme", "<a@acme.example>",
                                        [("c1@example.jp", "offerLOOPOTHER01")], wait=False)
        assert again == got and ledger.counts("acme", NOON.date())["rejections"] == 2  # a, b
    finally:
        writer.close()


def test_another_process_holding_the_lock_is_would_wait_and_nothing_is_written(
        ledger: Ledger, tmp_path: Path) -> None:
    writer = LedgerWriter(ledger)
    other = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    try:
        writer.add_count("acme", "unmarked_rejections")  # a tally waiting for a commit
        other.execute("BEGIN IMMEDIATE")  # another process's writer, mid-transaction
        # Not LedgerUnavailable after SQLite's 30 s busy timeout: it did not wait.
        with pytest.raises(WouldWait):
            writer.record_rejection("acme", "<b@acme.example>", _offer(2), wait=False)
        assert ledger.offer("offerLOOP0000002") is None
        # The waiting kind still waits (the busy timeout is back), and commits once the
        # other writer is done; the tally the refused commit had taken goes with it.
        done: list[dict[str, str]] = []
        thread = threading.Thread(target=lambda: done.append(writer.record_rejection(
            "acme", "<b@acme.example>", _offer(2))))
        thread.start()
        thread.join(0.5)
        assert thread.is_alive() and done == []  # waiting for the lock
        other.execute("COMMIT")
        thread.join(20)
        assert done == [{"c2@example.jp": "offerLOOP0000002"}]
        counts = ledger.counts("acme", NOON.date())
        assert counts["rejections"] == 1 and counts["unmarked_rejections"] == 1
    finally:
        other.close()
        writer.close()


def test_a_commit_of_this_process_under_way_is_would_wait(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = LedgerWriter(ledger)
    real = ledger.record_rejections
    inside, release = threading.Event(), threading.Event()

    def slow(rejections: object, counts: object = None, **kw: bool) -> list[dict[str, str]]:
        inside.set()
        release.wait(20)
        return real(rejections, counts, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ledger, "record_rejections", slow)
    thread = threading.Thread(target=writer.record_rejection,
                              args=("acme", "<c@acme.example>", _offer(3)))
    thread.start()
    try:
        assert inside.wait(20)
        with pytest.raises(WouldWait):
            writer.record_rejection("acme", "<d@acme.example>", _offer(4), wait=False)
    finally:
        release.set()
        thread.join(20)
    monkeypatch.setattr(ledger, "record_rejections", real)
    assert writer.record_rejection("acme", "<d@acme.example>", _offer(4), wait=False)
    writer.close()
    assert ledger.offer("offerLOOP0000003") is not None
    assert ledger.offer("offerLOOP0000004") is not None
    with pytest.raises(LedgerUnavailable):  # a closed writer takes nothing, either way
        writer.record_rejection("acme", "<e@acme.example>", _offer(5), wait=False)


def test_postgresql_is_would_wait_and_nothing_is_written(ledger_postgres_url: str) -> None:
    ledger = open_shared(ledger_postgres_url, clock=lambda: NOON)
    writer = LedgerWriter(ledger)
    try:
        with pytest.raises(WouldWait):
            writer.record_rejection("acme", "<pg@acme.example>", _offer(6), wait=False)
        assert ledger.offer("offerLOOP0000006") is None
        assert writer.record_rejection("acme", "<pg@acme.example>", _offer(6))
        assert ledger.offer("offerLOOP0000006") is not None
    finally:
        writer.close()
        ledger.close()


def test_the_gateways_ledger_does_not_checkpoint_by_itself_the_flusher_does(
        ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    (pages,) = ledger.db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()
    assert pages == 0  # no commit in the loop writes and fsyncs the database file
    writer = LedgerWriter(ledger)
    try:
        for n in range(10, 20):
            writer.record_rejection("acme", f"<{n}@acme.example>", _offer(n), wait=False)
        wait_until(lambda: _in_database_file(path, "SELECT count(*) FROM offers") == 10,
                   what="the offers checkpointed into the database file")
    finally:
        writer.close()
    with sqlite3.connect(tmp_path / "other.db") as plain:  # others keep SQLite's default
        plain.execute("PRAGMA journal_mode = WAL")
        assert plain.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000


def test_the_head_file_is_current_once_the_writer_has_closed(ledger: Ledger,
                                                              head_file: Path) -> None:
    """Commits in the loop leave the head file to the flusher; a writer that stops before
    its next round writes it on its way out, so a clean stop leaves it naming the last
    entry."""
    writer = LedgerWriter(ledger)
    for n in range(31, 36):
        writer.record_rejection("acme", f"<c{n}@acme.example>", _offer(n), wait=False)
    writer.close()
    head = ledger.head()
    assert head is not None and head[0] == 5  # an entry per offer
    assert parse_head(head_file.read_text()) == head


def test_a_head_file_whose_lock_is_taken_is_written_by_the_flusher(
        ledger: Ledger, head_file: Path, tmp_path: Path) -> None:
    ledger_path = tmp_path / "ledger.db"
    writer = LedgerWriter(ledger)
    try:
        writer.record_rejection("acme", "<h1@acme.example>", _offer(21), wait=False)
        first = parse_head(head_file.read_text())
        assert first == ledger.head()
        lock = os.open(head_file.with_name(f"{head_file.name}.lock"), os.O_RDWR)
        try:
            # Another process holds the head's lock, and keeps it (a `ledger verify`
            # stopped with ^Z): commits go on, and so do the flusher's checkpoints.
            fcntl.flock(lock, fcntl.LOCK_SH)
            for n in (22, 23):
                writer.record_rejection("acme", f"<h{n}@acme.example>", _offer(n), wait=False)
                assert ledger.offer(f"offerLOOP00000{n}") is not None  # committed
                wait_until(lambda n=n: _in_database_file(  # type: ignore[misc]
                    ledger_path, f"SELECT count(*) FROM offers WHERE id = 'offerLOOP00000{n}'")
                    == 1, what="the flusher's checkpoint")
            assert parse_head(head_file.read_text()) == first  # not waited for
        finally:
            os.close(lock)
        wait_until(lambda: parse_head(head_file.read_text()) == ledger.head(),
                   what="the flusher writing the head file")
        head = ledger.head()
        assert head is not None and first is not None and head[0] > first[0]
    finally:
        writer.close()


# -- what the attack review of this change found, each kept as a test ------------------


def test_commits_made_only_in_threads_are_checkpointed_too(
        ledger: Ledger, tmp_path: Path) -> None:
    """A gateway whose rejections all go to a thread (more than 4 copies, or large ones, or
    PostgreSQL's way) and that tallies no unmarked mail never started the flusher: nothing
    checkpointed the WAL, which grew without bound (autocheckpoint is off)."""
    writer = LedgerWriter(ledger)
    try:
        for n in range(5):
            writer.record_rejection("acme", f"<t{n}@acme.example>",
                                    [(f"t{n}@example.jp", f"offerTHREAD{n:05d}")])
        wait_until(lambda: _in_database_file(tmp_path / "ledger.db",
                                             "SELECT count(*) FROM offers") == 5,
                   what="the thread's commits checkpointed into the database file")
    finally:
        writer.close()


def _wal_salt(path: Path) -> bytes:
    """The WAL header's salts: SQLite changes them whenever it starts the WAL over."""
    with open(f"{path}-wal", "rb") as wal:
        return wal.read(32)[16:24]


def test_the_wal_starts_over_while_commits_never_pause(ledger: Ledger, tmp_path: Path) -> None:
    """SQLite starts the WAL over only when a write begins with all of it checkpointed.
    The flusher's checkpoint ran beside the commits: under a steady stream of them some
    commit always came while it ran, the WAL never started over, and it grew without
    bound (hundreds of MB a minute at a few hundred rejections a second).  The loop's
    commits must not pause here: they go on while the WAL is watched."""
    path = tmp_path / "ledger.db"
    writer = LedgerWriter(ledger)
    stop = threading.Event()
    made: list[int] = [0]

    def commit_forever() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            offers = [(f"s{n}@example.jp", f"offerSTEADY{n:05d}")]
            try:
                writer.record_rejection("acme", f"<s{n}@acme.example>", offers, wait=False)
            except WouldWait:  # the flusher's checkpoint holds the lock: as the gateway does
                writer.record_rejection("acme", f"<s{n}@acme.example>", offers)
            made[0] = n

    thread = threading.Thread(target=commit_forever)
    try:
        writer.record_rejection("acme", "<first@acme.example>",
                                [("first@example.jp", "offerSTEADYFIRST")], wait=False)
        first = _wal_salt(path)
        thread.start()
        wait_until(lambda: _wal_salt(path) != first, timeout=30,
                   what="the WAL started over while commits went on")
        assert thread.is_alive() and made[0] > 0
    finally:
        stop.set()
        thread.join(30)
        writer.close()
    assert ledger.offer(f"offerSTEADY{made[0]:05d}") is not None


def test_the_ledger_closed_before_its_writer_stops_the_flusher_first(tmp_path: Path) -> None:
    """``Ledger.close()`` before ``LedgerWriter.close()``: the flusher went on with its
    checkpoint on a reading connection the ledger closed under it (a segfault: seen in a
    loop of commits, ``Ledger.close()``, ``LedgerWriter.close()``), and the tallies
    waiting for it were lost.  The ledger stops its writers' flushers before it closes."""
    path = tmp_path / "ledger.db"
    ledger = open_ledger(path, sync_wal_elsewhere=True, clock=lambda: NOON)
    writer = LedgerWriter(ledger)
    writer.record_rejection("acme", "<o1@acme.example>", [("o1@example.jp", "offerORDER0001")],
                            wait=False)
    writer.add_count("acme", "unmarked_rejections")  # waits for the flusher
    flusher = writer._flusher
    assert flusher is not None and flusher.is_alive()
    ledger.close()
    assert not flusher.is_alive()  # not left running on closed connections
    writer.close()  # after the ledger: nothing to do, and no crash
    with open_ledger(path, clock=lambda: NOON) as again:
        counts = again.counts("acme", NOON.date())
    assert counts["rejections"] == 1 and counts["unmarked_rejections"] == 1


def test_a_head_that_cannot_be_read_after_the_commit_double_counts_nothing(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """``publish_head`` says a failure is logged, not raised: the transaction is committed.
    Its read of the new head could raise all the same (``LedgerUnavailable``), after the
    commit: the writer then put back the tallies that commit had already added (counted
    twice at the next commit), and the gateway held a rejection whose offers were in."""
    writer = LedgerWriter(ledger)
    real = ledger.backend.settled_head

    def unreadable(*, just_written: bool = False) -> tuple[int, str] | None:
        if just_written:  # the read after a commit, for the head file
            raise LedgerUnavailable("the ledger cannot be used now: disk I/O error")
        return real(just_written=just_written)

    try:
        writer.add_count("acme", "unmarked_rejections")
        monkeypatch.setattr(ledger.backend, "settled_head", unreadable)
        got = writer.record_rejection("acme", "<u1@acme.example>",
                                      [("u1@example.jp", "offerUNREAD001")], wait=False)
        assert got == {"u1@example.jp": "offerUNREAD001"}
        monkeypatch.setattr(ledger.backend, "settled_head", real)
        writer.record_rejection("acme", "<u2@acme.example>",
                                [("u2@example.jp", "offerUNREAD002")], wait=False)
    finally:
        writer.close()
    counts = ledger.counts("acme", NOON.date())
    assert counts["rejections"] == 2 and counts["unmarked_rejections"] == 1


@pytest.mark.parametrize("trouble", ["the ledger's read", "the head file's open"])
def test_a_head_file_the_flusher_could_not_write_once_is_written_at_its_next_round(
        ledger: Ledger, head_file: Path, monkeypatch: pytest.MonkeyPatch, trouble: str,
) -> None:
    """Commits in the loop leave the head file to the flusher.  Its one try failing for a
    moment (the ledger unreadable, a descriptor short) counted as done: nothing tried
    again until this process's next commit, hours later on a quiet gateway, and not even
    ``close()``; the head file stayed behind the chain all that time (removing the last
    entries went unnoticed).  Written after each commit, the flusher's round was a
    second try."""
    writer = LedgerWriter(ledger)
    real_read, real_write = ledger.backend.settled_head, head_mod.write
    failures: list[Exception] = [LedgerUnavailable("the ledger cannot be used now: disk I/O "
                                                   "error") if trouble == "the ledger's read"
                                 else OSError(errno.EMFILE, "Too many open files")]

    def read_once(*, just_written: bool = False) -> tuple[int, str] | None:
        if just_written and failures:  # the read for the head file
            raise failures.pop()
        return real_read(just_written=just_written)

    def write_once(*args: Any, **kwargs: Any) -> bool:
        if failures:
            raise failures.pop()
        return real_write(*args, **kwargs)

    try:
        writer.record_rejection("acme", "<f1@acme.example>", _offer(51), wait=False)
        if trouble == "the ledger's read":
            monkeypatch.setattr(ledger.backend, "settled_head", read_once)
        else:
            monkeypatch.setattr(head_mod, "write", write_once)
        writer.record_rejection("acme", "<f2@acme.example>", _offer(52), wait=False)
        wait_until(lambda: not failures, timeout=5, what="the flusher's try that fails")
        wait_until(lambda: parse_head(head_file.read_text()) == ledger.head(), timeout=5,
                   what="the flusher's next round writing the head file")
    finally:
        writer.close()
    head = ledger.head()
    assert head is not None and head[0] == 2


def test_the_head_file_does_not_wait_for_the_flushers_tallies(
        ledger: Ledger, head_file: Path, tmp_path: Path) -> None:
    """The flusher committed the pending tallies first, and that commit waits for SQLite's
    lock (up to its busy timeout, 30 s): while another process held it (a purge, a
    migration), the head file the loop's commits left to the flusher waited as long,
    not FLUSH_INTERVAL.  The head file needs no lock of the ledger's: it comes first."""
    writer = LedgerWriter(ledger)
    try:
        writer.record_rejection("acme", "<t1@acme.example>", _offer(61), wait=False)
        writer.record_rejection("acme", "<t2@acme.example>", _offer(62), wait=False)
        writer.add_count("acme", "unmarked_rejections")  # a tally for the flusher to commit
        other = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the ledger's lock
            wait_until(lambda: parse_head(head_file.read_text()) == ledger.head(), timeout=3,
                       what="the flusher writing the head file")
        finally:
            other.execute("ROLLBACK")
            other.close()
    finally:
        writer.close()
    assert ledger.counts("acme", NOON.date())["unmarked_rejections"] == 1

# -- in the gateway ---------------------------------------------------------------------


def _commits(where: str) -> float:
    """``career_relay_rejection_commits_total{where=...}`` of this process."""
    return REGISTRY.get_sample_value("career_relay_rejection_commits_total",
                                     {"where": where}) or 0.0


def _config(make_config: ConfigMaker, sink: Sink) -> Path:
    return make_config(upstream_port=sink.port, site={"public_url": "http://consent.test"},
                       companies=[{"id": "acme", "name": "株式会社アクメ",
                                   "domains": ["acme.example"],
                                   "allow_ips": ["127.0.0.1/32"]}])


def _send(port: int, data: bytes, rcpts: list[str], out: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo()
        client.mail("hr@acme.example", ["BODY=8BITMIME"])
        for rcpt in rcpts:
            client.rcpt(rcpt)
        code, text = client.data(data)
        out.append(f"{code} {text.decode()}")


def _watched(gw: GatewayThread, monkeypatch: pytest.MonkeyPatch
             ) -> list[tuple[bool, str, str]]:
    """Each commit the gateway's writer is asked for: (wait, thread, what came of it)."""
    assert gw.gateway.rejections is not None
    writer = gw.gateway.rejections._writer
    calls: list[tuple[bool, str, str]] = []

    def watching(name: str, wait: bool) -> None:
        real = getattr(writer, name)

        def watched(*args: object, **kwargs: object) -> object:
            try:
                got = real(*args, **kwargs)
            except WouldWait:
                calls.append((wait, threading.current_thread().name, "would wait"))
                raise
            calls.append((wait, threading.current_thread().name, "committed"))
            return got

        monkeypatch.setattr(writer, name, watched)

    watching("record_now", False)  # the loop's
    watching("record", True)  # a thread's
    return calls


def test_a_small_rejection_is_committed_in_the_loop(
        make_config: ConfigMaker, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    gw = GatewayThread(_config(make_config, sink)).start()
    try:
        calls = _watched(gw, monkeypatch)
        before = _commits("loop"), _commits("thread")
        replies: list[str] = []
        _send(gw.port, rejection("<loop@acme.example>"), ["a@example.net"], replies)
        assert replies[0].startswith("250")
        (got,) = sink.wait_for(1)
    finally:
        gw.stop()
    assert calls == [(False, gw._thread.name, "committed")]  # the loop's thread, no hand-off
    assert (_commits("loop"), _commits("thread")) == (before[0] + 1, before[1])
    assert b"http://consent.test/c/" in got.data and b"[[CAREER_RELAY_LINK]]" not in got.data


def test_while_another_process_holds_the_ledger_ordinary_mail_flows_and_the_rejection_waits(
        make_config: ConfigMaker, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(make_config, sink)
    gw = GatewayThread(config).start()
    other = sqlite3.connect(gw.settings.ledger.path, isolation_level=None)
    try:
        calls = _watched(gw, monkeypatch)
        other.execute("BEGIN IMMEDIATE")  # e.g. `career-relay ledger purge` mid-transaction
        in_thread = _commits("thread")
        waiting: list[str] = []
        thread = threading.Thread(target=_send, args=(
            gw.port, rejection("<held@acme.example>"), ["w@example.net"], waiting))
        thread.start()
        # The rejection cannot be recorded yet; the loop is not held up by it.
        ordinary = crlf("From: 人事部 <hr@acme.example>\nTo: i@example.net\n"
                        "Subject: 二次面接のご案内\nMessage-ID: <invite@acme.example>\n"
                        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
                        "Content-Transfer-Encoding: 8bit\n\n"
                        "田中様\n\n二次面接の日程をご案内いたします。\n")
        flowing: list[str] = []
        _send(gw.port, ordinary, ["i@example.net"], flowing)
        assert flowing[0].startswith("250")
        (invitation,) = sink.wait_for(1)
        assert invitation.data.endswith(ordinary.split(b"\r\n\r\n", 1)[1])
        assert thread.is_alive() and waiting == []
        # The loop tried a few times, then gave the commit to a thread, which waits.
        wait_until(lambda: _commits("thread") == in_thread + 1, what="the hand-off")
        other.execute("COMMIT")
        thread.join(40)
        assert waiting and waiting[0].startswith("250"), waiting
        got = sink.wait_for(2)
    finally:
        other.close()
        gw.stop()
    # Tried in the loop once and after each of the four pauses, then waited for in a thread.
    loop_thread = gw._thread.name
    assert calls[:5] == [(False, loop_thread, "would wait")] * 5
    assert len(calls) == 6 and calls[5][0] and calls[5][1] != loop_thread
    assert calls[5][2] == "committed"
    copy = next(m for m in got if m.rcpts == ["w@example.net"])
    assert b"http://consent.test/c/" in copy.data and b"[[CAREER_RELAY_LINK]]" not in copy.data


# -- rejections ending together share a transaction (gateway.loop_commits) -------------


def _submission(gw: GatewayThread, data: bytes, rcpt: str) -> Submission:
    return Submission(mail_from="hr@acme.example", rcpts=[rcpt], data=data,
                      peer_ip="127.0.0.1", helo="hr.acme.example", protocol="ESMTP",
                      company=gw.settings.company("acme"))


def _in_loop(gw: GatewayThread, *subs: Submission, cancel: int | None = None
             ) -> list[object]:
    """``Pipeline.accept`` of each submission, all begun in one turn of the gateway's loop
    (as sessions whose DATA ends together); ``cancel``: that session goes away once its
    message waits for the commit.  What each came to: its queue ids, or its error."""

    async def run() -> list[object]:
        tasks = [asyncio.ensure_future(gw.gateway.pipeline.accept(sub)) for sub in subs]
        await asyncio.sleep(0)  # each task's first step has run: its draft waits
        if cancel is not None:
            tasks[cancel].cancel()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    return asyncio.run_coroutine_threadsafe(run(), gw.loop).result(60)


def _transactions() -> float:
    return REGISTRY.get_sample_value("career_relay_rejection_loop_transactions_total") or 0.0


def test_rejections_ending_together_share_one_transaction(
        make_config: ConfigMaker, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    gw = GatewayThread(_config(make_config, sink)).start()
    try:
        calls = _watched(gw, monkeypatch)
        before = _transactions(), _commits("loop"), _commits("thread")
        got = _in_loop(gw, *(_submission(gw, rejection(f"<turn{n}@acme.example>"),
                                         f"t{n}@example.net") for n in range(3)))
        assert all(isinstance(ids, str) and ids for ids in got), got
        copies = sink.wait_for(3)
        assert gw.gateway.ledger is not None
        offers = {n: gw.gateway.ledger.offers_of_message("acme", f"<turn{n}@acme.example>")
                  for n in range(3)}
    finally:
        gw.stop()
    assert calls == [(False, gw._thread.name, "committed")]  # one commit for the three
    assert (_transactions(), _commits("loop"), _commits("thread")) == (
        before[0] + 1, before[1] + 3, before[2])
    assert sorted(c.rcpts[0] for c in copies) == ["t0@example.net", "t1@example.net",
                                                  "t2@example.net"]
    for copy in copies:  # each its own offer, and that offer's link
        (offer,) = offers[int(copy.rcpts[0][1])]
        assert offer.recipient == copy.rcpts[0]
        token = re.search(rb"http://consent\.test/c/([\w.-]+)", copy.data)
        assert token is not None and b"[[CAREER_RELAY_LINK]]" not in copy.data
        assert LinkSigner.from_settings(gw.settings).offer_id(token[1].decode()) == offer.id


def test_a_session_gone_before_the_commit_records_nothing_and_the_others_commit(
        make_config: ConfigMaker, sink: Sink) -> None:
    gw = GatewayThread(_config(make_config, sink)).start()
    try:
        got = _in_loop(gw, *(_submission(gw, rejection(f"<gone{n}@acme.example>"),
                                         f"g{n}@example.net") for n in range(3)), cancel=1)
        assert isinstance(got[1], asyncio.CancelledError)
        assert isinstance(got[0], str) and isinstance(got[2], str)
        copies = sink.wait_for(2)
        assert gw.gateway.ledger is not None
        kept = [gw.gateway.ledger.offers_of_message("acme", f"<gone{n}@acme.example>")
                for n in range(3)]
    finally:
        gw.stop()
    # Its client had no 250 and sends it again: then it is recorded, not twice.
    assert kept[1] == [] and len(kept[0]) == len(kept[2]) == 1
    assert sorted(c.rcpts[0] for c in copies) == ["g0@example.net", "g2@example.net"]


def test_one_refused_value_in_a_batch_fails_only_its_own_message(
        make_config: ConfigMaker, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger refusing one rejection's value (LedgerConflict: PostgreSQL's NUL, say)
    rolls the whole transaction back; the others of its turn must not get a 451 for it."""
    gw = GatewayThread(_config(make_config, sink)).start()
    try:
        assert gw.gateway.ledger is not None
        ledger = gw.gateway.ledger
        real = ledger.record_rejections

        def refusing(rejections: Any, counts: Any = None, **kw: bool) -> list[dict[str, str]]:
            if any("bad" in r.message_id for r in rejections):
                raise LedgerConflict("a value the ledger cannot store")
            return real(rejections, counts, **kw)

        monkeypatch.setattr(ledger, "record_rejections", refusing)
        got = _in_loop(gw, *(_submission(gw, rejection(f"<{name}@acme.example>"),
                                         f"{name}@example.net")
                             for name in ("ok1", "bad", "ok2")))
        copies = sink.wait_for(2)
    finally:
        gw.stop()
    assert isinstance(got[0], str) and isinstance(got[2], str)
    assert isinstance(got[1], TemporaryFailure)  # 451: the client keeps it, and tries again
    assert sorted(c.rcpts[0] for c in copies) == ["ok1@example.net", "ok2@example.net"]
    assert all(b"http://consent.test/c/" in c.data for c in copies)


def test_a_bug_finishing_one_draft_is_that_drafts_alone(
        make_config: ConfigMaker, sink: Sink) -> None:
    gw = GatewayThread(_config(make_config, sink)).start()
    try:
        rejections = gw.gateway.rejections
        assert rejections is not None
        company = gw.settings.company("acme")
        drafts = []
        for n in range(2):
            data = rejection(f"<bug{n}@acme.example>")
            found = rejections.first_look(company, data, {})
            assert isinstance(found, Candidate)
            drafts.append(rejections.draft(found, data, [f"b{n}@example.net"], {}))

        def broken(offers: dict[str, str]) -> Outcome:
            raise RuntimeError("a bug")

        drafts[0] = dataclasses.replace(drafts[0], finish=broken)
        commits = LoopCommits(rejections)

        async def both() -> list[object]:
            return list(await asyncio.gather(*(commits.record(d) for d in drafts),
                                             return_exceptions=True))

        got = asyncio.run_coroutine_threadsafe(both(), gw.loop).result(30)
    finally:
        gw.stop()
    assert isinstance(got[0], RuntimeError)
    assert isinstance(got[1], Rejection) and got[1].copies[0].rcpts == ["b1@example.net"]


# -- review of the batched commit (5ea0e27) ---------------------------------------------


def _drafts(gw: GatewayThread, prefix: str, n: int) -> list[Any]:
    """``n`` drafts of small rejections, made as ``Pipeline._prepared`` makes them."""
    rejections = gw.gateway.rejections
    assert rejections is not None
    company = gw.settings.company("acme")
    drafts = []
    for i in range(n):
        data = rejection(f"<{prefix}{i}@acme.example>")
        found = rejections.first_look(company, data, {})
        assert isinstance(found, Candidate)
        drafts.append(rejections.draft(found, data, [f"{prefix}{i}@example.net"], {}))
    return drafts


def test_a_stop_iteration_finishing_one_draft_leaves_no_session_waiting_for_ever(
        make_config: ConfigMaker, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Future.set_exception`` refuses a StopIteration (TypeError): raised by a bug in one
    draft's ``finish``, it escaped ``_commit`` half-way, and the other messages of the batch
    (their offers committed) never heard of their commit: their sessions hung until the
    client gave up (and ``Gateway.stop`` waited its whole timeout for them).  A coroutine
    turns it into RuntimeError (PEP 479), as the commit in the loop did before batches."""
    gw = GatewayThread(_config(make_config, sink)).start()
    try:
        rejections = gw.gateway.rejections
        assert rejections is not None
        real, broke = rejections.draft, []

        def draft(*args: Any, **kwargs: Any) -> Any:
            made = real(*args, **kwargs)
            if "stop0" not in made.entry.message_id or broke:
                return made  # the relayed one's (``_failed``) is made again, not broken
            broke.append(made)

            def broken(offers: dict[str, str]) -> Outcome:
                raise StopIteration("a bug")

            return dataclasses.replace(made, finish=broken)

        monkeypatch.setattr(rejections, "draft", draft)
        subs = [_submission(gw, rejection(f"<stop{n}@acme.example>"), f"s{n}@example.net")
                for n in range(2)]

        async def run() -> list[object]:
            tasks = [asyncio.ensure_future(gw.gateway.pipeline.accept(sub)) for sub in subs]
            return list(await asyncio.wait_for(
                asyncio.gather(*tasks, return_exceptions=True), 5))

        got = asyncio.run_coroutine_threadsafe(run(), gw.loop).result(30)
        copies = sink.wait_for(2)
    finally:
        gw.stop()
    # The bug's message: relayed as not injected (gateway.on_error = "relay"); the other,
    # its copy with its link.
    assert all(isinstance(ids, str) and ids for ids in got), got
    linked = next(c for c in copies if c.rcpts == ["s1@example.net"])
    assert b"http://consent.test/c/" in linked.data


def test_a_commit_raising_stop_iteration_fails_its_batch_it_does_not_hang_it(
        make_config: ConfigMaker, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    gw = GatewayThread(_config(make_config, sink)).start()
    try:
        rejections = gw.gateway.rejections
        assert rejections is not None
        drafts = _drafts(gw, "stopall", 2)

        def broken(drafts: object) -> list[dict[str, str]]:
            raise StopIteration

        monkeypatch.setattr(rejections, "record_now", broken)
        commits = LoopCommits(rejections)

        async def both() -> list[object]:
            return list(await asyncio.wait_for(asyncio.gather(
                *(commits.record(d) for d in drafts), return_exceptions=True), 5))

        got = asyncio.run_coroutine_threadsafe(both(), gw.loop).result(30)
    finally:
        gw.stop()
    assert all(isinstance(g, RuntimeError) for g in got), got


def test_a_session_gone_after_its_commit_has_its_offers_and_a_resend_counts_once(
        make_config: ConfigMaker, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit of a batch and each session's reading of it are two steps of the loop: a
    session can go away between them (its client closed the connection).  Its offers are
    in, its message not accepted (no 250); the client sends it again and finds the same
    offers, and the rejection is not counted twice."""
    gw = GatewayThread(_config(make_config, sink)).start()
    try:
        assert gw.gateway.ledger is not None and gw.gateway.pipeline._commits is not None
        ledger, commits = gw.gateway.ledger, gw.gateway.pipeline._commits
        tasks: list[asyncio.Future[str]] = []
        real = commits._commit

        def then_gone() -> None:
            real()
            tasks[1].cancel()  # its future has its result, its task has not run yet

        monkeypatch.setattr(commits, "_commit", then_gone)
        subs = [_submission(gw, rejection(f"<after{n}@acme.example>"), f"a{n}@example.net")
                for n in range(3)]

        async def run() -> list[object]:
            tasks.extend(asyncio.ensure_future(gw.gateway.pipeline.accept(s)) for s in subs)
            return list(await asyncio.gather(*tasks, return_exceptions=True))

        got = asyncio.run_coroutine_threadsafe(run(), gw.loop).result(30)
        assert isinstance(got[1], asyncio.CancelledError)
        assert isinstance(got[0], str) and isinstance(got[2], str)
        (first,) = ledger.offers_of_message("acme", "<after1@acme.example>")
        monkeypatch.setattr(commits, "_commit", real)
        replies: list[str] = []
        _send(gw.port, rejection("<after1@acme.example>"), ["a1@example.net"], replies)
        assert replies[0].startswith("250")
        copies = sink.wait_for(3)
        (again,) = ledger.offers_of_message("acme", "<after1@acme.example>")
        counts = ledger.counts("acme", dt.datetime.now(dt.UTC).date())
    finally:
        gw.stop()
    assert again.id == first.id
    assert counts["rejections"] == 3
    resent = next(c for c in copies if c.rcpts == ["a1@example.net"])
    token = re.search(rb"http://consent\.test/c/([\w.-]+)", resent.data)
    assert token is not None
    assert LinkSigner.from_settings(gw.settings).offer_id(token[1].decode()) == first.id


def test_a_session_gone_while_its_batch_waits_for_the_lock_records_nothing(
        make_config: ConfigMaker, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process holds the ledger's lock; the batch is tried again later.  A session
    that goes away meanwhile is left out of the next try, the other is committed in it."""
    import gateway.loop_commits as loop_commits

    monkeypatch.setattr(loop_commits, "RETRIES", (0.2, 0.2, 0.2, 0.2))
    gw = GatewayThread(_config(make_config, sink)).start()
    other = sqlite3.connect(gw.settings.ledger.path, isolation_level=None,
                            check_same_thread=False)
    try:
        assert gw.gateway.ledger is not None
        ledger = gw.gateway.ledger
        calls = _watched(gw, monkeypatch)
        in_thread = _commits("thread")
        other.execute("BEGIN IMMEDIATE")
        subs = [_submission(gw, rejection(f"<wait{n}@acme.example>"), f"w{n}@example.net")
                for n in range(2)]

        async def run() -> list[object]:
            tasks = [asyncio.ensure_future(gw.gateway.pipeline.accept(s)) for s in subs]
            await asyncio.sleep(0.1)  # tried once: would wait; the next try in 0.2 s
            tasks[0].cancel()
            other.execute("COMMIT")
            return list(await asyncio.gather(*tasks, return_exceptions=True))

        got = asyncio.run_coroutine_threadsafe(run(), gw.loop).result(30)
        sink.wait_for(1)
        kept = [ledger.offers_of_message("acme", f"<wait{n}@acme.example>") for n in range(2)]
    finally:
        other.close()
        gw.stop()
    assert isinstance(got[0], asyncio.CancelledError) and isinstance(got[1], str)
    assert kept[0] == [] and len(kept[1]) == 1
    loop_thread = gw._thread.name
    assert calls == [(False, loop_thread, "would wait"), (False, loop_thread, "committed")]
    assert _commits("thread") == in_thread


def test_a_hostile_message_id_in_a_batch_costs_the_others_nothing(
        make_config: ConfigMaker, sink: Sink) -> None:
    """A Message-ID of 200 KB (folded) with NUL bytes and invalid UTF-8, in the batch of
    two ordinary rejections: all three are committed in the one transaction, each with
    its own offer and link."""
    from gateway.message import message_id

    gw = GatewayThread(_config(make_config, sink)).start()
    folded = b"\r\n ".join([b"x" * 900] * 222)
    hostile = b"<\x00\xff\xfe\x00" + folded + b"@acme.example>"
    data = rejection("<HOSTILE>").replace(b"<HOSTILE>", hostile)
    try:
        assert gw.gateway.ledger is not None
        ledger = gw.gateway.ledger
        before = _transactions()
        got = _in_loop(gw, _submission(gw, rejection("<calm0@acme.example>"), "c0@example.net"),
                       _submission(gw, data, "h@example.net"),
                       _submission(gw, rejection("<calm1@acme.example>"), "c1@example.net"))
        copies = sink.wait_for(3)
        kept = [ledger.offers_of_message("acme", f"<calm{n}@acme.example>") for n in range(2)]
        (odd,) = ledger.offers_of_message("acme", message_id(data))
    finally:
        gw.stop()
    assert all(isinstance(ids, str) and ids for ids in got), got
    assert _transactions() == before + 1
    assert [len(k) for k in kept] == [1, 1] and odd.recipient == "h@example.net"
    assert "\x00" not in odd.message_id and len(odd.message_id) > 200_000
    assert all(b"http://consent.test/c/" in c.data for c in copies)


def test_the_writer_closed_while_a_batch_gathers_holds_its_messages(
        make_config: ConfigMaker, sink: Sink) -> None:
    """The ledger's writer closed (the gateway stopping) while a batch gathers: its commit
    says the ledger is unavailable, and each message is held (SPEC 12), none waits for
    ever, nothing is recorded."""
    gw = GatewayThread(_config(make_config, sink)).start()
    try:
        rejections, ledger = gw.gateway.rejections, gw.gateway.ledger
        assert rejections is not None and ledger is not None
        subs = [_submission(gw, rejection(f"<closed{n}@acme.example>"), f"z{n}@example.net")
                for n in range(2)]

        async def run() -> list[object]:
            tasks = [asyncio.ensure_future(gw.gateway.pipeline.accept(s)) for s in subs]
            await asyncio.sleep(0)  # both drafts wait for the batch's commit
            rejections.close()
            return list(await asyncio.wait_for(
                asyncio.gather(*tasks, return_exceptions=True), 5))

        got = asyncio.run_coroutine_threadsafe(run(), gw.loop).result(30)
        spool = gw.gateway.spool
        held = sorted({r.env.id for r in spool.journal_records() if r.env.held is not None}
                      | {i for i in spool.ids() if spool.read_envelope(i).held is not None})
        kept = [ledger.offers_of_message("acme", f"<closed{n}@acme.example>") for n in range(2)]
    finally:
        gw.stop()
    assert all(isinstance(ids, str) for ids in got), got
    assert held == sorted(got)  # type: ignore[type-var]
    assert kept == [[], []]


def test_a_batch_larger_than_max_batch_is_committed_in_several_transactions(
        make_config: ConfigMaker, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop does nothing else while it commits: however many sessions end together,
    one transaction takes at most MAX_BATCH of them, the rest the next ones."""
    gw = GatewayThread(_config(make_config, sink)).start()
    try:
        rejections = gw.gateway.rejections
        assert rejections is not None
        drafts = _drafts(gw, "many", 10)
        monkeypatch.setattr(loop_commits, "MAX_BATCH", 4)
        real, sizes = rejections.record_now, []

        def counted(batch: list[Any]) -> list[dict[str, str]]:
            sizes.append(len(batch))
            return real(batch)

        monkeypatch.setattr(rejections, "record_now", counted)
        commits = LoopCommits(rejections)

        async def all_of_them() -> list[object]:
            return list(await asyncio.gather(*(commits.record(d) for d in drafts)))

        got = asyncio.run_coroutine_threadsafe(all_of_them(), gw.loop).result(30)
    finally:
        gw.stop()
    assert sizes == [4, 4, 2]
    assert [g.copies[0].rcpts for g in got] == [  # type: ignore[attr-defined]
        [f"many{i}@example.net"] for i in range(10)]
