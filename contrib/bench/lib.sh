# shellcheck shell=bash
# contrib/bench/lib.sh - helpers shared by run.sh and passthrough.sh (sourced, not run).
#
# Mounts: every daemon is started in the foreground (-f) in the background of
# this shell, so its PID is $! and we never have to guess which process to stop.
# Each mount is registered in BENCH_MOUNTS ("mountpoint pid" pairs, innermost
# last) and bench_cleanup, run from the EXIT trap, unmounts them in reverse order
# and kills only the PIDs we started.

BENCH_MOUNTS=()   # "mountpoint pid", in mount order
BENCH_PIDS=()     # every daemon PID we started
BENCH_HELPERS=()  # helper PIDs (page pinners), killed before unmounting
BENCH_TMP=""      # removed by bench_cleanup unless KEEP_TMP=1
BENCH_CAN_DROP=0  # 1 if we may write /proc/sys/vm/drop_caches

# The real interpreter, not a version-manager shim that costs a second per start.
PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || PY=python3

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f\n", b - a }'; }
# mibps BYTES SECONDS
mibps() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.3f\n", n / 1048576 / s }'; }

# True if $1 (an absolute path without spaces) is a mount point right now.
is_mounted() {
    awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo
}

bench_check_drop() {
    if [ -w /proc/sys/vm/drop_caches ] && sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
        BENCH_CAN_DROP=1
    else
        BENCH_CAN_DROP=0
        log "warning: cannot write /proc/sys/vm/drop_caches (not root?): cold rows are NOT cold"
    fi
}

# Drop the page cache, dentries and inodes (cold-disk rows).
drop_caches() {
    sync
    if [ "$BENCH_CAN_DROP" = 1 ]; then
        echo 3 >/proc/sys/vm/drop_caches
    fi
}

# How many times anyone dropped the page cache so far (to notice other users of
# this machine dropping it under a warm-page measurement).
drop_count() {
    awk '$1 == "drop_pagecache" { print $2; f = 1 } END { if (!f) print 0 }' /proc/vmstat
}

# Percentage of file $1 resident in the page cache (fincore), or "?".
resident_pct() {
    local res size
    res=$(fincore -nb -o RES "$1" 2>/dev/null | awk 'NR == 1 { print $1 }') || res=""
    size=$(stat -c %s "$1" 2>/dev/null) || size=0
    if [ -n "$res" ] && [ "$size" -gt 0 ]; then
        echo $((res * 100 / size))
    else
        echo "?"
    fi
}

