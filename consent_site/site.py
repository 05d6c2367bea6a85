"""What the candidate's views share: the ledger, the signer, the nonce, the notices.

Reads run on the event loop through their own connection (WAL readers never
wait for the writer); every write runs on one writer thread with its own
connection, because a commit waits for the disk (``synchronous = FULL``:
a recorded consent survives a power cut) and the loop must not.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import jinja2
from multidict import CIMultiDict

from career_relay.consent import Consents, Notice
from career_relay.ledger import Ledger, Offer, open_configured
from career_relay.ledger_consent import ConsentLedger
from career_relay.ledger_rules import Rules
from career_relay.settings import CompanySettings, Settings
from career_relay.tokens import LinkSigner
from consent_site import i18n
from consent_site.page_cache import PageCache
from consent_site.security import Csrf, security_headers

T = TypeVar("T")

#: Seconds between two reads of the ledger's data_version (``Site.generation``).
GENERATION_CHECK = 0.1


class Site:
    def __init__(self, settings: Settings, templates: jinja2.Environment) -> None:
        self.settings = settings
        self.templates = templates
        self.signer = LinkSigner.from_settings(settings)
        self.csrf = Csrf(settings.secrets.signing_keys,
                         https=settings.site.public_url.startswith("https://"))
        self._reader_ledger: Ledger = open_configured(settings)
        self._writer_ledger: Ledger = open_configured(settings)
        rules = Rules.from_settings(settings)
        self.reader = Consents(settings, ConsentLedger(self._reader_ledger, rules))
        self.writer = Consents(settings, ConsentLedger(self._writer_ledger, rules))
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="consent-writer")
        self._notices: dict[tuple[str, str], tuple[Notice, str]] = {}
        self._recorded: set[str] = set()
        self._viewed: set[str] = set()
        self.pages = PageCache()
        #: Every header of a candidate's page, built once (``candidate._serve``).
        self.page_headers = CIMultiDict({"Content-Type": "text/html; charset=utf-8",
                                         "Cache-Control": "no-store",
                                         **security_headers(self.csrf.https)})
        self.generation_check = GENERATION_CHECK
        self._generation = 0
        self._generation_read = -math.inf
        #: Called after a decision that may have queued a forward (the forwarder's wake).
        self.on_forward: Callable[[], None] = lambda: None

    def reload(self, settings: Settings) -> None:
        """SIGHUP: the companies of ``settings``, and the templates read again.

        Runs on the event loop, between requests: the views see the old
        objects or the new ones, never a mix.  The rendered notices and pages
        go with the old names; the next visit renders them afresh (a changed
        notice text is a new notice version, recorded when first shown).
        """
        rules = Rules.from_settings(settings)
        reader = Consents(settings, ConsentLedger(self._reader_ledger, rules))
        writer = Consents(settings, ConsentLedger(self._writer_ledger, rules))
        if self.templates.cache is not None:
            self.templates.cache.clear()  # the next get_template reads the file again
        self.settings, self.reader, self.writer = settings, reader, writer
        self._notices = {}
        self.pages = PageCache()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._reader_ledger.close()
        self._writer_ledger.close()

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args))
        finally:
            self._generation_read = -math.inf  # what we wrote shows on the next page


    def generation(self) -> int:
        """The ledger's ``data_version`` as this process's reader sees it: it changes when
        any other connection commits (``page_cache``).

        Read at most every ``GENERATION_CHECK`` seconds, and always right after
        this process wrote: a change made by another process shows within that
        time, one made here at once.
        """
        now = time.monotonic()
        if now - self._generation_read >= self.generation_check:
            # The event loop's own connection, which no other thread uses: no lock needed.
            (version,) = self._reader_ledger.db.conn.execute("PRAGMA data_version").fetchone()
            self._generation = int(version)
            self._generation_read = now
        return self._generation

    def offer(self, offer_id: str) -> Offer | None:
        return self._reader_ledger.offer(offer_id)

    def company(self, company_id: str) -> CompanySettings | None:
        return next((c for c in self.settings.companies if c.id == company_id), None)

    def names(self, offer: Offer) -> dict[str, str]:
        company = self.company(offer.company)
        agency = self.settings.agency
        return {"company": company.name if company else offer.company, "agency": agency.name,
                "license_no": agency.license_no, "months": str(agency.retention_months),
                "contact": agency.contact}

    def notice(self, offer: Offer, locale: str) -> tuple[Notice, str]:
        """The notice shown to this offer's candidate in ``locale`` and its HTML block,
        rendered once per company and language.

        The hashed text is the notice block and the two consent sentences of
        the form: everything the candidate reads before ticking (SPEC 6).
        """
        key = (offer.company, locale)
        if key not in self._notices:
            names = self.names(offer)
            t = i18n.TEXTS[locale]
            html = self.templates.get_template("notice.html").render(
                t=t, names=names, privacy_url=self.settings.agency.privacy_url)
            text = "\n".join([html.strip(), t["share_application"].format(**names),
                              t["agree"].format(**names)])
            self._notices[key] = (Notice.of(text, locale), html)
        return self._notices[key]

    async def record_notice(self, offer: Offer, notice: Notice) -> None:
        """Keep the notice's text before any form citing it goes out (once per process)."""
        if notice.digest not in self._recorded:
            await self.write(self.writer.shown, offer, notice)
            self._recorded.add(notice.digest)

    def viewed(self, offer_id: str) -> bool:
        return offer_id in self._viewed

    async def record_view(self, offer_id: str) -> None:
        """The first view of an offer's page; later views cost no write (nor a thread hop)."""
        if offer_id not in self._viewed:
            await self.write(self.writer.store.record_view, offer_id)
            self._viewed.add(offer_id)

    def notice_by_digest(self, digest: str) -> Notice | None:
        for notice, _ in self._notices.values():
            if notice.digest == digest:
                return notice
        found = self.reader.store.notice(digest)
        return None if found is None else Notice.of(*found)
