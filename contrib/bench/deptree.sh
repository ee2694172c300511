#!/usr/bin/env bash
# contrib/bench/deptree.sh - the dependency-tree rows of the benchmark (docs/design.md
# section 6, issue 7): a Python import of a generated site-packages-like tree and a
# `find | xargs stat` of it, on local disk, on the EFS emulator (its NFS-like defaults) and
# through efscache (default and relaxed options) and rclone (if installed).
#
#     contrib/bench/deptree.sh                 # RUNS=3, 3,800 modules in 4 sys.path entries
#     QUICK=1 contrib/bench/deptree.sh         # smoke run: RUNS=1, 348 modules (~2 min)
#     contrib/bench/run.sh --only deptree      # the same
#
# Run as root (drop_caches). Writes OUT_DIR/deptree.md and OUT_DIR/deptree.csv.
#
# The tree (contrib/bench/deptree.py gen): SITES site dirs on sys.path x TOPS top-level
# packages, each with MODS modules and SUBS nested subpackages (plus one more level), an
# __init__.py per package that imports everything in it, data files, py.typed and a
# .dist-info dir; even sites have __pycache__/*.pyc, odd ones are source only. Workloads:
#   import  python3 -B -I -S -c 'import sys; sys.path += [SITES]; import TOP, TOP, ...'
#           (a fresh interpreter; fails unless every module of the tree was loaded)
#   stat    find TREE -type f -print0 | xargs -0 stat (fails unless every file was seen)
# Rows, each the median of RUNS rounds:
#   local-cold, local-warm       the tree on the local disk: page cache dropped / warm
#   efs, efs-warm                efs-emu SRC EMU with its defaults (acregmin=3, acdirmin=30,
#                                lookupcache=all, close-to-open): client caches dropped /
#                                the same workload again right after
#   efscache-{cold,warm-disk,warm-page,restart}  efscache EMU MNT -f -o cache_dir=C $EFSCACHE_OPTS
#   relaxed-{cold,warm-disk,warm-page,restart}   the same plus -o $RELAXED_OPTS
#   rclone-{cold,warm-disk,warm-page,restart}    rclone mount --vfs-cache-mode full (if installed)
#   cold: caches dropped and an empty cache dir; warm-disk: caches dropped, cache dir kept;
#   warm-page: run once, then measured; restart: a new daemon on the cache dir the others
#   left, caches dropped.
#
# Environment (defaults in brackets):
#   RUNS [3]  SITES [4] TOPS [10] SUBS [3] MODS [16]  (QUICK=1: RUNS=1, 3 4 2 6)
#   SETUPS ["local efs efscache relaxed rclone"]
#   EMU_OPTS [""]  extra efs-emu options (word-split, e.g. "-o acdirmin=60")
#   EFSCACHE_OPTS [""]  extra efscache arguments (word-split, as in run.sh: "-o a=b")
#   RELAXED_OPTS ["ttl=never"]  the relaxed rows' -o list (e.g. "ttl=never,nocto")
#   RCLONE_OPTS [""]  STEP_TIMEOUT [900]  EFSCACHE_BUILD  OUT_DIR [docs/bench]
#   BENCH_TMPDIR [/var/tmp]  KEEP_TMP [0]
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    RUNS=${RUNS:-1} SITES=${SITES:-3} TOPS=${TOPS:-4} SUBS=${SUBS:-2} MODS=${MODS:-6}
fi
RUNS=${RUNS:-3} SITES=${SITES:-4} TOPS=${TOPS:-10} SUBS=${SUBS:-3} MODS=${MODS:-16}
SETUPS=${SETUPS:-"local efs efscache relaxed rclone"}
EMU_OPTS=${EMU_OPTS:-}
EFSCACHE_OPTS=${EFSCACHE_OPTS:-}
RELAXED_OPTS=${RELAXED_OPTS:-ttl=never}
RCLONE_OPTS=${RCLONE_OPTS:-}
STEP_TIMEOUT=${STEP_TIMEOUT:-900}
OUT_DIR=${OUT_DIR:-$REPO/docs/bench}
DT=$BENCH_DIR/deptree.py
NOTES=()

