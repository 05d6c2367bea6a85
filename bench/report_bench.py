"""The ledger report on a ledger of 1,000,000 offers (issue 5, docs/performance.md).

Run as::

    .venv/bin/python bench/report_bench.py [--offers 1000000] [--repeat 5] [--rebuild]

(``make bench-report``.)  Two steps:

1. **Build** (cached): a year (2025-12-01 to 2026-11-25) of 20 companies'
   rejections, one of them (``big``) with 30% of the offers, and what the
   candidates did: about 40% of the pages opened, 8% accepted, 5% declined,
   a tenth of the accepts withdrawn, a few erased, 3% of the accepts held as
   a scanner's click and mostly rejected on review, the agency taking every
   other consent forward (a few still in the outbox), the qualified forwards,
   a credit every 10 and a third of the credits redeemed.  Rows go straight
   into the tables in one transaction (the migrations make the schema), and
   the hash-chained entries are computed exactly as ``ledger_chain.append``
   does, in time order, so the file is a real ledger: ``career-relay ledger
   verify`` passes on it (``--verify`` checks).  The file is kept in
   ``bench/.cache/`` under the generator's version; ``--rebuild`` makes it
   again.
2. **Time**: ``career_relay.ledger.reports.report(..., details=True)`` (what
   ``report --format json`` prints) for the big company and for all 20,
   the median of ``--repeat`` runs after a warm-up, on a fresh connection;
   then ``career-relay report --format json`` end to end (a process per run).
   The goals: one company under 200 ms, all companies under 2 s.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import datetime as dt
import hashlib
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from career_relay.ledger import (  # noqa: E402
    Book,
    Rules,
    analytics,
    open_ledger,
    reports,
)
from career_relay.ledger import head as ledger_head  # noqa: E402
from career_relay.ledger.chain import (  # noqa: E402
    GENESIS,
    canonical,
    entry_hash,
    keyed,
    offer_digest,
    row_digest,
)
from career_relay.ledger.outcomes import Outcome, outcome_row  # noqa: E402

GENERATOR_VERSION = 8  # 4: offers, forwards and profiles chained; 5: offers.source;
# 6: the agency's outcomes (0014); 7: outbox.served (0016); 8: outcome_candidates (0017)
CACHE = REPO / "bench" / ".cache"
START = dt.datetime(2025, 12, 1, tzinfo=dt.UTC)
DAYS = 360
SINCE, UNTIL = dt.date(2025, 12, 1), dt.date(2026, 11, 25)
SOURCES = ("relay", "api", "link")
COMPANIES = ["big"] + [f"co{i:02d}" for i in range(1, 20)]
AGENCY = "株式会社サンプル人材"
HASH_KEY = b"bench-hash-key"
GOALS = {"one company": 0.200, "all companies": 2.0}
JOBS = ("バックエンドエンジニア", "法人営業", "経理", "Product Designer", "カスタマーサクセス",
        "データアナリスト", "人事", "SRE")
CHANNELS = ("自社サイト", "求人媒体", "エージェント", "リファラル")
STAGES = ("書類選考", "一次面接", "二次面接", "最終面接")
UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Safari/604.1"
SCANNER = "Mozilla/5.0 (compatible; Proofpoint URL Defense)"


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Chain:
    """Entries in time order, hashed as ``ledger_chain.append`` would have."""

    pending: list[tuple[str, int, str, str, str, dict[str, Any]]] = field(default_factory=list)

    def add(self, created: str, company: str, kind: str, ref: str, body: dict[str, Any]) -> None:
        self.pending.append((created, len(self.pending), company, kind, ref, body))

    def rows(self) -> Iterator[tuple[int, str, str, str, str, str, str, str]]:
        prev = GENESIS
        for seq, (created, _, company, kind, ref, body) in enumerate(sorted(self.pending), 1):
            text = canonical(body)
            digest = entry_hash(seq, created, company, kind, ref, text, prev)
            yield seq, created, company, kind, ref, text, prev, digest
            prev = digest


@dataclass
class _Build:
    rng: random.Random
    rules: Rules
    chain: _Chain = field(default_factory=_Chain)
    tables: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    notices: dict[str, tuple[str, str]] = field(default_factory=dict)  # company -> hash, version

    def id(self, prefix: str = "") -> str:
        return prefix + base64.urlsafe_b64encode(self.rng.randbytes(12)).decode()

    def row(self, table: str, *values: Any) -> None:
        self.tables.setdefault(table, []).append(values)


def build(path: Path, offers: int, seed: int = 1) -> None:
    """A ledger of ``offers`` offers at ``path`` (replaced), through bulk INSERTs."""
    started = time.monotonic()
    path.unlink(missing_ok=True)
    with open_ledger(path):  # the real schema, from the migrations
        pass
    b = _Build(random.Random(seed), Rules(hash_key=HASH_KEY))
    for company in COMPANIES:
        text = f"{company} はあなたの同意に基づき {AGENCY} に情報を提供します。"
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        b.notices[company] = (digest, f"ja-{digest[:12]}")
        b.row("notices", digest, f"ja-{digest[:12]}", "ja", company, text, _stamp(START))
    deliveries = _offers(b, offers)
    _deliver(b, sorted(deliveries))
    _daily_counts(b)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA synchronous = OFF")
    entries = list(b.chain.rows())
    _link_entries(b, entries)
    # Rows in the order the ledger would have written them: rowids grow with time.
    for table, column in (("offers", 4), ("offer_views", 1), ("receipts", 5), ("forwards", 5),
                          ("forward_events", 1)):
        b.tables[table].sort(key=lambda row, c=column: row[c])  # type: ignore[misc]
    with conn:
        conn.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", entries)
        for table, rows in b.tables.items():
            marks = ", ".join("?" * len(rows[0]))
            conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
    conn.execute("PRAGMA journal_mode = WAL")  # no ANALYZE: a production ledger has none
    conn.close()
    last = entries[-1]
    Path(f"{path}.head").unlink(missing_ok=True)
    ledger_head.write(Path(f"{path}.head"), last[0], last[7])  # as the writers leave it
    print(f"built {path.name}: {offers:,} offers, {len(b.chain.pending):,} entries in "
          f"{time.monotonic() - started:.0f} s", file=sys.stderr)


def _offers(b: _Build, count: int) -> list[tuple[str, int, str, str]]:
    """Every offer and what its candidate did; the deliveries, to be run in time order."""
    rng, seen, deliveries = b.rng, {c: [] for c in COMPANIES}, []
    weights = [0.30] + [0.70 / 19] * 19
    cumulative = [sum(weights[: i + 1]) for i in range(len(weights))]
    for serial in range(count):
        company = COMPANIES[min(bisect.bisect(cumulative, rng.random()), 19)]
        created = START + dt.timedelta(days=rng.randrange(DAYS), minutes=rng.randrange(540))
        known = seen[company]
        address = (rng.choice(known) if known and rng.random() < 0.03 else
                   f"c{serial}.{rng.randrange(10**6)}@example.net")
        known.append(address)
        oid = b.id()
        fixed = (oid, company, f"<{serial}@ats.{company}.example>", _stamp(created),
                 rng.choice(JOBS), rng.choice(CHANNELS), rng.choice(STAGES))
        # 5% through the company API, 2% through the company link (SPEC 10), the rest relayed.
        source = rng.choices(SOURCES, (93, 5, 2))[0]
        b.row("offers", *fixed[:3], address, *fixed[3:], None, None, source)
        b.chain.add(fixed[3], company, "offer", oid, {
            "digest": offer_digest(fixed, source), "candidate": b.rules.candidate(address)})
        fate = rng.random()
        if fate >= 0.40:
            continue  # never opened
        viewed = created + dt.timedelta(hours=rng.lognormvariate(1.5, 1.2))
        b.row("offer_views", oid, _stamp(viewed), company)
        decided = viewed + dt.timedelta(minutes=rng.randrange(1, 60))
        if fate < 0.08:
            deliveries += _accept(b, oid, company, address, decided)
        elif fate < 0.13:
            _receipt(b, oid, company, "decline", decided)
    return deliveries


def _receipt(b: _Build, oid: str, company: str, decision: str, when: dt.datetime,
             items: list[str] | None = None, review: str | None = None) -> str:
    rid = b.id("rc_")
    notice_hash, version = b.notices[company] if decision in ("accept", "decline") else (None,
                                                                                       None)
    row = (rid, oid, company, AGENCY, decision, _stamp(when), notice_hash, version, "ja",
           json.dumps(["agency_registration"] if decision == "accept" else []),
           json.dumps(items or []), SCANNER if review else UA, "198.51.100.0/24", review)
    b.row("receipts", *row)
    b.chain.add(row[5], company, "receipt", rid, {"offer": oid, "decision": decision,
                                                  "review": review, "digest": row_digest(row)})
    return rid


def _accept(b: _Build, oid: str, company: str, address: str,
            when: dt.datetime) -> list[tuple[str, int, str, str]]:
    """An accept, its profile and forward, and what becomes of them; the deliveries."""
    rng = b.rng
    review = "scanner" if rng.random() < 0.03 else None
    rid = _receipt(b, oid, company, "accept", when, ["name", "email"], review)
    profile = json.dumps({"name": "候補者", "email": address})
    b.row("profiles", rid, profile, None)
    b.chain.add(_stamp(when), company, "profile", rid, {"data": keyed(HASH_KEY, profile)})
    fid = b.id("fw_")
    _forward(b, (fid, oid, rid, company, "consent", _stamp(when)), '{"type": "consent"}')
    at = when + dt.timedelta(seconds=rng.randrange(1, 30))
    if review is not None:
        if rng.random() < 0.2:  # nobody has looked at it yet
            b.row("outbox", fid, 0, _stamp(when), None, 1, None)  # served: pulls only
            return []
        approve = rng.random() < 0.3
        at = when + dt.timedelta(hours=rng.randrange(1, 48))
        b.row("reviews", rid, "approve" if approve else "reject", "ops", _stamp(at))
        b.chain.add(_stamp(at), company, "review", rid, {"verdict": "approve" if approve
                                                         else "reject", "by": "ops"})
        if not approve:
            b.row("forward_events", fid, _stamp(at), "cancelled", "rejected on review")
            return []
    if at > START + dt.timedelta(days=DAYS - 1) and rng.random() < 0.5:
        b.row("outbox", fid, 0, _stamp(at), None, 0, None)  # still on its way
        return []
    out = [(_stamp(at), 0, fid, address)]
    later = rng.random()
    if later < 0.11:  # withdrawn (a few erased): the agency is told to delete
        when = at + dt.timedelta(days=rng.randrange(1, 60))
        kind, decision = ("erasure", "erase") if later < 0.01 else ("withdrawal", "withdraw")
        wid = _receipt(b, oid, company, decision, when)
        wfid = b.id("fw_")
        _forward(b, (wfid, oid, wid, company, kind, _stamp(when)), '{"type": "delete"}')
        out.append((_stamp(when + dt.timedelta(seconds=5)), 1, wfid, address))
    return out


def _forward(b: _Build, fixed: tuple[str, ...], payload: str) -> None:
    b.row("forwards", *fixed, payload, "default")  # forwards.agency (0012)
    b.chain.add(fixed[5], fixed[3], "forward", fixed[0], {
        "digest": row_digest(fixed), "payload": keyed(HASH_KEY, payload)})


def _deliver(b: _Build, deliveries: list[tuple[str, int, str, str]]) -> None:
    """The agency takes each forward: provision records, qualification and credits in order."""
    forwards = {row[0]: row for row in b.tables["forwards"]}
    receipts = {row[0]: row for row in b.tables["receipts"]}
    qualified: dict[str, list[str]] = {c: [] for c in COMPANIES}
    candidates: set[tuple[str, str]] = set()
    for when, _, fid, address in deliveries:
        _, oid, rid, company, kind, *_ = forwards[fid]
        b.row("forward_events", fid, when, "delivered", "HTTP 200")
        candidate = b.rules.candidate(address)
        if kind != "consent":
            b.chain.add(when, company, "notice_sent", fid, {"kind": kind, "receipt": rid,
                                                            "candidate": candidate})
            continue
        b.chain.add(when, company, "provision", fid, {
            "receipt": rid, "offer": oid, "agency": AGENCY, "candidate": candidate,
            "items": json.loads(receipts[rid][10])})
        _outcomes(b, fid, company, when)
        if (company, candidate) in candidates:
            continue
        candidates.add((company, candidate))
        done = qualified[company]
        done.append(fid)
        n = len(done)
        b.chain.add(when, company, "qualified", fid, {"n": n, "candidate": candidate})
        b.row("qualified", fid, company, candidate, n, when, 0)
        if n % 10 == 0:
            cid = b.id("cr_")
            b.chain.add(when, company, "credit", cid, {"n": n // 10, "forwards": done[-10:]})
            b.row("credits", cid, company, n // 10, when, json.dumps(done[-10:]), 0)
            if b.rng.random() < 0.33:
                used = (dt.datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ")
                        + dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
                b.chain.add(used, company, "redemption", cid, {"by": "hr", "note": ""})
                b.row("redemptions", cid, company, used, "hr", "", 0)


#: What the agency reports of a delivered consent: (status, days after the delivery, the
#: chance it comes after the one before).  About 60% registered, a quarter of those placed.
_STEPS = (("registered", 2, 0.6), ("interviewing", 10, 0.4), ("placed", 30, 0.5))


def _outcomes(b: _Build, fid: str, company: str, when: str) -> None:
    """The agency's outcomes of one delivered consent, as ``Outcomes.record`` writes them."""
    delivered = dt.datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ")
    steps: list[tuple[str, int]] = []
    if b.rng.random() < 0.05:
        steps.append(("unreachable", 3))
    for status, days, chance in _STEPS:
        if b.rng.random() >= chance:
            if steps and status == "placed":
                steps.append(("not_placed", days))
            break
        steps.append((status, days))
    for status, days in steps:
        moment = delivered + dt.timedelta(days=days)
        made = Outcome(b.id("oc_"), fid, status, moment.date().isoformat(), _stamp(moment))
        fixed = outcome_row(made, company, "default")
        b.chain.add(made.created, company, "outcome", made.id, {
            "digest": row_digest(fixed), "forward": fid, "status": status})
        b.row("outcomes", *fixed, 0)


