"""The company link ``/j/{company_token}`` (SPEC 10): double opt-in, limits, review.

The real site (aiohttp's test server) sends its mail to a real capturing
upstream on loopback (``sink``); what rests on the ledger (the offer, its
source, the review that holds its forward, the credit) runs on both backends
(``backend_url``).  The attacks: forged and other companies' tokens, a form
without a nonce or from another origin or replayed, header injection through
the address, mail bombing one address, farming offers from one client or
many, huge bodies.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from career_relay import company_link as core
from career_relay import settings as settings_mod
from career_relay.errors import ConfigError
from career_relay.ledger import Book, ConsentLedger, Ledger, open_configured, reports
from career_relay.tokens import CompanySigner, LinkSigner, TokenInvalid, company_link
from consent_site.app import create_app, reload_app
from consent_site.candidate import SITE
from consent_site.company_link import LINKS
from tests.conftest import ConfigMaker, Received, Sink, run_cli

PHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 "
         "(KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1")
KEY = "test-secret-0123456789"  # conftest's signing key
COMPANIES = [
    {"id": "acme", "name": "株式会社アクメ", "domains": ["acme.example"]},
    {"id": "kumo", "name": "雲株式会社", "domains": ["kumo.example"], "locale": "en"},
]
LINK = re.compile(r"http://127\.0\.0\.1:\d+/c/[A-Za-z0-9_.-]+")


class Reply:
    def __init__(self, status: int, headers: Any, text: str) -> None:
        self.status = status
        self.headers = headers
        self.text = text

    def csrf(self) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.text)
        assert found, "no CSRF nonce on the page"
        return found.group(1)


class LinkSite:
    """The site over a real ledger, its upstream the capturing sink, driven from sync tests."""

    def __init__(self, config: Path, sink: Sink) -> None:
        self.settings = settings_mod.load(config)
        self.sink = sink
        self.loop = asyncio.new_event_loop()
        self.app = create_app(self.settings)
        self.app[LINKS].mailer.retry_delay = 0.0
        self.client: TestClient[web.Request, web.Application] = TestClient(
            TestServer(self.app), loop=self.loop)
        self.loop.run_until_complete(self.client.start_server())
        self.ledger: Ledger = open_configured(self.settings)  # another process's view
        self.path = "/j/" + CompanySigner([KEY]).token("acme")

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()
        self.ledger.close()

    def request(self, method: str, path: str, *, source: str | None = None,
                **kwargs: Any) -> Reply:
        async def go() -> Reply:
            headers = {"User-Agent": PHONE, **kwargs.pop("headers", {})}
            if source is None:
                async with self.client.request(method, path, headers=headers,
                                               allow_redirects=False, **kwargs) as r:
                    return Reply(r.status, r.headers, await r.text())
            # From another client address on this machine (127.0.0.2, ...).
            connector = aiohttp.TCPConnector(local_addr=(source, 0))
            async with aiohttp.ClientSession(connector=connector) as session, \
                    session.request(method, self.client.make_url(path), headers=headers,
                                    allow_redirects=False, **kwargs) as r:
                return Reply(r.status, r.headers, await r.text())

        return self.loop.run_until_complete(go())

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def ask(self, address: str, path: str | None = None, source: str | None = None,
            forwarded: str | None = None, **fields: str) -> Reply:
        """The form: its page, then its POST with the page's nonce (``forwarded``: the
        ``X-Forwarded-For`` a proxy, or the client, sends)."""
        headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
        page = self.get(path or self.path, source=source, headers=headers)
        data = {"csrf": page.csrf(), "lang": "ja", "email": address, **fields}
        return self.request("POST", path or self.path, data=data, source=source,
                            headers=headers)

    def mail(self, count: int) -> list[Received]:
        """Wait (on the site's loop, where the mailer runs) for ``count`` mails at the sink."""
        async def wait() -> None:
            for _ in range(600):
                if len(self.sink.messages) >= count:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"{count} mail(s) expected, {len(self.sink.messages)} came")

        self.loop.run_until_complete(wait())
        return self.sink.messages

    def settle(self) -> None:
        """Let the mailer send whatever it has queued."""
        async def idle() -> None:
            for _ in range(5):
                await asyncio.sleep(0.05)
            await asyncio.wait_for(self.app[LINKS].mailer.drained(), 30)

        self.loop.run_until_complete(idle())

    def offers(self) -> list[dict[str, Any]]:
        with self.ledger.read() as conn:
            rows = conn.execute("SELECT id, company, recipient, source FROM offers"
                                " ORDER BY created").fetchall()
        return [dict(zip(("id", "company", "recipient", "source"), r, strict=True))
                for r in rows]

    def report(self) -> dict[str, Any]:
        when = reports.period(None, None, dt.datetime.now(dt.UTC).date())
        return reports.report(self.ledger, ["acme"], when,
                              self.settings.ledger.credit_every)[0]


