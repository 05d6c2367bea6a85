"""The agencies' notices that are not forwards (SPEC 11: ``credit_request``), sent by the
forwarding worker in each of its rounds (``consent_site.forwarding``).

The same delivery as a forward's (``consent_site.agency_delivery``): to the notice's own
agency only, by its webhook (signed with its secret, ``X-Career-Relay-Type:
credit_request``, ``X-Career-Relay-Forward-Id`` the notice's id, stable across attempts)
or by mail; the stored payload, byte for byte; a failure retried by the agency's
``retry_schedule`` for as long as it takes.  The notice stays in the ledger
(``agency_notices``) until the agency took it: nothing is lost to a crash or a restart.
The payload holds no candidate's data (``career_relay.ledger.credit_requests``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from career_relay.ledger import Notice

if TYPE_CHECKING:
    from consent_site.forwarding import Forwarder, Sender

log = logging.getLogger("career_relay.forwarding")


async def run_once(forwarder: Forwarder) -> int:
    """One round of notices: claim those due to an agency this worker reaches, make one
    attempt at each; how many were handled."""
    reachable = [a.id for a in forwarder.reachable]
    if not reachable:
        return 0
    notices = forwarder.notices
    due = await asyncio.to_thread(notices.claim_due, forwarder.batch, forwarder.claim_seconds,
                                  reachable)
    if not due:
        return 0
    head = await asyncio.to_thread(forwarder.store.ledger.head_text)
    async with forwarder.sender() as send:
        results = await asyncio.gather(*(_handle(forwarder, n, send, head) for n in due),
                                       return_exceptions=True)
    for notice, result in zip(due, results, strict=True):
        if isinstance(result, BaseException):  # the claim expires; it is tried again
            log.error("notice %s: recording the attempt failed: %s: %s", notice.id,
                      type(result).__name__, result)
    return len(due)


async def _handle(forwarder: Forwarder, notice: Notice, send: Sender, head: str) -> None:
    await forwarder.send_one("notice", notice, notice.agency, notice.attempts,
                             notice.payload, head, send, forwarder.notices)
