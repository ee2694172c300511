#!/usr/bin/env python3
"""Metadata operations through efscache compared with the same tree or call on SOURCE:
lookup/getattr, readdir (3000 entries), readdirplus-style listings, statfs, setattr
(chmod, chown, truncate, utimens incl. UTIME_NOW/UTIME_OMIT), symlink/readlink, mknod,
mkdir/rmdir, unlink, rename (incl. RENAME_NOREPLACE/RENAME_EXCHANGE), link, and changes
made directly on SOURCE seen through the mount (ttl=0)."""

import os
import stat
import subprocess
import time

import harness as h  # noqa: E402

h.require_fuse()
os.umask(0o022)
BASE, SRC, M = h.setup()
MNT = M.mnt


def sub(name):
    """A fresh directory NAME in SOURCE; returns (source path, mount path)."""
    s = os.path.join(SRC, name)
    os.mkdir(s)
    return s, os.path.join(MNT, name)


def test_lookup_getattr():
    s, m = sub("tree")
    h.write_file(s + "/file", b"hello world\n", 0o640)
    os.chown(s + "/file", 1234, 5678)
    os.utime(s + "/file", ns=(1_500_000_000_987_654_321, 1_600_000_000_123_456_789))
    h.write_file(s + "/empty", b"")
    h.write_file(s + "/suid", b"#!/bin/sh\n", 0o4755)
    os.mkdir(s + "/dir", 0o750)
    os.mkdir(s + "/sticky")
    os.chmod(s + "/sticky", 0o1777)
    os.symlink("file", s + "/rel-link")
    os.symlink(s + "/file", s + "/abs-link")
    os.symlink("does/not/exist", s + "/dangling")
    os.symlink("dir", s + "/dir-link")
    os.mkfifo(s + "/fifo", 0o620)
    h.write_file(s + "/hard-a", b"linked\n")
    os.link(s + "/hard-a", s + "/dir/hard-b")
    os.link(s + "/hard-a", s + "/hard-c")
    h.write_file(s + "/with space \u00e9\u4e2d", b"unicode\n")
    h.write_file(s + "/" + "n" * 255, b"long name\n")
    h.write_file(s + "/new\nline and \\ back\tslash", b"odd characters\n")
    h.write_file(os.path.join(os.fsencode(s), b"not-utf8-\xff\xfe"), b"bytes name\n")
    h.write_file(s + "/dir/nested", b"x" * 100000)
    os.mknod(s + "/chardev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    h.compare_tree("getattr: every name, type, mode, owner, size, nlink, mtime/ctime (ns), "
                   "symlink target and inode sharing equal to SOURCE", m, s)
    h.compare_stat("getattr: st_rdev of a character device equals SOURCE", m + "/chardev",
                   s + "/chardev", fields=("st_mode", "st_rdev"))
    h.compare_stat("stat following a symlink equals SOURCE", m + "/rel-link", s + "/rel-link",
                   follow=True)
    h.compare_stat("stat following a symlink to a directory equals SOURCE", m + "/dir-link",
                   s + "/dir-link", follow=True)
    st_a, st_b, st_c = (os.lstat(m + p) for p in ("/hard-a", "/dir/hard-b", "/hard-c"))
    h.check("hard links: the three names share one inode number through the mount",
            st_a.st_ino == st_b.st_ino == st_c.st_ino, (st_a.st_ino, st_b.st_ino, st_c.st_ino))
    h.eq("hard links: st_nlink through the mount", st_a.st_nlink, 3)
    h.eq("file contents through the mount", h.read_file(m + "/dir/nested"), b"x" * 100000)
    h.check("lookup of a missing name fails with ENOENT",
            h.errno_of(os.lstat, m + "/missing") == 2)


