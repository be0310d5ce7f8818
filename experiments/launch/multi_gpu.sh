#!/usr/bin/env bash
# Train on all GPUs of one node (single process, one jax device per GPU, data-parallel or FSDP mesh).
#
#   experiments/launch/multi_gpu.sh configs/se/bsrnn.py:baseline exp/bsrnn \
#       --config.data.train_dir=data/train_simulation --config.eval.set_dir=data/validation \
#       [--config.train.num_fsdp=2] [--config.data.batch_size=16]
#
# One process drives every visible GPU: the global batch (config.data.batch_size) is split over the
# mesh (data x fsdp; num_fsdp GPUs share each parameter shard), so scale batch_size with the GPU count.
# Dynamic mixing can run inside the step on the GPUs with --config.data.mixing=step.
# Several nodes: start this on each node with --config.train.coordinator_address=HOST0:PORT,
# --config.train.num_processes=NODES and --config.train.process_id=RANK (or under SLURM, where JAX
# detects them), with the workdir on shared storage.
#
# Env: CUDA_VISIBLE_DEVICES selects GPUs; PYTHON (default .venv/bin/python, with jax[cuda12] installed:
# .venv/bin/pip install 'jax[cuda12]>=0.10.2,<0.11').
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
CONFIG=$1 WORKDIR=$2
shift 2
PYTHON=${PYTHON:-.venv/bin/python}
# Let XLA use most of the GPU memory without grabbing it all at start-up.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
exec "$PYTHON" -m urgent_jax.enhance.train --config="$CONFIG" --workdir="$WORKDIR" "$@"
