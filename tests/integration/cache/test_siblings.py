#!/usr/bin/env python3
"""Siblings fetched ahead (issue 17 item 3): a cold open of a small file fetches the other
small regular files of its directory, in parallel, before they are opened, so an import-like
walk of the directory then opens each of them with no OPEN and no READ at efs-emu.  efs-emu's
per-file counters are the witness: each sibling was opened and read once (by the fetch ahead),
and its own open through the mount adds neither.  Not fetched: files over 1M, what is not a
regular file, other directories.  A file changed on the source after it was fetched is read
new.  -o siblings=N bounds the files, 0 turns it off."""

import os

import cachelib as cl
from cachelib import KiB, MiB, h

# sizes of the siblings: one byte to several 256K chunks
SIZES = [1, 100, 4 * KiB, 37 * KiB, 256 * KiB, 256 * KiB + 1, 700 * KiB, 1 * MiB] + \
        [3000 + 911 * i for i in range(12)]


def make_pkg(st, pkg, n=None, seed=0):
    """pkg/__init__.py, pkg/mNN.py of SIZES (or n of 2 KiB), pkg/big.bin (2 MiB), a
    subdirectory with a file, a symlink and a FIFO.  Returns {name: size} of the mNN."""
    os.makedirs(st.s(pkg, "sub"))
    with open(st.s(pkg, "__init__.py"), "w") as f:
        f.write("# package %s\n" % pkg)
    sizes = SIZES if n is None else [2 * KiB] * n
    files = {}
    for i, size in enumerate(sizes):
        name = "m%02d.py" % i
        cl.make_file(st.s(pkg, name), size, seed=seed + i)
        files[name] = size
    cl.make_file(st.s(pkg, "big.bin"), 2 * MiB, seed=seed + 100)
    cl.make_file(st.s(pkg, "sub", "x.py"), 5000, seed=seed + 101)
    os.symlink("m00.py", st.s(pkg, "link.py"))
    os.mkfifo(st.s(pkg, "fifo"))
    return files


def settle(st):
    """Wait until nothing is being fetched ahead or written behind."""
    ok = cl.wait_for(lambda: st.stats(settled=False).get("sibling_pending", 0) == 0, 30)
    h.check("the fetches ahead ended", ok, str(st.stats(settled=False)))
    return st.stats()


def cold_open(st, pkg):
    """Open and read pkg/__init__.py through the mount, as an import's first step."""
    cl.check_content("%s/__init__.py: bytes equal the source" % pkg, st.p(pkg, "__init__.py"),
                     st.s(pkg, "__init__.py"))


def fetched(st, pkg, files):
    """Names of files whose bytes efs-emu served."""
    return sorted(n for n in files if st.emu_file_stats(os.path.join(pkg, n)).get("read_bytes"))


def test_siblings():
    st = cl.Stack()
    files = make_pkg(st, "pkg")
    cl.drop_caches()
    st.emu_reset()
    s0 = st.stats()
    cold_open(st, "pkg")
    s1 = settle(st)
    h.eq("one directory listed", cl.delta(s1, s0, "sibling_scans"), 1)
    h.eq("pkg never listed through the mount: listed on the source",
         cl.delta(s1, s0, "source_readdirs"), 1)
    h.eq("every small regular sibling fetched", cl.delta(s1, s0, "sibling_files"), len(files))
    h.eq("sibling_bytes: their sizes", cl.delta(s1, s0, "sibling_bytes"),
         sum(files.values()))
    for name, size in sorted(files.items()):
        e = st.emu_file_stats(os.path.join("pkg", name))
        h.eq("%s: opened once at efs-emu (the fetch ahead)" % name, e.get("opens"), 1)
        h.eq("%s: read whole, once" % name, e.get("read_bytes"), size)
    h.eq("big.bin (over 1M): not read", st.emu_file_stats("pkg/big.bin").get("read_bytes"), 0)
    h.eq("sub/x.py (another directory): not opened",
         st.emu_file_stats("pkg/sub/x.py").get("opens"), 0)

    # The import-like walk: each module opened and read through the mount, one after the
    # other, as `import pkg.mNN` does.  No OPEN and no READ reach efs-emu.
    for name, size in sorted(files.items()):
        rel = os.path.join("pkg", name)
        t0, f0 = st.emu_stats(), st.emu_file_stats(rel)
        cl.check_content("%s: bytes equal the source" % name, st.p(rel), st.s(rel))
        t1, f1 = st.emu_stats(), st.emu_file_stats(rel)
        h.eq("%s: its open read nothing from efs-emu" % name, cl.delta(t1, t0, "read_bytes"), 0)
        h.eq("%s: its open sent no OPEN to efs-emu" % name, cl.delta(t1, t0, "opens"), 0)
        h.eq("%s: efs-emu served it once in all" % name, f1.get("read_bytes"), size)
    s2 = st.stats()
    h.eq("the walk fetched nothing", cl.delta(s2, s1, "bytes_from_source"), 0)
    h.check("and validated every open (close-to-open)",
            cl.delta(s2, s1, "validations") >= len(files), str(s2))

    # Changed on the source after its fetch: the open sees the new bytes.
    with open(st.s("pkg", "m03.py"), "ab") as f:
        f.write(b"changed on another host\n")
    cl.check_content("m03.py changed after its fetch: new bytes", st.p("pkg", "m03.py"),
                     st.s("pkg", "m03.py"))
    h.check("m03.py: its stale record dropped", cl.delta(st.stats(), s2, "stale_dropped") >= 1,
            str(st.stats()))

    # Once per directory per window: a second cold file of pkg starts nothing.
    os.unlink(st.s("pkg", "m07.py"))
    cl.make_file(st.s("pkg", "late.py"), 1000, seed=55)
    s3 = st.stats()
    cl.check_content("late.py: bytes", st.p("pkg", "late.py"), st.s("pkg", "late.py"))
    s4 = settle(st)
    h.eq("no second listing of pkg within the window", cl.delta(s4, s3, "sibling_scans"), 0)
    st.check_umount("clean unmount")

    # -o siblings=N: at most N files; 0: none.
    for opt, want in (("siblings=3", 3), ("siblings=0", 0)):
        st = cl.Stack(cache_opts=(opt,))
        files = make_pkg(st, "p", n=10, seed=200)
        cl.drop_caches()
        st.emu_reset()
        cold_open(st, "p")
        settle(st)
        h.eq("%s: siblings fetched" % opt, len(fetched(st, "p", files)), want)
        h.eq("%s: sibling_files" % opt, st.stats().get("sibling_files"), want)
        for name in sorted(files):
            cl.check_content("%s: %s bytes" % (opt, name), st.p("p", name), st.s("p", name))
        st.check_umount("clean unmount (%s)" % opt)


