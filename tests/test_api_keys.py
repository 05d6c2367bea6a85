"""The company API's keys (SPEC 10, issue 14 item 1): the ledger's ``ApiKeys`` on both
backends, ``career-relay api-key``, and the admin pages' keys (create shown once, list,
revoke; a company's user sees only its own; CSRF on every POST)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from career_relay import settings as settings_mod
from career_relay.ledger import ApiKeys, Ledger, open_configured
from tests.conftest import ConfigMaker, run_cli
from tests.test_admin import COMPANIES, Admin, _harness


@pytest.fixture
def ledger(make_config: ConfigMaker, backend_url: str) -> Iterator[Ledger]:
    settings = settings_mod.load(make_config(ledger={"url": backend_url}, companies=COMPANIES))
    with open_configured(settings) as opened:
        yield opened


def _rows(ledger: Ledger) -> list[tuple[str, ...]]:
    with ledger.read() as conn:
        return [tuple(r) for r in conn.execute("SELECT id, company, name, hash, created, revoked"
                                               " FROM api_keys ORDER BY id").fetchall()]


def test_a_key_is_stored_hashed_and_checks_until_revoked(ledger: Ledger) -> None:
    keys = ApiKeys(ledger)
    made, key = keys.create("acme", "HERP 本番\n\tsecond line")
    assert re.fullmatch(r"crk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", key)
    assert made.name == "HERP 本番 second line"  # one line
    (row,) = _rows(ledger)
    assert row[:3] == (made.id, "acme", made.name)
    assert row[3] == hashlib.sha256(key.encode()).hexdigest() and key not in row
    found = keys.check(key)
    assert found is not None and (found.id, found.company) == (made.id, "acme")
    # Anything else is no key: another secret under the same id, a cut or padded key,
    # unicode, a huge value, the stored hash itself.
    for wrong in (key[:-1] + ("A" if key[-1] != "A" else "B"), key[:-1], key + "A",
                  key.upper(), key.replace("crk_", "CRK_"), " " + key, key + "\n",
                  "crk_" + made.id + "_" + "é" * 43, "x" * 100_000, "", row[3]):
        assert keys.check(wrong) is None, wrong[:60]
    other, other_key = keys.create("kumo")
    assert [k.id for k in keys.list("acme")] == [made.id]
    assert {k.id for k in keys.list()} == {made.id, other.id}
    assert keys.revoke(made.id, company="kumo") is None  # another company's: not found
    assert keys.check(key) is not None
    revoked = keys.revoke(made.id, company="acme")
    assert revoked is not None and revoked.revoked is not None and not revoked.active
    assert keys.check(key) is None
    assert keys.check(other_key) is not None
    again = keys.revoke(made.id)  # revoking twice keeps the first time
    assert again is not None and again.revoked == revoked.revoked
    assert keys.revoke("0123456789abcdef") is None


def test_api_key_commands(make_config: ConfigMaker, backend_url: str) -> None:
    config = str(make_config(ledger={"url": backend_url}, companies=COMPANIES))
    made = run_cli("api-key", "create", "--company", "acme", "--name", "ATS", "--config", config)
    assert made.returncode == 0, made.stderr
    (key,) = made.stdout.splitlines()  # the key alone, on a line of its own
    assert re.fullmatch(r"crk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", key)
    key_id = key.split("_")[1]
    assert "shown once" in made.stderr and key not in made.stderr
    run_cli("api-key", "create", "--company", "kumo", "--config", config)
    listed = run_cli("api-key", "list", "--config", config)
    assert listed.returncode == 0 and key_id in listed.stdout and "active" in listed.stdout
    assert key not in listed.stdout and key.split("_", 2)[2] not in listed.stdout
    assert len(run_cli("api-key", "list", "--company", "acme", "--config",
                       config).stdout.splitlines()) == 1
    gone = run_cli("api-key", "revoke", key_id, "--config", config)
    assert gone.returncode == 0 and f"API key {key_id} of acme revoked" in gone.stdout
    assert "revoked" in run_cli("api-key", "list", "--company", "acme", "--config",
                                config).stdout
    unknown = run_cli("api-key", "revoke", "0123456789abcdef", "--config", config)
    assert unknown.returncode == 1 and "no API key 0123456789abcdef" in unknown.stderr
    nobody = run_cli("api-key", "create", "--company", "nope", "--config", config)
    assert nobody.returncode == 1 and "no company 'nope'" in nobody.stderr
    for usage in (["create"], ["revoke"], ["list", "abc"]):
        bad = run_cli("api-key", *usage, "--config", config)
        assert bad.returncode == 2, usage
        assert "Traceback" not in bad.stderr


# -- the admin pages ------------------------------------------------------------------------


@pytest.fixture
def site(make_config: ConfigMaker) -> Iterator[Admin]:
    """SQLite-only: the pages are the site's; the rows they write are the ledger's (above)."""
    yield from _harness(make_config, "")


def test_a_company_user_creates_lists_and_revokes_its_own_keys(site: Admin) -> None:
    site.login("hr@acme.example")
    page = site.get("/admin/api-keys")
    assert page.status == 200 and "まだAPIキーはありません" in page.text
    assert page.headers["Cache-Control"] == "no-store"
    made = site.post("/admin/api-keys", {"csrf": page.csrf(), "company": "acme",
                                         "name": "<b>HERP</b>"})
    assert made.status == 200 and made.headers["Cache-Control"] == "no-store"
    found = re.search(r'<code id="new-key">(crk_[^<]+)</code>', made.text)
    assert found is not None
    key = found.group(1)
    assert "&lt;b&gt;HERP&lt;/b&gt;" in made.text and "<b>HERP</b>" not in made.text
    assert ApiKeys(site.ledger).check(key) is not None
    # Shown once: the list shows the id, never the key again.
    listed = site.get("/admin/api-keys")
    key_id = key.split("_")[1]
    assert key_id in listed.text and key not in listed.text
    # Without the nonce nothing happens.
    assert site.post(f"/admin/api-keys/{key_id}/revoke", {"company": "acme"}).status == 403
    assert site.post("/admin/api-keys", {"company": "acme"}).status == 403
    assert len(ApiKeys(site.ledger).list("acme")) == 1
    gone = site.post(f"/admin/api-keys/{key_id}/revoke", {"csrf": listed.csrf(),
                                                          "company": "acme"})
    assert gone.status == 303 and gone.headers["Location"].startswith("/admin/api-keys?")
    assert ApiKeys(site.ledger).check(key) is None
    assert "無効（" in site.get("/admin/api-keys").text


def test_another_company_s_keys_are_out_of_reach(site: Admin) -> None:
    kumo, _ = ApiKeys(site.ledger).create("kumo", "kumo's ATS")
    site.login("hr@acme.example")
    nonce = site.nonce("/admin/api-keys")
    assert kumo.id not in site.get("/admin/api-keys").text
    assert site.get("/admin/api-keys?company=kumo").status == 404
    assert site.post(f"/admin/api-keys/{kumo.id}/revoke", {"csrf": nonce,
                                                           "company": "kumo"}).status == 404
    assert site.post(f"/admin/api-keys/{kumo.id}/revoke", {"csrf": nonce,
                                                           "company": "acme"}).status == 404
    assert site.post("/admin/api-keys", {"csrf": nonce, "company": "kumo"}).status == 404
    assert ApiKeys(site.ledger).get(kumo.id).active  # type: ignore[union-attr]
    assert ApiKeys(site.ledger).list("kumo") == [kumo]
    # The operator may manage any company's.
    site.login("ops@relay.example")
    page = site.get("/admin/api-keys?company=kumo")
    assert kumo.id in page.text
    assert site.post(f"/admin/api-keys/{kumo.id}/revoke", {"csrf": page.csrf(),
                                                           "company": "kumo"}).status == 303


def test_the_cli_and_the_pages_share_the_keys(site: Admin, tmp_path: Path) -> None:
    made = run_cli("api-key", "create", "--company", "acme", "--config", str(site.config))
    key_id = made.stdout.split("_")[1]
    site.login("hr@acme.example")
    assert key_id in site.get("/admin/api-keys").text


def test_offers_by_source_on_the_dashboard_in_the_csv_and_the_cli(site: Admin) -> None:
    """SPEC 8 ``offers_by_source``: the admin's report table and CSV show it as three
    columns, ``career-relay report`` too (and as an object in its JSON)."""
    site.ledger.record_offer("acme", "<r@acme.example>", "r@example.net")
    site.ledger.record_offer("acme", "<a@acme.example>", "a@example.net", source="api")
    site.ledger.record_offer("acme", "<b@acme.example>", "b@example.net", source="api")
    site.ledger.record_offer("acme", "<l@acme.example>", "l@example.net", source="link")
    site.login("hr@acme.example")
    page = site.get("/admin/")
    shown = dict(re.findall(r'<tr data-field="(offers_\w+)"><th scope="row">[^<]*<code>\w+'
                            r'</code></th><td class="num">(\d+)</td>', page.text))
    assert shown == {"offers_relay": "1", "offers_api": "2", "offers_link": "1"}
    csv_text = site.get("/admin/export/report.csv").body.decode("utf-8-sig")
    header, row = (line.split(",") for line in csv_text.splitlines()[:2])
    found = dict(zip(header, row, strict=True))
    assert (found["offers"], found["offers_relay"], found["offers_api"],
            found["offers_link"]) == ("4", "1", "2", "1")
    config = str(site.config)
    as_json = json.loads(run_cli("report", "--company", "acme", "--format", "json",
                                 "--config", config).stdout)
    assert as_json[0]["offers_by_source"] == {"relay": 1, "api": 2, "link": 1}
    as_csv = run_cli("report", "--company", "acme", "--format", "csv", "--config", config)
    lines = as_csv.stdout.splitlines()
    assert dict(zip(lines[0].split(","), lines[1].split(","), strict=True))["offers_api"] \
        == "2"
    table = run_cli("report", "--company", "acme", "--config", config).stdout
    assert re.search(r"^offers_link\s+1$", table, re.M)
