# shellcheck shell=bash
# A throw-away container whose PID 1 is a real systemd, for lowkey's end-to-end test.
# Sourced by run.sh; needs root and systemd-nspawn.
#
#   box_start SHARE_DIR   boot it; SHARE_DIR is mounted read-only at /e2e inside
#   box_run CMD [ARG]...  run a command inside as root (clean environment, PATH set)
#   box_stop              power it off and clean up, whatever state it is in
#
# How: nspawn 252 refuses --directory=/, so inside a private mount namespace we put a
# tmpfs on /run, move into a cgroup subtree of our own, overlay-mount this machine's
# root with the writes going to a tmpfs, give it a fresh machine-id, and boot that
# with systemd-nspawn. Everything written inside vanishes with the tmpfs, so the host
# is untouched. The boot target is basic.target, so services the host enables stay off.

BOX_NAME=lowkey-e2e-$$
BOX_WORK=
BOX_PID1=
BOX_LAUNCHER=

box_start() {
    local share=$1
    BOX_WORK=$(mktemp -d /tmp/lowkey-e2e.XXXXXX)
    cat > "$BOX_WORK/launch.sh" <<'LAUNCH'
#!/bin/bash
set -euo pipefail
work=$1 name=$2 share=$3; shift 3
echo $$ > "$work/launcher.pid"
# nspawn keeps its runtime state in /run: a private one leaves the host's alone.
mount -n -t tmpfs -o mode=755 tmpfs /run
# The container's systemd takes over the cgroup it starts in: give it its own.
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
    hierarchies=/sys/fs/cgroup
else
    hierarchies="/sys/fs/cgroup/systemd /sys/fs/cgroup/unified"
fi
for h in $hierarchies; do
    [ -d "$h" ] || continue
    mkdir -p "$h/$name"
    echo $$ > "$h/$name/cgroup.procs"
done
mkdir -p "$work/layers" "$work/root"
mount -t tmpfs -o mode=755 tmpfs "$work/layers"
mkdir -p "$work/layers/upper" "$work/layers/work"
mount -t overlay overlay \
    -o "lowerdir=/,upperdir=$work/layers/upper,workdir=$work/layers/work" "$work/root"
systemd-id128 new > "$work/root/etc/machine-id"
# Debian images may ship a policy-rc.d that answers 101 ("do not start"), which makes
# deb-systemd-invoke in maintainer scripts a no-op. A real box has none.
rm -f "$work/root/usr/sbin/policy-rc.d"
exec systemd-nspawn --quiet --directory="$work/root" --machine="$name" \
    --register=no --keep-unit --link-journal=no --private-network \
    --bind-ro="$share:/e2e" --boot --console=read-only -- "$@"
LAUNCH
    chmod +x "$BOX_WORK/launch.sh"

    local args=(systemd.unit=basic.target)
    local unit
    # Timers and services of the host image that would only add noise or load.
    for unit in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer \
                fstrim.timer dpkg-db-backup.timer logrotate.timer console-getty.service \
                postgresql.service; do
        args+=("systemd.mask=$unit")
    done
    setsid unshare --mount --propagation private \
        "$BOX_WORK/launch.sh" "$BOX_WORK" "$BOX_NAME" "$share" "${args[@]}" \
        > "$BOX_WORK/console.log" 2>&1 < /dev/null &

    local p
    for _ in $(seq 200); do [ -s "$BOX_WORK/launcher.pid" ] && break; sleep 0.05; done
    BOX_LAUNCHER=$(cat "$BOX_WORK/launcher.pid" 2>/dev/null) || true
    [ -n "$BOX_LAUNCHER" ] || return 1
    for _ in $(seq 400); do
        for p in $(ps -o pid= --ppid "$BOX_LAUNCHER" 2>/dev/null); do
            [ "$(cat "/proc/$p/comm" 2>/dev/null)" = systemd ] && BOX_PID1=$p
        done
        [ -n "$BOX_PID1" ] && break
        sleep 0.05
    done
    [ -n "$BOX_PID1" ] || return 1
    local state
    for _ in $(seq 600); do
        state=$(box_run systemctl is-system-running 2>/dev/null) || true
        case $state in running|degraded) break ;; esac
        sleep 0.1
    done
    case $state in running|degraded) ;; *) return 1 ;; esac
    # nspawn puts a FIFO of its own (a deleted file) over /proc/kmsg. A service that has
    # ProtectKernelLogs= but no fresh /proc (a user service) then fails to mount over it,
    # which cannot happen on a real machine: give the container the kernel's /proc/kmsg.
    if box_run grep -q ' /proc/kmsg ' /proc/self/mountinfo; then
        box_run umount /proc/kmsg
    fi
    return 0
}

box_run() {
    nsenter -t "$BOX_PID1" -a env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 TERM=dumb SYSTEMD_PAGER=cat PAGER=cat "$@"
}

box_console_tail() {
    [ -n "$BOX_WORK" ] && [ -s "$BOX_WORK/console.log" ] && tail -n 30 "$BOX_WORK/console.log"
}

box_stop() {
    local h
    if [ -n "$BOX_PID1" ] && kill -0 "$BOX_PID1" 2>/dev/null; then
        box_run systemctl poweroff --no-block >/dev/null 2>&1 || kill -s RTMIN+4 "$BOX_PID1" 2>/dev/null
    fi
    if [ -n "$BOX_LAUNCHER" ]; then
        for _ in $(seq 150); do kill -0 "$BOX_LAUNCHER" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$BOX_LAUNCHER" 2>/dev/null; then
            kill -KILL "$BOX_LAUNCHER" 2>/dev/null
            sleep 0.5
        fi
    fi
    for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
        [ -d "$h/$BOX_NAME" ] && find "$h/$BOX_NAME" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    [ -n "$BOX_WORK" ] && rm -rf "$BOX_WORK"
    BOX_PID1="" BOX_LAUNCHER="" BOX_WORK=""
}