def _make(make_config: ConfigMaker, sink: Sink, url: str = "", **site: Any) -> LinkSite:
    config = make_config(upstream_port=sink.port, companies=COMPANIES,
                         ledger={"url": url, "credit_every": 1},
                         site={"review_window": 0, **site},
                         agency={"license_no": "13-ユ-123456"})
    return LinkSite(config, sink)


@pytest.fixture
def site(make_config: ConfigMaker, sink: Sink, backend_url: str) -> Iterator[LinkSite]:
    """The site on each backend in turn."""
    harness = _make(make_config, sink, backend_url)
    yield harness
    harness.close()


@pytest.fixture
def sqlite_site(make_config: ConfigMaker, sink: Sink) -> Iterator[LinkSite]:
    """The site on SQLite, for what is the site's alone (HTTP, limits, validation)."""
    harness = _make(make_config, sink)
    yield harness
    harness.close()


def _text(received: Received) -> str:
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def _link_in(received: Received) -> str:
    found = LINK.findall(_text(received))
    assert len(found) == 1, _text(received)
    return found[0]


# -- the token ------------------------------------------------------------------------------


def test_the_company_token_names_the_company_and_cannot_be_forged() -> None:
    signer = CompanySigner([KEY])
    acme = signer.token("acme")
    assert signer.company_id(acme) == "acme"
    assert acme == CompanySigner([KEY]).token("acme")  # one fixed link per company
    assert signer.company_id(signer.token("kumo")) == "kumo" and signer.token("kumo") != acme
    # Another company's name in the payload, with acme's signature: not ours.
    payload, _, signature = acme.partition(".")
    kumo_payload = signer.token("kumo").partition(".")[0]
    for forged in (f"{kumo_payload}.{signature}", acme[:-1] + ("A" if acme[-1] != "A" else "B"),
                   payload, "", "a" * 300, "acme", acme + "/x"):
        with pytest.raises(TokenInvalid):
            signer.company_id(forged)
    with pytest.raises(TokenInvalid):  # signed with a key we do not hold
        signer.company_id(CompanySigner(["another-secret-0123456789"]).token("acme"))
    # Rotation: a new key signs, the old one still opens what it signed.
    rotated = CompanySigner(["new-secret-0123456789", KEY])
    assert rotated.company_id(acme) == "acme" and rotated.token("acme") != acme
    # Another purpose's token never opens it, nor the other way round.
    consent = LinkSigner([KEY], 90).token("offer-id-123456")
    with pytest.raises(TokenInvalid):
        signer.company_id(consent)
    with pytest.raises(TokenInvalid):
        LinkSigner([KEY], 90).offer_id(acme)
    assert company_link("http://x.example/", acme) == f"http://x.example/j/{acme}"


