"""`career-relay init`: a starter configuration with fresh secrets.

The demo variant (``--demo``, used by ``make run``) points the upstream at a
local capture server that writes every relayed message to ``outbox/``, and
the agency webhook at a local stand-in agency that writes every forward to
``agency/``.  It also starts the ledger from ``ledger.db.example`` (five
months of three companies: acme, kumo, hoshi) when there is no ledger yet,
so a newcomer's report and dashboard are populated at once.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from career_relay.dkimkeys import generate_key, zone_line
from career_relay.errors import UserError
from career_relay.example_ledger import HASH_KEY as EXAMPLE_HASH_KEY
from career_relay.passwords import hash_password

DEMO_DOMAIN = "acme.example"
DEMO_SELECTOR = "cr2026"
#: Beside the package in a checkout (``make run``); an installed package generates it instead.
EXAMPLE_LEDGER = Path(__file__).resolve().parent.parent / "ledger.db.example"


@dataclass(frozen=True)
class Started:
    config: Path
    smtp_username: str
    smtp_password: str
    dns_record: str
    ledger: Path | None = None  # the demo's ledger, when init wrote it from the example
    #: The demo's admin logins (email, password, who), passwords shown once.
    admin_logins: tuple[tuple[str, str, str], ...] = ()


def write_starter(directory: Path, *, demo: bool) -> Started:
    config = directory / "career-relay.toml"
    if config.exists():
        raise UserError(f"{config} already exists; not overwritten")
    directory.mkdir(parents=True, exist_ok=True)
    key_rel = f"keys/{DEMO_DOMAIN}.{DEMO_SELECTOR}.pem"
    key = generate_key(directory / key_rel)
    password = secrets.token_urlsafe(12)
    text = _TEMPLATE.format(
        signing_key=json.dumps(secrets.token_urlsafe(32)),
        password_hash=json.dumps(hash_password(password)),
        key_file=json.dumps(key_rel),
        domain=json.dumps(DEMO_DOMAIN),
        selector=json.dumps(DEMO_SELECTOR),
        demo=_DEMO.format(webhook_secret=json.dumps(secrets.token_urlsafe(32))) if demo
        else "",
        hostname=json.dumps("relay.demo.test" if demo else "relay.example.com"),
        demo_secrets=_DEMO_SECRETS.format(hash_key=json.dumps(EXAMPLE_HASH_KEY)) if demo
        else _SECRETS.format(hash_key=json.dumps(secrets.token_urlsafe(32))),
        demo_companies=_DEMO_COMPANIES if demo else "",
        company_networks=_DEMO_NETWORKS if demo else _NETWORKS,
        review_window=_DEMO_REVIEW if demo else _REVIEW,
    )
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # it holds secrets
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    ledger = _example_ledger(directory / "ledger.db") if demo else None
    logins = _demo_admins(ledger) if ledger is not None else ()
    return Started(config, "acme", password, zone_line(DEMO_DOMAIN, DEMO_SELECTOR, key), ledger,
                   logins)


#: The demo's admin logins: an operator (every company) and acme's HR (acme only).
DEMO_ADMINS = (("operator@relay.demo.test", None, "operator: every company"),
               ("hr@acme.example", "acme", "acme's HR: acme only"))


def _demo_admins(ledger_path: Path) -> tuple[tuple[str, str, str], ...]:
    """Logins for the demo's admin pages, each with a fresh password (only its hash is kept)."""
    from career_relay.ledger import AdminUsers, open_ledger

    made = []
    with open_ledger(ledger_path) as ledger:
        ledger.publish_head()  # the copy's chain head, beside it (ledger.head_file's default)
        users = AdminUsers(ledger)
        for email, company, who in DEMO_ADMINS:
            password = secrets.token_urlsafe(9)
            users.add(email, password, company)
            made.append((email, password, who))
    return tuple(made)


