"""career-relay core: settings, errors and the ledger. No SMTP, no HTTP here."""

__version__ = "0.1.0"
