"""Training tests: one step per model type, accumulation = large batch, the optimizer's decay
mask, exact resume after SIGKILL, checkpoint errors, the step-time/wall-clock report, and
sharded = single-device training. (Resume safety and the NaN guard: test_resume.py;
preemption: test_preemption.py.)"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx.models import available_families
from tnx.train import config, metrics, optim, steps, trainer
from tnx.train.checkpoint import CheckpointError

REPO = Path(__file__).resolve().parents[2]
MIXERS = ["attention", "swa", "titans_lmm", "titans_mal", "titans_mag", "titans_mac",
          "ttt_linear", "ttt_mlp", "tnt", "atlas"]
MEMORY_OVERRIDES = {
    "titans": ["--config.model.memory.titans.chunk_size=8",
               "--config.model.memory.titans.lr_max=0.05"],
    "ttt": ["--config.model.memory.ttt.chunk_size=8"],
    "tnt": ["--config.model.memory.tnt.global_chunk_size=32",
            "--config.model.memory.tnt.shard_length=16",
            "--config.model.memory.tnt.local_chunk_sizes=(4,)",
            "--config.model.memory.tnt.lr_max=0.05"],
    "atlas": ["--config.model.memory.atlas.chunk_size=8"],
}


def batch_of(cfg, seed=0):
  rng = np.random.default_rng(seed)
  shape = (cfg.data.global_batch, cfg.data.seq_len)
  return {"inputs": jnp.asarray(rng.integers(0, 256, shape), jnp.int32),
          "targets": jnp.asarray(rng.integers(0, 256, shape), jnp.int32),
          "weights": jnp.asarray(rng.random(shape) < 0.8, jnp.float32)}


@pytest.mark.slow
def test_one_step_every_model_type(tmp_path, smoke):
  """One LM whose layers use every available mixer type (one compile instead of ten):
  two optimizer steps give a finite loss near ln 256 and change every layer's parameters.
  (Slow: compiling ten mixers' forward and backward takes minutes on 2 cores.)"""
  fams = available_families()
  mixers = [m for m in MIXERS if not any(m.startswith(f) and f not in fams
                                         for f in MEMORY_OVERRIDES)]
  extra = [o for f in fams if f in MEMORY_OVERRIDES for o in MEMORY_OVERRIDES[f]]
  cfg = smoke(tmp_path, f"--config.model.mixers={','.join(mixers)}",
              f"--config.model.n_layers={len(mixers)}", *extra, light=False)
  lm = config.validate(cfg)
  tx = optim.make_optimizer(cfg.opt, 10)
  graphdef, _, _ = steps.abstract_model(lm, 0)
  state = steps.init_state_fn(lm, tx, 0)()
  before = jax.tree.map(np.asarray, state["params"])
  step = jax.jit(steps.make_train_step(graphdef, tx, optim.schedule(cfg.opt, 10)))
  state, m = step(state, batch_of(cfg))
  state, m = step(state, batch_of(cfg, 1))  # step 0 has lr 0 (warmup)
  assert np.isfinite(m["loss"]) and int(m["finite"]) == 1 and int(state["step"]) == 2
  assert 4.0 < float(m["loss"]) < 8.0  # ~ ln 256 = 5.5 at init
  for i, name in enumerate(mixers):
    diff = jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                        before["blocks"][i]["mixer"], state["params"]["blocks"][i]["mixer"])
    assert max(jax.tree.leaves(diff)) > 0, f"layer {i} ({name}) did not train"


def test_accumulation_equals_large_batch(tmp_path, smoke):
  cfg = smoke(tmp_path)
  lm = config.validate(cfg)
  tx = optim.make_optimizer(cfg.opt, 10)
  graphdef, _, _ = steps.abstract_model(lm, 0)
  sched = optim.schedule(cfg.opt, 10)
  out = []
  for accum in (1, 4):
    state = steps.init_state_fn(lm, tx, 0)()
    state["step"] = jnp.ones((), jnp.int32)  # non-zero learning rate
    new, m = jax.jit(steps.make_train_step(graphdef, tx, sched, accum_steps=accum))(
        state, batch_of(cfg))
    out.append((new["params"], float(m["loss"])))
  assert out[0][1] == pytest.approx(out[1][1], rel=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), out[0][0], out[1][0])