def test_readdir_many():
    s, m = sub("big")
    names = set()
    for i in range(3000):
        n = "entry-%05d-%s" % (i, "x" * (i % 97))
        names.add(n)
        if i % 300 == 1:
            os.mkdir(os.path.join(s, n))
        elif i % 300 == 2:
            os.symlink("target-%d" % i, os.path.join(s, n))
        else:
            open(os.path.join(s, n), "wb").close()
    got = os.listdir(m)
    h.eq("readdir of 3000 entries: no duplicates", len(got), len(set(got)))
    h.check("readdir of 3000 entries: same names as SOURCE", set(got) == names,
            "only in mount: %s; only in source: %s" % (sorted(set(got) - names)[:5],
                                                      sorted(names - set(got))[:5]))
    got2 = os.listdir(m)
    h.check("readdir twice gives the same listing", sorted(got2) == sorted(got))
    # d_type and d_ino from readdir, compared with SOURCE and with lstat via the mount
    src_types = {e.name: (e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False),
                          e.is_symlink()) for e in os.scandir(s)}
    bad_type, bad_ino = [], []
    for e in os.scandir(m):
        t = (e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False), e.is_symlink())
        if src_types.get(e.name) != t:
            bad_type.append(e.name)
        if e.inode() != os.lstat(e.path).st_ino:
            bad_ino.append((e.name, e.inode(), os.lstat(e.path).st_ino))
    h.check("readdir: d_type of every entry equals SOURCE", not bad_type, bad_type[:5])
    h.check("readdir: d_ino equals st_ino from lstat through the mount", not bad_ino,
            bad_ino[:5])
    # entries created through the mount show up in SOURCE and in the listing
    for i in range(300):
        open(os.path.join(m, "made-%04d" % i), "wb").close()
    h.eq("300 files created through the mount are in SOURCE",
         len([n for n in os.listdir(s) if n.startswith("made-")]), 300)
    h.check("listing after creating through the mount equals SOURCE",
            sorted(os.listdir(m)) == sorted(os.listdir(s)))
    e, em = sub("emptydir")
    h.eq("readdir of an empty directory", os.listdir(em), [])
    # seekdir/telldir pattern: ls reading in small batches is covered by python's scandir;
    # here check that "ls -f" (raw getdents order) lists the same count
    r = subprocess.run(["ls", "-f", m], capture_output=True, text=True)
    h.eq("ls -f lists every entry (incl . and ..)", len(r.stdout.split("\n")) - 1, 3300 + 2)


def test_readdirplus():
    """ls -l over a directory: listing plus attributes of each entry, compared with SOURCE."""
    s, m = sub("plus")
    for i in range(500):
        p = os.path.join(s, "f%03d" % i)
        h.write_file(p, b"y" * i, 0o600 + (i % 8) * 0o10)
        os.utime(p, ns=(1_000_000_000 + i, 1_700_000_000_000_000_000 + i * 1001))
    os.mkdir(s + "/d")
    os.symlink("f001", s + "/l")
    h.compare_tree("readdirplus: 500 entries' attributes equal SOURCE", m, s)

    def ls(d):
        r = subprocess.run(["ls", "-ln", "--time-style=full-iso", d], capture_output=True,
                           text=True)
        return [ln for ln in r.stdout.splitlines() if not ln.startswith("total")], r.returncode
    lm, rcm = ls(m)
    ls_s, rcs = ls(s)
    h.check("ls -ln --full-time output through the mount equals SOURCE",
            rcm == 0 and lm == ls_s,
            "first differing line: %r" % (next(
                (x for x in zip(lm, ls_s) if x[0] != x[1]), (len(lm), len(ls_s))),))


def test_statfs():
    a = os.statvfs(MNT)
    b = os.statvfs(SRC)
    for f in ("f_bsize", "f_frsize", "f_blocks", "f_files", "f_namemax"):
        h.eq("statfs: %s equals SOURCE" % f, getattr(a, f), getattr(b, f))
    # free counts move while other processes write to the same file system: the mount's
    # value must lie between two SOURCE samples taken around it (a few tries)
    for f, tot in (("f_bfree", "f_blocks"), ("f_bavail", "f_blocks"), ("f_ffree", "f_files")):
        for _ in range(5):
            s1 = getattr(os.statvfs(SRC), f)
            mv = getattr(os.statvfs(MNT), f)
            s2 = getattr(os.statvfs(SRC), f)
            slack = getattr(b, tot) // 10000 + 1
            ok = min(s1, s2) - slack <= mv <= max(s1, s2) + slack
            if ok:
                break
        h.check("statfs: %s equals SOURCE's (sampled around it)" % f, ok,
                "mount %d, source %d..%d" % (mv, s1, s2))
    c = os.statvfs(os.path.join(MNT, "tree") if os.path.isdir(MNT + "/tree") else MNT)
    h.eq("statfs of a subdirectory: f_blocks", c.f_blocks, b.f_blocks)


