"""What happens to a message between DATA and the 250, as a table of contents.

``accept`` lists the steps in order; each refuses with an ``SmtpReplyError``
that the handler turns into the reply.  The rejection step ends in one named
outcome (``Ordinary``, ``Rejection``, ``NotInjectable``), and ``_report`` turns
it into the log line and the metric in one place.  Nothing is answered 250
before ``Spool.store`` returns, and from then on the delivery worker owns it.

While the ledger is unavailable (SPEC 12: a database that is away), a
rejection is not refused: it is spooled whole and held (``Envelope.held``),
never sent as it is, and its copies are made when the ledger is back
(``release``, called by the delivery worker), so candidates get their links
and the company's mail is not lost or bounced back to its HR system.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from career_relay.errors import (
    HeaderTooLarge,
    LedgerError,
    LedgerUnavailable,
    PolicyRejection,
    RoutingLoop,
    SmtpReplyError,
    TemporaryFailure,
    UserError,
)
from career_relay.settings import CompanySettings, Settings
from gateway import metrics
from gateway.delivery import Delivery
from gateway.envelope import Envelope, new_id
from gateway.loop_commits import LoopCommits
from gateway.message import (
    MAX_HOPS,
    header_block,
    hops,
    received_header,
    strip_relay_headers,
)
from gateway.mime import MAX_HEADER_LINES
from gateway.policy import (
    company_by_from,
    foreign_from_domains,
    from_domains,
    from_mailboxes,
)
from gateway.rejection import (
    Candidate,
    Copy,
    Draft,
    NotInjectable,
    Ordinary,
    Outcome,
    Rejection,
    Rejections,
)
from gateway.spliced import Body, Spliced
from gateway.spool import Spool

log = logging.getLogger("career_relay.pipeline")

# Larger messages take their first look in a thread: decoding megabytes of base64
# must not hold up every other session of this worker.
INLINE_LOOK_BYTES = 256 * 1024
# A rejection whose copies are this small (copies x bytes) is prepared in the loop too:
# signing 4 copies of 64 KB costs about 2 ms, and a hand-off to a thread cost more than
# the work itself (docs/performance.md, "Every path").  Larger ones go to a thread.
INLINE_COPIES = 4
INLINE_PREPARE_BYTES = 256 * 1024
#: Seconds after the ledger was found unavailable during which rejections are held at
#: once, without waiting on it again (a database that is away can take seconds to say so).
LEDGER_AWAY_SECONDS = 5.0


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
    # The companies whose own networks (companies.allow_ips) hold the client's address.
    owners: tuple[CompanySettings, ...] = ()


class Pipeline:
    def __init__(
        self, settings: Settings, spool: Spool, delivery: Delivery, *,
        rejections: Rejections | None = None, worker: int = 0, workers: int = 1,
    ):
        self._settings = settings
        self._spool = spool
        self._delivery = delivery
        self._rejections = rejections
        self._commits = LoopCommits(rejections) if rejections is not None else None
        self._worker = worker
        self._workers = workers
        self._ledger_away_until = 0.0  # time.monotonic()

    def reload(self, settings: Settings) -> None:
        """SIGHUP: the companies of ``settings`` (``release`` finds a held rejection's
        company among them: one added since the start, or its domains as they are now)."""
        self._settings = settings

    async def accept(self, sub: Submission, *, hold: bool = True) -> str:
        """Check, prepare, spool durably, hand to delivery; returns the ids for the 250.
        ``hold``: while the ledger is unavailable, keep a rejection to make its copies
        later (``release``) rather than raise ``LedgerUnavailable``."""
        head = header_block(sub.data)
        if head.count(b"\r\n") > MAX_HEADER_LINES:  # before any step reads it line by line
            raise HeaderTooLarge(f"Message header too large: more than {MAX_HEADER_LINES} "
                                 "lines")
        if hops(head) >= MAX_HOPS:
            # A loop (an upstream that routes the mail back here) would pass it through
            # again and again, a Received field and a signature more each time.
            raise RoutingLoop(f"Too many hops: {MAX_HOPS} or more Received fields "
                              "(a mail loop?)")
        company = _whose(sub)
        data, fields = strip_relay_headers(sub.data)
        try:
            outcome = await self._rejection_step(company, data, fields, sub.rcpts)
        except LedgerUnavailable as exc:
            if not hold or company is None:
                raise
            return await self._hold(sub, company, exc)
        copies = outcome.copies if isinstance(outcome, Rejection) else [Copy(list(sub.rcpts),
                                                                              data)]
        stored = await self._store(sub, copies)
        self._report(outcome, [env.id for env, _ in stored])
        for env, out in stored:
            self._delivery.submit(env, out)
        return " ".join(env.id for env, _ in stored)

    async def _rejection_step(self, company: CompanySettings | None, data: bytes,
                              fields: dict[str, str], rcpts: list[str]) -> Outcome:
        """First look (in the loop for ordinary sizes), then, for a rejection, the copies
        (``_prepared``).  Only the project's declared errors leave this step."""
        if self._rejections is None:
            return Ordinary("no rejection handling here")
        loop = asyncio.get_running_loop()
        try:
            if len(data) <= INLINE_LOOK_BYTES:
                found = self._rejections.first_look(company, data, fields)
            else:
                found = await loop.run_in_executor(None, self._rejections.first_look,
                                                   company, data, fields)
            if isinstance(found, Ordinary):
                return found
            if time.monotonic() < self._ledger_away_until:
                raise LedgerUnavailable("the ledger was unavailable moments ago")
            try:
                return await self._prepared(found, data, rcpts, fields)
            except LedgerUnavailable:
                self._ledger_away_until = time.monotonic() + LEDGER_AWAY_SECONDS
                raise
        except LedgerUnavailable:
            raise  # held (``accept``) or tried again later (``release``)
        except (LedgerError, OSError):
            # The ledger or the disk failed: that is our failure, not the message's, and
            # relaying it would send candidates a bare marker (SPEC 4: 451 4.3.0).
            log.exception("rejection could not be recorded; answering 451")
            raise TemporaryFailure("Could not record the message; try again later") from None

    async def _prepared(self, found: Candidate, data: bytes, rcpts: list[str],
                        fields: dict[str, str]) -> Outcome:
        """The copies made and their offers recorded: a small rejection's here in the
        loop, committed with the others that end within 5 ms when that need not wait
        (``LoopCommits``; else the commit goes to a thread); a large one's, all in a
        thread."""
        assert self._rejections is not None
        loop = asyncio.get_running_loop()
        if len(rcpts) > INLINE_COPIES or len(data) * len(rcpts) > INLINE_PREPARE_BYTES:
            metrics.committed(False)
            return await loop.run_in_executor(None, self._prepare, found, data, rcpts, fields)
        assert self._commits is not None
        try:
            draft = self._rejections.draft(found, data, list(rcpts), fields)
            outcome = await self._commits.record(draft)
        except (LedgerError, OSError, SmtpReplyError):
            raise
        except Exception as exc:  # a bug on a hostile message: never a bare marker
            self._bug()
            return await loop.run_in_executor(None, self._prepare, _failed(found, exc), data,
                                              rcpts, fields)
        metrics.committed(outcome is not None)
        if outcome is not None:
            return outcome
        return await loop.run_in_executor(None, self._prepare, found, data, rcpts, fields,
                                          draft)

    def _prepare(self, found: Candidate, data: bytes, rcpts: list[str],
                 fields: dict[str, str], draft: Draft | None = None) -> Outcome:
        """``_prepared`` in a thread: the copies (unless ``draft`` has them) and the commit."""
        assert self._rejections is not None
        try:
            if draft is not None:
                return self._rejections.record(draft)
            return self._rejections.prepare(found, data, list(rcpts), fields)
        except (LedgerError, OSError, SmtpReplyError):
            raise
        except Exception as exc:  # a bug on a hostile message: never a bare marker
            self._bug()
            return self._rejections.prepare(_failed(found, exc), data, list(rcpts), fields)

    def _bug(self) -> None:
        """Called handling an exception no hostile message should raise: 451 under
        ``gateway.on_error = "tempfail"``, else the caller relays it unchanged, counted."""
        if self._settings.gateway.on_error == "tempfail":
            log.exception("rejection could not be prepared; answering 451")
            raise TemporaryFailure("Could not prepare the message; try again later") from None
        log.exception("rejection could not be prepared; relaying it unchanged")

    async def _hold(self, sub: Submission, company: CompanySettings,
                    why: LedgerUnavailable) -> str:
        """Spool the rejection as it came, held until the ledger is back (``release``)."""
        env = Envelope(id=new_id(self._worker, self._workers), mail_from=sub.mail_from,
                       rcpts=list(sub.rcpts), arrival=time.time(), smtputf8=sub.smtputf8,
                       body=sub.body,
                       held={"company": company.id, "helo": sub.helo, "ip": sub.peer_ip,
                             "protocol": sub.protocol})
        try:
            await self._spool.store_all([(env, sub.data)])
        except BaseException:
            self._spool.journal.done(env.id)
            raise
        metrics.outcome("Held", False)
        log.warning("queue_id=%s rejection from %s held: %s; its links are added and it is "
                    "sent when the ledger is back", env.id, company.id, why)
        self._delivery.submit(env, sub.data)
        return env.id

    async def release(self, env: Envelope, data: bytes) -> list[str]:
        """A held rejection, now that the ledger may be back: its copies made, stored and
        handed to delivery, as at its arrival; their queue ids.  ``LedgerUnavailable``
        while it is still away; ``UserError`` when its company is no longer configured."""
        held = env.held or {}
        company = self._settings.company(str(held.get("company", "")))
        if company is None:
            raise UserError(f"company {held.get('company')!r} is no longer configured")
        # The message as it came, taken again as at its arrival, by the company it was
        # proven to be (its From is checked again against that company's domains).
        sub = Submission(mail_from=env.mail_from, rcpts=list(env.rcpts), data=data,
                         peer_ip=str(held.get("ip", "")), helo=str(held.get("helo", "")),
                         protocol=str(held.get("protocol", "ESMTP")), company=company,
                         smtputf8=env.smtputf8, body=env.body)
        return (await self.accept(sub, hold=False)).split()

    def _report(self, outcome: Outcome, queue_ids: list[str]) -> None:
        """The log line and the metric of each outcome, from one place."""
        metrics.outcome(type(outcome).__name__, getattr(outcome, "unmarked", False))
        if isinstance(outcome, NotInjectable):
            for queue_id in queue_ids:
                log.info("queue_id=%s rejection from %s relayed without links: %s", queue_id,
                         outcome.company, outcome.reason)
        elif isinstance(outcome, Ordinary) and outcome.unmarked:
            log.debug("queue_id=%s %s", queue_ids[0], outcome.why)

    async def _store(self, sub: Submission, copies: list[Copy]) -> list[tuple[Envelope, Body]]:
        """All copies, or none: a 451 must not leave some of them to be delivered.

        They go to the journal together: one write and one group commit, where one
        each made a rejection wait for two fsyncs in a row.  A rejection's copies share
        its message (``gateway.spliced``): the journal stores it once.
        """
        stored: list[tuple[Envelope, Body]] = []
        for copy in copies:
            env = Envelope(id=new_id(self._worker, self._workers), mail_from=sub.mail_from,
                           rcpts=copy.rcpts, arrival=time.time(), smtputf8=sub.smtputf8,
                           body=sub.body)
            received = received_header(helo=sub.helo, ip=sub.peer_ip,
                                       hostname=self._settings.gateway.hostname,
                                       protocol=sub.protocol, queue_id=env.id,
                                       rcpts=env.rcpts)
            out = (copy.body.prepend(received) if isinstance(copy.body, Spliced)
                   else received + copy.body)
            stored.append((env, out))
        try:
            await self._spool.store_all(stored)
        except BaseException:
            # A client that went away before its 250, or a copy that could not be
            # written: the client still owns the message and will send it again.
            for env, _ in stored:
                self._spool.journal.done(env.id)
            raise
        return stored


