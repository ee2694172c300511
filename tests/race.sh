#!/usr/bin/env bash
# tests/race.sh - race and memory-error hunting (issue 8 item 4).
#
#   tests/race.sh quick      # the CI run (tests/run.sh runs it): 6 to 14 min on 2 cores
#   tests/race.sh            # the long run, both tools (= all): over an hour on 2 cores
#   tests/race.sh tsan       # the long ThreadSanitizer run only (14 min)
#   tests/race.sh valgrind   # the long valgrind memcheck run only (most of the hour)
#
# tsan      clang build with -fsanitize=thread (build-ci-tsan).  Every process, efscache
#           and efs-emu daemons included, logs to $TSAN_OPTIONS log_path; one report
#           anywhere is a failure.
#           long:  the unit suite, the whole cache suite (test_concurrency among them,
#                  the soak for 60 s) and integration/test_locks and test_io.
#           quick: the unit suite, integration/test_locks and test_io, and the short
#                  cache tests with concurrent readers and writers: test_concurrency,
#                  test_write_coherence, test_faults, test_hit_after_miss
#                  (4 to 6 min with its build).
# valgrind  the plain debug build (build-ci-valgrind), every efscache daemon that the
#           harness starts (h.mount_efscache) run as
#           `valgrind --tool=memcheck --leak-check=full --log-file=DIR/vg.%p efscache ...`
#           through EFSCACHE_WRAPPER; a log whose ERROR SUMMARY is not 0 is a failure
#           (the harness checks each test's daemons, this script counts all logs).
#           Daemons a test starts itself (e.g. through mount.fuse3) are not wrapped.
#           long:  the whole integration suite (test_bigtree at 5,000 files) and the
#                  whole cache suite (the soak for 60 s).
#           quick: read path (cache/test_hit_after_miss, integration/test_io), write
#                  path (test_io, cache/test_write_coherence), locks (test_locks),
#                  threads (cache/test_concurrency) and ctl (ctl/test_ctl,
#                  test_ctl_perms) (3 to 7 min with its build).
#
# Suppressions: tests/tsan.supp and tests/valgrind.supp, each entry with the reason.
# Prints per run: tests passed/failed, reports found, minutes taken; exits 1 on any.
# Needs clang and valgrind (tests/run.sh installs them), and /dev/fuse.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

what=${1:-all}
case $what in
all | tsan | valgrind | quick) ;;
*) echo "usage: $0 [all|tsan|valgrind|quick]" >&2; exit 2 ;;
esac

logs=$(mktemp -d /tmp/efscache-race.XXXXXX)
failed=0
summary=()

# build DIR SETUP_ARGS...: configure (once) and build; CC from the environment.
# On failure the end of the build's output goes to stderr (a clang-only warning is
# an error here, and otherwise would not be seen).
build() {
    local dir=$1 log; shift
    log="$logs/build-${dir##*/}.txt"
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" -Dwerror=true "$@" >"$log" 2>&1 || { tail -n 40 "$log" >&2; return 1; }
    fi
    ninja -C "$dir" >>"$log" 2>&1 || { tail -n 40 "$log" >&2; return 1; }
}

# run_tests DIR NAME ARGS...: one meson test invocation; adds to ok/fail of this run.
# MULT: how many times slower than a plain build (meson's timeouts and the harness's
# watchdog are scaled by it).
run_tests() {
    local dir=$1 name=$2 log; shift 2
    log="$logs/$name.txt"
    EFSCACHE_TEST_TIMEOUT=$((280 * MULT)) EFSCACHE_TIMEOUT_SCALE=$MULT \
        meson test -C "$dir" --no-rebuild --print-errorlogs --num-processes 1 \
        --timeout-multiplier "$MULT" "$@" >"$log" 2>&1
    local o f t
    o=$(awk '/^Ok:/ {print $2}' "$log" | tail -n1)
    f=$(awk '/^Fail:/ {print $2}' "$log" | tail -n1)
    t=$(awk '/^Timeout:/ {print $2}' "$log" | tail -n1)
    run_ok=$((run_ok + ${o:-0}))
    run_fail=$((run_fail + ${f:-0} + ${t:-0}))
    [ -n "$o" ] || { echo "race.sh: no meson summary in $log" >&2; run_fail=$((run_fail + 1)); }
    grep -E "^ *[0-9]+/[0-9]+ .*(FAIL|TIMEOUT)" "$log" || true
}

