"""The one command line of tnx.train and every example, on `ml_collections.config_flags`.

  python -m tnx.train --config=lm:smoke --config.train.steps=100 --resume
  python -m examples.<name> [--smoke] [--config.a.b=v ...] [--docs]

FLAGS
  --config=NAME[:ARG]      tnx/configs/NAME.py:get_config(ARG); or --config=FILE.py[:ARG]
  --config.KEY=VALUE       typed override of any field (unknown keys fail naming the key)
  --smoke                  short for --config=NAME:smoke
  --resume                 continue the run in config.workdir (training configs)
  --resume_step=N          ... from checkpoint step N (default: the newest usable one)
  --allow_changes          ... even though the config differs from the saved one
  --docs                   also copy figures/tables into docs/ (examples that publish)
  --cpu_devices=N          split this host's CPU into N JAX devices before JAX starts; the
                           trainer then spreads each batch over them (faster on a multi-core
                           CPU: XLA runs the memory's small matmuls on one core per device)
  --experiment=NAME        short for --config.experiment=NAME (examples with experiments)
  --help                   this text, the config's docstring and every field with its value

Overrides are parsed by `config_flags.DEFINE_config_dict` on a fresh `absl.flags.FlagValues`
per call, so `parse` can run many times in one process (tests, notebooks), to the type of the
field they replace. Fields whose default is None have no type; their overrides are read as
Python literals (`--config.x=3`, `--config.x="'name'"`, `--config.x=None`), else as strings.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import sys
from collections.abc import Sequence
from typing import Any

import ml_collections as mlc
from absl import flags
from ml_collections import config_flags

RUN_FLAGS = ("resume", "resume_step", "allow_changes", "docs", "cpu_devices")


def _pop_spec(argv: list[str], default: str) -> tuple[str, list[str], bool]:
  """Removes `--config=SPEC` / `--config SPEC` and `--smoke` from argv; `--experiment=E`
  becomes `--config.experiment=E`."""
  spec, rest, smoke, i = default, [], False, 0
  while i < len(argv):
    a = argv[i]
    if a.startswith("--config="):
      spec = a.split("=", 1)[1]
    elif a == "--config":
      if i + 1 >= len(argv):
        raise ValueError("--config needs a value: --config=NAME[:ARG] or --config=FILE.py[:ARG]")
      spec, i = argv[i + 1], i + 1
    elif a == "--smoke":
      smoke = True
    elif a.startswith("--experiment="):
      rest.append("--config.experiment=" + a.split("=", 1)[1])
    else:
      rest.append(a)
    i += 1
  if smoke:
    name, _, arg = spec.partition(":")
    if arg not in ("", "smoke"):
      raise ValueError(f"--smoke conflicts with --config={spec!r} (it means --config={name}:smoke)")
    spec = f"{name}:smoke"
  return spec, rest, smoke


def _unknown_key(cfg: mlc.ConfigDict, argv: Sequence[str]) -> str:
  """A message for the first `--config.KEY` override whose KEY is not in `cfg` ('' if none)."""
  for a in argv:
    if not a.startswith("--config."):
      continue
    key = a[len("--config."):].split("=", 1)[0]
    node, parts = cfg, key.split(".")
    for i, part in enumerate(parts):
      if not isinstance(node, mlc.ConfigDict):
        return (f"config.{'.'.join(parts[:i])} is a value ({type(node).__name__}), not a "
                f"group, in {a!r}")
      if part not in node:
        where = ".".join(["config", *parts[:i]])
        valid = sorted(node.keys())
        close = difflib.get_close_matches(part, valid, n=1)
        hint = f" (did you mean {where}.{close[0]}?)" if close else ""
        return (f"unknown config key config.{'.'.join(parts[:i + 1])} in {a!r}{hint}; "
                f"valid keys in {where}: {valid}")
      node = node[part]
  return ""


def _set_untyped(cfg: mlc.ConfigDict, argv: list[str]) -> list[str]:
  """Applies `--config.KEY=V` overrides of None-valued fields (config_flags cannot type them)
  and returns the other arguments."""
  rest, i = [], 0
  while i < len(argv):
    a = argv[i]
    key = a[len("--config."):].split("=", 1)[0] if a.startswith("--config.") else ""
    node = cfg
    for part in key.split(".")[:-1] if key else []:
      node = node[part]
    if key and node[key.split(".")[-1]] is None:
      if "=" in a:
        text = a.split("=", 1)[1]
      elif i + 1 < len(argv):
        text, i = argv[i + 1], i + 1
      else:
        raise ValueError(f"{a} needs a value")
      try:
        value = ast.literal_eval(text)
      except (ValueError, SyntaxError):
        value = text
      node[key.split(".")[-1]] = value
    else:
      rest.append(a)
    i += 1
  return rest


def _flatten(cfg: mlc.ConfigDict, prefix: str = "") -> list[tuple[str, Any]]:
  out = []
  for k in sorted(cfg.keys()):
    v = cfg[k]
    if isinstance(v, mlc.ConfigDict):
      out.extend(_flatten(v, f"{prefix}{k}."))
    else:
      out.append((f"{prefix}{k}", v))
  return out


def _prog() -> str:
  orig = list(getattr(sys, "orig_argv", []))
  if "-m" in orig[:-1]:
    return f"python -m {orig[orig.index('-m') + 1]}"
  return "python " + (sys.argv[0] if sys.argv and sys.argv[0] else "-m tnx.train")


def help_text(spec: str, cfg: mlc.ConfigDict) -> str:
  """Usage, the config module's docstring and every field with its current value."""
  name = spec.partition(":")[0]
  extra = []
  if "train" in cfg and "resume" in cfg.train:
    extra.append("[--resume [--resume_step=N] [--allow_changes]]")
  if "docs" in cfg:
    extra.append("[--docs]")
  lines = [f"usage: {_prog()} [--config=NAME[:ARG]] [--config.KEY=VALUE ...] [--smoke] "
           + " ".join(extra), ""]
  doc = config_doc(name)
  if doc:
    lines += [doc.strip(), ""]
  lines += [(__doc__ or "").split("FLAGS\n", 1)[1].split("\n\n")[0].rstrip(), "",
            f"config fields of --config={spec} (override with --config.KEY=VALUE):"]
  lines += [f"  {k} = {v!r}" for k, v in _flatten(cfg)]
  return "\n".join(lines)


