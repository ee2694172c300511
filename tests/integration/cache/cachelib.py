"""Helpers shared by the cache behaviour tests (tests/integration/cache/test_*.py).

Each test builds the same stack:

    SOURCE dir  --efs-emu-->  emu mount  --efscache-->  mount
    (base/src)                (base/emu)                (base/mnt, cache_dir base/cache)

efs-emu's counters are the independent witness of what efscache fetched from the "EFS"
side; efscache's own counters (user.efscache.stats) say what it believes it did.  Every
content check compares a hash of what the mount returns with a hash of the SOURCE file.

Built on ../harness.py (mounting, check/report API, cleanup of mounts and daemons).
"""

import glob
import hashlib
import os
import socket
import struct
import subprocess
import time

import harness as h

KiB = 1024
MiB = 1024 * 1024

# Fast emulator: low latency, no bandwidth cap.  By default efs-emu runs in its NFS-like mode (acregmin=3, acdirmin=30, close-to-open,
# ESTALE: tests/emu/README.md), as the daemon meets EFS: a validation answered from the
# client's cache instead of the "server" is caught.  EFSCACHE_TEST_EMU_NFS=0 runs the cache
# tests against an uncached source instead (timeout=0), as before issue 7.
EMU_NFS = os.environ.get("EFSCACHE_TEST_EMU_NFS", "1") == "1"
EMU_FAST = ("latency_ms=0.2", "meta_latency_ms=0.05", "bw_mib=0") + (
    () if EMU_NFS else ("timeout=0",))

# efscache caches negative entries for the directory's window (acdirmin..acdirmax, 30-60 s by
# default, as the NFS client does with lookupcache=all).  Tests that make a name vanish and
# come back use a 1 s window and wait it out with wait_dir_window().
SHORT_DIR_WINDOW = ("acdirmin=1", "acdirmax=1")
# The emulated NFS client caches missing names for its acdirmin too: the same 1 s.
EMU_SHORT_DIR = EMU_FAST + (("acdirmin=1",) if EMU_NFS else ())
# An uncached source, for tests about how source errors reach the application rather than
# about caching (with NFS-like caching the emulated client answers from its caches).
EMU_UNCACHED = ("latency_ms=0.2", "meta_latency_ms=0.05", "bw_mib=0", "timeout=0")


def wait_dir_window():
    time.sleep(1.3)


def size_after_open(path):
    """st_size as an application sees it right after open(): close-to-open refreshes it."""
    with open(path, "rb") as f:
        return os.fstat(f.fileno()).st_size


# ---------------------------------------------------------------------------------------
# small utilities

def drop_caches():
    """Drop the kernel's page, dentry and inode caches (root only), so that every read
    through a FUSE mount reaches its daemon."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def sha(data):
    return hashlib.sha256(data).hexdigest()


def hash_file(path, bufsize=1 << 20):
    """sha256 of a file read sequentially with a fresh open."""
    return h.sha256_file(path, bufsize)


def make_file(path, size, seed):
    h.make_random_file(path, size, seed)
    return hash_file(path)


def parse_lines(raw):
    """'name value' lines -> dict (ints where possible)."""
    res = {}
    for line in raw.decode(errors="replace").splitlines():
        parts = line.split(None, 1)
        if len(parts) != 2:
            continue
        k, v = parts
        try:
            res[k] = int(v)
        except ValueError:
            res[k] = v.strip()
    return res


def dir_usage(d):
    """Real disk usage of a tree: sum of st_blocks * 512 of every file and directory
    below d (d itself excluded), ignoring files that vanish while we look."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(d):
        for n in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except OSError:
                continue
            total += st.st_blocks * 512
    return total


