#!/usr/bin/env python3
"""The directory index (docs/design.md, "Directory index"; issue 17 item 2), with efs-emu's
counters as witness and its emulated client caching no names (every lookup efscache makes
reaches it):

- -o immutable: after a daemon restart with the cache kept, a find + stat of a tree and an
  import-like walk (stat of each path, open and read of each file) make no LOOKUP at the
  source, and see the same names, sizes and bytes as the source;
- default options: a name removed on the source (or added) is seen once the directory's
  window passed, also across a restart (whose daemon does not use the earlier one's index);
  a name never asked is asked of the source (a listing answers no negative lookup, as on
  EFS); a snapshot older than the files' window answers nothing, so that a walk after
  drop_caches costs a listing per directory and an import no more than EFS;
- a change through the mount is seen at once (the index of the directory is dropped)."""

import errno
import os
import stat
import threading
import time

import cachelib as cl
from cachelib import KiB, h

# The emulated NFS client caches no names: every lookup efscache makes is counted.
EMU = ("latency_ms=0.2", "meta_latency_ms=0.05", "bw_mib=0", "acregmin=1", "acdirmin=1",
       "lookupcache=none")
SHORT = ("acregmin=1", "acregmax=1", "acdirmin=1", "acdirmax=1")
# An emulated client that caches names and attributes for 1 s, as NFS does for longer.
EMU_NFS = ("latency_ms=0.2", "meta_latency_ms=0.05", "bw_mib=0", "acregmin=1", "acdirmin=1")


def meta(e):
    return {k: e.get(k, 0) for k in ("lookups", "getattrs", "opens", "readdirs", "read_ops")}


def diff(after, before):
    return {k: after[k] - before[k] for k in after}


def make_tree(st):
    """pkg/ with modules and two levels of subpackages: {relative path: sha256}."""
    want = {}
    for d in ("pkg", "pkg/sub", "pkg/sub/deep", "pkg/other"):
        os.makedirs(st.s(d), exist_ok=True)
        for n in ("__init__.py", "mod_a.py", "mod_b.py"):
            rel = os.path.join(d, n)
            want[rel] = cl.make_file(st.s(rel), 3 * KiB + len(rel), seed=len(rel))
    return want


def walk(root):
    """find + stat: {relative path: (mode, size)} of everything under root."""
    seen = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            s = os.lstat(p)
            seen[os.path.relpath(p, root)] = (s.st_mode, s.st_size)
    return seen


def import_like_at(at, want):
    """What an import does, under at(*parts) (a mount): stat each component of each path,
    probe missing names (the .so/.pyc a finder looks for), open and read each file."""
    got = {}
    for rel in sorted(want):
        parts = rel.split("/")
        for k in range(1, len(parts) + 1):
            os.stat(at(*parts[:k]))
        base = at(rel[:-3])
        for ext in (".cpython-311-x86_64-linux-gnu.so", ".abi3.so"):
            h.check("absent %s%s" % (rel[:-3], ext), not os.path.lexists(base + ext))
        with open(at(rel), "rb") as f:
            got[rel] = cl.sha(f.read())
    return got


def import_like(st, want):
    return import_like_at(st.p, want)


def test_immutable_restart_asks_no_names():
    st = cl.Stack(emu_opts=EMU, cache_opts=("immutable",))
    want = make_tree(st)
    src = walk(st.src)
    h.eq("first daemon: find + stat", walk(st.mnt), src)
    h.eq("first daemon: import-like walk", import_like(st, want), want)
    s = st.stats()
    h.check("first daemon: directories listed into the index", s.get("index_builds", 0) >= 4,
            "index_builds %s" % s.get("index_builds"))
    st.remount()  # a daemon restart, cache_dir kept
    cl.drop_caches()
    e0 = meta(st.emu_stats())
    h.eq("restarted: find + stat", walk(st.mnt), src)
    h.eq("restarted: import-like walk", import_like(st, want), want)
    got = diff(meta(st.emu_stats()), e0)
    h.note("restarted, immutable: at the source %s" % got)
    h.eq("restarted, immutable: no LOOKUP reaches the source", got["lookups"], 0)
    h.eq("restarted, immutable: no data is read from the source", got["read_ops"], 0)
    s = st.stats()
    h.check("restarted: lookups answered from the index", s.get("index_lookups", 0) > 0)
    h.check_errno("a name longer than any in an index: the source's error, not absent",
                  os.stat, (st.p("pkg", "x" * 300),), expected={errno.ENAMETOOLONG})
    probs = st.umount()
    h.check("clean unmount", not probs, "; ".join(probs))


