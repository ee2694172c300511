#!/usr/bin/env bash
# contrib/bench/cold.sh - cold reads at the source's cap (issues 11 and 18).
#
#     contrib/bench/cold.sh            # SIZE=2G, TREE=4G, RUNS=3 (~10 min)
#     QUICK=1 contrib/bench/cold.sh    # SIZE=512M, TREE=1G, RUNS=1
#
# Rows, every one on an empty cache and with the page cache dropped first:
#   efs seq1 / seq4          fio seq1.fio / seq4.fio on EMU/big: the emulator
#                            read directly (what the cap allows without a cache)
#   efscache cold seq1/seq4  the same through `efscache EMU MNT` (first read)
#   efscache warm            `efscachectl warm MNT/tree` of a TREE-sized tree
#                            (big files and small ones) through a fresh cache
#   local direct             fio seq1.fio on SRC/big (the local disk, no FUSE)
#   local efscache cold      fio seq1.fio through `efscache SRC MNT2` (no
#                            emulator): the first read from a fast local source
#   mmap-rand rows           mmaprand.py on big: mapped, 1 MiB regions in a
#                            shuffled order, every 4 KiB page touched (how
#                            safetensors / llama.cpp load), for efs (the
#                            emulator directly), efscache cold, warm-disk (the
#                            cache filled, page cache dropped), warm-page (no
#                            drop), local, and rclone cold (rclone mount
#                            --vfs-cache-mode full over EMU) if rclone is there
#   efscache 32 readers      32 concurrent cold readers of 32 different
#                            files of SIZE/32 each through a mount with
#                            cache_size=SIZE/2 (eviction runs): MiB/s, the
#                            daemon's peak RSS (VmHWM) and its RSS at rest
#                            (REST_S seconds after the load)
# where EMU is `efs-emu SRC EMU` with its defaults (bw_mib=500, latency_ms=1,
# serial_reads=1).  Targets (issue 11): efscache cold seq1 and seq4 and warm
# each >= 0.9 x bw_mib, seq4 >= seq1, local efscache cold >= 0.6 x local direct;
# (issue 18) efscache cold mmap-rand >= seq1 / 1.2 (time <= 1.2 x the
# sequential cold read of the same file), daemon CPU <= 0.6 s per GiB for
# cold seq1 and seq4, RSS at rest after 32 readers <= 64 MiB.  CPU seconds of
# the efscache and efs-emu processes are recorded per row, and given per GiB
# the row read.
#
# Writes OUT_DIR/cold.md and cold.csv.  Environment (defaults in brackets):
#   SIZE [2G]  TREE [4G]  RUNS [3]  QUICK=1  EMU_OPTS  EFSCACHE_OPTS
#   EFSCACHE_BUILD  BENCH_TMPDIR [/var/tmp]  OUT_DIR [docs/bench]  KEEP_TMP
#   NO_INSTALL  STEP_TIMEOUT [600]  REST_S [5]  RCLONE [1 if installed]
#   ROWS      a bash regex over "SETUP WORKLOAD" (e.g. 'efs seq|cold (seq1|mmap-rand)'):
#             only the rows it matches run (the others are left out of cold.md)
#   PERF [0]  1: in the last round, `perf record -g` the daemons during each
#             cache row and append their top symbols to cold.md
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
FIO_DIR=$REPO/contrib/fio
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    SIZE=${SIZE:-512M}
    TREE=${TREE:-1G}
    RUNS=${RUNS:-1}
fi
SIZE=${SIZE:-2G}
TREE=${TREE:-4G}
RUNS=${RUNS:-3}
OUT_DIR=${OUT_DIR:-$REPO/docs/bench}
EMU_OPTS=${EMU_OPTS:-}
EFSCACHE_OPTS=${EFSCACHE_OPTS:-}
STEP_TIMEOUT=${STEP_TIMEOUT:-600}
PERF=${PERF:-0}
PERF_PID=""
REST_S=${REST_S:-5}
RSS_PEAK="" RSS_REST=""
ROW_BYTES=0

# cpu_of PID -> utime + stime in seconds ("-" if gone)
cpu_of() {
    awk -v t="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / t }' \
        "/proc/$1/stat" 2>/dev/null || echo -
}

