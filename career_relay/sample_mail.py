"""A test message through the gateway, as a client (issue 14, items 4 and 5).

``send_test`` builds an ordinary or a rejection test message and sends it to the
gateway on ``gateway.listen`` with Python's own ``smtplib`` (AUTH as the company when a
password is given).  ``career-relay send-test`` calls it from the command line, and the
admin pages' "Get started" (``consent_site.admin_start``) from an executor thread: one
client for both, in the core because neither side may import the other.  It is a
client only: nothing here listens, and the gateway's SMTP path never calls it.

``message_links`` lists the http(s) links of a message's text and HTML parts, decoded
(transfer encoding, charset, HTML entities), for ``outbox last`` and for the admin's
pasted test rejection.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.policy
import html.parser
import re
import secrets
import smtplib
import socket
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import format_datetime

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
    message_id: str = ""  # the Message-ID header field's value, with its angle brackets


def send_test(settings: Settings, *, rejection: bool, to: list[str], sender: str | None,
              company_id: str | None, subject: str | None, password: str | None,
              headers: Mapping[str, str] | None = None, timeout: float = 30) -> Sent:
    """One test message through the gateway; a refusal or an unreachable gateway is a
    ``UserError`` naming the reply or the address.  ``headers``: more header fields
    (``X-Career-Relay-Channel`` for the admin pages' test, so the report can tell it)."""
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
    # Short enough never to be folded (RFC 5322 2.2.3): a folded Message-ID is one the
    # gateway reads as missing, and the ledger then keys the offer by a digest instead.
    message["Message-ID"] = f"<cr-test.{secrets.token_hex(10)}@{domain_of(sender)}>"
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(_BODY[kind][locale], charset="utf-8", cte="8bit")
    host, port = parse_hostport("gateway.listen", settings.gateway.listen)
    host = _LOOPBACK.get(host, host)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
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
    return Sent(where, sender, tuple(to), f"{code} {_text(text)}", str(message["Message-ID"]))


def domain_of(address: str) -> str:
    return address.rpartition("@")[2] or "localhost"


def _company(settings: Settings, company_id: str | None) -> CompanySettings | None:
    if company_id is None:
        # The first company that sends mail (has a domain): acme in the demo.
        return next((c for c in settings.companies if c.domains), None)
    company = settings.company(company_id)
    if company is None:
        known = ", ".join(c.id for c in settings.companies) or "none"
        raise UserError(f"no company {company_id!r} in the configuration (known: {known})")
    return company


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



def message_links(message: EmailMessage) -> tuple[str, ...]:
    """Every http(s) link of the text and HTML parts of ``message`` (a message parsed with
    ``email.policy.default``), decoded, once each, in order."""
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
    return tuple(dict.fromkeys(links))


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
