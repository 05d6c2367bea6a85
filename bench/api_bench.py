"""API offers per second next to a bare aiohttp route, on loopback (issue 14 item 7).

Run as::

    .venv/bin/python bench/api_bench.py [--duration 10] [--connections 32] [--rounds 3]

(``make bench-api`` runs it with the defaults.)

One ``career-relay site`` process (its own configuration, SQLite ledger and key in a
temporary directory, ``api.rate_limit`` out of the way) takes ``POST /api/v1/offers``:
each request a distinct body (a new recipient, the "application id" as ``message_id``
and as ``Idempotency-Key``, as the guide's script sends them), so each is a new offer
written through the group commit and answered 201 with its link.  In the
same run, with the same client, a bare aiohttp route in a process of its own (uvloop,
no access log, no middleware) reads the same JSON body and answers 201 with a JSON of the
same shape.  The client is one aiohttp session (uvloop) in this process with
``--connections`` keep-alive connections, each sending its next request as soon as the
answer came.  The rounds alternate bare and API after a warm-up of each; the medians
are compared.  The goal: API >= 0.3 x the bare route.

A run counts only if every answer was a 201; afterwards the ledger must hold exactly one
offer (source ``api``) per 201 and ``ledger verify`` must pass.  The load generator
shares the machine's CPUs with the servers: compare figures from the same run only.

Everything listens on 127.0.0.1 and every process started here is stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from relay_bench import cpu_model  # noqa: E402 - sys.path
from site_bench import (  # noqa: E402
    LOOPBACK,
    BenchError,
    cpu_seconds,
    free_port,
    started,
    toml_str,
)

from career_relay.ledger import ApiKeys, Book, open_configured  # noqa: E402
from career_relay.settings import load  # noqa: E402

GOAL = 0.3  # API offers at >= 0.3 x the bare route
SIGNING_KEY = "bench-secret-0123456789abcdef"


def log(text: str) -> None:
    print(f"[api-bench] {text}", file=sys.stderr, flush=True)


# -- the bare server (this same file, run with --serve-bare PORT) -----------------------------


def serve_bare(port: int) -> int:
    """POST /offers: read the JSON body, answer 201 with a JSON shaped like the API's."""
    import uvloop
    from aiohttp import web

    async def offers(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"offer_id": "0123456789abcdef",
                                  "link": f"http://{LOOPBACK}/c/{len(body['recipient'])}",
                                  "expires_at": "2027-01-01T00:00:00Z"}, status=201)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/offers", offers)
    app.router.add_get("/healthz", healthz)
    uvloop.install()
    web.run_app(app, host=LOOPBACK, port=port, access_log=None, print=None)
    return 0


# -- the load ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    target: str
    requests: int
    seconds: float
    cpu: float  # the server's CPU seconds in the round

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


_serial = itertools.count()


async def _load(url: str, key: str, connections: int, seconds: float) -> tuple[int, float]:
    """``connections`` clients posting distinct offers for ``seconds``; (201s, elapsed)."""
    import aiohttp

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    done = 0
    stop = time.monotonic() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.monotonic() < stop:
            n = next(_serial)
            # As the guide's script asks (docs/integrations/ats-api.md): the application's
            # id as message_id and as Idempotency-Key.
            body = json.dumps({"recipient": f"cand{n}@example.net",
                               "message_id": f"application-{n}", "job": "経理",
                               "channel": "求人媒体"})
            async with session.post(url, data=body, headers={
                    **headers, "Idempotency-Key": f"bench-{n}"}) as reply:
                await reply.read()
                if reply.status != 201:
                    raise BenchError(f"{url} answered {reply.status}: {await reply.text()}")
            done += 1

    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.monotonic()
        await asyncio.gather(*(client(session) for _ in range(connections)))
        return done, time.monotonic() - began


def _round(target: str, url: str, key: str, pid: int, args: argparse.Namespace,
           seconds: float) -> Round:
    import uvloop

    before = cpu_seconds(pid)
    count, elapsed = uvloop.run(_load(url, key, args.connections, seconds))
    return Round(target, count, elapsed, cpu_seconds(pid) - before)


# -- the run -----------------------------------------------------------------------------------


