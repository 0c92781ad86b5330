"""The linear-regression model's closed forms against Monte Carlo and exact solutions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx.mixing import linreg
from tnx.mixing import weights as W
from tnx.mixing.pools import Pools


def test_sample_readings_have_the_stated_moments():
  """R1: Sigma = I, sigma^2 = sigma0^2 / C; R2: Sigma = C I, sigma^2 = sigma0^2."""
  for reading, cov_scale, noise in (("R1", (1, 1), (1, 0.01)), ("R2", (1, 100), (1, 1))):
    problem = linreg.make_problem(4, (1, 100), reading=reading, n_train=20000, n_val=10)
    theta, train, val = linreg.sample(0, problem)
    x, y = np.asarray(train.data["x"]), np.asarray(train.data["y"])
    for i in range(2):
      np.testing.assert_allclose(x[i].T @ x[i] / 20000, cov_scale[i] * np.eye(4),
                                 atol=0.05 * cov_scale[i])
      resid = y[i] - x[i] @ np.asarray(theta)
      np.testing.assert_allclose(resid.var(), noise[i], rtol=0.05)
    assert val.data["x"].shape == (2, 10, 4)
  with pytest.raises(ValueError, match="reading"):
    linreg.make_problem(4, reading="R3")
  with pytest.raises(ValueError, match="n_train"):
    linreg.make_problem(4, n_train=(10, 0))


def test_weighted_ls_is_stationary_and_gd_converges_to_it():
  """Item 1: grad of the weighted objective at theta_w is ~0; full-batch GD converges to it."""
  problem = linreg.make_problem(5, (1, 30), n_train=(40, 90), n_val=5)
  _, train, _ = linreg.sample(1, problem)
  pi, w = jnp.array([0.3, 0.7]), jnp.array([2.0, 0.5])
  a = W.per_example_weights(pi, w, train.n.astype(jnp.float64))
  theta_w = linreg.weighted_ls(train, a)
  grad_at = lambda th: jnp.einsum("k,knd->d", a, linreg.per_example_grads(th, train))
  scale = jnp.linalg.norm(jnp.einsum("k,knd->d", a, linreg.per_example_grads(
      jnp.zeros(5), train)))
  assert float(jnp.linalg.norm(grad_at(theta_w)) / scale) < 1e-8

  @jax.jit
  def gd(th):
    return jax.lax.fori_loop(0, 3000, lambda _, t: t - 0.5 * grad_at(t), th)

  np.testing.assert_allclose(gd(jnp.zeros(5)), theta_w, rtol=1e-7, atol=1e-9)


@pytest.fixture(scope="module")
def gls_vs_ols_runs():
  """1000 repeats of d = 10, n_i = 2000, C = (1, 1), sigma^2 = (1, 0.01): the squared error
  of theta_w for weight ratios a_2 / a_1 on a grid (same data for every ratio)."""
  problem = linreg.LinearProblem(np.stack([np.eye(10)] * 2), np.array([1.0, 0.01]),
                                 np.array([0.5, 0.5]), (2000, 2000), (1, 1))
  ratios = np.array([1.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 1e4])
  rng = np.random.default_rng(0)
  fit = jax.jit(jax.vmap(lambda p, a: linreg.weighted_ls(p, a), (None, 0)))
  errs = []
  for _ in range(1000):
    x = rng.standard_normal((2, 2000, 10))
    theta = rng.standard_normal(10) / np.sqrt(10)
    y = x @ theta + np.sqrt(problem.sigma2)[:, None] * rng.standard_normal((2, 2000))
    pools = Pools({"x": jnp.asarray(x), "y": jnp.asarray(y)}, jnp.array([2000, 2000]))
    a = jnp.stack([jnp.ones(len(ratios)), jnp.asarray(ratios)], axis=1)
    errs.append(np.sum((np.asarray(fit(pools, a)) - theta) ** 2, axis=1))
  return problem, ratios, np.array(errs)


def test_gls_and_ols_errors_match_closed_form(gls_vs_ols_runs):
  """Item 2: MC E||theta - theta*||^2 within 3 SE and 5% of d s(a) for OLS and GLS."""
  problem, ratios, errs = gls_vs_ols_runs
  for col, a in ((0, jnp.array([1.0, 1.0])), (3, jnp.array([1.0, 100.0]))):
    pred = float(linreg.asymptotic_error(a, problem))
    mc, se = errs[:, col].mean(), errs[:, col].std(ddof=1) / np.sqrt(len(errs))
    assert abs(mc - pred) < 3 * se and abs(mc / pred - 1) < 0.05, (col, mc, pred, se)
  ref = linreg.reference_errors(problem)
  np.testing.assert_allclose([ref["ols"], ref["gls"]], [1.2625e-3, 4.95049504950495e-05],
                             rtol=1e-10)
  s_iso = linreg.isotropic_s(jnp.array([1.0, 100.0]), jnp.array([2000.0, 2000.0]),
                             jnp.ones(2), jnp.array([1.0, 0.01]))
  np.testing.assert_allclose(10 * s_iso, ref["gls"], rtol=1e-12)


def test_weight_ratio_grid_minimum_at_inverse_noise_ratio(gls_vs_ols_runs):
  problem, ratios, errs = gls_vs_ols_runs
  assert ratios[np.argmin(errs.mean(0))] == 100.0
  fine = np.geomspace(1, 1e4, 401)
  pred = [float(linreg.asymptotic_error(jnp.array([1.0, r]), problem)) for r in fine[::20]]
  assert abs(np.log10(fine[::20][int(np.argmin(pred))] / 100.0)) < 0.11


def test_single_domain_exact_error():
  rng = np.random.default_rng(4)
  d, n, reps = 5, 30, 4000
  cov = np.diag([1.0, 2.0, 0.5, 1.0, 3.0])
  chol = np.linalg.cholesky(cov)
  x = rng.standard_normal((reps, n, d)) @ chol.T
  eps = 0.7 * rng.standard_normal((reps, n))
  xty = np.einsum("rnd,rn->rd", x, eps)[..., None]
  delta = np.linalg.solve(np.einsum("rnd,rne->rde", x, x), xty)[..., 0]
  errs = np.sum(delta**2, axis=1)
  pred = linreg.exact_single_domain_error(0.49, cov, n)
  assert abs(errs.mean() - pred) < 3 * errs.std(ddof=1) / np.sqrt(reps)
  with pytest.raises(ValueError, match="n=6 must exceed"):
    linreg.exact_single_domain_error(1.0, cov, 6)


@pytest.mark.parametrize("c, sigma2", [((1.0, 1.0), (1.0, 0.01)), ((1.0, 100.0), (1.0, 1.0))])
def test_population_gradient_variance(c, sigma2):
  """Item 3: the within-domain gradient variance over 4e5 Gaussian samples matches
  ||Sigma d||^2 + (d^T Sigma d) tr Sigma + sigma^2 tr Sigma within 2%."""
  d, n = 10, 400_000
  rng = np.random.default_rng(1)
  delta = 0.3 * rng.standard_normal(d)
  cov = np.asarray(c)[:, None, None] * np.eye(d)[None]
  x = np.sqrt(np.asarray(c))[:, None, None] * rng.standard_normal((2, n, d))
  y = np.sqrt(np.asarray(sigma2))[:, None] * rng.standard_normal((2, n))  # theta* = 0
  pools = Pools({"x": jnp.asarray(x), "y": jnp.asarray(y)}, jnp.array([n, n]))
  _, v2_mc = linreg.empirical_grad_moments(jnp.asarray(delta), pools)
  v2 = linreg.population_grad_variance(jnp.asarray(delta), jnp.asarray(cov), jnp.asarray(sigma2))
  np.testing.assert_allclose(v2_mc, v2, rtol=0.02)
  iso = np.asarray(c) ** 2 * (d + 1) * np.sum(delta**2) + d * np.asarray(c) * np.asarray(sigma2)
  np.testing.assert_allclose(v2, iso, rtol=1e-12)


def test_erma_moments_match_monte_carlo():
  """Item 7: per-domain mean and variance of the squared loss at a fixed theta equal s^2/2 and
  s^4/2 (within 3 SE of the MC estimates over 2e5 validation examples)."""
  import optax

  from tnx.mixing import loop as L
  problem = linreg.make_problem(6, (1.0, 20.0), reading="R1", n_train=4, n_val=200_000)
  theta_star, train, val = linreg.sample(2, problem)
  theta = theta_star + 0.2
  lp = L.Loop(linreg.squared_loss, optax.sgd(0.1), L.MixingConfig(batch_size=4))
  mean, var = jax.jit(lp.val_stats)(theta, jax.random.key(0), val)
  lm, vm = linreg.erma_moments(theta - theta_star, jnp.asarray(problem.cov),
                               jnp.asarray(problem.sigma2))
  loss = np.asarray(jax.vmap(jax.vmap(linreg.squared_loss, (None, 0)), (None, 0))(
      theta, val.data))
  n = loss.shape[1]
  se_mean = loss.std(1) / np.sqrt(n)
  se_var = np.sqrt(((loss - loss.mean(1, keepdims=True)) ** 4).mean(1) - loss.var(1) ** 2) \
      / np.sqrt(n)
  assert np.all(np.abs(np.asarray(mean) - np.asarray(lm)) < 3 * se_mean)
  assert np.all(np.abs(np.asarray(var) - np.asarray(vm)) < 3 * se_var)


def test_sgd_quadratic_terms():
  """H and Q of the weighted objective: H is the Hessian of sum pi w Lhat_i, and Q's trace is
  the mini-batch variance formula at theta_w."""
  from tnx.mixing import sampling as S
  problem = linreg.make_problem(3, (1.0, 10.0), n_train=(50, 80), n_val=2)
  _, train, _ = linreg.sample(3, problem)
  pi, w, b = jnp.array([0.4, 0.6]), jnp.array([1.5, 0.7]), jnp.array([5.0, 11.0])
  n = train.n.astype(jnp.float64)

  @jax.jit
  def terms():
    theta_w = linreg.weighted_ls(train, W.per_example_weights(pi, w, n))
    h, q = linreg.sgd_quadratic(theta_w, train, pi, w, b)
    per_ex = jax.vmap(jax.vmap(linreg.squared_loss, (None, 0)), (None, 0))
    obj = lambda th: jnp.sum(pi * w * jnp.sum(per_ex(th, train.data), axis=1) / n)
    _, v2 = linreg.empirical_grad_moments(theta_w, train)
    return jax.hessian(obj)(theta_w), h, jnp.trace(q), S.minibatch_variance(pi, w, v2, b)

  hess, h, tr_q, formula = terms()
  np.testing.assert_allclose(hess, h, rtol=1e-10)
  np.testing.assert_allclose(tr_q, formula, rtol=1e-10)
