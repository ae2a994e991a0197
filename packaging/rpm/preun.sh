# %preun of the lowkey .rpm ($1: 0 on erase, 1 on upgrade). On erase, stop every
# instance before its binary goes: the sockets first, so that no request starts a
# service again, then the services, in the system manager and in every user's
# manager; and disable what `systemctl enable lowkey@USER.socket` (or `--global
# enable lowkey.socket`) enabled in /etc, as %systemd_preun does for plain units.
# Users' homes are never touched.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop 'lowkey@*.socket' 'lowkey@*.service' >/dev/null 2>&1 || :
        for dir in /run/user/[0-9]*; do
            [ -S "$dir/systemd/private" ] || continue
            systemctl --user --machine="${dir##*/}@" stop lowkey.socket lowkey.service >/dev/null 2>&1 || :
        done
    fi
    for link in /etc/systemd/system/*.wants/lowkey@*.socket \
                /etc/systemd/system/*.wants/lowkey@*.service; do
        if [ -L "$link" ]; then
            systemctl --no-reload disable "${link##*/}" >/dev/null 2>&1 || :
        fi
    done
    systemctl --global disable lowkey.socket lowkey.service >/dev/null 2>&1 || :
fi
exit 0
