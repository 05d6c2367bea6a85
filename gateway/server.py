"""The aiosmtpd protocol, adjusted where the relay needs it.

* AUTH is allowed without TLS only on loopback (SPEC 4); elsewhere the
  client must STARTTLS first (RFC 4954 section 4, ``538 5.7.11``).
* AUTH PLAIN/LOGIN checks the argon2 hash in a small thread pool of its
  own: argon2 is slow and memory-hard on purpose, and neither the event
  loop nor the spool's fsyncs may wait behind a flood of wrong passwords.
* AUTH is refused (502) when it is not offered (``require_auth = false``).
* On shutdown new transactions get 421, and the gateway waits for the
  transactions in progress before it closes the sessions (``Sessions``).
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
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword

from career_relay.settings import Settings
from career_relay.validate import parse_hostport
from gateway import throttle
from gateway.handler import RelayHandler, peer_ip
from gateway.message import has_bare_newline
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


# argon2 costs about 0.1 s and 64 MiB a check: at most two at a time.
_AUTH_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="argon2")
_POLL = 0.05  # seconds between looks while waiting for transactions to finish
_PROGRESS_CHECK = 5.0  # seconds between looks at a slow DATA transfer


class Sessions:
    """The open SMTP sessions of a worker, for a shutdown that loses nothing."""

    def __init__(self) -> None:
        self.open: set[RelaySMTP] = set()
        self.closing = False

    async def drain(self, timeout: float) -> None:
        self.closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(s.in_transaction for s in self.open) and loop.time() < deadline:
            await asyncio.sleep(_POLL)
        for session in list(self.open):
            if session.transport is not None:
                session.transport.close()
        while self.open and loop.time() < deadline + 1.0:
            await asyncio.sleep(_POLL)  # let their handlers see the connection go


class RelaySMTP(SMTP):
    # aiosmtpd builds its command and AUTH tables from dir(self) and
    # inspect.getmembers(self) for every connection, evaluating every
    # attribute: a fifth of the CPU per message when each message comes on a
    # new connection.  Those tables only look at smtp_* and auth_* names.
    _dir_names: ClassVar[list[str] | None] = None

    def __dir__(self) -> list[str]:
        cls = type(self)
        if cls._dir_names is None:
            cls._dir_names = [n for n in super().__dir__()
                              if n.startswith(("smtp_", "auth_"))]
        return cls._dir_names

    def __init__(self, handler: RelayHandler, policy: RelayPolicy, sessions: Sessions,
                 **kwargs: Any):
        super().__init__(handler, **kwargs)
        self._policy = policy
        self._sessions = sessions

    @property
    def in_transaction(self) -> bool:
        return self.envelope is not None and bool(self.envelope.mail_from)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._sessions.open.add(self)
        assert self.session is not None
        # Per connection: loopback clients may AUTH in the clear, others only after TLS.
        self._auth_require_tls = not _is_loopback(self.session.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._sessions.open.discard(self)
        super().connection_lost(exc)

    async def smtp_MAIL(self, arg: str) -> None:
        if self._sessions.closing:
            await self.push("421 4.3.2 Service shutting down; please try again later")
            return
        await super().smtp_MAIL(arg)

    async def smtp_AUTH(self, arg: str) -> None:
        if not self._policy.auth_offered:
            await self.push("502 5.5.1 AUTH not available")
            return
        if self._policy.throttle.blocked(peer_ip(self.session)):
            # Before any password is checked: a flood must not keep argon2 busy (SPEC 4).
            await self.push("454 4.7.0 Too many failed authentication attempts from this "
                            "address; try again later")
            return
        await super().smtp_AUTH(arg)

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
                    piece = await self._read_piece(reader)
                except asyncio.LimitOverrunError as exc:
                    piece = await reader.readexactly(exc.consumed)
                except asyncio.IncompleteReadError:
                    return b"", "421 4.4.2 Connection lost during DATA"
                size += len(piece)
                self._reset_timeout()  # the timeout is for an idle client, not a long one
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
        if has_bare_newline(raw):
            # RFC 5321 section 2.3.8: CR and LF only as a pair; anything else is
            # how SMTP smuggling (CVE-2023-51764 and friends) hides a second message.
            return b"", ("554 5.6.0 Message refused: bare LF or CR in DATA; lines must end "
                         "with CRLF (RFC 5321 section 2.3.8)")
        if raw and max(map(len, raw.split(b"\r\n"))) > self.line_length_limit - 2:
            return b"", "500 5.5.2 Line too long (see RFC 5321 section 4.5.3.1.6)"
        # Undo dot-stuffing: the first dot of every line that starts with one.
        data = raw.replace(b"\r\n.", b"\r\n")
        return (data[1:] if data.startswith(b".") else data), None

    async def _read_piece(self, reader: Any) -> bytes:
        """The data up to the next ".<CRLF>", keeping the session alive while bytes flow.

        aiosmtpd's idle timer is reset per command; a long DATA from a slow
        client is not idle, so the timer is reset whenever the buffer grew.
        """
        seen = len(reader._buffer)
        check = min(_PROGRESS_CHECK, self._timeout_duration / 2)
        while True:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the
                # cancellation aiosmtpd sends when the client disconnects.
                async with asyncio.timeout(check):
                    piece: bytes = await reader.readuntil(b".\r\n")
                return piece
            except TimeoutError:
                if len(reader._buffer) != seen:
                    seen = len(reader._buffer)
                    self._reset_timeout()

    async def _verified(self, result: AuthResult) -> AuthResult:
        if not result.success or not isinstance(result.auth_data, LoginPassword):
            return result
        creds: LoginPassword = result.auth_data
        company = await self.loop.run_in_executor(
            _AUTH_POOL, self._policy.authenticate, creds.login, creds.password)
        if company is None:
            ip = peer_ip(self.session)
            log.info("AUTH failed from %s", ip)
            if self._policy.throttle.failed(ip):
                log.warning("AUTH from %s blocked for %d s after %d failures", ip,
                            int(throttle.BLOCK), self._policy.throttle.limit)
            return AuthResult(success=False, handled=False,
                              message="535 5.7.8 Authentication credentials invalid")
        return AuthResult(success=True, auth_data=company)


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
    settings: Settings, handler: RelayHandler, policy: RelayPolicy, sessions: Sessions
) -> Any:
    ctx = tls_context(settings)

    def make() -> RelaySMTP:
        return RelaySMTP(
            handler,
            policy,
            sessions,
            # Given, not looked up: without it aiosmtpd finds the loop for every connection
            # inside warnings.catch_warnings(), which also empties every module's cache of
            # warnings already shown.
            loop=asyncio.get_running_loop(),
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
