#!/usr/bin/env bash
# contrib/demo.sh - the main job in one minute: a "model" on a slow EFS-like
# mount, read cold through efscache, read again warm, and read after a
# remount, with times, MiB/s and the bytes fetched from the source.
#
# Usage: contrib/demo.sh [SIZE_MIB]      (default 512; run as root)
# Installs the build dependencies if missing, builds into build-demo/.
set -euo pipefail
size_mib=${1:-512}
here=$(cd "$(dirname "$0")/.." && pwd)
build=${EFSCACHE_BUILD:-$here/build-demo}

need=(gcc meson ninja-build pkg-config libfuse3-dev fuse3 libxxhash-dev attr)
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "demo: missing packages; run: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "demo: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -e /dev/fuse ]; then
    echo "demo: /dev/fuse is missing: FUSE is not available here (Lambda and Fargate have none)" >&2
    exit 1
fi
[ -d "$build" ] || meson setup "$build" -Dbuildtype=release >/dev/null
ninja -C "$build" >/dev/null

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
    rm -rf "$work"
}
trap cleanup EXIT

emu_bytes() { getfattr --absolute-names --only-values -n user.efsemu.stats "$emu" | tr ' ' '\n' | sed -n 's/^read_bytes=//p'; }
stat_of() { getfattr --absolute-names --only-values -n user.efscache.stats "$mnt" | awk -v k="$1" '$1 == k {print $2}'; }

echo "demo: writing a ${size_mib} MiB model file to the source"
head -c "$((size_mib << 20))" /dev/urandom > "$src/model.safetensors"
want=$(sha256sum < "$src/model.safetensors" | cut -d' ' -f1)

# The EFS emulator: 1 ms per read, 0.5 ms per metadata request, 500 MiB/s cap.
"$build/tests/emu/efs-emu" "$src" "$emu"
mount_cache() { "$build/src/efscache" "$emu" "$mnt" -o "cache_dir=$cache"; }
mount_cache

# read LABEL: read the model through the mount, print time, rate, bytes from EFS.
read_model() {
    local label=$1 before after t0 t1 got secs
    before=$(emu_bytes)
    t0=$(date +%s.%N)
    dd if="$mnt/model.safetensors" of=/dev/null bs=1M status=none
    t1=$(date +%s.%N)
    after=$(emu_bytes)
    # Check the bytes outside the timing (this second pass hits the page cache).
    got=$(sha256sum < "$mnt/model.safetensors" | cut -d' ' -f1)
    secs=$(echo "$t1 - $t0" | bc -l 2>/dev/null || python3 -c "print($t1 - $t0)")
    python3 - "$label" "$secs" "$size_mib" "$((after - before))" "$got" "$want" <<'PY'
import sys
label, secs, mib, fetched, got, want = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
ok = "bytes ok" if got == want else "WRONG BYTES"
print(f"  {label:<38} {secs:6.2f} s  {mib/secs:8.0f} MiB/s  fetched from EFS: {fetched/2**20:7.1f} MiB  ({ok})")
if got != want:
    sys.exit(1)
PY
}

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

echo "demo: reading it whole, the way a model load does (dd bs=1M; bytes checked by sha256 after)"
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
