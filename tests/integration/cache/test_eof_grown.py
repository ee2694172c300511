#!/usr/bin/env python3
"""Only the source decides where a file ends (DESIGN rule 16; issue 15, M3): a reader
that read a 100 KiB file keeps its fd while another host appends 50 KiB; once the
attribute window is over (actimeo=1) it reads from offset 0 again and gets 150 KiB.

A read that straddles the size validated at open must not be cut there: FUSE takes a
short reply for the end of the file (and shrinks the kernel's size to it), so the
appended bytes would stay invisible to that reader.  Checked buffered, as an application
reads, and with O_DIRECT.  The O_DIRECT reader's file is 100 KiB + 100 bytes: for a read
past a short direct read the kernel falls back to buffered reads from the next page,
which a page-aligned size would put past the cut.  Fails on the core of c6fae63: the
readers get 100 KiB (and 100 KiB + 100)."""

import mmap
import os
import time

import cachelib as cl
from cachelib import KiB, h


def append_seen(direct):
    how = "O_DIRECT" if direct else "buffered"
    # The emu uncached: the append is visible to efscache's getattr at once.
    st = cl.Stack(emu_opts=cl.EMU_UNCACHED, cache_opts=("actimeo=1",))
    first = os.urandom(100 * KiB + (100 if direct else 0))
    more = os.urandom(50 * KiB)
    h.write_file(st.s("log"), first)
    fd = os.open(st.p("log"), os.O_RDONLY | (os.O_DIRECT if direct else 0))
    buf = mmap.mmap(-1, 256 * KiB)
    try:
        n = os.preadv(fd, [buf], 0)
        h.check("%s: the first read gets the whole file" % how,
                n == len(first) and bytes(buf[:n]) == first, "%d bytes" % n)
        with open(st.s("log"), "ab") as f:
            f.write(more)
        time.sleep(2.5)  # past the 1 s attribute window
        size = os.fstat(fd).st_size
        h.eq("%s: after the window, fstat of the same fd sees the new size" % how, size,
             len(first) + len(more))
        n = os.preadv(fd, [buf], 0)
        got = bytes(buf[:n])
        h.check("%s: reading again from offset 0 with the same fd gets 50 KiB more" % how,
                got == first + more,
                "%d bytes%s" % (n, " (the size validated at open)" if n == len(first) else ""))
    finally:
        buf.close()
        os.close(fd)
    st.check_umount("clean unmount")


def test_append_seen_direct():
    append_seen(True)


def test_append_seen_buffered():
    append_seen(False)


if __name__ == "__main__":
    cl.main([test_append_seen_direct, test_append_seen_buffered])