def _daily_counts(b: _Build) -> None:
    days: dict[tuple[str, str], list[int]] = {}
    for row in b.tables["offers"]:
        days.setdefault((row[1], row[4][:10]), [0, 0, 0])[0] += 1
    for counts in days.values():
        counts[0] = round(counts[0] / 1.1)  # 15% of the mails went to two candidates
        counts[1] = round(counts[0] * 0.08)
        counts[2] = b.rng.randrange(3)
    b.tables["daily_counts"] = [(c, d, *n) for (c, d), n in sorted(days.items())]


def _link_entries(b: _Build, entries: list[tuple[Any, ...]]) -> None:
    """Each qualified forward, credit and redemption names its entry, as written."""
    seqs = {(kind, ref): seq for seq, _, _, kind, ref, *_ in entries}
    for table, kind in (("qualified", "qualified"), ("credits", "credit"),
                        ("redemptions", "redemption"), ("outcomes", "outcome")):
        b.tables[table] = [(*row[:-1], seqs[kind, row[0]]) for row in b.tables.get(table, [])]


# -- timing ---------------------------------------------------------------------------------


def _median(run: Callable[[], object], repeat: int) -> float:
    run()  # warm-up: the pages in the OS cache and SQLite's
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _outcomes_alone(ledger: Any, when: reports.Period) -> object:
    """The part of the report the outcomes add (``outcomes`` and ``analytics``) for big."""
    with ledger.snapshot() as conn:
        found = analytics.candidates(conn, "big", when.since, when.until)
        return analytics.outcomes(found), analytics.analytics(
            conn, "big", when.since, when.until, found, from_data=False)


