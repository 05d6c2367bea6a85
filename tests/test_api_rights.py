"""An API offer's rights pages after its decision (SPEC 10; ``consent_site.rights``).

The company's ATS put the candidate's personal link into its own mail, so the
company holds it.  After the decision, manage, export, withdraw and erase need the
rights cookie the decision set, or a manage link mailed to the address the candidate
typed on the form.  The real site (aiohttp's test server) mails through a capturing
upstream on loopback (``sink``); each "browser" is a client on its own loopback
address with its own cookie jar; what rests on the ledger runs on both backends.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import re
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from career_relay import settings as settings_mod
from career_relay.tokens import LinkSigner
from consent_site.app import reload_app
from consent_site.company_link import LINKS
from consent_site.rights import COOKIE, OFFER_LIMIT
from tests.conftest import ConfigMaker, Received, Sink
from tests.test_api import COMPANIES, ELSEWHERE, PHONE, PUBLIC_URL, Api, Reply

OTHER_DEVICE = "127.2.0.1"
COMPANY = "127.3.0.1"
TYPED = "hanako.yamada@example.org"  # the address typed on the form
SECRET = "転職活動は勤務先に秘密です"  # the note: what the company must never read
LINK = re.compile(re.escape(PUBLIC_URL) + r"(/c/[A-Za-z0-9_.-]+/access/[A-Za-z0-9_.-]+)")


class Browser:
    """A browser on its own loopback address with its own cookies (Secure ones too: the
    test server is http, the site's public_url https)."""

    def __init__(self, api: Api, source: str) -> None:
        self.api = api
        async def make() -> aiohttp.ClientSession:
            jar = aiohttp.CookieJar(unsafe=True,
                                    treat_as_secure_origin=[str(api.client.make_url("/"))])
            return aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(local_addr=(source, 0)), cookie_jar=jar)

        self.session = api.loop.run_until_complete(make())

    def close(self) -> None:
        self.api.loop.run_until_complete(self.session.close())

    def go(self, method: str, path: str, **kwargs: Any) -> Reply:
        headers = {"User-Agent": PHONE, **kwargs.pop("headers", {})}

        async def run() -> Reply:
            async with self.session.request(
                    method, self.api.client.make_url(path), allow_redirects=False,
                    headers=headers, **kwargs) as r:
                return Reply(r.status, r.headers, await r.read())

        return self.api.loop.run_until_complete(run())

    def csrf(self, path: str) -> str:
        page = self.go("GET", path)
        assert page.status == 200, page.text
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found, page.text
        return found.group(1)

    def post(self, path: str, form_page: str, **data: str) -> Reply:
        return self.go("POST", path, data={"csrf": self.csrf(form_page), "lang": "ja", **data})


@pytest.fixture
def api(make_config: ConfigMaker, sink: Sink, backend_url: str) -> Iterator[Api]:
    harness = Api(make_config(upstream_port=sink.port, companies=COMPANIES,
                              site={"public_url": PUBLIC_URL, "review_window": 0},
                              ledger={"url": backend_url}, api={"rate_limit": 600}))
    harness.client.app[LINKS].mailer.retry_delay = 0.0
    yield harness
    harness.close()


@pytest.fixture
def browsers(api: Api) -> Iterator[dict[str, Browser]]:
    made = {name: Browser(api, source) for name, source in
            (("candidate", ELSEWHERE), ("phone", OTHER_DEVICE), ("company", COMPANY))}
    yield made
    for browser in made.values():
        browser.close()


def _accepted(api: Api, candidate: Browser, recipient: str = "cand@example.net") -> tuple[
        str, Reply]:
    """An API offer the candidate accepted in ``candidate``: its path and the answer."""
    made = api.offer({"recipient": recipient})
    assert made.status == 201, made.text
    path = made.json["link"].removeprefix(PUBLIC_URL)
    answer = candidate.post(path, path, decision="accept", agree="yes", name="山田 花子",
                            email=TYPED, phone="090-1234-5678", note=SECRET)
    assert answer.status == 303, answer.text
    return path, answer


def _decision(api: Api, path: str) -> str | None:
    offer_id = _offer_id(api, path)
    state = api.request("GET", f"/api/v1/offers/{offer_id}", route="/offers/{offer_id}")
    decision: str | None = state.json["decision"]
    return decision


def _offer_id(api: Api, path: str) -> str:
    return LinkSigner.from_settings(api.settings).offer_id(path.rsplit("/", 1)[1])


def _mails(api: Api, sink: Sink, count: int) -> list[Received]:
    async def wait() -> None:
        for _ in range(600):
            if len(sink.messages) >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{count} mail(s) expected, {len(sink.messages)} came")

    api.loop.run_until_complete(wait())
    return sink.messages


