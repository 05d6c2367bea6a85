"""A capture upstream for the demo: an SMTP server that writes each message to a file.

It stands in for the company's smarthost in ``make run`` so a newcomer can
open what the gateway relayed (``var/outbox/*.eml``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP


class CaptureHandler:
    def __init__(self, directory: Path):
        self.directory = directory
        self._seq = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(self._seq):05d}.eml"
        data: bytes = envelope.original_content
        await asyncio.get_running_loop().run_in_executor(None, self._write, name, data)
        return "250 2.0.0 OK: captured"

    def _write(self, name: str, data: bytes) -> None:
        tmp = self.directory / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.rename(self.directory / name)


async def start_capture(directory: Path, host: str, port: int) -> asyncio.base_events.Server:
    directory.mkdir(parents=True, exist_ok=True)
    handler = CaptureHandler(directory)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: SMTP(handler, hostname="capture.demo.test", enable_SMTPUTF8=True,
                     data_size_limit=None),
        host, port, reuse_address=True)
