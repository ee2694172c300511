"""efscachectl against a real mount: every subcommand's output and exit status.

Stack (as the cache tests build it):

    SOURCE dir  --efs-emu-->  emu mount  --efscache-->  mount
    (base/src)                (base/emu)                (base/mnt, cache_dir base/cache)

efs-emu's read counters are the independent witness that `warm` made the daemon fetch
and that a second `warm` did not.  Built on ../harness.py.

Environment: EFSCACHECTL_BIN (set by meson; otherwise looked up next to EFSCACHE_BIN),
plus what harness.py reads.  CTL_BIG_MIB sizes the big file (default 40: enough for
warm to split it into segments of 16 MiB).
"""

import errno
import os
import pty
import re
import select
import subprocess
import time

import harness as h

MiB = 1 << 20
NSMALL = 200
BIG = int(os.environ.get("CTL_BIG_MIB", "40")) * MiB
EMU_OPTS = ("latency_ms=0.2", "meta_latency_ms=0.05", "bw_mib=0", "timeout=0")
COUNTERS = ["reads", "hits", "misses", "fetch_waits", "bytes_from_cache", "bytes_from_source",
            "bytes_bypassed", "chunks_stored", "checksum_mismatches", "chunks_verified",
            "evictions", "evicted_bytes", "validations", "stale_dropped", "records_gone",
            "fallbacks",
            "cache_enospc", "cache_io_errors", "cache_dir_recreated", "source_errors",
            "prefetched_chunks", "prefetch_unused_bytes", "scatter_sweeps", "kept_hits",
            "pushed_bytes", "push_waits",
            "sibling_scans", "sibling_files", "sibling_bytes", "record_readaheads",
            "bytes_served", "passthrough_opens",
            "passthrough_refused", "source_lookups", "source_getattrs", "source_opens",
            "source_readdirs", "kernel_lookups", "kernel_getattrs", "kernel_opens",
            "kernel_flushes", "kernel_releases", "kernel_readdirs", "index_lookups",
            "index_getattrs", "index_listings", "index_builds", "index_checks", "bytes_saved",
            "open_files", "sibling_pending"] + \
    ["fetch_latency_us_le_%d" % b for b in (100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000,
                                            100000, 250000, 500000, 1000000, 2500000, 10000000)] + \
    ["fetch_latency_us_le_inf", "fetch_latency_us_count", "fetch_latency_us_sum",
     "cache_entries", "cache_usage_bytes", "cache_size_bytes", "write_behind_pending",
     "cache_index_ready",
     "cache_dir", "mountpoint", "inodes", "inode_fds", "inode_fd_budget", "inode_reopens",
     "index_snapshots", "index_memory_bytes", "index_memory_budget", "index_loads",
     "index_saves"]
SUMMARY = re.compile(r"^warmed (\d+) files?, ([\d.]+) MiB in ([\d.]+) s \(([\d.]+) MiB/s\)(.*)$",
                     re.M)
SAN_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def _find_ctl():
    v = os.environ.get("EFSCACHECTL_BIN")
    if v:
        return os.path.abspath(v)
    if h.EFSCACHE_BIN:
        p = os.path.join(os.path.dirname(h.EFSCACHE_BIN), "efscachectl")
        if os.path.exists(p):
            return p
    return None


CTL = _find_ctl()
S = {}  # the stack: base, src, emu, mnt, cache, m_emu, m


class Run:
    def __init__(self, args, rc, out, err):
        self.args, self.rc, self.out, self.err = args, rc, out, err

    def __repr__(self):
        return "efscachectl %s -> rc %s\nstdout:\n%s\nstderr:\n%s" % (
            " ".join(self.args), self.rc, self.out, self.err)


