"""Shared helpers for the efscache integration tests (Python 3 standard library only).

Every test script:

    import harness as h
    h.require_fuse()                      # exit 77 only when /dev/fuse is unusable
    base = h.tmpdir()                     # removed at exit, after every mount is gone
    m = h.mount_efscache(src, mnt, "ttl=0")
    h.check("name", condition, "detail")  # prints "ok - name" / "not ok - name: detail"
    h.run_tests([test_a, test_b])         # runs each, turns exceptions into "not ok", exits

The script exits 1 when any check failed, 0 otherwise.  Mounts are unmounted and the
daemons we started are stopped (by PID, never by name) in `finally`, at exit, on SIGTERM
and by a watchdog thread that fires when the script runs too long.

Environment: EFSCACHE_BIN, EFS_EMU_BIN (set by meson; otherwise looked up in the usual
build directories), EFSCACHE_TEST_TIMEOUT (seconds for the watchdog, default 280).
"""

import atexit
import ctypes
import ctypes.util
import errno
import faulthandler
import hashlib
import os
import pickle
import select
import shutil
import signal
import stat as _stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

# ---------------------------------------------------------------------------------------
# binaries

_HERE = os.path.dirname(os.path.abspath(__file__))
SRC_DIR = os.environ.get("EFSCACHE_SRC_DIR") or os.path.dirname(os.path.dirname(_HERE))


def _find_bin(envname, relpaths):
    v = os.environ.get(envname)
    if v:
        return os.path.abspath(v)
    dirs = []
    if os.environ.get("EFSCACHE_BUILD_DIR"):
        dirs.append(os.environ["EFSCACHE_BUILD_DIR"])
    dirs += [os.path.join(SRC_DIR, d) for d in ("build-it", "build")]
    for d in dirs:
        for r in relpaths:
            p = os.path.join(d, r)
            if os.path.isfile(p) and os.access(p, os.X_OK):
                return os.path.abspath(p)
    return None


EFSCACHE_BIN = _find_bin("EFSCACHE_BIN", ["src/efscache"])
EFS_EMU_BIN = _find_bin("EFS_EMU_BIN", ["tests/emu/efs-emu"])

# ---------------------------------------------------------------------------------------
# check / report API

_failures = []
_count = 0
_lock = threading.Lock()
_main_pid = os.getpid()


