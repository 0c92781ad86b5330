"""A small LM with each memory mixer, trained by tnx.train's own loop at ten times the default
peak learning rate, either stays finite or stops through the NaN guard with its message; no
checkpoint it saved holds a non-finite parameter."""

import re

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tnx.configs import lm as lm_config
from tnx.train import resume, trainer
from tnx.train.checkpoint import Checkpointer

LR_FACTOR = 10.0
MEMORY_MIXERS = ["titans_lmm", "titans_mac", "titans_mag", "titans_mal", "ttt_linear",
                 "ttt_mlp", "tnt", "atlas", "atlas_mag", "atlas_mal"]
# Chunk sizes below the 32-token windows (defaults are up to 2048), so the inner loop spans
# several chunks; every numerical setting (lr_max, gate biases, memory) stays the default.
CHUNKS = ["--config.model.memory.titans.chunk_size=8", "--config.model.memory.ttt.chunk_size=8",
          "--config.model.memory.atlas.chunk_size=8",
          "--config.model.memory.tnt.global_chunk_size=16",
          "--config.model.memory.tnt.shard_length=16",
          "--config.model.memory.tnt.local_chunk_sizes=(4,)"]
GUARD_MESSAGE = re.compile(r"^non-finite loss \(\S+\) or gradient norm \(\S+\) at step (\d+); "
                           r"the update was skipped and nothing was saved\.")


def _all_finite(tree) -> bool:
  return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(tree)
             if np.issubdtype(np.asarray(x).dtype, np.inexact))


def _saved_params(workdir):
  """{step: params} of every checkpoint left in workdir, read back from disk."""
  ck = Checkpointer(workdir / "checkpoints")
  steps = ck.all_steps()
  ck.close()
  reader = ocp.PyTreeCheckpointer()
  return {s: reader.restore(workdir / "checkpoints" / str(s) / "state")["params"] for s in steps}


def _train_at_ten_times_the_lr(smoke, workdir, mixer, steps, ckpt_every):
  """Trains and returns (last finite step, stop message or None); asserts what the NaN guard
  promises and that every saved checkpoint is finite."""
  peak = LR_FACTOR * lm_config.get_config().opt.peak_lr
  cfg = smoke(workdir, f"--config.model.mixers={mixer}", f"--config.opt.peak_lr={peak}",
              f"--config.train.steps={steps}", f"--config.train.ckpt_every={ckpt_every}",
              f"--config.train.keep_last={steps}", "--config.train.eval_every=0",
              "--config.train.log_every=1", *CHUNKS)
  assert cfg.opt.peak_lr == peak
  try:
    summary = trainer.train(cfg)
  except resume.NonFiniteError as err:
    stopped = GUARD_MESSAGE.match(str(err))
    assert stopped, str(err)
    step = int(stopped.group(1))
    assert step == err.step and 1 <= step <= steps
    last, message = step - 1, str(err)
  else:
    losses = dict(summary["train_losses"])
    assert sorted(losses) == list(range(1, steps + 1))
    assert all(np.isfinite(v) for v in losses.values())
    assert _all_finite(summary["state"]["params"])
    last, message = steps, None
  saved = _saved_params(workdir)
  assert saved, "no checkpoint was saved"
  assert max(saved) <= last  # nothing after the first non-finite step
  for step, params in saved.items():
    assert _all_finite(params), f"checkpoint {step} holds non-finite parameters"
  return last, message


def test_ttt_lm_at_ten_times_the_lr_is_finite_or_stopped_by_the_guard(tmp_path, smoke):
  """TTT-Linear (the fastest memory mixer to compile), 20 steps, a checkpoint every 10 (the
  assertions are in `_train_at_ten_times_the_lr`)."""
  _train_at_ten_times_the_lr(smoke, tmp_path, "ttt_linear", 20, 10)


@pytest.mark.slow
@pytest.mark.parametrize("mixer", MEMORY_MIXERS)
def test_every_memory_lm_at_ten_times_the_lr_200_steps(tmp_path, smoke, mixer):
  """200 steps, a checkpoint every 50. (Slow: one compilation and 200 steps per mixer.)"""
  last, message = _train_at_ten_times_the_lr(smoke, tmp_path, mixer, 200, 50)
  print(f"{mixer}: {'finite for all 200 steps' if message is None else message}")
