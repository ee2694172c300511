#!/usr/bin/env bash
# contrib/demo.sh - the main job in one minute: a "model" on a slow EFS-like
# mount (the EFS emulator, tests/emu), read cold through efscache, read again
# warm, and read after a remount, with times, MiB/s and the bytes fetched from
# the emulated EFS.
#
# Usage: contrib/demo.sh [SIZE_MIB]      (default 512; run as root)
# On Debian 12 or Ubuntu it installs what the build needs (DEMO_PACKAGES
# below: every dependency() of meson.build and src/meson.build, and the
# tools the demo itself runs), builds into build-demo/ (EFSCACHE_BUILD to
# change it) and runs.  When a step fails it prints that step's own output
# (apt-get, meson, ninja) and exits 1.
set -euo pipefail
size_mib=${1:-512}
here=$(cd "$(dirname "$0")/.." && pwd)
build=${EFSCACHE_BUILD:-$here/build-demo}

die() { echo "demo: $*" >&2; exit 1; }
# run_step WHAT CMD...: run CMD with its output kept in a log; on failure
# show the end of that log (the real reason) and stop.
steplog=$(mktemp /tmp/efscache-demo-step.XXXXXX)
trap 'rm -f "$steplog"' EXIT
run_step() {
    local what=$1; shift
    if ! "$@" >"$steplog" 2>&1; then
        echo "demo: $what failed: $*" >&2
        tail -n 40 "$steplog" | sed 's/^/  | /' >&2
        exit 1
    fi
}

case $size_mib in
'' | *[!0-9]* | 0) die "SIZE_MIB must be a positive number of MiB, not '$size_mib'" ;;
esac
# Mounting and dropping the page cache between reads need root.
[ "$(id -u)" -eq 0 ] || die "run as root (it mounts FUSE file systems and drops caches)"

# DEMO_PACKAGES: the build's dependencies (compiler, meson, ninja, pkg-config
# and the libraries meson.build and src/meson.build ask for: fuse3, libxxhash,
# libmicrohttpd), then what the demo runs: fusermount3 (fuse3), getfattr
# (attr), python3 (the report lines).  tests/ops/test_demo_deps.py checks
# that every dependency() of the build has its -dev package here.
DEMO_PACKAGES=(gcc libc6-dev meson ninja-build pkg-config
               libfuse3-dev libxxhash-dev libmicrohttpd-dev
               fuse3 attr python3)
missing=()
for p in "${DEMO_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "missing ${missing[*]}, and no apt-get to install them"
    echo "demo: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    run_step "apt-get update" apt-get update
    run_step "apt-get install" apt-get install -y --no-install-recommends "${missing[@]}"
fi
if [ ! -e /dev/fuse ]; then
    die "/dev/fuse is missing: FUSE is not available here (Lambda and Fargate have none; a container needs --device /dev/fuse --cap-add SYS_ADMIN)"
fi

echo "demo: building into $build"
if [ -f "$build/build.ninja" ]; then
    run_step "meson setup" meson setup --reconfigure "$build" -Dbuildtype=release
else
    rm -rf "$build" # a half-made build dir from an earlier failure
    run_step "meson setup" meson setup "$build" -Dbuildtype=release
fi
run_step "the build (ninja)" ninja -C "$build" src/efscache tests/emu/efs-emu

work=$(mktemp -d /tmp/efscache-demo.XXXXXX)
src=$work/efs-data emu=$work/efs mnt=$work/models cache=$work/cache
mkdir -p "$src" "$emu" "$mnt"
# Unmount efscache and wait for its daemon (pid in the lock file) to exit.
stop_cache() {
    local pid
    pid=$(cat "$cache/lock" 2>/dev/null || true)
    fusermount3 -u "$mnt" 2>/dev/null || true
    while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}
cleanup() {
    stop_cache
    fusermount3 -u "$emu" 2>/dev/null || true
    rm -rf "$work" "$steplog"
}
trap cleanup EXIT

emu_bytes() { getfattr --absolute-names --only-values -n user.efsemu.stats "$emu" | tr ' ' '\n' | sed -n 's/^read_bytes=//p'; }

echo "demo: writing a ${size_mib} MiB model file to the source"
head -c "$((size_mib << 20))" /dev/urandom > "$src/model.safetensors"
want=$(sha256sum < "$src/model.safetensors" | cut -d' ' -f1)

# The EFS emulator: 1 ms per read, 0.5 ms per metadata request, 500 MiB/s cap.
"$build/tests/emu/efs-emu" "$src" "$emu" || die "efs-emu could not mount $emu"
mount_cache() {
    "$build/src/efscache" "$emu" "$mnt" -o "cache_dir=$cache" || die "efscache could not mount $mnt"
}
mount_cache

# drop: empty the page cache, so the next read comes from where it says.
# /proc/sys/vm/drop_caches is read-only in containers: there, drop the pages
# of the demo's own files (the source, both mounts and cache_dir) instead.
drop() {
    sync
    if ! { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then
        python3 - "$src" "$emu" "$mnt" "$cache" <<'PY'
import os, sys
for top in sys.argv[1:]:
    for d, _, files in os.walk(top):
        for n in files:
            try:
                fd = os.open(os.path.join(d, n), os.O_RDONLY)
            except OSError:
                continue
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
PY
    fi
}

# read LABEL: read the model through the mount, print time, rate, bytes from
# the emulated EFS.
read_model() {
    local label=$1 before after t0 t1 got
    before=$(emu_bytes)
    t0=$(date +%s.%N)
    dd if="$mnt/model.safetensors" of=/dev/null bs=1M status=none
    t1=$(date +%s.%N)
    after=$(emu_bytes)
    # Check the bytes outside the timing (this second pass hits the page cache).
    got=$(sha256sum < "$mnt/model.safetensors" | cut -d' ' -f1)
    python3 - "$label" "$t0" "$t1" "$size_mib" "$((after - before))" "$got" "$want" <<'PY'
import sys
label, t0, t1, mib, fetched, got, want = sys.argv[1:]
secs, mib, fetched = float(t1) - float(t0), int(mib), int(fetched)
ok = "bytes ok" if got == want else "WRONG BYTES"
print(f"  {label:<38} {secs:6.2f} s  {mib/secs:8.0f} MiB/s  fetched from EFS: {fetched/2**20:7.1f} MiB  ({ok})")
if got != want:
    sys.exit(1)
PY
}

echo "demo: reading it whole, the way a model load does (dd bs=1M; bytes checked by sha256 after)"
echo "  (EFS here is efs-emu, an emulator with EFS-like latency and bandwidth, not the real service)"
drop
echo "  -- directly from the EFS emulator, as today:"
t0=$(date +%s.%N); dd if="$emu/model.safetensors" of=/dev/null bs=1M status=none; t1=$(date +%s.%N)
python3 -c "s=$t1-$t0; print(f'  {\"plain EFS read\":<38} {s:6.2f} s  {$size_mib/s:8.0f} MiB/s')"
echo "  -- through efscache:"
drop
read_model "cold (empty cache)"
read_model "warm (page cache)"
drop
read_model "warm (local disk, page cache dropped)"
stop_cache
mount_cache
drop
read_model "after a remount (cache kept)"
echo
echo "demo: efscache counters:"
getfattr --absolute-names --only-values -n user.efscache.stats "$mnt" |
    awk '$1 ~ /^(hits|misses|bytes_from_cache|bytes_from_source|chunks_stored|checksum_mismatches|cache_usage_bytes)$/ {printf "  %-22s %s\n", $1, $2}'
