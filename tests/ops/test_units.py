"""The systemd units, the dead-mount helper, the tmpfiles.d rule, the demo's package list
and the PodMonitor say and do what docs/operations.md promises.

- efscache.service and efscache@.service: hardening that makes no mount namespace (the
  FUSE mount must reach the host: tests/ops/debian.sh checks that under a real systemd),
  a negative OOMScoreAdjust, no blind `fusermount3 -uz` (only the dead-mount helper), the
  same [Service] settings in both, `systemd-analyze verify` clean and the offline
  `systemd-analyze security` exposure well below the 9.6 of the unit before.
- contrib/systemd/efscache-clear-dead-mount, on real mounts: leaves a directory and a
  live efscache mount alone (readers keep reading), clears a dead one (daemon killed).
- contrib/demo.sh installs a package for every dependency() of the meson build.
- contrib/k8s/podmonitor.yaml selects the DaemonSet's pods and its metrics port.
"""

import configparser
import os
import re
import subprocess

import harness as h

import yaml  # Debian's python3-yaml

C = os.path.join(h.SRC_DIR, "contrib")
SD = os.path.join(C, "systemd")
HELPER = os.path.join(SD, "efscache-clear-dead-mount")

# Settings that give the service its own mount namespace: the FUSE mount would stay in it.
NAMESPACED = ("PrivateMounts", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
              "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
              "ProtectControlGroups", "ProtectProc", "ProcSubset", "ReadOnlyPaths",
              "ReadWritePaths", "InaccessiblePaths", "TemporaryFileSystem", "BindPaths",
              "BindReadOnlyPaths", "MountFlags", "RootDirectory", "RootImage", "PrivateUsers",
              "PrivateNetwork", "NetworkNamespacePath", "MountAPIVFS")


def read_unit(name):
    """{section: [(key, value), ...]} keeping repeated keys."""
    out, sec = {}, None
    with open(os.path.join(SD, name)) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                sec = line.strip("[]")
                out.setdefault(sec, [])
            elif "=" in line:
                k, v = line.split("=", 1)
                out[sec].append((k.strip(), v.strip()))
    return out


def values(unit, sec, key):
    return [v for k, v in unit.get(sec, []) if k == key]


def test_units():
    units = {n: read_unit(n) for n in ("efscache.service", "efscache@.service")}
    for name, u in units.items():
        keys = {k for k, _ in u["Service"]}
        h.eq("%s: Type=notify" % name, values(u, "Service", "Type"), ["notify"])
        oom = values(u, "Service", "OOMScoreAdjust")
        h.check("%s: OOMScoreAdjust negative, above -1000" % name,
                len(oom) == 1 and -1000 < int(oom[0]) < 0, oom)
        bad = sorted(keys & set(NAMESPACED))
        h.check("%s: no setting that makes a mount namespace" % name, not bad, bad)
        for k, v in (("NoNewPrivileges", "yes"), ("DevicePolicy", "closed"),
                     ("DeviceAllow", "/dev/fuse rw"), ("RestrictNamespaces", "yes"),
                     ("SystemCallArchitectures", "native")):
            h.check("%s: %s=%s" % (name, k, v), v in values(u, "Service", k))
        caps = " ".join(values(u, "Service", "CapabilityBoundingSet")).split()
        h.check("%s: capabilities bounded, CAP_SYS_ADMIN kept" % name,
                "CAP_SYS_ADMIN" in caps and "CAP_SYS_MODULE" not in caps and
                "CAP_NET_ADMIN" not in caps, caps)
        filt = values(u, "Service", "SystemCallFilter")
        h.check("%s: a system call allow list with @mount" % name,
                any("@system-service" in f and "@mount" in f for f in filt), filt)
        execs = values(u, "Service", "ExecStartPre") + values(u, "Service", "ExecStopPost")
        h.check("%s: no blind fusermount3 -uz; the dead-mount helper instead" % name,
                not any("fusermount" in e for e in execs) and
                any("efscache-clear-dead-mount ${EFSCACHE_MOUNTPOINT}" in e for e in execs),
                execs)
        h.check("%s: LimitNOFILE raised" % name,
                int(values(u, "Service", "LimitNOFILE")[0]) >= 65536)
    # The template: its own file per instance, and the rest of [Service] as the unit's.
    t, s = units["efscache@.service"], units["efscache.service"]
    h.eq("template: EnvironmentFile=/etc/default/efscache-%i (required)",
         values(t, "Service", "EnvironmentFile"), ["/etc/default/efscache-%i"])
    skip = ("Environment", "EnvironmentFile")
    h.eq("template: the same [Service] settings as efscache.service",
         [kv for kv in t["Service"] if kv[0] not in skip],
         [kv for kv in s["Service"] if kv[0] not in skip])
    h.check("template: no RequiresMountsFor guessed (a drop-in per instance)",
            not values(t, "Unit", "RequiresMountsFor"))
    if subprocess.run(["which", "systemd-analyze"], capture_output=True).returncode != 0:
        h.note("systemd-analyze is missing: verify and security not run")
        return
    tmp = h.tmpdir()
    inst = os.path.join(tmp, "efscache@models.service")
    with open(os.path.join(SD, "efscache@.service")) as f, open(inst, "w") as g:
        g.write(f.read())
    for path in (os.path.join(SD, "efscache.service"), inst):
        r = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True)
        bad = [ln for ln in r.stderr.splitlines()
               if "not executable" not in ln and "man " not in ln and ln.strip()]
        h.check("%s: systemd-analyze verify: no complaint but the missing binary"
                % os.path.basename(path), not bad, r.stderr)
        r = subprocess.run(["systemd-analyze", "security", "--offline=true", path],
                           capture_output=True, text=True)
        m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout + r.stderr)
        if m:
            h.note("%s: systemd-analyze security: %s (9.6 before the hardening)"
                   % (os.path.basename(path), m.group(1)))
            h.check("%s: exposure at most 5.0" % os.path.basename(path),
                    float(m.group(1)) <= 5.0, m.group(0))
        else:
            h.note("systemd-analyze security --offline not available: %s" % r.stderr[:200])


