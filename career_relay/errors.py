"""One error tree for the whole project.

Every error knows how it should be reported: a one-line message for the
command line, and for the SMTP side a reply code with an RFC 3463 enhanced
status code.  Temporary conditions are 4xx so the client keeps the message
and retries (RFC 5321 section 4.2.5); only conditions that retrying cannot
fix are 5xx.
"""

from __future__ import annotations


class CareerRelayError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(CareerRelayError):
    """The configuration is unusable; the message names the setting and the problem."""


class UserError(CareerRelayError):
    """A command was asked to do something it cannot (unknown queue id, ...)."""


class AddressInUse(UserError):
    """A listen address another process holds: one line naming it and, where it can be
    found, who holds it (``career_relay.ports``), instead of an OSError's traceback."""


class CreditRequestError(UserError):
    """A free referral request (SPEC 11) that cannot be made or settled as asked."""


class CreditRequestOpen(CreditRequestError):
    """A request for a credit that has one open already (requested, not yet settled)."""


class UnknownCreditRequest(CreditRequestError):
    """No such request, as far as the asker may know (the agency API answers 404)."""


class NotTheAgencysRequest(UnknownCreditRequest):
    """A request addressed to another agency: to the asking agency it does not exist (an
    ``UnknownCreditRequest``, so the API answers both alike and reveals no other's ids)."""


class CreditRequestSettled(CreditRequestError):
    """A request already fulfilled or cancelled: a state is set once (the API answers 409)."""


class SmtpReplyError(CareerRelayError):
    """An error that is answered to the SMTP client as a reply line."""

    code: int = 451
    status: str = "4.3.0"

    def __init__(self, text: str, *, code: int | None = None, status: str | None = None):
        super().__init__(text)
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.text = text

    @property
    def reply(self) -> str:
        return f"{self.code} {self.status} {self.text}"


class TemporaryFailure(SmtpReplyError):
    """Our side cannot take the message now (disk, spool, a bug): the client must retry."""

    code = 451
    status = "4.3.0"


class PolicyRejection(SmtpReplyError):
    """The client is not allowed to do this (relay, sender domain): permanent."""

    code = 550
    status = "5.7.1"


class TooManyCopies(SmtpReplyError):
    """A rejection whose copies would cost more than ``gateway.max_fanout_bytes`` to make:
    the sender splits it (RFC 3463 5.3.4, too big for the system); never relayed with its
    marker bare, never hours of signing for one message."""

    code = 552
    status = "5.3.4"


class RoutingLoop(SmtpReplyError):
    """A message that has already passed ``gateway.message.MAX_HOPS`` relays: a mail loop
    (RFC 5321 6.3), refused rather than relayed, signed and counted once more (RFC 3463
    5.4.6, routing loop detected)."""

    code = 554
    status = "5.4.6"


class HeaderTooLarge(SmtpReplyError):
    """A header of more lines than ``gateway.mime.MAX_HEADER_LINES``: no real mail has one,
    and every step that reads the header would pay for each line (RFC 3463 5.3.4)."""

    code = 552
    status = "5.3.4"


class LedgerError(CareerRelayError):
    """The ledger refused or failed a read or a write; the driver's error is its cause."""


class LedgerUnavailable(LedgerError):
    """The ledger's database cannot be read or written now (locked past the busy timeout, a
    disk error, a full disk, a server that is away): temporary, so the gateway answers 451
    (SPEC 4) and the site 503; nothing accepted is lost."""


class WouldWait(LedgerError):
    """A write asked not to wait could not begin at once: another write of this process
    is under way, another process holds the ledger's lock, or every statement of the
    backend is a round trip to a server.  Nothing was written; the caller writes again
    where waiting is allowed (the gateway's event loop hands the write to a thread)."""


class LedgerConflict(LedgerError):
    """A write the ledger's constraints refuse: a second verdict on one review, a row
    that already exists, a change to an append-only table."""


class DecisionRaced(LedgerConflict):
    """Another decision on the offer was recorded after the one a new decision was made on
    (two sites took the same form at once): decide again on what is recorded now."""


class SpoolError(TemporaryFailure):
    """The spool could not store or read a message."""


class DamagedSpoolFile(SpoolError):
    """A queue file, or the shared message a copy is made from, is not what was written
    (truncated, swapped, replaced): it is set aside in ``corrupt/``, never sent."""
