"""`make test` leaves the system's services as it found them (issue 14, item 5).

``tests/peers/apt_install.sh`` (what ``make test-deps`` and ``make bench-deps``
run) is run for real, with ``/etc`` and ``policy-rc.d`` moved into a scratch
directory and stand-ins on PATH for the tools that would change this machine
(``apt-get``, ``dpkg-query``, ``debconf-set-selections``, ``deb-systemd-helper``,
``update-rc.d``, ``sudo``).  The stand-in ``apt-get install`` does what
opendkim's maintainer scripts do: it asks ``policy-rc.d`` whether it may start
the service, and enables it at boot (a systemd ``.wants`` link and a SysV rc
link).  Before the fix, ``make test`` left opendkim enabled and running.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "tests" / "peers" / "apt_install.sh"

_STUBS = {
    # Every package is missing but those listed in $FAKE_INSTALLED.
    "dpkg-query": 'for p in $FAKE_INSTALLED; do [ "$p" = "$3" ] && { printf ii; exit 0; }; done\n'
                  "exit 1\n",
    "debconf-set-selections": 'cat >> "$FAKE_LOG/debconf"\n',
    # opendkim's postinst: invoke-rc.d asks policy-rc.d, deb-systemd-helper enables.
    "apt-get": '[ "$1" = install ] || exit 0\n'
               'echo "$@" > "$FAKE_LOG/installed"\n'
               'if [ -x "$APT_INSTALL_POLICY_RC_D" ]; then\n'
               '  "$APT_INSTALL_POLICY_RC_D" opendkim.service start; echo $? > "$FAKE_LOG/policy"\n'
               'else echo none > "$FAKE_LOG/policy"; fi\n'
               'mkdir -p "$APT_INSTALL_ETC/systemd/system/multi-user.target.wants" '
               '"$APT_INSTALL_ETC/rc2.d"\n'
               'ln -s /lib/systemd/system/opendkim.service '
               '"$APT_INSTALL_ETC/systemd/system/multi-user.target.wants/opendkim.service"\n'
               'ln -s ../init.d/opendkim "$APT_INSTALL_ETC/rc2.d/S01opendkim"\n',
    "deb-systemd-helper": 'echo "deb-systemd-helper $*" >> "$FAKE_LOG/calls"\n'
                          'rm -f "$APT_INSTALL_ETC"/systemd/system/*.wants/"$2"\n',
    "update-rc.d": 'echo "update-rc.d $*" >> "$FAKE_LOG/calls"\n'
                   'rm -f "$APT_INSTALL_ETC"/rc?.d/S*"$1"\n',
    "sudo": 'exec "$@"\n',
}


@pytest.fixture
def machine(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in _STUBS.items():
        stub = bin_dir / name
        stub.write_text("#!/bin/sh\n" + body, encoding="utf-8")
        stub.chmod(0o755)
    etc = tmp_path / "etc"
    wants = etc / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True)
    # Enabled before: the admin's own choice, never touched.
    (wants / "postfix.service").symlink_to("/lib/systemd/system/postfix.service")
    (tmp_path / "log").mkdir()
    return {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin",
            "APT_INSTALL_ETC": str(etc),
            "APT_INSTALL_POLICY_RC_D": str(tmp_path / "sbin" / "policy-rc.d"),
            "FAKE_LOG": str(tmp_path / "log"), "FAKE_INSTALLED": "postfix"}


def _run(env: dict[str, str], *packages: str) -> subprocess.CompletedProcess[str]:
    Path(env["APT_INSTALL_POLICY_RC_D"]).parent.mkdir(exist_ok=True)
    return subprocess.run(["sh", str(SCRIPT), *packages], capture_output=True, text=True,
                          env=env, timeout=60)


def test_an_install_starts_nothing_and_enables_nothing(machine: dict[str, str]) -> None:
    log, etc = Path(machine["FAKE_LOG"]), Path(machine["APT_INSTALL_ETC"])
    result = _run(machine, "postfix", "opendkim", "swaks")
    assert result.returncode == 0, result.stderr
    assert "installing Debian packages: opendkim swaks" in result.stdout
    assert (log / "installed").read_text().split()[-2:] == ["opendkim", "swaks"]
    # While apt-get ran, policy-rc.d forbade starting the service (101) ...
    assert (log / "policy").read_text().strip() == "101"
    # ... and it is gone again: it was not there before.
    assert not Path(machine["APT_INSTALL_POLICY_RC_D"]).exists()
    # What the install enabled is disabled again, through the packages' own tools.
    calls = (log / "calls").read_text().splitlines()
    assert "deb-systemd-helper disable opendkim.service" in calls
    assert "update-rc.d opendkim disable" in calls
    wants = etc / "systemd" / "system" / "multi-user.target.wants"
    assert sorted(p.name for p in wants.iterdir()) == ["postfix.service"]  # as it was
    assert list((etc / "rc2.d").iterdir()) == []
    assert "No configuration" in (log / "debconf").read_text()


def test_a_policy_that_was_there_stays_and_nothing_missing_does_nothing(
        machine: dict[str, str]) -> None:
    policy = Path(machine["APT_INSTALL_POLICY_RC_D"])
    policy.parent.mkdir()
    policy.write_text("#!/bin/sh\nexit 101\n# the admin's own\n", encoding="utf-8")
    policy.chmod(0o755)
    assert _run(machine, "opendkim").returncode == 0
    assert policy.read_text(encoding="utf-8").endswith("# the admin's own\n")
    log = Path(machine["FAKE_LOG"])
    (log / "installed").unlink()
    assert _run(machine, "postfix").returncode == 0  # installed already
    assert not (log / "installed").exists()


def test_make_installs_through_the_script() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    macro = makefile.split("define apt_install", 1)[1].split("endef", 1)[0]
    assert "tests/peers/apt_install.sh $(1)" in macro and "apt-get" not in macro
    assert "$(call apt_install,$(TEST_DEBS))" in makefile
