#!/bin/sh
# efscache-entrypoint - mount EFSCACHE_SOURCE at EFSCACHE_MOUNTPOINT and stay
# in the foreground as the container's main process.
#
# The daemon runs as PID 1 (exec): SIGTERM from "podman/docker stop" or the
# kubelet reaches it directly, it unmounts (the host's view of the shared
# mount goes with it, no "Transport endpoint is not connected") and exits 0.
# Extra arguments are passed to efscache (e.g. -o metrics=0.0.0.0:9464).
# "efscachectl ..." as arguments runs that instead (debugging).
set -eu
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
if grep -q " $mnt fuse" /proc/self/mountinfo 2>/dev/null; then
    echo "efscache-entrypoint: clearing a stale mount at $mnt" >&2
    fusermount3 -uz "$mnt" || umount -l "$mnt" || true
fi
exec efscache "$src" "$mnt" -f -o "$opts" "$@"
