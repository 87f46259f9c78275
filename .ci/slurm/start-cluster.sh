#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine, for tests/test_slurm.py and CI.
#
#   sudo .ci/slurm/start-cluster.sh    # last line: SLURM_CONF=<path>; export it
#   sudo .ci/slurm/stop-cluster.sh     # stops what this started; safe to run twice
#
# Needs root: it installs Debian's slurmctld, slurmd, slurm-client and munge when they
# are missing and runs the daemons as root (SlurmUser=root), without systemd
# (containers have none). Its files live in $SERVEPROF_SLURM_DIR (default
# /tmp/serveprof-slurm); the only file outside it is a link at /etc/slurm/slurm.conf
# while the cluster runs (common.sh says why), and it refuses to start where a real
# slurm.conf is. A test cluster: no accounting (clients need
# `--slurm-status-command squeue --slurm-no-account`), no cgroups, no GRES.
#
# Exit status: 0 when the node is idle; 77 (SKIP_EXIT) when SLURM is missing and
# cannot be installed here (no apt-get, or the packages cannot be fetched: no access
# to a Debian mirror), which tests/test_slurm.py reports as a skip; 1 for anything
# else, including a cluster that was installed but does not come up.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$here/common.sh"

READY_TIMEOUT_S=${SERVEPROF_SLURM_READY_TIMEOUT_S:-60}
# The node is declared with at least this many CPUs and this much memory, whatever the
# machine has (SlurmdParameters=config_overrides below), so that profiles/slurm's
# requests (4 CPUs and 16000 MB for export_model, cold_start and measure_batch) fit on
# it twice over: then only --exclusive keeps two serving jobs apart, and the test runs
# the profile users get, unchanged, on a small CI runner. Nothing enforces the requests
# on this cluster (no cgroups, no memory accounting); they are bookkeeping only.
NODE_MIN_CPUS=${SERVEPROF_SLURM_NODE_MIN_CPUS:-8}
NODE_MIN_MEM_MB=${SERVEPROF_SLURM_NODE_MIN_MEM_MB:-32768}
# What the cluster needs, without Recommends (slurm-wlm would pull in every optional
# plugin: HDF5, MySQL, IPMI, ...). The basic plugins come with slurmd and slurmctld.
PACKAGES=(slurmctld slurmd slurm-client munge)
# Bounded network waits, so an unreachable mirror ends in a skip within minutes.
APT_OPTIONS=(-o Acquire::Retries=2 -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30
    -o DPkg::Lock::Timeout=300)
SKIP_EXIT=77

die() {
    echo "start-cluster: $*" >&2
    exit 1
}

# SLURM cannot be installed on this machine: not a failure of the cluster.
cannot_install() {
    echo "start-cluster: cannot install SLURM here: $*" >&2
    exit "$SKIP_EXIT"
}

log_tails() {
    local file
    for file in "$MUNGE_DIR/munged.log" "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
        [[ -f $file ]] && { echo "--- last lines of $file:"; tail -n 20 "$file"; }
    done >&2
}

fail() {
    echo "start-cluster: $*" >&2
    log_tails
    "$here/stop-cluster.sh" >&2 || true
    exit 1
}

# Keeps the packages' maintainer scripts from starting the system's own munged,
# slurmctld and slurmd while they are installed (invoke-rc.d and deb-systemd-invoke
# obey it): this script starts its own. Written only where the machine has none, and
# removed again by remove_policy_rc_d (also on exit, and by stop-cluster.sh should
# this script be killed outright).
write_policy_rc_d() {
    [[ -e $POLICY_RC_D ]] && return 0
    printf '#!/bin/sh\n%s\nexit 101\n' "$POLICY_RC_D_MARKER" >"$POLICY_RC_D"
    chmod 0755 "$POLICY_RC_D"
}

install_packages() {
    local tool missing=() output
    for tool in munged munge unmunge slurmctld slurmd sinfo sbatch squeue scontrol scancel; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null ||
        cannot_install "${missing[*]} not installed and no apt-get here; install SLURM and munge with this system's package manager"
    echo "start-cluster: installing ${PACKAGES[*]} (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    # 1. Fetch. apt-get update reports unreachable mirrors only as warnings (exit 0),
    # so the download decides: if the packages cannot be fetched, the machine has no
    # way to get SLURM, and that is a skip, not an error.
    output=$(apt-get "${APT_OPTIONS[@]}" update -qq 2>&1) || true
    output+=$'\n'$(apt-get "${APT_OPTIONS[@]}" install -y -qq --no-install-recommends --download-only \
        "${PACKAGES[@]}" 2>&1) ||
        cannot_install "could not fetch ${PACKAGES[*]} with apt-get (no access to a Debian mirror?):"$'\n'"$(tail -n 8 <<<"$output")"
    # 2. Install what was fetched. A failure now is a real error.
    trap remove_policy_rc_d EXIT
    trap 'exit 143' TERM INT HUP
    write_policy_rc_d
    apt-get "${APT_OPTIONS[@]}" install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null ||
        die "apt-get install ${PACKAGES[*]} failed after downloading them"
    remove_policy_rc_d
    trap - EXIT TERM INT HUP
}

