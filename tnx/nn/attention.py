"""Causal multi-head attention: full, sliding-window or segmented, with persistent tokens and a
constant-size decode cache for the windowed modes.

The mask is built once per call as an [L, L] boolean array:
  full:     j <= i
  sliding:  j <= i and i - j < window          (Titans MAG/MAL attention)
  segment:  j <= i and j // window == i // window  (Titans MAC: attention inside a segment)
Persistent memory tokens are learned key/value pairs visible to every query (no position).
An optional second source `extra_BxLxD` (Titans MAC memory read-outs) is projected by the same
key/value maps, rotated with the position of its token, and masked like the main sequence.

Decoding (sliding and segment modes) keeps the rotated keys/values of the last window - 1
tokens with their positions; a cached entry is visible when the mask above allows it, so the
cache has constant size and decode equals the parallel forward.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tnx import validation
from tnx.nn.layers import linear, rope

MASK_MODES = ("full", "sliding", "segment")


def _allowed(i: jax.Array, j: jax.Array, mode: str, window: int | None) -> jax.Array:
  """True where query position i may see key position j (broadcasting)."""
  mask = j <= i
  if mode == "sliding":
    mask &= (i - j) < window
  elif mode == "segment":
    mask &= (j // window) == (i // window)
  return mask


def causal_mask(length: int, mode: str = "full", window: int | None = None) -> jax.Array:
  """Boolean [L, L] mask, True where query i may attend to key j (see module docstring)."""
  validation.one_of("mode", mode, MASK_MODES)
  if mode != "full":
    validation.positive_int("window", window)
  return _allowed(jnp.arange(length)[:, None], jnp.arange(length)[None, :], mode, window)


def attend(q_BxLxHxK: jax.Array, k_BxSxHxK: jax.Array, v_BxSxHxK: jax.Array,
           mask_LxS: jax.Array, *, softmax_f32: bool = True, return_probs: bool = False
           ) -> jax.Array | tuple[jax.Array, jax.Array]:
  """softmax(q k^T / sqrt(K) masked) v; returns [B, L, H, K] in q's dtype.

  mask_LxS: boolean [L, S] shared by the batch, or [B, L, S] per sequence.
  return_probs: also return the attention probabilities [B, H, L, S].
  """
  scale = q_BxLxHxK.shape[-1] ** -0.5
  logits_BxHxLxS = jnp.einsum("blhk,bshk->bhls", q_BxLxHxK, k_BxSxHxK) * scale
  if softmax_f32:  # Precision: the softmax is always taken in float32 when requested.
    logits_BxHxLxS = logits_BxHxLxS.astype(jnp.promote_types(logits_BxHxLxS.dtype,
                                                              jnp.float32))
  mask = mask_LxS[None, None] if mask_LxS.ndim == 2 else mask_LxS[:, None]
  logits_BxHxLxS = jnp.where(mask, logits_BxHxLxS, jnp.finfo(logits_BxHxLxS.dtype).min)
  probs = jax.nn.softmax(logits_BxHxLxS, axis=-1).astype(v_BxSxHxK.dtype)
  out = jnp.einsum("bhls,bshk->blhk", probs, v_BxSxHxK)
  return (out, probs) if return_probs else out


class Attention(nnx.Module):
  """Multi-head causal self-attention with RoPE.

  Args:
    d_model: width D; n_heads: H (D % H == 0, head dim even).
    mode: 'full', 'sliding' or 'segment' (see module docstring); window: size for the latter.
    n_persistent: number of learned persistent key/value tokens (0 = none).
    rope_base: RoPE frequency base.
    dtype: compute dtype; softmax_f32: take the softmax in float32; param_dtype: parameters.
    sow_attention: record intermediates (`nnx.Intermediate`) on every call: 'q' and 'k' of
      the main sequence before RoPE [B, L, H, K] and 'probs' [B, H, L, S] (S: persistent
      tokens, then the keys). Off by default; switch on a built model with
      `model.set_attributes(sow_attention=True)`; read with `nnx.capture(fn, nnx.Intermediate)`.
  """

  def __init__(self, d_model: int, n_heads: int, *, mode: str = "full",
               window: int | None = None, n_persistent: int = 0, rope_base: float = 10000.0,
               dtype: Any = jnp.float32, softmax_f32: bool = True,
               param_dtype: Any = jnp.float32, sow_attention: bool = False, rngs: nnx.Rngs):
    validation.positive_int("d_model", d_model)
    validation.positive_int("n_heads", n_heads)
    if d_model % n_heads:
      raise ValueError(f"n_heads={n_heads} must divide d_model={d_model}")
    if (d_model // n_heads) % 2:
      raise ValueError(f"head dim d_model / n_heads = {d_model // n_heads} must be even for "
                       f"RoPE (d_model={d_model}, n_heads={n_heads})")
    validation.one_of("mode", mode, MASK_MODES)
    if mode != "full":
      validation.positive_int("window", window)
    validation.non_negative_int("n_persistent", n_persistent)
    self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
    self.mode, self.window, self.n_persistent = mode, window, n_persistent
    self.rope_base, self.dtype, self.softmax_f32 = rope_base, dtype, softmax_f32
    self.sow_attention = sow_attention
    self.qkv = linear(d_model, 3 * d_model, dtype=dtype, rngs=rngs, param_dtype=param_dtype)
    self.out = linear(d_model, d_model, dtype=dtype, rngs=rngs, param_dtype=param_dtype)
    if n_persistent:
      shape = (n_persistent, n_heads, self.head_dim)
      self.persistent_k = nnx.Param(jax.random.normal(rngs.params(), shape, param_dtype))
      self.persistent_v = nnx.Param(jax.random.normal(rngs.params(), shape, param_dtype) * 0.02)

  def _check_input(self, name: str, x: jax.Array, ndim: int) -> None:
    if x.ndim != ndim or x.shape[-1] != self.d_model:
      want = "[B, L, D]" if ndim == 3 else "[B, D]"
      raise ValueError(f"{name} must be {want} with D={self.d_model}, got shape {x.shape}")

  def _project(self, x_BxLxD: jax.Array, positions: jax.Array, sow: bool = False):
    """q, k, v [B, L, H, K], q and k rotated at `positions` ([L] or [B, L]); `sow` records the
    un-rotated q and k when `sow_attention` is on."""
    b, l, _ = x_BxLxD.shape
    q, k, v = jnp.split(self.qkv(x_BxLxD).reshape(b, l, 3 * self.n_heads, self.head_dim), 3,
                        axis=2)
    if sow and self.sow_attention:
      self.sow(nnx.Intermediate, "q", q)
      self.sow(nnx.Intermediate, "k", k)
    return rope(q, positions, self.rope_base), rope(k, positions, self.rope_base), v

  def _persistent(self, batch: int, like: jax.Array) -> tuple[jax.Array, jax.Array]:
    shape = (batch, self.n_persistent, self.n_heads, self.head_dim)
    return (jnp.broadcast_to(self.persistent_k[...].astype(like.dtype), shape),
            jnp.broadcast_to(self.persistent_v[...].astype(like.dtype), shape))

  def _attend_all(self, q, sources, masks):
    """Attention over the persistent tokens (if any) and `sources` [(k, v)] under `masks`."""
    b, l = q.shape[:2]
    keys, values = [k for k, _ in sources], [v for _, v in sources]
    if self.n_persistent:
      pk, pv = self._persistent(b, keys[0])
      keys.insert(0, pk)
      values.insert(0, pv)
      masks = [jnp.ones(masks[0].shape[:-2] + (l, self.n_persistent), bool)] + masks
    o = attend(q, jnp.concatenate(keys, 1), jnp.concatenate(values, 1),
               jnp.concatenate(masks, -1), softmax_f32=self.softmax_f32,
               return_probs=self.sow_attention)
    if self.sow_attention:
      o, probs_BxHxLxS = o
      self.sow(nnx.Intermediate, "probs", probs_BxHxLxS)
    return self.out(o.reshape(b, l, self.d_model))

  def _forward(self, x_BxLxD: jax.Array, extra_BxLxD: jax.Array | None):
    self._check_input("x", x_BxLxD, 3)
    positions_L = jnp.arange(x_BxLxD.shape[1])
    q, k, v = self._project(x_BxLxD, positions_L, sow=True)
    sources = [(k, v)]
    if extra_BxLxD is not None:
      self._check_input("extra", extra_BxLxD, 3)
      if extra_BxLxD.shape[:2] != x_BxLxD.shape[:2]:
        raise ValueError(f"extra must match x's [B, L] = {x_BxLxD.shape[:2]}, got "
                         f"{extra_BxLxD.shape[:2]}")
      sources.append(self._project(extra_BxLxD.astype(x_BxLxD.dtype), positions_L)[1:])
    mask_LxS = causal_mask(x_BxLxD.shape[1], self.mode, self.window)
    return self._attend_all(q, sources, [mask_LxS] * len(sources)), sources

  def __call__(self, x_BxLxD: jax.Array, extra_BxLxD: jax.Array | None = None) -> jax.Array:
    return self._forward(x_BxLxD, extra_BxLxD)[0]

  # -- decoding (sliding and segment modes) --------------------------------------------
  def _cache_size(self) -> int:
    if self.mode == "full":
      raise ValueError("mode='full' attention has no constant-size decode cache; decode with "
                       "mode='sliding' or 'segment'")
    return self.window - 1

  def init_cache(self, batch: int, *, extra: bool = False) -> dict[str, jax.Array]:
    """The cache before the first token; `extra` reserves room for the second source."""
    w = self._cache_size()
    z = jnp.zeros((batch, w, self.n_heads, self.head_dim), self.dtype)
    cache = {"k": z, "v": z, "pos": jnp.full((batch, w), -1, jnp.int32),
             "next": jnp.zeros((batch,), jnp.int32)}
    if extra:
      cache["k_extra"], cache["v_extra"] = z, z
    return cache

  def prefill(self, x_BxLxD: jax.Array, extra_BxLxD: jax.Array | None = None
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Parallel forward plus the decode cache after the last token."""
    w = self._cache_size()
    y, sources = self._forward(x_BxLxD, extra_BxLxD)
    b, length = x_BxLxD.shape[:2]
    last = lambda a, fill: jnp.pad(a, ((0, 0), (w, 0)) + ((0, 0),) * (a.ndim - 2),
                                   constant_values=fill)[:, length:]
    positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length))
    cache = {"k": last(sources[0][0], 0), "v": last(sources[0][1], 0),
             "pos": last(positions, -1), "next": jnp.full((b,), length, jnp.int32)}
    if extra_BxLxD is not None:
      cache["k_extra"], cache["v_extra"] = last(sources[1][0], 0), last(sources[1][1], 0)
    return y, cache

  def decode(self, x_BxD: jax.Array, cache: dict[str, jax.Array],
             extra_BxD: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One token per sequence: [B, D] -> [B, D] (extra_BxD: the second source's token)."""
    self._cache_size()
    self._check_input("x", x_BxD, 2)
    if (extra_BxD is not None) != ("k_extra" in cache):
      raise ValueError("extra_BxD must be given exactly when the cache holds the second "
                       "source (init_cache(extra=True) or prefill with extra)")
    t_B = cache["next"]
    q, k, v = self._project(x_BxD[:, None], t_B[:, None])
    visible = (cache["pos"] >= 0) & _allowed(t_B[:, None], cache["pos"], self.mode, self.window)
    mask_Bx1xS = jnp.concatenate([visible, jnp.ones((x_BxD.shape[0], 1), bool)], -1)[:, None]
    keys = jnp.concatenate([cache["k"], k], 1)
    values = jnp.concatenate([cache["v"], v], 1)
    sources, new = [(keys, values)], {"k": keys[:, 1:], "v": values[:, 1:]}
    if extra_BxD is not None:
      self._check_input("extra_BxD", extra_BxD, 2)
      _, k2, v2 = self._project(extra_BxD[:, None].astype(x_BxD.dtype), t_B[:, None])
      keys2 = jnp.concatenate([cache["k_extra"], k2], 1)
      values2 = jnp.concatenate([cache["v_extra"], v2], 1)
      sources.append((keys2, values2))
      new["k_extra"], new["v_extra"] = keys2[:, 1:], values2[:, 1:]
    y = self._attend_all(q, sources, [mask_Bx1xS] * len(sources))[:, 0]
    new["pos"] = jnp.concatenate([cache["pos"], t_B[:, None]], 1)[:, 1:]
    new["next"] = t_B + 1
    return y, new
