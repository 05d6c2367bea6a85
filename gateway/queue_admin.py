"""`career-relay queue list|retry|purge`: the operator's view of the spool.

These work on the files while the gateway runs: a retry is a request that
the worker owning the message reads within a second (it alone changes the
message's state, so a request never races with a delivery); a purge removes
the files, and a worker that later finds them gone forgets the message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from career_relay.errors import UserError
from gateway.spool import Spool


@dataclass(frozen=True)
class QueueRow:
    id: str
    arrival: float
    size: int
    sender: str
    recipients: int
    pending: int
    attempts: int
    next_attempt: float
    last_error: str


def list_queue(spool: Spool) -> list[QueueRow]:
    """Fresh mail still in the journal (being delivered) first, then queue files."""
    rows = [QueueRow(r.env.id, r.env.arrival, len(r.data), r.env.mail_from or "<>",
                     len(r.env.rcpts), len(r.env.rcpts), 0, 0.0, "")
            for r in spool.journal_records()]
    for queue_id in sorted(spool.ids()):
        try:
            env = spool.read_envelope(queue_id)
            size = spool.message_size(queue_id)
        except (FileNotFoundError, ValueError):
            continue  # delivered or purged while we looked
        state = spool.load_state(queue_id)
        pending = len([r for r in env.rcpts if r not in state.delivered and r not in state.bounced])
        rows.append(QueueRow(queue_id, env.arrival, size, env.mail_from or "<>", len(env.rcpts),
                             pending, state.attempts, state.next_attempt, state.last_error))
    return rows


def format_rows(rows: list[QueueRow], now: float | None = None) -> str:
    now = time.time() if now is None else now
    if not rows:
        return "the queue is empty"
    lines = [f"{'ID':21}  {'AGE':>7}  {'SIZE':>9}  {'RCPT':>5}  {'TRIES':>5}  {'NEXT':>7}  SENDER"]
    for r in rows:
        nxt = "now" if r.next_attempt <= now else _span(r.next_attempt - now)
        lines.append(f"{r.id:21}  {_span(now - r.arrival):>7}  {r.size:>9}  "
                     f"{r.pending:>2}/{r.recipients:<2}  {r.attempts:>5}  {nxt:>7}  {r.sender}")
        if r.last_error:
            lines.append(f"{'':23}last error: {r.last_error}")
    lines.append(f"{len(rows)} message(s)")
    return "\n".join(lines)


def corrupt_note(spool: Spool) -> str:
    """A line for ``queue list`` when damaged messages were set aside (empty otherwise)."""
    ids = spool.corrupt_ids()
    if not ids:
        return ""
    return (f"{len(ids)} damaged message(s) set aside in {spool.root / 'corrupt'}, never sent "
            f"(see the gateway's log for each): {', '.join(ids[:5])}"
            + (" ..." if len(ids) > 5 else ""))


def _span(seconds: float) -> str:
    s = int(max(0, seconds))
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m" if s >= 60 else f"{s}s"


def retry(spool: Spool, queue_id: str | None) -> int:
    """Ask for deferred messages to be tried now; returns how many are deferred."""
    if queue_id and not spool.exists(queue_id):
        raise UserError(f"no message {queue_id} in the queue")
    ids = [queue_id] if queue_id else list(spool.ids())
    deferred = sum(1 for qid in ids if spool.load_state(qid).attempts > 0)
    spool.request_retry([queue_id] if queue_id else ["*"])
    return deferred


def purge(spool: Spool, queue_id: str) -> None:
    """Delete one message without a bounce (like postsuper -d)."""
    if any(r.env.id == queue_id for r in spool.journal_records()):
        raise UserError(f"{queue_id} is being delivered right now; try again in a moment")
    if not spool.exists(queue_id):
        raise UserError(f"no message {queue_id} in the queue")
    spool.remove(queue_id)
