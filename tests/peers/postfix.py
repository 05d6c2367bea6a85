"""A private, throw-away Postfix instance for tests and benchmarks.

The instance is started with ``postfix -c <base_dir>/etc start`` and keeps
everything it owns under ``base_dir``: configuration, queue, data directory
and log file. It never reads or changes the system instance's queue, and it
never starts, stops or reconfigures the system instance.

Typical use (as root, which ``postfix start`` requires)::

    base = make_base_dir()            # world-searchable, see below
    with PostfixInstance(base, 10025, "[127.0.0.1]:2626") as mta:
        ...send mail to 127.0.0.1:10025...
        assert mta.wait_for_sent(50, timeout=30)

Things that matter when running a second Postfix next to the packaged one:

* The Postfix daemons run as ``mail_owner`` (postfix), not as root, and they
  must be able to reach the config, queue and data directories. Every parent
  of ``base_dir`` must therefore be searchable by that user. pytest's
  ``tmp_path`` lives under ``/tmp/pytest-of-<user>`` which is mode 0700, so it
  does NOT work; use :func:`make_base_dir` (a 0755 directory under /tmp).
* ``postfix start`` runs ``post-install create-missing``, which creates the
  queue directories with the right owners. It only creates what is missing, so
  the shared files (``/usr/sbin/postdrop`` and friends) are left alone. We never
  run ``postfix set-permissions``: for an instance that is not listed in the
  system's ``multi_instance_directories`` it would chown/chmod shared binaries.
* Debian's master.cf pins ``syslog_name=postfix/$service_name`` on some
  services; we rewrite that to this instance's unique syslog name.
* Logging goes through postlogd to ``maillog_file``, so nothing of ours ends
  up in the system log and the log can be read for ``status=sent`` lines.

The relay settings the interop tests use come from the fenced blocks of
``docs/integrations/postfix.md`` (:func:`guide_config`), so the guide is what
the tests run.
"""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType

POSTFIX = Path("/usr/sbin/postfix")
POSTCONF = Path("/usr/sbin/postconf")
POSTMAP = Path("/usr/sbin/postmap")
GUIDE = Path(__file__).resolve().parent.parent.parent / "docs" / "integrations" / "postfix.md"
SYSTEM_MASTER_CF = Path("/etc/postfix/master.cf")
# Installed with "No configuration" (as `make test` does), Debian may leave
# /etc/postfix/master.cf out; the packaged original is always here.
PACKAGED_MASTER_CF = Path("/usr/share/postfix/master.cf.dist")
MAIL_OWNER = "postfix"
SETGID_GROUP = "postdrop"

# Queues that hold mail Postfix still has to deliver. "hold" is left out on
# purpose: nothing in a test puts mail on hold, and held mail is not "in flight".
PENDING_QUEUES = ("maildrop", "incoming", "active", "deferred")

# A minimal, predictable environment for the postfix commands: we must not
# inherit MAIL_CONFIG (or MAIL_DEBUG) from whoever runs the tests.
_COMMAND_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}

_STATUS_SENT = re.compile(r"\bstatus=sent\b")


class PostfixError(RuntimeError):
    """The private instance could not be configured, started or stopped."""


def postfix_available() -> bool:
    """True when a private instance can be started here.

    That needs the Postfix programs, root privileges (``postfix start`` refuses
    otherwise) and the ``postfix`` user and ``postdrop`` group from the package.
    """
    if os.geteuid() != 0:
        return False
    if not (POSTFIX.is_file() and POSTCONF.is_file() and SYSTEM_MASTER_CF.is_file()):
        return False
    try:
        pwd.getpwnam(MAIL_OWNER)
        grp.getgrnam(SETGID_GROUP)
    except KeyError:
        return False
    return True


