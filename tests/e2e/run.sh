#!/usr/bin/env bash
# lowkey's end-to-end test under a real systemd.
#
#   tests/e2e/run.sh units target/release/lowkey      # bare binary + the units in systemd/
#   tests/e2e/run.sh deb   target/debian/lowkey_*.deb # dpkg -i, ..., dpkg --purge
#   tests/e2e/run.sh rpm   target/rpmbuild/RPMS/*/lowkey-*.rpm   # rpm -i --nodeps, ..., rpm -e
#
# Boots a throw-away container whose PID 1 is systemd (box.sh), installs lowkey there
# and, as a box user, follows the steps of README.md's Install section with the system
# template unit, then with the user units, and for the packages removes them again
# (inside.sh). Each check prints `ok - NAME` or `not ok - NAME`; the last line is
# `N passed, M failed`, and the exit status is non-zero if anything failed.
# Needs root. Installs what it needs (systemd-container pinned to this systemd, curl,
# jq, man-db, rpm) with apt-get when missing. Takes about a minute per mode.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

usage() { echo "usage: $0 units|deb|rpm PATH" >&2; exit 2; }
[ $# -eq 2 ] || usage
mode=$1 artifact=$2
case $mode in units|deb|rpm) ;; *) usage ;; esac
[ -f "$artifact" ] || { echo "e2e: no such file: $artifact" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "e2e: needs root (it boots a container)" >&2; exit 2; }

passed=0 failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $*"; failed=$((failed + 1)); }
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
    exit
}

# Host tools. The container is an overlay of this machine's root, so whatever it needs
# inside is installed here. systemd-container is pinned so apt never upgrades systemd.
need=()
command -v systemd-nspawn >/dev/null 2>&1 \
    || need+=("systemd-container=$(dpkg-query -W -f='${Version}' systemd)")
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
[ "$mode" = deb ] || [ "$mode" = rpm ] && { command -v man >/dev/null 2>&1 || need+=(man-db); }
[ "$mode" = rpm ] && { command -v rpm >/dev/null 2>&1 || need+=(rpm); }
if [ ${#need[@]} -gt 0 ]; then
    echo "# installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 \
             && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1; }
    command -v systemd-nspawn >/dev/null 2>&1 || { not_ok "host has systemd-nspawn"; finish; }
fi

# What the container sees at /e2e: the test scripts, the units, the artifact.
share=$(mktemp -d /tmp/lowkey-e2e-share.XXXXXX)
chmod 755 "$share"
cp "$here/inside.sh" "$share/"
cp -r "$repo/systemd" "$share/units"
case $mode in
    units) install -m 755 "$artifact" "$share/lowkey" ;;
    deb) cp "$artifact" "$share/lowkey.deb" ;;
    rpm) cp "$artifact" "$share/lowkey.rpm" ;;
esac
chmod -R a+rX "$share"

# shellcheck source=tests/e2e/box.sh source-path=SCRIPTDIR
. "$here/box.sh"
cleanup() { box_stop; rm -rf "$share" "$share.log"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

log=$share.log
start=$SECONDS
if box_start "$share"; then
    ok "container with systemd as PID 1 boots ($((SECONDS - start)) s)"
    box_run timeout 900 bash /e2e/inside.sh "$mode" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    passed=$((passed + $(grep -c '^ok - ' "$log")))
    failed=$((failed + $(grep -c '^not ok - ' "$log")))
    # inside.sh ends with this line; without it, it died or timed out half-way.
    grep -q '^# inside.sh: done' "$log" || not_ok "inside.sh ran to the end (exit status $rc)"
    rm -f "$log"
else
    not_ok "container with systemd as PID 1 boots"
    box_console_tail | sed 's/^/# /'
fi
echo "# $mode mode took $((SECONDS - start)) s"
cleanup  # before the summary, which must be the last line
finish
