"""DKIM signing rate: gateway.dkim.Signer (OpenSSL RSA) next to dkimpy's own dkim.sign.

Run as::

    .venv/bin/python bench/dkim_bench.py [--size 10240] [--seconds 2] [--key PEM] [--json]

Both sign the same ~10 KB multipart Japanese message with the same RSA-2048
key, rsa-sha256 and relaxed/relaxed. Each side runs for about ``--seconds``
(after a short warm-up), so the whole run is bounded by about 3 x (seconds +
0.5) plus key generation. Before timing, both signatures are checked with
dkimpy's verifier. The goal is a ratio of at least 10.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from career_relay.dkimkeys import load_key, public_record
from gateway.dkim import Signer

DOMAIN, SELECTOR = "acme.example", "cr2026"
GOAL = 10.0

_TEXT = ("山田 太郎 様\r\n\r\nこの度は弊社の求人にご応募いただき、誠にありがとうございました。\r\n"
         "慎重に選考を進めました結果、誠に残念ながら今回はご期待に添えない結果となりました。\r\n"
         "Thank you for your interest in Acme. After careful review we will not proceed.\r\n")


def build_message(size: int) -> bytes:
    """A multipart/alternative rejection (UTF-8 8bit text, HTML), CRLF, at least ``size`` bytes."""
    text, html = _TEXT, "<p>" + _TEXT.replace("\r\n", "<br>\r\n") + "</p>\r\n"
    head = ("From: Acme HR <hr@acme.example>\r\nTo: taro@example.org\r\n"
            "Subject: =?UTF-8?B?6YG46ICD57WQ5p6c44Gu44GU6YCj57Wh?=\r\n"
            "Date: Thu, 01 Jan 2026 09:00:00 +0900\r\nMessage-ID: <bench@acme.example>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n")
    part = ("--b1\r\nContent-Type: text/{kind}; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n{body}")
    repeat = 1
    while True:
        message = (head + part.format(kind="plain", body=text * repeat)
                   + part.format(kind="html", body=html * repeat) + "--b1--\r\n").encode()
        if len(message) >= size:
            return message
        repeat += 1


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn``, over about ``seconds`` after a warm-up of about 0.5 s."""
    for budget in (min(0.5, seconds), seconds):
        count, start = 0, time.perf_counter()
        deadline = start + budget
        while True:
            fn()
            count += 1
            now = time.perf_counter()
            if now >= deadline:
                break
    return count / (now - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10240, help="message size in bytes")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per signer")
    parser.add_argument("--key", help="a PEM RSA key (default: a fresh RSA-2048 key)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    key = (load_key(args.key) if args.key
           else rsa.generate_private_key(public_exponent=65537, key_size=2048))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    message = build_message(args.size)
    signer = Signer(DOMAIN, SELECTOR, key)

    def ours() -> bytes:
        return signer.sign(message)

    def theirs() -> bytes:
        field: bytes = dkim.sign(message, SELECTOR.encode(), DOMAIN.encode(), pem,
                                 canonicalize=(b"relaxed", b"relaxed"))
        return field

    def rsa_only() -> bytes:
        return key.sign(message[:64], padding.PKCS1v15(), hashes.SHA256())

    record = public_record(key).encode()
    for sign in (ours, theirs):  # the two must produce valid signatures before we time them
        if not dkim.verify(sign() + message, dnsfunc=lambda _name, timeout=5: record):
            print(f"{sign.__name__}: the signature does not verify", file=sys.stderr)
            return 1

    result = {
        "message_bytes": len(message),
        "key_bits": key.key_size,
        "signer_per_s": rate(ours, args.seconds),
        "dkimpy_per_s": rate(theirs, args.seconds),
        "openssl_rsa_only_per_s": rate(rsa_only, args.seconds),
    }
    result["ratio"] = result["signer_per_s"] / result["dkimpy_per_s"]
    if args.json:
        print(json.dumps(result))
    else:
        print(f"message {result['message_bytes']} bytes, RSA-{result['key_bits']}, "
              "rsa-sha256, relaxed/relaxed")
        print(f"gateway.dkim.Signer.sign  {result['signer_per_s']:9.0f} signatures/s"
              f"  ({1e3 / result['signer_per_s']:.3f} ms)")
        print(f"dkim.sign (dkimpy)        {result['dkimpy_per_s']:9.0f} signatures/s"
              f"  ({1e3 / result['dkimpy_per_s']:.3f} ms)")
        print(f"OpenSSL RSA step alone    {result['openssl_rsa_only_per_s']:9.0f} signatures/s")
        verdict = "met" if result["ratio"] >= GOAL else "NOT met"
        print(f"ratio {result['ratio']:.1f}x (goal >= {GOAL:.0f}x: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
