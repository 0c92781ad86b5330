"""Causal depthwise 1-D convolution over the sequence axis, with a decode cache."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tnx import validation


class CausalDepthwiseConv(nnx.Module):
  """Causal depthwise 1-D convolution over the sequence axis of [B, L, C] inputs.

  y_t = sum_{j<width} w_j * x_{t - width + 1 + j} (zeros before the first token), initialized
  to the identity (last tap = 1) plus small noise, so a fresh layer passes its input through.
  Decoding keeps the last width - 1 inputs (`init_cache`, `cache_from`, `step`).
  """

  def __init__(self, channels: int, width: int, *, rngs: nnx.Rngs,
               param_dtype: Any = jnp.float32):
    validation.positive_int("channels", channels)
    self.width = validation.positive_int("conv_width", width)
    w = jnp.zeros((width, channels), param_dtype).at[-1].set(1.0)
    w = w + 0.02 * jax.random.normal(rngs.params(), (width, channels), param_dtype)
    self.kernel = nnx.Param(w)

  def __call__(self, x_BxLxC: jax.Array) -> jax.Array:
    if x_BxLxC.ndim != 3:
      raise ValueError(f"x must be [B, L, C], got shape {x_BxLxC.shape}")
    w = self.kernel[...].astype(x_BxLxC.dtype)
    length = x_BxLxC.shape[1]
    padded = jnp.pad(x_BxLxC, ((0, 0), (self.width - 1, 0), (0, 0)))
    return sum(padded[:, j: j + length] * w[j] for j in range(self.width))

  def init_cache(self, batch: int, channels: int, dtype: Any = jnp.float32) -> jax.Array:
    """The cache before the first token: width - 1 zero inputs [B, width - 1, C]."""
    return jnp.zeros((batch, self.width - 1, channels), dtype)

  def cache_from(self, x_BxLxC: jax.Array) -> jax.Array:
    """Decode cache (last width-1 inputs, zero-padded) after a prefill of x."""
    padded = jnp.pad(x_BxLxC, ((0, 0), (self.width - 1, 0), (0, 0)))
    return padded[:, padded.shape[1] - (self.width - 1):]

  def step(self, x_BxC: jax.Array, cache: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One token: (y [B, C], new cache)."""
    window = jnp.concatenate([cache, x_BxC[:, None]], axis=1)  # [B, width, C]
    y = jnp.einsum("bwc,wc->bc", window, self.kernel[...].astype(x_BxC.dtype))
    return y, window[:, 1:]
