"""Group commit for the API's offers, on the event loop's side of the thread.

``LedgerWriter`` (the gateway's) groups rejections from many threads: each caller blocks
a thread until its commit is done.  A site answering hundreds of API requests a second
would need a thread per request in flight for that.  Here the requests wait as futures
instead: the first to come finds no commit running and starts one on the writer thread
with everything queued; those that arrive meanwhile make the next batch, committed as
soon as the first is done.  It is the same write as the gateway's (``ApiOffers.record``
writes as ``Ledger.record_rejections`` does: one transaction for the batch, the chain's
entries, the ``rejections`` counter, UNIQUE (company, message_id, recipient)), so an API
offer is recorded exactly as a relayed one; with it, in the same transaction, what only
the API knows (its Idempotency-Key, checked there; the network it came from).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future, ThreadPoolExecutor

from career_relay.errors import LedgerConflict
from career_relay.ledger import ApiOffers, ApiRequest, Ledger

#: The most rejections one transaction takes (as ``LedgerWriter``'s batches).
MAX_BATCH = 200

#: A request's answer: its offer id, None (its Idempotency-Key is another recipient's),
#: or what the ledger refused it with.
Answer = str | None | BaseException


class OfferBatches:
    def __init__(self, ledger: Ledger) -> None:
        self._offers = ApiOffers(ledger)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="api-offers")
        self._queue: list[tuple[ApiRequest, asyncio.Future[str | None]]] = []
        self._committing = False

    async def record(self, request: ApiRequest) -> str | None:
        """The offer id (made or found), or None (its Idempotency-Key is another
        recipient's), once the transaction holding it is committed."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[str | None] = loop.create_future()
        self._queue.append((request, waiter))
        if not self._committing:
            self._commit(loop)
        return await waiter

    def _commit(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        self._committing = True
        done = self._thread.submit(self._record, [r for r, _ in batch])
        done.add_done_callback(lambda f: loop.call_soon_threadsafe(self._answer, loop, batch, f))

    def _record(self, batch: list[ApiRequest]) -> list[Answer]:
        """On the writer thread: the batch in one transaction; when the ledger refuses a
        value in it (``LedgerConflict``, ``ValueError``), each alone, so that only the
        request that brought it hears of it (as ``LedgerWriter`` does)."""
        try:
            return list(self._offers.record(batch))
        except (LedgerConflict, ValueError) as exc:
            if len(batch) < 2:
                return [exc]
        found: list[Answer] = []
        for request in batch:
            try:
                found.append(self._offers.record([request])[0])
            except Exception as exc:
                found.append(exc)
        return found

    def _answer(self, loop: asyncio.AbstractEventLoop,
                batch: list[tuple[ApiRequest, asyncio.Future[str | None]]],
                done: Future[list[Answer]]) -> None:
        error = done.exception()
        for n, (_, waiter) in enumerate(batch):
            if waiter.done():  # its request went away (the client hung up)
                continue
            result = error if error is not None else done.result()[n]
            if isinstance(result, BaseException):
                waiter.set_exception(result)
            else:
                waiter.set_result(result)
        self._committing = False
        if self._queue:
            self._commit(loop)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
