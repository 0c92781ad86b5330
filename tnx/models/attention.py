"""Causal multi-head attention: full, sliding-window or segmented, with persistent tokens.

The mask is built once per call as an [L, L] boolean array:
  full:     j <= i
  sliding:  j <= i and i - j < window          (Titans MAG/MAL attention)
  segment:  j <= i and j // window == i // window  (Titans MAC: attention inside a segment)
Persistent memory tokens are learned key/value pairs visible to every query (no position).
An optional second source `extra_BxLxD` (Titans MAC memory read-outs) is projected by the same
key/value maps, rotated with the position of its token, and masked like the main sequence.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tnx import validation
from tnx.models.layers import linear, rope

MASK_MODES = ("full", "sliding", "segment")


def causal_mask(length: int, mode: str = "full", window: int | None = None) -> jax.Array:
  """Boolean [L, L] mask, True where query i may attend to key j (see module docstring)."""
  validation.one_of("mode", mode, MASK_MODES)
  i = jnp.arange(length)[:, None]
  j = jnp.arange(length)[None, :]
  mask = j <= i
  if mode != "full":
    validation.positive_int("window", window)
    if mode == "sliding":
      mask &= (i - j) < window
    else:
      mask &= (j // window) == (i // window)
  return mask


def attend(q_BxLxHxK: jax.Array, k_BxSxHxK: jax.Array, v_BxSxHxK: jax.Array,
           mask_LxS: jax.Array, *, softmax_f32: bool = True) -> jax.Array:
  """softmax(q k^T / sqrt(K) masked) v; returns [B, L, H, K] in q's dtype."""
  scale = q_BxLxHxK.shape[-1] ** -0.5
  logits_BxHxLxS = jnp.einsum("blhk,bshk->bhls", q_BxLxHxK, k_BxSxHxK) * scale
  if softmax_f32:  # Precision: the softmax is always taken in float32 when requested.
    logits_BxHxLxS = logits_BxHxLxS.astype(jnp.promote_types(logits_BxHxLxS.dtype,
                                                              jnp.float32))
  logits_BxHxLxS = jnp.where(mask_LxS[None, None], logits_BxHxLxS,
                             jnp.finfo(logits_BxHxLxS.dtype).min)
  probs = jax.nn.softmax(logits_BxHxLxS, axis=-1).astype(v_BxSxHxK.dtype)
  return jnp.einsum("bhls,bshk->blhk", probs, v_BxSxHxK)


class Attention(nnx.Module):
  """Multi-head causal self-attention with RoPE.

  Args:
    d_model: width D; n_heads: H (D % H == 0, head dim even).
    mode: 'full', 'sliding' or 'segment' (see module docstring); window: size for the latter.
    n_persistent: number of learned persistent key/value tokens (0 = none).
    rope_base: RoPE frequency base.
    dtype: compute dtype; softmax_f32: take the softmax in float32.
  """

  def __init__(self, d_model: int, n_heads: int, *, mode: str = "full",
               window: int | None = None, n_persistent: int = 0, rope_base: float = 10000.0,
               dtype: Any = jnp.float32, softmax_f32: bool = True, rngs: nnx.Rngs):
    validation.positive_int("d_model", d_model)
    validation.positive_int("n_heads", n_heads)
    if d_model % n_heads:
      raise ValueError(f"n_heads={n_heads} must divide d_model={d_model}")
    validation.one_of("mode", mode, MASK_MODES)
    if mode != "full":
      validation.positive_int("window", window)
    validation.non_negative_int("n_persistent", n_persistent)
    self.n_heads, self.head_dim = n_heads, d_model // n_heads
    self.mode, self.window, self.n_persistent = mode, window, n_persistent
    self.rope_base, self.dtype, self.softmax_f32 = rope_base, dtype, softmax_f32
    self.qkv = linear(d_model, 3 * d_model, dtype=dtype, rngs=rngs)
    self.out = linear(d_model, d_model, dtype=dtype, rngs=rngs)
    if n_persistent:
      shape = (n_persistent, n_heads, self.head_dim)
      self.persistent_k = nnx.Param(jax.random.normal(rngs.params(), shape, jnp.float32))
      self.persistent_v = nnx.Param(jax.random.normal(rngs.params(), shape, jnp.float32) * 0.02)

  def _project(self, x_BxLxD: jax.Array, positions_L: jax.Array):
    b, l, _ = x_BxLxD.shape
    q, k, v = jnp.split(self.qkv(x_BxLxD).reshape(b, l, 3 * self.n_heads, self.head_dim), 3,
                        axis=2)
    return rope(q, positions_L, self.rope_base), rope(k, positions_L, self.rope_base), v

  def __call__(self, x_BxLxD: jax.Array, extra_BxLxD: jax.Array | None = None) -> jax.Array:
    b, l, d = x_BxLxD.shape
    positions_L = jnp.arange(l)
    q, k, v = self._project(x_BxLxD, positions_L)
    mask_LxS = causal_mask(l, self.mode, self.window)
    keys, values, masks = [k], [v], [mask_LxS]
    if extra_BxLxD is not None:
      _, k2, v2 = self._project(extra_BxLxD.astype(x_BxLxD.dtype), positions_L)
      keys.append(k2)
      values.append(v2)
      masks.append(mask_LxS)
    if self.n_persistent:
      p = self.n_persistent
      pk = jnp.broadcast_to(self.persistent_k[...].astype(k.dtype), (b, p) + k.shape[2:])
      pv = jnp.broadcast_to(self.persistent_v[...].astype(v.dtype), (b, p) + v.shape[2:])
      keys.insert(0, pk)
      values.insert(0, pv)
      masks.insert(0, jnp.ones((l, p), bool))
    o = attend(q, jnp.concatenate(keys, 1), jnp.concatenate(values, 1),
               jnp.concatenate(masks, 1), softmax_f32=self.softmax_f32)
    return self.out(o.reshape(b, l, d))
