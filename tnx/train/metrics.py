"""Host-side logging, process 0 only: JSONL metrics, TensorBoard events, a tqdm progress bar
with tokens/s and ETA, and a loss-curve PNG at the end."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import jax


class MetricsWriter:
  """Writes `metrics.jsonl` and TensorBoard events under `workdir` (process 0 only).

  Other processes get a writer whose methods do nothing, so the loop needs no branches.
  """

  def __init__(self, workdir: str, *, total_steps: int, start_step: int = 0,
               progress: bool = True, tensorboard: bool = True, desc: str = "train"):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._bar = self._tb = None
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    self._file = open(self.path, "a")
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tb"))
      except ImportError:  # optional: JSONL is always written
        self._tb = None
    if progress:
      from tqdm.auto import tqdm
      self._bar = tqdm(total=total_steps, initial=start_step, desc=desc, unit="step",
                       dynamic_ncols=True)

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.active:
      return
    row = {"step": int(step), **{k: _py(v) for k, v in metrics.items()}}
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()
    if self._tb is not None:
      for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)):
          self._tb.add_scalar(k, v, step)

  def progress(self, n: int, **postfix: Any) -> None:
    if self._bar is not None:
      self._bar.update(n)
      if postfix:
        self._bar.set_postfix({k: _fmt(v) for k, v in postfix.items()}, refresh=False)

  def close(self) -> None:
    if not self.active:
      return
    self._file.close()
    if self._tb is not None:
      self._tb.close()
    if self._bar is not None:
      self._bar.close()


def _py(v: Any) -> Any:
  try:
    f = float(v)
  except (TypeError, ValueError):
    return v
  return int(f) if isinstance(v, int) else (f if math.isfinite(f) else str(f))


def _fmt(v: Any) -> str:
  return f"{v:.4g}" if isinstance(v, float) else str(v)


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Rows of a metrics file; a later row for the same step (after a resume) replaces it."""
  rows: dict[tuple[int, str], dict[str, Any]] = {}
  with open(path) as f:
    for line in f:
      if line.strip():
        r = json.loads(line)
        rows[(r["step"], r.get("kind", "train"))] = r
  return [rows[k] for k in sorted(rows)]


def plot_curves(curves: Mapping[str, tuple[list[float], list[float]]], path: str, *,
                xlabel: str = "step", ylabel: str = "loss", title: str = "") -> None:
  """Saves a line plot of {label: (x, y)} to `path` (PNG)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, (x, y) in curves.items():
    ax.plot(x, y, label=label)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
