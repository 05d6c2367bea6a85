"""Attacks on the gateway's commits in its event loop (``tests/test_loop_commit.py``):
what the review of that change found, each kept as a test."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from career_relay.errors import LedgerUnavailable, WouldWait
from career_relay.ledger import Ledger, LedgerWriter, open_ledger
from tests.conftest import wait_until

NOON = dt.datetime(2026, 4, 1, 3, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A SQLite ledger opened as the gateway opens it (no checkpoint after its commits)."""
    opened = open_ledger(tmp_path / "ledger.db", sync_wal_elsewhere=True, clock=lambda: NOON)
    yield opened
    opened.close()


def _in_database_file(path: Path, sql: str) -> int:
    """What the database file alone holds (its WAL unread): what a checkpoint copied."""
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:  # not even the tables yet: the migrations are in the WAL
        return -1
    finally:
        conn.close()


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
