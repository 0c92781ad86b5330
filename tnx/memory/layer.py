"""Shared scaffolding of the memory token mixers (Titans, TTT): a learnable initial memory
state, the parallel forward through `chunked_memory`, prefill, and the one-token decode step.

Subclasses define three hooks: `_conv_inputs(x)` (the projections [B, L, H*K] that go through
`self.convs`), `_project(x_BxLxD, conv_state)` (per-head q, k, v, lr and gates as
`MemoryInputs`, plus the updated conv caches; conv_state is None for a whole sequence) and
`_output(x_BxLxD, o_BxHxLxK)` (the read-out path back to [B, L, D]).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tnx.memory import chunked
from tnx.memory import model as mm


@dataclasses.dataclass
class MemoryInputs:
  q: jax.Array            # [B, H, L, K]
  k: jax.Array            # [B, H, L, K]
  v: jax.Array            # [B, H, L, K]
  lr: jax.Array           # [B, H, L]
  mom_decay: jax.Array | None = None
  forget: jax.Array | None = None


class MemoryLayer(nnx.Module):
  """Base class; `self.cfg` must provide memory, chunk_size, retrieval, inner_loss,
  remat_group, learn_init, and `self.num_heads`, `self.head_dim` must be set."""

  cfg: Any
  num_heads: int
  head_dim: int

  def _init_memory(self, rngs: nnx.Rngs, ln: bool) -> None:
    dt = getattr(self.cfg, "param_dtype", jnp.float32)
    state = mm.init_state(self.cfg.memory, rngs.params(), self.head_dim, self.num_heads, dt)
    kind = nnx.Param if self.cfg.learn_init else nnx.Variable
    self.init_state = nnx.List([nnx.Dict({n: kind(x) for n, x in layer.items()})
                                for layer in state])
    if ln:
      p = mm.init_ln(self.head_dim, self.num_heads, dt)
      self.mem_ln = nnx.Dict({n: nnx.Param(x) for n, x in p.items()})
    else:
      self.mem_ln = None

  def memory_state0(self) -> mm.State:
    """Initial fast weights, leaves [H, ...], in the compute dtype."""
    dt = getattr(self.cfg, "dtype", jnp.float32)
    return tuple({n: v[...].astype(dt) for n, v in layer.items()} for layer in self.init_state)

  def memory_ln(self) -> dict[str, jax.Array] | None:
    dt = getattr(self.cfg, "dtype", jnp.float32)
    return None if self.mem_ln is None else {n: v[...].astype(dt) for n, v in self.mem_ln.items()}

  def _memory_kwargs(self) -> dict[str, Any]:
    c = self.cfg
    return dict(chunk_size=c.chunk_size, retrieval=c.retrieval, inner_loss=c.inner_loss,
                ln=self.memory_ln())

  # -- causal convolutions (self.convs: list of CausalDepthwiseConv, or None) -------------
  def _convolve(self, raw: list[jax.Array], conv_state: Any
                ) -> tuple[list[jax.Array], list[jax.Array] | None]:
    """Applies the convs over a sequence (conv_state None) or one decode step."""
    if self.convs is None:
      return raw, None
    if conv_state is None:
      return [conv(r) for conv, r in zip(self.convs, raw)], None
    outs = [conv.step(r[:, 0], c) for conv, r, c in zip(self.convs, raw, conv_state[0])]
    return [o[:, None] for o, _ in outs], [c for _, c in outs]

  def _conv_cache_after(self, x: jax.Array) -> Any:
    if self.convs is None:
      return None
    raw = self._conv_inputs(x.astype(self.cfg.dtype))
    return [conv.cache_from(r) for conv, r in zip(self.convs, raw)]

  def init_cache(self, batch: int) -> dict[str, Any]:
    """Decode cache before the first token."""
    hk = self.num_heads * self.head_dim
    conv = None if self.convs is None else [c.init_cache(batch, hk) for c in self.convs]
    return self._fresh_cache(batch, conv)

  # -- forward paths -------------------------------------------------------------------
  def _run(self, x_BxLxD: jax.Array) -> tuple[jax.Array, chunked.MemoryCarry]:
    inp, _ = self._project(x_BxLxD, None)
    o, carry = chunked.chunked_memory(
        self.cfg.memory, self.memory_state0(), inp.q, inp.k, inp.v, inp.lr,
        mom_decay=inp.mom_decay, forget=inp.forget, remat_group=self.cfg.remat_group,
        **self._memory_kwargs())
    return self._output(x_BxLxD, o), carry

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    """Parallel (chunked) forward: [B, L, D] -> [B, L, D]."""
    return self._run(x_BxLxD)[0]

  def prefill(self, x_BxLxD: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """Parallel forward that also returns the decode cache after the last token."""
    y, carry = self._run(x_BxLxD)
    return y, {"memory": carry, "conv": self._conv_cache_after(x_BxLxD),
               "pos": jnp.full((x_BxLxD.shape[0],), x_BxLxD.shape[1], jnp.int32)}

  def decode(self, x_BxD: jax.Array, cache: dict[str, Any]
             ) -> tuple[jax.Array, dict[str, Any]]:
    """One token per sequence: [B, D] -> [B, D], constant-size cache."""
    inp, conv = self._project(x_BxD[:, None], (cache["conv"], cache["pos"]))
    sq = lambda a: None if a is None else a[:, :, 0]
    o, carry = chunked.decode_step(
        self.cfg.memory, cache["memory"], sq(inp.q), sq(inp.k), sq(inp.v), sq(inp.lr),
        mom_decay=sq(inp.mom_decay), forget=sq(inp.forget), **self._memory_kwargs())
    y = self._output(x_BxD[:, None], o[:, :, None])[:, 0]
    return y, {"memory": carry, "conv": conv, "pos": cache["pos"] + 1}

  def _fresh_cache(self, batch: int, conv: Any) -> dict[str, Any]:
    carry = chunked.init_carry(self.memory_state0(), batch,
                               momentum=getattr(self.cfg, "momentum", False))
    return {"memory": carry, "conv": conv, "pos": jnp.zeros((batch,), jnp.int32)}
