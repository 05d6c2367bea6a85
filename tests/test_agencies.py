"""Several agencies end to end (SPEC 11, issue 15 item 1): the real site with its forwarding
worker (``start_site``), a real webhook receiver per agency on loopback, a real SMTP sink for
an agency that takes mail, the ledger on both backends, the CLI as a subprocess.

Each agency receives only its own companies' forwards, signed with its own secret (which the
other agency's secret does not verify); a withdrawal follows its consent to the same agency;
the consent page, the receipt and the notice it cites name the company's own agency.  The
single ``[agency]`` alone works as before, as agency ``default``.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import re
import sqlite3
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from career_relay import settings as settings_mod
from career_relay.agency_signature import BadSignature, verify
from career_relay.ledger import Ledger, Offer, open_configured
from career_relay.settings import Settings
from career_relay.tokens import LinkSigner
from consent_site.app import start_site
from tests.conftest import ConfigMaker, Sink, free_port, run_cli
from tests.test_forwarding import Agency

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
NORTH_SECRET = "whsec-north-0123456789"
SOUTH_SECRET = "whsec-south-9876543210"
NORTH_NAME, SOUTH_NAME, EAST_NAME = "北日本キャリア株式会社", "South Careers K.K.", "東人材株式会社"
COMPANIES = [
    {"id": "acme", "name": "株式会社アクメ", "domains": ["acme.example"], "agency": "north"},
    {"id": "beta", "name": "ベータ株式会社", "domains": ["beta.example"], "agency": "south",
     "locale": "en"},
    {"id": "gamma", "name": "ガンマ株式会社", "domains": ["gamma.example"], "agency": "east"},
]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _agencies_toml(north: Agency, south: Agency) -> str:
    def table(**values: Any) -> str:
        return "[[agencies]]\n" + "".join(
            f"{k} = {json.dumps(v, ensure_ascii=False)}\n" for k, v in values.items())

    common = {"retry_schedule": [1], "timeout": 5}
    return (table(id="north", name=NORTH_NAME, license_no="01-ユ-111111",
                  privacy_url="https://north.example/privacy", webhook_url=north.url,
                  webhook_secret=NORTH_SECRET, **common)
            + table(id="south", name=SOUTH_NAME, license_no="47-ユ-222222",
                    privacy_url="https://south.example/privacy", webhook_url=south.url,
                    webhook_secret=SOUTH_SECRET, **common)
            + table(id="east", name=EAST_NAME, license_no="13-ユ-444444",
                    privacy_url="https://east.example/privacy", deliver="email",
                    email="intake@east.example", **common))


class Browser:
    """A candidate's browser against the real site: the page, its nonce, the form."""

    def __init__(self, session: aiohttp.ClientSession, base: str, signer: LinkSigner) -> None:
        self.session, self.base, self.signer = session, base, signer

    def link(self, offer: Offer) -> str:
        return f"{self.base}/c/{self.signer.token(offer.id)}"

    async def get(self, url: str) -> str:
        async with self.session.get(url, headers={"User-Agent": FIREFOX}) as r:
            assert r.status == 200, r.status
            return await r.text()

    async def post(self, url: str, data: dict[str, str]) -> None:
        page = await self.get(url if not url.endswith(("/withdraw",)) else
                              url.removesuffix("/withdraw") + "/manage")
        nonce = re.search(r'name="csrf" value="([^"]+)"', page)
        assert nonce is not None
        async with self.session.post(url, data={"csrf": nonce.group(1), **data},
                                     headers={"User-Agent": FIREFOX},
                                     allow_redirects=False) as r:
            assert r.status == 303, (r.status, await r.text())

    async def accept(self, offer: Offer) -> None:
        await self.post(self.link(offer), {"lang": "ja", "decision": "accept", "agree": "yes",
                                           "name": "候補 者", "email": "c@example.net"})

    async def withdraw(self, offer: Offer) -> None:
        await self.post(self.link(offer) + "/withdraw", {"lang": "ja"})


def _settings(make_config: ConfigMaker, url: str, upstream: int, extra: str = "",
              **sections: Any) -> tuple[Settings, Path]:
    path = make_config(upstream_port=upstream, ledger={"url": url},
                       site={"listen": f"127.0.0.1:{free_port()}", "review_window": 0},
                       **sections)
    path.write_text(path.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return settings_mod.load(path, env={}), path


def _offer(settings: Settings, company: str, recipient: str) -> Offer:
    with open_configured(settings) as ledger:
        return ledger.record_offer(company, f"<{recipient}@{company}.example>", recipient,
                                   job="エンジニア", stage="一次面接")


def _query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    ledger: Ledger
    with open_configured(settings) as ledger, ledger.read() as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]


