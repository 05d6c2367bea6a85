"""The company API (SPEC 10, issue 14 item 1) through aiohttp's test client over a real
ledger: offers (idempotent), their state, the report, keys, limits, problems, and the
OpenAPI document, against which every real response here is validated.

What rests on the ledger (offers, idempotency, state, report) runs on both backends
(``api``: ``backend_url``); what is HTTP alone (bodies, limits, problems) on SQLite.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from referencing import Registry, Resource

from career_relay import settings as settings_mod
from career_relay.ledger import ApiKeys, Book, ConsentLedger, Rules, open_configured, reports
from career_relay.tokens import LinkSigner, link
from consent_site.api.core import API, KEY_CACHE_SECONDS
from consent_site.app import API_APP, create_app
from tests.conftest import ConfigMaker

COMPANIES = [
    {"id": "acme", "name": "株式会社アクメ", "domains": ["acme.example"]},
    {"id": "kumo", "name": "雲株式会社", "domains": ["kumo.example"]},
]
PUBLIC_URL = "https://careers.example.jp"
#: A loopback address in another /24 than the test client's 127.0.0.1.
ELSEWHERE = "127.1.0.1"
PHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 "
         "(KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1")


class Reply:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body
        self.text = body.decode("utf-8", "replace")

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Api:
    """The site on a real ledger; every reply is kept, to be checked against OpenAPI."""

    def __init__(self, config: Path) -> None:
        self.settings = settings_mod.load(config)
        self.loop = asyncio.new_event_loop()
        self.client: TestClient[web.Request, web.Application] = TestClient(
            TestServer(create_app(self.settings)), loop=self.loop)
        self.loop.run_until_complete(self.client.start_server())
        self.ledger = open_configured(self.settings)
        self.keys = ApiKeys(self.ledger)
        self.acme = self.keys.create("acme", "test")[1]
        self.kumo = self.keys.create("kumo", "test")[1]
        self.seen: list[tuple[str, str, Reply]] = []  # (method, route, reply)
        self.sources: dict[str, aiohttp.ClientSession] = {}  # another loopback address's

    def close(self) -> None:
        for session in self.sources.values():
            self.loop.run_until_complete(session.close())
        self.loop.run_until_complete(self.client.close())
        self.loop.close()
        self.ledger.close()

    def request(self, method: str, path: str, *, key: str | None = "acme",
                route: str | None = None, source: str | None = None, **kwargs: Any) -> Reply:
        """``source``: from that loopback address (127.1.0.1 is another /24 than the
        test client's 127.0.0.1), with a cookie jar of its own."""
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {getattr(self, key, key)}"

        async def go() -> Reply:
            if source is None:
                async with self.client.request(method, path, headers=headers,
                                               allow_redirects=False, **kwargs) as r:
                    return Reply(r.status, r.headers, await r.read())
            if source not in self.sources:
                self.sources[source] = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(local_addr=(source, 0)),
                    cookie_jar=aiohttp.CookieJar(unsafe=True))
            async with self.sources[source].request(
                    method, self.client.make_url(path), headers=headers,
                    allow_redirects=False, **kwargs) as r:
                return Reply(r.status, r.headers, await r.read())

        reply = self.loop.run_until_complete(go())
        self.seen.append((method, route or path.split("?")[0], reply))
        return reply

    def offer(self, body: dict[str, Any] | None = None, **kwargs: Any) -> Reply:
        return self.request("POST", "/api/v1/offers",
                            json={"recipient": "cand@example.net"} if body is None else body,
                            **kwargs)

    def report(self, company: str = "acme") -> dict[str, Any]:
        # The ledger's today, not the machine's: a test that moves the ledger's clock an
        # hour on wrote tomorrow's rows between 23:00 and midnight UTC.
        when = reports.period(None, None, self.ledger.now().date())
        return reports.report(self.ledger, [company], when, 10)[0]


