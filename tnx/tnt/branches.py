"""The TNT memory math as pure functions over arrays (no NNX), so it can be jitted, vmapped and
shard_mapped.

Global branch (TNT Eq. 5, 7): the chunked primitive with chunk C_G over the whole sequence,
never reset, read at the chunk-start state.

Local branch i (TNT Eq. 6, 7, with gradients at the chunk-start state): every shard of S_L
tokens starts from the learned W_init[i] and runs the chunked primitive with chunk C_L[i]; its
queries are the Q-K projected M_t q_t. Shards are independent, so full shards are folded into
the batch axis ([B, H, L] -> [B * L/S_L, H, S_L]); a final partial shard (L % S_L tokens)
runs on its own, so its end state is exact for decoding.

Output: o_t = global read + sum of local reads (or the mean / a learned weighted sum).

Shapes use the letters defined in `tnx.memory`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from tnx import validation
from tnx.memory import chunked
from tnx.memory import model as mm
from tnx.memory.inputs import MemoryInputs
from tnx.tnt import qk_projection as qkp
from tnx.tnt.config import TNTConfig


class MemoryParams(NamedTuple):
  """Outer parameters the math needs (compute dtype).

  global_init: V_0, leaves [H, ...] (None without a global memory).
  local_inits: W_init of each local memory, leaves [H, ...].
  lns: LN-residual {"scale", "bias"} [H, K] per memory (global first), or Nones.
  weights: [M, H] branch weights for combine="weighted", else None.
  """

  global_init: mm.State | None
  local_inits: tuple[mm.State, ...]
  lns: tuple[dict[str, jax.Array] | None, ...]
  weights: jax.Array | None


def fold_shards(x: jax.Array, shard_length: int) -> jax.Array:
  """[B, H, n * S, ...] -> [B * n, H, S, ...] (shard m of sequence b goes to row b * n + m)."""
  shard_length = validation.positive_int("shard_length", shard_length)
  b, h, length = x.shape[:3]
  if length % shard_length:
    raise ValueError(f"fold_shards needs a length that is a multiple of shard_length="
                     f"{shard_length}, got x of shape {list(x.shape)}")
  n = length // shard_length
  x = x.reshape((b, h, n, shard_length) + x.shape[3:])
  x = jnp.moveaxis(x, 2, 1)
  return x.reshape((b * n, h, shard_length) + x.shape[4:])


def unfold_shards(x: jax.Array, batch: int) -> jax.Array:
  """Inverse of `fold_shards`: [B * n, H, S, ...] -> [B, H, n * S, ...]."""
  batch = validation.positive_int("batch", batch)
  bn, h, s = x.shape[:3]
  if bn % batch:
    raise ValueError(f"unfold_shards needs a leading axis that is a multiple of batch={batch}, "
                     f"got x of shape {list(x.shape)}")
  n = bn // batch
  x = x.reshape((batch, n, h, s) + x.shape[3:])
  x = jnp.moveaxis(x, 1, 2)
  return x.reshape((batch, h, n * s) + x.shape[4:])


def _slice(inp: MemoryInputs, start: int, stop: int) -> MemoryInputs:
  return type(inp)(*(None if a is None else a[:, :, start:stop] for a in inp))


def _check_inputs(name: str, inp: MemoryInputs, like: MemoryInputs | None = None) -> None:
  """q [B, H, L, K] with B, L >= 1, the other fields against it (before shards are folded);
  with `like`, the same q shape as like.q (every memory reads the same tokens)."""
  q = inp.q
  if q.ndim != 4 or 0 in q.shape[:3]:
    raise ValueError(f"{name}.q must have shape [B, H, L, K] with B, L >= 1, got "
                     f"{list(q.shape)}")
  if like is not None and q.shape != like.q.shape:
    raise ValueError(f"{name}.q must have the shape of the first memory's q "
                     f"{list(like.q.shape)}, got {list(q.shape)}")
  lead = tuple(q.shape[:3])
  validation.shape(f"{name}.k", inp.k, q.shape)
  validation.shape(f"{name}.v", inp.v, lead + (None,))
  for field in ("lr", "log_mom_decay", "log_retention"):
    x = getattr(inp, field)
    if x is not None or field == "lr":
      validation.shape(f"{name}.{field}", x, lead)


def memory_rule(cfg: TNTConfig, retrieval: str = "intra_chunk") -> chunked.UpdateRule:
  """The update of every TNT memory: gradient descent, or Titans momentum (lr inside)."""
  return chunked.UpdateRule(optimizer="momentum" if cfg.momentum else "gd",
                            inner_loss=cfg.inner_loss, retrieval=retrieval)


def global_branch(cfg: TNTConfig, state0: mm.State | None, inp: MemoryInputs,
                  ln: dict[str, jax.Array] | None = None, *,
                  carry: chunked.MemoryCarry | None = None
                  ) -> tuple[jax.Array, chunked.MemoryCarry]:
  """Global memory over the whole sequence from state0 (leaves [H, ...]) or from a carry
  (leaves [B, H, ...], e.g. handed over from the previous block; state0 None). Returns
  (o [B, H, L, K], carry after the end).

  With chunk-start retrieval (TNT's setting) the primitive only forms the end-of-chunk
  coefficients, O(C_G) per chunk without momentum (never the C_G x C_G matrix).
  """
  _check_inputs("inp", inp)
  return chunked.chunked_memory(
      cfg.memory, state0, inp.q, inp.k, inp.v, inp.lr, chunk_size=cfg.global_chunk_size,
      rule=memory_rule(cfg, cfg.global_retrieval), log_mom_decay=inp.log_mom_decay,
      log_retention=inp.log_retention, ln=ln, carry=carry, remat_group=cfg.remat_group)


def project_queries(cfg: TNTConfig, q: jax.Array, k: jax.Array, chunk_size: int) -> jax.Array:
  """Local queries of one shard-aligned piece [B, H, S, K] (identity without projection)."""
  if not cfg.qk_projection:
    return q
  reset = None if cfg.qk_scope == "shard" else chunk_size
  return qkp.qk_project(q, k, reset_every=reset, rescale=cfg.qk_rescale)


def _local_piece(cfg, state0, inp: MemoryInputs, ln, chunk_size):
  q = project_queries(cfg, inp.q, inp.k, chunk_size)
  return chunked.chunked_memory(
      cfg.memory, state0, q, inp.k, inp.v, inp.lr, chunk_size=chunk_size, rule=memory_rule(cfg),
      log_mom_decay=inp.log_mom_decay, log_retention=inp.log_retention, ln=ln,
      remat_group=cfg.remat_group)


def local_branch(cfg: TNTConfig, state0: mm.State, inp: MemoryInputs, *, chunk_size: int,
                 shard_length: int, ln: dict[str, jax.Array] | None = None
                 ) -> tuple[jax.Array, chunked.MemoryCarry]:
  """One local memory: reset to `state0` (leaves [H, ...]) every `shard_length` tokens.

  Returns (o [B, H, L, K], carry of the shard in progress at the end of the sequence; when L
  is a multiple of S_L the next token starts a new shard and resets anyway).
  """
  _check_inputs("inp", inp)
  shard_length = validation.positive_int("shard_length", shard_length)
  batch, _, length = inp.q.shape[:3]
  n_full, rem = divmod(length, shard_length)
  outs, carry = [], None
  if n_full:
    full = _slice(inp, 0, n_full * shard_length)
    folded = type(full)(*(None if a is None else fold_shards(a, shard_length) for a in full))
    o, carry = _local_piece(cfg, state0, folded, ln, chunk_size)
    outs.append(unfold_shards(o, batch))
    carry = jax.tree.map(lambda x: x.reshape((batch, n_full) + x.shape[1:])[:, -1], carry)
  if rem:
    o, carry = _local_piece(cfg, state0, _slice(inp, n_full * shard_length, length), ln,
                            chunk_size)
    outs.append(o)
  return (outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=2)), carry


def combine(cfg: TNTConfig, reads: Sequence[jax.Array], weights: jax.Array | None
            ) -> jax.Array:
  """Combines the memory reads [B, H, L, K] (global first) into one [B, H, L, K]."""
  if not reads or any(r.shape != reads[0].shape for r in reads):
    raise ValueError(f"reads must be one or more arrays of one shape [B, H, L, K], got "
                     f"{[list(r.shape) for r in reads]}")
  if cfg.combine == "weighted":
    want = (len(reads), reads[0].shape[1])
    if weights is None or tuple(weights.shape) != want:
      raise ValueError(f"combine='weighted' needs weights of shape {list(want)} (memories, "
                       f"heads), got {None if weights is None else list(weights.shape)}")
    return sum(r * weights[i][None, :, None, None].astype(r.dtype) for i, r in enumerate(reads))
  total = sum(reads)
  return total / len(reads) if cfg.combine == "mean" else total


GlobalFn = Callable[[TNTConfig, mm.State, MemoryInputs, Any], tuple[jax.Array, Any]]


def _default_global(cfg, state0, inp, ln):
  return global_branch(cfg, state0, inp, ln)


def tnt_mix(cfg: TNTConfig, params: MemoryParams, inputs: Sequence[MemoryInputs], *,
            global_fn: GlobalFn = _default_global, return_carries: bool = False) -> Any:
  """All TNT memories and their combination.

  Args:
    cfg: configuration (chunk sizes, shard lengths, projection, combination).
    params: outer parameters (see MemoryParams).
    inputs: one MemoryInputs per memory, the global one first (when cfg.use_global).
    global_fn: how the global chain is computed (replaced under context parallelism).
    return_carries: also return (global carry, local carries) for decoding.
  Returns:
    o [B, H, L, K], or (o, (global_carry | None, [local carries])).
  """
  if len(inputs) != cfg.num_memories:
    raise ValueError(f"inputs must hold {cfg.num_memories} MemoryInputs (global first), got "
                     f"{len(inputs)}")
  if len(params.local_inits) != cfg.num_locals:
    raise ValueError(f"params.local_inits must hold one state per local memory "
                     f"({cfg.num_locals}, local_chunk_sizes={cfg.local_chunk_sizes}), got "
                     f"{len(params.local_inits)}")
  if len(params.lns) != cfg.num_memories:
    raise ValueError(f"params.lns must hold one entry per memory ({cfg.num_memories}), got "
                     f"{len(params.lns)}")
  if (params.global_init is None) == cfg.use_global:
    raise ValueError(f"params.global_init must be {'given' if cfg.use_global else 'None'} "
                     f"with use_global={cfg.use_global}")
  for i, inp in enumerate(inputs):
    _check_inputs(f"inputs[{i}]", inp, inputs[0] if i else None)
  want = (cfg.num_memories, inputs[0].q.shape[1])
  if cfg.combine == "weighted" and (params.weights is None or
                                    tuple(params.weights.shape) != want):
    raise ValueError(f"combine='weighted' needs params.weights of shape {list(want)} "
                     f"(memories, heads), got "
                     f"{None if params.weights is None else list(params.weights.shape)}")
  reads, g_carry, l_carries = [], None, []
  offset = int(cfg.use_global)
  if cfg.use_global:
    o, g_carry = global_fn(cfg, params.global_init, inputs[0], params.lns[0])
    reads.append(o)
  for i, (c, s) in enumerate(zip(cfg.local_chunk_sizes, cfg.shard_lengths)):
    o, carry = local_branch(cfg, params.local_inits[i], inputs[offset + i], chunk_size=c,
                            shard_length=s, ln=params.lns[offset + i])
    reads.append(o)
    l_carries.append(carry)
  out = combine(cfg, reads, params.weights)
  return (out, (g_carry, l_carries)) if return_carries else out
