#!/usr/bin/env python3
"""Data operations through efscache compared with SOURCE: open/create flags, read/write
(1 MiB, unaligned, 64 MiB by hash), writes reaching SOURCE before they return, holes,
fsync/fdatasync, fallocate (incl. PUNCH_HOLE), SEEK_DATA/SEEK_HOLE, copy_file_range, mmap,
and 8 concurrent readers of one 64 MiB file."""

import hashlib
import mmap
import os
import random
import time

import harness as h  # noqa: E402

h.require_fuse()
os.umask(0o022)
BASE, SRC, M = h.setup()
MNT = M.mnt
MiB = 1 << 20


def sub(name):
    s = os.path.join(SRC, name)
    os.mkdir(s)
    return s, os.path.join(MNT, name)


def test_open_flags():
    s, m = sub("open")
    h.write_file(s + "/exists", b"content")
    h.check_errno("open O_CREAT|O_EXCL on an existing file: EEXIST", os.open,
                  (m + "/exists", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644),
                  (s + "/exists", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644), expected={17})
    fd = os.open(m + "/new", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
    os.close(fd)
    st = os.lstat(s + "/new")
    h.check("O_CREAT|O_EXCL of a new name creates it in SOURCE with mode 0640",
            st.st_size == 0 and (st.st_mode & 0o7777) == 0o640, oct(st.st_mode))
    fd = os.open(m + "/new2", os.O_CREAT | os.O_RDWR, 0o666)
    os.close(fd)
    fd = os.open(s + "/new2-ref", os.O_CREAT | os.O_RDWR, 0o666)
    os.close(fd)
    h.eq("create 0666 under umask 022: mode equals the same call on SOURCE",
         oct(os.lstat(s + "/new2").st_mode), oct(os.lstat(s + "/new2-ref").st_mode))
    h.compare_stat("created file: stat through the mount equals SOURCE", m + "/new", s + "/new")
    h.write_file(s + "/trunc", os.urandom(MiB))
    fd = os.open(m + "/trunc", os.O_WRONLY | os.O_TRUNC)
    try:
        h.eq("O_TRUNC: SOURCE is empty right after open", os.lstat(s + "/trunc").st_size, 0)
        h.eq("O_TRUNC: fstat through the fd", os.fstat(fd).st_size, 0)
        os.write(fd, b"short")
    finally:
        os.close(fd)
    h.eq("O_TRUNC then write: content in SOURCE", h.read_file(s + "/trunc"), b"short")
    h.eq("O_TRUNC then write: content through the mount", h.read_file(m + "/trunc"), b"short")
    # two O_APPEND writers interleaving
    h.write_file(s + "/app", b"start\n")
    fa = os.open(m + "/app", os.O_WRONLY | os.O_APPEND)
    fb = os.open(m + "/app", os.O_WRONLY | os.O_APPEND)
    try:
        expected = b"start\n"
        for i in range(20):
            blk = (b"A%02d" % i) * 333 + b"\n"
            os.write(fa, blk)
            expected += blk
            blk = (b"b%02d" % i) * 77 + b"\n"
            os.write(fb, blk)
            expected += blk
    finally:
        os.close(fa)
        os.close(fb)
    h.check("two O_APPEND fds: SOURCE holds every write, in order, nothing overwritten",
            h.read_file(s + "/app") == expected,
            "size %d, expected %d" % (len(h.read_file(s + "/app")), len(expected)))
    h.check("two O_APPEND fds: same bytes through the mount", h.read_file(m + "/app") == expected)
    with open(s + "/app", "ab") as f:
        f.write(b"from source\n")
    fd = os.open(m + "/app", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"after\n")
    finally:
        os.close(fd)
    h.check("O_APPEND after SOURCE grew elsewhere appends at the real end",
            h.read_file(s + "/app") == expected + b"from source\nafter\n",
            repr(h.read_file(s + "/app")[-40:]))
    h.check_errno("open O_DIRECTORY on a file: ENOTDIR", os.open,
                  (m + "/exists", os.O_RDONLY | os.O_DIRECTORY),
                  (s + "/exists", os.O_RDONLY | os.O_DIRECTORY), expected={20})
    fd = os.open(m + "/rw", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.write(fd, b"0123456789")
        h.eq("read back through the same O_RDWR fd", os.pread(fd, 10, 0), b"0123456789")
    finally:
        os.close(fd)


def test_read_write():
    s, m = sub("rw")
    data = os.urandom(MiB)
    fd = os.open(m + "/w", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        n = os.write(fd, data)
        h.eq("1 MiB write returns 1 MiB", n, MiB)
        # writes reach SOURCE before they are acknowledged (DESIGN 3.4), no close needed
        h.check("1 MiB write is in SOURCE before close", h.read_file(s + "/w") == data)
    finally:
        os.close(fd)
    h.check("1 MiB read through the mount equals SOURCE", h.read_file(m + "/w") == data)
    h.write_file(s + "/r", data)
    with open(m + "/r", "rb", buffering=0) as f:
        got = f.read(MiB)
    h.check("1 MiB read of a file made in SOURCE", got == data)
    # unaligned pwrites, applied to a file through the mount and to a reference in SOURCE
    base = os.urandom(3 * MiB + 12345)
    h.write_file(s + "/u", base)
    h.write_file(s + "/u-ref", base)
    ops = [(0, 1), (1, 3), (4095, 2), (4097, 5000), (65535, 131073), (131071, 7),
           (MiB - 1, 2), (2 * MiB + 333, MiB), (3 * MiB + 12000, 1000), (5 * MiB + 7, 3)]
    fdm = os.open(m + "/u", os.O_RDWR)
    fds = os.open(s + "/u-ref", os.O_RDWR)
    try:
        for off, ln in ops:
            blk = os.urandom(ln)
            os.pwrite(fdm, blk, off)
            os.pwrite(fds, blk, off)
        bad = []
        for off, ln in ops + [(0, 10 * MiB), (12, 4096), (4000, 200), (MiB - 10, 20)]:
            if os.pread(fdm, ln, off) != os.pread(fds, ln, off):
                bad.append((off, ln))
    finally:
        os.close(fdm)
        os.close(fds)
    h.check("unaligned preads after unaligned pwrites equal the same calls on SOURCE", not bad,
            bad)
    h.check("after unaligned pwrites: SOURCE file equals the reference",
            h.read_file(s + "/u") == h.read_file(s + "/u-ref"))
    h.eq("after unaligned pwrites: size through the mount", os.lstat(m + "/u").st_size,
         os.lstat(s + "/u-ref").st_size)
    h.compare_stat("after writes: stat through the mount equals SOURCE", m + "/u", s + "/u")


def test_big_file():
    s, m = sub("big")
    hsh = hashlib.sha256()
    with open(m + "/64m", "wb", buffering=0) as f:
        for i in range(64):
            blk = hashlib.shake_256(b"blk%d" % i).digest(MiB)
            hsh.update(blk)
            f.write(blk)
    want = hsh.hexdigest()
    h.eq("64 MiB written through the mount: size in SOURCE", os.lstat(s + "/64m").st_size,
         64 * MiB)
    h.eq("64 MiB written through the mount: SOURCE sha256", h.sha256_file(s + "/64m"), want)
    h.eq("64 MiB read back through the mount: sha256", h.sha256_file(m + "/64m"), want)
    h.eq("64 MiB read in 128 KiB pieces through the mount: sha256",
         h.sha256_file(m + "/64m", 128 << 10), want)


def test_holes():
    s, m = sub("holes")
    h.write_file(s + "/f", b"x" * 100)
    fd = os.open(m + "/f", os.O_WRONLY)
    try:
        os.pwrite(fd, b"END", 10 * MiB)
    finally:
        os.close(fd)
    h.eq("pwrite beyond EOF: size in SOURCE", os.lstat(s + "/f").st_size, 10 * MiB + 3)
    h.eq("pwrite beyond EOF: size through the mount", os.lstat(m + "/f").st_size, 10 * MiB + 3)
    got = h.read_file(m + "/f")
    h.check("pwrite beyond EOF: old bytes, zeros, new bytes",
            got == b"x" * 100 + b"\0" * (10 * MiB - 100) + b"END")
    h.check("pwrite beyond EOF leaves a hole in SOURCE (not written zeros)",
            os.lstat(s + "/f").st_blocks * 512 < 2 * MiB,
            "st_blocks %d" % os.lstat(s + "/f").st_blocks)


def test_sync():
    s, m = sub("sync")
    fd = os.open(m + "/f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"synced data")
        e1 = h.errno_of(os.fsync, fd)
        e2 = h.errno_of(os.fdatasync, fd)
        h.check("fsync succeeds", e1 == 0, h.ename(e1))
        h.check("fdatasync succeeds", e2 == 0, h.ename(e2))
        h.eq("after fsync: data in SOURCE", h.read_file(s + "/f"), b"synced data")
    finally:
        os.close(fd)
    dfd = os.open(m, os.O_RDONLY | os.O_DIRECTORY)
    try:
        e = h.errno_of(os.fsync, dfd)
        h.check("fsync of a directory succeeds", e == 0, h.ename(e))
    finally:
        os.close(dfd)
    # flush on close: data written then closed is in SOURCE
    with open(m + "/g", "wb") as f:
        f.write(b"buffered then closed")
    h.eq("after close: data in SOURCE", h.read_file(s + "/g"), b"buffered then closed")


def seek_map(path, size):
    """SEEK_DATA/SEEK_HOLE results (or errno) at interesting offsets."""
    res = []
    fd = os.open(path, os.O_RDONLY)
    try:
        for off in sorted({0, 1, 4095, 65536, 100000, MiB, MiB + 65536, 2 * MiB, size - 1,
                           size, size + 1}):
            for whence in (os.SEEK_DATA, os.SEEK_HOLE):
                try:
                    res.append((off, whence, os.lseek(fd, off, whence)))
                except OSError as e:
                    res.append((off, whence, "errno %d" % e.errno))
    finally:
        os.close(fd)
    return res


def test_seek_data_hole():
    s, m = sub("seek")
    size = 4 * MiB
    with open(s + "/sparse", "wb") as f:
        f.write(os.urandom(65536))
        f.seek(MiB)
        f.write(os.urandom(65536))
        f.truncate(size)
    a, b = seek_map(m + "/sparse", size), seek_map(s + "/sparse", size)
    h.check("SEEK_DATA/SEEK_HOLE on a sparse file equal SOURCE", a == b,
            "first difference (offset, whence, mount) vs source: %s" % (
                next(((x, y) for x, y in zip(a, b) if x != y), None),))


def test_fallocate():
    s, m = sub("falloc")
    fd = os.open(m + "/f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        e = h.errno_of(os.posix_fallocate, fd, 0, 4 * MiB)
        h.check("posix_fallocate 4 MiB succeeds", e == 0, h.ename(e))
        h.eq("posix_fallocate: size in SOURCE", os.lstat(s + "/f").st_size, 4 * MiB)
        h.check("posix_fallocate: blocks allocated in SOURCE",
                os.lstat(s + "/f").st_blocks * 512 >= 4 * MiB, os.lstat(s + "/f").st_blocks)
        h.eq("posix_fallocate: fstat through the mount", os.fstat(fd).st_size, 4 * MiB)
        e = h.errno_of(h.fallocate, fd, h.FALLOC_FL_KEEP_SIZE, 4 * MiB, 4 * MiB)
        h.check("fallocate KEEP_SIZE beyond EOF succeeds", e == 0, h.ename(e))
        h.eq("fallocate KEEP_SIZE: size in SOURCE unchanged", os.lstat(s + "/f").st_size,
             4 * MiB)
        h.check("fallocate KEEP_SIZE: blocks allocated in SOURCE",
                os.lstat(s + "/f").st_blocks * 512 >= 8 * MiB, os.lstat(s + "/f").st_blocks)
    finally:
        os.close(fd)
    data = bytearray(os.urandom(4 * MiB))
    h.write_file(s + "/p", bytes(data))
    fd = os.open(m + "/p", os.O_RDWR)
    try:
        os.pread(fd, 4 * MiB, 0)  # get it into the page cache first
        e = h.errno_of(h.fallocate, fd, h.FALLOC_FL_PUNCH_HOLE | h.FALLOC_FL_KEEP_SIZE,
                       MiB, MiB + 4096)
        h.check("fallocate PUNCH_HOLE|KEEP_SIZE succeeds", e == 0, h.ename(e))
        data[MiB:2 * MiB + 4096] = b"\0" * (MiB + 4096)
        h.check("after PUNCH_HOLE: the range reads as zeros through the same fd",
                os.pread(fd, 4 * MiB, 0) == bytes(data))
    finally:
        os.close(fd)
    h.check("after PUNCH_HOLE: SOURCE has zeros in the range",
            h.read_file(s + "/p") == bytes(data))
    h.check("after PUNCH_HOLE: a new open reads zeros in the range",
            h.read_file(m + "/p") == bytes(data))
    h.eq("after PUNCH_HOLE: size unchanged", os.lstat(m + "/p").st_size, 4 * MiB)
    h.check("after PUNCH_HOLE: SOURCE has a hole",
            os.lstat(s + "/p").st_blocks * 512 <= 3 * MiB, os.lstat(s + "/p").st_blocks)
    a, b = seek_map(m + "/p", 4 * MiB), seek_map(s + "/p", 4 * MiB)
    h.check("after PUNCH_HOLE: SEEK_DATA/SEEK_HOLE equal SOURCE", a == b,
            next(((x, y) for x, y in zip(a, b) if x != y), None))


def test_copy_file_range():
    s, m = sub("cfr")
    src_data = os.urandom(3 * MiB + 1000)
    h.write_file(s + "/from", src_data)
    h.write_file(s + "/to", b"T" * 10000)
    fi = os.open(m + "/from", os.O_RDONLY)
    fo = os.open(m + "/to", os.O_WRONLY)
    try:
        left, si, so = 3 * MiB, 1000, 5000
        err = None
        while left:
            try:
                n = os.copy_file_range(fi, fo, left, si, so)
            except OSError as e:
                err = e
                break
            if n == 0:
                break
            left -= n
            si += n
            so += n
    finally:
        os.close(fi)
        os.close(fo)
    h.check("copy_file_range between two files on the mount succeeds", err is None and not left,
            "error %r, %d bytes left" % (err, left))
    want = b"T" * 5000 + src_data[1000:1000 + 3 * MiB]
    h.check("copy_file_range: SOURCE target has the copied range", h.read_file(s + "/to") == want)
    h.check("copy_file_range: target through the mount", h.read_file(m + "/to") == want)
    h.eq("copy_file_range: source file unchanged", h.read_file(m + "/from"), src_data)


def test_mmap():
    s, m = sub("mmap")
    data = os.urandom(3 * MiB + 17)
    h.write_file(s + "/f", data)
    with open(m + "/f", "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        try:
            ok = mm[:] == data and mm[MiB + 5:MiB + 4101] == data[MiB + 5:MiB + 4101]
        finally:
            mm.close()
    h.check("mmap read through the mount equals SOURCE", ok)
    with open(m + "/f", "r+b") as f:
        mm = mmap.mmap(f.fileno(), 0)
        try:
            mm[4096:4096 + 11] = b"mmap-writes"
            mm.flush()
        finally:
            mm.close()
    h.eq("shared mmap write + msync reaches SOURCE", h.read_file(s + "/f")[4096:4107],
         b"mmap-writes")


def aligned_buf(n):
    return mmap.mmap(-1, n)  # page-aligned, as O_DIRECT wants


def test_o_direct():
    s, m = sub("direct")
    data = os.urandom(4 * MiB)
    h.write_file(s + "/f", data)
    try:
        fd = os.open(m + "/f", os.O_RDWR | os.O_DIRECT)
    except OSError as e:
        h.check("open O_DIRECT through the mount", False, e)
        return
    try:
        buf = aligned_buf(MiB)
        bad = []
        for off, n in ((0, 4096), (4096, 4096), (MiB, MiB), (3 * MiB + 8192, 4096)):
            got = os.preadv(fd, [memoryview(buf)[:n]], off)
            if got != n or buf[:n] != data[off:off + n]:
                bad.append((off, n, got))
        h.check("O_DIRECT aligned reads (4 KiB and 1 MiB) equal SOURCE", not bad, bad)
        new = os.urandom(MiB)
        buf[:] = new
        n = os.pwritev(fd, [buf], 2 * MiB)
        h.eq("O_DIRECT 1 MiB write returns 1 MiB", n, MiB)
        with open(s + "/f", "rb") as f:
            f.seek(2 * MiB)
            h.check("O_DIRECT write is in SOURCE", f.read(MiB) == new)
        buf.close()
    finally:
        os.close(fd)
    h.check("buffered read after O_DIRECT write sees the new data",
            h.read_file(m + "/f")[2 * MiB:3 * MiB] == new)


def test_two_mounts_close_to_open():
    """Two mounts of one SOURCE (two hosts): what one writes and closes, the other's next
    open reads, even when it had the old data open and in its page cache."""
    s, a = sub("c2o")
    try:
        mb = h.mount_efscache(SRC, os.path.join(BASE, "mnt-b"))
    except h.MountError as e:
        h.check("second mount of SOURCE", False, e)
        return
    b = os.path.join(mb.mnt, "c2o")
    try:
        old = os.urandom(MiB)
        h.write_file(a + "/f", old)
        fb = os.open(b + "/f", os.O_RDONLY)
        try:
            h.check("mount B reads what mount A wrote", os.pread(fb, MiB, 0) == old)
            new = bytearray(old)
            new[1000:1010] = b"0123456789"
            # same size, same second; 50 ms apart so that even coarse (jiffy) timestamps
            # differ: the identity (ino, size, mtime, ctime) is what may detect the change
            time.sleep(0.05)
            with open(a + "/f", "r+b") as f:
                f.seek(1000)
                f.write(b"0123456789")
            h.check("after A rewrote 10 bytes in place and closed: B's next open reads them",
                    h.read_file(b + "/f") == bytes(new))
        finally:
            os.close(fb)
        with open(a + "/f", "ab") as f:
            f.write(b"tail")
        h.check("after A appended: B's next open reads the longer file",
                h.read_file(b + "/f") == bytes(new) + b"tail")
        h.write_file(a + "/f.new", b"replacement")
        os.rename(a + "/f.new", a + "/f")
        h.eq("after A replaced the file by rename: B's next open reads the new file",
             h.read_file(b + "/f"), b"replacement")
    finally:
        h.unmount(mb)


def test_many_open_files():
    """3000 files open at once through the mount (more than a default RLIMIT_NOFILE of
    1024 in the daemon would allow if it kept one source fd per open file and per inode)."""
    import resource
    s, m = sub("manyopen")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 3000
    if hard != resource.RLIM_INFINITY and hard < want + 100:
        h.skip("3000 open files", "RLIMIT_NOFILE hard limit %d" % hard)
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (want + 100, hard))
    for i in range(want):
        h.write_file(os.path.join(s, "f%04d" % i), b"%d" % i)
    fds = []
    err = None
    try:
        for i in range(want):
            fds.append(os.open(os.path.join(m, "f%04d" % i), os.O_RDONLY))
        bad = [i for i, fd in enumerate(fds) if os.pread(fd, 20, 0) != b"%d" % i]
    except OSError as e:
        err = e
        bad = None
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    h.check("3000 files open at once through the mount", err is None, "after %d opens: %s"
            % (len(fds), err))
    h.check("3000 open files each read their own content", bad == [], (bad or [])[:5])
    h.eq("after closing them the mount still works", h.read_file(os.path.join(m, "f0007")),
         b"7")


def _reader(state, mpath, spath, seed, n):
    rnd = random.Random(seed)
    size = os.stat(spath).st_size
    fm = os.open(mpath, os.O_RDONLY)
    fs = os.open(spath, os.O_RDONLY)
    bad = []
    try:
        for _ in range(n):
            off = rnd.randrange(0, size - MiB) if rnd.random() < 0.8 else \
                rnd.randrange(0, size // MiB) * MiB
            if os.pread(fm, MiB, off) != os.pread(fs, MiB, off):
                bad.append(off)
    finally:
        os.close(fm)
        os.close(fs)
    return bad


def test_concurrent_readers():
    s, m = sub("conc")
    h.make_random_file(s + "/64m", 64 * MiB, seed=7)
    workers = [h.Worker() for _ in range(8)]
    try:
        for i, w in enumerate(workers):
            w.call_async(_reader, m + "/64m", s + "/64m", i, 48)
        results = [w.result_raw(timeout=120) for w in workers]
    finally:
        for w in workers:
            w.close()
    bad = [(i, r) for i, r in enumerate(results) if r != ("ok", [])]
    h.check("8 processes x 48 random 1 MiB reads of one 64 MiB file equal SOURCE", not bad,
            bad[:3])


h.run_tests([test_open_flags, test_read_write, test_big_file, test_holes, test_sync,
             test_seek_data_hole, test_fallocate, test_copy_file_range, test_mmap,
             test_o_direct, test_two_mounts_close_to_open, test_many_open_files,
             test_concurrent_readers])
