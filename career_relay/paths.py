"""Where the project's own files are, independent of the working directory."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def email_templates_dir() -> Path:
    """templates/emails/: the mail text operators restyle (rejection templates, DSN)."""
    return PROJECT_ROOT / "templates" / "emails"
