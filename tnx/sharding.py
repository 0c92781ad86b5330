"""Meshes, partition specs and multi-host start-up, in one place.

Axis names are fixed across tnx: `data` (batch), `fsdp` (parameter sharding), `context`
(sequence / context parallelism). Meshes always state their axis types; tnx uses `Auto` axes so
that jit-level sharding propagation works without explicit-mode resharding, and enters manual
mode only inside `shard_map` at the context-parallel boundary (tnx.tnt).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from tnx import validation

DATA, FSDP, CONTEXT = "data", "fsdp", "context"
AXES = (DATA, FSDP, CONTEXT)


def make_mesh(data: int = -1, fsdp: int = 1, context: int = 1,
              devices: list[Any] | None = None) -> Mesh:
  """Builds a (data, fsdp, context) mesh with `Auto` axis types.

  Args:
    data: size of the data axis; -1 takes all devices left after fsdp * context.
    fsdp: size of the fsdp axis.
    context: size of the context (sequence) axis.
    devices: devices to use (default: all of `jax.devices()`).
  """
  devices = list(jax.devices()) if devices is None else list(devices)
  n = len(devices)
  fsdp = validation.positive_int("fsdp", fsdp)
  context = validation.positive_int("context", context)
  if data == -1:
    if n % (fsdp * context):
      raise ValueError(f"fsdp * context = {fsdp * context} must divide the device count {n}")
    data = n // (fsdp * context)
  data = validation.positive_int("data", data)
  if data * fsdp * context > n:
    raise ValueError(f"mesh data*fsdp*context = {data * fsdp * context} exceeds the {n} devices")
  return jax.make_mesh((data, fsdp, context), AXES, axis_types=(AxisType.Auto,) * 3,
                       devices=devices[: data * fsdp * context])


def named(mesh: Mesh, *spec: Any) -> NamedSharding:
  """NamedSharding for `PartitionSpec(*spec)` on `mesh`."""
  return NamedSharding(mesh, PartitionSpec(*spec))


def batch_spec(with_context: bool = False) -> PartitionSpec:
  """Spec of a [B, L, ...] activation: batch over (data, fsdp), sequence over context."""
  return PartitionSpec((DATA, FSDP), CONTEXT if with_context else None)


def shard_map(f: Callable[..., Any], *, mesh: Mesh, in_specs: Any, out_specs: Any,
              axis_names: frozenset[str] | set[str] | None = None,
              check_vma: bool = True) -> Callable[..., Any]:
  """The one call site of `jax.shard_map` in tnx (keeps API churn in one module)."""
  kwargs: dict[str, Any] = dict(mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                                check_vma=check_vma)
  if axis_names is not None:
    kwargs["axis_names"] = frozenset(axis_names)
  return jax.shard_map(f, **kwargs)


def set_cpu_devices(n: int) -> None:
  """Splits this host's CPU into `n` JAX devices (`jax_num_cpu_devices`); call before JAX runs.

  XLA's CPU backend runs each of the memory primitive's small per-head matmuls (C x K x 4K)
  on one core, so a single CPU device leaves the other cores mostly idle. With n devices the
  trainer's data parallelism (mesh.data = -1) runs a slice of the batch on each: 1.5-1.8x per
  step for the main job on the 2-core CPU (docs/benchmarks.md). The batch per step must
  divide by n (the trainer checks). Data-parallel sums change the float rounding, so a run
  resumes exactly only with the device count it started with.

  Raises ValueError if n is not a positive int, or if JAX already started in this process
  with a different number of CPU devices.
  """
  n = validation.positive_int("cpu_devices", n)
  try:
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError:  # backends already initialized: fine only if the count is the same
    have = len(jax.devices("cpu"))
    if have != n:
      raise ValueError(f"cpu_devices={n}: JAX already started in this process with {have} CPU "
                       "devices; the CPU must be split before the first JAX operation (pass "
                       "it on the command line of a fresh process)") from None


def maybe_initialize_distributed() -> None:
  """Calls `jax.distributed.initialize()` when TNX_DISTRIBUTED=1 (set by launch/ scripts).

  Must run before any JAX computation. On a single host without the variable it does nothing.
  """
  if os.environ.get("TNX_DISTRIBUTED", "0") == "1":
    jax.distributed.initialize()


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int = 1 << 14) -> PartitionSpec:
  """FSDP rule for one array: shard its largest dimension divisible by the fsdp axis size over
  `fsdp` when the array has at least `min_size` elements; otherwise replicate."""
  if fsdp_size <= 1 or not shape or math.prod(shape) < min_size:
    return PartitionSpec()
  for dim in sorted(range(len(shape)), key=lambda i: -shape[i]):
    if shape[dim] % fsdp_size == 0:
      spec: list[Any] = [None] * len(shape)
      spec[dim] = FSDP
      return PartitionSpec(*spec)
  return PartitionSpec()


def tree_shardings(tree: Any, mesh: Mesh, min_size: int = 1 << 14) -> Any:
  """NamedShardings for every array leaf of `tree` (params, optimizer state, ...) by
  `fsdp_spec`; scalars and small arrays are replicated. Leaves need `.shape`."""
  size = mesh.shape[FSDP]
  return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(tuple(x.shape), size, min_size)),
                      tree)


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a [B, L] batch: batch over (data, fsdp), sequence over context when the
  context axis has more than one device."""
  return NamedSharding(mesh, batch_spec(with_context=mesh.shape[CONTEXT] > 1))


def to_global(local_batch: Any, sharding: NamedSharding) -> Any:
  """Process-local numpy batch (this host's rows) -> global jax.Arrays on `sharding`."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x),
                      local_batch)
