"""The forwarding worker (SPEC 7): delivers the outbox's forwards to the agency.

A round claims the forwards that are due (``ConsentLedger.claim_due``) and
makes one attempt at each, by ``agency.deliver``:

- ``webhook``: the stored payload, byte for byte, POSTed as JSON with an
  ``X-Career-Relay-Signature`` (``career_relay.agency_signature``) freshly
  timed for this attempt; a 2xx is delivered, anything else is retried.
  Redirects are not followed: a 3xx is a failure, so a moved endpoint is
  noticed by its operator instead of silently receiving personal data.
- ``email``: a text/plain message to ``agency.email`` through the upstream,
  its Message-ID derived from the forward id (the agency de-duplicates on it).

Either way the forward carries ``X-Career-Relay-Ledger-Head: <n>:<hash>``,
the ledger's chain head when the round began (SPEC 8): the agency keeps the
highest it has seen, and hands it back for ``ledger verify --head`` (the
removal of the last entries shows against it; docs/agency-webhook.md).

Nothing is ever dropped (the outbox is the truth): every failure, even a
5xx or an exception of our own, is recorded and retried by
``agency.retry_schedule``.  A success whose record did not reach the disk is
sent again with the same ``forward_id``: delivery is at least once, and the
id makes it exactly once at the agency (docs/agency-webhook.md).

Logs name the forward id, its type, the attempt and the outcome; never the
payload, which holds the candidate's personal data.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

import aiohttp
import aiosmtplib

from career_relay import __version__
from career_relay.agency_signature import HEADER as SIGNATURE_HEADER
from career_relay.agency_signature import sign
from career_relay.ledger import ConsentLedger, Forward
from career_relay.settings import Settings

log = logging.getLogger("career_relay.forwarding")

FORWARD_ID_HEADER = "X-Career-Relay-Forward-Id"
TYPE_HEADER = "X-Career-Relay-Type"
LEDGER_HEAD_HEADER = "X-Career-Relay-Ledger-Head"
USER_AGENT = f"career-relay/{__version__}"
CONTENT_TYPE = "application/json; charset=utf-8"

#: Forwards claimed per round; they go out concurrently (at most one per offer:
#: ``claim_due`` never hands out a forward while an older one of its offer waits).
BATCH = 10
#: The longest idle wait: forwards made by another process (a second site) or
#: released by an admin elsewhere are noticed within this many seconds.
MAX_IDLE = 5.0
#: Beyond its client's own timeout, the most an attempt may take before it is abandoned.
ATTEMPT_MARGIN = 5.0
#: A claim outlives its attempt by this much, covering the ledger writes after it.
CLAIM_MARGIN = 60.0
#: Ledger times have one-second resolution: a forward that is due but could not be
#: claimed (it waits behind an older forward of its offer) is looked at again this often.
DUE_POLL = 1.0

Stop = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Outcome:
    """One attempt's result.  ``needs_attention``: retrying alone will not help (a 401, a 5xx
    from the agency's mail server); still retried, but logged at WARNING."""

    delivered: bool
    detail: str
    needs_attention: bool = False


#: Sends one forward's body with the ledger head of its round (``<n>:<hash>``).
Sender = Callable[[Forward, bytes, str], Awaitable[Outcome]]


