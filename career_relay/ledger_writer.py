"""Group commit for the ledger's hot path: concurrent rejections share one transaction.

Each commit waits for the disk, and every gateway process writes the same
SQLite file; one commit per message made SMTP sessions queue behind each
other (and behind SQLite's busy handler, which sleeps).  One writer thread
per process takes every request waiting at that moment and commits them
together; each caller gets its own result or the shared error.
"""

from __future__ import annotations

import datetime as dt
import queue
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import Future

from career_relay.ledger import Ledger, Rejection

_MAX_BATCH = 200
_WAIT = 60.0  # seconds a caller waits for its commit (SQLite's busy timeout is 30 s)


class LedgerWriter:
    def __init__(self, ledger: Ledger):
        self._ledger = ledger
        # SimpleQueue (in C) rather than Queue (a Condition in Python): every rejection
        # puts one request here, and in profiles Queue.put cost as much as the commit.
        self._queue: queue.SimpleQueue[tuple[Rejection, Future[dict[str, str]]] | None] = (
            queue.SimpleQueue())
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    def record_rejection(self, company: str, message_id: str,
                         offers: Sequence[tuple[str, str]], job: str | None = None,
                         channel: str | None = None, stage: str | None = None,
                         created: dt.datetime | None = None) -> dict[str, str]:
        """Blocking, like ``Ledger.record_rejection``; returns once the commit is done."""
        if self._closed or not self._thread.is_alive():
            raise sqlite3.OperationalError("the ledger writer has stopped")
        done: Future[dict[str, str]] = Future()
        self._queue.put((Rejection(company, message_id, tuple(offers), job, channel, stage,
                                   created), done))
        return done.result(timeout=_WAIT)

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._thread.join(_WAIT)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < _MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            try:
                results = self._ledger.record_rejections([r for r, _ in batch])
                for (_, done), result in zip(batch, results, strict=True):
                    done.set_result(result)
            except Exception as exc:  # the transaction rolled back: every caller hears of it
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
