"""The company API against the attack review (issue "Without the relay, and the first
hour"): what a key holder must not get or make, and what a flood must not block.

What rests on the ledger runs on both backends (``api``: ``backend_url``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from career_relay import settings as settings_mod
from career_relay.errors import LedgerUnavailable
from career_relay.ledger import ApiKeys, Book, ConsentLedger, Rules, open_configured
from career_relay.tokens import LinkSigner, link
from consent_site.api.core import API
from consent_site.app import API_APP
from tests.conftest import ConfigMaker, run_cli
from tests.test_api import COMPANIES, ELSEWHERE, PHONE, PUBLIC_URL, Api, _harness, _named, _problem

BROWSER = {"User-Agent": PHONE}  # aiohttp's own is held as a scanner's (SPEC 8)


@pytest.fixture
def api(make_config: ConfigMaker, backend_url: str) -> Iterator[Api]:
    yield from _harness(make_config, backend_url)


@pytest.fixture
def sqlite_api(make_config: ConfigMaker) -> Iterator[Api]:
    yield from _harness(make_config, "")


def test_a_relayed_or_link_offer_is_never_answered(api: Api) -> None:
    """A key holder who knows (or computes) another offer's Message-ID gets 409, never
    that offer's personal link, and nothing is added."""
    relayed = api.ledger.record_offer("acme", "<r1@ats.example>", "cand@example.net")
    linked = api.ledger.record_offer("acme", "<l1@link.example>", "cand@example.net",
                                     source="link")
    before = api.report()
    for offer in (relayed, linked):
        reply = api.offer({"recipient": offer.recipient, "message_id": offer.message_id})
        found = _problem(reply, 409)
        assert found["detail"] == ("the message_id and recipient belong to mail not made "
                                   "through the API")
        assert offer.id not in reply.text and offer.message_id not in reply.text
        assert "link" not in found and "/c/" not in reply.text
    after = api.report()
    assert (after["rejections"], after["offers"]) == (before["rejections"], before["offers"])
    document = api.request("GET", "/api/v1/openapi.json", key=None).json
    assert "409" in document["paths"]["/api/v1/offers"]["post"]["responses"]
    # The API's own offers are still answered again.
    made = api.offer({"recipient": "x@example.net", "message_id": "<a1@ats.example>"})
    again = api.offer({"recipient": "x@example.net", "message_id": "<a1@ats.example>"})
    assert (made.status, again.status) == (201, 200) and made.json == again.json


def test_the_relay_s_own_message_ids_are_refused(sqlite_api: Api) -> None:
    for message_id in ("<idempotency.0123@api.career-relay.invalid>",
                       "<x@career-relay.invalid>", "x@LINK.Career-Relay.invalid",
                       "<abc@api.career-relay.invalid>"):
        reply = sqlite_api.offer({"recipient": "c@example.net", "message_id": message_id})
        assert _named(reply) == {"message_id"}
        assert message_id not in reply.text
    assert sqlite_api.offer({"recipient": "c@example.net",
                             "message_id": "<x@career-relay.invalid.example>"}).status == 201


def _accept(api: Api, made: dict[str, Any], source: str | None) -> None:
    """The candidate's accept through the consent page, from ``source`` (None: the test
    client's own 127.0.0.1, the network the API offers were requested from)."""
    path = made["link"].removeprefix(PUBLIC_URL)
    page = api.request("GET", path, key=None, route="page", headers=BROWSER, source=source)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert page.status == 200 and csrf is not None
    posted = api.request("POST", path, key=None, route="page", headers=BROWSER, source=source,
                         data={"csrf": csrf.group(1), "lang": "ja", "decision": "accept",
                               "agree": "yes", "name": "山田 花子", "email": "c@example.net"})
    assert posted.status == 303, posted.text


def _deliver(api: Api) -> None:
    store = ConsentLedger(api.ledger, Rules.from_settings(api.settings))
    for forward in store.claim_due(10, 60):
        store.delivered(forward.id)


def _qualified(api: Api, made: dict[str, Any]) -> bool:
    state = api.request("GET", f"/api/v1/offers/{made['offer_id']}",
                        route="/offers/{offer_id}").json
    assert state["decision"] == "accept"
    return bool(state["qualified"])


