#!/usr/bin/env bash
# tests/container/tarball.sh - the release tarball (contrib/release) runs in
# a root that holds nothing but its own files.
#
# 1. Builds it (contrib/release/build-tarball.sh; libfuse, xxHash and
#    libmicrohttpd from Debian source packages under build-ci-release/, reused
#    by later runs) and checks its three programs: static (no interpreter, no
#    library), hardened (static-pie, full RELRO, fortify; the stack protector
#    from the compile commands).
# 2. `podman import`s the tarball itself as an image, so the container's root
#    is exactly the tarball's files (no shell, no libc, no /etc), and runs its
#    efscache there over a tmpfs source from the host, the mount shared back
#    to the host below an rshared dir: the host reads the right bytes through
#    it; efscachectl (from the same root) warms a file and, where the kernel
#    has FUSE passthrough (6.9+), the next open is passed through; podman
#    stop unmounts and exits 0.  What Amazon Linux 2023 and a Bottlerocket
#    host container add around these files is a kernel, which is the host's
#    here too.
# 3. install.sh puts the files under a DESTDIR with the unit's paths pointed
#    at PREFIX/bin.
#
# Prints "ok - ..." / "not ok - ..." lines; exit 0, 1, or 77 (skip) only
# when podman cannot run a container at all.
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
tag="efscache-ttest-$$"
work=$(mktemp -d /tmp/efscache-ttest.XXXXXX)
img="localhost/$tag:latest"
ctr="$tag-run"
. "$here/tests/container/lib.sh"