def test_default_removed_name_seen_after_window():
    st = cl.Stack(emu_opts=EMU, cache_opts=SHORT)
    os.mkdir(st.s("d"))
    for n in ("keep", "gone"):
        cl.make_file(st.s("d", n), 4 * KiB, seed=len(n))
    h.eq("listing", sorted(os.listdir(st.p("d"))), ["gone", "keep"])
    # As on EFS: a name never asked is asked of the source, not answered absent from a
    # listing (an NFS client's negative entries are per name).
    cl.make_file(st.s("d/late"), 4 * KiB, seed=8)
    h.check("a name made on the source after the listing is seen at once",
            os.path.exists(st.p("d/late")))
    os.unlink(st.s("d/late"))
    time.sleep(2.5)
    for restart in (False, True):
        if restart:
            cl.make_file(st.s("d/gone"), 4 * KiB, seed=9)
            h.eq("listing again", sorted(os.listdir(st.p("d"))), ["gone", "keep"])
            h.check("stat of gone", os.path.exists(st.p("d/gone")))
            st.remount()  # a new daemon: the earlier one's index is not used
            cl.drop_caches()
            h.check("restarted: gone is there", os.path.exists(st.p("d/gone")))
            s = st.stats()
            # When an earlier daemon saw the attributes is not known: with default options
            # its snapshots answer nothing, the source is asked (as EFS's client would be).
            h.check("restarted: the earlier daemon's index neither read nor answering",
                    s.get("index_loads", 0) == 0 and s.get("index_lookups", 0) == 0,
                    "index_loads %s index_lookups %s" % (s.get("index_loads"),
                                                         s.get("index_lookups")))
        os.unlink(st.s("d/gone"))
        cl.make_file(st.s("d/new"), 4 * KiB, seed=7)
        time.sleep(2.5)  # efscache's and the emulated client's 1 s windows, with margin
        h.check("restart %s: a removed name is gone once the window passed" % restart,
                not os.path.lexists(st.p("d/gone")))
        h.check("restart %s: a new name is seen once the window passed" % restart,
                os.path.exists(st.p("d/new")))
        h.eq("restart %s: the listing shows both changes" % restart,
             sorted(os.listdir(st.p("d"))), ["keep", "new"])
        os.unlink(st.s("d/new"))
        time.sleep(2.5)
    probs = st.umount()
    h.check("clean unmount", not probs, "; ".join(probs))