def test_chmod():
    s, m = sub("chmod")
    h.write_file(s + "/f", b"data")
    os.mkdir(s + "/d")
    for mode in (0o600, 0o4755, 0o2711, 0o000, 0o777, 0o644):
        os.chmod(m + "/f", mode)
        h.eq("chmod %o through the mount: mode in SOURCE" % mode,
             stat.S_IMODE(os.lstat(s + "/f").st_mode), mode)
        h.compare_stat("chmod %o: stat through the mount equals SOURCE" % mode, m + "/f",
                       s + "/f")
    os.chmod(m + "/d", 0o1770)
    h.eq("chmod 1770 on a directory: mode in SOURCE", stat.S_IMODE(os.lstat(s + "/d").st_mode),
         0o1770)
    fd = os.open(m + "/f", os.O_RDONLY)
    try:
        os.fchmod(fd, 0o640)
    finally:
        os.close(fd)
    h.eq("fchmod through an open fd: mode in SOURCE", stat.S_IMODE(os.lstat(s + "/f").st_mode),
         0o640)
    h.compare_stat("after fchmod: stat equals SOURCE", m + "/f", s + "/f")


def test_chown():
    s, m = sub("chown")
    h.write_file(s + "/f", b"data")
    os.symlink("f", s + "/l")
    os.chown(m + "/f", 1234, 5678)
    st = os.lstat(s + "/f")
    h.eq("chown 1234:5678 through the mount: owner in SOURCE", (st.st_uid, st.st_gid),
         (1234, 5678))
    os.chown(m + "/f", -1, 4321)
    st = os.lstat(s + "/f")
    h.eq("chown -1:4321 changes only the group in SOURCE", (st.st_uid, st.st_gid), (1234, 4321))
    os.chown(m + "/f", 777, -1)
    st = os.lstat(s + "/f")
    h.eq("chown 777:-1 changes only the owner in SOURCE", (st.st_uid, st.st_gid), (777, 4321))
    h.compare_stat("after chown: stat through the mount equals SOURCE", m + "/f", s + "/f")
    os.chown(m + "/l", 2222, 3333, follow_symlinks=False)
    st_l, st_f = os.lstat(s + "/l"), os.lstat(s + "/f")
    h.eq("lchown on a symlink: symlink owner in SOURCE", (st_l.st_uid, st_l.st_gid),
         (2222, 3333))
    h.eq("lchown on a symlink leaves the target alone", (st_f.st_uid, st_f.st_gid), (777, 4321))
    h.compare_stat("after lchown: lstat of the symlink equals SOURCE", m + "/l", s + "/l")
    # chown of a setuid file clears the setuid bit in both
    h.write_file(s + "/suid", b"x", 0o4755)
    h.write_file(s + "/suid-ref", b"x", 0o4755)
    os.chown(m + "/suid", 1000, 1000)
    os.chown(s + "/suid-ref", 1000, 1000)
    h.eq("chown clears setuid like on SOURCE", oct(os.lstat(s + "/suid").st_mode),
         oct(os.lstat(s + "/suid-ref").st_mode))


def test_truncate():
    s, m = sub("truncate")
    data = os.urandom(1 << 20)
    h.write_file(s + "/f", data)
    os.truncate(m + "/f", 1000)
    h.eq("truncate (shrink) via path: size in SOURCE", os.lstat(s + "/f").st_size, 1000)
    h.eq("truncate (shrink): size through the mount", os.lstat(m + "/f").st_size, 1000)
    h.check("truncate (shrink): remaining bytes kept", h.read_file(m + "/f") == data[:1000])
    os.truncate(m + "/f", 5_000_001)
    h.eq("truncate (extend) via path: size in SOURCE", os.lstat(s + "/f").st_size, 5_000_001)
    got = h.read_file(m + "/f")
    h.check("truncate (extend): old bytes then zeros through the mount",
            got == data[:1000] + b"\0" * (5_000_001 - 1000), "len %d" % len(got))
    fd = os.open(m + "/f", os.O_RDWR)
    try:
        os.ftruncate(fd, 4096)
        h.eq("ftruncate (shrink) via fd: size in SOURCE", os.lstat(s + "/f").st_size, 4096)
        h.eq("ftruncate: fstat through the fd", os.fstat(fd).st_size, 4096)
        os.ftruncate(fd, 1 << 21)
        h.eq("ftruncate (extend) via fd: size in SOURCE", os.lstat(s + "/f").st_size, 1 << 21)
        h.check("ftruncate (extend): zeros read through the same fd",
                os.pread(fd, 8192, 4096) == b"\0" * 8192)
    finally:
        os.close(fd)
    os.truncate(m + "/f", 0)
    h.eq("truncate to 0: size in SOURCE", os.lstat(s + "/f").st_size, 0)
    h.compare_stat("after truncates: stat equals SOURCE", m + "/f", s + "/f")


