"""One attempt at one forward, to one agency (SPEC 7, 11): the webhook POST, or the mail.

Each function takes the agency the forward is for (``forwards.agency``): its URL, its
secret, its address.  A notice that is not a forward (``agency_notices``: a
``credit_request``, SPEC 11) goes the same way, to its own agency, signed the same.
Nothing here chooses an agency; the worker (``consent_site.forwarding``) passes the
forward's own, so one agency's secret never signs, and one agency's address never
receives, another agency's forward.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from typing import Protocol

import aiohttp
import aiosmtplib

from career_relay import __version__
from career_relay.agency_signature import HEADER as SIGNATURE_HEADER
from career_relay.agency_signature import sign
from career_relay.settings import AgencySettings, Settings

FORWARD_ID_HEADER = "X-Career-Relay-Forward-Id"
TYPE_HEADER = "X-Career-Relay-Type"
LEDGER_HEAD_HEADER = "X-Career-Relay-Ledger-Head"
USER_AGENT = f"career-relay/{__version__}"
CONTENT_TYPE = "application/json; charset=utf-8"


class Sent(Protocol):
    """What one attempt delivers: a forward (``forwards``), or a notice that is not one
    (``agency_notices``: ``credit_request``).  ``id`` is stable across attempts (the
    agency's idempotency key), ``kind`` its ``X-Career-Relay-Type``."""

    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> str: ...


@dataclass(frozen=True)
class Outcome:
    """One attempt's result.  ``needs_attention``: retrying alone will not help (a 401, a 5xx
    from the agency's mail server); still retried, but logged at WARNING."""

    delivered: bool
    detail: str
    needs_attention: bool = False


async def post(session: aiohttp.ClientSession, agency: AgencySettings, forward: Sent,
               body: bytes, head: str, now: int) -> Outcome:
    """The webhook attempt: ``body`` signed with this agency's secret at ``now``."""
    headers = {
        "Content-Type": CONTENT_TYPE,
        SIGNATURE_HEADER: sign(agency.webhook_secret, body, now),
        FORWARD_ID_HEADER: forward.id,
        TYPE_HEADER: forward.kind,
        LEDGER_HEAD_HEADER: head,
    }
    try:
        async with session.post(agency.webhook_url, data=body, headers=headers,
                                allow_redirects=False,
                                timeout=aiohttp.ClientTimeout(total=agency.timeout)
                                ) as response:
            status, reason = response.status, response.reason or ""
    except TimeoutError:  # aiohttp's own deadline (ClientTimeout.total)
        return Outcome(False, f"no answer within {agency.timeout} s")
    except (aiohttp.ClientError, OSError) as exc:
        return Outcome(False, _short(f"{type(exc).__name__}: {exc}"))
    detail = _short(f"HTTP {status} {reason}".strip())
    if 200 <= status < 300:
        return Outcome(True, detail)
    # 408, 425 and 429 are the agency asking us to come back later; other
    # 4xx (401: a wrong secret, 404: a wrong URL) need a person to act.
    attention = 400 <= status < 500 and status not in (408, 425, 429)
    return Outcome(False, detail, needs_attention=attention)


def message(settings: Settings, agency: AgencySettings, forward: Sent, body: bytes,
            head: str | None, clock: Callable[[], float]) -> EmailMessage:
    """The mail sent for ``forward`` to its agency (docs/agency-webhook.md, "Email delivery")."""
    hostname = settings.gateway.hostname
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = f"career-relay <career-relay@{hostname}>"
    msg["To"] = agency.email
    msg["Subject"] = f"[career-relay] {forward.kind} {forward.id}"
    msg["Date"] = email.utils.format_datetime(dt.datetime.fromtimestamp(clock(), dt.UTC))
    # The same id on every attempt (RFC 5322 3.6.4): a resend is recognisably
    # the same message, so the agency keeps one copy.
    msg["Message-ID"] = f"<{forward.id}@{hostname}>"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    msg[FORWARD_ID_HEADER] = forward.id
    msg[TYPE_HEADER] = forward.kind
    if head is not None:
        msg[LEDGER_HEAD_HEADER] = head
    # Pretty-printed for the person who reads it, still plain JSON for a script.
    text = json.dumps(json.loads(body), ensure_ascii=False, indent=2, sort_keys=True)
    # Quoted-printable: 7-bit safe through any relay (no 8BITMIME needed), and
    # the JSON's ASCII structure stays legible even undecoded.
    msg.set_content(text + "\n", charset="utf-8", cte="quoted-printable")
    return msg


async def mail(settings: Settings, agency: AgencySettings, forward: Sent, body: bytes,
               head: str, clock: Callable[[], float]) -> Outcome:
    """The mail attempt: to this agency's address, through the upstream."""
    up = settings.upstream
    hostname = settings.gateway.hostname
    smtp = aiosmtplib.SMTP(hostname=up.host, port=up.port, local_hostname=hostname,
                           timeout=up.timeout, use_tls=up.tls == "tls",
                           start_tls=up.tls == "starttls", validate_certs=up.verify_tls,
                           username=up.username or None, password=up.password or None)
    msg = message(settings, agency, forward, body, head, clock)
    try:
        async with smtp:
            await smtp.send_message(msg, sender=f"career-relay@{hostname}",
                                    recipients=[agency.email])
    except aiosmtplib.SMTPRecipientsRefused as exc:
        code = exc.recipients[0].code if exc.recipients else 550
        text = exc.recipients[0].message if exc.recipients else str(exc)
        return Outcome(False, _short(f"SMTP {code} {text}"), needs_attention=code >= 500)
    except aiosmtplib.SMTPResponseException as exc:
        return Outcome(False, _short(f"SMTP {exc.code} {exc.message}"),
                       needs_attention=exc.code >= 500)
    except (aiosmtplib.SMTPException, OSError) as exc:
        return Outcome(False, _short(f"{type(exc).__name__}: {exc}"))
    return Outcome(True, f"SMTP 250 via {up.host}:{up.port}")


def _short(text: str) -> str:
    return " ".join(text.split())[:300]
