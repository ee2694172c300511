#!/usr/bin/env bash
# contrib/bench/run.sh - the side-by-side benchmark of docs/design.md section 6.
#
# One command from a fresh clone (as root, for drop_caches and apt-get):
#
#     contrib/bench/run.sh              # full run: SIZE=2G, RUNS=3 (~25 min)
#     QUICK=1 contrib/bench/run.sh      # smoke test: SIZE=256M, 1 run (~3 min)
#     contrib/bench/run.sh --only deptree   # only the dependency-tree rows (deptree.sh)
#     contrib/bench/run.sh --only kernel-passthrough   # kernel-passthrough.sh's rows (needs
#                                       # EFSCACHE_BUILD against libfuse >= 3.17)
#
# Setups, all over the same data in a scratch directory SRC on the main disk:
#   limit     fio on the file in SRC (cold-disk: page cache dropped; warm-page)
#   efs       fio on `efs-emu SRC EMU` (the EFS emulator, default settings)
#   copy      cp EMU/big to a local dir, then fio on the copy
#   rclone    rclone mount EMU RMNT --vfs-cache-mode full (cold, warm-disk, warm-page)
#   efscache  efscache EMU MNT -o cache_dir=X (cold, warm-disk, warm-page)
# Workloads: contrib/fio/*.fio (seq1, seq4, rand4k, rand4k-direct[, -qd16]), a whole-file
# model load in 64 MiB reads, `efscachectl warm`, and the copy's own cp time; then
# deptree.sh (its own rounds, its own emulator mount): a Python import of a generated
# site-packages-like tree of 3,800 modules in 4 sys.path entries and a find + stat of it.
#
# Writes OUT_DIR (docs/bench/): results.md, results.png, results.json, raw.csv, and
# deptree.md, deptree.csv.
#
# Environment (defaults in brackets):
#   RUNS [3]  SIZE [2G]  RAND_RUNTIME [10] seconds per random-read run
#   QUICK=1   SIZE=256M RUNS=1 RAND_RUNTIME=2, smaller import
#   RAND_QD16 [0]  1 adds the libaio iodepth=16 O_DIRECT job
#   DEPTREE [1]  1 runs deptree.sh afterwards (same RUNS, QUICK, build, EMU_OPTS,
#                EFSCACHE_OPTS, RCLONE_OPTS; RELAXED_OPTS and the tree shape: see deptree.sh)
#   SETUPS ["limit efs copy rclone efscache"]  a subset, for debugging
#   STEP_TIMEOUT [600] seconds before a hung measurement is killed
#   EFSCACHE_BUILD  use this meson build dir instead of building build-bench
#   EMU_OPTS, EFSCACHE_OPTS, RCLONE_OPTS  extra options (word-split)
#   BENCH_TMPDIR [/var/tmp]  where the scratch dir goes (not tmpfs)
#   OUT_DIR [docs/bench]  KEEP_TMP [0]  NO_INSTALL [0]
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
FIO_DIR=$REPO/contrib/fio
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"

if [ "${1:-}" = --only ]; then
    case ${2:-} in
    deptree) exec "$BENCH_DIR/deptree.sh" ;;
    kernel-passthrough) exec "$BENCH_DIR/kernel-passthrough.sh" ;;
    *) die "--only: unknown part '${2:-}' (known: deptree, kernel-passthrough)" ;;
    esac