def test_each_agency_gets_only_its_companies_forwards_signed_with_its_own_key(
        make_config: ConfigMaker, backend_url: str, sink: Sink) -> None:
    north, south = Agency(), Agency()
    settings, config = _settings(make_config, backend_url, sink.port,
                                 _agencies_toml(north, south), companies=COMPANIES)
    signer = LinkSigner.from_settings(settings)
    offers = {c: _offer(settings, c, f"cand-{c}@example.net") for c in ("acme", "beta", "gamma")}

    async def main() -> None:
        await north.start()
        await south.start()
        site = await start_site(settings)
        try:
            async with aiohttp.ClientSession() as session:
                browser = Browser(session, f"http://{settings.site.listen}", signer)
                # The page names the company's own agency, in Japanese and in English.
                for lang in ("ja", "en"):
                    acme = await browser.get(browser.link(offers["acme"]) + f"?lang={lang}")
                    assert NORTH_NAME in acme and "01-ユ-111111" in acme
                    assert "https://north.example/privacy" in acme
                    assert SOUTH_NAME not in acme and EAST_NAME not in acme
                    beta = await browser.get(browser.link(offers["beta"]) + f"?lang={lang}")
                    assert SOUTH_NAME in beta and "47-ユ-222222" in beta
                    assert NORTH_NAME not in beta
                # A request parameter chooses no agency.
                chosen = await browser.get(browser.link(offers["acme"]) + "?agency=south")
                assert NORTH_NAME in chosen and SOUTH_NAME not in chosen
                for offer in offers.values():
                    await browser.accept(offer)
                await until(lambda: len(north.requests) == 1 and len(south.requests) == 1
                            and len(sink.messages) == 1, "one forward at each agency")
                await browser.withdraw(offers["acme"])
                await until(lambda: len(north.requests) == 2, "the withdrawal at north")
                # Every forward settled: none is left to reach another agency later.
                await until(lambda: not _query(settings, "SELECT 1 FROM outbox"),
                            "an empty outbox")
        finally:
            await site.stop()
            await north.stop()
            await south.stop()

    run(main())
    # North: acme's consent, then its withdrawal; South: beta's consent alone.
    assert [(r.json["type"], r.json["company"]["id"]) for r in north.requests] == [
        ("consent", "acme"), ("withdrawal", "acme")]
    assert [(r.json["type"], r.json["company"]["id"]) for r in south.requests] == [
        ("consent", "beta")]
    assert north.requests[1].json["refers_to"] == [north.requests[0].json["forward_id"]]
    # Each signed with its own agency's secret; the other's does not verify it.
    for agency, own, other in ((north, NORTH_SECRET, SOUTH_SECRET),
                               (south, SOUTH_SECRET, NORTH_SECRET)):
        for got in agency.requests:
            header = got.headers["X-Career-Relay-Signature"]
            verify(own, header, got.body, time.time())
            with pytest.raises(BadSignature):
                verify(other, header, got.body, time.time())
    # East takes mail: gamma's forward went to east's address alone.
    (mail,) = sink.messages
    assert mail.rcpts == ["intake@east.example"]
    message = email.message_from_bytes(mail.data, policy=email.policy.default)
    assert message["X-Career-Relay-Type"] == "consent"
    assert json.loads(message.get_content())["company"]["id"] == "gamma"
    # The ledger: each forward with its agency, each receipt naming the legal name, and the
    # notice each receipt cites naming that agency and no other.
    rows = _query(settings, "SELECT f.company, f.kind, f.agency, r.agency, n.text"
                            " FROM forwards f JOIN receipts r ON r.id = f.receipt_id"
                            " LEFT JOIN notices n ON n.hash = r.notice_hash ORDER BY f.rowid")
    assert [r[:4] for r in rows] == [
        ("acme", "consent", "north", NORTH_NAME), ("beta", "consent", "south", SOUTH_NAME),
        ("gamma", "consent", "east", EAST_NAME), ("acme", "withdrawal", "north", NORTH_NAME)]
    for _, _, _, name, text in rows[:3]:
        assert name in text
        assert [n for n in (NORTH_NAME, SOUTH_NAME, EAST_NAME) if n in text] == [name]
    # The chain vouches for each forward's agency.
    verified = run_cli("ledger", "verify", "--config", str(config))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_the_single_agency_table_alone_works_as_before(make_config: ConfigMaker,
                                                       backend_url: str, sink: Sink) -> None:
    only = Agency()
    settings, _ = _settings(make_config, backend_url, sink.port, agency={
        "name": "株式会社ひとつ人材", "webhook_url": only.url,
        "webhook_secret": NORTH_SECRET, "retry_schedule": [1]})
    assert [a.id for a in settings.all_agencies] == ["default"]
    signer = LinkSigner.from_settings(settings)
    offer = _offer(settings, "acme", "cand@example.net")

    async def main() -> None:
        await only.start()
        site = await start_site(settings)
        try:
            async with aiohttp.ClientSession() as session:
                browser = Browser(session, f"http://{settings.site.listen}", signer)
                assert "株式会社ひとつ人材" in await browser.get(browser.link(offer))
                await browser.accept(offer)
                await until(lambda: len(only.requests) == 1, "the forward")
        finally:
            await site.stop()
            await only.stop()

    run(main())
    (got,) = only.requests
    verify(NORTH_SECRET, got.headers["X-Career-Relay-Signature"], got.body, time.time())
    assert got.json["company"]["id"] == "acme"
    assert _query(settings, "SELECT f.agency, r.agency FROM forwards f"
                            " JOIN receipts r ON r.id = f.receipt_id") == [
        ("default", "株式会社ひとつ人材")]


