#!/usr/bin/env python3
"""efscache over the EFS emulator (DESIGN 5): SOURCE is an efs-emu mount of a temp dir.
Reads of a 32 MiB file through efscache return the right bytes and show up in the emu's
counters; metadata equals the emu's view; writes go through to the emu; concurrent
readers; emu faults (EIO, ENOENT, EIO after N bytes) come back as the source's errno and
a cleared fault heals."""

import contextlib
import os
import random
import subprocess
import time

import harness as h  # noqa: E402

h.require_fuse()
MiB = 1 << 20
if not h.EFS_EMU_BIN or not os.path.exists(h.EFS_EMU_BIN):
    h.check("efs-emu binary exists", False, "EFS_EMU_BIN=%r" % h.EFS_EMU_BIN)
    h.finish()

BASE = h.tmpdir()
RAW = os.path.join(BASE, "raw")
h.mkdirs(RAW)
h.make_random_file(os.path.join(RAW, "32m"), 32 * MiB, seed=32)
os.makedirs(os.path.join(RAW, "tree/sub"))
for i in range(50):
    h.write_file(os.path.join(RAW, "tree", "f%02d" % i), os.urandom(i * 100))
os.symlink("f01", os.path.join(RAW, "tree/link"))
h.write_file(os.path.join(RAW, "tree/sub/deep"), b"deep")
h.write_file(os.path.join(RAW, "faulty.bin"), os.urandom(MiB))
h.write_file(os.path.join(RAW, "vanishing"), b"now you see me")
h.make_random_file(os.path.join(RAW, "late-fault.bin"), 8 * MiB, seed=8)

EMU = h.mount_emu(RAW, os.path.join(BASE, "emu"), "latency_ms=0.2", "meta_latency_ms=0.1")
# lookupcache=positive: the fault tests make lookups fail and then expect the name back at
# once, which a cached negative entry (the default, as on EFS) would hide for acdirmin.
# siblings=0: they also expect a file never read through the mount to be neither cached
# nor its name known to efscache's side of the emu (a fetch ahead of faulty.bin's
# siblings would fetch "vanishing" and look its name up).
M = h.mount_efscache(EMU.mnt, os.path.join(BASE, "mnt"), "lookupcache=positive", "siblings=0")
MNT = M.mnt


def stats(path=None):
    return h.emu_stats(path or EMU.mnt)


def test_read_through_emu():
    h.emu_reset(EMU.mnt)
    before = stats()
    h.eq("emu counters start at zero after reset", before.get("read_bytes"), 0, before)
    want = h.sha256_file(os.path.join(RAW, "32m"))
    got = h.sha256_file(os.path.join(MNT, "32m"))
    h.eq("32 MiB read through efscache over efs-emu: sha256 equals the raw file", got, want)
    t = stats()
    h.check("emu totals: read_bytes >= 32 MiB after the read", t.get("read_bytes", 0) >= 32 * MiB,
            t)
    h.check("emu totals: read_ops > 0 and opens > 0",
            t.get("read_ops", 0) > 0 and t.get("opens", 0) > 0, t)
    f = stats(os.path.join(EMU.mnt, "32m"))
    h.check("emu per-file counters of 32m: read_bytes >= 32 MiB",
            f.get("read_bytes", 0) >= 32 * MiB, f)
    other = stats(os.path.join(EMU.mnt, "faulty.bin"))
    h.eq("emu per-file counters of an unread file: read_bytes 0", other.get("read_bytes"), 0,
         other)
    # random unaligned reads compare with the raw file
    rnd = random.Random(1)
    bad = []
    with open(os.path.join(MNT, "32m"), "rb", buffering=0) as fm, \
            open(os.path.join(RAW, "32m"), "rb", buffering=0) as fr:
        for _ in range(64):
            off = rnd.randrange(0, 32 * MiB)
            n = rnd.choice([1, 4096, 4097, 65536, MiB, 3 * MiB + 5])
            if os.pread(fm.fileno(), n, off) != os.pread(fr.fileno(), n, off):
                bad.append((off, n))
    h.check("64 random unaligned preads through efscache over efs-emu equal the raw file",
            not bad, bad[:5])


