#!/bin/sh
# efscache-entrypoint - mount EFSCACHE_SOURCE at EFSCACHE_MOUNTPOINT and stay
# in the foreground as the container's main process.
#
# The daemon runs as PID 1 (exec): SIGTERM from "podman/docker stop" or the
# kubelet reaches it directly, it unmounts (the host's view of the shared
# mount goes with it, no "Transport endpoint is not connected") and exits 0.
# Extra arguments are passed to efscache (e.g. -o metrics=0.0.0.0:9464).
# "efscachectl ..." as arguments runs that instead (debugging).
#
# Bundled mode, "-- COMMAND [ARGS]": mount, run COMMAND beside the daemon in
# this container (an image built FROM this one, or ECS where bind propagation
# cannot be set), forward SIGTERM/SIGINT to it, then unmount and exit with its
# status.
set -eu

# mounted DIR: a FUSE file system is mounted at DIR (mountinfo field 5 is the
# mount point, the field after "-" the type).
mounted() {
    awk -v d="$1" '$5 == d { for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i + 1) ~ /^fuse/) f = 1; break } }
        END { exit !f }' /proc/self/mountinfo
}

src=${EFSCACHE_SOURCE:-/efs}
mnt=${EFSCACHE_MOUNTPOINT:-/mnt/efscache}
opts=${EFSCACHE_OPTIONS:-cache_dir=/var/cache/efscache,allow_other}

case "${1:-}" in
efscachectl|sh|bash) exec "$@" ;;
esac

if [ ! -e /dev/fuse ]; then
    echo "efscache-entrypoint: /dev/fuse is missing: run with --device /dev/fuse" \
         "--cap-add SYS_ADMIN (or privileged); AWS Fargate and Lambda offer no FUSE" >&2
    exit 1
fi
mkdir -p "$mnt"
# A mount left by a container that was killed (-9) is dead: clear it first.
if mounted "$mnt"; then
    echo "efscache-entrypoint: clearing a stale mount at $mnt" >&2
    fusermount3 -uz "$mnt" || umount -l "$mnt" || true
fi
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
