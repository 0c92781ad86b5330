#!/usr/bin/env bash
# TPU pod helper: create the pod, copy this checkout to every worker, run a module on all
# workers at once, or delete the pod.
#
#   export TPU=tnx-pod ZONE=us-central2-b ACCEL=v4-32
#   bash launch/tpu_pod.sh create
#   bash launch/tpu_pod.sh copy
#   bash launch/tpu_pod.sh run tnx.train --config=lm --config.data.global_batch=256 \
#       --config.mesh.context=2 --config.workdir=gs://BUCKET/runs/lm
#   bash launch/tpu_pod.sh run examples.tnt_lm --config.workdir=gs://BUCKET/runs/tnt_lm
#   bash launch/tpu_pod.sh delete
#
# Every worker runs the same program; jax.distributed.initialize() finds the pod's topology
# itself. Checkpoints are collective: keep the workdir on storage all workers can reach (GCS).
# After a preemption, `run ... --resume` continues from the last checkpoint exactly.
set -euo pipefail
: "${TPU:?set TPU (the pod name)}" "${ZONE:?set ZONE}"
ACCEL="${ACCEL:-v4-32}"
VERSION="${VERSION:-tpu-ubuntu2204-base}"
REPO_DIR="$(cd "$(dirname "$0")/.." && pwd)"
cmd="${1:?usage: tpu_pod.sh create|copy|run MODULE ARGS...|delete}"; shift || true
case "$cmd" in
  create)
    gcloud compute tpus tpu-vm create "$TPU" --zone="$ZONE" --accelerator-type="$ACCEL" \
      --version="$VERSION" ;;
  copy)
    gcloud compute tpus tpu-vm scp --recurse "$REPO_DIR" "$TPU":~/tnx --zone="$ZONE" \
      --worker=all ;;
  run)
    args=$(printf '%q ' "$@")
    gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all \
      --command="bash ~/tnx/launch/run_tpu.sh $args" ;;
  delete)
    gcloud compute tpus tpu-vm delete "$TPU" --zone="$ZONE" --quiet ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
