"""Config loading, `--config.a.b=value` overrides and start-up validation.

  load("lm")                 tnx/configs/lm.py:get_config()
  load("lm:smoke")           ... get_config("smoke")
  load("path/to/cfg.py:arg") any file exposing get_config(arg)
  parse_args(argv, default="lm") -> (ConfigDict, resume flag)

Overrides must name existing keys (a typo fails at start-up naming the key) and are converted
to the type of the value they replace; `validate` checks values before any work starts.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections as mlc

from tnx import validation
from tnx.models.config import LMConfig, lm_config, split_list


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


def _convert(key: str, old: Any, text: str) -> Any:
  if isinstance(old, bool):
    low = text.lower()
    if low not in ("true", "false", "1", "0"):
      raise ValueError(f"config.{key} expects a bool (true/false), got {text!r}")
    return low in ("true", "1")
  if isinstance(old, int):
    try:
      return int(text)
    except ValueError:
      raise ValueError(f"config.{key} expects an int, got {text!r}") from None
  if isinstance(old, float):
    try:
      return float(text)
    except ValueError:
      raise ValueError(f"config.{key} expects a float, got {text!r}") from None
  if isinstance(old, (tuple, list)):
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = tuple(t for t in text.split(",") if t)
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)
  if isinstance(old, str):
    return text
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def override(cfg: mlc.ConfigDict, key: str, text: str) -> None:
  """Sets cfg.<key> (dotted) from its string form; unknown keys raise ValueError."""
  *parents, leaf = key.split(".")
  node = cfg
  for i, p in enumerate(parents):
    if not isinstance(node, mlc.ConfigDict) or p not in node:
      raise ValueError(f"unknown config key config.{'.'.join(parents[:i + 1])} "
                       f"(in --config.{key}={text})")
    node = node[p]
  if not isinstance(node, mlc.ConfigDict) or leaf not in node:
    valid = sorted(node.keys()) if isinstance(node, mlc.ConfigDict) else []
    raise ValueError(f"unknown config key config.{key}; valid keys here: {valid}")
  node[leaf] = _convert(key, node[leaf], text)


def parse_args(argv: Sequence[str], default: str = "lm") -> tuple[mlc.ConfigDict, bool]:
  """Parses `--config=spec`, `--config.a.b=v` (or `--config.a.b v`), `--smoke`, `--resume`."""
  spec, items, resume, smoke = default, [], False, False
  args = list(argv)
  i = 0
  while i < len(args):
    a = args[i]
    if a.startswith("--config="):
      spec = a.split("=", 1)[1]
    elif a.startswith("--config."):
      if "=" in a:
        k, v = a[len("--config."):].split("=", 1)
      else:
        if i + 1 >= len(args):
          raise ValueError(f"{a} needs a value")
        k, v = a[len("--config."):], args[i + 1]
        i += 1
      items.append((k, v))
    elif a == "--resume":
      resume = True
    elif a == "--smoke":
      smoke = True
    else:
      raise ValueError(f"unknown argument {a!r}; expected --config=..., --config.a.b=v, "
                       "--smoke or --resume")
    i += 1
  if smoke and ":" not in spec:
    spec += ":smoke"
  cfg = load(spec)
  for k, v in items:
    override(cfg, k, v)
  if resume:
    cfg.train.resume = True
  return cfg, resume


def validate(cfg: mlc.ConfigDict) -> LMConfig:
  """Checks a full training config at start-up; returns the typed model config."""
  lm = lm_config(cfg.model)
  d, t, o = cfg.data, cfg.train, cfg.opt
  seq_len = validation.positive_int("data.seq_len", d.seq_len)
  batch = validation.positive_int("data.global_batch", d.global_batch)
  validation.one_of("data.source", d.source, ("stdlib", "files", "mqar", "needle"))
  if d.source == "files" and not os.path.exists(d.path):
    raise ValueError(f"data.path={d.path!r} does not exist (needed for data.source='files')")
  validation.in_range("data.val_fraction", d.val_fraction, 0, 1, low_open=True, high_open=True)
  validation.non_negative_int("data.max_bytes", d.max_bytes)
  validation.positive_int("train.steps", t.steps)
  accum = validation.positive_int("train.accum_steps", t.accum_steps)
  for k in ("log_every",):
    validation.positive_int(f"train.{k}", t[k])
  for k in ("eval_every", "ckpt_every", "eval_batches"):
    validation.non_negative_int(f"train.{k}", t[k])
  validation.positive_int("train.keep_ckpts", t.keep_ckpts)
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
