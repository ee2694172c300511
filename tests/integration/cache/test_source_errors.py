#!/usr/bin/env python3
"""Source errors are returned as the source's errno, and do not destroy cached data:
EIO injected by efs-emu on one file reaches the application as EIO, while other, cached
files are still served from the cache; EIO in the middle of a read (fail_after_bytes) is
returned and leaves nothing wrong in the cache; ENOENT from the source is ENOENT through
the mount.  What happens when a fully cached file's source fails at open (ttl=0 and
ttl=never) is reported; that its cached data survives the error is checked."""

import errno
import os

import cachelib as cl
from cachelib import MiB, h


def open_read(path):
    with open(path, "rb") as f:
        return f.read()


def errno_and_data(fn, *args):
    try:
        return 0, fn(*args)
    except OSError as e:
        return e.errno, None


def test_eio():
    st = cl.Stack()
    want = {}
    for i, n in enumerate(("good", "bad", "cached")):
        want[n] = cl.make_file(st.s(n), 2 * MiB + i, seed=i + 1)
    cl.check_content("good: cached", st.p("good"), st.s("good"), want["good"])
    cl.check_content("cached: cached", st.p("cached"), st.s("cached"), want["cached"])

    # EIO on an uncached file
    st.emu_set("fail_eio", "bad")
    cl.drop_caches()
    s0 = st.stats()
    err, _ = errno_and_data(open_read, st.p("bad"))
    h.eq("fail_eio on an uncached file: open+read through the mount fails with EIO",
         errno.errorcode.get(err, err), "EIO")
    h.eq("the source itself gives EIO", errno.errorcode.get(
        errno_and_data(open_read, st.e("bad"))[0]), "EIO")
    # other cached files are still served, from the cache
    e0 = st.emu_stats()
    cl.check_content("while bad fails: good still served", st.p("good"), st.s("good"),
                     want["good"])
    cl.check_content("while bad fails: cached still served", st.p("cached"), st.s("cached"),
                     want["cached"])
    h.eq("while bad fails: good and cached came from the cache (0 bytes from the emu)",
         cl.delta(st.emu_stats(), e0, "read_bytes"), 0)
    st.emu_set("fail_eio", "")
    cl.check_content("fault cleared: bad reads correctly", st.p("bad"), st.s("bad"),
                     want["bad"])
    h.note("stats after EIO: source_errors %d" % cl.delta(st.stats(), s0, "source_errors"))

    # EIO on an fd opened before the fault, uncached: the read returns EIO
    st.evict("bad")
    cl.drop_caches()
    fd = os.open(st.p("bad"), os.O_RDONLY)
    st.emu_set("fail_eio", "bad")
    err, _ = errno_and_data(os.pread, fd, MiB, 0)
    h.eq("fault after open: read of an uncached range fails with EIO",
         errno.errorcode.get(err, err), "EIO")
    os.close(fd)
    st.emu_set("fail_eio", "")

    # a fully cached file whose source fails: report what open does, then check the
    # cached data survived the error
    st.emu_set("fail_eio", "cached")
    cl.drop_caches()
    err, data = errno_and_data(open_read, st.p("cached"))
    if err:
        h.note("ttl=0, fully cached file, source open fails with EIO: the mount returns %s"
               % errno.errorcode.get(err, err))
        h.eq("ttl=0, cached file, source EIO: the error is the source's",
             errno.errorcode.get(err, err), "EIO")
    else:
        h.note("ttl=0, fully cached file, source open fails with EIO: the mount served the "
               "cached data")
        h.eq("ttl=0, cached file, source EIO: served bytes are right", cl.sha(data),
             want["cached"])
    # an fd opened before the fault: cached ranges read fine or fail, never wrong bytes
    st.emu_set("fail_eio", "")
    fd = os.open(st.p("cached"), os.O_RDONLY)
    st.emu_set("fail_eio", "cached")
    cl.drop_caches()
    err, data = errno_and_data(os.pread, fd, 3 * MiB, 0)
    h.note("fd opened before the fault, cached data, source failing: read %s" % (
        "returned EIO" if err else "served the cache"))
    h.check("fd opened before the fault: never wrong bytes",
            err == errno.EIO or (err == 0 and cl.sha(data) == want["cached"]),
            "errno %s" % err)
    os.close(fd)
    st.emu_set("fail_eio", "")
    cl.drop_caches()
    e0 = st.emu_file_stats("cached")
    cl.check_content("fault cleared: cached file right", st.p("cached"), st.s("cached"),
                     want["cached"])
    h.eq("EIO did not delete cached data: 0 bytes refetched",
         st.emu_file_stats("cached")["read_bytes"] - e0.get("read_bytes", 0), 0)
    st.check_umount("clean unmount")