start_munge() {
    # Clients need to reach the socket in it; munged insists on that.
    install -d -m 0755 -o munge -g munge "$MUNGE_DIR"
    # A fresh key each start: 1024 random bytes, readable by munge only (munged
    # refuses a key others can read).
    (umask 0277 && head -c 1024 /dev/urandom >"$MUNGE_DIR/munge.key")
    chown munge:munge "$MUNGE_DIR/munge.key"
    runuser -u munge -- munged \
        --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed" ||
        fail "munged did not start"
    munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET" >/dev/null ||
        fail "munged started but a credential did not round-trip through $MUNGE_SOCKET"
}

# short_hostname: the name slurmd gives this node (uname, not hostname(1), which a
# minimal system may lack).
short_hostname() {
    local name
    name=$(uname -n)
    echo "${name%%.*}"
}

# field KEY LINE: the value of KEY=<number> in slurmd -C's line.
field() {
    [[ $2 =~ (^|[[:space:]])$1=([0-9]+) ]] && echo "${BASH_REMATCH[2]}"
}

write_slurm_conf() {
    local host node_line cpus mem_mb
    host=$(short_hostname)
    # slurmd's own view of this machine; the node gets at least that much.
    node_line=$(slurmd -C | head -n 1)
    [[ $node_line == NodeName=* ]] || fail "slurmd -C printed no node line: $node_line"
    cpus=$(field CPUs "$node_line") || fail "no CPUs= in slurmd -C's line: $node_line"
    mem_mb=$(field RealMemory "$node_line") || fail "no RealMemory= in slurmd -C's line: $node_line"
    ((cpus >= NODE_MIN_CPUS)) || cpus=$NODE_MIN_CPUS
    ((mem_mb >= NODE_MIN_MEM_MB)) || mem_mb=$NODE_MIN_MEM_MB
    mkdir -p "$(dirname "$SLURM_CONF")"
    cat >"$SLURM_CONF" <<EOF
# Written by .ci/slurm/start-cluster.sh: a one-node test cluster, no accounting.
ClusterName=$CLUSTER_NAME
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
# No cgroups: linuxproc tracks job processes by parentage, which works in containers.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmUser=root
SlurmdUser=root
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# Finished jobs stay visible to squeue and scontrol for 12 hours, far longer than a
# test run (its pytest timeout is 40 minutes): squeue is the status command here, and
# tests/test_slurm.py reads every job back with scontrol after the workflow ends. Do
# not use 0 ("never purge"): the slurm plugin then takes MinJobAge for too short and
# switches to sacct, which this cluster without accounting cannot answer.
MinJobAge=43200
# The node as declared below (see NODE_MIN_CPUS), not as slurmd measures it.
SlurmdParameters=config_overrides
StateSaveLocation=$SLURM_CI_DIR/state
SlurmdSpoolDir=$SLURM_CI_DIR/spool
SlurmctldPidFile=$PID_DIR/slurmctld.pid
SlurmdPidFile=$PID_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

wait_until_idle() {
    local host state deadline=$((SECONDS + READY_TIMEOUT_S))
    host=$(short_hostname)
    while ((SECONDS < deadline)); do
        state=$(sinfo -h -N -n "$host" -o '%t' 2>/dev/null || true)
        [[ $state == idle ]] && return 0
        sleep 1
    done
    fail "node $host not idle after ${READY_TIMEOUT_S}s (sinfo state: '${state:-none}')"
}

[[ $EUID -eq 0 ]] || die "must run as root (installs packages, starts daemons as root); run it with sudo"
if [[ -e $DEFAULT_CONF || -L $DEFAULT_CONF ]] && ! default_conf_is_ours; then
    die "$DEFAULT_CONF exists: this machine has a SLURM configuration of its own, which this test cluster would replace; run the test on a machine without one"
fi
install_packages
# Leftovers from an earlier run (a killed test) would hold the ports and old jobs.
"$here/stop-cluster.sh"
rm -rf -- "$MUNGE_DIR" "$SLURM_CI_DIR/etc" "$SLURM_CI_DIR/state" "$SLURM_CI_DIR/spool" "$PID_DIR" "$LOG_DIR"
mkdir -p "$SLURM_CI_DIR/state" "$SLURM_CI_DIR/spool" "$PID_DIR" "$LOG_DIR"
chmod 0755 "$SLURM_CI_DIR"

start_munge
write_slurm_conf
mkdir -p "$(dirname "$DEFAULT_CONF")"
ln -s "$SLURM_CONF" "$DEFAULT_CONF"
# Daemon mode: each forks, writes its pid file and logs to $LOG_DIR. -c: no old state.
slurmctld -c || fail "slurmctld did not start"
slurmd || fail "slurmd did not start"
wait_until_idle
echo "start-cluster: node $(short_hostname) is idle; run SLURM commands with SLURM_CONF=$SLURM_CONF"
echo "SLURM_CONF=$SLURM_CONF"
