#!/usr/bin/env python3
"""Permissions as a non-root user (nobody) through a root-run efscache.  With allow_other
(which forces default_permissions) every call's errno equals the same call made by the same
user directly on SOURCE, and objects the user creates are owned by the user (and the group
rules of SOURCE apply: setgid directories, supplementary groups, umask).  Without
allow_other the user cannot even stat the mount (EACCES)."""

import os
import pwd
import stat
import struct

import harness as h  # noqa: E402

h.require_fuse()
if os.geteuid() != 0:
    h.skip("permission tests", "need root to mount with allow_other and switch users")
    h.finish()

try:
    NOBODY = pwd.getpwnam("nobody")
    UID, GID = NOBODY.pw_uid, NOBODY.pw_gid
except KeyError:
    UID, GID = 65534, 65534
OTHER_GID = 54321  # a group nobody is not in (unless we say so)

BASE = h.tmpdir()
SRC = os.path.join(BASE, "src")
h.mkdirs(SRC)
ALLOW = h.mount_efscache(SRC, os.path.join(BASE, "mnt"), "allow_other")
PRIV = h.mount_efscache(SRC, os.path.join(BASE, "mnt-private"))


def build(d):
    """The same fixture under SOURCE twice: once used through the mount, once directly."""
    os.mkdir(d)
    os.chmod(d, 0o755)
    h.write_file(d + "/private", b"secret\n", 0o600)
    h.write_file(d + "/public", b"public\n", 0o644)
    h.write_file(d + "/group-rw", b"group\n", 0o664)
    os.chown(d + "/group-rw", 0, OTHER_GID)
    os.mkdir(d + "/rootdir", 0o755)
    h.write_file(d + "/rootdir/file", b"in root dir\n", 0o666)
    os.mkdir(d + "/userdir")
    os.chown(d + "/userdir", UID, GID)
    os.chmod(d + "/userdir", 0o755)
    h.write_file(d + "/userdir/mine", b"mine\n", 0o644)
    os.chown(d + "/userdir/mine", UID, GID)
    os.mkdir(d + "/groupdir")
    os.chown(d + "/groupdir", 0, OTHER_GID)
    os.chmod(d + "/groupdir", 0o775)
    os.mkdir(d + "/sgid")
    os.chown(d + "/sgid", UID, OTHER_GID)
    os.chmod(d + "/sgid", 0o2777)
    os.mkdir(d + "/sticky")
    os.chmod(d + "/sticky", 0o1777)
    h.write_file(d + "/sticky/roots", b"root's\n", 0o666)
    os.mkdir(d + "/noexec", 0o744)
    h.write_file(d + "/noexec/f", b"f\n", 0o644)


# --- operations run as the other user: fn(state, base) ----------------------------------

def rd(p):
    def f(state, d):
        with open(os.path.join(d, p), "rb") as fh:
            return fh.read()
    return f


def wr(p, flags=os.O_WRONLY):
    def f(state, d):
        fd = os.open(os.path.join(d, p), flags, 0o666)
        try:
            os.write(fd, b"written")
        finally:
            os.close(fd)
        return True
    return f


def simple(fn, *rel, **kw):
    def f(state, d):
        fn(*[os.path.join(d, r) if isinstance(r, str) and not r.startswith("!") else
             (r[1:] if isinstance(r, str) else r) for r in rel], **kw)
        return True
    return f


