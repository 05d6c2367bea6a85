"""The agency API (SPEC 11, issue 15 item 2) on the real site over a real ledger: the feed
with its cursor, outcomes (idempotent, each a ledger entry), the keys of the two kinds kept
apart, the attacks, and the OpenAPI document against every real reply.  On both backends
where the ledger decides (``backend_url``); HTTP alone on SQLite.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from career_relay.consent import Client, Consents
from career_relay.ledger import AgencyKeys, Book, ConsentLedger, Rules
from career_relay.ledger.offers import Offer
from consent_site.api.core import KEY_CACHE_SECONDS
from tests.conftest import ConfigMaker
from tests.test_api import COMPANIES, PHONE, PUBLIC_URL, Api, _check_against_openapi, _problem
from tests.test_ledger_rules import NOTICE

AGENCIES = """
[[agencies]]
id = "default"
name = "東キャリア株式会社"
webhook_url = "http://127.0.0.1:9/hook"
webhook_secret = "whsec-default-0123456789"
license_no = "13-ユ-111111"
privacy_url = "https://east.example/privacy"

[[agencies]]
id = "north"
name = "北日本キャリア株式会社"
webhook_url = "http://127.0.0.1:9/north"
webhook_secret = "whsec-north-0123456789"
license_no = "01-ユ-222222"
privacy_url = "https://north.example/privacy"
"""


class AgencyApi(Api):
    def __init__(self, config: Path) -> None:
        super().__init__(config)
        keys = AgencyKeys(self.ledger)
        self.east = keys.create("default", "test")[1]
        self.north = keys.create("north", "test")[1]
        rules = Rules.from_settings(self.settings)
        self.store = ConsentLedger(self.ledger, rules)
        self.consents = Consents(self.settings, self.store)
        self._n = 0

    def accepted(self, company: str = "acme", n: int = 1) -> list[str]:
        """``n`` accepted offers of ``company``: their consent forwards' ids."""
        made = []
        for _ in range(n):
            self._n += 1
            offer: Offer = self.ledger.record_offer(company, f"<m{self._n}@x.example>",
                                                    f"cand{self._n}@example.net")
            self.consents.accept(offer, NOTICE, {"name": "候補者", "email": offer.recipient},
                                 False, Client(PHONE, "198.51.100.7"))
            made.append(self.store.forwards(offer.id)[-1].forward.id)
        return made

    def deliver(self) -> None:
        for forward in self.store.claim_due(100, 60):
            self.store.delivered(forward.id)

    def feed(self, after: str | None = None, key: str = "east", limit: int = 2) -> Any:
        query = f"?limit={limit}" + (f"&after={after}" if after else "")
        return self.request("GET", "/api/v1/agency/forwards" + query, key=key,
                            route="/agency/forwards")

    def outcome(self, forward_id: str, body: Any, key: str = "east", **kw: Any) -> Any:
        return self.request("POST", f"/api/v1/agency/forwards/{forward_id}/outcome", key=key,
                            route="/agency/forwards/{forward_id}/outcome",
                            **({"json": body} if "data" not in kw else {}), **kw)


def _harness(make_config: ConfigMaker, url: str) -> Iterator[AgencyApi]:
    companies = [COMPANIES[0], {**COMPANIES[1], "agency": "north"}]
    config = make_config(site={"public_url": PUBLIC_URL, "review_window": 0},
                         ledger={"url": url}, companies=companies, api={"rate_limit": 600})
    config.write_text(config.read_text(encoding="utf-8") + AGENCIES, encoding="utf-8")
    harness = AgencyApi(config)
    yield harness
    harness.close()


@pytest.fixture
def api(make_config: ConfigMaker, backend_url: str) -> Iterator[AgencyApi]:
    yield from _harness(make_config, backend_url)


@pytest.fixture
def sqlite_api(make_config: ConfigMaker) -> Iterator[AgencyApi]:
    yield from _harness(make_config, "")


def test_the_feed_pages_through_the_agency_s_own_forwards(api: AgencyApi) -> None:
    acme = api.accepted("acme", 5)
    kumo = api.accepted("kumo", 2)
    seen, after, pages = [], None, 0
    while True:
        page = api.feed(after)
        assert page.status == 200, page.text
        pages += 1
        seen += [item["forward_id"] for item in page.json["items"]]
        after = page.json["next"]
        if not page.json["more"]:
            break
    assert seen == acme and pages == 3  # in order, once each, nothing of north's
    item = api.feed(limit=1).json["items"][0]
    assert item["type"] == "consent" and item["payload"]["forward_id"] == acme[0]
    assert item["payload"]["candidate"]["name"] == "候補者"  # the webhook's body
    # Polling with the last cursor: nothing new, the same cursor; then what came since.
    empty = api.feed(after)
    assert empty.json == {"items": [], "next": after, "more": False}
    later = api.accepted("acme", 1)
    assert [i["forward_id"] for i in api.feed(after).json["items"]] == later
    assert [i["forward_id"] for i in api.feed(key="north", limit=10).json["items"]] == kumo


