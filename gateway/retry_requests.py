"""`career-relay queue retry` to a running gateway: a file of requested queue ids per worker
(``retry-NNN`` in the spool's root), appended to by the command and taken whole by the
worker's scheduler about once a second (``Delivery``).

Only the worker that owns a message changes its state, so a request never races with a
delivery.  The worker takes its file by renaming it away, then reads it under its lock;
the command appends under that lock and only while the path still names the file it
opened.  A request written to a file the worker had already renamed, read and unlinked
was lost: a `queue retry` that did nothing, seen under load.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from gateway.envelope import owner


def _path(root: Path, worker: int) -> Path:
    return root / f"retry-{worker:03d}"


def request(root: Path, workers: int, queue_ids: list[str]) -> None:
    """Ask the owners of ``queue_ids`` (every worker for "*") to try them now."""
    by_worker: dict[int, list[str]] = {}
    for queue_id in queue_ids:
        targets = range(workers) if queue_id == "*" else [owner(queue_id, workers)]
        for worker in targets:
            by_worker.setdefault(worker, []).append(queue_id)
    for worker, ids in by_worker.items():
        _append(_path(root, worker), "".join(f"{i}\n" for i in ids).encode())


def take(root: Path, worker: int) -> set[str]:
    """The ids requested of ``worker`` since it last took them (the file is gone after)."""
    path = _path(root, worker)
    taken = path.with_name(path.name + ".taken")
    try:
        os.rename(path, taken)  # requests appended from now on go to a new file
    except FileNotFoundError:
        return set()
    fd = os.open(taken, os.O_RDONLY)
    try:
        # A writer that found the file under its name before the rename holds its lock
        # while it appends: wait for it (``_append``).
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "rb") as f:
            ids = set(f.read().decode("ascii", "replace").split())
        taken.unlink()
    finally:
        os.close(fd)
    return ids


def _append(path: Path, line: bytes) -> None:
    """Append under the file's lock, while the path still names the file opened; renamed
    meanwhile (the worker took it): open the new one."""
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                named = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                named = False
            if named:
                os.write(fd, line)
                return
        finally:
            os.close(fd)  # the lock goes with it