def test_utimens():
    s, m = sub("utime")
    h.write_file(s + "/f", b"data")
    os.symlink("f", s + "/l")
    at, mt = 1_234_567_890_111_222_333, 1_345_678_901_444_555_666
    os.utime(m + "/f", ns=(at, mt))
    st = os.lstat(s + "/f")
    h.eq("utimens explicit ns times: SOURCE atime/mtime", (st.st_atime_ns, st.st_mtime_ns),
         (at, mt))
    mst = os.lstat(m + "/f")
    h.eq("utimens explicit ns times: seen through the mount", (mst.st_atime_ns, mst.st_mtime_ns),
         (at, mt))
    before = time.time_ns()
    os.utime(m + "/f", None)
    st = os.lstat(s + "/f")
    h.check("utimens(NULL) = UTIME_NOW: SOURCE mtime is now",
            before - 2 * 10**9 <= st.st_mtime_ns <= time.time_ns() + 2 * 10**9,
            "mtime %d, now %d" % (st.st_mtime_ns, before))
    h.check("utimens(NULL): SOURCE atime is now",
            before - 2 * 10**9 <= st.st_atime_ns <= time.time_ns() + 2 * 10**9)
    h.compare_stat("utimens(NULL): times through the mount equal SOURCE", m + "/f", s + "/f",
                   fields=("st_atime_ns", "st_mtime_ns", "st_ctime_ns"))
    os.utime(m + "/f", ns=(at, mt))
    h.utimensat(m + "/f", (111, 222), h.UTIME_OMIT)
    st = os.lstat(s + "/f")
    h.eq("utimens(atime, UTIME_OMIT): atime set, mtime kept", (st.st_atime_ns, st.st_mtime_ns),
         (111 * 10**9 + 222, mt))
    h.utimensat(m + "/f", h.UTIME_OMIT, (333, 444))
    st = os.lstat(s + "/f")
    h.eq("utimens(UTIME_OMIT, mtime): atime kept, mtime set", (st.st_atime_ns, st.st_mtime_ns),
         (111 * 10**9 + 222, 333 * 10**9 + 444))
    before = time.time_ns()
    h.utimensat(m + "/f", h.UTIME_OMIT, h.UTIME_NOW)
    st = os.lstat(s + "/f")
    h.check("utimens(UTIME_OMIT, UTIME_NOW): atime kept, mtime now",
            st.st_atime_ns == 111 * 10**9 + 222 and st.st_mtime_ns >= before - 2 * 10**9,
            (st.st_atime_ns, st.st_mtime_ns, before))
    h.utimensat(m + "/f", h.UTIME_NOW, (555, 0))
    st = os.lstat(s + "/f")
    h.check("utimens(UTIME_NOW, mtime): atime now, mtime set",
            st.st_mtime_ns == 555 * 10**9 and st.st_atime_ns >= before - 2 * 10**9,
            (st.st_atime_ns, st.st_mtime_ns))
    h.compare_stat("after UTIME_OMIT/NOW: times through the mount equal SOURCE", m + "/f",
                   s + "/f", fields=("st_atime_ns", "st_mtime_ns", "st_ctime_ns"))
    fd = os.open(m + "/f", os.O_RDONLY)
    try:
        os.utime(fd, ns=(at, mt))
    finally:
        os.close(fd)
    st = os.lstat(s + "/f")
    h.eq("futimens through an open fd: SOURCE times", (st.st_atime_ns, st.st_mtime_ns), (at, mt))
    ft = os.lstat(s + "/f")
    os.utime(m + "/l", ns=(10**9, 2 * 10**9), follow_symlinks=False)
    lt = os.lstat(s + "/l")
    h.eq("utimens AT_SYMLINK_NOFOLLOW: symlink times in SOURCE",
         (lt.st_atime_ns, lt.st_mtime_ns), (10**9, 2 * 10**9))
    h.eq("utimens AT_SYMLINK_NOFOLLOW leaves the target alone", os.lstat(s + "/f").st_mtime_ns,
         ft.st_mtime_ns)


def test_symlink_readlink():
    s, m = sub("symlink")
    targets = {"rel": "some/rel/target", "abs": "/etc/passwd", "dangling": "../../nowhere",
               "dot": ".", "long": "/".join(["d" * 200] * 19) + "/end",
               "spaces": "a b\tc\u00e9"}
    for n, t in targets.items():
        os.symlink(t, m + "/" + n)
        h.eq("symlink %s through the mount: readlink in SOURCE" % n, os.readlink(s + "/" + n), t)
        h.eq("symlink %s: readlink through the mount" % n, os.readlink(m + "/" + n), t)
        h.compare_stat("symlink %s: lstat equals SOURCE" % n, m + "/" + n, s + "/" + n)
    os.symlink("made-in-source", s + "/src-link")
    h.eq("readlink through the mount of a link made in SOURCE", os.readlink(m + "/src-link"),
         "made-in-source")
    h.eq("symlink mode through the mount", stat.S_IMODE(os.lstat(m + "/rel").st_mode), 0o777)
    h.eq("symlink st_size is the target length", os.lstat(m + "/long").st_size,
         len(targets["long"]))