def test_schedule_and_mask():
  cfg = config.load("lm:smoke")
  cfg.opt.warmup_steps, cfg.opt.peak_lr, cfg.opt.final_lr_ratio = 10, 1.0, 0.1
  s = optim.schedule(cfg.opt, 100)
  assert float(s(0)) == 0.0 and float(s(5)) == pytest.approx(0.5)
  assert float(s(10)) == pytest.approx(1.0) and float(s(100)) == pytest.approx(0.1)
  params = {"embed": {"embedding": jnp.full((3, 2), 2.0)}, "w": jnp.full((2, 2), 2.0),
            "scale": jnp.full(2, 2.0)}
  mask = optim.decay_mask(params, exclude=("embedding",))
  assert mask == {"embed": {"embedding": False}, "w": True, "scale": False}
  # With zero gradients only the decoupled weight decay moves parameters, and only `w`:
  # update = -lr * weight_decay * param at lr(10) = 1.
  cfg.opt.weight_decay = 0.1
  tx = optim.make_optimizer(cfg.opt, 100)
  opt_state = tx.init(params)
  zeros = jax.tree.map(jnp.zeros_like, params)
  for _ in range(10):
    _, opt_state = tx.update(zeros, opt_state, params)
  updates, _ = tx.update(zeros, opt_state, params)
  np.testing.assert_allclose(updates["w"], -1.0 * 0.1 * 2.0, rtol=1e-6)
  np.testing.assert_array_equal(updates["scale"], 0.0)
  np.testing.assert_array_equal(updates["embed"]["embedding"], 0.0)
  # Global-norm clipping before Adam: a [2, 2] gradient of 5s (norm 10) clipped to norm 1 is
  # 0.5 each; Adam's first bias-corrected step is g / (|g| + eps) = 0.5 / 1.5 at eps = 1.
  cfg.opt.weight_decay, cfg.opt.warmup_steps, cfg.opt.eps = 0.0, 0, 1.0
  w = {"w": jnp.full((2, 2), 2.0)}
  for clip, expected in ((1.0, -0.5 / 1.5), (0.0, -5.0 / 6.0)):
    cfg.opt.clip = clip
    tx = optim.make_optimizer(cfg.opt, 100)
    updates, _ = tx.update({"w": jnp.full((2, 2), 5.0)}, tx.init(w), w)
    np.testing.assert_allclose(updates["w"], expected, rtol=1e-6)


