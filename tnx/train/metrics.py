"""Host-side logging, process 0 only: JSONL metrics, TensorBoard events, a tqdm progress bar,
step-time and rate bookkeeping, peak device memory, and curve plots.

Rows of metrics.jsonl are {"step": int, "kind": "train" | "eval" | "resume" | ..., ...};
TensorBoard tags are "<kind>/<name>" (train/loss, eval/loss, train/tokens_per_s, ...; the
non-scalar "resume" rows are not sent). A "resume" row marks
where a resumed run continued: readers drop rows of the abandoned steps after it, so plots and
summaries built from the whole file describe one consistent run. All files go through epath;
on a cloud workdir (no appends) metrics.jsonl is rewritten whole at most every `flush_s`
seconds and at close.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jax

from tnx.train import paths

CURVE_KINDS = ("train", "eval")   # rows that loss.png and summary.json draw
NOT_LOGGED = ("finite",)          # per-row flags, not curves


class MetricsWriter:
  """Writes `metrics.jsonl` and TensorBoard events under `workdir` (process 0 only).

  Other processes get a writer whose methods do nothing, so the loop needs no branches.
  """

  def __init__(self, workdir: paths.PathLike, *, total_steps: int, start_step: int = 0,
               progress: bool = True, tensorboard: bool = True, desc: str = "train",
               flush_s: float = 30.0):
    self.active = jax.process_index() == 0
    self.workdir = paths.path(workdir)
    self.path = self.workdir / "metrics.jsonl"
    self._bar = self._tb = self._file = None
    self._local = paths.is_local(self.workdir)
    self._lines: list[str] = []
    self._flush_s, self._last_flush = flush_s, time.monotonic()
    if not self.active:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    if self._local:
      self._file = self.path.open("a")
    elif self.path.exists():
      self._lines = self.path.read_text().splitlines(keepends=True)
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter
        paths.register_tensorboard_scheme(self.workdir)
        # A distinct file per writer: tensorboardX names files by the second, and a resumed
        # run started within the same second would otherwise truncate the previous events.
        self._tb = SummaryWriter(str(self.workdir / "tb"),
                                 filename_suffix=f".{os.getpid()}.{start_step}")
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
    line = json.dumps(row) + "\n"
    if self._file is not None:
      self._file.write(line)
      self._file.flush()
    else:
      self._lines.append(line)
      if time.monotonic() - self._last_flush > self._flush_s:
        self.flush()
    kind = row.get("kind", "train")
    if self._tb is not None and kind != "resume":
      for k, v in row.items():
        if k not in ("step", "kind", *NOT_LOGGED) and isinstance(v, (int, float)):
          self._tb.add_scalar(f"{kind}/{k}", v, step)

  def flush(self) -> None:
    if not self.active:
      return
    if self._file is None:
      self.path.write_text("".join(self._lines))
      self._last_flush = time.monotonic()
    if self._tb is not None:
      self._tb.flush()

  def progress(self, n: int, **postfix: Any) -> None:
    if self._bar is not None:
      self._bar.update(n)
      if postfix:
        self._bar.set_postfix({k: _fmt(v) for k, v in postfix.items()}, refresh=False)

  def close(self) -> None:
    if not self.active:
      return
    self.flush()
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None
    if self._bar is not None:
      self._bar.close()
      self._bar = None


class StepClock:
  """Training-step time apart from wall-clock time. The loop calls `tick(step)` when the
  metrics of `step` arrive (the first tick ends compilation) and runs evaluation, checkpoint
  and logging work inside `with clock.paused():`, which training-step time excludes."""

  def __init__(self, tokens_per_step: int):
    self.tokens_per_step = tokens_per_step
    self.t0 = time.perf_counter()
    self.compile_s = 0.0
    self._first: float | None = None
    self._last = self.t0
    self._last_step = 0
    self._paused = 0.0
    self._interval = [0.0, 0]     # training seconds, steps since the last report
    self._total = [0.0, 0]        # training seconds, steps since compilation

  @contextlib.contextmanager
  def paused(self) -> Iterator[None]:
    t = time.perf_counter()
    try:
      yield
    finally:
      self._paused += time.perf_counter() - t

  def tick(self, step: int) -> None:
    now = time.perf_counter()
    if self._first is None:
      self._first, self.compile_s = now, now - self.t0
    else:
      train_s = max(now - self._last - self._paused, 0.0)
      for acc in (self._interval, self._total):
        acc[0] += train_s
        acc[1] += step - self._last_step
    self._last, self._last_step, self._paused = now, step, 0.0

  def report(self) -> dict[str, float]:
    """Rates since the previous report (training steps only) and since compilation (wall)."""
    train_s, n = self._interval
    self._interval = [0.0, 0]
    out: dict[str, float] = {}
    if n:
      out.update(step_time_s=train_s / n, steps_per_s=n / max(train_s, 1e-9),
                 tokens_per_s=n * self.tokens_per_step / max(train_s, 1e-9))
    wall = self._last - self._first if self._first is not None else 0.0
    if self._total[1] and wall > 0:
      out["wall_tokens_per_s"] = self._total[1] * self.tokens_per_step / wall
    peak = peak_memory_bytes()
    if peak is not None:
      out["peak_memory_gb"] = peak / 2**30
    return out

  def summary(self) -> dict[str, float]:
    """Whole-run numbers: compile time, mean step time, training and wall-clock rates."""
    train_s, n = self._total
    wall = self._last - self._first if self._first is not None else 0.0
    out = {"compile_s": self.compile_s, "train_step_s": train_s, "steady_steps": n,
           "wall_s": time.perf_counter() - self.t0}
    if n:
      out.update(step_time_s=train_s / n,
                 tokens_per_s=n * self.tokens_per_step / max(train_s, 1e-9),
                 wall_tokens_per_s=n * self.tokens_per_step / max(wall, 1e-9))
    peak = peak_memory_bytes()
    if peak is not None:
      out["peak_memory_gb"] = peak / 2**30
    return out


def peak_memory_bytes() -> int | None:
  """Peak bytes in use on this process's devices (max over devices), where the backend
  reports it (GPU, TPU); None otherwise (CPU)."""
  peaks = []
  for d in jax.local_devices():
    try:
      stats = d.memory_stats()
    except Exception:  # some backends raise instead of returning None
      stats = None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(int(stats["peak_bytes_in_use"]))
  return max(peaks) if peaks else None


def _py(v: Any) -> Any:
  if isinstance(v, (dict, list, tuple, str)) or v is None:
    return v
  try:
    f = float(v)
  except (TypeError, ValueError):
    return str(v)
  return int(f) if isinstance(v, int) else (f if math.isfinite(f) else str(f))


def _fmt(v: Any) -> str:
  return f"{v:.4g}" if isinstance(v, float) else str(v)


def read_jsonl(path: paths.PathLike) -> list[dict[str, Any]]:
  """Rows of a metrics file sorted by (step, kind): a later row for the same step and kind
  replaces an earlier one, and a "resume" row at step S drops the rows after S written before
  it (the steps of the run it was resumed from that were redone)."""
  rows: dict[tuple[int, str], dict[str, Any]] = {}
  for line in paths.path(path).read_text().splitlines():
    if not line.strip():
      continue
    r = json.loads(line)
    kind = r.get("kind", "train")
    if kind == "resume":
      rows = {k: v for k, v in rows.items() if k[0] <= r["step"]}
    rows[(r["step"], kind)] = r
  return [rows[k] for k in sorted(rows)]


def curves_from_rows(rows: list[dict[str, Any]], key: str = "loss"
                     ) -> dict[str, tuple[list[int], list[float]]]:
  """{kind: (steps, values of `key`)} for the train and eval rows that have `key`."""
  out: dict[str, tuple[list[int], list[float]]] = {}
  for r in rows:
    kind = r.get("kind", "train")
    if kind in CURVE_KINDS and isinstance(r.get(key), (int, float)):
      xs, ys = out.setdefault(kind, ([], []))
      xs.append(r["step"])
      ys.append(float(r[key]))
  return out


def plot_curves(curves: Mapping[str, tuple[list[float], list[float]]], path: paths.PathLike,
                *, xlabel: str = "step", ylabel: str = "loss", title: str = "",
                xscale: str = "linear", yscale: str = "linear") -> None:
  """Saves a line plot of {label: (x, y)} to `path` (PNG, through epath); `xscale`/`yscale`
  are matplotlib axis scales ('linear', 'log')."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, (x, y) in curves.items():
    ax.plot(x, y, label=label, marker="o" if len(x) < 3 else None)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_xscale(xscale)
  ax.set_yscale(yscale)
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  paths.save_figure(fig, path, dpi=120)
  plt.close(fig)