def test_mknod():
    s, m = sub("mknod")
    os.mkfifo(m + "/fifo", 0o640)
    st = os.lstat(s + "/fifo")
    h.check("mkfifo through the mount: a FIFO in SOURCE", stat.S_ISFIFO(st.st_mode),
            oct(st.st_mode))
    h.eq("mkfifo 0640: mode in SOURCE", stat.S_IMODE(st.st_mode), 0o640)
    h.compare_stat("mkfifo: lstat equals SOURCE", m + "/fifo", s + "/fifo")
    fd = os.open(m + "/fifo", os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(fd, b"through the pipe")
        h.eq("a FIFO on the mount passes data", os.read(fd, 100), b"through the pipe")
    finally:
        os.close(fd)
    os.mknod(m + "/reg", stat.S_IFREG | 0o600)
    st = os.lstat(s + "/reg")
    h.check("mknod S_IFREG through the mount: a regular file in SOURCE",
            stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode))
    os.mknod(m + "/chr", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    st = os.lstat(s + "/chr")
    h.check("mknod S_IFCHR 1,5 through the mount: same device node in SOURCE",
            stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 5),
            (oct(st.st_mode), st.st_rdev))
    h.compare_stat("mknod chr: lstat equals SOURCE", m + "/chr", s + "/chr",
                   fields=h.STAT_FIELDS + ("st_rdev",))
    os.umask(0o027)
    try:
        os.mkfifo(m + "/fifo2", 0o666)
        os.mkfifo(s + "/fifo2-ref", 0o666)
    finally:
        os.umask(0o022)
    h.eq("mkfifo under umask 027: mode equals the same call on SOURCE",
         oct(os.lstat(s + "/fifo2").st_mode), oct(os.lstat(s + "/fifo2-ref").st_mode))


def test_mkdir_rmdir():
    s, m = sub("mkdir")
    nl = os.lstat(s).st_nlink
    os.mkdir(m + "/d", 0o777)
    os.mkdir(s + "/d-ref", 0o777)
    h.eq("mkdir 0777 under umask 022: mode equals the same call on SOURCE",
         oct(os.lstat(s + "/d").st_mode), oct(os.lstat(s + "/d-ref").st_mode))
    os.mkdir(m + "/d700", 0o700)
    h.eq("mkdir 0700: mode in SOURCE", stat.S_IMODE(os.lstat(s + "/d700").st_mode), 0o700)
    h.eq("mkdir raises the parent's st_nlink in SOURCE", os.lstat(s).st_nlink, nl + 3)
    h.compare_stat("after mkdir: the parent's stat through the mount equals SOURCE", m, s)
    os.makedirs(m + "/a/b/c/d")
    h.check("makedirs through the mount: nested dirs in SOURCE", os.path.isdir(s + "/a/b/c/d"))
    h.write_file(s + "/a/b/c/d/file", b"x")
    h.check_errno("rmdir of a non-empty directory: ENOTEMPTY", os.rmdir, (m + "/a/b/c/d",),
                  (s + "/a/b/c/d",), expected={39})
    os.unlink(m + "/a/b/c/d/file")
    os.rmdir(m + "/a/b/c/d")
    h.check("rmdir through the mount removes the directory from SOURCE",
            not os.path.exists(s + "/a/b/c/d"))
    h.check("rmdir: the name is gone through the mount", not os.path.exists(m + "/a/b/c/d"))
    os.rmdir(m + "/d")
    h.eq("rmdir lowers the parent's st_nlink (through the mount)", os.lstat(m).st_nlink,
         os.lstat(s).st_nlink)


def test_unlink():
    s, m = sub("unlink")
    h.write_file(s + "/f", b"still readable")
    fd = os.open(m + "/f", os.O_RDONLY)
    try:
        os.unlink(m + "/f")
        h.check("unlink through the mount removes the file from SOURCE",
                not os.path.lexists(s + "/f"))
        h.check("unlink: the name is gone through the mount", not os.path.lexists(m + "/f"))
        h.eq("an fd opened before unlink still reads the data", os.pread(fd, 100, 0),
             b"still readable")
    finally:
        os.close(fd)
    os.symlink("x", s + "/l")
    os.unlink(m + "/l")
    h.check("unlink of a symlink through the mount", not os.path.lexists(s + "/l"))
    h.write_file(s + "/a", b"A")
    os.link(s + "/a", s + "/b")
    os.stat(m + "/b")
    os.unlink(m + "/a")
    h.eq("unlink of one hard link: st_nlink of the other through the mount",
         os.lstat(m + "/b").st_nlink, 1)
    h.eq("unlink of one hard link: the other still reads", h.read_file(m + "/b"), b"A")


