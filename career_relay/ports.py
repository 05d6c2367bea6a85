"""Who holds a TCP port: so a port clash ends in one line that names the address and, best
effort, the process (issue 14), not in an ``OSError`` traceback.

Linux only, from ``/proc``: the listening sockets of ``/proc/net/tcp`` and
``tcp6`` (state ``0A``) give the socket's inode and owner; the process is the
one with a ``/proc/PID/fd`` link to ``socket:[INODE]``.  Another user's
processes are not readable without privileges: then the owner's name is
what can be said.  Anything unreadable means "not known", never an error.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import pwd
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from career_relay.errors import AddressInUse
from career_relay.terminal import printable
from career_relay.validate import parse_hostport

_LISTEN = "0A"
_PROC = Path("/proc")


@dataclass(frozen=True)
class Listener:
    address: str  # as the kernel has it: "127.0.0.1", "::", ...
    port: int
    uid: int
    inode: str


def listeners(port: int) -> list[Listener]:
    """Every socket listening on ``port``, IPv4 and IPv6."""
    found = []
    for name, size in (("tcp", 4), ("tcp6", 16)):
        try:
            lines = (_PROC / "net" / name).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            hex_address, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) == port and fields[9] != "0":
                found.append(Listener(_address(hex_address, size), port, int(fields[7]),
                                      fields[9]))
    return found


def _address(text: str, size: int) -> str:
    """/proc/net/tcp's hex address: 32-bit words in the host's byte order."""
    raw = bytes.fromhex(text)
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))
    return str(ipaddress.ip_address(raw))


def _overlaps(held: str, wanted: str) -> bool:
    """Whether a listener on ``held`` keeps ``wanted`` from binding the same port."""
    wild = ("0.0.0.0", "::")
    return held == wanted or held in wild or wanted in wild


def held_by(host: str, port: int) -> str | None:
    """Who listens on ``host:port`` ("pid 1234 (python3 -m http.server)"), or None when no
    listener shows."""
    mine = [s for s in listeners(port) if _overlaps(s.address, host)]
    if not mine:
        return None
    sockets = {f"socket:[{s.inode}]" for s in mine}
    for proc in _PROC.iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in sockets:
                        return f"pid {proc.name} ({_command(proc)})"
    return f"a process of user {_user(mine[0].uid)}"


def _command(proc: Path) -> str:
    try:
        argv = (proc / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return "?"
    argv[0] = os.path.basename(argv[0])
    # Another user's process chose these bytes: escaped, so they cannot drive our terminal.
    text = printable(" ".join(a.decode("utf-8", "replace") for a in argv))
    return text if len(text) <= 80 else text[:77] + "..."


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def in_use(setting: str, hostport: str) -> AddressInUse:
    """The one-line error for ``setting``'s address ``hostport``, naming who holds it.

    ``setting`` may say what listens there after a space: "upstream.port (the demo's
    capture upstream)".  The form is the gateway's own for a failed bind
    (``gateway.listen: cannot listen on HOST:PORT: ...``)."""
    host, port = parse_hostport(setting, hostport)
    who = held_by(host, port)
    key = setting.partition(" ")[0]
    return AddressInUse(f"{setting}: cannot listen on {hostport}: already in use"
                        + (f" by {who}" if who else "")
                        + f"; stop that process or change {key}")


def check_free(setting: str, hostport: str) -> None:
    """Refuse an address someone listens on, before binding it: a socket bound with
    SO_REUSEPORT by the same user (a second demo) would otherwise share the port quietly."""
    host, port = parse_hostport(setting, hostport)
    if any(_overlaps(s.address, host) for s in listeners(port)):
        raise in_use(setting, hostport)


@contextlib.contextmanager
def binding(*addresses: tuple[str, str]) -> Iterator[None]:
    """Turn "address already in use" while binding ``addresses`` ((setting, HOST:PORT), ...)
    into ``AddressInUse`` naming the one that clashed (the first that shows a listener)."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        addresses = tuple((s, a) for s, a in addresses if a)  # "": that one is switched off
        for setting, hostport in addresses:
            host, port = parse_hostport(setting, hostport)
            if any(_overlaps(s.address, host) for s in listeners(port)):
                raise in_use(setting, hostport) from None
        setting, hostport = addresses[0]
        raise in_use(setting, hostport) from None
