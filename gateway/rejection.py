"""The rejection step: first look, detect, one copy per recipient (SPEC 5).

``Rejections.first_look`` runs for every message, in the event loop, and
decides most of them without parsing more than their headers: mail of no
company, or without the header and the marker and with nothing the
classifier takes for a rejection, is ``Ordinary`` and goes out as it came.
The rest goes to ``Rejections.prepare`` (``draft``: the copies made and
signed; ``record``: their offers written to the ledger; the pipeline does a
small rejection's both in the loop when the ledger's lock is free, else in a
thread): a ``Rejection`` with its copies, each final when it is spooled
(retries and restarts send the same bytes; a client that retries after a
451 gets the same offers: the ledger is idempotent on Message-ID and
recipient, DESIGN decision 1), or ``NotInjectable`` with the reason, relayed
as it came and counted.  The pipeline logs and counts each outcome in one place.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from career_relay.dkimkeys import load_key
from career_relay.errors import TemporaryFailure, TooManyCopies
from career_relay.ledger import Ledger, LedgerWriter, new_offer_id
from career_relay.ledger import Rejection as Entry
from career_relay.settings import CompanySettings, Settings
from career_relay.tokens import LinkSigner, link
from gateway import detect, email_templates, inject, mime
from gateway.dkim import Signer, SigningError, pieces_facts, remove_signatures
from gateway.message import header_block, message_id
from gateway.policy import domain_of, single_from_domain
from gateway.spliced import Base, Body, Spliced, materialised
from gateway.textparts import MARKER, UNTOUCHABLE, text_parts

log = logging.getLogger("career_relay.rejection")

# A copy is the message with a link or two: larger than max_message_size and than this
# many times the message, it is an amplification, and the rejection is not changed.
COPY_GROWTH = 2
_FACTS_FROM_PIECES = 64 * 1024  # bytes of a copy above which signing reads its pieces


@dataclass(frozen=True)
class Copy:
    """What goes to ``rcpts``: the message as it came, or a rejection's copy as pieces of
    the shared message (``gateway.spliced``)."""

    rcpts: list[str]
    body: Body

    @property
    def data(self) -> bytes:
        """The copy's bytes, made whole (for a look at them: the spool keeps ``body``)."""
        return materialised(self.body)


@dataclass(frozen=True)
class Ordinary:
    """Not a rejection: relayed byte for byte.  ``unmarked``: the classifier took it
    for one, under ``detect = "marker"`` (counted, nothing about the person kept)."""

    why: str
    unmarked: bool = False


@dataclass(frozen=True)
class NotInjectable:
    """A rejection that cannot take the link safely: relayed as it came, counted."""

    company: str
    reason: str


@dataclass(frozen=True)
class Rejection:
    """The copies to send instead of the message, one per outside recipient."""

    company: str
    copies: list[Copy]


Outcome = Ordinary | NotInjectable | Rejection


@dataclass(frozen=True)
class Candidate:
    """What the first look found: a rejection of ``company`` to prepare in a thread."""

    company: CompanySettings
    root: mime.Part | None  # None: the map could not be made (``problem`` says why)
    append: bool  # only the header (or the classifier) marked it: append the block
    problem: str = ""
    fatal: bool = False  # the map failed outright: gateway.on_error decides


@dataclass(frozen=True)
class Draft:
    """A rejection's copies made, not yet recorded: the offers the ledger is to record,
    and ``finish``, the outcome from the offers it recorded (a retried message's copies
    are made again with the offers it had)."""

    entry: Entry  # the offers (recipient, fresh offer id), counters, fields
    finish: Callable[[dict[str, str]], Rejection | NotInjectable]


class _Companies:
    """What the companies' settings and the templates make: built whole, swapped whole."""

    def __init__(self, settings: Settings, template_dir: Path):
        self.settings = settings
        # One signer per company domain, so d= is the From domain (DMARC alignment).
        self.signers: dict[tuple[str, str], Signer] = {}
        for c in settings.companies:
            if c.dkim_key_file:
                key = load_key(c.dkim_key_file)
                for domain in c.domains:
                    self.signers[(c.id, domain)] = Signer(domain, c.dkim_selector, key)
        # Each company's block names its own agency (companies.agency, SPEC 11).
        self.texts = {c.id: email_templates.load(template_dir, c,
                                                 settings.agency_of(c.id) or settings.agency)
                      for c in settings.companies}
        self.by_id = {c.id: c for c in settings.companies}