fi
[ $# -eq 0 ] || die "usage: $0 [--only deptree|kernel-passthrough]"

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    SIZE=${SIZE:-256M}
    RUNS=${RUNS:-1}
    RAND_RUNTIME=${RAND_RUNTIME:-2}
fi
RUNS=${RUNS:-3}
SIZE=${SIZE:-2G}
RAND_RUNTIME=${RAND_RUNTIME:-10}
RAND_QD16=${RAND_QD16:-0}
STEP_TIMEOUT=${STEP_TIMEOUT:-600}
DEPTREE=${DEPTREE:-1}
SETUPS=${SETUPS:-"limit efs copy rclone efscache"}
OUT_DIR=${OUT_DIR:-$REPO/docs/bench}
EMU_OPTS=${EMU_OPTS:-}
EFSCACHE_OPTS=${EFSCACHE_OPTS:-}
RCLONE_OPTS=${RCLONE_OPTS:-}
NOTES=()

SIZE_BYTES=$(parse_size "$SIZE")
[ $((SIZE_BYTES % (4 << 20))) -eq 0 ] || die "SIZE must be a multiple of 4 MiB"
PART=$((SIZE_BYTES / 4))

has_setup() { [[ " $SETUPS " == *" $1 "* ]]; }

# ---- recording ----

# Results of the last measurement (set by measure).
R_VALUE="" R_UNIT="" R_BYTES="" R_SECS="" R_CPU="" R_RSS="" R_SRC=""
ROUND=0

record() { # setup workload note
    local note=${3//,/;} load1
    read -r load1 _ </proc/loadavg
    printf '%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' "$ROUND" "$1" "$2" "$R_VALUE" "$R_UNIT" \
        "$R_BYTES" "$R_SECS" "$R_CPU" "$R_RSS" "$R_SRC" "$load1" "$note" >>"$RAW"
    log "  $1 $2: ${R_VALUE:-FAILED} $R_UNIT${R_SECS:+ (${R_SECS}s)}${note:+ [$note]}"
}

# measure WORKLOAD DIR [PID]: run one workload on DIR/big (or DIR/tree) and set
# R_*.  PID, if given, is a daemon whose CPU time and VmHWM are recorded.
# Returns 1 (with R_VALUE empty) if the run failed.
measure() {
    local wl=$1 dir=$2 pid=${3:-} out json t0 t1 mibps iops rc=0 cpu0 cpu1 hwm e0 e1
    R_VALUE="" R_UNIT="" R_BYTES="" R_SECS="" R_CPU="" R_RSS="" R_SRC=""
    if [ -n "$pid" ] && { ! kill -0 "$pid" 2>/dev/null || ! is_mounted "$dir"; }; then
        log "  $dir is not mounted (daemon $pid gone?)"
        return 1
    fi
    read -r cpu0 hwm e0 <<<"$("$PY" "$BENCH_DIR/benchlib.py" snap "${pid:--}" "$EMU")"
    case $wl in
    seq1 | seq4 | rand4k | rand4k-direct | rand4k-direct-qd16)
        json=$WORK/json/$ROUND-$CUR_SETUP-$wl.json
        if FILENAME=$dir/big SIZE=$SIZE_BYTES PART=$PART RUNTIME=$RAND_RUNTIME \
            timeout -k 10 "$STEP_TIMEOUT" fio --output-format=json --output="$json" "$FIO_DIR/$wl.fio" \
            >"$json.log" 2>&1 && out=$($PY "$BENCH_DIR/benchlib.py" fio "$json" 2>>"$json.log"); then
            read -r mibps iops R_BYTES R_SECS <<<"$out"
            if [[ $wl == rand* ]]; then R_VALUE=$iops R_UNIT=IOPS; else R_VALUE=$mibps R_UNIT=MiB/s; fi
        else
            tail -n 3 "$json.log" >&2 || true
            rc=1
        fi
        ;;
    load)
        if out=$(timeout -k 10 "$STEP_TIMEOUT" "$PY" "$BENCH_DIR/benchlib.py" load "$dir/big"); then
            read -r R_SECS R_BYTES <<<"$out"
            R_UNIT=MiB/s
            R_VALUE=$(mibps "$R_BYTES" "$R_SECS")
            [ "$R_BYTES" = "$SIZE_BYTES" ] || { log "  short read: $R_BYTES bytes"; rc=1; }
        else
            rc=1
        fi
        ;;
    warm)
        t0=$(now)
        if timeout -k 10 "$STEP_TIMEOUT" "$CTL_BIN" warm "$dir/big" >"$WORK/logs/warm.log" 2>&1; then
            t1=$(now)
            R_SECS=$(elapsed "$t0" "$t1") R_BYTES=$SIZE_BYTES R_UNIT=MiB/s
            R_VALUE=$(mibps "$R_BYTES" "$R_SECS")
        else
            tail -n 3 "$WORK/logs/warm.log" >&2 || true
            rc=1
        fi
        ;;
    *) die "unknown workload $wl" ;;
    esac
    read -r cpu1 hwm e1 <<<"$("$PY" "$BENCH_DIR/benchlib.py" snap "${pid:--}" "$EMU")"
    if [ "$e0" != - ] && [ "$e1" != - ]; then R_SRC=$((e1 - e0)); fi
    if [ -n "$pid" ] && [ "$cpu0" != - ] && [ "$cpu1" != - ]; then
        R_CPU=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.2f\n", b - a }')
        R_RSS=$hwm
    elif [ -n "$pid" ]; then
        log "  daemon $pid died during $wl"
        rc=1
    fi
    [ $rc -eq 0 ] || R_VALUE=""
    return $rc
}

# run_cold SETUP WL DIR [PID]: page cache dropped, then measured.
run_cold() {
    local note=""
    CUR_SETUP=$1
    drop_caches
    measure "$2" "$3" "${4:-}" || note="failed"
    record "$1" "$2" "$note"
}