CASES = [
    ("read a 0600 root file: EACCES", rd("private"), {13}),
    ("read a 0644 root file: allowed", rd("public"), {0}),
    ("open a 0644 root file for writing: EACCES", wr("public"), {13}),
    ("O_TRUNC a 0644 root file: EACCES", wr("public", os.O_WRONLY | os.O_TRUNC), {13}),
    ("truncate(2) a 0644 root file: EACCES", simple(os.truncate, "public", 0), {13}),
    ("create in a root-owned 0755 directory: EACCES",
     wr("rootdir/new", os.O_CREAT | os.O_WRONLY), {13}),
    ("mkdir in a root-owned 0755 directory: EACCES", simple(os.mkdir, "rootdir/nd"), {13}),
    ("symlink in a root-owned 0755 directory: EACCES", simple(os.symlink, "!t", "rootdir/l"),
     {13}),
    ("unlink in a root-owned 0755 directory: EACCES", simple(os.unlink, "rootdir/file"), {13}),
    ("rename out of a root-owned directory: EACCES",
     simple(os.rename, "rootdir/file", "userdir/stolen"), {13}),
    ("write a 0666 file in a root-owned directory: allowed", wr("rootdir/file"), {0}),
    ("chmod a root file: EPERM", simple(os.chmod, "public", 0o666), {1}),
    ("chown a root file to yourself: EPERM", simple(os.chown, "public", UID, GID), {1}),
    ("chown your file to root: EPERM", simple(os.chown, "userdir/mine", 0, -1), {1}),
    ("chgrp your file to a group you are not in: EPERM",
     simple(os.chown, "userdir/mine", -1, OTHER_GID), {1}),
    ("utime with explicit times on a root file: EPERM",
     simple(os.utime, "public", (1, 1)), {1}),
    ("utime(NULL) on a root 0644 file: EACCES", simple(os.utime, "public", None), {13}),
    ("utime(NULL) on a root 0666 file: allowed", simple(os.utime, "rootdir/file", None), {0}),
    ("setxattr user.* on a root 0644 file: EACCES",
     simple(os.setxattr, "public", "!user.x", b"1"), {13, 1}),
    ("setxattr user.* on your file: allowed",
     simple(os.setxattr, "userdir/mine", "!user.x", b"1"), {0}),
    ("getxattr on a 0600 root file: EACCES or ENODATA as on SOURCE",
     simple(os.getxattr, "private", "!user.x"), None),
    ("chmod your file: allowed", simple(os.chmod, "userdir/mine", 0o600), {0}),
    ("utime with explicit times on your file: allowed",
     simple(os.utime, "userdir/mine", (5, 5)), {0}),
    ("rename within your directory: allowed",
     simple(os.rename, "userdir/mine", "userdir/renamed"), {0}),
    ("create in your directory: allowed", wr("userdir/created", os.O_CREAT | os.O_WRONLY),
     {0}),
    ("unlink root's file in a sticky directory: EPERM",
     simple(os.unlink, "sticky/roots"), {1}),
    ("create in a sticky 1777 directory: allowed",
     wr("sticky/users", os.O_CREAT | os.O_WRONLY), {0}),
    ("stat in a 0744 directory without search permission: EACCES",
     simple(os.stat, "noexec/f"), {13}),
    ("list a 0744 directory (read permission only): allowed", simple(os.listdir, "noexec"),
     {0}),
    ("write a root:54321 0664 file as a non-member: EACCES", wr("group-rw"), {13}),
    ("hard link to a root 0644 file (protected_hardlinks): same as SOURCE",
     simple(os.link, "public", "userdir/hl"), None),
]


def run_as(fn, d, groups=(), umask=0o022):
    kind, val = h.as_user(UID, GID, fn, d, groups=groups, umask=umask)
    if kind == "ok":
        return 0, val
    if kind == "errno":
        return val, None
    return "%s: %s" % (kind, val), None


def test_errno_parity_as_user():
    for i, (name, fn, expected) in enumerate(CASES):
        ds = os.path.join(SRC, "p%02d-src" % i)
        dm = os.path.join(SRC, "p%02d-mnt" % i)
        build(ds)
        build(dm)
        got, gval = run_as(fn, os.path.join(ALLOW.mnt, "p%02d-mnt" % i))
        ref, rval = run_as(fn, ds)
        ok = got == ref and (expected is None or got in expected) and gval == rval
        h.check("as nobody with allow_other: " + name, ok,
                "mount %s, source %s%s" % (h.ename(got) if isinstance(got, int) else got,
                                           h.ename(ref) if isinstance(ref, int) else ref,
                                           "" if gval == rval else " (values differ)"))


def w_create_all(state, d):
    fd = os.open(d + "/file", os.O_CREAT | os.O_WRONLY, 0o666)
    os.write(fd, b"by nobody")
    os.close(fd)
    os.mkdir(d + "/dir", 0o777)
    os.symlink("file", d + "/link")
    os.mkfifo(d + "/fifo", 0o666)
    os.mknod(d + "/node", stat.S_IFREG | 0o666)
    return True


def owners(d):
    return {n: (os.lstat(os.path.join(d, n)).st_uid, os.lstat(os.path.join(d, n)).st_gid,
                oct(os.lstat(os.path.join(d, n)).st_mode))
            for n in ("file", "dir", "link", "fifo", "node")}


