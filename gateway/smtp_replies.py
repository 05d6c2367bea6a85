"""What the upstream answers, and how pipelined answers are read (RFC 2920).

``Reply`` is one SMTP reply as the delivery worker judges it.  ``ReplyReader``
takes the replies to pipelined commands off the connection in place of
aiosmtplib's protocol, which waits for one reply at a time and drops what
arrives while nobody waits (``gateway.upstream`` sends the commands).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import aiosmtplib

_MAX_LINE = 8192  # octets in a reply line, as aiosmtplib allows
_MAX_REPLY = 4 * _MAX_LINE  # octets of replies not yet read


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


class ReplyReader(asyncio.Protocol):
    """Reads the replies to pipelined commands in place of aiosmtplib's protocol.

    aiosmtplib's protocol waits for one reply at a time and drops what arrives
    while nobody waits, so pipelined replies would be lost: while a pipelined
    transaction runs, this protocol receives the connection's data instead,
    and hands the connection back afterwards.  The end of the connection and
    flow control still reach aiosmtplib's protocol.
    """

    def __init__(self, original: asyncio.BaseProtocol, transport: asyncio.BaseTransport):
        self._original = original
        self._transport = transport
        self._buffer = bytearray()
        self._replies: collections.deque[Reply] = collections.deque()
        self.read: list[Reply] = []  # every reply taken, in order
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None

    @classmethod
    @contextlib.contextmanager
    def reading(cls, smtp: aiosmtplib.SMTP, original: asyncio.BaseProtocol,
                transport: asyncio.BaseTransport) -> Iterator[ReplyReader]:
        reader = cls(original, transport)
        transport.set_protocol(reader)
        try:
            yield reader
        except BaseException:
            smtp.close()  # a reply we did not wait for would answer the next command
            raise
        finally:
            if not transport.is_closing():
                transport.set_protocol(original)
        if reader._buffer or reader._replies:
            smtp.close()  # more replies than commands: the session is out of step

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        cast(asyncio.WriteTransport, self._transport).write(data)

    async def reply(self, timeout: float | None) -> Reply:
        while not self._replies:
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except TimeoutError:
                raise aiosmtplib.SMTPReadTimeoutError(
                    "Timed out waiting for server response") from None
        self.read.append(self._replies.popleft())
        return self.read[-1]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            while (reply := _parse_reply(self._buffer)) is not None:
                self._replies.append(reply)
        except aiosmtplib.SMTPResponseException as exc:
            self._fail(exc)
        if len(self._buffer) > _MAX_REPLY:
            self._fail(aiosmtplib.SMTPResponseException(-1, "Response too long"))
        self._wake()

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected("Connection lost"))
        self._original.connection_lost(exc)

    def pause_writing(self) -> None:
        self._original.pause_writing()

    def resume_writing(self) -> None:
        self._original.resume_writing()

    def _fail(self, exc: Exception) -> None:
        if self._error is None:
            self._error = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _parse_reply(buffer: bytearray) -> Reply | None:
    """Take one complete (possibly multi-line) reply off ``buffer``; None until one is there.

    As aiosmtplib reads them: the code of the last line, the texts of all lines joined
    by LF.
    """
    texts: list[bytes] = []
    offset = 0
    while (end := buffer.find(b"\n", offset)) >= 0:
        line = bytes(buffer[offset:end + 1])
        offset = end + 1
        if len(line) > _MAX_LINE or not line[:3].isdigit():
            raise aiosmtplib.SMTPResponseException(
                -1, f"Malformed SMTP response line: {line.decode('utf-8', 'ignore')}")
        texts.append(line[4:].strip(b" \t\r\n"))
        if line[3:4] != b"-":
            del buffer[:offset]
            return Reply(int(line[:3]), b"\n".join(texts).decode("utf-8", "surrogateescape"))
    return None