def defaults(path):
    env = {}
    with open(path) as f:
        for line in f:
            if "=" in line and not line.startswith("#"):
                k, v = line.strip().split("=", 1)
                env[k] = v
    return env


def test_defaults_and_tmpfiles():
    for name in ("efscache.default", "efscache-instance.default"):
        env = defaults(os.path.join(SD, name))
        h.eq("%s: sets source, mountpoint and options" % name, sorted(env),
             ["EFSCACHE_MOUNTPOINT", "EFSCACHE_OPTIONS", "EFSCACHE_SOURCE"])
        opts = env["EFSCACHE_OPTIONS"]
        h.check("%s: cache_dir on disk, not in /tmp" % name,
                "cache_dir=/var/cache/" in opts, opts)
        h.check("%s: metrics not on 9464 (OpenTelemetry's exporter)" % name, ":9464" not in opts,
                opts)
        p = subprocess.run([h.EFSCACHE_BIN, "/nonexistent-src", "/nonexistent-mnt", "-o", opts],
                           capture_output=True, text=True, timeout=10)
        h.check("%s: efscache accepts -o %s" % (name, opts),
                p.returncode == 2 and "option" not in p.stderr, (p.returncode, p.stderr))
    with open(os.path.join(SD, "efscache.tmpfiles")) as f:
        rules = [ln.split() for ln in f if ln.strip() and not ln.startswith("#")]
    h.eq("tmpfiles.d: /tmp/efscache (the default cache_dir) is never aged", rules,
         [["x", "/tmp/efscache"]])


def fuse_at(path):
    with open("/proc/self/mountinfo") as f:
        for ln in f:
            p = ln.split()
            if p[4] == path and p[p.index("-") + 1].startswith("fuse"):
                return True
    return False


def helper(path):
    return subprocess.run([HELPER, path], capture_output=True, text=True, timeout=60)


