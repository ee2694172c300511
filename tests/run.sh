#!/usr/bin/env bash
# tests/run.sh - install what the tests need, build twice against Debian's
# libfuse 3.14 (plain and ASan+UBSan, warnings as errors) and run every test in
# both; tests/race.sh quick (ThreadSanitizer and valgrind memcheck, each one
# line of summary); a third build against libfuse 3.17.2 built from Debian's
# source package (kernel passthrough compiled and tested there); the container
# test (tests/container/run.sh: image build, sidecar pattern with podman) and
# the release tarball test (tests/container/tarball.sh), the demo on a fresh
# Debian 12 (tests/ops/demo-fresh.sh) and the .deb under systemd
# (tests/ops/debian.sh), each once.
# Prints one closing line "N passed, N failed, N skipped".
#
# Usage: tests/run.sh [meson test args...]   (e.g. --suite unit)
# Environment: EFSCACHE_SKIP_APT=1 skips the package step;
# EFSCACHE_SKIP_RACE=1 skips tests/race.sh quick (TSan and valgrind, 6 to 14 min);
# EFSCACHE_SKIP_LIBFUSE317=1 the libfuse 3.17 configuration (below);
# EFSCACHE_SKIP_CONTAINER=1 the container and release tarball tests;
# EFSCACHE_SKIP_FRESH=1 the fresh-root demo; EFSCACHE_SKIP_DEBIAN=1 the .deb test
# (race, container, tarball, fresh-root and .deb tests are also skipped when
# meson test args are given).
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

packages=(gcc meson ninja-build pkg-config libfuse3-dev fuse3 libxxhash-dev python3
          attr util-linux procps fio scdoc
          libmicrohttpd-dev python3-prometheus-client python3-yaml
          podman runc mmdebstrap uidmap
          build-essential dpkg-dev debhelper fakeroot lintian
          clang valgrind git gdb)

install_packages() {
    local missing=() p
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "run.sh: missing packages; as root run:" >&2
        echo "  apt-get install -y ${missing[*]}" >&2
        return 1
    fi
    echo "run.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
}

if [ "${EFSCACHE_SKIP_APT:-0}" != 1 ]; then
    install_packages || exit 1
fi
# The integration tests need the fuse module's device.
if [ ! -e /dev/fuse ] && [ "$(id -u)" -eq 0 ]; then
    modprobe fuse 2>/dev/null || true
fi

san_dir=$(mktemp -d /tmp/efscache-san.XXXXXX)
trap 'rm -rf "$san_dir"' EXIT

passed=0 failed=0 skipped=0

# run_config NAME MESON_SETUP_ARGS...
run_config() {
    local name=$1; shift
    local dir="$here/build-ci-$name" log
    echo "=== $name: configure and build ($dir)"
    if [ -d "$dir" ]; then
        meson setup --reconfigure "$dir" -Dwerror=true "$@" >/dev/null || return 1
    else
        meson setup "$dir" -Dwerror=true "$@" >/dev/null || return 1
    fi
    if ! ninja -C "$dir"; then
        echo "run.sh: $name build failed" >&2
        failed=$((failed + 1))
        return 1
    fi
    echo "=== $name: meson test"
    log="$dir/meson-logs/run-sh-test.txt"
    meson test -C "$dir" --print-errorlogs --num-processes 1 "${test_args[@]}" 2>&1 | tee "$log"
    local ok fail skip to
    ok=$(awk '/^Ok:/ {print $2}' "$log" | tail -n1)
    fail=$(awk '/^Fail:/ {print $2}' "$log" | tail -n1)
    to=$(awk '/^Timeout:/ {print $2}' "$log" | tail -n1)
    skip=$(awk '/^Skipped:/ {print $2}' "$log" | tail -n1)
    local up; up=$(awk '/^Unexpected Pass:/ {print $3}' "$log" | tail -n1)
    if [ -z "$ok" ]; then
        echo "run.sh: $name: no test summary from meson" >&2
        failed=$((failed + 1))
        return 1
    fi
    passed=$((passed + ok))
    failed=$((failed + ${fail:-0} + ${to:-0} + ${up:-0}))
    skipped=$((skipped + ${skip:-0}))
}

