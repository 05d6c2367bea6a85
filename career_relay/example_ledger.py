"""Generate ``ledger.db.example``: a realistic ledger built through the real code paths.

    python -m career_relay.example_ledger ledger.db.example

Five months (June to October 2026) of three companies' rejection mail, as
the gateway records it (``Ledger.record_rejections``), and what the
candidates then do on the consent site, through ``Consents`` as the site's
views call it: pages opened, accepts, declines, withdrawals, an erasure,
scanners' clicks held for review and an admin's verdicts, the forwarding
worker's deliveries (and the agency's occasional 503), qualified forwards,
credits, and one redemption.  ``init --demo`` copies the file to
``var/ledger.db``, so ``make run`` opens on a populated dashboard.

Seeded: the events, the fake clock and every id (offers, receipts, forwards,
credits: ``open_configured(new_id=...)``) come from one ``random.Random``, so the
same code always writes the same rows; ``tests/test_ledger.py`` regenerates
the file and compares the schema and the rows with the committed one.  Every
address is at a reserved example domain (RFC 2606, RFC 6761) and every
network a documentation range (RFC 5737): the file holds no real person.
"""

from __future__ import annotations

import datetime as dt
import functools
import heapq
import itertools
import random
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from career_relay import settings as settings_mod
from career_relay.consent import Client, Consents, Notice
from career_relay.ledger import (
    Book,
    ConsentLedger,
    Ledger,
    Offer,
    Referrals,
    Rejection,
    open_configured,
)

SEED = 2026
START = dt.datetime(2026, 6, 1, 0, 0, tzinfo=dt.UTC)
DAYS = 152  # to the end of October
END = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)  # what would come later has not happened yet
#: The demo configuration names the same key (``init --demo``): its keyed hashes match these.
HASH_KEY = "career-relay-example"

# (company id, name, its own domain, rejection mails per working day: low, high, opt-in bias)
COMPANIES = (
    ("acme", "株式会社アクメ", "acme.example", (0, 4), 1.4),
    ("kumo", "クモ技研株式会社", "kumo.example", (0, 2), 1.0),
    ("hoshi", "星野商事株式会社", "hoshi.example", (0, 1), 0.8),
)
JOBS = ("バックエンドエンジニア", "法人営業", "経理", "Product Designer", "カスタマーサクセス")
CHANNELS = ("自社サイト", "求人媒体", "エージェント", "リファラル")
STAGES = ("書類選考", "一次面接", "二次面接", "最終面接")
SURNAMES = ("sato", "suzuki", "takahashi", "tanaka", "ito", "watanabe", "yamamoto", "nakamura")
GIVEN = ("haruto", "yui", "sota", "hina", "riku", "mei", "kaito", "aoi")
KANJI = {"sato": "佐藤", "suzuki": "鈴木", "takahashi": "高橋", "tanaka": "田中", "ito": "伊藤",
         "watanabe": "渡辺", "yamamoto": "山本", "nakamura": "中村", "haruto": "陽翔",
         "yui": "結衣", "sota": "蒼太", "hina": "陽菜", "riku": "陸", "mei": "芽依",
         "kaito": "海斗", "aoi": "葵"}
MAIL_DOMAINS = ("mail.example", "example.jp", "example.com", "example.net")
PLACES = ("東京都", "大阪府", "福岡県", "リモート", "神奈川県")
PHONES = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1",
          "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/130.0 Mobile Safari/537.36",
          "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/130.0 Safari/537.36")
SCANNER = "Mozilla/5.0 (compatible; Proofpoint URL Defense)"
NETWORKS = ("192.0.2", "198.51.100", "203.0.113")
NOTICE = {"ja": "{name}は、あなたの同意に基づき、入力された情報を{agency}に提供します。",
          "en": "With your consent, {name} provides the information you enter to {agency}."}
HOUR = dt.timedelta(hours=1)


@dataclass
class _Clock:
    now: dt.datetime

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class _World:
    """The ledger and the site's rules over it, and the events still to happen, by time."""

    ledger: Ledger
    consents: Consents
    book: Book
    rng: random.Random
    clock: _Clock
    queue: list[tuple[dt.datetime, int, Callable[[], object]]] = field(default_factory=list)
    order: itertools.count[int] = field(default_factory=itertools.count)
    seen: dict[str, list[str]] = field(default_factory=dict)  # company -> addresses

    def at(self, when: dt.datetime, action: Callable[[], object]) -> None:
        if when < END:
            heapq.heappush(self.queue, (when, next(self.order), action))

    def run(self) -> None:
        while self.queue:
            self.clock.now, _, action = heapq.heappop(self.queue)
            action()

    @property
    def store(self) -> ConsentLedger:
        return self.consents.store


