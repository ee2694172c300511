#!/usr/bin/env bash
# contrib/release/build-tarball.sh [OUTDIR] - a release tarball for hosts
# without Debian packages (Amazon Linux 2023, the ECS- and EKS-optimized
# AMIs, a Bottlerocket host container): efscache-VERSION-ARCH.tar.gz in OUTDIR
# (default ./release-out), with
#
#   bin/efscache bin/efscachectl bin/fusermount3   static-pie, no libraries
#   share/man/man1/efscache.1 efscachectl.1
#   lib/systemd/system/efscache.service and efscache@.service,
#   libexec/efscache/efscache-clear-dead-mount, lib/tmpfiles.d/efscache.conf,
#   etc/default/efscache, share/doc/efscache/examples/efscache-instance.default
#   install.sh README.md (and LICENSE when the tree has one)
#
# Static, with glibc: the binaries need nothing from the host, not even a
# dynamic loader, so one tarball runs on any x86_64 Linux and in a FROM
# scratch image; libfuse 3.17.2 is inside, so kernel passthrough works where
# the kernel has it (6.9+), whatever libfuse the host has (AL2023 ships 3.10
# as fuse3-libs).  glibc rather than musl: the code uses glibc's statx and
# mallopt (musl 1.2.3, Debian 12's, has neither) and the tests run on glibc;
# the static glibc caveats (NSS and iconv need dlopen) do not apply: nothing
# here looks up users or hosts (libfuse's dlopen is for high-level API
# modules, which efscache does not use).  libmicrohttpd (-o metrics) is built from
# Debian 12's source without TLS: the endpoint is plain HTTP anyway, and a
# static GnuTLS would drag p11-kit, which has no static library.
# Hardening: dpkg-buildflags hardening=+all (stack protector, fortify,
# full RELRO; with Debian 12's dpkg, +all adds nothing more) and
# -static-pie (ASLR for a static binary).
#
# Needs Debian 12 with: gcc meson ninja-build pkg-config make dpkg-dev
# scdoc (apt-get source needs dpkg-dev; the network, as apt does).  Builds
# libfuse, xxHash and libmicrohttpd from their Debian source packages under
# EFSCACHE_RELEASE_BUILD (default ./build-release), reused by later runs.  Runs the unit tests
# against the static build.  Prints the tarball's path last.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
out=$(mkdir -p "${1:-release-out}" && cd "${1:-release-out}" && pwd)
bld=$(mkdir -p "${EFSCACHE_RELEASE_BUILD:-$here/build-release}" &&
    cd "${EFSCACHE_RELEASE_BUILD:-$here/build-release}" && pwd)
version=$(sed -n "s/^  version : '\(.*\)',/\1/p" "$here/meson.build")
arch=$(uname -m)
name=efscache-$version-$arch-linux

# step WHAT LOG CMD...: run CMD, its output in LOG; on failure show the end.
step() {
    local what=$1 log=$2; shift 2
    echo "build-tarball: $what"
    if ! "$@" >"$log" 2>&1; then
        echo "build-tarball: $what failed ($*); end of $log:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
}

eval "$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --export=sh)"
# -static-pie links glibc's static PIE start files; every object is PIE
# already (Debian's gcc default, and the flags above).
LDFLAGS="$LDFLAGS -static-pie"
export CPPFLAGS CFLAGS LDFLAGS

# ---- libfuse 3.17.2: libfuse3.a and a static fusermount3 ------------------
step "libfuse 3.17.2 (static)" "$bld/libfuse.log" \
    "$here/tests/build-libfuse.sh" --static "$bld/libfuse"

# fetch PACKAGE DIR: Debian 12's source package into DIR/src, through apt with
# a private sources list and state under DIR (the system's apt is untouched).
fetch() {
    local pkg=$1 d=$2
    mkdir -p "$d/apt/lists/partial" "$d/apt/cache/archives/partial" "$d/src"
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" \
        >"$d/apt/sources.list"
    local o=(-o "Dir::Etc::sourcelist=$d/apt/sources.list" -o "Dir::Etc::sourceparts=-"
        -o "Dir::State::Lists=$d/apt/lists" -o "Dir::Cache=$d/apt/cache"
        -o "APT::Get::List-Cleanup=0")
    apt-get -qq "${o[@]}" update && (cd "$d/src" && apt-get -qq "${o[@]}" source "$pkg")
}
# stamp DIR: DIR/prefix's stamp for these flags (a rebuild when they change).
stamp() { echo "$1/prefix/.efscache-build-1-$(echo "$CFLAGS $LDFLAGS" | md5sum | cut -c1-12)"; }

