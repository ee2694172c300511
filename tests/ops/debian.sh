#!/usr/bin/env bash
# tests/ops/debian.sh - the .deb's life under a real systemd: install, start,
# upgrade, a crash, a second mount from the template, removal.
#
# 1. Builds the package from this tree (contrib/debian/build-deb.sh, unit
#    tests skipped: nocheck) and a second one from a scratch copy whose
#    changelog has a newer version, as an upgrade would bring.
# 2. Reads their maintainer scripts: nothing stops a unit on upgrade, prerm
#    stops every efscache unit on remove, nothing starts or enables one.
# 3. In a Debian 12 container running systemd as PID 1 (podman
#    --systemd=always, /dev/fuse, SYS_ADMIN), with the packages' libraries
#    preinstalled so it needs no network:
#    - install: the unit is neither enabled nor started;
#    - configure /etc/default/efscache, start: the FUSE mount is visible from
#      outside the service (a shell that is not in its cgroup: the unit's
#      hardening makes no private mount namespace) and serves the right bytes;
#      systemd-analyze security's score is printed;
#    - upgrade to the newer package: the same daemon (MainPID) keeps serving
#      the mount, still running the old binary (its /proc/PID/exe is
#      deleted), the postinst says so; restart: a new daemon on the new
#      binary;
#    - kill -9 of the daemon: systemd restarts it, ExecStartPre clears the
#      dead mount (ENOTCONN) and the new daemon mounts again;
#    - efscache@second.service from /etc/default/efscache-second: a second
#      mount beside the first;
#    - remove: both units stopped, no daemon left, no mount left.
#
# Prints "ok - ..." / "not ok - ..." lines; exit 0, 1, or 77 (skip) when
# podman, mmdebstrap or dpkg-buildpackage is missing or systemd cannot run in
# a container here.  Needs the network to the Debian archive for the root.
# Environment: EFSCACHE_TEST_SYSTEMD_BASE=IMAGE reuses a base image (kept);
# EFSCACHE_TEST_DEBS=DIR reuses efscache_*.deb built before (old and new).
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
tag="efscache-debtest-$$"
work=$(mktemp -d /tmp/efscache-debtest.XXXXXX)
base_img=${EFSCACHE_TEST_SYSTEMD_BASE:-localhost/$tag-base:bookworm}
ctr="$tag"
# shellcheck source=tests/ops/podman-lib.sh
. "$here/tests/ops/podman-lib.sh"
# check NAME CMD...: run CMD, its output shown only when it fails.
check() {
    local name=$1 out; shift
    if out=$("$@" 2>&1); then ok "$name"; else notok "$name" "$(echo "$out" | tail -n 8)"; fi
}
# inside CMD: run a shell command in the container (outside every unit).
inside() { podman exec "$ctr" sh -c "$1"; }

