#!/usr/bin/env bash
# Stop the test cluster that start-cluster.sh started: cancel its jobs, then stop
# slurmd, slurmctld and munged by their pid files. Safe to run twice, or when nothing
# was started; the machine's other processes are never touched.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$here/common.sh"

STOP_TIMEOUT_S=${SERVEPROF_SLURM_STOP_TIMEOUT_S:-20}

# stop NAME PIDFILE: SIGTERM, then SIGKILL if it is still there after the timeout.
stop() {
    local name=$1 file=$2 pid deadline
    pid=$(pid_of "$name" "$file") || { rm -f -- "$file"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT_S))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "stop-cluster: $name ($pid) ignored SIGTERM for ${STOP_TIMEOUT_S}s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f -- "$file"
}

# Job steps outlive slurmd by design. Ours are told apart from anything else on the
# machine by their environment: slurmstepd inherits slurmd's SLURM_CONF, and every job
# process has our cluster's name and a job id (the snakemake that submitted them has
# neither).
our_job_processes() {
    local environ pid vars
    for environ in /proc/[0-9]*/environ; do
        pid=${environ#/proc/}
        pid=${pid%/environ}
        vars=$( { tr "\\0" "\\n" <"$environ"; } 2>/dev/null) || continue
        if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == slurmstepd ]]; then
            grep -qxF "SLURM_CONF=$SLURM_CONF" <<<"$vars" && echo "$pid"
        elif grep -qxF "SLURM_CLUSTER_NAME=$CLUSTER_NAME" <<<"$vars" && grep -q '^SLURM_JOB_ID=' <<<"$vars"; then
            echo "$pid"
        fi
    done
    return 0
}

if pid_of slurmctld "$PID_DIR/slurmctld.pid" >/dev/null; then
    scancel --partition=debug 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT_S))
    while [[ -n $(squeue -h -t running,completing,pending 2>/dev/null) ]] && ((SECONDS < deadline)); do
        sleep 0.5
    done
fi
stop slurmd "$PID_DIR/slurmd.pid"
stop slurmctld "$PID_DIR/slurmctld.pid"
for pid in $(our_job_processes); do
    echo "stop-cluster: killing leftover job process $pid ($(cat "/proc/$pid/comm" 2>/dev/null))" >&2
    kill -KILL "$pid" 2>/dev/null || true
done
stop munged "$MUNGE_DIR/munged.pid"
if default_conf_is_ours; then rm -f -- "$DEFAULT_CONF"; fi
# Only there if start-cluster.sh was killed while it installed packages.
remove_policy_rc_d
