#!/usr/bin/env bash
# tests/container/run.sh - the sidecar / DaemonSet pattern with real containers.
#
# 1. Makes a Debian 12 base image locally (mmdebstrap minbase | podman import:
#    no registry needed), builds contrib/container/Containerfile on it (the
#    builder stage builds the .deb and runs the unit tests, and builds
#    libfuse 3.17 and an efscache linked to it; the runtime stage installs the
#    .deb and puts that efscache in its place) and reports the image size.
#    Every ELF file the image adds is hardened (readelf: PIE, full RELRO,
#    stack protector, fortify); the OCI labels are set.
# 2. The default options refuse a SOURCE that is not an nfs4 (EFS) mount.
#    Then runs it with --device /dev/fuse --cap-add SYS_ADMIN over a tmpfs
#    source from the host (require_source_mount=tmpfs), the mount made one
#    level below a host dir bound rshared (Kubernetes' Bidirectional
#    propagation); reports the time from `podman run` to a live mount.
# 3. A consumer container that binds that host dir (rslave, Kubernetes'
#    HostToContainer) reads a file through it: right bytes, twice, and the
#    second read is served from the cache; the HEALTHCHECK passes.
# 4. Restarts under a running consumer, which reads a probe file in a loop
#    and logs each result, and is never restarted itself:
#    a. `podman restart` of efscache (SIGTERM, clean unmount, mount again);
#    b. a second efscache started while the first serves (a surge): it waits
#       and never detaches the live mount; once the first stops, it mounts;
#    c. SIGKILL (as an OOM kill): the mount goes dead (ENOTCONN), binding the
#       dead mount point itself fails (kubelet's hostPath check would too),
#       a replacement container binding the parent starts, clears the dead
#       mount and mounts.
#    The consumer must see the new mount and the right bytes after each,
#    never wrong bytes; the window and what it saw meanwhile are reported.
# 5. `podman stop` unmounts cleanly: exit code 0, no mount left on the host,
#    no "Transport endpoint is not connected".
# 6. Bundled mode (entrypoint "-- COMMAND") reads the file inside one container;
#    on an -o ro mount a fully cached file is read through kernel passthrough.
# 7. `podman kube play` of the DaemonSet's pod template (contrib/k8s) with host
#    paths pointed at scratch dirs, as far as podman 4 plays it; the consumer
#    pod's init container waits while no mount is there and lets the app go
#    once it is; the consumer pod and the restricted namespace's pod (its
#    claim resolved to the PV's directory, as kubelet does) read through it,
#    the latter as a non-root user.
#
# Prints "ok - ..." / "not ok - ..." lines and "# ..." numbers; exit 0, 1, or
# 77 (skip) only when podman cannot run a container at all.
# Environment: EFSCACHE_TEST_BASE=IMAGE reuses a base image (not removed);
# EFSCACHE_IMAGE_DEB_BUILD_OPTIONS=nocheck builds the image without running
# the unit tests in its builder stage (tests/run.sh, which ran them already);
# EFSCACHE_TEST_IMAGE=IMAGE tests that efscache image instead of building one
# (not removed; for working on this script); EFSCACHE_KEEP_IMAGES=1 keeps the
# images built here.
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
tag="efscache-ctest-$$"
work=$(mktemp -d /tmp/efscache-ctest.XXXXXX)
. "$here/tests/container/lib.sh"
podman_conf

# kube play builds podman's pause image on first use: ours to remove then.
pause_before=$(podman images -q --filter reference='localhost/podman-pause' 2>/dev/null)

base_img=${EFSCACHE_TEST_BASE:-localhost/$tag-base:bookworm}
img=${EFSCACHE_TEST_IMAGE:-localhost/$tag:latest}
efs_ctr="$tag-efs"       # the efscache container serving now (renamed as replaced)
consumer="$tag-reader"   # the consumer that reads through every restart
shared="$work/shared"    # host dir bound rshared; efscache mounts at $shared/models
models="$shared/models"
opts_tmpfs=cache_dir=/var/cache/efscache,allow_other,require_source_mount=tmpfs

