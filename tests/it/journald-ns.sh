#!/bin/bash
# Runs inside `unshare --mount --propagation private`: a private /run with a standalone
# journald in it, so a test can log to a real journald and read it back with
# journalctl, without touching the machine's own journal. Prints "ready" once the
# journal socket is up, then holds the namespace until killed.
set -euo pipefail
work=$1
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/systemd/journal
printf '[Journal]\nStorage=volatile\nRateLimitBurst=0\nForwardToSyslog=no\nForwardToWall=no\n' > "$work/journald.conf"
mount --bind "$work/journald.conf" /etc/systemd/journald.conf
/lib/systemd/systemd-journald &
for _ in $(seq 200); do
    [ -S /run/systemd/journal/socket ] && break
    sleep 0.05
done
[ -S /run/systemd/journal/socket ] || { echo "journald did not start" >&2; exit 1; }
echo ready
exec sleep infinity
