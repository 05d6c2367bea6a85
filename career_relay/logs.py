"""Logging set-up: one line per event, as text or JSON (``[log] format``).

Messages carry the queue id and counts, never addresses or names: personal
data appears only at DEBUG.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from career_relay.settings import LogSettings

# Every line about a message carries ``queue_id=<id>`` in its text (SPEC: no personal
# data at INFO); JSON gives the id a field of its own, to select a message's life by.
_QUEUE_ID = re.compile(r"\bqueue_id=([0-9A-Za-z_-]+)")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        found = _QUEUE_ID.search(message)
        if found:
            entry["queue_id"] = found.group(1)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(settings: LogSettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    # aiosmtpd logs every session at INFO with peer details; keep it to warnings.
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, root.level))


_ADDRESS = re.compile(r"[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+")


def without_addresses(text: str) -> str:
    """``text`` with every e-mail address replaced by the word "address": SMTP replies
    quote the recipient ("550 5.1.1 <taro@example.jp>: unknown" becomes "550 5.1.1
    <address>: unknown"), and no personal data goes to INFO."""
    return _ADDRESS.sub("address", text)
