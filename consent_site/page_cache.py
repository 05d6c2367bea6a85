"""Rendered candidate pages, kept while the ledger has not changed.

A link's page is the same on every visit until something is committed to
the ledger: only the CSRF nonce differs, and it goes into a slot at serve
time.  Rendering costs about 120 us and the rest of a hit about 10, and
links are opened again and again (mail scanners, then the candidate, then
reloads).

Correctness rests on SQLite's ``PRAGMA data_version``, which changes
whenever any other connection (another process, or this process's writer)
commits: a page cached under an older version is never served, so a
decision, a review verdict or an erasure made anywhere shows at once.  Busy
gateways commit often, which simply makes hits rarer.  A page is also
never served past its link's expiry (then the 410 is rendered the normal
way), and the cache is bounded (least recently used pages go first).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass

#: Where the nonce goes in a cached page: random per process, so no value
#: shown on a page (an address, a name) can contain it by chance or design.
NONCE_SLOT = f"cr-nonce-{secrets.token_hex(12)}"

PageKey = tuple[str, str | None, str | None]  # token, ?lang=, Accept-Language


@dataclass(frozen=True)
class Page:
    body: bytes  # UTF-8, with NONCE_SLOT where the form's nonce goes
    status: int
    offer_id: str
    notice: str | None  # the notice digest the nonce carries; None: the page has no form
    generation: int  # the ledger's data_version when the page was rendered
    expires: float  # the link's expiry, seconds since the epoch


class PageCache:
    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._pages: OrderedDict[PageKey, Page] = OrderedDict()

    def get(self, key: PageKey, generation: int, now: float) -> Page | None:
        page = self._pages.get(key)
        if page is None:
            return None
        if page.generation != generation or now >= page.expires:
            del self._pages[key]
            return None
        self._pages.move_to_end(key)
        return page

    def put(self, key: PageKey, page: Page) -> None:
        self._pages[key] = page
        self._pages.move_to_end(key)
        while len(self._pages) > self._size:
            self._pages.popitem(last=False)

    def __len__(self) -> int:
        return len(self._pages)