def test_default_stale_snapshot_costs_no_more_than_efs():
    """Default options, the index's snapshots older than the files' attribute window and the
    kernel's caches dropped (what the kernel forgot must be asked again): a find + stat lists
    each directory once (a new pass, whose stats the emulated client answers from its
    listing) rather than asking for each name, and an import-like walk costs no more LOOKUPs
    than the same walk of EFS directly. Here the emulated client caches names, as NFS does."""
    st = cl.Stack(emu_opts=EMU_NFS, cache_opts=SHORT)
    want = make_tree(st)
    src = walk(st.src)
    names = len(src)
    dirs = 1 + sum(1 for m, _ in src.values() if stat.S_ISDIR(m))  # and the top
    h.eq("find + stat", walk(st.mnt), src)
    h.eq("import-like walk", import_like(st, want), want)
    time.sleep(2.5)  # past efscache's 1 s windows and the emulated client's
    cl.drop_caches()
    e0 = meta(st.emu_stats())
    ops0 = st.emu_stats().get("ops", 0)
    h.eq("again after the window, caches dropped: find + stat", walk(st.mnt), src)
    got = diff(meta(st.emu_stats()), e0)
    other = st.emu_stats().get("ops", 0) - ops0 - sum(got.values())
    h.note("find + stat of %d names in %d directories: at the source %s, %d other requests"
           % (names, dirs, got, other))
    h.check("... lists each directory (a READDIR and the one at its end) rather than "
            "asking for each name", got["lookups"] <= dirs and got["readdirs"] <= 3 * dirs, got)
    h.check("... with the directory's attributes its client cached (not a GETATTR each)",
            got["getattrs"] < dirs, got)
    h.check("... and opened once each (the listing's stream makes the snapshot): other "
            "requests, OPENDIR and RELEASEDIR, at most 2 per directory", other <= 2 * dirs,
            "%d other requests" % other)
    time.sleep(2.5)
    cl.drop_caches()
    e0 = meta(st.emu_stats())
    import_like_at(st.e, want)
    efs = diff(meta(st.emu_stats()), e0)
    time.sleep(2.5)
    cl.drop_caches()
    e0 = meta(st.emu_stats())
    h.eq("through efscache: import-like walk", import_like_at(st.p, want), want)
    ours = diff(meta(st.emu_stats()), e0)
    h.note("import-like walk after the window, caches dropped: EFS directly %s, through "
           "efscache %s" % (efs, ours))
    # (2 more in all allowed: a window of 1 s may pass mid-walk on a loaded machine; the
    # index answering stale names cost 5 more here)
    h.check("... no more LOOKUPs than EFS directly, nor metadata requests in all",
            ours["lookups"] <= efs["lookups"] and
            ours["lookups"] + ours["getattrs"] + ours["opens"] <=
            efs["lookups"] + efs["getattrs"] + efs["opens"] + 2,
            "efs %s efscache %s" % (efs, ours))
    probs = st.umount()
    h.check("clean unmount", not probs, "; ".join(probs))


