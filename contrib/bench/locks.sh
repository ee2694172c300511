#!/usr/bin/env bash
# contrib/bench/locks.sh - lock rates through the mount against the source
# directory, same run: `stress-ng --lockf N --fcntl N -t T --metrics-brief`
# with its temp path on the mount, then on SRC itself, alternating, RUNS
# times; the medians of the real-time bogo ops/s of each stressor and their
# ratio (mount / source).  Also the daemon's largest thread count seen during
# the mount runs (a lock that is granted at once creates no thread).
#
# Target (issue 8): each ratio >= 0.1.
#
# Environment: RUNS [3], SECS [5], WORKERS [2], EFSCACHE_OPTS, EFSCACHE_BUILD,
# BENCH_TMPDIR [/var/tmp], OUT_DIR [docs/bench], KEEP_TMP, NO_INSTALL.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/../.." && pwd)
# shellcheck source=lib.sh
. "$BENCH_DIR/lib.sh"

RUNS=${RUNS:-3}
SECS=${SECS:-5}
WORKERS=${WORKERS:-2}
OUT_DIR=${OUT_DIR:-$REPO/docs/bench}
EFSCACHE_OPTS=${EFSCACHE_OPTS:-}
TARGET=0.1

# rates DIR TAG -> "lockf fcntl" real-time bogo ops/s of one stress-ng run
rates() {
    local dir=$1/stress-$2 yaml=$WORK/$2.yaml
    mkdir -p "$dir"
    stress-ng --lockf "$WORKERS" --fcntl "$WORKERS" -t "$SECS" --metrics-brief \
        --temp-path "$dir" --yaml "$yaml" >"$WORK/$2.log" 2>&1 ||
        { tail -n 5 "$WORK/$2.log" >&2; die "stress-ng failed in $dir"; }
    rm -rf "$dir"
    "$PY" - "$yaml" <<'EOF'
import sys
rate, cur = {}, None
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("- stressor:"):
        cur = line.split(":", 1)[1].strip()
    elif line.startswith("bogo-ops-per-second-real-time:") and cur:
        rate[cur] = float(line.split(":", 1)[1])
print("%.1f %.1f" % (rate.get("lockf", 0.0), rate.get("fcntl", 0.0)))
EOF
}

# threads PID -> the daemon's thread count now
threads() { ls "/proc/$1/task" 2>/dev/null | wc -l; }

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

main() {
    local r m s mlk=() mfc=() slk=() sfc=() sampler maxthr lk fc
    command -v stress-ng >/dev/null || die "missing stress-ng (apt-get install stress-ng)"
    build_project
    bench_mktemp
    trap bench_cleanup EXIT
    WORK=$BENCH_TMP
    SRC=$WORK/src
    MNT=$WORK/mnt
    mkdir -p "$SRC" "$MNT" "$WORK/cache"
    # shellcheck disable=SC2086
    start_daemon "$MNT" "$WORK/efscache.log" "$EFSCACHE_BIN" "$SRC" "$MNT" -f \
        -o "cache_dir=$WORK/cache" $EFSCACHE_OPTS || die "cannot mount"
    EPID=$DAEMON_PID
    echo 0 >"$WORK/maxthr"
    (
        mx=0
        while kill -0 "$EPID" 2>/dev/null; do
            n=$(threads "$EPID")
            if [ "$n" -gt "$mx" ]; then mx=$n; echo "$mx" >"$WORK/maxthr"; fi
            sleep 0.05
        done
    ) &
    sampler=$!
    BENCH_HELPERS+=("$sampler")
    log "threads at start: $(threads "$EPID")"
    for ((r = 1; r <= RUNS; r++)); do
        # Alternate the order, so that neither side always runs first.
        if ((r % 2)); then
            read -r lk fc < <(rates "$MNT" "mnt$r"); mlk+=("$lk"); mfc+=("$fc")
            read -r lk fc < <(rates "$SRC" "src$r"); slk+=("$lk"); sfc+=("$fc")
        else
            read -r lk fc < <(rates "$SRC" "src$r"); slk+=("$lk"); sfc+=("$fc")
            read -r lk fc < <(rates "$MNT" "mnt$r"); mlk+=("$lk"); mfc+=("$fc")
        fi
        log "run $r: mount lockf ${mlk[-1]} fcntl ${mfc[-1]}; source lockf ${slk[-1]} fcntl ${sfc[-1]}"
    done
    maxthr=$(cat "$WORK/maxthr")
    {
        echo "| stressor | mount ops/s | source ops/s | mount/source | target |"
        echo "|---|---:|---:|---:|---:|"
        for s in lockf fcntl; do
            if [ $s = lockf ]; then
                m=$(median "${mlk[@]}"); r=$(median "${slk[@]}")
            else
                m=$(median "${mfc[@]}"); r=$(median "${sfc[@]}")
            fi
            awk -v s=$s -v m="$m" -v r="$r" -v t=$TARGET 'BEGIN {
                printf "| %s | %.0f | %.0f | %.3f | %s |\n", s, m, r, (r > 0 ? m / r : 0), t }'
        done
        echo
        echo "stress-ng --lockf $WORKERS --fcntl $WORKERS -t $SECS, medians of $RUNS runs" \
            "(mount and source alternating, same run); daemon threads at most $maxthr."
    } | tee "$WORK/locks.md"
    mkdir -p "$OUT_DIR"
    cp "$WORK/locks.md" "$OUT_DIR/locks.md"
}

main "$@"
