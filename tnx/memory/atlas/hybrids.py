"""Sliding-window attention with a decode cache, and the MAG/MAL compositions of ATLAS 3.7.

  MAL (memory as a layer): y = SWA(M(x))
  MAG (memory as a gate):  y = RMSNorm(SWA(x)) * sigmoid(RMSNorm(M(x)))
The gate form follows the Titans layout used elsewhere in tnx (`tnx.models.titans_layouts`);
the paper gives no formula (derived, a choice). The SWA window used in the paper is not stated
(open item): it is a config field. SWA here is causal softmax attention over the last `window`
tokens (query included) with RoPE at absolute positions; decode keeps a ring of window - 1
rotated keys/values, so its state is constant size.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tnx import validation
from tnx.memory import blocks

HYBRIDS = ("none", "mag", "mal")


def _rope(x_BxHxLxK: jax.Array, pos_BxL: jax.Array, base: float) -> jax.Array:
  k = x_BxHxLxK.shape[-1]
  inv = 1.0 / base ** (jnp.arange(0, k, 2, dtype=jnp.float32) / k)
  ang = pos_BxL.astype(jnp.float32)[:, None, :, None] * inv
  cos, sin = jnp.cos(ang).astype(x_BxHxLxK.dtype), jnp.sin(ang).astype(x_BxHxLxK.dtype)
  x1, x2 = x_BxHxLxK[..., : k // 2], x_BxHxLxK[..., k // 2:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class RMSNorm(nnx.Module):
  """x / rms(x) * scale over the last axis (statistics in at least float32)."""

  def __init__(self, dim: int, eps: float = 1e-6, param_dtype: Any = jnp.float32):
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + self.eps)
    return (y * self.scale[...]).astype(x.dtype)


class SlidingWindowAttention(nnx.Module):
  """Causal multi-head attention over the last `window` tokens: [B, L, D] -> [B, L, D]."""

  def __init__(self, d_model: int, num_heads: int, window: int, *, rngs: nnx.Rngs,
               rope_base: float = 10000.0, dtype: Any = jnp.float32,
               param_dtype: Any = jnp.float32):
    validation.positive_int("d_model", d_model)
    validation.positive_int("num_heads", num_heads)
    self.window = validation.positive_int("window", window)
    if d_model % num_heads or (d_model // num_heads) % 2:
      raise ValueError(f"num_heads={num_heads} must divide d_model={d_model} into even heads")
    self.num_heads, self.rope_base, self.dtype = num_heads, rope_base, dtype
    lin = lambda i, o: nnx.Linear(i, o, use_bias=False, dtype=dtype, param_dtype=param_dtype,
                                  rngs=rngs)
    self.qkv, self.out = lin(d_model, 3 * d_model), lin(d_model, d_model)

  def _qkv(self, x: jax.Array, pos_BxL: jax.Array):
    q, k, v = jnp.split(self.qkv(x.astype(self.dtype)), 3, axis=-1)
    q, k, v = (blocks.split_heads(t, self.num_heads) for t in (q, k, v))
    return _rope(q, pos_BxL, self.rope_base), _rope(k, pos_BxL, self.rope_base), v

  def _attend(self, q, k, v, mask_BxLxS):
    logits = jnp.einsum("bhlk,bhsk->bhls", q, k) * q.shape[-1] ** -0.5
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    logits = jnp.where(mask_BxLxS[:, None], logits, jnp.finfo(logits.dtype).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return self.out(blocks.merge_heads(jnp.einsum("bhls,bhsk->bhlk", probs, v)))

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    return self.prefill(x_BxLxD)[0]

  def prefill(self, x_BxLxD: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    b, length, _ = x_BxLxD.shape
    pos = jnp.broadcast_to(jnp.arange(length), (b, length))
    q, k, v = self._qkv(x_BxLxD, pos)
    i, j = jnp.arange(length)[:, None], jnp.arange(length)[None, :]
    mask = jnp.broadcast_to((j <= i) & (i - j < self.window), (b, length, length))
    y = self._attend(q, k, v, mask).astype(x_BxLxD.dtype)
    w = self.window - 1
    padk = lambda t: jnp.pad(t, ((0, 0), (0, 0), (w, 0), (0, 0)))[:, :, length:]
    valid = jnp.pad(jnp.ones((b, length), bool), ((0, 0), (w, 0)))[:, length:]
    return y, {"k": padk(k), "v": padk(v), "valid": valid,
               "pos": jnp.full((b,), length, jnp.int32)}

  def init_cache(self, batch: int, head_dim: int) -> dict[str, jax.Array]:
    w = self.window - 1
    z = jnp.zeros((batch, self.num_heads, w, head_dim), self.dtype)
    return {"k": z, "v": z, "valid": jnp.zeros((batch, w), bool),
            "pos": jnp.zeros((batch,), jnp.int32)}

  def decode(self, x_BxD: jax.Array, cache: dict[str, jax.Array]
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
    q, k, v = self._qkv(x_BxD[:, None], cache["pos"][:, None])
    keys = jnp.concatenate([cache["k"], k], axis=2)
    vals = jnp.concatenate([cache["v"], v], axis=2)
    valid = jnp.concatenate([cache["valid"], jnp.ones((x_BxD.shape[0], 1), bool)], axis=1)
    y = self._attend(q, keys, vals, valid[:, None, :])[:, 0].astype(x_BxD.dtype)
    return y, {"k": keys[:, :, 1:], "v": vals[:, :, 1:], "valid": valid[:, 1:],
               "pos": cache["pos"] + 1}


def mag_combine(y_attn: jax.Array, y_mem: jax.Array, norm_attn: RMSNorm,
                norm_mem: RMSNorm) -> jax.Array:
  """MAG output RMSNorm(y_attn) * sigmoid(RMSNorm(y_mem))."""
  return norm_attn(y_attn) * jax.nn.sigmoid(norm_mem(y_mem))
