"""HTML to PDF through headless Chromium's print (the yearly report, issue 15 item 6).

The browser the project already tests with (``tests/peers/browser.py``), with the same
flags: ``--no-sandbox`` because services and tests here may run as root, the
``--disable-background-networking`` family because the machine's network is closed and
Chromium otherwise keeps trying to reach Google's hosts, and a fresh profile in a private
temporary directory (mode 0700, ``tempfile``) with the HTML beside it, opened as
``file://``.  Chromium embeds the fonts it used (IPA Gothic or Noto CJK) in the PDF.

Chromium starts helper processes (zygote, renderer, GPU) of its own: it runs in a new
session, and on the timeout its whole process group is killed, so no helper outlives it.
Every failure is one ``UserError`` line naming the problem: the binary missing, the
timeout, or Chromium's exit status with its last line of complaint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from career_relay.errors import UserError

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--no-pdf-header-footer")
# Not --blink-settings=scriptEnabled=false: with it headless Chromium 156 prints no PDF at
# all (exit 0, no file).  The template's escaping and its Content-Security-Policy (no
# script source) keep a job name from running as script.
#: Chromium's stderr lines that say nothing about a failure (no D-Bus on a server).
_NOISE = ("dbus", "Fontconfig", "bytes written to file")


def find_chromium(configured: str) -> str:
    """The Chromium to run: ``site.chromium`` as a path, or a bare name looked up on PATH."""
    found = configured if os.sep in configured else shutil.which(configured)
    if not found or not os.access(found, os.X_OK) or not Path(found).is_file():
        raise UserError(f"cannot make the PDF: no Chromium at {configured!r} (apt-get "
                        "install chromium, or set site.chromium, CAREER_RELAY_SITE_CHROMIUM)")
    return found


def html_to_pdf(html: str, chromium: str, timeout: float) -> bytes:
    """The PDF Chromium prints of ``html`` (A4 by the document's ``@page``)."""
    binary = find_chromium(chromium)
    with tempfile.TemporaryDirectory(prefix="career-relay-pdf-") as tmp:
        page, out = Path(tmp, "report.html"), Path(tmp, "report.pdf")
        page.write_text(html, encoding="utf-8")
        command = [binary, *FLAGS, f"--user-data-dir={tmp}/profile",
                   f"--print-to-pdf={out}", page.as_uri()]
        with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True) as proc:
            try:
                _, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill(proc)
                raise UserError(f"cannot make the PDF: Chromium ({binary}) did not finish "
                                f"within {timeout:g} s (site.pdf_timeout)") from None
        # Its helpers may linger a moment after the main process: none may outlive it.
        _kill(proc)
        if proc.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
            raise UserError(f"cannot make the PDF: Chromium ({binary}) exited "
                            f"{proc.returncode}{_complaint(err)}")
        return out.read_bytes()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _complaint(err: bytes) -> str:
    lines = [line.strip() for line in err.decode("utf-8", "replace").splitlines()
             if line.strip() and not any(n in line for n in _NOISE)]
    return f": {lines[-1][:200]}" if lines else " without writing the PDF"