# rss_kib PID FIELD -> VmRSS / VmHWM of PID in KiB ("" if gone)
rss_kib() {
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true
}

# row SETUP WORKLOAD CMD...: drop caches (unless NO_DROP=1), run CMD (prints
# MiB/s), record it with the CPU seconds of $EPID (efscache, if set) and of
# $EMU_PID, the bytes the row read (ROW_BYTES) and RSS_PEAK / RSS_REST (MiB,
# set by the 32-reader row).
row() {
    local setup=$1 wl=$2 v c0 c1 e0 e1 dc="" de="" d0 d1
    shift 2
    [ -z "${ROWS:-}" ] || [[ "$setup $wl" =~ $ROWS ]] || return 0
    [ "${NO_DROP:-0}" = 1 ] || drop_caches
    d0=$(drop_count)
    RSS_PEAK="" RSS_REST=""
    rm -f "$WORK/rss"
    c0=$([ -n "$EPID" ] && cpu_of "$EPID" || echo -)
    e0=$(cpu_of "$EMU_PID")
    perf_start "$setup" "$wl"
    v=$("$@") || v=""
    perf_stop
    # shellcheck disable=SC2034 # read from the file CMD's subshell wrote
    [ -f "$WORK/rss" ] && read -r RSS_PEAK RSS_REST <"$WORK/rss"
    c1=$([ -n "$EPID" ] && cpu_of "$EPID" || echo -)
    e1=$(cpu_of "$EMU_PID")
    d1=$(drop_count)
    [ "$c0" != - ] && [ "$c1" != - ] && dc=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')
    [ "$e0" != - ] && [ "$e1" != - ] && de=$(awk -v a="$e0" -v b="$e1" 'BEGIN { printf "%.2f", b - a }')
    [[ $setup == local* ]] && de=""
    echo "$ROUND,$setup,$wl,$v,$dc,$de,$ROW_BYTES,$RSS_PEAK,$RSS_REST,$((d1 - d0))" >>"$CSV"
    log "  $setup $wl: ${v:-FAILED} MiB/s (efscache cpu ${dc:--} s, efs-emu cpu ${de:--} s," \
        "page cache dropped by others $((d1 - d0)) times)"
}

# perf_start SETUP WL: with PERF=1, in the last round, profile the daemons
# (efscache, and efs-emu unless the row is a local one) during the row.
perf_start() {
    local pids=$EPID
    PERF_PID=""
    [ "$PERF" = 1 ] && [ "$ROUND" = "$RUNS" ] && [ -n "$EPID" ] || return 0
    [[ $1 == local* ]] || pids="$pids,$EMU_PID"
    perf record -g -F 499 -e cpu-clock -p "$pids" -o "$WORK/perf-$1-$2.data" \
        >"$WORK/perf-$1-$2.log" 2>&1 &
    PERF_PID=$!
    sleep 0.5
}

perf_stop() {
    [ -n "$PERF_PID" ] || return 0
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
}