def test_metadata_through_emu():
    h.compare_tree("tree through efscache equals the tree through efs-emu (SOURCE)",
                   os.path.join(MNT, "tree"), os.path.join(EMU.mnt, "tree"))
    a, b = os.statvfs(MNT), os.statvfs(EMU.mnt)
    h.eq("statfs f_blocks through efscache equals efs-emu", a.f_blocks, b.f_blocks)
    # Names and attributes are cached on both sides now (as on EFS); a name never looked up
    # before has to reach the emulated server.
    h.write_file(os.path.join(RAW, "tree/sub/fresh"), b"new")
    h.emu_reset(EMU.mnt)
    os.stat(os.path.join(MNT, "tree/sub/fresh"))
    h.check("a stat of a new name through efscache reaches efs-emu (a lookup counted)",
            stats().get("lookups", 0) > 0, stats())
    h.emu_reset(EMU.mnt)
    os.stat(os.path.join(MNT, "tree/sub/fresh"))
    h.eq("a second stat inside the attribute window is answered by the kernel: no request",
         stats().get("lookups", 0) + stats().get("getattrs", 0), 0)


def test_write_through_emu():
    data = os.urandom(3 * MiB + 7)
    h.emu_reset(EMU.mnt)
    with open(os.path.join(MNT, "written"), "wb") as f:
        f.write(data)
    h.check("a 3 MiB file written through efscache lands in the raw dir under efs-emu",
            h.read_file(os.path.join(RAW, "written")) == data)
    t = stats()
    h.check("emu totals: write_bytes >= 3 MiB", t.get("write_bytes", 0) >= len(data), t)
    os.rename(os.path.join(MNT, "written"), os.path.join(MNT, "renamed"))
    h.check("rename through efscache over efs-emu",
            os.path.exists(os.path.join(RAW, "renamed")) and
            not os.path.exists(os.path.join(RAW, "written")))
    os.unlink(os.path.join(MNT, "renamed"))
    h.check("unlink through efscache over efs-emu", not os.path.exists(os.path.join(RAW,
                                                                                 "renamed")))


def _reader(state, mpath, rpath, seed):
    rnd = random.Random(seed)
    bad = []
    fm, fr = os.open(mpath, os.O_RDONLY), os.open(rpath, os.O_RDONLY)
    try:
        for _ in range(24):
            off = rnd.randrange(0, 31 * MiB)
            if os.pread(fm, MiB, off) != os.pread(fr, MiB, off):
                bad.append(off)
    finally:
        os.close(fm)
        os.close(fr)
    return bad


def test_concurrent_readers_over_emu():
    ws = [h.Worker() for _ in range(8)]
    try:
        for i, w in enumerate(ws):
            w.call_async(_reader, os.path.join(MNT, "32m"), os.path.join(RAW, "32m"), 100 + i)
        res = [w.result_raw(timeout=120) for w in ws]
    finally:
        for w in ws:
            w.close()
    bad = [r for r in res if r != ("ok", [])]
    h.check("8 concurrent random 1 MiB readers through efscache over efs-emu", not bad, bad[:3])


def read_all(fd, off):
    """pread from off to EOF in 1 MiB steps; returns (errno or 0, bytes read)."""
    n = 0
    while True:
        try:
            b = os.pread(fd, MiB, off + n)
        except OSError as e:
            return e.errno, n
        if not b:
            return 0, n
        n += len(b)


def set_emu(name, value):
    os.setxattr(EMU.mnt, "user.efsemu." + name, value)


