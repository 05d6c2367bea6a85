"""The chain head kept outside the database (SPEC 8 ``ledger.head_file``).

The hash chain shows an entry changed, moved or removed from the middle,
but not the last entries removed: what is left is still a valid chain.  So
the head (``<n>:<hash>``: the last entry's seq and hash) is also kept where a
copy of the database does not carry it: in a file beside the ledger (or
where ``ledger.head_file`` says), and at the agency, which receives it with
every forward (``X-Career-Relay-Ledger-Head``).  ``ledger verify`` checks the
chain still reaches the head it is given.

The file is one line, ``<n>:<hash>``, written after each commit that moved
the head (``Ledger``; the gateway's loop commits, by its flusher thread within
half a second, once for all of them), mode 0600.  It never goes back: a
process that finds a higher ``n`` in it (another process committed later)
leaves it.  A lock file beside it (``<head>.lock``) makes that
read-compare-write one step between processes, and lets a reader
(``verify``) never see half a line.

Written in place, not by a temporary file and ``os.replace``: on ext4 a
rename over an existing file starts the writeback of the new one
(``auto_da_alloc``), measured at 0.4 ms, against 4 us for ``pwrite``, and
the gateway writes the head after nearly every commit.  The line only grows
(``n`` does), so an overwrite leaves no tail; one ``pwrite`` of under a
hundred bytes within one block is all or nothing, for a killed process and
for a power cut alike (the block is allocated already).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from career_relay.ledger.chain import Problem

_HEAD = re.compile(r"([1-9][0-9]{0,17}):([0-9a-f]{64})")


class BadHead(ValueError):
    """A head that is not ``<n>:<hash>``."""


def default_path(ledger: str | Path) -> Path | None:
    """``<ledger>.head``; None for a database that is no file (``:memory:``)."""
    text = str(ledger)
    if text == ":memory:" or text.startswith("file:"):
        return None
    return Path(f"{text}.head")


def format_head(seq: int, digest: str) -> str:
    return f"{seq}:{digest}"


def parse(text: str) -> tuple[int, str]:
    """``<n>:<hash>`` (n from 1, the hash 64 lower-case hex digits) -> (n, hash)."""
    found = _HEAD.fullmatch(text.strip())
    if found is None:
        raise BadHead(f"not a chain head (<n>:<64 hex digits>): {text.strip()[:80]!r}")
    return int(found[1]), found[2]


def read(path: Path) -> tuple[int, str] | None:
    """The head in ``path``; None when there is no file.  ``BadHead`` if it holds anything else."""
    try:
        with _locked(path, fcntl.LOCK_SH):
            return _read(path)
    except (FileNotFoundError, PermissionError):
        # No lock file (a head file copied here by itself), or not ours to open: no
        # writer of ours can be halfway through it.
        return _read(path)


def _read(path: Path) -> tuple[int, str] | None:
    try:
        fd = _open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        text = os.read(fd, 256).decode("ascii", errors="replace")
    finally:
        os.close(fd)
    return parse(text)


def _open_regular(path: Path, flags: int, mode: int = 0o600) -> int:
    """``path`` opened without following a symbolic link (O_NOFOLLOW) and without blocking
    on a FIFO (O_NONBLOCK); OSError unless it is a regular file.  The head and its lock
    sit where others may write (``ledger.head_file``): a link planted there must not make
    the service truncate or chmod the file it points to."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    return fd


class Diverged(Exception):
    """The head file names an entry the ledger no longer holds as it was: the last entries
    were removed or the chain rewritten.  The file is left as it is, for verify to show."""


class Busy(Exception):
    """``write(wait=False)`` found the head's lock taken: nothing written."""


def write(path: Path, seq: int, digest: str,
          holds: Callable[[int, str], bool] | None = None, *, wait: bool = True) -> bool:
    """Record (seq, digest) as the head unless the file names a later entry; whether it did.

    ``holds(n, hash)``: whether the ledger still has entry n with that hash.  When the
    file names one it does not, the file is not replaced (``Diverged``): otherwise the
    next commits would overwrite the evidence of a truncated or rewritten chain with
    the new chain's head, and verify would pass again.  A file that is not a head at all
    is not replaced either (``BadHead``): it was not written by us.

    No fsync: the gateway commits many times a second, and a head lost in a
    power cut only leaves the file behind the ledger, which verify accepts
    (entry n still exists); the agency's copy is the anchor that counts.

    ``wait=False``: ``Busy`` rather than wait while another process holds the lock.
    """
    with _locked(path, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB, create=True):
        current = _read(path)
        if current is not None:
            if holds is not None and not holds(*current):
                raise Diverged(f"the head file {path} names entry {current[0]}, which the "
                               "ledger no longer holds as it was")
            if current[0] >= seq:
                return False
        line = f"{format_head(seq, digest)}\n".encode("ascii")
        fd = _open_regular(path, os.O_WRONLY | os.O_CREAT)
        try:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)  # made by hand, or by an older version
            os.pwrite(fd, line, 0)
            if os.fstat(fd).st_size > len(line):  # it held something longer: not ours
                os.ftruncate(fd, len(line))
        finally:
            os.close(fd)
    return True


@contextlib.contextmanager
def _locked(path: Path, operation: int, *, create: bool = False) -> Iterator[None]:
    """A ``flock`` on ``<head>.lock`` (0600, left in place: a lock file that is removed
    while another process waits on it locks nothing).  ``FileNotFoundError`` when it does
    not exist and ``create`` is false."""
    flags = os.O_RDWR | os.O_CREAT if create else os.O_RDONLY
    fd = _open_regular(path.with_name(f"{path.name}.lock"), flags)
    try:
        try:
            fcntl.flock(fd, operation)
        except BlockingIOError:  # LOCK_NB, and another process holds it
            raise Busy(f"{path}'s lock is taken") from None
        yield
    finally:
        os.close(fd)  # releases the lock


def check(conn: sqlite3.Connection, head: tuple[int, str], source: str) -> Problem | None:
    """Whether the chain in ``conn`` reaches ``head`` (from ``source``, for the message)."""
    seq, digest = head
    found = conn.execute("SELECT hash FROM entries WHERE seq = ?", (seq,)).fetchone()
    if found is None:
        (end,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM entries").fetchone()
        return Problem(seq, f"the last entries were removed: {source} names entry {seq}, "
                            f"the ledger ends at {end}")
    if str(found[0]) != digest:
        return Problem(seq, f"does not match {source} (hash {str(found[0])[:16]}..., "
                            f"{source} says {digest[:16]}...)")
    return None


#: What ``snapshot_file`` found: the head, None (no file), or why it could not be read.
Filed = tuple[int, str] | None | str


def snapshot_file(path: Path | None) -> Filed:
    """Read the head file for ``check_file`` (before the verifying snapshot begins)."""
    if path is None:
        return None
    try:
        return read(path)
    except BadHead as exc:
        return f"the head file {path} is damaged: {exc}"
    except OSError as exc:
        return f"the head file {path} cannot be read: {exc.strerror}"


def check_file(conn: sqlite3.Connection, path: Path | None, filed: Filed) -> Problem | None:
    """The head file's check: as ``check``; missing while entries exist is a failure too."""
    if path is None:
        return None
    if isinstance(filed, str):
        return Problem(0, filed)
    if filed is None:
        (end,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM entries").fetchone()
        if end:
            return Problem(0, f"the head file {path} is missing (the ledger has {end} entries):"
                              " it was removed, or the ledger was copied without it")
        return None
    return check(conn, filed, "the head file")
