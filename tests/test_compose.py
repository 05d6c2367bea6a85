"""deploy/compose.yaml, checked by reading it (Docker cannot run here; docs/deploy.md).

PostgreSQL with the roles as its init scripts, the owner's migration and grants, two
gateways and two sites on the application role: each check ties the file to what the
code and the other files say (the image, the commands, the settings the environment may
set, the roles, the health route, the ports, the volumes), and no password is written
in it.  PyYAML is not a dependency: the file keeps to a plain subset of YAML that
``load_plain_yaml`` reads and refuses anything beyond (anchors, flow mappings, unquoted
words YAML 1.1 reads as booleans).
"""

from __future__ import annotations

import json
import re
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from career_relay import settings as settings_mod
from career_relay.cli import _parser
from career_relay.settings_table import GatewaySettings, SiteSettings
from tests.test_dockerfile import DOCKERFILE, env_values, instructions

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / "compose.env.example"
GATEWAYS = ("gateway-1", "gateway-2")
SITES = ("site-1", "site-2")
ONE_OFF = ("migrate", "grants")
CAREER_RELAY = ("migrate", *GATEWAYS, *SITES)
DATA = "/var/lib/career-relay"  # the image's VOLUME

# -- a plain subset of YAML ------------------------------------------------------------------

_KEY = re.compile(r"([A-Za-z0-9_.-]+):(?: (.+))?")
_WORD = re.compile(r"[A-Za-z0-9_./-]+")
# Words YAML 1.1 (which Compose's parser still honours in places) reads as booleans or null.
_AMBIGUOUS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


class NotPlain(ValueError):
    """Beyond the subset: rewrite the line (quote it), or teach the parser deliberately."""


def _scalar(text: str, where: int) -> Any:
    text = text.strip()
    if text.startswith(('"', "[")):
        try:
            value = json.loads(text)  # double quotes and flow sequences in JSON's spelling
        except json.JSONDecodeError as exc:
            raise NotPlain(f"line {where}: {text!r}: {exc}") from None
        if isinstance(value, list) and not all(isinstance(v, str | int) for v in value):
            raise NotPlain(f"line {where}: a flow sequence of strings and integers only")
        return value
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    if text in ("true", "false"):
        return text == "true"
    if not _WORD.fullmatch(text) or text.lower() in _AMBIGUOUS:
        raise NotPlain(f"line {where}: quote {text!r}")
    return text


def load_plain_yaml(text: str) -> Any:
    """Block mappings and block sequences of scalars, indented by spaces; full-line comments.
    Scalars: double-quoted strings, JSON flow sequences, integers, true/false, plain words."""
    lines: list[tuple[int, str, int]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw:
            raise NotPlain(f"line {number}: a tab")
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            lines.append((len(raw) - len(raw.lstrip(" ")), stripped, number))

    def block(i: int, indent: int) -> tuple[Any, int]:
        if lines[i][1].startswith("- "):
            items: list[Any] = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                items.append(_scalar(lines[i][1][2:], lines[i][2]))
                i += 1
            return items, i
        mapping: dict[str, Any] = {}
        while i < len(lines) and lines[i][0] == indent:
            _, content, number = lines[i]
            found = _KEY.fullmatch(content)
            if found is None:
                raise NotPlain(f"line {number}: not `key: value`: {content!r}")
            key, rest = found.groups()
            if key in mapping:
                raise NotPlain(f"line {number}: {key} twice")
            i += 1
            if rest is not None:
                mapping[key] = _scalar(rest, number)
            elif i < len(lines) and lines[i][0] > indent:
                mapping[key], i = block(i, lines[i][0])
            else:
                mapping[key] = None
        if i < len(lines) and lines[i][0] > indent:
            raise NotPlain(f"line {lines[i][2]}: unexpected indentation")
        return mapping, i

    value, end = block(0, 0) if lines else ({}, 0)
    if end != len(lines):
        raise NotPlain(f"line {lines[end][2]}: unexpected indentation")
    return value


def test_the_subset_reader_reads_what_it_should_and_refuses_the_rest() -> None:
    text = ('# c\na:\n  b: "x: y"\n  c: [1, "two"]\n  d:\n    - "e"\n    - f\n  g: 3\n'
            '  h: true\n  i:\nj: word\n')
    assert load_plain_yaml(text) == {"a": {"b": "x: y", "c": [1, "two"], "d": ["e", "f"],
                                           "g": 3, "h": True, "i": None}, "j": "word"}
    for bad in ("restart: no\n", "a: &x 1\n", "a: *x\n", "a: {b: 1}\n", "a: b: c\n",
                "a:\n  b: 1\n c: 2\n", "a: 1\na: 2\n", "a: 'single'\n", "a:\t1\n",
                "a: on\n", "a: 1 # comment\n"):
        with pytest.raises(NotPlain):
            load_plain_yaml(bad)


# -- the file ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = load_plain_yaml(COMPOSE.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?[^}]+\}")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ``${NAME:?message}``: the only form the file uses (checked below)."""
    return _VARIABLE.sub(lambda m: variables[m.group(1)], value)


def _example_variables() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")]
    return {name: value for name, value in pairs}


FAKE = {name: f"not-a-password-{name.lower()}" for name in _example_variables()}


def test_the_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"postgres", *ONE_OFF, *GATEWAYS, *SITES}
    for name, service in services.items():
        assert service["restart"] == ("no" if name in ONE_OFF else "unless-stopped"), name


