#!/usr/bin/env bash
# Fails (exit 1) on JAX and grain APIs that are deprecated or removed in newer releases, so that
# tnx keeps working when users move past jax 0.10 (0.11+ runs on Python 3.12):
#   jax.experimental.shard_map  -> jax.shard_map        jax.experimental.pjit -> jax.jit
#   jax.core.*                  -> jax.extend / public   device_put_replicated/_sharded -> device_put
#   grain.python                -> import grain          `with mesh:` -> with jax.set_mesh(mesh):
# Usage: .ci/deprecated_jax.sh [PATH ...]   (default: tnx examples benchmarks tests)
set -uo pipefail
cd "$(dirname "$0")/.."
paths=("$@")
[[ ${#paths[@]} -gt 0 ]] || paths=(tnx examples benchmarks tests)
patterns=(
  'jax\.experimental\.shard_map'
  'from jax\.experimental import .*\bshard_map\b'
  'jax\.experimental\.pjit'
  'from jax\.experimental import .*\bpjit\b'
  'jax\.core\.'
  'from jax import .*\bcore\b'
  'device_put_replicated'
  'device_put_sharded'
  'grain\.python'
  'from grain import .*\bpython\b'
  '^\s*with\s+([A-Za-z_][A-Za-z0-9_]*\.)*[A-Za-z_]*mesh\s*(:|,|\s+as\s)'
)
regex=$(IFS='|'; echo "${patterns[*]}")   # grep -P takes a single pattern
hits=$(grep -rnP --include='*.py' -- "$regex" "${paths[@]}")
if [[ $? -gt 1 ]]; then echo "deprecated_jax.sh: grep failed"; exit 2; fi
if [[ -n "$hits" ]]; then
  echo "deprecated JAX/grain APIs found (see .ci/deprecated_jax.sh for the replacements):"
  echo "$hits"
  exit 1
fi
echo "no deprecated JAX/grain APIs in ${paths[*]}"
