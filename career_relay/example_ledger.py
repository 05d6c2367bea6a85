"""Generate ``ledger.db.example``: a small, realistic ledger built through the real migrations.

    python -m career_relay.example_ledger ledger.db.example

Seeded, with a fake clock and seeded offer ids, so the same code always
writes the same rows; ``tests/test_ledger.py`` regenerates it and compares the
schema and the rows with the committed file.  Every address is at a reserved
example domain (RFC 2606, RFC 6761): the file holds no real person.
"""

from __future__ import annotations

import datetime as dt
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from career_relay.ledger import Ledger, open_ledger

SEED = 2026
START = dt.datetime(2026, 4, 1, 0, 0, tzinfo=dt.UTC)
DAYS = 21

# (company id, its own domain, rejection mails per working day: low, high)
COMPANIES = (
    ("acme", "acme.example", (1, 4)),
    ("kumo", "kumo.example", (0, 2)),
    ("hoshi", "hoshi.example", (0, 1)),
)
JOBS = ("バックエンドエンジニア", "法人営業", "経理", "Product Designer", "カスタマーサクセス")
CHANNELS = ("自社サイト", "求人媒体", "エージェント", "リファラル")
STAGES = ("書類選考", "一次面接", "二次面接", "最終面接")
SURNAMES = ("sato", "suzuki", "takahashi", "tanaka", "ito", "watanabe", "yamamoto", "nakamura")
GIVEN = ("haruto", "yui", "sota", "hina", "riku", "mei", "kaito", "aoi")
MAIL_DOMAINS = ("mail.example", "example.jp", "example.com", "example.net")


@dataclass
class _Clock:
    now: dt.datetime

    def __call__(self) -> dt.datetime:
        return self.now


def _address(rng: random.Random) -> str:
    name = f"{rng.choice(GIVEN)}.{rng.choice(SURNAMES)}{rng.randrange(1, 100)}"
    return f"{name}@{rng.choice(MAIL_DOMAINS)}"


def _offer_id(rng: random.Random) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(rng.choice(alphabet) for _ in range(16))


def _one_rejection(
    ledger: Ledger, rng: random.Random, clock: _Clock, company: str, domain: str, serial: int
) -> None:
    """One rejection mail as the gateway will record it: counted, then an offer per outsider."""
    day = clock.now.date()
    ledger.count(company, "rejections", day)
    message_id = f"<{day:%Y%m%d}.{serial:04d}@ats.{domain}>"
    if rng.random() < 0.08:  # an S/MIME-signed or otherwise untouchable mail
        ledger.count(company, "not_injected", day)
        return
    job, channel, stage = rng.choice(JOBS), rng.choice(CHANNELS), rng.choice(STAGES)
    for _ in range(2 if rng.random() < 0.15 else 1):
        recipient = _address(rng)
        ledger.record_offer(company, message_id, recipient, job, channel, stage)
        if rng.random() < 0.1:  # the client retried after a 451: no second offer
            ledger.record_offer(company, message_id, recipient, job, channel, stage)


def populate(ledger: Ledger, rng: random.Random, clock: _Clock) -> None:
    serial = 0
    for offset in range(DAYS):
        day_start = START + dt.timedelta(days=offset)
        if day_start.weekday() >= 5:
            continue
        for company, domain, (low, high) in COMPANIES:
            for _ in range(rng.randint(low, high)):
                serial += 1
                # Office hours in Japan (UTC+9): 00:00 to 09:00 UTC.
                clock.now = day_start + dt.timedelta(minutes=rng.randrange(0, 9 * 60))
                _one_rejection(ledger, rng, clock, company, domain, serial)
            if rng.random() < 0.3:
                ledger.count(company, "unmarked_rejections", day_start.date())


def generate(out: Path, seed: int = SEED) -> None:
    """Write the example ledger to ``out``, replacing any file there."""
    rng = random.Random(seed)
    clock = _Clock(START)
    out.unlink(missing_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        open_ledger(Path(tmp) / "ledger.db", clock=clock, new_id=lambda: _offer_id(rng)) as ledger,
    ):
        populate(ledger, rng, clock)
        ledger.save_copy(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m career_relay.example_ledger OUT", file=sys.stderr)
        return 2
    generate(Path(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
