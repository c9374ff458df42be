#!/usr/bin/env bash
# Trains on every worker of a Cloud TPU VM slice: creates the slice unless it exists, copies this checkout to
# all workers, installs it once, frees the TPU from stale processes, runs mirrortalk_jax.main on every worker
# with a log per worker, and stops all workers when one fails. The workdir (checkpoints, metrics) must be a
# gs:// path: every worker reads and writes the same run.
#
#   # v5p-64: 32 chips on 8 workers (mirrortalk_jax/configs/mirrortalk.py:large shards parameters over them: FSDP)
#   TPU_NAME=mirrortalk-v5p ZONE=us-east5-a ACCELERATOR=v5p-64 RUNTIME=v2-alpha-tpuv5 \
#     launch/tpu.sh --config=mirrortalk_jax/configs/mirrortalk.py:large --workdir=gs://my-bucket/runs/mirrortalk_large
#
#   # v5e-16 (v5litepod-16): 16 chips on 4 workers, spot capacity
#   TPU_NAME=mirrortalk-v5e ZONE=us-west4-a ACCELERATOR=v5litepod-16 RUNTIME=v2-alpha-tpuv5-lite SPOT=1 \
#     launch/tpu.sh --config=mirrortalk_jax/configs/mirrortalk.py:base --workdir=gs://my-bucket/runs/mirrortalk_base \
#     --config.data.dataset_dir=gs://my-bucket/data/synthtalk
#
# Environment: TPU_NAME, ZONE (required); PROJECT (default: gcloud's); ACCELERATOR and RUNTIME (to create the
# slice); SPOT=1 (spot VMs); LOGS (local directory of the per-worker logs, default runs/tpu_logs/TPU_NAME);
# REMOTE_DIR (checkout on the workers, default mirrortalk_jax under the remote home); DRY_RUN=1 prints the
# gcloud commands instead of running them (NUM_WORKERS, default 2, stands in for the slice's worker count).
# Re-running the same command resumes the run from its latest checkpoint. A preempted slice sends SIGTERM:
# the processes agree on a step, save it and exit (docs/scaling.md).
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 64
}
[[ $# -ge 1 && -n "${TPU_NAME:-}" && -n "${ZONE:-}" ]] || usage

workdir=""
for arg in "$@"; do
  [[ "$arg" == --workdir=* ]] && workdir=${arg#--workdir=}
done
if [[ "$workdir" != gs://* ]]; then
  echo "--workdir must be a gs:// path that every worker can reach, got '${workdir}'" >&2
  exit 64
fi

dry_run=${DRY_RUN:-}
remote_dir=${REMOTE_DIR:-mirrortalk_jax}
logs=${LOGS:-runs/tpu_logs/$TPU_NAME}
gcloud_tpu=(gcloud compute tpus tpu-vm)
where=(--zone="$ZONE")
[[ -n "${PROJECT:-}" ]] && where+=(--project="$PROJECT")

# Prints a command the way a shell would read it back (DRY_RUN), or runs it.
show() {
  local out="+" a
  for a in "$@"; do
    if [[ "$a" =~ [][[:space:]\'\"\$\;\&\|\*\<\>\(\)] ]]; then out+=" '${a//\'/\'\\\'\'}'"; else out+=" $a"; fi
  done
  echo "$out"
}
run() {
  if [[ -n "$dry_run" ]]; then show "$@"; else "$@"; fi
}
on_all_workers() {
  run "${gcloud_tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all --command="$1"
}

# ----- Slice: reuse it, or create it -----
if [[ -n "$dry_run" ]] || ! "${gcloud_tpu[@]}" describe "$TPU_NAME" "${where[@]}" --format='value(state)' >/dev/null 2>&1; then
  [[ -n "$dry_run" ]] && show "${gcloud_tpu[@]}" describe "$TPU_NAME" "${where[@]}" --format='value(state)'
  : "${ACCELERATOR:?the slice $TPU_NAME does not exist: set ACCELERATOR (e.g. v5p-64) and RUNTIME to create it}"
  : "${RUNTIME:?set RUNTIME, the TPU software version (e.g. v2-alpha-tpuv5)}"
  create=("${gcloud_tpu[@]}" create "$TPU_NAME" "${where[@]}" --accelerator-type="$ACCELERATOR" --version="$RUNTIME")
  [[ -n "${SPOT:-}" ]] && create+=(--spot)
  run "${create[@]}"
fi
if [[ -n "$dry_run" ]]; then
  show "${gcloud_tpu[@]}" describe "$TPU_NAME" "${where[@]}" --format='value(networkEndpoints[].ipAddress)'
  hosts=()
  for ((i = 0; i < ${NUM_WORKERS:-2}; i++)); do hosts+=("worker-$i-ip"); done
else
  IFS=';' read -r -a hosts <<<"$("${gcloud_tpu[@]}" describe "$TPU_NAME" "${where[@]}" \
    --format='value(networkEndpoints[].ipAddress)')"
fi
worker_hostnames=$(IFS=,; echo "${hosts[*]}")
echo "slice $TPU_NAME: ${#hosts[@]} worker(s)" >&2

# ----- Code: one tarball of the tracked files, unpacked on every worker -----
if [[ -n "$dry_run" ]]; then
  tarball=mirrortalk_code.tar.gz
  echo "+ git ls-files -z | tar -czf $tarball --null -T -"
else
  tarball=$(mktemp -t mirrortalk_code.XXXXXX.tar.gz)
  trap 'rm -f "$tarball"' EXIT
  git ls-files -z | tar -czf "$tarball" --null -T -
fi
run "${gcloud_tpu[@]}" scp "$tarball" "$TPU_NAME":mirrortalk_code.tar.gz "${where[@]}" --worker=all
on_all_workers "mkdir -p $remote_dir && tar -xzf mirrortalk_code.tar.gz -C $remote_dir"

# ----- Environment, once per version of setup.py (the marker file names its hash) -----
on_all_workers "cd $remote_dir && marker=.installed-\$(sha1sum setup.py | cut -c1-12) && \
if [ ! -f \$marker ]; then python3 -m pip install -q -e '.[tpu]' && touch \$marker; fi"

# ----- Free the TPU: only processes holding its device files, then the runtime's lock file -----
free_tpu="pids=\$(sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null | sort -u); \
if [ -n \"\$pids\" ]; then echo \"stopping stale TPU processes \$pids\"; sudo kill -9 \$pids; fi; \
sudo rm -f /tmp/libtpu_lockfile"
on_all_workers "$free_tpu"

# ----- Train on every worker, one log each; the first failure stops all -----
quoted_flags=$(printf ' %q' "$@")
[[ -n "$dry_run" ]] || mkdir -p "$logs"
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  on_all_workers "$free_tpu" || true
}
trap 'stop_all; rm -f "$tarball"; exit 143' TERM INT
for ((i = 0; i < ${#hosts[@]}; i++)); do
  command="cd $remote_dir && TPU_WORKER_HOSTNAMES=$worker_hostnames TPU_WORKER_ID=$i \
python3 -m mirrortalk_jax.main$quoted_flags"
  ssh_cmd=("${gcloud_tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker="$i" --command="$command")
  if [[ -n "$dry_run" ]]; then
    echo "$(show "${ssh_cmd[@]}") > $logs/worker_$i.log 2>&1 &"
  else
    "${ssh_cmd[@]}" >"$logs/worker_$i.log" 2>&1 &
    pids+=("$!")
  fi
done

status=0
for _ in "${pids[@]}"; do
  if ! wait -n; then
    status=1
    echo "a worker failed; stopping all workers (logs in $logs)" >&2
    stop_all
    break
  fi
done
wait || true
if [[ $status -eq 0 && -z "$dry_run" ]]; then echo "training finished on all workers (logs in $logs)" >&2; fi
exit "$status"