def _settle(api: Api) -> None:
    async def idle() -> None:
        for _ in range(5):
            await asyncio.sleep(0.05)
        await asyncio.wait_for(api.client.app[LINKS].mailer.drained(), 30)

    api.loop.run_until_complete(idle())


def _manage_link(received: Received) -> str:
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    body = message.get_body(("plain",))
    assert body is not None
    found = LINK.search(str(body.get_content()))
    assert found, body.get_content()
    return found.group(1)


def test_the_decision_sets_a_cookie_only_the_candidate_s_browser_holds(
        api: Api, browsers: dict[str, Browser]) -> None:
    candidate, company = browsers["candidate"], browsers["company"]
    path, answer = _accepted(api, candidate)
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert {"HttpOnly", "Secure", f"Path={path}", "SameSite=Lax"} <= {
        part.strip() for part in cookie.split(";")}
    assert _offer_id(api, path) not in cookie and TYPED not in cookie
    # The company, with the link and without the cookie: the state, never the profile.
    locked = company.go("GET", f"{path}/manage")
    assert locked.status == 200 and 'data-locked="yes"' in locked.text
    assert "山田" not in locked.text and SECRET not in locked.text and TYPED not in locked.text
    assert 'id="withdraw"' not in locked.text and 'id="export"' not in locked.text
    exported = company.go("GET", f"{path}/export")
    assert exported.status == 303 and exported.headers["Location"].startswith(f"{path}/manage")
    assert SECRET not in exported.text
    for act in ("withdraw", "erase"):  # with a nonce of the locked page, still refused
        refused = company.post(f"{path}/{act}", f"{path}/manage")
        assert refused.status == 403
    # A cookie made for another offer (the company answered its own offer) opens nothing.
    own, _ = _accepted(api, company, "someone@example.net")
    forged = company.session.cookie_jar.filter_cookies(api.client.make_url(own))[COOKIE]
    stolen = company.go("GET", f"{path}/export", headers={"Cookie": f"{COOKIE}={forged.value}"})
    assert stolen.status == 303 and SECRET not in stolen.text
    assert _decision(api, path) == "accept"
    # The candidate, in the same browser: everything, as before.
    page = candidate.go("GET", f"{path}/manage")
    assert page.status == 200 and 'id="withdraw"' in page.text
    data = candidate.go("GET", f"{path}/export")
    assert data.status == 200 and SECRET in data.text
    assert candidate.post(f"{path}/withdraw", f"{path}/manage").status == 303
    assert _decision(api, path) == "withdraw"
    # Withdrawn, the cookie still opens the export and erase (the receipt stays).
    assert SECRET in candidate.go("GET", f"{path}/export").text
    assert company.go("GET", f"{path}/export").status == 303
    # Registering again in the company's name would mint it a cookie that opens the
    # candidate's earlier receipts: without the cookie, a new decision is not taken.
    again = company.post(path, path, decision="accept", agree="yes", name="x",
                         email="ats@acme.example")
    assert again.status == 303 and again.headers["Location"].startswith(f"{path}/manage")
    assert "Set-Cookie" not in again.headers and _decision(api, path) == "withdraw"
    assert company.go("GET", f"{path}/export").status == 303
    # The candidate registers again, in their browser, as before.
    assert candidate.post(path, path, decision="accept", agree="yes", name="山田 花子",
                          email=TYPED).status == 303
    assert _decision(api, path) == "accept"


