"""Prometheus and JSON metrics, read the way a monitoring system reads them.

Stack: SOURCE dir --efs-emu--> emu mount --efscache (-o metrics=127.0.0.1:PORT)--> mount.
The output of `efscachectl stats --format=prometheus` and of the daemon's HTTP endpoint is
parsed with python3-prometheus-client's text parser (a real parser, not our regexes): every
family must have a type and a help text, every efscache_* sample the mountpoint label, and
two mounts' textfiles must merge without a clash.  The counters must move as a cold and
then a warm read happen, with efs-emu's read and request counters as the independent
witness of what came from "EFS".  A daemon holding more than 1024 fds must still answer
scrapes and /healthz (select() could not).  Built on ../integration/harness.py.
"""

import json
import os
import resource
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import harness as h

try:  # Debian's python3-prometheus-client; meson runs the tests with Debian's python3
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # the package is installed by tests/run.sh
    print("not ok - python3-prometheus-client is not installed")
    sys.exit(1)

MiB = 1 << 20
SIZE = 12 * MiB
CHUNK = MiB
CTL = os.environ.get("EFSCACHECTL_BIN") or os.path.join(os.path.dirname(h.EFSCACHE_BIN),
                                                        "efscachectl")
S = {}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ctl(*args):
    return subprocess.run([CTL] + list(args), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def parse(text):
    """{sample name (with labels for buckets): value} and {family: type}."""
    samples, types = {}, {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for smp in fam.samples:
            key = smp.name
            if "le" in smp.labels:
                key += '{le="%s"}' % smp.labels["le"]
            samples[key] = smp.value
    return samples, types


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def scrape_ctl():
    r = ctl("stats", "--format=prometheus", "--price-per-gb=0.5", S["mnt"])
    h.check("efscachectl stats --format=prometheus: rc 0", r.returncode == 0, r.stderr)
    return parse(r.stdout)


def http_get(path, port=None):
    url = "http://127.0.0.1:%d%s" % (port or S["port"], path)
    with urllib.request.urlopen(url, timeout=10) as f:
        return f.status, f.headers.get("Content-Type"), f.read().decode()


def scrape_http():
    status, ctype, body = http_get("/metrics")
    h.check("GET /metrics: 200, Prometheus text 0.0.4",
            status == 200 and ctype.startswith("text/plain; version=0.0.4"), (status, ctype))
    return parse(body)


def drop_page_cache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def page_cache_drops():
    """How many times a process dropped the page cache (drop_caches) since boot: another
    user of a shared machine doing it mid-read makes the kernel read pages again."""
    with open("/proc/vmstat") as f:
        for line in f:
            k, v = line.split()
            if k == "drop_pagecache":
                return int(v)
    return 0


def reread_bound(drops_before):
    """The most bytes the kernel may ask for in one read of the file: an eighth more (a
    page reclaimed mid-read and read again), or twice the file when someone dropped the
    page cache during the read."""
    if page_cache_drops() != drops_before:
        h.note("the page cache was dropped during the read: up to twice the file allowed")
        return 2 * SIZE
    return SIZE + SIZE // 8


def read_all(path):
    with open(path, "rb") as f:
        return h.hashlib.sha256(f.read()).hexdigest()


def setup():
    base = h.tmpdir()
    S["src"], S["emu"], S["mnt"] = (os.path.join(base, d) for d in ("src", "emu", "mnt"))
    h.mkdirs(S["src"])
    h.make_random_file(os.path.join(S["src"], "model.bin"), SIZE, seed=10)
    S["sha"] = h.sha256_file(os.path.join(S["src"], "model.bin"))
    h.mount_emu(S["src"], S["emu"], "latency_ms=0.2", "meta_latency_ms=0.05", "bw_mib=0",
                "timeout=0")
    S["port"] = free_port()
    S["m"] = h.mount_efscache(S["emu"], S["mnt"], "metrics=%d" % S["port"],
                              "chunk_size=%d" % CHUNK, "price_per_gb=0.5")


# (the parser names a counter's family without its _total)
EXPECTED_TYPES = {
    "efscache_reads": "counter", "efscache_hits": "counter", "efscache_misses": "counter",
    "efscache_from_cache_bytes": "counter", "efscache_from_source_bytes": "counter",
    "efscache_validations": "counter", "efscache_stale_dropped": "counter",
    "efscache_records_gone": "counter",
    "efscache_checksum_mismatches": "counter", "efscache_evictions": "counter",
    "efscache_prefetch_unused_bytes": "counter", "efscache_open_files": "gauge",
    "efscache_cache_usage_bytes": "gauge", "efscache_cache_limit_bytes": "gauge",
    "efscache_fetch_duration_seconds": "histogram", "efscache_saved_dollars": "counter",
    "efscache_saved_bytes": "counter", "efscache_served_bytes": "counter",
    "efscache_efs_read_price_dollars_per_gb": "gauge",
    "efscache_source_lookups": "counter", "efscache_source_getattrs": "counter",
    "efscache_source_opens": "counter", "efscache_source_readdirs": "counter",
    "efscache_kernel_lookups": "counter", "efscache_kernel_getattrs": "counter",
    "efscache_kernel_opens": "counter", "efscache_kernel_flushes": "counter",
    "efscache_kernel_releases": "counter", "efscache_kernel_readdirs": "counter",
    "efscache_index_lookups": "counter", "efscache_index_getattrs": "counter",
    "efscache_index_listings": "counter", "efscache_index_builds": "counter",
    "efscache_index_checks": "counter",
    "efscache_inode_reopens": "counter", "efscache_inodes": "gauge",
    "efscache_inode_fds": "gauge", "efscache_inode_fd_budget": "gauge",
    "efscache_index_snapshots": "gauge", "efscache_index_memory_bytes": "gauge",
    "efscache_index_memory_budget": "gauge", "efscache_index_loads": "counter",
    "efscache_index_saves": "counter",
    "efscache_write_behind_pending": "gauge", "efscache_info": "gauge",
}
PROCESS_TYPES = {
    "process_start_time_seconds": "gauge", "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge", "process_open_fds": "gauge",
    "process_max_fds": "gauge", "process_cpu_seconds": "counter",
}


def check_conventions(what, text):
    """Every family typed (no untyped) and with a help text; every efscache_* sample has
    the mountpoint label, the process_* ones none."""
    fams = families(text)
    for f in fams.values():
        h.check("%s: %s has a type" % (what, f.name), f.type not in ("unknown", "untyped"),
                f.type)
        h.check("%s: %s has a help text" % (what, f.name), bool(f.documentation.strip()))
        for smp in f.samples:
            if f.name.startswith("efscache_"):
                h.eq("%s: %s has mountpoint=%s" % (what, smp.name, S["mnt"]),
                     smp.labels.get("mountpoint"), S["mnt"])
            else:
                h.check("%s: %s has no label" % (what, smp.name), not smp.labels, smp.labels)
    return fams


def test_families():
    r = ctl("stats", "--format=prometheus", "--price-per-gb=0.5", S["mnt"])
    ctl_fams = check_conventions("efscachectl", r.stdout)
    smp, types = parse(r.stdout)
    for fam, typ in EXPECTED_TYPES.items():
        h.eq("family %s is a %s" % (fam, typ), types.get(fam), typ)
    h.eq("before any read: no hits", smp.get("efscache_hits_total"), 0.0)
    h.eq("cache limit is the default 10G", smp.get("efscache_cache_limit_bytes"),
         float(10 << 30))
    h.check("efscachectl: no process_* series (they would clash with node_exporter's)",
            not any(f.startswith("process_") for f in ctl_fams), sorted(ctl_fams))
    status, _, body = http_get("/metrics")
    http_fams = check_conventions("HTTP", body)
    for fam, typ in PROCESS_TYPES.items():
        h.eq("HTTP: family %s is a %s" % (fam, typ), http_fams[fam].type if fam in http_fams
             else None, typ)
    h.eq("HTTP endpoint: the families of efscachectl plus process_*",
         sorted(f for f in http_fams if not f.startswith("process_")), sorted(ctl_fams))
    # The daemon's own process: started a moment ago, a few MB resident.
    start = http_fams["process_start_time_seconds"].samples[0].value
    pids = h.find_daemon_pids(h.EFSCACHE_BIN, S["m"].mnt)
    if h.check("found the daemon's pid", pids):
        with open("/proc/%d/stat" % pids[0]) as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            btime = int(next(ln for ln in f if ln.startswith("btime")).split()[1])
        h.check("process_start_time_seconds is the daemon's start",
                abs(start - (btime + ticks / os.sysconf("SC_CLK_TCK"))) < 1.0, start)
    h.check("process_resident_memory_bytes is some MB",
            1 << 20 < http_fams["process_resident_memory_bytes"].samples[0].value < 1 << 32)
    # No price given to efscachectl: no dollars, the bytes still there.
    smp2, types2 = parse(ctl("stats", "--format=prometheus", S["mnt"]).stdout)
    h.check("no --price-per-gb: no dollar series",
            "efscache_saved_dollars" not in types2 and "efscache_saved_bytes" in types2,
            sorted(types2))


def test_textfiles_of_two_mounts_merge():
    """node_exporter's textfile collector reads every *.prom into one exposition: two
    mounts' files must not give the same series twice."""
    base = h.tmpdir()
    h.mkdirs(os.path.join(base, "src"))
    m2 = h.mount_efscache(os.path.join(base, "src"), os.path.join(base, "mnt"))
    try:
        t1 = ctl("stats", "--format=prometheus", S["mnt"]).stdout
        t2 = ctl("stats", "--format=prometheus", m2.mnt).stdout
    finally:
        h.unmount(m2)
    series = {}
    for text in (t1, t2):
        for f in text_string_to_metric_families(text):
            for smp in f.samples:
                key = (smp.name, tuple(sorted(smp.labels.items())))
                series[key] = series.get(key, 0) + 1
    dup = [k for k, n in series.items() if n > 1]
    h.check("two mounts' textfiles: no series twice", not dup, dup[:5])


def test_cold_then_warm():
    path = os.path.join(S["mnt"], "model.bin")
    before, _ = scrape_http()
    emu0 = h.emu_stats(S["emu"])["read_bytes"]
    drops = page_cache_drops()
    h.eq("cold read: right bytes", read_all(path), S["sha"])
    bound = reread_bound(drops)
    cold, _ = scrape_http()
    emu1 = h.emu_stats(S["emu"])["read_bytes"]
    d = {k: cold[k] - before.get(k, 0) for k in cold}
    h.eq("cold read: from_source_bytes grew by the file size",
         d["efscache_from_source_bytes_total"], float(SIZE))
    h.eq("cold read: efs-emu saw the same bytes", emu1 - emu0, SIZE)
    h.eq("cold read: one miss per chunk", d["efscache_misses_total"], float(SIZE // CHUNK))
    h.eq("cold read: one histogram observation per fetch",
         d["efscache_fetch_duration_seconds_count"], float(SIZE // CHUNK))
    h.check("cold read: fetch time summed", d["efscache_fetch_duration_seconds_sum"] > 0, d)
    h.eq("cold read: +Inf bucket equals count", cold['efscache_fetch_duration_seconds_bucket{le="+Inf"}'],
         cold["efscache_fetch_duration_seconds_count"])
    h.check("cold read: cache usage grew by about the file size",
            cold["efscache_cache_usage_bytes"] - before["efscache_cache_usage_bytes"] >= SIZE,
            d)
    h.check("cold read: validations counted", d["efscache_validations_total"] >= 1, d)
    # The kernel may read a page twice (its page cache reclaimed one mid-read under
    # memory pressure): served bytes are at least the file; what came from EFS is exact.
    h.check("cold read: served_bytes grew by the file size",
            SIZE <= d["efscache_served_bytes_total"] <= bound, d)
    h.check("cold read: no EFS bytes saved but for pages read twice",
            d["efscache_saved_bytes_total"] <= d["efscache_served_bytes_total"] - SIZE, d)
    S["cold_excerpt"] = ctl("stats", "--format=prometheus", S["mnt"]).stdout

    drop_page_cache(path)
    drops = page_cache_drops()
    h.eq("warm read: right bytes", read_all(path), S["sha"])
    bound = reread_bound(drops)
    warm, _ = scrape_http()
    emu2 = h.emu_stats(S["emu"])["read_bytes"]
    d = {k: warm[k] - cold.get(k, 0) for k in warm}
    h.eq("warm read: nothing from the source", d["efscache_from_source_bytes_total"], 0.0)
    h.eq("warm read: efs-emu saw nothing", emu2 - emu1, 0)
    h.check("warm read: from_cache_bytes grew by the file size",
            SIZE <= d["efscache_from_cache_bytes_total"] <= bound, d)
    h.check("warm read: hits grew", d["efscache_hits_total"] >= SIZE // CHUNK, d)
    h.eq("warm read: no new misses", d["efscache_misses_total"], 0.0)
    h.check("warm read: EFS bytes saved grew by the file size",
            SIZE <= d["efscache_saved_bytes_total"] <= bound, d)
    saved = warm["efscache_saved_bytes_total"] / (1 << 30) * 0.5
    h.check("saved dollars = saved bytes at -o price_per_gb=0.5",
            abs(warm["efscache_saved_dollars_total"] - saved) < 1e-6,
            (warm["efscache_saved_dollars_total"], saved))
    S["warm_excerpt"] = ctl("stats", "--format=prometheus", S["mnt"]).stdout
    wanted = ("efscache_hits_total", "efscache_misses_total", "efscache_from_cache_bytes_total",
              "efscache_from_source_bytes_total", "efscache_fetch_duration_seconds_count",
              "efscache_cache_usage_bytes", "efscache_served_bytes_total",
              "efscache_saved_bytes_total", "efscache_saved_dollars_total")
    for name, text in (("after the cold read", S["cold_excerpt"]),
                       ("after the warm read", S["warm_excerpt"])):
        h.note("scrape excerpt %s:" % name)
        h.note("\n".join(ln for ln in text.splitlines()
                          if ln.split(" ")[0].split("{")[0] in wanted))


def test_ctl_matches_http_and_raw():
    csmp, _ = scrape_ctl()
    hsmp, _ = scrape_http()
    for k in ("efscache_hits_total", "efscache_from_cache_bytes_total",
              "efscache_fetch_duration_seconds_count"):
        h.eq("efscachectl and HTTP agree on %s" % k, csmp.get(k), hsmp.get(k))
    raw = dict(line.split(" ", 1) for line in ctl("stats", "--raw", S["mnt"]).stdout.splitlines())
    r = ctl("stats", "--json", S["mnt"])
    js = json.loads(r.stdout)
    h.eq("stats --json: hits as in --raw", js.get("hits"), int(raw["hits"]))
    h.eq("stats --json: cache_dir is a string", js.get("cache_dir"), raw["cache_dir"])
    h.eq("stats --json: efs_saved.bytes is the bytes_saved counter",
         js["efs_saved"]["bytes"], int(raw["bytes_saved"]))
    h.check("stats --json: no price, no dollars", "cost_usd" not in js["efs_saved"], js)
    h.eq("stats --json: the mountpoint", js.get("mountpoint"), S["mnt"])
    h.eq("stats --format=json is --json", json.loads(ctl("stats", "--format=json",
                                                          S["mnt"]).stdout)["hits"], js["hits"])
    status, ctype, body = http_get("/metrics.json")
    h.check("GET /metrics.json: JSON with the counters",
            status == 200 and ctype == "application/json" and "hits" in json.loads(body), body)
    r = ctl("stats", "--price-per-gb=2", "--format=prometheus", S["mnt"])
    smp, _ = parse(r.stdout)
    h.check("--price-per-gb values the saved bytes",
            abs(smp["efscache_saved_dollars_total"] -
                smp["efscache_saved_bytes_total"] / (1 << 30) * 2) < 1e-6, r.stdout)
    r = ctl("stats", S["mnt"])
    h.check("stats text: EFS reads saved, in bytes only without a price",
            "EFS reads saved" in r.stdout and "$" not in r.stdout.split("EFS reads saved")[1]
            and "--price-per-gb" in r.stdout, r.stdout)
    r = ctl("stats", "--price-per-gb=0.03", S["mnt"])
    h.check("stats text: with --price-per-gb, the dollars",
            "EFS reads saved" in r.stdout and "$0.0300/GB" in r.stdout, r.stdout)
    for bad in (("--price-per-gb=-1",), ("--format=xml",)):
        r = ctl("stats", *bad, S["mnt"])
        h.eq("stats %s: usage error" % bad[0], r.returncode, 2)


def test_status_json():
    r = ctl("status", "--json", S["mnt"])
    js = json.loads(r.stdout)
    f = [x for x in js["files"] if x["path"].endswith("model.bin")]
    # "valid" while the kernel knows the file (its entry is loaded); a file the kernel
    # forgot (memory pressure) has only its record on disk, "unvalidated" until opened.
    h.check("status --json: the file, fully cached",
            r.returncode == 0 and f and f[0]["cached_bytes"] == SIZE and
            f[0]["state"] in ("valid", "unvalidated"), r.stdout)
    h.eq("status --json: the directory total", js["directories"][0]["cached_bytes"], SIZE)


def test_open_files_gauge():
    path = os.path.join(S["mnt"], "model.bin")
    base = scrape_http()[0]["efscache_open_files"]
    fds = [os.open(path, os.O_RDONLY) for _ in range(3)]
    try:
        h.eq("open files gauge: +3 while three files are open",
             scrape_http()[0]["efscache_open_files"], base + 3)
    finally:
        for fd in fds:
            os.close(fd)
    # release is asynchronous in FUSE: give it a moment
    for _ in range(50):
        if scrape_http()[0]["efscache_open_files"] == base:
            break
        h.time.sleep(0.1)
    h.eq("open files gauge: back after close", scrape_http()[0]["efscache_open_files"], base)


def listening_ports(pid):
    """TCP ports the process listens on, as (hex addr, port)."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            t = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if t.startswith("socket:["):
            inodes.add(t[8:-1])
    res = []
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(f) as fh:
            for line in fh.readlines()[1:]:
                p = line.split()
                if p[3] == "0A" and p[9] in inodes:
                    addr, port = p[1].split(":")
                    res.append((addr, int(port, 16)))
    return res


def test_endpoint_scope():
    pids = h.find_daemon_pids(h.EFSCACHE_BIN, S["m"].mnt)
    pid = pids[0] if pids else None
    if h.check("found the daemon's pid", pid is not None):
        h.eq("metrics=PORT listens on 127.0.0.1 only", listening_ports(pid),
             [("0100007F", S["port"])])
    status = None
    try:
        http_get("/nothing")
    except urllib.error.HTTPError as e:
        status = e.code
    h.eq("unknown path: 404", status, 404)
    # Off by default: a mount without -o metrics listens nowhere.
    base = h.tmpdir()
    h.mkdirs(os.path.join(base, "src"))
    m2 = h.mount_efscache(os.path.join(base, "src"), os.path.join(base, "mnt"))
    pids = h.find_daemon_pids(h.EFSCACHE_BIN, m2.mnt)
    if h.check("found the second daemon's pid", pids):
        h.eq("no -o metrics: no listening socket", listening_ports(pids[0]), [])
    h.unmount(m2)
    # A port in use: refused, nothing left mounted.
    mnt3 = os.path.join(base, "mnt3")
    h.mkdirs(mnt3)
    p = subprocess.run([h.EFSCACHE_BIN, os.path.join(base, "src"), mnt3, "-f", "-o",
                        "cache_dir=%s/c3,metrics=%d" % (base, S["port"])],
                       capture_output=True, text=True, timeout=30)
    h.check("port in use: exit 1 with the reason, nothing mounted",
            p.returncode == 1 and "cannot listen" in p.stderr and not h.is_mounted(mnt3),
            (p.returncode, p.stderr))


def test_source_counters():
    """Lookups, stats, opens and listings that reach the source are counted, and never
    more than efs-emu (the source here) saw."""
    d = os.path.join(S["src"], "meta")
    h.mkdirs(d)
    for k in range(5):
        with open(os.path.join(d, "f%d" % k), "w") as f:
            f.write("x" * (k + 1))
    names = ("efscache_source_lookups_total", "efscache_source_getattrs_total",
             "efscache_source_opens_total", "efscache_source_readdirs_total")
    emu_keys = ("lookups", "getattrs", "opens", "readdirs")
    before, _ = scrape_http()
    e0 = h.emu_stats(S["emu"])
    entries = sorted(os.listdir(os.path.join(S["mnt"], "meta")))
    for n in entries:
        with open(os.path.join(S["mnt"], "meta", n)) as f:
            f.read()
    after, _ = scrape_http()
    e1 = h.emu_stats(S["emu"])
    h.eq("listing: the five files", entries, ["f%d" % k for k in range(5)])
    for name, key in zip(names, emu_keys):
        ours = after[name] - before[name]
        theirs = e1[key] - e0[key] + (e1.get("open_getattrs", 0) - e0.get("open_getattrs", 0)
                                      if key == "getattrs" else 0)
        h.check("%s grew (a listing, five lookups and opens)" % name, ours >= 1,
                (ours, theirs))
        h.check("%s: no more than efs-emu saw as %s" % (name, key), ours <= theirs,
                (ours, theirs))
    h.check("five new names: at least five lookups",
            after["efscache_source_lookups_total"] - before["efscache_source_lookups_total"]
            >= 5)
    h.check("five files read: at least five opens",
            after["efscache_source_opens_total"] - before["efscache_source_opens_total"] >= 5)


def test_many_fds():
    """The daemon past 1024 fds (files held open through the mount) still answers
    /metrics and /healthz: libmicrohttpd on epoll/poll, not select()."""
    nfiles = 1100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = nfiles + 256
    if hard != resource.RLIM_INFINITY and hard < want:
        h.check("RLIMIT_NOFILE hard limit allows %d fds" % want, False, hard)
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    base = h.tmpdir()
    src = os.path.join(base, "src")
    h.mkdirs(src)
    for k in range(nfiles):
        with open(os.path.join(src, "f%04d" % k), "wb") as f:
            f.write(b"%d\n" % k)
    port = free_port()
    m = h.mount_efscache(src, os.path.join(base, "mnt"), "metrics=%d" % port)
    held = []
    try:
        pids = h.find_daemon_pids(h.EFSCACHE_BIN, m.mnt)
        for k in range(nfiles):
            f = open(os.path.join(m.mnt, "f%04d" % k), "rb")
            f.read(1)
            held.append(f)
        nfd = len(os.listdir("/proc/%d/fd" % pids[0])) if pids else 0
        h.check("the daemon holds more than 1024 fds (%d)" % nfd, nfd > 1024, nfd)
        try:
            status, _, body = http_get("/metrics", port)
            fams = families(body)
            got = fams["process_open_fds"].samples[0].value
        except (OSError, KeyError) as e:
            status, got = repr(e), None
        h.eq("GET /metrics past 1024 fds: 200", status, 200)
        h.check("process_open_fds says more than 1024", got is not None and got > 1024, got)
        try:
            status = http_get("/healthz", port)[0]
        except OSError as e:
            status = repr(e)
        h.eq("GET /healthz past 1024 fds: 200", status, 200)
    finally:
        for f in held:
            f.close()
        h.unmount(m)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


if __name__ == "__main__":
    h.require_fuse()
    setup()
    h.run_tests([test_families, test_textfiles_of_two_mounts_merge, test_cold_then_warm,
                 test_ctl_matches_http_and_raw, test_status_json, test_open_files_gauge,
                 test_source_counters, test_many_fds, test_endpoint_scope])
