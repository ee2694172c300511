# tests/container/lib.sh - what run.sh and tarball.sh share (bash, sourced).
#
# TAP-like output: ok/notok/check print "ok - ..." / "not ok - ..." and count
# into $checks and $fails; note prints "# ...".  fuse_mounted and
# umount_all read /proc/self/mountinfo only, never the mount itself (a dead
# or hung FUSE mount must not hang the test).  podman_conf writes the podman
# settings this machine needs into $work/containers.conf unless
# CONTAINERS_CONF is set.  The caller sets $work first.
checks=0
fails=0

ok() { checks=$((checks + 1)); echo "ok - $1"; }
notok() { checks=$((checks + 1)); fails=$((fails + 1)); echo "not ok - $1${2:+: $2}"; }
# check NAME CMD...: run CMD, output shown only when it fails.
check() {
    local name=$1 out; shift
    if out=$("$@" 2>&1); then ok "$name"; else notok "$name" "$(echo "$out" | tail -n 5)"; fi
}
note() { echo "# $*"; }
skip() { echo "1..0 # SKIP $*"; exit 77; }
now() { date +%s.%N; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.2f", a - b }'; }

# fuse_mounted DIR: a FUSE file system is mounted at DIR (mountinfo: field 5
# is the mount point, the field after "-" the type).
fuse_mounted() {
    awk -v d="$1" '$5 == d { for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i + 1) ~ /^fuse/) f = 1; break } }
        END { exit !f }' /proc/self/mountinfo
}

# umount_all DIR...: whatever is mounted at each DIR, FUSE or not, detached
# (in the order given: innermost first).
umount_all() {
    local m
    for m in "$@"; do
        if fuse_mounted "$m"; then fusermount3 -uz "$m"; fi
        while grep -q " $m " /proc/self/mountinfo 2>/dev/null; do umount -l "$m" || break; done
    done
}

# need_podman: skip (77) unless podman can be asked to run containers here.
need_podman() {
    command -v podman >/dev/null || skip "podman is not installed"
    [ -e /dev/fuse ] || skip "/dev/fuse is missing"
    [ "$(id -u)" -eq 0 ] || skip "needs root (rootful podman, rshared host mounts)"
}

# podman 4.3 on Debian 12: Debian's runc (crun refuses hybrid cgroups), ulimits
# no higher than the host's, file event log (no journald in CI containers).
podman_conf() {
    [ -z "${CONTAINERS_CONF:-}" ] || return 0
    export CONTAINERS_CONF="$work/containers.conf"
    # podman's defaults (nofile 1048576, nproc 4194304) above the host's hard
    # limits make runc fail with EPERM; 32768 is as high as nproc went here.
    lim() { local v; v=$(ulimit "-H$1"); [ "$v" = unlimited ] || [ "$v" -gt "$2" ] && v=$2; echo "$v"; }
    local ulimits cgm=systemd
    ulimits="\"nofile=$(lim n 1048576):$(lim n 1048576)\", \"nproc=$(lim u 32768):$(lim u 32768)\""
    # Without systemd as init, podman must manage cgroups itself.
    [ -d /run/systemd/system ] || cgm=cgroupfs
    cat >"$CONTAINERS_CONF" <<CONF
[containers]
default_ulimits = [$ulimits]
[engine]
runtime = "runc"
cgroup_manager = "$cgm"
events_logger = "file"
CONF
}

# hardened FILE: PIE (or a shared object, or static-pie), full RELRO
# (GNU_RELRO and BIND_NOW) and fortify (the fortified calls' __*_chk
# symbols); with --stack-protector also __stack_chk_fail among the dynamic
# symbols (of a dynamically linked file: static glibc brings it along either
# way).  Prints what is missing.
hardened() {
    local sp=0 f miss=() syms
    if [ "$1" = --stack-protector ]; then sp=1; shift; fi
    f=$1
    syms=$(readelf -sW --dyn-syms "$f")
    readelf -hW "$f" | grep -q 'Type:.*DYN' || miss+=("PIE")
    readelf -lW "$f" | grep -q GNU_RELRO || miss+=("RELRO")
    readelf -dW "$f" | grep -q 'BIND_NOW\|FLAGS_1.*NOW' || miss+=("BIND_NOW")
    grep -q ' __[a-z_]*_chk\(@.*\)\?$' <<<"$syms" || miss+=("fortify")
    if [ $sp = 1 ]; then
        readelf --dyn-syms -W "$f" | grep -q '__stack_chk_fail' || miss+=("stack protector")
    fi
    [ ${#miss[@]} -eq 0 ] || { echo "$f lacks: ${miss[*]}"; return 1; }
}
