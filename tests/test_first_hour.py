"""The first hour, as a newcomer meets it (issue 14, item 5).

The demo runs as ``career-relay serve`` in a child process (``tests.test_demo``'s
fixture) and every command runs as a subprocess: ``send-test`` sends through
the gateway on loopback, ``outbox last`` reads what the capture upstream
wrote, and the link it prints opens the consent page.  A port clash ends in one
line naming who holds the port; the commands that ``init`` prints run as
printed, with or without ``.venv/bin`` on PATH.
"""

from __future__ import annotations

import os
import re
import shlex
import smtplib
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import CLI, REPO, demo_env, free_port, run_cli
from tests.test_demo import _until

pytestmark = pytest.mark.slow

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1")


def _cli(ports: dict[str, int], *args: str, stdin: str | None = None
         ) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, stdin=stdin, env=demo_env(ports))


def _open(url: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"User-Agent": IPHONE})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_send_test_rejection_and_outbox_last_give_a_link_that_opens(
        demo: tuple[Path, dict[str, int]]) -> None:
    var, ports = demo
    config = str(var / "career-relay.toml")
    sent = _cli(ports, "send-test", "--rejection", "--config", config)
    assert sent.returncode == 0, sent.stderr
    assert re.search(rf"from hr@acme\.example to candidate@example\.net through "
                     rf"127\.0\.0\.1:{ports['smtp']}: 250 ", sent.stdout), sent.stdout
    assert "outbox last" in sent.stdout
    _until("the copy in outbox/", lambda: sorted((var / "outbox").glob("*.eml")))
    shown = _cli(ports, "outbox", "last", "--config", config)
    assert shown.returncode == 0, shown.stderr
    link = re.search(rf"consent link +(http://127\.0\.0\.1:{ports['site']}/c/\S+)", shown.stdout)
    assert link, shown.stdout
    assert "Subject: 選考結果のご連絡（テスト）" in shown.stdout  # decoded, not =?utf-8?...
    status, page = _open(link.group(1))
    assert status == 200 and "株式会社アクメ" in page


def test_outbox_last_joins_a_link_that_quoted_printable_broke(
        demo: tuple[Path, dict[str, int]]) -> None:
    """A quoted-printable rejection keeps its encoding (SPEC 5), so the long link is cut
    by soft line breaks in the .eml: copied from the file it gave a 404."""
    var, ports = demo
    body = ("=E3=81=94=E5=BF=9C=E5=8B=9F=E3=81=82=E3=82=8A=E3=81=8C=E3=81=A8=E3=81=86=E3=81=94="
            "=E3=81=96=E3=81=84=E3=81=BE=E3=81=97=E3=81=9F=E3=80=82 [[CAREER_RELAY_LINK]]\r\n")
    message = ("From: hr@acme.example\r\nTo: candidate@example.net\r\nSubject: qp\r\n"
               "Message-ID: <qp-1@acme.example>\r\nMIME-Version: 1.0\r\n"
               "Content-Type: text/plain; charset=utf-8\r\n"
               "Content-Transfer-Encoding: quoted-printable\r\n\r\n" + body)
    with smtplib.SMTP("127.0.0.1", ports["smtp"]) as smtp:
        smtp.sendmail("hr@acme.example", ["candidate@example.net"], message.encode("ascii"))
    (eml,) = _until("the copy in outbox/", lambda: sorted((var / "outbox").glob("*.eml")))
    shown = _cli(ports, "outbox", "last", "--config", str(var / "career-relay.toml"))
    assert shown.returncode == 0, shown.stderr
    link = re.search(r"consent link +(\S+)", shown.stdout)
    assert link, shown.stdout
    raw = eml.read_bytes()
    assert link.group(1).encode() not in raw, "the .eml was expected to cut the link"
    assert b"=\r\n" in raw  # the soft break that cut it
    status, _ = _open(link.group(1))
    assert status == 200


