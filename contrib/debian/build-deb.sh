#!/bin/sh
# contrib/debian/build-deb.sh [OUTDIR] - build efscache_*.deb from this tree.
#
# Copies the source (without build directories and .git) to a scratch
# directory, puts contrib/debian in place as debian/ with the systemd units,
# their defaults file and the tmpfiles.d rule (contrib/systemd), runs
# dpkg-buildpackage (binary only, unsigned) and
# lintian, and leaves the .deb and the lintian report in OUTDIR (default
# ./deb-out).  Needs dpkg-dev, debhelper, fakeroot and the Build-Depends of
# contrib/debian/control (apt-get build-dep is not needed: run
# "apt-get install $(contrib/debian/build-deb.sh --print-deps)").
# Exit status: dpkg-buildpackage's, or 1 if lintian reports an error.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)

if [ "${1:-}" = "--print-deps" ]; then
    echo "build-essential dpkg-dev debhelper fakeroot lintian meson ninja-build pkg-config" \
         "libfuse3-dev libxxhash-dev libmicrohttpd-dev scdoc"
    exit 0
fi
out=$(mkdir -p "${1:-deb-out}" && cd "${1:-deb-out}" && pwd)
work=$(mktemp -d /tmp/efscache-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT

src="$work/efscache-0.1.0"
mkdir -p "$src"
# The source tree as it is now (uncommitted changes included), minus builds.
(cd "$here" && tar --exclude='./build*' --exclude=./.git --exclude='./deb-out*' \
    --exclude='__pycache__' -cf - .) | tar -C "$src" -xf -
rm -rf "$src/debian"
cp -r "$here/contrib/debian" "$src/debian"
rm -f "$src/debian/build-deb.sh"
cp "$here/contrib/systemd/efscache.service" "$src/debian/efscache.service"
cp "$here/contrib/systemd/efscache@.service" "$src/debian/efscache@.service"
cp "$here/contrib/systemd/efscache.default" "$src/debian/efscache.default"
cp "$here/contrib/systemd/efscache.tmpfiles" "$src/debian/efscache.tmpfiles"

(cd "$src" && dpkg-buildpackage -us -uc -b -j"${EFSCACHE_DEB_JOBS:-2}")
cp "$work"/efscache_*.deb "$out/"
deb=$(ls "$work"/efscache_*.deb | head -n1)
echo "built $out/$(basename "$deb")"

if command -v lintian >/dev/null 2>&1; then
    lintian --tag-display-limit 0 "$deb" > "$out/lintian.txt" 2>&1 || true
    cat "$out/lintian.txt"
    e=$(grep -c '^E: ' "$out/lintian.txt" || true)
    w=$(grep -c '^W: ' "$out/lintian.txt" || true)
    echo "lintian: $e errors, $w warnings"
    [ "$e" -eq 0 ] || exit 1
else
    echo "lintian: not installed, skipped"
fi
