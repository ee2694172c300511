#!/usr/bin/env python3
"""Locks are real (DESIGN 3.5): two efscache daemons mount ONE source at two mountpoints
with two cache_dirs ("two hosts sharing EFS").  flock and fcntl locks taken through mount A
must exclude holders through mount B and direct users of SOURCE, be shared when shared,
block F_SETLKW until released, and go away when the holder closes the file or exits.
Every lock holder is its own forked process; ordering is proven with pipes and marker
files, never with timing thresholds."""

import errno
import fcntl
import os
import signal
import time

import harness as h  # noqa: E402

h.require_fuse()
BASE = h.tmpdir()
SRC = os.path.join(BASE, "src")
h.mkdirs(SRC)
A = h.mount_efscache(SRC, os.path.join(BASE, "mnt-a"), cache_dir=os.path.join(BASE, "cache-a"))
B = h.mount_efscache(SRC, os.path.join(BASE, "mnt-b"), cache_dir=os.path.join(BASE, "cache-b"))
WOULDBLOCK = {errno.EWOULDBLOCK, errno.EAGAIN}
CONFLICT = {errno.EAGAIN, errno.EACCES}


# --- operations run inside worker processes: fn(state, *args) ---------------------------

def w_open(state, path, flags=os.O_RDWR):
    state["fd"] = os.open(path, flags)
    return True


def w_close(state):
    os.close(state.pop("fd"))
    return True


def w_flock(state, op):
    fcntl.flock(state["fd"], op)
    return True


def w_setlk(state, cmd, ltype, start, length):
    h.fcntl_lock(state["fd"], cmd, ltype, start, length)
    return True


def w_getlk(state, ltype, start, length):
    fl = h.fcntl_lock(state["fd"], fcntl.F_GETLK, ltype, start, length)
    return (fl.l_type, fl.l_start, fl.l_len)


def w_touch(state, path):
    h.write_file(path, b"1")
    return True


def w_setlkw_then_check(state, marker):
    """Block in F_SETLKW; once granted, report whether the holder had already written its
    'releasing' marker (it writes it just before unlocking)."""
    h.fcntl_lock(state["fd"], fcntl.F_SETLKW, fcntl.F_WRLCK, 0, 100)
    return os.path.exists(marker)


def w_flock_wait_then_check(state, marker):
    fcntl.flock(state["fd"], fcntl.LOCK_EX)
    return os.path.exists(marker)


def w_unlock_after_marker(state, marker, kind):
    h.write_file(marker, b"releasing")
    if kind == "flock":
        fcntl.flock(state["fd"], fcntl.LOCK_UN)
    else:
        h.fcntl_lock(state["fd"], fcntl.F_SETLK, fcntl.F_UNLCK, 0, 0)
    return True


# --- helpers -------------------------------------------------------------------------

def worker_on(path):
    w = h.Worker()
    w.call(w_open, path)
    return w


def try_call(w, fn, *args):
    kind, val = w.call_raw(fn, *args, timeout=20)
    if kind == "ok":
        return 0
    if kind == "errno":
        return val
    return "%s: %s" % (kind, val)