def _settings(base: Path) -> settings_mod.Settings:
    return settings_mod.from_mapping({
        "ledger": {"path": str(base / "ledger.db")},
        "secrets": {"signing_keys": [HASH_KEY], "hash_key": HASH_KEY},
        "companies": [{"id": cid, "name": name, "domains": [domain]}
                      for cid, name, domain, _, _ in COMPANIES],
    }, base=base)


def _address(w: _World, company: str) -> str:
    known = w.seen.setdefault(company, [])
    if known and w.rng.random() < 0.05:  # rejected again, for another job
        return w.rng.choice(known)
    name = f"{w.rng.choice(GIVEN)}.{w.rng.choice(SURNAMES)}{w.rng.randrange(1, 100)}"
    known.append(f"{name}@{w.rng.choice(MAIL_DOMAINS)}")
    return known[-1]


def _client(w: _World, user_agent: str | None = None) -> Client:
    return Client(user_agent or w.rng.choice(PHONES),
                  f"{w.rng.choice(NETWORKS)}.{w.rng.randrange(1, 255)}")


def _rejection(w: _World, company: str, domain: str, serial: int, bias: float) -> None:
    """One rejection mail as the gateway records it, then what each candidate does."""
    day = w.clock.now.date()
    message_id = f"<{day:%Y%m%d}.{serial:04d}@ats.{domain}>"
    if w.rng.random() < 0.08:  # an S/MIME-signed or otherwise untouchable mail
        w.ledger.record_rejections([Rejection(company, message_id, ())])
        w.ledger.count(company, "not_injected", day)
        return
    job, channel, stage = w.rng.choice(JOBS), w.rng.choice(CHANNELS), w.rng.choice(STAGES)
    recipients = {_address(w, company) for _ in range(2 if w.rng.random() < 0.15 else 1)}
    pairs = [(r, w.ledger.new_id()) for r in sorted(recipients)]
    offers = w.ledger.record_rejection(company, message_id, pairs, job, channel, stage)
    if w.rng.random() < 0.1:  # the client retried after a 451: no second offer
        w.ledger.record_rejection(company, message_id, pairs, job, channel, stage)
    for offer_id in offers.values():
        offer = w.ledger.offer(offer_id)
        assert offer is not None
        _candidate(w, offer, bias)


def _candidate(w: _World, offer: Offer, bias: float) -> None:
    now = w.clock.now
    if w.rng.random() < 0.03:  # a mail scanner follows the link within seconds
        w.at(now + dt.timedelta(seconds=w.rng.randrange(2, 20)),
             lambda: _accept(w, offer, _client(w, SCANNER)))
        return
    if w.rng.random() > 0.45:
        return  # never opened
    opened = now + HOUR * w.rng.lognormvariate(1.5, 1.2)
    w.at(opened, lambda: w.consents.view(offer))
    choice = w.rng.random()
    decided = opened + dt.timedelta(minutes=w.rng.randrange(1, 30))
    if choice < 0.2 * bias:
        w.at(decided, lambda: _accept(w, offer, _client(w)))
        later = w.rng.random()
        if later < 0.08:
            w.at(decided + HOUR * w.rng.randrange(24, 24 * 30),
                 lambda: _retract(w, offer, "withdraw"))
        elif later < 0.1:
            w.at(decided + HOUR * w.rng.randrange(24, 24 * 60),
                 lambda: _retract(w, offer, "erase"))
    elif choice < 0.2 * bias + 0.12:
        w.at(decided, lambda: w.consents.decline(offer, _notice(w, offer), _client(w)))


def _notice(w: _World, offer: Offer) -> Notice:
    found = w.consents.settings.company(offer.company)
    assert found is not None
    name = found.name
    locale = "en" if offer.job == "Product Designer" else "ja"
    return Notice.of(NOTICE[locale].format(name=name, agency=w.consents.agency(offer).name),
                     locale)


