#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on this host, for tests: munged, slurmctld and slurmd as root,
# all state, sockets, logs and the key under one directory. Needs Debian's slurm-wlm and munge.
#
#   scripts/slurm-test-cluster.sh start DIR   # starts it; prints the line `export SLURM_CONF=DIR/slurm.conf`
#   scripts/slurm-test-cluster.sh stop DIR    # stops the daemons it started (by their pid files)
#   scripts/slurm-test-cluster.sh status DIR  # sinfo + squeue against it
#
# Clients (sbatch, srun, squeue, scontrol, sinfo) find the cluster through SLURM_CONF. There is no
# accounting daemon: `sacct` fails, and Snakemake's --slurm executor falls back to `scontrol show job`
# (finished jobs are kept for MinJobAge=3600 s so it can see them). Ports are picked free at start,
# so it does not collide with a real slurmctld/slurmd or with another test cluster.
# The node: this host's short name, all its CPUs, its memory less 1 GiB. One partition, "debug".
set -euo pipefail

usage() { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

die() { echo "slurm-test-cluster: $*" >&2; exit 1; }

stop_pidfile() {  # stop_pidfile FILE NAME: TERM the process in FILE, wait up to 10 s, then KILL
  local f=$1 name=$2 pid
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "slurm-test-cluster: $name ($pid) did not stop, killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$f"
}

case $cmd in
start)
  for t in munged mungekey slurmctld slurmd sbatch scontrol sinfo; do
    command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || die "$t not found (apt-get install slurm-wlm munge)"
  done
  export PATH="$PATH:/usr/sbin"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -e "$dir/slurm.conf" ] && die "$dir already holds a cluster (stop it first)"
  mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
  chmod 700 "$dir/munge"

  # munge: own key, socket, pid and seed files; nothing under /etc or /run is touched.
  mungekey --create --keyfile="$dir/munge/munge.key" --bits=1024 2>/dev/null ||
    { dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none; }
  chmod 400 "$dir/munge/munge.key"
  sock="$dir/munge/munge.socket"
  munged --force --key-file="$dir/munge/munge.key" --socket="$sock" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" ||
    die "munged did not start: $(tail -5 "$dir/log/munged.log" 2>/dev/null)"
  for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
  [ -S "$sock" ] || die "munged socket $sock did not appear"

  # Two free TCP ports on the loopback for slurmctld and slurmd.
  read -r ctld_port slurmd_port < <(/usr/bin/python3 - <<'EOF'
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])
EOF
)
  host=$(hostname -s)
  cpus=$(nproc)
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  cat > "$dir/slurm.conf" <<EOF
# Written by scripts/slurm-test-cluster.sh: a single-node test cluster (root, no accounting, no cgroups).
ClusterName=dnambatest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=3600
SlurmctldTimeout=30
SlurmdTimeout=30
SchedulerParameters=sched_interval=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  echo "ConstrainCores=no" > "$dir/cgroup.conf"
  export SLURM_CONF="$dir/slurm.conf"
  # -i: ignore any old state (there is none: a fresh StateSaveLocation).
  slurmctld -i -f "$SLURM_CONF" || die "slurmctld did not start: $(tail -5 "$dir/log/slurmctld.log" 2>/dev/null)"
  slurmd -f "$SLURM_CONF" || die "slurmd did not start: $(tail -5 "$dir/log/slurmd.log" 2>/dev/null)"
  ok=
  for _ in $(seq 150); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
    case $state in idle*|mixed*|allocated*) ok=1; break ;; esac
    sleep 0.2
  done
  if [ -z "$ok" ]; then
    echo "slurm-test-cluster: node $host did not become idle (state '$state')" >&2
    tail -20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
    exit 1
  fi
  echo "export SLURM_CONF=$SLURM_CONF"
  ;;
stop)
  [ -d "$dir" ] || exit 0
  stop_pidfile "$dir/slurmd.pid" slurmd
  stop_pidfile "$dir/slurmctld.pid" slurmctld
  stop_pidfile "$dir/munge/munged.pid" munged
  ;;
status)
  export SLURM_CONF="$dir/slurm.conf"
  sinfo
  squeue
  ;;
*) usage ;;
esac
