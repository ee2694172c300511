"""The deployment recipes parse and say what docs/operations.md promises.

contrib/k8s (YAML), contrib/ecs (JSON), contrib/systemd (unit), contrib/container and
contrib/debian are checked for syntax and for the settings that make them work (FUSE
device and capability, mount propagation, preStop unmount, Type=notify, ...).  The -o
options in each recipe are fed to the real efscache binary, which must accept them.
Running the image and `podman kube play` of the DaemonSet's pod are in
tests/container/run.sh.
"""

import configparser
import json
import os
import subprocess

import harness as h

import yaml  # Debian's python3-yaml; meson runs the tests with Debian's python3

C = os.path.join(h.SRC_DIR, "contrib")


def options_accepted(name, opts):
    """efscache must refuse only the (missing) paths, never an option."""
    p = subprocess.run([h.EFSCACHE_BIN, "/nonexistent-src", "/nonexistent-mnt", "-o", opts],
                       capture_output=True, text=True, timeout=10)
    h.check("%s: efscache accepts -o %s" % (name, opts),
            p.returncode == 2 and "option" not in p.stderr and "nonexistent" in p.stderr,
            (p.returncode, p.stderr))


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_k8s():
    with open(os.path.join(C, "k8s", "efscache-daemonset.yaml")) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    h.eq("daemonset: one document, a DaemonSet", [d["kind"] for d in docs], ["DaemonSet"])
    ds = docs[0]
    spec = ds["spec"]["template"]["spec"]
    h.eq("daemonset: selector matches the pod labels",
         ds["spec"]["selector"]["matchLabels"],
         {k: v for k, v in ds["spec"]["template"]["metadata"]["labels"].items()
          if k in ds["spec"]["selector"]["matchLabels"]})
    c = spec["containers"][0]
    sc = c.get("securityContext", {})
    h.check("daemonset: privileged or SYS_ADMIN",
            sc.get("privileged") or "SYS_ADMIN" in sc.get("capabilities", {}).get("add", []))
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    h.check("daemonset: every volumeMount has a volume", set(mounts) <= set(vols),
            (mounts.keys(), vols.keys()))
    h.check("daemonset: /dev/fuse from the host",
            any(v.get("hostPath", {}).get("path") == "/dev/fuse" for v in vols.values()))
    env = env_of(c)
    mnt = env.get("EFSCACHE_MOUNTPOINT")
    bidi = [m for m in mounts.values() if m.get("mountPropagation") == "Bidirectional"]
    h.check("daemonset: the mountpoint is mounted with Bidirectional propagation",
            len(bidi) == 1 and bidi[0]["mountPath"] == mnt, bidi)
    src = [m for m in mounts.values() if m["mountPath"] == env.get("EFSCACHE_SOURCE")]
    h.check("daemonset: the EFS hostPath is the source", src and "hostPath" in vols[src[0]["name"]])
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    h.check("daemonset: preStop unmounts the mountpoint",
            pre[:1] == ["fusermount3"] and "-u" in "".join(pre[1:2]) and pre[-1] == mnt, pre)
    h.check("daemonset: resource limits", "limits" in c.get("resources", {}))
    opts = env.get("EFSCACHE_OPTIONS", "")
    port = [p["containerPort"] for p in c.get("ports", []) if p.get("name") == "metrics"]
    h.check("daemonset: metrics port matches -o metrics=",
            port and ("metrics=0.0.0.0:%d" % port[0]) in opts, (port, opts))
    probe = c.get("livenessProbe", {}).get("exec", {}).get("command", [])
    h.check("daemonset: health probe uses efscachectl", probe[:1] == ["efscachectl"], probe)
    options_accepted("daemonset", opts)
    S["models_host"] = vols[bidi[0]["name"]]["hostPath"]["path"] if bidi else None

    with open(os.path.join(C, "k8s", "consumer-pod.yaml")) as f:
        pod = yaml.safe_load(f)
    h.eq("consumer: a Pod", pod["kind"], "Pod")
    pc = pod["spec"]["containers"][0]
    pv = {v["name"]: v for v in pod["spec"]["volumes"]}
    hm = [m for m in pc["volumeMounts"] if m.get("mountPropagation") == "HostToContainer"]
    h.check("consumer: HostToContainer mount of the DaemonSet's host path",
            hm and pv[hm[0]["name"]]["hostPath"]["path"] == S["models_host"], hm)
    h.check("consumer: not privileged", not pc.get("securityContext", {}).get("privileged"))


