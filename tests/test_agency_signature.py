"""The webhook signature (SPEC 7): sign and verify, pure functions."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from career_relay.agency_signature import (
    BadSignature,
    MalformedSignature,
    SignatureError,
    StaleSignature,
    sign,
    verify,
)
from career_relay.errors import CareerRelayError

SECRET = "whsec-test-0123456789"
BODY = '{"forward_id": "fw_abc", "type": "consent", "名前": "山田"}'.encode()
T = 1_760_000_000


def test_the_header_is_exactly_what_spec_7_says() -> None:
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, T) == f"t={T},v1={expected}"


def test_round_trip() -> None:
    verify(SECRET, sign(SECRET, BODY, T), BODY, now=T)
    verify(SECRET, sign(SECRET, BODY, T), BODY, now=T + 299)  # within the tolerance
    verify(SECRET, sign(SECRET, BODY, T), BODY, now=T - 299)  # the sender's clock is ahead


def test_a_tampered_body_is_refused() -> None:
    header = sign(SECRET, BODY, T)
    for body in (BODY + b" ", BODY.replace(b"consent", b"erasure"), b""):
        with pytest.raises(BadSignature):
            verify(SECRET, header, body, now=T)


def test_a_wrong_secret_is_refused() -> None:
    with pytest.raises(BadSignature):
        verify("another-secret", sign(SECRET, BODY, T), BODY, now=T)


def test_a_changed_timestamp_is_refused() -> None:
    header = sign(SECRET, BODY, T).replace(f"t={T}", f"t={T + 1}")
    with pytest.raises(BadSignature):
        verify(SECRET, header, BODY, now=T)


@pytest.mark.parametrize("delta", [301, 86_400, -301])
def test_a_timestamp_outside_the_tolerance_is_refused(delta: int) -> None:
    with pytest.raises(StaleSignature, match="300 s"):
        verify(SECRET, sign(SECRET, BODY, T), BODY, now=T + delta)
    verify(SECRET, sign(SECRET, BODY, T), BODY, now=T + delta, tolerance=abs(delta))


@pytest.mark.parametrize("header", [
    None, "", "   ", "garbage", "t=,v1=", f"t={T}", "v1=" + "a" * 64,
    f"t=abc,v1={'a' * 64}", f"t={T},v1=xyz", f"t={T},v1={'A' * 64}", f"t={T},v1={'a' * 63}",
    f"t={T},t={T},v1={'a' * 64}", f"t=-{T},v1={'a' * 64}", f"t=１２３,v1={'a' * 64}",
    f"t={T},v1=ａ{'a' * 63}",
])
def test_a_missing_or_garbled_header_is_refused(header: str | None) -> None:
    with pytest.raises(MalformedSignature):
        verify(SECRET, header, BODY, now=T)


def test_errors_belong_to_the_project_tree() -> None:
    for cls in (MalformedSignature, BadSignature, StaleSignature):
        assert issubclass(cls, SignatureError)
        assert issubclass(cls, CareerRelayError)


def test_rotation_several_v1_values() -> None:
    """During a rotation the sender signs with both secrets: either one verifies."""
    header = sign(["new-secret", "old-secret"], BODY, T)
    assert header.count("v1=") == 2
    verify("old-secret", header, BODY, now=T)
    verify("new-secret", header, BODY, now=T)
    with pytest.raises(BadSignature):
        verify("third-secret", header, BODY, now=T)


def test_rotation_the_receiver_accepts_old_and_new() -> None:
    """Or the receiver accepts both while the operator switches webhook_secret."""
    for sender_secret in ("old-secret", "new-secret"):
        verify(["new-secret", "old-secret"], sign(sender_secret, BODY, T), BODY, now=T)


def test_unknown_schemes_are_ignored() -> None:
    header = sign(SECRET, BODY, T) + ",v0=deadbeef"
    verify(SECRET, header, BODY, now=T)
    spaced = header.replace(",", ", ")
    verify(SECRET, spaced, BODY, now=T)


def test_an_empty_secret_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        sign("", BODY, T)
    with pytest.raises(ValueError):
        verify([], sign(SECRET, BODY, T), BODY, now=T)