def _emit(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def check(name, cond, detail=""):
    """Record one check.  Returns cond so callers can chain."""
    global _count
    with _lock:
        _count += 1
        if cond:
            _emit("ok - %s" % name)
        else:
            d = str(detail) if detail != "" else "check failed"
            _emit("not ok - %s: %s" % (name, d.replace("\n", "\n#   ")))
            _failures.append(name)
    return bool(cond)


def eq(name, got, expected, detail=""):
    """check(got == expected) with both values in the message."""
    if got == expected:
        return check(name, True)
    msg = "got %r, expected %r" % (got, expected)
    if detail:
        msg += " (%s)" % detail
    return check(name, False, msg)


def skip(name, reason):
    with _lock:
        _emit("ok - %s # SKIP %s" % (name, reason))


def note(msg):
    with _lock:
        for line in str(msg).splitlines() or [""]:
            _emit("# " + line)


def failed():
    return bool(_failures)


def errno_of(fn, *args, **kw):
    """Run fn; return 0 on success, the errno of an OSError otherwise."""
    try:
        fn(*args, **kw)
        return 0
    except OSError as e:
        return e.errno


def ename(e):
    if e is None:
        return "None"
    if isinstance(e, int):
        return errno.errorcode.get(e, str(e)) if e else "0 (success)"
    return repr(e)


def check_errno(name, fn, args_mnt, args_src=None, expected=None):
    """Call fn(*args_mnt) and fn(*args_src); the errno values must be equal (and equal to
    `expected` when given: an int or a set of ints)."""
    got = errno_of(fn, *args_mnt)
    ref = errno_of(fn, *args_src) if args_src is not None else None
    ok = True
    parts = ["mount: %s" % ename(got)]
    if args_src is not None:
        parts.append("source: %s" % ename(ref))
        ok = ok and got == ref
    if expected is not None:
        exp = expected if isinstance(expected, (set, frozenset, tuple, list)) else {expected}
        parts.append("expected: %s" % "/".join(ename(x) for x in exp))
        ok = ok and got in exp
    return check(name, ok, ", ".join(parts))


def run_tests(tests):
    """Run each test function; an exception becomes a failed check.  Then clean up and exit
    0 (all passed) or 1."""
    try:
        for t in tests:
            try:
                t()
            except SystemExit:
                raise
            except BaseException as e:  # noqa: BLE001 - report everything
                tb = traceback.format_exc()
                check("%s (raised)" % t.__name__, False, "%s: %s\n%s" % (type(e).__name__, e, tb))
                if isinstance(e, KeyboardInterrupt):
                    break
    finally:
        cleanup()
    finish()


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ERROR: ThreadSanitizer", "WARNING: ThreadSanitizer")


def note_daemon_pids(pids):
    """Remember PIDs of daemons started outside mount_efscache (for sanitizer reports)."""
    _all_daemons.update(pids)


def check_sanitizer_reports():
    """Sanitizer reports of the daemons we started: in their captured stderr, or (when
    ASAN_OPTIONS/UBSAN_OPTIONS set log_path=PREFIX, as tests/run.sh does for daemons that
    lose their stderr) in PREFIX.PID files."""
    found = []
    for path in _stderr_files:
        try:
            with open(path, errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        if any(mk in text for mk in SANITIZER_MARKERS):
            found.append("%s:\n%s" % (path, text[-3000:]))
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS"):
        for item in os.environ.get(var, "").split(":"):
            if not item.startswith("log_path="):
                continue
            prefix = item[len("log_path="):]
            for pid in sorted(_all_daemons):
                p = "%s.%d" % (prefix, pid)
                try:
                    if os.path.getsize(p) > 0:
                        with open(p, errors="replace") as f:
                            found.append("%s:\n%s" % (p, f.read()[:3000]))
                except OSError:
                    pass
    if found or any(os.environ.get(v) for v in ("ASAN_OPTIONS", "UBSAN_OPTIONS")) or \
            _stderr_files:
        check("no sanitizer reports from the daemons started by this test", not found,
              "\n".join(found))


def finish():
    cleanup()
    if os.getpid() == _main_pid and not _finished[0]:
        _finished[0] = True
        check_sanitizer_reports()
    if _failures:
        _emit("# %d of %d checks failed:" % (len(_failures), _count))
        for f in _failures:
            _emit("#   %s" % f)
        sys.stdout.flush()
        os._exit(1)
    _emit("# all %d checks passed" % _count)
    sys.stdout.flush()
    os._exit(0)


# ---------------------------------------------------------------------------------------
# FUSE availability

def require_fuse():
    """Exit 77 (meson's "skipped") only when /dev/fuse is missing or cannot be opened."""
    if not os.path.exists("/dev/fuse"):
        _emit("# SKIP: /dev/fuse does not exist")
        sys.exit(77)
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
        os.close(fd)
    except OSError as e:
        _emit("# SKIP: cannot open /dev/fuse: %s" % e)
        sys.exit(77)
    if not EFSCACHE_BIN or not os.path.exists(EFSCACHE_BIN):
        check("efscache binary exists", False, "EFSCACHE_BIN=%r not found" % EFSCACHE_BIN)
        finish()
    _start_watchdog()


# ---------------------------------------------------------------------------------------
# temp dirs

_tmpdirs = []


def tmpdir(prefix="efscache-it-"):
    """A fresh directory (mode 0755 so a non-root test user can traverse it), removed at
    exit after everything mounted below it is unmounted."""
    d = tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("EFSCACHE_TEST_TMP", "/tmp"))
    os.chmod(d, 0o755)
    d = os.path.realpath(d)
    _tmpdirs.append(d)
    return d


def mkdirs(*paths, mode=0o755):
    for p in paths:
        os.makedirs(p, exist_ok=True)
        os.chmod(p, mode)
    return paths[0] if len(paths) == 1 else paths


def write_file(path, data, mode=None):
    if isinstance(data, str):
        data = data.encode()
    with open(path, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def sha256_file(path, bufsize=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(bufsize)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def make_random_file(path, size, seed=0):
    """A file of `size` pseudo-random bytes (fast: a 1 MiB random block, varied per MiB)."""
    block = bytearray(os.urandom(1 << 20)) if seed is None else bytearray(
        hashlib.shake_256(b"efscache-%d" % seed).digest(1 << 20))
    with open(path, "wb") as f:
        off = 0
        i = 0
        while off < size:
            n = min(len(block), size - off)
            struct.pack_into("<QQ", block, 0, i, seed or 0)
            f.write(block[:n])
            off += n
            i += 1


# ---------------------------------------------------------------------------------------
# /proc/self/mountinfo

def _unescape(s):
    out = []
    i = 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mounts():
    """List of dicts (id, dev, mountpoint, opts, fstype, source, superopts)."""
    res = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            res.append({
                "id": int(fields[0]),
                "dev": fields[2],
                "root": _unescape(fields[3]),
                "mountpoint": _unescape(fields[4]),
                "opts": fields[5],
                "fstype": fields[sep + 1],
                "source": _unescape(fields[sep + 2]),
                "superopts": fields[sep + 3] if len(fields) > sep + 3 else "",
            })
    return res


def _canon(path):
    """Absolute, normalized path WITHOUT touching the file system (a hung FUSE mount
    would block a stat/realpath of its mountpoint).  Paths made by tmpdir() are already
    free of symlinks."""
    return os.path.normpath(os.path.abspath(path))


def mounts_at(path):
    path = _canon(path)
    return [m for m in mounts() if m["mountpoint"] == path]


def fuse_mounts_at(path):
    return [m for m in mounts_at(path) if m["fstype"].startswith("fuse")]


def mounts_under(base):
    base = base.rstrip("/") + "/"
    return [m for m in mounts() if (m["mountpoint"] + "/").startswith(base)]


def is_mounted(path):
    return bool(fuse_mounts_at(path))


# ---------------------------------------------------------------------------------------
# processes

def _pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return False
    state = st[st.rindex(")") + 2:].split()[0]
    return state not in ("Z", "X")


def find_daemon_pids(binary, mountpoint):
    """PIDs of processes running `binary` with `mountpoint` among their arguments.  Used to
    find the daemon that a non -f efscache forked off (the process we started exits once
    mounted).  The mountpoint is a unique temp path, so this only finds our own daemons."""
    res = []
    if not binary:
        return res
    want = os.path.realpath(binary)
    mp = _canon(mountpoint)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        pid = int(d)
        if pid == os.getpid():
            continue
        try:
            exe = os.readlink("/proc/%d/exe" % pid)
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if exe.endswith(" (deleted)"):
            exe = exe[:-10]
        if exe != want:  # /proc/PID/exe is already resolved
            continue
        sargs = [a.decode(errors="replace") for a in args]
        if mountpoint in sargs or mp in sargs or any(
                a.startswith("/") and _canon(a) == mp for a in sargs):
            if _pid_alive(pid):
                res.append(pid)
    return res


def wait_pid_gone(pid, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return True
        elif not _pid_alive(pid):
            return True
        time.sleep(0.02)
    return False


# ---------------------------------------------------------------------------------------
# mounts

class MountError(Exception):
    pass


_mounts = []  # every Mount we made, for cleanup
_all_daemons = set()  # every daemon PID seen, for sanitizer reports
_stderr_files = []
_counter = [0]


class Mount:
    """A FUSE mount made by us: efscache or efs-emu."""

    def __init__(self, kind, binary, src, mnt, args, proc, stderr_path, foreground):
        self.kind = kind
        self.binary = binary
        self.src = src
        self.mnt = _canon(mnt)
        self.args = args
        self.proc = proc
        self.stderr_path = stderr_path
        self.foreground = foreground
        self.pids = [proc.pid] if foreground and proc is not None else []
        self.exit_code = None
        self.mounted = False
        self.problems = []

    def stderr(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def daemon_pids(self):
        if self.foreground:
            return [self.proc.pid] if self.proc.poll() is None else []
        pids = [p for p in self.pids if _pid_alive(p)]
        for p in find_daemon_pids(self.binary, self.mnt):
            if p not in pids:
                pids.append(p)
            _all_daemons.add(p)
        return pids

    def umount(self, timeout=10):
        """fusermount3 -u (lazy -z if busy), wait for the daemon to exit, then SIGTERM and
        SIGKILL it by PID if it did not.  Returns a list of problems (empty when clean)."""
        problems = []
        if not self.foreground and not self.pids:
            self.pids = find_daemon_pids(self.binary, self.mnt)
        if fuse_mounts_at(self.mnt):
            r = subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True, text=True,
                               timeout=30)
            if r.returncode != 0:
                problems.append("fusermount3 -u failed: %s" % r.stderr.strip())
                subprocess.run(["fusermount3", "-u", "-z", self.mnt], capture_output=True,
                               timeout=30)
        # wait for the daemon(s) to exit on their own
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.daemon_pids():
            time.sleep(0.02)
        left = self.daemon_pids()
        if left:
            problems.append("daemon pid(s) %s still running %ds after unmount; killed"
                            % (left, timeout))
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for p in left:
                    try:
                        os.kill(p, sig)
                    except ProcessLookupError:
                        pass
                time.sleep(0.5)
                left = self.daemon_pids()
                if not left:
                    break
        if self.proc is None:
            pass
        elif self.foreground:
            try:
                self.exit_code = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.exit_code = self.proc.wait()
        else:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        if fuse_mounts_at(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", self.mnt], capture_output=True,
                           timeout=30)
            if fuse_mounts_at(self.mnt):
                problems.append("still mounted after lazy unmount")
        self.mounted = False
        if self in _mounts:
            _mounts.remove(self)
        self.problems = problems
        return problems

    def kill9(self):
        """SIGKILL the daemon (aborts the FUSE connection), used by the watchdog."""
        for p in self.daemon_pids():
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        probs = self.umount()
        check("unmount %s cleanly" % self.mnt, not probs, "; ".join(probs))
        return False


def _launch(kind, binary, src, mnt, opts, foreground, extra_args, env, timeout, logdir):
    if not binary or not os.path.exists(binary):
        raise MountError("%s binary not found (%r)" % (kind, binary))
    os.makedirs(mnt, exist_ok=True)
    mnt = os.path.realpath(mnt)
    before = {m["id"] for m in fuse_mounts_at(mnt)}
    args = [binary, src, mnt]
    if "-d" in extra_args:
        foreground = True  # -d implies -f
    elif foreground:
        args.append("-f")
    args += list(extra_args)
    if opts:
        args += ["-o", ",".join(opts)]
    _counter[0] += 1
    stderr_path = os.path.join(logdir, "%s-%d.stderr" % (kind, _counter[0]))
    errf = open(stderr_path, "wb")
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
                            env=env, start_new_session=True)
    errf.close()
    m = Mount(kind, binary, src, mnt, args, proc, stderr_path, foreground)
    _mounts.append(m)
    _all_daemons.add(proc.pid)
    _stderr_files.append(stderr_path)
    deadline = time.monotonic() + timeout
    while True:
        new = [x for x in fuse_mounts_at(mnt) if x["id"] not in before]
        if new:
            m.mounted = True
            m.info = new[-1]
            break
        rc = proc.poll()
        if rc is not None and (foreground or rc != 0):
            m.umount()
            raise MountError("%s exited with %s before mounting %s\ncommand: %s\nstderr:\n%s"
                             % (kind, rc, mnt, " ".join(args), m.stderr()))
        if time.monotonic() > deadline:
            m.umount()
            raise MountError("%s did not mount %s within %ss\ncommand: %s\nstderr:\n%s"
                             % (kind, mnt, timeout, " ".join(args), m.stderr()))
        time.sleep(0.01)
    if not foreground:
        # the launcher returns once mounted; give it a moment and remember the daemon
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        m.pids = find_daemon_pids(binary, mnt)
        _all_daemons.update(m.pids)
    return m


def mount_efscache(src, mnt, *opts, foreground=False, cache_dir=None, extra_args=(),
                   env=None, timeout=15):
    """Mount efscache SRC at MNT (created if needed) with -o OPTS; waits until the mount is
    in /proc/self/mountinfo.  A cache_dir in a fresh temp dir is added unless one is given
    in opts or as cache_dir=.  Raises MountError with the daemon's stderr on failure."""
    opts = list(opts)
    logdir = _logdir()
    if not any(o.startswith("cache_dir=") for o in opts):
        if cache_dir is None:
            cache_dir = os.path.join(logdir, "cache-%d" % (_counter[0] + 1))
        opts.insert(0, "cache_dir=" + cache_dir)
    return _launch("efscache", EFSCACHE_BIN, src, mnt, opts, foreground, extra_args, env,
                   timeout, logdir)


def mount_emu(src, mnt, *opts, foreground=False, extra_args=(), env=None, timeout=15):
    """Mount the EFS emulator (efs-emu SRC MNT -o OPTS)."""
    return _launch("efs-emu", EFS_EMU_BIN, src, mnt, list(opts), foreground, extra_args, env,
                   timeout, _logdir())


_logdir_path = []


def _logdir():
    if not _logdir_path:
        _logdir_path.append(tmpdir("efscache-it-logs-"))
    return _logdir_path[0]


def adopt_mount(kind, binary, src, mnt):
    """Track a mount made by someone else (mount(8) via mount.fuse3) so that cleanup
    unmounts it and stops its daemon (found by binary and mountpoint)."""
    m = Mount(kind, binary, src, mnt, [], None, os.devnull, False)
    m.pids = find_daemon_pids(binary, m.mnt)
    _all_daemons.update(m.pids)
    found = fuse_mounts_at(m.mnt)
    m.mounted = bool(found)
    m.info = found[-1] if found else None
    _mounts.append(m)
    return m


def unmount(m):
    probs = m.umount()
    check("unmount %s (%s) cleanly" % (m.mnt, m.kind), not probs, "; ".join(probs))
    return not probs


# ---------------------------------------------------------------------------------------
# efs-emu counters

def emu_stats(path):
    """Counters of an efs-emu mount (path = its root) or of one file in it."""
    raw = os.getxattr(path, "user.efsemu.stats")
    res = {}
    for tok in raw.decode().split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            try:
                res[k] = int(v)
            except ValueError:
                try:
                    res[k] = float(v)
                except ValueError:
                    res[k] = v
    return res


def emu_reset(root):
    os.setxattr(root, "user.efsemu.reset", b"1")


# ---------------------------------------------------------------------------------------
# syscalls Python does not wrap

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
AT_SYMLINK_NOFOLLOW = 0x100

_SYS_renameat2 = 316  # x86_64
_SYS_mknodat = 259


def _raise_errno(what, path=None):
    e = ctypes.get_errno()
    raise OSError(e, "%s: %s" % (what, os.strerror(e)), path)


AT_STATX_FORCE_SYNC = 0x2000
AT_STATX_DONT_SYNC = 0x4000
STATX_BASIC_STATS = 0x7ff


class Statx(ctypes.Structure):
    """struct statx (linux/stat.h), 256 bytes."""
    _fields_ = [("mask", ctypes.c_uint32), ("blksize", ctypes.c_uint32),
                ("attributes", ctypes.c_uint64), ("nlink", ctypes.c_uint32),
                ("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32), ("mode", ctypes.c_uint16),
                ("_pad0", ctypes.c_uint16), ("ino", ctypes.c_uint64), ("size", ctypes.c_uint64),
                ("blocks", ctypes.c_uint64), ("attributes_mask", ctypes.c_uint64),
                ("atime_sec", ctypes.c_int64), ("atime_nsec", ctypes.c_uint32),
                ("_pad1", ctypes.c_int32), ("btime_sec", ctypes.c_int64),
                ("btime_nsec", ctypes.c_uint32), ("_pad2", ctypes.c_int32),
                ("ctime_sec", ctypes.c_int64), ("ctime_nsec", ctypes.c_uint32),
                ("_pad3", ctypes.c_int32), ("mtime_sec", ctypes.c_int64),
                ("mtime_nsec", ctypes.c_uint32), ("_pad4", ctypes.c_int32),
                ("_rest", ctypes.c_uint64 * 16)]


def statx(path, flags=0, mask=STATX_BASIC_STATS, dirfd=AT_FDCWD):
    """glibc statx(2) (Python 3.11 has no os.statx); returns a Statx. flags e.g.
    AT_STATX_FORCE_SYNC | AT_SYMLINK_NOFOLLOW; path "" needs AT_EMPTY_PATH (0x1000)."""
    buf = Statx()
    if libc.statx(dirfd, os.fsencode(path), flags, mask, ctypes.byref(buf)) != 0:
        _raise_errno("statx", path)
    return buf


def renameat2(old, new, flags):
    libc.syscall.restype = ctypes.c_long
    r = libc.syscall(ctypes.c_long(_SYS_renameat2), ctypes.c_int(AT_FDCWD),
                     ctypes.c_char_p(os.fsencode(old)), ctypes.c_int(AT_FDCWD),
                     ctypes.c_char_p(os.fsencode(new)), ctypes.c_uint(flags))
    if r != 0:
        _raise_errno("renameat2", old)


def fallocate(fd, mode, offset, length):
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    r = libc.fallocate(fd, mode, offset, length)
    if r != 0:
        _raise_errno("fallocate")


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimensat(path, atime, mtime, flags=0):
    """atime/mtime: (sec, nsec) tuples, or UTIME_NOW / UTIME_OMIT."""
    ts = (_Timespec * 2)()
    for i, t in enumerate((atime, mtime)):
        if t in (UTIME_NOW, UTIME_OMIT):
            ts[i].tv_sec, ts[i].tv_nsec = 0, t
        else:
            ts[i].tv_sec, ts[i].tv_nsec = t
    libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Timespec),
                               ctypes.c_int]
    r = libc.utimensat(AT_FDCWD, os.fsencode(path), ts, flags)
    if r != 0:
        _raise_errno("utimensat", path)


class Flock(ctypes.Structure):
    _fields_ = [("l_type", ctypes.c_short), ("l_whence", ctypes.c_short),
                ("l_start", ctypes.c_int64), ("l_len", ctypes.c_int64),
                ("l_pid", ctypes.c_int)]


def fcntl_lock(fd, cmd, ltype, start, length, whence=0):
    """fcntl(fd, cmd, struct flock) for F_GETLK/F_SETLK/F_SETLKW/F_OFD_*; returns the
    (possibly updated) Flock."""
    import fcntl as _f
    fl = Flock(ltype, whence, start, length, 0)
    buf = bytes(fl) + b"\0" * 8
    out = _f.fcntl(fd, cmd, buf)
    return Flock.from_buffer_copy(out[:ctypes.sizeof(Flock)])


# ---------------------------------------------------------------------------------------
# forked workers (other users, lock holders)

def drop_privs(uid, gid, groups=()):
    os.setgroups(list(groups))
    os.setgid(gid)
    os.setuid(uid)


def as_user(uid, gid, fn, *args, groups=(), umask=None, timeout=30):
    """Run fn({}, *args) in a forked child with the given uid/gid/groups (fn may be any
    callable, closures included: it is not pickled).  Returns ("ok", value),
    ("errno", n), ("error", text) or ("timeout", None)."""
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                if umask is not None:
                    os.umask(umask)
                drop_privs(uid, gid, groups)
                res = ("ok", fn({}, *args))
            except OSError as e:
                res = ("errno", e.errno)
            except BaseException as e:  # noqa: BLE001
                res = ("error", "%s: %s" % (type(e).__name__, e))
            try:
                _send(w, res)
            except Exception:  # noqa: BLE001 - unpicklable value
                _send(w, ("error", "unpicklable result %r" % (res,)))
        finally:
            os._exit(0)
    os.close(w)
    try:
        try:
            res = _recv(r, time.monotonic() + timeout)
        except TimeoutError:
            res = ("timeout", None)
            os.kill(pid, signal.SIGKILL)
        if res is None:
            res = ("error", "child died")
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    return res


def _worker_main(rfd, wfd, uid, gid, groups, umask):
    state = {}
    try:
        if umask is not None:
            os.umask(umask)
        if uid is not None:
            drop_privs(uid, gid if gid is not None else uid, groups)
    except BaseException as e:  # noqa: BLE001
        _send(wfd, ("error", "dropping privileges: %r" % e))
        os._exit(1)
    _send(wfd, ("ok", "ready"))
    while True:
        msg = _recv(rfd)
        if msg is None:
            break
        fn, args = msg
        try:
            res = ("ok", fn(state, *args))
        except OSError as e:
            res = ("errno", e.errno)
        except BaseException as e:  # noqa: BLE001
            res = ("error", "%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc()))
        try:
            _send(wfd, res)
        except OSError:
            break
    os._exit(0)  # closes every fd the calls left open


def _send(fd, obj):
    data = pickle.dumps(obj)
    os.write(fd, struct.pack("<I", len(data)))
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd, n, deadline=None):
    buf = b""
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError()
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                raise TimeoutError()
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _recv(fd, deadline=None):
    hdr = _read_exact(fd, 4, deadline)
    if hdr is None:
        return None
    (n,) = struct.unpack("<I", hdr)
    data = _read_exact(fd, n, deadline)
    if data is None:
        return None
    return pickle.loads(data)


_workers = []


class Worker:
    """A forked child that runs module-level functions fn(state, *args) on request; `state`
    is a dict kept across calls (e.g. open fds), closed when the worker exits.  The child
    can run as another user.  call() returns the value or raises OSError; call_async() +
    result() let the parent observe a call that blocks (F_SETLKW)."""

    def __init__(self, uid=None, gid=None, groups=(), umask=None):
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(w1)
                os.close(r2)
                for other in _workers:  # or their EOF would never come
                    for fd in (other.wfd, other.rfd):
                        if fd is not None:
                            try:
                                os.close(fd)
                            except OSError:
                                pass
                _worker_main(r1, w2, uid, gid, groups, umask)
            finally:
                os._exit(1)
        os.close(r1)
        os.close(w2)
        self.pid = pid
        self.wfd = w1
        self.rfd = r2
        self.pending = False
        _workers.append(self)
        st = _recv(self.rfd, time.monotonic() + 10)
        if not st or st[0] != "ok":
            self.close()
            raise RuntimeError("worker failed to start: %r" % (st,))

    def call_async(self, fn, *args):
        assert not self.pending
        _send(self.wfd, (fn, args))
        self.pending = True

    def ready(self, timeout=0):
        r, _, _ = select.select([self.rfd], [], [], timeout)
        return bool(r)

    def result_raw(self, timeout=30):
        assert self.pending
        try:
            res = _recv(self.rfd, time.monotonic() + timeout)
        except TimeoutError:
            return ("timeout", None)
        self.pending = False
        if res is None:
            return ("error", "worker died")
        return res

    def call_raw(self, fn, *args, timeout=30):
        self.call_async(fn, *args)
        return self.result_raw(timeout)

    def call(self, fn, *args, timeout=30):
        kind, val = self.call_raw(fn, *args, timeout=timeout)
        if kind == "ok":
            return val
        if kind == "errno":
            raise OSError(val, os.strerror(val))
        raise RuntimeError("worker call %s failed: %s %s" % (fn.__name__, kind, val))

    def alive(self):
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == self.pid:
            self.pid = None
            return False
        return True

    def exit(self, timeout=10):
        """Close the command pipe and wait for a clean exit (closes the child's fds)."""
        if self.pid is None:
            return True
        if self.wfd is not None:
            try:
                os.close(self.wfd)
            except OSError:
                pass
            self.wfd = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.pid = None
                return True
            time.sleep(0.01)
        return False

    def close(self):
        if self.pid is not None and self.pending:
            # blocked in a call: kill it
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.wfd is not None:
            try:
                os.close(self.wfd)
            except OSError:
                pass
            self.wfd = None
        if self.pid is not None:
            if not self.exit(5):
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    os.waitpid(self.pid, 0)
                except ChildProcessError:
                    pass
                self.pid = None
        if self.rfd is not None:
            try:
                os.close(self.rfd)
            except OSError:
                pass
            self.rfd = None
        if self in _workers:
            _workers.remove(self)


# ---------------------------------------------------------------------------------------
# cleanup

_finished = [False]


def cleanup():
    """Stop workers, unmount everything we mounted (innermost first), remove temp dirs."""
    if os.getpid() != _main_pid:
        return
    for w in list(_workers):
        try:
            w.close()
        except Exception:  # noqa: BLE001
            pass
    # efscache mounts over emu mounts: unmount in reverse order of creation
    for m in reversed(list(_mounts)):
        try:
            probs = m.umount()
            if probs:
                check("cleanup: unmount %s (%s)" % (m.mnt, m.kind), False, "; ".join(probs))
        except Exception as e:  # noqa: BLE001
            check("cleanup: unmount %s" % m.mnt, False, repr(e))
    for d in reversed(list(_tmpdirs)):
        left = mounts_under(d)
        for mm in sorted(left, key=lambda x: -len(x["mountpoint"])):
            subprocess.run(["fusermount3", "-u", "-z", mm["mountpoint"]], capture_output=True)
            subprocess.run(["umount", "-l", mm["mountpoint"]], capture_output=True)
        if mounts_under(d):
            check("cleanup: nothing left mounted under %s" % d, False,
                  str([x["mountpoint"] for x in mounts_under(d)]))
            continue
        shutil.rmtree(d, ignore_errors=True)
        _tmpdirs.remove(d)


atexit.register(cleanup)


def _on_signal(signum, frame):
    _emit("not ok - interrupted by signal %d" % signum)
    _failures.append("signal %d" % signum)
    cleanup()
    os._exit(1)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def _start_watchdog():
    limit = float(os.environ.get("EFSCACHE_TEST_TIMEOUT", "280"))

    def fire():
        _emit("not ok - watchdog: %s still running after %ss (a FUSE call hung?); "
              "stack of every thread follows on stderr, then the daemons are killed"
              % (os.path.basename(sys.argv[0]), limit))
        _failures.append("watchdog")
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        for m in list(_mounts):
            m.kill9()
        for w in list(_workers):
            if w.pid:
                try:
                    os.kill(w.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.5)
        try:
            cleanup()
        finally:
            os._exit(1)

    t = threading.Timer(limit, fire)
    t.daemon = True
    t.start()


# ---------------------------------------------------------------------------------------
# comparing the mount with SOURCE

STAT_FIELDS = ("st_mode", "st_uid", "st_gid", "st_size", "st_nlink", "st_mtime_ns", "st_ctime_ns")


def stat_dict(st, fields=STAT_FIELDS):
    d = {f: getattr(st, f) for f in fields}
    if "st_mode" in d:
        d["st_mode"] = oct(d["st_mode"])
    return d


def compare_stat(name, mnt_path, src_path, fields=STAT_FIELDS, follow=False):
    """lstat (or stat) both paths; the chosen fields must be equal."""
    try:
        a = os.stat(mnt_path, follow_symlinks=follow)
    except OSError as e:
        return check(name, False, "stat through the mount failed: %s" % e)
    b = os.stat(src_path, follow_symlinks=follow)
    da, db = stat_dict(a, fields), stat_dict(b, fields)
    diff = {k: (da[k], db[k]) for k in da if da[k] != db[k]}
    return check(name, not diff, "mount vs source differ: %s" % diff)


def compare_tree(name, mnt_root, src_root, fields=STAT_FIELDS):
    """Walk both trees: same names per directory, same lstat fields, same symlink targets,
    same file bytes (small files), and inode numbers that map one-to-one (hard links share
    an inode through the mount exactly when they do in SOURCE)."""
    problems = []
    ino_map = {}
    rev_map = {}
    for dirpath, dirnames, filenames in os.walk(src_root):
        rel = os.path.relpath(dirpath, src_root)
        mdir = os.path.normpath(os.path.join(mnt_root, rel))
        try:
            mnames = sorted(os.listdir(mdir))
        except OSError as e:
            problems.append("listdir %s: %s" % (rel, e))
            continue
        snames = sorted(dirnames + filenames)
        if mnames != snames:
            problems.append("%s: names differ: only in mount %s, only in source %s" % (
                rel, sorted(set(mnames) - set(snames))[:5], sorted(set(snames) - set(mnames))[:5]))
        for n in snames + (["."] if rel == "." else []):
            sp = os.path.normpath(os.path.join(dirpath, n))
            mp = os.path.normpath(os.path.join(mdir, n))
            try:
                ms = os.lstat(mp)
            except OSError as e:
                problems.append("lstat %s: %s" % (os.path.join(rel, n), e))
                continue
            ss = os.lstat(sp)
            da, db = stat_dict(ms, fields), stat_dict(ss, fields)
            diff = {k: (da[k], db[k]) for k in da if da[k] != db[k]}
            if diff:
                problems.append("%s: mount vs source %s" % (os.path.join(rel, n), diff))
            if ss.st_ino in ino_map and ino_map[ss.st_ino] != ms.st_ino:
                problems.append("%s: source inode %d shows as mount inodes %d and %d" % (
                    os.path.join(rel, n), ss.st_ino, ino_map[ss.st_ino], ms.st_ino))
            if ms.st_ino in rev_map and rev_map[ms.st_ino] != ss.st_ino:
                problems.append("%s: mount inode %d stands for source inodes %d and %d" % (
                    os.path.join(rel, n), ms.st_ino, rev_map[ms.st_ino], ss.st_ino))
            ino_map[ss.st_ino] = ms.st_ino
            rev_map[ms.st_ino] = ss.st_ino
            if _stat.S_ISLNK(ss.st_mode):
                try:
                    if os.readlink(mp) != os.readlink(sp):
                        problems.append("%s: symlink target %r vs %r" % (
                            n, os.readlink(mp), os.readlink(sp)))
                except OSError as e:
                    problems.append("readlink %s: %s" % (n, e))
            elif _stat.S_ISREG(ss.st_mode) and ss.st_size <= (1 << 20):
                try:
                    if read_file(mp) != read_file(sp):
                        problems.append("%s: contents differ" % n)
                except OSError as e:
                    problems.append("read %s: %s" % (n, e))
    return check(name, not problems, "\n".join(problems[:20]))


def setup(*opts, name="efscache", **kw):
    """base temp dir with src/ (0755) and a mounted efscache at mnt/; returns (base, src, m)."""
    base = tmpdir()
    src = os.path.join(base, "src")
    mkdirs(src)
    m = mount_efscache(src, os.path.join(base, "mnt"), *opts, **kw)
    return base, src, m
