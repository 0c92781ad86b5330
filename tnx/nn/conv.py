"""Causal depthwise 1-D convolution over the sequence axis, with a decode cache."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tnx import validation


def _shifted_sum(x_BxLxC: jax.Array, w_WxC: jax.Array, reverse: bool = False) -> jax.Array:
  """sum_j w_j * x_{t - W + 1 + j} (causal; zeros before the first token), or with
  `reverse` the adjoint in x: sum_j w_j * x_{t + W - 1 - j} (zeros after the last token)."""
  width, length = w_WxC.shape[0], x_BxLxC.shape[1]
  pad = (0, width - 1) if reverse else (width - 1, 0)
  padded = jnp.pad(x_BxLxC, ((0, 0), pad, (0, 0)))
  start = (lambda j: width - 1 - j) if reverse else (lambda j: j)
  return sum(padded[:, start(j): start(j) + length] * w_WxC[j] for j in range(width))


@jax.custom_vjp
def causal_depthwise_conv(x_BxLxC: jax.Array, w_WxC: jax.Array) -> jax.Array:
  """y_t = sum_{j<W} w_j * x_{t - W + 1 + j} over the sequence axis of x [B, L, C].

  The forward is W shifted multiply-adds. The backward is written out (a custom VJP): the
  input gradient is the same shifted sum run backwards, the kernel gradient W reductions of
  x_shifted * g; differentiating the forward instead (pads, slices and a scatter into the
  kernel per tap) cost 1.5-2x as much on the CPU backend (docs/benchmarks.md)."""
  return _shifted_sum(x_BxLxC, w_WxC)


def _conv_fwd(x, w):
  return _shifted_sum(x, w), (x, w)


def _conv_bwd(res, g_BxLxC):
  x, w = res
  width, length = w.shape[0], x.shape[1]
  padded = jnp.pad(x, ((0, 0), (width - 1, 0), (0, 0)))
  dw = jnp.stack([jnp.sum(padded[:, j: j + length] * g_BxLxC, axis=(0, 1))
                  for j in range(width)])
  return _shifted_sum(g_BxLxC, w, reverse=True), dw.astype(w.dtype)


causal_depthwise_conv.defvjp(_conv_fwd, _conv_bwd)


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
    return causal_depthwise_conv(x_BxLxC, self.kernel[...].astype(x_BxLxC.dtype))

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
