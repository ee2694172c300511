#!/usr/bin/env python3
"""efscache over the EFS emulator (DESIGN 5): SOURCE is an efs-emu mount of a temp dir.
Reads of a 32 MiB file through efscache return the right bytes and show up in the emu's
counters; metadata equals the emu's view; writes go through to the emu; concurrent
readers; emu faults (EIO, ENOENT, EIO after N bytes) come back as the source's errno and
a cleared fault heals."""

import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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
M = h.mount_efscache(EMU.mnt, os.path.join(BASE, "mnt"), "lookupcache=positive")
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
    h.emu_reset(EMU.mnt)
    os.stat(os.path.join(MNT, "tree/sub/deep"))
    h.check("a stat through efscache reaches efs-emu (lookups/getattrs counted)",
            stats().get("lookups", 0) + stats().get("getattrs", 0) > 0, stats())


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


h.run_tests([test_read_through_emu, test_metadata_through_emu, test_write_through_emu,
             test_concurrent_readers_over_emu, test_faults])