# ---- xxHash, static, with the x86 dispatcher --------------------------------
# Debian's libxxhash.a leaves xxh_x86dispatch.c out (its .so has it), and
# src/checksum.c calls the dispatcher (AVX2 when the CPU has it).  xxHash's
# own Makefile puts only xxhash.o in libxxhash.a, dispatcher or not: two
# objects, an archive and a .pc file by hand.
build_xxhash() {
    local src=$1 p=$2 v
    v=$(sed -n 's/^#define XXH_VERSION_\(MAJOR\|MINOR\|RELEASE\) *\([0-9]*\).*/\2/p' \
        "$src/xxhash.h" | paste -sd.)
    mkdir -p "$p/lib/pkgconfig" "$p/include"
    (cd "$src" && cc $CPPFLAGS $CFLAGS -c xxhash.c xxh_x86dispatch.c) || return 1
    ar rcs "$p/lib/libxxhash.a" "$src/xxhash.o" "$src/xxh_x86dispatch.o"
    cp "$src/xxhash.h" "$src/xxh3.h" "$src/xxh_x86dispatch.h" "$p/include/"
    printf '%s\n' "prefix=$p" "Name: libxxhash" "Description: xxHash (static, x86 dispatcher)" \
        "Version: $v" "Libs: -L$p/lib -lxxhash" "Cflags: -I$p/include" \
        >"$p/lib/pkgconfig/libxxhash.pc"
}
xxh=$bld/xxhash
if [ ! -e "$(stamp "$xxh")" ]; then
    rm -rf "$xxh"
    step "xxHash: fetch Debian 12's source" "$bld/xxhash-fetch.log" fetch xxhash "$xxh"
    xsrc=$(find "$xxh/src" -maxdepth 1 -type d -name 'xxhash-*' | head -n1)
    step "xxHash: build" "$bld/xxhash-make.log" build_xxhash "$xsrc" "$xxh/prefix"
    touch "$(stamp "$xxh")"
fi

# ---- libmicrohttpd, static, without TLS ------------------------------------
mhd=$bld/mhd
if [ ! -e "$(stamp "$mhd")" ]; then
    rm -rf "$mhd"
    step "libmicrohttpd: fetch Debian 12's source" "$bld/mhd-fetch.log" fetch libmicrohttpd "$mhd"
    msrc=$(find "$mhd/src" -maxdepth 1 -type d -name 'libmicrohttpd-*' | head -n1)
    # The flags minus -static-pie (libtool would try to link a static
    # shared object) for the library; the programs are not built.
    step "libmicrohttpd: configure" "$bld/mhd-configure.log" \
        sh -c "cd '$msrc' && ./configure --prefix='$mhd/prefix' --enable-static --disable-shared \
            --disable-https --without-gnutls --disable-curl --disable-doc --disable-examples \
            --disable-tools CFLAGS='$CFLAGS' CPPFLAGS='$CPPFLAGS' LDFLAGS='${LDFLAGS% -static-pie}'"
    step "libmicrohttpd: build" "$bld/mhd-make.log" make -C "$msrc" -j"$(nproc)" install
    touch "$(stamp "$mhd")"
fi

# ---- efscache, static ------------------------------------------------------
eb=$bld/efscache
pc="$bld/libfuse/prefix/lib/pkgconfig:$xxh/prefix/lib/pkgconfig:$mhd/prefix/lib/pkgconfig"
rm -rf "$eb"
step "efscache: configure (static-pie)" "$bld/efscache-setup.log" \
    meson setup "$eb" "$here" --prefix=/usr -Dbuildtype=release -Dman=enabled \
    -Dprefer_static=true -Ddefault_library=static "-Dpkg_config_path=$pc" \
    "-Dc_args=$CPPFLAGS $CFLAGS" "-Dc_link_args=$LDFLAGS"
