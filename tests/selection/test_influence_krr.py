"""Kernel ridge propagation: exact when every sample is a landmark (RBF) or when landmarks span
the embedding space (linear), error vanishing with the damping, the median width vs NumPy,
chunked/sharded = one block, and argument errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from tnx import sharding as shd
from tnx.selection.influence import krr

RNG = np.random.default_rng(0)
E = jnp.asarray(RNG.standard_normal((24, 4)))
Y = jnp.asarray(RNG.standard_normal((24, 2)))


def test_all_landmarks_rbf_is_exact_as_damping_vanishes():
  errors = []
  for damp in (1e-3, 1e-6, 1e-9):
    p_hat, fit = krr.krr_propagate(E, jnp.arange(24), Y, kernel="rbf", damp=damp, chunk_size=5)
    errors.append(float(jnp.max(jnp.abs(p_hat - Y))))
  assert errors[2] < 1e-5 and errors[1] < errors[0] / 100  # error ~ damping


def test_linear_kernel_is_exact_when_landmarks_span_the_embeddings():
  beta = jnp.asarray(RNG.standard_normal((4, 3)))
  y_all = E @ beta                           # statistics linear in the embeddings
  landmarks = jnp.array([1, 5, 8, 13, 20])   # 5 >= 4 rows in general position span R^4
  p_hat, _ = krr.krr_propagate(E, landmarks, y_all[landmarks], kernel="linear", damp=1e-12)
  np.testing.assert_allclose(p_hat, y_all, atol=1e-8)
  # A part of y orthogonal to span(E) cannot be recovered, even with every sample a landmark.
  # (The rank-4 Gram matrix of 24 landmarks is singular: only the damping regularizes it.)
  p_all, _ = krr.krr_propagate(E, jnp.arange(24), Y, kernel="linear", damp=1e-6)
  proj = E @ jnp.linalg.lstsq(E, Y)[0]
  np.testing.assert_allclose(p_all, proj, atol=1e-6)


def test_matches_the_dense_formula_and_median_width():
  idx = jnp.array([0, 3, 7, 11, 19])
  p_hat, fit = krr.krr_propagate(E, idx, Y[idx], kernel="rbf", damp=1e-2)
  e, el = np.asarray(E), np.asarray(E)[np.asarray(idx)]
  d_ll = np.sqrt(((el[:, None] - el[None]) ** 2).sum(-1))
  sigma = np.median(d_ll[np.triu_indices(5, 1)])
  assert float(fit.sigma) == pytest.approx(sigma, rel=1e-12)
  k_ll = np.exp(-d_ll**2 / (2 * sigma**2))
  k_nl = np.exp(-((e[:, None] - el[None]) ** 2).sum(-1) / (2 * sigma**2))
  want = k_nl @ np.linalg.solve(k_ll + 1e-2 * np.mean(np.diag(k_ll)) * np.eye(5),
                                np.asarray(Y)[np.asarray(idx)])
  np.testing.assert_allclose(p_hat, want, rtol=1e-10)
  np.testing.assert_allclose(fit.coefficients(E) @ Y[idx], want, rtol=1e-10)
  vec, _ = krr.krr_propagate(E, idx, Y[idx, 0], kernel="rbf", damp=1e-2)
  np.testing.assert_allclose(vec, want[:, 0], rtol=1e-10)


def test_sharded_equals_unsharded():
  idx = jnp.array([2, 4, 9, 17])
  one, _ = krr.krr_propagate(E, idx, Y[idx], damp=1e-2, chunk_size=24)
  many, _ = krr.krr_propagate(E, idx, Y[idx], damp=1e-2, chunk_size=2, mesh=shd.make_mesh())
  np.testing.assert_allclose(many, one, rtol=1e-12)


def test_argument_errors():
  for bad in (0.0, -1e-3):
    with pytest.raises(ValueError, match="damp must be a finite number > 0"):
      krr.fit_krr(E[:4], damp=bad)
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
      krr.fit_krr(E[:4], sigma=bad)
  with pytest.raises(ValueError, match="kernel must be one of"):
    krr.fit_krr(E[:4], kernel="laplace")
  with pytest.raises(ValueError, match="median heuristic needs at least 2"):
    krr.fit_krr(E[:1])
  with pytest.raises(ValueError, match="landmark embeddings coincide"):
    krr.fit_krr(jnp.ones((3, 4)))