def test_clear_dead_mount():
    base = h.tmpdir()
    src = os.path.join(base, "src")
    h.mkdirs(src)
    with open(os.path.join(src, "f"), "w") as f:
        f.write("alive\n")
    plain = os.path.join(base, "plain")
    h.mkdirs(plain)
    r = helper(plain)
    h.check("a plain directory: nothing done, exit 0", r.returncode == 0 and not r.stderr,
            (r.returncode, r.stderr))
    m = h.mount_efscache(src, os.path.join(base, "mnt"))
    with open(m.path("f")) as reader:
        r = helper(m.mnt)
        h.check("a live mount: left alone, exit 0", r.returncode == 0 and fuse_at(m.mnt) and
                "live" in r.stderr, (r.returncode, r.stderr))
        h.eq("a live mount: a reader with the file open still reads", reader.read(), "alive\n")
    with open(m.path("f")) as f:
        h.eq("a live mount: new opens still work", f.read(), "alive\n")
    m.kill9()
    dead = False
    for _ in range(600):  # the kernel aborts the connection once the daemon is gone
        try:
            os.listdir(m.mnt)
        except OSError as e:
            dead = e.errno == h.errno.ENOTCONN
        if dead:
            break
        h.time.sleep(0.05)
    h.check("after kill -9 the mount is dead (ENOTCONN)", dead and fuse_at(m.mnt))
    r = helper(m.mnt)
    h.check("a dead mount: cleared, exit 0", r.returncode == 0 and not fuse_at(m.mnt) and
            "ENOTCONN" in r.stderr, (r.returncode, r.stderr))
    h.unmount(m)
    m2 = h.mount_efscache(src, os.path.join(base, "mnt"))
    with open(m2.path("f")) as f:
        h.eq("a new mount on the cleared mountpoint works", f.read(), "alive\n")
    h.unmount(m2)
    r = subprocess.run([HELPER], capture_output=True, text=True)
    h.eq("no argument: usage error", r.returncode, 1)


def test_demo_packages():
    """Every dependency() of the build has its -dev package in demo.sh's list (the first
    command of the README failed when libmicrohttpd was added to meson.build only)."""
    with open(os.path.join(C, "demo.sh")) as f:
        demo = f.read()
    m = re.search(r"DEMO_PACKAGES=\(([^)]*)\)", demo)
    pkgs = set(m.group(1).split()) if m else set()
    h.check("demo.sh: DEMO_PACKAGES found", bool(pkgs))
    deps = set()
    for mb in ("meson.build", "src/meson.build"):
        with open(os.path.join(h.SRC_DIR, mb)) as f:
            deps |= set(re.findall(r"dependency\('([^']+)'", f.read()))
    deps.discard("threads")
    h.check("the build has dependencies", len(deps) >= 3, deps)
    for dep in sorted(deps):
        pc = subprocess.run(["pkg-config", "--variable=pcfiledir", dep], capture_output=True,
                            text=True)
        if pc.returncode != 0:
            h.check("pkg-config knows %s (installed by tests/run.sh)" % dep, False, pc.stderr)
            continue
        pcfile = os.path.join(pc.stdout.strip(), dep + ".pc")
        owner = subprocess.run(["dpkg", "-S", pcfile], capture_output=True, text=True)
        pkg = owner.stdout.split(":")[0] if owner.returncode == 0 else None
        h.check("demo.sh installs %s (for dependency('%s'))" % (pkg, dep), pkg in pkgs,
                sorted(pkgs))
    for tool in ("gcc", "meson", "ninja-build", "pkg-config", "fuse3", "attr", "python3"):
        h.check("demo.sh installs %s" % tool, tool in pkgs)


def test_podmonitor():
    with open(os.path.join(C, "k8s", "podmonitor.yaml")) as f:
        pm = yaml.safe_load(f)
    with open(os.path.join(C, "k8s", "efscache-daemonset.yaml")) as f:
        ds = [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "DaemonSet"][0]
    h.eq("podmonitor: a PodMonitor", (pm["apiVersion"], pm["kind"]),
         ("monitoring.coreos.com/v1", "PodMonitor"))
    labels = ds["spec"]["template"]["metadata"]["labels"]
    sel = pm["spec"]["selector"]["matchLabels"]
    h.check("podmonitor: selects the DaemonSet's pods",
            all(labels.get(k) == v for k, v in sel.items()), (sel, labels))
    ports = [p.get("name") for c in ds["spec"]["template"]["spec"]["containers"]
             for p in c.get("ports", [])]
    eps = pm["spec"]["podMetricsEndpoints"]
    h.check("podmonitor: scrapes a named port of the DaemonSet, /metrics",
            all(e["port"] in ports and e.get("path", "/metrics") == "/metrics" for e in eps),
            (eps, ports))


if __name__ == "__main__":
    h.require_fuse()
    h.run_tests([test_units, test_defaults_and_tmpfiles, test_clear_dead_mount,
                 test_demo_packages, test_podmonitor])
