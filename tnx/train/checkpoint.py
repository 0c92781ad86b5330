"""Checkpoints with orbax: one Composite item per step holding

  state: params, optimizer state, step, RNG (StandardSave; restored with the target's shardings)
  data:  the grain iterator position (grain.checkpoint.CheckpointSave)
  meta:  the run config and small host-side numbers (JsonSave)

Orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous steps intact. Restores that fail raise CheckpointError
naming the directory and step, and never delete or overwrite anything.
Every process must call save/restore (they are collective on multi-host runs).
"""

from __future__ import annotations

import os
from typing import Any

import grain
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint is missing, incomplete or unreadable."""


class Checkpointer:
  """Thin wrapper over ocp.CheckpointManager (the one place tnx talks to orbax)."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=async_save))

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iter: Any, meta: dict[str, Any]) -> None:
    """Saves asynchronously (call `wait()` before reading it back)."""
    args = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self.manager.save(step, args=ocp.args.Composite(**args), force=True)

  def restore(self, step: int | None, abstract_state: Any, data_iter: Any = None
              ) -> tuple[Any, dict[str, Any]]:
    """Restores `step` (latest if None) into the structure/shardings of `abstract_state`;
    `data_iter` is repositioned in place. Raises CheckpointError if absent or unreadable."""
    steps = self.all_steps()
    if step is None:
      if not steps:
        raise CheckpointError(f"no checkpoint found in {self.directory}; nothing to resume "
                              "(run without --resume to start from scratch)")
      step = steps[-1]
    if step not in steps:
      raise CheckpointError(f"checkpoint step {step} not found in {self.directory}; "
                            f"available steps: {steps}")
    args = dict(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(**args))
    except Exception as e:  # orbax raises many types for unreadable files
      raise CheckpointError(
          f"checkpoint step {step} in {self.directory} is corrupted or incomplete and could "
          f"not be restored ({type(e).__name__}: {str(e)[:300]}). Nothing was modified; "
          f"other steps present: {[s for s in steps if s != step]}. Move the bad step away "
          "to resume from an earlier one.") from e
    return out.state, dict(out.meta)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
