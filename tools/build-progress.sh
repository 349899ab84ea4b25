# shellcheck shell=bash
# Sourced by the long builds under tools/ (kube, llamacpp, keda): waits for a build running in
# the background and says every 30 s how far it got, since a first build takes tens of minutes
# on 2 cores and silence looks like a hang. The caller defines `say` (its own log prefix).

# wait_for_build PID LOG UNIT PATTERN: wait for PID; every 30 s say how many lines of LOG match
# PATTERN ('' counts every line), followed by UNIT; on failure, say so and show LOG's last lines.
wait_for_build() {
  local pid=$1 log=$2 unit=$3 pattern=$4
  while kill -0 "$pid" 2>/dev/null; do
    sleep "${BUILD_PROGRESS_SECONDS:-30}"
    say "$(grep -c -e "$pattern" "$log" || true) $unit so far"
  done
  if ! wait "$pid"; then
    say "the build failed; last lines of $log:"
    tail -n 30 "$log" >&2
    return 1
  fi
}