cleanup() {
    podman rm -f -t 5 "$ctr" >/dev/null 2>&1
    [ -n "${EFSCACHE_TEST_SYSTEMD_BASE:-}" ] || podman rmi -f "$base_img" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" -eq 0 ] || skip "needs root (rootful podman)"
for c in podman mmdebstrap dpkg-buildpackage dpkg-deb; do
    command -v $c >/dev/null || skip "$c is not installed"
done
[ -e /dev/fuse ] || skip "/dev/fuse is missing"

podman_settings

# ---- 1. the packages: this tree, and an upgrade of it ----------------------
if [ -n "${EFSCACHE_TEST_DEBS:-}" ]; then
    debs=$EFSCACHE_TEST_DEBS
else
    debs="$work/debs"
    mkdir -p "$debs/old" "$debs/new" "$work/tree"
    t=$(date +%s)
    if ! DEB_BUILD_OPTIONS=nocheck EFSCACHE_DEB_JOBS=2 "$here/contrib/debian/build-deb.sh" \
        "$debs/old" >"$work/build-old.log" 2>&1; then
        tail -n 30 "$work/build-old.log"
        notok "the package builds"
        exit 1
    fi
    (cd "$here" && tar --exclude='./build*' --exclude=./.git --exclude='./deb-out*' \
        --exclude='__pycache__' -cf - .) | tar -C "$work/tree" -xf -
    oldv=$(dpkg-parsechangelog -l "$here/contrib/debian/changelog" -S Version)
    newv="$oldv+upgradetest1"
    { printf 'efscache (%s) unstable; urgency=medium\n\n  * Upgrade test.\n\n' "$newv"
      printf ' -- efscache developers <dev@efscache.invalid>  %s\n\n' "$(date -R)"
      cat "$here/contrib/debian/changelog"; } > "$work/tree/contrib/debian/changelog.new"
    mv "$work/tree/contrib/debian/changelog.new" "$work/tree/contrib/debian/changelog"
    if ! DEB_BUILD_OPTIONS=nocheck EFSCACHE_DEB_JOBS=2 "$work/tree/contrib/debian/build-deb.sh" \
        "$debs/new" >"$work/build-new.log" 2>&1; then
        tail -n 30 "$work/build-new.log"
        notok "the upgrade package builds"
        exit 1
    fi
    echo "# two packages built in $(( $(date +%s) - t )) s"
fi
old_deb=$(ls "$debs"/old/efscache_*.deb | head -n1)
new_deb=$(ls "$debs"/new/efscache_*.deb | head -n1)
new_ver=$(dpkg-deb -f "$new_deb" Version)
ok "packages: $(basename "$old_deb"), $(basename "$new_deb")"

# ---- 2. maintainer scripts -------------------------------------------------
dpkg-deb -e "$old_deb" "$work/ctl"
if [ ! -e "$work/ctl/preinst" ] || ! grep -q "stop" "$work/ctl/preinst"; then
    ok "preinst stops nothing (an upgrade leaves the daemon running)"
else
    notok "preinst stops nothing (an upgrade leaves the daemon running)" "$(cat "$work/ctl/preinst")"
fi
if grep -q '"\$1" = remove' "$work/ctl/prerm" && grep -q "deb-systemd-invoke stop" "$work/ctl/prerm" &&
    grep -q "efscache@\*.service" "$work/ctl/prerm"; then
    ok "prerm stops efscache.service and every efscache@ instance on remove only"
else
    notok "prerm stops efscache.service and every efscache@ instance on remove only" "$(cat "$work/ctl/prerm")"
fi
if ! grep -q "deb-systemd-invoke" "$work/ctl/postinst" &&
    ! grep -q "was-enabled defaults to true" "$work/ctl/postinst"; then
    ok "postinst neither starts nor enables a unit"
else
    notok "postinst neither starts nor enables a unit" "$(grep -n "invoke\|enable" "$work/ctl/postinst")"
fi

# ---- 3. under systemd ------------------------------------------------------
if ! podman image exists "$base_img"; then
    t=$(date +%s)
    if ! mmdebstrap --quiet --variant=minbase \
        --include=systemd,systemd-sysv,dbus,fuse3,libfuse3-3,libxxhash0,libmicrohttpd12,procps \
        bookworm - 2>"$work/mmdebstrap.log" |
        podman import -q - "$base_img" >/dev/null 2>"$work/import.log"; then
        cat "$work/mmdebstrap.log" "$work/import.log" >&2
        skip "could not make a Debian 12 root with systemd (no apt mirror?)"
    fi
    echo "# systemd root made in $(( $(date +%s) - t )) s"
fi
podman run -d --name "$ctr" --systemd=always --network none \
    --device /dev/fuse --cap-add SYS_ADMIN --security-opt apparmor=unconfined \
    "$base_img" /sbin/init >/dev/null 2>"$work/run.err" ||
    skip "podman cannot run systemd in a container: $(head -n1 "$work/run.err")"
state=
for _ in $(seq 1 100); do
    state=$(podman exec "$ctr" systemctl is-system-running 2>/dev/null)
    case $state in running | degraded) break ;; esac
    sleep 0.2
done
case $state in
running | degraded) ok "systemd runs in the container ($state)" ;;
*) skip "systemd did not come up in the container (state '$state')" ;;
esac
# efsmounts DIR (in the container): how many efscache mounts sit at DIR in
# PID 1's mountinfo (field 5 is the mount point, the field after "-" the type).
podman exec -i "$ctr" sh -c 'cat > /usr/local/bin/efsmounts && chmod +x /usr/local/bin/efsmounts' <<'EOF'
#!/bin/sh
awk -v d="$1" '$5 == d { for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i + 1) == "fuse.efscache") n++; break } }
    END { print n + 0 }' /proc/1/mountinfo
EOF
podman cp "$old_deb" "$ctr:/tmp/old.deb"
podman cp "$new_deb" "$ctr:/tmp/new.deb"