def parse(argv: Sequence[str], default: str) -> tuple[mlc.ConfigDict, dict[str, Any]]:
  """(config with overrides applied, {'resume', 'resume_step', 'allow_changes', 'docs',
  'cpu_devices'}); a given --cpu_devices splits the CPU (`tnx.sharding.set_cpu_devices`).

  Raises ValueError naming the offending argument; prints help and exits 0 on --help.
  """
  from tnx.train import config as config_lib
  argv = [str(a) for a in argv]
  spec, rest, _ = _pop_spec(argv, default)
  cfg = config_lib.load(spec)
  if any(a in ("-h", "--help", "--helpfull", "-help") for a in rest):
    print(help_text(spec, cfg))
    raise SystemExit(0)
  missing = _unknown_key(cfg, rest)
  if missing:
    raise ValueError(missing)
  rest = _set_untyped(cfg, rest)
  fv = flags.FlagValues()
  try:
    config_flags.DEFINE_config_dict("config", cfg, "the experiment config", flag_values=fv,
                                    lock_config=True, sys_argv=["prog", *rest])
    flags.DEFINE_bool("resume", False, "continue the run in config.workdir", flag_values=fv)
    flags.DEFINE_integer("resume_step", None, "checkpoint step to resume from", flag_values=fv)
    flags.DEFINE_bool("allow_changes", False, "resume although the config changed",
                      flag_values=fv)
    flags.DEFINE_bool("docs", False, "copy figures/tables into docs/", flag_values=fv)
    flags.DEFINE_integer("cpu_devices", None, "split the CPU into this many JAX devices",
                         flag_values=fv)
    leftover = fv(["prog", *rest])
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    msg = str(e.args[0] if isinstance(e, KeyError) and e.args else e).replace("\n", " ")
    raise ValueError(f"invalid command line for --config={spec}: {msg} "
                     f"(see {_prog()} --help)") from None
  if len(leftover) > 1:
    raise ValueError(f"unexpected argument {leftover[1]!r}; expected --config=..., "
                     "--config.KEY=VALUE, --smoke, --resume, --resume_step=N, "
                     "--allow_changes, --docs or --cpu_devices=N")
  run = {k: fv[k].value for k in RUN_FLAGS}
  if run["resume_step"] is not None or run["allow_changes"]:
    run["resume"] = True
  has_train = "train" in cfg and "resume" in cfg.train
  if run["resume"] and not has_train:
    raise ValueError(f"--resume applies to training configs; --config={spec} has no "
                     "train.resume field")
  if has_train and run["resume"]:
    cfg.train.resume = True
    if run["resume_step"] is not None:
      cfg.train.resume_step = int(run["resume_step"])
    if run["allow_changes"]:
      cfg.train.allow_changes = True
  if run["cpu_devices"] is not None:
    from tnx import sharding
    sharding.set_cpu_devices(run["cpu_devices"])
  if run["docs"]:
    if "docs" not in cfg:
      raise ValueError(f"--docs: --config={spec} has no docs output (no 'docs' field)")
    cfg.docs = True
  cfg.unlock()
  return cfg, run


def config_doc(name: str) -> str:
  """The docstring of config module `name` (tnx.configs.NAME or a FILE.py); '' if none."""
  try:
    if name.endswith(".py"):
      with open(name) as f:
        return ast.get_docstring(ast.parse(f.read())) or ""
    return importlib.import_module(f"tnx.configs.{name}").__doc__ or ""
  except (ImportError, OSError, SyntaxError):
    return ""