cleanup() {
    local c y
    touch "$work/log/stop" 2>/dev/null
    for c in "$tag-efs" "$tag-efs2" "$tag-efs3" "$consumer" "$tag-consumer" "$tag-bundled" \
        "$tag-passthrough" "$tag-guard" "$tag-init"; do
        podman container exists "$c" 2>/dev/null && podman rm -f -t 5 "$c" >/dev/null 2>&1
    done
    # The pods played (play() appends their YAML files to kube_yamls).
    while read -r y; do
        podman kube down "$y" >/dev/null 2>&1
    done < <(cat "$work/kube_yamls" 2>/dev/null)
    umount_all "$models" "$shared" "$work/kshared/models" "$work/kshared" "$work/hostmnt/efs" \
        "$work/src"
    if [ "${EFSCACHE_KEEP_IMAGES:-0}" != 1 ]; then
        [ -z "${EFSCACHE_TEST_IMAGE:-}" ] && podman rmi -f "$img" >/dev/null 2>&1
        [ -z "${EFSCACHE_TEST_BASE:-}" ] && podman rmi -f "$base_img" >/dev/null 2>&1
        # (not -f: a pod started by someone else meanwhile keeps it)
        [ -z "$pause_before" ] && podman rmi $(podman images -q \
            --filter reference='localhost/podman-pause') >/dev/null 2>&1
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need_podman

# mount_state DIR: none, dead (a lookup through it answers ENOTCONN) or live.
# (A stat of DIR itself is answered from cached attributes for a while after
# the daemon died.)
mount_state() {
    fuse_mounted "$1" || { echo none; return; }
    local err
    # A new name each time: the kernel remembers a name found absent.
    if err=$(LC_ALL=C timeout 10 stat -c %i "$1/.probe-$$-$(date +%s%N)" 2>&1 >/dev/null) ||
        [[ $err == *"No such file"* ]]; then echo live
    elif [[ $err == *"not connected"* ]]; then echo dead
    else echo "other: $err"; fi
}
# wait_state DIR STATE [TENTHS]: until mount_state is STATE (default 30 s).
wait_state() {
    local i
    for ((i = 0; i < ${3:-300}; i++)); do
        [ "$(mount_state "$1")" = "$2" ] && return 0
        sleep 0.1
    done
    return 1
}
# run_efs NAME [PODMAN ARGS...]: an efscache container over the tmpfs source,
# mounting at $models below the rshared host dir $shared.
run_efs() {
    local name=$1; shift
    podman run -d --name "$name" --network none \
        --device /dev/fuse --cap-add SYS_ADMIN --security-opt apparmor=unconfined \
        -v "$work/src:/efs:ro" -v "$work/cache:/var/cache/efscache" \
        --mount "type=bind,src=$shared,dst=/mnt/efscache,bind-propagation=rshared" \
        -e EFSCACHE_MOUNTPOINT=/mnt/efscache/models -e "EFSCACHE_OPTIONS=$opts_tmpfs" \
        "$@" "$img" >/dev/null 2>>"$work/podman.err"
}
mount_id() { awk -v d="$1" '$5 == d { id = $1 } END { print id }' /proc/self/mountinfo; }

# ---- 1. images ------------------------------------------------------------
if ! podman image exists "$base_img"; then
    command -v mmdebstrap >/dev/null || skip "mmdebstrap is not installed (base image)"
    t=$(now)
    # Like debian:12-slim: minbase without docs, man pages and translations.
    if ! mmdebstrap --quiet --variant=minbase \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        bookworm - 2>"$work/mmdebstrap.log" |
        podman import -q - "$base_img" >/dev/null 2>"$work/import.log"; then
        cat "$work/mmdebstrap.log" "$work/import.log" >&2
        skip "could not make a Debian base image with mmdebstrap (no apt mirror?)"
    fi
    note "base image made in $(since "$t") s"
fi
if ! podman run --rm --network none "$base_img" true 2>"$work/run.err"; then
    cat "$work/run.err" >&2
    skip "podman cannot run a container here: $(head -n1 "$work/run.err")"
fi

t=$(now)
revision=$(git -C "$here" rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "${EFSCACHE_TEST_IMAGE:-}" ]; then
    note "testing the image $img (not built here)"
    revision=$(podman image inspect --format '{{index .Labels "org.opencontainers.image.revision"}}' "$img")
elif podman build -q --layers=false --network host --format docker --build-arg "BASE=$base_img" \
    --build-arg "REVISION=$revision" --build-arg "CREATED=$(date -u +%FT%TZ)" \
    --build-arg "DEB_BUILD_OPTIONS=${EFSCACHE_IMAGE_DEB_BUILD_OPTIONS:-}" \
    -f "$here/contrib/container/Containerfile" -t "$img" "$here" >"$work/build.log" 2>&1; then
    ok "image builds (builder stage built the .deb${EFSCACHE_IMAGE_DEB_BUILD_OPTIONS:+ with DEB_BUILD_OPTIONS=$EFSCACHE_IMAGE_DEB_BUILD_OPTIONS})"
else
    tail -n 40 "$work/build.log"
    notok "image builds"
    exit 1
fi
note "image build time: $(since "$t") s"
size=$(podman image inspect --format '{{.Size}}' "$img")
base_size=$(podman image inspect --format '{{.Size}}' "$base_img")
note "image size: $((size / 1000000)) MB ($((size / 1048576)) MiB); base $((base_size / 1000000)) MB, efscache adds $(((size - base_size) / 1000)) kB"
check "runtime image has efscache, efscachectl and fusermount3, no compiler" \
    podman run --rm --network none --entrypoint sh "$img" -c \
    'command -v efscache && command -v efscachectl && command -v fusermount3 && ! command -v gcc && ! command -v meson'
check "the image's efscache comes from the .deb" \
    podman run --rm --network none --entrypoint sh "$img" -c \
    'dpkg -s efscache | grep -q "Status: install ok installed" && test -f /lib/systemd/system/efscache.service'
check "the image's efscache links libfuse 3.17 from /usr/lib/efscache (the .deb's binary diverted)" \
    podman run --rm --network none --entrypoint sh "$img" -c \
    'efscache --version | grep -q "libfuse 3\.1[7-9]" &&
     ldd /usr/bin/efscache | grep -q "/usr/lib/efscache/libfuse3.so.4" &&
     dpkg-divert --list /usr/bin/efscache | grep -q efscache.libfuse-3.14'

# Hardening of what the image ships of ours, read with the host's readelf
# (the runtime image has no binutils): the libfuse 3.17 efscache and its
# library were once built without the flags the .deb gets.
mkdir -p "$work/elf"
for f in /usr/bin/efscache /usr/bin/efscachectl /usr/lib/efscache/libfuse3.so.4; do
    b="$work/elf/$(basename "$f")"
    podman run --rm --network none --entrypoint cat "$img" "$f" >"$b" 2>>"$work/podman.err"
    check "hardened (PIE, full RELRO, stack protector, fortify): $f" hardened --stack-protector "$b"
done
labels=$(podman image inspect --format '{{json .Labels}}' "$img")
want_version=$(sed -n "s/^  version : '\(.*\)',/\1/p" "$here/meson.build")
check "OCI labels: title, version $want_version, revision, licenses" python3 -c '
import json, sys
l = json.loads(sys.argv[1]); p = "org.opencontainers.image."
assert l[p + "title"] == "efscache", l
assert l[p + "version"] == sys.argv[2], l
assert l[p + "revision"] == sys.argv[3], l
assert l[p + "licenses"] and l[p + "created"] != "unknown", l
' "$labels" "$want_version" "$revision"

# ---- 2. efscache container, mount shared back to the host ----------------
# The source: a tmpfs on the host (a mount point, as EFS is), bound into the
# container as /efs.
mkdir -p "$work/src" "$work/cache" "$shared" "$work/log"
mount -t tmpfs -o size=160m efscache-ctest-src "$work/src"
mkdir -p "$work/src/sub"
head -c $((48 << 20)) /dev/urandom > "$work/src/model.bin"
head -c $((256 << 10)) /dev/urandom > "$work/src/probe.bin"
echo "hello through the sidecar" > "$work/src/sub/small.txt"
want=$(sha256sum < "$work/src/model.bin" | cut -d' ' -f1)
want_probe=$(sha256sum < "$work/src/probe.bin" | cut -d' ' -f1)

# The image's default options (require_source_mount=nfs4) refuse a source
# that is not an EFS mount: the empty directory under an unmounted /mnt/efs
# looks just like this bind of a plain directory.
mkdir -p "$work/plain"
out=$(podman run --rm --name "$tag-guard" --network none \
    --device /dev/fuse --cap-add SYS_ADMIN --security-opt apparmor=unconfined \
    -v "$work/plain:/efs:ro" "$img" 2>&1)
grc=$?
check "default options: a SOURCE that is not an nfs4 mount is refused, exit 1 (got $grc)" \
    test "$grc" = 1
check "default options: the message names /efs, what it is and nfs4" \
    grep -q "SOURCE '/efs' is a mount point of type .*, not nfs4" <<<"$out"

# The host dir must be a shared mount point for the container's mount to
# propagate back (Kubernetes' kubelet does the same for Bidirectional).
shared_mounted=0
mount --bind "$shared" "$shared" && mount --make-rshared "$shared" && shared_mounted=1
check "host dir is an rshared mount point" test "$shared_mounted" = 1

t0=$(now)
run_efs "$efs_ctr"
if wait_state "$models" live; then
    ok "the container's FUSE mount appears on the host, below the shared dir"
    note "time from podman run to a live mount on the host: $(since "$t0") s"
else
    notok "the container's FUSE mount appears on the host" "$(podman logs "$efs_ctr" 2>&1 | tail -5)"
fi
check "host reads the right bytes through it" \
    sh -c "[ \"\$(sha256sum < '$models/model.bin' | cut -d' ' -f1)\" = '$want' ]"

# ---- 3. consumer container ------------------------------------------------
for pass in cold warm; do
    got=$(podman run --rm --name "$tag-consumer" --network none \
        --mount "type=bind,src=$shared,dst=/efscache,ro=true,bind-propagation=rslave" \
        "$base_img" sh -c 'sha256sum < /efscache/models/model.bin; cat /efscache/models/sub/small.txt' 2>&1)
    check "consumer container ($pass): right bytes of model.bin" \
        test "$(echo "$got" | head -n1 | cut -d' ' -f1)" = "$want"
    check "consumer container ($pass): small file" \
        test "$(echo "$got" | tail -n1)" = "hello through the sidecar"
    # Drop the kernel's page cache of this file (only) so that the warm read
    # reaches the daemon.
    dd if="$models/model.bin" iflag=nocache count=0 status=none 2>/dev/null || true
done
prom=$(podman exec "$efs_ctr" efscachectl stats --format=prometheus /mnt/efscache/models)
cache_bytes=$(echo "$prom" | awk '$1 ~ /^efscache_from_cache_bytes_total({|$)/ {print $2}')
src_bytes=$(echo "$prom" | awk '$1 ~ /^efscache_from_source_bytes_total({|$)/ {print $2}')
check "warm read served from the cache, EFS read once (from_source $src_bytes, from_cache $cache_bytes)" \
    test "${src_bytes:-0}" -le $(((48 << 20) + (1 << 20) * 8)) -a "${cache_bytes:-0}" -ge $((48 << 20))
check "HEALTHCHECK (efscache-entrypoint health: daemon alive, mount listed) passes" \
    podman healthcheck run "$efs_ctr"

# ---- 4. restarts under a running consumer ---------------------------------
# The consumer binds the parent (rslave) and reads probe.bin every 50 ms,
# logging "TIME STATUS" lines: ok, ENOTCONN, ENOENT, WRONG (other bytes) or
# OTHER:message.  It is never restarted.
podman run -d --name "$consumer" --network none \
    --mount "type=bind,src=$shared,dst=/efscache,ro=true,bind-propagation=rslave" \
    -v "$work/log:/log" "$base_img" sh -c '
    while [ ! -e /log/stop ]; do
        t=$(date +%s.%N)
        out=$(sha256sum /efscache/models/probe.bin 2>&1)
        case $out in
        "$1 "*) s=ok ;;
        *"not connected"*) s=ENOTCONN ;;
        *"connection abort"*) s=ECONNABORTED ;;
        *"No such file"*) s=ENOENT ;;
        [0-9a-f]*) s=WRONG ;;
        *) s="OTHER:$(echo "$out" | tr " " _)" ;;
        esac
        echo "$t $s" >> /log/reads
        sleep 0.05
    done' sh "$want_probe" >/dev/null 2>>"$work/podman.err"