def _accept(w: _World, offer: Offer, client: Client) -> None:
    surname, given = w.rng.choice(SURNAMES), w.rng.choice(GIVEN)
    email = offer.recipient
    if w.rng.random() < 0.04:  # registers with a work address: the company's own domain
        email = f"{given}.{surname}@{offer.company}.example"
    profile = {"name": f"{KANJI[surname]} {KANJI[given]}", "email": email,
               "desired_job": offer.job or "", "desired_location": w.rng.choice(PLACES)}
    if w.rng.random() < 0.5:
        profile["phone"] = f"090-0000-{w.rng.randrange(10000):04d}"
    receipt = w.consents.accept(offer, _notice(w, offer), profile, w.rng.random() < 0.6, client)
    if receipt.review is not None and w.clock.now < START + dt.timedelta(days=DAYS - 7):
        approve = w.rng.random() < 0.3
        w.at(w.clock.now + HOUR * w.rng.randrange(2, 48),
             lambda: _review(w, receipt.id, approve))
    _send_soon(w)


def _retract(w: _World, offer: Offer, what: str) -> None:
    locale = _notice(w, offer).locale
    if what == "withdraw":
        w.consents.withdraw(offer, locale, _client(w))
    else:
        w.consents.erase(offer, locale, _client(w))
    _send_soon(w)


def _review(w: _World, receipt_id: str, approve: bool) -> None:
    w.store.review(receipt_id, approve, by="ops@relay.example")
    _send_soon(w)


def _send_soon(w: _World) -> None:
    w.at(w.clock.now + dt.timedelta(seconds=w.rng.randrange(1, 5)), lambda: _send(w))


def _send(w: _World) -> None:
    """The forwarding worker: every due forward to the agency, which sometimes answers 503."""
    for forward in w.store.claim_due(100, 60):
        if w.rng.random() < 0.05:
            w.store.failed(forward.id, "HTTP 503 from the agency", retry_in=60)
            w.at(w.clock.now + dt.timedelta(seconds=61), lambda: _send(w))
        else:
            w.store.delivered(forward.id, "HTTP 200")


def populate(w: _World) -> None:
    serial = 0
    for offset in range(DAYS):
        day_start = START + dt.timedelta(days=offset)
        if day_start.weekday() >= 5:
            continue
        for company, _, domain, (low, high), bias in COMPANIES:
            for _ in range(w.rng.randint(low, high)):
                serial += 1
                # Office hours in Japan (UTC+9): 00:00 to 09:00 UTC.
                when = day_start + dt.timedelta(minutes=w.rng.randrange(0, 9 * 60))
                w.at(when, functools.partial(_rejection, w, company, domain, serial, bias))
            if w.rng.random() < 0.3:
                w.at(day_start + 10 * HOUR,
                     functools.partial(_count_unmarked, w, company, day_start.date()))
    # The company's HR uses its first free referral one afternoon in October.
    w.at(dt.datetime(2026, 10, 20, 5, 0, tzinfo=dt.UTC),
         lambda: _redeem(w, "acme", "2026年10月の中途採用（経理）に利用"))
    # Then it asks the agency for the next one (SPEC 11), which the agency fulfils.
    asked = dt.datetime(2026, 11, 10, 2, 0, tzinfo=dt.UTC)
    w.at(asked, lambda: _request(w, "acme", "営業職の候補者を1名"))
    w.at(asked + 7 * 24 * HOUR, lambda: _fulfil(w, "acme"))
    w.run()


def _count_unmarked(w: _World, company: str, day: dt.date) -> None:
    w.ledger.count(company, "unmarked_rejections", day)


def _redeem(w: _World, company: str, note: str) -> None:
    w.book.redeem(company, by="hr@acme.example", note=note)


def _request(w: _World, company: str, note: str) -> None:
    Referrals(w.ledger).request(company, "default", "hr@acme.example", note,
                                company_name=company)


def _fulfil(w: _World, company: str) -> None:
    referrals = Referrals(w.ledger)
    for asked in referrals.requests(company):
        referrals.settle_request(asked.id, asked.agency, "fulfilled", "2名を紹介しました")


def generate(out: Path, seed: int = SEED) -> None:
    """Write the example ledger to ``out``, replacing any file there."""
    rng = random.Random(seed)
    clock = _Clock(START)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(Path(tmp))
        with open_configured(settings, clock=clock,
                             new_id=lambda: _random_id(rng)) as ledger:
            consents = Consents(settings, ConsentLedger(ledger))
            populate(_World(ledger, consents, Book(ledger), rng, clock))
            ledger.save_copy(out)


def _random_id(rng: random.Random) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(rng.choice(alphabet) for _ in range(16))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m career_relay.example_ledger OUT", file=sys.stderr)
        return 2
    generate(Path(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
