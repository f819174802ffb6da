#!/usr/bin/env bash
# Data-parallel training with MindSpore's msrun launcher: N processes on this machine, on GPU or CPU.
#   bash scripts/run_distribute_train_msrun.sh WORKER_NUM CONFIG DATA_PATH [OUTPUT_PATH] [-- extra train.py options]
# Example (2 CPU processes):
#   bash scripts/run_distribute_train_msrun.sh 2 config/digits_demo_cpu.yaml ./data/digits ./output/dp -- --device_target CPU
# Environment: MASTER_ADDR (127.0.0.1), MASTER_PORT (8118), CLUSTER_TIME_OUT (seconds to wait for all workers, 600).
# Logs: OUTPUT_PATH/msrun_log/worker_<r>.log (msrun.log: msrun's own output); rank 0 also writes OUTPUT_PATH/train.log.
#
# It behaves as train.py does. SIGTERM and Ctrl-C (SIGINT) make the workers save a checkpoint at their next stop
# check and exit; the script then exits 0 (SIGTERM) or 130 (SIGINT); a second signal stops at once. A user error in
# the workers comes out as their one line, `run_distribute_train_msrun.sh: error: ...`, with status 2.
# msrun alone would do neither: it starts every worker in a session of its own (a signal to this script's process
# group never reaches them), answers Ctrl-C by SIGKILLing them, and SIGKILLs all workers as soon as one exits with a
# non-zero status (a worker's 130 after SIGINT would cut rank 0's checkpoint short). So msrun runs in a session of
# its own, out of Ctrl-C's reach, and the workers get SIGTERM for either signal (their graceful stop, status 0).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
handle_help "$@"
[ $# -ge 3 ] || usage
WORKER_NUM="$1"; CONFIG="$2"; DATA_PATH="$3"; shift 3
OUTPUT_PATH="./output"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then OUTPUT_PATH="$1"; shift; fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-8118}"
CLUSTER_TIME_OUT="${CLUSTER_TIME_OUT:-600}"

require_positive_int WORKER_NUM "$WORKER_NUM"
[[ "$MASTER_PORT" =~ ^[0-9]+$ ]] && [ "$MASTER_PORT" -ge 1024 ] && [ "$MASTER_PORT" -le 65535 ] \
  || die "MASTER_PORT must be a port number in 1024-65535, got '$MASTER_PORT'"
require_config "$CONFIG"
require_data_path "$DATA_PATH"

use_repo_venv
command -v msrun >/dev/null || die "msrun not found (it ships with MindSpore >= 2.3): activate the environment that has MindSpore"
for tool in setsid ps tail; do command -v "$tool" >/dev/null || die "$tool not found: install util-linux / procps"; done
# msrun's scheduler fails at once on a busy port, but msrun itself would wait for its workers until CLUSTER_TIME_OUT
python - "$MASTER_ADDR" "$MASTER_PORT" <<'PY' || die "MASTER_PORT $MASTER_PORT is in use at $MASTER_ADDR on this host: choose a free one, e.g. MASTER_PORT=$((MASTER_PORT + 1))"
import socket, sys
with socket.socket() as probe:
    try:
        probe.bind((sys.argv[1], int(sys.argv[2])))
    except OSError:
        sys.exit(1)
PY
LOG_DIR="$OUTPUT_PATH/msrun_log"
mkdir -p "$LOG_DIR" || die "cannot create the log folder $LOG_DIR"
rm -f "$LOG_DIR"/worker_*.log "$LOG_DIR/scheduler.log"  # an earlier run's errors must not be taken for this one's
set +e  # from here on every status is looked at explicitly
shopt -s nullglob

MSRUN_PID=""
STOP_SIGNAL=""  # the first SIGTERM/SIGINT received
WORKER_PIDS=()  # the workers, once msrun has started them all (they may outlive msrun: see on_signal)

# msrun's worker processes: its children that lead a session of their own (msrun starts each with setsid; its
# scheduler, train.py too, stays in msrun's session and ends by itself once the workers have).
workers() { ps -o pid=,sid= --ppid "$MSRUN_PID" | awk '$1 == $2 { print $1 }'; }

# Whether process PID still runs (not a zombie).
running() { local state; state="$(ps -o stat= -p "$1")" && [ "${state:0:1}" != Z ]; }

# shellcheck disable=SC2317  # kill_job and on_signal run from the traps
# Every process of the job at once: the workers' process groups (with their children), msrun's (its scheduler).
kill_job() {
  local pid
  for pid in $(workers) "${WORKER_PIDS[@]}" "$MSRUN_PID"; do kill -KILL -- "-$pid" 2>/dev/null; done
}

