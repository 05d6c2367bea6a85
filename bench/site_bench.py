"""Throughput of the consent site next to a bare aiohttp handler, on loopback.

Run as::

    .venv/bin/python bench/site_bench.py [--duration 10] [--connections 50] [--offers 2000]

(``make bench-site`` installs wrk and runs it with the defaults.)

Two measurements, each against a real ``career-relay site`` process with its
own configuration, SQLite ledger and signing key in a temporary directory:

1. **GET of the consent page.** ``wrk`` (``--connections`` connections,
   ``--threads`` threads, ``--duration`` seconds, after a warm-up of
   ``--warmup`` seconds) fetches one offer's page ``/c/{token}`` (a valid
   token, the Japanese page with its notice, form and a fresh CSRF nonce and
   cookie each time, since wrk sends no cookie), and in the same run, with
   the same wrk settings, a bare aiohttp handler returning a fixed small page
   from a separate process on the same machine (the same uvloop, no access
   log, no middleware). The ratio is consent page / bare; the goal is 0.5.
   A run counts only if every response was a 2xx and no socket error occurred.
2. **POST of an accept.** ``--offers`` offers are created in the ledger
   beforehand; each page is fetched once (not timed) to get its CSRF nonce,
   with one cookie shared by all. Then an aiohttp client (on uvloop) posts
   one accept per offer with ``--concurrency`` requests in flight and a
   phone's user agent (a scanner-like one would be held for review), timing
   from the first request until the last 303. Each accept writes a receipt,
   a profile, a forward and its outbox row in one SQLite transaction. Afterwards
   the ledger must hold exactly one accept receipt per offer posted, none
   held for review, and one consent forward each. The forwards go to a
   stand-in agency (the bare process answers ``POST /forwards`` with 200) if
   the site runs the forwarding worker.

Both use ``site.review_window = 0``, so nothing is held. The CPU seconds the
site process used during each measurement are read from /proc. The load
generators share the machine's CPUs with the servers: compare figures from
the same run only.

Everything listens on 127.0.0.1 only and every process started here is
stopped on the way out (``--keep`` leaves the temporary directory).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from career_relay.ledger import Ledger, Rejection, open_configured  # noqa: E402 - sys.path
from career_relay.settings import load  # noqa: E402
from career_relay.tokens import LinkSigner  # noqa: E402

LOOPBACK = "127.0.0.1"
WRK = "wrk"
SIGNING_KEY = "bench-secret-0123456789abcdef"
WEBHOOK_SECRET = "bench-webhook-secret"
COMPANY = "acme"
GOAL = 0.5  # the consent page at >= 0.5 x a bare aiohttp handler
PHONE_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
CSRF_INPUT = re.compile(r"<input\b[^>]*\bname=\"csrf\"[^>]*>")
VALUE = re.compile(r"\bvalue=\"([^\"]*)\"")
CLK_TCK = os.sysconf("SC_CLK_TCK")
BARE_PAGE = ("<!doctype html><html lang=\"ja\"><head><meta charset=\"utf-8\">"
             "<title>bare</title></head><body><h1>こんにちは</h1>"
             "<p>aiohttp の最小のページです。</p></body></html>")


class BenchError(RuntimeError):
    """A run could not be completed or its result failed a check."""


def log(text: str) -> None:
    print(f"[site-bench] {text}", file=sys.stderr, flush=True)


# -- processes ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, process: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"process exited with status {process.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{url} did not answer within {timeout}s")


@contextlib.contextmanager
def started(argv: list[str], log_path: Path, ready_url: str) -> Iterator[subprocess.Popen[Any]]:
    """A child in a session of its own, stopped (its group only) on the way out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREER_RELAY_")}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                   cwd=log_path.parent, start_new_session=True)
    try:
        try:
            wait_for_http(ready_url, process)
        except BenchError as exc:
            raise BenchError(f"{exc}\n--- {log_path} ---\n{tail(log_path)}") from None
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(v) for v in fields[11:13]) / CLK_TCK  # fields 14 and 15: utime, stime


# -- the bare server (this same file, run with --serve-bare PORT) -----------------------