# What the tarball ships and the unit tests, nothing else.  Cache-side fault
# injection (tests/faultinj) finds libc's functions with dlsym(RTLD_NEXT),
# which a static binary has none of: its LD_PRELOAD module cannot be linked
# -static-pie, and the unit tests that inject faults (cache_model, cache_own,
# faultinj) run in the dynamic builds of tests/run.sh only.
read -r unit_bins unit_names < <(meson introspect "$eb" --tests | python3 -c '
import json, os, sys
d, skip = sys.argv[1], ("unit/cache_model", "unit/cache_own", "unit/faultinj")
t = [t for t in json.load(sys.stdin) if any(s.endswith(":unit") or s == "unit" for s in t["suite"])
     and t["name"] not in skip]
print(",".join(sorted({os.path.relpath(x["cmd"][0], d) for x in t
                       if x["cmd"][0].startswith(d + "/")})), ",".join(x["name"] for x in t))' "$eb")
step "efscache: build" "$bld/efscache-build.log" \
    ninja -C "$eb" src/efscache src/efscachectl docs/efscache.1 docs/efscachectl.1 ${unit_bins//,/ }
step "efscache: unit tests of the static build" "$bld/efscache-test.log" \
    meson test -C "$eb" --no-rebuild --print-errorlogs ${unit_names//,/ }
for b in "$eb/src/efscache" "$eb/src/efscachectl" "$bld/libfuse/prefix/bin/fusermount3"; do
    if readelf -lW "$b" | grep -q INTERP || readelf -dW "$b" | grep -q NEEDED; then
        echo "build-tarball: $b is not static:" >&2
        readelf -lW "$b" | grep INTERP >&2 || true
        readelf -dW "$b" | grep NEEDED >&2 || true
        exit 1
    fi
done

# ---- the tarball -----------------------------------------------------------
stage=$bld/stage/$name
rm -rf "$bld/stage"
install -D -m 0755 "$eb/src/efscache" "$stage/bin/efscache"
install -D -m 0755 "$eb/src/efscachectl" "$stage/bin/efscachectl"
install -D -m 0755 "$bld/libfuse/prefix/bin/fusermount3" "$stage/bin/fusermount3"
# Debug info out, the symbol table kept: hardening-check and readelf can
# still see __stack_chk_fail and the fortified calls.
strip --strip-debug "$stage/bin/"*
install -D -m 0644 "$eb/docs/efscache.1" "$stage/share/man/man1/efscache.1"
install -D -m 0644 "$eb/docs/efscachectl.1" "$stage/share/man/man1/efscachectl.1"
install -D -m 0644 "$here/contrib/systemd/efscache.service" \
    "$stage/lib/systemd/system/efscache.service"
install -D -m 0644 "$here/contrib/systemd/efscache@.service" \
    "$stage/lib/systemd/system/efscache@.service"
install -D -m 0755 "$here/contrib/systemd/efscache-clear-dead-mount" \
    "$stage/libexec/efscache/efscache-clear-dead-mount"
install -D -m 0644 "$here/contrib/systemd/efscache.tmpfiles" "$stage/lib/tmpfiles.d/efscache.conf"
install -D -m 0644 "$here/contrib/systemd/efscache.default" "$stage/etc/default/efscache"
install -D -m 0644 "$here/contrib/systemd/efscache-instance.default" \
    "$stage/share/doc/efscache/examples/efscache-instance.default"
install -D -m 0755 "$here/contrib/release/install.sh" "$stage/install.sh"
install -m 0644 "$here/README.md" "$stage/README.md"
[ -f "$here/LICENSE" ] && install -m 0644 "$here/LICENSE" "$stage/LICENSE"
"$stage/bin/efscache" --version >"$stage/VERSION"
tar -C "$bld/stage" --owner=0 --group=0 --numeric-owner --sort=name \
    --mtime="@${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || date +%s)}" \
    -czf "$out/$name.tar.gz" "$name"
echo "build-tarball: $(cat "$stage/VERSION"), $(du -h "$out/$name.tar.gz" | cut -f1)"
echo "$out/$name.tar.gz"