def test_on_another_device_the_candidate_asks_for_a_manage_link(
        api: Api, browsers: dict[str, Browser], sink: Sink,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    candidate, phone, company = browsers["candidate"], browsers["phone"], browsers["company"]
    path, _ = _accepted(api, candidate)
    before = len(sink.messages)
    # The company asks, naming its own address: the mail goes to the typed one alone.
    asked = company.post(f"{path}/manage-link", f"{path}/manage", email="ats@acme.example")
    assert asked.status == 303
    assert asked.headers["Location"] == f"{path}/manage?lang=ja&sent=1"
    answer = company.go("GET", asked.headers["Location"])
    assert 'id="sent"' in answer.text and TYPED not in answer.text
    assert "hanako" not in answer.text
    first = _mails(api, sink, before + 1)[before]
    assert first.rcpts == [TYPED]
    # The candidate's phone asks as well and opens its own mail's link.
    assert phone.post(f"{path}/manage-link", f"{path}/manage").status == 303
    mail = _mails(api, sink, before + 2)[before + 1]
    assert mail.rcpts == [TYPED]
    access = _manage_link(mail)
    assert access.startswith(f"{path}/access/")
    assert TYPED not in access and _offer_id(api, path) not in access
    # Its page changes nothing (scanners follow links); its button does.
    page = phone.go("GET", access)
    assert page.status == 200 and "Set-Cookie" not in page.headers
    assert phone.go("GET", f"{path}/export").status == 303
    opened = phone.post(access, access)
    assert opened.status == 303 and opened.headers["Location"].startswith(f"{path}/manage")
    assert opened.headers["Set-Cookie"].startswith(f"{COOKIE}=")
    data = phone.go("GET", f"{path}/export")
    assert data.status == 200 and SECRET in data.text
    assert phone.post(f"{path}/withdraw", f"{path}/manage").status == 303
    assert _decision(api, path) == "withdraw"
    # The link is good once; another salt's token (the consent link's) is no key.
    again = browsers["company"].go("GET", access)
    assert again.status == 200  # its page still shows, and changes nothing
    assert browsers["company"].post(access, access).status == 410
    token = path.rsplit("/", 1)[1]
    assert company.go("GET", f"{path}/access/{token}").status == 410
    # Nothing personal in the site's logs at INFO (the capturing upstream's own are not).
    _settle(api)
    logged = "\n".join(r.getMessage() for r in caplog.records
                       if r.name.startswith(("career_relay", "aiohttp", "consent_site")))
    assert "manage link of offer" in logged
    assert TYPED not in logged and "hanako" not in logged and SECRET not in logged
    assert "山田" not in logged


def test_the_manage_link_is_no_mail_bomb(api: Api, browsers: dict[str, Browser],
                                         sink: Sink) -> None:
    candidate, company = browsers["candidate"], browsers["company"]
    path, _ = _accepted(api, candidate)
    before = len(sink.messages)
    for _ in range(OFFER_LIMIT + 4):  # over the offer's share: the same answer, nothing sent
        asked = company.post(f"{path}/manage-link", f"{path}/manage")
        assert asked.status == 303 and asked.headers["Location"].endswith("&sent=1")
    _settle(api)
    assert len(sink.messages) - before == OFFER_LIMIT
    # Per client: the company link's limit (10 an hour) answers 429 after that.
    statuses = [company.post(f"{path}/manage-link", f"{path}/manage").status
                for _ in range(5)]
    assert 429 in statuses and "Retry-After" in company.post(
        f"{path}/manage-link", f"{path}/manage").headers


def test_relayed_offers_and_undecided_api_offers_are_unchanged(
        api: Api, browsers: dict[str, Browser]) -> None:
    candidate, other = browsers["candidate"], browsers["company"]
    relayed = api.ledger.record_offer("acme", "<r1@ats.example>", "cand@example.net")
    token = LinkSigner.from_settings(api.settings).token(relayed.id,
                                                         relayed.created.timestamp())
    path = f"/c/{token}"
    answer = candidate.post(path, path, decision="accept", agree="yes", name="山田 花子",
                            email=TYPED, note=SECRET)
    assert answer.status == 303 and "Set-Cookie" not in answer.headers
    # Only the candidate's mailbox saw a relayed link: its holder manages, as before.
    page = other.go("GET", f"{path}/manage")
    assert page.status == 200 and 'id="withdraw"' in page.text
    assert SECRET in other.go("GET", f"{path}/export").text
    # An API offer nobody decided: nothing to lock yet.
    made = api.offer({"recipient": "new@example.net"}).json["link"].removeprefix(PUBLIC_URL)
    assert 'data-locked' not in other.go("GET", f"{made}/manage").text


def test_a_reload_keeps_the_cookies(make_config: ConfigMaker, sink: Sink) -> None:
    """SIGHUP: the rights signer takes the new key list; a cookie of a key still listed
    still opens the pages."""
    config = make_config(upstream_port=sink.port, companies=COMPANIES,
                         site={"public_url": PUBLIC_URL, "review_window": 0},
                         api={"rate_limit": 600})
    api = Api(config)
    candidate = Browser(api, ELSEWHERE)
    try:
        path, _ = _accepted(api, candidate)
        keys = ["a-newer-key-0123456789", *api.settings.secrets.signing_keys]
        newer = settings_mod.load(make_config(
            upstream_port=sink.port, companies=COMPANIES, secrets={"signing_keys": keys},
            site={"public_url": PUBLIC_URL, "review_window": 0}, api={"rate_limit": 600}))
        reload_app(api.client.app, newer)
        assert SECRET in candidate.go("GET", f"{path}/export").text
    finally:
        candidate.close()
        api.close()
