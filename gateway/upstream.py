"""One reusable connection to the company's smarthost (aiosmtplib).

``Upstream.send`` turns every outcome into a per-recipient reply, so the
delivery worker decides per recipient: a 2xx is delivered, a 5xx bounces, a
4xx or a connection problem is retried later (RFC 5321 section 4.2.1: the
first digit alone says whether retrying can help).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiosmtplib

from career_relay.settings import UpstreamSettings

log = logging.getLogger("career_relay.upstream")


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


class Upstream:
    """A lazily opened connection, kept open between messages."""

    def __init__(self, settings: UpstreamSettings, local_hostname: str):
        self._settings = settings
        self._local_hostname = local_hostname
        self._smtp: aiosmtplib.SMTP | None = None

    @property
    def label(self) -> str:
        return f"{self._settings.host}:{self._settings.port}"

    async def send(
        self, mail_from: str, rcpts: list[str], data: bytes, options: list[str]
    ) -> dict[str, Reply]:
        reused = self._smtp is not None and self._smtp.is_connected
        try:
            return await self._send_once(mail_from, rcpts, data, options)
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
            # A kept-open connection may have been closed by the smarthost while
            # idle; that says nothing about this message, so try once afresh.
            self.close()
            if not reused:
                return _all(rcpts, _temporary(exc))
        try:
            return await self._send_once(mail_from, rcpts, data, options)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            self.close()
            return _all(rcpts, _temporary(exc))

    async def _send_once(
        self, mail_from: str, rcpts: list[str], data: bytes, options: list[str]
    ) -> dict[str, Reply]:
        try:
            smtp = await self._connected()
            errors, _ = await smtp.sendmail(mail_from, rcpts, data, mail_options=options)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return {e.recipient: Reply(e.code, e.message) for e in exc.recipients}
        except aiosmtplib.SMTPNotSupported as exc:
            # RFC 6531 section 3.4: an SMTPUTF8 message cannot be downgraded by us.
            return _all(rcpts, Reply(553, f"5.6.7 {exc}"))
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421:  # the server is closing the channel (RFC 5321 3.8)
                self.close()
            return _all(rcpts, Reply(exc.code, exc.message))
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
            raise
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            self.close()
            return _all(rcpts, _temporary(exc))
        replies = dict.fromkeys(rcpts, Reply(250, "2.0.0 accepted"))
        replies.update({r: Reply(resp.code, resp.message) for r, resp in errors.items()})
        return replies

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
        s = self._settings
        smtp = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            local_hostname=self._local_hostname,
            timeout=s.timeout,
            use_tls=s.tls == "tls",
            start_tls=s.tls == "starttls",
            validate_certs=s.verify_tls,
            username=s.username or None,
            password=s.password or None,
        )
        await smtp.connect()
        self._smtp = smtp
        return smtp

    def close(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    async def quit(self) -> None:
        if self._smtp is not None and self._smtp.is_connected:
            try:
                await self._smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                pass
        self.close()


def _all(rcpts: list[str], reply: Reply) -> dict[str, Reply]:
    return dict.fromkeys(rcpts, reply)


def _temporary(exc: BaseException) -> Reply:
    # Connection trouble is always temporary: the message stays queued (4.4.1
    # "no answer from host", 4.4.2 "bad connection", RFC 3463).
    status = "4.4.1" if isinstance(exc, aiosmtplib.SMTPConnectError) else "4.4.2"
    return Reply(451, f"{status} upstream unavailable: {type(exc).__name__}: {exc}")
