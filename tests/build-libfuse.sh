#!/usr/bin/env bash
# tests/build-libfuse.sh [--static] DIR - build libfuse 3.17.2 (kernel
# passthrough needs >= 3.17; Debian 12 ships 3.14) from Debian trixie's source
# package into DIR/prefix, for tests/run.sh's plain build, the benchmarks, the
# container image and the release tarball.  Reuses DIR/prefix when it already
# holds a libfuse >= 3.17 built with the same options and flags.
#
# The source comes through apt with a private sources list and state
# directories under DIR (-o Dir::Etc::sourcelist=...), so the system's apt
# sources and lists stay untouched; trixie's binary packages need a newer
# glibc, its source builds here.  -DIGNORE_MTAB: /etc/mtab is a link to
# /proc/mounts nowadays, but 3.17.2 no longer skips a symlinked mtab and forks
# /bin/mount -f at every mount by root; a signal during its waitpid failed a
# mount in test_cli ("fuse: waitpid: Interrupted system call").  (Its
# -Ddisable-mtab option is declared but used nowhere in 3.17.2.)
#
# Default: the shared library only (no fusermount3, no examples): as root,
# libfuse mounts without fusermount3.  Its soname is libfuse3.so.4, so it
# never shadows the system's libfuse3.so.3.
# --static (contrib/release/build-tarball.sh): libfuse3.a, and fusermount3 in
# DIR/prefix/bin, linked as $LDFLAGS says (-static there), reading
# /etc/fuse.conf; nothing of libfuse's install scripts runs (they would write
# udev rules and init scripts into the system).
# $CPPFLAGS, $CFLAGS and $LDFLAGS are used (the container image passes
# dpkg-buildflags' hardening flags).
set -euo pipefail

static=0
if [ "${1:-}" = --static ]; then
    static=1
    shift
fi
dir=$(mkdir -p "${1:?usage: $0 [--static] DIR}" && cd "$1" && pwd)
prefix=$dir/prefix
want=3.17.2

c_args="-DIGNORE_MTAB ${CPPFLAGS:-} ${CFLAGS:-}"
link_args="${LDFLAGS:-}"
stamp=$prefix/.efscache-build-5  # bump when the build steps change
wanted="static=$static c_args=$c_args link_args=$link_args"
if PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --atleast-version=3.17 fuse3 2>/dev/null &&
    [ -e "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    exit 0
fi

apt_dir=$dir/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$dir/src"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    >"$apt_dir/sources.list"
apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
    -o "APT::Get::List-Cleanup=0")
echo "build-libfuse: fetching fuse3 source from Debian trixie"
apt-get -qq "${apt_opts[@]}" update
rm -rf "$dir/src"
mkdir -p "$dir/src"
(cd "$dir/src" && apt-get -qq "${apt_opts[@]}" source "fuse3=$want-*" >/dev/null 2>&1 ||
    cd "$dir/src" && apt-get -qq "${apt_opts[@]}" source fuse3 >/dev/null)
srcdir=$(find "$dir/src" -maxdepth 1 -type d -name 'fuse3-3.*' | head -n1)
[ -n "$srcdir" ] || { echo "build-libfuse: no fuse3 source in $dir/src" >&2; exit 1; }
echo "build-libfuse: building $(basename "$srcdir") into $prefix"
rm -rf "$srcdir/build" "$prefix"
if [ $static = 1 ]; then
    variant=(-Ddefault_library=static -Dutils=true -Dsysconfdir=/etc -Duseroot=false
        -Dinitscriptdir= -Dudevrulesdir=/nonexistent)
else
    variant=(-Dutils=false)
fi
meson setup "$srcdir/build" "$srcdir" --prefix="$prefix" --libdir=lib -Dbuildtype=release \
    "${variant[@]}" -Dexamples=false -Dtests=false \
    "-Dc_args=$c_args" "-Dc_link_args=$link_args" >"$dir/meson-setup.log" 2>&1 ||
    { tail -n 20 "$dir/meson-setup.log" >&2; exit 1; }
ninja -C "$srcdir/build" >"$dir/ninja.log" 2>&1 || { tail -n 20 "$dir/ninja.log" >&2; exit 1; }
if [ $static = 1 ]; then
    # The library, its headers and fuse3.pc; no install scripts.
    meson install -C "$srcdir/build" --no-rebuild --tags devel >>"$dir/ninja.log" 2>&1 ||
        { tail -n 20 "$dir/ninja.log" >&2; exit 1; }
    install -D -m 0755 "$srcdir/build/util/fusermount3" "$prefix/bin/fusermount3"
else
    ninja -C "$srcdir/build" install >>"$dir/ninja.log" 2>&1 ||
        { tail -n 20 "$dir/ninja.log" >&2; exit 1; }
fi
PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --modversion fuse3
echo "$wanted" >"$stamp"