def _harness(make_config: ConfigMaker, url: str, **site: Any) -> Iterator[Api]:
    harness = Api(make_config(site={"public_url": PUBLIC_URL, "review_window": 0, **site},
                              ledger={"url": url}, companies=COMPANIES,
                              api={"rate_limit": 600}))
    yield harness
    harness.close()


@pytest.fixture
def api(make_config: ConfigMaker, backend_url: str) -> Iterator[Api]:
    yield from _harness(make_config, backend_url)


@pytest.fixture
def sqlite_api(make_config: ConfigMaker) -> Iterator[Api]:
    yield from _harness(make_config, "")


def _problem(reply: Reply, status: int) -> dict[str, Any]:
    assert reply.status == status, reply.text
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    found: dict[str, Any] = reply.json
    assert found["status"] == status and found["title"]
    return found


def _named(reply: Reply) -> set[str]:
    return {e["field"] for e in _problem(reply, 422)["errors"]}


# -- offers ------------------------------------------------------------------------------------


def test_an_offer_its_link_and_idempotency(api: Api) -> None:
    made = api.offer({"recipient": "cand@example.net", "job": "経理", "channel": "求人媒体",
                      "stage": "一次面接", "locale": "ja"}, headers={"Idempotency-Key": "a-1"})
    assert made.status == 201, made.text
    assert made.headers["Cache-Control"] == "no-store"
    body = made.json
    offer = api.ledger.offer(body["offer_id"])
    assert offer is not None and offer.source == "api" and offer.company == "acme"
    assert (offer.recipient, offer.job, offer.channel, offer.stage) == (
        "cand@example.net", "経理", "求人媒体", "一次面接")
    # Exactly the gateway's link: the token signed at the offer's second (gateway/rejection.py).
    signer = LinkSigner.from_settings(api.settings)
    assert body["link"] == link(PUBLIC_URL, signer.token(offer.id, offer.created.timestamp()))
    assert signer.offer_id(body["link"].rsplit("/", 1)[1]) == offer.id
    expires = dt.datetime.fromisoformat(body["expires_at"])
    assert expires == offer.created + dt.timedelta(days=90)
    # The same Idempotency-Key: the same offer, 200.
    again = api.offer({"recipient": "cand@example.net", "job": "経理", "channel": "求人媒体",
                       "stage": "一次面接", "locale": "ja"}, headers={"Idempotency-Key": "a-1"})
    assert again.status == 200 and again.json == body
    # The key for another recipient is another request: refused, named.
    reused = api.offer({"recipient": "other@example.net"}, headers={"Idempotency-Key": "a-1"})
    assert _named(reused) == {"Idempotency-Key"}
    # Another key, or none: a new offer for the same person (a second rejection).
    assert api.offer(headers={"Idempotency-Key": "a-2"}).status == 201
    assert api.offer().status == 201
    # The same (message_id, recipient): the same offer; another recipient: another.
    first = api.offer({"recipient": "x@example.net", "message_id": "<m1@ats.example>"})
    second = api.offer({"recipient": "x@example.net", "message_id": "<m1@ats.example>"})
    assert (first.status, second.status) == (201, 200) and first.json == second.json
    assert api.offer({"recipient": "y@example.net",
                      "message_id": "<m1@ats.example>"}).status == 201
    # Counted as relayed offers are: a rejection and an offer each, retries nothing.
    r = api.report()
    assert (r["rejections"], r["offers"]) == (5, 5)
    assert r["offers_by_source"] == {"relay": 0, "api": 5, "link": 0}
    assert api.report("kumo")["offers"] == 0
    assert Book(api.ledger).verify()[1] is None


