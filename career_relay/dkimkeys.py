"""DKIM keys: RSA-2048 generation and the DNS record to publish (RFC 6376 section 3.6.1)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from career_relay.errors import ConfigError, UserError


def generate_key(path: Path) -> rsa.RSAPrivateKey:
    """Write a new RSA-2048 private key (PKCS#8 PEM, mode 0600); refuse to overwrite."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UserError(f"{path} already exists; not overwritten") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def load_key(path: str) -> rsa.RSAPrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read DKIM key {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{path} is not an RSA key")
    if key.key_size < 1024:
        raise ConfigError(f"{path}: RSA key of {key.key_size} bits is too short (RFC 8301)")
    return key


def public_record(key: rsa.RSAPrivateKey) -> str:
    """The TXT value: v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>."""
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def zone_line(domain: str, selector: str, key: rsa.RSAPrivateKey) -> str:
    """A zone-file line; the value is split in strings of at most 255 octets (RFC 1035)."""
    value = public_record(key)
    chunks = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
    return f"{selector}._domainkey.{domain}. IN TXT ( {chunks} )"
