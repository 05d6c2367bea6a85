"""The built wheel stands alone (issue: supply chain): its templates and static files
are in it, and a fresh virtualenv with only the wheel installed serves a consent page."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(REPO)], check=True, timeout=300,
                   cwd=out)  # not the checkout: nothing may be read from it by accident
    (found,) = out.glob("career_relay-*.whl")
    return found


def test_the_wheel_carries_its_templates_and_static_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (REPO / "templates" / "emails").iterdir():
        assert f"career_relay/email_templates/{path.name}" in names, path.name
    for folder in ("templates", "templates/admin", "static"):
        for path in (REPO / "consent_site" / folder).iterdir():
            if path.is_file():
                assert f"consent_site/{folder}/{path.name}" in names, path


def test_a_fresh_venv_with_the_wheel_serves_a_consent_page(wheel: Path,
                                                          tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # --system-site-packages: the dependencies come from the test's own environment (no
    # network in CI); the project itself only from the wheel, never from the checkout.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([sys.executable, "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
     / "outer.pth").write_text(site + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, timeout=300)
    script = textwrap.dedent('''
        import asyncio, json, sys, tempfile
        from pathlib import Path
        import career_relay, consent_site
        from aiohttp.test_utils import TestClient, TestServer
        from career_relay.ledger import open_ledger
        from career_relay.paths import email_templates_dir
        from career_relay.settings import load
        from career_relay.tokens import LinkSigner
        from consent_site.app import create_app
        assert "site-packages" in career_relay.__file__, career_relay.__file__
        assert "site-packages" in str(email_templates_dir()), email_templates_dir()
        work = Path(tempfile.mkdtemp())
        (work / "c.toml").write_text(
            '[ledger]\\npath = "ledger.db"\\n[secrets]\\nsigning_keys = ["k0123456789abcdef"]\\n'
            '[[companies]]\\nid = "acme"\\nname = "Acme"\\ndomains = ["acme.example"]\\n')
        settings = load(work / "c.toml")
        with open_ledger(settings.ledger.path) as ledger:
            offer = ledger.record_offer("acme", "<m@acme.example>", "cand@example.net")
        token = LinkSigner.from_settings(settings).token(offer.id)
        async def main():
            client = TestClient(TestServer(create_app(settings)))
            await client.start_server()
            try:
                page = await client.get(f"/c/{token}")
                css = await client.get("/static/site.css")
                return page.status, await page.text(), css.status
            finally:
                await client.close()
        status, text, css = asyncio.run(main())
        print(json.dumps({"status": status, "css": css, "form": 'name="csrf"' in text,
                          "company": "Acme" in text}))
    ''')
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREER_RELAY_")}
    ran = subprocess.run([str(python), "-c", script], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().endswith('{"status": 200, "css": 200, "form": true, '
                                       '"company": true}'), ran.stdout