def test_an_api_offer_leads_to_a_qualified_forward_like_a_relayed_one(api: Api) -> None:
    made = api.offer({"recipient": "cand@example.net"}).json
    browser = {"User-Agent": PHONE}  # aiohttp's own is held as a scanner's (SPEC 8)
    # The candidate is elsewhere: an accept from the requester's network is held
    # (tests/test_api_attacks.py).
    page = api.request("GET", made["link"].removeprefix(PUBLIC_URL), key=None, route="page",
                       headers=browser, source=ELSEWHERE)
    assert page.status == 200 and "株式会社アクメ" in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    posted = api.request("POST", made["link"].removeprefix(PUBLIC_URL), key=None,
                         route="page", headers=browser, source=ELSEWHERE,
                         data={"csrf": csrf.group(1), "lang": "ja",
                               "decision": "accept", "agree": "yes",
                               "name": "山田 花子",
                               "email": "cand@example.net"})
    assert posted.status == 303
    state = api.request("GET", f"/api/v1/offers/{made['offer_id']}",
                        route="/offers/{offer_id}").json
    assert (state["viewed"], state["decision"], state["qualified"]) == (True, "accept", False)
    store = ConsentLedger(api.ledger, Rules.from_settings(api.settings))
    for forward in store.claim_due(10, 60):
        store.delivered(forward.id)
    state = api.request("GET", f"/api/v1/offers/{made['offer_id']}",
                        route="/offers/{offer_id}").json
    assert state == {"offer_id": made["offer_id"], "created": state["created"],
                     "viewed": True, "decision": "accept", "qualified": True}
    r = api.report()
    assert (r["accepted"], r["forwards_delivered"], r["qualified_forwards"]) == (1, 1, 1)


def test_an_offer_s_state_is_its_company_s_alone(api: Api) -> None:
    made = api.offer().json
    path = f"/api/v1/offers/{made['offer_id']}"
    state = api.request("GET", path, route="/offers/{offer_id}")
    assert state.status == 200 and "cand@example.net" not in state.text
    assert state.json["decision"] is None and state.json["viewed"] is False
    assert _problem(api.request("GET", path, key="kumo", route="/offers/{offer_id}"),
                    403)["detail"] == "the offer is another company's"
    for unknown in ("AAAAAAAAAAAAAAAA", "..%2F..%2Fetc", "x" * 500, "%00"):
        _problem(api.request("GET", f"/api/v1/offers/{unknown}", route="/offers/{offer_id}"),
                 404)


def test_the_report(api: Api) -> None:
    api.offer()
    report = api.request("GET", "/api/v1/report", route="/report")
    assert report.status == 200
    assert report.json["company"] == "acme" and report.json["offers"] == 1
    assert report.json["offers_by_source"] == {"relay": 0, "api": 1, "link": 0}
    today = dt.datetime.now(dt.UTC).date()
    before = api.request("GET", f"/api/v1/report?until={today - dt.timedelta(days=1)}",
                         route="/report")
    assert before.status == 200 and before.json["offers"] == 0
    assert _named(api.request("GET", "/api/v1/report?since=yesterday",
                              route="/report")) == {"since"}
    assert _named(api.request("GET", "/api/v1/report?since=2026-02-30",
                              route="/report")) == {"since"}
    assert _named(api.request("GET", "/api/v1/report?since=2026-05-01&until=2026-04-01",
                              route="/report")) == {"until"}
    assert _named(api.request("GET", "/api/v1/report?until=9999-12-31",
                              route="/report")) == {"until"}
    assert _named(api.request("GET", "/api/v1/report?since=0999-01-01",
                              route="/report")) == {"since"}
    assert _named(api.request("GET", "/api/v1/report?company=kumo",
                              route="/report")) == {"company"}


# -- keys and limits ------------------------------------------------------------------------


