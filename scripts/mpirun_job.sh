# An mpirun job run the way train.py runs alone (sourced by the mpirun launch scripts, after common.sh):
#   run_mpirun_job PROGRAM RANKS LOG_DIR mpirun-options-and-command...
# (RESUME_HINT, when set, ends the line of a failed job: how to continue it.)
# - mpirun runs in a session of its own, its output in LOG_DIR/mpirun.log and each rank's in
#   LOG_DIR/1/rank.<r>/stdout (OpenMPI 4's --output-filename layout); rank 0's output is shown here.
# - SIGTERM, Ctrl-C (SIGINT), SIGHUP or SIGUSR1 to this script is sent on to mpirun as SIGUSR1, which OpenMPI
#   forwards to every rank without killing any (to SIGTERM or SIGINT it answers by SIGKILLing the ranks about a
#   second later, before a checkpoint is written): the ranks save one at their next stop check and exit 0; the
#   script then exits 0 (SIGTERM, SIGUSR1), 130 (SIGINT) or 129 (SIGHUP). A second signal stops the job at once.
# - A user error in the ranks comes out as their one line, `SCRIPT: error: ...`, with status 2; a rank that died
#   as one line naming the rank, its node and its log, with status 1.

# shellcheck disable=SC2317  # the functions below run from traps
MPIRUN_PID=""
STOP_SIGNAL=""     # the first stop signal received
PENDING_SIGNAL=""  # a signal that came while mpirun was being started
TRAPPED=""         # a trap ran during the last wait

# Each rank's own output file (OpenMPI 4: LOG_DIR/<job>/rank.<r>/stdout).
rank_log() { compgen -G "$LOG_DIR/*/rank.$1/stdout" | head -n 1; }

# Each signal is passed on before anything is printed: the console may be gone (a closed terminal, a `| tee` that
# Ctrl-C ended too), and SIGPIPE is ignored so that a failed echo cannot end the script with mpirun left running.
mpirun_on_signal() {
  local sig="$1"
  TRAPPED=1
  if [ -z "$MPIRUN_PID" ]; then
    [ -n "${LAUNCHING:-}" ] || exit $((128 + $(kill -l "$sig")))
    PENDING_SIGNAL="$sig"  # mpirun is being started: act once its pid is known
    return
  fi
  if [ -n "$STOP_SIGNAL" ]; then
    kill -TERM "$MPIRUN_PID" 2>/dev/null  # mpirun: SIGTERM to every rank, SIGKILL a second later
    STOP_SIGNAL="FORCED:$sig"
    echo "$SCRIPT_NAME: received SIG$sig again: the ranks are stopped at once, without a checkpoint" >&2
    return
  fi
  kill -USR1 "$MPIRUN_PID" 2>/dev/null
  STOP_SIGNAL="$sig"
  echo "$SCRIPT_NAME: received SIG$sig: the ranks save a checkpoint at their next stop check and stop" \
    "(send it again, a second or more later, to stop at once)"
}

# The ranks' one-line errors (PROGRAM: error: ...), each message once, in rank order.
rank_errors() {
  local rank
  for ((rank = 0; rank < RANKS; rank++)); do
    grep -h "^${PROGRAM//./\\.}: error: " "$(rank_log "$rank")" 2>/dev/null
  done | awk '!seen[$0]++'
}

