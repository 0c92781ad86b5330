"""The command line (ml_collections.config_flags underneath): typed overrides, errors that name
the key, the run flags, --help; start-up validation names the key."""

import pytest

from tnx.train import cli, config


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
    (["--config.train.stepz=3"], "did you mean config.train.steps"),
    (["--config.train.steps=abc"], "--config.train.steps=abc: invalid literal for int"),
    (["--config.train.progress=maybe"], "--config.train.progress=maybe: .*Non-boolean"),
    (["--config.train.steps.x=3"], r"config.train.steps is a value \(int\), not a group"),
    (["--config=does_not_exist"], "does_not_exist"),
    (["--bogus"], "Unknown command line flag 'bogus'"),
    (["stray"], "unexpected argument 'stray'"),
    (["--smoke", "--config=lm:other"], "--smoke conflicts with --config='lm:other'"),
    (["--docs"], "has no docs output"),
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
  cfg, _ = config.parse_args(["--config=lm:smoke", "--config.model.mixers=titans"])
  cfg.model.memory.titans.unlock()
  cfg.model.memory.titans.bogus = 1
  from flax import nnx

  from tnx.models import LM
  with pytest.raises(ValueError, match="model.memory.titans.bogus"):
    LM(config.validate(cfg), rngs=nnx.Rngs(0))


def test_run_flags_set_the_train_fields():
  cfg, resume = config.parse_args(["--smoke", "--resume_step=40", "--allow_changes"])
  assert resume and cfg.train.resume and cfg.train.resume_step == 40 and cfg.train.allow_changes
  assert cfg.workdir == "runs/lm_smoke"           # --smoke is lm:smoke
  cfg, resume = config.parse_args(["--config=lm:smoke", "--config.train.steps", "7"])
  assert not resume and cfg.train.steps == 7 and cfg.train.resume_step == -1
  cfg, _ = config.parse_args(["--smoke", "--config.model.memory.tnt.local_chunk_sizes=(4, 2)"],
                             default="tnt_lm")
  assert cfg.model.memory.tnt.local_chunk_sizes == (4, 2) and cfg.job.stage1_steps == 3
  cfg.new_key = 1                                 # returned unlocked, like load()


def test_experiment_flag_sets_the_experiment_field():
  cfg, _ = config.parse_args(["--experiment=fig2", "--smoke"], default="data_mixing")
  assert cfg.experiment == "fig2" and cfg.workdir.endswith("_smoke")
  with pytest.raises(ValueError, match="unknown config key config.experiment"):
    config.parse_args(["--experiment=fig2"], default="tnt_lm")


def test_none_valued_fields_take_python_literals(tmp_path):
  (tmp_path / "c.py").write_text("import ml_collections as mlc\n"
                                 "def get_config(arg=None):\n"
                                 "  return mlc.ConfigDict({'a': None, 'b': None, 'n': 1})\n")
  cfg, _ = config.parse_args([f"--config={tmp_path / 'c.py'}", "--config.a=(1, 2)",
                              "--config.b", "name", "--config.n=3"])
  assert cfg.a == (1, 2) and cfg.b == "name" and cfg.n == 3


def test_help_lists_flags_and_every_field(capsys):
  from tnx.train import __main__ as train_main
  with pytest.raises(SystemExit) as e:
    train_main.main(["--config=lm:smoke", "--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert out.startswith("usage: python ") and "[--resume [--resume_step=N] [--allow_changes]]" \
      in out
  assert "Language-model training on the default corpus" in out      # the config's docstring
  assert "  --config.KEY=VALUE       typed override" in out
  fields = [line.split(" = ")[0].strip() for line in out.splitlines() if " = " in line]
  flat = [k for k, _ in cli._flatten(config.load("lm:smoke"))]
  assert fields[-len(flat):] == flat and "train.keep_last = 2" in out


def test_validate_checkpointing_fields():
  for key, value, match in [("train.keep_last", "0", "train.keep_last"),
                            ("train.best_mode", "median", "train.best_mode"),
                            ("train.nan_lr_scale", "1.5", "train.nan_lr_scale"),
                            ("train.resume_step", "-3", "train.resume_step")]:
    cfg, _ = config.parse_args(["--config=lm:smoke", f"--config.{key}={value}"])
    with pytest.raises(ValueError, match=match):
      config.validate(cfg)
  cfg, _ = config.parse_args(["--config=lm:smoke", "--config.train.keep_best=2",
                              "--config.train.eval_batches=0"])
  with pytest.raises(ValueError, match="needs evaluation"):
    config.validate(cfg)


def test_cpu_devices_splits_the_cpu_before_jax_starts():
  """--cpu_devices=N in a fresh process gives N CPU devices, and the trainer's data axis
  takes them all (mesh.data = -1)."""
  import os
  import subprocess
  import sys
  code = ("from tnx.train import cli\n"
          "cfg, run = cli.parse(['--config=lm:smoke', '--cpu_devices=3'], 'lm')\n"
          "import jax\n"
          "from tnx import sharding\n"
          "print(run['cpu_devices'], len(jax.devices()), sharding.make_mesh().shape['data'])\n")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True)
  assert out.stdout.split() == ["3", "3", "3"]


def test_cpu_devices_errors():
  import jax
  n = len(jax.devices("cpu"))      # this process has already started JAX (8 fake devices)
  _, run = cli.parse(["--config=lm:smoke", f"--cpu_devices={n}"], "lm")
  assert run["cpu_devices"] == n   # the count it already has: accepted
  with pytest.raises(ValueError, match=f"cpu_devices={n + 1}: JAX already started .* {n} CPU"):
    config.parse_args(["--config=lm:smoke", f"--cpu_devices={n + 1}"])
  with pytest.raises(ValueError, match="cpu_devices must be a positive"):
    config.parse_args(["--config=lm:smoke", "--cpu_devices=0"])