def eventually(fn, timeout=5.0):
    """Retry fn() until it returns 0 (a release may reach the source a moment after the
    holder's close() returns: FUSE sends RELEASE asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        r = fn()
        if r == 0 or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def new_file(name, size=4096):
    p = os.path.join(SRC, name)
    h.write_file(p, b"\0" * size)
    return p, os.path.join(A.mnt, name), os.path.join(B.mnt, name)


def test_flock_exclusive():
    s, a, b = new_file("flock-ex")
    wa, wb = worker_on(a), worker_on(b)
    try:
        h.eq("flock LOCK_EX via mount A", try_call(wa, w_flock, fcntl.LOCK_EX), 0)
        r = try_call(wb, w_flock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        h.check("flock LOCK_EX|LOCK_NB via mount B while A holds LOCK_EX: EWOULDBLOCK",
                r in WOULDBLOCK, h.ename(r))
        r = try_call(wb, w_flock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        h.check("flock LOCK_SH|LOCK_NB via mount B while A holds LOCK_EX: EWOULDBLOCK",
                r in WOULDBLOCK, h.ename(r))
        fd = os.open(s, os.O_RDONLY)
        try:
            r = h.errno_of(fcntl.flock, fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        h.check("flock LOCK_EX|LOCK_NB directly on SOURCE while A holds it: EWOULDBLOCK",
                r in WOULDBLOCK, h.ename(r))
        wa2 = worker_on(a)
        try:
            r = try_call(wa2, w_flock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            h.check("flock LOCK_EX|LOCK_NB by another process via the same mount A: "
                    "EWOULDBLOCK", r in WOULDBLOCK, h.ename(r))
        finally:
            wa2.close()
        h.eq("flock LOCK_UN via mount A", try_call(wa, w_flock, fcntl.LOCK_UN), 0)
        r = eventually(lambda: try_call(wb, w_flock, fcntl.LOCK_EX | fcntl.LOCK_NB))
        h.check("flock LOCK_EX|LOCK_NB via mount B after A unlocked: granted", r == 0,
                h.ename(r))
        r = try_call(wa, w_flock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        h.check("now A is refused while B holds it: EWOULDBLOCK", r in WOULDBLOCK, h.ename(r))
        try_call(wb, w_flock, fcntl.LOCK_UN)
    finally:
        wa.close()
        wb.close()


def test_flock_shared():
    s, a, b = new_file("flock-sh")
    wa, wb, wa2 = worker_on(a), worker_on(b), worker_on(a)
    try:
        h.eq("flock LOCK_SH via mount A", try_call(wa, w_flock, fcntl.LOCK_SH), 0)
        r = try_call(wb, w_flock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        h.check("flock LOCK_SH|LOCK_NB via mount B while A holds LOCK_SH: granted", r == 0,
                h.ename(r))
        r = try_call(wa2, w_flock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        h.check("flock LOCK_EX|LOCK_NB via A while A and B share it: EWOULDBLOCK",
                r in WOULDBLOCK, h.ename(r))
        try_call(wa, w_flock, fcntl.LOCK_UN)
        r = try_call(wa2, w_flock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        h.check("flock LOCK_EX|LOCK_NB via A while B still holds LOCK_SH: EWOULDBLOCK",
                r in WOULDBLOCK, h.ename(r))
        try_call(wb, w_flock, fcntl.LOCK_UN)
        r = eventually(lambda: try_call(wa2, w_flock, fcntl.LOCK_EX | fcntl.LOCK_NB))
        h.check("flock LOCK_EX via A after both shared locks are gone: granted", r == 0,
                h.ename(r))
    finally:
        for w in (wa, wb, wa2):
            w.close()


def test_flock_blocking():
    s, a, b = new_file("flock-wait")
    marker = os.path.join(BASE, "flock-marker")
    wa, wb = worker_on(a), worker_on(b)
    try:
        try_call(wa, w_flock, fcntl.LOCK_EX)
        wb.call_async(w_flock_wait_then_check, marker)
        still_blocked = not wb.ready(0.5)
        h.check("flock LOCK_EX via B waits while A holds the lock", still_blocked)
        wa.call(w_unlock_after_marker, marker, "flock")
        kind, val = wb.result_raw(timeout=20)
        h.check("flock LOCK_EX via B is granted after A released, not before",
                kind == "ok" and val is True, (kind, val))
    finally:
        wa.close()
        wb.close()


def flock_probe(wb):
    r = try_call(wb, w_flock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    if r == 0:
        try_call(wb, w_flock, fcntl.LOCK_UN)
    return r


def test_flock_release_on_close_and_exit():
    s, a, b = new_file("flock-rel")
    wb = worker_on(b)
    try:
        for how in ("closes the file", "exits", "is killed (SIGKILL)"):
            wa = worker_on(a)
            try:
                try_call(wa, w_flock, fcntl.LOCK_EX)
                r = flock_probe(wb)
                h.check("flock LOCK_EX held via A refuses B (before the holder %s)" % how,
                        r in WOULDBLOCK, h.ename(r))
                if how == "closes the file":
                    try_call(wa, w_close)
                elif how == "exits":
                    wa.exit()
                else:
                    os.kill(wa.pid, 9)
                r = eventually(lambda: flock_probe(wb))
                h.check("flock held via A is released when the holder %s" % how, r == 0,
                        h.ename(r))
            finally:
                wa.close()
    finally:
        wb.close()


def test_fcntl_ranges():
    s, a, b = new_file("posix")
    wa, wb = worker_on(a), worker_on(b)
    try:
        r = try_call(wa, w_setlk, fcntl.F_SETLK, fcntl.F_WRLCK, 0, 100)
        h.eq("F_SETLK F_WRLCK [0,100) via mount A", r, 0)
        r = try_call(wb, w_setlk, fcntl.F_SETLK, fcntl.F_WRLCK, 50, 100)
        h.check("F_SETLK F_WRLCK [50,150) via mount B overlapping A's lock: EAGAIN/EACCES",
                r in CONFLICT, h.ename(r))
        r = try_call(wb, w_setlk, fcntl.F_SETLK, fcntl.F_RDLCK, 99, 1)
        h.check("F_SETLK F_RDLCK [99,100) via mount B inside A's write lock: EAGAIN/EACCES",
                r in CONFLICT, h.ename(r))
        kind, val = wb.call_raw(w_getlk, fcntl.F_WRLCK, 50, 100)
        h.check("F_GETLK via mount B reports A's conflicting write lock",
                kind == "ok" and val[0] == fcntl.F_WRLCK, (kind, val))
        h.check("F_GETLK via mount B reports the conflicting range [0,100)",
                kind == "ok" and tuple(val[1:]) == (0, 100), (kind, val))
        kind, val = wb.call_raw(w_getlk, fcntl.F_WRLCK, 200, 100)
        h.check("F_GETLK via mount B on a free range reports F_UNLCK",
                kind == "ok" and val[0] == fcntl.F_UNLCK, (kind, val))
        r = try_call(wb, w_setlk, fcntl.F_SETLK, fcntl.F_WRLCK, 200, 100)
        h.eq("F_SETLK F_WRLCK [200,300) via mount B (no overlap): granted", r, 0)
        r = try_call(wa, w_setlk, fcntl.F_SETLK, fcntl.F_WRLCK, 250, 10)
        h.check("and now A is refused on B's range: EAGAIN/EACCES", r in CONFLICT, h.ename(r))
        # direct users of SOURCE see the locks too (OFD and POSIX locks conflict)
        fd = os.open(s, os.O_RDWR)
        try:
            r = h.errno_of(h.fcntl_lock, fd, fcntl.F_SETLK, fcntl.F_WRLCK, 10, 10)
        finally:
            os.close(fd)
        h.check("F_SETLK directly on SOURCE over A's range: EAGAIN/EACCES", r in CONFLICT,
                h.ename(r))
        wa2 = worker_on(a)
        try:
            r = try_call(wa2, w_setlk, fcntl.F_SETLK, fcntl.F_WRLCK, 0, 10)
            h.check("F_SETLK by another process via the same mount A: EAGAIN/EACCES",
                    r in CONFLICT, h.ename(r))
        finally:
            wa2.close()
        h.eq("F_UNLCK [0,100) via A", try_call(wa, w_setlk, fcntl.F_SETLK, fcntl.F_UNLCK, 0,
                                                100), 0)
        r = try_call(wb, w_setlk, fcntl.F_SETLK, fcntl.F_WRLCK, 50, 100)
        h.eq("F_SETLK [50,150) via B after A unlocked: granted", r, 0)
        try_call(wb, w_setlk, fcntl.F_SETLK, fcntl.F_UNLCK, 0, 0)
        # read locks are shared
        h.eq("F_RDLCK [0,100) via A", try_call(wa, w_setlk, fcntl.F_SETLK, fcntl.F_RDLCK, 0,
                                                100), 0)
        r = try_call(wb, w_setlk, fcntl.F_SETLK, fcntl.F_RDLCK, 0, 100)
        h.eq("F_RDLCK [0,100) via B while A holds a read lock: granted", r, 0)
        wc = worker_on(b)
        try:
            r = try_call(wc, w_setlk, fcntl.F_SETLK, fcntl.F_WRLCK, 10, 1)
            h.check("F_WRLCK via B on a range read-locked by A and B: EAGAIN/EACCES",
                    r in CONFLICT, h.ename(r))
        finally:
            wc.close()
    finally:
        wa.close()
        wb.close()


def test_fcntl_setlkw_blocks():
    s, a, b = new_file("posix-wait")
    marker = os.path.join(BASE, "setlkw-marker")
    wa, wb = worker_on(a), worker_on(b)
    try:
        h.eq("F_SETLK F_WRLCK [0,100) via A", try_call(wa, w_setlk, fcntl.F_SETLK,
                                                       fcntl.F_WRLCK, 0, 100), 0)
        wb.call_async(w_setlkw_then_check, marker)
        h.check("F_SETLKW via B waits while A holds the lock", not wb.ready(0.5))
        wa.call(w_unlock_after_marker, marker, "fcntl")
        kind, val = wb.result_raw(timeout=20)
        h.check("F_SETLKW via B returns after A released, not before",
                kind == "ok" and val is True, (kind, val))
        r = try_call(wa, w_setlk, fcntl.F_SETLK, fcntl.F_WRLCK, 0, 10)
        h.check("B now holds it: F_SETLK via A refused", r in CONFLICT, h.ename(r))
    finally:
        wa.close()
        wb.close()


def fcntl_probe(wb):
    r = try_call(wb, w_setlk, fcntl.F_SETLK, fcntl.F_WRLCK, 0, 1)
    if r == 0:
        try_call(wb, w_setlk, fcntl.F_SETLK, fcntl.F_UNLCK, 0, 0)
    return r


def w_open_close_other_fd(state, path):
    fd = os.open(path, os.O_RDONLY)
    os.close(fd)
    return True


def test_fcntl_release_on_close_and_exit():
    s, a, b = new_file("posix-rel")
    wb = worker_on(b)
    try:
        for how in ("closes the file", "exits", "is killed (SIGKILL)",
                    "closes another fd of the same file (POSIX rule)"):
            wa = worker_on(a)
            try:
                try_call(wa, w_setlk, fcntl.F_SETLK, fcntl.F_WRLCK, 0, 0)
                r = fcntl_probe(wb)
                h.check("whole-file F_WRLCK via A refuses B (before the holder %s)" % how,
                        r in CONFLICT, h.ename(r))
                if how == "closes the file":
                    try_call(wa, w_close)
                elif how == "exits":
                    wa.exit()
                elif how.startswith("is killed"):
                    os.kill(wa.pid, 9)
                else:
                    try_call(wa, w_open_close_other_fd, a)
                r = eventually(lambda: fcntl_probe(wb))
                h.check("fcntl lock held via A is released when the holder %s" % how, r == 0,
                        h.ename(r))
            finally:
                wa.close()
    finally:
        wb.close()


def w_open2(state, path):
    state["fd1"] = os.open(path, os.O_RDWR)
    state["fd2"] = os.open(path, os.O_RDWR)
    return True


def w_setlk_fd(state, which, ltype, start, length):
    h.fcntl_lock(state[which], fcntl.F_SETLK, ltype, start, length)
    return True


def posix_owner_sequence(path, probe_path):
    """One process, two fds of one file: POSIX locks belong to the process, so the second
    fd's lock request on the same range succeeds, and an unlock through either fd releases
    it for other processes.  Returns the results of each step."""
    w = h.Worker()
    probe = worker_on(probe_path)
    res = []
    try:
        w.call(w_open2, path)
        res.append(try_call(w, w_setlk_fd, "fd1", fcntl.F_WRLCK, 0, 10))
        res.append(try_call(probe, w_setlk, fcntl.F_SETLK, fcntl.F_WRLCK, 0, 10))
        res.append(try_call(w, w_setlk_fd, "fd2", fcntl.F_WRLCK, 0, 10))
        res.append(try_call(w, w_setlk_fd, "fd2", fcntl.F_UNLCK, 0, 10))
        res.append(eventually(lambda: fcntl_probe_range(probe, 0, 10), 2.0))
    finally:
        w.close()
        probe.close()
    return [h.ename(r) if isinstance(r, int) else r for r in res]


def fcntl_probe_range(wp, start, length):
    r = try_call(wp, w_setlk, fcntl.F_SETLK, fcntl.F_WRLCK, start, length)
    if r == 0:
        try_call(wp, w_setlk, fcntl.F_SETLK, fcntl.F_UNLCK, 0, 0)
    return r


def test_fcntl_posix_owner():
    s, a, b = new_file("posix-owner")
    s2 = os.path.join(SRC, "posix-owner-ref")
    h.write_file(s2, b"\0" * 4096)
    got = posix_owner_sequence(a, b)
    ref = posix_owner_sequence(s2, s2)
    steps = ["fd1 F_WRLCK", "other process F_WRLCK", "fd2 F_WRLCK (same process)",
             "fd2 F_UNLCK", "other process F_WRLCK after the unlock"]
    h.check("POSIX lock ownership by process (two fds, same process, via mount A; other "
            "process via mount B) behaves as on SOURCE",
            got == ref, "; ".join("%s: mount %s, source %s" % (st, g, r)
                                  for st, g, r in zip(steps, got, ref) if g != r))


# --- locks at FUSE speed: no thread per lock, cheap waits (issue 8 item 5) ---------------

def daemon_threads(m):
    """The daemon's threads now: (count, how many are the lock waiter)."""
    pids = m.daemon_pids()
    if not pids:
        return -1, -1
    names = []
    for t in os.listdir("/proc/%d/task" % pids[0]):
        try:
            with open("/proc/%d/task/%s/comm" % (pids[0], t)) as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return len(names), names.count("efs-lockwait")


