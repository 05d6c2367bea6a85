"""The company link's mailer: sends each personal-link mail through the upstream (SPEC 10).

The form's answer must not depend on the address (it never tells whether
an address was used, not even by how long it took) nor on the upstream, so
the view only puts what was asked (``Asked``) in a bounded queue and
answers.  One task takes them one at a time: ``prepare`` (the view's) makes
or finds the offer and builds the mail, then aiosmtplib sends it to
``[upstream]`` (the company's smarthost, as the agency's email forwards go).
Each message has exactly one recipient, the address checked by
``career_relay.company_link.normal_address``: the form is no relay.

What fails (the upstream, or the ledger while it is away) gets ``ATTEMPTS``
tries, ``RETRY_DELAY`` seconds apart, then is given up and logged (by the
company and the offer id, never the address).  The queue lives in memory: a
restart loses what waits in it, and the candidate simply asks again (the
same offer, the same link).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from career_relay.errors import LedgerUnavailable
from career_relay.settings import Settings

log = logging.getLogger("career_relay.company_link")

QUEUE = 100  # messages waiting at most; a full queue answers 429 (``has_room``)
ATTEMPTS = 3
RETRY_DELAY = 10.0


@dataclass(frozen=True)
class Asked:
    """A form taken: a personal link for ``address`` through ``company``'s link."""

    company: str
    address: str
    locale: str


@dataclass(frozen=True)
class Outgoing:
    offer_id: str  # what the logs name
    recipient: str
    message: EmailMessage


#: Makes or finds the offer and builds its mail; None when there is nothing to send.
Prepare = Callable[[Asked], Awaitable[Outgoing | None]]


class LinkMailer:
    def __init__(self, settings: Settings, prepare: Prepare) -> None:
        self.settings = settings
        self.retry_delay = RETRY_DELAY
        self._prepare = prepare
        self._queue: asyncio.Queue[Asked] = asyncio.Queue(QUEUE)
        self.sent = 0  # messages the upstream took (for tests and logs)

    def has_room(self) -> bool:
        return not self._queue.full()

    def submit(self, asked: Asked) -> None:
        self._queue.put_nowait(asked)

    async def running(self, _: object) -> AsyncIterator[None]:
        """aiohttp's ``cleanup_ctx``: the sending task runs while the app does; at the end
        it gets one upstream timeout to send what waits, then stops."""
        task = asyncio.create_task(self._run(), name="company-link-mailer")
        yield
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), self.settings.upstream.timeout)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            asked = await self._queue.get()
            try:
                await self._deliver(asked)
            except Exception:  # one bad message never stops the mailer
                log.exception("company-link mail of %s failed", asked.company)
            finally:
                self._queue.task_done()

    async def _deliver(self, asked: Asked) -> None:
        outgoing: Outgoing | None = None
        for attempt in range(1, ATTEMPTS + 1):
            what = asked.company
            try:
                outgoing = outgoing or await self._prepare(asked)
            except LedgerUnavailable as exc:
                problem: str | None = f"the ledger is unavailable: {type(exc).__name__}"
            else:
                if outgoing is None:
                    return
                what = f"{asked.company}, offer {outgoing.offer_id}"
                problem = await self._send(outgoing)
            if problem is None:
                self.sent += 1
                log.info("company-link mail of %s sent", what)
                return
            log.warning("company-link mail of %s, attempt %d of %d: %s", what, attempt,
                        ATTEMPTS, problem)
            if problem.startswith("SMTP 5") or attempt == ATTEMPTS:
                return  # refused for good (RFC 5321 4.2.1), or out of tries
            await asyncio.sleep(self.retry_delay)

    async def _send(self, outgoing: Outgoing) -> str | None:
        """None when the upstream took the message, else what went wrong (no address)."""
        up = self.settings.upstream
        hostname = self.settings.gateway.hostname
        smtp = aiosmtplib.SMTP(hostname=up.host, port=up.port, local_hostname=hostname,
                               timeout=up.timeout, use_tls=up.tls == "tls",
                               start_tls=up.tls == "starttls", validate_certs=up.verify_tls,
                               username=up.username or None, password=up.password or None)
        try:
            async with smtp:
                await smtp.send_message(outgoing.message, sender=f"career-relay@{hostname}",
                                        recipients=[outgoing.recipient])
        except aiosmtplib.SMTPRecipientsRefused as exc:
            code = exc.recipients[0].code if exc.recipients else 550
            return f"SMTP {code} recipient refused"
        except aiosmtplib.SMTPResponseException as exc:
            return f"SMTP {exc.code} {' '.join(exc.message.split())[:200]}"
        except (aiosmtplib.SMTPException, OSError) as exc:
            return type(exc).__name__
        return None
