"""The first hour's two helpers: ``send-test`` and ``outbox last`` (issue 14, item 5).

``send_test`` sends an ordinary or a rejection test message to the running
gateway over SMTP on ``gateway.listen`` with Python's own ``smtplib``, so the
Quickstart needs nothing that ``make run`` did not install (it needed
``swaks``).  ``last_message`` reads the newest ``.eml`` the demo's capture
upstream wrote and returns its links decoded: in the file a long link is cut by
quoted-printable soft breaks (RFC 2045 6.7: lines of at most 76 characters,
``=`` at the end of a broken one), so copied from there it gives a 404.

Both run in the command line's process, never on the SMTP path: a blocking
``smtplib`` and the ``email`` package's full parse are at home here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.header
import email.policy
import html.parser
import re
import smtplib
import socket
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
from pathlib import Path

from career_relay.errors import UserError
from career_relay.settings import CompanySettings, Settings
from career_relay.terminal import printable
from career_relay.validate import parse_hostport

MARKER = "[[CAREER_RELAY_LINK]]"
_BODY = {
    "ordinary": {
        "ja": "career-relay のテストメールです。通常のメールは一字一句そのまま届きます。\n",
        "en": "A test message through career-relay: ordinary mail is relayed byte for byte.\n",
    },
    "rejection": {
        "ja": ("このたびは弊社の募集にご応募いただき、誠にありがとうございました。\n"
               "慎重に選考を重ねました結果、誠に残念ながら、今回はご希望に沿いかねる結果と"
               "なりました。\n\n提携する人材紹介会社へのご登録（任意）はこちらから：\n\n"
               f"{MARKER}\n\ncareer-relay のテスト送信です。\n"),
        "en": ("Thank you for applying. We regret to inform you that we will not proceed "
               "with your application.\n\nIf you wish, you may register with our partner "
               f"recruiting agency here:\n\n{MARKER}\n\nA test message through "
               "career-relay.\n"),
    },
}
_SUBJECT = {("ordinary", "ja"): "career-relay テスト", ("ordinary", "en"): "career-relay test",
            ("rejection", "ja"): "選考結果のご連絡（テスト）",
            ("rejection", "en"): "Your application (test)"}
#: A wildcard listen address is reached on loopback.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
_URL = re.compile(r"https?://[^\s<>\"'()\[\]]+")


@dataclasses.dataclass(frozen=True)
class Sent:
    server: str
    sender: str
    recipients: tuple[str, ...]
    reply: str  # the gateway's answer to DATA, e.g. "250 2.0.0 Ok: queued as ..."


def send_test(settings: Settings, *, rejection: bool, to: list[str], sender: str | None,
              company_id: str | None, subject: str | None, password: str | None) -> Sent:
    """One test message through the gateway; a refusal or an unreachable gateway is a
    ``UserError`` naming the reply or the address."""
    _refuse_controls(("--from", sender or ""), *(("--to", t) for t in to),
                     ("--subject", subject or ""))
    company = _company(settings, company_id)
    sender = sender or (f"hr@{company.domains[0]}" if company and company.domains
                        else "postmaster@localhost")
    locale = company.locale if company and company.locale in ("ja", "en") else "ja"
    kind = "rejection" if rejection else "ordinary"
    message = EmailMessage(policy=email.policy.SMTP)
    try:
        message["From"] = sender
        message["To"] = ", ".join(to)
        message["Subject"] = subject or _SUBJECT[kind, locale]
    except ValueError as exc:  # what the email package refuses beyond line breaks
        raise UserError(f"send-test cannot put that into a header: {exc}") from None
    message["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    message["Message-ID"] = make_msgid("career-relay-test", sender.rpartition("@")[2] or None)
    message.set_content(_BODY[kind][locale], charset="utf-8", cte="8bit")
    host, port = parse_hostport("gateway.listen", settings.gateway.listen)
    host = _LOOPBACK.get(host, host)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        with smtplib.SMTP(host, port, timeout=30) as smtp:
            if password is not None:
                if company is None or not company.smtp_username:
                    raise UserError("--password-stdin needs a company with smtp_username")
                smtp.login(company.smtp_username, password)
            smtp.ehlo_or_helo_if_needed()
            options = ["BODY=8BITMIME"] if smtp.has_extn("8bitmime") else []
            code, text = smtp.mail(sender, options)
            if code >= 300:
                raise UserError(f"{where} refused the sender {sender}: {code} {_text(text)}")
            for rcpt in to:
                code, text = smtp.rcpt(rcpt)
                if code >= 300:
                    raise UserError(f"{where} refused {rcpt}: {code} {_text(text)}")
            code, text = smtp.data(message.as_bytes())
            if code >= 300:
                raise UserError(f"{where} refused the message: {code} {_text(text)}")
    except smtplib.SMTPResponseException as exc:
        raise UserError(f"{where} answered {exc.smtp_code} {_text(exc.smtp_error)}") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise UserError(f"cannot send to the gateway at {where} ({_reason(exc)}): is "
                        "`career-relay serve` running with this configuration?") from None
    return Sent(where, sender, tuple(to), f"{code} {_text(text)}")


def _refuse_controls(*options: tuple[str, str]) -> None:
    """A CR or LF in a header value or an SMTP command adds a header or a command
    (RFC 5322 2.2, RFC 5321 2.3.8: a line ends at CRLF): ``--subject $'a\\r\\nBcc: x'``
    would add a recipient.  Refused, as is every other control but tab."""
    for option, value in options:
        bad = next((c for c in value if (ord(c) < 0x20 and c != "\t") or c == "\x7f"), None)
        if bad is not None:
            what = "a line break" if bad in "\r\n" else f"the control character {bad!r}"
            raise UserError(f"{option} cannot hold {what} (it would go into a header "
                            "or an SMTP command as it is)")


def _company(settings: Settings, company_id: str | None) -> CompanySettings | None:
    if company_id is None:
        # The first company that sends mail (has a domain): acme in the demo.
        return next((c for c in settings.companies if c.domains), None)
    company = settings.company(company_id)
    if company is None:
        known = ", ".join(c.id for c in settings.companies) or "none"
        raise UserError(f"no company {company_id!r} in the configuration (known: {known})")
    return company


def _text(reply: bytes | str) -> str:
    """A reply of the gateway (or whatever listens there) as one line, safe to print."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return printable(" ".join(text.split()))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


