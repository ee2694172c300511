"""systemd Type=notify: the daemon runs with NOTIFY_SOCKET pointing at a datagram socket
this test reads, as systemd would.

Checks: READY=1 arrives only once the mount is live (a stat through it works at that
moment), with a STATUS= line; a periodic STATUS= carries the counters; on SIGTERM the
daemon sends STOPPING=1, unmounts and exits 0.  Also with an abstract socket ('@name'),
and without NOTIFY_SOCKET nothing changes.  Built on ../integration/harness.py.
"""

import os
import signal
import socket
import subprocess
import time

import harness as h


def start(base, name, sock_addr):
    """Run efscache -f with NOTIFY_SOCKET=sock_addr; returns (proc, mnt)."""
    src, mnt = os.path.join(base, "src-" + name), os.path.join(base, "mnt-" + name)
    h.mkdirs(src, mnt)
    h.write_file(os.path.join(src, "hello"), b"hello world\n")
    env = dict(os.environ)
    if sock_addr is None:
        env.pop("NOTIFY_SOCKET", None)
    else:
        env["NOTIFY_SOCKET"] = sock_addr
    proc = subprocess.Popen([h.EFSCACHE_BIN, src, mnt, "-f", "-o",
                             "cache_dir=%s/cache-%s" % (base, name)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    h.note_daemon_pids([proc.pid])
    return proc, mnt


def recv_until(sock, key, timeout):
    """Messages received until one has a line starting with key (or timeout)."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            break
        got.append(msg)
        if any(line.startswith(key) for line in msg.splitlines()):
            break
    return got


def stop(proc, mnt):
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    return rc


def test_path_socket():
    base = h.tmpdir()
    path = os.path.join(base, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    proc, mnt = start(base, "path", path)
    try:
        msgs = recv_until(sock, "READY=1", 15)
        ready = [m for m in msgs if "READY=1" in m.splitlines()]
        h.check("READY=1 received", ready, msgs)
        # The mount must be live when READY=1 arrives: stat and read through it now.
        live = h.is_mounted(mnt) and h.read_file(os.path.join(mnt, "hello")) == b"hello world\n"
        h.check("mount is live when READY=1 arrives", live)
        h.check("READY=1 comes with a STATUS= line",
                ready and any(ln.startswith("STATUS=serving") for ln in ready[0].splitlines()),
                ready)
        msgs = recv_until(sock, "STATUS=serving:", 15)
        h.check("periodic STATUS= with the counters (hits, misses, cache)",
                msgs and "hits" in msgs[-1] and "cache" in msgs[-1] and "\n" not in
                msgs[-1].strip(), msgs)
        proc.send_signal(signal.SIGTERM)
        msgs = recv_until(sock, "STOPPING=1", 15)
        h.check("STOPPING=1 on SIGTERM", any("STOPPING=1" in m.splitlines() for m in msgs),
                msgs)
        rc = proc.wait(timeout=20)
        h.eq("exit 0 after SIGTERM", rc, 0, proc.stderr.read().decode())
        h.check("unmounted after SIGTERM", not h.is_mounted(mnt))
    finally:
        if proc.poll() is None:
            stop(proc, mnt)
        sock.close()


def test_abstract_socket():
    base = h.tmpdir()
    name = "efscache-test-notify-%d" % os.getpid()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    proc, mnt = start(base, "abstract", "@" + name)
    try:
        msgs = recv_until(sock, "READY=1", 15)
        h.check("abstract socket: READY=1 received", any("READY=1" in m for m in msgs), msgs)
        h.eq("abstract socket: exit 0 after SIGTERM", stop(proc, mnt), 0)
        h.check("abstract socket: unmounted", not h.is_mounted(mnt))
    finally:
        if proc.poll() is None:
            stop(proc, mnt)
        sock.close()


def test_no_socket():
    base = h.tmpdir()
    proc, mnt = start(base, "none", None)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not h.is_mounted(mnt):
            time.sleep(0.05)
        h.check("without NOTIFY_SOCKET: mounts as before", h.is_mounted(mnt))
        h.eq("without NOTIFY_SOCKET: exit 0 after SIGTERM", stop(proc, mnt), 0)
    finally:
        if proc.poll() is None:
            stop(proc, mnt)


if __name__ == "__main__":
    h.require_fuse()
    h.run_tests([test_path_socket, test_abstract_socket, test_no_socket])
