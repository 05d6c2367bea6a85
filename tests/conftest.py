"""Shared fixtures: real sockets on loopback, real files, no mocks of our own code.

* ``sink``: a capturing upstream (aiosmtpd in a thread) that records every
  transaction and can be told to refuse recipients or DATA.
* ``make_config``: writes a real TOML file and loads it with the real loader.
* ``gateway``: the gateway running in a thread of the test process, with
  its own event loop, listening on a free loopback port.
* ``gateway_process``: the ``career-relay gateway`` command as a subprocess,
  for tests that kill it.
* ``pg_server``, ``postgres_url``, ``fresh_postgres_url``, ``ledger_postgres_url``: a
  private PostgreSQL for the session, and a database of the session or of one test
  (tests/pg.py).
* ``backend_url``: the ledger's tests that take it run on both backends.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop
from aiosmtpd.controller import Controller
from hypothesis import strategies as st

from career_relay import settings as settings_mod
from career_relay.passwords import hash_password
from gateway.app import Gateway
from tests.pg import (  # noqa: F401 (fixtures)
    _ledger_database,
    fresh_postgres_url,
    ledger_postgres_url,
    lite,
    pg,
    pg_server,
    postgres_url,
)
from tests.ports import free_port

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "career_relay"]
COMPANY_PASSWORD = "correct horse battery staple"
_PASSWORD_HASH = hash_password(COMPANY_PASSWORD)


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}")


@dataclass
class Received:
    mail_from: str
    rcpts: list[str]
    data: bytes
    mail_options: list[str]
    peer: tuple[str, int]
    tls: bool = False
    login: bytes | None = None


@dataclass
class SinkHandler:
    messages: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # rcpt -> reply
    data_reply: str | None = None  # refuse DATA from everyone
    data_replies: dict[str, str] = field(default_factory=dict)  # sender -> DATA reply
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply or envelope.mail_from in self.data_replies:
            return self.data_reply or self.data_replies[envelope.mail_from]
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                          envelope.original_content,
                                          list(envelope.mail_options), session.peer,
                                          session.ssl is not None or server.transport
                                          .get_extra_info("ssl_object") is not None,
                                          session.auth_data if session.authenticated else None))
        return "250 2.0.0 OK: sunk"


class PipeliningHandler(SinkHandler):
    """The test sink, announcing PIPELINING (aiosmtpd reads pipelined commands in order)."""

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


class Sink:
    """A capturing upstream on a fixed loopback port; can be stopped and started again.

    ``ssl_context`` makes it speak implicit TLS; ``smtp_kwargs`` go to aiosmtpd's
    SMTP (``tls_context`` for STARTTLS, ``authenticator`` for AUTH, ...).
    """

    def __init__(self, port: int, ssl_context: ssl.SSLContext | None = None,
                 **smtp_kwargs: Any):
        self.port = port
        self.handler = SinkHandler()
        self._ssl = ssl_context
        self._kwargs = smtp_kwargs
        self._controller: Controller | None = None

    def start(self) -> None:
        handler = self.handler
        self._controller = Controller(handler, hostname="127.0.0.1", port=self.port,
                                      ssl_context=self._ssl, enable_SMTPUTF8=True,
                                      data_size_limit=None, server_hostname="sink.test",
                                      **self._kwargs)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def messages(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.messages)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        wait_until(lambda: len(self.messages) >= count, timeout,
                   f"{count} message(s) at the sink (have {len(self.messages)})")
        return self.messages


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink(free_port())
    s.start()
    yield s
    s.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest) -> str:
    """``ledger.url`` for a test of the ledger on each backend: "" (the SQLite file at
    ``ledger.path``), then a migrated, empty database on the private PostgreSQL the suite
    starts (``ledger_postgres_url``, tests/pg.py)."""
    if request.param == "sqlite":
        return ""
    url: str = request.getfixturevalue("ledger_postgres_url")
    return url


ConfigMaker = Callable[..., Path]


@pytest.fixture
def make_config(tmp_path: Path) -> ConfigMaker:
    """Write career-relay.toml into tmp_path; keyword sections override the defaults."""

    def make(upstream_port: int = 2526, **sections: dict[str, Any]) -> Path:
        base: dict[str, dict[str, Any]] = {
            "gateway": {"listen": f"127.0.0.1:{free_port()}", "hostname": "relay.test",
                        "allow_ips": ["127.0.0.1/32"]},
            "upstream": {"host": "127.0.0.1", "port": upstream_port, "timeout": 10},
            "queue": {"dir": "spool", "retry_schedule": [1, 1]},
            "ledger": {"path": "ledger.db"},
            "secrets": {"signing_keys": ["test-secret-0123456789"]},
            # Never the default port: sites of several tests may run at once.
            "site": {"metrics_listen": f"127.0.0.1:{free_port()}"},
        }
        for name, values in sections.items():
            if name != "companies":
                base.setdefault(name, {}).update(values)
        companies = sections.get("companies", [{
            "id": "acme", "name": "株式会社アクメ", "domains": ["acme.example"],
            "smtp_username": "acme", "smtp_password_hash": _PASSWORD_HASH}])
        path = tmp_path / "career-relay.toml"
        path.write_text(_toml(base, companies), encoding="utf-8")
        return path

    return make


def _toml(sections: dict[str, dict[str, Any]], companies: Any) -> str:
    import json

    out = []
    for name, values in sections.items():
        out.append(f"[{name}]")
        out += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in values.items()]
    for company in companies:
        out.append("[[companies]]")
        out += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in company.items()]
    return "\n".join(out) + "\n"


class GatewayThread:
    """The real Gateway object, on its own event loop in a thread of the test process."""

    def __init__(self, config: Path):
        self.settings = settings_mod.load(config)
        self.port = int(self.settings.gateway.listen.rsplit(":", 1)[1])
        self.loop = uvloop.new_event_loop()  # the loop `career-relay serve` runs on
        self.gateway = Gateway(self.settings)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> GatewayThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.gateway.start(), self.loop).result(15)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.gateway.stop(5), self.loop).result(15)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    def queue_ids(self) -> list[str]:
        """Every message not finished: in the journal or in a queue file."""
        spool = self.gateway.spool
        return sorted({*spool.ids(), *(r.env.id for r in spool.journal_records())})


@pytest.fixture
def gateway(sink: Sink, make_config: ConfigMaker) -> Iterator[GatewayThread]:
    gw = GatewayThread(make_config(upstream_port=sink.port)).start()
    yield gw
    gw.stop()


class GatewayProcess:
    """`career-relay gateway` as a child process (it can be killed for real)."""

    def __init__(self, config: Path):
        self.config = config
        self.settings = settings_mod.load(config)
        self.port = int(self.settings.gateway.listen.rsplit(":", 1)[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.parent / "gateway.log"

    def start(self) -> GatewayProcess:
        logf = open(self.log, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen([*CLI, "gateway", "--config", str(self.config)],
                                     stdout=logf, stderr=logf, cwd=REPO)
        logf.close()
        wait_for_port(self.port)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(40)


@pytest.fixture
def gateway_process(sink: Sink, make_config: ConfigMaker) -> Iterator[GatewayProcess]:
    gp = GatewayProcess(make_config(upstream_port=sink.port))
    yield gp.start()
    gp.kill()


def self_signed(directory: Path, name: str = "relay.test") -> tuple[Path, Path]:
    """A throw-away certificate and key (PEM files) for TLS on loopback."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def run_cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CAREER_RELAY_")}
    full_env.update(env or {})
    return subprocess.run([*CLI, *args], capture_output=True, text=True, input=stdin,
                          cwd=REPO, env=full_env, timeout=60)