# perf_summary: the top symbols of each profile, as markdown, on stdout.
perf_summary() {
    local f name
    for f in "$WORK"/perf-*.data; do
        [ -e "$f" ] || continue
        name=${f##*/perf-}
        name=${name%.data}
        printf '\n### %s\n\n```\n' "$name"
        perf report -i "$f" --no-children --sort comm,dso,sym -q -g none --stdio 2>/dev/null |
            awk 'NF && $1 + 0 >= 0.8' | head -n 25 | cut -c1-110
        printf '```\n'
    done
}

# mmap_rand FILE -> MiB/s of mmaprand.py over FILE, empty on failure.
mmap_rand() {
    timeout -k 10 "$STEP_TIMEOUT" "$PY" "$BENCH_DIR/mmaprand.py" "$1" 2>>"$WORK/mmap.log" ||
        echo ""
}

# readers32 DIR: 32 concurrent cold readers (dd, 1 MiB reads) of DIR/r/f1..32;
# prints MiB/s and writes to $WORK/rss the daemon's VmHWM and its VmRSS REST_S
# seconds after the load, in MiB (row reads them: it runs us in a subshell).
# The mount is fresh, so VmHWM is this load's peak.
readers32() {
    local t0 t1 i pids=() bad=0
    t0=$(now)
    for i in $(seq 1 32); do
        dd if="$1/r/f$i" of=/dev/null bs=1M status=none & pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || bad=1; done
    t1=$(now)
    local peak rest
    peak=$(( $(rss_kib "$EPID" VmHWM) / 1024 ))
    sleep "$REST_S"
    rest=$(( $(rss_kib "$EPID" VmRSS) / 1024 ))
    echo "$peak $rest" >"$WORK/rss"
    [ $bad = 0 ] && mibps "$R32_BYTES" "$(elapsed "$t0" "$t1")" || echo ""
}

# rclone_fresh: (re)mount rclone over EMU on RMNT with an empty cache.
rclone_fresh() {
    rclone_stop
    rm -rf "$RCACHE"
    mkdir -p "$RCACHE"
    start_daemon "$RMNT" "$WORK/rclone.log" rclone mount "$EMU" "$RMNT" \
        --vfs-cache-mode full --cache-dir "$RCACHE" || die "rclone did not mount over $EMU"
    RPID=$DAEMON_PID
}

rclone_stop() {
    [ -n "$RPID" ] && stop_daemon "$RMNT" "$RPID"
    RPID=""
}

warm_tree() {
    local t0 t1
    t0=$(now)
    timeout -k 10 "$STEP_TIMEOUT" "$CTL_BIN" warm "$1" >"$WORK/warm.log" 2>&1 ||
        { tail -n 3 "$WORK/warm.log" >&2; echo ""; return 0; }
    t1=$(now)
    mibps "$TREE_BYTES" "$(elapsed "$t0" "$t1")"
}

# efscache_fresh SOURCE [OPTS]: (re)mount efscache over SOURCE on MNT with an
# empty cache (OPTS: more -o options).
efscache_fresh() {
    [ -n "$EPID" ] && stop_daemon "$MNT" "$EPID"
    EPID=""
    rm -rf "$CACHE"
    # shellcheck disable=SC2086
    start_daemon "$MNT" "$WORK/efscache.log" "$EFSCACHE_BIN" "$1" "$MNT" -f \
        -o "cache_dir=$CACHE${2:+,$2}" $EFSCACHE_OPTS || die "efscache did not mount over $1"
    EPID=$DAEMON_PID
}

efscache_stop() {
    [ -n "$EPID" ] && stop_daemon "$MNT" "$EPID"
    EPID=""
}

main() {
    local r i n per
    install_deps
    build_project
    command -v fio >/dev/null || die "fio is needed"
    SIZE_BYTES=$(parse_size "$SIZE")
    TREE_BYTES=$(parse_size "$TREE")
    [ $((SIZE_BYTES % (4 << 20))) -eq 0 ] || die "SIZE must be a multiple of 4 MiB"
    bench_mktemp
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    WORK=$BENCH_TMP SRC=$BENCH_TMP/src EMU=$BENCH_TMP/emu MNT=$BENCH_TMP/mnt
    CACHE=$BENCH_TMP/cache RMNT=$BENCH_TMP/rmnt RCACHE=$BENCH_TMP/rcache RPID=""
    RCLONE=${RCLONE:-$(command -v rclone >/dev/null && echo 1 || echo 0)}
    mkdir -p "$SRC/tree/small" "$SRC/r" "$EMU" "$MNT" "$RMNT"
    bench_check_drop
    [ "$BENCH_CAN_DROP" = 1 ] || die "cold rows need drop_caches (run as root)"

    # The tree: half in 4 big files, half in 32 KiB..16 MiB files (~ a model
    # directory next to a package tree).
    log "scratch dir $WORK; writing a $SIZE file and a $TREE tree"
    make_file "$SRC/big" "$SIZE_BYTES"
    per=$((TREE_BYTES / 8))
    for i in 1 2 3 4; do make_file "$SRC/tree/model-$i.bin" "$per"; done
    n=0 i=0
    while [ $n -lt $((TREE_BYTES / 2)) ]; do
        local sz=$(((32 << 10) << (i % 10)))
        [ $((n + sz)) -gt $((TREE_BYTES / 2)) ] && sz=$((TREE_BYTES / 2 - n))
        make_file "$SRC/tree/small/f$i" "$sz"
        n=$((n + sz)) i=$((i + 1))
    done
    TREE_FILES=$((i + 4))
    for i in $(seq 1 32); do make_file "$SRC/r/f$i" $((SIZE_BYTES / 32)); done
    R32_BYTES=$((SIZE_BYTES / 32 * 32))
    sync

    # shellcheck disable=SC2086
    start_daemon "$EMU" "$WORK/emu.log" "$EMU_BIN" "$SRC" "$EMU" -f $EMU_OPTS ||
        die "cannot mount the EFS emulator"
    EMU_PID=$DAEMON_PID
    EMU_BW=$("$PY" -c 'import os, sys
v = os.getxattr(sys.argv[1], "user.efsemu.config").decode()
print(dict(kv.split("=") for kv in v.split()).get("bw_mib", "500"))' "$EMU")
    CSV=$WORK/cold.csv
    echo "round,setup,workload,mibps,efscache_cpu_s,emu_cpu_s,bytes,rss_peak_mib,rss_rest_mib,other_drops" >"$CSV"
    EPID=""
    LOADS=()
    for ((r = 1; r <= RUNS; r++)); do
        ROUND=$r
        LOADS+=("$(cut -d' ' -f1 /proc/loadavg)")
        log "round $r of $RUNS (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
        ROW_BYTES=$SIZE_BYTES
        row efs seq1 fio_mibps seq1 "$EMU/big"
        row efs seq4 fio_mibps seq4 "$EMU/big"
        row efs mmap-rand mmap_rand "$EMU/big"
        efscache_fresh "$EMU"
        row efscache-cold seq1 fio_mibps seq1 "$MNT/big"
        efscache_fresh "$EMU"
        row efscache-cold seq4 fio_mibps seq4 "$MNT/big"
        efscache_fresh "$EMU"
        row efscache-cold mmap-rand mmap_rand "$MNT/big"
        row efscache-warm-disk mmap-rand mmap_rand "$MNT/big"
        NO_DROP=1 row efscache-warm-page mmap-rand mmap_rand "$MNT/big"
        efscache_fresh "$EMU"
        ROW_BYTES=$TREE_BYTES
        row efscache-cold warm warm_tree "$MNT/tree"
        efscache_fresh "$EMU" "cache_size=$((SIZE_BYTES / 2))"
        ROW_BYTES=$R32_BYTES
        row efscache-cold readers32 readers32 "$MNT"
        efscache_stop
        ROW_BYTES=$SIZE_BYTES
        if [ "$RCLONE" = 1 ]; then
            rclone_fresh
            row rclone-cold mmap-rand mmap_rand "$RMNT/big"
            rclone_stop
        fi
        row local-direct seq1 fio_mibps seq1 "$SRC/big"
        row local-direct mmap-rand mmap_rand "$SRC/big"
        efscache_fresh "$SRC"
        row local-efscache-cold seq1 fio_mibps seq1 "$MNT/big"
        efscache_stop
    done
    stop_daemon "$EMU" "$EMU_PID"

    mkdir -p "$OUT_DIR"
    cp "$CSV" "$OUT_DIR/cold.csv"
    QUICK=$QUICK SIZE_H=$SIZE TREE_H=$TREE TREE_FILES=$TREE_FILES RUNS=$RUNS EMU_BW=$EMU_BW \
    EMU_CMD="efs-emu SRC EMU -f${EMU_OPTS:+ $EMU_OPTS}" \
    EFSCACHE_CMD="efscache SOURCE MNT -f -o cache_dir=CACHE${EFSCACHE_OPTS:+ $EFSCACHE_OPTS}" \
    GIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?") \
    DIRTY=$(git -C "$REPO" status --porcelain -- src include tests 2>/dev/null | head -c1) \
    LOADS="${LOADS[*]}" \
    "$PY" - "$CSV" "$OUT_DIR/cold.md" <<'EOF'
import csv, datetime, os, platform, statistics, sys
e = os.environ
vals, cpu, ecpu, cpg, rss, drops = {}, {}, {}, {}, {}, {}
for r in csv.DictReader(open(sys.argv[1])):
    k = (r["setup"], r["workload"])
    drops[k] = drops.get(k, 0) + int(r.get("other_drops") or 0)
    if r["mibps"]:
        vals.setdefault(k, []).append(float(r["mibps"]))
    if r["efscache_cpu_s"]:
        cpu.setdefault(k, []).append(float(r["efscache_cpu_s"]))
        if r.get("bytes") and float(r["bytes"]) > 0:
            cpg.setdefault(k, []).append(float(r["efscache_cpu_s"]) / (float(r["bytes"]) / 2**30))
    if r.get("rss_peak_mib"):
        rss.setdefault(k, []).append((float(r["rss_peak_mib"]), float(r["rss_rest_mib"] or 0)))
    if r["emu_cpu_s"]:
        ecpu.setdefault(k, []).append(float(r["emu_cpu_s"]))
med = {k: statistics.median(v) for k, v in vals.items()}
cap = float(e["EMU_BW"])
direct = med.get(("local-direct", "seq1"))
mcpu = lambda d, k: "%.1f" % statistics.median(d[k]) if k in d else ""
proc = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
             if l.startswith("model name")), "?")
L = ["# Cold reads at the source's cap" + (" — QUICK smoke run" if e["QUICK"] == "1" else ""),
     "",
     "`contrib/bench/cold.sh`, %s, tree %s%s. Machine: %s, %d cores (shared), kernel %s. "
     "Every row starts on an empty cache with the page cache dropped; median of %s run(s) "
     "in this one run." % (
         datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), e["GIT"],
         " + uncommitted changes" if e["DIRTY"] else "", proc, os.cpu_count(),
         platform.release(), e["RUNS"]),
     "",
     "- source: `%s` over a local directory SRC (bw_mib=%s: the cap)" % (e["EMU_CMD"], e["EMU_BW"]),
     "- cache: `%s`, SOURCE = EMU, or SRC itself for the local rows" % e["EFSCACHE_CMD"],
     "- seq1 / seq4: `contrib/fio/seq1.fio` / `seq4.fio` on a %s file; warm: "
     "`efscachectl warm MNT/tree`, a %s tree of %s files (4 big, the rest 32 KiB–16 MiB)"
     % (e["SIZE_H"], e["TREE_H"], e["TREE_FILES"]),
     "- CPU: seconds of user + system time of the daemon processes during the row (median)",
     "- machine load average (1 min) at the start of each round: %s; other users of a "
     "shared machine slow every row alike" % e["LOADS"],
     "- drops: how many times another process dropped the page cache during the row, all "
     "runs together (/proc/vmstat drop_pagecache; each costs a page-cache reader the pages "
     "read ahead, and makes later page allocations fault in the host on this VM)",
     "",
     "| row | MiB/s (median) | runs | reference | ratio | target | efscache CPU s | efscache CPU s/GiB | vs efs seq4 | efs-emu CPU s | drops |",
     "|---|---:|---|---|---:|---|---:|---:|---:|---:|---:|"]