def test_faults():
    try:
        set_emu("fail_eio", b"faulty.bin")
    except OSError as e:
        h.skip("fault injection", "efs-emu refuses user.efsemu.fail_eio: %s" % e)
        return
    try:
        e = h.errno_of(h.read_file, os.path.join(MNT, "faulty.bin"))
        h.eq("emu fail_eio on a file: the read through efscache fails with EIO", h.ename(e),
             "EIO")
        e = h.errno_of(h.read_file, os.path.join(EMU.mnt, "faulty.bin"))
        h.eq("(the same read directly on efs-emu fails with EIO)", h.ename(e), "EIO")
        h.eq("other files still read while one fails",
             h.read_file(os.path.join(MNT, "tree/sub/deep")), b"deep")
    finally:
        set_emu("fail_eio", b"")
    try:
        got = h.read_file(os.path.join(MNT, "faulty.bin"))
    except OSError as e:
        got = e
    h.check("after the fault is cleared the file reads correctly through efscache",
            got == h.read_file(os.path.join(RAW, "faulty.bin")), repr(got)[:200])
    # the emu serves the first read, then every further read fails: reading the file (never
    # read before, so nothing of it can be cached) to the end must end in EIO, not in a
    # short or wrong file.  The fault is armed before the open so that no prefetch can
    # fetch the rest first.
    set_emu("fail_after_bytes", b"1")
    try:
        fd = os.open(os.path.join(MNT, "late-fault.bin"), os.O_RDONLY)
        try:
            e, n = read_all(fd, 0)
        finally:
            os.close(fd)
        h.eq("emu fail_after_bytes: reading the file through efscache ends in EIO",
             h.ename(e), "EIO", "read %d bytes first" % n)
    finally:
        set_emu("fail_after_bytes", b"0")
    got = h.read_file(os.path.join(MNT, "late-fault.bin"))
    h.check("after fail_after_bytes is cleared the file reads correctly (nothing bad kept)",
            got == h.read_file(os.path.join(RAW, "late-fault.bin")))
    try:
        set_emu("fail_enoent", b"vanishing")
    except OSError as e:
        h.skip("fail_enoent", str(e))
        return
    try:
        e = h.errno_of(h.read_file, os.path.join(MNT, "vanishing"))
        h.eq("emu fail_enoent: open through efscache fails with ENOENT", h.ename(e), "ENOENT")
    finally:
        set_emu("fail_enoent", b"")
    try:
        got = h.read_file(os.path.join(MNT, "vanishing"))
    except OSError as e:
        got = e
    h.eq("after fail_enoent is cleared the file is back through efscache", got,
         b"now you see me")


# ---------------------------------------------------------------------------------------
# efs-emu's own NFS-like caching (tests/emu/README.md, "NFS-like caching"), on an emu mount
# with its default acregmin=3 / acdirmin=30 / lookupcache=all and no efscache on top. Short
# windows are set through user.efsemu.* for fresh names (a setting applies to replies from
# then on). The emu's counters are the witness: what the kernel answers from its caches
# never reaches them.

NRAW = os.path.join(BASE, "nraw")
h.mkdirs(NRAW)
NFS = h.mount_emu(NRAW, os.path.join(BASE, "nfs"), "latency_ms=0.1", "meta_latency_ms=0.05")
N = NFS.mnt


def nset(name, value):
    os.setxattr(N, "user.efsemu." + name, str(value).encode())


def ntot():
    return h.emu_stats(N)


def nfile(rel):
    """Per-file counters through the (cached) name: read them after the measured steps."""
    return h.emu_stats(os.path.join(N, rel))


