#!/usr/bin/env bash
# tests/ops/demo-fresh.sh - the README's first command on a fresh machine.
#
# A new user has Debian 12 with only the base system and git, clones the
# repository and runs contrib/demo.sh.  This makes exactly that machine: a
# Debian 12 minbase root (mmdebstrap) plus git, imported into podman, run with
# only what FUSE needs (--device /dev/fuse --cap-add SYS_ADMIN, no
# --privileged, so /proc/sys is read-only as in any container); inside it
# `git clone` of this repository's HEAD and `contrib/demo.sh 32`.  The demo
# must install its own build dependencies from the Debian archive, build,
# and print its five read lines with "bytes ok".  Then it checks that a
# failing build step fails loudly: with a broken meson.build the demo must
# exit non-zero and show meson's own error.
#
# Prints "ok - ..." / "not ok - ..." lines; exit 0, 1, or 77 (skip) when
# podman or mmdebstrap cannot make or run the container.  Needs the network
# to the Debian archive (as apt does).  A few minutes: ~1 min for the root,
# ~1-2 min for apt in the container, the build and the demo.
# Environment: EFSCACHE_TEST_FRESH_BASE=IMAGE reuses a base image (kept).
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
tag="efscache-fresh-$$"
work=$(mktemp -d /tmp/efscache-fresh.XXXXXX)
base_img=${EFSCACHE_TEST_FRESH_BASE:-localhost/$tag:bookworm}
# shellcheck source=tests/ops/podman-lib.sh
. "$here/tests/ops/podman-lib.sh"

cleanup() {
    podman rm -f -t 5 "$tag" >/dev/null 2>&1
    [ -n "${EFSCACHE_TEST_FRESH_BASE:-}" ] || podman rmi -f "$base_img" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v podman >/dev/null || skip "podman is not installed"
[ -e /dev/fuse ] || skip "/dev/fuse is missing"
[ "$(id -u)" -eq 0 ] || skip "needs root (rootful podman with /dev/fuse)"

podman_settings

# The repository as a user would clone it: HEAD, nothing uncommitted.
git clone -q --no-hardlinks "$here" "$work/repo.git" 2>"$work/clone.err" ||
    { cat "$work/clone.err" >&2; notok "clone of $here"; exit 1; }
echo "# testing commit $(git -C "$work/repo.git" rev-parse --short HEAD)"

if ! podman image exists "$base_img"; then
    command -v mmdebstrap >/dev/null || skip "mmdebstrap is not installed"
    t=$(date +%s)
    if ! mmdebstrap --quiet --variant=minbase --include=git bookworm - 2>"$work/mmdebstrap.log" |
        podman import -q - "$base_img" >/dev/null 2>"$work/import.log"; then
        cat "$work/mmdebstrap.log" "$work/import.log" >&2
        skip "could not make a Debian 12 root with mmdebstrap (no apt mirror?)"
    fi
    echo "# fresh root made in $(( $(date +%s) - t )) s"
fi
podman run --rm --network none "$base_img" sh -c \
    '! command -v gcc && ! command -v meson && ! dpkg -s libfuse3-dev >/dev/null 2>&1 && command -v git' \
    >/dev/null 2>&1 || skip "podman cannot run the fresh root, or it is not fresh"
ok "fresh root: git, and no compiler, meson or libfuse3-dev"

# In one container of the fresh root (the clone bound read-only at /src): clone,
# run the demo; then break meson.build and run it again (apt is done by then),
# which must stop at meson setup with meson's own message.
t=$(date +%s)
podman run --rm --name "$tag" --network host \
    --device /dev/fuse --cap-add SYS_ADMIN --security-opt apparmor=unconfined \
    -v "$work/repo.git:/src:ro" "$base_img" bash -c '
        git clone -q /src /root/efscache && cd /root/efscache || exit 1
        contrib/demo.sh 32
        echo "=== demo exit $?"
        sed -i "s/dependency(.libxxhash./dependency(\x27libxxhash-not-there\x27/" meson.build
        rm -rf build-demo
        contrib/demo.sh 32
        echo "=== broken exit $?"' >"$work/all.log" 2>&1
echo "# fresh root: $(( $(date +%s) - t )) s for clone, apt, build, demo and the broken run"
sed -n '1,/^=== demo exit/p' "$work/all.log" > "$work/demo.log"
sed -n '/^=== demo exit/,$p' "$work/all.log" > "$work/broken.log"
echo "# the demo's output:"
sed 's/^/#   /' "$work/demo.log"
if grep -qx "=== demo exit 0" "$work/demo.log"; then
    ok "contrib/demo.sh exits 0 on a fresh Debian 12"
else
    notok "contrib/demo.sh exits 0 on a fresh Debian 12" "$(tail -n 5 "$work/all.log")"
fi
n=$(grep -c "(bytes ok)" "$work/demo.log")
if [ "$n" -eq 4 ]; then ok "four reads through efscache, all bytes ok"; else notok "four reads through efscache, all bytes ok" "got $n"; fi
if grep -q "after a remount (cache kept).*fetched from EFS: *0.0 MiB" "$work/demo.log"; then
    ok "the read after a remount fetched nothing from the emulated EFS"
else
    notok "the read after a remount fetched nothing from the emulated EFS"
fi
echo "# the broken run's output:"
sed 's/^/#   /' "$work/broken.log"
if grep -q "^=== broken exit [1-9]" "$work/broken.log" &&
    grep -q "demo: meson setup failed" "$work/broken.log" &&
    grep -q "libxxhash-not-there" "$work/broken.log"; then
    ok "a failing meson setup: non-zero exit and meson's own message"
else
    notok "a failing meson setup: non-zero exit and meson's own message"
fi

[ $fails -eq 0 ]
