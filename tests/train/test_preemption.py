"""SIGTERM (a real signal to a subprocess) and SIGINT (to this process; `-m slow`: to a
subprocess) stop training after the current step with that step saved, exit status 0 and a
resume command; the resumed run gives the same losses as an uninterrupted one, bit for bit."""

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tnx.train import metrics, preemption, trainer
from tnx.train.checkpoint import Checkpointer

REPO = Path(__file__).resolve().parents[2]
# constant learning rate after warmup, so runs of different lengths share their first steps
ARGS = ["--config.train.steps=300", "--config.train.ckpt_every=4", "--config.train.keep_last=2",
        "--config.train.eval_every=0", "--config.train.log_every=1",
        "--config.opt.final_lr_ratio=1.0"]


def _rows(path):
  try:
    return [r for r in metrics.read_jsonl(path) if r["kind"] == "train"]
  except (FileNotFoundError, ValueError):  # not written yet, or a line half written
    return []


def _wait_for_rows(path, n, proc=None):
  while len(_rows(path)) < n:
    assert proc is None or proc.poll() is None, "the run ended before the signal"
    time.sleep(0.05)


def _sigterm_run(tmp_path, light, sig=signal.SIGTERM):
  """Starts `python -m tnx.train` in a subprocess, sends `sig` once it is past its first
  checkpoint; returns (command, output, exit status, stop step)."""
  # the subprocess computes like this test process: 8 CPU devices, float64 enabled
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_ENABLE_X64="1",
             XLA_FLAGS=os.environ.get("XLA_FLAGS", ""))
  cmd = [sys.executable, "-m", "tnx.train", "--config=lm:smoke",
         f"--config.workdir={tmp_path / 'run'}", "--config.train.progress=false",
         "--config.train.plot=false", *light, *ARGS]
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  _wait_for_rows(tmp_path / "run" / "metrics.jsonl", 6, proc)   # past the first checkpoint
  proc.send_signal(sig)
  out, _ = proc.communicate(timeout=600)
  line = next((ln for ln in out.splitlines()
               if ln.startswith(f"{preemption.NAMES[sig]}: stopped after step")), "")
  stop = int(line.split("step ")[1].split(";")[0]) if line else -1
  return cmd, out, proc.returncode, stop


def test_sigterm_saves_the_current_step_and_exits_0(tmp_path, smoke, light):
  cmd, out, rc, stop = _sigterm_run(tmp_path, light)
  assert rc == 0, out[-3000:]
  assert 6 <= stop < 300 and f"after step {stop}; checkpoint step {stop} is saved in " \
      f"{tmp_path / 'run' / 'checkpoints'}. Resume with:" in out
  resume_cmd = out.split("Resume with:\n", 1)[1].splitlines()[0].strip()
  assert shlex.split(resume_cmd) == [*cmd, "--resume"]
  ck = Checkpointer(tmp_path / "run" / "checkpoints")
  assert ck.latest_step() == stop and stop not in ck.good   # confirmed by the next step only
  ck.close()
  rows = _rows(tmp_path / "run" / "metrics.jsonl")
  assert [r["step"] for r in rows] == list(range(1, stop + 1))
  # The resumed run continues at stop + 1 and confirms the preemption checkpoint.
  resumed = trainer.train(smoke(tmp_path / "run", *ARGS, f"--config.train.steps={stop + 2}",
                                "--config.train.resume=true",
                                "--config.train.allow_changes=true"))
  assert [s for s, _ in resumed["train_losses"]] == list(range(1, stop + 3))
  assert stop in Checkpointer(tmp_path / "run" / "checkpoints").good


@pytest.mark.slow
def test_sigint_to_a_subprocess_saves_and_exits_0(tmp_path, light):
  """Ctrl-C (a real SIGINT to `python -m tnx.train`): the same clean stop as SIGTERM (slow: a
  second subprocess run; the fast tests send SIGINT in-process)."""
  cmd, out, rc, stop = _sigterm_run(tmp_path, light, signal.SIGINT)
  assert rc == 0 and "Traceback" not in out, out[-3000:]
  assert "SIGINT: stopping after this step and saving a checkpoint" in out
  assert 6 <= stop < 300 and f"SIGINT: stopped after step {stop}; checkpoint step {stop} is " \
      "saved in" in out
  assert shlex.split(out.split("Resume with:\n", 1)[1].splitlines()[0]) == [*cmd, "--resume"]
  ck = Checkpointer(tmp_path / "run" / "checkpoints")
  assert ck.latest_step() == stop
  ck.close()


@pytest.mark.slow
def test_sigterm_then_resume_gives_identical_losses(tmp_path, smoke, light):
  _, out, rc, stop = _sigterm_run(tmp_path, light)
  assert rc == 0, out[-3000:]
  total = f"--config.train.steps={stop + 3}"
  resumed = trainer.train(smoke(tmp_path / "run", *ARGS, total, "--config.train.resume=true",
                                "--config.train.allow_changes=true"))
  ref = trainer.train(smoke(tmp_path / "ref", *ARGS, total))
  assert [s for s, _ in resumed["train_losses"]] == list(range(1, stop + 4))
  assert resumed["train_losses"] == ref["train_losses"]


