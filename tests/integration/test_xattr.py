#!/usr/bin/env python3
"""Extended attributes through efscache: set/get/list/remove of user.* on files, dirs and
the root, values made on SOURCE seen through the mount, flags (XATTR_CREATE/REPLACE),
errno parity (ENODATA, EEXIST, EOPNOTSUPP, symlinks), and the reserved user.efscache.*
names (refused by setxattr/removexattr, hidden from listxattr)."""

import os

import harness as h  # noqa: E402

h.require_fuse()
BASE, SRC, M = h.setup()
MNT = M.mnt


def sub(name):
    s = os.path.join(SRC, name)
    os.mkdir(s)
    return s, os.path.join(MNT, name)


def visible(names):
    return sorted(n for n in names if not n.startswith("user.efscache."))


def test_user_xattrs():
    s, m = sub("x")
    h.write_file(s + "/f", b"file")
    os.mkdir(s + "/d")
    values = {"user.a": b"alpha", "user.empty": b"", "user.bin": bytes(range(256)) * 2,
              "user.big": os.urandom(1500), "user.with.dots": b"x"}
    for target in ("f", "d"):
        for k, v in values.items():
            os.setxattr(m + "/" + target, k, v)
        got = {k: os.getxattr(s + "/" + target, k) for k in values}
        h.check("setxattr through the mount on a %s: values in SOURCE" % (
            "file" if target == "f" else "directory"), got == values,
            [k for k in values if got[k] != values[k]])
        got = {k: os.getxattr(m + "/" + target, k) for k in values}
        h.check("getxattr through the mount on %s returns the values" % target, got == values)
        h.eq("listxattr through the mount on %s equals SOURCE" % target,
             visible(os.listxattr(m + "/" + target)), visible(os.listxattr(s + "/" + target)))
        os.removexattr(m + "/" + target, "user.a")
        h.check("removexattr through the mount on %s removes it in SOURCE" % target,
                "user.a" not in os.listxattr(s + "/" + target))
        h.check_errno("getxattr of a removed name on %s: ENODATA" % target, os.getxattr,
                      (m + "/" + target, "user.a"), (s + "/" + target, "user.a"),
                      expected={61})
    os.setxattr(s + "/f", "user.from-source", b"made on source")
    h.eq("an xattr set on SOURCE is read through the mount",
         os.getxattr(m + "/f", "user.from-source"), b"made on source")
    h.check("an xattr set on SOURCE is listed through the mount",
            "user.from-source" in os.listxattr(m + "/f"))
    os.setxattr(m + "/f", "user.a", b"replaced-value-longer")
    os.setxattr(m + "/f", "user.a", b"short")
    h.eq("setxattr replacing a value (shorter): SOURCE", os.getxattr(s + "/f", "user.a"),
         b"short")
    os.setxattr(MNT, "user.on-root", b"root dir")
    h.eq("setxattr on the mount root lands on SOURCE's root",
         os.getxattr(SRC, "user.on-root"), b"root dir")
    h.eq("listxattr on the mount root (reserved names aside) equals SOURCE",
         visible(os.listxattr(MNT)), visible(os.listxattr(SRC)))
    fd = os.open(m + "/f", os.O_RDONLY)
    try:
        os.setxattr(fd, "user.via-fd", b"fd")
        h.eq("fsetxattr through an open fd", os.getxattr(s + "/f", "user.via-fd"), b"fd")
        h.eq("fgetxattr through an open fd", os.getxattr(fd, "user.via-fd"), b"fd")
    finally:
        os.close(fd)