# pin_start FILE...: hold FILEs mapped (benchlib.py pin) so that other users of
# this machine dropping the page cache cannot evict them; pin_stop releases them.
pin_start() {
    local i
    rm -f "$WORK/pin.ready"
    "$PY" "$BENCH_DIR/benchlib.py" pin "$WORK/pin.ready" "$@" 2>>"$WORK/logs/pin.log" &
    PIN_PID=$!
    BENCH_HELPERS+=("$PIN_PID")
    for ((i = 0; i < 1200; i++)); do
        [ -e "$WORK/pin.ready" ] && return 0
        kill -0 "$PIN_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "  could not pin $*"
    pin_stop
    return 1
}

pin_stop() {
    if [ -n "${PIN_PID:-}" ]; then
        kill "$PIN_PID" 2>/dev/null || true
        wait "$PIN_PID" 2>/dev/null || true
        PIN_PID=""
    fi
}

# run_warm_page SETUP WL DIR [PID]: measured with everything in the page cache.
# What the read path uses from memory is held mmapped for the run (which also
# reads it in: the "run once to warm"), so that other users of this machine
# dropping the page cache cannot evict it: the file itself for limit, copy and
# efscache, which keep a file's pages across opens, but rclone's cache files
# for rclone, whose mount drops the file's pages at every open (the kernel
# would drop them again at fio's open).
run_warm_page() {
    local setup=$1 wl=$2 dir=$3 pid=${4:-} note="" res files=()
    CUR_SETUP=$setup
    if [[ $setup == rclone-* ]]; then
        mapfile -t files < <(find "$RCACHE" -type f -size +0)
    else
        files=("$dir/big")
    fi
    if pin_start "${files[@]}"; then
        res=$(resident_pct "$dir/big")
        [ "$res" = 100 ] || note="resident at open: $res%"
    else
        note="not pinned"
    fi
    measure "$wl" "$dir" "$pid" || note="${note:+$note; }failed"
    pin_stop
    record "$setup" "$wl" "$note"
}

# ---- setups ----

big_wls_cold() { echo seq1 seq4 load; }
direct_wls() { echo rand4k-direct; [ "$RAND_QD16" = 1 ] && echo rand4k-direct-qd16; return 0; }

round_limit() {
    local wl
    log "round $ROUND: limit"
    for wl in $(big_wls_cold); do
        run_cold limit-cold "$wl" "$SRC"
        run_warm_page limit-warm "$wl" "$SRC"
    done
    for wl in $(direct_wls); do
        run_cold limit-cold "$wl" "$SRC"
    done
    run_warm_page limit-warm rand4k "$SRC"
}

round_efs() {
    local wl
    log "round $ROUND: efs"
    for wl in $(big_wls_cold) rand4k $(direct_wls); do
        run_cold efs "$wl" "$EMU"
    done
}

round_copy() {
    local wl t0 t1
    log "round $ROUND: copy"
    rm -f "$COPY/big"
    drop_caches
    CUR_SETUP=copy
    R_VALUE="" R_UNIT="MiB/s" R_BYTES="" R_SECS="" R_CPU="" R_RSS="" R_SRC=""
    t0=$(now)
    if cp "$EMU/big" "$COPY/big"; then
        t1=$(now)
        R_SECS=$(elapsed "$t0" "$t1") R_BYTES=$SIZE_BYTES
        R_VALUE=$(mibps "$R_BYTES" "$R_SECS")
        record copy cp ""
    else
        record copy cp "failed"
        return 0
    fi
    sync # the copy's writeback must not run under the next measurements
    for wl in $(big_wls_cold) rand4k; do
        run_warm_page copy "$wl" "$COPY"
    done
    rm -f "$COPY/big"
}

# cache_mount KIND [fresh]: (re)mount rclone or efscache over EMU; "fresh"
# empties its cache first.  Sets CACHE_PID and CACHE_MNT.
cache_mount() {
    local kind=$1 fresh=${2:-}
    cache_umount "$kind"
    case $kind in
    rclone)
        CACHE_MNT=$RMNT
        [ -n "$fresh" ] && rm -rf "$RCACHE"
        mkdir -p "$RCACHE"
        # shellcheck disable=SC2086
        start_daemon "$RMNT" "$WORK/logs/rclone.log" rclone mount "$EMU" "$RMNT" \
            --vfs-cache-mode full --cache-dir "$RCACHE" $RCLONE_OPTS || return 1
        ;;
    efscache)
        CACHE_MNT=$EMNT
        [ -n "$fresh" ] && rm -rf "$ECACHE"
        # shellcheck disable=SC2086
        start_daemon "$EMNT" "$WORK/logs/efscache.log" "$EFSCACHE_BIN" "$EMU" "$EMNT" -f \
            -o "cache_dir=$ECACHE" $EFSCACHE_OPTS || return 1
        ;;
    esac
    CACHE_PID=$DAEMON_PID
}

