"""Measurements for contrib/bench: each function does or reads one measurement and returns
one line of space-separated numbers for the shell scripts (Python 3 standard library only).

Contract: no report logic and no targets here; numbers are raw (bytes, seconds, MiB/s,
IOPS, CPU seconds, KiB), never ratios.  A value that cannot be read is "-", never a guess.

  fio_summary(JSON)        "MiB/s IOPS bytes seconds" of a fio --output-format=json run
  load(FILE, PIECE_MIB)    "seconds bytes": FILE read whole in pieces, as model loaders do
  gentree/imports          a site-packages stand-in and "seconds files" to import it
  pin(READY, FILES)        hold FILEs mapped (page cache kept against others' drop_caches)
  snap(PID, EMU)           "cpu_seconds vmhwm_kib emu_read_bytes" of a daemon and efs-emu
  randread(FILE, N)        "ms_per_read" of N random 4 KiB preads (sweep.sh)
"""

import importlib
import json
import os
import random
import sys
import time

MIB = 1 << 20
GIB = 1 << 30


def fio_summary(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    # fio may print notes before the JSON document, which starts a line with "{".
    start = 0 if text.startswith("{") else text.index("\n{") + 1
    data = json.loads(text[start:])
    jobs = data["jobs"]
    rd_bytes = sum(j["read"]["io_bytes"] for j in jobs)
    # With group_reporting there is one entry; otherwise the jobs ran in parallel.
    runtime_ms = max(j["read"]["runtime"] for j in jobs)
    iops = sum(j["read"]["iops"] for j in jobs)
    secs = runtime_ms / 1000.0
    mibps = rd_bytes / MIB / secs if secs > 0 else 0.0
    if any(j.get("error", 0) for j in jobs):
        raise SystemExit("fio reported an error: %s" % [j.get("error") for j in jobs])
    return "%.3f %.1f %d %.3f" % (mibps, iops, rd_bytes, secs)


def load(path, piece_mib=64):
    buf = bytearray(piece_mib * MIB)
    view = memoryview(buf)
    total = 0
    t0 = time.monotonic()
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(view)
            if not n:
                break
            total += n
    secs = time.monotonic() - t0
    return "%.6f %d" % (secs, total)


MOD_TEXT = '''"""Module {m} of package {p}: a stand-in for a small library module."""
import os
import sys

VALUE = {v}
NAME = "pkg{p:04d}.mod{m}"


def f(x):
    return x + VALUE


class C:
    def __init__(self):
        self.v = VALUE
''' + "# padding line to make the file a few KiB like a real module\n" * 24


def gentree(root, pkgs, mods):
    for p in range(pkgs):
        d = os.path.join(root, "pkg%04d" % p)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "__init__.py"), "w") as f:
            f.write("X = %d\n" % p)
        for m in range(mods):
            with open(os.path.join(d, "mod%d.py" % m), "w") as f:
                f.write(MOD_TEXT.format(p=p, m=m, v=p * 100 + m))


def imports(root, pkgs, mods):
    sys.path.insert(0, root)
    t0 = time.monotonic()
    n = 0
    for p in range(pkgs):
        for m in range(mods):
            importlib.import_module("pkg%04d.mod%d" % (p, m))
            n += 1
        n += 1  # __init__.py
    return "%.6f %d" % (time.monotonic() - t0, n)


def pin(ready, paths):
    import mmap
    import signal
    maps = []
    for p in paths:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                continue
            m = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
        try:
            m.madvise(mmap.MADV_WILLNEED)
        except (AttributeError, OSError):
            pass
        page = mmap.PAGESIZE
        s = 0
        for off in range(0, size, page):
            s += m[off]
        maps.append(m)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    with open(ready, "w") as f:
        f.write("%d\n" % os.getpid())
    while not stop:
        signal.pause()


def emu_read_bytes(mnt):
    try:
        v = os.getxattr(mnt, "user.efsemu.stats").decode()
        return dict(kv.split("=", 1) for kv in v.split())["read_bytes"]
    except (OSError, KeyError, ValueError):
        return "-"


def snap(pid, emu):
    try:
        ps = procstat(int(pid)) if pid != "-" else "- -"
    except (OSError, ValueError):
        ps = "- -"
    return "%s %s" % (ps, emu_read_bytes(emu) if emu != "-" else "-")


def procstat(pid):
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    # comm may contain spaces: fields after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])
    hwm = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return "%.2f %d" % ((utime + stime) / os.sysconf("SC_CLK_TCK"), hwm)


def randread(path, n, seed=7):
    """ms per read of n 4 KiB preads at random 4 KiB-aligned offsets (a fixed seed, so
    every setup reads the same offsets)."""
    rng = random.Random(seed)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        t0 = time.monotonic()
        for _ in range(n):
            os.pread(fd, 4096, rng.randrange(0, size // 4096) * 4096)
        secs = time.monotonic() - t0
    finally:
        os.close(fd)
    return "%.2f" % (secs / n * 1000)
