"""The demo's stand-in agency: receives webhook forwards and writes each to a file.

It does what docs/agency-webhook.md asks of a real agency, in the fewest
lines: check the signature on the raw body (401 otherwise), take the
``forward_id`` from the signed body, keep each forward once (a retry of one
already kept just gets its 200 again), answer 2xx only once it is stored.
``make run`` starts it so a newcomer can see what the agency received
(``var/agency/<forward_id>.json``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from career_relay.agency_signature import HEADER as SIGNATURE_HEADER
from career_relay.agency_signature import SignatureError, verify

log = logging.getLogger("career_relay.agency_receiver")

#: What a forward id looks like (``fw_`` + URL-safe base64): safe as a file name.
_FORWARD_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")
_MAX_BODY = 1024 * 1024


@dataclass
class AgencyReceiver:
    """A running receiver; ``close`` stops it."""

    runner: web.AppRunner
    directory: Path
    host: str
    port: int
    path: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    async def close(self) -> None:
        await self.runner.cleanup()


class _Handler:
    def __init__(self, directory: Path, secret: str) -> None:
        self.directory = directory
        self.secret = secret

    async def post(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(self.secret, request.headers.get(SIGNATURE_HEADER), body, time.time())
        except SignatureError as exc:
            log.warning("demo agency: refused a forward: %s", exc)
            return web.Response(status=401, text=f"{exc}\n")
        try:
            forward_id = json.loads(body)["forward_id"]
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400, text="the body is not a forward\n")
        if not isinstance(forward_id, str) or not _FORWARD_ID.fullmatch(forward_id):
            return web.Response(status=400, text="bad forward_id\n")
        written = await asyncio.to_thread(self._keep, forward_id, body)
        log.info("demo agency: forward %s %s", forward_id,
                 "written" if written else "already kept (a retry)")
        return web.json_response({"forward_id": forward_id, "new": written})

    def _keep(self, forward_id: str, body: bytes) -> bool:
        """Write ``<forward_id>.json`` unless it exists; whether this call wrote it."""
        final = self.directory / f"{forward_id}.json"
        if final.exists():
            return False
        pretty = json.dumps(json.loads(body), ensure_ascii=False, indent=2, sort_keys=True)
        tmp = self.directory / f".{forward_id}.{secrets.token_hex(4)}.tmp"
        tmp.write_text(pretty + "\n", encoding="utf-8")
        try:
            # A hard link never replaces an existing file: of two concurrent
            # deliveries of one forward, exactly one writes it.
            os.link(tmp, final)
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        return True


async def start_agency_receiver(directory: Path, secret: str, host: str, port: int,
                                path: str) -> AgencyReceiver:
    """Serve POST ``path`` on ``host:port`` (port 0: any free one), writing into ``directory``."""
    if not secret:
        raise ValueError("the demo agency needs agency.webhook_secret to check signatures")
    directory.mkdir(parents=True, exist_ok=True)
    handler = _Handler(directory, secret)
    app = web.Application(client_max_size=_MAX_BODY)
    app.router.add_post(path or "/", handler.post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound = int(runner.addresses[0][1])  # the port chosen when 0 was asked for
    return AgencyReceiver(runner, directory, host, bound, path or "/")