# The first signal asks the workers for their graceful stop (one worker's request is enough: the ranks agree on a
# stop at each stop check); a second one stops everything at once, as does a signal while msrun starts them.
# shellcheck disable=SC2317
on_signal() {
  local sig="$1" number
  number="$(kill -l "$sig")"
  [ -n "$MSRUN_PID" ] || exit $((128 + number))
  if [ -n "$STOP_SIGNAL" ] || [ ${#WORKER_PIDS[@]} -lt "$WORKER_NUM" ]; then
    kill_job
    if [ -n "$STOP_SIGNAL" ]; then
      echo "$SCRIPT_NAME: received SIG$sig again: the workers were stopped at once, without a checkpoint" >&2
    else
      echo "$SCRIPT_NAME: interrupted by SIG$sig before the $WORKER_NUM workers had started; nothing was saved" >&2
    fi
    exit $((128 + number))
  fi
  STOP_SIGNAL="$sig"
  echo "$SCRIPT_NAME: received SIG$sig: the workers save a checkpoint at their next stop check and stop" \
    "(send it again to stop at once)"
  # systemd (KillMode=control-group) or Slurm may have signalled every process of the job already, msrun too: a
  # second signal would stop a worker at once, without its checkpoint
  sleep 1
  grep -qsE '(received|interrupted by) SIG(TERM|INT)' "$LOG_DIR"/worker_*.log && return
  kill -TERM "${WORKER_PIDS[@]}" 2>/dev/null
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT

# The workers' one-line errors (train.py: error: ...), each message once, in rank order.
worker_errors() {
  local rank
  for ((rank = 0; rank < WORKER_NUM; rank++)); do
    grep -h '^train\.py: error: ' "$LOG_DIR/worker_$rank.log" 2>/dev/null
  done | awk '!seen[$0]++'
}

# Rank 0's (else the first rank's) line "train.py: (stopped|interrupted) by SIG... ..." without "train.py: ", naming
# the signal this script received (the workers got SIGTERM).
stop_line() {
  local rank line
  for ((rank = 0; rank < WORKER_NUM; rank++)); do
    line="$(grep -m 1 -E "^train\.py: $1 by SIG" "$LOG_DIR/worker_$rank.log" 2>/dev/null)"
    if [ -n "$line" ]; then sed -E "s/^train\.py: $1 by SIG[A-Z]+/$1 by SIG$STOP_SIGNAL/" <<<"$line"; return; fi
  done
}

echo "$SCRIPT_NAME: $WORKER_NUM workers; logs in $LOG_DIR (worker_<rank>.log, msrun.log); rank 0's shown here"
# msrun's own output goes to msrun.log; --tail_worker_log names no rank, so msrun copies no worker log into it
setsid msrun --worker_num="$WORKER_NUM" --local_worker_num="$WORKER_NUM" --master_addr="$MASTER_ADDR" \
  --master_port="$MASTER_PORT" --log_dir="$LOG_DIR" --join=True --tail_worker_log="$WORKER_NUM" \
  --cluster_time_out="$CLUSTER_TIME_OUT" \
  "$REPO_ROOT/train.py" --config_path "$CONFIG" --run_distribute True --device_num "$WORKER_NUM" \
  --data_path "$DATA_PATH" --output_path "$OUTPUT_PATH" "$@" >"$LOG_DIR/msrun.log" 2>&1 </dev/null &
MSRUN_PID=$!
# Rank 0's log on the console, without the lines this script reports itself (background jobs ignore Ctrl-C).
tail -n +1 -F --pid="$MSRUN_PID" "$LOG_DIR/worker_0.log" 2>/dev/null \
  | grep --line-buffered -v -E '^(train\.py: (error|stopped by|interrupted by)|received SIG)' &

while [ ${#WORKER_PIDS[@]} -lt "$WORKER_NUM" ] && running "$MSRUN_PID"; do  # msrun starts the workers
  sleep 0.2
  mapfile -t WORKER_PIDS < <(workers)
done
# wait returns early (status > 128) when a trap ran; msrun still exists then (a zombie at worst): wait again
while :; do
  wait "$MSRUN_PID"; MSRUN_STATUS=$?
  if [ "$MSRUN_STATUS" -le 128 ] || ! kill -0 "$MSRUN_PID" 2>/dev/null; then break; fi
done
for pid in "${WORKER_PIDS[@]}"; do  # workers that outlived msrun (signalled by a service manager) finish their stop
  while [ -n "$STOP_SIGNAL" ] && running "$pid"; do sleep 0.2; done
done
trap - TERM INT  # the job has ended
wait  # the console tail ends with msrun

ERRORS="$(worker_errors)"
if [ -n "$ERRORS" ]; then  # a user error: the workers' own line(s)
  sed "s/^train\.py: /$SCRIPT_NAME: /" <<<"$ERRORS" >&2
  exit 2
fi
if [ -z "$STOP_SIGNAL" ]; then
  [ "$MSRUN_STATUS" -eq 0 ] && exit 0
  echo "$SCRIPT_NAME: error: the job failed (msrun exit status $MSRUN_STATUS); see the logs in $LOG_DIR" \
    "(worker_<rank>.log, scheduler.log, msrun.log)" >&2
  exit 1
fi
NUMBER="$(kill -l "$STOP_SIGNAL")"
LINE="$(stop_line stopped)"  # the graceful stop: rank 0 says where the checkpoint is and how to continue
if [ -n "$LINE" ] || [ "$MSRUN_STATUS" -eq 0 ]; then  # (no line: the job had just ended by itself)
  [ -z "$LINE" ] || echo "$SCRIPT_NAME: $LINE" >&2
  [ "$STOP_SIGNAL" = INT ] && exit 130
  exit 0
fi
LINE="$(stop_line interrupted)"  # before the training loop: "interrupted by SIGTERM; nothing was saved"
if [ -n "$LINE" ]; then
  echo "$SCRIPT_NAME: $LINE" >&2
else
  echo "$SCRIPT_NAME: error: the job failed after SIG$STOP_SIGNAL (msrun exit status $MSRUN_STATUS); see the logs" \
    "in $LOG_DIR (worker_<rank>.log, scheduler.log, msrun.log)" >&2
fi
exit $((128 + NUMBER))
