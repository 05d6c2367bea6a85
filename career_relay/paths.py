"""Where the project's own files are, independent of the working directory."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def email_templates_dir() -> Path:
    """templates/emails/: the mail text operators restyle (rejection templates, DSN).

    In a source checkout, the folder itself; in an installed wheel, the copy the wheel
    carries as ``career_relay/email_templates/`` (pyproject.toml's package-dir).
    """
    checkout = PROJECT_ROOT / "templates" / "emails"
    if checkout.is_dir():
        return checkout
    return Path(__file__).resolve().parent / "email_templates"


def metrics_dir(queue_dir: str | Path) -> Path:
    """Where the gateway's worker processes keep their metrics (prometheus-client's
    multiprocess files): beside the spool, emptied by each start of the gateway, read
    by the consent site's ``/metrics``."""
    return Path(queue_dir) / "metrics"
