"""Sketches: the fast Walsh-Hadamard transform vs scipy's Hadamard matrix, and the stated
inner-product distortion of the Rademacher and SRHT sketches by Monte Carlo over seeds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import hadamard

from tnx.selection.influence import sketch as sk

P, K, TRIALS = 100, 32, 200


def test_fwht_is_the_orthonormal_hadamard_matrix():
  x = np.random.default_rng(0).standard_normal((3, 16))
  np.testing.assert_allclose(jax.jit(sk.fwht)(jnp.asarray(x)), x @ hadamard(16).T / 4.0,
                             atol=1e-12)
  with pytest.raises(ValueError, match="power-of-two"):
    sk.fwht(jnp.ones(6))


def _pair():
  rng = np.random.default_rng(1)
  x = rng.standard_normal(P)
  y = 0.6 * x + rng.standard_normal(P)
  return x / np.linalg.norm(x), y / np.linalg.norm(y)


def _errors(sketch):
  x, y = _pair()
  xy = jnp.stack([jnp.asarray(x), jnp.asarray(y)])
  keys = jax.random.split(jax.random.key(0), TRIALS)
  s_TRIALSx2xK = jax.jit(jax.vmap(lambda k: sketch.apply(xy, k)))(keys)
  err = np.einsum("tk,tk->t", s_TRIALSx2xK[:, 0], s_TRIALSx2xK[:, 1]) - x @ y
  return np.asarray(err), float(x @ y)


@pytest.mark.parametrize("kind", ["rademacher", "srht"])
def test_inner_products_unbiased_within_stated_distortion(kind):
  if kind == "rademacher":
    err, rho = _errors(sk.RademacherSketch(P, K, block_rows=64))
    stated = np.sqrt((1 + rho**2) / K)
  else:
    err, rho = _errors(sk.SRHTSketch(P, K))
    d = 128
    stated = np.sqrt((1 + rho**2) * (d - K) / ((d - 1) * K))
  se = err.std(ddof=1) / np.sqrt(TRIALS)
  assert abs(err.mean()) < 4 * se                      # unbiased
  # The sample std of 200 draws is within ~10% of the truth; the Rademacher bound is exact
  # (an upper bound), the SRHT value is its leading-order approximation.
  assert err.std(ddof=1) < 1.2 * stated
  assert err.std(ddof=1) > 0.6 * stated                # and the sketch is not degenerate
  assert np.max(np.abs(err)) < 5 * stated


def test_srht_preserves_norms_of_spiky_vectors_and_is_exact_at_full_size():
  e0 = jnp.zeros(64).at[5].set(1.0)
  s = jax.jit(sk.SRHTSketch(64, 8, seed=0))
  assert float(jnp.sum(s(e0) ** 2)) == pytest.approx(1.0, rel=1e-12)  # H spreads a spike
  full = jax.jit(sk.SRHTSketch(50, 64, seed=2))  # K = D: an orthogonal map
  v = jnp.asarray(np.random.default_rng(0).standard_normal((2, 50)))
  np.testing.assert_allclose(full(v) @ full(v).T, v @ v.T, rtol=1e-10)


def test_sketch_arguments():
  with pytest.raises(ValueError, match="dim=200 exceeds"):
    sk.SRHTSketch(100, 200)
  with pytest.raises(ValueError, match="dim must be a positive integer"):
    sk.RademacherSketch(10, 0)
  with pytest.raises(ValueError, match="sketch must be one of"):
    sk.make_sketch("gaussian", 10, 4)
  with pytest.raises(ValueError, match="must have 10 entries"):
    sk.RademacherSketch(10, 4)(jnp.ones(9))
  assert sk.make_sketch("none", 10, 4) is None
