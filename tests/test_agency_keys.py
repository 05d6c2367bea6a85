"""The agencies' API keys (SPEC 11, issue 15 item 1): ``AgencyKeys`` on both backends,
``career-relay agency-key`` as a subprocess, and the wall between them and the companies'
keys: an agency's key never authenticates as a company, nor a company's as an agency, even
where an agency and a company have the same id and the keys the same id part."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from career_relay import settings as settings_mod
from career_relay.ledger import AgencyKeys, ApiKeys, Ledger, open_configured
from tests.conftest import ConfigMaker, run_cli
from tests.test_api import Api, _harness

COMPANIES = [
    {"id": "acme", "name": "株式会社アクメ", "domains": ["acme.example"], "agency": "acme"},
    {"id": "kumo", "name": "雲株式会社", "domains": ["kumo.example"]},
]
#: An agency whose id is a company's too: ids alone must never open the other's door.
AGENCIES: dict[str, Any] = {"id": "acme", "name": "アクメ人材株式会社",
                            "license_no": "13-ユ-333333",
                            "privacy_url": "https://acme-agency.example/privacy"}
KEY = r"cra_[0-9a-f]{16}_[A-Za-z0-9_-]{43}"


def _config(make_config: ConfigMaker, url: str) -> Path:
    path = make_config(ledger={"url": url}, agency={"name": "株式会社デフォルト人材"},
                       companies=COMPANIES)
    text = path.read_text(encoding="utf-8") + (
        "[[agencies]]\n" + "".join(f'{k} = "{v}"\n' for k, v in AGENCIES.items()))
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def ledger(make_config: ConfigMaker, backend_url: str) -> Iterator[Ledger]:
    settings = settings_mod.load(_config(make_config, backend_url))
    with open_configured(settings) as opened:
        yield opened


def test_an_agency_key_is_stored_hashed_and_checks_until_revoked(ledger: Ledger) -> None:
    keys = AgencyKeys(ledger)
    made, key = keys.create("acme", "pull\nworker")
    assert re.fullmatch(KEY, key) and made.name == "pull worker"
    with ledger.read() as conn:
        (row,) = conn.execute("SELECT id, agency, name, hash, revoked FROM agency_keys"
                              ).fetchall()
        assert conn.execute("SELECT COUNT(*) FROM api_keys").fetchone()[0] == 0
    assert tuple(row) == (made.id, "acme", made.name, hashlib.sha256(key.encode()).hexdigest(),
                          None)
    found = keys.check(key)
    assert found is not None and (found.id, found.agency) == (made.id, "acme")
    for wrong in (key[:-1] + ("A" if key[-1] != "A" else "B"), key[:-1], key + "A",
                  key.replace("cra_", "crk_"), " " + key, "", str(row[3])):
        assert keys.check(wrong) is None, wrong[:60]
    _, other_key = keys.create("default")
    assert [k.id for k in keys.list("acme")] == [made.id]
    assert keys.revoke(made.id, "default") is None  # another agency's: not found
    assert keys.check(key) is not None
    revoked = keys.revoke(made.id)
    assert revoked is not None and not revoked.active and keys.check(key) is None
    assert keys.check(other_key) is not None


def test_an_agency_key_is_never_a_company_key_and_back(ledger: Ledger) -> None:
    """Both tables hold a key for "acme" (the agency and the company); each key opens its
    own kind only: another table, another prefix, and a copied id part changes nothing."""
    agency_row, agency_key = AgencyKeys(ledger).create("acme")
    company_row, company_key = ApiKeys(ledger).create("acme")
    assert AgencyKeys(ledger).check(agency_key) is not None
    assert ApiKeys(ledger).check(company_key) is not None
    assert ApiKeys(ledger).check(agency_key) is None
    assert AgencyKeys(ledger).check(company_key) is None
    # The same secret and id under the other prefix: still no key of the other kind.
    assert ApiKeys(ledger).check("crk_" + agency_key[4:]) is None
    assert AgencyKeys(ledger).check("cra_" + company_key[4:]) is None
    # Revoking by id reaches its own kind only.
    assert ApiKeys(ledger).revoke(agency_row.id) is None
    assert AgencyKeys(ledger).revoke(company_row.id) is None
    assert AgencyKeys(ledger).check(agency_key) is not None
    assert ApiKeys(ledger).check(company_key) is not None


@pytest.fixture
def api(make_config: ConfigMaker) -> Iterator[Api]:
    yield from _harness(make_config, "")


def test_an_agency_key_opens_no_company_api(api: Api) -> None:
    """The real site: the company API answers 403 to an agency's key (a key, of the other
    kind), 401 to a revoked one, 201 to the company's."""
    _, agency_key = AgencyKeys(api.ledger).create("default")
    for path in ("/api/v1/offers",):
        refused = api.request("POST", path, key=agency_key,
                              json={"recipient": "cand@example.net"})
        assert refused.status == 403, refused.text
    assert api.request("GET", "/api/v1/report", key=agency_key).status == 403
    AgencyKeys(api.ledger).revoke(agency_key[4:20])
    api.loop.run_until_complete(asyncio.sleep(1.1))  # past the key cache
    assert api.request("GET", "/api/v1/report", key=agency_key).status == 401
    assert api.offer().status == 201  # the company's own key still works


def test_agency_key_commands(make_config: ConfigMaker, backend_url: str) -> None:
    config = str(_config(make_config, backend_url))
    made = run_cli("agency-key", "create", "--agency", "acme", "--name", "ATS pull",
                   "--config", config)
    assert made.returncode == 0, made.stderr
    (key,) = made.stdout.splitlines()  # the key alone, on a line of its own
    assert re.fullmatch(KEY, key)
    key_id = key.split("_")[1]
    assert "shown once" in made.stderr and key not in made.stderr
    assert run_cli("agency-key", "create", "--agency", "default", "--config",
                   config).returncode == 0
    listed = run_cli("agency-key", "list", "--config", config)
    assert listed.returncode == 0 and key_id in listed.stdout and "active" in listed.stdout
    assert key.split("_", 2)[2] not in listed.stdout + listed.stderr
    mine = run_cli("agency-key", "list", "--agency", "acme", "--config", config).stdout
    assert mine.splitlines()[0].split()[:2] == [key_id, "acme"] and len(mine.splitlines()) == 1
    # Not the company API's keys: `api-key list` shows none of them.
    assert key_id not in run_cli("api-key", "list", "--config", config).stdout
    unknown = run_cli("agency-key", "create", "--agency", "nowhere", "--config", config)
    assert unknown.returncode == 1 and "no agency 'nowhere'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    usage = run_cli("agency-key", "create", "--config", config)
    assert usage.returncode == 2 and "--agency ID" in usage.stderr
    company_key = run_cli("api-key", "create", "--company", "acme", "--config", config).stdout
    wrong = run_cli("agency-key", "revoke", company_key.split("_")[1], "--config", config)
    assert wrong.returncode == 1 and "no agency key" in wrong.stderr
    gone = run_cli("agency-key", "revoke", key_id, "--config", config)
    assert gone.returncode == 0 and f"agency key {key_id} of acme revoked" in gone.stdout
    assert "revoked" in run_cli("agency-key", "list", "--agency", "acme", "--config",
                                config).stdout