def file_usage(d):
    """Like dir_usage but only regular files (what cache_size bounds: data + metadata)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(d):
        for n in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except OSError:
                continue
            total += st.st_blocks * 512
    return total


def file_blocks(d):
    """{relative path: st_blocks * 512} of every regular file below d."""
    res = {}
    for dirpath, dirnames, filenames in os.walk(d):
        for n in filenames:
            p = os.path.join(dirpath, n)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            res[os.path.relpath(p, d)] = st.st_blocks * 512
    return res


def stable_file_usage(d, tries=50):
    """Disk usage of the regular files below d from a consistent view: walk twice and
    accept the sum only if no file changed between the two walks (a single walk of a
    changing tree can count a chunk twice: before its eviction in one file and after its
    store in another).  None if the tree never held still."""
    prev = file_blocks(d)
    for _ in range(tries):
        cur = file_blocks(d)
        if cur == prev:
            return sum(cur.values())
        prev = cur
    return None


def flip_byte(path, off):
    """XOR one byte of a file with 0xff (the file is opened without truncation)."""
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        if not b:
            raise ValueError("offset %d past the end of %s" % (off, path))
        f.seek(off)
        f.write(bytes([b[0] ^ 0xFF]))
        f.flush()
        os.fsync(f.fileno())


def read_fd(fd):
    """All bytes of an open fd, read with pread from offset 0."""
    out = []
    off = 0
    while True:
        b = os.pread(fd, 1 << 20, off)
        if not b:
            break
        out.append(b)
        off += len(b)
    return b"".join(out)


def read_range(path, off, n):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, off)
    finally:
        os.close(fd)


def wait_for(cond, timeout, step=0.05):
    """Poll cond() until it is true or timeout seconds passed; returns its last value.
    Only used to wait for an event, never to assert a duration (so a slow build may
    multiply it: h.TIMEOUT_SCALE)."""
    deadline = time.monotonic() + timeout * h.TIMEOUT_SCALE
    while True:
        v = cond()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


# ---------------------------------------------------------------------------------------
# on-disk records (include/store.h)

HEADER = struct.Struct("<8sIIQQqIIqII")  # 64 bytes
assert HEADER.size == 64
SLOT_SIZE = 16


def read_header(meta_path):
    with open(meta_path, "rb") as f:
        raw = f.read(64)
    if len(raw) < 64:
        return None
    (magic, version, chunk_size, ino, size, mtime_s, mtime_ns, nchunks, ctime_s, ctime_ns,
     check) = HEADER.unpack(raw)
    return {"magic": magic, "version": version, "chunk_size": chunk_size, "ino": ino,
            "size": size, "mtime": (mtime_s, mtime_ns), "nchunks": nchunks,
            "ctime": (ctime_s, ctime_ns), "check": check}


def read_slots(meta_path):
    """List of (hash, len, check) of every slot of a record."""
    with open(meta_path, "rb") as f:
        raw = f.read()
    res = []
    for off in range(64, len(raw) - SLOT_SIZE + 1, SLOT_SIZE):
        res.append(struct.unpack_from("<QII", raw, off))
    return res


def records(cache_dir):
    """Every (meta, data) path pair of cache_dir/v1/XX/KEY.{meta,data} (data may be
    missing)."""
    res = []
    for meta in sorted(glob.glob(os.path.join(cache_dir, "v1", "*", "*.meta"))):
        res.append((meta, meta[:-5] + ".data"))
    return res


# ---------------------------------------------------------------------------------------
# the daemon's control socket (include/ctlproto.h): one "KIND FIELD=VALUE ..." line per
# message; a request is answered by "progress" lines (verify) and one "done".

def ctl_request(cache_dir, line, timeout=60, progress=None):
    """Send one request to the daemon of cache_dir; returns the fields of its "done" reply
    as a dict of ints.  progress(fields) is called for each "progress" line.  Waits a few
    seconds for the socket (it is bound again after cache_dir is recreated)."""
    path = os.path.join(cache_dir, "ctl.sock")
    deadline = time.monotonic() + 5
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with s:
        s.settimeout(timeout)
        s.sendall(line.encode() + b"\n")
        buf = b""
        while True:
            data = s.recv(4096)
            if not data:
                raise ConnectionError("control socket closed before 'done'")
            buf += data
            while b"\n" in buf:
                msg, buf = buf.split(b"\n", 1)
                kind, *fields = msg.decode().split(" ")
                vals = {k: int(v) for k, v in (f.split("=", 1) for f in fields)}
                if kind == "done":
                    return vals
                if kind == "progress" and progress:
                    progress(vals)


# ---------------------------------------------------------------------------------------
# the emu + efscache stack

def no_readahead(m):
    """Turn off the kernel's readahead on a FUSE mount's bdi.  On the emu mount this keeps
    its counters faithful: otherwise the kernel reads ahead of efscache's chunk reads, and
    when efscache opens the file again (efs-emu does not set keep_cache, so each open drops
    the page cache) those pages are read a second time, which looks like a double fetch."""
    dev = getattr(m, "info", None) and m.info.get("dev")
    if not dev:
        return False
    try:
        with open("/sys/class/bdi/%s/read_ahead_kb" % dev, "w") as f:
            f.write("0\n")
        return True
    except OSError as e:
        h.note("cannot turn off readahead on %s (%s): %s" % (m.mnt, dev, e))
        return False


class Stack:
    """base/src (SOURCE) -> efs-emu at base/emu -> efscache at base/mnt, cache in
    base/cache unless cache_dir is given."""

    def __init__(self, cache_opts=(), emu_opts=EMU_FAST, cache_dir=None, base=None,
                 foreground=True, chunk_size="256K", cache_env=None):
        self.base = base or h.tmpdir("efscache-cache-")
        self.src = os.path.join(self.base, "src")
        self.emu = os.path.join(self.base, "emu")
        self.mnt = os.path.join(self.base, "mnt")
        self.cache_dir = cache_dir or os.path.join(self.base, "cache")
        self.foreground = foreground
        self.chunk_size = chunk_size
        self.cache_opts = list(cache_opts)
        # the environment of the efscache daemon (None: ours); a callable gets the Stack
        # (faultinj_env needs cache_dir)
        self.cache_env = cache_env(self) if callable(cache_env) else cache_env
        h.mkdirs(self.src, self.emu, self.mnt)
        self.emu_m = h.mount_emu(self.src, self.emu, *emu_opts)
        no_readahead(self.emu_m)
        self.m = None
        self.mount()

    # -- mounting
    def opts(self, extra=None):
        o = ["cache_dir=" + self.cache_dir]
        if self.chunk_size and not any(x.startswith("chunk_size=") for x in self.cache_opts):
            o.append("chunk_size=" + self.chunk_size)
        o += self.cache_opts
        if extra:
            o += list(extra)
        return o

    def mount(self, extra=None):
        assert self.m is None
        self.m = h.mount_efscache(self.emu, self.mnt, *self.opts(extra),
                                  foreground=self.foreground, env=self.cache_env)
        return self.m

    def umount(self):
        """Unmount efscache cleanly; returns the list of problems (empty when clean)."""
        if self.m is None:
            return []
        probs = self.m.umount()
        self.m = None
        return probs

    def check_umount(self, what="clean unmount"):
        """Unmount and check it was clean, the problems (a daemon still running after the
        wait, with its threads' states; fusermount3's error) in the check's detail."""
        probs = self.umount()
        h.check(what, not probs, "; ".join(probs))

    def remount(self, extra=None):
        self.check_umount("clean unmount before remount")
        return self.mount(extra)

    def daemon_pid(self):
        pids = self.m.daemon_pids()
        return pids[0] if pids else None

    # -- paths
    def s(self, *p):
        return os.path.join(self.src, *p)

    def e(self, *p):
        return os.path.join(self.emu, *p)

    def p(self, *p):
        return os.path.join(self.mnt, *p)

    # -- counters
    def stats(self, settled=True):
        """efscache's counters.  Chunks a reader fetched are written to cache_dir behind its
        reply, and a cold open of a small file fetches its siblings ahead; with settled (the
        default) wait until neither is pending, so counters such as chunks_stored say what
        the reads before the call did, and no request of theirs comes after it."""
        deadline = time.monotonic() + 30
        while True:
            s = parse_lines(os.getxattr(self.mnt, "user.efscache.stats"))
            if not settled or time.monotonic() > deadline or \
                    not (s.get("write_behind_pending") or s.get("sibling_pending")):
                return s
            time.sleep(0.01)

    def status(self, rel, settled=True):
        """efscache's status of one file; with settled (the default), once the chunks its
        reads fetched are written (see stats): cached_bytes then counts them."""
        if settled:
            self.stats()
        return parse_lines(os.getxattr(self.p(rel), "user.efscache.status"))

    def evict(self, rel):
        r = ctl_request(self.cache_dir, "evict ino=%d" % os.stat(self.p(rel)).st_ino)
        if r.get("error"):
            raise OSError(r["error"], os.strerror(r["error"]), self.p(rel))
        return r

    def verify_all(self):
        return ctl_request(self.cache_dir, "verify", timeout=300)

    def emu_stats(self):
        return h.emu_stats(self.emu)

    def emu_file_stats(self, rel):
        return h.emu_stats(self.e(rel))

    def emu_read_bytes(self):
        return self.emu_stats().get("read_bytes", 0)

    def emu_reset(self):
        h.emu_reset(self.emu)

    def emu_set(self, name, value):
        if isinstance(value, str):
            value = value.encode()
        os.setxattr(self.emu, "user.efsemu." + name, value)

    # -- records of one file
    def record_of(self, rel):
        """(meta, data) of the record whose header names the source inode of rel (the
        inode as efscache sees it, i.e. through the emu), or None."""
        ino = os.stat(self.e(rel)).st_ino
        for meta, data in records(self.cache_dir):
            hdr = read_header(meta)
            if hdr and hdr["magic"] == b"EFSCMETA" and hdr["ino"] == ino:
                return meta, data
        return None

    def stderr(self):
        return self.m.stderr() if self.m else ""


