# %post of the lowkey .rpm ($1: 1 on install, 2 on upgrade). Make systemd see the
# new units and index the journal catalog. Nothing is enabled or started: each user
# opts in with `systemctl enable --now lowkey@USER.socket` (or the user unit).
# Running instances are restarted by the old package's %postun on upgrade.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    # Users' own service managers (lingering or logged in) read lowkey.service too.
    for dir in /run/user/[0-9]*; do
        [ -S "$dir/systemd/private" ] || continue
        systemctl --user --machine="${dir##*/}@" daemon-reload >/dev/null 2>&1 || :
    done
fi
# Compile /usr/lib/systemd/catalog/lowkey.catalog into journald's index (journalctl -x).
if command -v journalctl >/dev/null 2>&1; then
    journalctl --update-catalog >/dev/null 2>&1 || :
fi
exit 0
