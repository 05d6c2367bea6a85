"""The building blocks of the settings table: ``setting(...)`` and the sections' shared
behaviour (a ``repr()`` that masks secrets).  The table itself is
``career_relay.settings_table``."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

MASK = "********"
#: The id of the agency the single ``[agency]`` table stands for, and of every company's
#: agency unless ``companies.agency`` names another (SPEC 11).
DEFAULT_AGENCY = "default"


def setting(default: Any, help: str, *, secret: bool = False, path: bool = False) -> Any:
    """Declare one setting: its default, its help text, whether it is secret or a path."""
    meta = {"help": help, "secret": secret, "path": path}
    if isinstance(default, list | tuple):
        value = tuple(default)
        return field(default_factory=lambda: value, metadata=meta)
    return field(default=default, metadata=meta)


class _Section:
    """Shared behaviour of the section dataclasses: masked repr, field listing."""

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            shown = _masked(value) if f.metadata.get("secret") else repr(value)
            parts.append(f"{f.name}={shown}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _masked(value: Any) -> str:
    if isinstance(value, tuple):
        return repr(tuple(MASK for _ in value))
    return repr(MASK if value else "")
