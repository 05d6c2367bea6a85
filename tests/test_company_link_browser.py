"""The company link end to end in a real browser on a phone-sized screen (SPEC 10).

``career-relay site`` runs as a subprocess over a real ledger file, its
upstream a capturing SMTP server on loopback (``sink``), its agency the demo
receiver (``consent_site.agency_receiver``) taking signed webhooks.  Headless
Chromium (``tests/peers/browser.py``) opens the company's link as printed by
``career-relay company-link``, types an address, and finds the mail with the
personal link in the capture upstream; it opens that link, consents, and the
forward waits, held for review, until ``career-relay review approve`` lets it
go to the agency.  Screenshots go to ``test-artifacts/screenshots/``.  Every
wait is for a condition, with a generous timeout.
"""

from __future__ import annotations

import email
import email.policy
import re
import sqlite3
from pathlib import Path

import pytest

from career_relay import settings as settings_mod
from consent_site.link_words import TEXTS
from tests.conftest import ConfigMaker, Sink, free_port, run_cli, wait_until
from tests.peers.browser import phone
from tests.test_browser import SHOTS, WEBHOOK_SECRET, Agency, SiteProcess, _fits_the_phone

pytestmark = [pytest.mark.peer, pytest.mark.slow]

ADDRESS = "hanako.yamada@example.net"


def _receipts(ledger: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT id, decision, review FROM receipts ORDER BY rowid").fetchall()
    return [(str(i), str(d), r) for i, d, r in rows]


def _held(ledger: Path) -> list[int]:
    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as db:
        return [int(r[0]) for r in db.execute("SELECT held FROM outbox")]


def test_the_company_link_on_a_phone_to_the_agency_after_review(
        tmp_path: Path, make_config: ConfigMaker, sink: Sink) -> None:
    agency = Agency(tmp_path / "agency", free_port())
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    config = make_config(
        upstream_port=sink.port,
        site={"listen": f"127.0.0.1:{port}", "public_url": public_url, "review_window": 0},
        agency={"webhook_url": agency.receiver.url, "webhook_secret": WEBHOOK_SECRET,
                "retry_schedule": [1]})
    ledger = Path(settings_mod.load(config).ledger.path)
    printed = run_cli("company-link", "--company", "acme", "--config", str(config))
    assert printed.returncode == 0, printed.stderr
    company_link = printed.stdout.strip()
    assert company_link.startswith(f"{public_url}/j/")
    site = SiteProcess(config, port)
    ja = TEXTS["ja"]
    try:
        with phone(tmp_path, SHOTS) as p:
            # 1. The company's fixed link, as pasted into its template: the address form.
            p.open(company_link)
            assert p.attribute("html", "lang") == "ja"
            assert p.text("h1") == ja["link_title"].format(agency="株式会社サンプル人材")
            assert "株式会社アクメ" in p.text("header")
            _fits_the_phone(p, "#email", "#send")
            p.screenshot("link-01-company-link")

            # 2. A typo first: the error beside the field, what was typed kept.
            p.type_into("#email", "hanako.yamada@example")
            p.tap_and_wait("#send", "main[data-state]")
            assert p.is_visible("#error-email") and p.value("#email") == "hanako.yamada@example"
            p.screenshot("link-02-typo")

            # 3. The address: the "check your mail" page, which names no address.
            p.type_into("#email", ADDRESS)
            p.tap_and_wait("#send", "main[data-state='link_sent']")
            assert p.url.startswith(company_link + "/sent")
            assert p.text("h1") == ja["link_sent_title"] and "hanako" not in p.text("body")
            _fits_the_phone(p, "#again")
            p.screenshot("link-03-sent")

            # 4. The mail at the capture upstream: to that address alone, with a personal link.
            (mail,) = sink.wait_for(1)
            assert mail.rcpts == [ADDRESS]
            message = email.message_from_bytes(mail.data, policy=email.policy.default)
            body = message.get_body(("plain",))
            assert body is not None
            (personal,) = re.findall(rf"{re.escape(public_url)}/c/[A-Za-z0-9_.-]+",
                                     str(body.get_content()))

            # 5. The personal link: the consent page of SPEC 6, the address prefilled.
            p.open(personal)
            assert p.find("main").get_attribute("data-state") == "open"
            assert p.value("#email") == ADDRESS
            p.type_into("#name", "山田 花子")
            p.tap("#agree")
            p.screenshot("link-04-consent")
            p.tap_and_wait("#accept", "main[data-state]")
            assert p.attribute("main", "data-state") == "under_review"
            p.screenshot("link-05-held")
            assert p.console_errors() == []

        # 6. Held for review (reason "link"); the agency has nothing until an admin approves.
        ((receipt, decision, review),) = _receipts(ledger)
        assert (decision, review) == ("accept", "link")
        assert _held(ledger) == [1]
        assert agency.forwards() == []
        approved = run_cli("review", "approve", receipt, "--config", str(config))
        assert approved.returncode == 0, approved.stderr

        # 7. Released: the forward reaches the agency, signed, with what was typed.
        wait_until(lambda: len(agency.forwards()) == 1, 60, "the forward at the agency")
        (forward,) = agency.forwards()
        assert forward["type"] == "consent"
        assert forward["candidate"] == {"name": "山田 花子", "email": ADDRESS}
        # Recorded as delivered once the agency's answer is back: the outbox empties.
        wait_until(lambda: _held(ledger) == [], 30, "the delivery recorded")
    finally:
        site.stop()
        agency.close()