def test_rename():
    s, m = sub("rename")
    h.write_file(s + "/a", b"AAA")
    os.rename(m + "/a", m + "/b")
    h.check("rename a->b: SOURCE has b, not a",
            os.path.exists(s + "/b") and not os.path.exists(s + "/a"))
    h.eq("rename a->b: content through the mount", h.read_file(m + "/b"), b"AAA")
    h.check("rename a->b: a is gone through the mount", not os.path.lexists(m + "/a"))
    os.mkdir(s + "/d1")
    os.rename(m + "/b", m + "/d1/b2")
    h.eq("rename into another directory: content in SOURCE", h.read_file(s + "/d1/b2"), b"AAA")
    h.write_file(s + "/over", b"old target")
    h.write_file(s + "/new", b"new content")
    fd = os.open(m + "/over", os.O_RDONLY)
    try:
        os.rename(m + "/new", m + "/over")
        h.eq("rename over an existing file: SOURCE has the new content",
             h.read_file(s + "/over"), b"new content")
        h.eq("rename over an existing file: new content through the mount",
             h.read_file(m + "/over"), b"new content")
        h.eq("an fd on the replaced file still reads the old content", os.pread(fd, 100, 0),
             b"old target")
    finally:
        os.close(fd)
    h.compare_stat("rename over existing: stat through the mount equals SOURCE", m + "/over",
                   s + "/over")
    # directories
    os.makedirs(s + "/dir/sub")
    h.write_file(s + "/dir/sub/f", b"in dir")
    os.rename(m + "/dir", m + "/dir2")
    h.eq("rename of a directory: its contents move in SOURCE", h.read_file(s + "/dir2/sub/f"),
         b"in dir")
    h.eq("rename of a directory: contents through the mount", h.read_file(m + "/dir2/sub/f"),
         b"in dir")
    os.mkdir(s + "/emptydir")
    os.rename(m + "/dir2", m + "/emptydir")
    h.check("rename of a directory over an empty directory",
            os.path.exists(s + "/emptydir/sub/f") and not os.path.exists(s + "/dir2"))
    os.makedirs(s + "/full/x")
    os.makedirs(s + "/other")
    h.check_errno("rename dir over a non-empty dir: ENOTEMPTY", os.rename,
                  (m + "/other", m + "/full"), (s + "/other", s + "/full"), expected={39})
    h.write_file(s + "/plain", b"p")
    h.check_errno("rename file over a directory: EISDIR", os.rename,
                  (m + "/plain", m + "/other"), (s + "/plain", s + "/other"), expected={21})
    h.check_errno("rename directory over a file: ENOTDIR", os.rename,
                  (m + "/other", m + "/plain"), (s + "/other", s + "/plain"), expected={20})
    h.check_errno("rename of a missing name: ENOENT", os.rename,
                  (m + "/missing", m + "/x"), (s + "/missing", s + "/x"), expected={2})
    # renameat2 flags
    h.write_file(s + "/n1", b"one")
    h.write_file(s + "/n2", b"two")
    h.check_errno("RENAME_NOREPLACE onto an existing name: EEXIST", h.renameat2,
                  (m + "/n1", m + "/n2", h.RENAME_NOREPLACE),
                  (s + "/n1", s + "/n2", h.RENAME_NOREPLACE), expected={17})
    h.eq("RENAME_NOREPLACE failure leaves the target alone", h.read_file(s + "/n2"), b"two")
    e = h.errno_of(h.renameat2, m + "/n1", m + "/n3", h.RENAME_NOREPLACE)
    h.check("RENAME_NOREPLACE onto a free name succeeds",
            e == 0 and h.read_file(s + "/n3") == b"one" and not os.path.exists(s + "/n1"),
            h.ename(e))
    h.write_file(s + "/x1", b"one")
    h.write_file(s + "/x2", b"two")
    e = h.errno_of(h.renameat2, m + "/x1", m + "/x2", h.RENAME_EXCHANGE)
    h.check("RENAME_EXCHANGE succeeds", e == 0, h.ename(e))
    h.eq("RENAME_EXCHANGE swaps the files in SOURCE",
         (h.read_file(s + "/x1"), h.read_file(s + "/x2")), (b"two", b"one"))
    h.eq("RENAME_EXCHANGE: contents through the mount",
         (h.read_file(m + "/x1"), h.read_file(m + "/x2")), (b"two", b"one"))
    os.mkdir(s + "/xd")
    e = h.errno_of(h.renameat2, m + "/x1", m + "/xd", h.RENAME_EXCHANGE)
    h.check("RENAME_EXCHANGE of a file and a directory",
            e == 0 and os.path.isdir(s + "/x1") and os.path.isfile(s + "/xd"), h.ename(e))
    h.check("RENAME_EXCHANGE of file and dir: types through the mount",
            os.path.isdir(m + "/x1") and os.path.isfile(m + "/xd"))
    h.check_errno("RENAME_EXCHANGE with a missing target: ENOENT", h.renameat2,
                  (m + "/x2", m + "/nothere", h.RENAME_EXCHANGE),
                  (s + "/x2", s + "/nothere", h.RENAME_EXCHANGE), expected={2})
    h.compare_tree("after all renames: tree equals SOURCE", m, s)


