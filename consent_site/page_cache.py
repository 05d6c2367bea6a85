"""Rendered candidate pages, kept while the ledger has not changed.

A link's page is the same on every visit until something is committed to
the ledger, nonce included: the candidate's nonce is bound to the offer and
the notice, not to a visitor (``security``), so the nonce minted when the
page was rendered serves every visit while it has at least ``NONCE_MARGIN``
of its life left.  Rendering costs about 120 us; a hit costs a dictionary
lookup.  Links are opened again and again (mail scanners, then the
candidate, then reloads).

Correctness rests on SQLite's ``PRAGMA data_version``, which changes
whenever any other connection (another process, or this process's writer)
commits: a page cached under an older version is never served, so a
decision, a review verdict or an erasure made anywhere shows at once.  Busy
gateways commit often, which simply makes hits rarer.  A page is also
never served past its link's expiry (then the 410 is rendered the normal
way), and the cache is bounded (least recently used pages go first).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

#: A cached form is retired this long before its nonce expires, so a visitor
#: always has at least this long to fill it in (seconds).
NONCE_MARGIN = 3600

PageKey = tuple[str, str, str | None]  # token, query string, Accept-Language


@dataclass(frozen=True)
class Page:
    body: bytes  # UTF-8, as served
    status: int
    offer_id: str
    generation: int  # the ledger's data_version when the page was rendered
    expires: float  # the link's expiry, or its nonce's less NONCE_MARGIN (epoch seconds)


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
