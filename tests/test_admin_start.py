""""Get started" (issue 14, item 4): the templates, the DNS records and their check, and
the test rejection through a real gateway to its verified arrival.

The site runs through aiohttp's test client over a real ledger (``tests.test_admin``'s
harness); the gateway is the real one on loopback (``GatewayThread``), its upstream the
capturing ``sink``; both share the configuration, so the ledger too.  DNS is a fake at
the resolver boundary (``admin_start.Start.resolver``): never the internet.  What rests
on the ledger (the offer the gateway recorded, its view, the pasted link's offer) runs
on both backends; the page, the check and the refusals on SQLite.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from career_relay.dkimkeys import generate_key, public_record
from consent_site.admin_start import START, PerUser
from consent_site.app import ADMIN_APP
from consent_site.dns_check import DnsFailure, Record, check
from tests.conftest import _PASSWORD_HASH, COMPANY_PASSWORD, ConfigMaker, GatewayThread, Sink
from tests.test_admin import PASSWORD, Admin, Reply

APPLICANT = "admin.private@example.net"  # the admin's address outside the company


@dataclass
class Setup:
    site: Admin
    gateway: GatewayThread
    sink: Sink
    dns: dict[str, list[str]]  # the fake resolver's zone: name -> TXT records
    dkim: str  # the record acme's key needs

    def resolver(self, name: str) -> list[str]:
        found = self.dns.get(name.lower().rstrip("."))
        if found == ["FAIL"]:
            raise DnsFailure("Timeout")
        return list(found or [])


def _setup(tmp_path: Path, make_config: ConfigMaker, sink: Sink, url: str) -> Iterator[Setup]:
    key = generate_key(tmp_path / "keys" / "acme.example.cr2026.pem")
    config = make_config(upstream_port=sink.port, ledger={"url": url}, companies=[
        {"id": "acme", "name": "株式会社アクメ", "domains": ["acme.example"],
         "smtp_username": "acme", "smtp_password_hash": _PASSWORD_HASH,
         "dkim_selector": "cr2026", "dkim_key_file": str(tmp_path / "keys" /
                                                         "acme.example.cr2026.pem")},
        {"id": "kumo", "name": "雲株式会社", "domains": ["kumo.example"]}])
    gateway = GatewayThread(config).start()
    site = Admin(config)
    site.add_user("hr@acme.example", "acme")
    site.add_user(APPLICANT, "acme")  # an admin whose login is outside the company's domain
    site.add_user("ops@relay.example", None)
    setup = Setup(site, gateway, sink, {}, public_record(key))
    site.client.server.app[ADMIN_APP][START].resolver = setup.resolver
    try:
        yield setup
    finally:
        site.close()
        gateway.stop()


@pytest.fixture
def start(tmp_path: Path, make_config: ConfigMaker, sink: Sink, backend_url: str
          ) -> Iterator[Setup]:
    yield from _setup(tmp_path, make_config, sink, backend_url)


@pytest.fixture
def sqlite_start(tmp_path: Path, make_config: ConfigMaker, sink: Sink) -> Iterator[Setup]:
    yield from _setup(tmp_path, make_config, sink, "")


def _textarea(page: Reply, ident: str) -> str:
    found = re.search(rf'<textarea[^>]*id="{ident}"[^>]*>(.*?)</textarea>', page.text, re.S)
    assert found, ident
    return html.unescape(found.group(1))


def _statuses(page: Reply) -> dict[tuple[str, str], str]:
    return {(k, n): s for k, n, s in re.findall(
        r'<tr data-kind="(\w+)" data-name="([^"]+)" data-status="(\w+)"', page.text)}


def _send(s: Setup, to: str = APPLICANT, password: str = COMPANY_PASSWORD) -> Reply:
    nonce = s.site.nonce("/admin/start")
    return s.site.post("/admin/start/test", {"csrf": nonce, "company": "acme", "to": to,
                                             "smtp_password": password})


def _verify(s: Setup, source: str, test: str = "") -> Reply:
    nonce = s.site.nonce("/admin/start")
    return s.site.post("/admin/start/verify", {"csrf": nonce, "company": "acme",
                                               "source": source, "test": test})


# -- the page ---------------------------------------------------------------------------------


def test_the_page_holds_the_templates_the_keys_and_the_records(sqlite_start: Setup) -> None:
    """SQLite only: rendering, no ledger rows."""
    s = sqlite_start
    s.site.login("hr@acme.example")
    page = s.site.get("/admin/start")
    assert page.status == 200 and 'id="tab-start" aria-current="page"' in page.text
    # Mail through the gateway: the marker, intact; HTML escaped inside the textarea.
    assert "[[CAREER_RELAY_LINK]]" in _textarea(page, "tpl-rejection-ja-txt")
    assert 'href="[[CAREER_RELAY_LINK]]"' in _textarea(page, "tpl-rejection-en-html")
    assert "&lt;a href=&#34;[[CAREER_RELAY_LINK]]&#34;" in page.text
    assert '<a href="[[CAREER_RELAY_LINK]]"' not in page.text
    # Mail sent elsewhere: this company's own link filled in, and the names.
    link = re.search(r'id="company-link">([^<]+)<', page.text)
    assert link and link.group(1).startswith("http://127.0.0.1:8080/j/")
    for name in ("company-link-ja-txt", "company-link-ja-html", "company-link-en-txt"):
        text = _textarea(page, f"tpl-{name}")
        assert link.group(1) in text and "${company_link}" not in text
        assert "株式会社サンプル人材" in text or "ja" not in name
    assert "${candidate_name}" in _textarea(page, "tpl-company-link-ja-txt")  # the ATS's field
    assert 'href="/admin/api-keys?company=acme"' in page.text
    # The DKIM record to publish is the public half of acme's configured key.
    assert s.dkim in page.text and "cr2026._domainkey.acme.example" in page.text
    assert "_dmarc.acme.example" in page.text
    # Without "check", nothing is looked up: no statuses.
    assert _statuses(page) == {}
    # Another company's page is a 404, as everywhere on the admin pages.
    assert s.site.get("/admin/start?company=kumo").status == 404


def test_the_dns_check_says_matching_different_or_missing(sqlite_start: Setup) -> None:
    """SQLite only: the check reads DNS (a fake), not the ledger."""
    s = sqlite_start
    s.site.login("hr@acme.example")
    s.dns.update({
        "cr2026._domainkey.acme.example": [s.dkim],
        "acme.example": ["v=spf1 include:_spf.google.com ~all", "google-site-verification=x"],
    })
    page = s.site.get("/admin/start?company=acme&check=dns")
    assert _statuses(page) == {("DKIM", "cr2026._domainkey.acme.example"): "ok",
                               ("SPF", "acme.example"): "ok",
                               ("DMARC", "_dmarc.acme.example"): "missing"}
    assert "DMARC レコードがありません" in page.text

    # An old key, two SPF records, a DMARC record: different, different, ok.
    s.dns.update({
        "cr2026._domainkey.acme.example": ["v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOC"],
        "acme.example": ["v=spf1 ip4:203.0.113.25 ~all", "v=spf1 include:x.example ~all"],
        "_dmarc.acme.example": ["v=DMARC1; p=quarantine"],
    })
    page = s.site.get("/admin/start?company=acme&check=dns")
    assert _statuses(page) == {("DKIM", "cr2026._domainkey.acme.example"): "different",
                               ("SPF", "acme.example"): "different",
                               ("DMARC", "_dmarc.acme.example"): "ok"}
    assert "署名鍵と違います" in page.text and "1件にまとめてください" in page.text

    # Nothing published, and a resolver that fails: missing, and "cannot check".
    s.dns.clear()
    s.dns["_dmarc.acme.example"] = ["FAIL"]
    page = s.site.get("/admin/start?company=acme&check=dns")
    assert _statuses(page) == {("DKIM", "cr2026._domainkey.acme.example"): "missing",
                               ("SPF", "acme.example"): "missing",
                               ("DMARC", "_dmarc.acme.example"): "error"}


def test_the_page_in_english(sqlite_start: Setup) -> None:
    """SQLite only: Japanese first; ?lang=en (and the forms' lang) for English."""
    s = sqlite_start
    s.site.login("hr@acme.example")
    assert 'id="lang-switch" lang="en">English<' in s.site.get("/admin/start").text
    page = s.site.get("/admin/start?company=acme&check=dns&lang=en")
    assert "<h1>Get started</h1>" in page.text and "has no DMARC record" in page.text
    assert "Missing" in page.text and "未公開" not in page.text
    nonce = s.site.nonce("/admin/start")
    own = s.site.post("/admin/start/test", {"csrf": nonce, "company": "acme", "lang": "en",
                                            "to": "hr@acme.example"})
    assert own.status == 400 and "Enter an address outside the company" in own.text


def test_a_revoked_key_and_a_split_record_are_read_as_dns_holds_them() -> None:
    """The comparison itself: p= is compared without white space; an empty p= is revoked."""
    record = Record("DKIM", "s._domainkey.a.example", "v=DKIM1; k=rsa; p=ABCD EFGH")
    zone = {"s._domainkey.a.example": ["v=DKIM1; k=rsa; p=ABCDEFGH"]}
    assert check([record], lambda n: zone.get(n, []))[0].status == "ok"
    zone["s._domainkey.a.example"] = ["v=DKIM1; p="]
    revoked = check([record], lambda n: zone.get(n, []))[0]
    assert revoked.status == "different" and revoked.fix == "fix_dkim_revoked"


# -- the test rejection -----------------------------------------------------------------------


def test_a_test_rejection_goes_through_the_gateway_and_is_verified(
        start: Setup, caplog: pytest.LogCaptureFixture) -> None:
    s = start
    s.dns["cr2026._domainkey.acme.example"] = [s.dkim]
    s.site.login(APPLICANT)
    with caplog.at_level(logging.INFO):
        sent = _send(s)
        assert sent.status == 303, sent.text
        received = s.sink.wait_for(1)[0]
    location = sent.headers["Location"]
    message_id = parse_qs(urlsplit(location).query)["test"][0]
    # Never the admin's address at INFO, from the site or the gateway (aiosmtpd's own
    # "mail.log" is held at WARNING by career_relay.logs in the product).
    assert [r.name for r in caplog.records if r.name == "career_relay.admin"]
    assert not [r.name for r in caplog.records if r.name != "mail.log"
                and r.levelno <= logging.INFO and APPLICANT in r.getMessage()]

    # The gateway injected a link and signed the copy the upstream got.
    assert received.rcpts == [APPLICANT]
    assert b"d=acme.example" in received.data and b"s=cr2026" in received.data
    assert message_id.encode() in received.data

    # The status: the ledger has the offer; the link is not opened yet.
    status = s.site.get(location.split("#")[0])
    assert 'id="status-offer" data-done="yes"' in status.text
    assert 'id="status-viewed" data-done="no"' in status.text

    # Pasted as received (the textarea sends CRLF or LF: either verifies).
    source = received.data.decode("utf-8").replace("\r\n", "\n")
    verdict = _verify(s, source, test=message_id)
    assert 'id="verdict" data-ok="yes"' in verdict.text, verdict.text
    assert 'id="status-offer" data-done="yes"' in verdict.text  # the status stays shown
    assert "リンク入りで、有効な署名" in verdict.text
    link = re.search(r'<a href="([^"]+)" id="verdict-open"', verdict.text)
    assert link and "/c/" in link.group(1)

    # The admin opens it: the candidate's page records the view, the status shows it.
    opened = s.site.get(urlsplit(html.unescape(link.group(1))).path)
    assert opened.status == 200
    status = s.site.get(location.split("#")[0])
    assert 'id="status-viewed" data-done="yes"' in status.text

    # A changed body no longer verifies; a key DNS does not hold does not either.
    tampered = _verify(s, source.rstrip("\n") + "\nP.S. added on the way\n")
    assert 'data-ok="no"' in tampered.text and "署名: 無効" in tampered.text
    s.dns.clear()
    unpublished = _verify(s, source)
    assert 'data-ok="no"' in unpublished.text and "署名: 無効" in unpublished.text

    # Seen as another company's (an operator's selector): not its signature, not its offer.
    s.site.login("ops@relay.example")
    nonce = s.site.nonce("/admin/start?company=kumo")
    other = s.site.post("/admin/start/verify", {"csrf": nonce, "company": "kumo",
                                                "source": source})
    assert 'data-ok="no"' in other.text and "署名: なし" in other.text
    assert "この会社の案内リンクではありません" in other.text


def test_mail_without_the_gateway_is_not_verified(sqlite_start: Setup) -> None:
    """SQLite only: a message that never passed the gateway has no signature and no link."""
    s = sqlite_start
    s.site.login("hr@acme.example")
    plain = ("From: hr@acme.example\nTo: x@example.net\nSubject: t\n"
             "Message-ID: <a@acme.example>\n\n[[CAREER_RELAY_LINK]]\n")
    verdict = _verify(s, plain)
    assert 'data-ok="no"' in verdict.text and "署名: なし" in verdict.text
    assert "career-relay のリンクがありません" in verdict.text


def test_the_test_form_refuses_what_cannot_work(sqlite_start: Setup) -> None:
    """SQLite only: each refusal sends nothing."""
    s = sqlite_start
    s.site.login("hr@acme.example")
    page = s.site.get("/admin/start")
    assert 'id="own-domain-note"' in page.text and 'id="smtp_password"' in page.text
    # Without the nonce: 403.
    assert s.site.post("/admin/start/test", {"company": "acme", "to": APPLICANT,
                                             "smtp_password": COMPANY_PASSWORD}).status == 403
    # The company's own domain gets no link: refused with the reason.
    own = _send(s, to="hr@acme.example")
    assert own.status == 400 and "社外で受け取れるアドレス" in own.text
    # No password where the gateway needs AUTH; a wrong one is the gateway's refusal.
    assert _send(s, password="").status == 400
    wrong = _send(s, password="wrong password")
    assert wrong.status == 502 and "535" in wrong.text
    assert "wrong password" not in wrong.text
    # Another company: 404.
    nonce = s.site.nonce("/admin/start")
    assert s.site.post("/admin/start/test", {"csrf": nonce, "company": "kumo",
                                             "to": APPLICANT}).status == 404
    assert s.sink.messages == []


def test_test_rejections_are_limited_per_admin(sqlite_start: Setup) -> None:
    """SQLite only: the limit is the site's memory."""
    s = sqlite_start
    s.site.client.server.app[ADMIN_APP][START].limit = PerUser(1, 3600)
    s.site.login("hr@acme.example", PASSWORD)
    assert _send(s).status == 303
    again = _send(s)
    assert again.status == 429 and int(again.headers["Retry-After"]) > 0
    assert len(s.sink.wait_for(1)) == 1
    s.site.login(APPLICANT)  # another admin has a limit of their own
    assert _send(s).status == 303


def test_the_system_resolver_maps_dnspython_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """``system_txt`` over a stand-in for dnspython's ``resolve`` (no network): the strings
    of one record joined, no name and no answer as [], a timeout as DnsFailure."""
    import dns.exception
    import dns.resolver

    from consent_site import dns_check

    class Rdata:
        strings = (b"v=DKIM1; k=rsa; p=AB", b"CD")

    def resolve(name: str, rdtype: str, **_: object) -> list[Rdata]:
        if name == "gone.example":
            raise dns.resolver.NXDOMAIN()
        if name == "slow.example":
            raise dns.exception.Timeout()
        return [Rdata()]

    monkeypatch.setattr(dns_check.dns.resolver, "resolve", resolve)
    assert dns_check.system_txt("s._domainkey.a.example") == ["v=DKIM1; k=rsa; p=ABCD"]
    assert dns_check.system_txt("gone.example") == []
    with pytest.raises(DnsFailure):
        dns_check.system_txt("slow.example")
    dnsfunc = dns_check.dkim_dnsfunc(dns_check.system_txt)
    assert dnsfunc(b"s._domainkey.a.example.") == b"v=DKIM1; k=rsa; p=ABCD"
    assert dnsfunc(b"slow.example.") is None