def test_a_cursor_tampered_with_or_another_agency_s_is_refused(sqlite_api: AgencyApi) -> None:
    sqlite_api.accepted("acme", 3)
    good = sqlite_api.feed(limit=1).json["next"]
    n, _, mac = good.partition(".")
    for bad in (f"{int(n) + 1}.{mac}", f"0.{mac}", "1", "x.y", "-1.abc", "9" * 30 + "." + mac):
        _problem(sqlite_api.feed(bad), 400)
    _problem(sqlite_api.feed(good, key="north"), 400)  # north's place is not east's
    assert set(_problem(sqlite_api.feed(limit=0), 422)["errors"][0].values()) >= {"limit"}
    _problem(sqlite_api.request("GET", "/api/v1/agency/forwards?limit=2&limit=3&x=1",
                                key="east", route="/agency/forwards"), 422)


def test_an_outcome_is_recorded_once_and_is_a_ledger_entry(api: AgencyApi) -> None:
    (forward_id,) = api.accepted()
    api.deliver()
    today = dt.datetime.now(dt.UTC).date()
    body = {"status": "registered", "at": today.isoformat()}
    made = api.outcome(forward_id, body)
    assert made.status == 201, made.text
    assert made.json["forward_id"] == forward_id and made.json["status"] == "registered"
    entries = _entries(api)
    again = api.outcome(forward_id, body)
    assert again.status == 200 and again.json == made.json
    assert _entries(api) == entries  # no new entry
    assert api.outcome(forward_id, {"status": "placed", "at": today.isoformat()}).status == 201
    assert Book(api.ledger).verify()[1] is None
    assert api.report()["qualified_forwards"] == 1


def _entries(api: AgencyApi) -> int:
    with api.ledger.read() as conn:
        return int(conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])


def test_another_agency_s_forward_and_unknown_ids_are_not_found(api: AgencyApi) -> None:
    (east,) = api.accepted("acme")
    (north,) = api.accepted("kumo")
    body = {"status": "placed", "at": dt.datetime.now(dt.UTC).date().isoformat()}
    answers = [api.outcome(north, body), api.outcome("fw_nope", body),
               api.outcome("x" * 300, body), api.outcome(east, body, key="north")]
    details = {_problem(a, 404)["detail"] for a in answers}
    assert details == {"no such forward of this agency"}  # one answer: nothing revealed


def test_days_and_statuses_that_fail_are_named(sqlite_api: AgencyApi) -> None:
    (forward_id,) = sqlite_api.accepted()
    today = dt.datetime.now(dt.UTC).date()
    for body, field in [
            ({"status": "hired", "at": today.isoformat()}, "status"),
            ({"status": "placed", "at": "2026-02-30"}, "at"),
            ({"status": "placed", "at": "yesterday"}, "at"),
            ({"status": "placed", "at": (today - dt.timedelta(days=1)).isoformat()}, "at"),
            ({"status": "placed", "at": (today + dt.timedelta(days=2)).isoformat()}, "at"),
            ({"status": "placed"}, "at"),
            ({"status": "placed", "at": today.isoformat(), "note": "x"}, "note"),
            ([], "(body)")]:
        found = _problem(sqlite_api.outcome(forward_id, body), 422)
        assert field in {e["field"] for e in found["errors"]}, body
    tomorrow = (today + dt.timedelta(days=1)).isoformat()
    assert sqlite_api.outcome(forward_id, {"status": "placed", "at": tomorrow}).status == 201


def test_keys_of_the_other_kind_revoked_keys_and_no_keys(sqlite_api: AgencyApi) -> None:
    (forward_id,) = sqlite_api.accepted()
    body = {"status": "placed", "at": dt.datetime.now(dt.UTC).date().isoformat()}
    assert "company" in _problem(sqlite_api.feed(key="acme"), 403)["detail"]
    _problem(sqlite_api.outcome(forward_id, body, key="acme"), 403)
    _problem(sqlite_api.request("GET", "/api/v1/report", key="east", route="/report"), 403)
    _problem(sqlite_api.feed(key="cra_" + "0" * 16 + "_" + "A" * 43), 401)
    _problem(sqlite_api.request("GET", "/api/v1/agency/forwards", key=None,
                                route="/agency/forwards"), 401)
    AgencyKeys(sqlite_api.ledger).revoke(sqlite_api.east[4:20])
    sqlite_api.client.app  # noqa: B018  (the site is the same; its cache forgets the key)
    sqlite_api.loop.run_until_complete(__import__("asyncio").sleep(KEY_CACHE_SECONDS + 0.1))
    _problem(sqlite_api.feed(), 401)
    _problem(sqlite_api.outcome(forward_id, body), 401)
    assert sqlite_api.feed(key="north").status == 200