rows = [
    (("efs", "seq1"), "efs-emu directly, seq1 (no cache)", None),
    (("efs", "seq4"), "efs-emu directly, seq4 (no cache)", None),
    (("efscache-cold", "seq1"), "efscache cold seq1 over efs-emu", ("cap", 0.9)),
    (("efscache-cold", "seq4"), "efscache cold seq4 over efs-emu", ("cap", 0.9)),
    (("efscache-cold", "warm"), "efscachectl warm of the tree over efs-emu", ("cap", 0.9)),
    (("local-direct", "seq1"), "local directory directly, seq1 (no FUSE)", None),
    (("local-efscache-cold", "seq1"), "efscache cold seq1 over the local directory",
     ("direct", 0.6)),
    (("efs", "mmap-rand"), "efs-emu directly, mmap-rand (no cache)", None),
    (("efscache-cold", "mmap-rand"), "efscache cold mmap-rand over efs-emu", ("seq1", 1 / 1.2)),
    (("efscache-warm-disk", "mmap-rand"), "efscache warm-disk mmap-rand (page cache dropped)", None),
    (("efscache-warm-page", "mmap-rand"), "efscache warm-page mmap-rand (pages kept)", None),
    (("rclone-cold", "mmap-rand"), "rclone (vfs-cache-mode full) cold mmap-rand over efs-emu", None),
    (("local-direct", "mmap-rand"), "local directory directly, mmap-rand (no FUSE)", None),
    (("efscache-cold", "readers32"), "efscache cold, 32 readers of 32 files (cache_size=SIZE/2)", None),
]
seq4 = med.get(("efs", "seq4"))
refs = {"cap": ("cap %.0f" % cap, cap), "direct": ("local direct", direct),
        "seq1": ("efscache cold seq1", med.get(("efscache-cold", "seq1")))}
