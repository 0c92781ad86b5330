"""Titans layouts as model-level compositions of a memory mixer with attention.

All four layouts wrap a sequence-level memory `memory(x_BxLxD) -> y_BxLxD` (TitansMemory, an
ATLAS mixer, or any mixer with that call shape and, for decoding, prefill / init_cache /
decode) and `n_persistent` learned persistent-memory tokens P [Np, D]:

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
RMSNorm + sigmoid on both branches (`tnx.nn.layers.MAGGate`). The memory's own chunked update
keeps every layout causal. The ATLAS hybrids (arXiv 2505.23735 section 3.7, MAG and MAL) are
these layouts around an ATLAS mixer.

Decoding: the cache holds the memory's cache (after the persistent prefix) and the
attention's window cache, so `decode` equals the parallel forward token by token.
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
    dtype / param_dtype: compute and parameter dtypes of the attention and the gate.
    attention_kwargs: rope_base / softmax_f32 for the attention.
  """

  def __init__(self, layout: str, d_model: int, n_heads: int, memory: nnx.Module, *,
               window: int, n_persistent: int, rngs: nnx.Rngs, dtype: Any = jnp.float32,
               param_dtype: Any = jnp.float32, **attention_kwargs: Any):
    self.layout = validation.one_of("layout", layout, LAYOUTS)
    validation.positive_int("window", window)
    self.n_persistent = validation.non_negative_int("n_persistent", n_persistent)
    self.memory = memory
    self.dtype = dtype
    prepend = layout in ("lmm", "mal", "mag")
    self.n_prefix = n_persistent if prepend else 0
    if self.n_prefix:
      self.persistent = nnx.Param(
          jax.random.normal(rngs.params(), (n_persistent, d_model), param_dtype) * 0.02)
    if layout != "lmm":
      mode = "segment" if layout == "mac" else "sliding"
      self.attention = Attention(d_model, n_heads, mode=mode, window=window,
                                 n_persistent=0 if layout == "mal" else n_persistent,
                                 rngs=rngs, dtype=dtype, param_dtype=param_dtype,
                                 **attention_kwargs)
    if layout == "mag":
      self.mag = MAGGate(d_model, dtype=dtype, param_dtype=param_dtype)

  def _prefix(self, batch: int, dtype: Any) -> jax.Array:
    return jnp.broadcast_to(self.persistent[...].astype(dtype),
                            (batch,) + self.persistent.shape)

  def _memory(self, x_BxLxD: jax.Array, prefill: bool = False) -> Any:
    """M([P; x])[Np:] (and the memory cache after x when prefilling)."""
    x = x_BxLxD
    if self.n_prefix:
      x = jnp.concatenate([self._prefix(x.shape[0], x.dtype), x], axis=1)
    if prefill:
      y, cache = self.memory.prefill(x)
      return y[:, self.n_prefix:], cache
    return self.memory(x)[:, self.n_prefix:]

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    if self.layout == "lmm":
      return self._memory(x_BxLxD)
    if self.layout == "mal":
      return self.attention(self._memory(x_BxLxD))
    if self.layout == "mag":
      return self.mag(self.attention(x_BxLxD), self._memory(x_BxLxD))
    h_BxLxD = self.memory(x_BxLxD)
    return self.attention(x_BxLxD, extra_BxLxD=h_BxLxD)

  # -- decoding ----------------------------------------------------------------------------
  def prefill(self, x_BxLxD: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """Parallel forward plus the decode cache after the last token."""
    y_mem, memory_cache = self._memory(x_BxLxD, prefill=True)
    cache = {"memory": memory_cache}
    if self.layout == "lmm":
      return y_mem, cache
    if self.layout == "mal":
      y, cache["attention"] = self.attention.prefill(y_mem)
    elif self.layout == "mag":
      y_attn, cache["attention"] = self.attention.prefill(x_BxLxD)
      y = self.mag(y_attn, y_mem)
    else:
      y, cache["attention"] = self.attention.prefill(x_BxLxD, extra_BxLxD=y_mem)
    return y, cache

  def init_cache(self, batch: int) -> dict[str, Any]:
    """The cache before the first token (the memory has absorbed the persistent tokens)."""
    if self.n_prefix:
      _, memory_cache = self.memory.prefill(self._prefix(batch, self.dtype))
    else:
      memory_cache = self.memory.init_cache(batch)
    cache = {"memory": memory_cache}
    if self.layout != "lmm":
      cache["attention"] = self.attention.init_cache(batch, extra=self.layout == "mac")
    return cache

  def decode(self, x_BxD: jax.Array, cache: dict[str, Any]) -> tuple[jax.Array, dict[str, Any]]:
    """One token per sequence: [B, D] -> [B, D]."""
    y_mem, memory_cache = self.memory.decode(x_BxD, cache["memory"])
    new = {"memory": memory_cache}
    if self.layout == "lmm":
      return y_mem, new
    if self.layout == "mal":
      y, new["attention"] = self.attention.decode(y_mem, cache["attention"])
    elif self.layout == "mag":
      y_attn, new["attention"] = self.attention.decode(x_BxD, cache["attention"])
      y = self.mag(y_attn, y_mem)
    else:
      y, new["attention"] = self.attention.decode(x_BxD, cache["attention"], extra_BxD=y_mem)
    return y, new