def serve_bare(port: int) -> int:
    """A fixed small page on GET /; POST /forwards answers 200 (the stand-in agency);
    POST /c/{token} reads the form and answers 303 to /c/{token}/done, as an accept does
    (the baseline of bench/backends_bench.py's POSTs)."""
    import uvloop
    from aiohttp import web

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=BARE_PAGE, content_type="text/html", charset="utf-8")

    async def forwards(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"status": "received"})

    async def decide(request: web.Request) -> web.Response:
        await request.post()
        raise web.HTTPSeeOther(f"{request.path}/done")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_post("/forwards", forwards)
    app.router.add_post("/c/{token}", decide)
    uvloop.install()
    web.run_app(app, host=LOOPBACK, port=port, access_log=None, print=None)
    return 0


# -- the site under test ------------------------------------------------------------------


@dataclass
class Prepared:
    config: Path
    ledger: Path
    site_port: int
    bare_port: int
    page_url: str  # the consent page wrk fetches
    post_urls: list[str]  # one offer each, for the POST run
    ledger_url: str | None = None  # the ledger is in PostgreSQL (ledger.url), not the file

    def open_ledger(self) -> Ledger:
        """The site's ledger, opened as the site opens it (its hash key, file or URL)."""
        return open_configured(load(self.config))


def toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


def prepare(workdir: Path, offers: int, ledger_url: str | None = None,
            bare_port: int | None = None) -> Prepared:
    """The configuration and ``offers + 1`` offers (the first for the GET run); with
    ``ledger_url`` the ledger is in that PostgreSQL database (``ledger.url``)."""
    site_port = free_port()
    while bare_port is None or bare_port == site_port:
        bare_port = free_port()
    public_url = f"http://{LOOPBACK}:{site_port}"
    ledger_path = workdir / "ledger.db"
    config = workdir / "career-relay.toml"
    config.write_text(
        "[gateway]\n"
        f"listen = {toml_str(f'{LOOPBACK}:{free_port()}')}\n"
        "\n[queue]\n"
        f"dir = {toml_str(str(workdir / 'spool'))}\n"
        "\n[site]\n"
        f"listen = {toml_str(f'{LOOPBACK}:{site_port}')}\n"
        f"metrics_listen = {toml_str(f'{LOOPBACK}:{free_port()}')}\n"
        f"public_url = {toml_str(public_url)}\n"
        "review_window = 0\n"
        "\n[ledger]\n"
        f"path = {toml_str(str(ledger_path))}\n"
        + (f"url = {toml_str(ledger_url)}\n" if ledger_url else "")
        + "\n[secrets]\n"
        f"signing_keys = [{toml_str(SIGNING_KEY)}]\n"
        "\n[agency]\n"
        f"privacy_url = {toml_str(f'http://{LOOPBACK}:{bare_port}/privacy')}\n"
        f"webhook_url = {toml_str(f'http://{LOOPBACK}:{bare_port}/forwards')}\n"
        f"webhook_secret = {toml_str(WEBHOOK_SECRET)}\n"
        "\n[[companies]]\n"
        f"id = {toml_str(COMPANY)}\n"
        'name = "株式会社アクメ"\n'
        'domains = ["acme.example"]\n',
        encoding="utf-8")
    settings = load(config)
    signer = LinkSigner.from_settings(settings)
    urls: list[str] = []
    with open_configured(settings) as ledger:  # as the site opens it: the same hash key
        for first in range(0, offers + 1, 500):  # 500 offers a transaction
            batch = [(f"candidate{i}@example.net", ledger.new_id())
                     for i in range(first, min(first + 500, offers + 1))]
            ledger.record_rejections([Rejection(
                COMPANY, f"<rejection-{first}@acme.example>", tuple(batch),
                job="バックエンドエンジニア", stage="一次面接", counters=())])
            urls += [f"{public_url}/c/{signer.token(oid)}" for _, oid in batch]
    return Prepared(config, ledger_path, site_port, bare_port, urls[0], urls[1:], ledger_url)


# -- GET: wrk -----------------------------------------------------------------------------