_one_worker = []


def one_worker_mount():
    """A mount of its own with ONE FUSE worker thread (max_threads=1), so libfuse's pool
    cannot grow: every thread the daemon gains is one the lock code made, and a wait that
    occupied the worker would stall the whole mount."""
    if not _one_worker:
        src = os.path.join(BASE, "src-1w")
        h.mkdirs(src)
        _one_worker.append((src, h.mount_efscache(src, os.path.join(BASE, "mnt-1w"),
                                                  "max_threads=1",
                                                  cache_dir=os.path.join(BASE, "cache-1w"))))
    return _one_worker[0]


def w_lock_cycle(state, n):
    """n rounds of locks that are free: both the non-blocking and the blocking forms."""
    for _ in range(n):
        for cmd in (fcntl.F_SETLK, fcntl.F_SETLKW):
            h.fcntl_lock(state["fd"], cmd, fcntl.F_WRLCK, 0, 10)
            h.fcntl_lock(state["fd"], cmd, fcntl.F_UNLCK, 0, 10)
        for op in (fcntl.LOCK_EX | fcntl.LOCK_NB, fcntl.LOCK_EX, fcntl.LOCK_SH):
            fcntl.flock(state["fd"], op)
            fcntl.flock(state["fd"], fcntl.LOCK_UN)
    return True


