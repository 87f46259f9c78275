# Shared by start-cluster.sh and stop-cluster.sh: where the test cluster lives.
# Everything (munge key and socket, slurm.conf, state, spool, logs, pid files) sits in
# one directory, apart from one link (below), so a second start begins from a clean
# slate and the machine's own /etc/munge is never touched.
set -euo pipefail
PATH="$PATH:/usr/sbin:/sbin"  # the daemons live in sbin, which sudo's PATH may lack

SLURM_CI_DIR="${SERVEPROF_SLURM_DIR:-/tmp/serveprof-slurm}"
MUNGE_DIR="$SLURM_CI_DIR/munge"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket"
export SLURM_CONF="$SLURM_CI_DIR/etc/slurm.conf"
# The slurm executor's job step removes SLURM_CONF from the environment of the srun it
# runs inside each job, so srun finds the configuration only at the default path.
# start-cluster.sh links it there when that path is free, and stop-cluster.sh removes
# that link (and nothing else) again.
DEFAULT_CONF=/etc/slurm/slurm.conf
# Every job process carries SLURM_CLUSTER_NAME, which is how stop-cluster.sh finds ours.
CLUSTER_NAME=serveprof-ci
PID_DIR="$SLURM_CI_DIR/run"
LOG_DIR="$SLURM_CI_DIR/log"

# pid_of NAME PIDFILE: the pid in PIDFILE if that process is alive and is NAME, so a
# stale file whose pid was reused by another program is never acted on.
pid_of() {
    local name=$1 file=$2 pid
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm && $(</proc/$pid/comm) == "$name" ]] || return 1
    echo "$pid"
}

# True when the default configuration path is our link.
default_conf_is_ours() {
    [[ -L $DEFAULT_CONF && $(readlink "$DEFAULT_CONF") == "$SLURM_CONF" ]]
}

# start-cluster.sh writes this file while it installs packages, where the machine has
# none, so that their maintainer scripts start no system daemons. It carries the marker
# line, which is how it is told apart from a policy-rc.d the machine has of its own.
POLICY_RC_D=/usr/sbin/policy-rc.d
POLICY_RC_D_MARKER="# serveprof ci/slurm: deny service starts while SLURM is installed"

remove_policy_rc_d() {
    if [[ -f $POLICY_RC_D ]] && grep -qxF "$POLICY_RC_D_MARKER" "$POLICY_RC_D"; then
        rm -f -- "$POLICY_RC_D"
    fi
    return 0
}
