"""Delivery to a smarthost over STARTTLS or implicit TLS, with SMTP AUTH (SPEC 3 [upstream])."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from gateway.envelope import State
from tests.conftest import (
    ConfigMaker,
    GatewayThread,
    PipeliningHandler,
    Sink,
    crlf,
    free_port,
    self_signed,
    strip_received,
    wait_until,
)

MSG = crlf("From: hr@acme.example\nTo: a@example.net\nSubject: tls\n\nover TLS\n")


def _server_context(tmp_path: Path) -> ssl.SSLContext:
    cert, key = self_signed(tmp_path, "smarthost.test")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                   auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"relay-user", b"s3cret pass")
    return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)


@pytest.fixture
def tls_sink(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Sink]:
    ctx = _server_context(tmp_path)
    mode, _, pipelining = request.param.partition("+")
    if mode == "starttls":
        sink = Sink(free_port(), tls_context=ctx, require_starttls=True,
                    authenticator=_authenticator, auth_require_tls=True)
    else:
        sink = Sink(free_port(), ssl_context=ctx, authenticator=_authenticator,
                    auth_require_tls=False)
    if pipelining:  # our pipelined transaction reads replies off the TLS transport
        sink.handler = PipeliningHandler()
    sink.start()
    yield sink
    sink.stop()


def _deferred_state(gw: GatewayThread) -> State:
    """The state of the one message once its first attempt was deferred."""
    spool = gw.gateway.spool
    wait_until(lambda: any(spool.load_state(i).attempts for i in spool.ids()),
               what="a deferred attempt")
    (queue_id,) = list(spool.ids())
    return spool.load_state(queue_id)


def _send(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port) as c:
        c.sendmail("hr@acme.example", ["a@example.net"], MSG)


@pytest.mark.parametrize("tls_sink", ["starttls", "tls", "starttls+pipelining",
                                      "tls+pipelining"], indirect=True)
def test_delivery_over_tls_with_auth(make_config: ConfigMaker, tls_sink: Sink,
                                     request: pytest.FixtureRequest) -> None:
    mode = request.node.callspec.params["tls_sink"].partition("+")[0]
    gw = GatewayThread(make_config(upstream_port=tls_sink.port, upstream={
        "tls": mode, "verify_tls": False, "username": "relay-user",
        "password": "s3cret pass"})).start()
    try:
        _send(gw.port)
        (got,) = tls_sink.wait_for(1)
    finally:
        gw.stop()
    assert got.tls and got.login == b"relay-user"
    assert strip_received(got.data) == MSG


@pytest.mark.parametrize("tls_sink", ["starttls"], indirect=True)
def test_unverifiable_certificate_defers_instead_of_sending_in_clear(
        make_config: ConfigMaker, tls_sink: Sink) -> None:
    gw = GatewayThread(make_config(upstream_port=tls_sink.port, upstream={
        "tls": "starttls", "verify_tls": True, "username": "relay-user",
        "password": "s3cret pass"})).start()
    try:
        _send(gw.port)
        state = _deferred_state(gw)
        assert "4.4.2" in state.last_error
        assert "CERTIFICATE_VERIFY_FAILED" in state.last_error
        assert tls_sink.messages == []
    finally:
        gw.stop()


@pytest.mark.parametrize("tls_sink", ["starttls"], indirect=True)
def test_wrong_upstream_password_defers(make_config: ConfigMaker, tls_sink: Sink) -> None:
    gw = GatewayThread(make_config(upstream_port=tls_sink.port, upstream={
        "tls": "starttls", "verify_tls": False, "username": "relay-user",
        "password": "wrong"})).start()
    try:
        _send(gw.port)
        state = _deferred_state(gw)
        assert "535" in state.last_error  # the smarthost's refusal, kept for `queue list`
        assert state.bounced == {}  # our wrong password is no reason to bounce the mail
        assert tls_sink.messages == []
    finally:
        gw.stop()
