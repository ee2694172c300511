#!/bin/sh
# efscache-entrypoint - mount EFSCACHE_SOURCE at EFSCACHE_MOUNTPOINT and stay
# in the foreground as the container's main process.
#
# The daemon runs as PID 1 (exec): SIGTERM from "podman/docker stop" or the
# kubelet reaches it directly, it unmounts (the host's view of the shared
# mount goes with it, no "Transport endpoint is not connected") and exits 0.
# Extra arguments are passed to efscache (e.g. -o metrics=0.0.0.0:10190).
# "efscachectl ..." as arguments runs that instead (debugging); "health"
# checks the daemon without touching the mount (HEALTHCHECK, ECS).
#
# What is already at EFSCACHE_MOUNTPOINT decides what happens first:
# - nothing, or a directory: mount.
# - a dead FUSE mount (its daemon was killed: a lookup fails with ENOTCONN):
#   detach it, then mount.  Consumers that bind the mount point's parent see
#   the new mount replace it.
# - a live mount (another efscache still serving it, e.g. the pod being
#   replaced): never touched.  Wait up to EFSCACHE_WAIT_LIVE seconds (default
#   90) for it to go, then mount; exit 1 if it stays.
#
# Bundled mode, "-- COMMAND [ARGS]": mount, run COMMAND beside the daemon in
# this container (an image built FROM this one, or ECS where bind propagation
# cannot be set), forward SIGTERM/SIGINT to it, then unmount and exit with its
# status.
set -eu

# mounted DIR: a FUSE file system is mounted at DIR (mountinfo field 5 is the
# mount point, the field after "-" the type).  Reads /proc only: never
# touches the mount itself, which may hang or be dead.
mounted() {
    awk -v d="$1" '$5 == d { for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i + 1) ~ /^fuse/) f = 1; break } }
        END { exit !f }' /proc/self/mountinfo
}

# state DIR: "none", "dead" (its daemon is gone: a lookup through it fails
# with ENOTCONN) or "live" (anything else, a lookup that hangs included: a
# daemon that is slow to answer is still someone's live mount).  A lookup of
# a name nobody uses, not a stat of DIR: the kernel must send it to the
# daemon, where a stat of the mount point is answered from cached attributes
# for up to a minute after the daemon died.  A new name each time (state
# runs in a subshell, so from the clock): the kernel remembers a name found
# absent (for as long as a stat's attributes).
state() {
    mounted "$1" || { echo none; return; }
    if err=$(LC_ALL=C timeout 10 stat -c %i "$1/.efscache-probe-$$-$(date +%s%N)" 2>&1 >/dev/null); then
        echo live
    else
        case $err in
        *"not connected"*) echo dead ;;
        *) echo live ;;
        esac
    fi
}

src=${EFSCACHE_SOURCE:-/efs}
mnt=${EFSCACHE_MOUNTPOINT:-/mnt/efscache}
opts=${EFSCACHE_OPTIONS:-cache_dir=/var/cache/efscache,allow_other,require_source_mount=nfs4}
wait_live=${EFSCACHE_WAIT_LIVE:-90}

case "${1:-}" in
efscachectl|sh|bash) exec "$@" ;;
health)
    # Healthy while an efscache process runs and its mount is in mountinfo.
    # Nothing here goes through the mount or to the source: a throttled EFS
    # must not turn into restarts (the daemon's own -o metrics /healthz is
    # the same kind of check over HTTP).
    for p in /proc/[0-9]*; do
        if [ "$(cat "$p/comm" 2>/dev/null)" = efscache ]; then
            if mounted "$mnt"; then exit 0; fi
            echo "efscache-entrypoint: no FUSE mount at $mnt" >&2
            exit 1
        fi
    done
    echo "efscache-entrypoint: no efscache process" >&2
    exit 1 ;;
esac

if [ ! -e /dev/fuse ]; then
    echo "efscache-entrypoint: /dev/fuse is missing: run with --device /dev/fuse" \
         "--cap-add SYS_ADMIN (or privileged); AWS Fargate and Lambda offer no FUSE" >&2
    exit 1
fi
s=$(state "$mnt")
if [ "$s" = live ]; then
    echo "efscache-entrypoint: a live mount is at $mnt (another efscache is still serving it);" \
         "waiting up to ${wait_live}s for it to go, never detaching it" >&2
    i=0
    while [ "$s" = live ] && [ $i -lt "$wait_live" ]; do
        sleep 1
        i=$((i + 1))
        s=$(state "$mnt")
    done
    if [ "$s" = live ]; then
        echo "efscache-entrypoint: $mnt is still served by another efscache after" \
             "${wait_live}s; exiting 1" >&2
        exit 1
    fi
fi
if [ "$s" = dead ]; then
    # Left by an efscache that was killed (-9, OOM): its daemon is gone and
    # every access fails with ENOTCONN.
    echo "efscache-entrypoint: clearing a dead mount at $mnt (Transport endpoint is not" \
         "connected: its daemon was killed)" >&2
    fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt" || true
fi
mkdir -p "$mnt"
if [ "${1:-}" != "--" ]; then
    exec efscache "$src" "$mnt" -f -o "$opts" "$@"
fi

# Bundled mode.
shift
efscache "$src" "$mnt" -f -o "$opts" &
daemon=$!
i=0
until mounted "$mnt"; do
    if ! kill -0 "$daemon" 2>/dev/null || [ $i -ge 300 ]; then
        echo "efscache-entrypoint: efscache did not mount $mnt" >&2
        kill -TERM "$daemon" 2>/dev/null || true
        exit 1
    fi
    sleep 0.1
    i=$((i + 1))
done
app=
trap 'if [ -n "$app" ]; then kill -TERM "$app" 2>/dev/null || true; fi' TERM INT
"$@" &
app=$!
rc=0
# wait returns early (>128) when a trapped signal arrives: wait again.
while kill -0 "$app" 2>/dev/null; do
    wait "$app" && rc=0 || rc=$?
done
kill -TERM "$daemon" 2>/dev/null || true
wait "$daemon" || true
exit "$rc"