def test_grantable_lock_creates_no_thread():
    src, m = one_worker_mount()
    h.write_file(os.path.join(src, "no-thread"), b"\0" * 4096)
    wa = worker_on(m.path("no-thread"))
    try:
        wa.call(w_lock_cycle, 2)
        before = daemon_threads(m)
        wa.call(w_lock_cycle, 200)
        after = daemon_threads(m)
        h.check("1,400 lock calls that are granted at once (F_SETLK, F_SETLKW, flock with and "
                "without LOCK_NB) start no thread in the daemon",
                before[0] > 0 and after == before, "threads (all, lock waiter) before %s, "
                "after %s" % (before, after))
    finally:
        wa.close()


def test_blocked_waiters_share_one_thread():
    src, m = one_worker_mount()
    h.write_file(os.path.join(src, "many-waiters"), b"\0" * 4096)
    a = m.path("many-waiters")
    marker = os.path.join(BASE, "many-waiters-marker")
    n = 8
    holder = worker_on(a)
    waiters = []
    try:
        h.eq("F_SETLK F_WRLCK [0,100) via A", try_call(holder, w_setlk, fcntl.F_SETLK,
                                                       fcntl.F_WRLCK, 0, 100), 0)
        before = daemon_threads(m)
        for _ in range(n):
            w = worker_on(a)
            waiters.append(w)
            w.call_async(w_setlkw_then_check, marker)
        h.check("%d F_SETLKW all wait while the holder has the range" % n,
                not any(w.ready(0.3) for w in waiters))
        during = daemon_threads(m)
        h.check("%d blocked waiters add one lock waiter thread to the daemon, not a thread "
                "each" % n, during[0] <= before[0] + 1 and during[1] == 1,
                "threads (all, lock waiter) before %s, with %d waiters %s"
                % (before, n, during))
        h.check("with every waiter parked, the mount's one FUSE worker still serves others",
                try_call(holder, w_getlk, fcntl.F_WRLCK, 0, 1) == 0)
        holder.call(w_unlock_after_marker, marker, "fcntl")
        left, order_ok, granted = list(waiters), True, 0
        while left:
            got = [w for w in left if w.ready(0.05)]
            deadline = time.monotonic() + 20
            while not got and time.monotonic() < deadline:
                got = [w for w in left if w.ready(0.05)]
            if not got:
                break
            if len(got) != 1:
                order_ok = False
            w = got[0]
            kind, val = w.result_raw(timeout=5)
            granted += kind == "ok" and val is True
            left.remove(w)
            w.close()  # releases its lock: the next waiter's turn
        h.check("each of the %d waiters is granted the range in turn, one at a time, after "
                "the holder released it" % n, granted == n and order_ok,
                "granted %d, more than one at once: %s" % (granted, not order_ok))
    finally:
        holder.close()
        for w in waiters:
            w.close()


