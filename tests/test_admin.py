"""The admin pages through aiohttp's test client (issue 5): login, roles, pages, POSTs, CSV.

The site runs over a real ledger.  Its history is written the way the
product writes it: offers through the ledger, decisions through
``career_relay.consent.Consents``, deliveries through ``ConsentLedger``
(``claim_due`` + ``delivered``), so qualified forwards and credits are minted
by the real rules.  Times that must pass (a session's expiry, a lock-out's
end) are moved in the tables, never waited for.

What rests on the ledger (admin logins and sessions, the admin commands, the records
the reviews and CSV exports read) runs on both backends (``admin``: ``backend_url``);
what is the site's alone (HTTP, CSRF, throttling, who sees what, rendering) runs on
SQLite (``sqlite_admin``), each such test saying so.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from career_relay import settings as settings_mod
from career_relay.consent import Client, Consents, Notice
from career_relay.errors import LedgerUnavailable
from career_relay.ledger import (
    AdminUsers,
    Book,
    ConsentLedger,
    Offer,
    Referrals,
    Rules,
    open_configured,
    reports,
)
from consent_site.app import create_app
from consent_site.login_throttle import FREE_PER_ADDRESS
from tests.conftest import ConfigMaker, run_cli

PHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 "
         "(KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1")
PASSWORD = "admin password 2026"
XSS = "<script>alert('x')</script>"
COMPANIES = [
    {"id": "acme", "name": "株式会社アクメ", "domains": ["acme.example"]},
    {"id": "kumo", "name": "雲株式会社", "domains": ["kumo.example"]},
]
GET_PAGES = ("/admin/", "/admin/start", "/admin/forwards", "/admin/credits", "/admin/reviews",
             "/admin/api-keys",
             "/admin/charts/funnel.svg", "/admin/charts/monthly.svg", "/admin/charts/jobs.svg",
             "/admin/charts/channels.svg", "/admin/export/report.csv",
             "/admin/export/forwards.csv", "/admin/export/provisions.csv")


class Reply:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.text = body.decode("utf-8", "replace")

    def csrf(self) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.text)
        assert found, "no CSRF nonce on the page"
        return found.group(1)


class Admin:
    """A site on a real ledger, with helpers to write its history and to log in."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.settings = settings_mod.load(config)
        self.rules = Rules.from_settings(self.settings)
        self.loop = asyncio.new_event_loop()
        self.client: TestClient[web.Request, web.Application] = TestClient(
            TestServer(create_app(self.settings)), loop=self.loop)
        self.loop.run_until_complete(self.client.start_server())
        self.notice = Notice.of("通知文 notice text", "ja")
        self._n = 0
        # The history's writer: a ledger of its own beside the site's (another process).
        self._at: dt.datetime | None = None
        self.ledger = open_configured(self.settings,
                                      clock=lambda: self._at or dt.datetime.now(dt.UTC))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()
        self.ledger.close()

    # -- HTTP -------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Reply:
        async def go() -> Reply:
            async with self.client.request(method, path, allow_redirects=False,
                                           **kwargs) as r:
                return Reply(r.status, r.headers, await r.read())

        return self.loop.run_until_complete(go())

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, data: dict[str, str], **kwargs: Any) -> Reply:
        return self.request("POST", path, data=data, **kwargs)

    def cookie(self, name: str = "cr_admin") -> str | None:
        for c in self.client.session.cookie_jar:
            if c.key == name:
                return str(c.value)
        return None

    def add_user(self, email: str, company: str | None, password: str = PASSWORD) -> None:
        AdminUsers(self.ledger).add(email, password, company)

    def login(self, email: str, password: str = PASSWORD, *, fresh: bool = True) -> Reply:
        if fresh:
            self.client.session.cookie_jar.clear()
        page = self.get("/admin/login")
        return self.post("/admin/login", {"csrf": page.csrf(), "email": email,
                                          "password": password})

    def nonce(self, path: str = "/admin/") -> str:
        return self.get(path).csrf()

    def login_from(self, address: str, email: str, password: str = PASSWORD) -> Reply:
        """A login from another client address on this machine (127.0.0.2, ...)."""
        async def go() -> Reply:
            url = self.client.make_url("/admin/login")
            connector = aiohttp.TCPConnector(local_addr=(address, 0))
            jar = aiohttp.CookieJar(unsafe=True)  # cookies from an IP-address host
            async with aiohttp.ClientSession(connector=connector, cookie_jar=jar) as session:
                async with session.get(url) as page:
                    form = Reply(page.status, page.headers, await page.read())
                async with session.post(url, allow_redirects=False, data={
                        "csrf": form.csrf(), "email": email, "password": password}) as r:
                    return Reply(r.status, r.headers, await r.read())

        return self.loop.run_until_complete(go())

    # -- the ledger's history ---------------------------------------------------------------

    def offer(self, company: str = "acme", *, age: float = 86400, job: str | None = "経理",
              channel: str | None = "自社サイト", recipient: str | None = None) -> Offer:
        self._n += 1
        self._at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age)
        try:
            return self.ledger.record_offer(company, f"<m{self._n}@{company}.example>",
                                            recipient or f"cand{self._n}@example.net",
                                            job=job, channel=channel)
        finally:
            self._at = None

    def consents(self) -> Consents:
        return Consents(self.settings, ConsentLedger(self.ledger, self.rules))

    def accept(self, offer: Offer, *, name: str = "山田 花子", ua: str = PHONE,
               email: str | None = None) -> str:
        consents = self.consents()
        consents.shown(offer, self.notice)
        receipt = consents.accept(offer, self.notice,
                                  {"name": name, "email": email or offer.recipient},
                                  False, Client(ua, "203.0.113.7"))
        return receipt.id

    def erase(self, offer: Offer) -> None:
        self.consents().erase(offer, "ja", Client(PHONE, "203.0.113.7"))

    def deliver_all(self) -> int:
        store = ConsentLedger(self.ledger, self.rules)
        due = store.claim_due(1000, 60)
        for f in due:
            store.delivered(f.id)
        return len(due)

    def qualify(self, count: int, company: str = "acme", **offer: Any) -> list[Offer]:
        offers = [self.offer(company, **offer) for _ in range(count)]
        for o in offers:
            self.accept(o)
        self.deliver_all()
        return offers

    def rows(self, table: str, where: str = "TRUE", *args: Any) -> list[dict[str, Any]]:
        with self.ledger.read() as conn:
            cursor = conn.execute(f"SELECT * FROM {table} WHERE {where}", args)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def execute(self, sql: str, *args: Any) -> None:
        with self.ledger.write() as conn:
            conn.execute(sql, args)

    def report(self, company: str = "acme", **period: dt.date | None) -> dict[str, Any]:
        when = reports.period(period.get("since"), period.get("until"),
                              dt.datetime.now(dt.UTC).date())
        return reports.report(self.ledger, [company], when, self.settings.ledger.credit_every,
                              details=True)[0]


