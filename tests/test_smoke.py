import smtplib

from tests.conftest import GatewayThread, Sink, crlf, strip_received


def test_message_is_relayed_byte_for_byte(gateway: GatewayThread, sink: Sink) -> None:
    msg = crlf("From: hr@acme.example\nTo: a@example.net\nSubject: hi\n\nbody\n")
    with smtplib.SMTP("127.0.0.1", gateway.port) as client:
        client.sendmail("hr@acme.example", ["a@example.net"], msg)
    (got,) = sink.wait_for(1)
    assert strip_received(got.data) == msg
    assert got.rcpts == ["a@example.net"]