consumer_started=$(podman inspect --format '{{.State.StartedAt}}' "$consumer")
# ok_after T [TENTHS]: the consumer logged an ok read that began after T.
ok_after() {
    local i
    for ((i = 0; i < ${2:-300}; i++)); do
        awk -v t="$1" '$1 > t && $2 == "ok" { f = 1 } END { exit !f }' "$work/log/reads" 2>/dev/null &&
            return 0
        sleep 0.1
    done
    return 1
}
# reads_since T: counts of each status since T and the outage: from the first
# read that was not ok to the next ok one.
reads_since() {
    awk -v t="$1" '$1 >= t {
            s = $2; sub(/:.*/, "", s); n[s]++
            if (s != "ok" && !bad) bad = $1
            if (s == "ok" && bad && !back) back = $1
        }
        END {
            printf "ok=%d ENOTCONN=%d ECONNABORTED=%d ENOENT=%d WRONG=%d OTHER=%d outage=%.2fs",
                n["ok"], n["ENOTCONN"], n["ECONNABORTED"], n["ENOENT"], n["WRONG"], n["OTHER"],
                back ? back - bad : 0
        }' "$work/log/reads"
}
count() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<" $2"; }
# others_since T: the distinct OTHER:... results since T.
others_since() { awk -v t="$1" '$1 >= t && $2 ~ /^OTHER:/ { print $2 }' "$work/log/reads" | sort -u; }
ok_after "$(now)" || notok "the consumer reads probe.bin" "$(tail -n 3 "$work/log/reads" 2>&1)"

