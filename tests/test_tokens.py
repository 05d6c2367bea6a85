"""Consent-link tokens (SPEC 5): signed, timed, rotated, URL-safe, and carrying only an offer id."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from career_relay import settings as settings_mod
from career_relay.errors import CareerRelayError, ConfigError
from career_relay.ledger import new_offer_id
from career_relay.tokens import LinkSigner, TokenExpired, TokenInvalid, link

DAY = 86400
T0 = 1_775_000_000.0  # 2026-03-31, a fixed instant


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def signer(keys: list[str], clock: FakeClock, days: int = 90) -> LinkSigner:
    return LinkSigner(keys, days, clock=clock)


def test_round_trip(clock: FakeClock) -> None:
    s = signer(["new-key"], clock)
    for _ in range(50):
        oid = new_offer_id()
        assert s.offer_id(s.token(oid)) == oid


def test_a_token_is_short() -> None:
    token = LinkSigner(["k"], 90).token(new_offer_id())
    assert len(token) <= 80, (len(token), token)
    assert len(link("https://relay.example.com", token)) <= 110


def test_the_token_carries_only_the_offer_id(clock: FakeClock) -> None:
    oid = new_offer_id()
    token = signer(["k"], clock).token(oid)
    assert "@" not in token
    payload, _timestamp, _signature = token.split(".")
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    assert json.loads(decoded) == oid


def test_a_token_refuses_anything_but_an_offer_id(clock: FakeClock) -> None:
    s = signer(["k"], clock)
    for bad in ("taro@example.jp", "", "short", "has space in it", "a/b/c/d/e/f/g", "x" * 65):
        with pytest.raises(ValueError):
            s.token(bad)


def test_tokens_and_links_are_one_url_safe_path_segment(clock: FakeClock) -> None:
    s = signer(["k"], clock)
    for _ in range(200):
        token = s.token(new_offer_id())
        assert re.fullmatch(r"[A-Za-z0-9._-]+", token)
        assert quote(token, safe="") == token  # nothing to percent-encode
        url = link("https://relay.example.com/", token)
        assert url == f"https://relay.example.com/c/{token}"
        assert urlsplit(url).path.split("/") == ["", "c", token]
    assert link("http://127.0.0.1:8080", "a.b.c") == "http://127.0.0.1:8080/c/a.b.c"
    with pytest.raises(ValueError):
        link("https://relay.example.com", "a/b")


@pytest.mark.parametrize(
    "mangle",
    [
        # The signature changed: not in its last character, whose low bits are padding.
        lambda t: t[:-10] + ("A" if t[-10] != "A" else "B") + t[-9:],
        lambda t: ("J" if t[0] != "J" else "I") + t[1:],  # payload changed
        lambda t: t[: len(t) // 2],  # truncated
        lambda t: t + "x",
        lambda t: t.replace(".", "", 1),
        lambda t: "",
        lambda t: "not a token at all",
        lambda t: t + "/../admin",
        lambda t: t.upper(),
    ],
)
def test_a_tampered_token_is_invalid(clock: FakeClock, mangle: Callable[[str], str]) -> None:
    s = signer(["k"], clock)
    token = s.token(new_offer_id())
    with pytest.raises(TokenInvalid):
        s.offer_id(mangle(token))


def test_a_forged_payload_with_a_real_signature_is_invalid(clock: FakeClock) -> None:
    s = signer(["k"], clock)
    _payload, rest = s.token(new_offer_id()).split(".", 1)
    other, _ = s.token(new_offer_id()).split(".", 1)
    with pytest.raises(TokenInvalid):
        s.offer_id(f"{other}.{rest}")


def test_another_purpose_with_the_same_key_does_not_open_a_consent_link(
    clock: FakeClock,
) -> None:
    from itsdangerous import URLSafeTimedSerializer

    other = URLSafeTimedSerializer("k", salt="career-relay/something-else")
    with pytest.raises(TokenInvalid):
        signer(["k"], clock).offer_id(str(other.dumps(new_offer_id())))


def test_expiry_follows_link_max_age_days(clock: FakeClock) -> None:
    s = signer(["k"], clock, days=90)
    oid = new_offer_id()
    token = s.token(oid)
    clock.now = T0 + 90 * DAY
    assert s.offer_id(token) == oid  # exactly 90 days: still open
    clock.now = T0 + 90 * DAY + 1
    with pytest.raises(TokenExpired) as caught:
        s.offer_id(token)
    assert caught.value.offer_id == oid
    assert isinstance(caught.value, CareerRelayError)


def test_a_token_from_the_future_is_refused(clock: FakeClock) -> None:
    s = signer(["k"], clock)
    token = s.token(new_offer_id())
    clock.now = T0 - 60
    with pytest.raises(TokenExpired):
        s.offer_id(token)


def test_an_expired_forgery_is_invalid_not_expired(clock: FakeClock) -> None:
    s = signer(["k"], clock)
    token = s.token(new_offer_id())
    clock.now = T0 + 400 * DAY
    with pytest.raises(TokenInvalid):
        s.offer_id(token[:-10] + ("A" if token[-10] != "A" else "B") + token[-9:])


def test_rotation_old_links_still_open_after_a_new_key_is_prepended(clock: FakeClock) -> None:
    oid = new_offer_id()
    old_token = signer(["old"], clock).token(oid)
    rotated = signer(["new", "old"], clock)
    assert rotated.offer_id(old_token) == oid
    new_token = rotated.token(oid)
    # The newest key (first) signs: a signer that knows only "new" opens it...
    assert signer(["new"], clock).offer_id(new_token) == oid
    # ...and one that knows only "old" does not.
    with pytest.raises(TokenInvalid):
        signer(["old"], clock).offer_id(new_token)


def test_rotation_a_removed_key_no_longer_opens_its_links(clock: FakeClock) -> None:
    oid = new_offer_id()
    old_token = signer(["old"], clock).token(oid)
    with pytest.raises(TokenInvalid):
        signer(["newer", "new"], clock).offer_id(old_token)


@pytest.mark.parametrize("keys", [[], [""], ["k", ""]])
def test_no_signing_key_is_a_clear_configuration_error(keys: list[str]) -> None:
    with pytest.raises(ConfigError, match="signing_keys"):
        LinkSigner(keys, 90)


def test_a_bare_string_is_not_a_key_list() -> None:
    with pytest.raises(ConfigError, match="signing_keys"):
        LinkSigner("k", 90)


def test_max_age_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="link_max_age_days"):
        LinkSigner(["k"], 0)


def test_keys_never_show_in_repr() -> None:
    assert "s3cret" not in repr(LinkSigner(["s3cret"], 90))


def test_from_settings_uses_signing_keys_and_link_max_age_days() -> None:
    settings = settings_mod.from_mapping(
        {"secrets": {"signing_keys": ["b", "a"]}, "site": {"link_max_age_days": 7}},
        base=Path("/"),
        check=False,
    )
    s = LinkSigner.from_settings(settings)
    assert s.max_age == 7 * DAY
    oid = new_offer_id()
    assert LinkSigner(["b"], 7).offer_id(s.token(oid)) == oid
