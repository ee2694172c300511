#!/usr/bin/env python3
"""Files of cache_dir removed underneath never cost a reader its bytes (DESIGN rule 16;
issue 15, H5):

    a cached file's KEY.data removed (a tmp cleaner), the page cache dropped: the file
    reads right again, never empty, never zeros;
    `rm -rf cache_dir` caught half way (rm removes KEY.data before KEY.meta: every data
    file gone, the meta files left): every cached file reads right.

Each read is checked against the bytes written to SOURCE (random, no zero page), read
both buffered after drop_caches and with O_DIRECT (no page cache at all).  Fails on the
core of c6fae63: the data file is re-created empty under chunks still marked verified,
and the file reads as empty (0 bytes, no error) or as zeros."""

import os

import cachelib as cl
from cachelib import MiB, h


def check_reads(what, st, rel, want):
    """rel reads as want, buffered (after drop_caches) and with O_DIRECT."""
    for how in ("buffered", "O_DIRECT"):
        cl.drop_caches()
        try:
            got = cl.read_whole(st.p(rel)) if how == "buffered" else \
                cl.read_direct_all(st.p(rel), len(want))
        except OSError as e:
            h.check("%s: %s read of %s" % (what, how, rel), False, "failed: %s" % e)
            continue
        if got == want:
            h.check("%s: %s read of %s gives the source's bytes" % (what, how, rel), True)
            continue
        h.check("%s: %s read of %s gives the source's bytes" % (what, how, rel), False,
                "%d bytes read of %d%s%s" % (
                    len(got), len(want), "; empty" if not got else "",
                    "; a page of zeros" if cl.has_zero_page(got) else ""))


def test_data_file_removed():
    """An 8 MiB file read once (cached), its KEY.data removed, read again."""
    st = cl.Stack()
    want = os.urandom(8 * MiB)
    h.write_file(st.s("model.bin"), want)
    check_reads("cold", st, "model.bin", want)
    st.stats()  # written behind: all of it is stored
    rec = st.record_of("model.bin")
    if not h.check("the file has a record", rec is not None):
        return
    meta, data = rec
    h.check("its data file exists", os.path.exists(data))
    os.unlink(data)
    check_reads("KEY.data removed", st, "model.bin", want)
    check_reads("KEY.data removed, read again", st, "model.bin", want)
    # the daemon keeps serving and caches again
    e0 = st.emu_read_bytes()
    check_reads("KEY.data removed, third read", st, "model.bin", want)
    h.check("the mount still answers", os.path.isdir(st.mnt))
    h.note("third read fetched %d bytes from the emu" % (st.emu_read_bytes() - e0))
    st.check_umount("clean unmount")


def test_rm_rf_half_way():
    """`rm -rf cache_dir` stopped after the data files: three cached files read right."""
    st = cl.Stack()
    want = {}
    for i, n in enumerate(("a", "b", "c")):
        want[n] = os.urandom(2 * MiB + 4096 * i + 100)
        h.write_file(st.s(n), want[n])
        check_reads("cold", st, n, want[n])
    st.stats()
    removed = cl.rm_data_files(st.cache_dir)
    h.check("rm -rf half way: the data files removed, the meta files left",
            removed >= 3 and len(cl.records(st.cache_dir)) >= 3,
            "%d data files removed, %d records left" % (removed, len(cl.records(st.cache_dir))))
    for n in ("a", "b", "c"):
        check_reads("rm -rf half way", st, n, want[n])
    st.check_umount("clean unmount")


if __name__ == "__main__":
    cl.main([test_data_file_removed, test_rm_rf_half_way])
