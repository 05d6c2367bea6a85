"""What the candidate's views share: the ledger, the signer, the nonce, the notices.

The site holds one ledger, shared with the admin pages, the forwarding
worker and the metrics (``consent_site.app``).  Reads run on the event loop
(the ledger gives each thread its own reading connection, so they never
wait for a commit); every write runs on one writer thread, because a commit
waits for the disk (``synchronous = FULL``: a recorded consent survives a
power cut) and the loop must not.
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
from career_relay.ledger import ConsentLedger, Ledger, Offer
from career_relay.settings import CompanySettings, Settings
from career_relay.tokens import LinkSigner
from consent_site import i18n
from consent_site.page_cache import PageCache
from consent_site.security import Csrf, security_headers

T = TypeVar("T")

#: Seconds between two reads of the ledger's data_version (``Site.generation``).
GENERATION_CHECK = 0.1


class Site:
    def __init__(self, settings: Settings, templates: jinja2.Environment, ledger: Ledger
                 ) -> None:
        self.settings = settings
        self.templates = templates
        self.signer = LinkSigner.from_settings(settings)
        self.csrf = Csrf(settings.secrets.signing_keys,
                         https=settings.site.public_url.startswith("https://"))
        self.ledger = ledger
        self.consents = Consents(settings, ConsentLedger(ledger))
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="consent-writer")
        self._notices: dict[tuple[str, str, str, bool], tuple[Notice, str]] = {}
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
        consents = Consents(settings, ConsentLedger(self.ledger))
        if self.templates.cache is not None:
            self.templates.cache.clear()  # the next get_template reads the file again
        self.settings, self.consents = settings, consents
        self._notices = {}
        self.pages = PageCache()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args))
        finally:
            self._generation_read = -math.inf  # what we wrote shows on the next page


    def generation(self) -> int:
        """The ledger's ``data_version`` as the event loop's thread sees it: it changes when
        any other connection commits (``page_cache``).

        Read at most every ``GENERATION_CHECK`` seconds, and always right after
        this process wrote: a change made by another process shows within that
        time, one made here at once.
        """
        now = time.monotonic()
        if now - self._generation_read >= self.generation_check:
            self._generation = self.ledger.data_version()
            self._generation_read = now
        return self._generation

    def offer(self, offer_id: str) -> Offer | None:
        return self.ledger.offer(offer_id)

    def company(self, company_id: str) -> CompanySettings | None:
        return self.settings.company(company_id)

    def names(self, offer: Offer) -> dict[str, str]:
        """The company's and its agency's names for the pages (``companies.agency``, SPEC 11):
        the agency is the company's own, never one a request could choose."""
        company = self.company(offer.company)
        agency = self.consents.agency(offer)
        return {"company": company.name if company else offer.company, "agency": agency.name,
                "license_no": agency.license_no, "months": str(agency.retention_months),
                "contact": agency.contact, "privacy_url": agency.privacy_url}

    def notice(self, offer: Offer, locale: str) -> tuple[Notice, str]:
        """The notice shown to this offer's candidate in ``locale`` and its HTML block,
        rendered once per company, language and whether the offer has application data.

        The hashed text is the notice block and the consent sentences of the form:
        everything the candidate reads before ticking (SPEC 6).  The application item
        and its tick box are there only when the offer carries a job or a stage: a
        notice must not promise a choice the form does not offer.
        """
        application = has_application(offer)
        key = (offer.company, self.consents.agency(offer).id, locale, application)
        if key not in self._notices:
            names = self.names(offer)
            t = i18n.TEXTS[locale]
            html = self.templates.get_template("notice.html").render(
                t=t, names=names, privacy_url=names["privacy_url"],
                application=application)
            sentences = [t["share_application"].format(**names)] if application else []
            text = "\n".join([html.strip(), *sentences, t["agree"].format(**names)])
            self._notices[key] = (Notice.of(text, locale), html)
        return self._notices[key]

    async def record_notice(self, offer: Offer, notice: Notice) -> None:
        """Keep the notice's text before any form citing it goes out (once per process)."""
        if notice.digest not in self._recorded:
            await self.write(self.consents.shown, offer, notice)
            self._recorded.add(notice.digest)

    def viewed(self, offer_id: str) -> bool:
        return offer_id in self._viewed

    async def record_view(self, offer_id: str) -> None:
        """The first view of an offer's page; later views cost no write (nor a thread hop)."""
        if offer_id not in self._viewed:
            await self.write(self.consents.store.record_view, offer_id)
            self._viewed.add(offer_id)

    def notice_by_digest(self, digest: str) -> Notice | None:
        for notice, _ in self._notices.values():
            if notice.digest == digest:
                return notice
        found = self.consents.store.notice(digest)
        return None if found is None else Notice.of(*found)


def has_application(offer: Offer) -> bool:
    """Whether the offer carries what ``share_application`` would share (job or stage)."""
    return bool(offer.job or offer.stage)