def nraw(rel, data):
    path = os.path.join(NRAW, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    h.write_file(path, data)
    return path


@contextlib.contextmanager
def pinned(*rels):
    """Hold O_PATH fds (which send no OPEN) on N/rel...: their dentries and inodes, with the
    kernel's cached names and attributes, survive drop_caches by other users of the
    machine, which would otherwise turn a cached answer into a LOOKUP."""
    fds = [os.open(os.path.join(N, r), os.O_PATH | os.O_NOFOLLOW) for r in rels]
    try:
        yield
    finally:
        for fd in fds:
            os.close(fd)


def drops():
    """How many times anyone on the machine dropped the dentry/inode caches so far."""
    with open("/proc/vmstat") as f:
        for line in f:
            if line.startswith("drop_slab "):
                return int(line.split()[1])
    return 0


def within(t0, window):
    """True while we are still clearly inside a cache window that began before t0."""
    return time.monotonic() - t0 < 0.7 * window


def test_nfs_defaults_and_option_errors():
    cfg = dict(kv.split("=", 1) for kv in os.getxattr(N, "user.efsemu.config").decode().split())
    h.eq("efs-emu defaults: acregmin=3 acdirmin=30 lookupcache=all, timeout unset",
         (cfg.get("acregmin"), cfg.get("acdirmin"), cfg.get("lookupcache"), cfg.get("timeout")),
         ("3", "30", "all", ""), cfg)
    mnt = os.path.join(BASE, "never-mounted")
    h.mkdirs(mnt)
    for opt, val in (("acregmin", "soon"), ("acdirmin", "-1"), ("lookupcache", "some"),
                     ("timeout", "1e9"), ("acregmin", "")):
        r = subprocess.run([h.EFS_EMU_BIN, NRAW, mnt, "-f", "-o", "%s=%s" % (opt, val)],
                           capture_output=True, text=True, timeout=30)
        err = r.stderr.strip()
        h.check("efs-emu -o %s=%s: exit 1, error names option, value and reason, no mount"
                % (opt, val),
                r.returncode == 1 and opt in err and ("'%s'" % val) in err and ": " in
                err.split(opt, 1)[-1] and not h.is_mounted(mnt), "rc=%d %r" % (r.returncode, err))
    for bad in (b"x", b"-2"):
        e = h.errno_of(os.setxattr, N, "user.efsemu.acregmin", bad)
        h.eq("setxattr user.efsemu.acregmin=%s fails with EINVAL" % bad.decode(), h.ename(e),
             "EINVAL")


def test_nfs_attr_cache_window():
    nset("acregmin", 1)
    try:
        nraw("attr/f", b"12345")
        os.stat(os.path.join(N, "attr/f"))  # LOOKUP: name and attributes cached
        with pinned("attr/f"):
            _attr_cache_window()
    finally:
        nset("acregmin", 3)


def _attr_cache_window():
    time.sleep(1.2)  # attributes expired, name still valid (30 s)
    h.emu_reset(N)
    a = os.stat(os.path.join(N, "attr/f"))
    b = os.stat(os.path.join(N, "attr/f"))
    t = ntot()
    h.eq("two stats after acregmin expired: one GETATTR, no LOOKUP",
         (t["getattrs"], t["lookups"]), (1, 0), t)
    h.eq("the stats return the source's size", (a.st_size, b.st_size), (5, 5))
    time.sleep(1.2)
    os.stat(os.path.join(N, "attr/f"))
    t = ntot()
    h.eq("a stat after the next window expired: one more GETATTR", t["getattrs"], 2, t)
    f = nfile("attr/f")
    h.eq("per-file counters: getattrs 2, lookups 0, opens 0",
         (f["getattrs"], f["lookups"], f["opens"]), (2, 0, 0), f)
    # directories are cached for acdirmin (30 s), not acregmin
    os.stat(os.path.join(N, "attr"))
    t = ntot()
    h.eq("a directory stat 2.4 s after its lookup is answered by the kernel (acdirmin)",
         t["getattrs"], 2, t)


def test_nfs_force_sync_statx():
    nraw("fs/f", b"abc")
    d = os.path.join(N, "fs")
    with pinned("fs/f"):
        _force_sync(d)


def _force_sync(d):
    h.emu_reset(N)
    os.stat(os.path.join(d, "f"))
    h.eq("a plain stat within acregmin sends nothing", ntot()["getattrs"], 0, ntot())
    for _ in range(3):
        h.statx(os.path.join(d, "f"), h.AT_STATX_FORCE_SYNC | h.AT_SYMLINK_NOFOLLOW)
    t = ntot()
    h.eq("3 x statx(AT_STATX_FORCE_SYNC) by path: 3 GETATTRs, no LOOKUP",
         (t["getattrs"], t["lookups"]), (3, 0), t)
    dfd = os.open(d, os.O_PATH | os.O_DIRECTORY)
    try:
        with open(os.path.join(NRAW, "fs/f"), "ab") as f:
            f.write(b"defg")
        x = h.statx("f", h.AT_STATX_FORCE_SYNC | h.AT_SYMLINK_NOFOLLOW, dirfd=dfd)
    finally:
        os.close(dfd)
    t = ntot()
    h.eq("statx(parent fd, name, FORCE_SYNC): one more GETATTR, no LOOKUP",
         (t["getattrs"], t["lookups"]), (4, 0), t)
    h.eq("... and it sees the size the source has now", x.size, 7)
    h.statx(os.path.join(d, "f"), h.AT_STATX_DONT_SYNC)
    os.stat(os.path.join(d, "f"))
    h.eq("statx(AT_STATX_DONT_SYNC) and stat after it send nothing", ntot()["getattrs"], 4)
    h.eq("per-file getattrs of f: 4", nfile("fs/f")["getattrs"], 4)


def test_nfs_negative_entries():
    os.makedirs(os.path.join(NRAW, "neg"))
    with pinned("neg"):
        _negative_entries()


def _missing_twice(rel, tries=5):
    """stat missing name N/rel twice, counting what the second stat sent. A negative dentry
    cannot be pinned, so a try during which anyone dropped the caches is repeated (with a
    fresh name: rel + try number). Returns (rel used, errno name, totals after the second)."""
    for i in range(tries):
        name = "%s%d" % (rel, i)
        d0 = drops()
        h.errno_of(os.stat, os.path.join(N, name))
        h.emu_reset(N)
        e = h.errno_of(os.stat, os.path.join(N, name))
        t = ntot()
        if drops() == d0:
            return name, h.ename(e), t
    h.note("caches dropped by someone else during each of %d tries" % tries)
    return name, h.ename(e), t


def _negative_entries():
    nset("acdirmin", 2)
    try:
        t0 = time.monotonic()
        d0 = drops()
        name, e, t = _missing_twice("neg/missing")
        missing = os.path.join(N, name)
        h.eq("the missing name again within acdirmin: ENOENT, no LOOKUP (negative entry)",
             (e, t["lookups"], t["neg_entries"]), ("ENOENT", 0, 0), t)
        nraw(name, b"here now")
        e = h.ename(h.errno_of(os.stat, missing))
        if within(t0, 2) and drops() == d0:
            h.eq("created on SOURCE within the window: still ENOENT through the mount "
                 "(lookupcache=all staleness, as NFS)", e, "ENOENT")
        else:
            h.note("machine too slow or caches dropped: cached negative entry not checked")
        time.sleep(max(0, t0 + 2.3 - time.monotonic()))
        h.emu_reset(N)
        h.eq("after acdirmin the negative entry expired: the new file is found",
             os.stat(missing).st_size, 8)
        f = nfile(name)
        h.eq("... with one LOOKUP of it", f["lookups"], 1, f)
    finally:
        nset("acdirmin", 30)
    nset("lookupcache", "positive")
    try:
        h.emu_reset(N)
        for _ in range(2):
            h.errno_of(os.stat, os.path.join(N, "neg/missing_pos"))
        t = ntot()
        h.eq("lookupcache=positive: two stats of a missing name, two LOOKUPs, no negative "
             "entry", (t["lookups"], t["neg_entries"]), (2, 0), t)
    finally:
        nset("lookupcache", "all")
    nraw("neg/found", b"x")
    nset("lookupcache", "none")
    try:
        os.stat(os.path.join(N, "neg/found"))
        h.emu_reset(N)
        for _ in range(2):
            os.stat(os.path.join(N, "neg/found"))
        t = ntot()
        h.eq("lookupcache=none: each stat of a found name sends a LOOKUP (attributes still "
             "cached: no GETATTR)", (t["lookups"], t["getattrs"]), (2, 0), t)
    finally:
        nset("lookupcache", "all")
    _, e, t = _missing_twice("neg/missing_all")
    h.eq("lookupcache=all again: the second stat of a missing name sends nothing",
         (e, t["lookups"]), ("ENOENT", 0), t)
    h.emu_reset(N)
    h.errno_of(os.stat, os.path.join(N, "neg/missing_new"))
    h.eq("... and a new missing name is one LOOKUP answered with a negative entry",
         (ntot()["lookups"], ntot()["neg_entries"]), (1, 1), ntot())


def test_nfs_open_refreshes_attributes():
    src = nraw("cto/f", b"12345")
    path = os.path.join(N, "cto/f")
    t0 = time.monotonic()
    os.stat(path)
    with pinned("cto/f"):
        _open_refreshes_attributes(src, path, t0)


def _open_refreshes_attributes(src, path, t0):
    with open(src, "ab") as f:
        f.write(b"678")
    if within(t0, 3):
        h.eq("changed on SOURCE: a plain stat within acregmin still shows the old size",
             os.stat(path).st_size, 5)
    h.emu_reset(N)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, 100)
    finally:
        os.close(fd)
    t = ntot()
    h.eq("fstat after the next open sees the new size, read the new data", (size, data),
         (8, b"12345678"))
    h.eq("that open: 1 OPEN, no GETATTR of its own (the fstat's is the OPEN compound's), "
         "no LOOKUP, 1 attribute invalidation",
         (t["opens"], t["getattrs"], t["open_getattrs"], t["lookups"], t["attr_invals"]),
         (1, 0, 1, 0, 1), t)
    # in place, same size, old mtime put back: ctime still changes, and open sees it
    st0 = os.stat(src)
    with open(src, "r+b") as f:
        f.write(b"abcdefgh")
    os.utime(src, ns=(st0.st_atime_ns, st0.st_mtime_ns))
    st1 = os.stat(src)
    h.emu_reset(N)
    fd = os.open(path, os.O_RDONLY)
    try:
        fst = os.fstat(fd)
        data = os.read(fd, 100)
    finally:
        os.close(fd)
    t = ntot()
    h.eq("same size, mtime restored (touch -r): fstat after open has the new ctime, read the "
         "new data", (fst.st_ctime_ns, fst.st_mtime_ns, data),
         (st1.st_ctime_ns, st0.st_mtime_ns, b"abcdefgh"))
    h.eq("... 1 attribute invalidation, the OPEN compound's GETATTR",
         (t["attr_invals"], t["getattrs"], t["open_getattrs"]), (1, 0, 1), t)
    # unchanged: the open invalidates nothing, fstat is answered by the kernel. (The read
    # above made the kernel's atime stale, as on NFS; a stat refreshes it first.)
    os.stat(path)
    h.emu_reset(N)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fstat(fd)
    finally:
        os.close(fd)
    t = ntot()
    h.eq("open of an unchanged file: no change found, fstat costs no GETATTR of its own",
         (t["opens"], t["attr_invals"], t["getattrs"], t["lookups"]), (1, 0, 0, 0), t)
    # ... yet the kernel asked: it may hold other attributes than efs-emu last sent it
    # (it drops a reply that raced with another change of the inode)
    h.eq("... the fstat got the OPEN compound's attributes", t["open_getattrs"], 1, t)