def test_xattr_errno():
    s, m = sub("e")
    h.write_file(s + "/f", b"f")
    h.write_file(s + "/g", b"g")
    os.setxattr(s + "/f", "user.have", b"1")
    os.setxattr(s + "/g", "user.have", b"1")
    os.symlink("f", s + "/l")
    os.symlink("g", s + "/l2")
    h.check_errno("getxattr of a missing name: ENODATA", os.getxattr, (m + "/f", "user.nope"),
                  (s + "/f", "user.nope"), expected={61})
    h.check_errno("removexattr of a missing name: ENODATA", os.removexattr,
                  (m + "/f", "user.nope"), (s + "/f", "user.nope"), expected={61})
    h.check_errno("setxattr XATTR_CREATE on an existing name: EEXIST", os.setxattr,
                  (m + "/f", "user.have", b"2", os.XATTR_CREATE),
                  (s + "/g", "user.have", b"2", os.XATTR_CREATE), expected={17})
    h.check_errno("setxattr XATTR_REPLACE on a missing name: ENODATA", os.setxattr,
                  (m + "/f", "user.new", b"2", os.XATTR_REPLACE),
                  (s + "/g", "user.new", b"2", os.XATTR_REPLACE), expected={61})
    h.check_errno("setxattr XATTR_CREATE on a new name succeeds", os.setxattr,
                  (m + "/f", "user.new2", b"2", os.XATTR_CREATE),
                  (s + "/g", "user.new2", b"2", os.XATTR_CREATE), expected={0})
    h.check_errno("setxattr in an unknown namespace: EOPNOTSUPP", os.setxattr,
                  (m + "/f", "bogus.name", b"1"), (s + "/g", "bogus.name", b"1"),
                  expected={95})
    h.check_errno("getxattr on a missing file: ENOENT", os.getxattr,
                  (m + "/missing", "user.have"), (s + "/missing", "user.have"), expected={2})
    h.check_errno("user.* setxattr on a symlink itself: same errno as SOURCE",
                  lambda p: os.setxattr(p, "user.x", b"1", follow_symlinks=False),
                  (m + "/l",), (s + "/l2",))
    h.check_errno("getxattr through a symlink follows it", os.getxattr,
                  (m + "/l", "user.have"), (s + "/l2", "user.have"), expected={0})
    h.check_errno("setxattr of a name longer than 255: ERANGE", os.setxattr,
                  (m + "/f", "user." + "n" * 300, b"1"), (s + "/g", "user." + "n" * 300, b"1"),
                  expected={34})
    h.check_errno("setxattr of a 70000-byte value: same errno as SOURCE", os.setxattr,
                  (m + "/f", "user.huge", b"v" * 70000), (s + "/g", "user.huge", b"v" * 70000))


def test_reserved_names():
    s, m = sub("r")
    h.write_file(s + "/f", b"f")
    for target, tm in ((s + "/f", m + "/f"), (SRC, MNT)):
        where = "the root" if target == SRC else "a file"
        e = h.errno_of(os.setxattr, tm, "user.efscache.evil", b"1")
        h.check("setxattr user.efscache.evil on %s is refused" % where, e != 0, "it succeeded")
        h.check("refused setxattr of user.efscache.evil on %s did not reach SOURCE" % where,
                "user.efscache.evil" not in os.listxattr(target))
        os.setxattr(target, "user.efscache.planted", b"from source")
        e = h.errno_of(os.removexattr, tm, "user.efscache.planted")
        h.check("removexattr user.efscache.planted on %s is refused" % where, e != 0,
                "it succeeded")
        h.check("refused removexattr left SOURCE's user.efscache.planted on %s" % where,
                "user.efscache.planted" in os.listxattr(target))
        names = os.listxattr(tm)
        h.check("listxattr on %s hides user.efscache.* names" % where,
                not [n for n in names if n.startswith("user.efscache.")], names)
        e = h.errno_of(os.setxattr, tm, "user.efscache_not_reserved", b"ok")
        h.check("user.efscache_not_reserved (no dot) on %s is an ordinary name" % where,
                e == 0 and os.getxattr(target, "user.efscache_not_reserved") == b"ok",
                h.ename(e))
        e = h.errno_of(os.setxattr, tm, "user.efscache.", b"1")
        h.check("setxattr of the bare prefix user.efscache. on %s is refused" % where, e != 0)
    os.setxattr(s + "/f", "user.plain", b"1")
    h.eq("ordinary names are still listed next to hidden ones",
         visible(os.listxattr(m + "/f")), visible(os.listxattr(s + "/f")))


def test_trusted_xattrs():
    """Root may use trusted.*; through the mount it behaves as on SOURCE."""
    s, m = sub("t")
    h.write_file(s + "/f", b"f")
    h.write_file(s + "/g", b"g")
    h.check_errno("trusted.* setxattr as root: same result as SOURCE", os.setxattr,
                  (m + "/f", "trusted.test", b"1"), (s + "/g", "trusted.test", b"1"))
    if "trusted.test" in os.listxattr(s + "/g"):
        h.eq("trusted.* value through the mount", os.getxattr(m + "/f", "trusted.test"), b"1")


h.run_tests([test_user_xattrs, test_xattr_errno, test_reserved_names, test_trusted_xattrs])