def make_base_dir(prefix: str = "postfix-peer-") -> Path:
    """Create a fresh base directory the Postfix daemons can reach.

    ``tempfile.mkdtemp`` makes a 0700 directory; the daemons run as the
    ``postfix`` user, so the directory is opened up to 0755. The caller removes
    it (``shutil.rmtree``) after :meth:`PostfixInstance.stop`.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def _check_loopback_relayhost(relayhost: str) -> None:
    """Refuse any next hop that is not ``[<IPv4 loopback>]:<port>``.

    The square brackets matter: without them Postfix would do an MX lookup.
    Restricting the next hop to loopback guarantees that a test can never send
    mail off this machine, whatever it submits.
    """
    match = re.fullmatch(r"\[([0-9.]+)\]:([0-9]{1,5})", relayhost)
    if match is None:
        raise ValueError(f"relayhost must look like '[127.0.0.1]:2525', got {relayhost!r}")
    address = ipaddress.ip_address(match.group(1))
    if not address.is_loopback or not 0 < int(match.group(2)) < 65536:
        raise ValueError(f"relayhost must be a loopback address and port, got {relayhost!r}")


def derive_master_cf(system_master_cf: str, smtpd_port: int, syslog_name: str) -> str:
    """Turn the packaged master.cf into one for the private instance.

    * every ``inet`` service is dropped (the system instance may own port 25,
      submission, ...) and one smtpd on ``127.0.0.1:<smtpd_port>`` is added;
    * the chroot column is set to ``n`` everywhere: a chroot would need copies
      of /etc files inside our queue directory, which buys nothing in a test;
    * ``syslog_name=postfix/...`` overrides become ``<syslog_name>/...``.

    Comments and blank lines are dropped; the result is machine-made anyway.
    """
    entries: list[list[str]] = []  # each: first line + its continuation lines
    for raw_line in system_master_cf.splitlines():
        line = raw_line.rstrip()
        if not line or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            if entries:  # continuation ("  -o name=value") of the last entry
                entries[-1].append(line)
            continue
        entries.append([line])

    out: list[str] = [f"# Derived from {SYSTEM_MASTER_CF} for a private test instance."]
    for entry in entries:
        fields = entry[0].split()
        if len(fields) < 8:
            raise PostfixError(f"unexpected master.cf line: {entry[0]!r}")
        if fields[1] == "inet":
            continue
        fields[4] = "n"  # chroot
        out.append("\t".join(fields))
        for continuation in entry[1:]:
            out.append(continuation.replace("syslog_name=postfix/", f"syslog_name={syslog_name}/"))
    out.append(f"127.0.0.1:{smtpd_port}\tinet\tn\t-\tn\t-\t-\tsmtpd")
    return "\n".join(out) + "\n"


def _searchable_by(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether a process with this uid/groups may traverse ``path``."""
    st = path.stat()
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in gids:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _process_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie.

    The master daemon is not our child (``postfix start`` daemonizes it), and
    PID 1 in a container may not reap it promptly, so a dead master can linger
    as a zombie that ``kill(pid, 0)`` still reports as present.
    """
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state is the first field after "(comm)"; comm may contain spaces.
    state = stat_line.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")

# -- the configuration of docs/integrations/postfix.md --------------------------------

# What the guide's blocks stand for, and what a test puts in their place.
GUIDE_NEXT_HOP = "[relay.example.com]:2525"
GUIDE_CONFIG_DIR = "/etc/postfix/"
GUIDE_PASSWORD = "your-smtp-password"

# An opening fence whose info string names a file and the set-ups it belongs to:
# ```ini main.cf setup=all   or   ```text /etc/postfix/sasl_passwd setup=all,selective
_GUIDE_FENCE = re.compile(r"^```\w+ (?P<file>\S+) setup=(?P<setups>[\w,]+)$")


def guide_blocks(text: str) -> list[tuple[str, set[str], str]]:
    """(file, set-ups, content) of every marked block of the guide."""
    blocks: list[tuple[str, set[str], str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _GUIDE_FENCE.match(lines[i])
        i += 1
        if match is None:
            continue
        body: list[str] = []
        while i < len(lines) and lines[i] != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise PostfixError(f"unclosed block for {match['file']} in the guide")
        i += 1
        blocks.append((match["file"], set(match["setups"].split(",")),
                       "\n".join(body) + "\n"))
    return blocks


def parse_main_cf(text: str) -> dict[str, str]:
    """``name = value`` lines (comments and blank lines skipped; no continuations)."""
    settings: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or line[0].isspace() or not re.fullmatch(r"[a-z0-9_]+", name.strip()):
            raise PostfixError(f"not a main.cf line: {line!r}")
        if name.strip() in settings:
            raise PostfixError(f"{name.strip()} is set twice")
        settings[name.strip()] = value.strip()
    return settings


def guide_config(
    setup: str, next_hop: str, config_dir: Path, password: str, text: str | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """The guide's main.cf settings and map files for ``setup`` ("all" or "selective").

    Only the placeholders change: the gateway's ``[host]:port``, the configuration
    directory and the password. Map files are returned by their name in
    ``config_dir``.
    """
    _check_loopback_relayhost(next_hop)

    def local(value: str) -> str:
        return (value.replace(GUIDE_NEXT_HOP, next_hop)
                .replace(GUIDE_CONFIG_DIR, f"{config_dir}/")
                .replace(GUIDE_PASSWORD, password))

    main_cf: dict[str, str] = {}
    maps: dict[str, str] = {}
    for file, setups, content in guide_blocks(GUIDE.read_text(encoding="utf-8")
                                              if text is None else text):
        if setup not in setups:
            continue
        if file == "main.cf":
            main_cf.update({k: local(v) for k, v in parse_main_cf(content).items()})
        elif file.startswith(GUIDE_CONFIG_DIR):
            maps[file.removeprefix(GUIDE_CONFIG_DIR)] = local(content)
        else:
            raise PostfixError(f"guide block for {file}: neither main.cf nor a map file")
    if not main_cf:
        raise PostfixError(f"the guide has no main.cf block for setup={setup}")
    return main_cf, maps


class PostfixInstance:
    """One private Postfix MTA relaying everything to a loopback next hop."""

    def __init__(
        self,
        base_dir: Path,
        smtpd_port: int,
        relayhost: str,
        extra_main_cf: dict[str, str] | None = None,
        maps: Mapping[str, str] | None = None,
    ) -> None:
        self.base_dir = base_dir.resolve()
        self.smtpd_port = smtpd_port
        self.relayhost = relayhost
        self.extra_main_cf: dict[str, str] = dict(extra_main_cf or {})
        # Lookup tables written into config_dir (name -> content); the ones main.cf
        # names as hash:<config_dir>/<name> are compiled with postmap.
        self.maps: dict[str, str] = dict(maps or {})
        self.config_dir = self.base_dir / "etc"
        self.queue_dir = self.base_dir / "spool"
        self.data_dir = self.base_dir / "data"
        self.maillog = self.base_dir / "maillog"
        # Unique per instance, so log lines (and any syslog fallback) are
        # never confused with the system instance's "postfix/..." lines.
        self.syslog_name = f"postfix-peer-{smtpd_port}-{secrets.token_hex(3)}"
        _check_loopback_relayhost(self.main_cf_settings()["relayhost"])
        for name, content in self.maps.items():
            if "/" in name or name.startswith("."):
                raise ValueError(f"map file name must be a plain name, got {name!r}")
            relay_maps = self.main_cf_settings().get("sender_dependent_relayhost_maps", "")
            if str(self.config_dir / name) in relay_maps:  # next hops: loopback only too
                for line in content.splitlines():
                    if line.strip() and not line.lstrip().startswith("#"):
                        _check_loopback_relayhost(line.split()[-1])

    # -- configuration -----------------------------------------------------

    def main_cf_settings(self) -> dict[str, str]:
        """The complete main.cf of this instance (defaults apply to the rest)."""
        settings: dict[str, str] = {
            # Silence the backwards-compatibility warnings of a fresh main.cf.
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": MAIL_OWNER,
            "setgid_group": SETGID_GROUP,
            "syslog_name": self.syslog_name,
            "maillog_file": str(self.maillog),
            # postlogd refuses log files outside these prefixes (default /var).
            "maillog_file_prefixes": str(self.base_dir),
            # Must differ from the next hop's greeting name, or Postfix reports
            # "mail loops back to myself".
            "myhostname": f"{self.syslog_name}.peer.test",
            "mydomain": "peer.test",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            # Nothing is local: every recipient goes to the relayhost.
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "relayhost": self.relayhost,
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "biff": "no",
        }
        settings.update(self.extra_main_cf)
        return settings

    def _write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        main_cf = "".join(f"{name} = {value}\n" for name, value in self.main_cf_settings().items())
        (self.config_dir / "main.cf").write_text(main_cf)
        source = SYSTEM_MASTER_CF if SYSTEM_MASTER_CF.is_file() else PACKAGED_MASTER_CF
        master_cf = derive_master_cf(source.read_text(), self.smtpd_port, self.syslog_name)
        (self.config_dir / "master.cf").write_text(master_cf)
        for name in ("main.cf", "master.cf"):
            (self.config_dir / name).chmod(0o644)
        settings = " ".join(self.main_cf_settings().values())
        for name, content in self.maps.items():
            path = self.config_dir / name
            path.write_text(content)
            path.chmod(0o600)  # as the guide says: sasl_passwd holds a password
            if f"hash:{path}" in settings:
                self._postmap(f"hash:{path}")

    def _postmap(self, table: str) -> None:
        result = subprocess.run(
            [str(POSTMAP), "-c", str(self.config_dir), table],
            env=_COMMAND_ENV, capture_output=True, text=True, timeout=30, check=False)
        if result.returncode != 0:
            raise PostfixError(f"'postmap {table}' failed: {result.stdout}{result.stderr}")

    def _check_base_dir_reachable(self) -> None:
        """Fail early, with a clear message, if the daemons cannot reach base_dir."""
        owner = pwd.getpwnam(MAIL_OWNER)
        gids = {owner.pw_gid} | {g.gr_gid for g in grp.getgrall() if MAIL_OWNER in g.gr_mem}
        for directory in [self.base_dir, *self.base_dir.parents]:
            if not directory.exists():  # checked again once start() created it
                continue
            if not _searchable_by(directory, owner.pw_uid, gids):
                raise PostfixError(
                    f"{directory} is not searchable by user {MAIL_OWNER!r}, so the Postfix "
                    f"daemons cannot reach {self.base_dir}; use make_base_dir() (pytest's "
                    "tmp_path is under a 0700 directory)"
                )

    # -- commands ----------------------------------------------------------

    def _postfix(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(POSTFIX), "-c", str(self.config_dir), *args],
            env=_COMMAND_ENV,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def master_pid(self) -> int | None:
        """PID of this instance's running master daemon, if any.

        The pid file is trusted only if that process's working directory is our
        queue directory (master chdirs there), so a stale pid file can never make
        us signal an unrelated process.
        """
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None
        try:
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            return None
        if cwd != self.queue_dir or not _process_alive(pid):
            return None
        return pid

    def is_running(self) -> bool:
        return self.master_pid() is not None

    def start(self, timeout: float = 60.0) -> None:
        """Write the configuration and start the instance.

        Returns once the master daemon reports that it is initialised (``postfix
        start`` waits for that via ``master -w``), so the smtpd port is bound.
        """
        if not postfix_available():
            raise PostfixError("Postfix is not installed or we are not root")
        if self.is_running():
            raise PostfixError(f"instance in {self.base_dir} is already running")
        self._check_base_dir_reachable()  # before creating anything
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o755)  # the daemons must traverse it, see module doc
        self._check_base_dir_reachable()
        self._write_config()
        # The postfix command chdirs into queue_directory before anything else,
        # so that one directory must exist (root-owned, 0755 as postfix-files
        # says); ``postfix start`` creates what lives inside it.
        self.queue_dir.mkdir(mode=0o755, exist_ok=True)
        # ``start`` runs ``post-install create-missing`` (creates the queue and
        # data directories with the right owners) and the integrity checks.
        try:
            result = self._postfix("start", timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.stop()
            raise PostfixError(f"'postfix start' did not finish in {timeout}s") from exc
        if result.returncode != 0 or not self.is_running():
            log_tail = "\n".join(self.log_text().splitlines()[-20:])
            self.stop()
            raise PostfixError(
                f"'postfix -c {self.config_dir} start' failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n--- {self.maillog} ---\n{log_tail}"
            )

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the instance; safe to call at any time, any number of times.

        ``postfix stop`` already escalates to SIGKILL of the master's process
        group after 5 s; if even that command hangs we SIGKILL the (verified)
        master process group ourselves.
        """
        pid = self.master_pid()
        if pid is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            self._postfix("stop", timeout=timeout)
        if self._wait(lambda: not _process_alive(pid), timeout=5.0):
            return
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            self._postfix("abort", timeout=10.0)
        if self._wait(lambda: not _process_alive(pid), timeout=5.0):
            return
        # The master is a session and process group leader (it calls setsid),
        # so its process group is exactly this instance's daemons.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        if not self._wait(lambda: not _process_alive(pid), timeout=5.0):
            raise PostfixError(f"could not stop Postfix master {pid} of {self.base_dir}")

    def flush(self, timeout: float = 30.0) -> None:
        """Ask the queue manager to retry deferred mail now (``postfix flush``)."""
        result = self._postfix("flush", timeout=timeout)
        if result.returncode != 0:
            raise PostfixError(f"'postfix flush' failed: {result.stdout}{result.stderr}")

    # -- observation -------------------------------------------------------

    def queued_files(self) -> list[Path]:
        """Queue files of mail not yet delivered (maildrop/incoming/active/deferred)."""
        files: list[Path] = []
        for queue in PENDING_QUEUES:
            # deferred/ is hashed into subdirectories, hence the walk.
            for dirpath, _dirnames, filenames in os.walk(self.queue_dir / queue):
                files.extend(Path(dirpath) / name for name in filenames)
        return files

    def queue_empty(self) -> bool:
        return not self.queued_files()

    def log_text(self) -> str:
        """The instance's maillog ("" before the first line is written)."""
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def sent_count(self) -> int:
        """Number of successful deliveries (``status=sent``, one per recipient)."""
        return sum(1 for line in self.log_text().splitlines() if _STATUS_SENT.search(line))

    def wait_for_sent(self, count: int, timeout: float, poll: float = 0.1) -> bool:
        """Wait until ``count`` deliveries are logged and the queue is empty."""
        return self._wait(lambda: self.sent_count() >= count and self.queue_empty(), timeout, poll)

    @staticmethod
    def _wait(predicate: Callable[[], bool], timeout: float, poll: float = 0.1) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)

    # -- context manager ---------------------------------------------------

    def __enter__(self) -> PostfixInstance:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def private_postfix(
    smtpd_port: int,
    relayhost: str,
    extra_main_cf: Mapping[str, str] | None = None,
    maps: Mapping[str, str] | None = None,
    guide_setup: str | None = None,
    guide_next_hop: str = "",
    guide_password: str = "",
) -> Iterator[PostfixInstance]:
    """A started instance in a fresh base directory, removed afterwards.

    ``guide_setup`` ("all", "selective") adds the main.cf settings and map files of
    that set-up of docs/integrations/postfix.md, pointed at ``guide_next_hop``.
    """
    base_dir = make_base_dir()
    extra, all_maps = dict(extra_main_cf or {}), dict(maps or {})
    if guide_setup is not None:
        guide_main_cf, guide_maps = guide_config(
            guide_setup, guide_next_hop, (base_dir / "etc").resolve(), guide_password)
        extra, all_maps = {**guide_main_cf, **extra}, {**guide_maps, **all_maps}
    instance = PostfixInstance(base_dir, smtpd_port, relayhost, extra, all_maps)
    try:
        instance.start()
        yield instance
    finally:
        try:
            instance.stop()
        finally:
            shutil.rmtree(base_dir, ignore_errors=True)