def test_link():
    s, m = sub("link")
    h.write_file(s + "/a", b"original")
    os.link(m + "/a", m + "/b")
    sa, sb = os.lstat(s + "/a"), os.lstat(s + "/b")
    h.check("link through the mount: one inode in SOURCE", sa.st_ino == sb.st_ino)
    h.eq("link: st_nlink in SOURCE", sa.st_nlink, 2)
    ma, mb = os.lstat(m + "/a"), os.lstat(m + "/b")
    h.eq("link: both names share st_ino through the mount", ma.st_ino, mb.st_ino)
    h.eq("link: st_nlink through the mount (both names)", (ma.st_nlink, mb.st_nlink), (2, 2))
    os.mkdir(s + "/d")
    os.link(m + "/b", m + "/d/c")
    h.eq("second link in a subdirectory: st_nlink through the mount",
         os.lstat(m + "/a").st_nlink, 3)
    with open(m + "/b", "r+b") as f:
        f.write(b"CHANGED!")
    h.eq("write through one name is read through another", h.read_file(m + "/d/c"), b"CHANGED!")
    h.compare_tree("after link: tree equals SOURCE", m, s)
    h.check_errno("link onto an existing name: EEXIST", os.link, (m + "/a", m + "/b"),
                  (s + "/a", s + "/b"), expected={17})
    h.check_errno("link of a directory: EPERM", os.link, (m + "/d", m + "/dl"),
                  (s + "/d", s + "/dl"), expected={1})
    os.unlink(m + "/a")
    h.eq("after unlink of one link: st_nlink through the mount", os.lstat(m + "/b").st_nlink,
         os.lstat(s + "/b").st_nlink)


def _churn(state, mdir, wid, rounds):
    """create / write / stat / link / rename / unlink / mkdir / rmdir in a shared dir."""
    errors = []
    for i in range(rounds):
        p = os.path.join(mdir, "w%d-%d" % (wid, i))
        try:
            with open(p, "wb") as f:
                f.write(b"%d:%d" % (wid, i))
            os.stat(p)
            os.link(p, p + ".lnk")
            os.rename(p, p + ".ren")
            if h.read_file(p + ".lnk") != b"%d:%d" % (wid, i):
                errors.append("content of %s" % p)
            os.unlink(p + ".lnk")
            if os.lstat(p + ".ren").st_nlink != 1:
                errors.append("nlink of %s.ren" % p)
            if i % 3:
                os.unlink(p + ".ren")
            os.mkdir(p + ".d")
            os.rename(p + ".d", p + ".d2")
            os.rmdir(p + ".d2")
            os.listdir(mdir)
        except OSError as e:
            errors.append("%s: %s" % (p, e))
    return errors[:5]


