"""The consent site under a flood of wrong admin logins, beside the same site at rest.

Run as::

    .venv/bin/python bench/login_flood_bench.py [--flood 200] [--concurrency 20] [--seconds 8]

A real ``career-relay site`` process (its own configuration, SQLite ledger,
one offer and two admin logins, in a temporary directory). Two phases in one
run, each ``--seconds`` long at least:

1. **At rest** (the baseline): a candidate's browser fetches the consent page
   over and over on one kept-alive connection, and halfway through the
   company's admin logs in from another address (127.0.0.2).
2. **Under a flood**: the same, while ``--flood`` wrong logins for that same
   admin account come from 127.0.0.1, ``--concurrency`` at a time (each
   fetches the form for a fresh nonce, then posts a wrong password).

Printed for each phase: the candidate page's median and 99th percentile
latency, the admin's login time and answer (303 is success), and for the
flood the answers it got (403: a password checked and refused; 429: refused
before any check because the address must wait). What SPEC 6 asks: the flood
neither slows the candidate pages nor locks the owner out. No pass/fail on
timing: read the figures beside the baseline.

Everything is on 127.0.0.1/127.0.0.2 (loopback) and every process is stopped
on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.site_bench import (  # noqa: E402 - sys.path above
    LOOPBACK,
    PHONE_UA,
    BenchError,
    cpu_seconds,
    prepare,
    started,
)
from career_relay.ledger import open_ledger  # noqa: E402
from career_relay.ledger.admin_users import AdminUsers  # noqa: E402

ADMIN = "hr@acme.example"
PASSWORD = "the right password, long enough"
OWNER_ADDRESS = "127.0.0.2"  # the admin's own machine: another address on loopback
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def log(text: str) -> None:
    print(f"[login-flood] {text}", file=sys.stderr, flush=True)


@dataclass
class Phase:
    name: str
    page_ms: list[float]
    owner_ms: float
    owner_status: int
    flood: collections.Counter[int]
    flood_s: float
    cpu_s: float

    def row(self) -> str:
        pages = sorted(self.page_ms)
        p99 = pages[min(len(pages) - 1, int(len(pages) * 0.99))]
        flood = ", ".join(f"{n}x{code}" for code, n in sorted(self.flood.items())) or "-"
        return (f"{self.name:<12} {len(pages):>7} {statistics.median(pages):>9.2f} "
                f"{p99:>9.2f} {self.owner_ms:>11.1f} {self.owner_status:>6}  "
                f"{self.cpu_s:>6.2f}  {flood} ({self.flood_s:.1f} s)")


async def login(session: aiohttp.ClientSession, base: str, password: str) -> int:
    async with session.get(f"{base}/admin/login") as page:
        found = CSRF.search(await page.text())
    if found is None:
        raise BenchError("the login page has no nonce")
    async with session.post(f"{base}/admin/login", allow_redirects=False,
                            data={"csrf": found.group(1), "email": ADMIN,
                                  "password": password}) as reply:
        await reply.read()
        return reply.status


def _session(address: str | None = None) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(local_addr=(address, 0) if address else None)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True),
                                 headers={"User-Agent": PHONE_UA})


async def candidate(url: str, stop: asyncio.Event, out: list[float]) -> None:
    async with _session() as session:
        while not stop.is_set():
            started_at = time.perf_counter()
            async with session.get(url) as reply:
                await reply.read()
                if reply.status != 200:
                    raise BenchError(f"the consent page answered {reply.status}")
            out.append(1000 * (time.perf_counter() - started_at))


async def flood(base: str, count: int, concurrency: int) -> collections.Counter[int]:
    answers: collections.Counter[int] = collections.Counter()
    left = iter(range(count))

    async def one_client() -> None:
        async with _session() as session:
            for i in left:
                answers[await login(session, base, f"wrong guess {i}")] += 1

    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return answers


async def phase(name: str, base: str, page_url: str, pid: int, args: argparse.Namespace,
                flood_count: int) -> Phase:
    stop, pages = asyncio.Event(), []
    cpu_before = cpu_seconds(pid)
    reader = asyncio.create_task(candidate(page_url, stop, pages))
    began = time.monotonic()
    flooding = asyncio.create_task(flood(base, flood_count, args.concurrency))
    await asyncio.sleep(min(1.0, args.seconds / 4))  # the flood is under way
    async with _session(OWNER_ADDRESS) as owner:
        t0 = time.perf_counter()
        status = await login(owner, base, PASSWORD)
        owner_ms = 1000 * (time.perf_counter() - t0)
    answers = await flooding
    flood_s = time.monotonic() - began
    await asyncio.sleep(max(0.0, args.seconds - (time.monotonic() - began)))
    stop.set()
    await reader
    return Phase(name, pages, owner_ms, status, answers, flood_s if flood_count else 0.0,
                 cpu_seconds(pid) - cpu_before)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood", type=int, default=200, help="wrong logins in the flood")
    parser.add_argument("--concurrency", type=int, default=20, help="flood logins in flight")
    parser.add_argument("--seconds", type=float, default=8.0, help="least length of a phase")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> list[Phase]:
    workdir = Path(tempfile.mkdtemp(prefix="login-flood-"))
    try:
        prepared = prepare(workdir, offers=0)
        with open_ledger(prepared.ledger) as ledger:
            AdminUsers(ledger).add(ADMIN, PASSWORD, "acme")
        base = f"http://{LOOPBACK}:{prepared.site_port}"
        argv = [str(REPO_ROOT / ".venv" / "bin" / "career-relay"), "site", "--config",
                str(prepared.config)]
        with started(argv, workdir / "site.log", f"{base}/healthz") as site:
            rest = await phase("at rest", base, prepared.page_url, site.pid, args, 0)
            log(rest.row())
            flooded = await phase("flood", base, prepared.page_url, site.pid, args, args.flood)
            log(flooded.row())
        return [rest, flooded]
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    phases = asyncio.run(run(args))
    print(f"{'phase':<12} {'pages':>7} {'p50 ms':>9} {'p99 ms':>9} {'owner ms':>11} "
          f"{'owner':>6}  {'CPU s':>6}  flood answers")
    for p in phases:
        print(p.row())
    return 0


if __name__ == "__main__":
    sys.exit(main())
