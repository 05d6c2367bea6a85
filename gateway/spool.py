"""The durable spool: a message is ours only once it is on disk.

Layout under ``queue.dir``::

    journal/NNN-*.jnl   fresh mail, appended and group-fsynced (gateway/journal.py)
    journal/NNN-*.done  ids that have left that segment
    tmp/<id>            a queue file being written; removed on start-up
    queue/<id>          a message waiting for a retry: a header line, then its exact bytes,
                        or, for a copy of a rejection, the pieces that make it (gateway/spliced.py)
    bases/<id>          the message a copy is made from: one file, hard-linked under the id
                        of each copy that waits, so the spool holds it once (issue 12)
    state/<id>.json     its delivery state (attempts, next try, per-recipient results)
    corrupt/<id>        a queue file found damaged (and its state and base): set aside, never sent
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

import contextlib
import fcntl
import json
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from career_relay.errors import DamagedSpoolFile, SpoolError, UserError
from gateway import retry_requests
from gateway.envelope import Envelope, State, owner
from gateway.journal import (
    Journal,
    JournalRecord,
    fsync_dir,
    read_segment,
    segment_worker,
    segments,
)
from gateway.spliced import Base, Body, Spliced

_MAGIC = b"CRQ1 "

log = logging.getLogger("career_relay.spool")


class Spool:
    def __init__(self, root: str | Path, *, worker: int = 0, workers: int = 1):
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.queue = self.root / "queue"
        self.state = self.root / "state"
        self.journal_dir = self.root / "journal"
        self.bases = self.root / "bases"
        self.corrupt = self.root / "corrupt"  # made by the first ``quarantine``
        self.worker = worker
        self.workers = workers
        self.journal = Journal(self.journal_dir, worker)
        self._lock_fd: int | None = None
        # Copies of one rejection are filed by several delivery threads at once: the
        # first writes the shared message, the others wait and link to it.
        self._bases_lock = threading.Lock()

    def create_dirs(self) -> None:
        for d in (self.tmp, self.queue, self.state, self.journal_dir, self.bases):
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

    async def store(self, env: Envelope, data: Body) -> None:
        """Make a fresh message durable; returns only when a crash can no longer lose it."""
        await self.store_all([(env, data)])

    async def store_all(self, messages: list[tuple[Envelope, Body]]) -> None:
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
            records = [r for r in read_segment(path) if not self.exists(r.env.id)]
            for record in records:  # the shared messages first, all durable at once
                if isinstance(record.data, Spliced):
                    self._link_base(record.env.id, record.data.base)
            fsync_dir(self.bases)
            for record in records:
                self._write_file(record.env, record.data)
                moved += 1
            fsync_dir(self.queue)
            path.unlink()
            path.with_suffix(".done").unlink(missing_ok=True)
        for entry in self.tmp.iterdir():
            if owner(entry.name.split(".", 1)[0], self.workers) in segments_of:
                _remove_ours(entry)  # never answered 250: the client still has it
        for entry in self.bases.iterdir():
            # A copy filed while the gateway crashed, or removed by `queue purge`.
            if owner(entry.name, self.workers) in segments_of and not self.exists(entry.name):
                _remove_ours(entry)
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

    def store_file(self, env: Envelope, data: Body) -> None:
        """Write a message to its own queue file, durably (blocking)."""
        if isinstance(data, Spliced):
            self._link_base(env.id, data.base)
            fsync_dir(self.bases)  # the message a copy is made of, before the copy
        self._write_file(env, data)
        fsync_dir(self.queue)

    def _link_base(self, queue_id: str, base: Base) -> None:
        """``bases/<queue_id>``: the message a copy is made from, written once and
        hard-linked for every other copy (the directory is fsynced by the caller)."""
        with self._bases_lock:
            self._link_base_locked(queue_id, base)

    def _link_base_locked(self, queue_id: str, base: Base) -> None:
        target = self.bases / queue_id
        if base.stored is not None:
            try:
                os.link(base.stored, target)
                return
            except FileExistsError:
                if _same_base(target, base):
                    return
                target.unlink()
            except FileNotFoundError:
                pass  # the copy it was stored for is gone: write it afresh
        tmp = self.tmp / f"{queue_id}.base"
        try:
            _write_synced(tmp, [base.data])
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        base.stored = str(target)

    def _write_file(self, env: Envelope, data: Body) -> None:
        meta = env.meta()
        if isinstance(data, Spliced):
            meta["of"] = {"len": len(data.base.data), "crc": data.base.crc, "size": len(data)}
            payload = data.encode()
        else:
            payload = data
        tmp = self.tmp / env.id
        try:
            _write_synced(tmp, [_MAGIC + json.dumps(meta, separators=(",", ":")).encode()
                                + b"\n", payload])
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
        (self.bases / queue_id).unlink(missing_ok=True)

    def read(self, queue_id: str) -> tuple[Envelope, Body]:
        try:
            with open(self.queue / queue_id, "rb") as f:
                env, meta = _parse_header(f.readline())
                payload = f.read()
            of = meta.get("of")
            if of is None:
                return env, payload
            try:
                shared = _read_regular(self.bases / queue_id, int(of["len"]))
            except FileNotFoundError:
                raise ValueError("the message it is a copy of is missing") from None
            except OSError as exc:
                raise ValueError(f"the message it is a copy of cannot be read: {exc}") from None
            base = Base(queue_id, shared, stored=str(self.bases / queue_id))
            if base.crc != int(of["crc"]):
                raise ValueError("its shared message does not match the copy")
            return env, Spliced.decode(base, payload)
        except FileNotFoundError:
            raise UserError(f"no message {queue_id} in the queue") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise DamagedSpoolFile(f"spool file {queue_id} is damaged: {exc}") from exc

    def quarantine(self, queue_id: str) -> Path:
        """Set a damaged message aside in ``corrupt/`` (as Postfix does): never sent, never
        retried, kept for the operator to look at.  Its files keep their names."""
        self.corrupt.mkdir(mode=0o700, exist_ok=True)
        for path, name in ((self.queue / queue_id, queue_id),
                           (self.state / f"{queue_id}.json", f"{queue_id}.json"),
                           (self.bases / queue_id, f"{queue_id}.base")):
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, self.corrupt / name)
        return self.corrupt

    def corrupt_ids(self) -> list[str]:
        """The messages ``quarantine`` set aside."""
        try:
            return sorted(p.name for p in self.corrupt.iterdir()
                          if "." not in p.name)
        except FileNotFoundError:
            return []

    def message_size(self, queue_id: str) -> int:
        """The size of the message as it will be sent (a copy's, not its pieces')."""
        path = self.queue / queue_id
        with open(path, "rb") as f:
            header = f.readline()
        of = _parse_meta(header).get("of") if header.startswith(_MAGIC) else None
        if isinstance(of, dict) and isinstance(of.get("size"), int):
            return int(of["size"])
        return path.stat().st_size - len(header)

    def read_envelope(self, queue_id: str) -> Envelope:
        with open(self.queue / queue_id, "rb") as f:
            return _parse_header(f.readline())[0]

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
        never races with a delivery (``gateway.retry_requests``)."""
        retry_requests.request(self.root, self.workers, queue_ids)

    def take_retry_requests(self, worker: int) -> set[str]:
        return retry_requests.take(self.root, worker)