def test_no_key_a_bad_key_a_revoked_key(sqlite_api: Api) -> None:
    api = sqlite_api
    none = api.offer(key=None)
    assert _problem(none, 401) and none.headers["WWW-Authenticate"].startswith("Bearer")
    for bad in ("", "nonsense", api.acme[:-2] + "AA", api.acme.upper(), "x" * 4000):
        reply = api.offer(key=bad)
        _problem(reply, 401)
    basic = api.offer(key=None, headers={"Authorization": f"Basic {api.acme}"})
    _problem(basic, 401)
    key_id = api.acme.split("_")[1]
    assert api.offer().status == 201
    api.keys.revoke(key_id)
    # A right key is taken as checked for a second (consent_site/api/core.py): past it,
    # the revocation holds.
    state = api.client.server.app[API_APP][API]
    state.monotonic = lambda: time.monotonic() + KEY_CACHE_SECONDS
    revoked = api.offer()
    assert _problem(revoked, 401) and 'error="invalid_token"' in revoked.headers[
        "WWW-Authenticate"]
    assert api.report()["offers"] == 1


def test_the_rate_limit_is_per_key(make_config: ConfigMaker) -> None:
    harness = Api(make_config(ledger={"path": "ledger.db"}, companies=COMPANIES,
                              api={"rate_limit": 3}))
    try:
        for _ in range(3):
            assert harness.request("GET", "/api/v1/report", route="/report").status == 200
        over = harness.request("GET", "/api/v1/report", route="/report")
        assert _problem(over, 429) and int(over.headers["Retry-After"]) >= 1
        assert harness.offer().status == 429  # every route of the key
        assert harness.request("GET", "/api/v1/report", key="kumo",
                               route="/report").status == 200
        harness.seen = [s for s in harness.seen if s[2].status in (200, 429)]
        _check_against_openapi(harness)
    finally:
        harness.close()


def test_failed_keys_from_one_address_are_slowed(sqlite_api: Api) -> None:
    api = sqlite_api
    assert api.offer().status == 201  # the right key, seen once
    statuses = [api.offer(key=f"crk_{n:016x}_{'A' * 43}").status for n in range(40)]
    assert statuses[:30] == [401] * 30 and set(statuses[30:]) == {429}
    # A right key from that address is not refused: behind a proxy every client has that
    # address, and one client's guesses must not lock the others out.
    assert api.offer().status == 201
    # A key this site has not found right lately waits like a bad one: the database is
    # not asked for a client over its limit (tests/test_api_attacks.py).
    fresh = api.request("GET", "/api/v1/report", key="kumo", route="/report")
    assert _problem(fresh, 429) and int(fresh.headers["Retry-After"]) >= 1


# -- hostile requests -------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "named"), [
    ({}, {"recipient"}),
    ({"recipient": 12345}, {"recipient"}),
    ({"recipient": ["a@example.net"]}, {"recipient"}),
    ({"recipient": "no-at-sign"}, {"recipient"}),
    ({"recipient": "a@b@example.net"}, {"recipient"}),
    ({"recipient": "a b@example.net"}, {"recipient"}),
    ({"recipient": "a@localhost"}, {"recipient"}),
    ({"recipient": "a@example..net"}, {"recipient"}),
    ({"recipient": "a@example.net\r\nBcc: x@example.org"}, {"recipient"}),
    ({"recipient": "x" * 250 + "@example.net"}, {"recipient"}),
    ({"recipient": "hr@acme.example"}, {"recipient"}),          # staff: no link
    ({"recipient": "HR@ACME.EXAMPLE"}, {"recipient"}),
    ({"recipient": "hr@ＡＣＭＥ.example"}, {"recipient"}),
    ({"recipient": "a@example.net", "job": "x" * 201}, {"job"}),
    ({"recipient": "a@example.net", "job": ""}, {"job"}),
    ({"recipient": "a@example.net", "stage": "a\u2028b"}, {"stage"}),
    ({"recipient": "a@example.net", "channel": "\ud800"}, {"channel"}),
    ({"recipient": "a@example.net", "channel": "a\x00"}, {"channel"}),
    ({"recipient": "a@example.net", "job": 7}, {"job"}),
    ({"recipient": "a@example.net", "message_id": "<a b@x>"}, {"message_id"}),
    ({"recipient": "a@example.net", "message_id": "m" * 251}, {"message_id"}),
    ({"recipient": "a@example.net", "locale": "fr"}, {"locale"}),
    ({"recipient": "a@example.net", "company": "kumo"}, {"company"}),
    ({"recipient": "a@example.net", "source": "relay"}, {"source"}),
    ([{"recipient": "a@example.net"}], {"(body)"}),
    ("a@example.net", {"(body)"}),
    (None, {"(body)"}),
])
def test_a_field_that_fails_is_named(sqlite_api: Api, body: Any, named: set[str]) -> None:
    reply = sqlite_api.request("POST", "/api/v1/offers", data=json.dumps(body),
                               headers={"Content-Type": "application/json"})
    assert _named(reply) == named
    assert "example.net" not in reply.text and "@" not in reply.json["detail"]
    assert sqlite_api.report()["offers"] == 0


