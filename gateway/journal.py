"""The intake journal: where fresh mail is made durable before the 250.

Creating, renaming and deleting a file per message costs more CPU than the
rest of the relay's per-message work (each is a journaled metadata change
on ext4).  So a worker appends each accepted message to its current
segment file and fsyncs once for every message appended since the last
fsync began (group commit, as a database log does).  When a message leaves
the journal (delivered, bounced, or moved to its own queue file because it
must wait for a retry) its id is appended to the segment's ``.done`` file;
a segment whose messages have all left is deleted.

Recovery after a crash reads every segment, skips the ids its ``.done``
file lists and a torn last record (it never got a 250: its fsync had not
returned), and moves the rest to queue files.  A ``.done`` mark that had
not reached the disk makes a message be delivered twice, which RFC 5321
section 6.1 prefers to losing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.envelope import Envelope
from gateway.spliced import Base, Body, Spliced

_MAGIC = b"CRJ1 "
SEGMENT_LIMIT = 64 * 1024 * 1024  # bytes; a segment rotates past this
_DONE_SYNC_DELAY = 0.05  # seconds; .done marks are fsynced in batches


@dataclass
class JournalRecord:
    env: Envelope
    data: Body


class _Segment:
    def __init__(self, path: Path):
        self.path = path
        self.done_path = path.with_suffix(".done")
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self.done_fd = os.open(self.done_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.size = 0
        self.pending = 0
        self.sealed = False

    def close(self) -> None:
        for fd in (self.fd, self.done_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        self.done_path.unlink(missing_ok=True)


class Journal:
    """One worker's segments. All methods run on the event loop thread."""

    def __init__(self, directory: Path, worker: int):
        self.directory = directory
        self.worker = worker
        self._active: _Segment | None = None
        self._where: dict[str, _Segment] = {}
        self._requested = 0
        self._synced = 0
        self._failed = 0  # tickets up to this one were covered by a failed fsync
        self._lock: asyncio.Lock | None = None
        self._dirty_done: set[_Segment] = set()
        self._done_task: asyncio.Task[None] | None = None
        self._closed = False
        self.companions: list[Path] = []  # files fsynced with every group commit

    async def append(self, messages: list[tuple[Envelope, Body]]) -> None:
        """Durably append messages (one, or the copies of a rejection) with one write
        and one group commit, all or none; returns once an fsync covered them.  The
        message the copies of a rejection share is written once, before them."""
        if self._closed:
            raise OSError("the spool is shutting down")
        if self._lock is None:
            self._lock = asyncio.Lock()
        seg = self._active
        if seg is None or seg.sealed or seg.size >= SEGMENT_LIMIT:
            seg = await self._rotate()
        records = _encode_all(messages)
        offset = seg.size
        try:
            _write_all(seg.fd, records)
        except OSError:
            _undo_append(seg, offset)
            raise
        seg.size += len(records)
        seg.pending += len(messages)
        for env, _ in messages:
            self._where[env.id] = seg
        self._requested += 1
        ticket = self._requested
        try:
            await self._group_fsync(seg, ticket)
        except OSError:
            # After a failed fsync the kernel may have dropped the dirty pages
            # (PostgreSQL's "fsyncgate"): never append to this segment again.
            seg.sealed = True
            for env, _ in messages:
                self._forget(env.id)
            raise

    async def _group_fsync(self, seg: _Segment, ticket: int) -> None:
        assert self._lock is not None
        async with self._lock:
            if self._failed >= ticket:
                raise OSError("fsync of the journal failed")
            if self._synced >= ticket:
                return
            covered = self._requested
            try:
                await asyncio.get_running_loop().run_in_executor(None, self._fsync_all, seg.fd)
            except OSError:
                self._failed = covered
                raise
            self._synced = covered

    def _fsync_all(self, fd: int) -> None:
        """The companions (the ledger's WAL: the offers behind the links in these
        messages were committed before the messages were appended), then the segment.

        In that order a crash between the two leaves offers without copies (the
        client got no 250, resends, and finds the same offers) rather than
        copies whose links open no offer.
        """
        for path in self.companions:
            try:
                companion = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # no commit yet, so nothing to make durable
            try:
                os.fsync(companion)
            finally:
                os.close(companion)
        os.fsync(fd)

    async def _rotate(self) -> _Segment:
        assert self._lock is not None
        async with self._lock:
            old = self._active
            if old is not None and not old.sealed and old.size < SEGMENT_LIMIT:
                return old  # another append rotated while this one waited for the lock
            loop = asyncio.get_running_loop()
            if old is not None:
                if not old.sealed:
                    # Everything appended so far is in the old segment: make it
                    # durable now, since later fsyncs only cover the new one.
                    old.sealed = True
                    covered = self._requested
                    try:
                        await loop.run_in_executor(None, self._fsync_all, old.fd)
                        self._synced = covered
                    except OSError:
                        self._failed = covered
                if old.pending == 0:
                    old.remove()
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            seg = _Segment(self.directory / f"{self.worker:03d}-{time.time_ns():x}.jnl")
            # The new file's name must be durable before a 250 depends on it.
            await loop.run_in_executor(None, fsync_dir, self.directory)
            self._active = seg
            return seg

    def done(self, queue_id: str) -> None:
        """The message left the journal (delivered, bounced or moved to a queue file)."""
        seg = self._where.pop(queue_id, None)
        if seg is None:
            return
        with contextlib.suppress(OSError):  # worst case: delivered again after a crash
            _write_all(seg.done_fd, queue_id.encode() + b"\n")
        seg.pending -= 1
        if seg.pending == 0 and seg is not self._active:
            self._dirty_done.discard(seg)
            seg.remove()
            return
        self._dirty_done.add(seg)
        if self._done_task is None or self._done_task.done():
            self._done_task = asyncio.get_running_loop().create_task(self._sync_done())

    def _forget(self, queue_id: str) -> None:
        seg = self._where.pop(queue_id, None)
        if seg is not None:
            seg.pending -= 1

    async def _sync_done(self) -> None:
        await asyncio.sleep(_DONE_SYNC_DELAY)
        segments, self._dirty_done = self._dirty_done, set()
        loop = asyncio.get_running_loop()
        for seg in segments:
            # A segment removed meanwhile, or a disk error: at worst a duplicate.
            with contextlib.suppress(OSError):
                await loop.run_in_executor(None, os.fsync, seg.done_fd)

    def close(self) -> None:
        """On shutdown: make the last .done marks durable (no needless re-delivery)."""
        self._closed = True
        if self._done_task is not None:
            self._done_task.cancel()
        for seg in self._dirty_done:
            with contextlib.suppress(OSError):
                os.fsync(seg.done_fd)
        self._dirty_done.clear()
        if self._active is not None:
            if self._active.pending == 0:
                self._active.remove()
            else:
                self._active.close()
            self._active = None
        for seg in set(self._where.values()):
            seg.close()


