#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine, for tests/test_slurm.py and CI.
#
#   sudo ci/slurm/start-cluster.sh     # last line: SLURM_CONF=<path>; export it
#   sudo ci/slurm/stop-cluster.sh      # stops what this started; safe to run twice
#
# Needs root: it installs Debian's slurm-wlm and munge when they are missing and runs
# the daemons as root (SlurmUser=root), without systemd (containers have none). Its
# files live in $SERVEPROF_SLURM_DIR (default /tmp/serveprof-slurm); the only file
# outside it is a link at /etc/slurm/slurm.conf while the cluster runs (common.sh says
# why), and it refuses to start where a real slurm.conf is. A test cluster: no
# accounting (clients need `--slurm-status-command squeue --slurm-no-account`), no
# cgroups, no GRES.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$here/common.sh"

READY_TIMEOUT_S=${SERVEPROF_SLURM_READY_TIMEOUT_S:-60}

die() {
    echo "start-cluster: $*" >&2
    exit 1
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

install_packages() {
    local tool missing=()
    for tool in munged munge unmunge slurmctld slurmd sinfo sbatch squeue scontrol scancel; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null ||
        die "${missing[*]} not installed and no apt-get here; install SLURM and munge with this system's package manager"
    echo "start-cluster: installing slurm-wlm and munge (missing: ${missing[*]})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
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

write_slurm_conf() {
    local host node_line
    host=$(hostname -s)
    # slurmd's own view of this machine (CPUs, sockets, cores, RealMemory), so the
    # node is never drained for claiming more than it has.
    node_line=$(slurmd -C | head -n 1)
    [[ $node_line == NodeName=* ]] || fail "slurmd -C printed no node line: $node_line"
    mkdir -p "$(dirname "$SLURM_CONF")"
    cat >"$SLURM_CONF" <<EOF
# Written by ci/slurm/start-cluster.sh: a one-node test cluster, no accounting.
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
# Finished jobs stay visible to squeue and scontrol for 10 minutes: squeue is the
# status command here, and the test reads the jobs back.
MinJobAge=600
StateSaveLocation=$SLURM_CI_DIR/state
SlurmdSpoolDir=$SLURM_CI_DIR/spool
SlurmctldPidFile=$PID_DIR/slurmctld.pid
SlurmdPidFile=$PID_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
${node_line/NodeName=$host/NodeName=$host NodeAddr=127.0.0.1} State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

wait_until_idle() {
    local host state deadline=$((SECONDS + READY_TIMEOUT_S))
    host=$(hostname -s)
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
echo "start-cluster: node $(hostname -s) is idle; run SLURM commands with SLURM_CONF=$SLURM_CONF"
echo "SLURM_CONF=$SLURM_CONF"
