"""The two CoT implementations against each other and against the pseudo-Newton recursion;
the looped model's error against the closed forms (Prop. 3.2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx.icl import cot, lsa, task, theory

LAM = np.diag([3.0, 1.0, 0.5, 0.2, 0.1])


def _prompts(key, batch, m, cov=LAM):
  return task.sample_prompts(key, batch, m, task.cov_sqrt(cov), dtype=jnp.float64)


def test_appended_equals_looped_equals_recursion():
  """k <= 6 steps, float64, tolerance 1e-10 (the equivalence behind the paper's Prop. 3.2)."""
  params = lsa.optimal_params(LAM, 10)
  p = _prompts(jax.random.key(0), 3, 15)
  k = 6
  fast = cot.estimates(params, p, k, form="appended")
  naive = cot.estimates(params, p, k, form="appended", order="naive")
  looped = cot.estimates(params, p, k, form="looped")
  pre = lsa.preconditioner(params)
  ref = jax.vmap(lambda x, y: cot.cot_reference(pre, x, y, k))(p.x_BxNxD, p.y_BxN)
  for got in (naive, looped, ref):
    np.testing.assert_allclose(fast, got, atol=1e-10)
  # closed form of the recursion: w_k = (I - (I - P S)^k) w
  s = p.x_BxNxD[0].T @ p.x_BxNxD[0] / 15
  step = np.eye(5) - np.asarray(pre) @ np.asarray(s)
  np.testing.assert_allclose(fast[0, k - 1], (np.eye(5) - np.linalg.matrix_power(step, k))
                             @ np.asarray(p.w_BxD[0]), atol=1e-10)


def test_appended_columns_keep_structure_and_count_is_m():
  params = lsa.optimal_params(LAM, 10)
  p = _prompts(jax.random.key(1), 1, 8)
  z = task.embed(p.x_BxNxD, p.y_BxN, jnp.zeros((1, 5)))[0]
  out = cot.cot_appended(params, z, 3)
  # the normaliser is the number of data columns m = 8, not the training n = 10
  s = p.x_BxNxD[0].T @ p.x_BxNxD[0] / 8
  first = lsa.reduced_step(jnp.zeros(5), s, p.w_BxD[0], lsa.preconditioner(params))
  np.testing.assert_allclose(out[0], first, atol=1e-12)


def test_dense_params_forms():
  """For a general (dense) V the appended form is the definition: fast == naive at every k,
  the looped form equals it at k = 1 and differs after (appended columns then matter)."""
  params = lsa.random_params(jax.random.key(2), 3, 0.3)
  p = task.sample_prompts(jax.random.key(3), 2, 6, np.eye(3), dtype=jnp.float64)
  fast = cot.estimates(params, p, 4, form="appended")
  naive = cot.estimates(params, p, 4, form="appended", order="naive")
  looped = cot.estimates(params, p, 4, form="looped")
  np.testing.assert_allclose(fast, naive, atol=1e-10)
  np.testing.assert_allclose(fast[:, 0], looped[:, 0], atol=1e-10)
  assert np.max(np.abs(fast[:, 1:] - looped[:, 1:])) > 1e-6


def test_looped_error_matches_theory():
  """Monte Carlo of the looped LSA (8 fixed seeds x 250 prompts, m = 200) against the closed
  forms: k = 1 within 4 standard errors of the exact finite-m formula, and k = 1..5 within
  4 combined standard errors of the exact-in-w Wishart estimator at the same m."""
  n, m, k = 10, 200, 5
  params = lsa.optimal_params(LAM, n)
  errs = np.asarray(cot.error_curve_mc(jax.random.key(4), params,
                                       jnp.asarray(task.cov_sqrt(LAM)), m=m, k=k,
                                       n_prompts=250, n_seeds=8))
  assert errs.shape == (8, k) and len(np.unique(errs[:, 0])) == 8   # the seeds differ
  mean, se = errs.mean(0), errs.std(0, ddof=1) / np.sqrt(8)
  pre = theory.optimum_preconditioner(LAM, n)
  assert abs(mean[0] - theory.error_1_finite(pre, LAM, m)) < 4 * se[0]
  ref = theory.error_curve_finite_mc(0, pre, LAM, m, k, draws=4000)
  assert np.all(np.abs(mean - ref.mean) < 4 * np.hypot(se, ref.sem))


def test_finite_m_estimator_limits():
  """The exact-in-w estimator: k = 1 equals the exact formula within 4 SE; at m = 4000 it is
  within 1% of the m = infinity curve, which has the reference values 1.642, 0.826, 0.192."""
  pre = theory.optimum_preconditioner(LAM, 10)
  small = theory.error_curve_finite_mc(1, pre, LAM, 15, 1, draws=20000)
  assert abs(small.mean[0] - theory.error_1_finite(pre, LAM, 15)) < 4 * small.sem[0]
  np.testing.assert_allclose(theory.error_1_finite(pre, LAM, 15), 2.3025, atol=1e-4)
  inf = theory.error_curve_inf(pre, LAM, 5)
  big = theory.error_curve_finite_mc(2, pre, LAM, 4000, 5, draws=100)
  np.testing.assert_allclose(big.mean, inf, rtol=0.01)
  np.testing.assert_allclose(inf[[0, 1, 4]], [1.642, 0.826, 0.192], atol=6e-4)


def test_cot_argument_errors():
  params = lsa.optimal_params(np.eye(2), 4)
  z = jnp.zeros((6, 5))
  with pytest.raises(ValueError, match="k must be a positive integer"):
    cot.cot_appended(params, z, 0)
  with pytest.raises(ValueError, match="k must be a positive integer"):
    cot.cot_looped(params, z, -1)
  with pytest.raises(ValueError, match="z_ExM1 must have 6 rows"):
    cot.cot_looped(params, jnp.zeros((8, 5)), 2)
  with pytest.raises(ValueError, match="form must be one of"):
    cot.estimates(params, task.sample_prompts(jax.random.key(0), 1, 3, np.eye(2)), 2,
                  form="grown")