def test_listed_first():
    """As an import does: the package is listed through the mount (its snapshot made in the
    directory index), then its first module opened cold.  The burst takes the small files
    from that snapshot: no second READDIR at efs-emu, the same files fetched."""
    st = cl.Stack()
    files = make_pkg(st, "pkg")
    cl.drop_caches()
    st.emu_reset()
    h.eq("the listing", sorted(os.listdir(st.p("pkg"))),
         sorted(list(files) + ["__init__.py", "big.bin", "fifo", "link.py", "sub"]))
    e0, s0 = st.emu_stats(), st.stats()
    cold_open(st, "pkg")
    s1 = settle(st)
    e1 = st.emu_stats()
    h.eq("one burst", cl.delta(s1, s0, "sibling_scans"), 1)
    h.eq("no READDIR at efs-emu after the mount's own listing", cl.delta(e1, e0, "readdirs"), 0)
    h.eq("source_readdirs: none", cl.delta(s1, s0, "source_readdirs"), 0)
    h.eq("every small regular sibling fetched", sorted(fetched(st, "pkg", files)), sorted(files))
    h.eq("big.bin (over 1M): not read", st.emu_file_stats("pkg/big.bin").get("read_bytes"), 0)
    h.eq("sub/x.py (another directory): not opened",
         st.emu_file_stats("pkg/sub/x.py").get("opens"), 0)
    for name in sorted(files):
        cl.check_content("%s: bytes equal the source" % name, st.p("pkg", name),
                         st.s("pkg", name))
    st.check_umount("clean unmount")


def test_burst_lists_for_the_index():
    """An import opens a package's __init__ before it lists the package, and opens its
    __pycache__ files by name, never listing that directory.  The burst a cold open starts
    lists the directory for the directory index: the package's listing through the mount
    then costs no READDIR at efs-emu and its names no LOOKUP, and __pycache__'s names are
    answered from the index.  Windows of 60 s, so that a slow machine does not outlive them."""
    st = cl.Stack(cache_opts=("acregmin=60", "acregmax=60", "acdirmin=60", "acdirmax=60"))
    files = make_pkg(st, "pkg")
    os.makedirs(st.s("pkg", "__pycache__"))
    pyc = ["m%02d.cpython-311.pyc" % i for i in range(6)]
    for i, n in enumerate(pyc):
        cl.make_file(st.s("pkg", "__pycache__", n), 3000 + i, seed=300 + i)
    cl.drop_caches()
    st.emu_reset()
    s0 = st.stats()
    cold_open(st, "pkg")
    cl.check_content("__pycache__/%s: bytes" % pyc[0], st.p("pkg", "__pycache__", pyc[0]),
                     st.s("pkg", "__pycache__", pyc[0]))
    s1 = settle(st)
    h.eq("two bursts (pkg, pkg/__pycache__)", cl.delta(s1, s0, "sibling_scans"), 2)
    h.check("their listings were the index's passes", cl.delta(s1, s0, "index_builds") >= 2,
            str(s1))
    e0, i0 = st.emu_stats(), st.stats()
    h.eq("the listing", sorted(os.listdir(st.p("pkg"))),
         sorted(list(files) + ["__init__.py", "__pycache__", "big.bin", "fifo", "link.py",
                               "sub"]))
    for name in sorted(files):
        os.stat(st.p("pkg", name))
    for n in pyc[1:]:
        cl.check_content("__pycache__/%s: bytes" % n, st.p("pkg", "__pycache__", n),
                         st.s("pkg", "__pycache__", n))
    e1, i1 = st.emu_stats(), st.stats()
    h.eq("pkg listed again through the mount: no READDIR at efs-emu",
         cl.delta(e1, e0, "readdirs"), 0)
    h.eq("no LOOKUP at efs-emu for pkg's names nor __pycache__'s",
         cl.delta(e1, e0, "lookups"), 0)
    h.check("__pycache__'s names answered from the index",
            cl.delta(i1, i0, "index_lookups") >= len(pyc) - 1, str(i1))
    st.check_umount("clean unmount")


if __name__ == "__main__":
    cl.main([test_siblings, test_listed_first, test_burst_lists_for_the_index])
