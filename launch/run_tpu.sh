#!/usr/bin/env bash
# Runs `python -m MODULE ARGS...` on one TPU VM worker with jax.distributed turned on. Every
# worker of a pod runs the same command (launch/tpu_pod.sh sends it to all of them).
#
#   bash launch/run_tpu.sh --setup                        # Python >= 3.11, venv, pip install
#   bash launch/run_tpu.sh --detach --name=lm tnx.train --config=lm --config.workdir=gs://B/lm
#   bash launch/run_tpu.sh --stop --name=lm               # SIGTERM: save, exit 0
#   bash launch/run_tpu.sh tnx.train --config=lm:smoke    # in the foreground
#
# --detach starts the program in its own session (setsid + nohup), so it survives the ssh
# session that started it; its output goes to $TNX_LOGS/<name>/worker-<id>.log and its pid to
# worker-<id>.pid. The worker id is $TPU_WORKER_ID, else the TPU metadata's worker number, else
# the host name. Python: the first of python3.12, python3.11, python3 that is >= 3.11; else uv
# installs 3.11 (stock TPU images ship 3.10). The venv ($TNX_VENV, default ~/tnx_venv) is built
# once and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${TNX_VENV:-$HOME/tnx_venv}"
LOGS="${TNX_LOGS:-$HOME/tnx_logs}"
MODE=run NAME=tnx
while [[ $# -gt 0 ]]; do
  case "$1" in
    --setup) MODE=setup; shift ;;
    --detach) MODE=detach; shift ;;
    --stop) MODE=stop; shift ;;
    --name=*) NAME="${1#--name=}"; shift ;;
    *) break ;;
  esac
done

worker_id() {
  if [[ -n "${TPU_WORKER_ID:-}" ]]; then echo "$TPU_WORKER_ID"; return; fi
  curl -sf -m 2 -H 'Metadata-Flavor: Google' \
    http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number \
    2>/dev/null || hostname
}

find_python() {  # prints an interpreter >= 3.11, installing one with uv if none is found
  local py
  for py in python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'
    then command -v "$py"; return; fi
  done
  if ! command -v uv >/dev/null; then
    curl -LsSf https://astral.sh/uv/install.sh | sh >&2
    export PATH="$HOME/.local/bin:$PATH"
  fi
  uv python install 3.11 >&2
  uv python find 3.11
}

setup() {
  if [[ ! -x "$VENV/bin/python" ]]; then
    "$(find_python)" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -e ".[tpu]" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
  fi
  "$VENV/bin/python" -c 'import sys, tnx; print("worker ready:", sys.version.split()[0], tnx.__file__)'
}

ID="$(worker_id)"
LOG="$LOGS/$NAME/worker-$ID.log" PIDFILE="$LOGS/$NAME/worker-$ID.pid"
export TNX_DISTRIBUTED=1   # tnx.sharding.maybe_initialize_distributed() -> jax.distributed.initialize()
case "$MODE" in
  setup) setup ;;
  stop)
    if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      kill -TERM "$(cat "$PIDFILE")" && echo "worker $ID: sent SIGTERM to $(cat "$PIDFILE")"
    else echo "worker $ID: no running $NAME"; fi ;;
  detach)
    [[ $# -ge 1 ]] || { echo "usage: run_tpu.sh --detach [--name=RUN] MODULE ARGS..." >&2; exit 2; }
    setup >/dev/null
    mkdir -p "$LOGS/$NAME"
    trap '' HUP   # inherited: a hang-up right now cannot reach the child before setsid runs
    setsid nohup "$VENV/bin/python" -m "$@" >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    echo "worker $ID: started pid $! ($*); log $LOG" ;;
  run)
    [[ $# -ge 1 ]] || { echo "usage: run_tpu.sh MODULE ARGS..." >&2; exit 2; }
    setup >/dev/null
    exec "$VENV/bin/python" -m "$@" ;;
esac