def _run(workdir, steps_, extra=(), env=None):
  cmd = [sys.executable, "-m", "tnx.train", "--config=lm:smoke", f"--config.workdir={workdir}",
         f"--config.train.steps={steps_}", "--config.train.log_every=1",
         "--config.train.ckpt_every=4", "--config.train.eval_every=0",
         "--config.train.eval_batches=1", "--config.train.plot=false",
         "--config.model.n_layers=1", "--config.data.seq_len=32", *extra]
  return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_and_resume_gives_identical_losses(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  n = 24
  ref = _run(tmp_path / "ref", n, env=env)
  victim = _run(tmp_path / "run", n, env=env)
  ckpts = tmp_path / "run" / "checkpoints"
  deadline = time.time() + 120
  while time.time() < deadline and not (ckpts.exists() and any(
      p.name.isdigit() for p in ckpts.iterdir())):
    time.sleep(0.01)
  os.kill(victim.pid, signal.SIGKILL)
  victim.wait()
  assert not (tmp_path / "run" / "summary.json").exists(), "run ended before the kill"
  resumed = _run(tmp_path / "run", n, ["--resume"], env=env)
  assert resumed.wait() == 0, resumed.stderr.read().decode()[-2000:]
  assert ref.wait() == 0, ref.stderr.read().decode()[-2000:]
  a, b = trainer.final_losses(tmp_path / "ref"), trainer.final_losses(tmp_path / "run")
  assert sorted(a) == list(range(1, n + 1)) and sorted(b) == sorted(a)
  assert [a[s] for s in sorted(a)] == [b[s] for s in sorted(b)]  # exact


def test_missing_and_corrupted_checkpoints_and_rates(tmp_path, smoke, light):
  with pytest.raises(CheckpointError, match="no checkpoint found"):
    trainer.train(smoke(tmp_path / "empty", "--config.train.resume=true"))
  s = trainer.train(smoke(tmp_path / "run", "--config.train.log_every=1"))
  # Training-step rate and step time are reported apart from the wall-clock rate, which also
  # counts the checkpoint saves (steps 4 and 8).
  rows = [r for r in metrics.read_jsonl(tmp_path / "run" / "metrics.jsonl")
          if r["kind"] == "train"]
  tokens_per_step = 8 * 32
  assert [r["step"] for r in rows] == list(range(1, 9)) and "step_time_s" not in rows[0]
  for r in rows[1:]:
    assert r["tokens_per_s"] == pytest.approx(tokens_per_step / r["step_time_s"])
    assert r["steps_per_s"] == pytest.approx(1 / r["step_time_s"])
  assert s["tokens_per_s"] == pytest.approx(tokens_per_step / s["step_time_s"])
  assert s["wall_tokens_per_s"] < s["tokens_per_s"]
  assert s["steady_steps"] == 7 and s["compile_s"] > 0
  # the saves are timed apart from the steps (no evaluation in this light config)
  assert s["eval_s"] == 0 and 0 < s["checkpoint_s"] < s["wall_s"]
  assert ("peak_memory_gb" in s) == (metrics.peak_memory_bytes() is not None)
  # A workdir with checkpoints is never restarted silently; a damaged one fails clearly.
  ckpts = tmp_path / "run" / "checkpoints"
  assert sorted(p.name for p in ckpts.iterdir()) == ["4", "8", "status.json"]
  with pytest.raises(ValueError, match=r"already holds checkpoints 4 \(good\), 8 "
                                       r"\(unconfirmed\); pass --resume"):
    trainer.train(smoke(tmp_path / "run"))
  for f in (ckpts / "8" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")
  before = {p: p.read_bytes() for p in ckpts.rglob("*") if p.is_file()}
  with pytest.raises(CheckpointError, match=r"step 8 .* truncated or corrupted.* Nothing was "
                                            r"modified. The previous good checkpoint is step 4"):
    trainer.train(smoke(tmp_path / "run", "--config.train.resume=true",
                        "--config.train.log_every=1"))
  assert {p: p.read_bytes() for p in ckpts.rglob("*") if p.is_file()} == before
  # The command line prints that one message and nothing else (no TensorStore dump, no
  # "Event loop is closed" from reads still in flight), and exits 1.
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_ENABLE_X64="1",
             XLA_FLAGS=os.environ.get("XLA_FLAGS", ""))
  out = subprocess.run([sys.executable, "-m", "tnx.train", "--config=lm:smoke",
                        f"--config.workdir={tmp_path / 'run'}", "--config.train.progress=false",
                        "--config.train.plot=false", *light, "--config.train.log_every=1",
                        "--resume"], cwd=REPO, env=env, capture_output=True, text=True)
  assert out.returncode == 1
  errors = [ln for ln in out.stderr.splitlines() if ln.strip()]
  assert len(errors) == 1 and errors[0].startswith("error: checkpoint step 8 in ") and \
      "is truncated or corrupted" in errors[0], out.stderr[-3000:]
  assert {p: p.read_bytes() for p in ckpts.rglob("*") if p.is_file()} == before


def test_sharded_training_equals_single_device(tmp_path, smoke):
  if jax.device_count() < 8:
    pytest.skip("needs 8 (fake) devices")
  common = ["--config.train.steps=3", "--config.train.eval_batches=0",
            "--config.train.ckpt_every=0", "--config.model.n_heads=4"]
  single = trainer.train(smoke(tmp_path / "a", *common, "--config.mesh.data=1", light=False))
  sharded = trainer.train(smoke(tmp_path / "b", *common, "--config.mesh.data=2",
                                "--config.mesh.fsdp=2", "--config.mesh.context=2", light=False))
  la = [l for _, l in single["train_losses"]]
  lb = [l for _, l in sharded["train_losses"]]
  np.testing.assert_allclose(la, lb, rtol=2e-5)
  assert la[0] != la[-1]
  p = sharded["state"]["params"]["blocks"][0]["mlp"]["up"]["kernel"]
  assert len(p.sharding.device_set) == 8
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=2e-5),
               single["state"]["params"], sharded["state"]["params"])
