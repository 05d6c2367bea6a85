"""The candidate's pages through aiohttp's test client (SPEC 6): every route, state and error.

The site runs over a real ledger file; each test reads the SQLite tables
directly to check what was (and was not) recorded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from career_relay import settings as settings_mod
from career_relay.errors import LedgerUnavailable
from career_relay.ledger import ConsentLedger, Offer, open_ledger
from career_relay.tokens import LinkSigner
from consent_site.app import create_app
from consent_site.candidate import SITE
from consent_site.page_cache import Page, PageCache

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1")
CONSENT_TABLES = ("receipts", "profiles", "forwards", "outbox", "forward_events", "reviews")


class Reply:
    def __init__(self, status: int, headers: Any, text: str, cookies: Any) -> None:
        self.status = status
        self.headers = headers
        self.text = text
        self.cookies = cookies

    def csrf(self) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.text)
        assert found, "no CSRF nonce on the page"
        return found.group(1)

    def state(self) -> str:
        found = re.search(r'<main data-state="([a-z_]+)"', self.text)
        assert found, "no data-state on the page"
        return found.group(1)


class Harness:
    """A site on a real ledger, driven from synchronous tests through one event loop."""

    def __init__(self, config: Path) -> None:
        self.settings = settings_mod.load(config)
        self.db_path = Path(self.settings.ledger.path)
        self.loop = asyncio.new_event_loop()
        app = create_app(self.settings)
        # Changes made by other connections show within 0.1 s in production; here at once.
        app[SITE].generation_check = 0.0
        self.client: TestClient[web.Request, web.Application] = TestClient(
            TestServer(app), loop=self.loop)
        self.loop.run_until_complete(self.client.start_server())
        self.signer = LinkSigner.from_settings(self.settings)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()

    def offer(self, recipient: str = "cand@example.net", *, age: float = 3600,
              message_id: str = "<r1@acme.example>", company: str = "acme",
              job: str | None = "バックエンドエンジニア", stage: str | None = "一次面接") -> Offer:
        created = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age)
        with open_ledger(self.db_path, clock=lambda: created) as ledger:
            return ledger.record_offer(company, message_id, recipient, job=job, stage=stage)

    def link(self, offer: Offer) -> str:
        return f"/c/{self.signer.token(offer.id)}"

    def request(self, method: str, path: str, *, ua: str = IPHONE, **kwargs: Any) -> Reply:
        async def go() -> Reply:
            headers = {"User-Agent": ua, **kwargs.pop("headers", {})}
            async with self.client.request(method, path, headers=headers,
                                           allow_redirects=False, **kwargs) as r:
                return Reply(r.status, r.headers, await r.text(), r.cookies)

        return self.loop.run_until_complete(go())

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, data: dict[str, str], **kwargs: Any) -> Reply:
        return self.request("POST", path, data=data, **kwargs)

    def accept(self, link: str, **fields: str) -> Reply:
        page = self.get(link)
        data = {"csrf": page.csrf(), "lang": "ja", "decision": "accept", "agree": "yes",
                "name": "山田 花子", "email": "cand@example.net", **fields}
        return self.post(link, {k: v for k, v in data.items() if v is not None})

    def rows(self, table: str, where: str = "1", *args: Any) -> list[sqlite3.Row]:
        with sqlite3.connect(self.db_path) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(f"SELECT * FROM {table} WHERE {where}", args).fetchall()

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        return {t: [tuple(r) for r in self.rows(t)] for t in CONSENT_TABLES}


@pytest.fixture
def site(make_config: Any) -> Iterator[Harness]:
    harness = Harness(make_config(site={"review_window": 30},
                                  agency={"license_no": "13-ユ-123456",
                                          "privacy_url": "https://agency.example/privacy",
                                          "contact": "privacy@agency.example"}))
    yield harness
    harness.close()


# -- the page -------------------------------------------------------------------------------


def test_the_page_names_who_what_why_how_long_and_how_to_withdraw(site: Harness) -> None:
    offer = site.offer()
    page = site.get(site.link(offer))
    assert page.status == 200
    assert '<html lang="ja">' in page.text
    assert "built-in method" not in page.text and " object at 0x" not in page.text
    for shown in ("株式会社アクメ", "株式会社サンプル人材", "13-ユ-123456", "提供する情報",
                  'href="https://agency.example/privacy"', "利用目的", "最長24か月",
                  "いつでも登録の取り消し", "privacy@agency.example", "氏名（必須）"):
        assert shown in page.text, shown
    # Unticked consent, prefilled address, the application as its own optional tick.
    assert re.search(r'<input type="checkbox" id="agree" name="agree" value="yes">', page.text)
    assert 'value="cand@example.net"' in page.text
    assert 'id="share_application"' in page.text
    assert 'id="accept"' in page.text and 'id="decline"' in page.text
    assert "<script" not in page.text


def test_security_headers_and_no_cookie(site: Harness) -> None:
    page = site.get(site.link(site.offer()))
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src" not in csp  # nothing may run at all
    assert page.headers["Referrer-Policy"] == "same-origin"  # nothing to other sites
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Cache-Control"] == "no-store"
    # The link is the candidate's session: nothing is stored in their browser.
    assert "Set-Cookie" not in page.headers
    assert "Strict-Transport-Security" not in page.headers  # the public URL is http here


def test_https_adds_hsts(make_config: Any) -> None:
    harness = Harness(make_config(site={"public_url": "https://consent.example"}))
    try:
        page = harness.get(harness.link(harness.offer()))
        assert page.headers["Strict-Transport-Security"].startswith("max-age=")
        assert "Set-Cookie" not in page.headers
    finally:
        harness.close()


@pytest.mark.parametrize(("query", "accept_language", "lang"), [
    ("", "", "ja"),
    ("?lang=en", "", "en"),
    ("", "en-US,en;q=0.9", "en"),
    ("", "ja,en;q=0.5", "ja"),
    ("?lang=ja", "en", "ja"),
    ("?lang=fr", "fr-FR", "ja"),
])
def test_language(site: Harness, query: str, accept_language: str, lang: str) -> None:
    page = site.get(site.link(site.offer()) + query,
                    headers={"Accept-Language": accept_language})
    assert f'<html lang="{lang}">' in page.text
    assert ("Register with" in page.text) == (lang == "en")


def test_a_company_in_english_gets_english_pages_by_default(make_config: Any) -> None:
    harness = Harness(make_config(companies=[{
        "id": "acme", "name": "Acme Ltd", "domains": ["acme.example"], "locale": "en"}]))
    try:
        page = harness.get(harness.link(harness.offer()))
        assert '<html lang="en">' in page.text and "Acme Ltd" in page.text
    finally:
        harness.close()


def test_get_and_head_never_change_consent_state(site: Harness) -> None:
    offer = site.offer()
    link = site.link(offer)
    before = site.snapshot()
    assert site.request("HEAD", link).status == 200
    assert site.rows("offer_views") == []  # a HEAD records nothing at all
    for _ in range(3):
        assert site.get(link).status == 200
        assert site.get(link + "/manage").status == 200
        assert site.get(link + "/export").status == 200
        assert site.get(link + "/done").status == 303  # nothing decided yet: back to the page
    assert site.snapshot() == before
    # The only trace of the GETs: one view, the first.
    assert [r["offer_id"] for r in site.rows("offer_views")] == [offer.id]


def test_a_scanner_that_follows_every_link_consents_to_nothing(site: Harness) -> None:
    offer = site.offer()
    link = site.link(offer)
    page = site.get(link, ua="Mozilla/5.0 (compatible; BingPreview/1.0b)")
    for href in re.findall(r'href="(/c/[^"]+)"', page.text):
        site.get(href, ua="Mozilla/5.0 (compatible; BingPreview/1.0b)")
    assert site.snapshot() == {t: [] for t in CONSENT_TABLES}


# -- token errors ---------------------------------------------------------------------------


def test_a_tampered_token_gets_404_with_a_page_saying_what_to_do(site: Harness) -> None:
    offer = site.offer()
    link = site.link(offer)
    tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    for path in (tampered, tampered + "/manage", tampered + "/export", "/c/not-a-token",
                 "/c/%3Cscript%3E"):
        reply = site.get(path)
        assert reply.status == 404, path
        assert "このリンクは使えません" in reply.text
        assert reply.headers["Content-Security-Policy"]
    reply = site.post(tampered, {"csrf": "x", "decision": "accept"})
    assert reply.status == 404
    assert site.rows("offer_views") == [] and site.rows("receipts") == []


def test_an_expired_token_gets_410_and_records_nothing(site: Harness) -> None:
    offer = site.offer(age=91 * 86400)
    issued = offer.created.timestamp()
    link = f"/c/{site.signer.token(offer.id, issued_at=issued)}"
    reply = site.get(link)
    assert reply.status == 410
    assert "有効期限が切れています" in reply.text and "株式会社サンプル人材" in reply.text
    assert site.get(link + "?lang=en").status == 410
    assert "This link has expired" in site.get(link + "?lang=en").text
    assert site.post(link, {"csrf": "x", "decision": "accept"}).status == 410
    assert site.rows("offer_views") == [] and site.rows("receipts") == []


def test_a_candidate_who_decided_keeps_every_right_after_the_link_expires(
        site: Harness) -> None:
    """SPEC 6: link_max_age_days limits the offer, not the right to withdraw, export or
    erase that the notice promised at any time.  Undecided offers still get 410."""
    offer = site.offer(age=89 * 86400)
    issued = offer.created.timestamp()
    fresh = f"/c/{site.signer.token(offer.id, issued_at=issued)}"
    assert site.accept(fresh).status == 303
    # The same offer's link, now past its 90 days.
    old = f"/c/{site.signer.token(offer.id, issued_at=issued - 2 * 86400)}"
    assert site.get(old).status == 410  # the offer itself has lapsed
    manage = site.get(old + "/manage")
    assert manage.status == 200 and 'action="' in manage.text
    exported = site.get(old + "/export")
    assert exported.status == 200 and "cand@example.net" in exported.text
    withdrawn = site.post(old + "/withdraw", {"csrf": manage.csrf(), "lang": "ja"})
    assert withdrawn.status == 303
    assert [r["decision"] for r in site.rows("receipts")] == ["accept", "withdraw"]
    erased = site.post(old + "/erase", {"csrf": site.get(old + "/manage").csrf(), "lang": "ja"})
    assert erased.status == 303
    assert site.rows("receipts")[-1]["decision"] == "erase"

    undecided = site.offer("other@example.net", age=91 * 86400, message_id="<r2@acme.example>")
    lapsed = f"/c/{site.signer.token(undecided.id, issued_at=undecided.created.timestamp())}"
    for path in ("/manage", "/export"):
        assert site.get(lapsed + path).status == 410
    assert site.post(lapsed + "/withdraw", {"csrf": "x"}).status == 410


def test_a_token_whose_offer_is_gone_gets_410(site: Harness) -> None:
    assert site.get(f"/c/{site.signer.token('NoSuchOffer123')}").status == 410


def test_unknown_routes_and_methods_get_pages_with_the_same_headers(site: Harness) -> None:
    missing = site.get("/nowhere")
    assert missing.status == 404 and "ページが見つかりません" in missing.text
    assert missing.headers["Referrer-Policy"] == "same-origin"
    wrong = site.request("PUT", site.link(site.offer()))
    assert wrong.status == 405 and "GET" in wrong.headers["Allow"]


# -- CSRF -----------------------------------------------------------------------------------


def test_csrf_missing_wrong_or_foreign_gets_403_and_records_nothing(site: Harness) -> None:
    a, b = site.offer("a@example.net"), site.offer("b@example.net", message_id="<r2@a>")
    link_a, link_b = site.link(a), site.link(b)
    nonce_a = site.get(link_a).csrf()
    form = {"decision": "accept", "agree": "yes", "name": "x", "email": "a@example.net"}
    assert site.post(link_a, form).status == 403  # missing
    assert site.post(link_a, {**form, "csrf": "garbage"}).status == 403  # wrong
    assert site.post(link_a, {**form, "csrf": nonce_a[:-2] + "xx"}).status == 403  # tampered
    assert site.post(link_a, {**form, "csrf": nonce_a[:-1] + "é"}).status == 403  # not ASCII
    # A's nonce cannot decide for B, nor withdraw or erase B.
    assert site.post(link_b, {**form, "csrf": nonce_a}).status == 403
    assert site.post(link_b + "/withdraw", {"csrf": nonce_a}).status == 403
    assert site.post(link_b + "/erase", {"csrf": nonce_a}).status == 403
    # A form posted from another site, as the browser says it (RFC 6454, Fetch Metadata).
    for headers in ({"Origin": "https://evil.example"},
                    {"Origin": "http://127.0.0.1:1"},  # another port is another origin
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
        reply = site.post(link_a, {**form, "csrf": nonce_a}, headers=headers)
        assert reply.status == 403 and "再読み込み" in reply.text, headers
        reply = site.post(link_a + "/withdraw", {"csrf": nonce_a}, headers=headers)
        assert reply.status == 403, headers
    assert site.snapshot() == {t: [] for t in CONSENT_TABLES}
    # From our own page, as a browser sends it, the same nonce works.
    public = site.settings.site.public_url
    reply = site.post(link_a, {**form, "csrf": nonce_a},
                      headers={"Origin": public, "Sec-Fetch-Site": "same-origin"})
    assert reply.status == 303


# -- decisions ------------------------------------------------------------------------------


def test_accepting_without_the_tick_shows_the_error_and_keeps_what_was_typed(
        site: Harness) -> None:
    link = site.link(site.offer())
    reply = site.accept(link, agree=None, phone="090-1234-5678", note="よろしくお願いします")
    assert reply.status == 400
    assert 'id="error-agree"' in reply.text and "同意のチェックボックス" in reply.text
    assert 'role="alert"' in reply.text
    assert 'value="山田 花子"' in reply.text and 'value="090-1234-5678"' in reply.text
    assert "よろしくお願いします</textarea>" in reply.text
    assert site.rows("receipts") == []
    english = site.post(link, {"csrf": reply.csrf(), "lang": "en", "decision": "accept",
                               "name": "", "email": "nope"})
    assert english.status == 400
    assert "Please fill this in." in english.text
    assert "This does not look like an email address." in english.text
    assert "To register, please tick the consent box." in english.text


def test_accept_records_receipt_profile_and_forward_in_one_go(site: Harness) -> None:
    offer = site.offer()
    link = site.link(offer)
    reply = site.accept(link, phone="03-1234-5678", share_application="yes")
    assert reply.status == 303
    assert reply.headers["Location"] == f"{link}/done?lang=ja"
    (receipt,) = site.rows("receipts")
    assert receipt["decision"] == "accept" and receipt["offer_id"] == offer.id
    assert receipt["company"] == "acme" and receipt["agency"] == "株式会社サンプル人材"
    assert json.loads(receipt["purposes"]) == ["agency_registration", "share_application"]
    assert json.loads(receipt["data_items"]) == ["name", "email", "phone", "application"]
    assert receipt["user_agent"] == IPHONE
    assert receipt["network"] == "127.0.0.0/24"
    assert receipt["review"] is None
    # The notice it cites is kept word for word, and its hash is the text's.
    (notice,) = site.rows("notices", "hash = ?", receipt["notice_hash"])
    assert hashlib.sha256(notice["text"].encode()).hexdigest() == receipt["notice_hash"]
    assert receipt["notice_version"] == f"ja-{receipt['notice_hash'][:12]}"
    assert "株式会社サンプル人材" in notice["text"]
    (profile,) = site.rows("profiles")
    assert json.loads(profile["data"]) == {"name": "山田 花子", "email": "cand@example.net",
                                           "phone": "03-1234-5678"}
    (forward,) = site.rows("forwards")
    assert forward["kind"] == "consent" and forward["receipt_id"] == receipt["id"]
    payload = json.loads(forward["payload"])
    assert payload["forward_id"] == forward["id"]
    assert payload["application"]["job"] == "バックエンドエンジニア"
    (queued,) = site.rows("outbox")
    assert queued["forward_id"] == forward["id"] and queued["held"] == 0
    done = site.get(f"{link}/done?lang=ja")
    assert done.state() == "accepted" and receipt["id"] in done.text
    # A second visit shows where things stand, not the form.
    again = site.get(link)
    assert again.state() == "accepted" and 'id="consent-form"' not in again.text


def test_a_repeated_accept_is_the_same_receipt(site: Harness) -> None:
    link = site.link(site.offer())
    page = site.get(link)
    form = {"csrf": page.csrf(), "decision": "accept", "agree": "yes", "name": "山田",
            "email": "cand@example.net"}
    assert site.post(link, form).status == 303
    assert site.post(link, form).status == 303  # the double click
    assert len(site.rows("receipts")) == 1 and len(site.rows("forwards")) == 1


def test_without_the_application_tick_nothing_of_the_application_is_forwarded(
        site: Harness) -> None:
    link = site.link(site.offer())
    site.accept(link)
    (forward,) = site.rows("forwards")
    payload = json.loads(forward["payload"])
    assert payload["application"] is None
    assert "バックエンドエンジニア" not in forward["payload"]
    (receipt,) = site.rows("receipts")
    assert json.loads(receipt["purposes"]) == ["agency_registration"]


def test_without_application_data_the_notice_promises_no_application_tick(
        site: Harness) -> None:
    """Issue 14 item 5: the notice listed the application item ("only if you tick the box
    below") on pages that showed no such box.  Now the notice, the box and the hashed
    notice text all follow the offer."""
    bare = site.offer(message_id="<bare@acme.example>", job=None, stage=None)
    page = site.get(site.link(bare))
    assert page.status == 200
    assert 'id="share_application"' not in page.text
    assert "応募情報" not in page.text and "下の欄にチェック" not in page.text
    en = site.get(site.link(bare) + "?lang=en")
    assert "tick the box below" not in en.text and "Your application" not in en.text
    # With application data both are there, as before.
    full = site.get(site.link(site.offer()))
    assert 'id="share_application"' in full.text and "下の欄にチェック" in full.text
    # The text a receipt cites is the one shown: no sentence about a box that was not there.
    site.accept(site.link(bare), share_application="yes")  # posted anyway: shares nothing
    (receipt,) = site.rows("receipts")
    assert json.loads(receipt["purposes"]) == ["agency_registration"]
    (notice,) = site.rows("notices", "hash = ?", receipt["notice_hash"])
    assert "応募した職種と選考段階も" not in notice["text"]
    assert "上記の内容を確認し" in notice["text"]


def test_the_favicon_is_served(site: Harness) -> None:
    """Issue 14 item 5: /favicon.ico answered 404 on every first visit."""
    async def fetch() -> tuple[int, Any, bytes]:
        async with site.client.get("/favicon.ico") as r:
            return r.status, r.headers, await r.read()

    status, headers, body = site.loop.run_until_complete(fetch())
    assert status == 200
    assert headers["Content-Type"] == "image/vnd.microsoft.icon"
    assert "max-age" in headers["Cache-Control"]
    assert body[:4] == b"\x00\x00\x01\x00"  # an ICO header (reserved 0, type 1: icon)


def test_decline_keeps_nothing_typed_and_can_be_changed_later(site: Harness) -> None:
    link = site.link(site.offer())
    page = site.get(link)
    reply = site.post(link, {"csrf": page.csrf(), "decision": "decline", "name": "山田",
                             "email": "cand@example.net", "phone": "0312345678"})
    assert reply.status == 303
    (receipt,) = site.rows("receipts")
    assert receipt["decision"] == "decline" and json.loads(receipt["data_items"]) == []
    assert site.rows("profiles") == [] and site.rows("forwards") == []
    assert site.get(f"{link}/done").state() == "declined"
    again = site.get(link)
    assert again.state() == "declined" and 'id="consent-form"' in again.text
    assert site.accept(link).status == 303
    assert [r["decision"] for r in site.rows("receipts")] == ["decline", "accept"]


def test_a_post_soon_after_the_mail_is_held_for_review(site: Harness) -> None:
    link = site.link(site.offer(age=5))  # review_window is 30 s
    site.accept(link)
    (receipt,) = site.rows("receipts")
    assert receipt["review"] == "review_window"
    (queued,) = site.rows("outbox")
    assert queued["held"] == 1
    assert site.get(f"{link}/done").state() == "under_review"


@pytest.mark.parametrize("ua", [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.0.0 Safari/537.36",
    "python-requests/2.31", "", "Mozilla/5.0 (compatible; Proofpoint URL Defense)",
])
def test_a_post_from_a_scanner_is_held_for_review(site: Harness, ua: str) -> None:
    link = site.link(site.offer())
    page = site.get(link, ua=ua)
    reply = site.post(link, {"csrf": page.csrf(), "decision": "accept", "agree": "yes",
                             "name": "x", "email": "cand@example.net"}, ua=ua)
    assert reply.status == 303
    (receipt,) = site.rows("receipts")
    assert receipt["review"] == "scanner"
    assert site.rows("outbox")[0]["held"] == 1


def test_the_notice_version_changes_with_its_text(make_config: Any, tmp_path: Path) -> None:
    versions = []
    for name in ("株式会社サンプル人材", "株式会社ベツメイ人材"):
        harness = Harness(make_config(agency={"name": name}))
        try:
            harness.accept(harness.link(harness.offer(message_id=f"<{len(versions)}@a>")))
            versions.append(harness.rows("receipts")[-1]["notice_version"])
        finally:
            harness.close()
    assert versions[0] != versions[1]
    assert all(v.startswith("ja-") for v in versions)


def test_the_same_notice_has_the_same_version_in_every_process(make_config: Any) -> None:
    """The version is the text's: a restart (another process) shows the same notice."""
    config = make_config()
    seen = set()
    for _ in range(2):
        harness = Harness(config)
        try:
            harness.get(harness.link(harness.offer(message_id=f"<{len(seen)}@a>")))
            seen.update(r["version"] for r in harness.rows("notices"))
        finally:
            harness.close()
    assert len(seen) == 1


# -- manage, withdraw, erase, export --------------------------------------------------------


def test_withdraw_from_the_manage_page(site: Harness) -> None:
    offer = site.offer()
    link = site.link(offer)
    site.accept(link)
    manage = site.get(f"{link}/manage")
    assert manage.state() == "accepted" and 'id="withdraw"' in manage.text
    reply = site.post(f"{link}/withdraw", {"csrf": manage.csrf(), "lang": "ja"})
    assert reply.status == 303 and reply.headers["Location"] == f"{link}/manage?lang=ja"
    assert [r["decision"] for r in site.rows("receipts")] == ["accept", "withdraw"]
    # The consent had not left yet: it is cancelled, and the agency hears nothing.
    assert site.rows("outbox") == []
    assert [r["event"] for r in site.rows("forward_events")] == ["cancelled"]
    after = site.get(f"{link}/manage")
    assert after.state() == "withdrawn" and 'id="withdraw"' not in after.text
    assert site.get(link).state() == "withdrawn"  # the form again, to register anew


def test_withdrawing_what_the_agency_already_has_tells_the_agency(site: Harness) -> None:
    link = site.link(site.offer())
    site.accept(link)
    (forward,) = site.rows("forwards")
    with sqlite3.connect(site.db_path) as conn:  # as the forwarding worker would
        conn.execute("DELETE FROM outbox WHERE forward_id = ?", (forward["id"],))
        conn.execute("INSERT INTO forward_events (forward_id, created, event) VALUES"
                     " (?, '2026-01-01T00:00:00Z', 'delivered')", (forward["id"],))
    manage = site.get(f"{link}/manage")
    site.post(f"{link}/withdraw", {"csrf": manage.csrf()})
    kinds = [r["kind"] for r in site.rows("forwards")]
    assert kinds == ["consent", "withdrawal"]
    withdrawal = json.loads(site.rows("forwards", "kind = 'withdrawal'")[0]["payload"])
    assert withdrawal["refers_to"] == [forward["id"]] and withdrawal["instruction"] == "delete"
    assert "cand@example.net" not in json.dumps(withdrawal)


def test_erase_removes_what_was_typed_and_keeps_the_record(site: Harness) -> None:
    link = site.link(site.offer())
    stale = site.get(link).csrf()
    site.accept(link, phone="0312345678")
    manage = site.get(f"{link}/manage")
    assert site.post(f"{link}/erase", {"csrf": manage.csrf()}).status == 303
    assert [r["decision"] for r in site.rows("receipts")] == ["accept", "erase"]
    (profile,) = site.rows("profiles")
    assert profile["data"] is None and profile["erased"]
    assert all(r["payload"] is None for r in site.rows("forwards", "kind = 'consent'"))
    export = json.loads(site.get(f"{link}/export").text)
    assert "山田" not in json.dumps(export, ensure_ascii=False)
    assert export["decision"] == "erase"
    assert site.get(link).state() == "erased"
    assert site.get(f"{link}/manage").state() == "erased"
    # Erased is final: a form left open elsewhere cannot bring the data back.
    reply = site.post(link, {"csrf": stale, "decision": "accept", "agree": "yes",
                             "name": "山田", "email": "cand@example.net"})
    assert reply.status == 303
    assert site.get(f"{link}/done").state() == "erased"
    assert site.rows("profiles", "data IS NOT NULL") == []
    assert [r["decision"] for r in site.rows("receipts")] == ["accept", "erase"]


def test_export_gives_everything_held_and_every_receipt(site: Harness) -> None:
    link = site.link(site.offer())
    site.accept(link, desired_job="データエンジニア")
    reply = site.get(f"{link}/export")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert "attachment" in reply.headers["Content-Disposition"]
    assert reply.headers["Cache-Control"] == "no-store"
    data = json.loads(reply.text)
    assert data["offer"]["sent_to"] == "cand@example.net"
    assert data["offer"]["first_viewed"]
    (receipt,) = data["receipts"]
    assert receipt["decision"] == "accept"
    assert receipt["profile"]["desired_job"] == "データエンジニア"
    assert data["forwards"][0]["status"] == "pending"


def test_one_offers_token_never_reads_another_offers_data(site: Harness) -> None:
    a = site.offer("a@example.net", message_id="<a@x>")
    b = site.offer("b@example.net", message_id="<b@x>")
    site.accept(site.link(a), name="Aさん", email="a@example.net")
    export_b = site.get(f"{site.link(b)}/export").text
    assert "Aさん" not in export_b and "a@example.net" not in export_b
    assert json.loads(export_b)["receipts"] == []


# -- escaping -------------------------------------------------------------------------------

XSS = '<script>alert(1)</script>"\'><img src=x onerror=alert(1)>'


def test_script_in_every_field_comes_back_escaped(site: Harness) -> None:
    link = site.link(site.offer())
    fields = {f: XSS for f in ("name", "phone", "desired_job", "desired_location", "note")}
    reply = site.accept(link, agree=None, email=XSS, **fields)
    assert reply.status == 400
    assert "<script>alert(1)</script>" not in reply.text
    assert "<img src=x" not in reply.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in reply.text


def test_configured_names_are_escaped_too(make_config: Any) -> None:
    harness = Harness(make_config(
        agency={"name": "<b>Agency</b>"},
        companies=[{"id": "acme", "name": "<script>x</script>", "domains": ["acme.example"]}]))
    try:
        page = harness.get(harness.link(harness.offer()))
        assert "<script>x</script>" not in page.text and "<b>Agency</b>" not in page.text
        assert "&lt;script&gt;x&lt;/script&gt;" in page.text
    finally:
        harness.close()


def test_review_from_the_command_line(site: Harness) -> None:
    from tests.conftest import run_cli

    link = site.link(site.offer(age=1))
    site.accept(link)
    (receipt,) = site.rows("receipts")
    config = str(site.settings.source)
    listed = run_cli("review", "list", "--config", config)
    assert listed.returncode == 0 and receipt["id"] in listed.stdout
    assert "held: review_window" in listed.stdout
    assert run_cli("review", "approve", "--config", config).returncode == 1
    unknown = run_cli("review", "approve", "rc_nope", "--config", config)
    assert unknown.returncode == 1 and "no decision held" in unknown.stderr
    approved = run_cli("review", "approve", receipt["id"], "--config", config, "--by", "ops")
    assert approved.returncode == 0, approved.stderr
    assert site.rows("outbox")[0]["held"] == 0
    assert site.rows("reviews")[0]["by"] == "ops"
    again = run_cli("review", "reject", receipt["id"], "--config", config)
    assert again.returncode == 1 and "already reviewed (approve)" in again.stderr
    assert site.get(f"{link}/done").state() == "accepted"
    assert "0 decision(s)" in run_cli("review", "list", "--config", config).stdout


def test_times_are_shown_in_japan_time_on_japanese_pages(site: Harness) -> None:
    link = site.link(site.offer())
    site.accept(link)
    (receipt,) = site.rows("receipts")
    utc = dt.datetime.strptime(receipt["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    jst = utc + dt.timedelta(hours=9)
    assert f"{jst:%Y年%m月%d日 %H:%M}（日本時間）" in site.get(f"{link}/done").text
    assert f"{utc:%Y-%m-%d %H:%M} UTC" in site.get(f"{link}/done?lang=en").text


# -- the page cache -------------------------------------------------------------------------


def test_a_cached_page_never_outlives_a_change_made_elsewhere(site: Harness) -> None:
    link = site.link(site.offer(age=1))  # inside the review window: held
    site.accept(link)
    assert site.get(link).state() == "under_review"
    assert site.get(link).state() == "under_review"  # now from the cache
    with open_ledger(site.db_path) as other:  # another process's connection, as the CLI's
        from career_relay.ledger import Rules

        receipt = site.rows("receipts")[0]["id"]
        ConsentLedger(other, Rules()).review(receipt, approve=True, by="ops")
    assert site.get(link).state() == "accepted"


def test_a_page_from_the_cache_carries_a_working_nonce_for_its_own_offer(
        site: Harness) -> None:
    a = site.offer("a@example.net", message_id="<a@x>")
    b = site.offer("b@example.net", message_id="<b@x>")
    site.get(site.link(a))
    cached = site.get(site.link(a))  # served from the cache
    other = site.get(site.link(b))
    assert cached.csrf() != other.csrf()
    assert site.post(site.link(b), {"csrf": cached.csrf(), "decision": "decline"}).status == 403
    reply = site.post(site.link(a), {"csrf": cached.csrf(), "decision": "decline"})
    assert reply.status == 303


def test_the_cache_drops_expired_stale_and_old_pages() -> None:
    cache = PageCache(size=2)
    page = Page(b"body", 200, "offer", generation=7, expires=1000.0)
    cache.put(("a", "", None), page)
    assert cache.get(("a", "", None), 7, 999.0) is page
    assert cache.get(("a", "", None), 7, 1000.0) is None  # the link expired: 410 next
    cache.put(("a", "", None), page)
    assert cache.get(("a", "", None), 8, 10.0) is None  # something was committed
    for key in ("x", "y", "z"):
        cache.put((key, "", None), page)
    assert len(cache) == 2 and cache.get(("x", "", None), 7, 0.0) is None


def test_a_cached_form_is_retired_while_its_nonce_still_has_an_hour(site: Harness) -> None:
    import time

    from consent_site.page_cache import NONCE_MARGIN
    from consent_site.security import NONCE_MAX_AGE

    before = time.time()
    site.get(site.link(site.offer()))
    (page,) = site.client.app[SITE].pages._pages.values()  # type: ignore[union-attr]
    assert page.expires <= time.time() + NONCE_MAX_AGE - NONCE_MARGIN
    assert page.expires >= before + NONCE_MAX_AGE - NONCE_MARGIN - 1


def test_a_commit_while_a_page_renders_never_leaves_the_old_state_cached(
        site: Harness) -> None:
    """Another connection commits the offer's accept right after the page read its state:
    the page rendered from the old state must not be kept as current."""
    from career_relay.consent import Client

    app_site = site.client.app[SITE]  # type: ignore[union-attr]
    link = site.link(site.offer())
    site.get(link + "?lang=en")  # the notice and the view are recorded: no writes below
    real_state = app_site.consents.state
    fired: list[int] = []

    def state_then_commit(offer: Offer) -> Any:
        found = real_state(offer)
        if not fired:
            fired.append(1)
            notice, _ = app_site.notice(offer, "ja")
            app_site.consents.accept(offer, notice, {"name": "x", "email": "cand@example.net"},
                                   False, Client(IPHONE, "198.51.100.1"))
        return found

    app_site.consents.state = state_then_commit  # type: ignore[method-assign]
    assert site.get(link).state() == "open"  # rendered from what it read
    app_site.consents.state = real_state  # type: ignore[method-assign]
    assert site.get(link).state() == "accepted"


def test_an_accept_rejected_on_review_can_be_made_again(site: Harness) -> None:
    link = site.link(site.offer())
    scanner = "python-requests/2.31"
    page = site.get(link, ua=scanner)
    site.post(link, {"csrf": page.csrf(), "decision": "accept", "agree": "yes",
                     "name": "x", "email": "cand@example.net"}, ua=scanner)  # held
    (held,) = site.rows("receipts")
    with open_ledger(site.db_path) as other:
        from career_relay.ledger import Rules

        ConsentLedger(other, Rules()).review(held["id"], approve=False, by="ops")
    page = site.get(link)
    assert page.state() == "not_sent" and 'id="consent-form"' in page.text
    assert "お届けしていません" in page.text
    assert site.accept(link).status == 303
    assert [r["decision"] for r in site.rows("receipts")] == ["accept", "accept"]
    assert site.get(f"{link}/done").state() == "accepted"  # a phone this time: not held


def test_a_ledger_that_is_away_gets_a_503_page_and_recovers_by_itself(
        site: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEC 12: the site answers 503 with a page while the ledger is away (the store turns
    the driver's errors into LedgerUnavailable: test_ledger), and serves again when it is
    back, with no operator."""
    offer = site.offer()
    link = site.link(offer)
    ledger = site.client.app[SITE].ledger
    real = ledger.offer

    def away(offer_id: str) -> None:
        raise LedgerUnavailable("the ledger cannot be used now: connection refused")

    monkeypatch.setattr(ledger, "offer", away)
    page = site.get(link, headers={"Accept-Language": "ja"})
    assert page.status == 503
    assert page.headers["Retry-After"] == "30"
    assert page.headers["Cache-Control"] == "no-store"
    assert "メンテナンス" in page.text and offer.id not in page.text
    monkeypatch.setattr(ledger, "offer", real)
    assert site.get(link).status == 200
