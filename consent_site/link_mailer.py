"""The company link's mailer: sends each personal-link mail through the upstream (SPEC 10).

The form's answer must not depend on the address (it never tells whether
an address was used, not even by how long it took) nor on the upstream, so
the view only puts what was asked (``Asked``) in the mailer's queue and
answers.  ``SENDERS`` tasks take from it: ``prepare`` (the view's) makes or
finds the offer and builds the mail, then aiosmtplib sends it to
``[upstream]`` (the company's smarthost, as the agency's email forwards go).
Each message has exactly one recipient, the address checked by
``career_relay.company_link.normal_address``: the form is no relay.

One slow mail must not hold up the others (an upstream that takes seconds to
answer 451 for one domain once kept every company's link down):

- **each company has its own share** of the queue (``COMPANY_SHARE`` mails
  waiting, being sent or due again; of them ``DOMAIN_SHARE`` to one recipient
  domain); a full share answers 429 to that company's link alone;
- **the senders take in turn** from each company with mail ready, and at most
  ``DOMAIN_SENDING`` of them send to one recipient domain at once, so another
  domain's, or another company's, mail always finds a sender;
- **a retry is scheduled**, ``RETRY_DELAY`` seconds later, not slept in a
  sender: what fails (the upstream, or the ledger while it is away) gets
  ``ATTEMPTS`` tries (a 5xx none more, RFC 5321 4.2.1);
- **each mail has a time budget** (``BUDGET`` seconds from being asked,
  every attempt included): an attempt still running when it ends is cut
  off, and a retry that could not start within it is not made.

What is given up is logged by the company and the offer id, never the
address.  The queue lives in memory: a restart loses what waits in it, and
the candidate simply asks again (the same offer, the same link).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from career_relay.errors import LedgerUnavailable
from career_relay.settings import Settings

log = logging.getLogger("career_relay.company_link")

COMPANY_SHARE = 100  # one company's mails waiting, being sent or due again; then 429
DOMAIN_SHARE = 50  # of them, to one recipient domain
SENDERS = 4  # mails sent at once
DOMAIN_SENDING = 2  # of them, to one recipient domain
ATTEMPTS = 3
RETRY_DELAY = 10.0
BUDGET = 120.0  # seconds from being asked to given up, every attempt included


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


@dataclass
class _Mail:
    asked: Asked
    deadline: float  # time.monotonic()
    attempt: int = 0
    outgoing: Outgoing | None = None

    @property
    def domain(self) -> str:
        return self.asked.address.rpartition("@")[2].lower()


class LinkMailer:
    def __init__(self, settings: Settings, prepare: Prepare) -> None:
        self.settings = settings
        self.retry_delay = RETRY_DELAY
        self.budget = BUDGET
        self._prepare = prepare
        self._ready: dict[str, deque[_Mail]] = {}  # per company; dict order is the turn
        self._later: list[tuple[float, int, _Mail]] = []  # retries, by when they are due
        self._order = itertools.count()
        self._held: Counter[str] = Counter()  # per company: ready, sending or due again
        self._held_domains: Counter[tuple[str, str]] = Counter()
        self._sending: Counter[str] = Counter()  # per recipient domain
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.sent = 0  # messages the upstream took (for tests and logs)

    def has_room(self, company: str, address: str) -> bool:
        """Whether ``company``'s share of the queue takes a mail to ``address``."""
        domain = address.rpartition("@")[2].lower()
        return (self._held[company] < COMPANY_SHARE
                and self._held_domains[company, domain] < DOMAIN_SHARE)

    def submit(self, asked: Asked, outgoing: Outgoing | None = None) -> None:
        """``outgoing``: a mail built already (the manage link's, ``rights``), not prepared."""
        mail = _Mail(asked, time.monotonic() + self.budget, outgoing=outgoing)
        self._held[asked.company] += 1
        self._held_domains[asked.company, mail.domain] += 1
        self._ready.setdefault(asked.company, deque()).append(mail)
        self._idle.clear()
        self._wake.set()

    async def drained(self) -> None:
        """Returns when nothing waits, is being sent or is due again."""
        await self._idle.wait()

    async def running(self, _: object) -> AsyncIterator[None]:
        """aiohttp's ``cleanup_ctx``: the senders run while the app does; at the end they
        get one upstream timeout to send what waits, then stop."""
        tasks = [asyncio.create_task(self._sender(), name=f"company-link-mailer-{n}")
                 for n in range(SENDERS)]
        yield
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drained(), self.settings.upstream.timeout)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _sender(self) -> None:
        while True:
            mail = await self._next()
            self._sending[mail.domain] += 1
            try:
                again = await self._attempt(mail)
            except Exception:  # one bad message never stops the mailer
                log.exception("company-link mail of %s failed", mail.asked.company)
                again = False
            finally:
                self._sending[mail.domain] -= 1
                if self._sending[mail.domain] <= 0:
                    del self._sending[mail.domain]
            if again:
                due = time.monotonic() + self.retry_delay
                heapq.heappush(self._later, (due, next(self._order), mail))
            else:
                self._done(mail)
            self._wake.set()  # a domain's sender is free, or a retry is scheduled

    async def _next(self) -> _Mail:
        """The next mail to send: retries that are due join their company's turn; the
        companies take turns; a domain with ``DOMAIN_SENDING`` mails in flight waits."""
        while True:
            now = time.monotonic()
            while self._later and self._later[0][0] <= now:
                due = heapq.heappop(self._later)[2]
                self._ready.setdefault(due.asked.company, deque()).append(due)
            mail = self._take()
            if mail is not None:
                return mail
            self._wake.clear()
            wait = max(0.0, self._later[0][0] - now) if self._later else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def _take(self) -> _Mail | None:
        for company, ready in list(self._ready.items()):
            for index, mail in enumerate(ready):
                if self._sending[mail.domain] < DOMAIN_SENDING:
                    del ready[index]
                    del self._ready[company]  # to the end of the turn
                    if ready:
                        self._ready[company] = ready
                    return mail
        return None

    def _done(self, mail: _Mail) -> None:
        company = mail.asked.company
        self._held[company] -= 1
        self._held_domains[company, mail.domain] -= 1
        if self._held[company] <= 0:
            del self._held[company]
        if self._held_domains[company, mail.domain] <= 0:
            del self._held_domains[company, mail.domain]
        if not self._held:
            self._idle.set()

    async def _attempt(self, mail: _Mail) -> bool:
        """One try at ``mail``, within what is left of its budget; True to try again."""
        mail.attempt += 1
        what = mail.asked.company
        try:
            async with asyncio.timeout(mail.deadline - time.monotonic()):
                try:
                    mail.outgoing = mail.outgoing or await self._prepare(mail.asked)
                except LedgerUnavailable as exc:
                    problem: str | None = f"the ledger is unavailable: {type(exc).__name__}"
                else:
                    if mail.outgoing is None:
                        return False
                    what = f"{what}, offer {mail.outgoing.offer_id}"
                    problem = await self._send(mail.outgoing)
        except TimeoutError:
            problem = f"out of its {self.budget:g} s"
        if problem is None:
            self.sent += 1
            log.info("company-link mail of %s sent", what)
            return False
        log.warning("company-link mail of %s, attempt %d of %d: %s", what, mail.attempt,
                    ATTEMPTS, problem)
        if (problem.startswith("SMTP 5") or mail.attempt >= ATTEMPTS
                or time.monotonic() + self.retry_delay >= mail.deadline):
            log.warning("company-link mail of %s given up", what)
            return False  # refused for good (RFC 5321 4.2.1), out of tries or of time
        return True

    async def _send(self, outgoing: Outgoing) -> str | None:
        """None when the upstream took the message, else what went wrong (no address)."""
        up = self.settings.upstream
        hostname = self.settings.gateway.hostname
        smtp = aiosmtplib.SMTP(hostname=up.host, port=up.port, local_hostname=hostname,
                               timeout=up.timeout, use_tls=up.tls == "tls",
                               start_tls=up.tls == "starttls", validate_certs=up.verify_tls,
                               username=up.username or None, password=up.password or None)
        # Not ``async with smtp``: cut off by the budget, its exit would still QUIT and wait
        # for the reply to the command the upstream is slow to answer.
        try:
            await smtp.connect()
            await smtp.send_message(outgoing.message, sender=f"career-relay@{hostname}",
                                    recipients=[outgoing.recipient])
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await smtp.quit()  # taken already, whatever QUIT answers
        except aiosmtplib.SMTPRecipientsRefused as exc:
            code = exc.recipients[0].code if exc.recipients else 550
            return f"SMTP {code} recipient refused"
        except aiosmtplib.SMTPResponseException as exc:
            return f"SMTP {exc.code} {' '.join(exc.message.split())[:200]}"
        except (aiosmtplib.SMTPException, OSError) as exc:
            return type(exc).__name__
        finally:
            smtp.close()
        return None