class Rejections:
    def __init__(self, settings: Settings, ledger: Ledger, template_dir: Path):
        self._settings = settings
        self._template_dir = template_dir
        self._ledger = ledger
        self._writer = LedgerWriter(ledger)
        self._links = LinkSigner.from_settings(settings)
        self._companies = _Companies(settings, template_dir)
        self._max_parts = settings.gateway.max_mime_parts

    def reload(self, settings: Settings) -> None:
        """New companies, keys and templates (SIGHUP).  Everything is built before the one
        swap: a key or template that cannot be read raises and leaves the old ones."""
        self._companies = _Companies(settings, self._template_dir)

    def close(self) -> None:
        self._writer.close()

    # -- the first look: every message, in the event loop ------------------------------

    def first_look(self, company: CompanySettings | None, data: bytes,
                   fields: dict[str, str]) -> Ordinary | Candidate:
        """Ordinary, or a Candidate for ``prepare``.  Reads no more than it must:
        the header, then the map, the marker in the text parts, then the classifier."""
        now = self._companies
        company = self._whose(now, company, data)
        if company is None:
            return Ordinary("no company proved the mail is theirs")
        by_header = fields.get("x-career-relay", "").strip().lower() == "rejection"
        try:
            root = mime.parse(data, max_parts=self._max_parts)
        except mime.MimeError as exc:
            if by_header or MARKER in data:  # a rejection we cannot map
                return Candidate(company, None, by_header, problem=str(exc),
                                 fatal=not isinstance(exc, (mime.TooComplex, mime.Ambiguous)))
            return Ordinary("no map, no marker")
        if any(tp.has_marker() for tp in text_parts(data, root, signed_too=True)):
            return Candidate(company, root, append=False)
        if by_header:
            return Candidate(company, root, append=True)
        if not detect.classify(*detect.classifier_input(data, root)).is_rejection:
            return Ordinary("no header, no marker, not classified")
        if company.detect == "auto":
            return Candidate(company, root, append=True)
        self._writer.add_count(company.id, "unmarked_rejections")
        return Ordinary("classified as a rejection without the marker", unmarked=True)

    def _whose(self, now: _Companies, company: CompanySettings | None,
               data: bytes) -> CompanySettings | None:
        """The proven company (the pipeline's ``_whose``) as configured now: a session
        that authenticated before a reload takes the reloaded settings."""
        if company is None:
            return None  # no company proved it is theirs: relayed unchanged, unsigned
        current = now.by_id.get(company.id)
        if current is None:
            raise TemporaryFailure("The sender's company is no longer configured")
        return current

    # -- the rejection: in a thread (ledger, signatures) ----------------------------------

    def prepare(self, found: Candidate, data: bytes, rcpts: list[str],
                fields: dict[str, str]) -> Rejection | NotInjectable:
        """One copy per recipient, each with its own link, signed; or NotInjectable."""
        return self.record(self.draft(found, data, rcpts, fields))

    def draft(self, found: Candidate, data: bytes, rcpts: list[str],
              fields: dict[str, str]) -> Draft:
        """The copies, made and signed (CPU only: nothing written yet)."""
        company = found.company
        if found.root is None:
            if found.fatal and self._settings.gateway.on_error == "tempfail":
                raise TemporaryFailure("Could not prepare the message; try again later")
            return _not_injected(company, data, found.problem)
        if found.root.content_type in UNTOUCHABLE:
            return _not_injected(company, data, f"{found.root.content_type} is never changed")
        try:
            return self._copies(self._companies, company, data, found.root, rcpts, fields,
                                append=found.append)
        except (inject.NotInjectable, SigningError) as exc:
            # SigningError: a header section dkimpy cannot read (a folded first line,
            # "From :"); a copy that cannot be signed as the company is not sent changed.
            return _not_injected(company, data, str(exc))

    @property
    def commits_now(self) -> bool:
        """Whether ``record_now`` can commit (SQLite), not only say ``WouldWait``."""
        return self._ledger.writes_now

    def record(self, draft: Draft) -> Rejection | NotInjectable:
        """The draft's offers and counts in the ledger (waiting for its lock: a thread),
        then its outcome."""
        return draft.finish(self._writer.record(draft.entry))

    def record_now(self, drafts: list[Draft]) -> list[dict[str, str]]:
        """The offers of several drafts in one transaction at once (the event loop:
        ``gateway.loop_commits``), each draft's as ``record`` gives it to ``finish``; or
        ``WouldWait`` and nothing written."""
        return self._writer.record_now([draft.entry for draft in drafts])

    def _copies(self, now: _Companies, company: CompanySettings, data: bytes,
                root: mime.Part, rcpts: list[str], fields: dict[str, str],
                *, append: bool) -> Draft:
        """The copies, built first and recorded after (``record``), in one transaction.

        Each is made, signed and kept as its pieces of the shared message (``Spliced``),
        one at a time: a thousand copies of a 3 MB rejection hold 3 MB, not 3 GB."""
        internal: list[str] = []
        outside: list[str] = []
        for rcpt in rcpts:
            (internal if domain_of(rcpt) in company.domains else outside).append(rcpt)
        count = len(set(outside)) + bool(internal)
        if len(data) * count > self._settings.gateway.max_fanout_bytes:
            # Every copy is signed whole: 24 MB to 1,000 recipients was ten minutes of CPU
            # and a session timed out before its reply (attack review).
            raise TooManyCopies(
                f"A rejection of {len(data) // 1024} KB to {count} recipients is more than "
                "this relay makes at once; send it to fewer recipients per message")
        texts = now.texts[company.id]
        signer = _signer(now, company, data)  # the From header is the same in every copy
        # The message's own signatures hold for no copy: gone from the shared base.
        msg_id = message_id(data)
        stripped = remove_signatures(data)
        if stripped is not data:
            try:
                data, root = stripped, mime.parse(stripped, max_parts=self._max_parts)
            except mime.MimeError as exc:
                raise inject.NotInjectable(f"without its signatures: {exc}") from None
        base = Base(new_offer_id(), data)
        fresh = {rcpt: new_offer_id() for rcpt in outside}
        # Links carry whole seconds; the offers record the same second, so a resent
        # copy can be given exactly the link the first one had.
        issued = float(int(time.time()))

        limit = max(self._settings.gateway.max_message_size, COPY_GROWTH * len(data))

        def made(repl: inject.Replacement) -> Spliced:
            copy = inject.splice(base, repl, append=append, root=root)
            # A copy is the message with a link or two more: never much larger.
            if len(copy) > limit:
                raise inject.NotInjectable("a copy would exceed gateway.max_message_size")
            return _signed(signer, copy)

        def copy_for(rcpt: str, offer_id: str, issued_at: float) -> Copy:
            url = link(self._settings.site.public_url, self._links.token(offer_id, issued_at))
            return Copy([rcpt], made(texts.for_candidate(url)))

        copies = {rcpt: copy_for(rcpt, oid, issued) for rcpt, oid in fresh.items()}
        internal_copy = Copy(internal, made(texts.for_internal())) if internal else None
        if not copies and internal_copy is None:
            raise inject.NotInjectable("no recipient")

        def finish(recorded: dict[str, str]) -> Rejection:
            for rcpt, offer_id in recorded.items():
                if offer_id != fresh[rcpt]:  # a retried submission: the offer and link it had
                    offer = self._ledger.offer(offer_id)
                    first = offer.created.timestamp() if offer is not None else issued
                    copies[rcpt] = copy_for(rcpt, offer_id, first)
            return Rejection(company.id, list(copies.values())
                             + ([internal_copy] if internal_copy else []))

        return Draft(Entry(company.id, msg_id, tuple(fresh.items()), _field(fields, "job"),
                           _field(fields, "channel"), _field(fields, "stage"),
                           created=dt.datetime.fromtimestamp(issued, dt.UTC)), finish)


