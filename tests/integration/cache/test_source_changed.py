#!/usr/bin/env python3
"""Never stale (close-to-open, ttl=0): when a file changes in SOURCE behind efscache's
back, the next open through the mount returns the new bytes, never old cached ones and
never a mix, without anyone dropping caches by hand (efscache must drop its cached chunks
and the kernel's page cache of the inode).  Cases: in-place rewrite with the same size and
the old mtime put back (only ctime differs), replacement by rename, truncation shorter and
longer, deletion (ENOENT).  With ttl=1 the change must be seen once the ttl has passed.
With ttl=never the old data may be served by contract; that case is only reported."""

import mmap
import os
import time

import cachelib as cl
from cachelib import MiB, h

SIZE = 2 * MiB + 4096 + 17


def rewrite_same_size_same_mtime(path, seed):
    """Overwrite every byte of path in place (same inode, same size) and put the old
    atime/mtime back, as `touch -r` would; only ctime changes."""
    st = os.stat(path)
    time.sleep(0.05)  # let the clock move past the file's ctime (coarse timestamps)
    tmp = path + ".new"
    h.make_random_file(tmp, st.st_size, seed)
    with open(tmp, "rb") as f:
        data = f.read()
    os.unlink(tmp)
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    st2 = os.stat(path)
    h.check("setup: same inode, size and mtime, other ctime",
            st2.st_ino == st.st_ino and st2.st_size == st.st_size
            and st2.st_mtime_ns == st.st_mtime_ns and st2.st_ctime_ns != st.st_ctime_ns,
            "before %s after %s" % (st, st2))
    return cl.sha(data)


