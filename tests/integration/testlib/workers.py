"""Forked workers: code that runs as another user, or holds fds and locks in another process.

Contract:
- as_user(uid, gid, fn, *args) runs fn({}, *args) once in a forked child with those
  credentials and returns ("ok", value), ("errno", n), ("error", text) or ("timeout", None);
  fn may be a closure (it is not pickled, the child is a fork).
- Worker(uid=...) is a long-lived child running fn(state, *args) on request; fn and its
  args and result are pickled (module-level functions only); `state` is a dict kept across
  calls.  call() returns the value or raises OSError(errno); call_async() + ready() +
  result_raw() observe a call that blocks (F_SETLKW).  A worker's fds close when it exits.
- Waits for an answer (as_user, result_raw, call) are multiplied by TIMEOUT_SCALE.
- Children never run the parent's cleanup (they leave by os._exit); cleanup (stage 10)
  closes every worker, killing one blocked in a call; the watchdog SIGKILLs them all.
"""

import os
import pickle
import select
import signal
import struct
import sys
import time
import traceback

from .checks import TIMEOUT_SCALE, on_cleanup, on_watchdog

__all__ = ["drop_privs", "as_user", "Worker"]

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
            res = _recv(r, time.monotonic() + timeout * TIMEOUT_SCALE)
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
            res = _recv(self.rfd, time.monotonic() + timeout * TIMEOUT_SCALE)
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


def _close_all():
    for w in list(_workers):
        try:
            w.close()
        except Exception:  # noqa: BLE001
            pass


def _kill_all():
    for w in list(_workers):
        if w.pid:
            try:
                os.kill(w.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


on_cleanup(10, _close_all)
on_watchdog(_kill_all)
