"""The delivery worker: sends spooled messages upstream until each recipient is settled.

Several senders run at once, each keeping its own upstream connection open
between messages.  Fresh mail is handed over in memory right after it is
journaled; retries and mail found on disk at start-up come from a schedule
kept in a heap.  The worker's memory is the authority on a message's
progress while it runs (so a disk that refuses a state update never makes a
delivered recipient get the message again); every outcome is also written
to the spool, so after a crash at most the message in flight is re-sent.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from career_relay.errors import DamagedSpoolFile, LedgerUnavailable, SmtpReplyError, UserError
from career_relay.logs import without_addresses
from career_relay.settings import QueueSettings, UpstreamSettings
from gateway import metrics
from gateway.dsn import build_dsn
from gateway.envelope import Envelope, State, new_id, owner
from gateway.smtp_replies import Reply
from gateway.spliced import Body, materialised
from gateway.spool import Spool
from gateway.upstream import Upstream

log = logging.getLogger("career_relay.delivery")

_IDLE_CLOSE = 30.0  # seconds an unused upstream connection is kept open
_RESCAN = 1.0  # seconds between looks at the schedule and at retry requests
#: Seconds between two looks at whether the ledger is back, for a held rejection.
HELD_RETRY = 30.0


@dataclass
class _Entry:
    env: Envelope
    state: State
    # Held in memory while the message has no queue file; a rejection's copy as its
    # pieces of the shared message, made whole only while it is sent (gateway/spliced.py).
    data: Body | None = None
    in_journal: bool = False  # fresh mail: it leaves the journal once settled or filed
    busy: bool = False
    due: float = 0.0


@dataclass
class _Outcome:
    """What the blocking part of settling achieved (returned to the event loop)."""

    filed: bool = False  # the message now has its own queue file
    bounced: dict[str, str] = field(default_factory=dict)
    dsn: Envelope | None = None  # the bounce queued for the sender
    error: str = ""


class Delivery:
    def __init__(
        self,
        spool: Spool,
        upstream: UpstreamSettings,
        queue: QueueSettings,
        *,
        hostname: str,
        template_dir: Path,
        worker: int = 0,
        workers: int = 1,
    ):
        self.spool = spool
        self._upstream = upstream
        self._queue = queue
        self._hostname = hostname
        self._template_dir = template_dir
        self._worker = worker
        self._workers = workers
        self._ready: asyncio.Queue[str | None] = asyncio.Queue()
        self._schedule: list[tuple[float, str]] = []
        self._messages: dict[str, _Entry] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._gauged = -_RESCAN  # when the queue gauges were last set (monotonic)
        #: Makes a held rejection's copies once the ledger is back (``Pipeline.release``).
        self.release: Callable[[Envelope, bytes], Awaitable[list[str]]] | None = None

    # -- life cycle ------------------------------------------------------------------

    async def start(self) -> int:
        """Pick up the queue files this worker owns, then start sending."""
        found = await asyncio.get_running_loop().run_in_executor(None, self._scan)
        for entry in found:
            self._add(entry)
        for _ in range(self._upstream.connections):
            self._tasks.append(asyncio.create_task(self._sender()))
        self._tasks.append(asyncio.create_task(self._scheduler()))
        return len(found)

    async def stop(self, timeout: float) -> None:
        """Let deliveries in flight finish (up to ``timeout``), then close connections.

        What has not been sent stays in the journal or in its queue file.
        """
        for _ in range(self._upstream.connections):
            self._ready.put_nowait(None)
        senders, scheduler = self._tasks[:-1], self._tasks[-1]
        scheduler.cancel()
        if senders:
            _, pending = await asyncio.wait(senders, timeout=timeout)
            for task in pending:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def submit(self, env: Envelope, data: Body) -> None:
        """Hand over a message that was just journaled."""
        self._messages[env.id] = _Entry(env, State(), data, in_journal=True)
        self._ready.put_nowait(env.id)

    # -- scheduling -------------------------------------------------------------------

    def _scan(self) -> list[_Entry]:
        """Queue files of this worker that it does not know yet (blocking)."""
        found = []
        for queue_id in self.spool.ids():
            if owner(queue_id, self._workers) != self._worker or queue_id in self._messages:
                continue
            try:
                env = self.spool.read_envelope(queue_id)
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                log.error("queue_id=%s cannot be read, left in place: %s", queue_id, exc)
                continue
            state = self.spool.load_state(queue_id)
            # A held rejection is looked at again at once: its state's next attempt is the
            # retry schedule's (hours, after a long outage), not HELD_RETRY's (``_release``).
            due = 0.0 if env.held is not None else state.next_attempt
            found.append(_Entry(env, state, due=due))
        return found

    def _add(self, entry: _Entry) -> None:
        self._messages[entry.env.id] = entry
        heapq.heappush(self._schedule, (entry.due, entry.env.id))

    async def _scheduler(self) -> None:
        while True:
            try:
                await self._schedule_once()
            except Exception:
                # A damaged file or a full disk must not stop every retry of this worker.
                log.exception("scheduler error; going on")
            await asyncio.sleep(self._next_wait())

    async def _schedule_once(self) -> None:
        if time.monotonic() - self._gauged >= _RESCAN:  # O(queue): once a second at most
            self._gauged = time.monotonic()
            metrics.queue(e.env.arrival for e in self._messages.values())
        requested = self.spool.take_retry_requests(self._worker)
        if requested:
            await self._honour_retry(requested)
        now = time.time()
        while self._schedule and self._schedule[0][0] <= now:
            due, queue_id = heapq.heappop(self._schedule)
            entry = self._messages.get(queue_id)
            if entry is not None and not entry.busy and entry.due == due:
                entry.busy = True
                self._ready.put_nowait(queue_id)

    def _next_wait(self) -> float:
        if not self._schedule:
            return _RESCAN
        return min(_RESCAN, max(0.0, self._schedule[0][0] - time.time()))

    async def _honour_retry(self, requested: set[str]) -> None:
        """`career-relay queue retry`: make the named messages (or all: "*") due now."""
        found = await asyncio.get_running_loop().run_in_executor(None, self._scan)
        for entry in found:
            self._add(entry)
        now = time.time()
        for queue_id, entry in self._messages.items():
            if ("*" in requested or queue_id in requested) and not entry.busy:
                entry.due = now
                heapq.heappush(self._schedule, (now, queue_id))

    # -- sending ------------------------------------------------------------------------

    async def _sender(self) -> None:
        upstream = Upstream(self._upstream, self._hostname)
        try:
            while True:
                try:
                    queue_id = await asyncio.wait_for(self._ready.get(), _IDLE_CLOSE)
                except TimeoutError:
                    await upstream.quit()
                    continue
                if queue_id is None:
                    return
                entry = self._messages.get(queue_id)
                if entry is None:
                    continue
                entry.busy = True
                try:
                    await self._attempt(upstream, entry)
                except Exception:
                    # A bug must not lose the message or stop the worker: retry later,
                    # and like any other retry, not beyond queue.max_age.
                    log.exception("queue_id=%s delivery attempt failed", queue_id)
                    await self._retry_or_expire(entry, "4.3.0 internal error during delivery")
                finally:
                    entry.busy = False
        finally:
            await upstream.quit()

    async def _attempt(self, upstream: Upstream, entry: _Entry) -> None:
        env, state = entry.env, entry.state
        loop = asyncio.get_running_loop()
        data = entry.data
        if data is None:
            try:
                _, data = await loop.run_in_executor(None, self.spool.read, env.id)
            except UserError:  # purged with `career-relay queue purge`
                self._messages.pop(env.id, None)
                return
            except DamagedSpoolFile as exc:
                # Retrying cannot mend it, and sending it could send something else.
                where = await loop.run_in_executor(None, self.spool.quarantine, env.id)
                self._messages.pop(env.id, None)
                log.error("queue_id=%s %s: set aside in %s, not sent", env.id, exc, where)
                return
        assert data is not None
        if env.held is not None:
            await self._release(entry, data)
            return
        pending = [r for r in env.rcpts if r not in state.delivered and r not in state.bounced]
        options = [o for o, on in (("BODY=8BITMIME", env.body == "8BITMIME"),
                                   ("SMTPUTF8", env.smtputf8)) if on]
        replies = (await upstream.send(env.mail_from, pending, materialised(data), options)
                   if pending else {})
        state.delivered += [r for r, rep in replies.items() if rep.ok]
        metrics.delivered(env.arrival, sum(1 for rep in replies.values() if rep.ok))
        if entry.in_journal and all(r.ok for r in replies.values()):
            # The common case, done on the loop: a line in the journal's .done file.
            self._finish(entry)
            log.info("queue_id=%s done: %d delivered, attempts=1", env.id, len(replies))
            return
        await self._settle(entry, data, replies)

    async def _settle(self, entry: _Entry, data: Body, replies: dict[str, Reply]) -> None:
        env, state = entry.env, entry.state
        failed = {r: str(rep) for r, rep in replies.items() if rep.permanent}
        deferred = {r: rep for r, rep in replies.items() if not rep.ok and not rep.permanent}
        if deferred and time.time() - env.arrival >= self._queue.max_age:
            failed.update({r: f"4.4.7 message expired after {self._queue.max_age} s in the "
                              f"queue; last reply: {rep}" for r, rep in deferred.items()})
            deferred = {}
        if deferred:
            self._advance(state, str(next(iter(deferred.values()))))
        dsn_id = new_id(self._worker, self._workers) if failed and self._bounces(env) else None
        if dsn_id:  # reserved, so a retry request's scan cannot pick up the half-made file
            self._messages[dsn_id] = _Entry(env, State(), busy=True)
        outcome = await asyncio.get_running_loop().run_in_executor(
            None, self._record, entry, data, failed, bool(deferred), dsn_id)
        if dsn_id:
            del self._messages[dsn_id]
        if outcome.dsn is not None:
            self._add(_Entry(outcome.dsn, State()))
        state.bounced.update(outcome.bounced)
        metrics.BOUNCED.inc(len(outcome.bounced))
        if outcome.error:
            log.error("queue_id=%s could not record its progress (%s); kept in memory",
                      env.id, outcome.error)
        if outcome.filed and entry.in_journal:
            entry.in_journal, entry.data = False, None
            self.spool.journal.done(env.id)
        unsettled = [r for r in env.rcpts if r not in state.delivered and r not in state.bounced]
        if not unsettled:
            self._finish(entry)
            log.info("queue_id=%s done: %d delivered, %d bounced, attempts=%d", env.id,
                     len(state.delivered), len(state.bounced), state.attempts + 1)
            return
        if not deferred:  # the DSN could not be written: try these recipients again later
            self._advance(state, outcome.error or "4.3.0 bounce not recorded")
        if entry.in_journal:
            entry.data = data  # no queue file yet: keep the bytes until one can be written
        entry.due = state.next_attempt
        heapq.heappush(self._schedule, (entry.due, env.id))
        metrics.DEFERRED.inc(len(unsettled))
        log.info("queue_id=%s deferred: %d recipient(s), attempt %d, next in %d s: %s", env.id,
                 len(unsettled), state.attempts, state.next_attempt - time.time(),
                 without_addresses(state.last_error or ""))

    def _record(self, entry: _Entry, data: Body, failed: dict[str, str], deferred: bool,
                dsn_id: str | None) -> _Outcome:
        """The blocking part: bounce, file, save state. Never raises (runs in a thread)."""
        env = entry.env
        out = _Outcome()
        try:
            if failed:
                if dsn_id:
                    out.dsn = self._write_dsn(env, data, failed, dsn_id)
                out.bounced = failed  # only now: the DSN is durable
            if deferred:
                if entry.in_journal:
                    self.spool.store_file(env, data)  # it must wait: a queue file of its own
                    out.filed = True
                self.spool.save_state(env.id, _merged(entry.state, out.bounced))
            elif not entry.in_journal:
                self.spool.remove(env.id)
        except OSError as exc:
            out.error = exc.strerror or str(exc)
        return out

    def _bounces(self, env: Envelope) -> bool:
        if env.dsn or not env.mail_from:
            log.info("queue_id=%s recipient(s) failed; no DSN for a null sender", env.id)
            return False
        return True

    def _write_dsn(self, env: Envelope, data: Body, failed: dict[str, str],
                   dsn_id: str) -> Envelope:
        dsn = build_dsn(env, materialised(data), failed, hostname=self._hostname,
                        remote_mta=self._upstream.host, template_dir=self._template_dir)
        dsn_env = Envelope(id=dsn_id, mail_from="", rcpts=[env.mail_from], arrival=time.time(),
                           dsn=True, smtputf8=env.smtputf8,
                           body="8BITMIME" if any(b > 127 for b in dsn) else "")
        self.spool.store_file(dsn_env, dsn)
        log.info("queue_id=%s %d recipient(s) failed; DSN queued as %s", env.id, len(failed),
                 dsn_id)
        return dsn_env

    def _advance(self, state: State, reason: str) -> None:
        """Count an attempt that left recipients waiting, and set the next by the schedule."""
        schedule = self._queue.retry_schedule
        state.attempts += 1
        state.last_attempt = time.time()
        state.next_attempt = state.last_attempt + schedule[min(state.attempts - 1,
                                                               len(schedule) - 1)]
        state.last_error = reason

    async def _retry_or_expire(self, entry: _Entry, reason: str) -> None:
        """After an attempt that failed inside the gateway: the next attempt by the
        schedule, or, once ``queue.max_age`` has passed, a bounce (4.4.7) like every
        other path (``_settle``), so no message is retried for ever."""
        env, state = entry.env, entry.state
        if time.time() - env.arrival < self._queue.max_age:
            self._retry_later(entry, reason)
            return
        pending = [r for r in env.rcpts if r not in state.delivered and r not in state.bounced]
        try:
            data = entry.data
            if data is None:
                _, data = await asyncio.get_running_loop().run_in_executor(
                    None, self.spool.read, env.id)
            assert data is not None
            await self._settle(entry, data, {r: Reply(451, reason) for r in pending})
        except Exception:  # the expiry itself failed: keep the message, try again later
            log.exception("queue_id=%s could not be expired; kept", env.id)
            self._retry_later(entry, reason)

    def _retry_later(self, entry: _Entry, reason: str) -> None:
        state = entry.state
        metrics.DEFERRED.inc(len([r for r in entry.env.rcpts if r not in state.delivered
                                  and r not in state.bounced]))
        self._advance(entry.state, reason)
        entry.due = entry.state.next_attempt
        heapq.heappush(self._schedule, (entry.due, entry.env.id))

    async def _release(self, entry: _Entry, data: Body) -> None:
        """A held rejection (SPEC 12): its copies, made now that the ledger is back, take its
        place in the queue; while the ledger is still away it waits ``HELD_RETRY`` seconds,
        and once ``queue.max_age`` has passed its sender gets a bounce, as for any message
        that could not be sent (never the message with its marker bare)."""
        env = entry.env
        try:
            if self.release is None:
                raise LedgerUnavailable("no ledger in this process")
            ids = await self.release(env, materialised(data))
        except (LedgerUnavailable, UserError, SmtpReplyError, OSError) as exc:
            # As a deferral: a queue file and its state, or past max_age the bounce; a
            # permanent refusal (its From no longer the company's) bounces now.
            code = exc.code if isinstance(exc, SmtpReplyError) else 451
            status = exc.status if isinstance(exc, SmtpReplyError) else "4.3.0"
            # The reply a bounce would carry to the company's sender says what happened in
            # its words, never the ledger's (server names, grants: the log has those).
            reason = (f"{status} held: {exc}" if isinstance(exc, SmtpReplyError) else
                      f"{status} held: the ledger was unavailable; the links could not be "
                      "added")
            log.info("queue_id=%s still held: %s", env.id, exc)
            await self._settle(entry, data, {r: Reply(code, reason) for r in env.rcpts})
            if env.id in self._messages:  # still held: look again soon, not by the schedule
                entry.due = entry.state.next_attempt = time.time() + HELD_RETRY
                heapq.heappush(self._schedule, (entry.due, env.id))
            return
        if not entry.in_journal:
            await asyncio.get_running_loop().run_in_executor(None, self.spool.remove, env.id)
        self._finish(entry)
        log.info("queue_id=%s released: the ledger is back; its copies are %s", env.id,
                 " ".join(ids))
        self._wake_held()

    def _wake_held(self) -> None:
        """The ledger is back: every other held rejection is due now."""
        now = time.time()
        for entry in self._messages.values():
            if entry.env.held is not None and not entry.busy and entry.due > now:
                entry.due = now
                heapq.heappush(self._schedule, (now, entry.env.id))

    def _finish(self, entry: _Entry) -> None:
        if entry.in_journal:
            self.spool.journal.done(entry.env.id)
        self._messages.pop(entry.env.id, None)


def _merged(state: State, bounced: dict[str, str]) -> State:
    return State(attempts=state.attempts, next_attempt=state.next_attempt,
                 last_attempt=state.last_attempt, delivered=list(state.delivered),
                 bounced={**state.bounced, **bounced}, last_error=state.last_error)
