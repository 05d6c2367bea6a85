"""The candidate's whole journey in a real browser on a phone-sized screen (SPEC 6, 7).

``career-relay site`` runs as a subprocess over a real ledger file; headless
Chromium (``tests/peers/browser.py``: 390x844 CSS pixels, pixel ratio 2, an
iPhone's Safari user agent) opens the link from the rejection mail, is
refused without the agreement box, registers, manages, withdraws, and reads
the page in English.  Around it, on loopback:

* a tiny HTTP server stands in for the agency's privacy-policy page and
  records the Referer it receives: the consent URL holds the token (a key to
  the candidate's data), so no Referer may carry it; with
  ``Referrer-Policy: same-origin`` there is none at all;
* the demo agency receiver (``consent_site.agency_receiver``) takes the
  webhook forwards and checks their signatures.

Screenshots of every step go to ``test-artifacts/screenshots/`` (kept out of
git) for a person to look at.  Nothing here depends on timing: every wait is
for a condition, with a generous timeout.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from career_relay import settings as settings_mod
from career_relay.ledger import open_ledger
from career_relay.tokens import LinkSigner, link
from consent_site.agency_receiver import AgencyReceiver, start_agency_receiver
from consent_site.i18n import TEXTS
from tests.conftest import CLI, REPO, ConfigMaker, free_port, wait_until
from tests.peers.browser import PHONE_HEIGHT, PHONE_UA, PHONE_WIDTH, Phone, phone

pytestmark = [pytest.mark.peer, pytest.mark.slow]

SHOTS = REPO / "test-artifacts" / "screenshots"
WEBHOOK_SECRET = "browser-test-webhook-secret"
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")  # kana or kanji
LEAKED_REPR = re.compile(r"<(built-in|bound) method|object at 0x[0-9a-f]+")


# -- the peers around the site ----------------------------------------------------------


class PrivacyPage:
    """The agency's privacy policy on loopback, recording each visit's Referer (or None)."""

    def __init__(self) -> None:
        self.referers: list[str | None] = []
        visits = self.referers

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/privacy"):
                    visits.append(self.headers.get("Referer"))
                body = "<!doctype html><title>プライバシーポリシー</title><h1>方針</h1>".encode()
                if self.path.startswith("/attack?"):
                    body = _attack_page(self.path).encode()
                self.send_response(200 if self.path.startswith(("/privacy", "/attack?"))
                                   else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/privacy"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _attack_page(path: str) -> str:
    """Another site's page with a form that posts a consent to our site: a forgery
    attempt, carrying a nonce the attacker got by loading the page itself."""
    from html import escape
    from urllib.parse import parse_qs, urlsplit

    query = {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
    fields = {"csrf": query["csrf"], "lang": "ja", "decision": "accept", "agree": "yes",
              "name": "forged", "email": "forged@example.net"}
    inputs = "".join(f'<input type="hidden" name="{k}" value="{escape(v)}">'
                     for k, v in fields.items())
    return (f'<!doctype html><title>prize</title><form method="post" '
            f'action="{escape(query["action"])}">{inputs}'
            '<button id="go">Claim your prize</button></form>')


class Agency:
    """The demo agency receiver on its own event loop in a thread of the test process."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.receiver: AgencyReceiver = asyncio.run_coroutine_threadsafe(
            start_agency_receiver(directory, WEBHOOK_SECRET, "127.0.0.1", port, "/forwards"),
            self.loop).result(15)

    def forwards(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text(encoding="utf-8"))
                for p in sorted(self.directory.glob("*.json"))]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.receiver.close(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class SiteProcess:
    """``career-relay site --config PATH``, up once GET /healthz answers."""

    def __init__(self, config: Path, port: int) -> None:
        self.log = config.parent / "site.log"
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen([*CLI, "site", "--config", str(config)],
                                         stdout=logf, stderr=logf, cwd=REPO)
        health = f"http://127.0.0.1:{port}/healthz"
        wait_until(lambda: self.proc.poll() is not None or _answers(health), 30,
                   "the consent site's /healthz")
        assert self.proc.poll() is None, self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Journey:
    """What the test needs: the link, the ledger, the peers."""

    def __init__(self, link: str, offer_id: str, ledger: Path, privacy: PrivacyPage,
                 agency: Agency) -> None:
        self.link = link
        self.offer_id = offer_id
        self.ledger = ledger
        self.privacy = privacy
        self.agency = agency

    def receipts(self) -> list[tuple[str, str, str | None]]:
        with sqlite3.connect(f"file:{self.ledger}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT decision, user_agent, review FROM receipts"
                              " WHERE offer_id = ? ORDER BY created, rowid",
                              (self.offer_id,)).fetchall()
        return [(str(d), str(ua), r) for d, ua, r in rows]


@pytest.fixture
def journey(tmp_path: Path, make_config: ConfigMaker) -> Iterator[Journey]:
    privacy = PrivacyPage()
    agency = Agency(tmp_path / "agency", free_port())
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    config = make_config(
        site={"listen": f"127.0.0.1:{port}", "public_url": public_url, "review_window": 0},
        agency={"privacy_url": privacy.url, "webhook_url": agency.receiver.url,
                "webhook_secret": WEBHOOK_SECRET, "retry_schedule": [1]})
    settings = settings_mod.load(config)
    with open_ledger(settings.ledger.path) as ledger:
        offer = ledger.record_offer("acme", "<rejection-1@acme.example>",
                                    "candidate@example.net",
                                    job="バックエンドエンジニア", stage="一次面接")
    token = LinkSigner.from_settings(settings).token(offer.id)
    site = SiteProcess(config, port)
    try:
        yield Journey(link(public_url, token), offer.id, Path(settings.ledger.path),
                      privacy, agency)
    finally:
        site.stop()
        agency.close()
        privacy.close()


# -- the journey ------------------------------------------------------------------------


def test_candidate_journey_on_a_phone(journey: Journey, tmp_path: Path) -> None:
    ja, en = TEXTS["ja"], TEXTS["en"]
    with phone(tmp_path, SHOTS) as p:
        # 1. The link from the mail: the Japanese page, the email prefilled, nothing ticked.
        p.open(journey.link)
        assert p.attribute("html", "lang") == "ja"
        assert JAPANESE.search(p.text("h1")), p.text("h1")
        assert p.find("main").get_attribute("data-state") == "open"
        assert p.value("#email") == "candidate@example.net"
        assert not p.find("#agree").is_selected()
        _fits_the_phone(p, "#accept", "#decline", "#agree", "#name")
        p.screenshot("01-offer-ja")

        # 2. The agency's privacy policy, opened from the page: no Referer leaks the token.
        p.tap("#agency-privacy")
        wait_until(lambda: len(journey.privacy.referers) == 1, 20, "the privacy page's visit")
        assert journey.privacy.referers == [None]
        _back_to_the_first_tab(p)

        # 3. Accept without ticking the agreement: a Japanese error, what was typed is kept.
        typed = {"#name": "山田 太郎", "#phone": "090-1234-5678",
                 "#desired_job": "バックエンドエンジニア", "#desired_location": "東京都",
                 "#note": "平日の夜なら電話に出られます <b>よろしく</b>"}
        for css, value in typed.items():
            p.type_into(css, value)
        p.tap("#share_application")
        p.tap_and_wait("#accept", "#errors")
        assert p.attribute("html", "lang") == "ja"
        assert p.is_visible("#errors")
        # ... on the first screen: a summary below the long notice would go unseen.
        assert p.top_of("#errors") < p.scroll_y() + PHONE_HEIGHT, p.top_of("#errors")
        assert p.text("#error-agree") == ja["error_agree"]
        assert ja["errors_heading"] in p.text("#errors")
        for css, value in typed.items():
            assert p.value(css) == value, css
        assert p.value("#email") == "candidate@example.net"
        assert p.find("#share_application").is_selected()
        assert not p.find("#agree").is_selected()
        _fits_the_phone(p, "#errors", "#accept")
        p.screenshot("02-offer-ja-error-agree")
        p.screen("02b-offer-ja-error-agree-first-screen")  # what the phone shows at first
        assert journey.receipts() == []

        # 4. Tick and accept: the done page.
        p.tap("#agree")
        p.tap_and_wait("#accept", "main[data-state]")
        assert p.url.startswith(journey.link + "/done")
        assert p.attribute("main", "data-state") == "accepted"
        assert p.text("h1") == ja["state_accepted"]
        _fits_the_phone(p, "#manage")
        p.screenshot("03-done-accepted")

        # 5. Manage, then withdraw.
        p.tap_and_wait("#manage", "#withdraw")
        assert p.url.startswith(journey.link + "/manage")
        assert p.attribute("main", "data-state") == "accepted"
        assert p.text("h1") == ja["manage_heading"]
        _fits_the_phone(p, "#withdraw", "#erase", "#export")
        p.screenshot("04-manage-accepted")
        p.tap_and_wait("#withdraw", "main[data-state='withdrawn']")
        assert p.url.startswith(journey.link + "/manage")
        assert not p.all("#withdraw")
        _fits_the_phone(p, "#erase", "#export")
        p.screenshot("05-manage-withdrawn")

        # 6. The page in English.
        p.open(journey.link + "?lang=en")
        assert p.attribute("html", "lang") == "en"
        assert p.text("h1").startswith("Register with")
        assert p.text("#accept") == en["accept"]
        _fits_the_phone(p, "#accept", "#decline")
        p.screenshot("06-offer-en")

        # No script error and no Content-Security-Policy violation on any page.
        assert p.console_errors() == []

    # The ledger: one accept and one withdrawal, from the phone, neither held for review.
    assert journey.receipts() == [("accept", PHONE_UA, None), ("withdraw", PHONE_UA, None)]
    # The agency got both, signed (the receiver keeps only forwards whose signature holds):
    # what was typed in the browser, as typed, and the application the box shared.
    wait_until(lambda: len(journey.agency.forwards()) == 2, 30, "two forwards at the agency")
    forwards = {str(f["type"]): f for f in journey.agency.forwards()}
    assert sorted(forwards) == ["consent", "withdrawal"], forwards
    consent = forwards["consent"]
    assert consent["candidate"] == {
        "name": "山田 太郎", "email": "candidate@example.net", "phone": "090-1234-5678",
        "desired_job": "バックエンドエンジニア", "desired_location": "東京都",
        "note": "平日の夜なら電話に出られます <b>よろしく</b>"}
    assert consent["application"]["job"] == "バックエンドエンジニア"
    assert consent["application"]["stage"] == "一次面接"


def _fits_the_phone(p: Phone, *selectors: str) -> None:
    """No sideways scrolling, each control visible within the phone's width, and no
    Python object shown where a text belongs (a template reading a dict's method)."""
    body = p.text("body")
    leaked = LEAKED_REPR.search(body)
    assert leaked is None, ("a Python object is shown on the page: "
                            f"{body[max(0, leaked.start() - 30):leaked.end() + 30]!r}")
    assert p.page_width() <= PHONE_WIDTH, f"the page is {p.page_width()} px wide"
    for css in selectors:
        assert p.is_visible(css), css
        assert p.fits_width(css), css


def _back_to_the_first_tab(p: Phone) -> None:
    """The privacy link opens a new tab (target=_blank): close it, return to the form."""
    first, *others = p.driver.window_handles
    for handle in others:
        p.driver.switch_to.window(handle)
        p.driver.close()
    p.driver.switch_to.window(first)


def test_a_form_on_another_site_cannot_consent_for_the_candidate(
        journey: Journey, tmp_path: Path) -> None:
    """Cross-site request forgery in a real browser: another origin's page posts a
    consent with a valid nonce; the browser says where the form came from."""
    from urllib.parse import urlencode

    with phone(tmp_path, SHOTS) as p:
        p.open(journey.link)
        nonce = p.attribute("input[name=csrf]", "value")
        assert nonce
        attack = journey.privacy.url.replace("/privacy", "/attack?") + urlencode(
            {"action": journey.link, "csrf": nonce})
        p.open(attack)
        p.tap_and_wait("#go", "main")
        assert TEXTS["ja"]["error_403_title"] in p.text("h1")
    assert journey.receipts() == []
