"""Password hashes: argon2id through argon2-cffi, for SMTP AUTH and admin logins."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher()  # the library's defaults follow RFC 9106's recommendations


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored_hash: str, password: str | bytes) -> bool:
    """True only for the right password; a malformed hash is a refusal, never an error."""
    try:
        return _HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
