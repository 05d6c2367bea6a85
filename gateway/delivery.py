"""The delivery worker: sends spooled messages upstream until each recipient is settled.

Several senders run at once, each keeping its own upstream connection open
between messages.  Fresh mail is handed over in memory right after it is
spooled; retries and mail found on disk at start-up come from a schedule
kept in a heap.  Every outcome is written to the spool before the next step,
so a crash at any moment re-sends at most the message that was in flight.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from career_relay.settings import QueueSettings, UpstreamSettings
from gateway.dsn import build_dsn
from gateway.envelope import Envelope, State, new_id, owner
from gateway.spool import Spool
from gateway.upstream import Reply, Upstream

log = logging.getLogger("career_relay.delivery")

_IDLE_CLOSE = 30.0  # seconds an unused upstream connection is kept open
_RESCAN = 1.0  # seconds between looks at the schedule and the flush request


@dataclass
class _Item:
    env: Envelope
    data: bytes | None  # in memory for fresh mail (in the journal); else read from its file

    @property
    def fresh(self) -> bool:
        return self.data is not None


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
        self._ready: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._schedule: list[tuple[float, str]] = []
        self._known: set[str] = set()  # queued, scheduled or in flight
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0

    # -- life cycle ------------------------------------------------------------------

    async def start(self) -> int:
        """Pick up what the spool holds for this worker, then start sending."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.spool.recover)
        recovered = await loop.run_in_executor(None, self._recover)
        for _ in range(self._upstream.connections):
            self._tasks.append(asyncio.create_task(self._sender()))
        self._tasks.append(asyncio.create_task(self._scheduler()))
        return recovered

    def _recover(self) -> int:
        count = 0
        for queue_id in self.spool.ids():
            if owner(queue_id, self._workers) != self._worker:
                continue
            state = self.spool.load_state(queue_id)
            heapq.heappush(self._schedule, (state.next_attempt, queue_id))
            self._known.add(queue_id)
            count += 1
        return count

    async def stop(self, timeout: float) -> None:
        """Let in-flight deliveries finish (up to ``timeout``), then close connections."""
        for _ in range(self._upstream.connections):
            self._ready.put_nowait(None)
        senders = self._tasks[:-1]
        self._tasks[-1].cancel()
        _, pending = await asyncio.wait(senders, timeout=timeout) if senders else ((), ())
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def submit(self, env: Envelope, data: bytes) -> None:
        """Hand over a message that was just spooled."""
        self._known.add(env.id)
        self._ready.put_nowait(_Item(env, data))

    @property
    def depth(self) -> int:
        return len(self._known)

    # -- scheduling -------------------------------------------------------------------

    async def _scheduler(self) -> None:
        while True:
            if self.spool.take_flush_request():
                self._reload_schedule()  # rare (an operator's command): fine on the loop
            now = time.time()
            while self._schedule and self._schedule[0][0] <= now:
                _, queue_id = heapq.heappop(self._schedule)
                item = self._load(queue_id)
                if item is not None:
                    self._ready.put_nowait(item)
            wait = _RESCAN
            if self._schedule:
                wait = min(wait, max(0.0, self._schedule[0][0] - now))
            await asyncio.sleep(wait)

    def _reload_schedule(self) -> None:
        """`queue retry` changed next-attempt times on disk: read them again."""
        entries = [(self.spool.load_state(qid).next_attempt, qid) for _, qid in self._schedule]
        for queue_id in self.spool.ids():
            if owner(queue_id, self._workers) == self._worker and queue_id not in self._known:
                entries.append((self.spool.load_state(queue_id).next_attempt, queue_id))
                self._known.add(queue_id)
        heapq.heapify(entries)
        self._schedule = entries

    def _load(self, queue_id: str) -> _Item | None:
        try:
            return _Item(self.spool.read_envelope(queue_id), None)
        except FileNotFoundError:  # purged by `career-relay queue purge`
            self._known.discard(queue_id)
            return None
        except ValueError:
            log.error("queue_id=%s spool file is damaged; left in place", queue_id)
            self._known.discard(queue_id)
            return None

    # -- sending ------------------------------------------------------------------------

    async def _sender(self) -> None:
        upstream = Upstream(self._upstream, self._hostname)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self._ready.get(), _IDLE_CLOSE)
                except TimeoutError:
                    await upstream.quit()
                    continue
                if item is None:
                    return
                self._busy += 1
                try:
                    await self._attempt(upstream, item)
                except Exception:
                    # A bug must not stop the worker; the message stays spooled.
                    log.exception("queue_id=%s delivery attempt failed", item.env.id)
                    await self._defer_after_bug(item)
                finally:
                    self._busy -= 1
        finally:
            await upstream.quit()

    async def _attempt(self, upstream: Upstream, item: _Item) -> None:
        env = item.env
        loop = asyncio.get_running_loop()
        data = item.data
        if data is None:
            try:
                _, data = await loop.run_in_executor(None, self.spool.read, env.id)
            except Exception:
                self._known.discard(env.id)  # purged meanwhile
                return
        assert data is not None
        state = State() if item.fresh else self.spool.load_state(env.id)
        pending = [r for r in env.rcpts if r not in state.delivered and r not in state.bounced]
        options = [o for o, on in (("BODY=8BITMIME", env.body == "8BITMIME"),
                                   ("SMTPUTF8", env.smtputf8)) if on]
        replies = await upstream.send(env.mail_from, pending, data, options) if pending else {}
        if item.fresh and all(r.ok for r in replies.values()):
            # The common case, done on the loop: a line in the journal's .done file.
            self.spool.journal.done(env.id)
            self._known.discard(env.id)
            log.info("queue_id=%s done: %d delivered, attempts=1", env.id, len(replies))
            return
        # Disk work runs in a thread; the schedule itself is touched only here,
        # on the event loop, so the heap needs no lock.
        due = await loop.run_in_executor(None, self._settle, env, data, state, replies,
                                         item.fresh)
        if item.fresh:
            self.spool.journal.done(env.id)  # after its queue file (if any) is durable
        if not any(qid == env.id for _, qid in due):
            self._known.discard(env.id)
        for entry in due:
            self._known.add(entry[1])
            heapq.heappush(self._schedule, entry)

    def _settle(
        self, env: Envelope, data: bytes, state: State, replies: dict[str, Reply], fresh: bool
    ) -> list[tuple[float, str]]:
        """Record what the attempt achieved and bounce what failed (blocking).

        Returns the (time, queue id) pairs to schedule: this message if some
        recipients are deferred, and a new DSN if one was queued.
        """
        state.delivered += [r for r, rep in replies.items() if rep.ok]
        failed = {r: str(rep) for r, rep in replies.items() if rep.permanent}
        deferred = {r: rep for r, rep in replies.items() if not rep.ok and not rep.permanent}
        expired = time.time() - env.arrival >= self._queue.max_age
        if deferred and expired:
            failed.update({r: f"4.4.7 message expired after {self._queue.max_age} s in the "
                              f"queue; last reply: {rep}" for r, rep in deferred.items()})
            deferred = {}
        due: list[tuple[float, str]] = []
        if failed:
            dsn_id = self._bounce(env, data, failed)
            if dsn_id:
                due.append((0.0, dsn_id))
            state.bounced.update(failed)
        delivered = sum(1 for r in replies.values() if r.ok)
        if not deferred:
            if not fresh:
                self.spool.remove(env.id)
            log.info("queue_id=%s done: %d delivered, %d bounced, attempts=%d", env.id,
                     delivered, len(failed), state.attempts + 1)
            return due
        state.attempts += 1
        schedule = self._queue.retry_schedule
        state.last_attempt = time.time()
        state.next_attempt = state.last_attempt + schedule[min(state.attempts - 1,
                                                               len(schedule) - 1)]
        state.last_error = str(next(iter(deferred.values())))
        if fresh:
            self.spool.store_file(env, data)  # it must wait: give it a queue file of its own
        self.spool.save_state(env.id, state)
        due.append((state.next_attempt, env.id))
        log.info("queue_id=%s deferred: %d recipient(s), attempt %d, next in %d s: %s", env.id,
                 len(deferred), state.attempts, state.next_attempt - time.time(),
                 state.last_error)
        return due

    def _bounce(self, env: Envelope, data: bytes, failed: dict[str, str]) -> str | None:
        """Queue a DSN to the sender (durably, before the failure is recorded)."""
        if env.dsn or not env.mail_from:
            log.info("queue_id=%s %d recipient(s) failed; no DSN for a null sender",
                     env.id, len(failed))
            return None
        dsn = build_dsn(env, data, failed, hostname=self._hostname,
                        remote_mta=self._upstream.host, template_dir=self._template_dir)
        dsn_env = Envelope(id=new_id(self._worker, self._workers), mail_from="",
                           rcpts=[env.mail_from], arrival=time.time(), dsn=True,
                           smtputf8=env.smtputf8,
                           body="8BITMIME" if any(b > 127 for b in dsn) else "")
        self.spool.store_file(dsn_env, dsn)
        log.info("queue_id=%s %d recipient(s) failed; DSN queued as %s", env.id, len(failed),
                 dsn_env.id)
        return dsn_env.id

    async def _defer_after_bug(self, item: _Item) -> None:
        if item.fresh:
            assert item.data is not None
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, self.spool.store_file, item.env, item.data)
            except OSError:
                log.exception("queue_id=%s stays in the journal until restart", item.env.id)
                return
            self.spool.journal.done(item.env.id)
        due = time.time() + self._queue.retry_schedule[0]
        heapq.heappush(self._schedule, (due, item.env.id))