def test_postgresql_is_the_official_image_pinned_to_a_major_version(
        services: dict[str, dict[str, Any]]) -> None:
    image = services["postgres"]["image"]
    found = re.fullmatch(r"postgres:(\d+)", image)
    assert found is not None and int(found.group(1)) >= 14, image  # SPEC 12: 14 or later
    assert services["grants"]["image"] == image  # its psql, the same major version
    assert "ports" not in services["postgres"]  # only compose's network reaches it


def test_career_relay_is_the_projects_image(services: dict[str, dict[str, Any]]) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8")
                            )["project"]["version"]
    for name in CAREER_RELAY:
        service = services[name]
        assert service["image"] == f"career-relay:{version}", name
        context = (DEPLOY / service["build"]["context"]).resolve()
        assert context == REPO and (context / "Dockerfile").is_file(), name
    # Its secrets stay out of the build context.
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert "deploy" in ignored


def test_the_commands_are_the_clis(services: dict[str, dict[str, Any]]) -> None:
    parser = _parser()
    commands = {name: services[name]["command"] for name in CAREER_RELAY}
    for name, command in commands.items():
        assert parser.parse_args(command).command == command[0], name
    assert all(commands[g] == ["gateway"] for g in GATEWAYS)
    assert all(commands[s] == ["site"] for s in SITES)
    assert commands["migrate"] == ["ledger", "verify"]  # opens the ledger: migrates
    assert services["migrate"]["healthcheck"] == {"disable": True}