def _failed(found: Candidate, exc: Exception) -> Candidate:
    """What a rejection whose copies failed is prepared as: not injected, for that reason."""
    return Candidate(found.company, None, found.append, problem=type(exc).__name__)


def _whose(sub: Submission) -> CompanySettings | None:
    """The company this message belongs to, proven, never read from the From header alone
    (SPEC 4): the authenticated one, or the one of the client's own network whose domain
    the From is.  Its From must be exactly one mailbox of that company's; mail of a client
    allowed only by gateway.allow_ips is no company's."""
    block = header_block(sub.data)
    if sub.company is not None:
        foreign = foreign_from_domains(block, sub.company)
        if foreign:
            raise PolicyRejection(
                f"From domain {_shown(', '.join(foreign))} does not belong to {sub.company.id}")
        return sub.company
    if not sub.owners:
        return None
    company = company_by_from(sub.owners, block)
    if company is None:
        found = from_mailboxes(block)
        shown = (_shown(from_domains(block)[0]) if len(found) == 1 and len(found[0]) == 1
                 and "@" in found[0][0] else "(not exactly one From mailbox)")
        raise PolicyRejection(f"From domain {shown} does not belong to "
                              f"{', '.join(c.id for c in sub.owners)}")
    return company


def _shown(text: str) -> str:
    """Sender-controlled text in a reply: ASCII only, printable, short (RFC 5321 4.2)."""
    return text.encode("ascii", "backslashreplace").decode("ascii")[:100].replace(
        "\r", "").replace("\n", "")
