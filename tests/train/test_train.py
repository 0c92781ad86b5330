"""Training tests: one step per model type, accumulation = large batch, exact resume after
SIGKILL, checkpoint errors, the NaN guard, and sharded = single-device training."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tnx.models import available_families
from tnx.train import config, optim, steps, trainer
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


def smoke(tmp_path, *extra):
  cfg, _ = config.parse_args(["--config=lm:smoke", f"--config.workdir={tmp_path}",
                              "--config.train.progress=false", "--config.train.plot=false",
                              *extra])
  return cfg


def batch_of(cfg, seed=0):
  rng = np.random.default_rng(seed)
  shape = (cfg.data.global_batch, cfg.data.seq_len)
  return {"inputs": jnp.asarray(rng.integers(0, 256, shape), jnp.int32),
          "targets": jnp.asarray(rng.integers(0, 256, shape), jnp.int32),
          "weights": jnp.asarray(rng.random(shape) < 0.8, jnp.float32)}


def test_one_step_every_model_type(tmp_path):
  """One LM whose layers use every available mixer type (one compile instead of ten):
  two optimizer steps give a finite loss near ln 256 and change every layer's parameters."""
  fams = available_families()
  mixers = [m for m in MIXERS if not any(m.startswith(f) and f not in fams
                                         for f in MEMORY_OVERRIDES)]
  extra = [o for f in fams if f in MEMORY_OVERRIDES for o in MEMORY_OVERRIDES[f]]
  cfg = smoke(tmp_path, f"--config.model.mixers={','.join(mixers)}",
              f"--config.model.n_layers={len(mixers)}", *extra)
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


def test_accumulation_equals_large_batch(tmp_path):
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
  mask = optim.decay_mask({"embed": {"embedding": jnp.ones((3, 2))},
                           "w": jnp.ones((2, 2)), "scale": jnp.ones(2)}, exclude=("embedding",))
  assert mask == {"embed": {"embedding": False}, "w": True, "scale": False}
  tx = optax.chain(optim.make_optimizer(cfg.opt, 100))
  assert tx is not None


def _run(workdir, steps_, extra=(), env=None):
  cmd = [sys.executable, "-m", "tnx.train", "--config=lm:smoke", f"--config.workdir={workdir}",
         f"--config.train.steps={steps_}", "--config.train.log_every=1",
         "--config.train.ckpt_every=5", "--config.train.eval_every=0",
         "--config.train.eval_batches=1", "--config.train.plot=false",
         "--config.data.global_batch=16", "--config.data.seq_len=128", *extra]
  return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)


def test_sigkill_and_resume_gives_identical_losses(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  n = 40
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


def _digest(path):
  h = hashlib.sha256()
  for p in sorted(Path(path).rglob("*")):
    if p.is_file():
      h.update(p.name.encode() + p.read_bytes())
  return h.hexdigest()


def test_missing_and_corrupted_checkpoints(tmp_path):
  with pytest.raises(CheckpointError, match="no checkpoint found"):
    trainer.train(smoke(tmp_path / "empty", "--config.train.resume=true"))
  trainer.train(smoke(tmp_path / "run"))
  ckpts = tmp_path / "run" / "checkpoints"
  assert sorted(p.name for p in ckpts.iterdir()) == ["4", "8"]
  with pytest.raises(ValueError, match="already holds checkpoints"):
    trainer.train(smoke(tmp_path / "run"))
  for f in (ckpts / "8" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")
  good, bad = _digest(ckpts / "4"), _digest(ckpts / "8")
  with pytest.raises(CheckpointError, match="step 8 .* corrupted"):
    trainer.train(smoke(tmp_path / "run", "--config.train.resume=true",
                        "--config.train.steps=12"))
  assert _digest(ckpts / "4") == good and _digest(ckpts / "8") == bad


def test_nan_loss_stops_with_last_good_checkpoint(tmp_path):
  cfg = smoke(tmp_path, "--config.opt.peak_lr=1e30", "--config.opt.clip=0",
              "--config.opt.warmup_steps=0", "--config.train.steps=20",
              "--config.train.ckpt_every=0")
  with pytest.raises(FloatingPointError, match="non-finite loss"):
    trainer.train(cfg)
  from tnx.train.checkpoint import Checkpointer
  ck = Checkpointer(str(tmp_path / "checkpoints"))
  assert ck.latest_step() is not None and ck.latest_step() < 20
  state, _ = ck.restore(None, jax.eval_shape(steps.init_state_fn(
      config.validate(cfg), optim.make_optimizer(cfg.opt, 20), 0)))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))
  ck.close()


def test_sharded_training_equals_single_device(tmp_path):
  if jax.device_count() < 8:
    pytest.skip("needs 8 (fake) devices")
  common = ["--config.train.steps=3", "--config.train.eval_batches=0",
            "--config.train.ckpt_every=0", "--config.model.n_heads=4"]
  single = trainer.train(smoke(tmp_path / "a", *common, "--config.mesh.data=1"))
  sharded = trainer.train(smoke(tmp_path / "b", *common, "--config.mesh.data=2",
                                "--config.mesh.fsdp=2", "--config.mesh.context=2"))
  la = [l for _, l in single["train_losses"]]
  lb = [l for _, l in sharded["train_losses"]]
  np.testing.assert_allclose(la, lb, rtol=2e-5)
  assert la[0] != la[-1]
  p = sharded["state"]["params"]["blocks"][0]["mlp"]["up"]["kernel"]
  assert len(p.sharding.device_set) == 8
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=2e-5),
               single["state"]["params"], sharded["state"]["params"])
