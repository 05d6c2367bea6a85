"""The agency's side of free referrals over the API (SPEC 11, issue 15 items 2 and 3): the
requests a company made of its agency, listed to that agency only, answered fulfilled or
cancelled once, a retry of the same answer taken as it stands, another answer refused; on
the real site over a real ledger, both backends where the ledger decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from career_relay.ledger import Book, Referrals
from tests.conftest import ConfigMaker
from tests.test_agency_api import AgencyApi, _harness
from tests.test_api import _check_against_openapi, _problem

ROUTE = "/agency/credits"


class CreditsApi(AgencyApi):
    def credit(self, company: str = "acme") -> str:
        """A credit of ``company``: ten consents its agency received."""
        self.accepted(company, 10)
        self.deliver()
        credits = [c for c in Book(self.ledger).credits(company) if not c.get("redeemed")]
        assert credits, "ten delivered consents mint a credit"
        return str(credits[-1]["id"])

    def ask(self, company: str = "acme", agency: str = "default", note: str = "") -> str:
        self.credit(company)
        return Referrals(self.ledger).request(company, agency, by="hr@acme.example",
                                              note=note).id

    def credits(self, query: str = "", key: str = "east") -> Any:
        return self.request("GET", f"/api/v1/agency/credits{query}", key=key, route=ROUTE)

    def answer(self, request_id: str, body: Any, key: str = "east", **kw: Any) -> Any:
        return self.request("POST", f"/api/v1/agency/credits/{request_id}", key=key,
                            route=ROUTE + "/{credit_id}",
                            **({"json": body} if "data" not in kw else {}), **kw)


@pytest.fixture
def api(make_config: ConfigMaker, backend_url: str) -> Iterator[CreditsApi]:
    for made in _harness(make_config, backend_url):
        made.__class__ = CreditsApi
        yield made  # type: ignore[misc]


def test_the_agency_sees_its_requests_and_fulfils_one_once(api: CreditsApi) -> None:
    request_id = api.ask(note="経理の候補者を一名")
    listed = api.credits()
    assert listed.status == 200, listed.text
    (item,) = listed.json["items"]
    assert item["credit_id"] == request_id and item["state"] == "requested"
    assert item["company"] == "acme" and item["company_name"] == "株式会社アクメ"
    assert item["note"] == "経理の候補者を一名" and item["settled"] is None
    assert api.credits(key="north").json["items"] == []  # another agency's: not shown
    done = api.answer(request_id, {"state": "fulfilled", "note": "紹介済み"})
    assert done.status == 200, done.text
    assert done.json["state"] == "fulfilled" and done.json["settled"] is not None
    assert done.json["settled_note"] == "紹介済み"
    again = api.answer(request_id, {"state": "fulfilled"})  # a retry after a lost reply
    assert again.status == 200 and again.json == done.json
    assert "fulfilled" in _problem(api.answer(request_id, {"state": "cancelled"}),
                                   409)["detail"]
    assert Referrals(api.ledger).request_of(request_id).state == "fulfilled"  # type: ignore[union-attr]
    assert api.report()["credits_fulfilled"] == 1
    assert Book(api.ledger).verify()[1] is None
    assert [i["state"] for i in api.credits("?state=fulfilled").json["items"]] == ["fulfilled"]
    assert api.credits("?state=requested").json["items"] == []


def test_a_cancelled_request_frees_its_credit_for_another(api: CreditsApi) -> None:
    first = api.ask()
    cancelled = api.answer(first, {"state": "cancelled", "note": "該当者なし"})
    assert cancelled.status == 200 and cancelled.json["state"] == "cancelled"
    second = Referrals(api.ledger).request("acme", "default", by="hr@acme.example").id
    assert second != first
    page = api.credits("?limit=1")
    assert [i["credit_id"] for i in page.json["items"]] == [first] and page.json["more"]
    rest = api.credits(f"?limit=1&after={page.json['next']}")
    assert [i["credit_id"] for i in rest.json["items"]] == [second]
    assert not rest.json["more"]


def test_requests_of_others_unknown_ids_and_wrong_keys(api: CreditsApi) -> None:
    request_id = api.ask()
    body = {"state": "fulfilled"}
    answers = [api.answer(request_id, body, key="north"), api.answer("rq_nope", body),
               api.answer("x" * 300, body)]
    assert {_problem(a, 404)["detail"] for a in answers} == {
        "no such credit request of this agency"}
    _problem(api.answer(request_id, body, key="acme"), 403)  # a company's key
    _problem(api.credits(key="acme"), 403)
    _problem(api.credits(key=None), 401)
    _problem(api.credits("?after=rq_nope"), 400)
    _problem(api.credits(f"?after={request_id}", key="north"), 400)  # east's, not north's
    for bad, field in [({"state": "requested"}, "state"), ({"state": "done"}, "state"),
                       ({"state": "fulfilled", "note": "a\x00b"}, "note"),
                       ({"state": "fulfilled", "note": "x" * 501}, "note"),
                       ({"state": "fulfilled", "by": "x"}, "by")]:
        found = _problem(api.answer(request_id, bad), 422)
        assert field in {e["field"] for e in found["errors"]}, bad
    _problem(api.credits("?state=lost"), 422)
    _problem(api.credits("?limit=0"), 422)
    assert Referrals(api.ledger).request_of(request_id).state == "requested"  # type: ignore[union-attr]
    _check_against_openapi(api)
