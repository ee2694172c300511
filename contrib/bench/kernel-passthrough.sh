#!/usr/bin/env bash
# contrib/bench/kernel-passthrough.sh - kernel passthrough (issue 11): warm
# reads of a fully cached file through efscache -o ro with passthrough=auto
# and =off (passthrough is used on ro mounts only), against the local limit
# measured in the same run.  Sequential 1 MiB
# buffered reads (contrib/fio/seq1.fio) of a SIZE file in a LOCAL directory
# SRC; efscache mounted over SRC (no emulator), cache_dir on the same disk.
#
#   limit cold-disk   fio on SRC/big, page cache dropped
#   limit warm-page   fio on SRC/big, the file in the page cache (held mapped)
#   MODE warm-disk    efscache -o ro,passthrough=MODE after the cache was filled,
#                     page cache dropped: from cache_dir
#   MODE warm-page    the same with the file in the page cache (held mapped:
#                     with passthrough that is the data file's page cache)
# and, for each efscache row, the daemon's CPU seconds (utime + stime from
# /proc/PID/stat) spent during that read.  Median of RUNS; one mount per mode
# per run, each filled by a first read that is not measured.
#
# Needs a build against libfuse >= 3.17 (tests/build-libfuse.sh) to show
# passthrough: EFSCACHE_BUILD=DIR.  Prints the table, writes
# OUT_DIR/kernel-passthrough.md and .csv.
#
# Environment: SIZE [2G], RUNS [3], QUICK=1 (SIZE=256M RUNS=1),
# EFSCACHE_BUILD, EFSCACHE_OPTS, BENCH_TMPDIR [/var/tmp], OUT_DIR [docs/bench],
# KEEP_TMP, NO_INSTALL.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
FIO_DIR=$REPO/contrib/fio
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    SIZE=${SIZE:-256M}
    RUNS=${RUNS:-1}
fi
SIZE=${SIZE:-2G}
RUNS=${RUNS:-3}
OUT_DIR=${OUT_DIR:-$REPO/docs/bench}
EFSCACHE_OPTS=${EFSCACHE_OPTS:-}

cpu_of() { # PID -> CPU seconds so far
    local s
    s=$("$PY" "$BENCH_DIR/benchlib.py" snap "$1" -)
    echo "${s%% *}"
}

pin_start() { # FILE: hold it mapped (read in) until pin_stop
    rm -f "$WORK/pin.ready"
    "$PY" "$BENCH_DIR/benchlib.py" pin "$WORK/pin.ready" "$1" 2>>"$WORK/pin.log" &
    PIN_PID=$!
    BENCH_HELPERS+=("$PIN_PID")
    local i
    for ((i = 0; i < 1200; i++)); do
        [ -e "$WORK/pin.ready" ] && return 0
        kill -0 "$PIN_PID" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}

pin_stop() {
    kill "$PIN_PID" 2>/dev/null || true
    wait "$PIN_PID" 2>/dev/null || true
}

row() { # run setup mibps cpu
    local load1
    read -r load1 _ </proc/loadavg
    echo "$1,$2,$3,$4,$load1" >>"$CSV"
    log "run $1 $2: ${3:-FAILED} MiB/s${4:+, daemon CPU ${4}s}"
}

# measure_mode RUN MODE: mount with passthrough=MODE, fill, warm-disk, warm-page.
measure_mode() {
    local r=$1 mode=$2 v c0 c1 pt
    rm -rf "$CACHE"
    # shellcheck disable=SC2086
    start_daemon "$MNT" "$WORK/efscache-$mode.log" "$EFSCACHE_BIN" "$SRC" "$MNT" -f \
        -o "cache_dir=$CACHE,ro,passthrough=$mode" $EFSCACHE_OPTS || die "efscache did not mount"
    EPID=$DAEMON_PID
    cat "$MNT/big" >/dev/null # fill the cache (not measured)
    sleep 1                   # write-behind
    drop_caches
    c0=$(cpu_of "$EPID")
    v=$(fio_mibps seq1 "$MNT/big")
    c1=$(cpu_of "$EPID")
    row "$r" "$mode-warm-disk" "$v" "$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')"
    if pin_start "$MNT/big"; then
        c0=$(cpu_of "$EPID")
        v=$(fio_mibps seq1 "$MNT/big")
        c1=$(cpu_of "$EPID")
        pin_stop
    else
        v="" c0=0 c1=0
    fi
    row "$r" "$mode-warm-page" "$v" "$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')"
    pt=$(getfattr --only-values -n user.efscache.stats "$MNT" 2>/dev/null |
        awk '$1 == "passthrough_opens" { print $2 }')
    log "run $r $mode: passthrough_opens ${pt:-?}"
    PT_OPENS[$mode]=${pt:-0}
    grep -h "passthrough: off" "$WORK/efscache-$mode.log" >&2 || true
    stop_daemon "$MNT" "$EPID"
}

