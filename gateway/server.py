"""The aiosmtpd protocol, adjusted where the relay needs it.

* AUTH is allowed without TLS only on loopback (SPEC 4); elsewhere the
  client must STARTTLS first (RFC 4954 section 4, ``538 5.7.11``).
* AUTH PLAIN/LOGIN checks the argon2 hash in a thread: argon2 is slow on
  purpose, and a slow check on the event loop would stall every session.
* DATA is read in large pieces up to each ``.<CRLF>`` instead of line by
  line: aiosmtpd's loop costs about a millisecond of CPU per 10 KB message,
  more than everything else the relay does.  The rules are aiosmtpd's:
  the end is CRLF.CRLF only (RFC 5321 section 4.1.1.4, so a bare LF before
  the dot cannot end the data: SMTP smuggling), a leading dot is removed
  (section 4.5.2), too much data or a too long line is answered only after
  the end of the data (section 4.2.5).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import ssl
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword

from career_relay.settings import Settings
from career_relay.validate import parse_hostport
from gateway.handler import RelayHandler
from gateway.policy import RelayPolicy

log = logging.getLogger("career_relay.smtp")

# Commands a session may repeat without limit are the ones real mail needs;
# AUTH and the chatty ones are capped so a client cannot guess passwords or
# idle forever (aiosmtpd answers 421 and closes past the cap).
CALL_LIMITS = {"AUTH": 5, "NOOP": 50, "VRFY": 10, "EXPN": 10, "HELP": 10, "*": 1_000_000}


# The common shape of a MAIL FROM / RCPT TO argument. Anything else goes to
# aiosmtpd's full RFC 5322 parser, which costs about 50 us an address.
_PLAIN_PATH = re.compile(r"\s*<([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9.-]{1,253})>(.*)",
                         re.DOTALL)


class RelaySMTP(SMTP):
    def __init__(self, handler: RelayHandler, policy: RelayPolicy, **kwargs: Any):
        super().__init__(handler, **kwargs)
        self._policy = policy

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.session is not None
        # Per connection: loopback clients may AUTH in the clear, others only after TLS.
        self._auth_require_tls = not _is_loopback(self.session.peer)

    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        # Called synchronously by aiosmtpd's auth_PLAIN/auth_LOGIN once the
        # credentials are decoded; the real check happens in _verified below.
        return AuthResult(success=True, auth_data=auth_data)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verified(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verified(await super().auth_LOGIN(_, args))

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        m = _PLAIN_PATH.fullmatch(arg)
        if m is not None:
            return m.group(1), m.group(2)
        result: tuple[str | None, str | None] = super()._getaddr(arg)
        return result

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        data, problem = await self._read_data()
        if problem:
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(problem)
            return
        self.envelope.content = self.envelope.original_content = data
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self) -> tuple[bytes, str | None]:
        # StreamReader's line limit (aiosmtpd sets it to 1001) is lifted while
        # DATA is read, because the pieces read here span many lines.
        reader: Any = self._reader
        limit = self.data_size_limit or 0
        pieces: list[bytes] = []
        size = 0
        tail = b"\r\n"  # the CRLF that ended the DATA command: ".\r\n" first ends at once
        saved_limit = reader._limit
        reader._limit = max(saved_limit, 1 << 20)
        try:
            while True:
                try:
                    piece = await reader.readuntil(b".\r\n")
                except asyncio.LimitOverrunError as exc:
                    piece = await reader.readexactly(exc.consumed)
                except asyncio.IncompleteReadError:
                    return b"", "421 4.4.2 Connection lost during DATA"
                size += len(piece)
                if not limit or size <= limit:
                    pieces.append(piece)
                joined = tail + piece if len(piece) < 5 else piece
                if joined.endswith(b"\r\n.\r\n"):
                    break
                tail = joined[-2:]
        except asyncio.CancelledError:
            log.info("connection lost during DATA")
            self._writer.close()
            raise
        finally:
            reader._limit = saved_limit
        if limit and size - 3 > limit:
            return b"", "552 5.3.4 Error: Too much mail data"
        raw = b"".join(pieces)[:-3]
        if raw and max(map(len, raw.split(b"\r\n"))) > self.line_length_limit - 2:
            return b"", "500 5.5.2 Line too long (see RFC 5321 section 4.5.3.1.6)"
        # Undo dot-stuffing: the first dot of every line that starts with one.
        data = raw.replace(b"\r\n.", b"\r\n")
        return (data[1:] if data.startswith(b".") else data), None

    async def _verified(self, result: AuthResult) -> AuthResult:
        if not result.success or not isinstance(result.auth_data, LoginPassword):
            return result
        creds: LoginPassword = result.auth_data
        company = await self.loop.run_in_executor(
            None, self._policy.authenticate, creds.login, creds.password)
        if company is None:
            assert self.session is not None
            log.info("AUTH failed from %s", _peer_host(self.session.peer))
            return AuthResult(success=False, handled=False,
                              message="535 5.7.8 Authentication credentials invalid")
        return AuthResult(success=True, auth_data=company)


def _peer_host(peer: Any) -> str:
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


def _is_loopback(peer: Any) -> bool:
    try:
        return ipaddress.ip_address(str(peer[0]).split("%", 1)[0]).is_loopback
    except (ValueError, TypeError, IndexError):
        return False


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.gateway.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(settings.gateway.tls_cert, settings.gateway.tls_key)
    return ctx


def listening_socket(settings: Settings, *, reuse_port: bool) -> socket.socket:
    """Bind the SMTP port; with several workers each binds it with SO_REUSEPORT."""
    host, port = parse_hostport("gateway.listen", settings.gateway.listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


def protocol_factory(
    settings: Settings, handler: RelayHandler, policy: RelayPolicy
) -> Any:
    ctx = tls_context(settings)

    def make() -> RelaySMTP:
        return RelaySMTP(
            handler,
            policy,
            hostname=settings.gateway.hostname,
            ident="career-relay",
            data_size_limit=settings.gateway.max_message_size,
            enable_SMTPUTF8=True,
            tls_context=ctx,
            timeout=settings.gateway.timeout,
            auth_require_tls=True,
            command_call_limit=CALL_LIMITS,
        )

    return make
