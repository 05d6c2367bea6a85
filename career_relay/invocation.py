"""How the user can run ``career-relay`` from where they are: what the hints print.

``make run`` installs the command into ``.venv/bin/``, which is not on PATH,
so a hint saying ``career-relay report`` would fail with "command not
found" (issue 14).  The hints print the command as it can be typed here: the
bare name only when PATH finds this very installation, else the script's
path (relative to the working directory where it is below it), else
``python -m career_relay``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

NAME = "career-relay"


def command(*args: str | Path) -> str:
    """The command line that runs ``career-relay ARGS`` from the working directory."""
    return " ".join([_program(), *(shlex.quote(str(a)) for a in args)])


def python() -> str:
    """The interpreter that runs career-relay, as it can be typed here."""
    return shlex.quote(_relative(Path(sys.executable)))


def _program() -> str:
    # Beside the interpreter that runs us: never resolve sys.executable, a venv's python
    # is a symlink to the system's, whose directory holds no career-relay.
    script = Path(sys.executable).parent / NAME
    found = shutil.which(NAME)
    if found and script.exists() and os.path.samefile(found, script):
        return NAME
    if script.exists():
        return shlex.quote(_relative(script))
    return f"{shlex.quote(sys.executable)} -m career_relay"


def _relative(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (``.venv/bin/...``)."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
