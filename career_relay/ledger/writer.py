"""Group commit for the ledger's hot path: concurrent rejections share one transaction.

Each commit waits for the disk, and every gateway process writes the same
SQLite file; one commit per message made SMTP sessions queue behind each
other (and behind SQLite's busy handler, which sleeps).  So callers queue
their rejection, and the first that finds no commit running leads: it
commits everything queued at that moment, in its own thread.  Callers that
arrive meanwhile wait, and one of them leads the next commit.  Each caller
gets its own result or the shared error.

Tallies that no reply waits for (the classifier's ``unmarked_rejections`` on
ordinary mail) are only added up in memory by ``add_count``: the next batch
commits them, or a flusher thread within ``FLUSH_INTERVAL``, so ordinary mail
never waits for a commit of its own.  A crash can lose those last tallies,
never an offer or a rejection's count.

The leader commits itself, rather than handing its rejection to a writer
thread: waking another thread costs a futex call made while holding the
GIL, and on a busy machine the woken thread can take the CPU from the
waker before it lets the GIL go.  Most commits have nobody waiting and
wake no one.

The gateway's event loop calls ``record_now``: the rejections that ended
within a few milliseconds committed together, there and then, when nothing
would wait (no commit of this process under way or queued, SQLite's lock
free), else ``WouldWait`` and the loop tries again, or calls from a thread.
Handing a small rejection to a thread cost the loop and the thread about a
millisecond of CPU between them, passing the GIL to and fro at every
statement (docs/performance.md, "Every path").  The connection of such a
ledger does not checkpoint by itself: the flusher does, and writes the head
file after the loop's commits, once for all of those within FLUSH_INTERVAL
(a crash in between leaves the head file behind the chain, which ``ledger
verify`` accepts: the chain still reaches it).
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from career_relay.errors import LedgerConflict, LedgerUnavailable, WouldWait
from career_relay.ledger.offers import CounterKind, Ledger, OfferSource, Rejection

log = logging.getLogger("career_relay.ledger")

_MAX_BATCH = 200
_WAIT = 60.0  # seconds a caller waits for its commit (SQLite's busy timeout is 30 s)
FLUSH_INTERVAL = 0.5  # seconds a deferred tally, checkpoint or head file may wait


@dataclass
class _Request:
    rejection: Rejection
    result: dict[str, str] | None = None
    error: BaseException | None = None
    done: bool = False


class LedgerWriter:
    def __init__(self, ledger: Ledger):
        self._ledger = ledger
        self._cond = threading.Condition()
        self._queue: list[_Request] = []
        self._leading = False  # a caller is committing a batch
        self._closed = False
        self._counts: collections.Counter[tuple[str, CounterKind]] = collections.Counter()
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        self._committed = False  # since the flusher last checkpointed
        self._head_due = False  # the flusher's last try at the head file failed: next round
        ledger.on_close.append(self.close)  # the flusher stops before the connections close

    def add_count(self, company: str, kind: CounterKind) -> None:
        """Add one to a tally without waiting: committed with the next batch, or by the
        flusher within FLUSH_INTERVAL (module docstring)."""
        with self._cond:
            if self._closed:
                return
            self._counts[(company, kind)] += 1
            self._start_flusher()

    def _start_flusher(self) -> None:
        """Called holding ``_cond``."""
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                             name="ledger-flusher")
            self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            # The last round's commits tidied first: the tallies' commit waits for SQLite's
            # lock (up to its busy timeout, while another process purges or migrates), and
            # the head file the loop's commits left is due within FLUSH_INTERVAL all the
            # same.  The tallies' own commit writes the head file; its checkpoint is the
            # next round's.
            with self._cond:
                committed, self._committed = self._committed, False
            if committed or self._head_due:
                self._tidy()
            self.flush()

    def _tidy(self) -> None:
        """After commits: the head file, which the commits in the loop leave to this
        (``Store.write_now``), then the WAL into the database file (its writes and fsync
        do not keep the head file waiting).  Never waits on the head file's lock (held by
        a stopped process, it would stop the checkpoints too, and the WAL would grow);
        never raises: the next round tries again."""
        try:
            self._head_due = not self._ledger.publish_head(wait=False)
        except Exception as exc:  # it logs its own troubles; this is a bug's: a later round
            self._head_due = True
            log.debug("head file not written: %s", exc)
        try:
            self._ledger.checkpoint()
        except Exception as exc:  # a ledger that is away now: a later round
            log.debug("checkpoint not done: %s", exc)

    def flush(self) -> None:
        """Commit the pending tallies now (a batch in progress takes them instead)."""
        with self._cond:
            if not self._counts or self._leading:
                return
            self._leading = True
        self._commit([])

    def record_rejection(self, company: str, message_id: str,
                         offers: Sequence[tuple[str, str]], job: str | None = None,
                         channel: str | None = None, stage: str | None = None,
                         created: dt.datetime | None = None,
                         counters: tuple[CounterKind, ...] = ("rejections",),
                         source: OfferSource = "relay", *, wait: bool = True,
                         ) -> dict[str, str]:
        """Blocking, like ``Ledger.record_rejection``; returns once the commit is done.
        ``wait=False``: ``record_now`` of this one rejection."""
        rejection = Rejection(company, message_id, tuple(offers), job, channel, stage,
                              created, counters, source)
        return self.record(rejection) if wait else self.record_now([rejection])[0]

    def record(self, rejection: Rejection) -> dict[str, str]:
        """``record_rejection`` of a rejection already made: its offers, once committed."""
        request = _Request(rejection)
        with self._cond:
            if self._closed:
                raise LedgerUnavailable("the ledger writer has stopped")
            self._queue.append(request)
            self._start_flusher()  # it checkpoints what the commits add to the WAL
        deadline = time.monotonic() + _WAIT
        while not request.done:
            batch = self._wait_or_lead(request, deadline)
            if batch:
                self._commit(batch)
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def record_now(self, rejections: Sequence[Rejection]) -> list[dict[str, str]]:
        """The rejections (and the pending tallies) in one transaction at once, if no one of
        this process leads a commit or waits to; each one's offers, as ``record_rejection``
        returns them.  ``WouldWait`` otherwise, or when the ledger's lock is not free, and
        nothing is written: an event loop calls this (module docstring)."""
        with self._cond:
            if self._closed:
                raise LedgerUnavailable("the ledger writer has stopped")
            if self._leading or self._queue:
                raise WouldWait("a commit of this process is under way")
            self._leading = True
            counts, self._counts = self._counts, collections.Counter()
            self._start_flusher()  # it checkpoints what this commit adds to the WAL
        try:
            results = self._ledger.record_rejections(rejections, counts, wait=False)
        except BaseException:
            with self._cond:
                self._counts.update(counts)  # tallies wait for the next commit
            raise
        finally:
            with self._cond:
                self._leading = False
                self._committed = True
                self._cond.notify_all()  # a thread that queued meanwhile leads next
        return results

    def close(self) -> None:
        """Refuse new rejections; wait (a while) for the commits already asked for.  Called
        again (``Ledger.close`` calls it too), nothing more."""
        self._stop.set()
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.wait_for(lambda: not self._leading and not self._queue, _WAIT)
            pending, self._leading = bool(self._counts), bool(self._counts)
        if pending:
            self._commit([])
        # Its checkpoint reads through a connection the ledger's close would close under it.
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(_WAIT)
        if self._committed or self._head_due:
            self._tidy()  # the last checkpoint and head file, now rather than never

    def _wait_or_lead(self, request: _Request, deadline: float) -> list[_Request]:
        """Wait while another caller commits; then the batch to commit ([] once ours is done)."""
        with self._cond:
            while self._leading and not request.done:
                if not self._cond.wait(deadline - time.monotonic()):
                    if request in self._queue:  # never committed: the caller may try again
                        self._queue.remove(request)
                        self._cond.notify_all()
                    raise LedgerUnavailable("timed out waiting for the ledger's commit")
            if request.done:
                return []
            self._leading = True
            batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
            return batch

    def _commit(self, batch: list[_Request]) -> None:
        """One transaction for the batch and the pending tallies; then every caller in
        it hears the outcome.  Called by the leader only."""
        with self._cond:
            counts, self._counts = self._counts, collections.Counter()
        try:
            results = self._ledger.record_rejections([r.rejection for r in batch], counts)
            for request, result in zip(batch, results, strict=True):
                request.result = result
        except (LedgerConflict, ValueError) as exc:
            # A value the ledger refused (a NUL PostgreSQL cannot store, an unknown kind):
            # one caller's.  The batch rolled back; each is tried alone, so the others are
            # recorded and only that one hears of it (attack review: one bad rejection
            # made every message of its batch wait for a retry).
            with self._cond:
                self._counts.update(counts)
            if len(batch) < 2:
                for request in batch:
                    request.error = exc
            else:
                self._one_by_one(batch)
        except BaseException as exc:  # the transaction rolled back: every caller hears of it
            with self._cond:
                self._counts.update(counts)  # tallies wait for the next commit
            if not batch:
                log.warning("tallies not committed yet: %s", exc)
            for request in batch:
                request.error = exc
        finally:
            with self._cond:
                for request in batch:
                    request.done = True
                self._leading = False
                self._committed = True
                self._cond.notify_all()

    def _one_by_one(self, batch: list[_Request]) -> None:
        """Each request of a refused batch in a transaction of its own."""
        for request in batch:
            try:
                request.result = self._ledger.record_rejections([request.rejection])[0]
            except BaseException as exc:
                request.error = exc
