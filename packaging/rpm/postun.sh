# %postun of the lowkey .rpm ($1: 0 on erase, 1 on upgrade). Let systemd reread
# or forget the units; after an upgrade restart the instances that run (never start
# one that does not), as %systemd_postun_with_restart does; after an erase drop the
# catalog entries.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    for dir in /run/user/[0-9]*; do
        [ -S "$dir/systemd/private" ] || continue
        systemctl --user --machine="${dir##*/}@" daemon-reload >/dev/null 2>&1 || :
        if [ "$1" -ge 1 ]; then
            systemctl --user --machine="${dir##*/}@" try-restart lowkey.service >/dev/null 2>&1 || :
        fi
    done
    if [ "$1" -ge 1 ]; then
        systemctl try-restart 'lowkey@*.service' >/dev/null 2>&1 || :
    fi
fi
if [ "$1" -eq 0 ] && command -v journalctl >/dev/null 2>&1; then
    journalctl --update-catalog >/dev/null 2>&1 || :
fi
exit 0
