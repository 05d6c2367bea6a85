"""The `career-relay` command as a subprocess (SPEC 2): output, files, exit codes.

Exit 0 on success, 1 on a user error with a one-line message, 2 on bad
usage; never a traceback.
"""

from __future__ import annotations

import base64
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from career_relay import settings as settings_mod
from career_relay.passwords import verify_password
from tests.conftest import CLI, REPO, ConfigMaker, run_cli

LOGIN_RE = re.compile(r"SMTP login for the example company: (\S+) / (\S+)")


def assert_user_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 1, a one-line message on stderr naming the problem, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def assert_usage_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert "usage:" in result.stderr


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def txt_value(output: str, owner: str) -> tuple[str, dict[str, str]]:
    """The zone line for ``owner`` in ``output``, and its DKIM tags (the strings joined)."""
    (line,) = [x.strip() for x in output.splitlines() if x.strip().startswith(owner + " ")]
    assert line.startswith(f"{owner} IN TXT "), line
    chunks = re.findall(r'"([^"]*)"', line)
    assert chunks, line
    assert all(len(c) <= 255 for c in chunks), "a TXT string is longer than 255 octets"
    value = "".join(chunks)
    tags = dict(part.strip().split("=", 1) for part in value.split(";") if part.strip())
    return line, tags


def spki_b64(key_file: Path) -> str:
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


# -- init ------------------------------------------------------------------------------------


def test_init_writes_a_working_starter(tmp_path: Path) -> None:
    d = tmp_path / "conf"
    result = run_cli("init", "--dir", str(d))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr

    config = d / "career-relay.toml"
    assert config.is_file()
    assert mode(config) == 0o600

    s = settings_mod.load(config, env={})
    (company,) = s.companies
    key_file = Path(company.dkim_key_file)
    assert key_file.is_file()
    assert key_file.is_relative_to(d.resolve())
    assert mode(key_file) == 0o600
    assert len(s.secrets.signing_keys) == 1
    assert len(s.secrets.signing_keys[0]) >= 32

    # the login printed is the one whose hash was stored
    match = LOGIN_RE.search(result.stdout)
    assert match, result.stdout
    username, password = match.groups()
    assert username == company.smtp_username
    assert verify_password(company.smtp_password_hash, password)
    assert not verify_password(company.smtp_password_hash, password + "x")
    assert password not in config.read_text(encoding="utf-8")

    # the DNS record printed holds the public half of the key written
    owner = f"{company.dkim_selector}._domainkey.{company.domains[0]}."
    init_line, tags = txt_value(result.stdout, owner)
    assert tags["v"] == "DKIM1"
    assert tags["k"] == "rsa"
    assert tags["p"] == spki_b64(key_file)

    # and the configuration passes check-config, which prints the same record
    check = run_cli("check-config", "--config", str(config))
    assert check.returncode == 0, check.stderr
    assert check.stdout.splitlines()[0] == f"{config}: ok"
    check_line, _ = txt_value(check.stdout, owner)
    assert check_line == init_line
    assert check.stderr == ""


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    first = run_cli("init", "--dir", str(tmp_path))
    assert first.returncode == 0, first.stderr
    config = tmp_path / "career-relay.toml"
    key_file = Path(settings_mod.load(config, env={}).companies[0].dkim_key_file)
    before = config.read_bytes(), key_file.read_bytes()

    again = run_cli("init", "--dir", str(tmp_path))
    assert_user_error(again, str(config), "already exists")
    assert again.stdout == ""
    assert (config.read_bytes(), key_file.read_bytes()) == before


def test_init_demo_adds_the_capture_dir(tmp_path: Path) -> None:
    plain = run_cli("init", "--dir", str(tmp_path / "plain"))
    demo = run_cli("init", "--dir", str(tmp_path / "demo"), "--demo")
    assert plain.returncode == 0, plain.stderr
    assert demo.returncode == 0, demo.stderr

    p = settings_mod.load(tmp_path / "plain" / "career-relay.toml", env={})
    d = settings_mod.load(tmp_path / "demo" / "career-relay.toml", env={})
    assert p.demo.capture_dir == ""
    assert d.demo.capture_dir == str((tmp_path / "demo").resolve() / "outbox")
    assert "[demo]" in (tmp_path / "demo" / "career-relay.toml").read_text(encoding="utf-8")
    # each init draws its own secrets
    assert p.secrets.signing_keys != d.secrets.signing_keys
    assert p.companies[0].smtp_password_hash != d.companies[0].smtp_password_hash
    check = run_cli("check-config", "--config", str(tmp_path / "demo" / "career-relay.toml"))
    assert check.returncode == 0, check.stderr


# -- check-config ----------------------------------------------------------------------------