test_args=("$@")

# One indentation style per language, as .editorconfig says (whole tree, seconds).
if [ ${#test_args[@]} -eq 0 ] && git -C "$here" rev-parse --git-dir >/dev/null 2>&1; then
    echo "=== style: contrib/lint/indent.py"
    if "$here/contrib/lint/indent.py"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
fi

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:log_path=$san_dir/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$san_dir/ubsan"
export LSAN_OPTIONS="suppressions=$here/tests/lsan.supp:print_suppressions=0"

# CI's time (under 60 min on the 2-core machine) is spent where each
# configuration finds something of its own: the plain build runs everything
# at full size but a 100,000-file tree (still 100 x the fd limit the test
# sets) and a two-minute soak; the sanitizer build runs everything smaller;
# libfuse 3.17 runs the suites that go through FUSE.
EFSCACHE_BIGTREE_FILES=${EFSCACHE_BIGTREE_FILES:-100000} EFSCACHE_SOAK_SECONDS=${EFSCACHE_SOAK_SECONDS:-120} \
run_config plain -Dbuildtype=debugoptimized
# ASan makes every request several times dearer: the sanitizer build walks a
# 20,000-file tree and soaks for 60 s.
EFSCACHE_BIGTREE_FILES=20000 EFSCACHE_SOAK_SECONDS=60 \
run_config sanitize -Dbuildtype=debug -Db_sanitize=address,undefined -Db_lundef=false

# Races and memory errors (tests/race.sh quick, 6 to 14 min): ThreadSanitizer over
# the unit, lock, I/O and concurrency tests, valgrind memcheck of the daemon under
# the read, write, lock and ctl tests.  The long run (tests/race.sh all, over an
# hour) is not part of CI.  EFSCACHE_SKIP_RACE=1 leaves it out.
if [ "${EFSCACHE_SKIP_RACE:-0}" != 1 ] && [ ${#test_args[@]} -eq 0 ]; then
    echo "=== races and memory errors (tests/race.sh quick)"
    if env -u ASAN_OPTIONS -u UBSAN_OPTIONS -u LSAN_OPTIONS "$here/tests/race.sh" quick; then
        passed=$((passed + 1))
    else
        echo "run.sh: tests/race.sh quick failed" >&2
        failed=$((failed + 1))
    fi
fi

# ---- third configuration: libfuse 3.17 (kernel passthrough) ------------------
# The plain and sanitizer builds link Debian 12's libfuse 3.14, which has no
# passthrough: its code (src/passthrough.c, EFS_HAVE_PASSTHROUGH) is compiled
# and tested only here.  tests/build-libfuse.sh builds libfuse 3.17.2 from
# Debian trixie's source package into build-ci-libfuse/prefix (~3 min, reused
# while its stamp matches); the build finds it through meson's
# pkg_config_path (kept by the build dir across regenerations) and an rpath.
# Suites: cache (test_passthrough among them; the soak at 60 s),
# integration (the tree test at 10,000 files: it tests the inode table, not
# libfuse), ctl, and passthrough (unit/passthrough: passthrough.c's backing
# ids against a fake of libfuse's calls; the other unit tests and the ops
# suite do not go through libfuse).  Measured on the shared 2-core machine
# under load (load average 10-20): ~10 min with the libfuse build.
# EFSCACHE_SKIP_LIBFUSE317=1 skips this configuration.
if [ "${EFSCACHE_SKIP_LIBFUSE317:-0}" != 1 ]; then
    lf317_start=$(date +%s)
    lf317_prefix="$here/build-ci-libfuse/prefix"
    if "$here/tests/build-libfuse.sh" "$here/build-ci-libfuse"; then
        lf317_saved=("${test_args[@]}")
        [ ${#test_args[@]} -gt 0 ] ||
            test_args=(--suite cache --suite integration --suite ctl --suite passthrough)
        EFSCACHE_BIGTREE_FILES=10000 EFSCACHE_SOAK_SECONDS=60 \
        run_config libfuse317 -Dbuildtype=debugoptimized \
            "-Dpkg_config_path=$lf317_prefix/lib/pkgconfig" \
            "-Dc_link_args=-Wl,-rpath,$lf317_prefix/lib"
        test_args=("${lf317_saved[@]}")
    else
        echo "run.sh: building libfuse 3.17 failed: no passthrough configuration" >&2
        failed=$((failed + 1))
    fi
    echo "=== libfuse317: $(( $(date +%s) - lf317_start )) s (libfuse build included)"
fi
# ---- end of the libfuse 3.17 configuration -----------------------------------

# The container test builds an image from the source tree (minutes): once,
# not per configuration.  77 = skipped (podman cannot run containers here).
if [ "${EFSCACHE_SKIP_CONTAINER:-0}" != 1 ] && [ ${#test_args[@]} -eq 0 ]; then
    echo "=== container test (tests/container/run.sh)"
    EFSCACHE_IMAGE_DEB_BUILD_OPTIONS=nocheck timeout 1800 "$here/tests/container/run.sh"
    rc=$?
    case $rc in
    0) passed=$((passed + 1)) ;;
    77) skipped=$((skipped + 1)) ;;
    *) echo "run.sh: container test failed ($rc)" >&2; failed=$((failed + 1)) ;;
    esac
    # The release tarball (contrib/release) in a root of nothing but its own
    # files: ~5 min the first time (libfuse, xxHash and libmicrohttpd from
    # source into build-ci-release/, then reused), under a minute after.
    echo "=== release tarball test (tests/container/tarball.sh)"
    EFSCACHE_RELEASE_BUILD="$here/build-ci-release" timeout 1200 "$here/tests/container/tarball.sh"
    rc=$?
    case $rc in
    0) passed=$((passed + 1)) ;;
    77) skipped=$((skipped + 1)) ;;
    *) echo "run.sh: release tarball test failed ($rc)" >&2; failed=$((failed + 1)) ;;
    esac
fi

# The README's first command on a fresh Debian 12 (tests/ops/demo-fresh.sh,
# ~1-2 min) and the .deb under a real systemd (tests/ops/debian.sh: build,
# install, upgrade, crash, template, remove; ~4-6 min): once each, not per
# configuration.  77 = skipped (podman or mmdebstrap cannot run here).
# EFSCACHE_SKIP_FRESH=1 / EFSCACHE_SKIP_DEBIAN=1 leave them out.
for ops_script in demo-fresh debian; do
    case $ops_script in
    demo-fresh) [ "${EFSCACHE_SKIP_FRESH:-0}" != 1 ] || continue ;;
    debian) [ "${EFSCACHE_SKIP_DEBIAN:-0}" != 1 ] || continue ;;
    esac
    [ ${#test_args[@]} -eq 0 ] || continue
    echo "=== tests/ops/$ops_script.sh"
    timeout 1200 "$here/tests/ops/$ops_script.sh"
    rc=$?
    case $rc in
    0) passed=$((passed + 1)) ;;
    77) skipped=$((skipped + 1)) ;;
    *) echo "run.sh: tests/ops/$ops_script.sh failed ($rc)" >&2; failed=$((failed + 1)) ;;
    esac
done

# Sanitizer reports from daemonized processes go to files, not to a test's
# stderr: any report is a failure.
reports=$(find "$san_dir" -type f -size +0 2>/dev/null)
if [ -n "$reports" ]; then
    echo "=== sanitizer reports:"
    for f in $reports; do
        echo "--- $f"
        cat "$f"
    done
    failed=$((failed + $(echo "$reports" | wc -l)))
fi

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