# 4a. podman restart: SIGTERM (clean unmount), then the same container again.
t=$(now)
podman restart -t 30 "$efs_ctr" >/dev/null 2>>"$work/podman.err"
wait_state "$models" live || notok "restart: mount live again" "$(podman logs --tail 5 "$efs_ctr" 2>&1)"
t_up=$(now)
check "restart: the running consumer reads the right bytes through the new mount" ok_after "$t_up"
r=$(reads_since "$t")
note "restart: what the consumer saw: $r"
check "restart: never wrong bytes, no error but ENOENT/ENOTCONN ($r) $(others_since "$t")" \
    test "$(count WRONG "$r")" = 0 -a "$(count OTHER "$r")" = 0

# 4b. a surge: a second efscache while the first still serves.
t=$(now)
before=$(mount_id "$models")
run_efs "$tag-efs2" -e EFSCACHE_WAIT_LIVE=60
sleep 4
check "surge: the second container waits for the live mount" \
    sh -c "podman logs '$tag-efs2' 2>&1 | grep -q 'a live mount is at /mnt/efscache/models'"
check "surge: the live mount was not detached (same mount on the host)" \
    test "$(mount_id "$models")" = "$before" -a "$(mount_state "$models")" = live
r=$(reads_since "$t")
check "surge: the consumer read on undisturbed ($r)" \
    test "$(count ok "$r")" -gt 0 -a "$(count ENOTCONN "$r")" = 0 -a "$(count ENOENT "$r")" = 0 \
    -a "$(count WRONG "$r")" = 0 -a "$(count OTHER "$r")" = 0