def _config(workdir: Path, port: int) -> Path:
    path = workdir / "career-relay.toml"
    path.write_text(
        "[site]\n"
        f"listen = {toml_str(f'{LOOPBACK}:{port}')}\n"
        f"public_url = {toml_str(f'http://{LOOPBACK}:{port}')}\n"
        'metrics_listen = ""\n'
        "[ledger]\n"
        f"path = {toml_str(str(workdir / 'ledger.db'))}\n"
        "[api]\n"
        "rate_limit = 1000000000\n"
        "[secrets]\n"
        f"signing_keys = [{toml_str(SIGNING_KEY)}]\n"
        "[log]\n"
        'level = "warning"\n'
        "[[companies]]\n"
        'id = "acme"\nname = "株式会社アクメ"\ndomains = ["acme.example"]\n',
        encoding="utf-8")
    return path


def run(args: argparse.Namespace) -> int:
    # The children run this checkout's code, whatever the virtualenv has installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    workdir = Path(tempfile.mkdtemp(prefix="api-bench-"))
    try:
        site_port, bare_port = free_port(), free_port()
        while bare_port == site_port:
            bare_port = free_port()
        config = _config(workdir, site_port)
        settings = load(config)
        with open_configured(settings) as ledger:
            key = ApiKeys(ledger).create("acme", "bench")[1]
        site_argv = [sys.executable, "-m", "career_relay", "site", "--config", str(config)]
        bare_argv = [sys.executable, str(Path(__file__).resolve()), "--serve-bare",
                     str(bare_port)]
        api_url = f"http://{LOOPBACK}:{site_port}/api/v1/offers"
        bare_url = f"http://{LOOPBACK}:{bare_port}/offers"
        rounds: list[Round] = []
        with started(site_argv, workdir / "site.log",
                     f"http://{LOOPBACK}:{site_port}/healthz") as site, \
                started(bare_argv, workdir / "bare.log",
                        f"http://{LOOPBACK}:{bare_port}/healthz") as bare:
            log(f"warm-up {args.warmup:g} s each")
            _round("bare", bare_url, key, bare.pid, args, args.warmup)
            _round("api", api_url, key, site.pid, args, args.warmup)
            for n in range(args.rounds):
                for target, url, pid in (("bare", bare_url, bare.pid),
                                         ("api", api_url, site.pid)):
                    found = _round(target, url, key, pid, args, args.duration)
                    log(f"round {n + 1} {target}: {found.rate:,.0f}/s")
                    rounds.append(found)
        made = sum(r.requests for r in rounds if r.target == "api")
        _check(settings, made, rounds)
        _print(rounds, args)
        if args.keep:
            log(f"kept {workdir}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _check(settings: object, made: int, rounds: list[Round]) -> None:
    """Every 201 is one offer of source api (the warm-ups' too), and the chain holds."""
    with open_configured(settings) as ledger:  # type: ignore[arg-type]
        with ledger.read() as conn:
            by_source = dict(conn.execute("SELECT source, COUNT(*) FROM offers"
                                          " GROUP BY source").fetchall())
        _, problem = Book(ledger).verify()
    if set(by_source) != {"api"} or by_source["api"] < made:
        raise BenchError(f"the ledger holds {by_source} after {made} offers timed")
    if problem is not None:
        raise BenchError(f"ledger verify: {problem}")
    log(f"ledger: {by_source['api']:,} api offers (warm-up included), verify ok")


def _print(rounds: list[Round], args: argparse.Namespace) -> None:
    def median(target: str) -> float:
        return statistics.median(r.rate for r in rounds if r.target == target)

    def cpu(target: str) -> float:
        picked = [r for r in rounds if r.target == target]
        return 1e6 * sum(r.cpu for r in picked) / sum(r.requests for r in picked)

    api, bare = median("api"), median("bare")
    ratio = api / bare
    print(f"{'':32}{'req/s':>10}{'CPU us/req':>12}")
    print(f"{'POST /api/v1/offers (201)':32}{api:>10,.0f}{cpu('api'):>12,.0f}")
    print(f"{'bare aiohttp POST (201)':32}{bare:>10,.0f}{cpu('bare'):>12,.0f}")
    print(f"ratio {ratio:.2f} (goal >= {GOAL}): {'ok' if ratio >= GOAL else 'MISSED'}")
    print(f"({args.connections} keep-alive connections, median of {args.rounds} rounds of "
          f"{args.duration:g} s, SQLite, {cpu_model()})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per round")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_bare:
        return serve_bare(args.serve_bare)
    try:
        return run(args)
    except BenchError as exc:
        print(f"api-bench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