def test_unicode_that_is_fine_is_kept(sqlite_api: Api) -> None:
    made = sqlite_api.offer({"recipient": "山田@例え.jp", "job": "エンジニア（バックエンド）🚀",
                             "message_id": "<東京@ats>".encode().hex()})
    assert made.status == 201, made.text
    offer = sqlite_api.ledger.offer(made.json["offer_id"])
    assert offer is not None and offer.job == "エンジニア（バックエンド）🚀"


@pytest.mark.parametrize(("data", "headers", "status"), [
    (b"{", {"Content-Type": "application/json"}, 400),
    (b'{"recipient": "a@example.net"', {"Content-Type": "application/json"}, 400),
    (b'{"recipient": "a@example.net", "recipient": "b@example.net"}',
     {"Content-Type": "application/json"}, 400),
    (b"\xff\xfe{}", {"Content-Type": "application/json"}, 400),
    (b"[" * 5000 + b"]" * 5000, {"Content-Type": "application/json"}, 400),
    (b'{"recipient": "a@example.net"}', {"Content-Type": "text/plain"}, 415),
    (b'{"recipient": "a@example.net"}', {"Content-Type": "application/x-www-form-urlencoded"},
     415),
    (b'{"recipient": "a@example.net", "note": "' + b"x" * 20_000 + b'"}',
     {"Content-Type": "application/json"}, 413),
    (b'{"recipient": "a@example.net"}',
     {"Content-Type": "application/json", "Idempotency-Key": "キー"}, 400),
    (b'{"recipient": "a@example.net"}',
     {"Content-Type": "application/json", "Idempotency-Key": "k" * 256}, 400),
])
def test_malformed_requests(sqlite_api: Api, data: bytes, headers: dict[str, str],
                            status: int) -> None:
    _problem(sqlite_api.request("POST", "/api/v1/offers", data=data, headers=headers), status)
    assert sqlite_api.report()["offers"] == 0


def test_a_large_body_is_refused_as_it_arrives(sqlite_api: Api) -> None:
    """Chunked, with no Content-Length: counted while read, refused past the cap."""
    async def chunks() -> Any:
        yield b'{"recipient": "a@example.net", "job": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    reply = sqlite_api.request("POST", "/api/v1/offers", data=chunks(),
                               headers={"Content-Type": "application/json"})
    _problem(reply, 413)


def test_unknown_routes_and_methods_are_problems(sqlite_api: Api) -> None:
    _problem(sqlite_api.request("GET", "/api/v1/nothing", route="(none)"), 404)
    _problem(sqlite_api.request("GET", "/api/v2/offers", route="(none)"), 404)
    wrong = sqlite_api.request("DELETE", "/api/v1/offers", route="(none)")
    assert _problem(wrong, 405) and "POST" in wrong.headers["Allow"]