def measure(path: Path, repeat: int) -> dict[str, float]:
    when = reports.Period(SINCE, UNTIL)
    results = {}
    with open_ledger(path) as ledger:
        for name, companies in (("one company", ["big"]), ("all companies", COMPANIES)):
            results[name] = _median(
                lambda c=companies: reports.report(ledger, c, when, 10, details=True), repeat)
        results["  of which outcomes"] = _median(
            lambda: _outcomes_alone(ledger, when), repeat)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "career-relay.toml"
        config.write_text(f'[ledger]\npath = "{path}"\n[secrets]\nsigning_keys = ["bench"]\n'
                          + "".join(f'[[companies]]\nid = "{c}"\nname = "{c}"\n'
                                    f'domains = ["{c}.example"]\n'
                                    for c in COMPANIES), encoding="utf-8")
        command = [sys.executable, "-m", "career_relay", "report", "--format", "json",
                   "--since", SINCE.isoformat(), "--until", UNTIL.isoformat(),
                   "--config", str(config)]
        for name, extra in (("one company, command", ["--company", "big"]),
                            ("all companies, command", [])):
            results[name] = _median(lambda e=extra: subprocess.run(  # type: ignore[misc]
                command + e, check=True, capture_output=True, cwd=REPO), repeat)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offers", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true", help="build the ledger again")
    parser.add_argument("--verify", action="store_true", help="run ledger verify on it")
    args = parser.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"ledger-{args.offers}-v{GENERATOR_VERSION}.db"
    if args.rebuild or not path.exists():
        build(path, args.offers)
    if args.verify:
        with open_ledger(path, hash_key=HASH_KEY) as ledger:
            started = time.monotonic()
            count, problem = Book(ledger, Rules(hash_key=HASH_KEY)).verify()
        print(f"verify: {count:,} entries, {problem or 'ok'} "
              f"({time.monotonic() - started:.1f} s)")
        if problem:
            return 1
    results = measure(path, args.repeat)
    print(f"{'report --format json':28} {'median':>10} {'goal':>8}")
    for name, seconds in results.items():
        goal = GOALS.get(name.removesuffix(", command"))
        mark = "" if goal is None else ("ok" if seconds < goal else "MISSED")
        shown = f"{goal * 1000:6.0f} ms" if goal else " " * 9
        print(f"{name:28} {seconds * 1000:8.0f} ms {shown}  {mark}")
    print(f"({args.offers:,} offers, {os.cpu_count()} CPUs, median of {args.repeat} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
