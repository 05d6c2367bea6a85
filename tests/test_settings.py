"""The settings table and its loader (SPEC 3), through real TOML files in tmp_path.

Every bad configuration must stop the loader with a ``ConfigError`` whose
message is one line and names the setting (or the file, or the environment
variable) at fault.  The environment is always passed explicitly as ``env=``
so the tests never depend on, or change, ``os.environ``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import pytest

from career_relay import settings as settings_mod
from career_relay.errors import ConfigError
from career_relay.passwords import hash_password
from career_relay.settings import Settings
from career_relay.validate import file_problems

NO_ENV: dict[str, str] = {}

# SPEC 3's example, verbatim apart from the comments: every value in it is a default.
SPEC_EXAMPLE = """\
[gateway]
listen = "127.0.0.1:2525"
hostname = "relay.example.com"
max_message_size = 26214400
require_auth = true
allow_ips = ["127.0.0.1/32"]
tls_cert = ""
tls_key = ""
on_error = "pass"

[upstream]
host = "127.0.0.1"
port = 2526
tls = "none"
username = ""
password = ""

[queue]
dir = "var/spool"
retry_schedule = [60, 300, 900, 1800, 3600, 7200, 14400]
max_age = 432000

[site]
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
link_max_age_days = 90
review_window = 30

[ledger]
path = "var/ledger.db"
credit_every = 10

[secrets]
signing_keys = []

[agency]
name = "株式会社サンプル人材"
license_no = "13-ユ-000000"
privacy_url = "https://agency.example/privacy"
deliver = "webhook"
webhook_url = ""
webhook_secret = ""
email = ""

[[companies]]
id = "acme"
name = "株式会社アクメ"
domains = ["acme.example"]
locale = "ja"
detect = "marker"
dkim_selector = "cr2026"
dkim_key_file = "keys/acme.example.cr2026.pem"
smtp_username = "acme"
smtp_password_hash = "$argon2id$..."
"""

ACME = '[[companies]]\nid = "acme"\nname = "Acme"\ndomains = ["acme.example"]\n'
BETA = '[[companies]]\nid = "beta"\nname = "Beta"\ndomains = ["beta.example"]\n'


def write(directory: Path, text: str | bytes, name: str = "career-relay.toml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, env: Mapping[str, str] = NO_ENV) -> Settings:
    return settings_mod.load(write(tmp_path, text), env=env)


def error_of(tmp_path: Path, text: str | bytes, env: Mapping[str, str] = NO_ENV) -> str:
    """The loader's message for a configuration that must be refused; it is one line."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        settings_mod.load(path, env=env)
    message = str(info.value)
    assert message, "an empty error message names nothing"
    assert "\n" not in message, f"not one line: {message!r}"
    return message


# -- the table and its defaults --------------------------------------------------------------


def test_defaults_match_spec_example(tmp_path: Path) -> None:
    s = load_text(tmp_path, "")
    base = tmp_path.resolve()

    assert s.gateway.listen == "127.0.0.1:2525"
    assert s.gateway.hostname == "relay.example.com"
    assert s.gateway.max_message_size == 26214400
    assert s.gateway.require_auth is True
    assert s.gateway.allow_ips == ("127.0.0.1/32",)
    assert (s.gateway.tls_cert, s.gateway.tls_key) == ("", "")
    assert s.gateway.on_error == "pass"

    assert (s.upstream.host, s.upstream.port, s.upstream.tls) == ("127.0.0.1", 2526, "none")
    assert (s.upstream.username, s.upstream.password) == ("", "")

    assert s.queue.dir == str(base / "var" / "spool")
    assert s.queue.retry_schedule == (60, 300, 900, 1800, 3600, 7200, 14400)
    assert s.queue.max_age == 432000

    assert s.site.listen == "127.0.0.1:8080"
    assert s.site.public_url == "http://127.0.0.1:8080"
    assert s.site.link_max_age_days == 90
    assert s.site.review_window == 30

    assert s.ledger.path == str(base / "var" / "ledger.db")
    assert s.ledger.credit_every == 10

    assert s.secrets.signing_keys == ()

    assert s.agency.name == "株式会社サンプル人材"
    assert s.agency.license_no == "13-ユ-000000"
    assert s.agency.privacy_url == "https://agency.example/privacy"
    assert s.agency.deliver == "webhook"
    assert (s.agency.webhook_url, s.agency.webhook_secret, s.agency.email) == ("", "", "")

    assert (s.log.level, s.log.format) == ("info", "text")
    assert s.demo.capture_dir == ""
    assert s.companies == ()


