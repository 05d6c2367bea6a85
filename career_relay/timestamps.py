"""The one spelling of a moment the ledger, the receipts and the exports use.

``YYYY-MM-DDTHH:MM:SSZ``, UTC, one-second resolution (RFC 3339 section 5.6,
the ``Z`` form): it sorts as text, so the ledger compares and indexes it as
text in either backend, and the hash chain covers it byte for byte.
"""

from __future__ import annotations

import datetime as dt

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def stamp(moment: dt.datetime) -> str:
    """``moment`` in UTC, to the second."""
    return moment.astimezone(dt.UTC).strftime(FORMAT)


def parse_stamp(text: str) -> dt.datetime:
    """The aware UTC moment ``stamp`` wrote."""
    return dt.datetime.strptime(text, FORMAT).replace(tzinfo=dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def zone(name: str) -> dt.tzinfo:
    """The IANA time zone ``name`` (``site.time_zone``); ``ValueError`` names a bad one."""
    import zoneinfo

    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"not an IANA time zone (e.g. Asia/Tokyo, UTC): {name!r}") from None


def zone_label(tz: dt.tzinfo, at: dt.datetime) -> str:
    """``Asia/Tokyo (UTC+09:00)``: the zone's name and its offset at ``at``."""
    offset = at.astimezone(tz).strftime("%z")
    return f"{tz} (UTC{offset[:3]}:{offset[3:]})"