summary = []
for k, label, tgt in rows:
    m = med.get(k)
    runs = ", ".join("%.0f" % v for v in vals.get(k, [])) or "failed"
    ref = ratio = res = ""
    if tgt and m is not None:
        ref, base = refs[tgt[0]]
        if base:
            ratio = "%.2f" % (m / base)
            ok = m >= tgt[1] * base
            res = ("≥ %.2f: **%s**" % (tgt[1], "met" if ok else "missed"))
            summary.append("%-45s %6.0f MiB/s  %s x %s  %s" % (label, m, ratio, ref,
                                                              "met" if ok else "MISSED"))
    if k not in vals and (k[0].startswith("rclone") or e.get("ROWS")):
        continue
    L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        label, "%.0f" % m if m is not None else "–", runs, ref, ratio, res,
        mcpu(cpu, k), "%.2f" % statistics.median(cpg[k]) if k in cpg else "",
        "%.2f" % (m / seq4) if m is not None and seq4 and not k[0].startswith("local") else "",
        mcpu(ecpu, k), drops.get(k, "")))
s1, s4 = med.get(("efscache-cold", "seq1")), med.get(("efscache-cold", "seq4"))
if s1 and s4:
    ok = s4 >= s1
    L += ["", "4 jobs never below 1 job: seq4 / seq1 = %.2f: **%s**" % (s4 / s1,
                                                                      "met" if ok else "missed")]
    summary.append("seq4 / seq1 = %.2f  %s" % (s4 / s1, "met" if ok else "MISSED"))