cache_umount() {
    if [ -n "${CACHE_PID:-}" ]; then
        stop_daemon "$CACHE_MNT" "$CACHE_PID"
        CACHE_PID=""
    fi
}

round_cache() {
    local kind=$1 wl
    log "round $ROUND: $kind"
    # cold rows, each on an empty cache; seq1 last so the big file stays cached
    for wl in load seq4 seq1; do
        if cache_mount "$kind" fresh; then
            run_cold "$kind-cold" "$wl" "$CACHE_MNT" "$CACHE_PID"
        else
            NOTES+=("round $ROUND: $kind did not mount for cold $wl")
        fi
    done
    if [ -z "${CACHE_PID:-}" ] || ! kill -0 "$CACHE_PID" 2>/dev/null; then
        # keep the cache; a crashed daemon gets one remount
        cache_mount "$kind" || { NOTES+=("round $ROUND: $kind did not remount; warm rows missing"); return 0; }
    fi
    for wl in seq1 seq4 load; do
        run_cold "$kind-warm-disk" "$wl" "$CACHE_MNT" "$CACHE_PID"
        run_warm_page "$kind-warm-page" "$wl" "$CACHE_MNT" "$CACHE_PID"
    done
    for wl in $(direct_wls); do
        run_cold "$kind-warm-disk" "$wl" "$CACHE_MNT" "$CACHE_PID"
    done
    run_warm_page "$kind-warm-page" rand4k "$CACHE_MNT" "$CACHE_PID"
    if [ "$kind" = efscache ]; then
        if [ -x "$CTL_BIN" ]; then
            if cache_mount efscache fresh; then
                run_cold efscache-cold warm "$CACHE_MNT" "$CACHE_PID"
            fi
        elif [ "$ROUND" = 1 ]; then
            NOTES+=("efscachectl warm: skipped, $CTL_BIN does not exist in this build")
        fi
    fi
    cache_umount
}

# ---- main ----