def test_send_test_ordinary_mail_has_no_link(demo: tuple[Path, dict[str, int]]) -> None:
    var, ports = demo
    config = str(var / "career-relay.toml")
    sent = _cli(ports, "send-test", "--to", "a@example.net", "--to", "b@example.org",
                "--subject", "hello there", "--config", config)
    assert sent.returncode == 0, sent.stderr
    _until("the copy in outbox/", lambda: sorted((var / "outbox").glob("*.eml")))
    shown = _cli(ports, "outbox", "last", "--config", config)
    assert "Subject: hello there" in shown.stdout and "a@example.net, b@example.org" in shown.stdout
    assert "no links" in shown.stdout and "/c/" not in shown.stdout
    unknown = _cli(ports, "send-test", "--company", "nope", "--config", config)
    assert unknown.returncode == 1 and "no company 'nope'" in unknown.stderr


def test_outbox_reads_every_text_part_decoded(tmp_path: Path) -> None:
    """MIME parsed properly: a quoted-printable text part whose link is cut by a soft break,
    a base64 HTML part whose href holds an entity; each link once, the attachment skipped."""
    import base64

    from gateway.demo_mail import last_message

    link = "http://127.0.0.1:8080/c/" + "A" * 90 + ".x-y_z"
    qp = f"Hello {link[:40]}=\r\n{link[40:100]}=\r\n{link[100:]} bye.\r\n"
    html = (f'<p><a href="{link}">link</a> <a href="https://ex.example/?a=1&amp;b=2">x</a>'
            "</p>").encode()
    eml = ("From: hr@acme.example\r\nTo: c@example.net\r\n"
           "Subject: =?utf-8?B?44GC44GE?=\r\nMIME-Version: 1.0\r\n"
           'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
           'Content-Type: multipart/alternative; boundary="b2"\r\n\r\n--b2\r\n'
           "Content-Type: text/plain; charset=utf-8\r\n"
           f"Content-Transfer-Encoding: quoted-printable\r\n\r\n{qp}--b2\r\n"
           "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n"
           f"\r\n{base64.b64encode(html).decode()}\r\n--b2--\r\n--b1\r\n"
           "Content-Type: text/plain; name=a.txt\r\nContent-Disposition: attachment\r\n\r\n"
           "http://attached.example/no\r\n--b1--\r\n")
    (tmp_path / "1.eml").write_bytes(eml.encode())
    found = last_message(tmp_path)
    assert found.subject == "あい" and found.to == "c@example.net"
    assert found.links == (link, "https://ex.example/?a=1&b=2")


def test_send_test_without_a_running_gateway_is_one_line(tmp_path: Path) -> None:
    assert run_cli("init", "--dir", str(tmp_path), "--demo").returncode == 0
    port = free_port()
    result = run_cli("send-test", "--config", str(tmp_path / "career-relay.toml"),
                     env={"CAREER_RELAY_GATEWAY_LISTEN": f"127.0.0.1:{port}"})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"127.0.0.1:{port}" in result.stderr and "connection refused" in result.stderr


def test_outbox_last_without_a_capture_dir_or_a_message(tmp_path: Path) -> None:
    assert run_cli("init", "--dir", str(tmp_path / "plain")).returncode == 0
    plain = run_cli("outbox", "last", "--config", str(tmp_path / "plain" / "career-relay.toml"))
    assert plain.returncode == 1 and "demo.capture_dir" in plain.stderr
    assert run_cli("init", "--dir", str(tmp_path / "demo"), "--demo").returncode == 0
    empty = run_cli("outbox", "last", "--config", str(tmp_path / "demo" / "career-relay.toml"))
    assert empty.returncode == 1 and "no message in" in empty.stderr


# -- what the commands print from elsewhere: escaped, one line on a bad input --------------

HOSTILE = "Hi \x1b]0;owned\x07\x1b[2J\x9b31m \u202eevil\u2066 \u200b\u061c\r\nFake: line"


def _encoded(text: str) -> str:
    import base64

    return f"=?utf-8?B?{base64.b64encode(text.encode()).decode()}?="


def _unsafe(text: str) -> list[str]:
    return [c for c in text if c not in "\n" and (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0
            or c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
                    "\u200b\u200c\u200d\u200e\u200f\u061c")]


