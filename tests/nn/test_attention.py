"""tnx.nn.attention: every mask mode against a brute-force reference, decode (sliding and
segment, with persistent tokens and a second source) against the parallel forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnx.nn.attention import Attention, causal_mask
from tnx.nn.layers import rope


@pytest.mark.parametrize("mode,window,n_persistent,extra",
                         [("full", None, 0, False), ("sliding", 5, 3, False),
                          ("segment", 4, 2, True)])
def test_attention_matches_brute_force(mode, window, n_persistent, extra):
  d, h, l = 8, 2, 11
  att = Attention(d, h, mode=mode, window=window, n_persistent=n_persistent,
                  dtype=jnp.float64, rngs=nnx.Rngs(0))
  x = np.asarray(jax.random.normal(jax.random.key(0), (1, l, d), jnp.float64))
  e = np.asarray(jax.random.normal(jax.random.key(1), (1, l, d), jnp.float64)) if extra else None
  got = np.asarray(att(jnp.asarray(x), None if e is None else jnp.asarray(e)))
  w_qkv = np.asarray(att.qkv.kernel[...], np.float64)
  w_out = np.asarray(att.out.kernel[...], np.float64)
  k_dim = d // h

  def proj(z):
    qkv = (z[0] @ w_qkv).reshape(l, 3 * h, k_dim)
    pos = jnp.arange(l)
    q = np.asarray(rope(jnp.asarray(qkv[None, :, :h]), pos))[0]
    k = np.asarray(rope(jnp.asarray(qkv[None, :, h:2 * h]), pos))[0]
    return q, k, qkv[:, 2 * h:]

  q, k, v = proj(x)
  out = np.zeros((l, h, k_dim))
  for i in range(l):
    for head in range(h):
      keys, vals = [], []
      if n_persistent:
        keys += list(np.asarray(att.persistent_k[...])[:, head])
        vals += list(np.asarray(att.persistent_v[...])[:, head])
      allowed = [j for j in range(l) if j <= i and (
          mode == "full" or (mode == "sliding" and i - j < window)
          or (mode == "segment" and j // window == i // window))]
      keys += [k[j, head] for j in allowed]
      vals += [v[j, head] for j in allowed]
      if extra:
        _, k2, v2 = proj(e)
        keys += [k2[j, head] for j in allowed]
        vals += [v2[j, head] for j in allowed]
      s = np.array([q[i, head] @ kk for kk in keys]) / np.sqrt(k_dim)
      p = np.exp(s - s.max())
      out[i, head] = (p / p.sum()) @ np.array(vals)
  np.testing.assert_allclose(got[0], out.reshape(l, d) @ w_out, atol=1e-10)


def test_mask_modes():
  m = np.asarray(causal_mask(6, "sliding", 2))
  assert m[3].tolist() == [False, False, True, True, False, False]
  m = np.asarray(causal_mask(6, "segment", 3))
  assert m[4].tolist() == [False, False, False, True, True, False]
  assert np.asarray(causal_mask(4)).tolist() == np.tril(np.ones((4, 4), bool)).tolist()


@pytest.mark.parametrize("mode,window,n_persistent,extra",
                         [("sliding", 4, 0, False), ("sliding", 1, 2, False),
                          ("segment", 3, 2, True)])
def test_decode_equals_parallel_forward(mode, window, n_persistent, extra):
  """Token-by-token decode from an empty cache, and prefill + decode, reproduce the parallel
  forward across window / segment boundaries."""
  d, l = 8, 10
  att = Attention(d, 2, mode=mode, window=window, n_persistent=n_persistent,
                  dtype=jnp.float64, param_dtype=jnp.float64, rngs=nnx.Rngs(3))
  x = jax.random.normal(jax.random.key(0), (2, l, d), jnp.float64)
  e = jax.random.normal(jax.random.key(1), (2, l, d), jnp.float64) if extra else None
  y = att(x, e)
  decode = nnx.jit(lambda m, xt, c, et: m.decode(xt, c, et))
  step = lambda t: None if e is None else e[:, t]
  cache = att.init_cache(2, extra=extra)
  for t in range(l):
    yt, cache = decode(att, x[:, t], cache, step(t))
    np.testing.assert_allclose(yt, y[:, t], rtol=1e-11, atol=1e-12)
  y_pre, cache = att.prefill(x[:, :6], None if e is None else e[:, :6])
  np.testing.assert_allclose(y_pre, y[:, :6], rtol=1e-12, atol=1e-13)
  for t in range(6, l):
    yt, cache = decode(att, x[:, t], cache, step(t))
    np.testing.assert_allclose(yt, y[:, t], rtol=1e-11, atol=1e-12)


def test_errors_name_the_argument():
  with pytest.raises(ValueError, match="n_heads=3 must divide d_model=10"):
    Attention(10, 3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="must be even for RoPE"):
    Attention(6, 2, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="window"):
    Attention(8, 2, mode="sliding", rngs=nnx.Rngs(0))
  att = Attention(8, 2, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"x must be \[B, L, D\] with D=8"):
    att(jnp.zeros((3, 8)))
  with pytest.raises(ValueError, match="mode='full'"):
    att.init_cache(1)
  swa = Attention(8, 2, mode="sliding", window=3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="extra_BxD must be given exactly"):
    swa.decode(jnp.zeros((1, 8)), swa.init_cache(1), jnp.zeros((1, 8)))