has_setup() { [[ " $SETUPS " == *" $1 "* ]]; }

# measure SETUP WL DIR [note]: run workload WL on DIR/tree once and append a CSV row.
measure() {
    local setup=$1 wl=$2 dir=$3 note="" t0 t1 out want secs="" e0 e1 d em=$EMU d0 d1
    [[ $setup == local-* ]] && em=- # nothing of it goes through the emulator
    e0=$("$PY" "$DT" emu "$em")
    d0=$(drop_count)
    t0=$(now)
    case $wl in
    import)
        want=$MODULES
        out=$(cd / && timeout -k 10 "$STEP_TIMEOUT" "$PY" -B -I -S -c "$CODE" "$dir/tree" \
            2>>"$WORK/logs/import.err" | tail -n 1) || out="failed"
        ;;
    stat)
        want=$FILES
        out=$(cd / && timeout -k 10 "$STEP_TIMEOUT" bash -c \
            'find "$1" -type f -print0 | xargs -0 stat -c %s | wc -l' _ "$dir/tree" \
            2>>"$WORK/logs/stat.err") || out="failed"
        ;;
    esac
    t1=$(now)
    d1=$(drop_count)
    e1=$("$PY" "$DT" emu "$em")
    # other users of the machine dropping caches make a warm row partly cold
    [ "$d0" = "$d1" ] || note="caches dropped $((d1 - d0))x by someone else during the run"
    if [ "$out" = "$want" ]; then
        secs=$(elapsed "$t0" "$t1")
    else
        note="${note:+$note; }failed: got ${out:-nothing}, want $want"
    fi
    d=$(awk -v a="$e0" -v b="$e1" 'BEGIN { n = split(a, x); split(b, y)
        for (i = 1; i <= n; i++) printf "%s%s", (i > 1 ? "," : ""), (x[i] == "-" || y[i] == "-") ? "" : y[i] - x[i] }')
    printf '%s,%s,%s,%s,%s,%s\n' "$ROUND" "$setup" "$wl" "$secs" "$d" "${note//,/;}" >>"$RAW"
    log "  $setup $wl: ${secs:-FAILED}${secs:+ s}  (emu lookups,getattrs,opens,readdirs,read_bytes,estale: $d)${note:+ [$note]}"
}

# measure_warm SETUP WL DIR: once to warm, then measured.
measure_warm() {
    measure_quiet "$2" "$3"
    measure "$@"
}

measure_quiet() { # WL DIR: run it, keep nothing
    if [ "$1" = import ]; then
        (cd / && timeout -k 10 "$STEP_TIMEOUT" "$PY" -B -I -S -c "$CODE" "$2/tree" >/dev/null 2>&1) || true
    else
        (cd / && timeout -k 10 "$STEP_TIMEOUT" bash -c 'find "$1" -type f -print0 | xargs -0 stat -c %s >/dev/null' _ "$2/tree" 2>/dev/null) || true
    fi
}

cold() { drop_caches; measure "$@"; }

round_local() {
    local wl
    log "round $ROUND: local"
    for wl in import stat; do
        cold local-cold "$wl" "$SRC"
        measure_warm local-warm "$wl" "$SRC"
    done
}

round_efs() {
    local wl
    log "round $ROUND: efs"
    for wl in import stat; do
        cold efs "$wl" "$EMU"
        measure efs-warm "$wl" "$EMU"
    done
}

