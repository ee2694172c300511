#!/usr/bin/env python3
"""One slow source file stalls only the calls that need it (issue 15, M6).

Unlinking a file that is open through the mount makes every open handle of it without a
source fd open one first (files_hold_source: the reader keeps reading after the name is
gone).  That source open can take as long as the source likes (efs-emu `hang`, a `hard`
NFS mount whose server is away).  Before the fix it ran under the global mutex of the
open handles, which every open and close takes: one slow file stopped every open and
close of the mount.  Now the handles are collected under the mutex and their fds opened
after it: while the unlink of `f` waits for the source, other files open, read and close.
(A flush or fsync that waits for the source no longer holds the handle's lock either;
efs-emu cannot hang those, so that part has no test here.)"""

import os
import threading

os.environ.setdefault("EFSCACHE_TEST_TIMEOUT", "400")

import cachelib as cl  # noqa: E402
from cachelib import MiB, h  # noqa: E402

# The emulated client keeps attributes for a minute: the unlink's lookup of `f` is
# answered by the kernel, so the only request of `f` that hangs is the source open.
EMU_OPTS = cl.EMU_FAST + ("acregmin=60",)


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


def test_unlink_of_open_file_while_source_hangs():
    st = cl.Stack(emu_opts=EMU_OPTS)
    want_f = cl.make_file(st.s("f"), MiB, seed=61)
    want_g = cl.make_file(st.s("g"), MiB, seed=62)
    # f and g cached: a read-only open of either opens nothing on the source.
    cl.check_content("f cached", st.p("f"), st.s("f"), want_f)
    cl.check_content("g cached", st.p("g"), st.s("g"), want_g)
    st.stats()
    held = open(st.p("f"), "rb")  # a reader of f with no source fd
    st.emu_set("hang_ms", "0")  # until cleared
    st.emu_set("hang", "f")
    res = {}

    def unlinker():
        try:
            os.unlink(st.p("f"))
            res["unlink"] = 0
        except OSError as e:
            res["unlink"] = e.errno

    t = threading.Thread(target=unlinker)
    t.start()
    h.check("the unlink of f waits for the source (it opens f for the reader first)",
            cl.wait_for(lambda: st.emu_stats()["hung_now"] >= 1, 30),
            "hung_now %d" % st.emu_stats()["hung_now"])
    other = {}

    def open_other():
        try:
            other["data"] = read_all(st.p("g"))
        except OSError as e:
            other["err"] = e.errno

    o = threading.Thread(target=open_other)
    o.start()
    o.join(20 * h.TIMEOUT_SCALE)
    hanging = st.emu_stats()["hung_now"] >= 1 and t.is_alive()
    h.check("while f's source open hangs, another file opens, reads and closes",
            not o.is_alive() and cl.sha(other.get("data", b"")) == want_g,
            "still blocked" if o.is_alive() else other)
    h.check("... and f's unlink was still waiting for the source meanwhile", hanging)
    st.emu_set("hang", "")
    t.join(60)
    o.join(60)
    h.eq("the unlink completes once the source answers", res.get("unlink"), 0)
    data = held.read()
    held.close()
    h.check("the reader that had f open still reads it after the unlink",
            cl.sha(data) == want_f)
    h.check("f is gone from the source", not os.path.exists(st.s("f")))
    st.check_umount("clean unmount")


h.require_fuse()
h.run_tests([test_unlink_of_open_file_while_source_hangs])
