"""Wiring of one gateway worker: spool, delivery, pipeline and the SMTP server."""

from __future__ import annotations

import asyncio
import logging
import socket

from career_relay.errors import ConfigError, SpoolError
from career_relay.ledger import open_configured
from career_relay.paths import email_templates_dir
from career_relay.settings import Settings
from gateway.delivery import Delivery
from gateway.handler import RelayHandler
from gateway.pipeline import Pipeline
from gateway.policy import RelayPolicy
from gateway.rejection import Rejections
from gateway.server import Sessions, listening_socket, protocol_factory
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
        self.policy = RelayPolicy(settings, workers)
        # wait=False: a shared ledger that is away holds rejections (SPEC 12), it does not
        # keep the gateway from starting.
        self.ledger = (open_configured(settings, sync_wal_elsewhere=True, wait=False)
                       if settings.companies else None)
        wal = self.ledger.wal_path if self.ledger is not None else None
        if wal is not None:
            # Offers are committed before their copies are journaled; the journal's
            # group commit fsyncs the ledger's WAL too, so both are durable at the 250.
            self.spool.journal.companions.append(wal)
        self.rejections = (Rejections(settings, self.ledger, email_templates_dir())
                           if self.ledger is not None else None)
        self.pipeline = pipeline = Pipeline(settings, self.spool, self.delivery,
                                            rejections=self.rejections, worker=worker,
                                            workers=workers)
        # A rejection held while the ledger was away is made into its copies by the
        # pipeline, when delivery finds the ledger back (SPEC 12).
        self.delivery.release = pipeline.release
        handler = RelayHandler(pipeline, self.policy, settings.gateway.max_recipients)
        self.sessions = Sessions()
        self._factory = protocol_factory(settings, handler, self.policy, self.sessions)
        self._server: asyncio.base_events.Server | None = None

    async def start(self, sock: socket.socket | None = None) -> None:
        """Recover the spool first, then listen: mail found on disk is delivered first."""
        self.spool.create_dirs()
        await self._lock(self.worker)
        moved = await self._recover_journal()
        recovered = await self.delivery.start()
        if recovered:
            log.info("worker %d: %d message(s) to deliver from the spool (%d from the journal)",
                     self.worker, recovered, moved)
        loop = asyncio.get_running_loop()
        if sock is None:
            try:
                sock = listening_socket(self.settings, reuse_port=self.workers > 1)
            except OSError as exc:
                raise ConfigError(f"gateway.listen: cannot listen on "
                                  f"{self.settings.gateway.listen}: {exc.strerror or exc}"
                                  ) from None
        self._server = await loop.create_server(self._factory, sock=sock)
        log.info("worker %d: SMTP listening on %s", self.worker, self.settings.gateway.listen)

    async def _recover_journal(self) -> int:
        """A worker takes its own journal segments; the first worker, before it starts the
        others, takes every index it finds (the number of workers may have changed)."""
        loop = asyncio.get_running_loop()
        indices = {self.worker}
        if self.worker == 0:
            indices |= await loop.run_in_executor(None, self.spool.journal_workers)
        held = [fd for i in sorted(indices - {self.worker}) if (fd := await self._lock(i))]
        try:
            return await loop.run_in_executor(None, self.spool.recover, sorted(indices))
        finally:
            for fd in held:
                self.spool.unlock(fd)

    async def _lock(self, index: int, wait: float = 30.0) -> int | None:
        """Wait for a worker index's lock: two processes must never deliver the same share."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        own = index == self.worker
        while (fd := self.spool.try_lock(None if own else index)) is None:
            if loop.time() > deadline:
                raise SpoolError(f"another gateway process holds worker {index} of the "
                                 f"spool {self.spool.root}; stop it first")
            await asyncio.sleep(0.2)
        return None if own else fd

    def reload(self, settings: Settings) -> None:
        """SIGHUP: the companies of ``settings`` and the email templates, read again.

        The new keys and texts are built before anything is swapped: a key or a
        template that cannot be read raises ``ConfigError`` and the old ones
        stay.  Open sessions and deliveries carry on; a session that already
        authenticated keeps its login, and its next message uses the new texts.
        """
        if self.rejections is None and settings.companies:
            raise ConfigError("the gateway started without [[companies]]; the first one "
                              "needs a restart")
        try:
            if self.rejections is not None:
                self.rejections.reload(settings)
        except OSError as exc:
            raise ConfigError(f"email templates: {exc.strerror or exc}: "
                              f"{exc.filename or email_templates_dir()}") from None
        self.policy.reload(settings)
        self.pipeline.reload(settings)
        self.settings = settings

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop taking mail, let transactions and deliveries in flight finish, then return.

        New connections are refused at once and new transactions get 421; a
        session in the middle of a transaction may finish it (up to
        ``timeout``); then every session is closed, and only then the journal,
        so that no 250 can be given for a message the journal no longer takes.
        """
        if self._server is not None:
            self._server.close()
        await self.sessions.drain(timeout)
        await self.delivery.stop(timeout)
        self.spool.journal.close()
        self.spool.unlock()
        if self.rejections is not None:
            self.rejections.close()
        if self.ledger is not None:
            self.ledger.close()