def _write_synced(path: Path, chunks: list[bytes]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            for chunk in chunks:
                f.write(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_base(path: Path, base: Base) -> bool:
    try:
        return _read_regular(path, len(base.data)) == base.data
    except (OSError, ValueError):
        return False


def _read_regular(path: Path, size: int) -> bytes:
    """Exactly ``size`` bytes of the regular file ``path``; ValueError when it has another
    size.  Never through a symbolic link, never blocking on a FIFO, never more than asked:
    a link to /dev/zero planted in the spool must not fill the memory."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        if st.st_size != size:
            raise ValueError(f"{st.st_size} bytes where {size} were written")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(size)
    finally:
        os.close(fd)
    if len(data) != size:
        raise ValueError("cut short")
    return data


def _remove_ours(entry: Path) -> None:
    """Remove a leftover of ours; anything that is not a file (a directory someone made)
    is left, with a warning, rather than stop the start-up."""
    try:
        entry.unlink(missing_ok=True)
    except (IsADirectoryError, PermissionError) as exc:
        log.warning("spool: left %s in place: %s", entry, exc.strerror or exc)


def _parse_meta(line: bytes) -> dict[str, Any]:
    """The JSON header line of a queue file; ValueError for anything that is not one."""
    if not line.startswith(_MAGIC):
        raise ValueError("not a spool file")
    meta = json.loads(line[len(_MAGIC):])
    if not isinstance(meta, dict):
        raise ValueError("damaged spool header: not an object")
    return meta


def _parse_header(line: bytes) -> tuple[Envelope, dict[str, Any]]:
    """The envelope of a queue file and the rest of its header; ValueError if not one."""
    meta = _parse_meta(line)
    try:
        return Envelope.from_meta(meta), meta
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"damaged spool header: {exc!r}") from None