# Rank 0's (else the first rank's) line "PROGRAM: (stopped|interrupted) by SIG... ..." without "PROGRAM: ",
# naming the signal this script received (the ranks got SIGUSR1).
rank_stop_line() {
  local rank line
  for ((rank = 0; rank < RANKS; rank++)); do
    line="$(grep -m 1 -E "^${PROGRAM//./\\.}: $1 by SIG" "$(rank_log "$rank")" 2>/dev/null)"
    [ -n "$line" ] || continue
    line="${line#"$PROGRAM: "}"
    if [ -n "$STOP_SIGNAL" ]; then sed -E "s/^$1 by SIG[A-Z0-9]+/$1 by SIG$STOP_SIGNAL/" <<<"$line"; else echo "$line"; fi
    return
  done
}

# What ended a failed job, from mpirun's own report: "rank R on node N was killed by signal 9 (Killed)" or
# "rank R exited with status S".
failed_rank() {
  local log="$LOG_DIR/mpirun.log" line
  line="$(grep -m 1 -oE 'process rank [0-9]+ with PID [0-9]+ on node [^ ]+ exited on signal [0-9]+( \([^)]*\))?' \
    "$log" 2>/dev/null)"
  if [ -n "$line" ]; then
    sed -E 's/process rank ([0-9]+) with PID [0-9]+ on node ([^ ]+) exited on signal ([0-9]+)/rank \1 on node \2 was killed by signal \3/' <<<"$line"
    return
  fi
  local rank status
  rank="$(grep -m 1 -oE 'Process name: \[\[[0-9]+,[0-9]+\],[0-9]+\]' "$log" 2>/dev/null | grep -oE '[0-9]+\]$' | tr -d ']')"
  status="$(grep -m 1 -oE 'Exit code: +[0-9]+' "$log" 2>/dev/null | grep -oE '[0-9]+$')"
  [ -n "$rank" ] && echo "rank $rank exited with status ${status:-?}"
}

run_mpirun_job() {
  PROGRAM="$1"; RANKS="$2"; LOG_DIR="$3"; shift 3
  mkdir -p "$LOG_DIR" || die "cannot create the log folder $LOG_DIR"
  rm -rf "$LOG_DIR/1" "$LOG_DIR/mpirun.log"  # an earlier run's logs must not be taken for this one's
  command -v setsid >/dev/null || die "setsid not found: install util-linux"
  # mpirun dies with this script where util-linux's setpriv can arrange it (a SIGKILLed script leaves no job behind)
  local with_parent=()
  if command -v setpriv >/dev/null; then with_parent=(setpriv --pdeathsig TERM); fi
  set +e  # from here on every status is looked at explicitly
  trap '' PIPE
  trap 'mpirun_on_signal TERM' TERM
  trap 'mpirun_on_signal INT' INT
  trap 'mpirun_on_signal HUP' HUP
  trap 'mpirun_on_signal USR1' USR1
  echo "$SCRIPT_NAME: $RANKS ranks; logs in $LOG_DIR (1/rank.<r>/stdout, mpirun.log); rank 0's shown here"
  LAUNCHING=1
  setsid ${with_parent[@]+"${with_parent[@]}"} mpirun --output-filename "$LOG_DIR" --merge-stderr-to-stdout "$@" \
    >"$LOG_DIR/mpirun.log" 2>&1 </dev/null &
  MPIRUN_PID=$!
  if [ -n "$PENDING_SIGNAL" ]; then mpirun_on_signal "$PENDING_SIGNAL"; fi
  (  # rank 0's output on the console once it exists, without the lines this script reports itself
    while [ -z "$(rank_log 0)" ] && kill -0 "$MPIRUN_PID" 2>/dev/null; do sleep 0.2; done
    [ -n "$(rank_log 0)" ] && tail -n +1 -F --pid="$MPIRUN_PID" "$(rank_log 0)" 2>/dev/null \
      | grep --line-buffered -v -E "^$PROGRAM: (error|stopped by|interrupted by)"
  ) &
  local status
  while :; do  # wait returns early when a trap ran: wait again (bash keeps the status of a job that has ended)
    TRAPPED=""
    wait "$MPIRUN_PID"; status=$?
    [ -n "$TRAPPED" ] || break
  done
  trap - TERM INT HUP USR1  # the job has ended
  wait  # the console tail ends with mpirun
  report_mpirun_job "$status"
}

# The job's end in one line where it did not succeed, and the script's exit status.
report_mpirun_job() {
  local status="$1" errors line
  errors="$(rank_errors)"
  if [ -n "$errors" ]; then
    sed "s/^$PROGRAM: /$SCRIPT_NAME: /" <<<"$errors" >&2
    exit 2
  fi
  if [[ "$STOP_SIGNAL" == FORCED:* ]]; then exit $((128 + $(kill -l "${STOP_SIGNAL#FORCED:}"))); fi
  if [ -z "$STOP_SIGNAL" ]; then
    [ "$status" -eq 0 ] && exit 0
    line="$(failed_rank)"
    echo "$SCRIPT_NAME: error: ${line:-the job failed (mpirun exit status $status)}$(
      [[ "$line" =~ ^rank\ ([0-9]+) ]] && echo "; its log: $(rank_log "${BASH_REMATCH[1]}")")" \
      "(mpirun's: $LOG_DIR/mpirun.log)${RESUME_HINT:+; $RESUME_HINT}" >&2
    exit 1
  fi
  line="$(rank_stop_line stopped)"  # the graceful stop: rank 0 says where the checkpoint is and how to continue
  if [ -n "$line" ] || [ "$status" -eq 0 ]; then  # (no line: the job had just ended by itself)
    [ -z "$line" ] || echo "$SCRIPT_NAME: $line" >&2
    case "$STOP_SIGNAL" in INT) exit 130 ;; HUP) exit 129 ;; *) exit 0 ;; esac
  fi
  line="$(rank_stop_line interrupted)"  # before the training loop: "interrupted by ...; nothing was saved"
  echo "$SCRIPT_NAME: ${line:-interrupted by SIG$STOP_SIGNAL before the ranks had started; nothing was saved}" >&2
  exit $((128 + $(kill -l "$STOP_SIGNAL")))
}