podman stop -t 30 "$efs_ctr" >/dev/null 2>>"$work/podman.err"
podman rm -f "$efs_ctr" >/dev/null 2>>"$work/podman.err"
efs_ctr="$tag-efs2"
wait_state "$models" live || notok "surge: the second container mounts once the first is gone" \
    "$(podman logs --tail 5 "$efs_ctr" 2>&1)"
check "surge: the second container mounted once the first had gone" \
    test "$(mount_id "$models")" != "$before" -a "$(mount_state "$models")" = live
check "surge: the consumer reads the right bytes through the second one" ok_after "$(now)"
note "surge: what the consumer saw: $(reads_since "$t")"

# 4c. SIGKILL (an OOM kill, a liveness kill): the mount goes dead.
t=$(now)
podman kill -s KILL "$efs_ctr" >/dev/null 2>>"$work/podman.err"
check "SIGKILL: the mount is left dead on the host (a lookup: ENOTCONN)" wait_state "$models" dead
sleep 0.5
r=$(reads_since "$t")
check "SIGKILL: the consumer sees ENOTCONN, not wrong bytes ($r)" \
    test "$(count ENOTCONN "$r")" -gt 0 -a "$(count WRONG "$r")" = 0
# What kubelet's hostPath check of the mount point itself would hit.
t_bind=$(now)
if podman run --rm --network none -v "$models:/x:ro" "$base_img" true >/dev/null 2>"$work/deadbind.err"; then
    notok "SIGKILL: binding the dead mount point itself fails (why consumers bind the parent)" \
        "podman bound it"
else
    ok "SIGKILL: binding the dead mount point itself fails (why consumers bind the parent): $(head -c 160 "$work/deadbind.err")"
fi
note "SIGKILL: that attempt took $(since "$t_bind") s"
t_rm=$(now)
podman rm -f "$efs_ctr" >/dev/null 2>>"$work/podman.err"
note "SIGKILL: podman rm of the killed container took $(since "$t_rm") s"
efs_ctr="$tag-efs3"
t_new=$(now)
if run_efs "$efs_ctr"; then
    ok "SIGKILL: a replacement container binding the parent starts"
else
    notok "SIGKILL: a replacement container binding the parent starts" "$(tail -n 3 "$work/podman.err")"
fi
check "SIGKILL: the replacement mounts (live on the host)" wait_state "$models" live
check "SIGKILL: its entrypoint cleared the dead mount first" \
    sh -c "podman logs '$efs_ctr' 2>&1 | grep -q 'clearing a dead mount at /mnt/efscache/models'"
check "SIGKILL: the running consumer reads the right bytes through the replacement" \
    ok_after "$(now)"