main() {
    local r v
    declare -gA PT_OPENS=()
    install_deps
    build_project
    SIZE_BYTES=$(parse_size "$SIZE")
    bench_mktemp
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    WORK=$BENCH_TMP SRC=$BENCH_TMP/src MNT=$BENCH_TMP/mnt CACHE=$BENCH_TMP/cache
    mkdir -p "$SRC" "$MNT"
    bench_check_drop
    log "scratch dir $WORK; writing a $SIZE file"
    make_file "$SRC/big" "$SIZE_BYTES"
    sync
    CSV=$WORK/kernel-passthrough.csv
    echo "run,setup,mibps,daemon_cpu_s,load1" >"$CSV"
    for ((r = 1; r <= RUNS; r++)); do
        drop_caches
        row "$r" limit-cold-disk "$(fio_mibps seq1 "$SRC/big")" ""
        if pin_start "$SRC/big"; then
            v=$(fio_mibps seq1 "$SRC/big")
            pin_stop
        else
            v=""
        fi
        row "$r" limit-warm-page "$v" ""
        measure_mode "$r" auto
        measure_mode "$r" off
    done

    mkdir -p "$OUT_DIR"
    cp "$CSV" "$OUT_DIR/kernel-passthrough.csv"
    QUICK=$QUICK SIZE_H=$SIZE RUNS=$RUNS PT_AUTO=${PT_OPENS[auto]:-0} \
    CMD="efscache SRC MNT -f -o cache_dir=CACHE,ro,passthrough=MODE${EFSCACHE_OPTS:+ $EFSCACHE_OPTS}" \
    LIBFUSE=$("$EFSCACHE_BIN" --version 2>&1 | tr '\n' ' ') \
    GIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?") \
    "$PY" - "$CSV" "$OUT_DIR/kernel-passthrough.md" <<'EOF'
import csv, datetime, os, platform, statistics, sys
e = os.environ
vals, cpu, loads = {}, {}, []
for r in csv.DictReader(open(sys.argv[1])):
    loads.append(float(r["load1"]))
    if r["mibps"]:
        vals.setdefault(r["setup"], []).append(float(r["mibps"]))
    if r["daemon_cpu_s"]:
        cpu.setdefault(r["setup"], []).append(float(r["daemon_cpu_s"]))
med = {k: statistics.median(v) for k, v in vals.items()}
mcpu = {k: statistics.median(v) for k, v in cpu.items()}
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
              if l.startswith("model name")), "?")
title = "efscache kernel passthrough" + (" — QUICK smoke run" if e["QUICK"] == "1" else "")
L = ["# " + title, "",
     "`contrib/bench/kernel-passthrough.sh`, %s: sequential 1 MiB buffered reads "
     "(`contrib/fio/seq1.fio`) of a %s file in a local directory, directly (the limit) and "
     "through `%s` mounted over it after a first read filled the cache (cache_dir on the same "
     "disk, no emulator). warm-disk: page cache dropped; warm-page: the file held mapped. "
     "Daemon CPU: utime + stime of the efscache process during that read. Median of %s "
     "run(s), all rows in the same run. Machine: %s, %d cores, kernel %s; %s; tree %s. "
     "passthrough_opens in the last auto run: %s. 1-minute load average at the rows: "
     "median %.1f, max %.1f (the machine's 2 cores are shared: a load far above 2 starves "
     "fio and makes the MiB/s columns noise; the daemon CPU column holds)." % (
         datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), e["SIZE_H"],
         e["CMD"], e["RUNS"], model, os.cpu_count(), platform.release(), e["LIBFUSE"].strip(),
         e["GIT"], e["PT_AUTO"], statistics.median(loads), max(loads)),
     "",
     "| read | MiB/s (median) | runs | vs limit | daemon CPU s (median) |",
     "|---|---:|---|---:|---:|"]
out = []
rows = (("limit-cold-disk", "limit cold-disk (ext4, page cache dropped)", None),
        ("limit-warm-page", "limit warm-page (ext4 page cache)", None),
        ("auto-warm-disk", "efscache passthrough warm-disk", "limit-cold-disk"),
        ("auto-warm-page", "efscache passthrough warm-page", "limit-warm-page"),
        ("off-warm-disk", "efscache passthrough=off warm-disk", "limit-cold-disk"),
        ("off-warm-page", "efscache passthrough=off warm-page", "limit-warm-page"))
for k, label, ref in rows:
    m = med.get(k)
    runs = ", ".join("%.0f" % v for v in vals.get(k, [])) or "failed"
    ratio = ("%.2f × %s" % (m / med[ref], ref.replace("limit-", ""))
             if ref and m and med.get(ref) else "")
    c = "%.2f" % mcpu[k] if k in mcpu else ""
    L.append("| %s | %s | %s | %s | %s |" % (label, "%.0f" % m if m else "–", runs, ratio, c))
    out.append("%-44s %8s MiB/s  %-22s %s" % (label, "%.0f" % m if m else "-", ratio,
                                              ("cpu " + c + " s") if c else ""))
open(sys.argv[2], "w").write("\n".join(L) + "\n")
print("\n".join(out))
EOF
    log "wrote $OUT_DIR/kernel-passthrough.md"
}

main "$@"