def test_spec_example_loads_and_equals_the_defaults(tmp_path: Path) -> None:
    example = load_text(tmp_path / "example", SPEC_EXAMPLE)
    empty = load_text(tmp_path / "example", "")  # same directory, so the same resolved paths
    for name in settings_mod.SECTIONS:
        assert getattr(example, name) == getattr(empty, name), name
    (acme,) = example.companies
    assert acme.id == "acme"
    assert acme.domains == ("acme.example",)
    assert (acme.locale, acme.detect, acme.dkim_selector) == ("ja", "marker", "cr2026")
    assert acme.dkim_key_file == str(
        (tmp_path / "example").resolve() / "keys" / "acme.example.cr2026.pem")
    assert example.company_for_domain("ACME.example") is acme
    assert example.company_for_domain("other.example") is None


def test_company_defaults(tmp_path: Path) -> None:
    (c,) = load_text(tmp_path, ACME).companies
    assert (c.locale, c.detect) == ("ja", "marker")
    assert (c.dkim_selector, c.dkim_key_file) == ("", "")
    assert (c.smtp_username, c.smtp_password_hash) == ("", "")


def test_every_setting_has_help_text() -> None:
    seen = list(settings_mod.iter_settings())
    assert len(seen) > 40
    for section, f in seen:
        assert f.metadata.get("help", "").strip(), f"{section}.{f.name} has no help text"
        has_default = (f.default is not dataclasses.MISSING
                       or f.default_factory is not dataclasses.MISSING)
        assert has_default, f"{section}.{f.name} has no default"


# -- refused configurations ------------------------------------------------------------------

