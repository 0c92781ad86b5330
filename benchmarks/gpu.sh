#!/usr/bin/env bash
# Times the memory-layer benchmarks on a CUDA machine in one short run (under 8 minutes) and
# writes their tables to one folder:
#
#   bash benchmarks/gpu.sh [OUT_DIR]          # default OUT_DIR: $OUT, else runs/benchmarks/gpu
#
# Needs a Python where `import tnx` works and jax sees the GPU (pip install -e ".[gpu]").
# Optional: TTT_LM_JAX=<checkout of ttt-lm-jax> adds the official TTT layers to the peers table;
# PEER_VENV=<virtualenv with torch + titans-pytorch> adds titans-pytorch (on the GPU only if
# that torch is a CUDA build; the table prints what ran). Each benchmark has its own time limit,
# so one slow step cannot take the whole budget; a step that runs out leaves its partial log.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-runs/benchmarks/gpu}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
python - <<'PY' 2>&1 | tee "$out/env.txt"
import jax, sys
print("python", sys.version.split()[0], "jax", jax.__version__, "backend", jax.default_backend(),
      "devices", jax.devices())
PY
run() {  # run NAME SECONDS CMD...
  local name=$1 limit=$2; shift 2
  echo "+ $*" | tee "$out/$name.log"
  timeout "$limit" "$@" 2>&1 | tee -a "$out/$name.log"
  echo "exit ${PIPESTATUS[0]}" | tee -a "$out/$name.log"
}
run memory 170 python -m benchmarks.memory --lengths 1024,4096 --chunks 8,16,64,256 \
  --steps 5 --max_seconds 10 --out "$out/memory.json"
run tnt 150 python -m benchmarks.tnt --lengths 1024 4096 8192 16384 --plot "$out/tnt_step_time.png"
peer_args=()
[ -n "${TTT_LM_JAX:-}" ] && peer_args+=(--ttt_lm_jax "$TTT_LM_JAX")
[ -n "${PEER_VENV:-}" ] && peer_args+=(--peer_venv "$PEER_VENV")
run peers 130 python -m benchmarks.peers --steps 5 --repeats 2 --out "$out/peers.json" \
  "${peer_args[@]}"
echo "tables and logs in $out"
