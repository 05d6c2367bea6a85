"""Rejections committed in the event loop, those ending together in one transaction.

A small rejection's copies are made in the loop (``Pipeline._prepared``), and
its offers are committed there too when that cannot wait
(``Rejections.record_now``: SQLite, this process's writer idle, the lock
free).  Under load the loop ends several messages within a few milliseconds,
and they share a transaction: its fixed part (taking SQLite's lock, the
commit's WAL writes, the head file: about 0.3 ms, docs/performance.md) is paid
once for all of them, as the writer's group commit does for threads.  The
first message of a batch waits ``GATHER`` for others to join it; nothing waits
for a batch to fill.

While the ledger's lock is taken (usually by the other worker's commit, a
fraction of a millisecond), the batch is tried again after 1, 2, 4 and 8 ms,
the messages that end meanwhile joining it; then each of them goes to a
thread, which waits for the lock (None from ``record``).
"""

from __future__ import annotations

import asyncio

from career_relay.errors import LedgerConflict, WouldWait
from gateway import metrics
from gateway.rejection import Draft, Outcome, Rejections

#: Seconds a batch gathers the messages that end after its first.  Committing at the end
#: of the turn (``call_soon``) shared a transaction among 1.2 rejections on average under
#: the bench's load; 2 ms, among 1.7 to 2.0; 5 ms, among 3.4, and a ``rejection-1`` cost
#: less CPU in 9 of 10 alternating rounds (2.30 against 2.41 ms on average): with two
#: workers each transaction also starts with SQLite re-reading the pages the other
#: worker's commit changed (docs/performance.md, "Every path", 2026-12-04 15:10); 10 ms,
#: no better than 5.  A rejection's 250 comes that much later; nothing else waits.
GATHER = 0.005
#: Rejections in one transaction at most (a few milliseconds of the loop's time).
MAX_BATCH = 64
#: Seconds between tries of a batch while the ledger's lock is taken.  A lock held longer
#: (a purge, a migration, a backup) sends the batch's commits to threads.
RETRIES = (0.001, 0.002, 0.004, 0.008)

_Waiting = tuple[Draft, "asyncio.Future[Outcome | None]"]


class LoopCommits:
    """One per event loop (a pipeline's)."""

    def __init__(self, rejections: Rejections) -> None:
        self._rejections = rejections
        self._pending: list[_Waiting] = []
        self._scheduled: asyncio.Handle | None = None
        self._tries = 0  # of the pending batch, after its first

    async def record(self, draft: Draft) -> Outcome | None:
        """The draft's outcome once its offers are committed here; None when that would
        wait (PostgreSQL's round trips, or the lock still taken after the tries): the
        caller then records it from a thread."""
        if not self._rejections.commits_now:
            return None
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Outcome | None] = loop.create_future()
        self._pending.append((draft, done))
        if self._scheduled is None:
            self._scheduled = loop.call_later(GATHER, self._commit)
        return await done

    def _commit(self) -> None:
        self._scheduled = None
        # A session that went away before its reply: its message was not accepted, and
        # its offers are not recorded (the client sends it again, to the same offers).
        waiting = [(draft, done) for draft, done in self._pending if not done.done()]
        # The loop does nothing else during a commit: a thousand sessions ending together
        # (the gateway sets no limit on sessions) make several commits, one per turn.
        batch, self._pending = waiting[:MAX_BATCH], waiting[MAX_BATCH:]
        if self._pending:
            self._scheduled = asyncio.get_running_loop().call_soon(self._commit)
        if not batch:
            self._tries = 0
            return
        try:
            self._commit_batch(batch)
        except BaseException as exc:
            # A bug here (a timer callback's exception is only logged) must not leave the
            # batch's sessions waiting for ever: each that has no answer yet hears of it.
            self._tries = 0
            for _, done in batch:
                _settle(done, error=exc)
            raise

    def _commit_batch(self, batch: list[_Waiting]) -> None:
        try:
            recorded = self._rejections.record_now([draft for draft, _ in batch])
        except WouldWait:
            self._again(batch)
            return
        except (LedgerConflict, ValueError) as exc:
            # A value the ledger refused, one message's: the transaction rolled back.  Each
            # goes to a thread, whose writer tries a refused batch one by one, so only that
            # message hears of it.
            self._tries = 0
            if len(batch) == 1:
                _settle(batch[0][1], error=exc)
            else:
                for _, done in batch:
                    _settle(done, None)
            return
        except Exception as exc:  # the ledger or the disk: every message hears of it
            self._tries = 0
            for _, done in batch:
                _settle(done, error=exc)
            return
        self._tries = 0
        metrics.loop_transaction()
        for (draft, done), offers in zip(batch, recorded, strict=True):
            try:
                outcome = draft.finish(offers)
            except Exception as exc:  # a bug on a hostile message: this one's alone
                _settle(done, error=exc)
            else:
                _settle(done, outcome)

    def _again(self, batch: list[_Waiting]) -> None:
        """The lock was taken: the batch tried again later, or given to threads."""
        if self._tries == len(RETRIES):
            self._tries = 0
            for _, done in batch:
                _settle(done, None)
            return
        self._pending[:0] = batch  # the messages ending meanwhile join it
        if self._scheduled is not None:  # the rest of a full batch waits with it
            self._scheduled.cancel()
        delay, self._tries = RETRIES[self._tries], self._tries + 1
        self._scheduled = asyncio.get_running_loop().call_later(delay, self._commit)


def _settle(done: asyncio.Future[Outcome | None], outcome: Outcome | None = None, *,
            error: BaseException | None = None) -> None:
    if done.done():  # its session went away meanwhile
        return
    if isinstance(error, StopIteration):
        # A Future refuses it (TypeError, and the batch's other sessions never heard of
        # their commit); a coroutine would have made it a RuntimeError (PEP 479).
        wrapped = RuntimeError(f"StopIteration: {error}")
        wrapped.__cause__ = error
        error = wrapped
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(outcome)