r=$(reads_since "$t")
back=$(awk -v t="$t_new" '$1 > t && $2 == "ok" { printf "%.2f", $1 - t; exit }' "$work/log/reads")
note "SIGKILL and replacement: what the consumer saw: $r; the replacement was started $(awk -v a="$t_new" -v b="$t" 'BEGIN { printf "%.2f", a - b }') s after the kill (by this script) and the consumer read the right bytes ${back:-?} s after that"
check "SIGKILL: never wrong bytes, no error but ENOTCONN/ECONNABORTED/ENOENT ($r) $(others_since "$t")" \
    test "$(count WRONG "$r")" = 0 -a "$(count OTHER "$r")" = 0
check "the consumer was never restarted" test \
    "$(podman inspect --format '{{.State.Running}} {{.RestartCount}} {{.State.StartedAt}}' "$consumer")" = \
    "true 0 $consumer_started"
touch "$work/log/stop"
podman wait "$consumer" >/dev/null 2>&1
podman rm -f "$consumer" >/dev/null 2>&1

# ---- 5. stop: clean unmount -----------------------------------------------
podman stop -t 30 "$efs_ctr" >/dev/null 2>>"$work/podman.err"
rc=$(podman inspect --format '{{.State.ExitCode}}' "$efs_ctr")
check "podman stop: efscache exits 0 (got $rc)" test "$rc" = 0
check "podman stop: no FUSE mount left on the host" eval '! fuse_mounted "$models"'
if err=$(ls "$models" 2>&1); then
    ok "podman stop: host dir readable (no 'Transport endpoint is not connected')"
else
    notok "podman stop: host dir readable" "$err"
fi
check "podman stop: daemon logged no error" \
    sh -c "! podman logs '$efs_ctr' 2>&1 | grep -v '^efscache-entrypoint: clearing a dead mount' |
        grep -qi 'error\|not connected'"
podman rm -f "$efs_ctr" >/dev/null 2>>"$work/podman.err"

# ---- 6. bundled mode --------------------------------------------------------
out=$(podman run --rm --name "$tag-bundled" --network none \
    --device /dev/fuse --cap-add SYS_ADMIN --security-opt apparmor=unconfined \
    -e "EFSCACHE_OPTIONS=$opts_tmpfs" -v "$work/src:/efs:ro" "$img" -- sh -c \
    'sha256sum < /mnt/efscache/model.bin' 2>"$work/bundled.err")
brc=$?
check "bundled mode: the command reads the right bytes and exits 0" \
    test $brc = 0 -a "$(echo "$out" | head -n1 | cut -d' ' -f1)" = "$want"

# ---- 6b. kernel passthrough: an -o ro mount, a fully cached file ----------
# warm caches model.bin (and waits until it is written); the next open finds
# every chunk present and is answered with the cache file as backing file.
# cache_dir is a host volume, as documented: on the container's overlayfs
# root the kernel refuses backing files (stacked file system).
mkdir -p "$work/ptcache"
out=$(podman run --rm --name "$tag-passthrough" --network none \
    --device /dev/fuse --cap-add SYS_ADMIN --security-opt apparmor=unconfined \
    -e EFSCACHE_OPTIONS=cache_dir=/var/cache/efscache,ro,require_source_mount=tmpfs \
    -v "$work/src:/efs:ro" -v "$work/ptcache:/var/cache/efscache" "$img" -- sh -c \
    'efscachectl warm /mnt/efscache/model.bin >/dev/null &&
     sha256sum < /mnt/efscache/model.bin &&
     efscachectl stats --raw /mnt/efscache' 2>"$work/passthrough.err")
prc=$?
check "passthrough (ro mount): right bytes, exit 0" \
    test $prc = 0 -a "$(echo "$out" | head -n1 | cut -d' ' -f1)" = "$want"
if grep -q 'passthrough: off: the kernel did not offer' "$work/passthrough.err"; then
    note "passthrough not checked: this kernel ($(uname -r)) has no FUSE passthrough (6.9+)"
else
    pt=$(echo "$out" | awk '$1 == "passthrough_opens" {print $2}')
    check "passthrough (ro mount): the warm open was passed through (passthrough_opens ${pt:-none})" \
        test "${pt:-0}" -ge 1
    check "passthrough (ro mount): no 'passthrough: off' in the log" \
        sh -c "! grep 'passthrough: off' '$work/passthrough.err'"
fi

# ---- 7. podman kube play: the DaemonSet's pod, the consumer pods ----------
# Host paths of the manifests pointed at scratch dirs: /mnt (the node's /mnt,
# with EFS at /mnt/efs) -> hostmnt with the tmpfs source bound at efs,
# /var/cache/efscache -> kcache, /mnt/efscache -> kshared (rshared).
mkdir -p "$work/hostmnt/efs" "$work/kcache" "$work/kshared"
mount --bind "$work/src" "$work/hostmnt/efs"
mount --bind "$work/kshared" "$work/kshared" && mount --make-rshared "$work/kshared"
# kube_pod IN OUT KIND: the pod (of a DaemonSet or a Pod manifest) in IN as a
# Pod that podman plays, host paths mapped; claims resolved to the
# PersistentVolume's host path, as kubelet does for a hostPath PV.
kube_pod() {
    /usr/bin/python3 - "$@" "$img" "$base_img" "$work" <<'PY'
import sys
import yaml  # Debian's python3-yaml: this is Debian's python3
src, out, shared, img, base, work = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(src)) if d]
pvs = {}
for extra in (src.replace("consumer.yaml", "efscache-pv.yaml"),):
    try:
        pvs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(open(extra))
               if d and d["kind"] == "PersistentVolume"}
    except OSError:
        pass
