#!/usr/bin/env bash
# Train on every worker of a Cloud TPU pod slice with one command.
#
#   experiments/launch/tpu_pod.sh TPU_NAME ZONE configs/se/bsrnn.py:baseline gs://bucket/exp/bsrnn \
#       --config.data.train_dir=/mnt/data/train_simulation --config.eval.set_dir=/mnt/data/validation
#
# Runs the same command on all workers (`gcloud ... ssh --worker=all`). JAX finds the other workers by
# itself on TPU pods (jax.distributed.initialize() with no arguments, see urgent_jax.train.loop), each
# process reads its shard of every global batch, and orbax writes one checkpoint from all of them, so
# the workdir and the data must be on storage every worker sees (a GCS bucket, Filestore, ...). Re-run
# the same command after a pre-emption: training resumes from the newest checkpoint in the workdir.
#
# Env: REPO_DIR (checkout on the workers, default ~/urgent_jax), PYTHON (default $REPO_DIR/.venv/bin/python),
# SETUP=1 first creates the venv on every worker with jax[tpu] and the package.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
TPU_NAME=$1 ZONE=$2 CONFIG=$3 WORKDIR=$4
shift 4
REPO_DIR=${REPO_DIR:-'~/urgent_jax'}
PYTHON=${PYTHON:-"$REPO_DIR/.venv/bin/python"}
OVERRIDES=$(printf ' %q' "$@")

ssh_all() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "$1"
}

if [[ "${SETUP:-0}" == "1" ]]; then
  ssh_all "cd $REPO_DIR && python3 -m venv .venv && .venv/bin/pip install -q -U pip \
    && .venv/bin/pip install -q 'jax[tpu]>=0.10.2,<0.11' && .venv/bin/pip install -q -e '.[metrics]'"
fi

# One process per worker; stdout of worker 0 carries the progress bar, every worker logs to its own file.
ssh_all "cd $REPO_DIR && $PYTHON -m urgent_jax.enhance.train --config=$CONFIG --workdir=$WORKDIR $OVERRIDES \
  2>&1 | tee -a /tmp/urgent_jax_train.\$(hostname).log"
