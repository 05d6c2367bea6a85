"""The Dockerfile, checked by reading it (Docker cannot run here; docs/deploy.md).

Each check ties a line of the Dockerfile to what the code says: the console script
and its commands, the site's health route, the default ports, the settings the
environment may override, and the files the build context holds.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from career_relay import settings as settings_mod
from career_relay.cli import _parser
from career_relay.settings_table import GatewaySettings, SiteSettings

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuations joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue  # Docker drops comment lines, even inside a continuation
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continuation"
    return result


@pytest.fixture(scope="module")
def parsed() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text(encoding="utf-8"))


def only(parsed: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in parsed if kw == keyword]


def exec_form(args: str) -> list[str]:
    value: Any = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def env_values(parsed: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in only(parsed, "ENV"):
        for name, value in re.findall(r"(\w+)=(\S+)", args):
            env[name] = value
    return env


def test_the_parser_joins_continuations_and_drops_comments() -> None:
    text = "FROM a:1\n# note\nRUN one \\\n  # inside\n  two\n\nCMD [\"x\"]\n"
    assert instructions(text) == [("FROM", "a:1"), ("RUN", "one two"), ("CMD", '["x"]')]


def test_the_base_image_is_a_pinned_slim_python_3_11(parsed: list[tuple[str, str]]) -> None:
    bases = only(parsed, "FROM")
    assert len(bases) == 2  # the wheel is built in one stage, installed in the next
    for base in bases:
        image, _, tag = base.split()[0].partition(":")
        assert image == "python", base
        assert re.fullmatch(r"3\.11(\.\d+)?-slim-[a-z]+(@sha256:[0-9a-f]{64})?", tag), \
            f"pin the tag: {base}"
    assert len({b.split()[0] for b in bases}) == 1, bases  # one Python for both


def test_it_runs_as_a_user_that_is_not_root(parsed: list[tuple[str, str]]) -> None:
    users = only(parsed, "USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    # The user is created in the image, and it is the last USER before the entry point.
    assert any("useradd" in run and user in run for run in only(parsed, "RUN"))
    keywords = [kw for kw, _ in parsed]
    assert keywords.index("ENTRYPOINT") > len(keywords) - 1 - keywords[::-1].index("USER")


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    path = path.rstrip("/")
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.split("/")[0], p)
               for p in patterns if not p.startswith("!"))


def test_every_copy_source_exists_and_is_in_the_build_context(
        parsed: list[tuple[str, str]]) -> None:
    patterns = _dockerignore()
    copies = only(parsed, "COPY") + only(parsed, "ADD")
    assert copies
    for args in copies:
        if args.startswith("--from="):
            continue  # from the build stage, not the repository
        words = [w for w in args.split() if not w.startswith("--")]
        *sources, _dest = words
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"
            assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    copied = {w.rstrip("/") for args in copies for w in args.split()[:-1]}
    # What the wheel is built from: the packages, the e-mail templates, the metadata, and
    # the locks the installs are checked against.
    assert {"career_relay", "gateway", "consent_site", "templates", "pyproject.toml",
            "requirements.lock", "requirements-build.lock"} <= copied


def test_the_project_is_installed_with_pip_without_dev_extras(
        parsed: list[tuple[str, str]]) -> None:
    installs = [run for run in only(parsed, "RUN") if "pip install" in run]
    assert installs
    assert not any("dev" in run or "[" in run for run in installs), installs
    # Every dependency comes from a lock file with hashes; the project only as the wheel.
    for run in installs:
        assert "--require-hashes -r requirements" in run or "--require-hashes -r /tmp/" in run \
            or "--no-deps /tmp/dist/" in run, run
    assert not any(" -e " in run for run in installs)


def test_the_entrypoint_is_the_console_script(parsed: list[tuple[str, str]]) -> None:
    (entrypoint,) = only(parsed, "ENTRYPOINT")
    assert exec_form(entrypoint) == ["career-relay"]
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["scripts"]["career-relay"] == "career_relay.cli:main"


def _commands() -> set[str]:
    parser = _parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert sub.choices is not None
    return set(sub.choices)


def test_the_default_command_and_the_documented_ones_exist(
        parsed: list[tuple[str, str]]) -> None:
    (cmd,) = only(parsed, "CMD")
    assert exec_form(cmd) == ["serve"]
    assert {"serve", "gateway", "site", "check-config"} <= _commands()
    deploy = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    for command in ("serve", "gateway", "site"):
        assert f"career-relay {command}" in deploy or f" {command}\n" in deploy, command


def test_the_healthcheck_asks_the_sites_health_route(
        parsed: list[tuple[str, str]], make_config: Any) -> None:
    (healthcheck,) = only(parsed, "HEALTHCHECK")
    command = exec_form(healthcheck[healthcheck.index("CMD ") + 4:])
    assert command[:2] == ["python", "-c"], "slim has no curl: Python's urllib"
    code = command[2]
    compile(code, "<healthcheck>", "exec")
    assert "urllib.request" in code
    path = re.search(r"127\.0\.0\.1:\{port\}(/\w+)", code)
    assert path is not None, code
    assert "CAREER_RELAY_SITE_LISTEN" in code  # the port follows the site's listener

    from consent_site.app import create_app
    from consent_site.candidate import SITE

    app = create_app(settings_mod.load(make_config()))
    try:
        gets = {r.resource.canonical for r in app.router.routes()
                if r.resource is not None and r.method == "GET"}
    finally:
        app[SITE].close()
    assert path.group(1) == "/healthz" and "/healthz" in gets


def _port(listen: str) -> int:
    return int(listen.rpartition(":")[2])


def test_the_exposed_ports_are_the_default_ports(parsed: list[tuple[str, str]]) -> None:
    exposed = {int(p.split("/")[0]) for args in only(parsed, "EXPOSE") for p in args.split()}
    defaults = {_port(GatewaySettings().listen), _port(SiteSettings().listen),
                _port(SiteSettings().metrics_listen)}
    assert exposed == defaults == {2525, 8080, 9464}
    env = env_values(parsed)
    assert _port(env["CAREER_RELAY_GATEWAY_LISTEN"]) == _port(GatewaySettings().listen)
    assert _port(env["CAREER_RELAY_SITE_LISTEN"]) == _port(SiteSettings().listen)
    assert _port(env["CAREER_RELAY_SITE_METRICS_LISTEN"]) == _port(SiteSettings().metrics_listen)


def test_the_environment_names_real_settings_and_the_mounts(
        parsed: list[tuple[str, str]], tmp_path: Path) -> None:
    env = env_values(parsed)
    assert env[settings_mod.CONFIG_ENV] == "/etc/career-relay/career-relay.toml"
    relay = {k: v for k, v in env.items() if k.startswith("CAREER_RELAY_")}
    # The loader refuses unknown CAREER_RELAY_* variables: every one the image sets is a
    # setting, and a configuration loads under them.
    config = tmp_path / "career-relay.toml"
    config.write_text('[secrets]\nsigning_keys = ["a-test-key-0123456789abcdef"]\n')
    settings = settings_mod.load(config, env=relay)
    assert str(settings.queue.dir).startswith("/var/lib/career-relay/")
    assert str(settings.ledger.path).startswith("/var/lib/career-relay/")
    assert only(parsed, "VOLUME") and "/var/lib/career-relay" in only(parsed, "VOLUME")[0]


def test_the_image_serves_either_ledger(parsed: list[tuple[str, str]], tmp_path: Path) -> None:
    """SQLite (``ledger.path``, the standard library's) or PostgreSQL (``ledger.url``):
    psycopg, its binary wheel (libpq inside it: the slim image has none) and the pool are
    in the lock the image installs, and the image leaves ledger.url to the deployment
    (deploy/compose.yaml sets it)."""
    lock = (REPO / "requirements.lock").read_text(encoding="utf-8")
    for package in ("psycopg", "psycopg-binary", "psycopg-pool"):
        assert re.search(rf"^{package}==\S+ \\$", lock, re.M), package
    assert any("--require-hashes -r /tmp/requirements.lock" in run for run in only(parsed, "RUN"))
    env = {k: v for k, v in env_values(parsed).items() if k.startswith("CAREER_RELAY_")}
    assert "CAREER_RELAY_LEDGER_URL" not in env
    config = tmp_path / "career-relay.toml"
    config.write_text('[secrets]\nsigning_keys = ["a-test-key-0123456789abcdef"]\n')
    url = "postgresql://career_relay_app:pw@db.example/career_relay?sslmode=verify-full"
    settings = settings_mod.load(config, env={**env, "CAREER_RELAY_LEDGER_URL": url})
    assert settings.ledger.url == url
