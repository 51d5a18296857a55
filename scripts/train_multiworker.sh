#!/usr/bin/env bash
# Starts N local worker processes of one training script, each with its own
# TF_CONFIG (127.0.0.1, free ports), for trying multi-worker training on one
# machine. On a cluster every machine starts the same script with its own
# TF_CONFIG instead (docs/distributed.md).
#
#   scripts/train_multiworker.sh [-n N] [--threads T] [--restarts R] [--logs DIR] script.py [args...]
#
# -n N          workers (default 2)
# --threads T   TensorFlow threads per worker (default 1)
# --restarts R  when a worker fails, stop the others and start the whole job
#               again, up to R times (default 0); with
#               keras.callbacks.BackupAndRestore it resumes from the last epoch
# --logs DIR    one log per worker (default: prefixed lines on this terminal)
#
# Exit code: 0 when every worker succeeded, else the first failing worker's.
# Needs bash 5.1 or newer (wait -n -p).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
N=2 THREADS=1 RESTARTS=0 LOGS=""
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --restarts) RESTARTS="$2"; shift 2 ;;
    --logs) LOGS="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    -*) echo "train_multiworker.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "train_multiworker.sh: give the training script (see --help)" >&2; exit 2; }
case "$N" in ''|*[!0-9]*) echo "train_multiworker.sh: -n needs a positive number, got '$N'" >&2; exit 2 ;; esac
[ "$N" -ge 1 ] || { echo "train_multiworker.sh: -n needs at least 1" >&2; exit 2; }
[ -f "$1" ] || { echo "train_multiworker.sh: no such script: $1" >&2; exit 2; }
[ -z "$LOGS" ] || mkdir -p "$LOGS"

# The same ports on every restart: the job restarts with the same configuration.
mapfile -t CONFIGS < <(PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c \
  "import sys; from tfq.distribute import local_cluster; print('\n'.join(local_cluster(int(sys.argv[1]))))" "$N")

PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  sleep 2
  for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
}
trap 'stop_all; exit 130' INT TERM

attempt=0
while :; do
  PIDS=()
  for ((i = 0; i < N; i++)); do
    env_vars=(TF_CONFIG="${CONFIGS[$i]}" TF_NUM_INTRAOP_THREADS="$THREADS" TF_NUM_INTEROP_THREADS="$THREADS"
              PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}")
    if [ -n "$LOGS" ]; then
      setsid env "${env_vars[@]}" "$PY" "$@" >>"$LOGS/worker-$i.log" 2>&1 &
    else
      setsid bash -c 'set -o pipefail; i=$1; shift; "$@" 2>&1 | sed -u "s/^/[worker $i] /"' _ "$i" env "${env_vars[@]}" "$PY" "$@" &
    fi
    PIDS+=($!)
  done
  rc=0
  # Wait for the workers one by one; a failure stops the others (they could
  # not continue without it anyway, and would only wait for their timeouts).
  alive=("${PIDS[@]}")
  while [ "${#alive[@]}" -gt 0 ]; do
    set +e; wait -n -p done_pid "${alive[@]}"; code=$?; set -e
    next=()
    for p in "${alive[@]}"; do [ "$p" = "$done_pid" ] || next+=("$p"); done
    alive=("${next[@]}")
    if [ "$code" -ne 0 ]; then
      rc=$code
      echo "train_multiworker.sh: a worker exited with code $code; stopping the others" >&2
      stop_all
      break
    fi
  done
  wait 2>/dev/null || true
  if [ "$rc" -eq 0 ]; then exit 0; fi
  if [ "$attempt" -ge "$RESTARTS" ]; then exit "$rc"; fi
  attempt=$((attempt + 1))
  echo "train_multiworker.sh: restarting all $N workers (restart $attempt of $RESTARTS)" >&2
done