def test_malformed_bodies(sqlite_api: AgencyApi) -> None:
    (forward_id,) = sqlite_api.accepted()
    json_type = {"Content-Type": "application/json"}
    _problem(sqlite_api.outcome(forward_id, None, data=b"{", headers=json_type), 400)
    _problem(sqlite_api.outcome(forward_id, None, data=b'{"status": "placed", "status": 1}',
                                headers=json_type), 400)
    _problem(sqlite_api.outcome(forward_id, None, data=b"\xff\xfe", headers=json_type), 400)
    _problem(sqlite_api.outcome(forward_id, None, data=b"{}",
                                headers={"Content-Type": "text/plain"}), 415)
    huge = json.dumps({"status": "placed", "at": "2026-01-01", "x": "y" * 40_000}).encode()
    _problem(sqlite_api.outcome(forward_id, None, data=huge, headers=json_type), 413)


def test_the_rate_limit_is_per_agency_key(make_config: ConfigMaker) -> None:
    config = make_config(site={"public_url": PUBLIC_URL}, companies=COMPANIES,
                         api={"rate_limit": 3})
    config.write_text(config.read_text(encoding="utf-8") + AGENCIES, encoding="utf-8")
    api = AgencyApi(config)
    try:
        assert [api.feed().status for _ in range(3)] == [200] * 3
        limited = api.feed()
        assert _problem(limited, 429) and int(limited.headers["Retry-After"]) >= 1
        assert api.feed(key="north").status == 200  # another key, its own bucket
    finally:
        api.close()


def test_real_responses_match_the_served_openapi_document(api: AgencyApi) -> None:
    (forward_id,) = api.accepted()
    today = dt.datetime.now(dt.UTC).date().isoformat()
    api.feed()
    api.feed("bad")
    api.feed(key="acme")
    api.feed(limit=0)
    api.outcome(forward_id, {"status": "registered", "at": today})
    api.outcome(forward_id, {"status": "registered", "at": today})
    api.outcome(forward_id, {"status": "registered", "at": "1999-01-01"})
    api.outcome("fw_none", {"status": "registered", "at": today})
    api.outcome(forward_id, None, data=b"{", headers={"Content-Type": "application/json"})
    api.outcome(forward_id, {"status": "registered", "at": today}, key="nonsense")
    statuses = {reply.status for _, _, reply in api.seen}
    assert statuses >= {200, 201, 400, 401, 403, 404, 422}
    _check_against_openapi(api)


def test_under_qualify_on_registered_an_offer_s_state_tells_no_outcome(
        make_config: ConfigMaker) -> None:
    """Under ``ledger.qualify_on = "registered"`` an offer's ``qualified`` is the agency's
    report on one candidate: the company API answers null, never true for the registered
    one and false for the other (attack review)."""
    companies = [COMPANIES[0], {**COMPANIES[1], "agency": "north"}]
    config = make_config(site={"public_url": PUBLIC_URL, "review_window": 0},
                         ledger={"qualify_on": "registered"}, companies=companies,
                         api={"rate_limit": 600})
    config.write_text(config.read_text(encoding="utf-8") + AGENCIES, encoding="utf-8")
    api = AgencyApi(config)
    try:
        registered, silent = api.accepted("acme", 2)
        api.deliver()
        today = dt.datetime.now(dt.UTC).date().isoformat()
        assert api.outcome(registered, {"status": "registered", "at": today}).status == 201
        assert api.outcome(silent, {"status": "unreachable", "at": today}).status == 201
        states = []
        for forward_id in (registered, silent):
            with api.ledger.read() as conn:
                (offer_id,) = conn.execute("SELECT offer_id FROM forwards WHERE id = ?",
                                           (forward_id,)).fetchone()
            reply = api.request("GET", f"/api/v1/offers/{offer_id}", key="acme",
                                route="/offers/{offer_id}")
            assert reply.status == 200, reply.text
            states.append(reply.json)
        assert [s["qualified"] for s in states] == [None, None]
        assert [s["decision"] for s in states] == ["accept", "accept"]
        assert api.report()["qualified_forwards"] == 1  # the ledger did qualify one
        _check_against_openapi(api)
    finally:
        api.close()