def _example_ledger(path: Path) -> Path | None:
    """The demo's ledger starts as ``ledger.db.example``; an existing ledger is kept."""
    if path.exists():
        return None
    tmp = path.with_name(f".{path.name}.tmp")
    if EXAMPLE_LEDGER.is_file():
        shutil.copyfile(EXAMPLE_LEDGER, tmp)
    else:
        from career_relay.example_ledger import generate

        generate(tmp)
    tmp.replace(path)  # whole or not at all: a half-copied ledger never opens
    return path


_REVIEW = """\
# A decision this many seconds after the mail is held for an admin's review:
# mail scanners follow links within seconds (docs/consent-site.md).
review_window = 30
"""

_DEMO_REVIEW = """\
# A decision this many seconds after the mail is held for an admin's review, as
# mail scanners follow links within seconds (docs/consent-site.md). Production
# keeps the default, 30; the demo is shorter so that a quick first click counts.
review_window = 5
"""

_SECRETS = """\
# The key of the hash that stands for a candidate in the ledger (who counted once
# already, after their address is erased). Set once, never changed or rotated.
hash_key = {hash_key}
"""

_DEMO_SECRETS = """\
# The key of the example ledger's candidate hashes (career_relay/example_ledger.py), so
# that the demo's ledger, which starts as ledger.db.example, de-duplicates as it did.
# Never in production: set a secret of your own there, once.
hash_key = {hash_key}
"""

# Whose mail is it (SPEC 4): AUTH, or the company's own sending hosts. The demo's
# one-liners send from this machine without a password, as acme.
_DEMO_NETWORKS = """# This machine is acme's own sending host in the demo: its mail is acme's.
allow_ips = ["127.0.0.1/32"]
"""
_NETWORKS = """# acme's own sending hosts: their mail is acme's without AUTH, e.g.
# ["192.0.2.10/32"]. Never a shared provider range (Microsoft 365, Google): see
# docs/integrations/.
allow_ips = []
"""

# The example ledger's other companies: they send no mail in the demo (no SMTP login,
# no DKIM key), but their reports and dashboards are populated.
_DEMO_COMPANIES = """
[[companies]]
id = "kumo"
name = "クモ技研株式会社"
domains = ["kumo.example"]
locale = "ja"

[[companies]]
id = "hoshi"
name = "星野商事株式会社"
domains = ["hoshi.example"]
locale = "ja"
"""

_DEMO = """
[agency]
# The demo's stand-in agency (demo.agency_dir) listens here and checks each
# forward's signature with this secret, as a real agency would.
webhook_url = "http://127.0.0.1:8081/forwards"
webhook_secret = {webhook_secret}

[demo]
# A local stand-in for the company's smarthost: every relayed message is
# written to outbox/ as an .eml file.
capture_dir = "outbox"
# A local stand-in for the agency: every forward it receives is written to
# agency/ as <forward_id>.json.
agency_dir = "agency"
"""

_TEMPLATE = """\
# career-relay configuration. Every setting is listed in docs/configuration.md.
# Relative paths are relative to this file's directory.

[gateway]
listen = "127.0.0.1:2525"
hostname = {hostname}
require_auth = true
allow_ips = ["127.0.0.1/32"]
on_error = "pass"

[upstream]
host = "127.0.0.1"
port = 2526
tls = "none"

[queue]
dir = "spool"

[site]
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
{review_window}
[ledger]
path = "ledger.db"

[secrets]
# Newest first. Prefer CAREER_RELAY_SECRETS_SIGNING_KEYS in production.
signing_keys = [{signing_key}]
{demo_secrets}{demo}
[[companies]]
id = "acme"
name = "株式会社アクメ"
domains = [{domain}]
locale = "ja"
detect = "marker"
dkim_selector = {selector}
dkim_key_file = {key_file}
smtp_username = "acme"
smtp_password_hash = {password_hash}
{company_networks}{demo_companies}"""