# ---------------------------------------------------------------------------------------
# cache-side faults: the LD_PRELOAD shim (tests/faultinj/README.md) and damage underneath

def _faultinj_so():
    v = os.environ.get("EFSCACHE_FAULTINJ_SO")
    if v:
        return v
    d = os.environ.get("EFSCACHE_BUILD_DIR") or os.path.dirname(os.path.dirname(h.EFSCACHE_BIN))
    return os.path.join(d, "tests", "faultinj", "efscache-faultinj.so")


FAULTINJ_SO = _faultinj_so()


def sanitizer_runtime():
    """The path of the sanitizer runtime (libasan, libtsan) the efscache binary links, or
    None."""
    try:
        out = subprocess.run(["ldd", h.EFSCACHE_BIN], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0].startswith(("libasan", "libtsan")) and "=>" in parts:
            return parts[parts.index("=>") + 1]
    return None


def faultinj_env(st):
    """The daemon's environment under the shim: calls on st.cache_dir fail as the rules in
    st.base/faultinj.rules say (faultinj_set rewrites them while it runs; the shim reads the
    file again within 20 ms of a call on cache_dir, and the sweeper makes one every second).
    A sanitizer build's daemon gets its runtime preloaded first (it must come first): its
    interceptors then call the shim (built without instrumentation), which calls libc."""
    if not os.path.exists(FAULTINJ_SO):
        raise RuntimeError("the fault injection shim %s is not built" % FAULTINJ_SO)
    st.faultinj_rules = os.path.join(st.base, "faultinj.rules")
    faultinj_set(st, "", settle=False)
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(x for x in (sanitizer_runtime(), FAULTINJ_SO,
                                             env.get("LD_PRELOAD")) if x)
    env["EFSCACHE_FAULTINJ_DIR"] = os.path.realpath(st.cache_dir) \
        if os.path.exists(st.cache_dir) else st.cache_dir
    env["EFSCACHE_FAULTINJ_FILE"] = st.faultinj_rules
    return env


