"""Render docs/configuration.md from the settings table (`make docs`).

A test compares the committed file with this output, so the reference can
never drift from the code.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from career_relay.settings import ENV_PREFIX, iter_settings

_INTRO = """\
# Configuration reference

career-relay reads one TOML file: `--config PATH`, else `$CAREER_RELAY_CONFIG`,
else `./career-relay.toml`. Relative paths in it are relative to the file's
own directory. Every key can be overridden from the environment as
`CAREER_RELAY_<SECTION>_<KEY>` in upper case (lists as JSON or comma-separated,
booleans as true/false/1/0); this is how secrets are normally given.
Unknown keys, unknown sections and unknown `CAREER_RELAY_*` variables are
errors, so a typo never passes silently. `career-relay check-config` prints
every problem at once.

Secrets (marked below) never appear in logs or in `repr()`.

This file is generated from the settings table in `career_relay/settings.py`
by `make docs`; a test fails when the two differ.
"""


_ARRAY_TITLES = {
    "agencies": "[[agencies]] (one table per agency; the environment as "
                "CAREER_RELAY_AGENCIES_<ID>_<KEY>, the id upper case with - as _)",
    "companies": "[[companies]] (one table per company)",
}


def _default(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return "`" + json.dumps(value, ensure_ascii=False) + "`"


def render() -> str:
    out = [_INTRO]
    current = None
    for section, f in iter_settings():
        if section != current:
            current = section
            title = _ARRAY_TITLES.get(section, f"[{section}]")
            out.append(f"\n## `{title}`\n")
            out.append("| key | default | environment | meaning |")
            out.append("| --- | --- | --- | --- |")
        default = f.default_factory() if callable(f.default_factory) else f.default
        env = f"`{ENV_PREFIX}{section}_{f.name}`".upper()
        if section == "companies" or f.name == "id":
            env = "–"
        elif section == "agencies":
            env = f"`{ENV_PREFIX}AGENCIES_<ID>_{f.name.upper()}`"
        help_text = f.metadata["help"].replace("|", "\\|")
        help_text += " **Secret.**" if f.metadata.get("secret") else ""
        out.append(f"| `{f.name}` | {_default(default)} | {env} | {help_text} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