class _Interrupted(Exception):
    pass


def _on_alarm(sig, frame):
    raise _Interrupted()


def w_wait_interrupted(state, kind, start, length):
    """Block in F_SETLKW (or flock LOCK_EX) until SIGALRM; the handler raises, so the call
    only returns here if the blocking system call itself returned (EINTR)."""
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        if kind == "flock":
            fcntl.flock(state["fd"], fcntl.LOCK_EX)
        else:
            h.fcntl_lock(state["fd"], fcntl.F_SETLKW, fcntl.F_WRLCK, start, length)
        return "granted"
    except _Interrupted:
        return "interrupted"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_interrupt_blocked_waiter():
    for kind in ("fcntl", "flock"):
        s, a, b = new_file("interrupt-" + kind)
        holder, waiter, probe = worker_on(a), worker_on(a), worker_on(b)
        try:
            if kind == "flock":
                try_call(holder, w_flock, fcntl.LOCK_EX)
            else:
                try_call(holder, w_setlk, fcntl.F_SETLK, fcntl.F_WRLCK, 0, 100)
            kind_, val = waiter.call_raw(w_wait_interrupted, kind, 0, 100, timeout=20)
            h.check("a signal to a process blocked in %s via the mount ends its wait: the "
                    "call returns EINTR" % ("F_SETLKW" if kind == "fcntl" else "flock"),
                    (kind_, val) == ("ok", "interrupted"), (kind_, val))
            if kind == "flock":
                try_call(holder, w_flock, fcntl.LOCK_UN)
                r = eventually(lambda: flock_probe(probe))
            else:
                try_call(holder, w_setlk, fcntl.F_SETLK, fcntl.F_UNLCK, 0, 0)
                r = eventually(lambda: fcntl_probe(probe))
            h.check("after the interrupt the %s wait holds nothing: another process gets the "
                    "lock once the holder releases it" % kind, r == 0, h.ename(r))
        finally:
            for w in (holder, waiter, probe):
                w.close()


