#!/usr/bin/env bash
# contrib/bench/passthrough.sh - the narrow pass-through check: sequential 1 MiB
# buffered reads (contrib/fio/seq1.fio) of a file in a LOCAL directory, read
# directly and through `efscache SRC MNT -o cache_dir=X` (no emulator; X on the
# same disk).  Page cache dropped before every run; median of RUNS.
#
#   direct      fio on SRC/big
#   cold        efscache's first read: empty cache, so it reads SRC and stores
#               every chunk in cache_dir as it serves it
#   warm-disk   the second read: served from cache_dir (page cache dropped)
#
# Target: each of cold and warm-disk >= 60% of direct.  Prints the table and
# writes OUT_DIR/passthrough.md and passthrough.csv.
#
# Environment: SIZE [2G], RUNS [3], QUICK=1 (SIZE=256M RUNS=1), EFSCACHE_OPTS,
# EFSCACHE_BUILD, BENCH_TMPDIR [/var/tmp], OUT_DIR [docs/bench], KEEP_TMP,
# NO_INSTALL.
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
TARGET=0.6

mount_efscache() {
    # shellcheck disable=SC2086
    start_daemon "$MNT" "$WORK/efscache.log" "$EFSCACHE_BIN" "$SRC" "$MNT" -f \
        -o "cache_dir=$CACHE" $EFSCACHE_OPTS
    EPID=$DAEMON_PID
}

main() {
    local r v kind
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
    CSV=$WORK/passthrough.csv
    echo "run,setup,mibps" >"$CSV"
    EPID=""
    for ((r = 1; r <= RUNS; r++)); do
        drop_caches
        v=$(fio_mibps seq1 "$SRC/big")
        echo "$r,direct,$v" >>"$CSV"
        log "run $r direct: ${v:-FAILED} MiB/s"

        [ -n "$EPID" ] && stop_daemon "$MNT" "$EPID"
        rm -rf "$CACHE"
        mount_efscache || die "efscache did not mount"
        for kind in cold warm-disk; do
            drop_caches
            if is_mounted "$MNT" && kill -0 "$EPID" 2>/dev/null; then
                v=$(fio_mibps seq1 "$MNT/big")
            else
                v=""
            fi
            echo "$r,$kind,$v" >>"$CSV"
            log "run $r efscache $kind: ${v:-FAILED} MiB/s"
        done
    done
    stop_daemon "$MNT" "$EPID"

    mkdir -p "$OUT_DIR"
    cp "$CSV" "$OUT_DIR/passthrough.csv"
    QUICK=$QUICK SIZE_H=$SIZE RUNS=$RUNS TARGET=$TARGET \
    CMD="efscache SRC MNT -f -o cache_dir=CACHE${EFSCACHE_OPTS:+ $EFSCACHE_OPTS}" \
    GIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?") \
    "$PY" - "$CSV" "$OUT_DIR/passthrough.md" <<'EOF'
import csv, datetime, os, platform, statistics, sys
e = os.environ
vals = {}
for r in csv.DictReader(open(sys.argv[1])):
    if r["mibps"]:
        vals.setdefault(r["setup"], []).append(float(r["mibps"]))
med = {k: statistics.median(v) for k, v in vals.items()}
d = med.get("direct")
target = float(e["TARGET"])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
            if l.startswith("model name")), "?")
title = "efscache pass-through check" + (" — QUICK smoke run" if e["QUICK"] == "1" else "")
L = ["# " + title, "",
     "`contrib/bench/passthrough.sh`, %s: sequential 1 MiB buffered reads "
     "(`contrib/fio/seq1.fio`) of a %s file in a local directory, directly and through "
     "`%s` mounted over that directory (cache_dir on the same disk, no emulator). Page cache "
     "dropped before every run; median of %s run(s). Machine: %s, %d cores, kernel %s; "
     "tree %s." % (datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                   e["SIZE_H"], e["CMD"], e["RUNS"], cpu, os.cpu_count(), platform.release(),
                   e["GIT"]),
     "",
     "| read | MiB/s (median) | runs | ratio to direct | target ≥ %.0f%% |" % (target * 100),
     "|---|---:|---|---:|---|"]
out = []
for k, label in (("direct", "direct (no FUSE)"),
                 ("cold", "efscache cold: first read, fetch + store"),
                 ("warm-disk", "efscache warm-disk: second read, from cache_dir")):
    m = med.get(k)
    runs = ", ".join("%.0f" % v for v in vals.get(k, [])) or "failed"
    if k == "direct" or m is None or not d:
        res, ratio = "", ""
    else:
        ratio = "%.0f%%" % (100 * m / d)
        res = "**met**" if m >= target * d else "**missed**"
    L.append("| %s | %s | %s | %s | %s |" % (label, "%.0f" % m if m else "–", runs, ratio, res))
    out.append("%-52s %8s MiB/s  %6s  %s" % (label, "%.0f" % m if m else "-", ratio,
                                             res.strip("*")))
open(sys.argv[2], "w").write("\n".join(L) + "\n")
print("\n".join(out))
EOF
    log "wrote $OUT_DIR/passthrough.md"
}

main "$@"