# wait_mount MNT PID: wait up to 30 s for MNT to appear while PID lives.
wait_mount() {
    local mnt=$1 pid=$2 i
    for ((i = 0; i < 300; i++)); do
        is_mounted "$mnt" && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# start_daemon MNT LOG CMD...: run CMD (which must stay in the foreground) in
# the background, wait for MNT, register it.  Sets DAEMON_PID.  Returns 1 (and
# leaves nothing behind) if the mount did not appear.
start_daemon() {
    local mnt=$1 logf=$2
    shift 2
    is_mounted "$mnt" && { log "$mnt is already a mount point"; return 1; }
    "$@" >>"$logf" 2>&1 </dev/null &
    DAEMON_PID=$!
    BENCH_PIDS+=("$DAEMON_PID")
    if ! wait_mount "$mnt" "$DAEMON_PID"; then
        log "mount of $mnt failed; last lines of $logf:"
        tail -n 5 "$logf" >&2 || true
        stop_daemon "$mnt" "$DAEMON_PID"
        return 1
    fi
    BENCH_MOUNTS+=("$mnt $DAEMON_PID")
    return 0
}

# stop_daemon MNT PID: unmount MNT (if mounted), wait for PID to exit; kill it
# (only it) if it does not; lazy-unmount as the last resort.
stop_daemon() {
    local mnt=$1 pid=$2 i keep=()
    for ((i = 0; i < 50; i++)); do
        is_mounted "$mnt" || break
        fusermount3 -u "$mnt" 2>/dev/null && break
        sleep 0.2
    done
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not exit after unmounting $mnt; sending SIGTERM"
        kill "$pid" 2>/dev/null || true
        sleep 1
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    fi
    wait "$pid" 2>/dev/null || true
    if is_mounted "$mnt"; then
        log "$mnt still mounted; lazy unmount"
        fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    fi
    for i in "${BENCH_MOUNTS[@]}"; do
        [ "$i" = "$mnt $pid" ] || keep+=("$i")
    done
    BENCH_MOUNTS=("${keep[@]}")
}

bench_cleanup() {
    local i entry pid
    set +e
    for pid in "${BENCH_HELPERS[@]}"; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    for ((i = ${#BENCH_MOUNTS[@]} - 1; i >= 0; i--)); do
        entry=${BENCH_MOUNTS[i]}
        stop_daemon "${entry% *}" "${entry##* }"
    done
    for pid in "${BENCH_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
        fi
    done
    if [ -n "$BENCH_TMP" ] && [ -d "$BENCH_TMP" ]; then
        if [ "${KEEP_TMP:-0}" = 1 ]; then
            log "kept $BENCH_TMP"
        elif grep -q " $BENCH_TMP/" /proc/self/mountinfo; then
            log "something is still mounted under $BENCH_TMP; not removing it"
        else
            rm -rf "$BENCH_TMP"
        fi
    fi
}

# bench_mktemp: a scratch directory on a real disk (not tmpfs), in BENCH_TMPDIR
# or /var/tmp.
bench_mktemp() {
    local base=${BENCH_TMPDIR:-/var/tmp} fstype
    BENCH_TMP=$(mktemp -d "$base/efscache-bench.XXXXXX")
    fstype=$(stat -f -c %T "$BENCH_TMP")
    case $fstype in
    tmpfs | ramfs) log "warning: $BENCH_TMP is on $fstype; 'limit' and cache rows measure RAM, not a disk" ;;
    esac
}

# parse_size 2G -> bytes (K M G T, powers of 1024).
parse_size() {
    "$PY" -c '
import re, sys
m = re.fullmatch(r"(\d+)([KMGT]?)i?B?", sys.argv[1].strip(), re.I)
if not m:
    sys.exit("bad size: " + sys.argv[1])
print(int(m.group(1)) << (10 * " KMGT".index((m.group(2) or " ").upper())))' "$1"
}

# make_file PATH BYTES: incompressible data, written once.
make_file() {
    head -c "$2" /dev/urandom >"$1.tmp"
    mv "$1.tmp" "$1"
}

# ---- dependencies and build ----

# install_deps: apt-get install what is missing (as root), else fail listing it.
# fio_mibps JOB FILE -> MiB/s of $FIO_DIR/JOB.fio reading FILE (SIZE_BYTES, a
# quarter of it per job as PART), empty on failure with fio's last lines on
# stderr.  Bounded by STEP_TIMEOUT seconds when the script sets it.  Needs
# WORK, FIO_DIR and SIZE_BYTES.
fio_mibps() {
    local json=$WORK/fio-$1-$RANDOM$RANDOM.json out bound=()
    [ -n "${STEP_TIMEOUT:-}" ] && bound=(timeout -k 10 "$STEP_TIMEOUT")
    if FILENAME=$2 SIZE=$SIZE_BYTES PART=$((SIZE_BYTES / 4)) "${bound[@]}" \
        fio --output-format=json --output="$json" "$FIO_DIR/$1.fio" >"$json.log" 2>&1 &&
        out=$("$PY" "$BENCH_DIR/benchlib.py" fio "$json" 2>>"$json.log"); then
        echo "${out%% *}"
    else
        tail -n 3 "$json.log" >&2 || true
        echo ""
    fi
}

install_deps() {
    local missing=() pkgs=() c
    declare -A pkg_of=([fio]=fio [rclone]=rclone [gnuplot]=gnuplot-nox [fusermount3]=fuse3
        [fincore]=util-linux [python3]=python3 [meson]=meson [ninja]=ninja-build
        [pkg-config]=pkg-config [gcc]=gcc)
    for c in "${!pkg_of[@]}"; do
        command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    if command -v pkg-config >/dev/null 2>&1; then
        pkg-config --exists fuse3 || missing+=(libfuse3-dev)
        pkg-config --exists libxxhash || missing+=(libxxhash-dev)
    fi
    [ ${#missing[@]} -eq 0 ] && return 0
    for c in "${missing[@]}"; do
        pkgs+=("${pkg_of[$c]:-$c}")
    done
    if [ "${NO_INSTALL:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing: ${pkgs[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${pkgs[@]}" libfuse3-dev libxxhash-dev
    else
        die "missing: ${missing[*]} (install: ${pkgs[*]})"
    fi
    PY=$(python3 -c 'import sys; print(sys.executable)')
}

# build_project: BUILD=$EFSCACHE_BUILD, or build REPO into REPO/build-bench
# (release); sets EFSCACHE_BIN, CTL_BIN, EMU_BIN.
build_project() {
    if [ -n "${EFSCACHE_BUILD:-}" ]; then
        BUILD=$(cd "$EFSCACHE_BUILD" && pwd)
        log "using the build in $BUILD"
    else
        BUILD=$REPO/build-bench
        if [ ! -f "$BUILD/build.ninja" ]; then
            log "meson setup $BUILD -Dbuildtype=release"
            meson setup "$BUILD" "$REPO" -Dbuildtype=release >"$BUILD.setup.log" 2>&1 ||
                { tail -n 20 "$BUILD.setup.log" >&2; die "meson setup failed"; }
        fi
        log "ninja -C $BUILD"
        ninja -C "$BUILD" >"$BUILD.ninja.log" 2>&1 ||
            { tail -n 30 "$BUILD.ninja.log" >&2; die "build failed"; }
    fi
    EFSCACHE_BIN=$BUILD/src/efscache
    # shellcheck disable=SC2034 # used by run.sh
    CTL_BIN=$BUILD/src/efscachectl
    EMU_BIN=$BUILD/tests/emu/efs-emu
    [ -x "$EFSCACHE_BIN" ] || die "no $EFSCACHE_BIN"
    [ -x "$EMU_BIN" ] || die "no $EMU_BIN (the EFS emulator, tests/emu)"
}