def test_each_gateway_has_its_own_spool_volume_and_the_sites_none(
        compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    image_env = env_values(instructions(DOCKERFILE.read_text(encoding="utf-8")))
    assert image_env["CAREER_RELAY_QUEUE_DIR"].startswith(DATA + "/")

    def mounts(name: str) -> dict[str, str]:
        found = {}
        for volume in services[name].get("volumes", []):
            source, target, *_ = volume.split(":")
            found[target] = source
        return found

    spools = [mounts(g).get(DATA) for g in GATEWAYS]
    assert all(s and not s.startswith((".", "/")) for s in spools), spools  # named volumes
    assert len(set(spools)) == len(GATEWAYS)  # one each
    assert set(spools) <= set(compose["volumes"])
    for name in services:
        if name not in GATEWAYS:
            assert not set(mounts(name).values()) & set(spools), name
    for site in SITES:
        assert DATA not in mounts(site) and services[site]["tmpfs"] == [DATA]
    for name in CAREER_RELAY:  # the configuration, read-only
        assert mounts(name)["/etc/career-relay"] == "./etc"
        assert any(v.endswith(":/etc/career-relay:ro") for v in services[name]["volumes"])


def _ledger_url(service: dict[str, Any]) -> urllib.parse.SplitResult:
    return urllib.parse.urlsplit(interpolate(service["environment"]["CAREER_RELAY_LEDGER_URL"],
                                             FAKE))


def test_the_ledger_url_names_the_roles_and_the_database(
        services: dict[str, dict[str, Any]]) -> None:
    roles_sql = (DEPLOY / "postgres" / "roles.sql").read_text(encoding="utf-8")
    grants_sql = (DEPLOY / "postgres" / "grants.sql").read_text(encoding="utf-8")
    database = services["postgres"]["environment"]["POSTGRES_DB"]
    for name in CAREER_RELAY:
        url = _ledger_url(services[name])
        assert url.scheme == "postgresql" and url.hostname == "postgres" and url.port == 5432
        assert url.path == f"/{database}", name
        role = "career_relay_owner" if name == "migrate" else "career_relay_app"
        assert url.username == role, name
        assert f"CREATE ROLE {role} LOGIN" in roles_sql
    assert "TO career_relay_app;" in grants_sql
    grants = services["grants"]["command"]
    assert grants[0] == "psql" and "ON_ERROR_STOP=1" in grants
    assert grants[grants.index("-U") + 1] == "career_relay_owner"
    assert grants[grants.index("-d") + 1] == database
    assert grants[grants.index("-h") + 1] == "postgres"
    assert services["grants"]["volumes"] == [f"./postgres/grants.sql:{grants[-1]}:ro"]


def test_the_settings_load_in_every_container(services: dict[str, dict[str, Any]],
                                              tmp_path: Path) -> None:
    """The loader refuses unknown CAREER_RELAY_* variables: the image's and the service's
    together are settings, and ledger.url is the one that takes effect."""
    image_env = env_values(instructions(DOCKERFILE.read_text(encoding="utf-8")))
    config = tmp_path / "career-relay.toml"
    config.write_text('[secrets]\nsigning_keys = ["a-test-key-0123456789abcdef"]\n')
    for name in CAREER_RELAY:
        env = {**{k: v for k, v in image_env.items() if k.startswith("CAREER_RELAY_")},
               **{k: interpolate(v, FAKE) for k, v in services[name]["environment"].items()}}
        settings = settings_mod.load(config, env=env)
        assert settings.ledger.url.startswith("postgresql://"), name


def test_no_password_is_written_in_the_file(services: dict[str, dict[str, Any]]) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    variables = set(_example_variables())
    used = set(_VARIABLE.findall(text))
    assert used == variables  # compose.env.example lists every one, and only those
    assert all(value == "" for value in _example_variables().values())  # and no value
    assert text.count("$") == len(_VARIABLE.findall(text))  # no other interpolation
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key:
                assert _VARIABLE.fullmatch(value), (name, key)
            for found in re.finditer(r"://[^:/@]+:([^@]*)@", value):
                assert _VARIABLE.fullmatch(found.group(1)), (name, key)
    # career-relay's own secrets: a file next to the compose file, never committed.
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").split()
    for name in CAREER_RELAY:
        env_file = services[name]["env_file"]
        assert f"deploy/{env_file}" in ignored and not (DEPLOY / env_file).exists()
    assert "deploy/.env" in ignored and "deploy/etc/" in ignored


def test_every_long_running_service_has_a_health_check(
        services: dict[str, dict[str, Any]]) -> None:
    for name in ("postgres", *GATEWAYS, *SITES):
        check = services[name]["healthcheck"]
        assert check["test"][0] == "CMD" and check["retries"] >= 1, name
        assert {"interval", "timeout", "start_period"} <= set(check), name
    postgres = services["postgres"]["healthcheck"]["test"]
    assert postgres[1] == "pg_isready" and postgres[postgres.index("-h") + 1] == "127.0.0.1"
    site_port = SiteSettings().listen.rpartition(":")[2]
    gateway_port = GatewaySettings().listen.rpartition(":")[2]
    for name in (*GATEWAYS, *SITES):
        command = services[name]["healthcheck"]["test"]
        assert command[1:3] == ["python", "-c"], name
        compile(command[3], f"<{name} healthcheck>", "exec")
        if name in SITES:
            assert f"http://127.0.0.1:{site_port}/healthz" in command[3]
        else:
            assert f"smtplib.SMTP('127.0.0.1', {gateway_port}" in command[3]


def test_the_order_of_start(services: dict[str, dict[str, Any]]) -> None:
    def after(name: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in services[name]["depends_on"].items()}

    assert after("migrate") == {"postgres": "service_healthy"}
    assert after("grants") == {"migrate": "service_completed_successfully"}
    for name in (*GATEWAYS, *SITES):
        assert after(name) == {"grants": "service_completed_successfully"}, name


def test_the_init_scripts_are_the_roles_then_the_passwords(
        services: dict[str, dict[str, Any]]) -> None:
    init = {}
    for volume in services["postgres"]["volumes"]:
        source, target, *options = volume.split(":")
        if target.startswith("/docker-entrypoint-initdb.d/"):
            assert options == ["ro"] and (DEPLOY / source).is_file(), volume
            assert target.endswith(".sql")  # what the image's entry point runs with psql
            init[target] = source
    assert [init[t] for t in sorted(init)] == ["./postgres/roles.sql",
                                               "./postgres/passwords.psql"]
    env = services["postgres"]["environment"]
    script = (DEPLOY / "postgres" / "passwords.psql").read_text(encoding="utf-8")
    for variable in re.findall(r"\\getenv \w+ (\w+)", script):
        assert variable in env and _VARIABLE.fullmatch(env[variable]), variable


def test_the_published_ports(services: dict[str, dict[str, Any]]) -> None:
    published = []
    for name in (*GATEWAYS, *SITES):
        (port,) = services[name]["ports"]
        address, host, container = port.split(":")
        default = (SiteSettings() if name in SITES else GatewaySettings()).listen
        assert address == "127.0.0.1" and container == default.rpartition(":")[2], name
        published.append(host)
    assert len(set(published)) == len(published)


def test_the_services_get_time_to_finish_what_is_in_flight(
        services: dict[str, dict[str, Any]]) -> None:
    """SIGTERM drains for up to 30 s (docs/operations.md): more than Docker's 10 s."""
    for name in (*GATEWAYS, *SITES):
        grace = services[name]["stop_grace_period"]
        assert re.fullmatch(r"\d+s", grace) and int(grace[:-1]) > 30, name
