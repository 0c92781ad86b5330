#!/usr/bin/env bash
# Runs `python -m <module> <args...>` on one TPU VM worker with jax.distributed turned on.
# Every worker of a pod runs this same command (see launch/tpu_pod.sh). The virtual
# environment is built once per worker under ~/tnx_venv and reused afterwards.
#
#   bash launch/run_tpu.sh tnx.train --config=lm --config.workdir=gs://BUCKET/runs/lm --resume
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${TNX_VENV:-$HOME/tnx_venv}"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e ".[tpu]" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
fi
export TNX_DISTRIBUTED=1          # tnx.sharding.maybe_initialize_distributed() -> jax.distributed.initialize()
exec "$VENV/bin/python" -m "$@"