def test_no_personal_data_in_the_logs(sqlite_api: Api, caplog: pytest.LogCaptureFixture
                                      ) -> None:
    caplog.set_level(logging.DEBUG)
    made = sqlite_api.offer({"recipient": "private.person@example.net", "job": "経理"})
    assert made.status == 201
    sqlite_api.offer({"recipient": "private.person@example.net", "jobb": "経理"})
    sqlite_api.offer(key="crk_" + "0" * 16 + "_" + "B" * 43)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "api offer" in logged  # something is logged...
    assert "private.person" not in logged and "crk_" not in logged  # ...and never who


# -- the OpenAPI document, against the real responses ----------------------------------------


def _check_against_openapi(api: Api) -> None:
    """Every reply seen (but the candidate's page) against the served document: its status
    is documented for the route, and its body is valid for that status's schema."""
    served = api.request("GET", "/api/v1/openapi.json", key=None)
    assert served.status == 200
    doc = served.json
    assert doc["openapi"] == "3.1.0"
    # The document's schemas, as one resource its $refs resolve in (JSON Schema 2020-12).
    registry = Registry().with_resource("urn:openapi", Resource.from_contents(
        {"$schema": "https://json-schema.org/draft/2020-12/schema", **doc}))
    checked = 0
    for method, route, reply in api.seen:
        if route in ("page", "(none)", "/api/v1/openapi.json"):
            continue
        path = route if route.startswith("/api/v1") else "/api/v1" + route
        operation = doc["paths"][path][method.lower()]
        documented = operation["responses"]
        assert str(reply.status) in documented, (method, path, reply.status)
        kind = reply.headers["Content-Type"].split(";")[0]
        schema = documented[str(reply.status)]["content"][kind]["schema"]
        jsonschema.validate(reply.json, {"$ref": "urn:openapi#/components/schemas/"
                                                 + schema["$ref"].rsplit("/", 1)[1]},
                            cls=jsonschema.Draft202012Validator, registry=registry)
        checked += 1
    assert checked


def test_real_responses_match_the_served_openapi_document(api: Api) -> None:
    made = api.offer({"recipient": "cand@example.net", "job": "経理"},
                     headers={"Idempotency-Key": "doc-1"})
    api.offer({"recipient": "cand@example.net", "job": "経理"},
              headers={"Idempotency-Key": "doc-1"})
    api.offer({"recipient": "cand@example.net", "jobb": 1})
    api.request("POST", "/api/v1/offers", data=b"{", headers={"Content-Type":
                                                                "application/json"})
    api.request("POST", "/api/v1/offers", data=b"{}", headers={"Content-Type": "text/plain"})
    api.request("POST", "/api/v1/offers", data=b"x" * 20_000,
                headers={"Content-Type": "application/json"})
    api.offer(key="nonsense")
    state = f"/api/v1/offers/{made.json['offer_id']}"
    api.request("GET", state, route="/offers/{offer_id}")
    api.request("GET", state, key="kumo", route="/offers/{offer_id}")
    api.request("GET", "/api/v1/offers/AAAAAAAAAAAAAAAA", route="/offers/{offer_id}")
    api.request("GET", "/api/v1/report", route="/report")
    api.request("GET", "/api/v1/report?since=x", route="/report")
    statuses = {(m, r, reply.status) for m, r, reply in api.seen}
    assert {s for _, _, s in statuses} >= {200, 201, 400, 401, 403, 404, 413, 415, 422}
    _check_against_openapi(api)
    doc = api.request("GET", "/api/v1/openapi.json", key=None).json
    assert set(doc["paths"]) == {"/api/v1/offers", "/api/v1/offers/{offer_id}",
                                 "/api/v1/report", "/api/v1/openapi.json",
                                 "/api/v1/agency/forwards",
                                 "/api/v1/agency/forwards/{forward_id}/outcome",
                                 "/api/v1/agency/credits",
                                 "/api/v1/agency/credits/{credit_id}"}
    assert doc["servers"] == [{"url": PUBLIC_URL}]
    request_schema = doc["components"]["schemas"]["OfferRequest"]
    assert request_schema["required"] == ["recipient"]
    assert request_schema["additionalProperties"] is False