def ctl(*args, timeout=300):
    p = subprocess.run([CTL] + list(args), capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    r = Run(args, p.returncode, p.stdout, p.stderr)
    if any(mk in p.stderr for mk in SAN_MARKERS):
        h.check("no sanitizer report from efscachectl", False, r)
    return r


def ctl_tty(*args, timeout=300):
    """Run with stderr (and stdout) on a pseudo-terminal; returns (rc, everything)."""
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execv(CTL, [CTL] + list(args))
        finally:
            os._exit(127)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                b = os.read(fd, 65536)
            except OSError as e:
                if e.errno == errno.EIO:
                    break
                raise
            if not b:
                break
            chunks.append(b)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def raw_stats(path=None):
    r = ctl("stats", "--raw", path or S["mnt"])
    res = {}
    for line in r.out.splitlines():
        k, _, v = line.partition(" ")
        res[k] = int(v) if v.isdigit() else v
    return res


def status_of(path):
    raw = os.getxattr(path, "user.efscache.status").decode()
    res = {}
    for line in raw.splitlines():
        k, _, v = line.partition(" ")
        res[k] = int(v) if v.isdigit() else v
    return res


def emu_read_bytes():
    return h.emu_stats(S["emu"])["read_bytes"]


def small_files():
    res = []
    for dirpath, _, files in os.walk(os.path.join(S["src"], "tree")):
        for f in files:
            res.append(os.path.relpath(os.path.join(dirpath, f), S["src"]))
    return sorted(res)


def mpath(*p):
    return os.path.join(S["mnt"], *p)


def flip_byte(path, off):
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0xFF]))


def big_data_file():
    best = None
    for dirpath, _, files in os.walk(os.path.join(S["cache"], "v1")):
        for f in files:
            if f.endswith(".data"):
                p = os.path.join(dirpath, f)
                if best is None or os.stat(p).st_blocks > os.stat(best).st_blocks:
                    best = p
    return best


# ---------------------------------------------------------------------------------------

def setup():
    base = h.tmpdir("efscache-ctl-")
    src, emu, mnt, cache = (os.path.join(base, d) for d in ("src", "emu", "mnt", "cache"))
    h.mkdirs(src, emu, mnt)
    for i in range(NSMALL):
        d = os.path.join(src, "tree", "d%d" % (i % 5))
        os.makedirs(d, exist_ok=True)
        h.make_random_file(os.path.join(d, "f%03d" % i), 1 + (i * 997) % 20000, seed=i + 1)
    h.make_random_file(os.path.join(src, "big"), BIG, seed=7)
    h.write_file(os.path.join(src, "empty"), b"")
    m_emu = h.mount_emu(src, emu, *EMU_OPTS)
    m = h.mount_efscache(emu, mnt, cache_dir=cache)
    S.update(base=base, src=src, emu=emu, mnt=mnt, cache=cache, m_emu=m_emu, m=m)


def test_usage():
    r = ctl("--version")
    h.check("--version: rc 0 and 'efscachectl X.Y.Z'",
            r.rc == 0 and re.match(r"^efscachectl \d+\.\d+\.\d+\S*\n$", r.out), r)
    r = ctl("--help")
    h.check("--help: rc 0 and names every command",
            r.rc == 0 and all(c in r.out for c in ("stats", "status", "warm", "evict",
                                                   "verify", "-j N", "--raw")), r)
    h.eq("warm --help: rc 0", ctl("warm", "--help").rc, 0)
    for args, what in ((), "no command"), (("frobnicate",), "unknown command"), \
            (("--bogus",), "unknown option"), (("warm", "-j", "0", S["mnt"]), "-j 0"), \
            (("warm", "-j", "x", S["mnt"]), "-j x"), (("warm", "-j"), "-j without value"), \
            (("warm",), "warm without PATH"), (("stats",), "stats without MOUNTPOINT"), \
            (("stats", S["mnt"], S["mnt"]), "stats with two paths"), \
            (("verify",), "verify without path"), (("status", "-q", S["mnt"]), "bad option"):
        r = ctl(*args)
        h.check("usage error (%s): rc 2 and a hint" % what,
                r.rc == 2 and "efscachectl: " in r.err and "--help" in r.err, r)


def test_stats():
    r = ctl("stats", S["mnt"])
    h.check("stats: rc 0, table with hit ratio and human sizes",
            r.rc == 0 and "hit ratio" in r.out and re.search(r"cache_size_bytes\s+[\d.]+ GiB",
                                                                r.out), r)
    raw = ctl("stats", "--raw", S["mnt"])
    names = [line.split(" ", 1)[0] for line in raw.out.splitlines()]
    h.eq("stats --raw: every counter, in order", names, COUNTERS)
    h.check("stats --raw: 'name value' lines, numbers are integers",
            all(re.match(r"^\w+ (\d+|/.*)$", line) for line in raw.out.splitlines()), raw)
    h.eq("stats --raw: cache_dir", raw_stats().get("cache_dir"), S["cache"])
    h.eq("stats on a file below the mount works", ctl("stats", mpath("big")).rc, 0)


