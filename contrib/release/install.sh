#!/bin/sh
# install.sh [PREFIX] - install this efscache release tarball on a host
# without Debian packages (Amazon Linux 2023, the ECS- and EKS-optimized
# AMIs).  PREFIX defaults to /usr/local.  As root:
#
#   PREFIX/bin/efscache, efscachectl, fusermount3    static: no libraries needed
#   PREFIX/share/man/man1/efscache.1, efscachectl.1
#   PREFIX/libexec/efscache/efscache-clear-dead-mount
#   /etc/systemd/system/efscache.service, efscache@.service
#                                                    paths pointed at PREFIX
#   /etc/tmpfiles.d/efscache.conf                    /tmp/efscache never aged
#   /etc/default/efscache                            only if there is none yet
#   PREFIX/share/doc/efscache/examples/efscache-instance.default
#
# then: edit /etc/default/efscache, "systemctl daemon-reload" and
# "systemctl enable --now efscache".  fusermount3 is installed without the
# setuid bit: root (the unit) mounts without it; chmod u+s it only for
# non-root mounts.  DESTDIR=DIR installs under DIR instead of /.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
prefix=${1:-/usr/local}
dest=${DESTDIR:-}

install -d "$dest$prefix/bin" "$dest$prefix/share/man/man1" "$dest$prefix/libexec/efscache" \
    "$dest$prefix/share/doc/efscache/examples" "$dest/etc/systemd/system" \
    "$dest/etc/tmpfiles.d" "$dest/etc/default"
for b in efscache efscachectl fusermount3; do
    install -m 0755 "$here/bin/$b" "$dest$prefix/bin/$b"
done
install -m 0644 "$here/share/man/man1/efscache.1" "$here/share/man/man1/efscachectl.1" \
    "$dest$prefix/share/man/man1/"
install -m 0644 "$here/share/doc/efscache/examples/efscache-instance.default" \
    "$dest$prefix/share/doc/efscache/examples/"
# The units and the dead-mount helper name /usr/bin, /bin and /usr/libexec
# (the Debian package's paths): point them at PREFIX.  The helper runs
# fusermount3 by name, and systemd's PATH may not hold PREFIX/bin.
to_prefix() {
    sed -e "s#/usr/bin/efscache#$prefix/bin/efscache#g" \
        -e "s#/usr/bin/fusermount3#$prefix/bin/fusermount3#g" \
        -e "s#/bin/fusermount3#$prefix/bin/fusermount3#g" \
        -e "s#/usr/libexec/efscache/#$prefix/libexec/efscache/#g" \
        -e "s#exec fusermount3 #exec $prefix/bin/fusermount3 #" \
        -e "s#$prefix$prefix#$prefix#g" "$1" >"$2"
}
to_prefix "$here/libexec/efscache/efscache-clear-dead-mount" \
    "$dest$prefix/libexec/efscache/efscache-clear-dead-mount"
chmod 0755 "$dest$prefix/libexec/efscache/efscache-clear-dead-mount"
for u in efscache.service efscache@.service; do
    to_prefix "$here/lib/systemd/system/$u" "$dest/etc/systemd/system/$u"
    chmod 0644 "$dest/etc/systemd/system/$u"
done
install -m 0644 "$here/lib/tmpfiles.d/efscache.conf" "$dest/etc/tmpfiles.d/efscache.conf"
if [ ! -e "$dest/etc/default/efscache" ]; then
    install -m 0644 "$here/etc/default/efscache" "$dest/etc/default/efscache"
fi
echo "efscache installed in $prefix; next: edit /etc/default/efscache," \
     "systemctl daemon-reload && systemctl enable --now efscache"
