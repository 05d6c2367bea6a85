"""Bounded fan-out (issue 12 item 2): a rejection's copies share its message.

One rejection to many recipients is kept as the message once and, per copy,
what makes it unique (its link, its signature, its Received line: the pieces
of ``gateway.spliced``).  These tests hold the promises that follow from it:
the journal and the queue files store the message once; a copy rebuilt from
the spool is the same bytes, across a ``kill -9`` and a restart (DESIGN
decision 1: retries send the same bytes); a damaged shared message is
reported, never sent as something else.  ``bench/fanout_bench.py`` measures
memory, spool and /healthz for 3 MB to 1,000 recipients.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import smtplib
import time
from pathlib import Path

import pytest

from career_relay.dkimkeys import generate_key
from career_relay.errors import SpoolError
from gateway.envelope import Envelope, new_id
from gateway.journal import segments
from gateway.spliced import Base, Spliced, materialised, splice
from gateway.spool import Spool
from tests.conftest import (
    ConfigMaker,
    GatewayProcess,
    Sink,
    free_port,
    queue_listing,
    run_cli,
    wait_until,
)
from tests.peers.opendkim import OpenDkim

# -- the pieces -------------------------------------------------------------------------------


def test_pieces_round_trip_and_refuse_what_does_not_fit_the_base() -> None:
    base = Base("b1", b"0123456789" * 10)
    copy = Spliced(base, (b"Received: x\r\n", (0, 40), b"LINK\n", (45, 100)))
    again = Spliced.decode(base, copy.encode())
    assert bytes(again) == bytes(copy) == b"Received: x\r\n" + base.data[:40] + b"LINK\n" \
        + base.data[45:]
    assert len(copy) == len(bytes(copy))
    for broken in (b"R0,101\n", b"R5,4\n", b"L10\nshort", b"X1\n", b"R-1,3\n"):
        with pytest.raises(ValueError):
            Spliced.decode(base, broken)


def test_only_what_an_edit_changes_becomes_a_new_piece() -> None:
    part = b"Content-Type: text/plain\r\n\r\n" + b"a" * 5000 + b"[[MARK]]" + b"b" * 5000
    data = b"Head: 1\r\n\r\n" + part + b"\r\n--end"
    base = Base("b2", data)
    start = data.index(part)
    new = part.replace(b"[[MARK]]", b"https://example.test/x")
    copy = splice(base, [(start, start + len(part), new)])
    assert bytes(copy) == data.replace(b"[[MARK]]", b"https://example.test/x")
    assert copy.unique_bytes() < 40  # the link, not the part of 10 KB around it


# -- the spool ----------------------------------------------------------------------------------


def _copies(base: Base, count: int) -> list[tuple[Envelope, Spliced]]:
    out = []
    cut = len(base.data) // 2
    for i in range(count):  # a link each, in the middle of a line
        env = Envelope(id=new_id(), mail_from="hr@acme.example", rcpts=[f"c{i}@example.net"],
                       arrival=time.time())
        pieces = (f"Received: copy {i}\r\n".encode(), (0, cut), f"link-{i}".encode(),
                  (cut + 4, len(base.data)))
        out.append((env, Spliced(base, pieces)))
    return out


def _tree_bytes(root: Path) -> int:
    """The bytes of mail in a spool: every file of the journal, queue, state and bases
    (not the metrics files kept there), each inode once, as du counts them."""
    seen, total = set(), 0
    for directory, _, files in (w for d in ("journal", "queue", "state", "bases", "tmp")
                                for w in os.walk(root / d)):
        for name in files:
            st = os.lstat(os.path.join(directory, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total


def test_the_journal_and_the_queue_hold_the_message_once(tmp_path: Path) -> None:
    base = Base("shared", random.Random(1).randbytes(200_000))
    copies = _copies(base, 25)
    plain = (Envelope(id=new_id(), mail_from="", rcpts=["x@example.net"], arrival=time.time()),
             b"Subject: plain\r\n\r\nhello\r\n")
    spool = Spool(tmp_path / "spool")
    spool.create_dirs()
    asyncio.run(spool.store_all([*copies, plain]))
    (segment,) = segments(spool.journal_dir)
    assert segment.stat().st_size < len(base.data) + 25 * 300  # once, not 25 times
    spool.journal.close()

    # A restart: what the journal holds becomes queue files (Spool.recover).
    again = Spool(tmp_path / "spool")
    assert again.recover([0]) == 26
    for env, copy in copies:
        got_env, body = again.read(env.id)
        assert got_env.rcpts == env.rcpts
        assert materialised(body) == bytes(copy)  # byte for byte
    assert again.read(plain[0].id)[1] == plain[1]
    links = {os.stat(again.bases / env.id).st_ino for env, _ in copies}
    assert len(links) == 1 and os.stat(again.bases / copies[0][0].id).st_nlink == 25
    assert _tree_bytes(tmp_path / "spool") < 2 * len(base.data) + 16 * 1024 * 25

    # A copy delivered: its link goes, the others still read whole.
    again.remove(copies[0][0].id)
    assert not (again.bases / copies[0][0].id).exists()
    assert materialised(again.read(copies[1][0].id)[1]) == bytes(copies[1][1])


def test_a_copy_filed_after_its_first_attempt_shares_the_file(tmp_path: Path) -> None:
    base = Base("filed", b"x" * 50_000)
    spool = Spool(tmp_path / "spool")
    spool.create_dirs()
    for env, copy in _copies(base, 3):
        spool.store_file(env, copy)  # the delivery worker's path for mail that must wait
    assert sorted(os.stat(p).st_nlink for p in spool.bases.iterdir()) == [3, 3, 3]


def test_a_damaged_shared_message_is_reported_not_sent(tmp_path: Path) -> None:
    base = Base("damaged", b"y" * 10_000)
    spool = Spool(tmp_path / "spool")
    spool.create_dirs()
    (env, copy), = _copies(base, 1)
    spool.store_file(env, copy)
    path = spool.bases / env.id
    data = bytearray(path.read_bytes())
    data[5000] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(SpoolError, match="damaged"):
        spool.read(env.id)
    path.unlink()
    with pytest.raises(SpoolError, match="damaged"):
        spool.read(env.id)


def test_an_orphaned_shared_message_is_removed_at_start(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.create_dirs()
    orphan = spool.bases / new_id()
    orphan.write_bytes(b"left by a crash between the link and the queue file")
    spool.recover([0])
    assert not orphan.exists()


# -- through the gateway: across kill -9 and a restart ----------------------------------------


def _rejection(size: int) -> bytes:
    blob = base64.encodebytes(random.Random(7).randbytes(size)).replace(b"\n", b"\r\n")
    return (b"From: HR <hr@acme.example>\r\nTo: undisclosed-recipients:;\r\n"
            b"Subject: =?UTF-8?B?6YG46ICD57WQ5p6c?=\r\nMessage-ID: <fanout-1@acme.example>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
            b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n"
            + "選考の結果、今回はご期待に添えない結果となりました。\r\n".encode()
            + b"[[CAREER_RELAY_LINK]]\r\n"
            b"--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + blob + b"--b--\r\n")


def test_copies_rebuilt_after_kill_9_are_the_bytes_first_made(
        make_config: ConfigMaker, tmp_path: Path) -> None:
    key_path = tmp_path / "keys" / "acme.pem"
    key = generate_key(key_path)
    upstream = free_port()  # nothing listens there yet: every copy must wait
    config = make_config(
        upstream_port=upstream, site={"public_url": "http://consent.test"},
        queue={"dir": "spool", "retry_schedule": [3600]}, gateway={"workers": 1},
        companies=[{"id": "acme", "name": "Acme", "domains": ["acme.example"],
                    "dkim_selector": "cr1", "dkim_key_file": str(key_path),
                    "allow_ips": ["127.0.0.1/32"]}])
    message = _rejection(300_000)
    rcpts = [f"candidate{i}@example.net" for i in range(30)]
    gw = GatewayProcess(config).start()
    sink = Sink(upstream)
    try:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=60) as client:
            client.ehlo("hr.acme.example")
            assert client.mail("hr@acme.example", ["BODY=8BITMIME"])[0] == 250
            for rcpt in rcpts:
                assert client.rcpt(rcpt)[0] == 250
            code, reply = client.data(message)
        assert code == 250 and len(reply) < 512 and b"\n" not in reply
        wait_until(lambda: queue_listing(config).count("last error:") == len(rcpts),
                   timeout=60, what="every copy deferred to a queue file")
        spool_dir = tmp_path / "spool"
        # The spool holds the message once: not 30 copies of 400 KB.
        assert _tree_bytes(spool_dir) < 2 * len(message) + 16 * 1024 * len(rcpts)

        spool = Spool(spool_dir)
        made = {}
        for queue_id in spool.ids():
            env, body = spool.read(queue_id)
            assert isinstance(body, Spliced)
            made[env.rcpts[0]] = materialised(body)
        assert sorted(made) == sorted(rcpts)
        assert len(set(made.values())) == len(rcpts)  # a link and a signature each

        gw.kill()  # SIGKILL: nothing is tidied up
        sink.start()
        gw = GatewayProcess(config).start()
        retried = run_cli("queue", "retry", "--config", str(config))
        assert retried.returncode == 0, retried.stderr
        got = sink.wait_for(len(rcpts), timeout=60)
        for m in got:
            (rcpt,) = m.rcpts
            assert m.data == made[rcpt], "the copy sent after the restart differs"
        (tmp_path / "opendkim").mkdir()
        verifier = OpenDkim(tmp_path / "opendkim", "cr1", "acme.example", key)
        assert verifier.passes(got[0].data)
        wait_until(lambda: not any(spool.bases.iterdir()), timeout=20,
                   what="the shared message removed with the last copy")
    finally:
        gw.kill()
        sink.stop()


@pytest.mark.parametrize("planted", ["dev-zero", "fifo", "other-size"])
def test_a_shared_message_is_read_only_as_the_file_written(tmp_path: Path,
                                                         planted: str) -> None:
    """The attack review: a link to /dev/zero in bases/ filled 8 GB of memory, a FIFO held a
    delivery thread for good.  Only a regular file of the size written is read."""
    base = Base("planted", b"z" * 10_000)
    spool = Spool(tmp_path / "spool")
    spool.create_dirs()
    (env, copy), = _copies(base, 1)
    spool.store_file(env, copy)
    path = spool.bases / env.id
    path.unlink()
    if planted == "dev-zero":
        path.symlink_to("/dev/zero")
    elif planted == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(b"z" * 20_000)
    with pytest.raises(SpoolError, match="damaged"):
        spool.read(env.id)


def test_a_directory_left_in_the_spool_does_not_stop_the_start(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.create_dirs()
    (spool.tmp / new_id()).mkdir()
    (spool.bases / new_id()).mkdir()
    spool.recover([0])  # raised IsADirectoryError: the gateway did not start


def test_a_damaged_copy_is_set_aside_not_sent_nor_retried_for_ever(
        make_config: ConfigMaker, sink: Sink, tmp_path: Path) -> None:
    from tests.conftest import GatewayThread

    config = make_config(upstream_port=sink.port, gateway={"workers": 1})
    spool = Spool(tmp_path / "spool")
    spool.create_dirs()
    good_base, bad_base = Base("good", b"Subject: a\r\n\r\n" + (b"g" * 70 + b"\r\n") * 100), \
        Base("bad", b"Subject: b\r\n\r\n" + (b"b" * 70 + b"\r\n") * 100)
    (good, good_copy), = _copies(good_base, 1)
    (bad, bad_copy), = _copies(bad_base, 1)
    spool.store_file(good, good_copy)
    spool.store_file(bad, bad_copy)
    (spool.bases / bad.id).write_bytes(bad_base.data.replace(b"b", b"X"))  # the same size
    gw = GatewayThread(config).start()
    try:
        (got,) = sink.wait_for(1)
        assert got.data == bytes(good_copy), got.data[:2000]
        corrupt = tmp_path / "spool" / "corrupt"
        wait_until(lambda: (corrupt / bad.id).exists(), what="the damaged copy set aside")
        assert (corrupt / f"{bad.id}.base").exists()
        wait_until(lambda: gw.queue_ids() == [], what="an empty queue")
        assert len(sink.messages) == 1
        listing = queue_listing(config)  # the operator hears of it
        assert f"1 damaged message(s) set aside in {corrupt}" in listing
        assert bad.id in listing
    finally:
        gw.stop()


def test_a_rejection_too_big_for_its_recipients_gets_552_and_costs_nothing(
        make_config: ConfigMaker, sink: Sink, tmp_path: Path) -> None:
    """The attack review: 24 MB to 1,000 recipients was ten minutes of signing, the session
    timed out without a reply and the client sent it again.  Beyond gateway.max_fanout_bytes
    the sender hears at once, and nothing is recorded or sent."""
    from career_relay.ledger import open_configured
    from career_relay.settings import load
    from tests.conftest import GatewayThread

    key_path = tmp_path / "keys" / "acme.pem"
    generate_key(key_path)
    message = _rejection(100_000)
    config = make_config(
        upstream_port=sink.port, site={"public_url": "http://consent.test"},
        gateway={"max_fanout_bytes": 10 * len(message)},
        companies=[{"id": "acme", "name": "Acme", "domains": ["acme.example"],
                    "dkim_selector": "cr1", "dkim_key_file": str(key_path),
                    "allow_ips": ["127.0.0.1/32"]}])
    gw = GatewayThread(config).start()
    try:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=60) as client:
            client.ehlo("hr.acme.example")
            client.mail("hr@acme.example", ["BODY=8BITMIME"])
            for i in range(11):
                assert client.rcpt(f"candidate{i}@example.net")[0] == 250
            code, reply = client.data(message)
            assert (code, reply[:5]) == (552, b"5.3.4"), reply
            # Ten copies are within the budget: the same message, one recipient fewer.
            client.mail("hr@acme.example", ["BODY=8BITMIME"])
            for i in range(10):
                client.rcpt(f"candidate{i}@example.net")
            assert client.data(message)[0] == 250
        assert len(sink.wait_for(10)) == 10
        with open_configured(load(config)) as ledger:
            (offers,) = ledger.db.conn.execute("SELECT COUNT(*) FROM offers").fetchone()
        assert offers == 10  # none for the refused one
    finally:
        gw.stop()
