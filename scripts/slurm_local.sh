#!/usr/bin/env bash
# A real single-node SLURM cluster (Debian slurm-wlm 22.05 + munge) for tests and local trials of the batch
# templates: slurmctld, slurmd and munged run under one state directory and are stopped by their PIDs.
#
#   scripts/slurm_local.sh start [STATE_DIR]   # prints `export SLURM_CONF=...`; idempotent
#   scripts/slurm_local.sh stop  [STATE_DIR]
#   scripts/slurm_local.sh status [STATE_DIR]
#
# STATE_DIR defaults to $EXACLIMATE_SLURM_DIR or /tmp/exaclimate-slurm. Ports: $EXACLIMATE_SLURM_PORT
# (slurmctld, default 6817) and the next one (slurmd). Needs root (slurmd starts jobs as the submitting user)
# and the packages slurmctld slurmd slurm-client munge libpmix-dev (`scripts/setup.sh --with-slurm`).
# No systemd is used, so it works in containers and CI.
set -euo pipefail

ACTION="${1:-}"
STATE="${2:-${EXACLIMATE_SLURM_DIR:-/tmp/exaclimate-slurm}}"
CTLD_PORT="${EXACLIMATE_SLURM_PORT:-6817}"
SLURMD_PORT="$((CTLD_PORT + 1))"
CONF="$STATE/slurm.conf"
MUNGE_DIR="$STATE/munge"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket"
NODE="$(hostname -s)"

say() { printf '[slurm_local] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

running() {
  pid_alive "$STATE/slurmctld.pid" && pid_alive "$STATE/slurmd.pid" && pid_alive "$MUNGE_DIR/munged.pid"
}

node_state() { SLURM_CONF="$CONF" sinfo -h -N -o %T 2>/dev/null | head -n1 || true; }

write_conf() {
  # The node line as slurmd detects it (CPUs, sockets, cores, memory), addressed on the loopback.
  local hw
  hw="$(slurmd -C | head -n1 | sed -e "s/^NodeName=[^ ]*//")"
  local slurm_user
  slurm_user="$(id -un)"
  cat > "$CONF.tmp" <<EOF
# Written by scripts/slurm_local.sh: a single-node test cluster; everything lives under $STATE.
ClusterName=exaclimate
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$slurm_user
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$NODE NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
}

start_munge() {
  pid_alive "$MUNGE_DIR/munged.pid" && return 0
  mkdir -p "$MUNGE_DIR"
  local key=/etc/munge/munge.key
  if [ ! -r "$key" ]; then  # a fresh machine without a key: make a private one
    key="$MUNGE_DIR/munge.key"
    [ -f "$key" ] || { dd if=/dev/urandom of="$key" bs=1 count=1024 status=none; }
  fi
  local user=munge
  id munge >/dev/null 2>&1 || user="$(id -un)"
  chown "$user" "$MUNGE_DIR"
  chmod 0755 "$MUNGE_DIR"
  [ "$key" = "$MUNGE_DIR/munge.key" ] && { chown "$user" "$key"; chmod 0400 "$key"; }
  local cmd=(munged --socket="$MUNGE_SOCKET" --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log"
             --seed-file="$MUNGE_DIR/munged.seed" --key-file="$key")
  if [ "$user" = "$(id -un)" ]; then
    "${cmd[@]}" --force
  else
    runuser -u "$user" -- "${cmd[@]}"
  fi
  for _ in $(seq 50); do [ -S "$MUNGE_SOCKET" ] && return 0; sleep 0.1; done
  die "munged did not create $MUNGE_SOCKET (see $MUNGE_DIR/munged.log)"
}

start() {
  local bin
  for bin in slurmctld slurmd munged sinfo; do
    command -v "$bin" >/dev/null || die "$bin is missing; install SLURM with scripts/setup.sh --with-slurm"
  done
  [ "$(id -u)" = 0 ] || die "slurmd must run as root to start jobs; run with sudo"
  if running; then
    say "already running under $STATE"
    echo "export SLURM_CONF=$CONF"
    return 0
  fi
  stop_daemons quiet
  mkdir -p "$STATE/ctld" "$STATE/spool"
  chmod 0755 "$STATE"
  write_conf
  start_munge
  slurmctld -f "$CONF" -c -i   # -c: a clean state (no jobs from an earlier run); -i: ignore stale state
  slurmd -f "$CONF" -N "$NODE"
  local state=""
  for _ in $(seq 100); do
    state="$(node_state)"
    case "$state" in idle*|mixed*|allocated*) break ;; esac
    sleep 0.2
  done
  case "$state" in
    idle*|mixed*|allocated*) ;;
    *) say "node state is '${state:-unknown}' after 20 s; logs: $STATE/slurmctld.log $STATE/slurmd.log"
       stop_daemons quiet; exit 1 ;;
  esac
  say "single-node SLURM up under $STATE (node $NODE: $state)"
  echo "export SLURM_CONF=$CONF"
}

stop_daemons() {
  # Read the PIDs before signalling (slurmd removes its pid file on exit); signal all, then wait for all.
  local pidfile pid pids=()
  for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" "$MUNGE_DIR/munged.pid"; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    rm -f "$pidfile"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  [ "${1:-}" = quiet ] || say "stopped the SLURM daemons under $STATE"
}

case "$ACTION" in
  start) start ;;
  stop) stop_daemons ;;
  status)
    if running; then echo "running: node $(node_state) (SLURM_CONF=$CONF)"; else echo "stopped"; exit 3; fi ;;
  *) echo "usage: $0 start|stop|status [STATE_DIR]" >&2; exit 2 ;;
esac
