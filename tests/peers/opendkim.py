"""OpenDKIM as a test peer: its test mode verifies a message against a key file.

``opendkim -x CONF -t FILE`` with ``TestPublicKeys`` needs no DNS (the
``opendkim-testmsg`` tool always queries DNS).  From Debian's ``opendkim``
package, installed by ``make test``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from career_relay.dkimkeys import public_record


class OpenDkim:
    """OpenDKIM's filter in test mode, with the public key from a file instead of DNS."""

    def __init__(self, workdir: Path, selector: str, domain: str,
                 key: rsa.RSAPrivateKey) -> None:
        exe = shutil.which("opendkim", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        if exe is None:
            pytest.fail("OpenDKIM is not installed: apt-get install opendkim (make test-deps)")
        self.exe = exe
        self.workdir = workdir
        keys = workdir / "test-public-keys"
        keys.write_text(f"{selector}._domainkey.{domain} {public_record(key)}\n")
        self.selector = selector
        self.conf = workdir / "opendkim.conf"
        # StrictTestMode: every line must be CRLF-terminated, as on the wire.
        self.conf.write_text(f"Syslog no\nMode v\nStrictTestMode yes\nTestPublicKeys {keys}\n")

    def verify(self, message: bytes) -> str:
        """OpenDKIM's verdict line, e.g. ``...: verification (s=.., d=..) succeeded``."""
        if not message.endswith(b"\r\n"):
            # As on the wire: SMTP ends DATA with CRLF "." CRLF, so a client adds the
            # missing CRLF (RFC 5321 section 4.1.1.4); StrictTestMode refuses the file
            # otherwise. Relaxed body canonicalisation makes both forms hash the same.
            message += b"\r\n"
        path = self.workdir / "message.eml"
        path.write_bytes(message)
        done = subprocess.run([self.exe, "-x", str(self.conf), "-t", str(path)],
                              capture_output=True, text=True, timeout=30, check=False)
        # The exit status is 0 whatever the verdict; the verdict is the output line.
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def passes(self, message: bytes) -> bool:
        out = self.verify(message)
        assert f"verification (s={self.selector}" in out, out  # it did find and check our signature
        return out.endswith(") succeeded")