def test_default_relisting_refreshes_attributes():
    """Default options, a directory listed again after the files' window with the page cache
    warm: listed from the source again (the kernel's cached listing would leave it a GETATTR
    per name to ask for), so that stat of each name costs nothing more at the source."""
    st = cl.Stack(emu_opts=EMU_NFS, cache_opts=SHORT)
    os.mkdir(st.s("d"))
    n = 40
    for k in range(n):
        cl.make_file(st.s("d", "m%02d.py" % k), 1 * KiB, seed=k)

    def list_and_stat():
        for name in os.listdir(st.p("d")):
            os.stat(st.p("d", name))

    list_and_stat()
    time.sleep(2.5)  # past efscache's 1 s windows and the emulated client's
    e0 = meta(st.emu_stats())
    list_and_stat()
    got = diff(meta(st.emu_stats()), e0)
    h.note("listdir + stat of %d files after the window, caches warm: at the source %s"
           % (n, got))
    h.check("... the directory listed again (its attributes with the entries), not a "
            "GETATTR or LOOKUP per name", got["readdirs"] >= 1 and
            got["getattrs"] + got["lookups"] < n // 4, got)
    probs = st.umount()
    h.check("clean unmount", not probs, "; ".join(probs))


def test_listing_while_the_mount_changes():
    """A write through the mount during a listing's pass (elsewhere in the tree) keeps that
    pass from making a snapshot (what it saw of a file may predate the write); the handle then
    lists from its own stream, rewound: every name once, none lost, none twice."""
    st = cl.Stack(emu_opts=EMU_NFS, cache_opts=SHORT)
    os.mkdir(st.s("d"))
    os.mkdir(st.s("w"))
    names = sorted("file-%05d" % k for k in range(3000))
    for n in names:
        open(st.s("d", n), "wb").close()
    stop = threading.Event()

    def writer():
        with open(st.p("w", "f"), "wb", buffering=0) as f:
            while not stop.is_set():
                f.write(b"x")
                os.fsync(f.fileno())

    t = threading.Thread(target=writer)
    t.start()
    try:
        s0 = st.stats(settled=False)
        for rnd in range(12):
            cl.drop_caches()
            got = os.listdir(st.p("d"))
            h.check("round %d: every name once" % rnd, sorted(got) == names,
                    "%d names, %d distinct" % (len(got), len(set(got))))
        s1 = st.stats(settled=False)
    finally:
        stop.set()
        t.join()
    streamed = cl.delta(s1, s0, "kernel_readdirs") - cl.delta(s1, s0, "index_listings")
    h.note("12 listings: %d READDIRs from the kernel, %d answered from a snapshot"
           % (cl.delta(s1, s0, "kernel_readdirs"), cl.delta(s1, s0, "index_listings")))
    h.check("listings came from the stream (their pass saw a write)", streamed > 0,
            "kernel_readdirs %d index_listings %d" % (cl.delta(s1, s0, "kernel_readdirs"),
                                                      cl.delta(s1, s0, "index_listings")))
    probs = st.umount()
    h.check("clean unmount", not probs, "; ".join(probs))


def test_changes_through_the_mount():
    """Each change is made right after a listing (which makes d's snapshot) and checked after
    the kernel forgot its names, so that only the index could answer stale."""
    st = cl.Stack(emu_opts=EMU, cache_opts=("acregmin=30", "acdirmin=30"))
    os.mkdir(st.s("d"))
    cl.make_file(st.s("d/f"), 4 * KiB, seed=1)

    def listed_then(what, change, check):
        h.check("%s: listed first" % what, len(os.listdir(st.p("d"))) > 0)
        change()
        cl.drop_caches()
        h.check("%s: seen at once" % what, check())

    def append():
        with open(st.p("d/f"), "ab") as f:
            f.write(b"x" * 100)

    def create():
        with open(st.p("d/g"), "wb") as f:
            f.write(b"y")

    listed_then("appended", append, lambda: os.stat(st.p("d/f")).st_size == 4 * KiB + 100)
    listed_then("truncated", lambda: os.truncate(st.p("d/f"), 10),
                lambda: os.stat(st.p("d/f")).st_size == 10)
    listed_then("chmod", lambda: os.chmod(st.p("d/f"), 0o600),
                lambda: os.stat(st.p("d/f")).st_mode & 0o777 == 0o600)
    listed_then("created", create, lambda: os.path.exists(st.p("d/g")))
    listed_then("removed", lambda: os.unlink(st.p("d/f")),
                lambda: not os.path.lexists(st.p("d/f")))
    listed_then("renamed", lambda: os.rename(st.p("d/g"), st.p("d/h")),
                lambda: not os.path.lexists(st.p("d/g")) and os.path.exists(st.p("d/h")))
    listed_then("mkdir", lambda: os.mkdir(st.p("d/sub")), lambda: os.path.isdir(st.p("d/sub")))
    listed_then("rmdir", lambda: os.rmdir(st.p("d/sub")),
                lambda: not os.path.lexists(st.p("d/sub")))
    listed_then("symlink", lambda: os.symlink("h", st.p("d/l")),
                lambda: os.path.islink(st.p("d/l")))
    listed_then("link", lambda: os.link(st.p("d/h"), st.p("d/h2")),
                lambda: os.stat(st.p("d/h")).st_nlink == 2)
    h.eq("listing", sorted(os.listdir(st.p("d"))), ["h", "h2", "l"])
    h.eq("the source agrees", sorted(os.listdir(st.s("d"))), ["h", "h2", "l"])
    probs = st.umount()
    h.check("clean unmount", not probs, "; ".join(probs))


def test_default_writes_no_snapshots():
    """Default options never read a snapshot back from cache_dir (an earlier daemon's age is
    not known), so they write none; a pass removes the one a ttl=never daemon left, which a
    later ttl=never daemon would otherwise read back as if nothing had been listed since."""
    st = cl.Stack(emu_opts=EMU)
    make_tree(st)
    src = walk(st.src)

    def listed(what):
        # Until the startup index is complete the store takes no snapshot (a save waits).
        h.check("%s: the startup index completed" % what,
                cl.wait_for(lambda: st.stats(settled=False).get("cache_index_ready") == 1, 30))
        cl.drop_caches()
        h.eq("%s: find + stat" % what, walk(st.mnt), src)
        return st.stats()

    s = listed("default")
    h.check("default: directories listed into the index", s.get("index_builds", 0) >= 4,
            "index_builds %s" % s.get("index_builds"))
    h.eq("default: no snapshot written to cache_dir", s.get("index_saves"), 0)
    st.remount(("ttl=never",))
    s = listed("ttl=never")
    h.check("ttl=never: snapshots written to cache_dir", s.get("index_saves", 0) >= 4,
            "index_saves %s" % s.get("index_saves"))
    st.remount()
    s = listed("default after ttl=never")
    h.eq("default after ttl=never: nothing read back", s.get("index_loads"), 0)
    h.eq("default after ttl=never: nothing written", s.get("index_saves"), 0)
    st.remount(("ttl=never",))
    s = listed("ttl=never after default")
    h.eq("ttl=never after default: the blobs its passes replaced are gone",
         s.get("index_loads"), 0)
    probs = st.umount()
    h.check("clean unmount", not probs, "; ".join(probs))


def test_immutable_restart_loads_subdirectories_ahead():
    """After a restart, a listing of a directory loads its subdirectories' snapshots from
    cache_dir on the pool (a walk or an import lists them next): listing them then loads
    nothing more, and every name and size is the source's."""
    st = cl.Stack(emu_opts=EMU, cache_opts=("immutable",))
    subs = ["s%d" % k for k in range(6)]
    for d in subs:
        os.makedirs(st.s("top", d, "deep"))
        for n in ("a.py", "b.py"):
            cl.make_file(st.s("top", d, n), 2 * KiB + len(d), seed=len(n))
    src = walk(st.src)

    def ready(what):
        h.check("%s: the startup index completed" % what,
                cl.wait_for(lambda: st.stats(settled=False).get("cache_index_ready") == 1, 30))

    ready("first daemon")
    h.eq("first daemon: find + stat", walk(st.mnt), src)
    h.check("first daemon: snapshots written", st.stats().get("index_saves", 0) >= 8,
            "index_saves %s" % st.stats().get("index_saves"))
    st.remount()
    ready("restarted")
    cl.drop_caches()
    e0 = meta(st.emu_stats())
    h.eq("restarted: listing of top", sorted(os.listdir(st.p("top"))), subs)
    loads = st.stats().get("index_loads", 0)  # settled: the pool has run
    # The root's and top's snapshots for the listing, and one per subdirectory ahead.
    h.check("restarted: the subdirectories' snapshots loaded with top's listing",
            loads >= 2 + len(subs), "index_loads %s" % loads)
    for d in subs:
        h.eq("restarted: listing of %s" % d, sorted(os.listdir(st.p("top", d))),
             ["a.py", "b.py", "deep"])
    loads2 = st.stats().get("index_loads", 0)
    h.eq("restarted: listing the subdirectories loaded only theirs ahead",
         loads2 - loads, len(subs))  # each one's "deep"
    for d in subs:
        h.eq("restarted: listing of %s/deep" % d, os.listdir(st.p("top", d, "deep")), [])
    h.eq("restarted: listing those loaded nothing", st.stats().get("index_loads", 0), loads2)
    h.eq("restarted: find + stat", walk(st.mnt), src)
    h.eq("restarted: no LOOKUP reached the source", diff(meta(st.emu_stats()), e0)["lookups"], 0)
    probs = st.umount()
    h.check("clean unmount", not probs, "; ".join(probs))


h.run_tests([test_immutable_restart_asks_no_names, test_default_removed_name_seen_after_window,
             test_default_stale_snapshot_costs_no_more_than_efs,
             test_default_relisting_refreshes_attributes, test_listing_while_the_mount_changes,
             test_changes_through_the_mount, test_default_writes_no_snapshots,
             test_immutable_restart_loads_subdirectories_ahead])