def record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path fsynced from now on (os.fsync still runs): for "on disk before 250"."""
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        real_fsync(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", spy)
    return synced


def queue_listing(config: Path) -> str:
    """`career-relay queue list`, as an operator sees it."""
    result = run_cli("queue", "list", "--config", str(config))
    assert result.returncode == 0, result.stderr
    return result.stdout


def queue_is_empty(config: Path) -> bool:
    return queue_listing(config).startswith("the queue is empty")


def crlf(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# Whitespace, line ends and a few other bytes, in any order, or any bytes at all: what
# shortcuts over CR, LF and WSP get wrong (quoted-printable, DKIM canonicalisation).
_LINE_END_ATOMS = [b" ", b"\t", b"\r", b"\n", b"\r\n", b"a", b"=", b".", b"\x00", b"\x0b",
                   b"\xa0", b"\xe3\x81\x82", b"x" * 30]


def line_end_mixtures() -> st.SearchStrategy[bytes]:
    return (st.lists(st.sampled_from(_LINE_END_ATOMS), max_size=60).map(b"".join)
            | st.binary(max_size=300))


def strip_received(data: bytes) -> bytes:
    """Remove the one Received field we prepend (it is folded over several lines)."""
    assert data.startswith(b"Received: "), data[:80]
    end = 0
    while True:
        end = data.index(b"\r\n", end) + 2
        if data[end:end + 1] not in (b" ", b"\t"):
            return data[end:]


# -- the demo, as `make run` starts it ------------------------------------------------------


def demo_env(ports: dict[str, int]) -> dict[str, str]:
    """The demo's ports moved by environment variables, as an operator would."""
    return {
        "CAREER_RELAY_GATEWAY_LISTEN": f"127.0.0.1:{ports['smtp']}",
        "CAREER_RELAY_GATEWAY_WORKERS": "1",
        "CAREER_RELAY_UPSTREAM_PORT": str(ports["upstream"]),
        "CAREER_RELAY_SITE_LISTEN": f"127.0.0.1:{ports['site']}",
        "CAREER_RELAY_SITE_METRICS_LISTEN": f"127.0.0.1:{ports['metrics']}",
        "CAREER_RELAY_SITE_PUBLIC_URL": f"http://127.0.0.1:{ports['site']}",
        "CAREER_RELAY_SITE_REVIEW_WINDOW": "0",  # the test clicks within milliseconds
        "CAREER_RELAY_AGENCY_WEBHOOK_URL": f"http://127.0.0.1:{ports['agency']}/forwards",
    }


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[Path, dict[str, int]]]:
    made = run_cli("init", "--dir", str(tmp_path), "--demo")
    assert made.returncode == 0, made.stderr
    (tmp_path / "init.out").write_text(made.stdout, encoding="utf-8")
    ports = {name: free_port() for name in ("smtp", "upstream", "site", "agency", "metrics")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREER_RELAY_")}
    env.update(demo_env(ports))
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*CLI, "serve", "--config", str(tmp_path / "career-relay.toml")],
                            stdout=log, stderr=log, cwd=REPO, env=env)
    try:
        for port in ports.values():
            wait_for_port(port)
        yield tmp_path, ports
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        log.close()
        assert code == 0, (tmp_path / "serve.log").read_text(errors="replace")
