"""The durable spool: a message is ours only once it is on disk.

Layout under ``queue.dir``::

    tmp/<id>            being written; never delivered, removed on start-up
    queue/<id>          accepted: a header line (JSON envelope) then the exact bytes to send
    state/<id>.json     delivery state after the first attempt (attempts, next try, results)
    flush               touched by ``career-relay queue retry`` to ask for an early retry

A message file is written to ``tmp/``, fsynced, renamed into ``queue/``, and
then the ``queue/`` directory is fsynced, so that both the bytes and the name
survive a crash (RFC 5321 section 6.1: the server MUST NOT lose a message it
has accepted; Postfix answers 250 only after ``mail_stream_finish_file``'s
fsync).  The directory fsync is a group commit: one fsync covers every
message renamed in before it started, so 20 concurrent sessions cost far
fewer than 20 directory syncs.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from career_relay.errors import SpoolError, UserError

_MAGIC = b"CRQ1 "


@dataclass
class Envelope:
    """What the spool keeps about a message besides its bytes."""

    id: str
    mail_from: str  # "" is the null reverse-path (RFC 5321 section 4.5.5)
    rcpts: list[str]
    arrival: float
    smtputf8: bool = False
    body: str = ""  # "8BITMIME" when the client declared BODY=8BITMIME (RFC 6152)
    dsn: bool = False  # this message is itself a bounce: never bounce it

    def header(self) -> bytes:
        meta = {"id": self.id, "from": self.mail_from, "rcpts": self.rcpts,
                "arrival": self.arrival, "smtputf8": self.smtputf8, "body": self.body,
                "dsn": self.dsn}
        return _MAGIC + json.dumps(meta, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_header(cls, line: bytes) -> Envelope:
        if not line.startswith(_MAGIC):
            raise ValueError("not a spool file")
        meta = json.loads(line[len(_MAGIC):])
        return cls(id=meta["id"], mail_from=meta["from"], rcpts=list(meta["rcpts"]),
                   arrival=float(meta["arrival"]), smtputf8=bool(meta.get("smtputf8")),
                   body=str(meta.get("body", "")), dsn=bool(meta.get("dsn")))


@dataclass
class State:
    """Delivery progress; absent until the first attempt that did not finish the message."""

    attempts: int = 0
    next_attempt: float = 0.0
    last_attempt: float = 0.0
    delivered: list[str] = field(default_factory=list)
    bounced: dict[str, str] = field(default_factory=dict)  # rcpt -> reply, DSN already queued
    last_error: str = ""

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> State:
        raw: dict[str, Any] = json.loads(data)
        return cls(attempts=int(raw.get("attempts", 0)),
                   next_attempt=float(raw.get("next_attempt", 0)),
                   last_attempt=float(raw.get("last_attempt", 0)),
                   delivered=list(raw.get("delivered", [])),
                   bounced=dict(raw.get("bounced", {})),
                   last_error=str(raw.get("last_error", "")))


def new_id(worker: int = 0, workers: int = 1) -> str:
    """A queue id, sortable by time, that belongs to ``worker`` (see ``owner``)."""
    rand = secrets.randbits(32)
    rand = rand - rand % workers + worker
    return f"{time.time_ns() // 1000:013X}{rand:08X}"


def owner(queue_id: str, workers: int) -> int:
    """Which of ``workers`` intake processes delivers this message: fixed by its id."""
    try:
        return int(queue_id[-8:], 16) % workers
    except ValueError:
        return 0


class Spool:
    """The on-disk queue. Blocking file work runs in the default thread pool."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.queue = self.root / "queue"
        self.state = self.root / "state"
        self.flush_path = self.root / "flush"
        self._synced = 0
        self._requested = 0
        self._sync_lock: asyncio.Lock | None = None

    def create_dirs(self) -> None:
        for d in (self.tmp, self.queue, self.state):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)

    # -- writing -------------------------------------------------------------------

    async def store(self, env: Envelope, data: bytes) -> None:
        """Write a message durably; returns only when a crash can no longer lose it."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self._write_file, env, data)
            await self._sync_queue_dir()
        except OSError as exc:
            raise SpoolError(f"cannot write to the spool ({exc.strerror or exc})") from exc

    def store_sync(self, env: Envelope, data: bytes) -> None:
        """The same from synchronous code (DSNs created by the CLI, tests)."""
        self._write_file(env, data)
        self._fsync_dir(self.queue)

    def _write_file(self, env: Envelope, data: bytes) -> None:
        tmp = self.tmp / env.id
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                with os.fdopen(fd, "wb", closefd=False) as f:
                    f.write(env.header())
                    f.write(data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.queue / env.id)
        except BaseException:
            # Nothing half-written may stay behind: the client gets 451 and retries.
            tmp.unlink(missing_ok=True)
            raise

    async def _sync_queue_dir(self) -> None:
        # Group commit: every rename done before a directory fsync started is
        # covered by it, so waiters only need a sync that began after their rename.
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        self._requested += 1
        ticket = self._requested
        async with self._sync_lock:
            if self._synced >= ticket:
                return
            covered = self._requested
            await asyncio.get_running_loop().run_in_executor(None, self._fsync_dir, self.queue)
            self._synced = covered

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def save_state(self, queue_id: str, state: State) -> None:
        """Atomically replace a message's delivery state (write, fsync, rename)."""
        final = self.state / f"{queue_id}.json"
        tmp = self.tmp / f"{queue_id}.state"
        with open(tmp, "wb") as f:
            f.write(state.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, final)
        self._fsync_dir(self.state)

    def remove(self, queue_id: str, *, fresh: bool = False) -> None:
        """Forget a finished message: its bytes first, then its state (if it has one)."""
        (self.queue / queue_id).unlink(missing_ok=True)
        if not fresh:
            (self.state / f"{queue_id}.json").unlink(missing_ok=True)

    # -- reading -------------------------------------------------------------------

    def read(self, queue_id: str) -> tuple[Envelope, bytes]:
        try:
            with open(self.queue / queue_id, "rb") as f:
                env = Envelope.from_header(f.readline())
                return env, f.read()
        except FileNotFoundError:
            raise UserError(f"no message {queue_id} in the queue") from None
        except ValueError as exc:
            raise SpoolError(f"spool file {queue_id} is damaged: {exc}") from exc

    def read_envelope(self, queue_id: str) -> Envelope:
        with open(self.queue / queue_id, "rb") as f:
            return Envelope.from_header(f.readline())

    def load_state(self, queue_id: str) -> State:
        try:
            return State.from_json((self.state / f"{queue_id}.json").read_bytes())
        except FileNotFoundError:
            return State()
        except ValueError:
            # A state file is replaced atomically, so this is outside damage;
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

    def clean_tmp(self) -> int:
        """Drop half-written files: they never got a 250, so the client still has them."""
        count = 0
        for entry in self.tmp.iterdir():
            entry.unlink(missing_ok=True)
            count += 1
        return count

    def request_flush(self) -> None:
        self.flush_path.touch()

    def take_flush_request(self) -> bool:
        try:
            self.flush_path.unlink()
        except FileNotFoundError:
            return False
        return True
