"""Resume safety: the whole config is compared with the one saved in the checkpoint, and the
commands printed when a run stops (preemption, non-finite loss) resume it correctly.

A resumed run continues exactly only with the config it was started with; any difference
(data, sequence length, batch, steps, optimizer, model) is refused with the changed keys listed
unless `--allow_changes` is given, in which case the changes are recorded in metrics.jsonl.
Keys that cannot affect the numbers are ignored: IGNORED, and every section outside
TRAINED (the sections the trainer reads; an example's own sections, such as `job` or `exp`,
decide which runs exist, not what a run computes, so one run can be finished by another job).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any

IGNORED = ("workdir", "train.resume", "train.resume_step", "train.allow_changes",
           "train.progress", "train.plot")
ABSENT = "<absent>"
TRAINED = ("data", "domains", "mesh", "model", "opt", "seed", "train")
RESUME_FLAGS = ("--resume", "--resume_step", "--allow_changes")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{'a.b': value} for a nested mapping."""
  out: dict[str, Any] = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]
                   ) -> dict[str, tuple[Any, Any]]:
  """{key: (saved value, current value)} for every key whose value differs (ABSENT where a
  key exists on one side only); IGNORED keys and sections outside TRAINED are left out."""
  a, b = flatten(saved), flatten(current)
  out = {}
  for k in sorted(set(a) | set(b)):
    if k in IGNORED or k.split(".")[0] not in TRAINED:
      continue
    old, new = a.get(k, ABSENT), b.get(k, ABSENT)
    if old != new:
      out[k] = (old, new)
  return out


def format_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
  return "\n".join(f"  {k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())


def check_config(saved: Mapping[str, Any], current: Mapping[str, Any], *, allow: bool,
                 where: str) -> dict[str, tuple[Any, Any]]:
  """The changes between the saved and the current config; ValueError listing them unless
  `allow`."""
  changes = config_changes(saved, current)
  if changes and not allow:
    raise ValueError(
        f"--resume: the config differs from the one saved in {where} in {len(changes)} "
        f"key(s):\n{format_changes(changes)}\nResuming with a different config does not "
        "continue the run exactly; pass --allow_changes to resume anyway (the changes are "
        "recorded in metrics.jsonl), or undo the changes.")
  return changes


def _strip(argv: Sequence[str], drop: Sequence[str]) -> list[str]:
  """argv without flags (and their separate values) whose name starts with one of `drop`."""
  out, skip = [], False
  for i, a in enumerate(argv):
    if skip:
      skip = False
      continue
    name = a.split("=", 1)[0]
    if any(name == d or name.startswith(d + ".") for d in drop):
      nxt = argv[i + 1] if i + 1 < len(argv) else ""
      skip = "=" not in a and name not in ("--resume", "--allow_changes") and \
          not nxt.startswith("--")
      continue
    out.append(a)
  return out


def rerun_command(*, add: Sequence[str], drop: Sequence[str],
                  argv: Sequence[str] | None = None) -> str | None:
  """This program's command line (sys.orig_argv) with the flags named in `drop` removed and
  `add` appended, if it is a `python -m tnx.train` run; None otherwise."""
  argv = list(getattr(sys, "orig_argv", sys.argv) if argv is None else argv)
  if "-m" not in argv[:-1] or argv[argv.index("-m") + 1] != "tnx.train":
    return None
  return shlex.join(_strip(argv, drop) + list(add))


def resume_command(*, step: int | None = None, peak_lr: float | None = None,
                   argv: Sequence[str] | None = None) -> str:
  """The command that resumes this run (from `step`, with a new `peak_lr`): the run's own
  command line with `--resume` flags in place of earlier ones; outside `python -m tnx.train`,
  the flags to add to it."""
  flags = ["--resume"]
  if step is not None:
    flags.append(f"--resume_step={step}")
  drop = [*RESUME_FLAGS, "--config.train.resume", "--config.train.resume_step",
          "--config.train.allow_changes"]
  if peak_lr is not None:
    flags += ["--allow_changes", f"--config.opt.peak_lr={peak_lr:.4g}"]
    drop.append("--config.opt.peak_lr")
  cmd = rerun_command(add=flags, drop=drop, argv=argv)
  return cmd or "the command that started this run, with " + " ".join(flags) + " added"


class NonFiniteError(FloatingPointError):
  """Training stopped at a non-finite loss or gradient. Attributes: step, last_good (a step
  or None), resume_command."""

  def __init__(self, message: str, *, step: int, last_good: int | None, command: str):
    super().__init__(message)
    self.step, self.last_good, self.resume_command = step, last_good, command


def nonfinite_error(*, step: int, loss: float, grad_norm: float, directory: Any,
                    last_good: int | None, peak_lr: float, lr_scale: float,
                    workdir: str) -> NonFiniteError:
  """The error raised on a non-finite step, naming the step, the last good checkpoint and the
  command that resumes from it with a smaller learning rate."""
  lr = peak_lr * lr_scale
  head = (f"non-finite loss ({loss}) or gradient norm ({grad_norm}) at step {step}; the "
          "update was skipped and nothing was saved.")
  if last_good is None:
    fresh = f"{str(workdir).rstrip('/')}_lr{lr:.4g}"
    add = [f"--config.opt.peak_lr={lr:.4g}", f"--config.workdir={fresh}"]
    cmd = rerun_command(add=add, drop=[*RESUME_FLAGS, "--config.train.resume",
                                       "--config.opt.peak_lr", "--config.workdir"]) or \
        "the command that started this run, with " + " ".join(add) + " added"
    msg = (f"{head} No checkpoint of this run is confirmed good yet (a checkpoint is good once "
           f"the step after it ran finite). Start again with a smaller learning rate "
           f"(opt.peak_lr {peak_lr:.4g} -> {lr:.4g}) in a new workdir:\n  {cmd}")
  else:
    cmd = resume_command(step=last_good, peak_lr=lr)
    msg = (f"{head} The last good checkpoint is step {last_good} in {directory}. Resume from "
           f"it with a smaller learning rate (opt.peak_lr {peak_lr:.4g} -> {lr:.4g}):\n  {cmd}")
  return NonFiniteError(msg, step=step, last_good=last_good, command=cmd)