def test_a_forward_never_changes_agency(make_config: ConfigMaker, backend_url: str,
                                        sink: Sink) -> None:
    """The append-only trigger refuses it on both backends; on SQLite, with the trigger
    dropped, ``ledger verify`` names the forward (its entry digests its agency)."""
    north, south = Agency(), Agency()
    settings, config = _settings(make_config, backend_url, sink.port,
                                 _agencies_toml(north, south), companies=COMPANIES)
    offer = _offer(settings, "acme", "cand@example.net")

    async def main() -> None:  # accepted through the real site; nobody is listening
        site = await start_site(settings)
        try:
            async with aiohttp.ClientSession() as session:
                browser = Browser(session, f"http://{settings.site.listen}",
                                  LinkSigner.from_settings(settings))
                await browser.accept(offer)
        finally:
            await site.stop()

    run(main())
    ((forward_id,),) = _query(settings, "SELECT id FROM forwards")
    with (open_configured(settings) as ledger,
          pytest.raises(Exception, match="append-only"),
          ledger.write() as conn):
        conn.execute("UPDATE forwards SET agency = 'south' WHERE id = ?", (forward_id,))
    assert _query(settings, "SELECT agency FROM forwards") == [("north",)]
    if backend_url:
        return
    with sqlite3.connect(settings.ledger.path) as conn:
        conn.execute("DROP TRIGGER forwards_agency_fixed")
        conn.execute("UPDATE forwards SET agency = 'south'")
    verified = run_cli("ledger", "verify", "--config", str(config))
    assert verified.returncode == 1
    assert f"forward {forward_id} was altered" in verified.stdout + verified.stderr


def test_an_expired_link_names_its_own_agency(make_config: ConfigMaker, sink: Sink) -> None:
    """The 410 page of an expired link names the agency of that offer's company; a link we
    never signed (404) names none of them."""
    from tests.test_site import Harness

    north, south = Agency(), Agency()
    _, config = _settings(make_config, "", sink.port, _agencies_toml(north, south),
                          companies=COMPANIES)
    site = Harness(config)
    try:
        offer = site.offer(company="beta", age=91 * 86400, message_id="<old@beta.example>")
        link = f"/c/{site.signer.token(offer.id, issued_at=offer.created.timestamp())}"
        for lang in ("ja", "en"):
            expired = site.get(f"{link}?lang={lang}")
            assert expired.status == 410
            assert SOUTH_NAME in expired.text and NORTH_NAME not in expired.text
        forged = site.get("/c/not-a-token-we-signed")
        assert forged.status == 404
        assert not [n for n in (NORTH_NAME, SOUTH_NAME, EAST_NAME) if n in forged.text]
    finally:
        site.close()


def test_a_withdrawal_follows_its_consent_after_the_company_moves(
        make_config: ConfigMaker, backend_url: str, sink: Sink) -> None:
    """The company moved from north to south after a candidate consented: the candidate's
    withdrawal (and its receipt) go to north, which has the data; a new consent goes south."""
    import dataclasses

    from career_relay.consent import Client, Consents, Notice
    from career_relay.ledger import ConsentLedger

    north, south = Agency(), Agency()
    before, _ = _settings(make_config, backend_url, sink.port, _agencies_toml(north, south),
                          companies=COMPANIES)
    acme = before.company("acme")
    assert acme is not None
    after = dataclasses.replace(before, companies=(dataclasses.replace(acme, agency="south"),
                                                   *before.companies[1:]))
    client, notice = Client(FIREFOX, "203.0.113.9"), Notice.of("通知文", "ja")
    profile = {"name": "候補 者", "email": "c@example.net"}
    with open_configured(before) as ledger:
        first = ledger.record_offer("acme", "<a@acme.example>", "a@example.net")
        second = ledger.record_offer("acme", "<b@acme.example>", "b@example.net")
        store = ConsentLedger(ledger)
        Consents(before, store).accept(first, notice, profile, False, client)
        (consent,) = store.forwards(first.id)
        store.delivered(consent.forward.id)  # north has it
        moved = Consents(after, store)
        withdrawal = moved.withdraw(first, "ja", client)
        moved.accept(second, notice, profile, False, client)
        assert withdrawal is not None and withdrawal.agency == NORTH_NAME
        kinds = [(f.forward.kind, f.forward.agency) for f in store.forwards(first.id)]
        assert kinds == [("consent", "north"), ("withdrawal", "north")]
        payload = json.loads(store.forwards(first.id)[1].forward.payload or "{}")
        assert payload["refers_to"] == [consent.forward.id]
        ((kind, agency),) = [(f.forward.kind, f.forward.agency)
                             for f in store.forwards(second.id)]
        assert (kind, agency) == ("consent", "south")
        assert store.receipts(second.id)[0].agency == SOUTH_NAME