def segments(directory: Path) -> list[Path]:
    """Segment files, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob("*.jnl"), key=lambda p: p.name.split("-", 1)[-1])


def segment_worker(path: Path) -> int:
    """The index of the worker that wrote a segment (its name starts with it)."""
    head = path.name.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def read_segment(path: Path) -> Iterator[JournalRecord]:
    """The records of a segment that are not marked done; stops at a torn record."""
    done_path = path.with_suffix(".done")
    try:
        done = set(done_path.read_text(encoding="ascii", errors="replace").split())
    except FileNotFoundError:
        done = set()
    bases: dict[str, Base] = {}  # the shared messages of rejections, by key
    with open(path, "rb") as f:
        while True:
            header = f.readline()
            if not header.startswith(_MAGIC) or not header.endswith(b"\n"):
                return
            try:
                meta = json.loads(header[len(_MAGIC):])
                length, crc = int(meta.pop("len")), int(meta.pop("crc"))
                key, of = meta.pop("base", None), meta.pop("of", None)
            except (ValueError, KeyError, TypeError, AttributeError):
                return
            data = f.read(length)
            if len(data) != length or f.read(1) != b"\n" or zlib.crc32(data) != crc:
                return
            if key is not None:  # a shared message, written before the copies made of it
                bases[str(key)] = Base(str(key), data, _crc=crc)
                continue
            try:
                env = Envelope.from_meta(meta)
                body: Body = data if of is None else Spliced.decode(bases[str(of)], data)
            except (KeyError, TypeError, ValueError, AttributeError):
                return
            if env.id not in done:
                yield JournalRecord(env, body)


def _encode_all(messages: list[tuple[Envelope, Body]]) -> bytes:
    out: list[bytes] = []
    written: set[str] = set()
    for env, body in messages:
        if isinstance(body, Spliced):
            base = body.base
            if base.key not in written:
                written.add(base.key)
                out.append(_record({"base": base.key}, base.data, base.crc))
            encoded = body.encode()
            out.append(_record({**env.meta(), "of": base.key}, encoded, zlib.crc32(encoded)))
        else:
            out.append(_record(env.meta(), body, zlib.crc32(body)))
    return b"".join(out)


def _record(meta: dict[str, object], data: bytes, crc: int) -> bytes:
    meta["len"] = len(data)
    meta["crc"] = crc
    return b"".join((_MAGIC, json.dumps(meta, separators=(",", ":")).encode(), b"\n", data,
                     b"\n"))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _undo_append(seg: _Segment, offset: int) -> None:
    """Cut a failed append off, so no torn record sits before later ones."""
    try:
        os.ftruncate(seg.fd, offset)
    except OSError:
        seg.sealed = True


def fsync_dir(path: Path) -> None:
    """Make the names in a directory durable (a created or renamed file's entry)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
