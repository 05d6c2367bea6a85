"""The agency is told of a free referral request (SPEC 11 ``credit_request``): the real site
and its forwarding worker, a real webhook receiver per agency, a real SMTP sink for the
agency that takes mail, the CLI as a subprocess; on each backend.

The notice goes to the company's own agency only, signed with that agency's secret, with
``X-Career-Relay-Type: credit_request``; a refused attempt is retried with the same bytes;
the body names the request, the company and the note, and no candidate.
"""

from __future__ import annotations

import email
import email.policy
import json
import time

import aiohttp

from career_relay import settings as settings_mod
from career_relay.agency_signature import verify
from career_relay.ledger import Notices, open_configured
from career_relay.tokens import LinkSigner
from consent_site.app import start_site
from tests.conftest import ConfigMaker, Sink, free_port, run_cli
from tests.test_agencies import (
    COMPANIES,
    NORTH_SECRET,
    Browser,
    _agencies_toml,
    _offer,
    _query,
    run,
    until,
)
from tests.test_forwarding import Agency


def test_the_agency_is_told_of_a_request_by_its_own_webhook_or_mail(
        make_config: ConfigMaker, backend_url: str, sink: Sink) -> None:
    north, south = Agency(statuses=[200, 503]), Agency()  # the consent, then a refusal
    config = make_config(upstream_port=sink.port,
                         ledger={"url": backend_url, "credit_every": 1},
                         site={"listen": f"127.0.0.1:{free_port()}", "review_window": 0},
                         companies=COMPANIES)
    config.write_text(config.read_text(encoding="utf-8") + _agencies_toml(north, south),
                      encoding="utf-8")
    settings = settings_mod.load(config, env={})
    signer = LinkSigner.from_settings(settings)
    offers = {c: _offer(settings, c, f"cand-{c}@example.net") for c in ("acme", "gamma")}

    async def main() -> None:
        await north.start()
        await south.start()
        site = await start_site(settings)
        try:
            async with aiohttp.ClientSession() as session:
                browser = Browser(session, f"http://{settings.site.listen}", signer)
                for offer in offers.values():  # each a qualified forward: a credit each
                    await browser.accept(offer)
                await until(lambda: len(north.requests) == 1 and len(sink.messages) == 1,
                            "the two consents")
                await until(lambda: len(_query(settings, "SELECT 1 FROM credits")) == 2,
                            "a credit for each company")
                for company, note in (("acme", "経理職を1名"), ("gamma", "")):
                    asked = run_cli("credits", "request", "--company", company, "--note", note,
                                    "--config", str(config))
                    assert asked.returncode == 0, asked.stderr
                # North refuses the first attempt (503): retried after its schedule's 1 s.
                await until(lambda: len(north.requests) == 3, "the notice, twice", 30)
                await until(lambda: len(sink.messages) == 2, "the mailed notice", 30)
                await until(lambda: not _query(settings, "SELECT 1 FROM agency_notices"
                                                         " WHERE delivered IS NULL"),
                            "every notice delivered")
        finally:
            await site.stop()
            await north.stop()
            await south.stop()

    run(main())
    assert south.requests == []  # another agency's company: never told
    first, second = north.requests[1:]
    assert first.body == second.body  # the same bytes on the retry
    assert first.headers["X-Career-Relay-Type"] == "credit_request"
    verify(NORTH_SECRET, second.headers["X-Career-Relay-Signature"], second.body, time.time())
    body = second.json
    (request_id, credit_id, requested) = _query(
        settings, "SELECT id, credit_id, created FROM credit_requests WHERE company = 'acme'")[0]
    assert second.headers["X-Career-Relay-Forward-Id"] == request_id
    assert "X-Career-Relay-Ledger-Head" in second.headers
    assert body == {"type": "credit_request", "request_id": request_id, "credit_id": credit_id,
                    "agency": "north", "company": {"id": "acme", "name": "株式会社アクメ"},
                    "note": "経理職を1名", "requested": requested}
    assert "cand-acme" not in second.body.decode() and "候補" not in second.body.decode()
    # East takes mail: gamma's request went to east's address alone.
    mail = sink.messages[1]
    assert mail.rcpts == ["intake@east.example"]
    message = email.message_from_bytes(mail.data, policy=email.policy.default)
    assert message["X-Career-Relay-Type"] == "credit_request"
    assert json.loads(message.get_content())["company"]["id"] == "gamma"
    with open_configured(settings) as ledger:
        notice = Notices(ledger).notice(request_id)
        assert notice is not None and notice.attempts == 1 and notice.delivered is not None
    verified = run_cli("ledger", "verify", "--config", str(config))
    assert verified.returncode == 0, verified.stdout + verified.stderr