BAD_CONFIGS: list[tuple[str, str, tuple[str, ...]]] = [
    # (test id, TOML, substrings the one-line message must contain)
    ("unknown-key", '[gateway]\nlistn = "127.0.0.1:2525"\n', ("gateway.listn", "unknown")),
    ("unknown-section", "[gatway]\n", ("[gatway]", "unknown")),
    ("unknown-top-level-key", 'listen = "127.0.0.1:2525"\n', ("[listen]",)),
    ("section-not-a-table", "gateway = 5\n", ("[gateway]", "table")),
    ("unknown-company-key", ACME + "colour = 1\n", ("companies[0].colour",)),
    ("companies-not-an-array", '[companies]\nid = "acme"\n', ("[[companies]]",)),
    ("company-not-a-table", "companies = [1]\n", ("companies[0]", "table")),
    ("string-for-int", '[gateway]\nmax_message_size = "25MB"\n',
     ("gateway.max_message_size", "integer", "a string")),
    ("float-for-int", "[queue]\nmax_age = 1.5\n", ("queue.max_age", "integer")),
    ("bool-for-int", "[upstream]\nport = true\n", ("upstream.port", "integer", "a boolean")),
    ("int-for-bool", "[gateway]\nrequire_auth = 1\n",
     ("gateway.require_auth", "true or false", "an integer")),
    ("string-for-bool", '[upstream]\nverify_tls = "no"\n', ("upstream.verify_tls",)),
    ("int-for-string", "[gateway]\nhostname = 5\n", ("gateway.hostname", "string")),
    ("scalar-for-list", '[gateway]\nallow_ips = "127.0.0.1/32"\n',
     ("gateway.allow_ips", "list")),
    ("scalar-for-int-list", "[queue]\nretry_schedule = 60\n", ("queue.retry_schedule", "list")),
    ("table-for-list", "[secrets]\nsigning_keys = {a = 1}\n", ("secrets.signing_keys", "list")),
    ("wrong-int-list-item", '[queue]\nretry_schedule = [60, "300"]\n',
     ("queue.retry_schedule[1]", "integer")),
    ("wrong-str-list-item", "[secrets]\nsigning_keys = [1]\n", ("secrets.signing_keys[0]",)),
    ("company-scalar-domains", '[[companies]]\nid = "acme"\ndomains = "acme.example"\n',
     ("companies[0].domains", "list")),
    ("listen-nope", '[gateway]\nlisten = "nope"\n', ("gateway.listen", "nope")),
    ("listen-no-host", '[gateway]\nlisten = ":2525"\n', ("gateway.listen",)),
    ("listen-port-0", '[gateway]\nlisten = "127.0.0.1:0"\n', ("gateway.listen",)),
    ("listen-port-70000", '[gateway]\nlisten = "127.0.0.1:70000"\n', ("gateway.listen",)),
    ("listen-port-not-number", '[gateway]\nlisten = "127.0.0.1:smtp"\n', ("gateway.listen",)),
    ("site-listen", '[site]\nlisten = "127.0.0.1"\n', ("site.listen",)),
    ("on-error", '[gateway]\non_error = "drop"\n', ("gateway.on_error", "drop")),
    ("upstream-tls", '[upstream]\ntls = "ssl"\n', ("upstream.tls", "ssl")),
    ("log-format", '[log]\nformat = "xml"\n', ("log.format", "xml")),
    ("log-level", '[log]\nlevel = "verbose"\n', ("log.level", "verbose")),
    ("agency-deliver", '[agency]\ndeliver = "fax"\n', ("agency.deliver", "fax")),
    ("company-locale", ACME + 'locale = "fr"\n', ("companies[acme].locale", "fr")),
    ("company-detect", ACME + 'detect = "ml"\n', ("companies[acme].detect", "ml")),
    ("allow-ips-word", '[gateway]\nallow_ips = ["127.0.0.1/32", "nope"]\n',
     ("gateway.allow_ips", "nope")),
    ("allow-ips-bad-prefix", '[gateway]\nallow_ips = ["10.0.0.0/33"]\n', ("gateway.allow_ips",)),
    ("tls-cert-without-key", '[gateway]\ntls_cert = "cert.pem"\n',
     ("gateway.tls_cert", "gateway.tls_key")),
    ("tls-key-without-cert", '[gateway]\ntls_key = "key.pem"\n',
     ("gateway.tls_cert", "gateway.tls_key")),
    ("duplicate-company-id", ACME + ACME.replace("acme.example", "other.example"),
     ("companies[acme].id", "twice")),
    ("domain-of-two-companies", ACME + BETA.replace("beta.example", "acme.example"),
     ("companies[beta].domains", "acme.example", "acme")),
    ("company-without-id", '[[companies]]\ndomains = ["acme.example"]\n',
     ("companies[0].id", "required")),
    ("company-without-domains", '[[companies]]\nid = "acme"\n', ("companies[acme].domains",)),
    ("company-upper-case-domain", ACME.replace("acme.example", "Acme.Example"),
     ("companies[acme].domains", "Acme.Example")),
    ("non-argon2-hash", ACME + 'smtp_username = "acme"\nsmtp_password_hash = "hunter2"\n',
     ("companies[acme].smtp_password_hash", "argon2")),
    ("username-without-hash", ACME + 'smtp_username = "acme"\n',
     ("companies[acme].smtp_password_hash",)),
    ("selector-without-key", ACME + 'dkim_selector = "s1"\n',
     ("companies[acme]", "dkim_selector", "dkim_key_file")),
    ("max-message-size-0", "[gateway]\nmax_message_size = 0\n",
     ("gateway.max_message_size", "greater than 0")),
    ("max-message-size-negative", "[gateway]\nmax_message_size = -1\n",
     ("gateway.max_message_size",)),
    ("gateway-timeout-0", "[gateway]\ntimeout = 0\n", ("gateway.timeout",)),
    ("gateway-workers-negative", "[gateway]\nworkers = -1\n", ("gateway.workers",)),
    ("upstream-port-0", "[upstream]\nport = 0\n", ("upstream.port",)),
    ("upstream-port-negative", "[upstream]\nport = -25\n", ("upstream.port",)),
    ("upstream-connections-0", "[upstream]\nconnections = 0\n", ("upstream.connections",)),
    ("upstream-timeout-negative", "[upstream]\ntimeout = -1\n", ("upstream.timeout",)),
    ("max-age-0", "[queue]\nmax_age = 0\n", ("queue.max_age",)),
    ("credit-every-0", "[ledger]\ncredit_every = 0\n", ("ledger.credit_every",)),
    ("link-max-age-negative", "[site]\nlink_max_age_days = -1\n", ("site.link_max_age_days",)),
    ("retry-schedule-empty", "[queue]\nretry_schedule = []\n", ("queue.retry_schedule",)),
    ("retry-schedule-zero", "[queue]\nretry_schedule = [60, 0]\n", ("queue.retry_schedule",)),
    ("retry-schedule-negative", "[queue]\nretry_schedule = [-60]\n", ("queue.retry_schedule",)),
    ("upstream-is-the-gateway", '[gateway]\nlisten = "127.0.0.1:2600"\n[upstream]\nport = 2600\n',
     ("upstream 127.0.0.1:2600", "gateway.listen", "mail loop")),
    ("upstream-localhost-is-the-gateway",
     '[gateway]\nlisten = "127.0.0.1:2600"\n[upstream]\nhost = "localhost"\nport = 2600\n',
     ("upstream localhost:2600", "mail loop")),
    ("upstream-loopback-of-a-wildcard-gateway",
     '[gateway]\nlisten = "[::]:25"\n[upstream]\nhost = "127.0.0.5"\nport = 25\n',
     ("gateway.listen ([::]:25)", "mail loop")),
    ("upstream-is-the-gateways-own-name",
     '[gateway]\nlisten = "0.0.0.0:25"\nhostname = "relay.acme.example"\n'
     '[upstream]\nhost = "Relay.Acme.Example."\nport = 25\n', ("mail loop",)),
]