def test_printable_escapes_controls_and_bidi() -> None:
    from career_relay.terminal import printable

    shown = printable(HOSTILE + "\t\x00\x7f\u202a\u2069\u200f 選考 café")
    assert _unsafe(shown) == [] and "\n" not in shown
    assert shown.startswith("Hi \\x1b]0;owned\\x07\\x1b[2J\\x9b31m \\u202eevil\\u2066 ")
    assert shown.endswith("\\x09\\x00\\x7f\\u202a\\u2069\\u200f 選考 café")


def test_outbox_last_prints_what_a_mail_says_escaped(tmp_path: Path) -> None:
    """Attack review: an RFC 2047 Subject carrying ESC sequences reached the operator's
    terminal raw (as could From, To and a link)."""
    assert run_cli("init", "--dir", str(tmp_path), "--demo").returncode == 0
    (tmp_path / "outbox").mkdir(exist_ok=True)
    eml = (f"From: {_encoded(HOSTILE)} <hr@acme.example>\r\nTo: {_encoded(HOSTILE)} "
           f"<c@example.net>\r\nSubject: {_encoded(HOSTILE)}\r\nMIME-Version: 1.0\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n\r\n"
           "http://127.0.0.1:8080/c/ab\x1b\u202ecd\x07\r\n")
    (tmp_path / "outbox" / "1.eml").write_bytes(eml.encode())
    shown = run_cli("outbox", "last", "--config", str(tmp_path / "career-relay.toml"))
    assert shown.returncode == 0, shown.stderr
    assert _unsafe(shown.stdout) == [], shown.stdout
    assert "Subject: Hi \\x1b]0;owned\\x07" in shown.stdout
    assert "\\x0d\\x0aFake: line" in shown.stdout and "\nFake" not in shown.stdout
    assert "/c/ab\\x1b\\u202ecd\\x07" in shown.stdout
    assert len(shown.stdout.splitlines()) == 5  # path, From, To, Subject, the link