@pytest.fixture
def farm(make_config: ConfigMaker, backend_url: str) -> Iterator[Api]:
    """A site holding accepts for 30 s, a credit for every qualified forward, and both
    ledgers' clocks an hour on (the farm waits past the review window)."""
    harness = Api(make_config(site={"public_url": PUBLIC_URL, "review_window": 30},
                              ledger={"url": backend_url, "credit_every": 1},
                              companies=COMPANIES, api={"rate_limit": 600}))
    state = harness.client.server.app[API_APP][API]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    for ledger in (state.ledger, harness.ledger):
        ledger._clock = lambda: later  # type: ignore[method-assign]
    yield harness
    harness.close()


def test_a_company_cannot_farm_credits_from_its_own_network(farm: Api) -> None:
    """API offers to addresses the company controls, opened from the network they were
    requested from after the review window: held, no qualification, no credit, until an
    admin approves.  A candidate elsewhere qualifies as before."""
    farmed = farm.offer({"recipient": "me1@farm.example"}).json  # from 127.0.0.1
    candidate = farm.offer({"recipient": "cand@example.net"}).json
    _accept(farm, farmed, None)
    _accept(farm, candidate, ELSEWHERE)
    store = ConsentLedger(farm.ledger, Rules.from_settings(farm.settings))
    (held,) = store.receipts(farmed["offer_id"])
    assert held.review == "api-network" and held.network == "127.0.0.0/24"
    assert store.receipts(candidate["offer_id"])[0].review is None
    _deliver(farm)
    assert (_qualified(farm, farmed), _qualified(farm, candidate)) == (False, True)
    r = farm.report()
    assert (r["under_review"], r["qualified_forwards"], r["credits_earned"]) == (1, 1, 1)
    store.review(held.id, True, "admin@example.net")  # an admin lets it through
    _deliver(farm)
    assert _qualified(farm, farmed)
    assert farm.report()["credits_earned"] == 2
    assert Book(farm.ledger).verify()[1] is None


def test_behind_a_trusted_proxy_the_networks_are_the_clients(
        make_config: ConfigMaker) -> None:
    """Behind a reverse proxy of ``site.trusted_proxies`` every request comes from the
    proxy: the API offer's network and the accept's are the clients the proxy names, as
    the receipts' are.  The company's own office (203.0.113.7 asks for the offer and
    accepts) is held; a candidate elsewhere (198.51.100.9) is not."""
    harness = Api(make_config(site={"public_url": PUBLIC_URL, "review_window": 30,
                                    "trusted_proxies": ["127.0.0.0/8"]},
                              companies=COMPANIES, api={"rate_limit": 600}))
    try:
        state = harness.client.server.app[API_APP][API]
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        for ledger in (state.ledger, harness.ledger):
            ledger._clock = lambda: later  # type: ignore[method-assign]
        office = {"X-Forwarded-For": "203.0.113.7"}
        farmed = harness.offer({"recipient": "me1@farm.example"}, headers=office).json
        candidate = harness.offer({"recipient": "cand@example.net"}, headers=office).json
        for made, client in ((farmed, "203.0.113.7"), (candidate, "198.51.100.9")):
            path = made["link"].removeprefix(PUBLIC_URL)
            headers = {**BROWSER, "X-Forwarded-For": client}
            page = harness.request("GET", path, key=None, route="page", headers=headers)
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert page.status == 200 and csrf is not None
            posted = harness.request(
                "POST", path, key=None, route="page", headers=headers,
                data={"csrf": csrf.group(1), "lang": "ja", "decision": "accept", "agree": "yes",
                      "name": "山田 花子", "email": "c@example.net"})
            assert posted.status == 303, posted.text
        store = ConsentLedger(harness.ledger, Rules.from_settings(harness.settings))
        (held,) = store.receipts(farmed["offer_id"])
        assert held.review == "api-network" and held.network == "203.0.113.0/24"
        (passed,) = store.receipts(candidate["offer_id"])
        assert passed.review is None and passed.network == "198.51.100.0/24"
    finally:
        harness.close()


