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
import re
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


# Pod Security Standards (https://kubernetes.io/docs/concepts/security/pod-security-standards/),
# the controls of the baseline and restricted profiles that a pod spec can break.
PSS_BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                     "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
PSS_RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                          "persistentVolumeClaim", "projected", "secret"}
PSS_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t",
                     "container_engine_t"}


def pss_violations(pod, level):
    """What in pod (a Pod manifest) the given profile ("baseline" or "restricted") refuses."""
    spec = pod["spec"]
    psc = spec.get("securityContext") or {}
    ctrs = spec.get("containers", []) + spec.get("initContainers", []) + \
        spec.get("ephemeralContainers", [])
    bad = []
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(f):
            bad.append("spec.%s" % f)
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        bad.append("hostProcess")
    for v in spec.get("volumes", []):
        if "hostPath" in v:
            bad.append("volume %s: hostPath" % v["name"])
        if level == "restricted":
            kinds = set(v) - {"name"}
            if not kinds <= PSS_RESTRICTED_VOLUMES:
                bad.append("volume %s: type %s" % (v["name"], sorted(kinds)))
    sel = psc.get("seLinuxOptions") or {}
    if sel.get("type", "") not in PSS_SELINUX_TYPES or "user" in sel or "role" in sel:
        bad.append("pod seLinuxOptions")
    if (psc.get("seccompProfile") or {}).get("type") == "Unconfined":
        bad.append("pod seccompProfile Unconfined")
    if (psc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        bad.append("pod appArmorProfile Unconfined")
    for c in ctrs:
        n = c["name"]
        sc = c.get("securityContext") or {}
        caps = sc.get("capabilities") or {}
        if sc.get("privileged"):
            bad.append("%s: privileged" % n)
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            bad.append("%s: hostProcess" % n)
        if not set(caps.get("add") or []) <= PSS_BASELINE_CAPS:
            bad.append("%s: capabilities.add %s" % (n, caps.get("add")))
        if any(p.get("hostPort") for p in c.get("ports", [])):
            bad.append("%s: hostPort" % n)
        if sc.get("procMount", "Default") != "Default":
            bad.append("%s: procMount" % n)
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            bad.append("%s: seccompProfile Unconfined" % n)
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            bad.append("%s: appArmorProfile Unconfined" % n)
        csel = sc.get("seLinuxOptions") or {}
        if csel.get("type", "") not in PSS_SELINUX_TYPES or "user" in csel or "role" in csel:
            bad.append("%s: seLinuxOptions" % n)
        if level != "restricted":
            continue
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append("%s: allowPrivilegeEscalation is not false" % n)
        if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            bad.append("%s: runAsNonRoot is not true" % n)
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            bad.append("%s: runAsUser 0" % n)
        prof = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if prof not in ("RuntimeDefault", "Localhost"):
            bad.append("%s: seccompProfile %s" % (n, prof))
        if "ALL" not in (caps.get("drop") or []):
            bad.append("%s: capabilities.drop lacks ALL" % n)
        if not set(caps.get("add") or []) <= {"NET_BIND_SERVICE"}:
            bad.append("%s: capabilities.add %s" % (n, caps.get("add")))
    if pod.get("metadata", {}).get("annotations", {}).get(
            "seccomp.security.alpha.kubernetes.io/pod") == "unconfined":
        bad.append("seccomp annotation unconfined")
    return bad


def waits_for_mount(container, path):
    """The startup guard: an init container that waits for a fuse.efscache mount at path
    in /proc/self/mountinfo."""
    cmd = " ".join(container.get("command", []) + container.get("args", []))
    return ("/proc/self/mountinfo" in cmd and ('"%s"' % path) in cmd and "fuse.efscache" in cmd
            and "until" in cmd)


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
    ru = ds["spec"].get("updateStrategy", {}).get("rollingUpdate", {})
    h.check("daemonset: maxSurge 0 (never two efscache pods on a node during a rollout)",
            ru.get("maxSurge") == 0 and ru.get("maxUnavailable", 1) not in (0, "0%"), ru)
    tol = spec.get("tolerations", [])
    h.check("daemonset: tolerates every taint (GPU nodes are tainted)",
            {"operator": "Exists"} in tol, tol)
    terms = spec.get("affinity", {}).get("nodeAffinity", {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", [])
    h.check("daemonset: required node affinity keeps it off Fargate",
            terms and all(any(e["key"] == "eks.amazonaws.com/compute-type" and
                              e["operator"] == "NotIn" and "fargate" in e["values"]
                              for e in t.get("matchExpressions", [])) for t in terms), terms)
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
    mnt = env.get("EFSCACHE_MOUNTPOINT", "")
    bidi = [m for m in mounts.values() if m.get("mountPropagation") == "Bidirectional"]
    h.check("daemonset: the mount is made one level below the Bidirectional bind of a "
            "hostPath directory (the parent stays healthy when the mount dies)",
            len(bidi) == 1 and os.path.dirname(mnt) == bidi[0]["mountPath"] and
            "hostPath" in vols[bidi[0]["name"]], (mnt, bidi))
    src = env.get("EFSCACHE_SOURCE", "")
    srcm = [m for m in mounts.values() if src.startswith(m["mountPath"] + "/")]
    h.check("daemonset: SOURCE lies below a HostToContainer hostPath bind (a remount of EFS "
            "on the node reaches the pod)",
            srcm and srcm[0].get("mountPropagation") == "HostToContainer" and
            "hostPath" in vols[srcm[0]["name"]], (src, srcm))
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    h.check("daemonset: no preStop unmount (it would detach whatever mount is at the path)",
            not any("umount" in w or "fusermount" in w for w in pre), pre)
    res = c.get("resources", {})
    h.check("daemonset: memory request = limit (evicted last under memory pressure)",
            res.get("limits", {}).get("memory") and
            res.get("requests", {}).get("memory") == res["limits"]["memory"], res)
    opts = env.get("EFSCACHE_OPTIONS", "")
    h.check("daemonset: require_source_mount=nfs4", "require_source_mount=nfs4" in opts, opts)
    h.check("daemonset: cache_min_free set for its volume", "cache_min_free=" in opts, opts)
    port = [p["containerPort"] for p in c.get("ports", []) if p.get("name") == "metrics"]
    h.check("daemonset: metrics port matches -o metrics=",
            port and ("metrics=0.0.0.0:%d" % port[0]) in opts, (port, opts))
    live = c.get("livenessProbe", {})
    h.check("daemonset: liveness is HTTP /healthz on the metrics port (not through the mount)",
            live.get("httpGet", {}).get("path") == "/healthz" and
            live["httpGet"].get("port") in ("metrics", port[0] if port else None), live)
    ready = c.get("readinessProbe", {})
    h.check("daemonset: readiness asks the mount, with a real timeout",
            mnt in ready.get("exec", {}).get("command", []) and
            ready.get("timeoutSeconds", 1) >= 5, ready)
    options_accepted("daemonset", opts)
    S["efscache_host"] = vols[bidi[0]["name"]]["hostPath"]["path"] if bidi else None
    S["efscache_sub"] = os.path.basename(mnt)

    with open(os.path.join(C, "k8s", "consumer-pod.yaml")) as f:
        pod = yaml.safe_load(f)
    h.eq("consumer: a Pod", pod["kind"], "Pod")
    pv = {v["name"]: v for v in pod["spec"]["volumes"]}
    for pc in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
        hm = [m for m in pc["volumeMounts"] if m.get("mountPropagation") == "HostToContainer"]
        h.check("consumer %s: HostToContainer mount of the DaemonSet's parent directory" %
                pc["name"], hm and pv[hm[0]["name"]]["hostPath"]["path"] == S["efscache_host"],
                hm)
        h.check("consumer %s: not privileged" % pc["name"],
                not pc.get("securityContext", {}).get("privileged"))
    S["consumer_mnt"] = hm[0]["mountPath"] + "/" + S["efscache_sub"] if hm else None
    inits = pod["spec"].get("initContainers", [])
    h.check("consumer: an init container waits for the efscache mount (startup guard)",
            len(inits) == 1 and waits_for_mount(inits[0], S["consumer_mnt"]), inits)
    # The checker can fail: a hostPath consumer is exactly what baseline refuses.
    h.check("consumer (hostPath): Pod Security baseline refuses it, as the docs say",
            any("hostPath" in b for b in pss_violations(pod, "baseline")))


def test_k8s_restricted():
    with open(os.path.join(C, "k8s", "restricted", "efscache-pv.yaml")) as f:
        admin = {d["kind"]: d for d in yaml.safe_load_all(f) if d}
    with open(os.path.join(C, "k8s", "restricted", "consumer.yaml")) as f:
        ns_docs = {d["kind"]: d for d in yaml.safe_load_all(f) if d}
    h.eq("restricted: admin file has a StorageClass and a PersistentVolume", sorted(admin),
         ["PersistentVolume", "StorageClass"])
    h.eq("restricted: namespace file has a Namespace, a claim and a Pod", sorted(ns_docs),
         ["Namespace", "PersistentVolumeClaim", "Pod"])
    pv, sc = admin["PersistentVolume"], admin["StorageClass"]
    pvc, pod, ns = ns_docs["PersistentVolumeClaim"], ns_docs["Pod"], ns_docs["Namespace"]
    h.eq("restricted: the PV is the DaemonSet's parent directory",
         pv["spec"]["hostPath"]["path"], S.get("efscache_host"))
    h.eq("restricted: StorageClass without a provisioner",
         sc["provisioner"], "kubernetes.io/no-provisioner")
    h.check("restricted: PV and claim name each other (claimRef, volumeName, class)",
            pv["spec"]["claimRef"] == {"namespace": pvc["metadata"]["namespace"],
                                       "name": pvc["metadata"]["name"]} and
            pvc["spec"]["volumeName"] == pv["metadata"]["name"] and
            pvc["spec"]["storageClassName"] == pv["spec"]["storageClassName"] ==
            sc["metadata"]["name"], (pv["spec"], pvc["spec"]))
    h.check("restricted: access mode ReadOnlyMany on both",
            pv["spec"]["accessModes"] == pvc["spec"]["accessModes"] == ["ReadOnlyMany"])
    h.eq("restricted: the namespace enforces Pod Security restricted",
         ns["metadata"]["labels"].get("pod-security.kubernetes.io/enforce"), "restricted")
    h.eq("restricted: the Pod is in that namespace", pod["metadata"]["namespace"],
         ns["metadata"]["name"])
    h.eq("restricted: the Pod passes Pod Security baseline", pss_violations(pod, "baseline"),
         [])
    h.eq("restricted: the Pod passes Pod Security restricted",
         pss_violations(pod, "restricted"), [])
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
        m = [x for x in c["volumeMounts"] if "persistentVolumeClaim" in vols[x["name"]]]
        h.check("restricted %s: mounts the claim with HostToContainer" % c["name"],
                m and m[0].get("mountPropagation") == "HostToContainer" and
                vols[m[0]["name"]]["persistentVolumeClaim"]["claimName"] ==
                pvc["metadata"]["name"], m)
    inits = pod["spec"].get("initContainers", [])
    h.check("restricted: the same startup guard",
            len(inits) == 1 and waits_for_mount(
                inits[0], [x for x in inits[0]["volumeMounts"]][0]["mountPath"] + "/" +
                S.get("efscache_sub", "")), inits)


def test_ecs():
    with open(os.path.join(C, "ecs", "task-definition.json")) as f:
        td = json.load(f)
    h.eq("ecs: EC2 launch type (Fargate has no FUSE)", td["requiresCompatibilities"], ["EC2"])
    c = td["containerDefinitions"][0]
    lp = c["linuxParameters"]
    h.check("ecs: SYS_ADMIN capability", "SYS_ADMIN" in lp["capabilities"]["add"])
    h.check("ecs: /dev/fuse device",
            any(d["hostPath"] == "/dev/fuse" for d in lp["devices"]), lp)
    vols = {v["name"]: v for v in td["volumes"]}
    h.check("ecs: every mountPoint has a volume",
            all(m["sourceVolume"] in vols for m in c["mountPoints"]))
    h.eq("ecs: bundled mode through the entrypoint", c.get("command", [""])[0], "--")
    hc = c["healthCheck"]["command"]
    h.check("ecs: health check by the entrypoint, not through the mount (efscachectl)",
            hc[-1] == "health" and "efscache-entrypoint" in hc[-2] and
            "efscachectl" not in hc, hc)
    env = {e["name"]: e["value"] for e in c["environment"]}
    opts = env["EFSCACHE_OPTIONS"]
    options_accepted("ecs", opts)
    h.check("ecs: require_source_mount=nfs4", "require_source_mount=nfs4" in opts, opts)
    mounts = {m["containerPath"]: m["sourceVolume"] for m in c["mountPoints"]}
    h.check("ecs: EFS is the task's own EFS volume at EFSCACHE_SOURCE",
            "efsVolumeConfiguration" in vols.get(mounts.get(env["EFSCACHE_SOURCE"]), {}),
            (mounts, vols))
    # Two tasks on one instance must not meet: not on a host-network port...
    h.check("ecs: not host networking (each task has its own metrics port)",
            td.get("networkMode", "bridge") != "host", td.get("networkMode"))
    m = re.search(r"metrics=[^,]*:(\d+)", opts)
    if m:
        pm = [p for p in c.get("portMappings", []) if p["containerPort"] == int(m.group(1))]
        h.check("ecs: the metrics port is mapped to a dynamic host port",
                pm and pm[0].get("hostPort", 0) == 0, c.get("portMappings"))
    # ... nor on one cache_dir: the service keeps one task per instance.
    cache_host = vols[mounts["/var/cache/efscache"]]["host"]["sourcePath"]
    h.check("ecs: the cache's host path is the task family's own",
            cache_host.rstrip("/").endswith("/" + td["family"]), cache_host)
    with open(os.path.join(C, "ecs", "service.json")) as f:
        svc = json.load(f)
    h.eq("ecs service: runs this task definition", svc["taskDefinition"], td["family"])
    h.check("ecs service: distinctInstance (one task of the service per instance)",
            {"type": "distinctInstance"} in svc.get("placementConstraints", []), svc)
    h.check("ecs service: deployments stop an old task before starting a new one",
            svc["deploymentConfiguration"]["maximumPercent"] <= 100,
            svc["deploymentConfiguration"])
    with open(os.path.join(C, "ecs", "README.md")) as f:
        readme = f.read()
    h.check("ecs README: the cache is per instance and distinctInstance says why",
            "per instance" in readme and "distinctInstance" in readme and
            "per task" not in readme)
    h.check("ecs README: Amazon Linux 2023 gets the release tarball, not the .deb",
            "tarball" in readme and "user-data-al2023.sh" in readme)
    ud = os.path.join(C, "ecs", "user-data-al2023.sh")
    r = subprocess.run(["bash", "-n", ud], capture_output=True, text=True)
    h.eq("ecs user data: bash -n", r.returncode, 0, r.stderr)
    with open(ud) as f:
        uds = f.read()
    h.check("ecs user data: installs the tarball and starts the agent after efscache",
            "install.sh" in uds and "After=efscache.service" in uds and
            "require_source_mount=nfs4" in uds)
    dm = re.search(r"^EFSCACHE_OPTIONS=(.*)$", uds, re.M)
    if dm:
        options_accepted("ecs user data", dm.group(1).replace("$CACHE_SIZE", "100G"))


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
    h.check("Containerfile: HEALTHCHECK by the entrypoint's health check (not through the "
            "mount)", "HEALTHCHECK" in cf and '"efscache-entrypoint", "health"]' in
            cf.replace("/usr/local/bin/", ""))
    h.check("Containerfile: the default options refuse a SOURCE that is not an EFS (nfs4) mount",
            "require_source_mount=nfs4" in cf)
    h.check("Containerfile: the libfuse 3.17 efscache is built with dpkg-buildflags "
            "(hardening=+all, as the .deb)",
            "hardening=+all dpkg-buildflags" in cf and "$CFLAGS" in cf and "$LDFLAGS" in cf)
    labels = {m.group(1): m.group(2) for m in
              re.finditer(r'org\.opencontainers\.image\.([a-z.]+)="([^"]*)"', cf)}
    for k in ("title", "description", "version", "revision", "created", "licenses", "source"):
        h.check("Containerfile: OCI label org.opencontainers.image.%s" % k, k in labels, labels)
    with open(os.path.join(h.SRC_DIR, "meson.build")) as f:
        version = re.search(r"version : '([^']+)'", f.read()).group(1)
    h.check("Containerfile: its VERSION default is meson.build's version (%s)" % version,
            "ARG VERSION=%s\n" % version in cf)
    r = subprocess.run(["sh", "-n", os.path.join(C, "container", "entrypoint.sh")],
                       capture_output=True, text=True)
    h.eq("entrypoint.sh: sh -n", r.returncode, 0, r.stderr)
    with open(os.path.join(C, "debian", "control")) as f:
        ctl = f.read()
    for dep in ("libfuse3-dev", "libxxhash-dev", "libmicrohttpd-dev", "meson", "scdoc"):
        h.check("debian/control: Build-Depends %s" % dep, dep in ctl)
    h.check("debian/rules: executable", os.access(os.path.join(C, "debian", "rules"), os.X_OK))


def test_metrics_port():
    """Every recipe that serves metrics uses 10190 (a second instance's example the port
    after it); none uses 9464, the OpenTelemetry Prometheus exporter's default (issue 16)."""
    found = []
    for d, _, files in os.walk(C):
        for f in files:
            path = os.path.join(d, f)
            try:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
            except (UnicodeDecodeError, OSError):
                continue
            for m in re.finditer(r"metrics=[^,\s\"']*:(\d+)", text):
                found.append((os.path.relpath(path, C), int(m.group(1))))
    h.check("recipes: some recipe serves metrics", found, found)
    bad = [f for f in found if not 10190 <= f[1] < 10200]
    h.check("recipes: every metrics port is 10190 (or next to it for another instance)",
            not bad, bad)


S = {}

if __name__ == "__main__":
    h.run_tests([test_k8s, test_k8s_restricted, test_ecs, test_systemd,
                  test_container_and_debian, test_metrics_port])
