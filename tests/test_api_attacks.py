"""The company API against the attack review (issue "Without the relay, and the first
hour"): what a key holder must not get or make, and what a flood must not block.

What rests on the ledger runs on both backends (``api``: ``backend_url``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import ConfigMaker
from tests.test_api import Api, _harness, _named, _problem


@pytest.fixture
def api(make_config: ConfigMaker, backend_url: str) -> Iterator[Api]:
    yield from _harness(make_config, backend_url)


@pytest.fixture
def sqlite_api(make_config: ConfigMaker) -> Iterator[Api]:
    yield from _harness(make_config, "")


def test_a_relayed_or_link_offer_is_never_answered(api: Api) -> None:
    """A key holder who knows (or computes) another offer's Message-ID gets 409, never
    that offer's personal link, and nothing is added."""
    relayed = api.ledger.record_offer("acme", "<r1@ats.example>", "cand@example.net")
    linked = api.ledger.record_offer("acme", "<l1@link.example>", "cand@example.net",
                                     source="link")
    before = api.report()
    for offer in (relayed, linked):
        reply = api.offer({"recipient": offer.recipient, "message_id": offer.message_id})
        found = _problem(reply, 409)
        assert found["detail"] == ("the message_id and recipient belong to mail not made "
                                   "through the API")
        assert offer.id not in reply.text and offer.message_id not in reply.text
        assert "link" not in found and "/c/" not in reply.text
    after = api.report()
    assert (after["rejections"], after["offers"]) == (before["rejections"], before["offers"])
    # The API's own offers are still answered again.
    made = api.offer({"recipient": "x@example.net", "message_id": "<a1@ats.example>"})
    again = api.offer({"recipient": "x@example.net", "message_id": "<a1@ats.example>"})
    assert (made.status, again.status) == (201, 200) and made.json == again.json


def test_the_relay_s_own_message_ids_are_refused(sqlite_api: Api) -> None:
    for message_id in ("<idempotency.0123@api.career-relay.invalid>",
                       "<x@career-relay.invalid>", "x@LINK.Career-Relay.invalid",
                       "<abc@api.career-relay.invalid>"):
        reply = sqlite_api.offer({"recipient": "c@example.net", "message_id": message_id})
        assert _named(reply) == {"message_id"}
        assert message_id not in reply.text
    assert sqlite_api.offer({"recipient": "c@example.net",
                             "message_id": "<x@career-relay.invalid.example>"}).status == 201
