"""The LSA forward orders, its sparse structure and the closed-form optimum (Theorem 3.1)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx.icl import lsa, task, theory

LAM = np.diag([3.0, 1.0, 0.5, 0.2, 0.1])


def test_optimum_is_minus_gamma_inverse_from_moments():
  """-E[S] (E[S^2])^{-1} with the Wishart moments equals -Gamma^{-1} to machine precision,
  for a non-diagonal Lambda."""
  q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((5, 5)))
  lam = q @ LAM @ q.T
  n = 7
  second = (1 + 1 / n) * lam @ lam + np.trace(lam) / n * lam
  v_star = -lam @ np.linalg.inv(second)
  np.testing.assert_allclose(v_star, -np.linalg.inv(theory.gamma(lam, n)), atol=1e-12)
  params = lsa.optimal_params(lam, n, c=2.0)
  np.testing.assert_allclose(params.v_ExE[6:11, :5], v_star / 2.0, atol=1e-12)
  np.testing.assert_allclose(lsa.preconditioner(params), -v_star, atol=1e-12)


def test_gamma_limits_and_errors():
  np.testing.assert_allclose(theory.gamma(LAM, math.inf), LAM)
  np.testing.assert_allclose(theory.gamma(LAM, 10), 1.1 * LAM + 0.48 * np.eye(5))
  with pytest.raises(ValueError, match="n must be a positive integer"):
    theory.gamma(LAM, 0)
  with pytest.raises(ValueError, match="lam must be positive semi-definite"):
    theory.gamma(-LAM, 5)


def test_fast_column_equals_naive_forward_with_mask():
  params = lsa.random_params(jax.random.key(0), 3)
  z = jax.random.normal(jax.random.key(1), (8, 9), jnp.float64)
  mask = jnp.arange(9) < 6
  full = lsa.forward(params, z, 5.0, mask)
  for j in (0, 3, 5):
    np.testing.assert_allclose(lsa.column(params, z, j, 5.0, mask), full[:, j], atol=1e-12)
  # masked-out columns do not enter the sums
  z2 = z.at[:, 6:].set(1e3)
  np.testing.assert_allclose(lsa.column(params, z2, 5, 5.0, mask), full[:, 5], atol=1e-12)


def test_sparse_lsa_is_one_preconditioned_step():
  n = 10
  params = lsa.optimal_params(LAM, n)
  p = task.sample_prompts(jax.random.key(3), 3, 12, task.cov_sqrt(LAM), dtype=jnp.float64)
  w0 = jax.random.normal(jax.random.key(4), (3, 5), jnp.float64)
  z = task.embed(p.x_BxNxD, p.y_BxN, w0)
  out = jax.vmap(lambda zz: lsa.forward(params, zz, 12)[:, -1])(z)
  pre = jnp.asarray(theory.optimum_preconditioner(LAM, n))
  for b in range(3):
    s = p.x_BxNxD[b].T @ p.x_BxNxD[b] / 12
    ref = lsa.reduced_step(w0[b], s, p.w_BxD[b], pre)
    np.testing.assert_allclose(out[b, 6:11], ref, atol=1e-12)
    np.testing.assert_allclose(out[b, :6], 0, atol=1e-12)   # x and y rows stay 0
    np.testing.assert_allclose(out[b, -1], 1, atol=1e-12)   # constant row stays 1


def test_param_shape_errors():
  with pytest.raises(ValueError, match="v_tilde_DxD"):
    lsa.sparse_params(np.ones((2, 3)))
  with pytest.raises(ValueError, match="c must be a finite number > 0"):
    lsa.sparse_params(np.eye(2), 0.0)
  with pytest.raises(ValueError, match="LSA params"):
    lsa.dim_of(lsa.LSAParams(jnp.zeros((5, 5)), jnp.zeros((5, 5))))
