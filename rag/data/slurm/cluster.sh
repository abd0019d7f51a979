#!/usr/bin/env bash
# A single-node Slurm cluster for CI and local testing (Debian's slurm-wlm + munge,
# no systemd, no cgroups).   scripts/slurm/cluster.sh up|down|status
#   SLURM_FAKE_GPUS=N   advertise N fake GPUs (device nodes that are /dev/null) so that
#                       --gpus requests schedule and jobs get CUDA_VISIBLE_DEVICES
#   SLURM_CPUS=N        advertise N CPUs (more jobs at once than the cores)
# Daemons are started and stopped by PID; state lives in /tmp/rag-slurm.
set -euo pipefail
STATE=/tmp/rag-slurm
CONF=/etc/slurm/slurm.conf

down() {
  for pid in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" /run/munge/munged.pid; do
    [ -s "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  for _ in $(seq 50); do
    pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || break
    sleep 0.2
  done
}

up() {
  if ! command -v slurmctld >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
  fi
  down
  if (exec 3<>/dev/tcp/127.0.0.1/6817) 2>/dev/null; then
    echo "port 6817 is held by a Slurm this script did not start; stop it first" >&2
    exit 1
  fi
  rm -rf "$STATE" && mkdir -p "$STATE"/{state,spool,log,fakegpu}
  install -d -o munge -g munge -m 0755 /run/munge      # systemd's RuntimeDirectory
  runuser -u munge -- /usr/sbin/munged                  # munged refuses to run as root
  local host node gres=""
  rm -f /etc/slurm/gres.conf                            # from an earlier run with fake GPUs
  host=$(hostname -s)
  node="$(slurmd -C | head -n1) NodeAddr=127.0.0.1 State=UNKNOWN"
  if [ "${SLURM_FAKE_GPUS:-0}" -gt 0 ] || [ -n "${SLURM_CPUS:-}" ]; then
    local n=${SLURM_FAKE_GPUS:-0} cpus=${SLURM_CPUS:-$(nproc)}
    mem=$(slurmd -C | head -n1 | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    node="NodeName=$host CPUs=$cpus RealMemory=$mem NodeAddr=127.0.0.1 State=UNKNOWN"
    if [ "$n" -gt 0 ]; then
      for i in $(seq 0 $((n - 1))); do mknod -m 666 "$STATE/fakegpu/gpu$i" c 1 3; done
      node="$node Gres=gpu:$n"
      gres="GresTypes=gpu"
      printf 'AutoDetect=off\nNodeName=%s Name=gpu File=%s/fakegpu/gpu[0-%d]\n' \
        "$host" "$STATE" $((n - 1)) > /etc/slurm/gres.conf
    fi
  fi
  cat > "$CONF" <<CONF
ClusterName=rag-ci
SlurmctldHost=${host}(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.txt
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=5
$gres
$node
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  /usr/sbin/slurmctld
  /usr/sbin/slurmd
  for _ in $(seq 300); do
    [ "$(sinfo -h -N -o %T 2>/dev/null)" = idle ] && { sinfo -N -o '%N %T %c %G'; return 0; }
    sleep 0.2
  done
  echo "the node did not become idle; logs:" >&2
  tail -n 30 "$STATE"/log/*.log >&2
  exit 1
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status) sinfo -N -o '%N %T %c %G' ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