CACHE_PID="" CACHE_MNT=""
# cache_mount KIND [keep]: a fresh mount of KIND (efscache, relaxed, rclone) over EMU, on an
# empty cache dir, or with "keep" on the cache dir the last mount left (a daemon restart).
cache_mount() {
    local kind=$1 keep=${2:-} relaxed=()
    cache_umount
    case $kind in
    rclone)
        CACHE_MNT=$WORK/rmnt
        [ "$keep" = keep ] || rm -rf "$WORK/rcache"
        mkdir -p "$WORK/rcache"
        # shellcheck disable=SC2086
        start_daemon "$CACHE_MNT" "$WORK/logs/rclone.log" rclone mount "$EMU" "$CACHE_MNT" \
            --vfs-cache-mode full --cache-dir "$WORK/rcache" $RCLONE_OPTS || return 1
        ;;
    efscache | relaxed)
        CACHE_MNT=$WORK/emnt
        [ "$keep" = keep ] || rm -rf "$WORK/ecache"
        [ "$kind" = relaxed ] && [ -n "$RELAXED_OPTS" ] && relaxed=(-o "$RELAXED_OPTS")
        # shellcheck disable=SC2086
        start_daemon "$CACHE_MNT" "$WORK/logs/$kind.log" "$EFSCACHE_BIN" "$EMU" "$CACHE_MNT" \
            -f -o "cache_dir=$WORK/ecache" $EFSCACHE_OPTS "${relaxed[@]}" || return 1
        ;;
    esac
    CACHE_PID=$DAEMON_PID
}

cache_umount() {
    if [ -n "$CACHE_PID" ]; then
        stop_daemon "$CACHE_MNT" "$CACHE_PID"
        CACHE_PID=""
    fi
}

round_cache() {
    local kind=$1 wl
    log "round $ROUND: $kind"
    for wl in import stat; do
        if ! cache_mount "$kind"; then
            NOTES+=("round $ROUND: $kind did not mount; its $wl rows are missing")
            continue
        fi
        cold "$kind-cold" "$wl" "$CACHE_MNT"
        cold "$kind-warm-disk" "$wl" "$CACHE_MNT"
        measure_warm "$kind-warm-page" "$wl" "$CACHE_MNT"
        kill -0 "$CACHE_PID" 2>/dev/null || NOTES+=("round $ROUND: the $kind daemon died during $wl")
        # A new daemon on the cache dir the last one left, caches dropped.
        if cache_mount "$kind" keep; then
            cold "$kind-restart" "$wl" "$CACHE_MNT"
            kill -0 "$CACHE_PID" 2>/dev/null ||
                NOTES+=("round $ROUND: the restarted $kind daemon died during $wl")
        else
            NOTES+=("round $ROUND: $kind did not mount again on its cache dir; no $wl restart row")
        fi
        cache_umount
    done
}