for k in (("efscache-cold", "seq1"), ("efscache-cold", "seq4")):
    if k in cpg:
        c = statistics.median(cpg[k])
        L += ["", "daemon CPU for %s %s: %.2f s/GiB, target ≤ 0.6: **%s**" % (
            k[0], k[1], c, "met" if c <= 0.6 else "missed")]
        summary.append("CPU %s %s %.2f s/GiB  %s" % (k[0], k[1], c, "met" if c <= 0.6 else "MISSED"))
r32 = rss.get(("efscache-cold", "readers32"))
if r32:
    peak = statistics.median(p for p, _ in r32)
    rest = statistics.median(r for _, r in r32)
    ok = rest <= 64
    L += ["", "32 concurrent cold readers: daemon RSS %.0f MiB at peak (VmHWM), %.0f MiB at rest "
          "(median; target at rest ≤ 64: **%s**)" % (peak, rest, "met" if ok else "missed")]
    summary.append("32 readers RSS peak %.0f MiB, rest %.0f MiB  %s" % (peak, rest,
                                                                     "met" if ok else "MISSED"))
open(sys.argv[2], "w").write("\n".join(L) + "\n")
print("\n".join(summary))
EOF
    if [ "$PERF" = 1 ]; then
        {
            printf '\n## Profiles (PERF=1, round %s)\n\n' "$RUNS"
            # shellcheck disable=SC2016 # backquotes for markdown
            printf '`perf record -g -F 499 -e cpu-clock -p EFSCACHE_PID[,EMU_PID]` during the row; '
            printf 'share of the samples of those processes, symbols at 0.8%% and above.\n'
            perf_summary
        } >>"$OUT_DIR/cold.md"
    fi
    log "wrote $OUT_DIR/cold.md"
}

main "$@"
