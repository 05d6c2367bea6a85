"""aiosmtpd hooks, and nothing more: SMTP in, pipeline calls, SMTP replies out.

Every exception becomes a reply with a code and an RFC 3463 status; an
unexpected one becomes ``451 4.3.0`` so the client keeps the message and
retries (never aiosmtpd's default ``500 Error: (...)`` with our internals).
"""

from __future__ import annotations

import inspect
import logging
import re
import time
from typing import Any, ClassVar

from career_relay.errors import SmtpReplyError
from career_relay.logs import without_addresses
from career_relay.settings import CompanySettings
from gateway import metrics
from gateway.pipeline import Pipeline, Submission
from gateway.policy import RelayPolicy, domain_of

log = logging.getLogger("career_relay.smtp")

TEMPFAIL = "451 4.3.0 Temporary failure; please try again later"


class RelayHandler:
    # aiosmtpd looks for handle_* and auth_* on the handler with dir() for
    # every connection; the names are fixed, so they are listed once.
    _HOOK_NAMES: ClassVar[list[str]] = []

    def __dir__(self) -> list[str]:
        return self._HOOK_NAMES

    def __init__(self, pipeline: Pipeline, policy: RelayPolicy, max_recipients: int = 1000):
        self._pipeline = pipeline
        self._policy = policy
        # gateway.max_recipients; RFC 5321 section 4.5.3.1.8 asks for at least 100.
        self._max_recipients = max_recipients

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if not self._policy.auth_offered:
            responses = [r for r in responses if not r[4:].startswith("AUTH")]
        # One write for the whole multi-line reply instead of one per line.
        return ["\r\n".join(responses)]

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        ip = peer_ip(session)
        company: CompanySettings | None = session.auth_data if session.authenticated else None
        if company is None and not self._policy.client_allowed(ip):
            if self._policy.auth_offered:
                return "530 5.7.0 Authentication required"
            return "550 5.7.1 Relaying denied: this address may not send through this relay"
        sender = "" if address == "<>" else address
        problem = _address_problem(sender, envelope.smtp_utf8)
        if problem:
            return problem
        proven = (company,) if company is not None else self._policy.owners(ip)
        if proven and sender and not any(domain_of(sender) in c.domains for c in proven):
            names = ", ".join(c.id for c in proven)
            return f"550 5.7.1 Sender domain {domain_of(sender)} does not belong to {names}"
        envelope.mail_from = address  # aiosmtpd needs it non-empty; "<>" is mapped in DATA
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self._max_recipients:
            return "452 4.5.3 Too many recipients"  # RFC 5321 4.5.3.1.10: the client may retry
        problem = _address_problem(address, envelope.smtp_utf8)
        if problem:
            return problem
        local, at, domain = address.rpartition("@")
        if not (at and local and domain) and address.lower() != "postmaster":
            # RFC 5321 4.1.1.3: a forward-path is a mailbox with a domain (the bare
            # "postmaster" excepted); the upstream could deliver nothing else, and a
            # rejection would mint a personal link for it.
            return "501 5.1.3 A recipient address needs a domain"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        started = time.perf_counter()  # the data has all arrived
        options = [o.upper() for o in envelope.mail_options]
        sub = Submission(
            mail_from="" if envelope.mail_from == "<>" else envelope.mail_from,
            rcpts=list(envelope.rcpt_tos),
            data=envelope.original_content,
            peer_ip=peer_ip(session),
            helo=session.host_name or "unknown",
            protocol=_protocol(session),
            company=session.auth_data if session.authenticated else None,
            owners=() if session.authenticated else self._policy.owners(peer_ip(session)),
            smtputf8=bool(envelope.smtp_utf8) or "SMTPUTF8" in options,
            body="8BITMIME" if "BODY=8BITMIME" in options else "",
        )
        try:
            queue_id = await self._pipeline.accept(sub)
        except SmtpReplyError as exc:
            log.info("refused from %s: %s", sub.peer_ip, without_addresses(exc.reply))
            return exc.reply
        except Exception:
            log.exception("message from %s not accepted: internal error", sub.peer_ip)
            return TEMPFAIL
        metrics.accepted(started)
        ids = queue_id.split()  # a rejection: one copy per recipient, one line each
        for i, one in enumerate(ids, 1):
            log.info("queue_id=%s accepted from %s: %d bytes, %d recipient(s)%s", one,
                     sub.peer_ip, len(sub.data), len(sub.rcpts),
                     f", copy {i} of {len(ids)}" if len(ids) > 1 else "")
        # One line well under 512 octets whatever the fan-out (RFC 5321 4.5.3.1.5): a
        # reply listing 1,000 copies' ids is more than smtplib reads, and a client that
        # cannot read its 250 sends the message again.  The log names every copy.
        more = f" and {len(ids) - 1} more cop{'y' if len(ids) == 2 else 'ies'}" \
            if len(ids) > 1 else ""
        return f"250 2.0.0 OK: queued as {ids[0]}{more}"

    async def handle_exception(self, error: Exception) -> str:
        log.exception("SMTP session error", exc_info=error)
        return TEMPFAIL


RelayHandler._HOOK_NAMES = [n for n in vars(RelayHandler) if n.startswith(("handle_", "auth_"))]
# aiosmtpd inspects handle_EHLO's signature for every connection (to tell its
# old and new forms apart); a function's __signature__ is what inspect reuses.
RelayHandler.handle_EHLO.__signature__ = inspect.signature(  # type: ignore[attr-defined]
    RelayHandler.handle_EHLO)


def peer_ip(session: Any) -> str:
    """The client's address, for policy checks and logs."""
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


# C0 controls, DEL, C1 controls and the Unicode line and paragraph separators: none
# belongs in a mailbox (RFC 5321 4.1.2, RFC 6531 3.3), and each would be written into
# the Received: field and logs, where CR, LF or U+2028 can forge lines.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _address_problem(address: str, smtputf8: bool) -> str | None:
    """Non-ASCII addresses need SMTPUTF8 (RFC 6531 section 3.4); they could not be
    relayed otherwise, and would wait in the queue for ever."""
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes from the client
        return "553 5.1.3 Malformed address"
    if _CONTROLS.search(address):
        return "501 5.1.3 Control characters are not allowed in an address"
    if not smtputf8 and not address.isascii():
        return "553 5.6.7 Non-ASCII address needs the SMTPUTF8 parameter"
    return None


def _protocol(session: Any) -> str:
    proto = "ESMTP" if session.extended_smtp else "SMTP"
    if session.ssl:
        proto += "S"
    if session.authenticated:
        proto += "A"
    return proto