class Forwarder:
    """Delivers due forwards; ``run`` loops until stopped, ``wake`` cuts its wait short.

    ``clock`` gives the wall-clock time that signs a webhook attempt (Unix
    seconds); when forwards fall due is the ledger's business (its clock).
    """

    def __init__(self, settings: Settings, store: ConsentLedger, *,
                 clock: Callable[[], float] = time.time, batch: int = BATCH,
                 max_idle: float = MAX_IDLE) -> None:
        self.settings = settings
        self.store = store
        self._clock = clock
        self.batch = batch
        self.max_idle = max_idle
        self._wake = asyncio.Event()

    # -- configuration --------------------------------------------------------------------

    @property
    def missing_destination(self) -> str | None:
        """The empty setting that keeps forwards in the outbox, if any."""
        agency = self.settings.agency
        if agency.deliver == "email":
            return None if agency.email else "agency.email"
        return None if agency.webhook_url else "agency.webhook_url"

    @property
    def attempt_timeout(self) -> float:
        """The longest one attempt may take: the webhook's answer, or the upstream's."""
        if self.settings.agency.deliver == "email":
            return float(self.settings.upstream.timeout)
        return float(self.settings.agency.timeout)

    # -- the loop -------------------------------------------------------------------------

    def wake(self) -> None:
        """A forward may be due now (a decision, a review): look without waiting.

        Call it from the event loop the worker runs on.
        """
        self._wake.set()

    async def start(self) -> Stop:
        """Run in a task; returns the coroutine function that stops it (see ``stop``)."""
        stop = asyncio.Event()
        task = asyncio.create_task(self.run(stop), name="career-relay forwarder")

        async def stopper() -> None:
            # The attempts in flight may finish (within ``attempt_timeout``): an
            # answer the agency already gave is then recorded, not sent again.
            stop.set()
            try:
                await asyncio.wait_for(asyncio.shield(task),
                                       self.attempt_timeout + 2 * ATTEMPT_MARGIN)
            except TimeoutError:
                # Cancelled attempts keep their claim until it expires; then any
                # worker retries them with the same forward_id.
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        return stopper

    async def run(self, stop: asyncio.Event) -> None:
        missing = self.missing_destination
        if missing is not None:
            log.warning("%s is empty: forwards stay in the outbox until it is set "
                        "(agency.deliver = %s)", missing, self.settings.agency.deliver)
            await stop.wait()
            return
        while not stop.is_set():
            self._wake.clear()  # before the round: a wake() during it is not lost
            try:
                handled = await self.run_once()
            except Exception:
                log.exception("forwarding round failed; trying again shortly")
                handled = 0
            if handled < self.batch:  # a full batch: more may be due at once
                await self._idle(stop)

    async def run_once(self) -> int:
        """One round: claim what is due and make one attempt at each.

        Returns how many forwards were handled (attempted or cancelled); 0 when
        the destination is not configured (nothing is claimed then).
        """
        if self.missing_destination is not None:
            return 0
        claim = self.attempt_timeout + CLAIM_MARGIN
        forwards = await asyncio.to_thread(self.store.claim_due, self.batch, claim)
        if not forwards:
            return 0
        # Read after the claim: every forward of the round has its entry in this head.
        head = await asyncio.to_thread(self._ledger_head)
        async with self._sender() as send:
            results = await asyncio.gather(*(self._handle(f, send, head) for f in forwards),
                                           return_exceptions=True)
        for forward, result in zip(forwards, results, strict=True):
            if isinstance(result, BaseException):
                # The outcome was not recorded: the claim expires and the
                # forward is tried again (same forward_id).
                log.error("forward %s: recording the attempt failed: %s: %s", forward.id,
                          type(result).__name__, result)
        return len(forwards)

    async def _idle(self, stop: asyncio.Event) -> None:
        delay = self.max_idle
        try:
            due = await asyncio.to_thread(self.store.next_due)
        except Exception:
            log.exception("reading the outbox failed")
            due = None
        if due is not None:
            seconds = (due - self.store.ledger.now()).total_seconds()
            delay = min(delay, seconds if seconds > 0 else DUE_POLL)
        waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    # -- one forward ----------------------------------------------------------------------

    def _ledger_head(self) -> str:
        return self.store.ledger.head_text()

    async def _handle(self, forward: Forward, send: Sender, head: str) -> None:
        attempt = forward.attempts + 1
        if forward.payload is None:
            # Erased while it was in flight (ledger_consent._erase): the agency must
            # not receive what it would only be told to delete.
            await asyncio.to_thread(self.store.cancelled, forward.id, "erased before delivery")
            log.info("forward %s (%s): cancelled, erased before delivery", forward.id,
                     forward.kind)
            return
        try:
            # A backstop: the client's own timeouts normally end the attempt first.
            async with asyncio.timeout(self.attempt_timeout + ATTEMPT_MARGIN):
                outcome = await send(forward, forward.payload.encode("utf-8"), head)
        except TimeoutError:
            outcome = Outcome(False, f"no answer within {self.attempt_timeout:g} s")
        except Exception as exc:  # a bug of ours must not lose the forward either
            log.exception("forward %s: attempt %d raised", forward.id, attempt)
            outcome = Outcome(False, f"{type(exc).__name__}: {exc}")
        if outcome.delivered:
            await asyncio.to_thread(self.store.delivered, forward.id, outcome.detail)
            log.info("forward %s (%s): delivered on attempt %d (%s)", forward.id, forward.kind,
                     attempt, outcome.detail)
            return
        retry_in = self._retry_in(forward.attempts)
        await asyncio.to_thread(self.store.failed, forward.id, outcome.detail, retry_in)
        level = logging.WARNING if outcome.needs_attention else logging.INFO
        log.log(level, "forward %s (%s): attempt %d failed (%s); retry in %d s", forward.id,
                forward.kind, attempt, outcome.detail, retry_in)

    def _retry_in(self, failures: int) -> int:
        schedule = self.settings.agency.retry_schedule
        return schedule[min(failures, len(schedule) - 1)]

    @contextlib.asynccontextmanager
    async def _sender(self) -> AsyncIterator[Sender]:
        if self.settings.agency.deliver == "email":
            yield self._mail
            return
        timeout = aiohttp.ClientTimeout(total=self.settings.agency.timeout)
        async with aiohttp.ClientSession(timeout=timeout,
                                         headers={"User-Agent": USER_AGENT}) as session:

            async def post(forward: Forward, body: bytes, head: str) -> Outcome:
                return await self._post(session, forward, body, head)

            yield post

    # -- webhook --------------------------------------------------------------------------

    async def _post(self, session: aiohttp.ClientSession, forward: Forward,
                    body: bytes, head: str) -> Outcome:
        agency = self.settings.agency
        headers = {
            "Content-Type": CONTENT_TYPE,
            SIGNATURE_HEADER: sign(agency.webhook_secret, body, int(self._clock())),
            FORWARD_ID_HEADER: forward.id,
            TYPE_HEADER: forward.kind,
            LEDGER_HEAD_HEADER: head,
        }
        try:
            async with session.post(agency.webhook_url, data=body, headers=headers,
                                    allow_redirects=False) as response:
                status, reason = response.status, response.reason or ""
        except TimeoutError:  # aiohttp's own deadline (ClientTimeout.total)
            return Outcome(False, f"no answer within {agency.timeout} s")
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome(False, _short(f"{type(exc).__name__}: {exc}"))
        detail = _short(f"HTTP {status} {reason}".strip())
        if 200 <= status < 300:
            return Outcome(True, detail)
        # 408, 425 and 429 are the agency asking us to come back later; other
        # 4xx (401: a wrong secret, 404: a wrong URL) need a person to act.
        attention = 400 <= status < 500 and status not in (408, 425, 429)
        return Outcome(False, detail, needs_attention=attention)

    # -- email ----------------------------------------------------------------------------

    def message(self, forward: Forward, body: bytes, head: str | None = None) -> EmailMessage:
        """The mail sent for ``forward`` (docs/agency-webhook.md, "Email delivery")."""
        hostname = self.settings.gateway.hostname
        msg = EmailMessage(policy=SMTP_POLICY)
        msg["From"] = f"career-relay <career-relay@{hostname}>"
        msg["To"] = self.settings.agency.email
        msg["Subject"] = f"[career-relay] {forward.kind} {forward.id}"
        msg["Date"] = email.utils.format_datetime(
            dt.datetime.fromtimestamp(self._clock(), dt.UTC))
        # The same id on every attempt (RFC 5322 3.6.4): a resend is recognisably
        # the same message, so the agency keeps one copy.
        msg["Message-ID"] = f"<{forward.id}@{hostname}>"
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
        msg[FORWARD_ID_HEADER] = forward.id
        msg[TYPE_HEADER] = forward.kind
        if head is not None:
            msg[LEDGER_HEAD_HEADER] = head
        # Pretty-printed for the person who reads it, still plain JSON for a script.
        text = json.dumps(json.loads(body), ensure_ascii=False, indent=2, sort_keys=True)
        # Quoted-printable: 7-bit safe through any relay (no 8BITMIME needed), and
        # the JSON's ASCII structure stays legible even undecoded.
        msg.set_content(text + "\n", charset="utf-8", cte="quoted-printable")
        return msg

    async def _mail(self, forward: Forward, body: bytes, head: str) -> Outcome:
        up = self.settings.upstream
        hostname = self.settings.gateway.hostname
        smtp = aiosmtplib.SMTP(hostname=up.host, port=up.port, local_hostname=hostname,
                               timeout=up.timeout, use_tls=up.tls == "tls",
                               start_tls=up.tls == "starttls", validate_certs=up.verify_tls,
                               username=up.username or None, password=up.password or None)
        message = self.message(forward, body, head)
        try:
            async with smtp:
                await smtp.send_message(message, sender=f"career-relay@{hostname}",
                                        recipients=[self.settings.agency.email])
        except aiosmtplib.SMTPRecipientsRefused as exc:
            code = exc.recipients[0].code if exc.recipients else 550
            text = exc.recipients[0].message if exc.recipients else str(exc)
            return Outcome(False, _short(f"SMTP {code} {text}"), needs_attention=code >= 500)
        except aiosmtplib.SMTPResponseException as exc:
            return Outcome(False, _short(f"SMTP {exc.code} {exc.message}"),
                           needs_attention=exc.code >= 500)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return Outcome(False, _short(f"{type(exc).__name__}: {exc}"))
        return Outcome(True, f"SMTP 250 via {up.host}:{up.port}")


def _short(text: str) -> str:
    return " ".join(text.split())[:300]
