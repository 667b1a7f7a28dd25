#!/usr/bin/env bash
# Train on a TPU VM pod slice: runs the same command on every worker.
# Usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]
# The repository must be present at the same path on every worker (e.g. git clone in a startup script).
set -euo pipefail
TPU_NAME=${1:?TPU name}; ZONE=${2:?zone}; CONFIG=${3:?config file}; WORKDIR=${4:?workdir}; shift 4
REPO_DIR=${REPO_DIR:-~/internvqa_jax}
CMD="cd ${REPO_DIR} && python3 -m venv .venv && . .venv/bin/activate && \
pip install -q -U 'jax[tpu]' && pip install -q -e . && \
INTERNVQA_DISTRIBUTED=1 python -m internvqa_jax.train --config ${CONFIG} --workdir ${WORKDIR} $*"
gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone "${ZONE}" --worker=all --command "${CMD}"