def _harness(make_config: ConfigMaker, url: str) -> Iterator[Admin]:
    harness = Admin(make_config(site={"review_window": 30}, ledger={"url": url},
                                companies=COMPANIES))
    harness.add_user("ops@relay.example", None)
    harness.add_user("hr@acme.example", "acme")
    harness.add_user("hr@kumo.example", "kumo")
    yield harness
    harness.close()


@pytest.fixture
def admin(make_config: ConfigMaker, backend_url: str) -> Iterator[Admin]:
    """The site and its users on each backend in turn."""
    yield from _harness(make_config, backend_url)


@pytest.fixture
def sqlite_admin(make_config: ConfigMaker) -> Iterator[Admin]:
    """The site and its users on a SQLite ledger, for what is the site's alone."""
    yield from _harness(make_config, "")


def _login_error(reply: Reply) -> str:
    found = re.search(r'id="login-error"[^>]*>([^<]+)<', reply.text)
    return found.group(1) if found else ""


def _csv(reply: Reply) -> list[list[str]]:
    assert reply.body.startswith("\ufeff".encode()), "no BOM: Excel would read CP932"
    text = reply.body.decode("utf-8")[1:]
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")  # RFC 4180 line ends
    return list(csv.reader(io.StringIO(text, newline="")))


# -- logging in -----------------------------------------------------------------------------


def test_every_page_needs_a_login(sqlite_admin: Admin) -> None:
    """SQLite-only: the site's HTTP answers."""
    admin = sqlite_admin
    for path in GET_PAGES:
        reply = admin.get(path)
        assert reply.status == 303 and reply.headers["Location"] == "/admin/login", path
    for path in ("/admin/logout", "/admin/credits/redeem", "/admin/credits/request",
                 "/admin/reviews/rc_x"):
        assert admin.post(path, {"csrf": "x"}).status == 403, path
    page = admin.get("/admin/login")
    assert page.status == 200 and 'name="password"' in page.text
    assert page.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "<script" not in page.text