def test_created_objects_owned_by_user():
    for where, groups, umask in (("userdir", (), 0o022), ("userdir", (), 0o027),
                                 ("sgid", (), 0o002), ("groupdir", (OTHER_GID,), 0o022)):
        tag = "%s-%o-%s" % (where, umask, "g" if groups else "")
        ds, dm = os.path.join(SRC, "c-" + tag + "-src"), os.path.join(SRC, "c-" + tag + "-mnt")
        build(ds)
        build(dm)
        what = {"userdir": "a directory the user owns",
                "sgid": "a setgid directory of group 54321",
                "groupdir": "a root:54321 0775 directory, user in group 54321"}[where]
        got, _ = run_as(w_create_all, os.path.join(ALLOW.mnt, os.path.basename(dm), where),
                        groups=groups, umask=umask)
        ref, _ = run_as(w_create_all, os.path.join(ds, where), groups=groups, umask=umask)
        h.check("create file/dir/symlink/fifo/mknod in %s (umask %03o) succeeds as on SOURCE"
                % (what, umask), got == ref == 0, "mount %s, source %s" % (got, ref))
        if got != 0 or ref != 0:
            continue
        a, b = owners(os.path.join(dm, where)), owners(os.path.join(ds, where))
        h.check("objects created through the mount in %s (umask %03o): owner, group and "
                "mode in SOURCE equal a direct creation" % (what, umask), a == b,
                {k: (a[k], b[k]) for k in a if a[k] != b[k]})
        h.check("objects created through the mount in %s are owned by uid %d in SOURCE"
                % (what, UID), all(v[0] == UID for v in a.values()), a)
        h.compare_stat("a file created by the user: stat through the mount equals SOURCE",
                       os.path.join(ALLOW.mnt, os.path.basename(dm), where, "file"),
                       os.path.join(dm, where, "file"))


def w_chmod_sgid(state, p):
    os.chmod(p, 0o2755)
    return oct(os.lstat(p).st_mode)


def test_setgid_clearing():
    """chmod g+s on your own file whose group you are not in: the kernel drops S_ISGID."""
    for tag in ("mnt", "src"):
        p = os.path.join(SRC, "sg-" + tag)
        h.write_file(p, b"x", 0o755)
        os.chown(p, UID, OTHER_GID)
    got = h.as_user(UID, GID, w_chmod_sgid, os.path.join(ALLOW.mnt, "sg-mnt"))
    ref = h.as_user(UID, GID, w_chmod_sgid, os.path.join(SRC, "sg-src"))
    h.eq("chmod 2755 by a non-member of the file's group: resulting mode as on SOURCE",
         (got, oct(os.lstat(os.path.join(SRC, "sg-mnt")).st_mode)),
         (ref, oct(os.lstat(os.path.join(SRC, "sg-src")).st_mode)))


def w_write_clears_suid(state, p):
    with open(p, "r+b") as f:
        f.write(b"changed")
    return True


def test_write_clears_setuid():
    """A non-owner write to a setuid/setgid 0o6777 file clears the bits on SOURCE as it
    would directly."""
    for tag in ("mnt", "src"):
        p = os.path.join(SRC, "su-" + tag)
        h.write_file(p, b"original", 0o6777)
    got = h.as_user(UID, GID, w_write_clears_suid, os.path.join(ALLOW.mnt, "su-mnt"))
    ref = h.as_user(UID, GID, w_write_clears_suid, os.path.join(SRC, "su-src"))
    h.eq("write by another user to a 6777 file: call result as on SOURCE", got, ref)
    h.eq("write by another user to a 6777 file: setuid/setgid bits afterwards as on SOURCE",
         oct(os.lstat(os.path.join(SRC, "su-mnt")).st_mode),
         oct(os.lstat(os.path.join(SRC, "su-src")).st_mode))


def w_stat(state, p):
    os.stat(p)
    return True


def w_listdir(state, p):
    return sorted(os.listdir(p))


def test_without_allow_other():
    h.write_file(os.path.join(SRC, "world-readable"), b"x", 0o644)
    kind, val = h.as_user(UID, GID, w_stat, PRIV.mnt)
    h.check("without allow_other, nobody cannot stat the mount root: EACCES",
            (kind, val) == ("errno", 13), (kind, val))
    kind, val = h.as_user(UID, GID, w_stat, os.path.join(PRIV.mnt, "world-readable"))
    h.check("without allow_other, nobody cannot stat a 0644 file in the mount: EACCES",
            (kind, val) == ("errno", 13), (kind, val))
    kind, val = h.as_user(UID, GID, w_listdir, ALLOW.mnt)
    h.check("with allow_other, nobody can list the mount root",
            kind == "ok" and val == sorted(os.listdir(SRC)), (kind, str(val)[:200]))
    h.check("without allow_other, root can still use the mount",
            os.path.exists(os.path.join(PRIV.mnt, "world-readable")))
    opts = ALLOW.info["superopts"].split(",") + ALLOW.info["opts"].split(",")
    h.check("allow_other turns on default_permissions (mountinfo)",
            "default_permissions" in opts and "allow_other" in opts, ALLOW.info)


# --- the source decides (DESIGN rule 18; issue 15, M8) ----------------------------------
#
# The kernel checks permissions (default_permissions) against the attributes it cached,
# for up to the attribute window.  A chmod, chown or ACL made on the source by another host
# must still count at the next open and for every change: efscache makes those source
# calls as the caller, and a reader's open asks the source whether the caller may read.
# A mount with a long window (actimeo=60) keeps the kernel's attributes stale for the
# whole test, so every check below is the source's.

