"""Small NNX building blocks shared by the memory layers: causal depthwise convolution with a
decode cache, per-head RMS/LayerNorm, L2 normalization, head split/merge, RoPE."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tnx import validation


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)


def split_heads(x_BxLxHK: jax.Array, num_heads: int) -> jax.Array:
  """[B, L, H*K] -> [B, H, L, K]."""
  b, l, hk = x_BxLxHK.shape
  return x_BxLxHK.reshape(b, l, num_heads, hk // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x_BxHxLxK: jax.Array) -> jax.Array:
  """[B, H, L, K] -> [B, L, H*K]."""
  b, h, l, k = x_BxHxLxK.shape
  return x_BxHxLxK.transpose(0, 2, 1, 3).reshape(b, l, h * k)


def rope(x_BxHxLxK: jax.Array, positions_L: jax.Array, base: float = 10000.0) -> jax.Array:
  """Rotary position embedding on the last axis (rotate-half convention)."""
  k = x_BxHxLxK.shape[-1]
  if k % 2:
    raise ValueError(f"RoPE needs an even head dim, got {k}")
  inv = 1.0 / base ** (jnp.arange(0, k, 2, dtype=jnp.float32) / k)
  ang = positions_L.astype(jnp.float32)[:, None] * inv[None, :]
  cos, sin = jnp.cos(ang).astype(x_BxHxLxK.dtype), jnp.sin(ang).astype(x_BxHxLxK.dtype)
  x1, x2 = x_BxHxLxK[..., : k // 2], x_BxHxLxK[..., k // 2:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class CausalDepthwiseConv(nnx.Module):
  """Causal depthwise 1-D convolution over the sequence axis of [B, L, C] inputs.

  y_t = sum_{j<width} w_j * x_{t - width + 1 + j} (zeros before the first token), initialized
  to the identity (last tap = 1) so a fresh layer passes its input through.
  """

  def __init__(self, channels: int, width: int, *, rngs: nnx.Rngs,
               param_dtype=jnp.float32):
    self.width = validation.positive_int("conv_width", width)
    w = jnp.zeros((width, channels), param_dtype).at[-1].set(1.0)
    w = w + 0.02 * jax.random.normal(rngs.params(), (width, channels), param_dtype)
    self.kernel = nnx.Param(w)

  def __call__(self, x_BxLxC: jax.Array) -> jax.Array:
    w = self.kernel[...].astype(x_BxLxC.dtype)
    length = x_BxLxC.shape[1]
    padded = jnp.pad(x_BxLxC, ((0, 0), (self.width - 1, 0), (0, 0)))
    return sum(padded[:, j: j + length] * w[j] for j in range(self.width))

  def init_cache(self, batch: int, channels: int, dtype=jnp.float32) -> jax.Array:
    return jnp.zeros((batch, self.width - 1, channels), dtype)

  def cache_from(self, x_BxLxC: jax.Array) -> jax.Array:
    """Decode cache (last width-1 inputs, zero-padded) after a prefill of x."""
    padded = jnp.pad(x_BxLxC, ((0, 0), (self.width - 1, 0), (0, 0)))
    return padded[:, padded.shape[1] - (self.width - 1):]

  def step(self, x_BxC: jax.Array, cache: jax.Array) -> tuple[jax.Array, jax.Array]:
    window = jnp.concatenate([cache, x_BxC[:, None]], axis=1)  # [B, width, C]
    y = jnp.einsum("bwc,wc->bc", window, self.kernel[...].astype(x_BxC.dtype))
    return y, window[:, 1:]


class HeadNorm(nnx.Module):
  """RMSNorm over the head dim of [B, H, L, K] with a learned per-head scale [H, K]."""

  def __init__(self, num_heads: int, head_dim: int, eps: float = 1e-6,
               param_dtype=jnp.float32):
    self.scale = nnx.Param(jnp.ones((num_heads, head_dim), param_dtype))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    ms = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    scale = self.scale[...][:, None, :] if x.ndim == 4 else self.scale[...]
    return x * jax.lax.rsqrt(ms + self.eps) * scale.astype(x.dtype)