cleanup() {
    podman container exists "$ctr" 2>/dev/null && podman rm -f -t 5 "$ctr" >/dev/null
    podman image exists "$img" 2>/dev/null && podman rmi -f "$img" >/dev/null
    umount_all "$work/shared/models" "$work/shared" "$work/src"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need_podman
podman_conf

# ---- 1. the tarball ---------------------------------------------------------
t=$(date +%s)
if EFSCACHE_RELEASE_BUILD="${EFSCACHE_RELEASE_BUILD:-$here/build-ci-release}" \
    "$here/contrib/release/build-tarball.sh" "$work/out" >"$work/build.log" 2>&1; then
    tarball=$(tail -n 1 "$work/build.log")
    ok "build-tarball.sh builds $(basename "$tarball")"
    note "tarball: $(du -h "$tarball" | cut -f1), built in $(($(date +%s) - t)) s"
else
    tail -n 30 "$work/build.log"
    notok "build-tarball.sh builds the tarball"
    exit 1
fi
top=$(tar tzf "$tarball" | head -n 1)
top=${top%%/*}
mkdir -p "$work/x"
tar -C "$work/x" -xzf "$tarball"
for f in bin/efscache bin/efscachectl bin/fusermount3 share/man/man1/efscache.1 \
    share/man/man1/efscachectl.1 lib/systemd/system/efscache.service \
    lib/systemd/system/efscache@.service libexec/efscache/efscache-clear-dead-mount \
    lib/tmpfiles.d/efscache.conf etc/default/efscache \
    share/doc/efscache/examples/efscache-instance.default install.sh README.md; do
    check "tarball holds $f" test -s "$work/x/$top/$f"
done
# static FILE: no program interpreter, no shared library needed.
static() {
    ! readelf -lW "$1" | grep -q INTERP && ! readelf -dW "$1" | grep -q NEEDED ||
        { echo "$1 is dynamically linked"; return 1; }
}
# (lib.sh's hardened: the stack protector cannot be read off a static binary,
# static glibc brings __stack_chk_fail along either way; the compile commands
# say it below.)
for b in efscache efscachectl fusermount3; do
    check "$b: static, no library needed" static "$work/x/$top/bin/$b"
    check "$b: hardened (static-pie, full RELRO, fortify)" hardened "$work/x/$top/bin/$b"
done
cc_json="${EFSCACHE_RELEASE_BUILD:-$here/build-ci-release}/efscache/compile_commands.json"
check "every efscache source was compiled with -fstack-protector-strong and _FORTIFY_SOURCE" \
    python3 -c '
import json, sys
cmds = json.load(open(sys.argv[1]))
bad = [c["file"] for c in cmds if "-fstack-protector-strong" not in c["command"]
       or "-D_FORTIFY_SOURCE=2" not in c["command"]]
assert cmds and not bad, bad
' "$cc_json"

# ---- 2. in a root of nothing but the tarball --------------------------------
if ! podman import -q "$tarball" "$img" >/dev/null 2>"$work/import.err"; then
    cat "$work/import.err" >&2
    skip "podman cannot import an image: $(head -n1 "$work/import.err")"
fi
bin=/$top/bin
check "the image's root is the tarball's files only" sh -c \
    "[ \"\$(podman image inspect --format '{{len .RootFS.Layers}}' '$img')\" = 1 ]"
if ! out=$(podman run --rm --network none "$img" "$bin/efscache" --version 2>&1); then
    if grep -qi "permission denied\|operation not permitted\|cgroup" <<<"$out"; then
        skip "podman cannot run a container here: $out"
    fi
fi
check "efscache --version in the empty root: libfuse 3.17 inside ($out)" \
    grep -q "^efscache .*(libfuse 3\.1[7-9]" <<<"$out"

mkdir -p "$work/src" "$work/cache" "$work/shared"
mount -t tmpfs -o size=64m efscache-ttest-src "$work/src"
head -c $((24 << 20)) /dev/urandom >"$work/src/model.bin"
want=$(sha256sum <"$work/src/model.bin" | cut -d' ' -f1)
mount --bind "$work/shared" "$work/shared" && mount --make-rshared "$work/shared"
mkdir -p "$work/shared/models"
podman run -d --name "$ctr" --network none \
    --device /dev/fuse --cap-add SYS_ADMIN --security-opt apparmor=unconfined \
    -v "$work/src:/src:ro" -v "$work/cache:/cache" \
    --mount "type=bind,src=$work/shared,dst=/shared,bind-propagation=rshared" \
    "$img" "$bin/efscache" /src /shared/models -f \
    -o cache_dir=/cache,allow_other,ro,require_source_mount=tmpfs >/dev/null 2>"$work/run.err"
for _ in $(seq 1 150); do
    fuse_mounted "$work/shared/models" && break
    sleep 0.1
done
check "the tarball's efscache mounts in the empty root (mount on the host)" \
    fuse_mounted "$work/shared/models"
check "the host reads the right bytes through it" \
    sh -c "[ \"\$(sha256sum < '$work/shared/models/model.bin' | cut -d' ' -f1)\" = '$want' ]"
check "efscachectl (from the tarball) warms the file" \
    podman exec "$ctr" "$bin/efscachectl" warm /shared/models/model.bin
dd if="$work/shared/models/model.bin" iflag=nocache count=0 status=none 2>/dev/null || true
check "warm read: right bytes" \
    sh -c "[ \"\$(sha256sum < '$work/shared/models/model.bin' | cut -d' ' -f1)\" = '$want' ]"
stats=$(podman exec "$ctr" "$bin/efscachectl" stats --raw /shared/models 2>&1)
if podman logs "$ctr" 2>&1 | grep -q 'passthrough: off: the kernel did not offer'; then
    note "passthrough not checked: this kernel ($(uname -r)) has no FUSE passthrough (6.9+)"
else
    pt=$(awk '$1 == "passthrough_opens" {print $2}' <<<"$stats")
    check "passthrough: the warm open was passed through (passthrough_opens ${pt:-none})" \
        test "${pt:-0}" -ge 1
    check "passthrough: no 'passthrough: off' in the log" \
        sh -c "! podman logs '$ctr' 2>&1 | grep 'passthrough: off'"
fi
podman stop -t 30 "$ctr" >/dev/null 2>>"$work/run.err"
rc=$(podman inspect --format '{{.State.ExitCode}}' "$ctr")
check "podman stop: efscache exits 0 (got $rc)" test "$rc" = 0
check "podman stop: nothing left mounted on the host" eval '! fuse_mounted "$work/shared/models"'

# ---- 3. install.sh ------------------------------------------------------------
check "install.sh into a DESTDIR" env DESTDIR="$work/root" "$work/x/$top/install.sh" /opt/efscache
unit="$work/root/etc/systemd/system/efscache.service"
check "install.sh: programs and man pages under PREFIX" test -x "$work/root/opt/efscache/bin/efscache" \
    -a -x "$work/root/opt/efscache/bin/efscachectl" -a -f "$work/root/opt/efscache/share/man/man1/efscache.1"
check "install.sh: the unit starts PREFIX/bin/efscache" grep -q '^ExecStart=/opt/efscache/bin/efscache ' "$unit"
check "install.sh: no path of the unit is left at /usr/bin or /bin" \
    sh -c "! grep -E '(^|[= ])(/usr)?/bin/(efscache|fusermount3)' '$unit'"
check "install.sh: /etc/default/efscache" test -s "$work/root/etc/default/efscache"
helper="$work/root/opt/efscache/libexec/efscache/efscache-clear-dead-mount"
check "install.sh: the dead-mount helper under PREFIX/libexec, running PREFIX's fusermount3" \
    sh -c "test -x '$helper' && grep -q '^ *exec /opt/efscache/bin/fusermount3 ' '$helper'"
for u in efscache.service efscache@.service; do
    check "install.sh: $u clears dead mounts with PREFIX's helper" \
        grep -q '^ExecStartPre=-/opt/efscache/libexec/efscache/efscache-clear-dead-mount ' \
        "$work/root/etc/systemd/system/$u"
    check "install.sh: $u names no /usr/bin, /bin or /usr/libexec path" \
        sh -c "! grep -E '(^|[-= ])(/usr)?/(bin|libexec)/(efscache|fusermount3)' '$work/root/etc/systemd/system/$u'"
done
check "install.sh: the tmpfiles.d rule" grep -q '^x /tmp/efscache' "$work/root/etc/tmpfiles.d/efscache.conf"

echo "1..$checks"
echo "# tarball test: $((checks - fails)) passed, $fails failed"
[ $fails -eq 0 ]