@pytest.mark.parametrize("typed", [
    "cand@example.net\r\nBcc: victim@example.org", "cand@example.net\nBcc: v@example.org",
    "cand@example.net, victim@example.org", "Cand <cand@example.net>", '"a b"@example.net',
    "cand@example.net>\r\nRCPT TO:<victim@example.org", "victim%example.org@relay.example",
    "relay.example!victim", "cand@[127.0.0.1]", "cand@127.0.0.1", "cand@localhost",
    "cand@example", "cand@@example.net", "cand@example..net", ".cand@example.net",
    "cand @example.net", "cand@exa mple.net", "cand@example.net\x00", "cand(x)@example.net",
    "", "@example.net", "cand@", "a" * 65 + "@example.net", "a@" + "b" * 250 + ".net",
    "cand@-example.net", "cand@example.net\u2028", "キャンディ@example.net",
])
def test_only_one_plain_address_gets_through(typed: str) -> None:
    assert core.normal_address(typed) is None


def test_addresses_are_normalised() -> None:
    typed = " Taro.Yamada+jobs@Example.CO.JP "
    assert core.normal_address(typed) == "Taro.Yamada+jobs@example.co.jp"
    # Typed with a Japanese input method: full-width letters and at sign fold to ASCII.
    assert core.normal_address("ｔａｒｏ＠ｅｘａｍｐｌｅ．ｊｐ") == "taro@example.jp"
    assert core.normal_address("a@xn--eckwd4c7c.xn--zckzah") == "a@xn--eckwd4c7c.xn--zckzah"
    assert core.throttle_key("Victim+1@Example.net") == core.throttle_key("victim+2@example.NET")


def test_gmail_dots_and_googlemail_are_one_mailbox_to_the_address_limit() -> None:
    key = core.throttle_key
    assert key("V.i.c.t.i.m+x@GMail.com") == key("victim@gmail.com") == "victim@gmail.com"
    assert key("vic.tim@googlemail.com") == key("Victim+1@gmail.com")
    # Elsewhere a dot may name another mailbox: it stays.
    assert key("vic.tim@example.net") != key("victim@example.net")


def test_dotted_gmail_addresses_share_three_mails_a_day(sqlite_site: LinkSite) -> None:
    site = sqlite_site
    for n, address in enumerate(["victim@gmail.com", "v.ictim@gmail.com", "vi.ctim+a@gmail.com",
                                 "vic.tim@googlemail.com", "Victim@GoogleMail.com"]):
        assert site.ask(address, source=f"127.0.2.{n + 1}").status == 303
    site.mail(3)
    site.settle()
    assert len(site.sink.messages) == 3


def test_a_link_offers_message_id_is_keyed_and_stable_within_its_period() -> None:
    key, day = core.message_id_key(b"the ledger's hash key"), 86400.0
    made = core.offer_message_id(key, "acme", "a@example.net", 100 * day, 90)
    assert made == core.offer_message_id(key, "acme", "a@example.net", 100 * day + 3600, 90)
    assert made != core.offer_message_id(key, "acme", "a@example.net", 145 * day, 90)
    for other in (core.offer_message_id(core.message_id_key(b"another key"), "acme",
                                        "a@example.net", 100 * day, 90),
                  core.offer_message_id(key, "kumo", "a@example.net", 100 * day, 90),
                  core.offer_message_id(key, "acme", "b@example.net", 100 * day, 90)):
        assert other != made
    assert made != f"<company-link.{int(100 * day // (45 * day))}@career-relay.invalid>"
    assert "a@example.net" not in made and "acme" not in made
    # A syntactically valid Message-ID (RFC 5322 3.6.4: a dot-atom on each side of the @).
    assert re.fullmatch(r"<company-link\.\d+\.[0-9a-f]{32}@career-relay\.invalid>", made)
    header = email.message_from_string(f"Message-ID: {made}\n\n", policy=email.policy.default)
    assert str(header["Message-ID"]) == made and not header["Message-ID"].defects