def test_deep_paths():
    """A tree deeper than PATH_MAX (40 levels of 200-char names): the daemon must resolve
    names relative to directory fds, not by gluing full paths together."""
    s, m = sub("deep")
    name = "d" * 200
    fd = os.open(s, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(40):
        os.mkdir(name, dir_fd=fd)
        nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    leaf = os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
    os.write(leaf, b"at the bottom")
    os.close(leaf)
    os.close(fd)
    fd = os.open(m, os.O_RDONLY | os.O_DIRECTORY)
    err = None
    try:
        for _ in range(40):
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        lf = os.open("leaf", os.O_RDONLY, dir_fd=fd)
        got = os.read(lf, 100)
        os.close(lf)
        os.mkdir("made-deep", dir_fd=fd)
        os.rename("leaf", "leaf2", src_dir_fd=fd, dst_dir_fd=fd)
        names = sorted(os.listdir(fd))
    except OSError as e:
        err = e
    finally:
        os.close(fd)
    h.check("a file 40 x 200-char directories deep (> PATH_MAX) reads through the mount",
            err is None and got == b"at the bottom", err)
    if err is None:
        h.eq("mkdir and rename at that depth through the mount", names, ["leaf2", "made-deep"])


def test_concurrent_metadata():
    s, m = sub("churn")
    ws = [h.Worker() for _ in range(8)]
    try:
        for i, w in enumerate(ws):
            w.call_async(_churn, m, i, 150)
        res = [w.result_raw(timeout=200) for w in ws]
    finally:
        for w in ws:
            w.close()
    bad = [r for r in res if r != ("ok", [])]
    h.check("8 processes x 150 create/link/rename/unlink/mkdir/rmdir cycles in one directory: "
            "no errors", not bad, bad[:3])
    h.compare_tree("after the churn: tree equals SOURCE", m, s)
    h.eq("after the churn: the expected files remain", len(os.listdir(s)), 8 * 50)


def test_inode_numbers_stable():
    """Another mount of the same SOURCE (or the same one after a remount) reports the same
    st_ino for every object: git, rsync, tar and find -samefile rely on it."""
    s, m = sub("inos")
    for i in range(20):
        h.write_file(os.path.join(s, "f%d" % i), b"x")
    os.mkdir(s + "/d")
    os.link(s + "/f0", s + "/d/f0-link")
    first = {n: os.lstat(os.path.join(m, n)).st_ino for n in os.listdir(s)}
    try:
        m2 = h.mount_efscache(SRC, os.path.join(BASE, "mnt-2"))
    except h.MountError as e:
        h.check("second mount of SOURCE", False, e)
        return
    try:
        second = {n: os.lstat(os.path.join(m2.mnt, "inos", n)).st_ino for n in os.listdir(s)}
        h.check("a second mount of SOURCE reports the same st_ino for every name",
                first == second, {k: (first[k], second.get(k)) for k in first
                                  if first[k] != second.get(k)})
    finally:
        h.unmount(m2)


def test_source_changes_visible():
    """Close-to-open with the defaults: what another host does to a file in SOURCE is seen by
    the next open through the mount, even while its name is cached; a name that was looked
    up and found missing stays missing for the directory's window (lookupcache=all, as on
    EFS; tests/integration/test_metadata.py checks the windows themselves)."""
    s, m = sub("external")
    h.check("a missing name is missing", not os.path.lexists(m + "/late"))
    h.write_file(s + "/late", b"created later")
    h.check_errno("a file created in SOURCE after a failed lookup: the negative entry is "
                  "still cached", lambda p: open(p, "rb").close(), (m + "/late",),
                  expected={2})
    h.write_file(s + "/f", b"version 1")
    h.eq("read v1", h.read_file(m + "/f"), b"version 1")
    h.write_file(s + "/f.tmp", b"version 2, longer")
    os.rename(s + "/f.tmp", s + "/f")
    h.eq("a file replaced by rename in SOURCE: the next open reads the new file",
         h.read_file(m + "/f"), b"version 2, longer")
    with open(s + "/f", "r+b") as f:
        f.write(b"VERSION")
    os.utime(s + "/f", ns=(10**18, 10**18))
    h.eq("a file modified in place in SOURCE: the next open reads the new bytes",
         h.read_file(m + "/f"), b"VERSION 2, longer")
    with open(s + "/f", "ab") as f:
        f.write(b" + appended")
    h.eq("a file appended in SOURCE: the next open reads the longer file",
         h.read_file(m + "/f"), b"VERSION 2, longer + appended")
    os.unlink(s + "/f")
    h.check_errno("a file removed from SOURCE: the next open gets ENOENT",
                  lambda p: open(p, "rb").close(), (m + "/f",), expected={2})
    os.mkdir(s + "/newdir")
    h.write_file(s + "/newdir/x", b"x")
    h.eq("a directory created in SOURCE is listed through the mount", os.listdir(m + "/newdir"),
         ["x"])
    h.write_file(s + "/newdir/y", b"y")
    h.eq("a name added in SOURCE shows in the next listing", sorted(os.listdir(m + "/newdir")),
         ["x", "y"])


h.run_tests([test_lookup_getattr, test_readdir_many, test_readdirplus, test_statfs, test_chmod,
             test_chown, test_truncate, test_utimens, test_symlink_readlink, test_mknod,
             test_mkdir_rmdir, test_unlink, test_rename, test_link,
             test_deep_paths, test_concurrent_metadata, test_inode_numbers_stable, test_source_changes_visible])
