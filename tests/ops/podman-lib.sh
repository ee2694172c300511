# tests/ops/podman-lib.sh - shared by tests/ops/demo-fresh.sh and debian.sh
# (sourced, bash): TAP-like result lines and podman settings for this kind
# of host.  The caller sets $work (a scratch dir) before podman_settings.

fails=0
ok() { echo "ok - $1"; }
notok() { fails=$((fails + 1)); echo "not ok - $1"; [ -z "${2:-}" ] || echo "$2" | sed 's/^/# /'; }
skip() { echo "1..0 # SKIP $*"; exit 77; }

# podman 4.3 on Debian 12, as tests/container/run.sh sets it: Debian's runc
# (crun refuses hybrid cgroups), cgroupfs when systemd is not PID 1, ulimits
# no higher than the host's hard limits (runc fails with EPERM above them),
# file event log.  Kept if CONTAINERS_CONF is already set.
podman_settings() {
    [ -z "${CONTAINERS_CONF:-}" ] || return 0
    export CONTAINERS_CONF="$work/containers.conf"
    local cgm=systemd
    [ -d /run/systemd/system ] || cgm=cgroupfs
    cat > "$CONTAINERS_CONF" <<CONF
[containers]
default_ulimits = ["nofile=$(hard_limit n 1048576):$(hard_limit n 1048576)", "nproc=$(hard_limit u 32768):$(hard_limit u 32768)"]
[engine]
runtime = "runc"
cgroup_manager = "$cgm"
events_logger = "file"
CONF
}

# hard_limit FLAG MAX: ulimit -H FLAG, at most MAX.
hard_limit() {
    local v
    v=$(ulimit "-H$1")
    if [ "$v" = unlimited ] || [ "$v" -gt "$2" ]; then v=$2; fi
    echo "$v"
}