def test_status_uncached():
    r = ctl("status", mpath("tree", "d0", "f000"))
    lines = r.out.splitlines()
    h.check("status of an uncached file: rc 0, header + 1 line, 0%, uncached, never",
            r.rc == 0 and len(lines) == 2 and lines[0].split()[:2] == ["SIZE", "CACHED"]
            and re.search(r"\b0%.*uncached\s+never\s+\S+f000$", lines[1]), r)


def test_warm():
    files = small_files()
    before = emu_read_bytes()
    stored = raw_stats()["chunks_stored"]
    sib0 = raw_stats()["sibling_bytes"]
    r = ctl("warm", mpath("tree"), mpath("big"), mpath("empty"))
    m = SUMMARY.search(r.out)
    h.check("warm tree+big: rc 0 and the summary line", r.rc == 0 and m and not r.err, r)
    total = BIG + sum(os.path.getsize(os.path.join(S["src"], f)) for f in files)
    if m:
        # The daemon fetches a directory's small files ahead of warm's reads of them
        # (-o siblings): warm skips those it then finds cached.
        sib = (raw_stats()["sibling_bytes"] - sib0) / MiB
        h.eq("warm: files counted", int(m.group(1)), len(files) + 2)
        h.check("warm: MiB read ~ total size, less what the daemon fetched ahead",
                float(m.group(2)) < total / MiB + 0.2 and
                float(m.group(2)) + sib > total / MiB - 0.2,
                "%s + %.1f fetched ahead vs %.1f" % (m.group(2), sib, total / MiB))
        h.note("warm of %d files + %d MiB: %s MiB/s" % (len(files), BIG // MiB, m.group(4)))
    got = emu_read_bytes() - before
    h.check("warm: the daemon fetched everything from the source (emu read_bytes)",
            got >= total, "emu read %d bytes, files hold %d" % (got, total))
    h.check("warm: chunks were stored", raw_stats()["chunks_stored"] - stored >= len(files))
    bad = [f for f in files + ["big"]
           if status_of(mpath(f))["cached_bytes"] != os.path.getsize(os.path.join(S["src"], f))]
    h.check("warm: every file fully cached afterwards", not bad, bad[:5])
    h.eq("warm: big reads back identical", h.sha256_file(mpath("big")),
         h.sha256_file(os.path.join(S["src"], "big")))

    before = emu_read_bytes()
    r = ctl("warm", "-j", "2", mpath("tree"), mpath("big"))
    h.check("warm again: rc 0, everything 'already cached'",
            r.rc == 0 and ("%d already cached" % (len(files) + 1)) in r.out, r)
    h.eq("warm again: nothing read from the source", emu_read_bytes() - before, 0)


def test_status():
    files = small_files()
    # Each file open while status runs: the open validates its record and keeps the kernel's
    # inode, so a drop_caches by another process on the machine (which makes the daemon
    # unload an entry the kernel forgot: "unvalidated") cannot change what status says.
    held = [os.open(mpath(f), os.O_RDONLY) for f in files]
    try:
        r = ctl("status", mpath("tree"))
    finally:
        for fd in held:
            os.close(fd)
    lines = r.out.splitlines()
    h.check("status DIR: rc 0, header + one line per file + total",
            r.rc == 0 and len(lines) == len(files) + 2, r)
    h.check("status DIR: total line", re.search(r"100%%\s+%d/%d\s+\d+\s+%d files\s+.*\(total\)$"
                                                % (len(files), len(files), len(files)),
                                                lines[-1] if lines else ""), r)
    h.check("status DIR: every file valid with a local time",
            all(re.search(r"100%.*valid\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s", ln)
                for ln in lines[1:-1]), r)
    r = ctl("status", mpath("big"), mpath("empty"))
    lines = r.out.splitlines()
    nch = status_of(mpath("big"))["chunks"]
    h.check("status FILE FILE: two lines, no total, big 100%% %d/%d" % (nch, nch),
            r.rc == 0 and len(lines) == 3 and re.search(r"100%%\s+%d/%d" % (nch, nch), lines[1])
            and "(total)" not in r.out, r)


def test_evict():
    big = status_of(mpath("big"))
    r = ctl("evict", mpath("big"))
    h.check("evict FILE: rc 0, says what was dropped",
            r.rc == 0 and re.search(r"^dropped [\d.]+ MiB \(%d chunks\): .*big$" % big["chunks_cached"],
                                    r.out, re.M)
            and "from 1 of 1 file" in r.out, r)
    h.eq("evict FILE: nothing cached afterwards", status_of(mpath("big"))["cached_bytes"], 0)
    r = ctl("evict", mpath("big"))
    h.check("evict FILE again: rc 0, 0 B from 0 of 1", r.rc == 0 and
            "evicted 0 B (0 chunks) from 0 of 1 file" in r.out, r)
    files = small_files()
    r = ctl("evict", mpath("tree"))
    h.check("evict DIR: rc 0, total line", r.rc == 0 and re.search(
        r"^evicted .* from %d of %d files$" % (len(files), len(files)), r.out, re.M), r)
    h.check("evict DIR: every file emptied",
            all(status_of(mpath(f))["cached_bytes"] == 0 for f in files))
    # Refill for the verify tests.
    h.eq("warm after evict: rc 0", ctl("warm", mpath("tree"), mpath("big")).rc, 0)


def test_not_on_mount():
    local = os.path.join(S["base"], "local-file")
    h.write_file(local, b"x")
    for cmd in (("status",), ("evict",), ("warm",), ("stats",)):
        r = ctl(*cmd, local)
        h.check("%s on a local file: rc 1, 'is not on an efscache mount'" % cmd[0],
                r.rc == 1 and "%s is not on an efscache mount" % local in r.err, r)
    h.eq("evict on a local file left no xattr behind", os.listxattr(local), [])
    r = ctl("verify", S["base"])
    h.check("verify on a plain dir: rc 1, names it", r.rc == 1 and
            "is not on an efscache mount, nor a cache_dir" in r.err, r)
    for cmd in ("status", "evict", "warm", "verify", "stats"):
        r = ctl(cmd, mpath("no-such-file"))
        h.check("%s on a missing path: rc 1, ENOENT text" % cmd,
                r.rc == 1 and "no-such-file: No such file or directory" in r.err, r)


def test_warm_errors():
    victim = small_files()[3]
    ctl("evict", mpath("tree"))
    os.setxattr(S["emu"], "user.efsemu.fail_eio", victim.encode())
    try:
        r = ctl("warm", mpath("tree"))
    finally:
        os.setxattr(S["emu"], "user.efsemu.fail_eio", b"")
    h.check("warm with an unreadable file: rc 1, names it with the errno text, '1 failed'",
            r.rc == 1 and "%s: Input/output error" % mpath(victim) in r.err
            and "1 failed" in r.out and r.err.count("\n") == 1, r)
    h.eq("warm after the fault clears: rc 0", ctl("warm", mpath("tree")).rc, 0)


def test_warm_tty():
    ctl("evict", mpath("big"))
    # Slow enough (about 2 s) for several redraws of the line.
    os.setxattr(S["emu"], "user.efsemu.bw_mib", b"%d" % max(1, BIG // MiB // 2))
    try:
        rc, out = ctl_tty("warm", mpath("big"))
    finally:
        os.setxattr(S["emu"], "user.efsemu.bw_mib", b"0")
    h.check("warm on a TTY: rc 0, a redrawn progress line, then the summary",
            rc == 0 and out.count("\rwarm: ") >= 2 and "files" in out and "MiB/s" in out
            and "ETA" in out
            and SUMMARY.search(re.sub(r"\x1b\[K", "", out).replace("\r", "\n")),
            repr(out[-600:]))


def test_verify_mount():
    r = ctl("verify", S["mnt"])
    h.check("verify MOUNTPOINT (clean): rc 0, chunks bad 0",
            r.rc == 0 and re.search(r"^chunks bad\s+0$", r.out, re.M)
            and re.search(r"^chunks checked\s+[1-9]\d*$", r.out, re.M), r)
    data = big_data_file()
    st = status_of(mpath("big"))
    mism = raw_stats()["checksum_mismatches"]
    flip_byte(data, st["chunk_size"] + 12345)  # inside chunk 1
    r = ctl("verify", S["mnt"])
    h.check("verify MOUNTPOINT (1 flipped byte): rc 1, chunks bad 1",
            r.rc == 1 and re.search(r"^chunks bad\s+1 ", r.out, re.M)
            and "1 bad chunk found" in r.err, r)
    h.eq("verify: checksum_mismatches counted", raw_stats()["checksum_mismatches"] - mism, 1)
    # big is fully cached: a complete record keeps every byte of its data file (it may
    # back a passthrough open); the bad chunk is left unverified, and rewritten with
    # the right bytes by the next read of it.
    after = status_of(mpath("big"))
    h.eq("verify: the complete record keeps its chunks", after["chunks_cached"],
         st["chunks_cached"])
    h.check("verify: the bad chunk is not counted verified",
            after["chunks_verified"] <= st["chunks_cached"] - 1, after)
    h.eq("verify: big still reads back correctly", h.sha256_file(mpath("big")),
         h.sha256_file(os.path.join(S["src"], "big")))
    h.eq("verify again: rc 0", ctl("verify", S["mnt"]).rc, 0)
    r = ctl("verify", S["cache"])
    h.check("verify CACHE_DIR while mounted: rc 1, in use",
            r.rc == 1 and "cache_dir is in use by a running efscache; run verify on its "
            "MOUNTPOINT instead" in r.err, r)


def test_evict_ro():
    mnt = os.path.join(S["base"], "mnt-ro")
    m = h.mount_efscache(S["emu"], mnt, "ro", cache_dir=os.path.join(S["base"], "cache-ro"))
    try:
        with open(os.path.join(mnt, "big"), "rb") as f:
            while f.read(1 << 20):
                pass
        r = ctl("evict", os.path.join(mnt, "big"))
        h.check("evict on a ro mount: rc 0, bytes dropped",
                r.rc == 0 and "dropped" in r.out, r)
        after = os.getxattr(os.path.join(mnt, "big"), "user.efscache.status").decode()
        h.check("evict on a ro mount: nothing cached after",
                "\ncached_bytes 0\n" in after, after)
        h.eq("status on a ro mount: rc 0", ctl("status", os.path.join(mnt, "big")).rc, 0)
    finally:
        h.unmount(m)


def test_verify_cache_dir():
    ctl("warm", mpath("big"))
    data = big_data_file()
    h.unmount(S["m"])
    flip_byte(data, 3)  # chunk 0
    metas = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(S["cache"], "v1"))
                   for f in fs if f.endswith(".meta") and not data.startswith(
                       os.path.join(dp, f)[:-5]))
    flip_byte(metas[0], 20)  # header: source size
    r = ctl("verify", S["cache"])
    h.check("verify CACHE_DIR: rc 1, 1 record and 1 chunk bad, both named",
            r.rc == 1 and re.search(r"^records bad\s+1 \(removed\)$", r.out, re.M)
            and re.search(r"^chunks bad\s+1 \(removed\)$", r.out, re.M)
            and "is corrupt, removed" in r.err and "chunk 0: checksum mismatch" in r.err, r)
    h.check("verify CACHE_DIR: the corrupt record's files are gone",
            not os.path.exists(metas[0]) and not os.path.exists(metas[0][:-5] + ".data"))
    r = ctl("verify", S["cache"])
    h.check("verify CACHE_DIR again: rc 0, nothing bad",
            r.rc == 0 and re.search(r"^records bad\s+0$", r.out, re.M)
            and re.search(r"^chunks bad\s+0$", r.out, re.M), r)
    # Remount on the checked cache: the data is still served correctly.
    m = h.mount_efscache(S["emu"], S["mnt"], cache_dir=S["cache"])
    S["m"] = m
    h.eq("after offline verify: big reads back correctly", h.sha256_file(mpath("big")),
         h.sha256_file(os.path.join(S["src"], "big")))


def main():
    h.require_fuse()
    if not CTL or not os.path.exists(CTL):
        h.check("efscachectl binary exists", False, "EFSCACHECTL_BIN=%r" % CTL)
        h.finish()
    setup()
    h.run_tests([test_usage, test_stats, test_status_uncached, test_warm, test_status,
                 test_evict, test_not_on_mount, test_warm_errors, test_warm_tty,
                 test_verify_mount, test_evict_ro, test_verify_cache_dir])


if __name__ == "__main__":
    main()