def test_login_opens_a_server_side_session(admin: Admin) -> None:
    reply = admin.login("HR@acme.example ")  # case and spaces as people type them
    assert reply.status == 303 and reply.headers["Location"] == "/admin/"
    cookie = reply.headers["Set-Cookie"]
    assert cookie.startswith("cr_admin=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    value = admin.cookie()
    assert value and len(value) >= 40
    stored = [r["id"] for r in admin.rows("admin_sessions")]
    assert len(stored) == 1 and value not in stored  # the table holds its hash only
    page = admin.get("/admin/")
    assert page.status == 200 and "hr@acme.example" in page.text
    assert page.headers["Cache-Control"] == "no-store"
    assert admin.get("/admin/login").status == 303  # logged in already


def test_the_session_cookie_is_host_bound_and_secure_over_https(
        make_config: ConfigMaker) -> None:
    """SQLite-only: the site's cookies."""
    harness = Admin(make_config(site={"public_url": "https://consent.example"},
                                companies=COMPANIES))
    try:
        harness.add_user("ops@relay.example", None)
        page = harness.get("/admin/login")
        nonce = page.csrf()
        csrf_cookie = page.headers["Set-Cookie"]
        assert csrf_cookie.startswith("__Host-cr_csrf=") and "Secure" in csrf_cookie
        # The browser would send the Secure cookie back over HTTPS; the test client over
        # plain HTTP does not, so hand it back explicitly.
        value = csrf_cookie.split(";")[0].split("=", 1)[1]
        reply = harness.post("/admin/login", {"csrf": nonce, "email": "ops@relay.example",
                                              "password": PASSWORD},
                             headers={"Cookie": f"__Host-cr_csrf={value}"})
        assert reply.status == 303
        cookie = reply.headers["Set-Cookie"]
        assert cookie.startswith("__Host-cr_admin=")
        assert "Secure" in cookie and "Path=/" in cookie and "HttpOnly" in cookie
        assert "Strict-Transport-Security" in reply.headers
    finally:
        harness.close()


def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(sqlite_admin: Admin) -> None:
    """SQLite-only: the login page's answers."""
    admin = sqlite_admin
    wrong = admin.login("hr@acme.example", "not the password")
    unknown = admin.login("nobody@acme.example", "not the password")
    assert wrong.status == unknown.status == 403
    assert _login_error(wrong) and _login_error(wrong) == _login_error(unknown)
    assert admin.rows("admin_sessions") == []
    assert admin.get("/admin/").status == 303


@pytest.mark.parametrize("email", ["hr@acme.example", "nobody@acme.example"])
def test_a_flood_from_one_address_is_slowed_and_never_locks_the_owner_out(
        sqlite_admin: Admin, email: str) -> None:
    """SPEC 6: per-address throttling with growing delays, no lock-out.  After five
    failures this address waits (429, Retry-After) before any password is checked, with
    the same words for known and unknown emails; the owner elsewhere logs in at once.
    SQLite-only: the site's throttle (in memory)."""
    admin = sqlite_admin
    replies = [admin.login(email, f"guess {i}") for i in range(FREE_PER_ADDRESS)]
    assert [r.status for r in replies] == [403] * FREE_PER_ADDRESS
    slowed = admin.login(email, PASSWORD)  # even the right password waits its turn
    assert slowed.status == 429 and int(slowed.headers["Retry-After"]) >= 1
    assert "秒後にもう一度お試しください" in _login_error(slowed)
    assert admin.rows("admin_sessions") == []
    assert admin.login_from("127.0.0.2", "hr@acme.example").status == 303  # the owner
    assert admin.rows("admin_login_failures") == []  # a flood writes nothing to the ledger


def test_the_wait_is_the_same_for_known_and_unknown_emails(sqlite_admin: Admin) -> None:
    """SQLite-only: the site's throttle (in memory)."""
    admin = sqlite_admin
    for i in range(FREE_PER_ADDRESS):
        admin.login("hr@acme.example", f"guess {i}")
    known = admin.login("hr@acme.example", "x")
    unknown = admin.login("nobody@acme.example", "x")
    assert known.status == unknown.status == 429
    assert _login_error(known) == _login_error(unknown)


def test_a_login_form_nonce_serves_one_post(sqlite_admin: Admin) -> None:
    """A script cannot fetch one form and replay its nonce for a thousand guesses.
    SQLite-only: the site's CSRF guard."""
    admin = sqlite_admin
    page = admin.get("/admin/login")
    first = admin.post("/admin/login", {"csrf": page.csrf(), "email": "hr@acme.example",
                                        "password": "guess"})
    assert first.status == 403 and _login_error(first)
    again = admin.post("/admin/login", {"csrf": page.csrf(), "email": "hr@acme.example",
                                        "password": PASSWORD})
    assert again.status == 403 and not _login_error(again)  # the guard's 403, no check
    assert admin.login("hr@acme.example").status == 303  # a fresh form works


def test_a_good_login_forgets_the_accounts_failures(sqlite_admin: Admin) -> None:
    """SQLite-only: the site's throttle (in memory)."""
    admin = sqlite_admin
    for i in range(3):
        admin.login_from("127.0.0.3", "hr@acme.example", f"guess {i}")
    assert admin.login("hr@acme.example").status == 303
    page = admin.get("/admin/")
    assert page.status == 200


def test_logout_ends_the_session_for_good(admin: Admin) -> None:
    admin.login("hr@acme.example")
    value = admin.cookie()
    reply = admin.post("/admin/logout", {"csrf": admin.nonce()})
    assert reply.status == 303 and reply.headers["Location"] == "/admin/login?bye=1"
    assert admin.rows("admin_sessions") == []
    assert "ログアウトしました" in admin.get("/admin/login?bye=1").text
    # The old cookie, replayed, opens nothing.
    assert admin.get("/admin/", cookies={"cr_admin": value or ""}).status == 303


def test_revoke_sessions_and_remove_user_from_the_cli(admin: Admin) -> None:
    """An operator ends a lost laptop's session, or a leaver's login, from the CLI: the
    cookie the browser still holds opens nothing afterwards."""
    admin.login("hr@acme.example")
    acme = admin.cookie() or ""
    admin.login("hr@kumo.example")
    kumo = admin.cookie() or ""
    assert admin.get("/admin/", cookies={"cr_admin": acme}).status == 200
    config = str(admin.config)
    ended = run_cli("admin", "revoke-sessions", "--email", "hr@acme.example", "--config", config)
    assert ended.returncode == 0 and ended.stdout.startswith("1 admin session(s) ended")
    assert admin.get("/admin/", cookies={"cr_admin": acme}).status == 303
    assert admin.get("/admin/", cookies={"cr_admin": kumo}).status == 200  # not everyone's
    assert admin.login("hr@acme.example").status == 303  # may log in again

    gone = run_cli("admin", "remove-user", "--email", "hr@kumo.example", "--config", config)
    assert gone.returncode == 0, gone.stderr
    assert admin.get("/admin/", cookies={"cr_admin": kumo}).status == 303
    assert "hr@kumo.example" not in [u.email for u in AdminUsers(admin.ledger).users()]
    again = run_cli("admin", "remove-user", "--email", "hr@kumo.example", "--config", config)
    assert again.returncode == 1 and "no admin login" in again.stderr
    assert again.stderr.count("\n") == 1  # one line, no traceback

    everyone = run_cli("admin", "revoke-sessions", "--all", "--config", config)
    assert everyone.returncode == 0 and admin.rows("admin_sessions") == []
    usage = run_cli("admin", "revoke-sessions", "--config", config)
    assert usage.returncode == 2 and "--email E or --all" in usage.stderr


def test_reset_password_from_the_cli(admin: Admin) -> None:
    """Issue 14 item 5: a lost admin password had no way back.  The operator sets a new
    one from the CLI; the old password and every session of that login stop working, other
    logins are untouched, and the new password is never printed."""
    admin.login("hr@acme.example")
    old_session = admin.cookie() or ""
    admin.login("hr@kumo.example")
    kumo = admin.cookie() or ""
    config = str(admin.config)
    new = "新しいパスワード 2026 reset"
    reset = run_cli("admin", "reset-password", "--email", "HR@acme.example", "--password-stdin",
                    "--config", config, stdin=new + "\n")
    assert reset.returncode == 0, reset.stderr
    assert reset.stdout.startswith("admin login HR@acme.example: password changed; 1 session")
    assert new not in reset.stdout + reset.stderr
    assert admin.get("/admin/", cookies={"cr_admin": old_session}).status == 303
    assert admin.get("/admin/", cookies={"cr_admin": kumo}).status == 200  # not everyone's
    assert admin.login("hr@acme.example").status != 303  # the old password is refused
    assert admin.login("hr@acme.example", new).status == 303
    assert admin.get("/admin/").status == 200
    missing = run_cli("admin", "reset-password", "--email", "nobody@acme.example",
                      "--password-stdin", "--config", config, stdin="x\n")
    assert missing.returncode == 1 and "no admin login for nobody@acme.example" in missing.stderr
    assert missing.stderr.count("\n") == 1  # one line, no traceback
    empty = run_cli("admin", "reset-password", "--email", "hr@acme.example", "--password-stdin",
                    "--config", config, stdin="\n")
    assert empty.returncode == 1 and admin.login("hr@acme.example", new).status == 303
    assert run_cli("admin", "reset-password", "--config", config).returncode == 2  # no --email


def test_an_expired_session_opens_nothing(admin: Admin) -> None:
    admin.login("hr@acme.example")
    assert admin.get("/admin/").status == 200
    stored = admin.rows("admin_sessions")[0]
    assert (dt.datetime.fromisoformat(stored["expires"].replace("Z", "+00:00"))
            - dt.datetime.fromisoformat(stored["created"].replace("Z", "+00:00"))
            ) == dt.timedelta(hours=12)
    admin.execute("UPDATE admin_sessions SET expires = '2000-01-01T00:00:00Z'")
    assert admin.get("/admin/").status == 303
    assert admin.get("/admin/export/provisions.csv").status == 303


# -- CSRF -----------------------------------------------------------------------------------


def test_every_post_needs_the_csrf_nonce(sqlite_admin: Admin) -> None:
    """SQLite-only: the site's CSRF guard."""
    admin = sqlite_admin
    admin.qualify(10)
    held = admin.accept(admin.offer(age=1))
    page = admin.get("/admin/login")
    creds = {"email": "ops@relay.example", "password": PASSWORD}
    assert admin.post("/admin/login", creds).status == 403
    assert admin.post("/admin/login", {**creds, "csrf": "forged"}).status == 403
    assert admin.rows("admin_sessions") == []
    assert admin.post("/admin/login", {**creds, "csrf": page.csrf()}).status == 303
    for path, data in (("/admin/credits/redeem", {"company": "acme"}),
                       (f"/admin/reviews/{held}", {"verdict": "approve"}),
                       ("/admin/logout", {})):
        assert admin.post(path, data).status == 403, path
        assert admin.post(path, {**data, "csrf": "forged"}).status == 403, path
    assert admin.rows("redemptions") == [] and admin.rows("reviews") == []
    assert len(admin.rows("admin_sessions")) == 1  # the logout without a nonce did nothing
    # A nonce is bound to its session: one from before a new login is refused.
    old = admin.nonce()
    admin.login("ops@relay.example")
    assert admin.post("/admin/credits/redeem", {"csrf": old, "company": "acme"}).status == 403
    assert admin.rows("redemptions") == []


# -- who sees what --------------------------------------------------------------------------


def test_a_company_user_sees_only_its_own_company(sqlite_admin: Admin) -> None:
    """SQLite-only: the site's access rules."""
    admin = sqlite_admin
    admin.qualify(10, "kumo", job="秘密の職種")
    kumo_held = admin.accept(admin.offer("kumo", age=1), name="雲の候補者")
    acme_held = admin.accept(admin.offer("acme", age=1), name="アクメの候補者")
    admin.login("hr@acme.example")
    for path in GET_PAGES:
        assert admin.get(f"{path}?company=kumo").status == 404, path
        assert admin.get(f"{path}?company=nope").status == 404, path
        assert admin.get(path).status == 200, path
    nonce = admin.nonce()
    assert admin.post("/admin/credits/redeem", {"csrf": nonce, "company": "kumo"}).status == 404
    assert admin.post(f"/admin/reviews/{kumo_held}",
                      {"csrf": nonce, "verdict": "approve"}).status == 404
    # Reviews are the operator's: a company gains a credit from each approval.
    assert admin.post(f"/admin/reviews/{acme_held}",
                      {"csrf": nonce, "verdict": "approve"}).status == 403
    assert admin.rows("redemptions") == [] and admin.rows("reviews") == []
    # Its own pages name nothing of the other company.
    for path in ("/admin/", "/admin/forwards", "/admin/reviews", "/admin/credits"):
        text = admin.get(path).text
        assert "kumo" not in text and "雲" not in text and "秘密の職種" not in text, path
    assert 'id="company"' not in admin.get("/admin/").text  # no company selector
    assert "アクメの候補者" in admin.get("/admin/reviews").text
    assert "approve-" not in admin.get("/admin/reviews").text


def test_an_operator_sees_every_company(sqlite_admin: Admin) -> None:
    """SQLite-only: the site's access rules."""
    admin = sqlite_admin
    admin.qualify(10, "kumo")
    admin.login("ops@relay.example")
    page = admin.get("/admin/")
    assert page.status == 200 and 'id="company"' in page.text
    assert '<option value="kumo"' in page.text and '<option value="acme" selected' in page.text
    for path in GET_PAGES:
        assert admin.get(f"{path}?company=kumo").status == 200, path
        assert admin.get(f"{path}?company=nope").status == 404, path
    kumo = admin.get("/admin/?company=kumo")
    assert re.search(r'id="credits-available">1<', kumo.text)
    assert admin.get("/admin/?company=acme&since=2026-13-01").status == 400


# -- the dashboard --------------------------------------------------------------------------


def _build_history(admin: Admin) -> None:
    admin.qualify(12, job="経理", channel="求人媒体")
    admin.qualify(3, job="営業", channel="自社サイト")
    declined = admin.offer(job="営業")
    admin.consents().decline(declined, admin.notice, Client(PHONE, "203.0.113.7"))
    admin.offer(job=None, channel=None)  # no decision
    own = admin.offer(recipient="staff@acme.example")
    admin.accept(own)
    admin.accept(admin.offer(age=1))  # held for review
    admin.deliver_all()
    admin.ledger.count("acme", "not_injected")
    Book(admin.ledger, admin.rules).redeem("acme", "test")


def test_the_dashboard_shows_the_report_s_numbers(sqlite_admin: Admin) -> None:
    """SQLite-only: the page (the report's queries: test_ledger_rules, on both)."""
    admin = sqlite_admin
    _build_history(admin)
    expected = admin.report()
    assert expected["qualified_forwards"] == 15 and expected["under_review"] == 1
    admin.login("hr@acme.example")
    page = admin.get("/admin/")
    assert page.status == 200
    shown = dict(re.findall(r'<tr data-field="(\w+)"><th scope="row">[^<]*<code>\w+</code>'
                            r'</th><td class="num">([^<]+)</td>', page.text))
    flat = reports.flat(expected)
    # The outcome fields say "fewer than 5" in words (no outcome reported here: a group of
    # none is one of fewer than 5 too); every other field is its number.
    words = {"fewer than 5": "5人未満"}
    assert shown == {f: words.get(str(flat[f]), str(flat[f])) for f in reports.COLUMNS[3:]}
    funnel = dict(re.findall(r'<tr data-field="(\w+)"><th scope="row">[^<]*</th>'
                             r'<td class="num">(\d+)</td>', page.text))
    for field in ("rejections", "offers", "views", "accepted", "qualified_forwards",
                  "credits_earned"):
        assert funnel[field] == str(expected[field]), field
    assert re.search(rf'id="credits-available">{expected["credits_available"]}<', page.text)
    assert re.search(rf'id="progress">{expected["progress_to_next_credit"]}<', page.text)
    assert f'id="median-hours">{expected["decision_hours"]["median"]}<' in page.text
    for row in expected["by_job"]:
        assert f'{row["name"] or "（未設定）"}</th><td class="num">{row["offers"]}</td>' \
               f'<td class="num">{row["accepted"]}</td>' in page.text
    for month in expected["monthly"]:
        assert f'<th scope="row">{month["month"]}</th><td class="num">{month["offers"]}' \
               in page.text
    for name in ("funnel", "monthly", "jobs", "channels"):
        assert f'src="/admin/charts/{name}.svg?company=acme"' in page.text
    # A period: the same numbers as the report for that period.
    today = dt.datetime.now(dt.UTC).date()
    later = admin.get(f"/admin/?since={today + dt.timedelta(days=1)}"
                      f"&until={today + dt.timedelta(days=2)}")
    assert re.search(r'<tr data-field="offers"><th scope="row">[^<]*<code>offers</code>'
                     r'</th><td class="num">0</td>', later.text)


def test_the_charts_are_svg_without_script(sqlite_admin: Admin) -> None:
    """SQLite-only: the charts' rendering."""
    admin = sqlite_admin
    _build_history(admin)
    admin.login("hr@acme.example")
    for name in ("funnel", "monthly", "jobs", "channels"):
        chart = admin.get(f"/admin/charts/{name}.svg")
        assert chart.status == 200, name
        assert chart.headers["Content-Type"].startswith("image/svg+xml")
        csp = chart.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp
        assert chart.headers["Cache-Control"] == "no-store"
        assert "<svg" in chart.text and "<script" not in chart.text.lower()
    assert "経理" in admin.get("/admin/charts/jobs.svg").text
    assert "求人媒体" in admin.get("/admin/charts/channels.svg").text
    assert admin.get("/admin/charts/other.svg").status == 404


@pytest.mark.parametrize("zone, offset", [("Asia/Tokyo", 9), ("UTC", 0),
                                           ("America/Sao_Paulo", -3)])
def test_every_admin_page_shows_its_times_in_the_configured_zone_and_names_it(
        make_config: ConfigMaker, zone: str, offset: int) -> None:
    """Issue 14 item 5: the forwards and reviews showed Japan time, the credits page UTC
    stamps.  Now one zone, site.time_zone, on every page, named on each."""
    config = make_config(companies=COMPANIES, site={"time_zone": zone, "review_window": 30})
    admin = Admin(config)
    try:
        admin.add_user("ops@relay.example", None)
        admin.qualify(10)  # forwards delivered, one credit minted
        admin.accept(admin.offer(age=1))  # held for review: the window
        admin.login("ops@relay.example")
        (credit,) = admin.rows("credits")
        minted = dt.datetime.strptime(credit["created"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=dt.UTC)
        shown = (minted + dt.timedelta(hours=offset)).strftime("%Y-%m-%d %H:%M")
        credits = admin.get("/admin/credits")
        assert f"<td>{shown}</td>" in credits.text
        assert credit["created"] not in credits.text  # no raw UTC stamp
        (held,) = [r for r in admin.rows("receipts") if r["review"]]
        decided = dt.datetime.strptime(held["created"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=dt.UTC)
        reviews = admin.get("/admin/reviews")
        assert f"<td>{(decided + dt.timedelta(hours=offset)):%Y-%m-%d %H:%M}</td>" in reviews.text
        forwards = admin.get("/admin/forwards")
        first = admin.rows("forwards")[0]
        made = dt.datetime.strptime(first["created"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=dt.UTC)
        assert f'<td class="when">{(made + dt.timedelta(hours=offset)):%Y-%m-%d %H:%M}</td>' \
            in forwards.text
        for page in (admin.get("/admin/"), credits, reviews, forwards):
            label = re.search(r'id="time-zone">[^<]*', page.text)
            assert label and zone in label.group(0), page.text[:200]
            assert "日本時間" not in page.text and "UTC（台帳の記録どおり）" not in page.text
    finally:
        admin.close()


def test_an_unknown_time_zone_is_a_configuration_error(make_config: ConfigMaker) -> None:
    config = make_config(site={"time_zone": "Asia/Nowhere"})
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 1 and "site.time_zone" in result.stderr
    assert "Asia/Nowhere" in result.stderr


# -- credits and reviews --------------------------------------------------------------------


def test_redeeming_a_credit(sqlite_admin: Admin) -> None:
    """SQLite-only: the page (redemption: test_ledger_rules, on both)."""
    admin = sqlite_admin
    admin.qualify(10)
    admin.login("hr@acme.example")
    page = admin.get("/admin/credits")
    assert re.search(r'id="credits-available">1<', page.text) and 'id="redeem"' in page.text
    reply = admin.post("/admin/credits/redeem", {"csrf": page.csrf(), "company": "acme",
                                                 "note": "経理職の紹介 <b>春</b>"})
    assert reply.status == 303
    assert reply.headers["Location"] == "/admin/credits?company=acme&redeemed=1"
    (redemption,) = admin.rows("redemptions")
    assert redemption["by"] == "hr@acme.example" and redemption["note"] == "経理職の紹介 <b>春</b>"
    after = admin.get(reply.headers["Location"])
    assert "1件のクレジットを利用しました" in after.text
    assert re.search(r'id="credits-available">0<', after.text)
    assert "経理職の紹介 &lt;b&gt;春&lt;/b&gt;" in after.text
    assert 'id="none-available"' in after.text
    # None left: refused, clearly, and nothing recorded.
    again = admin.post("/admin/credits/redeem", {"csrf": after.csrf(), "company": "acme"})
    assert again.status == 409
    assert "利用できるクレジットがありません" in again.text
    assert len(admin.rows("redemptions")) == 1
    assert Book(admin.ledger, admin.rules).verify()[1] is None


def test_an_operator_approves_and_rejects_held_decisions(admin: Admin) -> None:
    admin.qualify(9)
    first = admin.accept(admin.offer(age=1), name="保留 一郎")
    second = admin.accept(admin.offer(age=1), name="保留 二郎")
    scanner = admin.accept(admin.offer(), name="保留 三郎", ua="curl/8.5")
    admin.deliver_all()  # held forwards are not due
    admin.login("ops@relay.example")
    page = admin.get("/admin/reviews")
    for receipt in (first, second, scanner):
        assert f'id="approve-{receipt}"' in page.text
    assert "送信直後の操作" in page.text and "スキャナーらしい利用者" in page.text
    reply = admin.post(f"/admin/reviews/{first}", {"csrf": page.csrf(), "verdict": "approve"})
    assert reply.status == 303
    assert reply.headers["Location"] == "/admin/reviews?company=acme&done=approve"
    reply = admin.post(f"/admin/reviews/{second}", {"csrf": page.csrf(), "verdict": "reject"})
    assert reply.status == 303
    verdicts = {r["receipt_id"]: (r["decision"], r["by"]) for r in admin.rows("reviews")}
    assert verdicts == {first: ("approve", "ops@relay.example"),
                        second: ("reject", "ops@relay.example")}
    # Reviewed once only (409); an unknown receipt is not found.
    assert admin.post(f"/admin/reviews/{first}",
                      {"csrf": page.csrf(), "verdict": "reject"}).status == 409
    assert admin.post("/admin/reviews/rc_nope",
                      {"csrf": page.csrf(), "verdict": "approve"}).status == 404
    assert admin.post(f"/admin/reviews/{scanner}",
                      {"csrf": page.csrf(), "verdict": "maybe"}).status == 400
    # The approved forward goes out and is the 10th qualified: a credit.
    assert admin.deliver_all() == 1
    assert admin.report()["credits_earned"] == 1
    left = admin.get("/admin/reviews")
    assert "保留 三郎" in left.text and "保留 一郎" not in left.text


def test_requesting_a_referral_from_a_credit(admin: Admin) -> None:
    """SPEC 11 on the credits page: a credit's request, its states and dates, on both
    backends; POST with the nonce; the company's own credits only."""
    admin.qualify(10)
    admin.login("hr@acme.example")
    page = admin.get("/admin/credits")
    (credit,) = admin.rows("credits")
    assert 'class="request-referral"' in page.text and "まだ紹介の依頼はありません" in page.text
    form = {"company": "acme", "credit": credit["id"], "note": "営業職 <b>1名</b>"}
    assert admin.post("/admin/credits/request", form).status == 403  # no nonce
    assert admin.post("/admin/credits/request", {**form, "company": "kumo",
                                                 "csrf": page.csrf()}).status == 404
    reply = admin.post("/admin/credits/request", {**form, "csrf": page.csrf()})
    assert reply.status == 303
    assert reply.headers["Location"] == "/admin/credits?company=acme&requested=1"
    (asked,) = admin.rows("credit_requests")
    assert (asked["credit_id"], asked["by"], asked["agency"], asked["note"]) == (
        credit["id"], "hr@acme.example", "default", "営業職 <b>1名</b>")
    (notice,) = admin.rows("agency_notices")
    assert notice["id"] == asked["id"] and notice["delivered"] is None
    after = admin.get(reply.headers["Location"])
    assert "紹介会社に紹介を依頼しました" in after.text and asked["id"] in after.text
    assert 'data-state="requested"' in after.text and "依頼中" in after.text
    assert "営業職 &lt;b&gt;1名&lt;/b&gt;" in after.text
    assert 'class="request-referral"' not in after.text  # one open request per credit
    again = admin.post("/admin/credits/request", {**form, "csrf": after.csrf()})
    assert again.status == 409 and "すでに紹介を依頼中" in again.text
    assert len(admin.rows("credit_requests")) == 1
    Referrals(admin.ledger).settle_request(asked["id"], "default", "fulfilled", "紹介しました")
    done = admin.get("/admin/credits")
    assert 'data-state="fulfilled"' in done.text and "紹介済み" in done.text
    assert "紹介しました" in done.text and "agency:default" in done.text
    dashboard = admin.get("/admin/")
    assert 'id="recovered-value">¥0<' in dashboard.text and "companies.referral_value" in \
        dashboard.text
    assert 'data-field="credits_fulfilled"' in dashboard.text
    assert Book(admin.ledger, admin.rules).verify()[1] is None


# -- CSV ------------------------------------------------------------------------------------


def test_the_report_csv(sqlite_admin: Admin) -> None:
    """SQLite-only: the CSV (the report: test_ledger_rules, on both)."""
    admin = sqlite_admin
    _build_history(admin)
    admin.login("hr@acme.example")
    reply = admin.get("/admin/export/report.csv")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/csv; charset=utf-8; header=present"
    disposition = reply.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="career-relay-acme-report-')
    assert reply.headers["Cache-Control"] == "no-store"
    header, row = _csv(reply)
    expected = admin.report()
    assert header == list(reports.COLUMNS)
    assert row == [str(reports.flat(expected)[f]) for f in reports.COLUMNS]


def test_the_forwards_and_provision_record_csv(admin: Admin) -> None:
    kept, erased, formula = (admin.offer() for _ in range(3))
    admin.accept(kept)
    admin.accept(erased)
    admin.accept(formula, name="=HYPERLINK(\"x\")")  # a name a spreadsheet would run
    admin.deliver_all()
    admin.erase(erased)
    admin.deliver_all()  # the erasure notice
    admin.login("hr@acme.example")
    forwards = _csv(admin.get("/admin/export/forwards.csv"))
    assert forwards[0][:3] == ["作成日時 (UTC)", "種類", "状況"]
    kinds = sorted(r[1] for r in forwards[1:])
    assert kinds == ["消去の通知", "登録（同意）", "登録（同意）", "登録（同意）"]
    assert {len(r) for r in forwards} == {len(forwards[0])}
    reply = admin.get("/admin/export/provisions.csv")
    assert 'filename="career-relay-acme-provisions-' in reply.headers["Content-Disposition"]
    header, *rows = _csv(reply)
    assert header == ["提供日 (UTC)", "提供先", "本人の氏名", "本人のメールアドレス",
                      "案内の送信先", "提供した項目", "同意記録ID", "通知文の版",
                      "同意日時 (UTC)", "転送ID"]
    assert len(rows) == 3
    receipts = {r["offer_id"]: r for r in admin.rows("receipts", "decision = 'accept'")}
    by_receipt = {r[6]: r for r in rows}
    row = by_receipt[receipts[kept.id]["id"]]
    assert row[1] == admin.settings.agency.name
    assert row[2:5] == ["山田 花子", kept.recipient, kept.recipient]
    assert row[5] == "氏名、メールアドレス"
    assert row[7] == admin.notice.version
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row[0])
    gone = by_receipt[receipts[erased.id]["id"]]
    assert gone[2:4] == ["（消去済み）", "（消去済み）"]
    assert gone[7] == admin.notice.version  # the record of the consent stays
    assert by_receipt[receipts[formula.id]["id"]][2] == "'=HYPERLINK(\"x\")"


def test_each_forward_shows_the_person_it_carried(admin: Admin) -> None:
    offer = admin.offer()
    admin.accept(offer, name="最初の名前", email="first@example.net")
    admin.deliver_all()
    admin.consents().withdraw(offer, "ja", Client(PHONE, "203.0.113.7"))
    admin.deliver_all()
    admin.accept(offer, name="次の名前", email="second@example.net")
    admin.deliver_all()
    admin.login("hr@acme.example")
    _, *rows = _csv(admin.get("/admin/export/forwards.csv"))
    people = [(r[1], next(c for c in r if c.endswith("@example.net")))
              for r in reversed(rows)]  # the export is newest first
    # The first consent carried the first address, and its withdrawal is about it too.
    assert [p[1] for p in people] == ["first@example.net", "first@example.net",
                                      "second@example.net"]


# -- escaping -------------------------------------------------------------------------------


def test_candidate_values_are_escaped_everywhere(sqlite_admin: Admin) -> None:
    """SQLite-only: the pages' escaping."""
    admin = sqlite_admin
    evil = admin.offer(job=XSS, channel="<img src=x onerror=alert(1)>")
    admin.accept(evil, name=XSS, email='"><img src=x onerror=alert(1)>@example.net')
    held = admin.offer(age=1, job=XSS)
    admin.accept(held, name=XSS)
    admin.deliver_all()
    admin.login("ops@relay.example")
    for path in ("/admin/", "/admin/forwards", "/admin/reviews", "/admin/credits"):
        page = admin.get(path)
        assert page.status == 200, path
        assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
    assert "&lt;script&gt;alert(" in admin.get("/admin/forwards").text
    assert "&lt;script&gt;alert(" in admin.get("/admin/reviews").text
    assert "&lt;script&gt;alert(" in admin.get("/admin/").text  # the job's name
    for name in ("jobs", "channels"):
        svg = admin.get(f"/admin/charts/{name}.svg").text
        assert "<script>" not in svg and "<img" not in svg, name


# -- the command ----------------------------------------------------------------------------


def test_admin_add_user_command(make_config: ConfigMaker, backend_url: str) -> None:
    config = make_config(ledger={"url": backend_url}, companies=COMPANIES)
    made = run_cli("admin", "add-user", "--email", "Boss@Acme.example", "--company", "acme",
                   "--password-stdin", "--config", str(config), stdin="s3cret pass\n")
    assert made.returncode == 0, made.stderr
    assert "boss@acme.example" in made.stdout
    again = run_cli("admin", "add-user", "--email", "boss@acme.example", "--operator",
                    "--password-stdin", "--config", str(config), stdin="x\n")
    assert again.returncode == 1 and "exists already" in again.stderr
    unknown = run_cli("admin", "add-user", "--email", "a@b.example", "--company", "nope",
                      "--password-stdin", "--config", str(config), stdin="x\n")
    assert unknown.returncode == 1 and "nope" in unknown.stderr
    assert run_cli("admin", "add-user", "--email", "a@b.example", "--config",
                   str(config)).returncode == 2  # neither --operator nor --company
    harness = Admin(config)
    try:
        assert harness.login("boss@acme.example", "s3cret pass").status == 303
        assert harness.get("/admin/").status == 200
        (user,) = harness.rows("admin_users")
        assert user["role"] == "company" and user["company"] == "acme"
        assert user["password_hash"].startswith("$argon2id$")
    finally:
        harness.close()


def test_the_admin_pages_answer_503_while_the_ledger_is_away(
        sqlite_admin: Admin, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the candidate's pages (SPEC 12): a 503 and when to come back, where they answered
    an unexpected error's 500, with a traceback in the log for every request (attack
    review)."""
    assert sqlite_admin.login("ops@relay.example").status == 303

    def away(*args: object) -> None:
        raise LedgerUnavailable("the ledger cannot be used now: no connection to PostgreSQL")

    monkeypatch.setattr(AdminUsers, "session", away)
    monkeypatch.setattr(AdminUsers, "find", away)
    dashboard = sqlite_admin.get("/admin/")  # the session is looked up in the ledger
    sqlite_admin.client.session.cookie_jar.clear()
    page = sqlite_admin.get("/admin/login")
    login = sqlite_admin.post("/admin/login", {"csrf": page.csrf(), "email": "ops@relay.example",
                                               "password": PASSWORD})
    for reply in (dashboard, login):
        assert reply.status == 503 and reply.headers["Retry-After"] == "30"
        assert "PostgreSQL" not in reply.text and "数分後" in reply.text


def test_the_dashboard_shows_the_company_s_own_link(sqlite_admin: Admin) -> None:
    """SQLite-only: a page of the site (SPEC 10: the company link on the admin pages)."""
    from career_relay.tokens import CompanySigner

    admin = sqlite_admin
    signer = CompanySigner(admin.settings.secrets.signing_keys)
    public = admin.settings.site.public_url
    admin.login("hr@acme.example")
    page = admin.get("/admin/")
    assert f'<code id="company-link">{public}/j/{signer.token("acme")}</code>' in page.text
    assert signer.token("kumo") not in page.text  # another company's link is not shown
    admin.login("ops@relay.example")
    other = admin.get("/admin/?company=kumo")
    assert f'<code id="company-link">{public}/j/{signer.token("kumo")}</code>' in other.text


def test_a_company_link_consent_waits_on_the_review_page(admin: Admin) -> None:
    """SPEC 10: every accept of a link offer is held, its reason named; approving releases it."""
    offer = admin.ledger.record_offer("acme", "<company-link.1@career-relay.invalid>",
                                      "typed@example.net", source="link")
    held = admin.accept(offer)
    admin.login("hr@acme.example")  # the company would approve its own credits: it may not
    assert admin.post(f"/admin/reviews/{held}", {"csrf": admin.nonce("/admin/reviews"),
                                                 "verdict": "approve"}).status == 403
    admin.login("ops@relay.example")
    page = admin.get("/admin/reviews")
    assert f'id="approve-{held}"' in page.text and "会社リンク経由" in page.text
    assert admin.deliver_all() == 0  # nothing leaves before the verdict
    assert admin.post(f"/admin/reviews/{held}",
                      {"csrf": page.csrf(), "verdict": "approve"}).status == 303
    assert admin.deliver_all() == 1 and admin.report()["qualified_forwards"] == 1


@pytest.mark.parametrize(("query", "field", "problem"), [
    ("since=0001-01-01&until=9999-12-31", "since", "1000年から2999年"),
    ("until=9999-12-31", "until", "1000年から2999年"),
    ("since=0999-01-01", "since", "1000年から2999年"),
    ("since=2026-13-01", "since", "YYYY-MM-DD"),
    ("until=2026-04-31", "until", "YYYY-MM-DD"),
    ("since=2026-05-01&until=2026-04-01", "until", "より前"),
], ids=["both-extreme", "until-9999", "since-0999", "bad-since", "bad-until", "reversed"])
def test_a_period_it_cannot_report_is_a_400_naming_the_field(
        sqlite_admin: Admin, query: str, field: str, problem: str) -> None:
    """Attack review: ``until=9999-12-31`` overflowed the day after it and a year before
    1000 broke the month keys: 500s on the dashboard, the charts and the CSV."""
    admin = sqlite_admin
    admin.qualify(2)
    admin.login("ops@relay.example")
    for path in ("/admin/", "/admin/forwards", "/admin/charts/monthly.svg",
                 "/admin/charts/funnel.svg", "/admin/export/report.csv"):
        reply = admin.get(f"{path}?company=acme&{query}")
        assert reply.status == 400, (path, reply.status)
        assert f"{field}: " in reply.text and problem in reply.text, (path, reply.text)
    widest = admin.get("/admin/?company=acme&since=1000-01-01&until=2999-12-31")
    assert widest.status == 200


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@SUM(A1)", "|calc", "\tx", "\rx",
                                   "＝1+1", "＋1", "－1", "＠SUM", " =1+1", "\u3000=SUM(1)",
                                   "\ufeff=1+1", "\u200b=1+1"])
def test_a_csv_cell_a_spreadsheet_would_read_as_a_formula_is_quoted(value: str) -> None:
    """Every form a spreadsheet reads as a formula, full-width and behind white space or a
    byte order mark too (attack review): the cell starts with an apostrophe."""
    from consent_site.admin_exports import cell

    assert cell(value) == "'" + value


def test_a_plain_csv_cell_is_left_as_it_is() -> None:
    from consent_site.admin_exports import cell

    assert [cell(v) for v in ("営業", "a-b", "1", "候補者 =")] == ["営業", "a-b", "1", "候補者 ="]
