"""The durable spool: a message is ours only once it is on disk.

Layout under ``queue.dir``::

    journal/NNN-*.jnl   fresh mail, appended and group-fsynced (gateway/journal.py)
    journal/NNN-*.done  ids that have left that segment
    tmp/<id>            a queue file being written; removed on start-up
    queue/<id>          a message waiting for a retry: a header line, then its exact bytes
    state/<id>.json     its delivery state (attempts, next try, per-recipient results)
    retry-NNN           queue ids (or "*") that ``career-relay queue retry`` asks worker NNN
                        to try now; the worker changes the state itself

Fresh mail goes to the journal before the 250 (RFC 5321 section 6.1: the
server MUST NOT lose a message it has accepted).  Most of it is delivered
at the first attempt and never needs a file of its own; mail that must wait
is moved to ``queue/`` first.  A queue file is written to ``tmp/``, fsynced,
renamed, and the directory fsynced, so both its bytes and its name survive
a crash.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from career_relay.errors import SpoolError, UserError
from gateway.envelope import Envelope, State, owner
from gateway.journal import (
    Journal,
    JournalRecord,
    fsync_dir,
    read_segment,
    segment_worker,
    segments,
)

_MAGIC = b"CRQ1 "


class Spool:
    def __init__(self, root: str | Path, *, worker: int = 0, workers: int = 1):
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.queue = self.root / "queue"
        self.state = self.root / "state"
        self.journal_dir = self.root / "journal"
        self.worker = worker
        self.workers = workers
        self.journal = Journal(self.journal_dir, worker)
        self._lock_fd: int | None = None

    def create_dirs(self) -> None:
        for d in (self.tmp, self.queue, self.state, self.journal_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)

    def try_lock(self, worker: int | None = None) -> int | None:
        """Hold this worker's lock for the life of the process.

        Two processes delivering the same part of the spool would send mail
        twice, so a second gateway (or a restarted worker whose predecessor
        still runs) must wait for the first to be gone.
        """
        index = self.worker if worker is None else worker
        fd = os.open(self.root / f"worker-{index:03d}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if worker is None:
            self._lock_fd = fd  # released by unlock() or when the process exits
        return fd

    def unlock(self, fd: int | None = None) -> None:
        if fd is None:
            fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    # -- fresh mail -------------------------------------------------------------------

    async def store(self, env: Envelope, data: bytes) -> None:
        """Make a fresh message durable; returns only when a crash can no longer lose it."""
        await self.store_all([(env, data)])

    async def store_all(self, messages: list[tuple[Envelope, bytes]]) -> None:
        """``store`` for several messages at once (one write, one fsync), all or none."""
        try:
            await self.journal.append(messages)
        except OSError as exc:
            raise SpoolError(f"cannot write to the spool ({exc.strerror or exc})") from exc

    def recover(self, segments_of: list[int]) -> int:
        """Move what stopped or crashed runs left in the journal to queue files.

        ``segments_of`` names the workers whose segments to take: a worker its
        own; the first worker, before it starts the others, every index it
        finds, so that nothing is stranded when the number of workers changes.
        """
        moved = 0
        for path in segments(self.journal_dir):
            if segment_worker(path) not in segments_of:
                continue
            for record in read_segment(path):
                if not self.exists(record.env.id):
                    self._write_file(record.env, record.data)
                    moved += 1
            fsync_dir(self.queue)
            path.unlink()
            path.with_suffix(".done").unlink(missing_ok=True)
        for entry in self.tmp.iterdir():
            if owner(entry.name.split(".", 1)[0], self.workers) in segments_of:
                entry.unlink(missing_ok=True)  # never answered 250: the client still has it
        return moved

    def journal_workers(self) -> set[int]:
        return {segment_worker(path) for path in segments(self.journal_dir)}

    def journal_records(self) -> Iterator[JournalRecord]:
        """Fresh mail of every worker still in the journal (for `queue list`)."""
        for path in segments(self.journal_dir):
            try:
                yield from read_segment(path)
            except FileNotFoundError:
                continue  # its last message left while we looked

    # -- queue files --------------------------------------------------------------------

    def store_file(self, env: Envelope, data: bytes) -> None:
        """Write a message to its own queue file, durably (blocking)."""
        self._write_file(env, data)
        fsync_dir(self.queue)

    def _write_file(self, env: Envelope, data: bytes) -> None:
        tmp = self.tmp / env.id
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                with os.fdopen(fd, "wb", closefd=False) as f:
                    f.write(_MAGIC + json.dumps(env.meta(), separators=(",", ":")).encode()
                            + b"\n")
                    f.write(data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.queue / env.id)
        except BaseException:
            tmp.unlink(missing_ok=True)  # nothing half-written may stay behind
            raise

    def save_state(self, queue_id: str, state: State) -> None:
        """Atomically replace a message's delivery state (write, fsync, rename)."""
        tmp = self.tmp / f"{queue_id}.state"
        with open(tmp, "wb") as f:
            f.write(state.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.state / f"{queue_id}.json")
        fsync_dir(self.state)

    def remove(self, queue_id: str) -> None:
        """Forget a finished queue file: its bytes first, then its state."""
        (self.queue / queue_id).unlink(missing_ok=True)
        (self.state / f"{queue_id}.json").unlink(missing_ok=True)

    def read(self, queue_id: str) -> tuple[Envelope, bytes]:
        try:
            with open(self.queue / queue_id, "rb") as f:
                env = _parse_header(f.readline())
                return env, f.read()
        except FileNotFoundError:
            raise UserError(f"no message {queue_id} in the queue") from None
        except ValueError as exc:
            raise SpoolError(f"spool file {queue_id} is damaged: {exc}") from exc

    def read_envelope(self, queue_id: str) -> Envelope:
        with open(self.queue / queue_id, "rb") as f:
            return _parse_header(f.readline())

    def load_state(self, queue_id: str) -> State:
        try:
            return State.from_json((self.state / f"{queue_id}.json").read_bytes())
        except FileNotFoundError:
            return State()
        except ValueError:
            # State files are replaced atomically, so this is outside damage;
            # retrying everyone not known delivered is the safe reading.
            return State()

    def ids(self) -> Iterator[str]:
        try:
            entries = os.scandir(self.queue)
        except FileNotFoundError:
            return
        with entries:
            for entry in entries:
                if entry.is_file() and not entry.name.startswith("."):
                    yield entry.name

    def exists(self, queue_id: str) -> bool:
        return (self.queue / queue_id).exists()

    def request_retry(self, queue_ids: list[str]) -> None:
        """Ask the running workers to try these messages now (all of them: ["*"]).

        Only the worker that owns a message changes its state, so a request
        never races with a delivery; appending a line is atomic (O_APPEND).
        """
        by_worker: dict[int, list[str]] = {}
        for queue_id in queue_ids:
            targets = range(self.workers) if queue_id == "*" else [owner(queue_id, self.workers)]
            for worker in targets:
                by_worker.setdefault(worker, []).append(queue_id)
        for worker, ids in by_worker.items():
            fd = os.open(self.root / f"retry-{worker:03d}", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                         0o600)
            try:
                os.write(fd, "".join(f"{i}\n" for i in ids).encode())
            finally:
                os.close(fd)

    def take_retry_requests(self, worker: int) -> set[str]:
        path = self.root / f"retry-{worker:03d}"
        taken = path.with_name(path.name + ".taken")
        try:
            os.rename(path, taken)  # requests appended from now on go to a new file
        except FileNotFoundError:
            return set()
        ids = set(taken.read_text(encoding="ascii", errors="replace").split())
        taken.unlink()
        return ids


def _parse_header(line: bytes) -> Envelope:
    """The envelope of a queue file; ValueError for anything that is not one."""
    if not line.startswith(_MAGIC):
        raise ValueError("not a spool file")
    try:
        return Envelope.from_meta(json.loads(line[len(_MAGIC):]))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"damaged spool header: {exc!r}") from None
