#!/usr/bin/env bash
# contrib/bench/sweep.sh - how chunk_size and prefetch shape a cold read.
#
# For each chunk_size x prefetch pair: a cold sequential read of a SIZE file
# (MiB/s, 1 MiB reads) and a cold random reader (RANDN 4 KiB reads at random
# offsets: ms per read and bytes fetched from the source per read), through
# efscache over efs-emu with its default EFS-like settings.  Medians of RUNS
# runs, pairs interleaved per round so machine noise hits them alike.
#
#   contrib/bench/sweep.sh                      # SIZE=1G RUNS=3
#   CHUNKS="1M 4M" PREFETCH="4 8" contrib/bench/sweep.sh
#   SIZE=64M RUNS=1 RANDN=20 CHUNKS=1M PREFETCH=4 contrib/bench/sweep.sh   # smoke test
#
# Root is needed for drop_caches (without it the rows are not cold; a warning
# says so).  Mounts, daemons and the scratch dir are handled by lib.sh.
# Environment: SIZE [1G], RUNS [3], RANDN [200], CHUNKS ["1M 4M 8M"],
# PREFETCH ["4 8 16"], EFSCACHE_BUILD (else build-bench is built),
# BENCH_TMPDIR [/var/tmp], KEEP_TMP, NO_INSTALL.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"

SIZE=${SIZE:-1G}
RUNS=${RUNS:-3}
RANDN=${RANDN:-200}
CHUNKS=${CHUNKS:-"1M 4M 8M"}
PREFETCH=${PREFETCH:-"4 8 16"}

# emu_read_bytes: efs-emu's read_bytes counter (bytes fetched from "EFS").
emu_read_bytes() {
    local snap
    snap=$("$PY" "$BENCH_DIR/benchlib.py" snap - "$EMU")
    echo "${snap##* }"
}

# one_run CHUNK PREFETCH KIND: mount efscache with an empty cache, drop the page
# cache, run one cold read (seq or rand), append its rows to $RESULTS, unmount.
one_run() {
    local cs=$1 pf=$2 kind=$3 b0 b1 out secs bytes
    rm -rf "$WORK/cache"
    start_daemon "$MNT" "$WORK/efscache.log" "$EFSCACHE_BIN" "$EMU" "$MNT" -f \
        -o "cache_dir=$WORK/cache,chunk_size=$cs,prefetch=$pf" ||
        die "efscache did not mount (chunk_size=$cs prefetch=$pf)"
    local pid=$DAEMON_PID
    drop_caches
    b0=$(emu_read_bytes)
    if [ "$kind" = seq ]; then
        out=$("$PY" "$BENCH_DIR/benchlib.py" load "$MNT/big" 1)
        read -r secs bytes <<<"$out"
        echo "$cs $pf seq_mibs $(mibps "$bytes" "$secs")" >>"$RESULTS"
    else
        out=$("$PY" "$BENCH_DIR/benchlib.py" randread "$MNT/big" "$RANDN")
        b1=$(emu_read_bytes)
        echo "$cs $pf rand_ms $out" >>"$RESULTS"
        echo "$cs $pf rand_kib_per_read $(((b1 - b0) / RANDN / 1024))" >>"$RESULTS"
    fi
    stop_daemon "$MNT" "$pid"
}

main() {
    local round cs pf kind
    install_deps
    build_project
    bench_mktemp
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    WORK=$BENCH_TMP SRC=$BENCH_TMP/src EMU=$BENCH_TMP/emu MNT=$BENCH_TMP/mnt
    RESULTS=$WORK/results.txt
    mkdir -p "$SRC" "$EMU" "$MNT"
    : >"$RESULTS"
    bench_check_drop
    make_file "$SRC/big" "$(parse_size "$SIZE")"
    start_daemon "$EMU" "$WORK/emu.log" "$EMU_BIN" "$SRC" "$EMU" -f ||
        die "efs-emu did not mount"
    for round in $(seq "$RUNS"); do
        log "round $round of $RUNS"
        for cs in $CHUNKS; do
            for pf in $PREFETCH; do
                for kind in seq rand; do
                    one_run "$cs" "$pf" "$kind"
                done
            done
        done
    done
    "$PY" "$BENCH_DIR/benchlib.py" sweep-report "$RESULTS" "$SIZE" "$RUNS" "$RANDN"
}

main "$@"