def _not_injected(company: CompanySettings, data: bytes, reason: str) -> Draft:
    """Relayed as it came, counted as a rejection not injected (no offer)."""
    return Draft(Entry(company.id, message_id(data), (), counters=("rejections", "not_injected")),
                 lambda _: NotInjectable(company.id, reason))


def _signer(now: _Companies, company: CompanySettings, data: bytes) -> Signer | None:
    """The company key, as the domain of the From address when that is one of the
    company's (DMARC alignment)."""
    domain = single_from_domain(header_block(data))
    return now.signers.get(
        (company.id, domain if domain in company.domains else company.domains[0]))


def _signed(signer: Signer | None, copy: Spliced) -> Spliced:
    """Signatures over the original no longer hold (removed from the base); sign the
    changed copy afresh.  Its bytes exist only while they are hashed."""
    if signer is None:
        return copy
    message = bytes(copy)
    # Scanning a copy costs about 4 us per KB; taking the facts from its pieces, a fixed
    # 50-100 us: worth it only for large copies (3 MB: 11 ms against 0.1 ms).
    facts = (pieces_facts(message, copy.base.data, copy.pieces, copy.base.facts)
             if len(message) > _FACTS_FROM_PIECES else None)
    return copy.prepend(signer.sign(message, facts))


def _field(fields: dict[str, str], name: str) -> str | None:
    """X-Career-Relay-Job/-Channel/-Stage, RFC 2047 encoded-words decoded (never raises)."""
    raw = fields.get(f"x-career-relay-{name}")
    if not raw:
        return None
    text = detect.decode_header_value(raw.encode("utf-8", "surrogateescape"))
    return "".join(ch for ch in text if ch.isprintable())[:200] or None