def test_stop_with_waiters():
    src = os.path.join(BASE, "src-stop")
    h.mkdirs(src)
    h.write_file(os.path.join(src, "f"), b"\0" * 4096)
    m = h.mount_efscache(src, os.path.join(BASE, "mnt-stop"), foreground=True,
                         cache_dir=os.path.join(BASE, "cache-stop"))
    holder = worker_on(m.path("f"))
    waiters = []
    try:
        try_call(holder, w_setlk, fcntl.F_SETLK, fcntl.F_WRLCK, 0, 100)
        for _ in range(3):
            w = worker_on(m.path("f"))
            w.call_async(w_setlkw_then_check, os.path.join(BASE, "stop-marker"))
            waiters.append(w)
        h.check("three F_SETLKW wait on the mount", not any(w.ready(0.3) for w in waiters))
        m.proc.send_signal(signal.SIGTERM)
        try:
            rc = m.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001
            rc = "still running 30 s after SIGTERM"
        h.eq("the daemon stops on SIGTERM with lock waiters parked, exit 0", rc, 0)
        res = [w.result_raw(timeout=20) for w in waiters]
        h.check("every blocked waiter's call returns with an error when the daemon stops",
                all(k == "errno" for k, _ in res), res)
    finally:
        holder.close()
        for w in waiters:
            w.close()
        h.unmount(m)


def w_setlkw(state, ltype, start, length):
    h.fcntl_lock(state["fd"], fcntl.F_SETLKW, ltype, start, length)
    return True