STALE = h.mount_efscache(SRC, os.path.join(BASE, "mnt-stale"), "allow_other", "actimeo=60")


def acl_deny(path, uid):
    """A POSIX access ACL on path denying uid everything (mode bits unchanged: the mask
    keeps the group class): system.posix_acl_access, version 2, entries sorted by tag."""
    mode = os.lstat(path).st_mode
    ent = [(0x01, (mode >> 6) & 7, 0xFFFFFFFF), (0x02, 0, uid),
           (0x04, (mode >> 3) & 7, 0xFFFFFFFF), (0x10, (mode >> 3) & 7, 0xFFFFFFFF),
           (0x20, mode & 7, 0xFFFFFFFF)]
    raw = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in ent)
    os.setxattr(path, "system.posix_acl_access", raw)


def r_read(state, p):
    with open(p, "rb") as f:
        return f.read()


def r_write(state, p):
    fd = os.open(p, os.O_WRONLY)
    os.close(fd)
    return True


def r_unlink(state, p):
    os.unlink(p)
    return True


def r_chmod(state, p):
    os.chmod(p, 0o666)
    return True


def r_listdir(state, p):
    return sorted(os.listdir(p))


def as_nobody(fn, p):
    kind, val = h.as_user(UID, GID, fn, p)
    return 0 if kind == "ok" else val if kind == "errno" else "%s: %s" % (kind, val)


def revoke_fixture(d):
    os.mkdir(d, 0o777)
    os.chmod(d, 0o777)
    for name in ("cached", "uncached", "acl", "writable"):
        h.write_file(os.path.join(d, name), b"data of %s\n" % name.encode(),
                     0o666 if name == "writable" else 0o644)
    h.write_file(os.path.join(d, "roots"), b"root's\n", 0o644)
    h.write_file(os.path.join(d, "mine"), b"mine\n", 0o644)
    os.chown(os.path.join(d, "mine"), UID, GID)
    os.mkdir(os.path.join(d, "sub"), 0o755)


def revoke(d):
    """What another host does to the source."""
    for name in ("cached", "uncached"):
        os.chmod(os.path.join(d, name), 0o600)
    acl_deny(os.path.join(d, "acl"), UID)
    os.chmod(os.path.join(d, "writable"), 0o644)
    os.chmod(os.path.join(d, "sub"), 0o700)
    os.chown(os.path.join(d, "mine"), 0, 0)
    os.chmod(d, 0o755)


def test_source_decides():
    ds, dm = os.path.join(SRC, "revoke-src"), os.path.join(SRC, "revoke-mnt")
    m = os.path.join(STALE.mnt, "revoke-mnt")
    revoke_fixture(ds)
    revoke_fixture(dm)
    # What nobody may do while the kernel caches these attributes.
    h.eq("before: nobody reads a 0644 file (now cached)", as_nobody(r_read, m + "/cached"), 0)
    h.eq("before: nobody lists a 0755 directory", as_nobody(r_listdir, m + "/sub"), 0)
    for name in ("uncached", "acl", "writable", "roots", "mine"):
        os.lstat(os.path.join(m, name))  # the kernel caches their attributes
    revoke(ds)
    revoke(dm)
    for name, fn, what in (
            ("cached", r_read, "read a cached file made 0600 on the source"),
            ("uncached", r_read, "read a file made 0600 on the source"),
            ("acl", r_read, "read a 0644 file whose source ACL denies the user"),
            ("writable", r_write, "open for writing a file made 0644 on the source"),
            ("sub", r_listdir, "list a directory made 0700 on the source"),
            ("roots", r_unlink, "unlink in a directory made 0755 on the source"),
            ("mine", r_chmod, "chmod a file given to root on the source")):
        got = as_nobody(fn, os.path.join(m, name))
        ref = as_nobody(fn, os.path.join(ds, name))
        h.check("as nobody, inside the kernel's attribute window: %s: as on SOURCE (%s)"
                % (what, h.ename(ref)), got == ref and ref != 0,
                "mount %s, source %s" % (h.ename(got) if isinstance(got, int) else got,
                                         h.ename(ref) if isinstance(ref, int) else ref))
    h.check("the file in the revoked directory is still there",
            os.path.exists(os.path.join(dm, "roots")))
    h.eq("root still reads the revoked file through the mount",
         h.read_file(os.path.join(m, "cached")), b"data of cached\n")


h.run_tests([test_errno_parity_as_user, test_created_objects_owned_by_user,
             test_setgid_clearing, test_write_clears_setuid, test_without_allow_other,
             test_source_decides])