check "install (dpkg -i, no network)" inside "dpkg -i /tmp/old.deb"
check "after install: efscache.service neither enabled nor started" \
    inside "! systemctl is-enabled -q efscache.service && ! systemctl is-active -q efscache.service"
check "the tmpfiles.d rule keeps /tmp/efscache from being aged" \
    inside "grep -qx 'x /tmp/efscache' /usr/lib/tmpfiles.d/efscache.conf"

inside "mkdir -p /mnt/efs/sub /srv/efs2 && head -c 3000000 /dev/urandom > /mnt/efs/model.bin &&
    echo second > /srv/efs2/hello.txt &&
    cat > /etc/default/efscache <<'EOF'
EFSCACHE_SOURCE=/mnt/efs
EFSCACHE_MOUNTPOINT=/mnt/models
EFSCACHE_OPTIONS=cache_dir=/var/cache/efscache,allow_other,metrics=127.0.0.1:10190
EOF"
want=$(inside "sha256sum < /mnt/efs/model.bin")
check "systemctl start efscache" inside "systemctl start efscache.service"
check "the mount is visible outside the service (no private mount namespace)" \
    inside "[ \$(efsmounts /mnt/models) = 1 ] && p=\$(systemctl show -p MainPID --value efscache.service) &&
        [ \"\$(readlink /proc/\$p/ns/mnt)\" = \"\$(readlink /proc/1/ns/mnt)\" ]"
check "right bytes through the mount, read from outside the service" \
    test "$(inside "sha256sum < /mnt/models/model.bin")" = "$want"
check "Type=notify: active once the mount is live" inside "systemctl is-active -q efscache.service"
echo "# systemd-analyze security (in the container):"
inside "systemd-analyze security efscache.service 2>&1 | tail -n 1" | sed 's/^/#   /'
check "no complaint from systemd about the unit's settings" \
    sh -c "! podman exec $ctr journalctl -b --no-pager 2>/dev/null | grep 'efscache.*service:[0-9]'"
pid1=$(inside "systemctl show -p MainPID --value efscache.service")

# Upgrade: no stop; the old daemon keeps serving, on the old binary.
out=$(inside "dpkg -i /tmp/new.deb" 2>&1)
check "upgrade (dpkg -i of $new_ver)" test "$(inside "dpkg-query -W -f='\${Version}' efscache")" = "$new_ver"
pid2=$(inside "systemctl show -p MainPID --value efscache.service")
check "after the upgrade: the same daemon (MainPID $pid1) still serves" test "$pid2" = "$pid1" -a -n "$pid1" -a "$pid1" != 0
check "after the upgrade: the mount stayed live, right bytes" \
    sh -c "[ \"\$(podman exec $ctr sh -c 'sha256sum < /mnt/models/model.bin')\" = '$want' ]"
check "after the upgrade: systemd has the new unit files (postinst reloaded it)" \
    sh -c "! podman exec $ctr systemctl status efscache.service 2>&1 | grep -q 'changed on disk'"
check "after the upgrade: the daemon still runs the old binary (exe deleted)" \
    inside "readlink /proc/$pid1/exe | grep -q '(deleted)'"
if echo "$out" | grep -q "keep the old version until restarted: efscache.service"; then
    ok "the upgrade says that the running unit keeps the old version"
else
    notok "the upgrade says that the running unit keeps the old version" "$out"
fi
check "restart: a new daemon on the new binary, the mount live" \
    inside "systemctl restart efscache.service && p=\$(systemctl show -p MainPID --value efscache.service) &&
        [ \$p != $pid1 ] && ! readlink /proc/\$p/exe | grep -q deleted &&
        [ \$(efsmounts /mnt/models) = 1 ]"

# What a restart does to readers (docs/operations.md, "Upgrading"): a file
# held open (never read, so nothing is in the page cache) fails with
# ENOTCONN; between stop and start the mountpoint is the directory under it
# (empty: an open gets ENOENT) and a file written there goes to the root disk,
# hidden once the new mount is on top.
inside "head -c 100000 /dev/urandom > /mnt/efs/unread.bin"
gap=$(inside "exec 3</mnt/models/unread.bin || exit 9
    systemctl stop efscache.service
    echo \"entries=\$(ls -A /mnt/models | wc -l)\"
    LC_ALL=C cat /mnt/models/model.bin 2>&1 >/dev/null | grep -q 'No such file' && echo 'gap open ENOENT'
    echo written-in-gap > /mnt/models/gap.txt && echo 'gap write ok'
    systemctl start efscache.service
    LC_ALL=C cat <&3 >/dev/null" 2>&1)
echo "$gap" > "$work/gap.txt"
sed 's/^/#   restart: /' "$work/gap.txt"
check "restart: a file held open fails with ENOTCONN" \
    grep -q 'Transport endpoint is not connected' "$work/gap.txt"
check "restart: in the gap the mountpoint is an empty directory, an open gets ENOENT" \
    sh -c "grep -qx 'entries=0' '$work/gap.txt' && grep -qx 'gap open ENOENT' '$work/gap.txt'"
check "restart: a file written in the gap is on the root disk, hidden by the new mount" \
    sh -c "grep -qx 'gap write ok' '$work/gap.txt' && podman exec $ctr sh -c '
        [ ! -e /mnt/models/gap.txt ] && [ ! -e /mnt/efs/gap.txt ] && mkdir -p /tmp/rootview &&
        mount --bind / /tmp/rootview && grep -q written-in-gap /tmp/rootview/mnt/models/gap.txt
        r=\$?; umount /tmp/rootview; exit \$r'"

# A crash: the dead mount is cleared by ExecStartPre and the mount comes back.
pid3=$(inside "systemctl show -p MainPID --value efscache.service")
inside "kill -9 $pid3"
back=0
for _ in $(seq 1 100); do
    p=$(inside "systemctl show -p MainPID --value efscache.service")
    if [ -n "$p" ] && [ "$p" != 0 ] && [ "$p" != "$pid3" ] && inside "systemctl is-active -q efscache.service" &&
        [ "$(inside "sha256sum < /mnt/models/model.bin" 2>/dev/null)" = "$want" ]; then
        back=1
        break
    fi
    sleep 0.2
done
if [ $back = 1 ]; then
    ok "kill -9: systemd restarts it, the dead mount is cleared, right bytes again"
else
    notok "kill -9: systemd restarts it, the dead mount is cleared, right bytes again" \
        "$(podman exec "$ctr" journalctl -u efscache.service -b --no-pager 2>&1 | tail -n 15)"
fi
check "the journal shows the dead mount cleared (ENOTCONN)" \
    sh -c "podman exec $ctr journalctl -u efscache.service -b --no-pager | grep -q 'dead FUSE mount (ENOTCONN)'"
check "only one efscache mount at /mnt/models (nothing stacked)" \
    test "$(inside "efsmounts /mnt/models")" = 1

# The template: a second mount with its own file.
inside "cat > /etc/default/efscache-second <<'EOF'
EFSCACHE_SOURCE=/srv/efs2
EFSCACHE_MOUNTPOINT=/mnt/second
EFSCACHE_OPTIONS=cache_dir=/var/cache/efscache-second,metrics=127.0.0.1:10191
EOF"
check "efscache@second.service starts from /etc/default/efscache-second" \
    inside "systemctl start efscache@second.service && [ \$(efsmounts /mnt/second) = 1 ] &&
        [ \"\$(cat /mnt/second/hello.txt)\" = second ]"
check "efscache@missing.service without its file fails, naming the file" \
    sh -c "! podman exec $ctr systemctl start efscache@missing.service 2>/dev/null &&
           podman exec $ctr journalctl -b --no-pager |
           grep -q 'Assertion failed for efscache@missing.service.*/etc/default/efscache-missing'"
check "both mounts at once" \
    inside "[ \$(efsmounts /mnt/models) = 1 ] && [ \$(efsmounts /mnt/second) = 1 ]"
# (no man(1) in the container: the Documentation= lines cannot be checked)
check "systemd-analyze verify of the installed units" \
    inside "! systemd-analyze verify efscache.service efscache@second.service 2>&1 | grep -v \"Command 'man \" | grep ."

# Remove: every unit stops, nothing is left mounted or running.
check "remove (dpkg -r)" inside "dpkg -r efscache"
check "after remove: both units stopped" \
    inside "! systemctl is-active -q efscache.service && ! systemctl is-active -q efscache@second.service"
check "after remove: no efscache process" inside "! pgrep -x efscache"
check "after remove: no efscache mount" inside "! grep -q ' - fuse.efscache ' /proc/1/mountinfo"

[ $fails -eq 0 ]