def test_check_config_prints_every_problem(make_config: ConfigMaker, tmp_path: Path) -> None:
    config = make_config(gateway={"on_error": "drop"}, upstream={"port": 0}, companies=[{
        "id": "acme", "name": "Acme", "domains": ["acme.example"],
        "dkim_selector": "s1", "dkim_key_file": "keys/missing.pem"}])
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    assert "ok" not in result.stdout
    lines = result.stderr.strip().splitlines()
    expected = ["gateway.on_error must be one of", "upstream.port must be between 1 and 65535",
                "companies[acme].dkim_key_file: cannot read"]
    for text in expected:
        assert any(line.startswith(f"{config}: {text}") for line in lines), (text, lines)
    assert str(tmp_path / "keys" / "missing.pem") in result.stderr
    assert lines[-1] == "3 problem(s) found"
    assert len(lines) == 4


@pytest.mark.parametrize(("url", "refused"), [
    ("http://agency.example/hook", True), ("http://10.0.0.5:8080/hook", True),
    ("HTTP://agency.example/hook", False),  # not http:// at all: the scheme check names it
    ("https://agency.example/hook", False), ("http://127.0.0.1:9000/hook", False),
    ("http://localhost/hook", False), ("http://[::1]:9000/hook", False)])
def test_check_config_refuses_a_plain_http_webhook_off_this_machine(
        make_config: ConfigMaker, url: str, refused: bool) -> None:
    """Forwards carry candidates' personal data: in clear text only to loopback."""
    config = make_config(agency={"webhook_url": url, "webhook_secret": "s" * 32})
    result = run_cli("check-config", "--config", str(config))
    said = "agency.webhook_url must be https://" in result.stderr
    assert said == refused, result.stderr
    if refused:
        assert result.returncode == 1 and "Traceback" not in result.stderr


def test_check_config_key_file_that_is_not_a_pem_key(make_config: ConfigMaker,
                                                     tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "acme.pem").write_text("this is not a key\n")
    config = make_config(companies=[{
        "id": "acme", "name": "Acme", "domains": ["acme.example"],
        "dkim_selector": "s1", "dkim_key_file": "keys/acme.pem"}])
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"{config}: companies[acme].dkim_key_file: ")
    assert "not an unencrypted PEM private key" in lines[0]
    assert lines[-1] == "1 problem(s) found"


def _pkcs8_of_unknown_algorithm() -> bytes:
    """A well-formed PKCS#8 PrivateKeyInfo whose algorithm is OID 1.2.3.4."""
    oid = bytes([0x06, 0x03, 0x2A, 0x03, 0x04])
    algorithm = bytes([0x30, len(oid)]) + oid
    body = bytes([0x02, 0x01, 0x00]) + algorithm + bytes([0x04, 0x02, 0x04, 0x00])
    der = bytes([0x30, len(body)]) + body
    return (b"-----BEGIN PRIVATE KEY-----\n" + base64.b64encode(der)
            + b"\n-----END PRIVATE KEY-----\n")


def test_check_config_key_of_unknown_algorithm(make_config: ConfigMaker,
                                                   tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "acme.pem").write_bytes(_pkcs8_of_unknown_algorithm())
    config = make_config(companies=[{
        "id": "acme", "name": "Acme", "domains": ["acme.example"],
        "dkim_selector": "s1", "dkim_key_file": "keys/acme.pem"}])
    result = run_cli("check-config", "--config", str(config))
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    assert "companies[acme].dkim_key_file" in result.stderr


def test_check_config_listen_port_superscript(make_config: ConfigMaker) -> None:
    config = make_config(gateway={"listen": "127.0.0.1:²"})
    result = run_cli("check-config", "--config", str(config))
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    assert "gateway.listen" in result.stderr


def test_check_config_loader_error_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "career-relay.toml"
    config.write_text('[gateway]\nlistn = "127.0.0.1:2525"\n', encoding="utf-8")
    assert_user_error(run_cli("check-config", "--config", str(config)), "gateway.listn")


def test_check_config_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.toml"
    assert_user_error(run_cli("check-config", "--config", str(missing)),
                      "configuration file not found", str(missing))


