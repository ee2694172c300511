#!/bin/sh
# install.sh [PREFIX] - install this efscache release tarball on a host
# without Debian packages (Amazon Linux 2023, the ECS- and EKS-optimized
# AMIs).  PREFIX defaults to /usr/local.  As root:
#
#   PREFIX/bin/efscache, efscachectl, fusermount3    static: no libraries needed
#   PREFIX/share/man/man1/efscache.1, efscachectl.1
#   /etc/systemd/system/efscache.service             paths pointed at PREFIX/bin
#   /etc/default/efscache                            only if there is none yet
#
# then: edit /etc/default/efscache, "systemctl daemon-reload" and
# "systemctl enable --now efscache".  fusermount3 is installed without the
# setuid bit: root (the unit) mounts without it; chmod u+s it only for
# non-root mounts.  DESTDIR=DIR installs under DIR instead of /.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
prefix=${1:-/usr/local}
dest=${DESTDIR:-}

install -d "$dest$prefix/bin" "$dest$prefix/share/man/man1" "$dest/etc/systemd/system" \
    "$dest/etc/default"
for b in efscache efscachectl fusermount3; do
    install -m 0755 "$here/bin/$b" "$dest$prefix/bin/$b"
done
install -m 0644 "$here/share/man/man1/efscache.1" "$here/share/man/man1/efscachectl.1" \
    "$dest$prefix/share/man/man1/"
sed -e "s#/usr/bin/efscache#$prefix/bin/efscache#g" \
    -e "s#/usr/bin/fusermount3#$prefix/bin/fusermount3#g" \
    -e "s#/bin/fusermount3#$prefix/bin/fusermount3#g" \
    -e "s#$prefix$prefix#$prefix#g" \
    "$here/lib/systemd/system/efscache.service" >"$dest/etc/systemd/system/efscache.service"
chmod 0644 "$dest/etc/systemd/system/efscache.service"
if [ ! -e "$dest/etc/default/efscache" ]; then
    install -m 0644 "$here/etc/default/efscache" "$dest/etc/default/efscache"
fi
echo "efscache installed in $prefix; next: edit /etc/default/efscache," \
     "systemctl daemon-reload && systemctl enable --now efscache"