def deadlock_sequence(path):
    """Two processes each hold a range and then wait for the other's.  Returns what the
    second waiter got and whether the first was then granted once the second gave up."""
    p1, p2 = worker_on(path), worker_on(path)
    try:
        try_call(p1, w_setlk, fcntl.F_SETLK, fcntl.F_WRLCK, 0, 10)
        try_call(p2, w_setlk, fcntl.F_SETLK, fcntl.F_WRLCK, 10, 10)
        p1.call_async(w_setlkw, fcntl.F_WRLCK, 10, 10)
        first_waits = not p1.ready(0.3)
        second = h.ename(try_call(p2, w_setlkw, fcntl.F_WRLCK, 0, 10))
        try_call(p2, w_setlk, fcntl.F_SETLK, fcntl.F_UNLCK, 0, 0)
        kind, val = p1.result_raw(timeout=20)
        return first_waits, second, (kind, val)
    finally:
        p1.close()
        p2.close()


def test_fcntl_deadlock_detected():
    s, a, b = new_file("deadlock")
    s2 = os.path.join(SRC, "deadlock-ref")
    h.write_file(s2, b"\0" * 4096)
    ref = deadlock_sequence(s2)
    got = deadlock_sequence(a)
    h.check("on SOURCE the second of two processes waiting for each other gets EDEADLK "
            "(the reference)", ref[1] == h.ename(errno.EDEADLK), ref)
    h.eq("through the mount, the second of two processes waiting for each other's range "
         "gets what it gets on SOURCE, and the first is granted once the second unlocks",
         got, ref)


# --- a close while the same process waits (issue 15) ------------------------------------

def w_setlkw_in_thread(state, start, length):
    """Start a thread of this process that waits (F_SETLKW) for a write lock; its result
    (0 or errno) lands in state["waited"]."""
    import threading

    def run():
        try:
            h.fcntl_lock(state["fd"], fcntl.F_SETLKW, fcntl.F_WRLCK, start, length)
            state["waited"] = 0
        except OSError as e:
            state["waited"] = e.errno

    state["waiter"] = threading.Thread(target=run, daemon=True)
    state["waiter"].start()
    return True


def w_join_waiter(state, timeout):
    state["waiter"].join(timeout)
    return state.get("waited", "still waiting")


def close_while_waiting(path, other_path):
    """Process P holds [0,10) and, in a second thread, waits for [100,110), which Q holds
    (through other_path).  P then closes another fd of the file: POSIX drops P's locks at
    once, and P's wait goes on.  Once Q unlocks, P's wait is granted and P holds the
    range.  R probes each step.  Returns the results."""
    p, q, r = worker_on(path), worker_on(other_path), worker_on(other_path)
    res = []
    try:
        res.append(try_call(q, w_setlk, fcntl.F_SETLK, fcntl.F_WRLCK, 100, 10))
        res.append(try_call(p, w_setlk, fcntl.F_SETLK, fcntl.F_WRLCK, 0, 10))
        p.call(w_setlkw_in_thread, 100, 10)
        time.sleep(0.3)  # P's wait reaches the daemon and is parked (or not: same results)
        res.append(try_call(p, w_open_close_other_fd, path))
        res.append(h.ename(eventually(lambda: fcntl_probe_range(r, 0, 10))))
        res.append(try_call(q, w_setlk, fcntl.F_SETLK, fcntl.F_UNLCK, 100, 10))
        res.append(p.call(w_join_waiter, 20 * h.TIMEOUT_SCALE))
        res.append(h.ename(fcntl_probe_range(r, 100, 10)))
    finally:
        p.close()
        q.close()
        r.close()
    return res


def test_close_while_waiting():
    s, a, b = new_file("close-wait")
    s2 = os.path.join(SRC, "close-wait-ref")
    h.write_file(s2, b"\0" * 4096)
    ref = close_while_waiting(s2, s2)
    got = close_while_waiting(a, b)
    h.eq("on SOURCE: after P's close its [0,10) is free; its wait is then granted and "
         "holds (the reference)", ref[3:], ["0 (success)", 0, 0, "EAGAIN"])
    h.eq("through the mount: a close while the same process waits drops the process's "
         "locks at once (the parked wait keeps none alive), and the wait granted after it "
         "holds its lock", got, ref)


h.run_tests([test_flock_exclusive, test_flock_shared, test_flock_blocking,
             test_flock_release_on_close_and_exit, test_fcntl_ranges, test_fcntl_setlkw_blocks,
             test_fcntl_release_on_close_and_exit, test_fcntl_posix_owner,
             test_grantable_lock_creates_no_thread, test_blocked_waiters_share_one_thread,
             test_interrupt_blocked_waiter, test_stop_with_waiters,
             test_fcntl_deadlock_detected, test_close_while_waiting])
