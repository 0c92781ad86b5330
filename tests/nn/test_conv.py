"""tnx.nn.conv: the causal depthwise convolution against its definition, and decode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnx.nn.conv import CausalDepthwiseConv


def test_matches_definition_and_decode():
  conv = CausalDepthwiseConv(3, 4, rngs=nnx.Rngs(0), param_dtype=jnp.float64)
  x = jax.random.normal(jax.random.key(0), (2, 7, 3), jnp.float64)
  w = np.asarray(conv.kernel[...])
  xp = np.concatenate([np.zeros((2, 3, 3)), np.asarray(x)], 1)
  want = np.stack([sum(w[j] * xp[:, t + j] for j in range(4)) for t in range(7)], 1)
  y = conv(x)
  np.testing.assert_allclose(y, want, rtol=1e-12)
  cache = conv.init_cache(2, 3, jnp.float64)
  for t in range(7):
    yt, cache = conv.step(x[:, t], cache)
    np.testing.assert_allclose(yt, y[:, t], rtol=1e-12)
  cache = conv.cache_from(x[:, :2])
  for t in range(2, 7):
    yt, cache = conv.step(x[:, t], cache)
    np.testing.assert_allclose(yt, y[:, t], rtol=1e-12)


def test_errors():
  with pytest.raises(ValueError, match="conv_width"):
    CausalDepthwiseConv(3, 0, rngs=nnx.Rngs(0))
  conv = CausalDepthwiseConv(3, 2, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"x must be \[B, L, C\]"):
    conv(jnp.zeros((4, 3)))


def test_custom_vjp_matches_autodiff_of_definition():
  from tnx.nn.conv import _shifted_sum, causal_depthwise_conv
  x = jax.random.normal(jax.random.key(1), (2, 9, 3), jnp.float64)
  w = jax.random.normal(jax.random.key(2), (4, 3), jnp.float64)
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
  got = jax.grad(loss(causal_depthwise_conv), argnums=(0, 1))(x, w)
  want = jax.grad(loss(_shifted_sum), argnums=(0, 1))(x, w)
  for g, r in zip(got, want):
    np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-14)
