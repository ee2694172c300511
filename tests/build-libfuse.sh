#!/usr/bin/env bash
# tests/build-libfuse.sh DIR - build libfuse 3.17.2 (kernel passthrough needs
# >= 3.17; Debian 12 ships 3.14) from Debian trixie's source package into
# DIR/prefix, for tests/run.sh's plain build and the benchmarks.  Reuses
# DIR/prefix when it already holds a libfuse >= 3.17.
#
# The source comes through apt with a private sources list and state
# directories under DIR (-o Dir::Etc::sourcelist=...), so the system's apt
# sources and lists stay untouched; trixie's binary packages need a newer
# glibc, its source builds here.  The library only (no fusermount3, no
# examples): as root, libfuse mounts without fusermount3.  -DIGNORE_MTAB:
# /etc/mtab is a link to /proc/mounts nowadays, but 3.17.2 no longer skips
# a symlinked mtab and forks /bin/mount -f at every mount by root; a signal
# during its waitpid failed a mount in test_cli ("fuse: waitpid:
# Interrupted system call").  (Its -Ddisable-mtab option is declared but
# used nowhere in 3.17.2.)  Its soname is
# libfuse3.so.4, so it never shadows the system's libfuse3.so.3.
set -euo pipefail

dir=$(mkdir -p "${1:?usage: $0 DIR}" && cd "$1" && pwd)
prefix=$dir/prefix
want=3.17.2

stamp=$prefix/.efscache-build-4  # bump when the build options change
if PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --atleast-version=3.17 fuse3 2>/dev/null &&
    [ -e "$prefix/lib/libfuse3.so.4" ] && [ -e "$stamp" ]; then
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
meson setup "$srcdir/build" "$srcdir" --prefix="$prefix" --libdir=lib -Dbuildtype=release \
    -Dutils=false -Dexamples=false -Dtests=false -Dc_args=-DIGNORE_MTAB >"$dir/meson-setup.log" 2>&1 ||
    { tail -n 20 "$dir/meson-setup.log" >&2; exit 1; }
ninja -C "$srcdir/build" >"$dir/ninja.log" 2>&1 || { tail -n 20 "$dir/ninja.log" >&2; exit 1; }
ninja -C "$srcdir/build" install >>"$dir/ninja.log" 2>&1 || { tail -n 20 "$dir/ninja.log" >&2; exit 1; }
PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --modversion fuse3
touch "$stamp"
