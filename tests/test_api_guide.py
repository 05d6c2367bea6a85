"""docs/integrations/ats-api.md ("An ATS that sends its own mail"): its script, as the
guide prints it, run against a real ``career-relay site`` process on loopback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from career_relay import settings as settings_mod
from career_relay.ledger import open_configured
from tests.conftest import CLI, REPO, ConfigMaker, free_port, run_cli

GUIDE = REPO / "docs" / "integrations" / "ats-api.md"


def _script() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    section = text.split("### The script", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "the guide's script is gone"
    return found.group(1)


def test_the_script_is_twenty_lines_of_the_standard_library() -> None:
    script = _script()
    assert len(script.splitlines()) <= 20
    imported = re.findall(r"^import (.+)$", script, re.M)
    assert imported and all(m.split(".")[0] in sys.stdlib_module_names
                            for line in imported for m in line.replace(" ", "").split(","))


@pytest.fixture
def site(make_config: ConfigMaker) -> Iterator[tuple[Path, str]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = make_config(site={"listen": f"127.0.0.1:{port}", "public_url": base},
                         companies=[{"id": "acme", "name": "株式会社アクメ",
                                     "domains": ["acme.example"]}])
    log = config.parent / "site.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([*CLI, "site", "--config", str(config)], stdout=out,
                                stderr=out, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while not _answers(f"{base}/healthz"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the site never answered"
            time.sleep(0.1)
        yield config, base
    finally:
        proc.terminate()
        proc.wait(30)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def test_the_guide_s_script_against_the_real_site(site: tuple[Path, str],
                                                  tmp_path: Path) -> None:
    config, base = site
    made = run_cli("api-key", "create", "--company", "acme", "--name", "guide",
                   "--config", str(config))
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    script = tmp_path / "rejection_link.py"
    script.write_text(_script(), encoding="utf-8")

    def run(*args: str, api_key: str = key) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CAREER_RELAY_URL": base, "CAREER_RELAY_API_KEY": api_key,
               "JOB": "経理"}
        return subprocess.run([sys.executable, str(script), *args], capture_output=True,
                              text=True, env=env, timeout=30)

    first = run("cand@example.net", "4711")
    assert first.returncode == 0, first.stderr
    (link,) = first.stdout.splitlines()
    assert link.startswith(f"{base}/c/")
    again = run("cand@example.net", "4711")  # a retry: the same offer, the same link
    assert again.returncode == 0 and again.stdout.splitlines() == [link]
    with urllib.request.urlopen(link, timeout=10) as page:
        assert page.status == 200 and "株式会社アクメ" in page.read().decode("utf-8")
    refused = run("cand@example.net", "4712", api_key="crk_" + "0" * 16 + "_" + "A" * 43)
    assert refused.returncode == 1
    assert refused.stderr.strip() == ("career-relay: 401 Unauthorized: the API key is not "
                                      "valid (unknown or revoked)")
    staff = run("hr@acme.example", "4713")
    assert staff.returncode == 1 and "422 Unprocessable Content: invalid: recipient" in \
        staff.stderr
    with open_configured(settings_mod.load(config)) as ledger:
        offers = ledger.offers_of_message("acme", "application-4711")
        assert [(o.recipient, o.job, o.source) for o in offers] == [
            ("cand@example.net", "経理", "api")]