def test_an_accept_from_the_company_s_allow_ips_is_held(make_config: ConfigMaker) -> None:
    companies = [{**COMPANIES[0], "allow_ips": ["127.1.0.0/16"]}, COMPANIES[1]]
    harness = Api(make_config(site={"public_url": PUBLIC_URL, "review_window": 0},
                              companies=companies, api={"rate_limit": 600}))
    try:
        made = harness.offer({"recipient": "me2@farm.example"}).json
        _accept(harness, made, ELSEWHERE)  # another /24 than the request's, but the company's
        store = ConsentLedger(harness.ledger, Rules.from_settings(harness.settings))
        assert store.receipts(made["offer_id"])[0].review == "api-network"
        # A relayed offer is not the API's: its accept from there is not held for this.
        relayed = harness.ledger.record_offer("acme", "<r@ats.example>", "c@example.net")
        signer = LinkSigner.from_settings(harness.settings)
        _accept(harness, {"link": link(PUBLIC_URL, signer.token(
            relayed.id, relayed.created.timestamp()))}, ELSEWHERE)
        assert store.receipts(relayed.id)[0].review is None
    finally:
        harness.close()


def test_one_idempotency_key_racing_for_several_recipients_makes_one_offer(api: Api) -> None:
    """The same key and different recipients at once: the check is made in the write,
    so exactly one offer is made and the others are 422 (attack review: several 201)."""
    async def race() -> list[int]:
        async def one(n: int) -> int:
            async with api.client.post(
                    "/api/v1/offers", json={"recipient": f"r{n}@example.net"},
                    headers={"Authorization": f"Bearer {api.acme}",
                             "Idempotency-Key": "raced"}) as r:
                return r.status
        return list(await asyncio.gather(*(one(n) for n in range(8))))

    statuses = api.loop.run_until_complete(race())
    assert sorted(statuses) == [201] + [422] * 7
    assert api.report()["offers"] == 1
    # Later, and across batches, the key stays its first recipient's.
    assert _named(api.offer({"recipient": "late@example.net"},
                            headers={"Idempotency-Key": "raced"})) == {"Idempotency-Key"}