def test_check_config_uses_the_environment_variable(make_config: ConfigMaker,
                                                    tmp_path: Path) -> None:
    config = make_config()
    result = run_cli("check-config", env={"CAREER_RELAY_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"{config}: ok"

    # --config wins over the variable
    missing = tmp_path / "missing.toml"
    result = run_cli("check-config", "--config", str(config),
                     env={"CAREER_RELAY_CONFIG": str(missing)})
    assert result.returncode == 0, result.stderr
    result = run_cli("check-config", "--config", str(missing),
                     env={"CAREER_RELAY_CONFIG": str(config)})
    assert_user_error(result, str(missing))


def _run_in(cwd: Path, *args: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CAREER_RELAY_")}
    full_env["PYTHONPATH"] = str(REPO)
    full_env.update(env or {})
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd,
                          env=full_env, timeout=60)


def test_check_config_defaults_to_the_working_directory(make_config: ConfigMaker,
                                                        tmp_path: Path) -> None:
    config = make_config()
    assert config == tmp_path / "career-relay.toml"
    result = _run_in(tmp_path, "check-config")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "career-relay.toml: ok"

    # $CAREER_RELAY_CONFIG wins over ./career-relay.toml
    broken = tmp_path / "broken.toml"
    broken.write_text("[gateway]\nlistn = 1\n", encoding="utf-8")
    result = _run_in(tmp_path, "check-config", env={"CAREER_RELAY_CONFIG": str(broken)})
    assert_user_error(result, "gateway.listn")

    # and with neither there is nothing to read
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run_in(empty, "check-config")
    assert_user_error(result, "configuration file not found", "career-relay.toml")


# -- dkim-keygen -----------------------------------------------------------------------------


def test_dkim_keygen(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    result = run_cli("dkim-keygen", "--domain", "example.org", "--selector", "s1",
                     "--out", str(out))
    assert result.returncode == 0, result.stderr
    key_file = out / "example.org.s1.pem"
    assert key_file.is_file()
    assert mode(key_file) == 0o600
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048

    _, tags = txt_value(result.stdout, "s1._domainkey.example.org.")
    assert tags["v"] == "DKIM1"
    assert tags["k"] == "rsa"
    assert tags["p"] == spki_b64(key_file)
    public = serialization.load_der_public_key(base64.b64decode(tags["p"]))
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.public_numbers() == key.public_key().public_numbers()

    before = key_file.read_bytes()
    again = run_cli("dkim-keygen", "--domain", "example.org", "--selector", "s1",
                    "--out", str(out))
    assert_user_error(again, str(key_file), "already exists")
    assert key_file.read_bytes() == before


# -- hash-password ---------------------------------------------------------------------------


def test_hash_password_from_stdin() -> None:
    result = run_cli("hash-password", "--password-stdin", stdin="s3cret pass word\n")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith("$argon2id$")
    assert verify_password(line, "s3cret pass word")
    assert not verify_password(line, "s3cret pass word\n")
    assert not verify_password(line, "s3cret")


@pytest.mark.parametrize("stdin", ["\n", ""])
def test_hash_password_empty_is_refused(stdin: str) -> None:
    result = run_cli("hash-password", "--password-stdin", stdin=stdin)
    assert_user_error(result, "password")
    assert result.stdout == ""


# -- exit codes ------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("no-such-command",),
    (),
    ("dkim-keygen", "--selector", "s1"),
    ("dkim-keygen", "--domain", "example.org"),
    ("queue",),
    ("queue", "frobnicate"),
    ("check-config", "--no-such-option"),
], ids=["unknown-command", "no-command", "keygen-no-domain", "keygen-no-selector",
        "queue-no-action", "queue-bad-action", "unknown-option"])
def test_bad_usage_exits_2(args: tuple[str, ...]) -> None:
    assert_usage_error(run_cli(*args))


def test_queue_list_without_a_config(tmp_path: Path) -> None:
    missing = tmp_path / "career-relay.toml"
    result = run_cli("queue", "list", "--config", str(missing))
    assert_user_error(result, "configuration file not found", str(missing))
    assert result.stdout == ""


def test_queue_list_empty_spool(make_config: ConfigMaker) -> None:
    result = run_cli("queue", "list", "--config", str(make_config()))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "the queue is empty"
    assert "Traceback" not in result.stderr


def test_init_writes_a_hash_key_and_check_config_warns_without_one(tmp_path: Path) -> None:
    made = run_cli("init", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    config = tmp_path / "career-relay.toml"
    assert settings_mod.load(config, env={}).secrets.hash_key
    quiet = run_cli("check-config", "--config", str(config))
    assert quiet.returncode == 0 and "hash_key" not in quiet.stderr
    text = config.read_text(encoding="utf-8")
    config.write_text("\n".join(line for line in text.splitlines()
                                if not line.startswith("hash_key")), encoding="utf-8")
    warned = run_cli("check-config", "--config", str(config))
    assert warned.returncode == 0 and "warning: secrets.hash_key is empty" in warned.stderr


@pytest.mark.parametrize(("args", "field"), [
    (("--until", "9999-12-31"), "until"),
    (("--since", "0999-01-01"), "since"),
    (("--since", "0001-01-01", "--until", "9999-12-31"), "since"),
], ids=["until-9999", "since-0999", "since-0001"])
def test_report_refuses_a_year_it_cannot_count_in_one_line(
        make_config: ConfigMaker, args: tuple[str, ...], field: str) -> None:
    """Attack review: the day after 9999-12-31 overflowed, a year before 1000 broke the
    month keys; both were tracebacks."""
    result = run_cli("report", "--config", str(make_config()), "--format", "json", *args)
    assert_user_error(result, f"{field}: the year must be from 1000 to 2999")
    widest = run_cli("report", "--config", str(make_config()), "--format", "json",
                     "--since", "1000-01-01", "--until", "2999-12-31")
    assert widest.returncode == 0, widest.stderr