def test_in_place_same_mtime():
    st = cl.Stack()
    old = cl.make_file(st.s("f"), SIZE, seed=1)
    cl.check_content("(a) first read", st.p("f"), st.s("f"), old)
    # keep an fd and an mmap of the old version open through the change
    fd_old = os.open(st.p("f"), os.O_RDONLY)
    mm = mmap.mmap(fd_old, 0, prot=mmap.PROT_READ)
    h.eq("(a) mmap of the old version reads old bytes", cl.sha(mm[:]), old)
    s0 = st.stats()
    new = rewrite_same_size_same_mtime(st.s("f"), seed=2)
    cl.check_content("(a) after in-place rewrite with old mtime: new bytes",
                     st.p("f"), st.s("f"), new)
    s1 = st.stats()
    h.check("(a) stale_dropped counted", cl.delta(s1, s0, "stale_dropped") >= 1, str(s1))
    h.eq("(a) status after the change: state", st.status("f").get("state"), "valid")
    # a new open through a new fd with the old fd still open
    fd_new = os.open(st.p("f"), os.O_RDONLY)
    h.eq("(a) new fd while an old one is open: new bytes", cl.sha(cl.read_fd(fd_new)), new)
    os.close(fd_new)
    mm.close()
    os.close(fd_old)
    # the cache now holds the new version (a re-read fetches nothing)
    st.stats()  # settled: the chunks of the reads above are written
    cl.drop_caches()
    e0 = st.emu_stats()
    cl.check_content("(a) re-read: new bytes", st.p("f"), st.s("f"), new)
    h.eq("(a) re-read of the new version fetched 0 bytes from the emu",
         cl.delta(st.emu_stats(), e0, "read_bytes"), 0)

    # half cached, then changed: the rest must not be mixed with the old half
    old_g = cl.make_file(st.s("g"), SIZE, seed=3)
    with open(st.p("g"), "rb") as f:
        first = f.read(SIZE // 2)
    h.eq("(a2) first half read", cl.sha(first), cl.sha(cl.read_range(st.s("g"), 0, SIZE // 2)))
    h.check("(a2) part of g cached", st.status("g").get("cached_bytes", 0) > 0,
            str(st.status("g")))
    new_g = rewrite_same_size_same_mtime(st.s("g"), seed=4)
    h.check("(a2) the two versions differ", new_g != old_g)
    cl.check_content("(a2) after the change: whole file is the new version",
                     st.p("g"), st.s("g"), new_g)
    # and again without dropping anything, many small reads through one fd
    data = cl.read_range(st.p("g"), 0, SIZE)
    h.eq("(a2) pread of the whole file", cl.sha(data), new_g)
    st.check_umount("clean unmount (a)")


def test_replaced_by_rename():
    st = cl.Stack()
    old = cl.make_file(st.s("f"), SIZE, seed=5)
    cl.check_content("(b) first read", st.p("f"), st.s("f"), old)
    cl.check_content("(b) second read", st.p("f"), st.s("f"), old)
    new = cl.make_file(st.s(".f.tmp"), SIZE, seed=6)
    os.rename(st.s(".f.tmp"), st.s("f"))
    cl.check_content("(b) after rename over it: new bytes", st.p("f"), st.s("f"), new)
    # same size and the old mtime on the replacement too
    old_st = os.stat(st.s("f"))
    new2 = cl.make_file(st.s(".f.tmp"), SIZE, seed=7)
    os.utime(st.s(".f.tmp"), ns=(old_st.st_atime_ns, old_st.st_mtime_ns))
    os.rename(st.s(".f.tmp"), st.s("f"))
    cl.check_content("(b) after rename of a same-size, same-mtime file: new bytes",
                     st.p("f"), st.s("f"), new2)
    st.check_umount("clean unmount (b)")


def test_truncate_extend():
    st = cl.Stack()
    cl.make_file(st.s("f"), SIZE, seed=8)
    cl.check_content("(c) first read", st.p("f"), st.s("f"))
    cl.check_content("(c) second read", st.p("f"), st.s("f"))
    for new_size in (SIZE - 300 * 1024 - 5, 100, 0, SIZE + 3 * MiB + 1, SIZE):
        cur = os.path.getsize(st.s("f"))
        if new_size < cur:
            os.truncate(st.s("f"), new_size)
            how = "truncated"
        else:
            with open(st.s("f"), "ab") as f:
                f.write(os.urandom(new_size - cur))
            how = "extended"
        h.eq("(c) %s to %d: size through the mount after open" % (how, new_size),
             cl.size_after_open(st.p("f")), new_size)
        cl.check_content("(c) %s to %d: bytes" % (how, new_size), st.p("f"), st.s("f"))
        cl.check_content("(c) %s to %d: bytes again (cached)" % (how, new_size),
                         st.p("f"), st.s("f"))
    # extended with a hole
    with open(st.s("f"), "r+b") as f:
        f.truncate(SIZE + 2 * MiB)
        f.seek(SIZE + MiB)
        f.write(b"tail")
    cl.check_content("(c) extended by a hole + data: bytes", st.p("f"), st.s("f"))
    st.check_umount("clean unmount (c)")


def test_deleted():
    st = cl.Stack(cache_opts=cl.SHORT_DIR_WINDOW, emu_opts=cl.EMU_SHORT_DIR)
    cl.make_file(st.s("f"), SIZE, seed=9)
    cl.check_content("(d) first read", st.p("f"), st.s("f"))
    cl.check_content("(d) second read", st.p("f"), st.s("f"))
    os.unlink(st.s("f"))
    h.check_errno("(d) open after delete in the source: ENOENT",
                  lambda p: open(p, "rb").close(), (st.p("f"),), expected=2)
    h.check_errno("(d) stat after delete in the source: ENOENT", os.stat, (st.p("f"),),
                  expected=2)
    # a new file under the same name is not the old one (once the negative entry the
    # failed open left has expired: 1 s here)
    new = cl.make_file(st.s("f"), SIZE, seed=10)
    cl.wait_dir_window()
    cl.check_content("(d) new file with the old name: new bytes", st.p("f"), st.s("f"), new)
    st.check_umount("clean unmount (d)")


def test_ttl_never():
    st = cl.Stack(cache_opts=("ttl=never",))
    old = cl.make_file(st.s("f"), SIZE, seed=11)
    cl.check_content("(e) ttl=never: first read", st.p("f"), st.s("f"), old)
    new = rewrite_same_size_same_mtime(st.s("f"), seed=12)
    got = cl.hash_file(st.p("f"))
    what = "old" if got == old else "new" if got == new else "a MIX of old and new"
    h.note("(e) ttl=never, source rewritten in place: the mount served the %s version "
           "(allowed by contract: ttl=never is for immutable trees)" % what)
    st.check_umount("clean unmount (e)")


def test_ttl_positive():
    st = cl.Stack(cache_opts=("ttl=1",))
    old = cl.make_file(st.s("f"), SIZE, seed=13)
    cl.check_content("(f) ttl=1: first read", st.p("f"), st.s("f"), old)
    new = rewrite_same_size_same_mtime(st.s("f"), seed=14)
    got = cl.hash_file(st.p("f"))
    h.note("(f) ttl=1, reopened at once after an in-place rewrite: %s version served" % (
        "old" if got == old else "new" if got == new else "a MIX of old and new"))
    # once the ttl has passed for sure, the next open must see the change
    time.sleep(2.5)
    cl.check_content("(f) ttl=1: after the ttl expired: new bytes", st.p("f"), st.s("f"), new)
    st.check_umount("clean unmount (f)")


if __name__ == "__main__":
    cl.main([test_in_place_same_mtime, test_replaced_by_rename, test_truncate_extend,
             test_deleted, test_ttl_never, test_ttl_positive])
