"""The demo end to end, as a newcomer runs it (SPEC 1; issue 4 "done when").

`init --demo`, then `serve` as a child process: a rejection sent through the
gateway lands in outbox/ with a personal link; the candidate opens it,
accepts, and the demo's stand-in agency writes the forward to agency/; the
withdrawal reaches it too.  Only the ports are moved (by environment
variables, as an operator would) so that the test never collides with a
running demo.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import smtplib
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.conftest import REPO

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1")
T = TypeVar("T")

pytestmark = pytest.mark.slow


def _until(what: str, found: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Browser:
    """Just enough of a browser: cookies, no redirects followed, a phone's user agent."""

    def __init__(self) -> None:
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())

    def open(self, url: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
        data = None if form is None else urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(url, data=data, headers={"User-Agent": IPHONE})
        try:
            with self.opener.open(request, timeout=10) as r:
                return r.status, r.headers.get("Location", ""), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Location", ""), e.read().decode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _forwards(directory: Path, kind: str) -> list[dict[str, object]]:
    found = [json.loads(p.read_text(encoding="utf-8")) for p in directory.glob("*.json")]
    return [f for f in found if f["type"] == kind]


def test_a_rejection_becomes_a_forward_and_a_withdrawal_in_the_demo(
        demo: tuple[Path, dict[str, int]]) -> None:
    var, ports = demo
    body = (REPO / "templates" / "emails" / "rejection_ja.txt").read_text(encoding="utf-8")
    message = (f"From: 採用担当 <hr@acme.example>\r\nTo: candidate@example.net\r\n"
               f"Subject: =?UTF-8?B?6YG46ICD57WQ5p6c44Gu44GU6YCj57Wh?=\r\n"
               f"Message-ID: <demo-1@acme.example>\r\nMIME-Version: 1.0\r\n"
               f"Content-Type: text/plain; charset=utf-8\r\n"
               f"Content-Transfer-Encoding: 8bit\r\n\r\n{body}").replace("\r\n", "\n")
    with smtplib.SMTP("127.0.0.1", ports["smtp"]) as smtp:
        smtp.sendmail("hr@acme.example", ["candidate@example.net"],
                      message.replace("\n", "\r\n").encode("utf-8"))

    eml = _until("the relayed copy in outbox/", lambda: sorted((var / "outbox").glob("*.eml")))
    text = eml[0].read_bytes().decode("utf-8", errors="replace")
    link = re.search(rf"http://127\.0\.0\.1:{ports['site']}/c/[A-Za-z0-9_.-]+", text)
    assert link, "the copy carries the candidate's link"

    browser = Browser()
    status, _, page = browser.open(link.group(0))
    assert status == 200 and "株式会社アクメ" in page and 'lang="ja"' in page
    nonce = re.search(r'name="csrf" value="([^"]+)"', page)
    assert nonce
    status, location, _ = browser.open(link.group(0), {
        "csrf": nonce.group(1), "lang": "ja", "decision": "accept", "agree": "yes",
        "name": "山田 花子", "email": "candidate@example.net", "desired_job": "経理"})
    assert status == 303 and location.endswith("/done?lang=ja")
    status, _, done = browser.open(f"http://127.0.0.1:{ports['site']}{location}")
    assert 'data-state="accepted"' in done

    agency = var / "agency"
    (consent,) = _until("the forward at the agency", lambda: _forwards(agency, "consent"))
    assert consent["candidate"] == {"name": "山田 花子", "email": "candidate@example.net",
                                    "desired_job": "経理"}
    assert consent["company"] == {"id": "acme", "name": "株式会社アクメ"}

    status, _, manage = browser.open(link.group(0) + "/manage")
    nonce = re.search(r'name="csrf" value="([^"]+)"', manage)
    assert nonce
    status, _, _ = browser.open(link.group(0) + "/withdraw", {"csrf": nonce.group(1)})
    assert status == 303
    (withdrawal,) = _until("the withdrawal at the agency",
                           lambda: _forwards(agency, "withdrawal"))
    assert withdrawal["refers_to"] == [consent["forward_id"]]


def test_the_demo_admin_login_printed_by_init_opens_the_dashboard(
        demo: tuple[Path, dict[str, int]]) -> None:
    var, ports = demo
    printed = (var / "init.out").read_text(encoding="utf-8")
    login = re.search(r"admin login \(acme's HR[^)]*\): (\S+) / (\S+)", printed)
    assert login, printed
    site = f"http://127.0.0.1:{ports['site']}"
    browser = Browser()
    status, _, page = browser.open(f"{site}/admin/login")
    nonce = re.search(r'name="csrf" value="([^"]+)"', page)
    assert status == 200 and nonce
    status, location, _ = browser.open(f"{site}/admin/login", {
        "csrf": nonce.group(1), "email": login.group(1), "password": login.group(2)})
    assert status == 303, location
    status, _, dashboard = browser.open(f"{site}{location}")
    assert status == 200 and "acme" in dashboard
    # The example ledger's numbers are there at once, and only acme's.
    assert "kumo" not in dashboard.lower()
