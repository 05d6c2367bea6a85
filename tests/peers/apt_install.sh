#!/bin/sh
# Installs those of the Debian packages named that are not installed ("ii": a removed package
# whose configuration files remain is known to dpkg but missing), as root or through sudo,
# and leaves the system's services as it found them: `make test` and `make bench` install
# Postfix, OpenDKIM and PostgreSQL for private instances of their own on high loopback ports,
# never to run the system's (issue 14: `make test` enabled the system's opendkim service).
#
# - While apt-get runs, a policy-rc.d that answers 101 ("action forbidden", Debian's
#   invoke-rc.d policy interface) keeps the maintainer scripts from starting any service;
#   one that was there already is left as it is.
# - What the install enabled at boot (a new systemd .wants link, a new SysV rc S link) is
#   disabled again with the tools the packages used (deb-systemd-helper, update-rc.d), which
#   also remember it, so a later upgrade does not enable it again. Links that were there
#   before are not touched.
# - Postfix is installed without a configuration ("No configuration" in debconf).
#
# APT_INSTALL_ETC and APT_INSTALL_POLICY_RC_D move /etc and /usr/sbin/policy-rc.d for the
# test of this script (tests/test_apt_install.py).
set -eu

ETC=${APT_INSTALL_ETC:-/etc}
POLICY=${APT_INSTALL_POLICY_RC_D:-/usr/sbin/policy-rc.d}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

missing=""
for p in "$@"; do
  dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing="$missing $p"
done
[ -n "$missing" ] || exit 0
echo "installing Debian packages:$missing"

# Every link that starts a service at boot: systemd's *.wants/ and SysV's rc S links.
enabled() {
  { find "$ETC/systemd/system" -path '*.wants/*' 2>/dev/null || true
    ls -1d "$ETC"/rc[S0-6].d/S* 2>/dev/null || true; } | sort
}

before=$(mktemp)
after=$(mktemp)
ours=""
cleanup() {
  if [ -n "$ours" ]; then $SUDO rm -f "$POLICY"; fi
  rm -f "$before" "$after"
}
trap cleanup EXIT
enabled > "$before"
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n# tests/peers/apt_install.sh: no service starts while it installs.\nexit 101\n' \
    | $SUDO tee "$POLICY" > /dev/null
  $SUDO chmod 755 "$POLICY"
  ours=1
fi

echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO apt-get update -qq
# shellcheck disable=SC2086 # one word per package
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing

enabled > "$after"
comm -13 "$before" "$after" | while read -r link; do
  unit=$(basename "$link")
  case "$link" in
    */rc?.d/S*)
      name=$(echo "$unit" | sed 's/^S[0-9]*//')
      $SUDO update-rc.d "$name" disable > /dev/null 2>&1 || $SUDO rm -f "$link" ;;
    *)
      $SUDO deb-systemd-helper disable "$unit" > /dev/null 2>&1 || $SUDO rm -f "$link" ;;
  esac
  echo "left $unit disabled, as it was before the install"
done