d = [x for x in docs if x["kind"] in ("DaemonSet", "Pod")][0]
if d["kind"] == "DaemonSet":
    tpl = d["spec"]["template"]
    meta, spec = {"labels": tpl["metadata"]["labels"]}, tpl["spec"]
else:
    meta, spec = {"labels": d["metadata"].get("labels", {})}, d["spec"]
meta["name"] = "efscache-ctest-%s-%s" % (d["kind"].lower(), work.rsplit(".", 1)[-1].lower())
# Not podman's to play: scheduling, the pod IP's port, and the HTTP liveness
# probe (podman would run curl inside the image, which has none).
for k in ("priorityClassName", "tolerations", "affinity"):
    spec.pop(k, None)
# podman 4.3 removes an init container while it still runs ("cannot remove
# container ... as it is running") and then starts nothing: the init
# container is tested on its own (below), the pods are played without it.
spec.pop("initContainers", None)
claims = {pvc["metadata"]["name"]: pvc for pvc in docs if pvc["kind"] == "PersistentVolumeClaim"}
paths = {"/mnt": work + "/hostmnt", "/var/cache/efscache": work + "/kcache",
         "/mnt/efscache": shared}
for v in spec["volumes"]:
    c = v.pop("persistentVolumeClaim", None)
    if c:
        v["hostPath"] = dict(pvs[claims[c["claimName"]]["spec"]["volumeName"]]["spec"]["hostPath"])
    hp = v.get("hostPath")
    if hp and hp["path"] in paths:
        hp["path"] = paths[hp["path"]]
for c in spec["containers"] + spec.get("initContainers", []):
    c["image"] = img if "efscache" in c["image"] else base
    if c["image"] == base:  # made by podman import: no PATH of its own
        c.setdefault("env", []).append(
            {"name": "PATH", "value": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})
    c["imagePullPolicy"] = "Never"
    c.pop("ports", None)
    c.pop("livenessProbe", None)
    for e in c.get("env", []):
        if e["name"] == "EFSCACHE_OPTIONS":
            e["value"] = e["value"].replace("require_source_mount=nfs4", "require_source_mount=tmpfs")
    if c.get("command", [""])[-1].startswith("sha256sum"):
        c["command"][-1] = c["command"][-1].replace("sleep 3600", "echo app-done; sleep 600")
yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}, open(out, "w"))
PY
}
# play YAML: podman kube play in the background (init containers block it);
# prints the pod's name once podman knows it.
play() {
    echo "$1" >>"$work/kube_yamls"
    podman kube play --network none "$1" >"$1.log" 2>&1 &
    local i name
    name=$(sed -n 's/^  name: //p' "$1" | head -n1)
    for ((i = 0; i < 300; i++)); do
        podman pod exists "$name" 2>/dev/null && break
        sleep 0.1
    done
    echo "$name"
}
# ctr_of POD NAME: the container NAME of POD (podman names it POD-NAME).
ctr_of() { echo "$1-$2"; }
# logs_have CTR TEXT [SECONDS]: CTR's log has a line matching TEXT (default 60 s).
logs_have() {
    local end=$((SECONDS + ${3:-60}))
    while [ $SECONDS -lt $end ]; do
        podman logs "$1" 2>/dev/null | grep -q "$2" && return 0
        sleep 0.5
    done
    return 1
}

