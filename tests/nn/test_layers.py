"""tnx.nn.layers: RoPE (relative property, layouts, per-sequence positions), norms, MAG gate,
head split/merge, MLP width."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnx.nn import layers


def test_rope_is_relative():
  q = jax.random.normal(jax.random.key(0), (1, 1, 1, 8), jnp.float64)
  k = jax.random.normal(jax.random.key(1), (1, 1, 1, 8), jnp.float64)
  rope = layers.rope
  dot = lambda m, n: float(jnp.sum(rope(q, jnp.array([m])) * rope(k, jnp.array([n]))))
  assert dot(5, 2) == pytest.approx(dot(13, 10), abs=1e-12)
  assert dot(5, 2) != pytest.approx(dot(5, 3), abs=1e-6)


def test_rope_matches_complex_rotation_in_every_layout():
  """Pair (x_i, x_{i+K/2}) is the complex number x_i + i x_{i+K/2} rotated by pos * base^(-2i/K);
  the [B, H, L, K] layout and per-sequence positions give the same numbers."""
  b, l, h, k = 2, 5, 3, 6
  x = jax.random.normal(jax.random.key(0), (b, l, h, k), jnp.float64)
  pos = np.arange(l) + 3
  z = np.asarray(x[..., : k // 2]) + 1j * np.asarray(x[..., k // 2:])
  ang = pos[:, None] * 10000.0 ** (-2.0 * np.arange(k // 2) / k)
  rot = z * np.exp(1j * ang)[None, :, None, :]
  want = np.concatenate([rot.real, rot.imag], -1)
  np.testing.assert_allclose(layers.rope(x, jnp.asarray(pos)), want, atol=1e-12)
  bhlk = layers.rope(x.transpose(0, 2, 1, 3), jnp.asarray(pos), seq_axis=2)
  np.testing.assert_allclose(bhlk.transpose(0, 2, 1, 3), want, atol=1e-12)
  per_seq = layers.rope(x, jnp.broadcast_to(jnp.asarray(pos), (b, l)))
  np.testing.assert_allclose(per_seq, want, atol=1e-12)
  with pytest.raises(ValueError, match="even"):
    layers.rope(x[..., :5], jnp.asarray(pos))
  with pytest.raises(ValueError, match="seq_axis"):
    layers.rope(x, jnp.asarray(pos), seq_axis=3)


def test_norms():
  x = jax.random.normal(jax.random.key(0), (2, 3, 4, 5), jnp.float64) * 3.0
  want = x / np.sqrt(np.mean(np.asarray(x) ** 2, -1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(layers.RMSNorm(5)(x), want, rtol=1e-12)
  assert layers.RMSNorm(5, dtype=jnp.bfloat16)(x).dtype == jnp.bfloat16
  assert layers.RMSNorm(5)(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16
  head = layers.HeadNorm(2, 5, param_dtype=jnp.float64)
  head.scale[...] = jnp.arange(10.0).reshape(2, 5)
  xh = x[:, :2]  # [B, H, L, K]
  np.testing.assert_allclose(head(xh), want[:, :2] * np.arange(10.0).reshape(2, 1, 5),
                             rtol=1e-12)
  unit = layers.l2_normalize(x, eps=0.0)
  np.testing.assert_allclose(np.linalg.norm(unit, axis=-1), 1.0, rtol=1e-12)


def test_mag_gate_and_heads():
  gate = layers.MAGGate(4, param_dtype=jnp.float64)
  a = jax.random.normal(jax.random.key(0), (1, 3, 4), jnp.float64)
  m = jax.random.normal(jax.random.key(1), (1, 3, 4), jnp.float64)
  rms = lambda t: t / np.sqrt(np.mean(np.asarray(t) ** 2, -1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(gate(a, m), rms(a) / (1 + np.exp(-rms(m))), rtol=1e-12)
  x = jnp.arange(2 * 3 * 6.0).reshape(2, 3, 6)
  heads = layers.split_heads(x, 2)
  assert heads.shape == (2, 2, 3, 3)
  np.testing.assert_array_equal(heads[0, 1, 2], x[0, 2, 3:])
  np.testing.assert_array_equal(layers.merge_heads(heads), x)


def test_mlp_width_and_dtype_names():
  assert layers.default_mlp_hidden(64) == 176 and layers.default_mlp_hidden(48) == 128
  assert layers.dtype_of("bfloat16") == jnp.bfloat16
  with pytest.raises(ValueError, match="dtype"):
    layers.dtype_of("float16")
  mlp = layers.GatedMLP(4, 8, dtype=jnp.float32, rngs=nnx.Rngs(0))
  assert mlp(jnp.ones((1, 2, 4))).shape == (1, 2, 4)