def test_ecs():
    with open(os.path.join(C, "ecs", "task-definition.json")) as f:
        td = json.load(f)
    h.eq("ecs: EC2 launch type (Fargate has no FUSE)", td["requiresCompatibilities"], ["EC2"])
    c = td["containerDefinitions"][0]
    lp = c["linuxParameters"]
    h.check("ecs: SYS_ADMIN capability", "SYS_ADMIN" in lp["capabilities"]["add"])
    h.check("ecs: /dev/fuse device",
            any(d["hostPath"] == "/dev/fuse" for d in lp["devices"]), lp)
    vols = {v["name"] for v in td["volumes"]}
    h.check("ecs: every mountPoint has a volume",
            all(m["sourceVolume"] in vols for m in c["mountPoints"]))
    h.eq("ecs: bundled mode through the entrypoint", c.get("command", [""])[0], "--")
    h.check("ecs: health check uses efscachectl", "efscachectl" in c["healthCheck"]["command"])
    env = {e["name"]: e["value"] for e in c["environment"]}
    options_accepted("ecs", env["EFSCACHE_OPTIONS"])


def test_systemd():
    p = configparser.RawConfigParser(strict=False, interpolation=None)
    p.optionxform = str
    p.read(os.path.join(C, "systemd", "efscache.service"))
    s, u = p["Service"], p["Unit"]
    h.eq("unit: Type=notify", s.get("Type"), "notify")
    h.check("unit: LimitNOFILE raised", int(s.get("LimitNOFILE", "0")) >= 65536)
    h.check("unit: needs the EFS mount", "RequiresMountsFor" in u or "Requires" in u)
    h.check("unit: runs in the foreground", " -f " in s.get("ExecStart", ""))
    defaults = {}
    with open(os.path.join(C, "systemd", "efscache.default")) as f:
        for line in f:
            if "=" in line and not line.startswith("#"):
                k, v = line.strip().split("=", 1)
                defaults[k] = v
    options_accepted("systemd defaults", defaults["EFSCACHE_OPTIONS"])
    if subprocess.run(["which", "systemd-analyze"], capture_output=True).returncode == 0:
        r = subprocess.run(["systemd-analyze", "verify",
                            os.path.join(C, "systemd", "efscache.service")],
                           capture_output=True, text=True)
        bad = [ln for ln in r.stderr.splitlines()
               if "not executable" not in ln and "man " not in ln and ln.strip()]
        h.check("unit: systemd-analyze verify has no complaint but the missing binary", not bad,
                r.stderr)


def test_container_and_debian():
    with open(os.path.join(C, "container", "Containerfile")) as f:
        cf = f.read()
    froms = [ln for ln in cf.splitlines() if ln.startswith("FROM ")]
    h.check("Containerfile: ARG BASE and two stages from it",
            "ARG BASE=debian:12-slim" in cf and len(froms) == 2 and
            all("${BASE}" in ln for ln in froms), froms)
    h.check("Containerfile: runtime installs the .deb", "apt-get install -y --no-install-recommends "
            "/tmp/efscache_*.deb" in cf)
    h.check("Containerfile: HEALTHCHECK with efscachectl", "HEALTHCHECK" in cf and
            "efscachectl stats" in cf)
    r = subprocess.run(["sh", "-n", os.path.join(C, "container", "entrypoint.sh")],
                       capture_output=True, text=True)
    h.eq("entrypoint.sh: sh -n", r.returncode, 0, r.stderr)
    with open(os.path.join(C, "debian", "control")) as f:
        ctl = f.read()
    for dep in ("libfuse3-dev", "libxxhash-dev", "libmicrohttpd-dev", "meson", "scdoc"):
        h.check("debian/control: Build-Depends %s" % dep, dep in ctl)
    h.check("debian/rules: executable", os.access(os.path.join(C, "debian", "rules"), os.X_OK))


S = {}

if __name__ == "__main__":
    h.run_tests([test_k8s, test_ecs, test_systemd, test_container_and_debian])
