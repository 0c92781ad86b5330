"""Q-K projection: chunkwise linear-attention form against explicit sums of k k^T."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx.tnt import qk_projection as qkp

B, H, L, K = 2, 2, 11, 4


def _qk(seed=0, length=L):
  kq, kk = jax.random.split(jax.random.key(seed))
  q = jax.random.normal(kq, (B, H, length, K), jnp.float64)
  k = jax.random.normal(kk, (B, H, length, K), jnp.float64)
  return q, k


def _explicit(q, k, reset_every, rescale):
  """Builds M_t = sum_{tau in scope, tau <= t} k k^T / |k|^2 as a K x K matrix per token."""
  q, k = np.asarray(q), np.asarray(k)
  out = np.zeros_like(q)
  for b in range(q.shape[0]):
    for h in range(q.shape[1]):
      m = np.zeros((K, K))
      for t in range(q.shape[2]):
        if reset_every is not None and t % reset_every == 0:
          m = np.zeros((K, K))
        kt = k[b, h, t]
        m = m + np.outer(kt, kt) / (kt @ kt + 1e-6)
        assert np.allclose(m, m.T) and np.linalg.eigvalsh(m).min() > -1e-12  # symmetric PSD
        o = m @ q[b, h, t]
        count = (t % reset_every if reset_every else t) + 1
        if rescale == "count":
          o = o / count
        elif rescale == "l2":
          o = o / np.sqrt(o @ o + 1e-6)
        out[b, h, t] = o
  return out


@pytest.mark.parametrize("reset_every,block,rescale", [
    (None, 4, "none"), (None, 64, "count"), (None, 3, "l2"), (3, 64, "none"), (1, 64, "count")])
def test_matches_explicit_sum(reset_every, block, rescale):
  q, k = _qk()
  got = qkp.qk_project(q, k, reset_every=reset_every, block=block, rescale=rescale)
  np.testing.assert_allclose(got, _explicit(q, k, reset_every, rescale), rtol=1e-12, atol=1e-12)


def test_single_unit_key_and_orthonormal_keys():
  q, _ = _qk()
  k = jnp.zeros((B, H, L, K), jnp.float64).at[:, :, 0, 1].set(1.0)
  got = qkp.qk_project(q, k, block=4)
  # One unit key: M q = (k . q) k, i.e. only coordinate 1 survives at every later step.
  np.testing.assert_allclose(got[:, :, :, 1], q[:, :, :, 1], rtol=1e-5)
  np.testing.assert_allclose(got[:, :, :, [0, 2, 3]], 0.0, atol=0)
  # K orthonormal keys: M = I after K tokens (up to the 1/(1 + eps) normalization).
  basis = jnp.linalg.qr(jax.random.normal(jax.random.key(3), (K, K), jnp.float64))[0]
  k = jnp.broadcast_to(jnp.concatenate([basis.T, jnp.zeros((L - K, K))]), (B, H, L, K))
  got = qkp.qk_project(q, k, block=3)
  np.testing.assert_allclose(got[:, :, K - 1:], q[:, :, K - 1:] / (1 + 1e-6), rtol=1e-12)


def test_causal_and_batch_independent():
  q, k = _qk()
  base = qkp.qk_project(q, k, block=4)
  t0 = 6
  q2 = q.at[:, :, t0 + 1:].set(7.0)
  k2 = k.at[:, :, t0 + 1:].set(-3.0)
  # Future tokens changed by O(1): any leakage would show far above rounding.
  np.testing.assert_allclose(qkp.qk_project(q2, k2, block=4)[:, :, : t0 + 1],
                             base[:, :, : t0 + 1], rtol=1e-13, atol=1e-14)
  q3, k3 = q.at[1].set(0.5), k.at[1].set(2.0)
  np.testing.assert_allclose(qkp.qk_project(q3, k3, block=4)[0], base[0], rtol=1e-13,
                             atol=1e-14)


def test_decode_steps_match_parallel_form():
  q, k = _qk()
  want = qkp.qk_project(q, k, reset_every=None, rescale="count")
  m, count = jnp.zeros((B, H, K, K)), jnp.zeros((B,), jnp.int32)
  for t in range(L):
    o, m, count = qkp.qk_decode(m, count, q[:, :, t], k[:, :, t], jnp.full((B,), t == 0),
                                rescale="count")
    np.testing.assert_allclose(o, want[:, :, t], rtol=1e-12, atol=1e-13)
  m_pre, c_pre = qkp.qk_carry(k, 0)
  np.testing.assert_allclose(m_pre, m, rtol=1e-12)
  np.testing.assert_array_equal(c_pre, count)


def test_rejects_bad_arguments():
  q, k = _qk()
  with pytest.raises(ValueError, match="rescale"):
    qkp.qk_project(q, k, rescale="norm")
  with pytest.raises(ValueError, match="k must have shape"):
    qkp.qk_project(q, k[:, :, :3])
  with pytest.raises(ValueError, match="reset_every"):
    qkp.qk_project(q, k, reset_every=0)