@dataclass
class WrkResult:
    target: str
    requests: int
    seconds: float
    rate: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    non_2xx: int
    socket_errors: int
    server_cpu_seconds: float | None = None  # of the process serving it, during the run

    @property
    def cpu_per_request_us(self) -> float | None:
        if self.server_cpu_seconds is None or not self.requests:
            return None
        return self.server_cpu_seconds / self.requests * 1e6


_DURATION = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _DURATION[unit]


def parse_wrk(target: str, output: str) -> WrkResult:
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+),", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if done is None or rate is None:
        raise BenchError(f"cannot read wrk's output:\n{output}")
    seconds = float(done.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[done.group(3)]
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", output, re.MULTILINE))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)
    return WrkResult(
        target, int(done.group(1)), seconds, float(rate.group(1)),
        _ms(percentiles["50"]) if "50" in percentiles else None,
        _ms(percentiles["99"]) if "99" in percentiles else None,
        int(non_2xx.group(1)) if non_2xx else 0,
        sum(int(n) for n in errors.groups()) if errors else 0)


def run_wrk(target: str, url: str, args: argparse.Namespace, seconds: float,
            server_pid: int | None = None) -> WrkResult:
    argv = [WRK, f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s",
            "--latency", "-H", f"User-Agent: {PHONE_UA}", url]
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    result = parse_wrk(target, done.stdout)
    if server_pid:
        result.server_cpu_seconds = cpu_seconds(server_pid) - cpu_before
    if result.non_2xx or result.socket_errors:
        raise BenchError(f"{target}: {result.non_2xx} non-2xx responses, "
                         f"{result.socket_errors} socket errors:\n{done.stdout}")
    return result


# -- POST: an aiohttp client ----------------------------------------------------------------


@dataclass
class PostResult:
    offers: int
    seconds: float
    rate: float
    latency_p50_ms: float
    latency_p99_ms: float
    site_cpu_seconds: float
    accept_receipts: int
    offers_with_one_accept: int
    held_for_review: int
    consent_forwards: int
    forwards_delivered: int
    server_cpu_seconds: float | None = None  # of another server (``run_posts``'s probe)


def _form_nonce(html: str) -> str:
    tag = CSRF_INPUT.search(html)
    value = VALUE.search(tag.group(0)) if tag else None
    if value is None:
        raise BenchError("no csrf input on the consent page")
    return value.group(1)


async def _fetch_nonces(urls: list[str], cookie: str, concurrency: int) -> list[str]:
    import aiohttp

    nonces = [""] * len(urls)
    queue = iter(enumerate(urls))
    headers = {"User-Agent": PHONE_UA, "Cookie": cookie}
    async with aiohttp.ClientSession(headers=headers) as session:
        async def worker() -> None:
            for i, url in queue:
                async with session.get(url) as response:
                    if response.status != 200:
                        raise BenchError(f"GET {url}: {response.status}")
                    nonces[i] = _form_nonce(await response.text())

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return nonces


async def _post_accepts(urls: list[str], nonces: list[str], cookie: str,
                        concurrency: int) -> tuple[float, list[float]]:
    import aiohttp

    latencies: list[float] = []
    queue = iter(enumerate(urls))
    headers = {"User-Agent": PHONE_UA, "Cookie": cookie}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        async def worker() -> None:
            for i, url in queue:
                form = {"csrf": nonces[i], "lang": "ja", "decision": "accept", "agree": "yes",
                        "share_application": "yes", "name": f"候補者 {i}",
                        "email": f"candidate{i + 1}@example.net", "phone": "090-1234-5678",
                        "desired_job": "バックエンドエンジニア", "desired_location": "東京",
                        "note": "よろしくお願いします。"}
                started = time.perf_counter()
                async with session.post(url, data=form, allow_redirects=False) as response:
                    await response.read()
                    location = response.headers.get("Location", "")
                    if response.status != 303 or not location.startswith(
                            urllib.parse.urlsplit(url).path + "/done"):
                        raise BenchError(f"POST {url}: {response.status} {location}")
                latencies.append(time.perf_counter() - started)

        begin = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - begin, latencies


def ledger_checks(prepared: Prepared, offer_ids: list[str]) -> dict[str, int]:
    """What the ledger holds for the offers posted (others may have been posted before)."""
    posted = set(offer_ids)
    with prepared.open_ledger() as ledger, ledger.read() as db:
        receipts = [(decision, review) for offer, decision, review in db.execute(
            "SELECT offer_id, decision, review FROM receipts").fetchall() if offer in posted]
        accepts = collections.Counter(offer for offer, decision in db.execute(
            "SELECT offer_id, decision FROM receipts").fetchall()
            if offer in posted and decision == "accept")
        forwards = [(kind, delivered) for offer, kind, delivered in db.execute(
            "SELECT offer_id, kind, EXISTS (SELECT 1 FROM forward_events e"
            " WHERE e.forward_id = f.id AND e.event = 'delivered') FROM forwards f"
        ).fetchall() if offer in posted]
    return {
        "accept_receipts": sum(1 for decision, _ in receipts if decision == "accept"),
        "offers_with_one_accept": sum(1 for n in accepts.values() if n == 1),
        "held_for_review": sum(1 for _, review in receipts if review is not None),
        "consent_forwards": sum(1 for kind, _ in forwards if kind == "consent"),
        "forwards_delivered": sum(1 for _, delivered in forwards if delivered),
    }


def offer_ids(prepared: Prepared, urls: list[str]) -> list[str]:
    signer = LinkSigner.from_settings(load(prepared.config))
    return [signer.offer_id(url.rsplit("/", 1)[1]) for url in urls]


def run_posts(prepared: Prepared, args: argparse.Namespace, site_pid: int,
              urls: list[str] | None = None,
              server_cpu: Callable[[], float] | None = None) -> PostResult:
    """One accept for each of ``urls`` (default: every offer prepared for the POST run);
    ``server_cpu`` reads another server's CPU seconds (PostgreSQL's) over the same time."""
    import uvloop

    urls = prepared.post_urls if urls is None else urls
    cookie = f"cr_csrf={secrets.token_hex(16)}"
    log(f"fetching {len(urls)} pages for their CSRF nonces (not timed)")
    nonces = uvloop.run(_fetch_nonces(urls, cookie, args.concurrency))
    log(f"posting {len(urls)} accepts, {args.concurrency} in flight")
    cpu_before = cpu_seconds(site_pid)
    server_before = server_cpu() if server_cpu else 0.0
    seconds, latencies = uvloop.run(_post_accepts(urls, nonces, cookie, args.concurrency))
    cpu = cpu_seconds(site_pid) - cpu_before
    server = server_cpu() - server_before if server_cpu else None
    checks = ledger_checks(prepared, offer_ids(prepared, urls))
    posted = len(urls)
    quantiles = statistics.quantiles(latencies, n=100)
    result = PostResult(posted, seconds, posted / seconds, quantiles[49] * 1000,
                        quantiles[98] * 1000, cpu, **checks, server_cpu_seconds=server)
    if not (result.accept_receipts == result.offers_with_one_accept == posted
            == result.consent_forwards) or result.held_for_review:
        raise BenchError(f"the ledger does not hold one accept per offer posted: {checks}")
    return result


# -- the report ---------------------------------------------------------------------------


def median_run(results: list[WrkResult]) -> WrkResult:
    return sorted(results, key=lambda r: r.rate)[len(results) // 2]


def print_report(pages: list[WrkResult], bares: list[WrkResult], post: PostResult | None,
                 args: argparse.Namespace) -> dict[str, Any]:
    page, bare = median_run(pages), median_run(bares)
    ratio = page.rate / bare.rate
    cpu_ratio = ((bare.cpu_per_request_us or 0) / page.cpu_per_request_us
                 if page.cpu_per_request_us else None)
    lines = [
        "",
        f"GET, wrk -t{args.threads} -c{args.connections} -d{args.duration}s "
        f"(median of {args.repeat})",
        f"  {'target':<26} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU/req':>9}  runs (req/s)",
    ]
    for label, result, runs in (("bare aiohttp handler", bare, bares),
                                ("consent page /c/{token}", page, pages)):
        lines.append(
            f"  {label:<26} {result.rate:>8,.0f} {result.latency_p50_ms or 0:>7.1f} "
            f"{result.latency_p99_ms or 0:>7.1f} {result.cpu_per_request_us or 0:>6,.0f} us  "
            f"{' / '.join(f'{r.rate:,.0f}' for r in runs)}")
    lines += [f"  ratio consent / bare: {ratio:.2f} (goal >= {GOAL}: "
              f"{'met' if ratio >= GOAL else 'NOT met'})"
              + (f"; by CPU per request: {cpu_ratio:.2f}" if cpu_ratio else "")]
    if post is not None:
        lines += [
            "",
            f"POST accept, {post.offers} distinct offers, {args.concurrency} in flight",
            f"  {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'site CPU/req':>13}",
            f"  {post.rate:>10,.1f} {post.latency_p50_ms:>8.1f} {post.latency_p99_ms:>8.1f} "
            f"{post.site_cpu_seconds / post.offers * 1e6:>10,.0f} us",
            f"  ledger: {post.accept_receipts} accept receipts, {post.offers_with_one_accept} "
            f"offers with exactly one, {post.held_for_review} held for review, "
            f"{post.consent_forwards} consent forwards "
            f"({post.forwards_delivered} delivered by the end)",
        ]
    print("\n".join(lines))
    return {"get": {"bare": asdict(bare), "page": asdict(page), "ratio": ratio,
                    "cpu_ratio": cpu_ratio,
                    "runs": {"bare": [r.rate for r in bares], "page": [r.rate for r in pages]}},
            "post": asdict(post) if post else None,
            "settings": {k: v for k, v in vars(args).items() if k != "career_relay"}}


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per target")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--repeat", type=int, default=1, help="GET runs per target; medians")
    parser.add_argument("--offers", type=int, default=2000, help="offers posted (0: no POST run)")
    parser.add_argument("--concurrency", type=int, default=50, help="POSTs in flight")
    parser.add_argument("--json", action="store_true", help="also print a JSON summary line")
    parser.add_argument("--career-relay", type=Path,
                        default=REPO_ROOT / ".venv" / "bin" / "career-relay",
                        help="the career-relay executable")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("duration", "connections", "threads", "repeat", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.threads > args.connections:
        parser.error("wrk needs at least one connection per thread")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_bare:
        return serve_bare(args.serve_bare)
    if shutil.which(WRK) is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (make bench-site)")
    if not os.access(args.career_relay, os.X_OK):
        raise SystemExit(f"{args.career_relay} is not there (pip install -e . in the venv?)")
    workdir = Path(tempfile.mkdtemp(prefix="site-bench-"))
    try:
        log(f"working in {workdir}; creating {args.offers + 1} offers")
        prepared = prepare(workdir, args.offers)
        bare_argv = [sys.executable, str(Path(__file__).resolve()),
                     "--serve-bare", str(prepared.bare_port)]
        site_argv = [str(args.career_relay), "site", "--config", str(prepared.config)]
        bare_url = f"http://{LOOPBACK}:{prepared.bare_port}/"
        with started(bare_argv, workdir / "bare.log", bare_url) as bare, \
                started(site_argv, workdir / "site.log",
                        f"http://{LOOPBACK}:{prepared.site_port}/healthz") as site:
            pages: list[WrkResult] = []
            bares: list[WrkResult] = []
            if args.warmup:
                log("warming up both")
                run_wrk("bare", bare_url, args, args.warmup)
                run_wrk("page", prepared.page_url, args, args.warmup)
            for run in range(1, args.repeat + 1):
                log(f"GET run {run}/{args.repeat}: bare, then the consent page")
                bares.append(run_wrk("bare", bare_url, args, args.duration, bare.pid))
                pages.append(run_wrk("page", prepared.page_url, args, args.duration,
                                     site.pid))
            post = run_posts(prepared, args, site.pid) if args.offers else None
        summary = print_report(pages, bares, post, args)
        if args.json:
            print(json.dumps(summary, ensure_ascii=False))
        return 0
    except BenchError as exc:
        log(f"failed: {exc}")
        return 1
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