@pytest.mark.parametrize(("text", "needles"), [(t, n) for _, t, n in BAD_CONFIGS],
                         ids=[i for i, _, _ in BAD_CONFIGS])
def test_bad_config_is_one_line_error_naming_the_setting(
        tmp_path: Path, text: str, needles: tuple[str, ...]) -> None:
    message = error_of(tmp_path, text)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


@pytest.mark.parametrize(("listen", "host", "port"), [
    ("0.0.0.0:25", "mail.acme.example", 25),   # the usual: the company's server, port 25
    ("127.0.0.1:2525", "127.0.0.1", 2526),     # the defaults
    ("127.0.0.1:2525", "127.0.0.2", 2525),     # another loopback address
    ("0.0.0.0:2525", "::1", 2525),             # IPv6 loopback does not reach an IPv4 listener
    ("[::1]:2525", "127.0.0.1", 2525),
    ("localhost:2525", "::1", 2525),           # a "localhost" listener binds 127.0.0.1 only
    # Listening on loopback only, the machine's own name is another server (Postfix on the
    # public address).
    ("127.0.0.1:25", "relay.acme.example", 25),
])
def test_an_upstream_on_the_gateways_port_elsewhere_is_no_loop(
        tmp_path: Path, listen: str, host: str, port: int) -> None:
    s = load_text(tmp_path, f'[gateway]\nlisten = "{listen}"\nhostname = "relay.acme.example"\n'
                            f'[upstream]\nhost = "{host}"\nport = {port}\n')
    assert (s.upstream.host, s.upstream.port) == (host, port)


def test_the_same_settings_pass_when_valid(tmp_path: Path) -> None:
    """The counterpart of the table above: the valid neighbours of each bad value load."""
    s = load_text(tmp_path, """\
[gateway]
listen = "[::1]:2525"
allow_ips = ["127.0.0.1", "10.0.0.0/8", "::1/128"]
tls_cert = "cert.pem"
tls_key = "key.pem"
on_error = "tempfail"
workers = 0
[upstream]
port = 65535
tls = "tls"
[site]
listen = "0.0.0.0:1"
[log]
format = "json"
level = "debug"
[agency]
deliver = "email"
[queue]
retry_schedule = [1]
""" + ACME + 'locale = "en"\ndetect = "auto"\nsmtp_username = "acme"\n'
        + f'smtp_password_hash = "{hash_password("pw")}"\n' + BETA)
    assert s.gateway.listen == "[::1]:2525"
    assert s.gateway.on_error == "tempfail"
    assert s.upstream.port == 65535
    assert [c.id for c in s.companies] == ["acme", "beta"]
    assert s.company_for_domain("beta.example") is s.companies[1]


