"""Building blocks shared by every tnx model: RMSNorm (whole width and per head), rotary
embeddings, linear maps, the gated MLP, the MAG gate, head split/merge, precision helpers.

Dimension letters: B batch, L sequence, D model width, H heads, K head dim, F MLP hidden.
Parameters are stored in `param_dtype` (float32 unless asked otherwise); activations run in
the compute dtype; normalization statistics are taken in at least float32.
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


def rms_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """x / sqrt(mean(x^2) + eps) over the last axis, in x's dtype."""
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """x / sqrt(sum(x^2) + eps) over the last axis."""
  return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)


class RMSNorm(nnx.Module):
  """y = x / rms(x) * scale over the last axis.

  The statistics are taken in at least float32 whatever the input dtype; the output is in
  `dtype`, or in the input's dtype when `dtype` is None.
  """

  def __init__(self, dim: int, *, eps: float = 1e-6, dtype: Any = None,
               param_dtype: Any = jnp.float32):
    validation.positive_int("dim", dim)
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
    self.eps = eps
    self.dtype = dtype

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    x = x_BxLxD.astype(jnp.promote_types(x_BxLxD.dtype, jnp.float32))
    y = rms_normalize(x, self.eps) * self.scale[...]
    return y.astype(x_BxLxD.dtype if self.dtype is None else self.dtype)


class HeadNorm(nnx.Module):
  """RMSNorm over the head dim of [B, H, L, K] (or [B, H, K]) with a learned per-head scale
  [H, K], computed in the input's dtype."""

  def __init__(self, num_heads: int, head_dim: int, eps: float = 1e-6,
               param_dtype: Any = jnp.float32):
    validation.positive_int("num_heads", num_heads)
    validation.positive_int("head_dim", head_dim)
    self.scale = nnx.Param(jnp.ones((num_heads, head_dim), param_dtype))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.scale[...][:, None, :] if x.ndim == 4 else self.scale[...]
    return rms_normalize(x, self.eps) * scale.astype(x.dtype)


def split_heads(x_BxLxHK: jax.Array, num_heads: int) -> jax.Array:
  """[B, L, H*K] -> [B, H, L, K]."""
  b, l, hk = x_BxLxHK.shape
  return x_BxLxHK.reshape(b, l, num_heads, hk // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x_BxHxLxK: jax.Array) -> jax.Array:
  """[B, H, L, K] -> [B, L, H*K]."""
  b, h, l, k = x_BxHxLxK.shape
  return x_BxHxLxK.transpose(0, 2, 1, 3).reshape(b, l, h * k)


def rope(x_BxLxHxK: jax.Array, positions_L: jax.Array, base: float = 10000.0, *,
         seq_axis: int = 1) -> jax.Array:
  """Rotary position embedding (half-split convention) applied to the last axis.

  Args:
    x_BxLxHxK: queries or keys; K must be even. Any layout whose batch axis is 0 and whose
      sequence axis is `seq_axis` (1 for [B, L, H, K], 2 for [B, H, L, K]).
    positions_L: integer positions, [L] (shared by the batch) or [B, L] (per sequence).
    base: rotary frequency base.
  The angles are computed in at least float32; the result has x's dtype.
  """
  k = x_BxLxHxK.shape[-1]
  if k % 2:
    raise ValueError(f"head dim must be even for RoPE, got {k}")
  nd = x_BxLxHxK.ndim
  if not 0 < seq_axis < nd - 1:
    raise ValueError(f"seq_axis must lie in [1, {nd - 2}] for a {nd}-D input, got {seq_axis}")
  if positions_L.ndim not in (1, 2):
    raise ValueError(f"positions must be [L] or [B, L], got shape {positions_L.shape}")
  ct = jnp.promote_types(x_BxLxHxK.dtype, jnp.float32)  # at least float32
  freqs = base ** (-jnp.arange(0, k // 2, dtype=ct) * 2.0 / k)
  angles = positions_L.astype(ct)[..., None] * freqs  # [L, K/2] or [B, L, K/2]
  lead = (1,) if positions_L.ndim == 1 else angles.shape[:1]
  shape = lead + (1,) * (seq_axis - 1) + angles.shape[-2:-1] + (1,) * (nd - seq_axis - 2)
  angles = angles.reshape(shape + (k // 2,))
  sin, cos = jnp.sin(angles), jnp.cos(angles)
  x1, x2 = jnp.split(x_BxLxHxK.astype(ct), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxLxHxK.dtype)


def linear(din: int, dout: int, *, dtype: Any, rngs: nnx.Rngs, use_bias: bool = False,
           scale: float = 1.0, param_dtype: Any = jnp.float32) -> nnx.Linear:
  """A bias-free Linear with `param_dtype` params, fan-in scaled normal init times `scale`."""
  return nnx.Linear(din, dout, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
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


class MAGGate(nnx.Module):
  """Memory as a gate (Titans, arXiv 2501.00663 section 4.2):
  y = RMSNorm(y_attn) * sigmoid(RMSNorm(y_mem)), the sigmoid taken in at least float32.

  The paper names the two branches and a non-linear gate without fixing its form; RMSNorm on
  both branches and a sigmoid gate are tnx's choice."""

  def __init__(self, d_model: int, *, dtype: Any = None, param_dtype: Any = jnp.float32):
    self.norm_attention = RMSNorm(d_model, dtype=dtype, param_dtype=param_dtype)
    self.norm_memory = RMSNorm(d_model, dtype=dtype, param_dtype=param_dtype)

  def __call__(self, y_attn_BxLxD: jax.Array, y_mem_BxLxD: jax.Array) -> jax.Array:
    y_attn = self.norm_attention(y_attn_BxLxD)
    y_mem = self.norm_memory(y_mem_BxLxD)
    gate = jax.nn.sigmoid(y_mem.astype(jnp.promote_types(y_mem.dtype, jnp.float32)))
    return y_attn * gate.astype(y_attn.dtype)