def test_bad_keys_never_stall_the_site_while_the_database_is_away(
        sqlite_api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """8 clients of random well-formed keys while each key check waits for a database
    that is away: the checks run off the event loop, so the site's other pages answer at
    once (attack review: GET /j/... took seconds)."""
    api = sqlite_api
    state = api.client.server.app[API_APP][API]
    checks: list[str] = []

    def away(key: str) -> None:
        checks.append(key)
        # The pool waiting for a server that is not there; long beside the bound below, so
        # that a loaded machine's slow answer is not taken for a check on the event loop.
        time.sleep(1.0)
        raise LedgerUnavailable("the ledger's database cannot be reached")

    monkeypatch.setattr(state.keys, "check", away)

    async def flood() -> tuple[list[int], float]:
        async def bad(n: int) -> int:
            async with api.client.get("/api/v1/report", headers={
                    "Authorization": f"Bearer crk_{n:016x}_{'B' * 43}"}) as r:
                return r.status

        async def page() -> float:
            started = time.monotonic()
            await asyncio.sleep(0.05)  # the checks under way
            async with api.client.get("/healthz") as r:
                assert r.status == 200
            return time.monotonic() - started

        *statuses, took = await asyncio.gather(*(bad(n) for n in range(8)), page())
        return list(statuses), float(took)

    statuses, took = api.loop.run_until_complete(flood())
    assert statuses == [503] * 8
    assert took < 0.8, f"/healthz took {took:.2f} s"  # a check on the loop: 1 s at least


def test_a_client_over_its_failure_limit_costs_the_database_nothing(
        sqlite_api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    api = sqlite_api
    state = api.client.server.app[API_APP][API]
    real, checks = state.keys.check, []

    def counted(key: str) -> Any:
        checks.append(key)
        return real(key)

    monkeypatch.setattr(state.keys, "check", counted)
    assert api.offer().status == 201
    statuses = [api.offer(key=f"crk_{n:016x}_{'C' * 43}").status for n in range(40)]
    assert statuses[:30] == [401] * 30 and set(statuses[30:]) == {429}
    assert len(checks) == 31  # the right key, and the 30 bad ones before the limit
    assert api.offer().status == 201  # a right key seen lately: still never refused


@pytest.mark.parametrize(("configured", "recipient"), [
    ("acme.example", "x@acme\u00ad.example"),        # a soft hyphen: mapped to nothing
    ("acme.example", "x@ＡＣＭＥ.example"),           # full width
    ("acme.example", "x@acme.example."),              # the root's dot
    ("アクメ.jp", "x@xn--cck0a4k.jp"),                # configured as U-label, sent as A-label
    ("アクメ.jp", "x@XN--CCK0A4K.JP"),
    ("xn--cck0a4k.jp", "x@アクメ.jp"),                # and the other way round
    ("xn--cck0a4k.jp", "x@ｱｸﾒ.jp"),                  # half-width katakana
])
def test_own_domains_are_compared_as_a_labels(make_config: ConfigMaker, configured: str,
                                              recipient: str) -> None:
    companies = [{**COMPANIES[0], "domains": [configured]}, COMPANIES[1]]
    harness = Api(make_config(site={"public_url": PUBLIC_URL}, companies=companies,
                              api={"rate_limit": 600}))
    try:
        assert _named(harness.offer({"recipient": recipient})) == {"recipient"}
        rules = Rules.from_settings(harness.settings)
        assert rules.own("acme", recipient) and not rules.own("kumo", recipient)
        assert not rules.own("acme", "x@example.net")
        assert harness.offer({"recipient": "x@example.net"}).status == 201
    finally:
        harness.close()


HOSTILE_NAME = "\x1b]0;owned\x07ATS\u202eevil\u2066\x9b31m\u200b\r\nnext"


def _obeyable(text: str) -> bool:
    return bool(re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e"
                          r"\u2066-\u2069]", text))


def test_key_names_carry_no_terminal_escapes(make_config: ConfigMaker,
                                             backend_url: str) -> None:
    config = make_config(ledger={"url": backend_url}, companies=COMPANIES)
    with open_configured(settings_mod.load(config)) as ledger:
        made, _ = ApiKeys(ledger).create("acme", HOSTILE_NAME)
        assert made.name == "]0;owned ATS evil 31m next" and not _obeyable(made.name)
        assert ApiKeys(ledger).list("acme")[0].name == made.name
        # A row written before names were cleaned is cleaned when printed.
        old, _ = ApiKeys(ledger).create("kumo", "old")
        with ledger.write() as conn:
            conn.execute("UPDATE api_keys SET name = ? WHERE id = ?", (HOSTILE_NAME, old.id))
    listed = run_cli("api-key", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert not _obeyable(listed.stdout) and listed.stdout.count("\n") == 2
    assert "]0;owned ATS evil 31m next" in listed.stdout


@pytest.mark.parametrize("field", ["recipient", "job", "channel", "stage"])
@pytest.mark.parametrize("char", ["\u202e", "\u202a", "\u2066", "\u2069", "\u200b", "\u200f"])
def test_bidi_controls_are_refused(sqlite_api: Api, field: str, char: str) -> None:
    body = {"recipient": "c@example.net", field: f"ab{char}c@example.net"
            if field == "recipient" else f"経理{char}部"}
    reply = sqlite_api.offer(body)
    assert _named(reply) == {field}
    assert char not in reply.text and "\\u2" not in reply.text.lower()


def test_a_refused_period_names_its_fields_not_its_dates(sqlite_api: Api) -> None:
    for query, field in (("since=2026-05-01&until=2026-04-01", "until"),
                         ("since=2026-02-30", "since"), ("until=9999-12-31", "until")):
        reply = sqlite_api.request("GET", f"/api/v1/report?{query}", route="/report")
        assert _named(reply) == {field}
        for date in re.findall(r"\d{4}-\d{2}-\d{2}", query):
            assert date not in reply.text and date.replace("-0", "-") not in reply.text