def test_the_command_prints_the_companys_link(make_config: ConfigMaker) -> None:
    config = make_config(companies=COMPANIES, site={"public_url": "https://consent.example"})
    done = run_cli("company-link", "--company", "acme", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"https://consent.example/j/{CompanySigner([KEY]).token('acme')}\n"
    unknown = run_cli("company-link", "--company", "nope", "--config", str(config))
    assert unknown.returncode == 1 and "nope" in unknown.stderr and not unknown.stdout
    assert run_cli("company-link", "--config", str(config)).returncode == 2


# -- the page: a GET changes nothing ----------------------------------------------------------


def test_the_page_asks_for_an_address_and_a_get_changes_nothing(sqlite_site: LinkSite) -> None:
    site = sqlite_site
    for _ in range(3):
        page = site.get(site.path)
        assert page.status == 200
        assert site.request("HEAD", site.path).status == 200
        assert site.get(site.path + "/sent").status == 200
    assert '<html lang="ja">' in page.text and "株式会社アクメ" in page.text
    assert "13-ユ-123456" in page.text and 'type="email"' in page.text
    assert 'name="csrf"' in page.text and "<script" not in page.text
    assert page.headers["Cache-Control"] == "no-store" and "Set-Cookie" not in page.headers
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    english = site.get(site.path + "?lang=en")
    assert '<html lang="en">' in english.text and "Send me my link" in english.text
    # A company whose locale is English gets English by default.
    kumo = site.get("/j/" + CompanySigner([KEY]).token("kumo"))
    assert '<html lang="en">' in kumo.text and "雲株式会社" in kumo.text
    site.settle()
    assert site.offers() == [] and site.sink.messages == []


def test_forged_unknown_and_other_purpose_tokens_get_404(sqlite_site: LinkSite) -> None:
    site = sqlite_site
    other_key = "/j/" + CompanySigner(["another-secret-0123456789"]).token("acme")
    gone = "/j/" + CompanySigner([KEY]).token("removed")  # signed, but no such company
    consent = "/j/" + LinkSigner([KEY], 90).token("offer-id-123456")
    for path in (other_key, gone, consent, site.path[:-2], "/j/x"):
        assert site.get(path).status == 404, path
        assert site.request("POST", path, data={"email": "a@example.net"}).status in (403, 404)
    # The company's token does not open a consent page either.
    assert site.get("/c/" + site.path[3:]).status == 404
    site.settle()
    assert site.offers() == [] and site.sink.messages == []


# -- the double opt-in --------------------------------------------------------------------


def test_the_form_sends_a_personal_link_to_the_typed_address_only(site: LinkSite) -> None:
    answer = site.ask("Cand.Link@Example.NET")
    assert answer.status == 303
    assert answer.headers["Location"] == f"{site.path}/sent?lang=ja"  # no address in it
    (mail,) = site.mail(1)
    assert mail.rcpts == ["Cand.Link@example.net"]  # one recipient: the one typed
    assert mail.mail_from == "career-relay@relay.test"
    message = email.message_from_bytes(mail.data, policy=email.policy.default)
    assert message["To"] == "Cand.Link@example.net"
    assert "株式会社アクメ" in message["Subject"] and message["Auto-Submitted"] == "auto-generated"
    assert message.get_all("Bcc") is None and message.get_all("Cc") is None
    text = _text(mail)
    assert "13-ユ-123456" in text and "90日間" in text
    personal = _link_in(mail)
    # The offer: the typed address, made through the link, and its link the one mailed.
    (offer,) = site.offers()
    assert offer["recipient"] == "Cand.Link@example.net" and offer["source"] == "link"
    assert LinkSigner([KEY], 90).offer_id(personal.rsplit("/", 1)[1]) == offer["id"]
    assert "Cand.Link" not in personal
    # The personal link leads to the consent page of SPEC 6, the address prefilled.
    page = site.get(personal[personal.index("/c/"):])
    assert page.status == 200 and 'value="Cand.Link@example.net"' in page.text
    assert 'id="agree"' in page.text
    # Asked again: the same offer, the same link (one offer per address and period).
    assert site.ask("cand.link@example.net".replace("cand.link", "Cand.Link")).status == 303
    assert _link_in(site.mail(2)[1]) == personal
    assert len(site.offers()) == 1
    report = site.report()
    assert report["offers"] == 1 and report["rejections"] == 0  # nothing proves a rejection
    assert report["offers_by_source"] == {"relay": 0, "api": 0, "link": 1}


def test_nobody_can_make_an_addresss_link_offer_first(site: LinkSite) -> None:
    """The id of a link offer was once ``<company-link.{period}@career-relay.invalid>``:
    whoever knew an address could make that offer first (a relayed mail with that
    Message-ID to it), and the form then mailed that offer's link, whose accept is not
    held for review.  The id is keyed now; offers made with the old id still work."""
    half = 90 * 86400 // 2
    now = time.time()
    guessed = {f"<company-link.{int(t // half)}@career-relay.invalid>" for t in (now, now + 60)}
    planted = {site.ledger.record_offer("acme", g, "victim@example.net").id for g in guessed}
    old = site.ledger.record_offer("acme", "<company-link.1@career-relay.invalid>",
                                   "old@example.net", source="link")
    site.ask("victim@example.net")
    personal = _link_in(site.mail(1)[0])
    made = LinkSigner([KEY], 90).offer_id(personal.rsplit("/", 1)[1])
    assert made not in planted
    with site.ledger.read() as conn:
        source, message_id = conn.execute("SELECT source, message_id FROM offers WHERE id = ?",
                                          (made,)).fetchone()
    assert source == "link" and message_id not in guessed
    # Asked again: the same keyed id, the same offer.
    site.ask("victim@example.net", source="127.0.0.2")
    assert _link_in(site.mail(2)[1]) == personal
    # A link offer made under the old id keeps its consent page.
    page = site.get(f"/c/{site.app[SITE].signer.token(old.id, old.created.timestamp())}")
    assert page.status == 200 and 'value="old@example.net"' in page.text


def test_a_link_forward_qualifies_only_after_an_admin_approves_it(site: LinkSite) -> None:
    site.ask("farmed@example.net")
    personal = _link_in(site.mail(1)[0])
    path = personal[personal.index("/c/"):]
    page = site.get(path)
    done = site.request("POST", path, data={
        "csrf": page.csrf(), "lang": "ja", "decision": "accept", "agree": "yes",
        "name": "山田 花子", "email": "farmed@example.net"})
    assert done.status == 303
    assert 'data-state="under_review"' in site.get(path + "/done").text
    store = ConsentLedger(site.ledger)
    (receipt,) = store.held()
    assert receipt.review == "link" and receipt.decision == "accept"
    # Held: the worker finds nothing to send, and nothing counts.
    assert store.claim_due(10, 60) == []
    report = site.report()
    assert (report["under_review"], report["qualified_forwards"], report["credits_earned"]) == (
        1, 0, 0)
    # Approved: released, delivered, qualified, and (credit_every = 1) a credit.
    store.review(receipt.id, True, "ops@relay.example")
    (forward,) = store.claim_due(10, 60)
    store.delivered(forward.id, "HTTP 200")
    report = site.report()
    assert (report["under_review"], report["qualified_forwards"], report["credits_earned"]) == (
        0, 1, 1)
    assert Book(site.ledger).verify()[1] is None  # the chain holds the link offer's source


def test_a_link_forward_rejected_on_review_never_counts(site: LinkSite) -> None:
    site.ask("bot@example.net")
    personal = _link_in(site.mail(1)[0])
    path = personal[personal.index("/c/"):]
    site.request("POST", path, data={"csrf": site.get(path).csrf(), "decision": "accept",
                                     "agree": "yes", "name": "x", "email": "bot@example.net"})
    store = ConsentLedger(site.ledger)
    (receipt,) = store.held()
    store.review(receipt.id, False, "ops@relay.example")
    assert store.claim_due(10, 60) == []
    assert site.report()["qualified_forwards"] == 0 and site.report()["credits_earned"] == 0


# -- the attacks ----------------------------------------------------------------------------


def test_a_form_without_our_nonce_or_from_elsewhere_gets_403(sqlite_site: LinkSite) -> None:
    site = sqlite_site
    path = site.path
    kumo = "/j/" + CompanySigner([KEY]).token("kumo")
    nonce = site.get(path).csrf()
    for data, headers in (
        ({"email": "a@example.net"}, {}),
        ({"email": "a@example.net", "csrf": "1.x.y"}, {}),
        ({"email": "a@example.net", "csrf": nonce}, {"Origin": "https://evil.example"}),
        ({"email": "a@example.net", "csrf": nonce}, {"Sec-Fetch-Site": "cross-site"}),
    ):
        assert site.request("POST", path, data=data, headers=headers).status == 403
    # acme's nonce at kumo's link: bound to its company.
    assert site.request("POST", kumo, data={"email": "a@example.net", "csrf": nonce}).status == 403
    # Two pages opened in the same second do not share a nonce (each may post once).
    assert len({site.get(path).csrf() for _ in range(3)}) == 3
    # A nonce posts once: the replay is refused.
    assert site.request("POST", path, data={"email": "a@example.net", "csrf": nonce}).status == 303
    assert site.request("POST", path, data={"email": "b@example.net", "csrf": nonce}).status == 403
    site.mail(1)
    site.settle()
    assert [m.rcpts for m in site.sink.messages] == [["a@example.net"]]


@pytest.mark.parametrize("typed", [
    "cand@example.net\r\nBcc: victim@example.org",
    "cand@example.net, victim@example.org",
    "cand@example.net>\r\nRCPT TO:<victim@example.org",
    '"><script>alert(1)</script>@example.net',
])
def test_header_injection_through_the_address_is_refused(sqlite_site: LinkSite,
                                                         typed: str) -> None:
    site = sqlite_site
    answer = site.ask(typed)
    assert answer.status == 400
    assert 'id="error-email"' in answer.text and "<script>" not in answer.text
    site.settle()
    assert site.sink.messages == [] and site.offers() == []


def test_an_address_of_the_company_itself_is_refused(sqlite_site: LinkSite) -> None:
    answer = sqlite_site.ask("hr@acme.example")
    assert answer.status == 400 and 'id="error-email"' in answer.text
    sqlite_site.settle()
    assert sqlite_site.sink.messages == [] and sqlite_site.offers() == []


def test_one_address_gets_three_mails_a_day_and_the_answer_never_tells(
        sqlite_site: LinkSite) -> None:
    site = sqlite_site
    answers = [site.ask(address, source=f"127.0.0.{n + 2}") for n, address in enumerate([
        "victim@example.org", "Victim+1@example.org", "VICTIM+2@EXAMPLE.ORG",
        "victim+3@example.org", "victim@example.org"])]
    fresh = site.ask("someone.else@example.org", source="127.0.0.9")
    for answer in [*answers, fresh]:  # over the limit or not: the same answer
        assert (answer.status, answer.headers["Location"]) == (303, f"{site.path}/sent?lang=ja")
    site.mail(4)
    site.settle()
    rcpts = [m.rcpts[0].lower() for m in site.sink.messages]
    assert sorted(rcpts) == ["someone.else@example.org", "victim+1@example.org",
                             "victim+2@example.org", "victim@example.org"]
    # The page the answer leads to names no address at all.
    sent = site.get(f"{site.path}/sent?lang=ja")
    assert sent.status == 200 and "victim" not in sent.text.lower()


def test_one_client_gets_ten_forms_an_hour(sqlite_site: LinkSite) -> None:
    site = sqlite_site
    for n in range(10):  # X-Forwarded-For is not believed from a client (no trusted proxy)
        assert site.ask(f"cand{n}@example.net", forwarded=f"198.51.100.{n}").status == 303
    over = site.ask("cand10@example.net", forwarded="198.51.100.99")
    assert over.status == 429 and int(over.headers["Retry-After"]) > 0
    assert "しばらくしてから" in over.text
    # Another client is not held back by it.
    assert site.ask("cand11@example.net", source="127.0.0.2").status == 303
    site.mail(11)
    site.settle()
    assert len(site.sink.messages) == 11 and len(site.offers()) == 11
    assert "cand10@example.net" not in [m.rcpts[0] for m in site.sink.messages]


def test_behind_a_trusted_proxy_each_client_counts_alone(make_config: ConfigMaker,
                                                         sink: Sink) -> None:
    """``site.trusted_proxies``: the client is the last address the proxy added; what a
    client writes into X-Forwarded-For itself is not believed."""
    site = _make(make_config, sink, trusted_proxies=["127.0.0.1/32"])
    try:
        for n in range(12):  # twelve clients through one proxy: none held back
            assert site.ask(f"c{n}@example.net", forwarded=f"198.51.100.{n}").status == 303
        # One client claiming a fresh address each time: the proxy's hop is what counts.
        answers = [site.ask(f"s{n}@example.net", forwarded=f"203.0.113.{n}, 192.0.2.1")
                   for n in range(11)]
        assert [a.status for a in answers] == [303] * 10 + [429]
        # Not from the proxy: the header is not believed at all.
        for n in range(10):
            site.ask(f"d{n}@example.net", source="127.0.0.2", forwarded=f"198.51.100.{n}")
        assert site.ask("d10@example.net", source="127.0.0.2",
                        forwarded="198.51.100.200").status == 429
        # The consent receipt keeps the candidate's network, not the proxy's.
        personal = _link_in(next(m for m in site.mail(1) if m.rcpts == ["c0@example.net"]))
        path = personal[personal.index("/c/"):]
        xff = {"X-Forwarded-For": "198.51.100.77"}
        site.request("POST", path, headers=xff, data={
            "csrf": site.get(path).csrf(), "decision": "accept", "agree": "yes",
            "name": "x", "email": "c0@example.net"})
        (receipt,) = ConsentLedger(site.ledger).held()
        assert receipt.network == "198.51.100.0/24"
    finally:
        site.settle()
        site.close()


def test_a_proxy_that_is_everyone_is_refused(make_config: ConfigMaker) -> None:
    for wrong, said in ((["0.0.0.0/0"], "could claim any address"),
                        (["proxy.example"], "not an address or network")):
        with pytest.raises(ConfigError, match=said):
            settings_mod.load(make_config(site={"trusted_proxies": wrong}))


def test_many_clients_get_at_most_the_companys_share(sqlite_site: LinkSite) -> None:
    site = sqlite_site
    site.app[LINKS].throttle.companies.limit = 3
    answers = [site.ask(f"c{n}@example.net", source=f"127.0.1.{n + 1}") for n in range(5)]
    assert [a.status for a in answers] == [303, 303, 303, 429, 429]
    # The company's share is its own: another company's link still sends.
    kumo = "/j/" + CompanySigner([KEY]).token("kumo")
    assert site.ask("k@example.net", path=kumo, source="127.0.1.9").status == 303
    site.mail(4)
    site.settle()
    assert len(site.offers()) == 4


def test_a_huge_body_gets_413_and_records_nothing(sqlite_site: LinkSite) -> None:
    site = sqlite_site
    nonce = site.get(site.path).csrf()
    huge = site.request("POST", site.path, data={"csrf": nonce, "email": "a@example.net",
                                                 "pad": "x" * 100_000})
    assert huge.status == 413

    async def chunks() -> Any:
        yield b"csrf=" + nonce.encode() + b"&email=a%40example.net&pad="
        for _ in range(100):
            yield b"x" * 1000

    chunked = site.request("POST", site.path, data=chunks(),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert chunked.status == 413
    site.settle()
    assert site.sink.messages == [] and site.offers() == []


def test_no_address_in_the_logs(sqlite_site: LinkSite, caplog: pytest.LogCaptureFixture
                                ) -> None:
    site = sqlite_site
    site.sink.handler.rcpt_replies["refused@example.net"] = "550 5.1.1 no such user"
    with caplog.at_level(logging.DEBUG, logger="career_relay"):
        site.ask("private.person@example.net")
        site.ask("refused@example.net")
        site.mail(1)
        site.settle()
    assert caplog.records, "the mailer logs what it did"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "private.person" not in logged and "refused@" not in logged
    assert "550" in logged  # the refusal is logged, by offer id


def test_a_reload_takes_new_companies_and_keys(make_config: ConfigMaker, sink: Sink) -> None:
    site = _make(make_config, sink)
    try:
        kumo = "/j/" + CompanySigner([KEY]).token("kumo")
        assert site.get(kumo).status == 200
        newer = "newer-secret-0123456789"
        settings = settings_mod.load(make_config(
            upstream_port=sink.port, secrets={"signing_keys": [newer, KEY]},
            companies=[COMPANIES[0], {"id": "sora", "name": "空株式会社",
                                      "domains": ["sora.example"]}]))
        reload_app(site.app, settings)
        assert site.get(kumo).status == 404  # no longer configured
        assert site.get("/j/" + CompanySigner([newer]).token("sora")).status == 200
        assert site.get(site.path).status == 200  # the old key still opens acme's link
    finally:
        site.close()


def test_a_temporary_refusal_is_tried_again_and_a_permanent_one_is_not(
        sqlite_site: LinkSite) -> None:
    site = sqlite_site
    sink_data = site.sink.handler.handle_DATA
    tries: list[str] = []

    async def refuse_first(server: Any, session: Any, envelope: Any) -> str:
        tries.append(envelope.rcpt_tos[0])
        if envelope.rcpt_tos == ["later@example.net"] and len(tries) == 1:
            return "451 4.3.0 try again later"
        if envelope.rcpt_tos == ["never@example.net"]:
            return "554 5.7.1 rejected"
        return await sink_data(server, session, envelope)

    site.sink.handler.handle_DATA = refuse_first  # type: ignore[method-assign]
    site.ask("later@example.net")
    (mail,) = site.mail(1)
    assert mail.rcpts == ["later@example.net"] and tries == ["later@example.net"] * 2
    site.ask("never@example.net")
    site.settle()
    assert tries.count("never@example.net") == 1 and len(site.sink.messages) == 1


def _slow_domain(site: LinkSite, delay: float) -> None:
    """The upstream takes ``delay`` seconds to answer 451 for every @slow.example (on its
    own loop, in its own thread: only that session waits)."""
    rcpt = site.sink.handler.handle_RCPT

    async def slow(server: Any, session: Any, envelope: Any, address: str,
                   options: list[str]) -> str:
        if address.endswith("@slow.example"):
            await asyncio.sleep(delay)
            return "451 4.4.1 slow.example does not answer"
        return await rcpt(server, session, envelope, address, options)

    site.sink.handler.handle_RCPT = slow  # type: ignore[method-assign]


def test_a_slow_domain_holds_up_no_other_companys_link(sqlite_site: LinkSite) -> None:
    """Eleven clients filling one company's link with addresses at a domain the upstream
    takes 5 s to refuse (451, tried again) once kept every company's link down: one
    queue, one sender sleeping between tries.  Another company's candidate now gets
    neither a 429 nor a wait behind them."""
    site = sqlite_site
    _slow_domain(site, 5.0)
    answers = [site.ask(f"c{c}.{n}@slow.example", source=f"127.0.3.{c + 1}")
               for c in range(11) for n in range(10)]
    assert {a.status for a in answers} <= {303, 429}  # acme's own share may fill
    kumo = "/j/" + CompanySigner([KEY]).token("kumo")
    assert site.ask("k@example.net", path=kumo, source="127.0.3.99").status == 303
    # The mail goes out while acme's are still being refused (site.mail waits 30 s).
    assert [m.rcpts for m in site.mail(1)] == [["k@example.net"]]
    # acme's own candidates at other domains are not held up by the slow one either.
    assert site.ask("fast@example.org", source="127.0.3.98").status == 303
    assert sorted(m.rcpts[0] for m in site.mail(2)) == ["fast@example.org", "k@example.net"]


def test_a_mail_is_given_up_when_its_time_is_out(sqlite_site: LinkSite,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    site = sqlite_site
    _slow_domain(site, 5.0)
    site.app[LINKS].mailer.budget = 1.0
    with caplog.at_level(logging.INFO, logger="career_relay"):
        assert site.ask("late@slow.example").status == 303
        site.settle()  # within 30 s: cut off at 1 s, not tried for 3 x 5 s
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "out of its 1 s" in logged and "given up" in logged
    assert site.sink.messages == []