# -- the demo's outbox ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Captured:
    path: Path
    sender: str
    to: str
    subject: str
    links: tuple[str, ...]  # every http(s) link of the text and HTML parts, decoded, once


def last_message(directory: Path) -> Captured:
    """The newest message the capture upstream wrote to ``directory``, with its links."""
    found = sorted(directory.glob("*.eml"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    if not found:
        raise UserError(f"no message in {directory} yet: send one with `career-relay "
                        "send-test` while `career-relay serve` runs")
    return read_captured(found[-1])


def read_captured(path: Path) -> Captured:
    """The message in ``path``; one nested deeper than Python's stack allows (the parser
    and ``walk`` recurse per level) is a ``UserError``, not a RecursionError."""
    try:
        with path.open("rb") as f:
            message = BytesParser(policy=email.policy.default).parse(f)
        return _captured(path, message)
    except RecursionError:
        raise UserError(f"{printable(str(path))}: the message's MIME parts are nested too deeply "
                        "to read") from None


def _captured(path: Path, message: EmailMessage) -> Captured:
    links: list[str] = []
    for part in message.walk():
        if part.get_content_maintype() != "text" or part.is_attachment():
            continue
        subtype = part.get_content_subtype()
        if subtype not in ("plain", "html"):
            continue
        try:
            text = part.get_content()  # transfer encoding and charset undone
        except (LookupError, ValueError):
            continue  # an unknown charset: no links from this part
        found = _html_links(text) if subtype == "html" else _URL.findall(text)
        links += [link.rstrip(".,;:!?、。") for link in found]
    return Captured(path, _header(message, "From"), _header(message, "To"),
                    _header(message, "Subject"), tuple(dict.fromkeys(links)))


def _header(message: EmailMessage, name: str) -> str:
    """The header decoded (RFC 2047), or as it was written when the email package cannot
    decode it: an encoded display name holding a CR or LF is a ValueError there, and its
    header parsers have raised IndexError and AttributeError on other odd input."""
    try:
        return str(message.get(name, ""))
    except Exception:  # any parse failure: decoded word by word, or as it is
        raw = next((str(v) for k, v in message.raw_items() if k.lower() == name.lower()), "")
        try:
            return str(email.header.make_header(email.header.decode_header(raw)))
        except Exception:
            return raw


def _html_links(text: str) -> list[str]:
    """The http(s) hrefs of an HTML part (entities decoded), then any link in its text."""
    collector = _Hrefs()
    collector.feed(text)
    collector.close()
    return [*collector.hrefs, *_URL.findall(" ".join(collector.text))]


class _Hrefs(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href") or ""
            if href.startswith(("http://", "https://")):
                self.hrefs.append(href.strip())

    def handle_data(self, data: str) -> None:
        self.text.append(data)