if [ "$what" = all ] || [ "$what" = tsan ] || [ "$what" = quick ]; then
    t0=$(date +%s) run_ok=0 run_fail=0
    echo "=== tsan ($what): clang -fsanitize=thread build (build-ci-tsan)"
    if CC=clang build build-ci-tsan -Dbuildtype=debug -Db_sanitize=thread -Db_lundef=false; then
        mkdir -p "$logs/tsan"
        MULT=4
        export TSAN_OPTIONS="log_path=$logs/tsan/tsan:halt_on_error=0:second_deadlock_stack=1:suppressions=$here/tests/tsan.supp"
        run_tests build-ci-tsan tsan-unit --suite unit
        if [ "$what" = quick ]; then
            run_tests build-ci-tsan tsan-cache cache/test_concurrency \
                cache/test_write_coherence cache/test_faults cache/test_hit_after_miss
        else
            # the soak is bounded in time: a minute is enough under a tool
            EFSCACHE_SOAK_SECONDS=60 run_tests build-ci-tsan tsan-cache --suite cache
        fi
        run_tests build-ci-tsan tsan-integration integration/test_locks integration/test_io
        unset TSAN_OPTIONS
        reports=$(grep -l "ThreadSanitizer" "$logs"/tsan/* "$logs"/tsan-*.txt 2>/dev/null | wc -l)
    else
        echo "race.sh: tsan build failed" >&2
        run_fail=$((run_fail + 1)) reports=0
    fi
    mins=$(( ($(date +%s) - t0 + 30) / 60 ))
    summary+=("tsan ($what): $run_ok tests passed, $run_fail failed, $reports files with a report, $mins min")
    [ "$run_fail" -eq 0 ] && [ "$reports" -eq 0 ] || failed=1
fi

if [ "$what" = all ] || [ "$what" = valgrind ] || [ "$what" = quick ]; then
    t0=$(date +%s) run_ok=0 run_fail=0
    echo "=== valgrind ($what): memcheck of the efscache daemon (build-ci-valgrind)"
    if build build-ci-valgrind -Dbuildtype=debug; then
        mkdir -p "$logs/vg"
        MULT=10
        export EFSCACHE_WRAPPER="valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 --suppressions=$here/tests/valgrind.supp --log-file=$logs/vg/vg.%p"
        if [ "$what" = quick ]; then
            run_tests build-ci-valgrind vg-quick cache/test_hit_after_miss \
                integration/test_io cache/test_write_coherence integration/test_locks \
                cache/test_concurrency ctl/test_ctl ctl/test_ctl_perms
        else
            # 200,000 files under valgrind would take hours; 5,000 keep the path exercised.
            EFSCACHE_BIGTREE_FILES=5000 run_tests build-ci-valgrind vg-integration --suite integration
            EFSCACHE_SOAK_SECONDS=60 run_tests build-ci-valgrind vg-cache --suite cache
        fi
        unset EFSCACHE_WRAPPER
        nlogs=$(find "$logs/vg" -type f | wc -l)
        # a non-zero summary, or an error's header (a SIGKILLed daemon writes no summary)
        reports=$(grep -lE "ERROR SUMMARY: [1-9]|== (Invalid (read|write|free)|Mismatched free|Conditional jump|Use of uninitialised|Syscall param|Source and destination overlap)" \
            "$logs"/vg/* 2>/dev/null | wc -l)
    else
        echo "race.sh: valgrind build failed" >&2
        run_fail=$((run_fail + 1)) reports=0 nlogs=0
    fi
    mins=$(( ($(date +%s) - t0 + 30) / 60 ))
    summary+=("valgrind ($what): $run_ok tests passed, $run_fail failed, $nlogs daemon logs, $reports with errors, $mins min")
    [ "$run_fail" -eq 0 ] && [ "$reports" -eq 0 ] || failed=1
fi

for s in "${summary[@]}"; do echo "$s"; done
if [ "$failed" -ne 0 ]; then
    echo "race.sh: reports and logs kept in $logs"
    exit 1
fi
rm -rf "$logs"
