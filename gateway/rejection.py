"""Rejections: detect, then make one copy per recipient, each with its own link (SPEC 5).

``Rejections.prepare`` runs once per accepted message, before the 250, in a
thread (it writes the ledger and signs).  It returns ``None`` for ordinary
mail, which is relayed as it came, or the copies to spool instead of the
original.  Every copy is final when it is spooled: retries and restarts send
the same bytes, and a client that retries after a 451 gets the same offers
(the ledger is idempotent on Message-ID and recipient; DESIGN decision 1).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from email.header import decode_header, make_header
from pathlib import Path

from career_relay.dkimkeys import load_key
from career_relay.ledger import Ledger
from career_relay.settings import CompanySettings, Settings
from career_relay.tokens import LinkSigner, link
from gateway import detect, email_templates, inject
from gateway.dkim import Signer, remove_signatures
from gateway.message import header_block
from gateway.policy import domain_of, from_domains

log = logging.getLogger("career_relay.rejection")


@dataclass(frozen=True)
class Copy:
    rcpts: list[str]
    data: bytes


class Rejections:
    def __init__(self, settings: Settings, ledger: Ledger, template_dir: Path):
        self._settings = settings
        self._ledger = ledger
        self._links = LinkSigner.from_settings(settings)
        self._signers = {c.id: Signer(c.domains[0], c.dkim_selector, load_key(c.dkim_key_file))
                         for c in settings.companies if c.dkim_key_file}
        self._texts = {c.id: email_templates.load(template_dir, c, settings.agency)
                       for c in settings.companies}

    def prepare(self, company: CompanySettings | None, data: bytes, rcpts: list[str],
                fields: dict[str, str]) -> list[Copy] | None:
        """The copies to send instead of ``data``, or None to relay it unchanged."""
        company = company or self._company_of(data)
        if company is None:
            return None
        by_header = fields.get("x-career-relay", "").strip().lower() == "rejection"
        marked = inject.marked_parts(data) > 0
        if not (by_header or marked):
            if not self._classified(company, data):
                return None
            by_header = True  # detect = "auto": treated like the header
        self._ledger.count(company.id, "rejections")
        try:
            return self._copies(company, data, rcpts, fields, append=not marked)
        except inject.NotInjectable as exc:
            self._ledger.count(company.id, "not_injected")
            log.info("rejection from %s relayed without links: %s", company.id, exc)
            return None

    def _company_of(self, data: bytes) -> CompanySettings | None:
        for domain in from_domains(header_block(data)):
            company = self._settings.company_for_domain(domain)
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

    def _copies(self, company: CompanySettings, data: bytes, rcpts: list[str],
                fields: dict[str, str], *, append: bool) -> list[Copy]:
        texts = self._texts[company.id]
        message_id = _message_id(data)
        internal = [r for r in rcpts if domain_of(r) in company.domains]
        copies = []
        for rcpt in (r for r in rcpts if r not in internal):
            offer = self._ledger.record_offer(
                company.id, message_id, rcpt, job=_field(fields, "job"),
                channel=_field(fields, "channel"), stage=_field(fields, "stage"))
            url = link(self._settings.site.public_url, self._links.token(offer.id))
            copies.append(Copy([rcpt], self._sign(company, inject.inject(
                data, texts.for_candidate(url), append=append))))
        if internal:
            copies.append(Copy(internal, self._sign(company, inject.inject(
                data, texts.for_internal(), append=append))))
        return copies

    def _sign(self, company: CompanySettings, data: bytes) -> bytes:
        """Signatures over the original no longer hold; sign the copy with the company key."""
        data = remove_signatures(data)
        signer = self._signers.get(company.id)
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
