"""Wiring of one gateway worker: spool, delivery, pipeline and the SMTP server."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

from career_relay.errors import SpoolError
from career_relay.paths import email_templates_dir
from career_relay.settings import Settings
from gateway.delivery import Delivery
from gateway.handler import RelayHandler
from gateway.pipeline import Pipeline
from gateway.policy import RelayPolicy
from gateway.server import listening_socket, protocol_factory
from gateway.spool import Spool

log = logging.getLogger("career_relay.gateway")


class Gateway:
    """One worker: it accepts mail on the shared port and delivers what it accepted."""

    def __init__(self, settings: Settings, *, worker: int = 0, workers: int = 1):
        self.settings = settings
        self.worker = worker
        self.workers = workers
        self.spool = Spool(settings.queue.dir, worker=worker, workers=workers)
        self.delivery = Delivery(
            self.spool, settings.upstream, settings.queue,
            hostname=settings.gateway.hostname, template_dir=email_templates_dir(),
            worker=worker, workers=workers)
        self.policy = RelayPolicy(settings)
        handler = RelayHandler(Pipeline(settings, self.spool, self.delivery, worker=worker,
                                        workers=workers),
                               self.policy, require_auth=settings.gateway.require_auth)
        self._factory = protocol_factory(settings, handler, self.policy)
        self._server: asyncio.base_events.Server | None = None

    async def start(self, sock: socket.socket | None = None) -> None:
        """Recover the spool first, then listen: mail found on disk is delivered first."""
        self.spool.create_dirs()
        await self._lock_spool()
        recovered = await self.delivery.start()
        if recovered:
            log.info("worker %d: %d message(s) recovered from the spool", self.worker, recovered)
        loop = asyncio.get_running_loop()
        sock = sock or listening_socket(self.settings, reuse_port=self.workers > 1)
        self._server = await loop.create_server(self._factory, sock=sock)
        log.info("worker %d: SMTP listening on %s", self.worker, self.settings.gateway.listen)

    async def _lock_spool(self, wait: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not self.spool.try_lock():
            if loop.time() > deadline:
                raise SpoolError(f"another gateway process holds worker {self.worker} of the "
                                 f"spool {self.spool.root}; stop it first")
            await asyncio.sleep(0.2)

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop taking mail, let sessions and deliveries in flight finish, then return."""
        if self._server is not None:
            self._server.close()  # no new connections; open sessions go on
            try:
                await asyncio.wait_for(self._server.wait_closed(), timeout)
            except TimeoutError:
                log.warning("worker %d: SMTP sessions still open after %.0f s", self.worker,
                            timeout)
        await self.delivery.stop(timeout)
        self.spool.journal.close()
        self.spool.unlock()

    @property
    def queue_dir(self) -> Path:
        return self.spool.queue
