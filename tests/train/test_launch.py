"""Launch scripts: the SLURM script's environment against jax.distributed's own SLURM
detection (one process per GPU, every GPU of every node used once), the TPU pod helper's
--dry-run commands, and run_tpu.sh's detached start surviving the end of its session."""

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
from jax._src import clusters

REPO = Path(__file__).resolve().parents[2]
SBATCH = REPO / "launch" / "slurm_gpu.sbatch"


def sbatch_options(text):
  return dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, re.M))


def detect(env):
  """jax.distributed's parameters under `env` (as jax.distributed.initialize() derives them)."""
  with mock.patch.dict(os.environ, env, clear=True):
    return clusters.ClusterEnv.auto_detect_unset_distributed_params(
        None, None, None, None, None, None)


def task_envs(nodes, tasks_per_node, script_env):
  """The environment SLURM gives each task of `srun` (block distribution)."""
  for node in range(nodes):
    for local in range(tasks_per_node):
      yield node, dict(script_env, SLURM_JOB_ID="4242", SLURM_STEP_NODELIST=f"gpu[01-0{nodes}]",
                       SLURM_NTASKS=str(nodes * tasks_per_node), SLURM_STEP_NUM_NODES=str(nodes),
                       SLURM_PROCID=str(node * tasks_per_node + local), SLURM_LOCALID=str(local),
                       SLURM_NODEID=str(node))


def test_slurm_script_runs_one_process_per_gpu(tmp_path):
  opts = sbatch_options(SBATCH.read_text())
  nodes, gpus, tasks = int(opts["nodes"]), int(opts["gpus-per-node"]), int(opts["ntasks-per-node"])
  assert tasks == gpus == 8 and "gpus-per-task" not in opts and "gpu-bind" not in opts
  assert opts["signal"] == "TERM@120"
  # Run the script with a fake srun that records what it would launch.
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "srun").write_text('#!/usr/bin/env bash\nenv > "$RECORD.env"\n'
                                'printf "%s\\n" "$@" > "$RECORD.args"\n')
  (bin_dir / "srun").chmod(0o755)
  env = dict(PATH=f"{bin_dir}:/usr/bin:/bin", HOME=str(tmp_path), RECORD=str(tmp_path / "srun"),
             SLURM_SUBMIT_DIR=str(REPO), TNX_VENV="/venv")
  subprocess.run(["bash", str(SBATCH), "tnx.train", "--config=lm"], env=env, check=True)
  args = (tmp_path / "srun.args").read_text().split()
  assert args == ["--kill-on-bad-exit=1", "/venv/bin/python", "-m", "tnx.train", "--config=lm"]
  script_env = dict(line.split("=", 1) for line in
                    (tmp_path / "srun.env").read_text().splitlines() if "=" in line)
  assert script_env["TNX_DISTRIBUTED"] == "1"
  seen = {}
  for node, task_env in task_envs(nodes, tasks, script_env):
    coordinator, n, pid, local = detect(task_env)
    assert coordinator == f"gpu01:{4242 % 4096 + 61440}" and n == nodes * gpus
    seen[pid] = (node, tuple(local))
  assert sorted(seen) == list(range(nodes * gpus))                     # distinct process ids
  for node in range(nodes):                                            # each GPU exactly once
    assert sorted(d for nd, (d,) in seen.values() if nd == node) == list(range(gpus))
  # The layout this replaces (one task per node) gets local device [0] only: 1 GPU of 8.
  _, _, _, local = detect(next(task_envs(nodes, 1, script_env))[1])
  assert list(local) == [0]


def pod(*args, **env):
  """The commands `tpu_pod.sh --dry-run ARGS` prints, each split back into its argv."""
  out = subprocess.run(["bash", str(REPO / "launch" / "tpu_pod.sh"), "--dry-run", *args],
                       env=dict(os.environ, TPU="pod", ZONE="us-central2-b", **env),
                       capture_output=True, text=True, check=True)
  return [shlex.split(line) for line in out.stdout.strip().splitlines()
          if not line.startswith("# local: ")]


def remote(cmd):
  """The shell command a `gcloud ... ssh --command=...` runs on the workers."""
  (command,) = [a.split("=", 1)[1] for a in cmd if a.startswith("--command=")]
  return command


SSH_ALL = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod", "--zone=us-central2-b",
           "--worker=all"]


