#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for the `slurm` test tier (Debian's slurm-wlm and munge).
#   tests/slurm/cluster.sh up     install (apt) if needed, write the config, start munged, slurmctld, slurmd
#   tests/slurm/cluster.sh down   stop only the daemons this script started (by their pid files)
# State, config and logs live in $G2VLM_SLURM_DIR (default /tmp/g2vlm-slurm); commands that talk to the
# cluster need `export SLURM_CONF=$G2VLM_SLURM_DIR/slurm.conf` (`cluster.sh env` prints it).
set -euo pipefail
STATE=${G2VLM_SLURM_DIR:-/tmp/g2vlm-slurm}
CONF=$STATE/slurm.conf

install() {
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        echo "installing slurm-wlm and munge (apt)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
    fi
}

write_config() {
    mkdir -p "$STATE/ctld" "$STATE/slurmd" "$STATE/munge"
    local cpus memory
    cpus=$(nproc)
    memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    cat > "$CONF" <<CONFIG
ClusterName=g2vlm-test
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=6917
SlurmdPort=6918
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket
CryptoType=crypto/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
NodeName=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONFIG
}

up() {
    install
    write_config
    chown munge: "$STATE/munge"
    if [ ! -f "$STATE/munge/munged.pid" ] || ! kill -0 "$(cat "$STATE/munge/munged.pid")" 2>/dev/null; then
        runuser -u munge -- munged --socket="$STATE/munge/munge.socket" --pid-file="$STATE/munge/munged.pid" \
            --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed"
    fi
    export SLURM_CONF=$CONF
    pgrep -F "$STATE/slurmctld.pid" >/dev/null 2>&1 || slurmctld -f "$CONF"
    pgrep -F "$STATE/slurmd.pid" >/dev/null 2>&1 || slurmd -f "$CONF"
    for _ in $(seq 30); do
        if sinfo -h -o %T 2>/dev/null | grep -qE "idle|mix|alloc"; then
            echo "slurm up: SLURM_CONF=$CONF"; sinfo; return 0
        fi
        sleep 1
    done
    echo "slurm did not come up; logs in $STATE" >&2
    tail -5 "$STATE/slurmctld.log" "$STATE/slurmd.log" >&2 || true
    return 1
}

down() {
    for pid_file in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" "$STATE/munge/munged.pid"; do
        if [ -f "$pid_file" ]; then
            kill "$(cat "$pid_file")" 2>/dev/null || true
            rm -f "$pid_file"
        fi
    done
    echo "slurm down"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
