"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp


def block(x: Any) -> Any:
  return jax.tree.map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a,
                      x)


def time_fn(fn: Callable[[], Any], *, steps: int, warmup: int = 1,
            max_seconds: float | None = None) -> float:
  """Median wall time (s) of fn() after `warmup` calls; stops early past max_seconds."""
  for _ in range(warmup):
    block(fn())
  times = []
  start = time.perf_counter()
  for _ in range(steps):
    t0 = time.perf_counter()
    block(fn())
    times.append(time.perf_counter() - t0)
    if max_seconds is not None and time.perf_counter() - start > max_seconds:
      break
  times.sort()
  return times[len(times) // 2]


def add_cpu_devices_flag(parser) -> None:
  parser.add_argument("--cpu_devices", type=int, default=0,
                      help="split the CPU into this many JAX devices before JAX starts (0: one "
                           "device); the script's docstring says what runs on them")


def split_cpu(n: int) -> None:
  """`--cpu_devices`: before anything runs on JAX (0 leaves the default single device)."""
  if n:
    from tnx import sharding
    sharding.set_cpu_devices(n)


def spread_batch(params: Any, x: jax.Array, devices: int) -> tuple[Any, jax.Array]:
  """(params replicated, x [B, ...] split over the batch) on the first `devices` devices: the
  trainer's data parallelism; unchanged for devices <= 1."""
  if devices <= 1:
    return params, x
  from tnx import sharding
  mesh = sharding.make_mesh(data=devices)
  return jax.device_put(params, sharding.named(mesh)), jax.device_put(
      x, sharding.data_sharding(mesh))


def matmul_flops_per_second(n: int = 1024, dtype=jnp.float32, steps: int = 5) -> float:
  """Achieved FLOP/s of an n x n x n matmul in `dtype` on the default device."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
  f = jax.jit(lambda x, y: x @ y)
  sec = time_fn(lambda: f(a, b), steps=steps, warmup=2)
  return 2.0 * n**3 / sec


def compiled_peak_bytes(compiled: Any) -> float | None:
  """XLA's planned peak (arguments + outputs + temporaries) of a compiled function."""
  try:
    m = compiled.memory_analysis()
    return float(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)
  except Exception:  # some backends do not report memory analysis
    return None


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """Prints and returns a markdown table."""
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
  text = "\n".join(lines)
  print(text, flush=True)
  return text


def write_json(path: str, obj: Any) -> None:
  """Writes a benchmark's results as JSON (creating the folder; numpy scalars as floats)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f, indent=1, default=float)
