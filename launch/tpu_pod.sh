#!/usr/bin/env bash
# TPU pod helper: create the pod, copy this checkout to every worker, install Python 3.11+ and
# tnx, start a module on all workers at once (it keeps running after ssh ends), follow its
# logs, stop it cleanly, delete the pod.
#
#   export TPU=tnx-pod ZONE=us-central2-b ACCEL=v4-32
#   bash launch/tpu_pod.sh create
#   bash launch/tpu_pod.sh copy                 # replaces ~/tnx on every worker (no nesting)
#   bash launch/tpu_pod.sh setup                # Python 3.11 (uv) + venv + pip install .[tpu]
#   RUN=lm bash launch/tpu_pod.sh run tnx.train --config=lm --config.data.global_batch=256 \
#       --config.workdir=gs://BUCKET/runs/lm
#   RUN=lm bash launch/tpu_pod.sh logs 0        # follow worker 0's log (Ctrl-C stops following)
#   RUN=lm bash launch/tpu_pod.sh stop          # SIGTERM: save the current step, exit 0
#   RUN=lm bash launch/tpu_pod.sh run tnx.train ... --resume   # continue exactly
#   bash launch/tpu_pod.sh delete
#   bash launch/tpu_pod.sh --dry-run run tnx.train --config=lm   # print the gcloud commands only
#
# Every worker runs the same program; jax.distributed.initialize() finds the pod's topology
# itself. The stock tpu-ubuntu2204-base image has Python 3.10, below tnx's 3.11: `setup`
# installs a 3.11 interpreter with uv (launch/run_tpu.sh). `run` starts the program detached
# (setsid + nohup) with one log per worker, ~/tnx_logs/$RUN/worker-<id>.log. Checkpoints are
# collective: keep the workdir on storage all workers reach (gs://; needs the [tpu] extra).
set -euo pipefail
DRY_RUN="${DRY_RUN:-0}"
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
: "${TPU:?set TPU (the pod name)}" "${ZONE:?set ZONE}"
ACCEL="${ACCEL:-v4-32}"
VERSION="${VERSION:-tpu-ubuntu2204-base}"
RUN="${RUN:-tnx}"
REMOTE_DIR="${REMOTE_DIR:-tnx}"     # checkout location under each worker's home
REPO_DIR="$(cd "$(dirname "$0")/.." && pwd)"
cmd="${1:?usage: tpu_pod.sh [--dry-run] create|copy|setup|run MODULE ARGS...|logs [WORKER]|stop|delete}"
shift

do_cmd() {  # runs "$@", or prints it shell-quoted (copy-pasteable) with --dry-run
  if [[ "$DRY_RUN" == 1 ]]; then printf '%q' "$1"; shift; printf ' %q' "$@"; echo
  else "$@"; fi
}

on_workers() {  # on_workers WORKER COMMAND: runs COMMAND through ssh on WORKER (or all)
  do_cmd gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker="$1" --command="$2"
}

case "$cmd" in
  create)
    do_cmd gcloud compute tpus tpu-vm create "$TPU" --zone="$ZONE" --accelerator-type="$ACCEL" \
      --version="$VERSION" ;;
  copy)
    # A tarball of the working tree (tracked + untracked, not ignored), unpacked into a fresh
    # directory that then replaces ~/$REMOTE_DIR: a second copy never nests inside the first.
    tarball="${TMPDIR:-/tmp}/tnx-$TPU.tar.gz"
    if [[ "$DRY_RUN" == 1 ]]; then
      echo "# local: git ls-files -z --cached --others --exclude-standard | tar --null -czf $tarball -T -"
    else
      (cd "$REPO_DIR" && git ls-files -z --cached --others --exclude-standard \
        | tar --null -czf "$tarball" -T -)
    fi
    do_cmd gcloud compute tpus tpu-vm scp "$tarball" "$TPU:tnx.tar.gz" --zone="$ZONE" --worker=all
    on_workers all "rm -rf ~/$REMOTE_DIR.new && mkdir ~/$REMOTE_DIR.new && \
tar -xzf ~/tnx.tar.gz -C ~/$REMOTE_DIR.new && rm -rf ~/$REMOTE_DIR && \
mv ~/$REMOTE_DIR.new ~/$REMOTE_DIR && rm ~/tnx.tar.gz" ;;
  setup)
    on_workers all "bash ~/$REMOTE_DIR/launch/run_tpu.sh --setup" ;;
  run)
    [[ $# -ge 1 ]] || { echo "usage: tpu_pod.sh run MODULE ARGS..." >&2; exit 2; }
    args=$(printf ' %q' "$@")
    on_workers all "bash ~/$REMOTE_DIR/launch/run_tpu.sh --detach --name=$RUN$args" ;;
  logs)
    on_workers "${1:-0}" "tail -n 100 -F ~/tnx_logs/$RUN/worker-*.log" ;;
  stop)
    on_workers all "bash ~/$REMOTE_DIR/launch/run_tpu.sh --stop --name=$RUN" ;;
  delete)
    do_cmd gcloud compute tpus tpu-vm delete "$TPU" --zone="$ZONE" --quiet ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
