"""Several agencies in the configuration (SPEC 11, issue 15 item 1): ``[[agencies]]``,
``companies.agency``, the single ``[agency]`` as agency ``default``, and what
``check-config`` refuses.  The CLI runs as a subprocess."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from career_relay import reload
from career_relay import settings as settings_mod
from tests.conftest import run_cli

NORTH = """
[[agencies]]
id = "north"
name = "北日本人材株式会社"
license_no = "01-ユ-111111"
privacy_url = "https://north.example/privacy"
webhook_url = "https://north.example/hook"
webhook_secret = "north-secret-value"
"""
SOUTH = """
[[agencies]]
id = "south"
name = "South Careers K.K."
license_no = "47-ユ-222222"
privacy_url = "https://south.example/privacy"
deliver = "email"
email = "intake@south.example"
"""
SINGLE = """
[agency]
name = "株式会社ひとつ"
webhook_url = "https://one.example/hook"
webhook_secret = "single-secret-value"
"""


def company(cid: str, agency: str | None = None) -> str:
    line = f'agency = "{agency}"\n' if agency else ""
    return f'[[companies]]\nid = "{cid}"\nname = "{cid}"\ndomains = ["{cid}.example"]\n{line}'


def check(tmp_path: Path, text: str) -> tuple[int, str]:
    path = tmp_path / "career-relay.toml"
    path.write_text(text, encoding="utf-8")
    result = run_cli("check-config", "--config", str(path))
    assert "Traceback" not in result.stderr
    return result.returncode, result.stdout + result.stderr


def load(tmp_path: Path, text: str) -> settings_mod.Settings:
    path = tmp_path / "career-relay.toml"
    path.write_text(text, encoding="utf-8")
    return settings_mod.load(path, env={})


def test_each_company_has_its_agency(tmp_path: Path) -> None:
    s = load(tmp_path, SINGLE + NORTH + SOUTH + company("acme", "north")
             + company("beta", "south") + company("gamma"))
    assert [a.id for a in s.all_agencies] == ["default", "north", "south"]
    north, south, single = s.agency_of("acme"), s.agency_of("beta"), s.agency_of("gamma")
    assert north is not None and south is not None and single is not None
    assert (north.name, north.webhook_secret) == ("北日本人材株式会社", "north-secret-value")
    assert (south.deliver, south.email) == ("email", "intake@south.example")
    assert (single.id, single.name, single.webhook_secret) == (
        "default", "株式会社ひとつ", "single-secret-value")
    assert s.agency_of("nobody") is None


def test_the_single_agency_alone_is_default(tmp_path: Path) -> None:
    s = load(tmp_path, SINGLE + company("acme"))
    (only,) = s.all_agencies
    assert (only.id, only.name) == ("default", "株式会社ひとつ")
    assert s.agency_of("acme") == only
    # And with no [agency] at all: the embedded sample, as before.
    s = load(tmp_path, company("acme"))
    assert [a.id for a in s.all_agencies] == ["default"]


def test_without_agency_table_there_is_no_default(tmp_path: Path) -> None:
    """[[agencies]] without "default" and no [agency]: a company naming none is refused,
    never sent to the sample agency."""
    code, out = check(tmp_path, NORTH + company("acme"))
    assert code == 1
    assert "companies[acme].agency: no agency 'default' (configured: north)" in out


def test_secrets_are_masked_wherever_settings_are_shown(tmp_path: Path) -> None:
    s = load(tmp_path, SINGLE + NORTH + company("acme", "north"))
    shown = repr(s) + repr(s.all_agencies)
    assert "north-secret-value" not in shown and "single-secret-value" not in shown
    assert "********" in repr(s.agency_by_id("north"))


def test_check_config_refuses(tmp_path: Path) -> None:
    text = (SINGLE + NORTH + NORTH.replace("north-secret-value", "another-secret")
            + NORTH.replace('"north"', '"default"').replace("north-secret-value", "third")
            + SOUTH.replace("\ndeliver = \"email\"", "\ndeliver = \"fax\"")
            + '[[agencies]]\nid = "Bad Id"\n'
            + NORTH.replace('"north"', '"copycat"')  # the same secret as north
            + company("acme", "nowhere"))
    code, out = check(tmp_path, text)
    assert code == 1
    for expected in ("agencies[north].id is used twice",
                     "agencies[default]: both [agency] and this [[agencies]] entry define "
                     "the agency 'default'",
                     "agencies[south].deliver must be one of webhook, email, pull, not 'fax'",
                     "agencies[Bad Id].id must be lower-case letters",
                     "agencies[Bad Id].name is required",
                     "agencies[copycat].webhook_secret is also north's",
                     "companies[acme].agency: no agency 'nowhere'"):
        assert expected in out, (expected, out)
    # Never a secret in a message.
    for secret in ("north-secret-value", "another-secret", "single-secret-value", "third"):
        assert secret not in out


def test_check_config_accepts_several_agencies(tmp_path: Path) -> None:
    code, out = check(tmp_path, SINGLE + NORTH + SOUTH + company("acme", "north")
                      + company("beta", "south") + company("gamma"))
    assert code == 0, out


def test_an_agency_s_secret_from_the_environment(tmp_path: Path) -> None:
    """CAREER_RELAY_AGENCIES_<ID>_<KEY>: each agency's secret can stay out of the file; a
    variable for an agency the file does not have is an error, not ignored."""
    path = tmp_path / "career-relay.toml"
    path.write_text(NORTH.replace('webhook_secret = "north-secret-value"\n', "")
                    + NORTH.replace('"north"', '"north-2"').replace("north-secret-value", "n2")
                    + SINGLE + company("acme", "north"), encoding="utf-8")
    s = settings_mod.load(path, env={
        "CAREER_RELAY_AGENCIES_NORTH_WEBHOOK_SECRET": "from-the-environment",
        "CAREER_RELAY_AGENCIES_NORTH_2_TIMEOUT": "7"})
    north, north_2 = s.agency_by_id("north"), s.agency_by_id("north-2")
    assert north is not None and north.webhook_secret == "from-the-environment"
    assert north_2 is not None and (north_2.timeout, north_2.webhook_secret) == (7, "n2")
    assert "from-the-environment" not in repr(s)
    result = run_cli("check-config", "--config", str(path),
                     env={"CAREER_RELAY_AGENCIES_SOUTH_WEBHOOK_SECRET": "x"})
    assert result.returncode == 1
    assert "unknown setting in the environment: CAREER_RELAY_AGENCIES_SOUTH_WEBHOOK_SECRET" in (
        result.stdout + result.stderr)
    # Without the variable, north has a URL and no secret: refused, by name.
    code, out = check(tmp_path, path.read_text(encoding="utf-8"))
    assert code == 1 and "agencies[north].webhook_secret is required" in out


def test_ids_that_read_the_same_variables_are_refused(tmp_path: Path) -> None:
    code, out = check(tmp_path, SINGLE + NORTH.replace('"north"', '"a-b"')
                      + NORTH.replace('"north"', '"a_b"').replace("north-secret-value", "x")
                      + company("acme"))
    assert code == 1
    assert "agencies[a_b].id reads the same environment variables as a-b" in out


def test_a_reload_never_sends_a_company_to_an_agency_not_running(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SIGHUP takes new [[companies]], not new [[agencies]] (a restart): a company moved to
    a running agency moves; one moved to an agency the process does not run is refused."""
    path = tmp_path / "career-relay.toml"
    path.write_text(SINGLE + NORTH + company("acme", "north"), encoding="utf-8")
    current = settings_mod.load(path)
    path.write_text(SINGLE + NORTH + company("acme"), encoding="utf-8")
    moved = reload.reread(current)
    assert moved is not None and moved.agency_of("acme") == current.agency_by_id("default")
    path.write_text(SINGLE + NORTH + SOUTH + company("acme", "south"), encoding="utf-8")
    with caplog.at_level(logging.ERROR, "career_relay.reload"):
        assert reload.reread(current) is None
    assert "agency south is not running yet" in caplog.text
    assert reload.restart_needed(current, settings_mod.load(path)) == ["[[agencies]]"]


def test_the_appended_block_and_the_link_mail_name_the_company_s_agency(
        tmp_path: Path) -> None:
    """What the gateway appends to a rejection (templates/emails) and the company link's
    mail name each company's own agency."""
    import datetime as dt

    from career_relay.company_link import personal_mail
    from gateway.rejection import _Companies
    from tests.conftest import REPO

    s = load(tmp_path, SINGLE + NORTH + SOUTH + company("acme", "north")
             + company("beta", "south") + company("gamma"))
    texts = _Companies(s, REPO / "templates" / "emails").texts
    for cid, name, others in (("acme", "北日本人材株式会社", ("South Careers", "ひとつ")),
                              ("beta", "South Careers K.K.", ("北日本", "ひとつ")),
                              ("gamma", "株式会社ひとつ", ("北日本", "South Careers"))):
        block = texts[cid].text_block + texts[cid].html_block
        assert name in block and not [o for o in others if o in block], cid
        found = s.company(cid)
        assert found is not None
        mail = personal_mail(s, found, "cand@example.net", "https://x.example/c/t", "ja",
                             dt.datetime.now(dt.UTC))
        text = mail.get_content()
        assert name in text and not [o for o in others if o in text], cid