def test_tpu_pod_dry_run_prints_every_gcloud_command():
  assert pod("create") == [["gcloud", "compute", "tpus", "tpu-vm", "create", "pod",
                            "--zone=us-central2-b", "--accelerator-type=v4-32",
                            "--version=tpu-ubuntu2204-base"]]
  scp, unpack = pod("copy")
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and scp[6:] == [
      "pod:tnx.tar.gz", "--zone=us-central2-b", "--worker=all"]
  assert "--recurse" not in scp                       # a tarball, never a directory copy
  assert unpack[:8] == SSH_ALL and remote(unpack).split(" && ") == [
      "rm -rf ~/tnx.new", "mkdir ~/tnx.new", "tar -xzf ~/tnx.tar.gz -C ~/tnx.new",
      "rm -rf ~/tnx", "mv ~/tnx.new ~/tnx", "rm ~/tnx.tar.gz"]   # replaced, never nested
  (setup,) = pod("setup")
  assert setup[:8] == SSH_ALL and remote(setup) == "bash ~/tnx/launch/run_tpu.sh --setup"
  (run,) = pod("run", "tnx.train", "--config=lm", "--config.workdir=gs://b/r", RUN="lm")
  assert run[:8] == SSH_ALL and shlex.split(remote(run)) == [
      "bash", "~/tnx/launch/run_tpu.sh", "--detach", "--name=lm", "tnx.train", "--config=lm",
      "--config.workdir=gs://b/r"]
  (logs,) = pod("logs", "3", RUN="lm")
  assert "--worker=3" in logs and remote(logs) == "tail -n 100 -F ~/tnx_logs/lm/worker-*.log"
  (stop,) = pod("stop", RUN="lm")
  assert stop[:8] == SSH_ALL and remote(stop) == "bash ~/tnx/launch/run_tpu.sh --stop --name=lm"
  (delete,) = pod("delete")
  assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "pod",
                    "--zone=us-central2-b", "--quiet"]
  for script in ("tpu_pod.sh", "run_tpu.sh", "slurm_gpu.sbatch"):
    subprocess.run(["bash", "-n", str(REPO / "launch" / script)], check=True)