main() {
    local t_start r
    t_start=$(date +%s)
    install_deps
    build_project
    command -v fincore >/dev/null || die "fincore (util-linux) is needed"
    [ -e /dev/fuse ] || die "/dev/fuse is missing"

    bench_mktemp
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    WORK=$BENCH_TMP
    SRC=$WORK/src EMU=$WORK/emu COPY=$WORK/copy
    RMNT=$WORK/rmnt RCACHE=$WORK/rcache EMNT=$WORK/emnt ECACHE=$WORK/ecache
    mkdir -p "$SRC" "$EMU" "$COPY" "$RMNT" "$EMNT" "$WORK/json" "$WORK/logs"
    RAW=$WORK/raw.csv
    PIN_PID=""
    echo "round,setup,workload,value,unit,bytes,seconds,cpu_s,rss_kib,src_bytes,load1,note" >"$RAW"
    bench_check_drop

    log "scratch dir $WORK; writing a $SIZE file"
    make_file "$SRC/big" "$SIZE_BYTES"
    sync

    # shellcheck disable=SC2086
    start_daemon "$EMU" "$WORK/logs/emu.log" "$EMU_BIN" "$SRC" "$EMU" -f $EMU_OPTS ||
        die "cannot mount the EFS emulator"
    EMU_PID=$DAEMON_PID
    EMU_BW=$($PY -c 'import os, sys
try:
    v = os.getxattr(sys.argv[1], "user.efsemu.config").decode()
    print(dict(kv.split("=") for kv in v.split()).get("bw_mib", "500"))
except Exception:
    print("500")' "$EMU")

    for ((r = 1; r <= RUNS; r++)); do
        ROUND=$r
        log "round $r of $RUNS (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
        has_setup limit && round_limit
        has_setup efs && round_efs
        has_setup copy && round_copy
        has_setup rclone && round_cache rclone
        has_setup efscache && round_cache efscache
        { kill -0 "$EMU_PID" 2>/dev/null && is_mounted "$EMU"; } || die "the emulator died"
    done
    stop_daemon "$EMU" "$EMU_PID"

    # ---- write the outputs ----
    mkdir -p "$OUT_DIR"
    cp "$RAW" "$OUT_DIR/raw.csv"
    local dur git notes_json
    dur=$(( ($(date +%s) - t_start + 30) / 60 ))
    git=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?")
    if [ -n "$(git -C "$REPO" status --porcelain -- src include tests meson.build 2>/dev/null)" ]; then
        git="$git + uncommitted changes in src/include/tests"
    fi
    [ "$BENCH_CAN_DROP" = 1 ] || NOTES+=("could not drop the page cache: cold rows are not cold")
    [ "${#NOTES[@]}" -gt 0 ] && notes_json=$(printf '%s\n' "${NOTES[@]}") || notes_json=""
    QUICK=$QUICK SIZE_H=$SIZE SIZE_BYTES=$SIZE_BYTES RUNS=$RUNS RAND_RUNTIME=$RAND_RUNTIME \
    DUR=$dur GIT=$git TMPDIR_USED=$WORK EMU_BW=$EMU_BW NOTES_TEXT=$notes_json FIO_DIR=$FIO_DIR \
    EMU_CMD="efs-emu SRC EMU -f${EMU_OPTS:+ $EMU_OPTS}  (defaults: latency_ms=1, meta_latency_ms=0.5, bw_mib=500, serial_reads=1, NFS-like caching acregmin=3 acdirmin=30 lookupcache=all)" \
    RCLONE_CMD="rclone mount EMU MNT --vfs-cache-mode full --cache-dir CACHE${RCLONE_OPTS:+ $RCLONE_OPTS}" \
    EFSCACHE_CMD="efscache EMU MNT -f -o cache_dir=CACHE${EFSCACHE_OPTS:+ $EFSCACHE_OPTS}  (build: $(basename "$BUILD"), $("$EFSCACHE_BIN" -V 2>/dev/null | head -n1))" \
    DEPTREE_DESC=$([ "$DEPTREE" = 1 ] && echo "see deptree.md (contrib/bench/deptree.sh, run after these rounds)" || echo "not run (DEPTREE=0)") \
    TMP_FS=$(stat -f -c %T "$WORK") RAND_QD16=$RAND_QD16 PART=$PART \
    $PY - "$WORK/meta.json" <<'EOF'
import json, os, sys, datetime
e = os.environ
jobs = {
    "seq1": "FILENAME=DIR/big SIZE=%s" % e["SIZE_BYTES"],
    "seq4": "FILENAME=DIR/big PART=%s" % e["PART"],
    "rand4k": "FILENAME=DIR/big SIZE=%s RUNTIME=%s" % (e["SIZE_BYTES"], e["RAND_RUNTIME"]),
    "rand4k-direct": "FILENAME=DIR/big SIZE=%s RUNTIME=%s" % (e["SIZE_BYTES"], e["RAND_RUNTIME"]),
}
if e["RAND_QD16"] == "1":
    jobs["rand4k-direct-qd16"] = jobs["rand4k-direct"]
meta = {
    "quick": e["QUICK"], "size_h": e["SIZE_H"], "size": int(e["SIZE_BYTES"]), "runs": int(e["RUNS"]),
    "rand_runtime": e["RAND_RUNTIME"], "duration_min": e["DUR"], "git": e["GIT"],
    "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    "tmp": e["TMPDIR_USED"], "tmp_fs": e["TMP_FS"], "emu_bw_mib": e["EMU_BW"],
    "emu_cmd": e["EMU_CMD"], "rclone_cmd": e["RCLONE_CMD"], "efscache_cmd": e["EFSCACHE_CMD"],
    "copy_cmd": "cp EMU/big COPYDIR/big (page cache dropped first; timed without the final sync)",
    "deptree_desc": e["DEPTREE_DESC"], "fio_dir": e["FIO_DIR"], "fio_jobs": jobs,
    "notes": [n for n in e["NOTES_TEXT"].split("\n") if n],
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF
    # the fio job texts go into results.md from the repository copy
    $PY "$BENCH_DIR/benchlib.py" report "$OUT_DIR/raw.csv" "$WORK/meta.json" "$OUT_DIR"
    sed -i "s|$REPO/||g" "$OUT_DIR/results.md" "$OUT_DIR/results.json" "$OUT_DIR/results.gp"
    log "wrote $OUT_DIR/results.md (took $dur min)"
    if [ "$DEPTREE" = 1 ]; then
        log "dependency-tree rows: contrib/bench/deptree.sh"
        EFSCACHE_BUILD=$BUILD OUT_DIR=$OUT_DIR RUNS=$RUNS QUICK=$QUICK EMU_OPTS=$EMU_OPTS \
            EFSCACHE_OPTS=$EFSCACHE_OPTS RCLONE_OPTS=$RCLONE_OPTS STEP_TIMEOUT=$STEP_TIMEOUT \
            "$BENCH_DIR/deptree.sh" || NOTES+=("deptree.sh failed")
    fi
}

main "$@"
