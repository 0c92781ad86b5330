"""Titans layouts as model-level compositions of a memory mixer with attention.

All four layouts wrap a sequence-level memory `memory(x_BxLxD) -> y_BxLxD` (TitansMemory, or any
mixer with that call shape) and `n_persistent` learned persistent-memory tokens P [Np, D]:

  LMM (memory alone):      y = M([P; x])[Np:]
  MAL (memory as a layer):  y = SWA(M([P; x])[Np:])
  MAG (memory as a gate):   y = RMSNorm(SWA_P(x)) * sigmoid(RMSNorm(M([P; x])[Np:]))
  MAC (memory as context):  h = M(x);  y = SegAttn_P(x, context = h)

SWA is sliding-window attention, SWA_P the same with the persistent tokens as extra key/value
pairs; SegAttn_P attends inside segments of length `window` to the segment's tokens and the
memory read-outs h of tokens at or before the query (plus the persistent tokens).

Derived, not read in the paper (choices, documented as such): the memory inside MAC writes
the block input x rather than the attention output, and MAC's final multiplicative read-out of
the memory at the attention output is left out (o = attention output); MAG's gate uses
RMSNorm + sigmoid on both branches. The memory's own chunked update keeps every layout causal.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tnx import validation
from tnx.nn.attention import Attention
from tnx.nn.layers import MAGGate

LAYOUTS = ("lmm", "mal", "mag", "mac")


class TitansLayout(nnx.Module):
  """One token mixer in a Titans layout.

  Args:
    layout: one of 'lmm', 'mal', 'mag', 'mac'.
    d_model, n_heads: width and attention heads.
    memory: the memory mixer (e.g. TitansMemory) called as memory(x_BxLxD) -> [B, L, D].
    window: sliding-window size (MAL/MAG) or segment length (MAC).
    n_persistent: number of persistent memory tokens (prepended for the memory; extra
      key/value pairs for the attention in MAG/MAC).
    attention_kwargs: rope_base / dtype / softmax_f32 for the attention.
  """

  def __init__(self, layout: str, d_model: int, n_heads: int, memory: nnx.Module, *,
               window: int, n_persistent: int, rngs: nnx.Rngs, dtype: Any = jnp.float32,
               **attention_kwargs: Any):
    self.layout = validation.one_of("layout", layout, LAYOUTS)
    validation.positive_int("window", window)
    self.n_persistent = validation.non_negative_int("n_persistent", n_persistent)
    self.memory = memory
    self.dtype = dtype
    prepend = layout in ("lmm", "mal", "mag")
    if prepend and n_persistent:
      self.persistent = nnx.Param(
          jax.random.normal(rngs.params(), (n_persistent, d_model), jnp.float32) * 0.02)
    if layout == "mal":
      self.attention = Attention(d_model, n_heads, mode="sliding", window=window,
                                 rngs=rngs, dtype=dtype, **attention_kwargs)
    elif layout in ("mag", "mac"):
      self.attention = Attention(d_model, n_heads,
                                 mode="sliding" if layout == "mag" else "segment",
                                 window=window, n_persistent=n_persistent, rngs=rngs,
                                 dtype=dtype, **attention_kwargs)
    if layout == "mag":
      self.mag = MAGGate(d_model, dtype=dtype)

  def _memory_with_prefix(self, x_BxLxD: jax.Array) -> jax.Array:
    if not self.n_persistent:
      return self.memory(x_BxLxD)
    b = x_BxLxD.shape[0]
    p_BxPxD = jnp.broadcast_to(self.persistent[...].astype(x_BxLxD.dtype),
                               (b,) + self.persistent.shape)
    y = self.memory(jnp.concatenate([p_BxPxD, x_BxLxD], axis=1))
    return y[:, self.n_persistent:]

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    if self.layout == "lmm":
      return self._memory_with_prefix(x_BxLxD)
    if self.layout == "mal":
      return self.attention(self._memory_with_prefix(x_BxLxD))
    if self.layout == "mag":
      return self.mag(self.attention(x_BxLxD), self._memory_with_prefix(x_BxLxD))
    h_BxLxD = self.memory(x_BxLxD)
    return self.attention(x_BxLxD, extra_BxLxD=h_BxLxD)


