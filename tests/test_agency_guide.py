"""docs/integrations/for-the-agency.md: its script, as the guide prints it, run against a
real ``career-relay site`` process on loopback, with a key the real CLI made."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from career_relay import settings as settings_mod
from career_relay.consent import Client, Consents
from career_relay.ledger import ConsentLedger, Outcomes, Rules, open_configured
from tests.conftest import REPO, run_cli
from tests.test_api_guide import site  # noqa: F401  (the fixture: a real site process)
from tests.test_ledger_rules import IPHONE, NOTICE

GUIDE = REPO / "docs" / "integrations" / "for-the-agency.md"


def _script() -> str:
    section = GUIDE.read_text(encoding="utf-8").split("### The script", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "the guide's script is gone"
    return found.group(1)


def test_the_script_uses_the_standard_library_only() -> None:
    imported = re.findall(r"^import (.+)$", _script(), re.M)
    assert imported and all(m.split(".")[0] in sys.stdlib_module_names
                            for line in imported for m in line.replace(" ", "").split(","))


def test_the_guide_s_script_against_the_real_site(site: tuple[Path, str],  # noqa: F811
                                                  tmp_path: Path) -> None:
    config, base = site
    made = run_cli("agency-key", "create", "--agency", "default", "--name", "guide",
                   "--config", str(config))
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    settings = settings_mod.load(config)
    with open_configured(settings) as ledger:
        store = ConsentLedger(ledger, Rules.from_settings(settings))
        offer = ledger.record_offer("acme", "<m1@acme.example>", "cand@example.net")
        receipt = Consents(settings, store).accept(
            offer, NOTICE, {"name": "候補者", "email": "cand@example.net"}, False,
            Client(IPHONE, "198.51.100.7"))
        if receipt.review is not None:  # accepted within site.review_window: an admin's call
            store.review(receipt.id, approve=True, by="operator")
        forward_id = store.forwards(offer.id)[-1].forward.id
    script = tmp_path / "agency.py"
    script.write_text(_script(), encoding="utf-8")

    def run(*args: str, api_key: str = key) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CAREER_RELAY_URL": base, "CAREER_RELAY_AGENCY_KEY": api_key}
        return subprocess.run([sys.executable, str(script), *args], capture_output=True,
                              text=True, env=env, timeout=30, cwd=tmp_path)

    pulled = run("pull")
    assert pulled.returncode == 0, pulled.stderr
    (line,) = pulled.stdout.splitlines()
    item = json.loads(line)
    assert item["forward_id"] == forward_id and item["payload"]["candidate"]["name"] == "候補者"
    assert run("pull").stdout == ""  # the cursor kept: nothing again
    today = dt.datetime.now(dt.UTC).date().isoformat()
    first = run("outcome", forward_id, "registered", today)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("oc_")
    assert run("outcome", forward_id, "registered", today).stdout == first.stdout
    bad = run("outcome", forward_id, "hired", today)
    assert bad.returncode == 1 and "422 Unprocessable Content: invalid: status" in bad.stderr
    refused = run("pull", api_key="cra_" + "0" * 16 + "_" + "A" * 43)
    assert refused.returncode == 1 and "401 Unauthorized" in refused.stderr
    with open_configured(settings) as ledger:
        counts = Outcomes(ledger).counts("acme", dt.date.fromisoformat(today),
                                         dt.date.fromisoformat(today))
        assert counts["registered"] == 1
    # A free referral: ten consents delivered earn acme a credit, acme asks for it.
    assert run("credits").stdout == ""
    with open_configured(settings) as ledger:
        store = ConsentLedger(ledger, Rules.from_settings(settings))
        for n in range(10):
            offer = ledger.record_offer("acme", f"<r{n}@acme.example>", f"r{n}@example.net")
            receipt = Consents(settings, store).accept(
                offer, NOTICE, {"name": "候補者", "email": offer.recipient}, False,
                Client(IPHONE, "198.51.100.7"))
            if receipt.review is not None:
                store.review(receipt.id, approve=True, by="operator")
            store.delivered(store.forwards(offer.id)[-1].forward.id)
    asked = run_cli("credits", "request", "--company", "acme", "--note", "経理を一名",
                    "--config", str(config))
    assert asked.returncode == 0, asked.stderr
    (line,) = run("credits").stdout.splitlines()
    request = json.loads(line)
    assert request["company"] == "acme" and request["note"] == "経理を一名"
    settled = run("settle", request["credit_id"], "fulfilled", "一名紹介")
    assert settled.returncode == 0 and settled.stdout.strip() == "fulfilled", settled.stderr
    assert run("credits").stdout == ""  # answered: no longer asked
    again = run("settle", request["credit_id"], "cancelled")
    assert again.returncode == 1 and "409 Conflict" in again.stderr
