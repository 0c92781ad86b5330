"""Context (sequence) parallelism for TNT with `tnx.sharding.shard_map`.

The sequence axis of the memory inputs is split over the mesh axis `cfg.context_axis` (P
devices, block length L/P each); the batch axis over the mesh's data/fsdp axes. Each device
runs its local shards from W_init with no communication (blocks must be multiples of every
S_L). The global chain is serial across devices and is computed exactly in one of two ways:

* "allgather": all-gather the global memory's q, k, v and gates along the context axis and
  run the whole chain on every device, keeping the device's own block of outputs.
  Communication per layer and step: forward (P-1)/P * B_loc * H * L * (3K + g) numbers
  received per device (g = number of gates: 1 + momentum + forget); the backward pass
  reduce-scatters the same volume. Compute: the full global chain (L / C_G chunk steps) on
  every device, i.e. no speed-up of the global path, which is cheap (few, large chunks).
* "ring": device p waits for the global state at the start of its block from device p-1
  (`ppermute`). Implemented as P rounds in which every device runs its block from the state
  it last received and forwards its end state; after round p device p holds the exact state.
  Communication: (P-1) hops of the state (B_loc * |V| numbers, plus momentum) per device,
  independent of L; compute: P block-length chains per device (the same as "allgather").
  Requires C_G to divide L/P.

Both are exact: outputs and gradients equal the single-device `branches.tnt_mix`.

The shard_map runs with `check_vma=True` (varying-manual-axes typing): the memory core
builds its inner-gradient perturbation and scan carries with the type of the per-device
tokens, so per-token inner gradients stay per device, while cotangents of the replicated
outer parameters are summed over the mesh by shard_map's transpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from tnx import sharding
from tnx.memory import chunked
from tnx.memory.inputs import MemoryInputs
from tnx.tnt import branches
from tnx.tnt.config import TNTConfig, check_context_lengths


def context_size(mesh: Any, axis: str) -> int:
  """Size of `axis` in `mesh` (1 when the mesh is None/empty or lacks the axis)."""
  if mesh is None or getattr(mesh, "empty", False):
    return 1
  return dict(mesh.shape).get(axis, 1)


def _batch_axes(mesh: Any, context_axis: str) -> tuple[str, ...]:
  names = [n for n in mesh.axis_names if n != context_axis]
  return tuple(n for n in (sharding.DATA, sharding.FSDP) if n in names)


def _allgather_global(axis: str):
  def run(cfg, state0, inp, ln):
    gather = lambda a: None if a is None else lax.all_gather(a, axis, axis=2, tiled=True)
    full = type(inp)(*(gather(a) for a in inp))
    o, _ = branches.global_branch(cfg, state0, full, ln)
    block = inp.q.shape[2]
    return lax.dynamic_slice_in_dim(o, lax.axis_index(axis) * block, block, axis=2), None
  return run


def _ring_global(axis: str, num_devices: int):
  def run(cfg, state0, inp, ln):
    idx = lax.axis_index(axis)
    # The added zero gives the carry the inputs' varying type, as the scan carry must
    # (check_vma).
    zero = jnp.zeros_like(inp.q[0, 0, 0, 0])
    start = jax.tree.map(lambda x: x + zero.astype(x.dtype),
                         chunked.init_carry(state0, inp.q.shape[0], branches.memory_rule(cfg)))
    perm = [(i, (i + 1) % num_devices) for i in range(num_devices)]

    def block_run(carry):
      return branches.global_branch(cfg, None, inp, ln, carry=carry)

    def round_(carry, _):
      _, end = block_run(carry)
      recv = lax.ppermute((end.weights, end.momentum), axis, perm)
      first = idx == 0  # device 0 always starts from V_0
      pick = lambda a, b: jax.tree.map(lambda x, y: jnp.where(first, x, y), a, b)
      state = pick(start.weights, recv[0])
      return carry._replace(anchor=state, weights=state,
                            momentum=pick(start.momentum, recv[1])), None

    carry, _ = lax.scan(round_, start, None, length=num_devices - 1)
    return block_run(carry)[0], None
  return run


def tnt_mix_context_parallel(cfg: TNTConfig, params: branches.MemoryParams,
                             inputs: Sequence[MemoryInputs], mesh: Any) -> jax.Array:
  """`branches.tnt_mix` with the sequence sharded over `cfg.context_axis` of `mesh`.

  Args:
    cfg: TNT configuration (`global_cp` picks the global strategy).
    params: replicated outer parameters.
    inputs: per-memory MemoryInputs with global shapes [B, H, L, K] / [B, H, L].
    mesh: a Mesh or AbstractMesh containing `cfg.context_axis`.
  Returns:
    o [B, H, L, K], sharded like the inputs.
  """
  axis = cfg.context_axis
  if mesh is None or axis not in mesh.axis_names:
    raise ValueError(f"mesh must have a {axis!r} axis for context parallelism, got {mesh}")
  p = context_size(mesh, axis)
  length = inputs[0].q.shape[2]
  check_context_lengths(cfg, length, p)
  batch_axes = _batch_axes(mesh, axis)
  n_batch = 1
  for a in batch_axes:
    n_batch *= dict(mesh.shape)[a]
  if inputs[0].q.shape[0] % n_batch:
    raise ValueError(f"batch {inputs[0].q.shape[0]} must be divisible by the product of the "
                     f"mesh axes {batch_axes} ({n_batch})")
  bspec = batch_axes if batch_axes else None
  seq4 = jax.P(bspec, None, axis, None)
  seq3 = jax.P(bspec, None, axis)
  in_spec_inputs = [type(inp)(*(None if a is None else (seq4 if a.ndim == 4 else seq3)
                                for a in inp)) for inp in inputs]
  param_spec = jax.tree.map(lambda _: jax.P(), params)
  global_fn = (_ring_global(axis, p) if cfg.global_cp == "ring" else _allgather_global(axis))

  def body(prm, inps):
    return branches.tnt_mix(cfg, prm, inps, global_fn=global_fn)

  fn = sharding.shard_map(body, mesh=mesh, in_specs=(param_spec, in_spec_inputs),
                          out_specs=seq4, check_vma=True)
  return fn(params, list(inputs))