def test_secret_values_are_not_echoed_in_errors(tmp_path: Path) -> None:
    message = error_of(tmp_path, ACME + 'smtp_username = "acme"\n'
                       'smtp_password_hash = "plain-text-password-42"\n')
    assert "smtp_password_hash" in message
    assert "plain-text-password-42" not in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "career-relay.toml"
    with pytest.raises(ConfigError) as info:
        settings_mod.load(path, env=NO_ENV)
    message = str(info.value)
    assert "configuration file not found" in message
    assert str(path) in message
    assert "\n" not in message


def test_directory_instead_of_file(tmp_path: Path) -> None:
    path = tmp_path / "career-relay.toml"
    path.mkdir()
    with pytest.raises(ConfigError) as info:
        settings_mod.load(path, env=NO_ENV)
    message = str(info.value)
    assert "cannot read configuration file" in message
    assert str(path) in message
    assert "\n" not in message


def test_invalid_utf8(tmp_path: Path) -> None:
    message = error_of(tmp_path, b'[gateway]\nhostname = "r\xe9lay.example"\n')
    assert "cannot read configuration file" in message
    assert str(tmp_path / "career-relay.toml") in message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[gateway]\nlisten = "127.0.0.1:2525\n')
    assert str(tmp_path / "career-relay.toml") in message
    assert "not valid TOML" in message
    assert "line 2" in message


# -- edge cases that once slipped through --------------------------------------------