def faultinj_set(st, rules, settle=True):
    """Arm rules ("OP ERRNO [kind=K] [after=N] [count=M] [p=P] [seed=S]" lines, see
    tests/faultinj/faultinj.h) in the running daemon's shim; "" disarms.  Written whole
    (temporary file and rename) so that the shim never reads half of it.  With settle,
    wait until the daemon's log says the shim read them (it logs every load)."""
    settle = settle and getattr(st, "m", None) is not None
    before = st.stderr().count("rule(s) armed") if settle else 0
    tmp = st.faultinj_rules + ".tmp"
    with open(tmp, "w") as f:
        f.write(rules + "\n")
    os.replace(tmp, st.faultinj_rules)
    if settle:
        ok = wait_for(lambda: st.stderr().count("rule(s) armed") > before, timeout=10,
                      step=0.02)
        h.check("faultinj: the daemon's shim loaded %r" % rules.replace("\n", "; "), ok,
                st.stderr()[-500:])


def faultinj_failed(st, op=None):
    """How many 'first failure' lines the shim logged (one per rule that fired), for op."""
    lines = [x for x in st.stderr().splitlines() if "efscache-faultinj" in x and "fails with" in x]
    return len([x for x in lines if op is None or x.split(": ", 1)[1].startswith(op + " ")])


def rm_data_files(cache_dir):
    """`rm -rf cache_dir` caught half way: every v1/XX/KEY.data removed, the .meta files
    left (rm removes a record's data file before its meta file).  Returns how many."""
    n = 0
    for data in glob.glob(os.path.join(cache_dir, "v1", "*", "*.data")):
        try:
            os.unlink(data)
            n += 1
        except FileNotFoundError:
            pass
    return n


def read_direct_all(path, size):
    """All of path (size bytes expected), read with O_DIRECT in 1 MiB requests: every read
    reaches the daemon whatever the page cache holds."""
    import mmap
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, MiB)
    out = []
    try:
        off = 0
        while off <= size:
            n = os.preadv(fd, [buf], off)
            if n <= 0:
                break
            out.append(bytes(buf[:n]))
            off += n
    finally:
        buf.close()
        os.close(fd)
    return b"".join(out)


def read_whole(path):
    with open(path, "rb") as f:
        return f.read()


def has_zero_page(data, page=4096):
    """Whether data (whose source has no zero page) holds a page of zeros."""
    z = bytes(page)
    return any(data[o:o + page] == z for o in range(0, len(data) - page + 1, page))


def delta(after, before, key):
    return after.get(key, 0) - before.get(key, 0)


def check_content(name, mnt_path, src_path, expect_hash=None):
    """Hash of the file read through the mount == hash of the SOURCE file."""
    want = expect_hash or hash_file(src_path)
    try:
        got = hash_file(mnt_path)
    except OSError as e:
        return h.check(name, False, "reading %s failed: %s" % (mnt_path, e))
    return h.check(name, got == want, "sha256 through the mount %s != source %s"
                   % (got[:16], want[:16]))


def check_mounts_clean(base):
    left = h.mounts_under(base)
    return h.check("nothing left mounted under %s" % base, not left,
                   str([x["mountpoint"] for x in left]))


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


def main(tests):
    h.require_fuse()
    h.run_tests(tests)
