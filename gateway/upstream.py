"""One reusable connection to the company's smarthost (aiosmtplib).

``Upstream.send`` turns every outcome into a per-recipient reply, so the
delivery worker decides per recipient: a 2xx is delivered, a 5xx bounces, a
4xx or a connection problem is retried later (RFC 5321 section 4.2.1: the
first digit alone says whether retrying can help).
"""

from __future__ import annotations

import contextlib
import logging
import re

import aiosmtplib

from career_relay.settings import UpstreamSettings
from gateway.smtp_replies import Reply, ReplyReader

log = logging.getLogger("career_relay.upstream")

# Any line ending that is not CRLF, as aiosmtplib normalises them (a bare CR or LF).
_LINE_ENDING = re.compile(rb"(?:\r\n|\n|\r(?!\n))")
# What aiosmtplib refuses in a command argument (CR and LF would inject commands).
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


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
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            self.close()
            return _all(rcpts, _temporary(exc))

    async def _send_once(
        self, mail_from: str, rcpts: list[str], data: bytes, options: list[str]
    ) -> dict[str, Reply]:
        try:
            smtp = await self._connected()
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected, ConnectionError):
            raise
        except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
            # Greeting, EHLO, STARTTLS or AUTH refused: our side's set-up (a
            # wrong password, a certificate) is wrong, never the message, so
            # it waits in the queue instead of bouncing.
            self.close()
            return _all(rcpts, _temporary(exc))
        try:
            return await _transaction(smtp, mail_from, rcpts, data, options)
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421:  # the server is closing the channel (RFC 5321 3.8)
                self.close()
            return _all(rcpts, Reply(exc.code, exc.message))
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
            raise
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            self.close()
            return _all(rcpts, _temporary(exc))

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
        if smtp.is_ehlo_or_helo_needed:
            await smtp.ehlo()
        self._smtp = smtp
        return smtp

    def close(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    async def quit(self) -> None:
        if self._smtp is not None and self._smtp.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await self._smtp.quit()
        self.close()


async def _transaction(
    smtp: aiosmtplib.SMTP, mail_from: str, rcpts: list[str], data: bytes, options: list[str]
) -> dict[str, Reply]:
    """MAIL, one RCPT per recipient, DATA; the reply for every recipient.

    The addresses were checked by our own SMTP intake, so they are sent as
    they are (aiosmtplib's ``sendmail`` would parse each one again).
    """
    utf8 = "SMTPUTF8" in options
    if utf8 and not smtp.supports_extension("smtputf8"):
        # RFC 6531 section 3.4: an SMTPUTF8 message cannot be downgraded by us.
        return _all(rcpts, Reply(553, "5.6.7 the upstream does not support SMTPUTF8"))
    encoding = "utf-8" if utf8 else "ascii"
    params = [o.encode() for o in options]
    if smtp.supports_extension("size"):
        params.insert(0, b"SIZE=%d" % len(data))  # RFC 1870
    mail = [b"MAIL", b"FROM:<" + mail_from.encode(encoding) + b">", *params]
    rcpt_commands = [[b"RCPT", b"TO:<" + rcpt.encode(encoding) + b">"] for rcpt in rcpts]
    if smtp.supports_extension("pipelining"):
        return await _pipelined(smtp, mail, rcpt_commands, rcpts, data)
    resp = await smtp.execute_command(*mail)
    if resp.code != 250:
        await _reset(smtp)
        return _all(rcpts, Reply(resp.code, resp.message))
    replies: dict[str, Reply] = {}
    for rcpt, command in zip(rcpts, rcpt_commands, strict=True):
        resp = await smtp.execute_command(*command)
        if resp.code not in (250, 251):
            replies[rcpt] = Reply(resp.code, resp.message)
    accepted = [r for r in rcpts if r not in replies]
    if not accepted:
        await _reset(smtp)
        return replies
    try:
        await _data(smtp, data)
    except aiosmtplib.SMTPDataError as exc:
        replies.update(_all(accepted, Reply(exc.code, exc.message)))
        return replies
    replies.update(_all(accepted, Reply(250, "2.0.0 accepted")))
    return replies


async def _pipelined(smtp: aiosmtplib.SMTP, mail: list[bytes], rcpt_commands: list[list[bytes]],
                     rcpts: list[str], data: bytes) -> dict[str, Reply]:
    """The transaction with PIPELINING (RFC 2920): MAIL, the RCPTs and DATA in one write.

    Two round trips instead of 2 + one per recipient; each round trip is a
    write and a wake-up on both sides, which cost more than the rest of a
    delivery.  The replies are read as they would be one by one, so the
    outcome per recipient is the same as without pipelining.
    """
    commands = [mail, *rcpt_commands, [b"DATA"]]
    for arg in (a for command in commands for a in command):
        if _CONTROL.search(arg):  # as aiosmtplib's execute_command refuses them
            raise ValueError("Command arg contains a prohibited control character")
    protocol = smtp.protocol
    if protocol is None or protocol.transport is None:
        raise aiosmtplib.SMTPServerDisconnected("Server not connected")
    timeout = smtp.timeout
    reset = False
    with ReplyReader.reading(smtp, protocol, protocol.transport) as reader:
        reader.write(b"".join(b" ".join(command) + b"\r\n" for command in commands))
        first = await reader.reply(timeout)
        rcpt_replies = [await reader.reply(timeout) for _ in rcpts]
        start = await reader.reply(timeout)
        if first.code != 250:
            # The RCPTs and DATA failed with it (no transaction); MAIL's reply says why.
            replies = _all(rcpts, first)
            reset = True
        else:
            replies = {r: rep for r, rep in zip(rcpts, rcpt_replies, strict=True)
                       if rep.code not in (250, 251)}
        accepted = [r for r in rcpts if r not in replies]
        if start.code == 354:
            # With nobody accepted (a server that should have refused DATA) the
            # message is ended at once, empty: there is nobody to deliver it to.
            reader.write(wire_data(data) if accepted else b".\r\n")
            end = await reader.reply(timeout)
            replies.update(_all(accepted, end if end.code != 250 else
                                Reply(250, "2.0.0 accepted")))
        else:
            replies.update(_all(accepted, start))
            reset = True
    if any(rep.code == 421 for rep in reader.read):
        smtp.close()  # the server is closing the channel (RFC 5321 section 3.8)
    elif reset:
        await _reset(smtp)
    return replies


async def _data(smtp: aiosmtplib.SMTP, data: bytes) -> None:
    """DATA, then the message: what aiosmtplib's ``data`` does, minus its regular expressions.

    ``data`` normalises line endings and dot-stuffs with two regular-expression
    substitutions over the whole message, about 90 us for 10 KB: most of the
    CPU a delivery costs.  Our messages are CRLF throughout already (the intake
    refuses bare CR and LF), so counting is enough to know, and ``bytes.replace``
    stuffs the dots.  Raises what ``data`` raises.
    """
    start = await smtp.execute_command(b"DATA")
    if start.code != 354:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    protocol = smtp.protocol
    if protocol is None:  # closed while DATA was answered
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    try:
        # No await between the write and read_response, which arms the reply;
        # so the reply cannot arrive unexpected.
        protocol.write(wire_data(data))
        resp = await protocol.read_response(timeout=smtp.timeout)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        smtp.close()  # as ``data`` does: the session is out of step now
        raise
    if resp.code != 250:
        raise aiosmtplib.SMTPDataError(resp.code, resp.message)


def wire_data(data: bytes) -> bytes:
    """The message as sent after DATA: CRLF line endings, dot-stuffed, ending in CRLF.CRLF.

    RFC 5321 section 4.5.2: a line that starts with a period gets one more.
    The same bytes as aiosmtplib produces for any input, which a test checks.
    """
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        data = _LINE_ENDING.sub(b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()


def _all(rcpts: list[str], reply: Reply) -> dict[str, Reply]:
    return dict.fromkeys(rcpts, reply)


def _temporary(exc: BaseException) -> Reply:
    # Connection trouble is always temporary: the message stays queued (4.4.1
    # "no answer from host", 4.4.2 "bad connection", RFC 3463).
    status = "4.4.1" if isinstance(exc, aiosmtplib.SMTPConnectError) else "4.4.2"
    return Reply(451, f"{status} upstream unavailable: {type(exc).__name__}: {exc}")