def test_eio_mid_read():
    st = cl.Stack()
    want = cl.make_file(st.s("f"), 8 * MiB, seed=5)
    want_g = cl.make_file(st.s("g"), 2 * MiB, seed=6)
    cl.check_content("g cached", st.p("g"), st.s("g"), want_g)
    for rnd, after in enumerate((1 * MiB, 3 * MiB + 4096, 5 * MiB)):
        st.evict("f")
        cl.drop_caches()
        st.emu_reset()
        st.emu_set("fail_after_bytes", str(after))
        err, data = errno_and_data(open_read, st.p("f"))
        h.eq("round %d: EIO after %d source bytes: read fails with EIO" % (rnd, after),
             errno.errorcode.get(err, err), "EIO")
        cl.check_content("round %d: g (cached) still served" % rnd, st.p("g"), st.s("g"),
                         want_g)
        st.emu_set("fail_after_bytes", "0")
        cl.drop_caches()
        cl.check_content("round %d: fault cleared: f right" % rnd, st.p("f"), st.s("f"), want)
        st.stats()  # settled: f's chunks are written behind the replies
        cl.drop_caches()
        e0 = st.emu_file_stats("f")
        cl.check_content("round %d: f from the cache right" % rnd, st.p("f"), st.s("f"), want)
        h.eq("round %d: f fully cached now" % rnd,
             st.emu_file_stats("f")["read_bytes"] - e0.get("read_bytes", 0), 0)
    h.check("source_errors counted", st.stats()["source_errors"] >= 1, str(st.stats()))
    st.check_umount("clean unmount")


def test_enoent():
    # fail_enoent hits lookups, opens and reads: a name the emulated NFS client still has
    # cached would never be asked, so this test uses an uncached source.
    st = cl.Stack(cache_opts=cl.SHORT_DIR_WINDOW, emu_opts=cl.EMU_UNCACHED)
    want = {n: cl.make_file(st.s(n), 1 * MiB, seed=i + 7) for i, n in enumerate(("x", "y"))}
    cl.check_content("x cached", st.p("x"), st.s("x"), want["x"])
    st.emu_set("fail_enoent", "x")
    cl.drop_caches()
    err, _ = errno_and_data(open_read, st.p("x"))
    h.eq("fail_enoent on a cached file: open through the mount fails with ENOENT",
         errno.errorcode.get(err, err), "ENOENT")
    err, _ = errno_and_data(os.stat, st.p("x"))
    h.eq("fail_enoent: stat through the mount fails with ENOENT",
         errno.errorcode.get(err, err), "ENOENT")
    err, _ = errno_and_data(open_read, st.p("y"))
    h.eq("fail_enoent on x: uncached y still reads", err, 0)
    st.emu_set("fail_enoent", "")
    cl.wait_dir_window()  # the failed lookups left negative entries
    cl.check_content("fault cleared: x right again", st.p("x"), st.s("x"), want["x"])
    # ENOENT on an fd opened before: the read of an uncached range gets the source's errno
    st.evict("y")
    cl.drop_caches()
    fd = os.open(st.p("y"), os.O_RDONLY)
    st.emu_set("fail_enoent", "y")
    err, data = errno_and_data(os.pread, fd, MiB, 0)
    h.note("fd opened before fail_enoent, uncached: read gives %s" % (
        errno.errorcode.get(err, err) if err else "data"))
    h.check("fd opened before fail_enoent: the source's errno or right bytes, never wrong "
            "bytes", err in (errno.ENOENT, errno.EIO) or (err == 0 and cl.sha(data) == want["y"]),
            "errno %s" % err)
    os.close(fd)
    st.emu_set("fail_enoent", "")
    cl.check_content("fault cleared: y right", st.p("y"), st.s("y"), want["y"])
    st.check_umount("clean unmount")


def test_ttl_never_eio():
    st = cl.Stack(cache_opts=("ttl=never",))
    want = cl.make_file(st.s("c"), 2 * MiB, seed=9)
    cl.check_content("ttl=never: c cached", st.p("c"), st.s("c"), want)
    st.emu_set("fail_eio", "c")
    cl.drop_caches()
    err, data = errno_and_data(open_read, st.p("c"))
    h.note("ttl=never, fully cached file, source failing with EIO: the mount %s" % (
        "returns " + errno.errorcode.get(err, str(err)) if err else "serves the cached data"))
    h.check("ttl=never, source EIO: EIO or the right bytes",
            err == errno.EIO or (err == 0 and cl.sha(data) == want), "errno %s" % err)
    st.emu_set("fail_eio", "")
    cl.check_content("ttl=never: fault cleared: right", st.p("c"), st.s("c"), want)
    st.check_umount("clean unmount")


if __name__ == "__main__":
    cl.main([test_eio, test_eio_mid_read, test_enoent, test_ttl_never_eio])