def test_run_tpu_detached_run_survives_its_session_and_stops_on_sigterm(tmp_path):
  """`run_tpu.sh --detach` returns at once; the program keeps running after the session that
  started it is hung up (what ending the ssh session does), logs per worker, and `--stop`
  delivers SIGTERM."""
  venv = tmp_path / "venv" / "bin"
  venv.mkdir(parents=True)
  (venv / "python").write_text(f'#!/usr/bin/env bash\nexport PYTHONPATH="{tmp_path}"\n'
                               f'exec "{sys.executable}" "$@"\n')
  (venv / "python").chmod(0o755)
  (tmp_path / "ticker.py").write_text(
      "import signal, sys, time\n"
      "signal.signal(signal.SIGTERM, lambda *a: (print('got SIGTERM', flush=True), sys.exit(0)))\n"
      "for i in range(600):\n  print('tick', i, flush=True)\n  time.sleep(0.1)\n")
  env = dict(os.environ, TNX_VENV=str(tmp_path / "venv"), TNX_LOGS=str(tmp_path / "logs"),
             TPU_WORKER_ID="3")
  script = REPO / "launch" / "run_tpu.sh"
  session = subprocess.Popen(["bash", str(script), "--detach", "--name=t", "ticker"], env=env,
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
  out, _ = session.communicate(timeout=120)
  assert "worker 3: started pid" in out
  log, pidfile = tmp_path / "logs" / "t" / "worker-3.log", tmp_path / "logs" / "t" / "worker-3.pid"
  pid = int(pidfile.read_text())
  try:
    os.killpg(session.pid, signal.SIGHUP)             # the session ends
  except ProcessLookupError:
    pass                                              # nothing of it is left: the same
  while "tick 5" not in (log.read_text() if log.exists() else ""):
    assert _running(pid), f"the detached program died: {log.read_text()!r}"
    time.sleep(0.05)
  assert _running(pid)                                # still alive after the hang-up
  assert os.getsid(pid) != session.pid
  stop = subprocess.run(["bash", str(script), "--stop", "--name=t"], env=env,
                        capture_output=True, text=True, check=True)
  assert f"worker 3: sent SIGTERM to {pid}" in stop.stdout
  while _running(pid):                                # gone, or a zombie nobody reaps
    time.sleep(0.05)
  assert log.read_text().rstrip().endswith("got SIGTERM")


def _running(pid):
  try:
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
  except FileNotFoundError:
    return False
  return state != "Z"


def _fake_tools(tmp_path, system_python):
  """A PATH with `dirname` and fake interpreters: `python3` reports `system_python` (a stock
  TPU image's 3.10, or 3.12), `uv` installs a fake 3.11 whose `-m venv` builds a venv with a
  recording pip. Every call is appended to calls.log."""
  bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
  bin_dir.mkdir()
  for tool in ("dirname", "basename"):
    os.symlink(shutil.which(tool), bin_dir / tool)

  bash, mkdir, chmod = (shutil.which(t) for t in ("bash", "mkdir", "chmod"))

  def script(path, body):
    path.write_text(f'#!{bash}\necho "$(basename "$0") $*" >> {log}\n{body}\n')
    path.chmod(0o755)

  venv_maker = (f'if [[ "$1 $2" == "-m venv" ]]; then {mkdir} -p "$3/bin"\n'
                f'  echo "#!{bash}" > "$3/bin/python"\n'
                f'  echo "echo worker ready: $VERSION" >> "$3/bin/python"\n'
                f'  echo "#!{bash}" > "$3/bin/pip"\n'
                f'  echo \'echo "pip $*" >> {log}\' >> "$3/bin/pip"\n'
                f'  {chmod} +x "$3/bin/python" "$3/bin/pip"\nfi')
  major, minor = system_python
  script(bin_dir / "python3", f'VERSION={major}.{minor}\n'
                              f'[[ "$1" == "-c" ]] && exit {int((major, minor) < (3, 11))}\n'
                              f'{venv_maker}')
  uv_python = tmp_path / "uv_python" / "python3.11"
  uv_python.parent.mkdir()
  script(uv_python, f"VERSION=3.11\n{venv_maker}")
  script(bin_dir / "uv", f'[[ "$2" == "find" ]] && echo {uv_python}; true')
  return bin_dir, log


@pytest.mark.parametrize("system_python,interpreter", [((3, 10), "uv_python/python3.11"),
                                                       ((3, 12), "bin/python3")])
def test_run_tpu_setup_gets_python_3_11_or_newer(tmp_path, system_python, interpreter):
  """`run_tpu.sh --setup` builds the venv with an interpreter >= 3.11: on a stock TPU image
  (python3 = 3.10) it installs 3.11 with uv; a new enough python3 is used as it is."""
  bin_dir, log = _fake_tools(tmp_path, system_python)
  env = dict(PATH=str(bin_dir), HOME=str(tmp_path), TPU_WORKER_ID="0",
             TNX_VENV=str(tmp_path / "venv"))
  out = subprocess.run([shutil.which("bash"), str(REPO / "launch" / "run_tpu.sh"), "--setup"],
                       env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  calls = log.read_text().splitlines()
  venv_call = f"{Path(interpreter).name} -m venv {tmp_path / 'venv'}"
  assert venv_call in calls and (tmp_path / "venv" / "bin" / "python").exists()
  if system_python < (3, 11):
    assert "uv python install 3.11" in calls and "uv python find 3.11" in calls
  else:
    assert not any(c.startswith("uv ") for c in calls)
  assert any(c.startswith("pip install -q -e .[tpu]") for c in calls)
  assert out.stdout.startswith("worker ready: " + ("3.11" if system_python < (3, 11) else "3.12"))


def test_tpu_pod_copy_replaces_the_checkout_and_never_nests(tmp_path):
  """The unpack command `tpu_pod.sh copy` sends to the workers, run twice in a fake home: the
  second copy replaces the first (a file deleted locally disappears), nothing nests."""
  _, unpack = pod("copy")
  home = tmp_path / "home"
  home.mkdir()
  for version, files in ((1, ("a.py", "old.py")), (2, ("a.py",))):
    tree = tmp_path / f"tree{version}"
    (tree / "launch").mkdir(parents=True)
    for f in files:
      (tree / f).write_text(f"v{version}")
    subprocess.run(["tar", "-czf", str(home / "tnx.tar.gz"), "-C", str(tree), "."], check=True)
    subprocess.run(["bash", "-c", remote(unpack)], env=dict(os.environ, HOME=str(home)),
                   check=True)
  checkout = home / "tnx"
  assert sorted(p.name for p in checkout.iterdir()) == ["a.py", "launch"]
  assert (checkout / "a.py").read_text() == "v2" and sorted(os.listdir(home)) == ["tnx"]