def test_concurrent_offers_share_commits_and_stay_idempotent(api: Api) -> None:
    """Many requests at once: one commit takes those that came while another ran
    (consent_site/api/batch.py); each distinct request is one offer, and the same
    Idempotency-Key sent ten times at once is still one offer."""
    async def burst() -> list[tuple[int, Any]]:
        headers = {"Authorization": f"Bearer {api.acme}"}

        async def one(body: dict[str, Any], extra: dict[str, str]) -> tuple[int, Any]:
            async with api.client.post("/api/v1/offers", json=body,
                                       headers={**headers, **extra}) as r:
                return r.status, await r.json()

        distinct = [one({"recipient": f"c{n}@example.net"}, {}) for n in range(40)]
        same = [one({"recipient": "same@example.net"}, {"Idempotency-Key": "once"})
                for _ in range(10)]
        return list(await asyncio.gather(*distinct, *same))

    replies = api.loop.run_until_complete(burst())
    distinct, same = replies[:40], replies[40:]
    assert {s for s, _ in distinct} == {201}
    assert len({b["offer_id"] for _, b in distinct}) == 40
    assert sorted(s for s, _ in same) == [200] * 9 + [201]
    assert len({b["offer_id"] for _, b in same}) == 1
    assert len({b["link"] for _, b in same}) == 1
    r = api.report()
    assert (r["offers"], r["rejections"]) == (41, 41)
    assert Book(api.ledger).verify()[1] is None


def test_the_ledger_away_is_a_503_problem(sqlite_api: Api, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """SPEC 12: the database away; nothing recorded, the request can be repeated."""
    from career_relay.errors import LedgerUnavailable

    state = sqlite_api.client.server.app[API_APP][API]

    def away(*_: Any) -> None:
        raise LedgerUnavailable("the ledger's database cannot be reached")

    monkeypatch.setattr(state.keys, "check", away)
    reply = sqlite_api.offer()
    assert _problem(reply, 503)["detail"] == "the ledger is unavailable; try again later"
    assert reply.headers["Retry-After"] == "30"
    monkeypatch.undo()
    monkeypatch.setattr(state.ledger, "insert_prepared", away)
    _problem(sqlite_api.offer(), 503)
    monkeypatch.undo()
    assert sqlite_api.offer().status == 201  # back: the same request goes through
    _check_against_openapi(sqlite_api)  # the 503s as documented


def test_a_refused_offer_fails_alone_in_its_batch(sqlite_api: Api) -> None:
    """As LedgerWriter (main's attack review): one value the ledger refuses rolls back the
    batch; each is then tried alone, so only its own request hears of it."""
    from career_relay.errors import LedgerConflict
    from career_relay.ledger import ApiRequest, Rejection, new_offer_id
    from consent_site.api.batch import OfferBatches

    real = sqlite_api.ledger.insert_prepared

    def refusing(conn: Any, prepared: Any, counts: Any = None) -> Any:
        if any(r.message_id == "<bad>" for r in prepared.rejections):
            raise LedgerConflict("refused")
        return real(conn, prepared, counts)

    sqlite_api.ledger.insert_prepared = refusing  # type: ignore[method-assign]
    batches = OfferBatches(sqlite_api.ledger)

    async def together() -> list[Any]:
        return list(await asyncio.gather(*(
            batches.record(ApiRequest(Rejection("acme", m, ((f"{n}@example.net",
                                                             new_offer_id()),),
                                                source="api"), None))
            for n, m in enumerate(["<a>", "<bad>", "<b>", "<c>"])), return_exceptions=True))

    try:
        found = sqlite_api.loop.run_until_complete(together())
    finally:
        batches.close()
        del sqlite_api.ledger.insert_prepared
    assert isinstance(found[1], LedgerConflict)
    assert all(isinstance(f, str) for i, f in enumerate(found) if i != 1)
    assert sqlite_api.report()["offers"] == 3
