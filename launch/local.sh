#!/usr/bin/env bash
# Runs N training processes on this machine, wired together on a loopback coordinator, as on a real cluster.
#
#   launch/local.sh 2 --config=mirrortalk_jax/configs/synthtalk_regression.py:tiny --workdir=runs/local2
#
# Each process sees DEVICES_PER_PROCESS CPU devices (default 2) unless it has accelerators. Logs go to
# WORKDIR_LOGS (default runs/local_logs)/process_<i>.log. If one process fails, the others are stopped.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 NUM_PROCESSES MAIN_FLAGS..." >&2
  exit 64
fi
num_processes=$1
shift
port=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
logs=${WORKDIR_LOGS:-runs/local_logs}
mkdir -p "$logs"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'cleanup; exit 143' TERM INT

for ((i = 0; i < num_processes; i++)); do
  MIRRORTALK_COORDINATOR="127.0.0.1:${port}" MIRRORTALK_NUM_PROCESSES="$num_processes" MIRRORTALK_PROCESS_ID="$i" \
    XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-2}" \
    python3 -m mirrortalk_jax.main "$@" >"$logs/process_${i}.log" 2>&1 &
  pids+=("$!")
done

status=0
for _ in "${pids[@]}"; do
  if ! wait -n; then
    status=1
    echo "a training process failed; stopping the others (logs in $logs)" >&2
    cleanup
    break
  fi
done
wait || true
trap - EXIT
exit "$status"
