"""Stopping cleanly on SIGTERM (TPU/cloud preemption, SLURM's time limit and `scancel`) and
SIGINT (Ctrl-C): the signal only sets a flag, the training loop checks it after every step,
saves the current step on all hosts, waits for any save in progress and exits 0.

Single process: Python handlers for both signals set the flag.
Several processes (jax.distributed): hosts may see the signal at different steps, and every
host must save the same step. JAX's preemption service (started by
`jax.distributed.initialize()`) catches SIGTERM and agrees on a step:
`multihost_utils.reached_preemption_sync_point(step)`, called by every host at every step.
SIGINT is forwarded to it as SIGTERM. A second SIGINT restores Python's default (abort now).
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

import jax

NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}


class Interrupted(SystemExit):
  """Raised after a clean stop: exits the program with status 0 unless caught."""

  def __init__(self, message: str, step: int):
    super().__init__(0)
    self.message, self.step = message, step

  def __str__(self) -> str:
    return self.message


def _multi_process() -> bool:
  return jax.process_count() > 1  # only after jax.distributed.initialize()


class StopSignals:
  """Context manager: `requested(step)` turns True (on every host at the same step) once
  SIGTERM or SIGINT arrived. Outside the main thread it installs nothing."""

  def __init__(self) -> None:
    self.signal_name: str | None = None
    self._previous: dict[int, Any] = {}
    self._multi = False

  def __enter__(self) -> StopSignals:
    if threading.current_thread() is not threading.main_thread():
      return self
    self._multi = _multi_process()
    signals = (signal.SIGINT,) if self._multi else (signal.SIGTERM, signal.SIGINT)
    for s in signals:
      self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc: Any) -> None:
    for s, h in self._previous.items():
      signal.signal(s, h)
    self._previous.clear()

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    del frame
    first = self.signal_name is None
    self.signal_name = NAMES.get(signum, str(signum))
    if signum == signal.SIGINT:
      if not first:
        raise KeyboardInterrupt
      print("\nSIGINT: stopping after this step and saving a checkpoint "
            "(press Ctrl-C again to abort without saving)", flush=True)
      if self._multi:  # let JAX's preemption service agree on the step with the other hosts
        os.kill(os.getpid(), signal.SIGTERM)

  def requested(self, step: int) -> bool:
    """True when the run should stop after `step` (call it at every step on every host)."""
    if self._multi:
      from jax.experimental import multihost_utils
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal_name = self.signal_name or "SIGTERM"
        return True
      return False
    return self.signal_name is not None
