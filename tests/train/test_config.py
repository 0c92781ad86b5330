"""Start-up config errors name the key; overrides are typed."""

import pytest

from tnx.train import config


def test_overrides_are_typed():
  cfg, resume = config.parse_args(["--config=lm:smoke", "--config.train.steps=3",
                                   "--config.model.mixers=swa,attention",
                                   "--config.opt.peak_lr", "0.01",
                                   "--config.model.tie_embeddings=false", "--resume"])
  assert cfg.train.steps == 3 and cfg.opt.peak_lr == 0.01 and resume and cfg.train.resume
  assert cfg.model.tie_embeddings is False
  assert config.validate(cfg).mixers == ("swa", "attention")


@pytest.mark.parametrize("args,match", [
    (["--config.train.stepz=3"], "config.train.stepz"),
    (["--config.nope.x=3"], "config.nope"),
    (["--config.train.steps=abc"], "config.train.steps expects an int"),
    (["--config.train.progress=maybe"], "expects a bool"),
    (["--config=does_not_exist"], "does_not_exist"),
    (["--bogus"], "--bogus"),
])
def test_parse_errors(args, match):
  with pytest.raises(ValueError, match=match):
    config.parse_args(["--config=lm:smoke"] + args)


@pytest.mark.parametrize("key,value,match", [
    ("data.global_batch", "6", "data.global_batch"),
    ("train.steps", "0", "train.steps"),
    ("opt.peak_lr", "-1", "opt.peak_lr"),
    ("model.mixers", "attention,nope", "mixers"),
    ("data.source", "web", "data.source"),
    ("train.accum_steps", "3", "accum_steps"),
    ("data.seq_len", "30", "mesh.context"),
    ("train.chunk_sweep", "4,x", "chunk_sweep"),
])
def test_invalid_values_fail_at_startup(key, value, match):
  cfg, _ = config.parse_args(["--config=lm:smoke", f"--config.{key}={value}",
                              "--config.mesh.context=4" if key == "data.seq_len" else
                              "--config.seed=0"])
  with pytest.raises(ValueError, match=match):
    config.validate(cfg)


def test_unknown_memory_field():
  from tnx.models import available_families
  if "titans" not in available_families():
    pytest.skip("titans not available")
  cfg, _ = config.parse_args(["--config=lm:smoke", "--config.model.mixers=titans"])
  cfg.model.memory.titans.unlock()
  cfg.model.memory.titans.bogus = 1
  from flax import nnx

  from tnx.models import LM
  with pytest.raises(ValueError, match="model.memory.titans.bogus"):
    LM(config.validate(cfg), rngs=nnx.Rngs(0))
