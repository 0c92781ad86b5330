"""Building blocks of the decoder: RMSNorm, rotary embeddings, gated MLP, precision helpers.

Dimension letters: B batch, L sequence, D model width, H heads, K head dim, F MLP hidden.
Parameters are stored in `param_dtype` (float32); activations run in the compute dtype.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tnx import validation

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}


def dtype_of(name: str) -> Any:
  """Maps a config string ('float32', 'bfloat16', 'float64') to a jnp dtype."""
  return DTYPES[validation.one_of("dtype", name, list(DTYPES))]


class RMSNorm(nnx.Module):
  """y = x / rms(x) * scale; the statistics are taken in float32 whatever the input dtype."""

  def __init__(self, dim: int, *, eps: float = 1e-6, dtype: Any = jnp.float32):
    self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
    self.eps = eps
    self.dtype = dtype

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    x = x_BxLxD.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.eps)
    return (x * self.scale[...]).astype(self.dtype)


def rope(x_BxLxHxK: jax.Array, positions_L: jax.Array, base: float = 10000.0) -> jax.Array:
  """Rotary position embedding (half-split convention) applied to the last axis.

  Args:
    x_BxLxHxK: queries or keys; K must be even.
    positions_L: integer positions [L].
    base: rotary frequency base.
  """
  k = x_BxLxHxK.shape[-1]
  if k % 2:
    raise ValueError(f"head dim must be even for RoPE, got {k}")
  ct = jnp.promote_types(x_BxLxHxK.dtype, jnp.float32)  # at least float32
  freqs = base ** (-jnp.arange(0, k // 2, dtype=ct) * 2.0 / k)
  angles_LxK2 = positions_L.astype(ct)[:, None] * freqs[None, :]
  sin = jnp.sin(angles_LxK2)[None, :, None, :]
  cos = jnp.cos(angles_LxK2)[None, :, None, :]
  x1, x2 = jnp.split(x_BxLxHxK.astype(ct), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxLxHxK.dtype)


def linear(din: int, dout: int, *, dtype: Any, rngs: nnx.Rngs, use_bias: bool = False,
           scale: float = 1.0) -> nnx.Linear:
  """A bias-free Linear with float32 params, fan-in scaled normal init times `scale`."""
  return nnx.Linear(din, dout, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
                    kernel_init=nnx.initializers.normal(scale / din**0.5), rngs=rngs)


class GatedMLP(nnx.Module):
  """SwiGLU feed-forward: W_down(silu(W_gate x) * W_up x)."""

  def __init__(self, d_model: int, hidden: int, *, dtype: Any, rngs: nnx.Rngs):
    validation.positive_int("hidden", hidden)
    self.gate = linear(d_model, hidden, dtype=dtype, rngs=rngs)
    self.up = linear(d_model, hidden, dtype=dtype, rngs=rngs)
    self.down = linear(hidden, d_model, dtype=dtype, rngs=rngs)

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    h_BxLxF = jax.nn.silu(self.gate(x_BxLxD)) * self.up(x_BxLxD)
    return self.down(h_BxLxF)


def default_mlp_hidden(d_model: int) -> int:
  """8/3 * D rounded up to a multiple of 8 (the usual SwiGLU width at equal FLOPs)."""
  return -(-int(8 * d_model / 3) // 8) * 8