main() {
    local r t_start
    t_start=$(date +%s)
    for c in python3 find xargs stat fusermount3; do
        command -v "$c" >/dev/null || die "$c is needed"
    done
    [ -e /dev/fuse ] || die "/dev/fuse is missing"
    build_project
    if has_setup rclone && ! command -v rclone >/dev/null; then
        NOTES+=("rclone is not installed: no rclone rows, the 'faster than rclone' targets are n/a")
        SETUPS=${SETUPS//rclone/}
    fi

    bench_mktemp
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    WORK=$BENCH_TMP SRC=$BENCH_TMP/src EMU=$BENCH_TMP/emu
    mkdir -p "$SRC" "$EMU" "$WORK/emnt" "$WORK/rmnt" "$WORK/logs"
    RAW=$WORK/deptree.csv
    echo "round,setup,workload,seconds,lookups,getattrs,opens,readdirs,read_bytes,estale,note" >"$RAW"
    bench_check_drop
    [ "$BENCH_CAN_DROP" = 1 ] || NOTES+=("could not drop the page cache: cold rows are not cold")

    log "generating the tree in $SRC/tree: $SITES sites x $TOPS packages (subs $SUBS, mods $MODS)"
    TREE_DESC=$("$PY" "$DT" gen "$SRC/tree" "$SITES" "$TOPS" "$SUBS" "$MODS")
    log "  $TREE_DESC"
    CODE=$("$PY" "$DT" code "$SRC/tree")
    MODULES=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["modules"])' "$SRC/tree/manifest.json")
    FILES=$(find "$SRC/tree" -type f | wc -l)
    sync

    # shellcheck disable=SC2086
    start_daemon "$EMU" "$WORK/logs/emu.log" "$EMU_BIN" "$SRC" "$EMU" -f $EMU_OPTS ||
        die "cannot mount the EFS emulator"
    EMU_PID=$DAEMON_PID
    EMU_CONFIG=$(getfattr --only-values -n user.efsemu.config "$EMU" 2>/dev/null ||
        "$PY" -c 'import os, sys; print(os.getxattr(sys.argv[1], "user.efsemu.config").decode())' "$EMU")
    log "efs-emu: $EMU_CONFIG"
    measure_quiet import "$SRC" # a sanity run on local disk: the tree imports
    [ "$(cd / && "$PY" -B -I -S -c "$CODE" "$SRC/tree" | tail -n 1)" = "$MODULES" ] ||
        die "the generated tree does not import (see $WORK/logs)"

    for ((r = 1; r <= RUNS; r++)); do
        ROUND=$r
        log "round $r of $RUNS (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
        has_setup local && round_local
        has_setup efs && round_efs
        has_setup efscache && round_cache efscache
        has_setup relaxed && round_cache relaxed
        has_setup rclone && round_cache rclone
        { kill -0 "$EMU_PID" 2>/dev/null && is_mounted "$EMU"; } || die "the emulator died"
    done
    stop_daemon "$EMU" "$EMU_PID"

    mkdir -p "$OUT_DIR"
    cp "$RAW" "$OUT_DIR/deptree.csv"
    local git notes
    git=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?")
    [ -z "$(git -C "$REPO" status --porcelain -- src include tests 2>/dev/null)" ] ||
        git="$git + uncommitted changes"
    [ "${#NOTES[@]}" -gt 0 ] && notes=$(printf '%s\n' "${NOTES[@]}") || notes=""
    TREE="$TREE_DESC (SITES=$SITES TOPS=$TOPS SUBS=$SUBS MODS=$MODS); import: \`python3 -B -I -S -c CODE TREE\` (deptree.py code); stat: \`find TREE -type f -print0 | xargs -0 stat\`" \
    EMU_CMD="efs-emu SRC EMU -f${EMU_OPTS:+ $EMU_OPTS}   (config: $EMU_CONFIG)" \
    EFSCACHE_CMD="efscache EMU MNT -f -o cache_dir=CACHE${EFSCACHE_OPTS:+ $EFSCACHE_OPTS}  (build: $(basename "$BUILD"), $("$EFSCACHE_BIN" -V 2>/dev/null | head -n1))" \
    RELAXED_CMD="efscache EMU MNT -f -o cache_dir=CACHE${EFSCACHE_OPTS:+ $EFSCACHE_OPTS} -o $RELAXED_OPTS" \
    RCLONE_CMD=$(command -v rclone >/dev/null && echo "\`rclone mount EMU MNT --vfs-cache-mode full --cache-dir CACHE${RCLONE_OPTS:+ $RCLONE_OPTS}\`" || echo "not installed") \
    GIT=$git RUNS=$RUNS NOTES_TEXT=$notes DUR=$((($(date +%s) - t_start + 30) / 60)) \
    "$PY" - "$WORK/meta.json" <<'EOF'
import json, os, platform, sys, datetime
e = os.environ
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
meta = {k.lower(): e[k] for k in ("TREE", "EMU_CMD", "EFSCACHE_CMD", "RELAXED_CMD", "RCLONE_CMD", "GIT", "RUNS")}
meta["relaxed_cmd"] = e["RELAXED_CMD"]
meta["date"] = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z") + ", took %s min" % e["DUR"]
meta["machine"] = "%s, %d cores, kernel %s, load %s" % (cpu, os.cpu_count(), platform.release(), open("/proc/loadavg").read().split()[0])
meta["notes"] = [n for n in e["NOTES_TEXT"].split("\n") if n]
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF
    "$PY" "$DT" report "$OUT_DIR/deptree.csv" "$WORK/meta.json" "$OUT_DIR/deptree.md"
    sed -i "s|$REPO/||g" "$OUT_DIR/deptree.md"
    log "wrote $OUT_DIR/deptree.md and deptree.csv"
}

main "$@"