ds_yaml="$work/ds.yaml"
if kube_pod "$here/contrib/k8s/efscache-daemonset.yaml" "$ds_yaml" "$work/kshared"; then
    ok "DaemonSet's pod template converts to a Pod"
    pod=$(play "$ds_yaml")
    ctr=$(ctr_of "$pod" efscache)
    inside=""
    for _ in $(seq 1 150); do
        inside=$(podman exec "$ctr" sh -c 'sha256sum < /mnt/efscache/models/model.bin' 2>/dev/null |
            cut -d' ' -f1)
        [ -n "$inside" ] && break
        sleep 0.2
    done
    check "kube play of the DaemonSet's pod: it mounts below the parent and serves the right bytes" \
        test "$inside" = "$want"
    if [ "$(mount_state "$work/kshared/models")" = live ]; then
        ok "kube play: Bidirectional propagation reaches the host"
    else
        note "kube play: podman $(podman version --format '{{.Client.Version}}') did not" \
            "propagate the pod's mount to the host; the rshared bind above is the tested" \
            "equivalent ($(tail -n 2 "$ds_yaml.log" | tr '\n' ' '))"
    fi
    # As the kubelet does: SIGTERM with a grace period, then remove.
    podman pod stop -t 30 "$pod" >/dev/null 2>>"$work/podman.err"
    check "pod stop: the pod's efscache unmounted, nothing left on the host" \
        eval '! fuse_mounted "$work/kshared/models"'
    prc=$(podman inspect --format '{{.State.ExitCode}}' "$ctr" 2>/dev/null)
    check "pod stop: efscache exited 0 (got $prc)" test "$prc" = 0
    podman kube down "$ds_yaml" >/dev/null 2>&1
else
    notok "DaemonSet's pod template converts to a Pod"
fi

# The startup guard.  podman 4.3 cannot play init containers (kube play
# removes one while it still runs: "cannot remove container ... as it is
# running", and starts nothing), so the consumer pod's init container runs
# alone first, its command exactly as the manifest says, with no efscache
# serving: it must wait, and finish once a mount appears.  Then the pods are
# played without it, efscache up, and their apps read.
c_yaml="$work/consumer.yaml"
if kube_pod "$here/contrib/k8s/consumer-pod.yaml" "$c_yaml" "$shared"; then
    init_cmd=$(/usr/bin/python3 -c '
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))["spec"]["initContainers"][0]
m = c["volumeMounts"][0]
print(m["mountPath"]); print(c["command"][-1])' "$here/contrib/k8s/consumer-pod.yaml")
    init_at=$(head -n1 <<<"$init_cmd")
    podman run -d --name "$tag-init" --network none \
        --mount "type=bind,src=$shared,dst=$init_at,ro=true,bind-propagation=rslave" \
        "$base_img" sh -c "$(tail -n +2 <<<"$init_cmd")" >/dev/null 2>>"$work/podman.err"
    sleep 3
    check "consumer pod's init container: still waiting while no efscache mount is there" \
        test "$(podman inspect --format '{{.State.Running}}' "$tag-init")" = true
    run_efs "$tag-efs"
    wait_state "$models" live
    check "consumer pod's init container: done (exit 0) once efscache has mounted" \
        sh -c "[ \"\$(timeout 60 podman wait '$tag-init')\" = 0 ]"
    podman rm -f "$tag-init" >/dev/null 2>&1

    pod=$(play "$c_yaml")
    app=$(ctr_of "$pod" app)
    check "consumer pod (kube play): the app reads the right bytes" logs_have "$app" "^$want " 60
    podman kube down "$c_yaml" >/dev/null 2>&1

    # The restricted namespace's pod: non-root, no capabilities, its claim
    # resolved to the PV's host path.
    r_yaml="$work/restricted.yaml"
    if kube_pod "$here/contrib/k8s/restricted/consumer.yaml" "$r_yaml" "$shared"; then
        pod=$(play "$r_yaml")
        app=$(ctr_of "$pod" app)
        check "restricted consumer pod (kube play): reads the right bytes as a non-root user" \
            logs_have "$app" "^$want " 60
        check "restricted consumer pod: runs as uid 65534" \
            sh -c "[ \"\$(podman exec '$app' id -u)\" = 65534 ]"
        podman kube down "$r_yaml" >/dev/null 2>&1
    else
        notok "restricted consumer converts to a Pod"
    fi
    podman stop -t 30 "$tag-efs" >/dev/null 2>>"$work/podman.err"
else
    notok "consumer pod converts to a Pod"
fi

echo "1..$checks"
echo "# container test: $((checks - fails)) passed, $fails failed"
[ $fails -eq 0 ]
