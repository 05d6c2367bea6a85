"""Rejections: detect, then make one copy per recipient, each with its own link (SPEC 5).

``Rejections.prepare`` runs once per accepted message, before the 250, in a
thread (it writes the ledger and signs).  It returns ``None`` for ordinary
mail, which is relayed as it came, or the copies to spool instead of the
original.  Every copy is final when it is spooled: retries and restarts send
the same bytes, and a client that retries after a 451 gets the same offers
(the ledger is idempotent on Message-ID and recipient; DESIGN decision 1).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from dataclasses import dataclass
from email.header import decode_header, make_header
from pathlib import Path

from career_relay.dkimkeys import load_key
from career_relay.errors import TemporaryFailure
from career_relay.ledger import Ledger, new_offer_id
from career_relay.ledger_writer import LedgerWriter
from career_relay.settings import CompanySettings, Settings
from career_relay.tokens import LinkSigner, link
from gateway import detect, email_templates, inject, mime
from gateway.dkim import Signer, remove_signatures
from gateway.message import header_block
from gateway.policy import domain_of, from_domains

log = logging.getLogger("career_relay.rejection")


@dataclass(frozen=True)
class Copy:
    rcpts: list[str]
    data: bytes
    note: str = ""  # logged with the copy's queue id once it has one


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
        self.texts = {c.id: email_templates.load(template_dir, c, settings.agency)
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

    def reload(self, settings: Settings) -> None:
        """New companies, keys and templates (SIGHUP).  Everything is built before the one
        swap: a key or template that cannot be read raises and leaves the old ones."""
        self._companies = _Companies(settings, self._template_dir)

    def prepare(self, company: CompanySettings | None, data: bytes, rcpts: list[str],
                fields: dict[str, str]) -> list[Copy] | None:
        """The copies to send instead of ``data``, or None to relay it unchanged."""
        now = self._companies  # one message, one configuration, even across a reload
        senders = from_domains(header_block(data))  # parsed once: it picks company and key
        if company is not None:
            # A session that authenticated before a reload: the company as configured now.
            company = now.by_id.get(company.id)
            if company is None:
                raise TemporaryFailure("The sender's company is no longer configured")
        else:
            company = self._company_of(now, senders)
        if company is None:
            return None
        by_header = fields.get("x-career-relay", "").strip().lower() == "rejection"
        try:
            root = mime.parse(data)
        except mime.MimeError:
            if by_header or inject.MARKER in data:
                raise  # a rejection we cannot parse: gateway.on_error decides (SPEC 5)
            return None  # ordinary mail we cannot map is relayed as it came
        marked = inject.marked_parts(data, root) > 0
        if not (by_header or marked):
            if not self._classified(company, data):
                return None
            by_header = True  # detect = "auto": treated like the header
        try:
            return self._copies(now, company, data, root, rcpts, fields, senders,
                                append=not marked)
        except inject.NotInjectable as exc:
            self._count_not_injected(company)
            # The message as it came; the pipeline logs why with its queue id.
            return [Copy(list(rcpts), data,
                         note=f"rejection from {company.id} relayed without links: {exc}")]

    def _count_not_injected(self, company: CompanySettings) -> None:
        self._ledger.count(company.id, "rejections")
        self._ledger.count(company.id, "not_injected")

    def close(self) -> None:
        self._writer.close()

    def _company_of(self, now: _Companies, senders: list[str]) -> CompanySettings | None:
        for domain in senders:
            company = now.settings.company_for_domain(domain)
            if company is not None:
                return company
        return None

    def _classified(self, company: CompanySettings, data: bytes) -> bool:
        """detect = "auto": the classifier decides. Otherwise a hit is only counted,
        and nothing about the person is stored (SPEC 5)."""
        subject, text = detect.extract_text(data)
        if not detect.classify(subject, text).is_rejection:
            return False
        if company.detect == "auto":
            return True
        self._ledger.count(company.id, "unmarked_rejections")
        return False

    def _copies(self, now: _Companies, company: CompanySettings, data: bytes,
                root: mime.Part, rcpts: list[str], fields: dict[str, str], senders: list[str],
                *, append: bool) -> list[Copy]:
        """The copies, built first and recorded after, in one ledger transaction."""
        texts = now.texts[company.id]
        signer = _signer(now, company, senders)  # the From header is the same in every copy
        internal = [r for r in rcpts if domain_of(r) in company.domains]
        outside = [r for r in rcpts if r not in internal]
        fresh = {rcpt: new_offer_id() for rcpt in outside}
        # Links carry whole seconds; the offers record the same second, so a resent
        # copy can be given exactly the link the first one had.
        issued = float(int(time.time()))

        def copy_for(rcpt: str, offer_id: str, issued_at: float) -> Copy:
            url = link(self._settings.site.public_url, self._links.token(offer_id, issued_at))
            return Copy([rcpt], _signed(signer, inject.inject(
                data, texts.for_candidate(url), append=append, root=root)))

        copies = {rcpt: copy_for(rcpt, oid, issued) for rcpt, oid in fresh.items()}
        internal_copy = (Copy(internal, _signed(signer, inject.inject(
            data, texts.for_internal(), append=append, root=root))) if internal else None)
        recorded = self._writer.record_rejection(
            company.id, _message_id(data), list(fresh.items()), job=_field(fields, "job"),
            channel=_field(fields, "channel"), stage=_field(fields, "stage"),
            created=dt.datetime.fromtimestamp(issued, dt.UTC))
        for rcpt, offer_id in recorded.items():
            if offer_id != fresh[rcpt]:  # a retried submission: the offer and link it had
                offer = self._ledger.offer(offer_id)
                first = offer.created.timestamp() if offer is not None else issued
                copies[rcpt] = copy_for(rcpt, offer_id, first)
        return list(copies.values()) + ([internal_copy] if internal_copy else [])


def _signer(now: _Companies, company: CompanySettings, senders: list[str]) -> Signer | None:
    """The company key, as the domain of the From address when that is one of the
    company's (DMARC alignment)."""
    domains = [d for d in senders if d in company.domains]
    return now.signers.get((company.id, domains[0] if domains else company.domains[0]))


def _signed(signer: Signer | None, data: bytes) -> bytes:
    """Signatures over the original no longer hold; sign the changed copy afresh."""
    data = remove_signatures(data)
    return data if signer is None else signer.sign(data) + data


def _message_id(data: bytes) -> str:
    """The Message-ID, or a digest of the message: either is the same when a client retries."""
    for line in header_block(data).split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"message-id" and value.strip():
            return value.strip().decode("utf-8", "replace")
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _field(fields: dict[str, str], name: str) -> str | None:
    """X-Career-Relay-Job/-Channel/-Stage, RFC 2047 encoded-words decoded."""
    raw = fields.get(f"x-career-relay-{name}")
    if not raw:
        return None
    try:
        return str(make_header(decode_header(raw)))[:200]
    except (ValueError, LookupError):
        return raw[:200]
