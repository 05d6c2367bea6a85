"""What happens to a message between DATA and the 250, as a table of contents.

``accept`` lists the steps in order; each refuses with an ``SmtpReplyError``
that the handler turns into the reply.  Nothing is answered 250 before
``Spool.store`` returns, and from then on the delivery worker owns the copy.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from career_relay.errors import PolicyRejection
from career_relay.settings import CompanySettings, Settings
from gateway.delivery import Delivery
from gateway.envelope import Envelope, new_id
from gateway.message import header_block, received_header, strip_relay_headers
from gateway.policy import foreign_from_domains
from gateway.spool import Spool


@dataclass(frozen=True)
class Submission:
    """One SMTP transaction as the handler saw it."""

    mail_from: str
    rcpts: list[str]
    data: bytes
    peer_ip: str
    helo: str
    protocol: str  # ESMTP, ESMTPS, ESMTPA or ESMTPSA (RFC 3848)
    company: CompanySettings | None  # set when the client authenticated
    smtputf8: bool = False
    body: str = ""


class Pipeline:
    def __init__(
        self, settings: Settings, spool: Spool, delivery: Delivery, *, worker: int = 0,
        workers: int = 1,
    ):
        self._settings = settings
        self._spool = spool
        self._delivery = delivery
        self._worker = worker
        self._workers = workers

    async def accept(self, sub: Submission) -> str:
        """Check, spool durably, hand to delivery; returns the queue id for the 250."""
        _check_sender(sub)
        data, _fields = strip_relay_headers(sub.data)
        env = Envelope(id=new_id(self._worker, self._workers), mail_from=sub.mail_from,
                       rcpts=list(sub.rcpts), arrival=time.time(), smtputf8=sub.smtputf8,
                       body=sub.body)
        out = received_header(helo=sub.helo, ip=sub.peer_ip,
                              hostname=self._settings.gateway.hostname,
                              protocol=sub.protocol, queue_id=env.id, rcpts=env.rcpts) + data
        try:
            await self._spool.store(env, out)
        except asyncio.CancelledError:
            # The client went away before its 250: it still owns the message and
            # will send it again, so this copy must not be delivered.
            self._spool.journal.done(env.id)
            raise
        self._delivery.submit(env, out)
        return env.id


def _check_sender(sub: Submission) -> None:
    if sub.company is None:
        return
    foreign = foreign_from_domains(header_block(sub.data), sub.company)
    if foreign:
        raise PolicyRejection(
            f"From domain {', '.join(foreign)} does not belong to {sub.company.id}")
