"""Checkpoints with orbax: one Composite item per step holding

  state: params, optimizer state, step, RNG (StandardSave; restored with the target's shardings)
  data:  the grain iterator position (grain.checkpoint.CheckpointSave)
  meta:  the run config, small host-side numbers and a checksum of every state array (JsonSave)

The directory is an etils.epath path (local, file:// or a cloud URL). Orbax writes each step
into a temporary directory and renames it when complete, so a run killed mid-save leaves the
earlier steps intact. Every process must call save/restore (they are collective).

Good and bad checkpoints. A checkpoint of step s is *good* only once the training step after
it (step s + 1, computed from exactly that state) ran with a finite loss and gradient norm; the
trainer then calls `mark_good(s)`. A non-finite step marks the checkpoint it started from bad
(`mark_bad`). The verdicts live in `<directory>/status.json` (written by process 0). Retention
never deletes the newest good checkpoint until a newer one is confirmed, and resuming skips bad
ones.

Retention (orbax preservation policies, combined with "any"): the newest `keep_last`, every
checkpoint at a multiple of `keep_every` steps, the best `keep_best` by a metric passed to
`save(..., metrics=)`, and the newest good one.

Restore verifies every array against its saved checksum; any failure raises CheckpointError
with one message naming the step and the previous good step, and modifies nothing.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import grain
import orbax.checkpoint as ocp
from etils import epath

from tnx.train import checksum, paths

STATUS_FILE = "status.json"


class CheckpointError(RuntimeError):
  """A checkpoint is missing, incomplete, corrupted or unreadable."""


@dataclasses.dataclass(frozen=True)
class Retention:
  """Which checkpoints survive (a union): newest `keep_last`; every step divisible by
  `keep_every` (0 = off); the `keep_best` best by `best_metric` (0 = off; 'min' or 'max');
  always the newest good checkpoint."""

  keep_last: int = 2
  keep_every: int = 0
  keep_best: int = 0
  best_metric: str = "eval/loss"
  best_mode: str = "min"

  @classmethod
  def from_config(cls, train: Any) -> Retention:
    return cls(keep_last=train.keep_last, keep_every=train.keep_every,
               keep_best=train.keep_best, best_metric=train.best_metric,
               best_mode=train.best_mode)


@dataclasses.dataclass
class _Protected:
  """Preservation policy: keeps the steps returned by `steps()`."""

  steps: Callable[[], set[int]]

  def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> list[bool]:
    keep = self.steps()
    return [c.step in keep for c in checkpoints]


def _policy(r: Retention, protected: Callable[[], set[int]]) -> Any:
  pp = ocp.checkpoint_managers
  policies: list[Any] = [pp.LatestN(n=r.keep_last), _Protected(protected)]
  if r.keep_every:
    policies.append(pp.EveryNSteps(interval_steps=r.keep_every))
  if r.keep_best:
    metric = r.best_metric
    policies.append(pp.BestN(get_metric_fn=lambda m: m[metric], reverse=r.best_mode == "min",
                             n=r.keep_best, keep_checkpoints_without_metrics=False))
  return pp.AnyPreservationPolicy(policies)


def _one_line(e: BaseException) -> str:
  """The first meaningful line of an orbax/TensorStore error (they dump whole specs)."""
  text = str(e).strip() or type(e).__name__
  first = text.splitlines()[0]
  for marker in (" [source locations=", " {\"", " [tensorstore_spec"):
    first = first.split(marker)[0]
  return f"{type(e).__name__}: {first[:240]}"


def _silence_closed_loop_callbacks() -> None:
  """After a failed read, TensorStore still completes the other in-flight reads and posts each
  result to orbax's already closed asyncio loop; every post raises an unraisable
  RuntimeError('Event loop is closed') (one traceback per array, hundreds for a model).
  This hook drops exactly those and passes every other unraisable exception on."""
  previous = sys.unraisablehook
  if getattr(previous, "_tnx_filter", False):
    return

  def hook(unraisable: Any) -> None:
    e = unraisable.exc_value
    if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
      return
    previous(unraisable)

  hook._tnx_filter = True  # type: ignore[attr-defined]
  sys.unraisablehook = hook


class Checkpointer:
  """Thin wrapper over ocp.CheckpointManager (the one place tnx talks to orbax)."""

  def __init__(self, directory: paths.PathLike, *, retention: Retention | None = None,
               async_save: bool = True, create: bool = True):
    self.directory: epath.Path = paths.path(directory)
    self.retention = retention or Retention()
    self.good: set[int] = set()
    self.bad: dict[int, str] = {}
    r = self.retention
    options = ocp.CheckpointManagerOptions(
        create=create, enable_async_checkpointing=async_save,
        preservation_policy=_policy(r, self._protected),
        best_fn=(lambda m: m[r.best_metric]) if r.keep_best else None,
        best_mode=r.best_mode)
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    self._load_status()

  # ---------------------------------------------------------------- status of each step
  def _load_status(self) -> None:
    f = self.directory / STATUS_FILE
    if f.exists():
      try:
        s = json.loads(f.read_text())
      except ValueError as e:
        raise CheckpointError(f"{f} is not valid JSON ({e}); it records which checkpoints "
                              "are good; delete it to treat every checkpoint as unconfirmed"
                              ) from None
      self.good = {int(k) for k in s.get("good", [])}
      self.bad = {int(k): str(v) for k, v in s.get("bad", {}).items()}

  def _write_status(self) -> None:
    import jax
    if jax.process_index() != 0:
      return
    on_disk = set(self.all_steps())
    s = {"good": sorted(self.good & on_disk),
         "bad": {str(k): v for k, v in sorted(self.bad.items()) if k in on_disk}}
    (self.directory / STATUS_FILE).write_text(json.dumps(s, indent=1))

  def _protected(self) -> set[int]:
    g = self.newest_good()
    return set() if g is None else {g}

  def mark_good(self, step: int) -> None:
    """Confirms checkpoint `step`: the step after it ran finite."""
    if step not in self.good:
      self.good.add(step)
      self.bad.pop(step, None)
      self._write_status()

  def mark_bad(self, step: int, reason: str) -> None:
    self.good.discard(step)
    self.bad[step] = reason
    self._write_status()

  def is_confirmed(self, step: int) -> bool:
    return step in self.good

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def newest_good(self) -> int | None:
    steps = [s for s in self.all_steps() if s in self.good]
    return steps[-1] if steps else None

  def usable_steps(self) -> list[int]:
    """Steps not marked bad (good or not yet confirmed), oldest first."""
    return [s for s in self.all_steps() if s not in self.bad]

  def describe(self) -> str:
    """'4 (good), 6 (unconfirmed), 8 (bad: ...)' for messages."""
    out = []
    for s in self.all_steps():
      kind = "good" if s in self.good else f"bad: {self.bad[s]}" if s in self.bad else \
          "unconfirmed"
      out.append(f"{s} ({kind})")
    return ", ".join(out) or "none"

  def previous_good(self, step: int) -> int | None:
    earlier = [s for s in self.all_steps() if s < step and s in self.good]
    return earlier[-1] if earlier else None

  def _resume_hint(self, step: int) -> str:
    prev = self.previous_good(step)
    if prev is None:
      earlier = [s for s in self.usable_steps() if s < step]
      if earlier:
        return (f" The previous usable (unconfirmed) checkpoint is step {earlier[-1]}: resume "
                f"from it with --resume --resume_step={earlier[-1]}.")
      return " There is no earlier checkpoint; start a new run in a new workdir."
    return (f" The previous good checkpoint is step {prev}: resume from it with --resume "
            f"--resume_step={prev}.")

  def resume_step(self, requested: int = -1) -> int:
    """The step to resume from: `requested`, or (-1) the newest step not marked bad."""
    steps = self.all_steps()
    if not steps:
      raise CheckpointError(f"no checkpoint found in {self.directory}; nothing to resume "
                            "(run without --resume to start from scratch)")
    if requested < 0:
      usable = self.usable_steps()
      if not usable:
        raise CheckpointError(f"every checkpoint in {self.directory} is marked bad "
                              f"({self.describe()}); start a new run in a new workdir")
      return usable[-1]
    if requested not in steps:
      raise CheckpointError(f"checkpoint step {requested} not found in {self.directory}; "
                            f"available steps: {self.describe()}")
    if requested in self.bad:
      raise CheckpointError(f"checkpoint step {requested} in {self.directory} is marked bad "
                            f"({self.bad[requested]}); usable steps: {self.usable_steps()}")
    return requested

  # ---------------------------------------------------------------- save / restore
  def save(self, step: int, state: Any, data_iter: Any, meta: dict[str, Any], *,
           metrics: dict[str, float] | None = None) -> None:
    """Saves asynchronously (call `wait()` before reading it back). `meta` gains the
    checksums of every array of `state`; `metrics` feed the keep-best retention."""
    meta = dict(meta, checksums=checksum.checksums(state))
    args = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self.manager.save(step, args=ocp.args.Composite(**args), force=True,
                      metrics=metrics if self.retention.keep_best else None)

  def read_meta(self, step: int) -> dict[str, Any]:
    """The JSON metadata of `step` (config, checksums) without reading any array."""
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for unreadable files
      _silence_closed_loop_callbacks()
      raise CheckpointError(
          f"checkpoint step {step} in {self.directory} is unreadable: its metadata (meta/) "
          f"could not be read ({_one_line(e)}). Nothing was modified."
          f"{self._resume_hint(step)}") from None
    return dict(out.meta)

  def restore(self, step: int | None, abstract_state: Any, data_iter: Any = None
              ) -> tuple[Any, dict[str, Any]]:
    """Restores `step` (newest usable if None) into the structure/shardings of
    `abstract_state`, verifying every array's checksum; `data_iter` is repositioned in place.
    Raises CheckpointError (one message naming the step and the previous good one)."""
    step = self.resume_step(-1 if step is None else step)
    meta = self.read_meta(step)
    args = dict(state=ocp.args.StandardRestore(abstract_state))
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(**args))
    except Exception as e:  # orbax raises many types for unreadable files
      _silence_closed_loop_callbacks()
      raise CheckpointError(
          f"checkpoint step {step} in {self.directory} is truncated or corrupted: its arrays "
          f"could not be read ({_one_line(e)}). Nothing was modified."
          f"{self._resume_hint(step)}") from None
    if "checksums" not in meta:
      raise CheckpointError(f"checkpoint step {step} in {self.directory} has no array "
                            "checksums (written by an older tnx); nothing was modified."
                            f"{self._resume_hint(step)}")
    bad = checksum.mismatches(out.state, meta["checksums"])
    if bad:
      shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
      raise CheckpointError(
          f"checkpoint step {step} in {self.directory} is corrupted: {len(bad)} array(s) "
          f"({shown}) differ from the checksums recorded when it was saved. Nothing was "
          f"modified.{self._resume_hint(step)}")
    return out.state, meta

  def delete_after(self, step: int) -> list[int]:
    """Deletes checkpoints newer than `step` (an abandoned trajectory after resuming from an
    older step); returns their steps."""
    newer = [s for s in self.all_steps() if s > step]
    for s in newer:
      self.manager.delete(s)
      self.good.discard(s)
      self.bad.pop(s, None)
    if newer:
      self._write_status()
    return newer

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