def test_outbox_last_on_a_message_nested_too_deeply_is_one_line(tmp_path: Path) -> None:
    """Attack review: 3000 nested multiparts were a RecursionError's traceback."""
    assert run_cli("init", "--dir", str(tmp_path), "--demo").returncode == 0
    (tmp_path / "outbox").mkdir(exist_ok=True)
    levels = 3000
    eml = ("From: a@acme.example\r\nTo: c@example.net\r\nSubject: deep\r\n"
           "MIME-Version: 1.0\r\n"
           + "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'
                     for i in range(levels))
           + "Content-Type: text/plain\r\n\r\nhttp://x.example/\r\n"
           + "".join(f"--b{i}--\r\n" for i in reversed(range(levels))))
    (tmp_path / "outbox" / "1.eml").write_bytes(eml.encode())
    result = run_cli("outbox", "last", "--config", str(tmp_path / "career-relay.toml"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("career-relay: error: ") and "nested too deeply" in line


@pytest.mark.parametrize("option", ["--subject", "--to", "--from"])
@pytest.mark.parametrize("bad", ["a\r\nBcc: x@example.org", "a\nBcc: x@example.org",
                                 "a\rb", "a\x1b[2Jb"], ids=["crlf", "lf", "cr", "esc"])
def test_send_test_refuses_a_line_break_in_a_header_in_one_line(
        tmp_path: Path, option: str, bad: str) -> None:
    """Attack review: ``--subject $'a\\r\\nBcc: x'`` (or in --to, --from) was a ValueError's
    traceback; refused before anything is sent, naming the option."""
    if not (tmp_path / "career-relay.toml").exists():
        assert run_cli("init", "--dir", str(tmp_path), "--demo").returncode == 0
    port = free_port()  # nothing listens: the refusal must come before a connection
    result = run_cli("send-test", option, bad, "--config", str(tmp_path / "career-relay.toml"),
                     env={"CAREER_RELAY_GATEWAY_LISTEN": f"127.0.0.1:{port}"})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.splitlines()
    assert f"{option} cannot hold" in line and "connection refused" not in line, line


def test_a_port_clash_escapes_the_holder_s_command_line(tmp_path: Path) -> None:
    """Attack review: another process chooses its command line; it was printed raw."""
    from career_relay.ports import _command

    (tmp_path / "cmdline").write_bytes(
        "/usr/bin/evil\0\x1b]0;owned\x07\0\u202eoof\0a\nb\0".encode())
    shown = _command(tmp_path)
    assert _unsafe(shown) == [] and "\n" not in shown
    assert shown == "evil \\x1b]0;owned\\x07 \\u202eoof a\\x0ab"


# -- a port clash ---------------------------------------------------------------------------


@pytest.mark.parametrize("clash", ["gateway.listen", "site.listen"])
def test_a_port_in_use_is_one_line_naming_the_address_and_its_holder(
        tmp_path: Path, clash: str) -> None:
    assert run_cli("init", "--dir", str(tmp_path), "--demo").returncode == 0
    ports = {name: free_port() for name in ("smtp", "upstream", "site", "agency", "metrics")}
    taken = ports["smtp"] if clash == "gateway.listen" else ports["site"]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAREER_RELAY_")}
        env.update(demo_env(ports))
        result = subprocess.run([*CLI, "serve", "--config", str(tmp_path / "career-relay.toml")],
                                capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "OSError" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("career-relay: error:")]
    assert f"{clash}: cannot listen on 127.0.0.1:{taken}: already in use by pid " \
           f"{os.getpid()} (" in line
    assert line.endswith(f"; stop that process or change {clash}")


# -- PATH: every command init prints runs as printed -------------------------------------


def _printed_report(tmp_path: Path, path_env: str) -> str:
    made = run_cli("init", "--dir", str(tmp_path), "--demo", env={"PATH": path_env})
    assert made.returncode == 0, made.stderr
    found = re.search(r"try `([^`]+)`", made.stdout)
    assert found, made.stdout
    assert re.search(r"start it: `[^`]+ serve --config ", made.stdout)
    return found.group(1)


def test_init_prints_a_command_that_runs_without_the_venv_on_path(tmp_path: Path) -> None:
    path_env = "/usr/local/bin:/usr/bin:/bin"
    printed = _printed_report(tmp_path, path_env)
    argv = shlex.split(printed)
    assert argv[0] != "career-relay", "not on PATH: the bare name would not be found"
    assert argv[1:3] == ["report", "--config"]
    ran = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=60,
                         env={**os.environ, "PATH": path_env})
    assert ran.returncode == 0, ran.stderr
    assert "acme" in ran.stdout


def test_init_prints_the_bare_name_when_path_finds_it(tmp_path: Path) -> None:
    venv_bin = str(Path(sys.executable).parent)
    if not (Path(venv_bin) / "career-relay").exists():
        pytest.skip("career-relay is not installed beside this interpreter")
    printed = _printed_report(tmp_path, f"{venv_bin}:/usr/bin:/bin")
    assert printed.startswith("career-relay report --config ")


# -- the README's Quickstart -----------------------------------------------------------------


def _quickstart() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]


def test_the_quickstart_needs_only_what_make_run_installed() -> None:
    """Its commands are career-relay's own (each parses) or Python's; no swaks."""
    from career_relay.cli import _parser

    text = _quickstart()
    assert "swaks" not in text
    commands = [line for line in text.splitlines() if line.startswith(".venv/bin/")]
    assert any("send-test --rejection" in c for c in commands)
    assert any("outbox last" in c for c in commands)
    for line in commands:
        argv = shlex.split(line)
        if argv[0] == ".venv/bin/career-relay":
            _parser().parse_args(argv[1:])  # exits 2 (SystemExit) on a command that is not
        else:
            assert argv[0] == ".venv/bin/python", line


def test_the_quickstart_says_truly_how_headless_browsers_are_treated() -> None:
    """The README names the user-agent rule beside the time rule, and what it names is
    what ``career_relay.consent`` holds."""
    from career_relay.consent import scanner_like

    text = _quickstart()
    assert "review_window" in text and "HeadlessChrome" in text
    headless = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "HeadlessChrome/131.0.0.0 Safari/537.36")
    assert scanner_like(headless)
    assert not scanner_like(headless.replace("HeadlessChrome", "Chrome"))  # --user-agent
    for named in ("python-requests/2.32", "curl/8.5.0", "Wget/1.21", "PhantomJS/2.1", ""):
        assert scanner_like(named), named
    assert "--user-agent" in text
