#!/usr/bin/env python3
"""Two findings of issue 15 that only a real mount over real file systems shows (DESIGN
rules 16 and 17).

M2, another file's bytes: a SOURCE spanning two file systems.  SOURCE is a tmpfs holding
`a`, with a second tmpfs mounted at SOURCE/sub holding `b`; the first file of each tmpfs
gets the same inode number.  The cache's key once was (SOURCE, inode number) alone: with
`a` open and read, every byte of `b` read through the mount came back as `a`'s.  Now the
key of a file below SOURCE's own file system holds its device too: both read right, both
are cached (two records), and both read right again from the cache.

H6, memory that grows with file size: opening and reading a byte of a 40 TiB sparse file
once added 64 bytes of chunk state per chunk of its size to the daemon for good (8 TiB:
+522 MiB of RSS).  Now chunk state follows what is cached: the daemon's RSS grows by less
than 1 MiB, and stays there after the file is read at three far-apart places and opened
again."""

import os
import time

import cachelib as cl
from cachelib import MiB, h


def mount_tmpfs(path, size="64m"):
    os.makedirs(path, exist_ok=True)
    r = cl.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", path])
    return r.returncode == 0, r.stderr.strip()


def umount(path):
    cl.run(["umount", "-l", path])


def test_two_file_systems():
    base = h.tmpdir("efscache-cache-")
    src, mnt = os.path.join(base, "src"), os.path.join(base, "mnt")
    ok, why = mount_tmpfs(src)
    if not ok:
        h.skip("two file systems below SOURCE", "cannot mount a tmpfs: %s" % why)
        return
    h.on_cleanup(25, lambda: umount(src))  # after the FUSE mounts (20)
    want_a = cl.make_file(os.path.join(src, "a"), 3 * MiB, seed=1)
    ok, why = mount_tmpfs(os.path.join(src, "sub"))
    if not h.check("a second tmpfs at SOURCE/sub", ok, why):
        return
    h.on_cleanup(24, lambda: umount(os.path.join(src, "sub")))
    want_b = cl.make_file(os.path.join(src, "sub", "b"), 3 * MiB, seed=2)
    ia, ib = os.stat(os.path.join(src, "a")), os.stat(os.path.join(src, "sub", "b"))
    h.check("one inode number on two devices",
            ia.st_ino == ib.st_ino and ia.st_dev != ib.st_dev,
            "a %d/%d, b %d/%d" % (ia.st_dev, ia.st_ino, ib.st_dev, ib.st_ino))

    m = h.mount_efscache(src, mnt)
    cache_dir = m.args[-1].split("cache_dir=", 1)[1].split(",", 1)[0]
    with open(os.path.join(mnt, "a"), "rb") as fa:
        fa.read(4096)
        cl.check_content("b read while a is open", os.path.join(mnt, "sub", "b"),
                         os.path.join(src, "sub", "b"), want_b)
        fa.seek(0)
        h.eq("a reads right", cl.sha(fa.read()), want_a)
    records = list(cl.records(cache_dir))
    h.eq("two records, one per file", len(records), 2)
    cl.drop_caches()
    s0 = h_stats(mnt)
    cl.check_content("b again", os.path.join(mnt, "sub", "b"), os.path.join(src, "sub", "b"),
                     want_b)
    cl.check_content("a again", os.path.join(mnt, "a"), os.path.join(src, "a"), want_a)
    s1 = h_stats(mnt)
    h.eq("both served from the cache", cl.delta(s1, s0, "bytes_from_source"), 0)
    h.check("clean unmount", not m.umount())


def h_stats(mnt):
    return cl.parse_lines(os.getxattr(mnt, "user.efscache.stats"))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def sparse_reads(mnt, name, size):
    """The reads of the test, twice (the second after its record was loaded from disk
    again); returns what they read."""
    got = []
    with open(os.path.join(mnt, name), "rb") as f:
        got += [os.pread(f.fileno(), 1, 0), os.pread(f.fileno(), 4096, size // 2),
                os.pread(f.fileno(), 4096, size - 4096)]
    cl.drop_caches()
    with open(os.path.join(mnt, name), "rb") as f:
        got.append(os.pread(f.fileno(), 4096, size // 3))
    return got


def test_huge_sparse_file():
    base = h.tmpdir("efscache-cache-")
    src, mnt = os.path.join(base, "src"), os.path.join(base, "mnt")
    ok, why = mount_tmpfs(src, size="16m")
    if not ok:
        h.skip("a 40 TiB sparse file", "cannot mount a tmpfs: %s" % why)
        return
    h.on_cleanup(25, lambda: umount(src))  # after the FUSE mounts (20)
    sizes = {"small": 64 * MiB, "huge": 40 << 40}
    for name, size in sizes.items():
        with open(os.path.join(src, name), "wb") as f:
            f.truncate(size)
    m = h.mount_efscache(src, mnt)
    pid = m.daemon_pids()[0]
    # The same reads of a 64 MiB and of a 40 TiB sparse file: what the daemon keeps for
    # the second beyond what it keeps for the first (buffers of the reads, fetches ahead
    # of a reader at offset 0, a record each) is what grows with the file's size.  Freed
    # buffers go back to the system at the daemon's next idle second (malloc_trim).
    grew = {}
    for name, size in sizes.items():
        time.sleep(2.5)
        before = rss_kib(pid)
        got = sparse_reads(mnt, name, size)
        h.eq("%s sparse file reads zeros" % name, got,
             [b"\0", b"\0" * 4096, b"\0" * 4096, b"\0" * 4096])
        time.sleep(2.5)
        grew[name] = rss_kib(pid) - before
    h.note("daemon RSS grew by %d KiB around a 64 MiB sparse file, %d KiB around a 40 TiB one"
           % (grew["small"], grew["huge"]))
    h.check("a 40 TiB sparse file costs < 1 MiB of RSS more than a 64 MiB one",
            grew["huge"] - grew["small"] < 1024, str(grew))
    h.check("clean unmount", not m.umount())


if __name__ == "__main__":
    h.require_fuse()
    cl.main([test_two_file_systems, test_huge_sparse_file])
