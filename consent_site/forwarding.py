"""The forwarding worker (SPEC 7): delivers the outbox's forwards to the agency.

A round claims the forwards that are due (``ConsentLedger.claim_due``) and
makes one attempt at each, by the ``deliver`` of the forward's own agency
(``forwards.agency``: ``[[agencies]]``, or ``[agency]`` as ``default``; SPEC 11), with
that agency's URL, secret or address (``consent_site.agency_delivery``):

- ``webhook``: the stored payload, byte for byte, POSTed as JSON with an
  ``X-Career-Relay-Signature`` (``career_relay.agency_signature``) freshly
  timed for this attempt; a 2xx is delivered, anything else is retried.
  Redirects are not followed: a 3xx is a failure, so a moved endpoint is
  noticed by its operator instead of silently receiving personal data.
- ``email``: a text/plain message to ``agency.email`` through the upstream,
  its Message-ID derived from the forward id (the agency de-duplicates on it).
- ``pull``: nothing.  The agency pulls its forwards from the API's feed and acknowledges
  them there (``career_relay.ledger.pulls``); this worker never claims them, so they wait
  in the outbox with no attempt, no failure and no retry until then.

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
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from typing import Protocol

import aiohttp

from career_relay.ledger import ConsentLedger, Forward, Notices
from career_relay.settings import DEFAULT_AGENCY, AgencyEntrySettings, Settings
from consent_site import agency_delivery as delivery
from consent_site import agency_notices
from consent_site.agency_delivery import USER_AGENT, Outcome, Sent

log = logging.getLogger("career_relay.forwarding")

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


#: Sends one forward's (or notice's) body, to its agency, with the ledger head of its round
#: (``<n>:<hash>``).
Sender = Callable[[AgencyEntrySettings, Sent, bytes, str], Awaitable[Outcome]]


class Book(Protocol):
    """Where an attempt's result is recorded: the outbox (``ConsentLedger``) for forwards,
    ``Notices`` for the notices that are not."""

    def delivered(self, item_id: str, detail: str = "", /) -> None: ...

    def failed(self, item_id: str, detail: str, retry_in: float, /) -> None: ...


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
        #: The notices that are not forwards (``credit_request``), sent in the same rounds.
        self.notices = Notices(store.ledger)

    # -- configuration --------------------------------------------------------------------

    def missing(self, agency: AgencyEntrySettings) -> str | None:
        """The empty setting that keeps this agency's forwards in the outbox, if any (none for
        an agency that pulls: it needs no destination)."""
        if agency.deliver == "pull":
            return None
        single = agency.id == DEFAULT_AGENCY and not self._listed(agency.id)
        where = "agency" if single else f"agencies[{agency.id}]"
        if agency.deliver == "email":
            return None if agency.email else f"{where}.email"
        return None if agency.webhook_url else f"{where}.webhook_url"

    def _listed(self, agency_id: str) -> bool:
        return any(a.id == agency_id for a in self.settings.agencies)

    @property
    def reachable(self) -> list[AgencyEntrySettings]:
        """The agencies whose forwards this worker sends: each with its destination set
        (never one that pulls: the API's feed delivers those)."""
        return [a for a in self.settings.all_agencies
                if a.deliver != "pull" and self.missing(a) is None]

    @property
    def missing_destination(self) -> str | None:
        """The first empty destination setting (of an agency whose forwards wait), if any."""
        for agency in self.settings.all_agencies:
            found = self.missing(agency)
            if found is not None:
                return found
        return None

    def timeout_of(self, agency: AgencyEntrySettings) -> float:
        """The longest one attempt to ``agency`` may take: the webhook's answer, or the
        upstream's."""
        if agency.deliver == "email":
            return float(self.settings.upstream.timeout)
        return float(agency.timeout)

    @property
    def attempt_timeout(self) -> float:
        """The longest any attempt may take."""
        return max((self.timeout_of(a) for a in self.settings.all_agencies), default=1.0)

    @property
    def claim_seconds(self) -> float:
        """How long a claim lasts: the longest attempt, and the ledger writes after it."""
        return self.attempt_timeout + CLAIM_MARGIN

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
        for agency in self.settings.all_agencies:
            missing = self.missing(agency)
            if missing is not None:
                log.warning("%s is empty: forwards to agency %s stay in the outbox until it "
                            "is set (deliver = %s)", missing, agency.id, agency.deliver)
        if not self.reachable:
            await stop.wait()
            return
        while not stop.is_set():
            self._wake.clear()  # before the round: a wake() during it is not lost
            try:
                handled = await self.run_once()
                handled += await agency_notices.run_once(self)
            except Exception:
                log.exception("forwarding round failed; trying again shortly")
                handled = 0
            if handled < self.batch:  # a full batch: more may be due at once
                await self._idle(stop)

    async def run_once(self) -> int:
        """One round: claim what is due and make one attempt at each.

        Returns how many forwards were handled (attempted or cancelled).  Only forwards
        to an agency whose destination is set are claimed (``reachable``): the others wait
        in the outbox, never sent anywhere else.
        """
        reachable = [a.id for a in self.reachable]
        if not reachable:
            return 0
        forwards = await asyncio.to_thread(self.store.claim_due, self.batch,
                                           self.claim_seconds, reachable)
        if not forwards:
            return 0
        # Read after the claim: every forward of the round has its entry in this head.
        head = await asyncio.to_thread(self._ledger_head)
        async with self.sender() as send:
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
            # Only the reachable agencies' forwards and notices: a pulling agency's wait,
            # due at once and forever, and would otherwise wake this loop every DUE_POLL
            # (its credit requests it reads through the API: GET /agency/credits).
            reachable = [a.id for a in self.reachable]
            dues = [d for d in (await asyncio.to_thread(self.store.next_due, reachable),
                                await asyncio.to_thread(self.notices.next_due, reachable))
                    if d]
            due = min(dues, default=None)
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
        if forward.payload is None:
            # Erased while it was in flight (ledger_consent._erase): the agency must
            # not receive what it would only be told to delete.
            await asyncio.to_thread(self.store.cancelled, forward.id, "erased before delivery")
            log.info("forward %s (%s): cancelled, erased before delivery", forward.id,
                     forward.kind)
            return
        await self.send_one("forward", forward, forward.agency, forward.attempts,
                            forward.payload, head, send, self.store)

    async def send_one(self, what: str, sent: Sent, agency_id: str, attempts: int,
                       payload: str, head: str, send: Sender, book: Book) -> None:
        """One attempt at a forward or a notice (``what``) to its agency, recorded in
        ``book`` (the outbox, or the notices): delivered, or failed and due again by the
        agency's retry schedule."""
        attempt = attempts + 1
        agency = self.settings.agency_by_id(agency_id)
        if agency is None:  # never claimed so (run_once): a backstop, not a detour
            raise ValueError(f"{what} {sent.id}: no agency {agency_id!r}")
        outcome = await self.attempt(agency, sent, payload, head, send, attempt)
        if outcome.delivered:
            await asyncio.to_thread(book.delivered, sent.id, outcome.detail)
            log.info("%s %s (%s): delivered on attempt %d (%s)", what, sent.id, sent.kind,
                     attempt, outcome.detail)
            return
        retry_in = self.retry_in(agency, attempts)
        await asyncio.to_thread(book.failed, sent.id, outcome.detail, retry_in)
        level = logging.WARNING if outcome.needs_attention else logging.INFO
        log.log(level, "%s %s (%s): attempt %d failed (%s); retry in %d s", what, sent.id,
                sent.kind, attempt, outcome.detail, retry_in)

    async def attempt(self, agency: AgencyEntrySettings, sent: Sent, payload: str, head: str,
                      send: Sender, attempt: int) -> Outcome:
        """One attempt at ``sent`` within its agency's timeout; any failure an ``Outcome``."""
        timeout = self.timeout_of(agency)
        try:
            # A backstop: the client's own timeouts normally end the attempt first.
            async with asyncio.timeout(timeout + ATTEMPT_MARGIN):
                return await send(agency, sent, payload.encode("utf-8"), head)
        except TimeoutError:
            return Outcome(False, f"no answer within {timeout:g} s")
        except Exception as exc:  # a bug of ours must not lose the forward either
            log.exception("%s %s: attempt %d raised", sent.kind, sent.id, attempt)
            return Outcome(False, f"{type(exc).__name__}: {exc}")

    @staticmethod
    def retry_in(agency: AgencyEntrySettings, failures: int) -> int:
        schedule = agency.retry_schedule
        return schedule[min(failures, len(schedule) - 1)]

    @contextlib.asynccontextmanager
    async def sender(self) -> AsyncIterator[Sender]:
        """One round's sender: each forward by its own agency's delivery and secrets."""
        async with aiohttp.ClientSession(headers={"User-Agent": USER_AGENT}) as session:

            async def send(agency: AgencyEntrySettings, forward: Sent, body: bytes,
                           head: str) -> Outcome:
                if agency.deliver == "email":
                    return await delivery.mail(self.settings, agency, forward, body, head,
                                               self._clock)
                return await delivery.post(session, agency, forward, body, head,
                                           int(self._clock()))

            yield send

    # -- one attempt, by the forward's own agency ----------------------------------------

    def message(self, forward: Forward, body: bytes, head: str | None = None) -> EmailMessage:
        """The mail sent for ``forward`` (docs/agency-webhook.md, "Email delivery")."""
        agency = self.settings.agency_by_id(forward.agency)
        if agency is None:
            raise ValueError(f"forward {forward.id}: no agency {forward.agency!r} configured")
        return delivery.message(self.settings, agency, forward, body, head, self._clock)
