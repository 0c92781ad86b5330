"""Config loading, `--config.a.b=value` overrides and start-up validation.

  load("lm")                 tnx/configs/lm.py:get_config()
  load("lm:smoke")           ... get_config("smoke")
  load("path/to/cfg.py:arg") any file exposing get_config(arg)
  parse_args(argv, default="lm") -> (ConfigDict, resume flag)

Overrides must name existing keys (a typo fails at start-up naming the key) and are parsed to
the type of the value they replace (ml_collections.config_flags, see tnx.train.cli);
`validate` checks values before any work starts.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Sequence

import jax
import ml_collections as mlc

from tnx import validation
from tnx.models.config import LMConfig, lm_config, split_list
from tnx.train import paths


def load(spec: str) -> mlc.ConfigDict:
  """Loads 'name[:arg]' from tnx.configs or 'file.py[:arg]'."""
  name, _, arg = spec.partition(":")
  if name.endswith(".py"):
    if not os.path.exists(name):
      raise ValueError(f"--config file {name!r} does not exist")
    mod_spec = importlib.util.spec_from_file_location("_tnx_config", name)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
  else:
    try:
      module = importlib.import_module(f"tnx.configs.{name}")
    except ModuleNotFoundError as e:
      raise ValueError(f"--config={spec!r}: no config module tnx/configs/{name}.py") from e
  return module.get_config(arg or None)


def parse_args(argv: Sequence[str], default: str = "lm") -> tuple[mlc.ConfigDict, bool]:
  """The command line of tnx.train and every example (`tnx.train.cli`, on
  ml_collections.config_flags): `--config=name[:arg]`, `--config.a.b=v` (or `--config.a.b v`),
  `--smoke`, `--resume`, `--resume_step=N`, `--allow_changes`, `--docs`, `--help`.
  Returns (config, resume flag); raises ValueError naming a bad argument."""
  from tnx.train import cli
  cfg, run = cli.parse(argv, default)
  return cfg, bool(run["resume"])


def validate_checkpointing(t: mlc.ConfigDict) -> None:
  """Retention, resume and NaN-recovery fields of the train block."""
  validation.positive_int("train.keep_last", t.keep_last)
  validation.non_negative_int("train.keep_every", t.keep_every)
  validation.non_negative_int("train.keep_best", t.keep_best)
  validation.one_of("train.best_mode", t.best_mode, ("min", "max"))
  if t.keep_best:
    if not t.eval_batches:
      raise ValueError(f"train.keep_best={t.keep_best} ranks checkpoints by "
                       f"{t.best_metric!r}, which needs evaluation (train.eval_batches > 0)")
    if not t.best_metric.startswith("eval/"):
      raise ValueError(f"train.best_metric={t.best_metric!r} must name an evaluation metric: "
                       "'eval/loss', 'eval/bits_per_byte' or 'eval/accuracy'")
  if t.resume_step < -1:
    raise ValueError(f"train.resume_step must be -1 (newest usable) or a step, got "
                     f"{t.resume_step}")
  validation.in_range("train.nan_lr_scale", t.nan_lr_scale, 0, 1, low_open=True,
                      high_open=True)


def validate(cfg: mlc.ConfigDict) -> LMConfig:
  """Checks a full training config at start-up; returns the typed model config."""
  lm = lm_config(cfg.model)
  d, t, o = cfg.data, cfg.train, cfg.opt
  try:  # an unsupported URL fails here, before anything is written (never './memory:/...')
    paths.path(cfg.workdir)
  except ValueError as e:
    raise ValueError(f"workdir={cfg.workdir!r}: {e}") from None
  seq_len = validation.positive_int("data.seq_len", d.seq_len)
  batch = validation.positive_int("data.global_batch", d.global_batch)
  validation.one_of("data.source", d.source, ("stdlib", "files", "mqar", "needle"))
  if d.path and d.source == "stdlib":  # a path means "train on these files"
    d.source = "files"
  if d.path and d.source != "files":
    raise ValueError(f"data.path={d.path!r} is set but data.source={d.source!r} generates its "
                     "data; unset data.path or use data.source='files'")
  if d.source == "files" and not (d.path and paths.path(d.path).exists()):
    raise ValueError(f"data.path={d.path!r} does not exist (needed for data.source='files'); "
                     "expected a text file or directory")
  validation.in_range("data.val_fraction", d.val_fraction, 0, 1, low_open=True, high_open=True)
  validation.non_negative_int("data.max_bytes", d.max_bytes)
  validation.positive_int("train.steps", t.steps)
  accum = validation.positive_int("train.accum_steps", t.accum_steps)
  for k in ("log_every",):
    validation.positive_int(f"train.{k}", t[k])
  for k in ("eval_every", "ckpt_every", "eval_batches"):
    validation.non_negative_int(f"train.{k}", t[k])
  validate_checkpointing(t)
  for c in split_list(t.chunk_sweep):
    if not c.isdigit() or int(c) < 1:
      raise ValueError(f"train.chunk_sweep must list positive ints, got {t.chunk_sweep!r}")
  validation.positive("opt.peak_lr", o.peak_lr)
  validation.in_range("opt.b1", o.b1, 0, 1, high_open=True)
  validation.in_range("opt.b2", o.b2, 0, 1, high_open=True)
  validation.non_negative("opt.weight_decay", o.weight_decay)
  validation.non_negative("opt.clip", o.clip)
  validation.in_range("opt.final_lr_ratio", o.final_lr_ratio, 0, 1)
  n_dev = jax.device_count()
  used = cfg.mesh.data * cfg.mesh.fsdp * cfg.mesh.context
  if jax.process_count() > 1 and cfg.mesh.data != -1 and used != n_dev:
    raise ValueError(f"mesh.data * mesh.fsdp * mesh.context = {used} uses {used} of the {n_dev} "
                     f"devices of the {jax.process_count()} processes; with several processes "
                     "the mesh must use every device (mesh.data=-1 takes the rest)")
  if batch % n_dev:
    raise ValueError(f"data.global_batch={batch} must be divisible by the {n_dev} devices")
  if batch % accum or (batch // accum) % (n_dev // max(cfg.mesh.context, 1)):
    raise ValueError(f"data.global_batch={batch} must split into train.accum_steps={accum} "
                     "microbatches that each divide over the data/fsdp devices")
  if seq_len % cfg.mesh.context:
    raise ValueError(f"data.seq_len={seq_len} must be divisible by mesh.context="
                     f"{cfg.mesh.context}")
  if d.source in ("mqar", "needle") and lm.vocab_size < 16:
    raise ValueError(f"model.vocab_size={lm.vocab_size} too small for data.source={d.source}")
  return lm
