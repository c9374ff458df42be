#!/usr/bin/env bash
#SBATCH --job-name=mirrortalk
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --signal=TERM@180
#SBATCH --output=slurm-%j.out
# Trains on a Slurm GPU cluster: one process per node driving all its GPUs (the default above), or one process
# per GPU. Every process gets the coordinator (the job's first node), the process count and its rank, then
# runs mirrortalk_jax.main; if one process fails, Slurm stops the others (--kill-on-bad-exit). The workdir must
# be on a filesystem every node shares.
#
#   # submit (outside an allocation this script submits itself with sbatch):
#   launch/slurm.sh --config=mirrortalk_jax/configs/mirrortalk.py:large --workdir=/shared/runs/mirrortalk_large
#   # 4 nodes, one process per GPU (Slurm binds one GPU to each task):
#   sbatch --nodes=4 --ntasks-per-node=8 --gpus-per-task=1 launch/slurm.sh \
#     --config=mirrortalk_jax/configs/mirrortalk.py:base --workdir=/shared/runs/mirrortalk_base
#
# Environment: COORDINATOR_PORT (default: derived from the job id), PYTHON (default python3), DRY_RUN=1 prints
# the commands instead of running them. `--signal=TERM@180` asks Slurm for SIGTERM 3 minutes before the time
# limit: the processes agree on a step, save it and exit; resubmitting the same command resumes the run.
set -euo pipefail

dry_run=${DRY_RUN:-}
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

if [[ $# -lt 1 ]]; then
  sed -n '/^# Trains/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 64
fi

# Outside an allocation: submit this very script with the same arguments.
if [[ -z "${SLURM_JOB_ID:-}" ]]; then
  run sbatch --chdir="$PWD" "$0" "$@"
  exit
fi

# The first node of the job hosts JAX's coordinator (a plain comma list needs no scontrol).
if command -v scontrol >/dev/null 2>&1; then
  coordinator_host=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
else
  coordinator_host=${SLURM_JOB_NODELIST%%,*}
fi
export MIRRORTALK_COORDINATOR="${coordinator_host}:${COORDINATOR_PORT:-$((20000 + SLURM_JOB_ID % 20000))}"
export MIRRORTALK_NUM_PROCESSES="$SLURM_NTASKS"
# Let XLA keep most of each GPU's memory (its default is 75%).
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
echo "job $SLURM_JOB_ID: $SLURM_NTASKS process(es), coordinator $MIRRORTALK_COORDINATOR" >&2
[[ -n "$dry_run" ]] && echo "+ export MIRRORTALK_COORDINATOR=$MIRRORTALK_COORDINATOR MIRRORTALK_NUM_PROCESSES=$MIRRORTALK_NUM_PROCESSES"

# The rank is only known inside each task, hence the inner shell.
# shellcheck disable=SC2016
run srun --kill-on-bad-exit=1 --label \
  bash -c 'MIRRORTALK_PROCESS_ID=$SLURM_PROCID exec "${PYTHON:-python3}" -m mirrortalk_jax.main "$@"' mirrortalk "$@"
