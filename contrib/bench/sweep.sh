#!/usr/bin/env bash
# contrib/bench/sweep.sh - how chunk_size and prefetch shape a cold read.
#
# For each chunk_size x prefetch pair: a cold sequential read of a SIZE file
# (MiB/s) and a cold random reader (RANDN 4 KiB reads at random offsets:
# ms per read and bytes fetched from the source per read), through efscache
# over efs-emu with its default EFS-like settings.  Medians of RUNS runs,
# pairs interleaved per round so machine noise hits them alike.
#
#   contrib/bench/sweep.sh                      # SIZE=1G RUNS=3
#   CHUNKS="1M 4M" PREFETCH="4 8" contrib/bench/sweep.sh
# Needs root (drop_caches).  Uses EFSCACHE_BUILD [build-bench] (built if absent).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
build=${EFSCACHE_BUILD:-$here/build-bench}
SIZE=${SIZE:-1G}
RUNS=${RUNS:-3}
RANDN=${RANDN:-200}
CHUNKS=${CHUNKS:-"1M 4M 8M"}
PREFETCH=${PREFETCH:-"4 8 16"}

[ -d "$build" ] || meson setup "$build" -Dbuildtype=release >/dev/null
ninja -C "$build" src/efscache tests/emu/efs-emu >/dev/null

work=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/efscache-sweep.XXXXXX")
mkdir -p "$work/src" "$work/emu" "$work/mnt"
cache_pid=
stop_cache() {
    [ -n "$cache_pid" ] || return 0
    fusermount3 -u "$work/mnt" 2>/dev/null || true
    while kill -0 "$cache_pid" 2>/dev/null; do sleep 0.1; done
    cache_pid=
}
cleanup() {
    stop_cache
    fusermount3 -u "$work/emu" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

head -c "$SIZE" /dev/urandom > "$work/src/big"
"$build/tests/emu/efs-emu" "$work/src" "$work/emu"
emu_read() { getfattr --absolute-names --only-values -n user.efsemu.stats "$work/emu" |
    tr ' ' '\n' | sed -n 's/^read_bytes=//p'; }

results=$work/results.txt
: > "$results"
for round in $(seq "$RUNS"); do
    for cs in $CHUNKS; do
        for pf in $PREFETCH; do
            for kind in seq rand; do
                rm -rf "$work/cache"
                "$build/src/efscache" "$work/emu" "$work/mnt" \
                    -o "cache_dir=$work/cache,chunk_size=$cs,prefetch=$pf"
                cache_pid=$(cat "$work/cache/lock")
                sync
                echo 3 > /proc/sys/vm/drop_caches
                b0=$(emu_read)
                if [ "$kind" = seq ]; then
                    v=$(python3 - "$work/mnt/big" <<'PY'
import sys, time
t = time.monotonic(); n = 0
with open(sys.argv[1], "rb", buffering=0) as f:
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        n += len(b)
print(f"{n / (time.monotonic() - t) / 2**20:.1f}")
PY
)
                    echo "$cs $pf seq_mibs $v" >> "$results"
                else
                    v=$(python3 - "$work/mnt/big" "$RANDN" <<'PY'
import os, random, sys, time
random.seed(7)
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
n = int(sys.argv[2])
t = time.monotonic()
for _ in range(n):
    os.pread(fd, 4096, random.randrange(0, size // 4096) * 4096)
print(f"{(time.monotonic() - t) / n * 1000:.2f}")
PY
)
                    b1=$(emu_read)
                    echo "$cs $pf rand_ms $v" >> "$results"
                    echo "$cs $pf rand_kib_per_read $(( (b1 - b0) / RANDN / 1024 ))" >> "$results"
                fi
                stop_cache
            done
        done
    done
done

python3 - "$results" "$SIZE" "$RUNS" "$RANDN" <<'PY'
import collections, statistics, sys
vals = collections.defaultdict(list)
for line in open(sys.argv[1]):
    cs, pf, k, v = line.split()
    vals[(cs, int(pf), k)].append(float(v))
print(f"cold reads through efscache over efs-emu (defaults), SIZE={sys.argv[2]}, "
      f"median of {sys.argv[3]} runs, {sys.argv[4]} random 4 KiB reads")
print()
print("| chunk_size | prefetch | seq MiB/s | random ms/read | random KiB fetched/read |")
print("|---|---:|---:|---:|---:|")
for cs, pf in sorted({(c, p) for c, p, _ in vals}, key=lambda x: (int(x[0][:-1]), x[1])):
    m = lambda k: statistics.median(vals[(cs, pf, k)])
    print(f"| {cs} | {pf} | {m('seq_mibs'):.0f} | {m('rand_ms'):.2f} | {m('rand_kib_per_read'):.0f} |")
PY
