"""What the spool keeps about a message besides its bytes, and its delivery state."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Envelope:
    id: str
    mail_from: str  # "" is the null reverse-path (RFC 5321 section 4.5.5)
    rcpts: list[str]
    arrival: float
    smtputf8: bool = False
    body: str = ""  # "8BITMIME" when the client declared BODY=8BITMIME (RFC 6152)
    dsn: bool = False  # this message is itself a bounce: never bounce it
    #: A rejection taken while the ledger was unavailable (SPEC 12): never sent as it is;
    #: its copies are made when the ledger is back (``Pipeline.release``).  What making
    #: them needs besides the bytes: company, X-Career-Relay fields, helo, ip, protocol.
    held: dict[str, Any] | None = None

    def meta(self) -> dict[str, Any]:
        meta = {"id": self.id, "from": self.mail_from, "rcpts": self.rcpts,
                "arrival": self.arrival, "smtputf8": self.smtputf8, "body": self.body,
                "dsn": self.dsn}
        if self.held is not None:
            meta["held"] = self.held
        return meta

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Envelope:
        return cls(id=str(meta["id"]), mail_from=str(meta["from"]),
                   rcpts=[str(r) for r in meta["rcpts"]], arrival=float(meta["arrival"]),
                   smtputf8=bool(meta.get("smtputf8")), body=str(meta.get("body", "")),
                   dsn=bool(meta.get("dsn")),
                   held=dict(meta["held"]) if isinstance(meta.get("held"), dict) else None)


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
    rand = secrets.randbits(31)  # headroom: adding the worker index stays in 8 hex digits
    rand = rand - rand % workers + worker
    return f"{time.time_ns() // 1000:013X}{rand:08X}"


def owner(queue_id: str, workers: int) -> int:
    """Which of ``workers`` intake processes delivers this message: fixed by its id."""
    try:
        return int(queue_id[-8:], 16) % workers
    except ValueError:
        return 0