def test_listen_port_with_superscript_digit(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[gateway]\nlisten = "127.0.0.1:²"\n')
    assert "gateway.listen" in message


def test_upstream_port_above_65535(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[upstream]\nport = 70000\n")
    assert "upstream.port" in message


def test_negative_review_window(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[site]\nreview_window = -5\n")
    assert "site.review_window" in message


# -- file problems (check-config and start-up) -------------------------------------------------


def test_file_problems_name_the_setting(tmp_path: Path) -> None:
    s = load_text(tmp_path, '[gateway]\ntls_cert = "tls/cert.pem"\ntls_key = "tls/key.pem"\n'
                  + ACME + 'dkim_selector = "s1"\ndkim_key_file = "keys/acme.pem"\n')
    problems = file_problems(s)
    base = tmp_path.resolve()
    assert len(problems) == 3, problems
    cert, key, dkim = problems
    assert cert.startswith("gateway.tls_cert: ")
    assert str(base / "tls" / "cert.pem") in cert
    assert key.startswith("gateway.tls_key: ")
    assert dkim.startswith("companies[acme].dkim_key_file: ")
    assert str(base / "keys" / "acme.pem") in dkim
    assert all("\n" not in p for p in problems)


def test_file_problems_empty_when_files_exist(tmp_path: Path) -> None:
    for name in ("tls/cert.pem", "tls/key.pem", "keys/acme.pem"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    s = load_text(tmp_path, '[gateway]\ntls_cert = "tls/cert.pem"\ntls_key = "tls/key.pem"\n'
                  + ACME + 'dkim_selector = "s1"\ndkim_key_file = "keys/acme.pem"\n')
    assert file_problems(s) == []


def test_file_problems_directory_instead_of_key(tmp_path: Path) -> None:
    (tmp_path / "keys" / "acme.pem").mkdir(parents=True)
    s = load_text(tmp_path, ACME + 'dkim_selector = "s1"\ndkim_key_file = "keys/acme.pem"\n')
    (problem,) = file_problems(s)
    assert problem.startswith("companies[acme].dkim_key_file: cannot read")


# -- environment overrides ---------------------------------------------------------------------


def test_env_int_override(tmp_path: Path) -> None:
    s = load_text(tmp_path, "", {"CAREER_RELAY_GATEWAY_MAX_MESSAGE_SIZE": "1000"})
    assert s.gateway.max_message_size == 1000


@pytest.mark.parametrize(("text", "expected"), [
    ("true", True), ("false", False), ("1", True), ("0", False), ("yes", True), ("no", False),
    ("TRUE", True), (" False ", False),
])
def test_env_bool_override(tmp_path: Path, text: str, expected: bool) -> None:
    in_file = "true" if not expected else "false"
    s = load_text(tmp_path, f"[gateway]\nrequire_auth = {in_file}\n",
                  {"CAREER_RELAY_GATEWAY_REQUIRE_AUTH": text})
    assert s.gateway.require_auth is expected


def test_env_list_as_json(tmp_path: Path) -> None:
    s = load_text(tmp_path, "", {"CAREER_RELAY_QUEUE_RETRY_SCHEDULE": "[5, 10, 20]",
                                 "CAREER_RELAY_SECRETS_SIGNING_KEYS": '["new,key", "old"]'})
    assert s.queue.retry_schedule == (5, 10, 20)
    assert s.secrets.signing_keys == ("new,key", "old")


def test_env_list_comma_separated(tmp_path: Path) -> None:
    s = load_text(tmp_path, "", {"CAREER_RELAY_QUEUE_RETRY_SCHEDULE": "5, 10,20",
                                 "CAREER_RELAY_GATEWAY_ALLOW_IPS": "10.0.0.0/8, 192.168.0.0/16"})
    assert s.queue.retry_schedule == (5, 10, 20)
    assert s.gateway.allow_ips == ("10.0.0.0/8", "192.168.0.0/16")


def test_env_beats_the_file(tmp_path: Path) -> None:
    text = ('[gateway]\nmax_message_size = 500\nhostname = "from.file"\n'
            '[upstream]\npassword = "file-password"\n')
    s = load_text(tmp_path, text, {"CAREER_RELAY_GATEWAY_MAX_MESSAGE_SIZE": "1000",
                                   "CAREER_RELAY_UPSTREAM_PASSWORD": "env-password"})
    assert s.gateway.max_message_size == 1000
    assert s.upstream.password == "env-password"
    assert s.gateway.hostname == "from.file"  # not overridden: the file's value stays


@pytest.mark.parametrize(("var", "value"), [
    ("CAREER_RELAY_GATEWAY_MAX_MESSAGE_SIZE", "25MB"),
    ("CAREER_RELAY_GATEWAY_MAX_MESSAGE_SIZE", ""),
    ("CAREER_RELAY_GATEWAY_REQUIRE_AUTH", "maybe"),
    ("CAREER_RELAY_QUEUE_RETRY_SCHEDULE", "[60, 300"),
    ("CAREER_RELAY_QUEUE_RETRY_SCHEDULE", "60, five"),
])
def test_env_bad_value_names_the_variable(tmp_path: Path, var: str, value: str) -> None:
    message = error_of(tmp_path, "", {var: value})
    assert var in message


def test_env_json_list_item_type_names_the_variable(tmp_path: Path) -> None:
    message = error_of(tmp_path, "", {"CAREER_RELAY_QUEUE_RETRY_SCHEDULE": '["60"]'})
    assert "CAREER_RELAY_QUEUE_RETRY_SCHEDULE" in message


def test_env_values_are_validated(tmp_path: Path) -> None:
    message = error_of(tmp_path, "", {"CAREER_RELAY_GATEWAY_LISTEN": "nope"})
    assert "gateway.listen" in message


@pytest.mark.parametrize("var", [
    "CAREER_RELAY_GATEWAY_LISTN", "CAREER_RELAY_FOO", "CAREER_RELAY_GATEWAY",
])
def test_env_unknown_variable_is_an_error(tmp_path: Path, var: str) -> None:
    message = error_of(tmp_path, "", {var: "1"})
    assert var in message


def test_env_config_and_unrelated_variables_are_allowed(tmp_path: Path) -> None:
    s = load_text(tmp_path, "", {"CAREER_RELAY_CONFIG": "/elsewhere/career-relay.toml",
                                 "CAREER_RELAY": "x", "HOME": "/root", "PATH": "/usr/bin"})
    assert s.gateway.listen == "127.0.0.1:2525"


def test_env_companies_variable_is_not_silently_ignored(tmp_path: Path) -> None:
    env = {"CAREER_RELAY_COMPANIES_NAME": "Overridden"}
    path = write(tmp_path, ACME)
    try:
        s = settings_mod.load(path, env=env)
    except ConfigError as exc:
        assert "CAREER_RELAY_COMPANIES_NAME" in str(exc)
        return
    assert s.companies[0].name == "Overridden", "the variable was accepted and ignored"


# -- relative paths --------------------------------------------------------------------------


PATHS_TOML = """\
[gateway]
tls_cert = "tls/cert.pem"
tls_key = "/etc/ssl/private/relay.key"
[queue]
dir = "spool"
[ledger]
path = "db/ledger.db"
[demo]
capture_dir = "outbox"
""" + ACME + 'dkim_selector = "s1"\ndkim_key_file = "keys/acme.pem"\n'


def _assert_paths_under(s: Settings, base: Path) -> None:
    assert s.queue.dir == str(base / "spool")
    assert s.ledger.path == str(base / "db" / "ledger.db")
    assert s.gateway.tls_cert == str(base / "tls" / "cert.pem")
    assert s.gateway.tls_key == "/etc/ssl/private/relay.key"  # absolute: kept as it is
    assert s.demo.capture_dir == str(base / "outbox")
    assert s.companies[0].dkim_key_file == str(base / "keys" / "acme.pem")


def test_relative_paths_resolve_against_the_config_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf_dir = tmp_path / "etc" / "career-relay"
    path = write(conf_dir, PATHS_TOML)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    _assert_paths_under(settings_mod.load(path, env=NO_ENV), conf_dir.resolve())
    # a relative --config path is taken from the working directory, its contents from its own
    relative = Path("..") / "etc" / "career-relay" / "career-relay.toml"
    _assert_paths_under(settings_mod.load(relative, env=NO_ENV), conf_dir.resolve())


def test_default_paths_resolve_against_the_config_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "conf", "")
    monkeypatch.chdir(tmp_path)
    s = settings_mod.load(path, env=NO_ENV)
    assert s.queue.dir == str((tmp_path / "conf").resolve() / "var" / "spool")
    assert s.ledger.path == str((tmp_path / "conf").resolve() / "var" / "ledger.db")


def test_env_relative_path_resolves_against_the_config_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "conf", "")
    monkeypatch.chdir(tmp_path)
    s = settings_mod.load(path, env={"CAREER_RELAY_QUEUE_DIR": "spool2"})
    assert s.queue.dir == str((tmp_path / "conf").resolve() / "spool2")


# -- secrets are masked ----------------------------------------------------------------------

SECRET_VALUES = ("UPSTREAM-PW-1234", "WEBHOOK-SECRET-5678", "SIGNING-KEY-NEW-9012",
                 "SIGNING-KEY-OLD-3456")


def test_repr_masks_secrets(tmp_path: Path) -> None:
    password_hash = hash_password("company password")
    s = load_text(tmp_path, f"""\
[gateway]
hostname = "visible-host.example"
[upstream]
username = "visible-user"
password = "{SECRET_VALUES[0]}"
[agency]
webhook_url = "https://visible.example/hook"
webhook_secret = "{SECRET_VALUES[1]}"
[secrets]
signing_keys = ["{SECRET_VALUES[2]}", "{SECRET_VALUES[3]}"]
""" + ACME + f'smtp_username = "visible-acme"\nsmtp_password_hash = "{password_hash}"\n')
    # the values are loaded, so a masked repr is hiding something real
    assert s.upstream.password == SECRET_VALUES[0]
    assert s.agency.webhook_secret == SECRET_VALUES[1]
    assert s.secrets.signing_keys == SECRET_VALUES[2:]
    assert s.companies[0].smtp_password_hash == password_hash

    secrets = (*SECRET_VALUES, password_hash, password_hash.rsplit("$", 1)[-1])
    shown = [repr(s), str(s), f"{s!r}", repr(s.companies), str(s.companies[0])]
    shown += [repr(getattr(s, name)) for name in settings_mod.SECTIONS]
    for text in shown:
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaks in {text!r}"

    everything = repr(s)
    for visible in ("visible-host.example", "visible-user", "https://visible.example/hook",
                    "visible-acme", "acme.example"):
        assert visible in everything
    assert settings_mod.MASK in repr(s.upstream)
    assert settings_mod.MASK in repr(s.agency)
    assert settings_mod.MASK in repr(s.secrets)
    assert settings_mod.MASK in repr(s.companies[0])


def test_repr_masks_secrets_given_by_the_environment(tmp_path: Path) -> None:
    s = load_text(tmp_path, "", {"CAREER_RELAY_UPSTREAM_PASSWORD": SECRET_VALUES[0],
                                 "CAREER_RELAY_SECRETS_SIGNING_KEYS": SECRET_VALUES[2]})
    assert s.upstream.password == SECRET_VALUES[0]
    assert s.secrets.signing_keys == (SECRET_VALUES[2],)
    assert SECRET_VALUES[0] not in repr(s)
    assert SECRET_VALUES[2] not in repr(s)