def test_sigint_stops_cleanly_in_process(tmp_path, smoke):
  cfg = smoke(tmp_path, *ARGS)
  path = tmp_path / "metrics.jsonl"

  def interrupt():
    _wait_for_rows(path, 3)
    os.kill(os.getpid(), signal.SIGINT)

  threading.Thread(target=interrupt, daemon=True).start()
  handler = signal.getsignal(signal.SIGINT)
  with pytest.raises(preemption.Interrupted) as info:
    trainer.train(cfg)
  assert info.value.code == 0 and str(info.value).startswith(
      f"SIGINT: stopped after step {info.value.step}; checkpoint step {info.value.step} is saved")
  assert signal.getsignal(signal.SIGINT) is handler          # handlers restored
  ck = Checkpointer(tmp_path / "checkpoints")
  assert ck.latest_step() == info.value.step
  ck.close()


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step(tmp_path, light):
  """Two jax.distributed processes on this machine (the environment of a one-node, two-task
  SLURM job, as launch/slurm_gpu.sbatch gives it); SIGTERM reaches only process 1. JAX's
  preemption service makes both stop after the same step and save it together."""
  job = str(4000 + os.getpid() % 4000)          # SLURM's job id picks the coordinator port
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
  env.update(JAX_PLATFORMS="cpu", TNX_DISTRIBUTED="1", SLURM_JOB_ID=job,
             SLURM_STEP_NODELIST="localhost", SLURM_NTASKS="2", SLURM_STEP_NUM_NODES="1",
             JAX_LOCAL_DEVICE_IDS="0")
  cmd = [sys.executable, "-m", "tnx.train", "--config=lm:smoke",
         f"--config.workdir={tmp_path / 'run'}", "--config.train.progress=false",
         "--config.train.plot=false", *light, *ARGS, "--config.mesh.data=-1"]
  procs = [subprocess.Popen(cmd, cwd=REPO, env=dict(env, SLURM_PROCID=str(i),
                                                    SLURM_LOCALID=str(i)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  try:
    while len(_rows(tmp_path / "run" / "metrics.jsonl")) < 6:
      if any(p.poll() is not None for p in procs):
        pytest.fail("a process ended before the signal:\n" + "\n".join(
            p.communicate()[0][-3000:] for p in procs if p.poll() is not None))
      time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=600)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
  line = next(ln for ln in outs[0].splitlines() if ln.startswith("SIGTERM: stopped after step"))
  stop = int(line.split("step ")[1].split(";")[0])
  assert "SIGTERM caught" in outs[1]                      # JAX's preemption notifier
  ck = Checkpointer(tmp_path / "run" / "checkpoints")
  assert ck.latest_step() == stop
  ck.close()
  files = sorted(p.name for p in (tmp_path / "run" / "checkpoints" / str(stop) / "data").iterdir())
  assert [f for f in files if f.startswith("process_")] == ["process_0-of-2.json",
                                                           "process_1-of-2.json"]
  assert [r["step"] for r in _rows(tmp_path / "run" / "metrics.jsonl")] == list(range(1, stop + 1))



def test_sigterm_during_a_save_completes_it_and_stops_at_that_step(tmp_path, smoke, monkeypatch):
  """SIGTERM arriving while the asynchronous write of checkpoint 4 is in flight: the write is
  completed (it restores with every checksum intact), step 4 is the stop step and is not saved
  a second time."""
  import jax
  from jax.sharding import SingleDeviceSharding

  from tnx.train import config, optim, steps
  cfg = smoke(tmp_path, *ARGS)
  original, sent = Checkpointer.save, []

  def save_then_signal(self, step, *args, **kwargs):
    original(self, step, *args, **kwargs)          # returns with the write still in flight
    sent.append(step)
    if len(sent) == 1:
      os.kill(os.getpid(), signal.SIGTERM)

  monkeypatch.setattr(Checkpointer, "save", save_then_signal)
  with pytest.raises(preemption.Interrupted) as info:
    trainer.train(cfg)
  assert sent == [4] and info.value.step == 4 and info.value.code == 0
  assert str(info.value).startswith("SIGTERM: stopped after step 4; checkpoint step 4 is saved")
  abstract = jax.eval_shape(steps.init_state_fn(config.validate(cfg),
                                                optim.make_optimizer(cfg.opt, 300), cfg.seed))
  one = SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=one), abstract)
  ck = Checkpointer(tmp_path / "checkpoints")
  state, meta = ck.restore(4, target)              # raises if any array differs from its sum
  assert ck.all_steps() == [4] and meta["step"] == 4 and int(state["step"]) == 4
  ck.close()