def test_nfs_replaced_by_rename_and_removed():
    src = nraw("rep/model", b"old model")
    path = os.path.join(N, "rep/model")
    h.eq("read through the mount (name and attributes now cached)", h.read_file(path),
         b"old model")
    old_fd = os.open(path, os.O_RDONLY)
    try:
        nraw("rep/.model.tmp", b"new model!")
        os.rename(os.path.join(NRAW, "rep/.model.tmp"), src)
        h.emu_reset(N)
        got = h.read_file(path)
        t = ntot()
        h.eq("replaced by rename on SOURCE: the next open() by path reads the new file, "
             "while the name is cached and the old file is still open", got, b"new model!")
        h.check("... the OPEN of the old handle was ESTALE and the name looked up again",
                t["estale"] >= 1 and t["lookups"] >= 1, t)
        h.eq("stat by path now gives the new inode", os.stat(path).st_ino, os.stat(src).st_ino)
        h.eq("the already-open old file still reads its old data",
             os.pread(old_fd, 100, 0), b"old model")
        h.eq("... and fstat of it works (nlink 0)", os.fstat(old_fd).st_nlink, 0)
    finally:
        os.close(old_fd)
    # replaced again, nothing open: statx FORCE_SYNC by path follows the name too
    with pinned("rep/model"):
        nraw("rep/.model.tmp", b"newest")
        os.rename(os.path.join(NRAW, "rep/.model.tmp"), src)
        h.emu_reset(N)
        x = h.statx(path, h.AT_STATX_FORCE_SYNC)
        t = ntot()
    h.eq("replaced again: statx(FORCE_SYNC) by path gives the new inode and size",
         (x.ino, x.size), (os.stat(src).st_ino, 6))
    h.check("... via an ESTALE GETATTR and a new LOOKUP", t["estale"] >= 1 and
            t["lookups"] >= 1, t)
    # removed on SOURCE while cached: open fails with ENOENT, not with stale data
    gone = nraw("rep/gone", b"bye")
    os.stat(os.path.join(N, "rep/gone"))
    os.unlink(gone)
    e = h.errno_of(h.read_file, os.path.join(N, "rep/gone"))
    h.eq("removed on SOURCE while its name is cached: open() fails with ENOENT", h.ename(e),
         "ENOENT")
    # renamed away on SOURCE (nlink stays 1): NFSv4 OPEN is by name, so open() fails
    moved = nraw("rep/moved", b"moved")
    os.stat(os.path.join(N, "rep/moved"))
    os.rename(moved, os.path.join(NRAW, "rep/elsewhere"))
    e = h.errno_of(h.read_file, os.path.join(N, "rep/moved"))
    h.eq("renamed away on SOURCE while its name is cached: open() by the old name fails with "
         "ENOENT", h.ename(e), "ENOENT")
    # replaced by rename while the old file keeps another hard link (nlink stays 1)
    linked = nraw("rep/linked", b"old linked")
    os.link(linked, os.path.join(NRAW, "rep/linked.bak"))
    h.eq("(hard-linked file read through the mount)", h.read_file(os.path.join(N, "rep/linked")),
         b"old linked")
    nraw("rep/.tmp", b"new linked")
    os.rename(os.path.join(NRAW, "rep/.tmp"), linked)
    h.eq("replaced by rename while the old file keeps a hard link: the next open() reads the "
         "new file", h.read_file(os.path.join(N, "rep/linked")), b"new linked")
    # renamed through the mount: opens by the new name need no re-lookup
    h.read_file(os.path.join(N, "rep/linked"))
    with pinned("rep/linked"):
        os.rename(os.path.join(N, "rep/linked"), os.path.join(N, "rep/linked2"))
        h.emu_reset(N)
        data = h.read_file(os.path.join(N, "rep/linked2"))
        t = ntot()
    h.eq("renamed through the mount: open() by the new name works", data, b"new linked")
    h.eq("... without ESTALE or LOOKUP", (t["estale"], t["lookups"]), (0, 0), t)
    # unlinked through the mount while open (the client's silly-rename): keeps working
    p = os.path.join(N, "rep/mine")
    nraw("rep/mine", b"mine")
    fd = os.open(p, os.O_RDONLY)
    try:
        os.unlink(p)
        with open("/proc/self/fd/%d" % fd, "rb") as f:
            data = f.read()
        h.eq("unlinked through the mount while open: fstat and re-open of the open file work",
             (os.fstat(fd).st_nlink, data), (0, b"mine"))
    finally:
        os.close(fd)


