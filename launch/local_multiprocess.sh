#!/usr/bin/env bash
# N processes on one machine (CPU, gloo collectives), each with D fake devices: exercises the multi-host path.
# Usage: launch/local_multiprocess.sh N D CONFIG WORKDIR [--config.key=value ...]
set -euo pipefail
N=${1:?num processes}; D=${2:?devices per process}; CONFIG=${3:?config}; WORKDIR=${4:?workdir}; shift 4
PORT=${PORT:-$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
pids=()
for ((i = 0; i < N; i++)); do
  INTERNVQA_DISTRIBUTED=1 INTERNVQA_COORDINATOR=127.0.0.1:${PORT} INTERNVQA_NUM_PROCESSES=${N} \
  INTERNVQA_PROCESS_ID=${i} JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=${D} \
    python -m internvqa_jax.train --config "${CONFIG}" --workdir "${WORKDIR}" "$@" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
exit $status