def test_timeout0_sends_everything():
    raw0 = os.path.join(BASE, "raw0")
    h.mkdirs(raw0)
    h.write_file(os.path.join(raw0, "f"), b"zero")
    m0 = h.mount_emu(raw0, os.path.join(BASE, "emu0"), "latency_ms=0.1", "meta_latency_ms=0.05",
                     "timeout=0")
    try:
        cfg = os.getxattr(m0.mnt, "user.efsemu.config").decode()
        h.check("timeout=0 shows in the config", " timeout=0 " in cfg, cfg)
        path = os.path.join(m0.mnt, "f")
        os.stat(path)
        h.emu_reset(m0.mnt)
        for _ in range(3):
            os.stat(path)
        t = h.emu_stats(m0.mnt)
        h.check("timeout=0: each of 3 stats of a file sends a LOOKUP and a GETATTR",
                t["lookups"] >= 3 and t["getattrs"] >= 3, t)
        h.emu_reset(m0.mnt)
        for _ in range(3):
            h.errno_of(os.stat, os.path.join(m0.mnt, "nope"))
        t = h.emu_stats(m0.mnt)
        h.eq("timeout=0: 3 stats of a missing name send 3 LOOKUPs, no negative entry",
             (t["lookups"], t["neg_entries"]), (3, 0), t)
        fd = os.open(path, os.O_RDONLY)
        try:
            h.emu_reset(m0.mnt)
            os.fstat(fd)
            os.fstat(fd)
        finally:
            os.close(fd)
        t = h.emu_stats(m0.mnt)
        h.eq("timeout=0: 2 fstats of an open file send 2 GETATTRs", t["getattrs"], 2, t)
    finally:
        h.unmount(m0)


h.run_tests([test_read_through_emu, test_metadata_through_emu, test_write_through_emu,
             test_concurrent_readers_over_emu, test_faults,
             test_nfs_defaults_and_option_errors, test_nfs_attr_cache_window,
             test_nfs_force_sync_statx, test_nfs_negative_entries,
             test_nfs_open_refreshes_attributes, test_nfs_replaced_by_rename_and_removed,
             test_timeout0_sends_everything])
