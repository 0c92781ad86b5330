"""Loss weights: validation, GLS optimum and its independence of pi, FGLS and ERMA rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tnx.mixing import linreg
from tnx.mixing import weights as W


@pytest.mark.parametrize("bad, match", [
    ([0.5, -0.1, 0.6], "entries >= 0"),
    ([0.5, np.nan], "finite"),
    ([0.0, 0.0], "all zero"),
    ([0.3, 0.3], "sum to 1"),
    ([1.0], "one entry per domain"),
])
def test_check_pi_rejects(bad, match):
  with pytest.raises(ValueError, match=rf"pi.*{match}|{match}.*pi|pi must"):
    W.check_pi(bad, 2)


@pytest.mark.parametrize("bad", [[1.0, -1.0], [1.0, 0.0], [np.inf, 1.0], [1.0, 2.0, 3.0]])
def test_check_loss_weights_rejects(bad):
  with pytest.raises(ValueError, match="loss_weights"):
    W.check_loss_weights(bad, 2)


def test_budget_and_counts_reject():
  with pytest.raises(ValueError, match="batch_size=2 is smaller than the number of domains K=3"):
    W.check_budget(2, 3)
  with pytest.raises(ValueError, match=r"n: domains \[1\] are empty"):
    W.check_counts([5, 0], 2)


def test_gls_weights_reduce_to_inverse_noise_when_pi_proportional_to_n():
  sigma2 = jnp.array([1.0, 0.25, 0.01])
  n = jnp.array([100.0, 300.0, 600.0])
  w = W.gls_weights(sigma2, n, n / n.sum())
  np.testing.assert_allclose(w / w[0], sigma2[0] / sigma2, rtol=1e-12)
  np.testing.assert_allclose(jnp.sum(n / n.sum() * w), 1.0, rtol=1e-12)


@settings(deadline=None, max_examples=25)
@given(st.lists(st.floats(0.05, 1.0), min_size=3, max_size=3))
def test_gls_example_weights_do_not_depend_on_pi(raw_pi):
  """Item 11: changing pi changes the loss weights but not the per-example weights a_i, so
  the GLS estimator is the same for every pi."""
  sigma2 = jnp.array([2.0, 0.5, 0.05])
  n = jnp.array([40.0, 70.0, 25.0])
  pi = jnp.asarray(raw_pi) / sum(raw_pi)
  a = W.per_example_weights(pi, W.gls_weights(sigma2, n, pi), n)
  np.testing.assert_allclose(a / a[0], sigma2[0] / sigma2, rtol=1e-10)


def test_gls_estimator_identical_across_pi():
  problem = linreg.make_problem(3, (1.0, 4.0, 50.0), n_train=(30, 50, 20), n_val=5)
  _, train, _ = linreg.sample(3, problem)
  n = train.n.astype(jnp.float64)
  sigma2 = jnp.asarray(problem.sigma2)
  gls_fit = jax.jit(lambda pi: linreg.weighted_ls(train, W.per_example_weights(
      pi, W.gls_weights(sigma2, n, pi), n)))
  thetas = [gls_fit(jnp.asarray(pi)) for pi in ([1 / 3] * 3, [0.7, 0.2, 0.1], [0.05, 0.05, 0.9])]
  np.testing.assert_allclose(thetas[1], thetas[0], rtol=1e-10)
  np.testing.assert_allclose(thetas[2], thetas[0], rtol=1e-10)


def test_fgls_weights_finite_at_zero_noise():
  w = W.fgls_weights(jnp.array([1.0, 0.0]), jnp.array([10.0, 10.0]), jnp.array([0.5, 0.5]))
  assert np.all(np.isfinite(w)) and float(w[1]) > float(w[0])


def test_ema_from_first_and_smoothing():
  e = W.ema_init(2, 1.0, jnp.float64)
  e1 = W.ema_update(e, jnp.array([4.0, 0.0]), 0.25, from_first=True)
  np.testing.assert_allclose(e1.value, [4.0, 0.0])
  e2 = W.ema_update(e1, jnp.array([0.0, 4.0]), 0.25, from_first=True)
  np.testing.assert_allclose(e2.value, [3.0, 1.0])
  np.testing.assert_allclose(W.ema_update(e, jnp.array([4.0, 0.0]), 0.25,
                                          from_first=False).value, [1.75, 0.75])


def test_erma_directions():
  pi = jnp.array([0.5, 0.5])
  w = jnp.array([1.0, 1.0])
  # equal variance: weight moves towards the higher-loss domain
  up = W.erma_update(w, pi, jnp.array([1.0, 2.0]), jnp.array([1.0, 1.0]), gamma1=0.5,
                     gamma2=0.0)
  assert float(up[1]) > float(up[0])
  # equal loss: weight moves away from the noisier domain
  down = W.erma_update(w, pi, jnp.array([1.0, 1.0]), jnp.array([1.0, 5.0]), gamma1=0.5,
                       gamma2=0.5)
  assert float(down[1]) < float(down[0])
  np.testing.assert_allclose(jnp.sum(pi * down), 1.0, rtol=1e-12)


def test_erma_fixed_point_is_gls_at_optimum():
  """At theta = theta* (L = sigma^2/2, Var = sigma^4/2) the ERMA fixed point with
  gamma1 G / gamma2 chosen so that the normalisation constant is 0 is the GLS form
  w ~ 1/sigma^2; iterating the update converges to `erma_stationary`."""
  pi = jnp.array([0.5, 0.5])
  sigma2 = jnp.array([1.0, 0.01])
  loss, var = sigma2 / 2, sigma2**2 / 2
  gls = W.gls_weights(sigma2, jnp.array([1.0, 1.0]), pi)
  ratio = float(1.0 / jnp.sum(pi / sigma2))  # c = 0 exactly when gamma1/gamma2 = this
  stat = W.erma_stationary(pi, loss, var, gamma1=ratio, gamma2=1.0)
  np.testing.assert_allclose(stat, gls, rtol=1e-6)

  @jax.jit
  def iterate(g1, g2):  # steps small enough that the multiplicative update does not oscillate
    body = lambda _, w: W.erma_update(w, pi, loss, var, gamma1=g1, gamma2=g2)
    return jax.lax.fori_loop(0, 20000, body, jnp.ones(2))

  np.testing.assert_allclose(iterate(50 * ratio, 50.0), gls, rtol=1e-4)
  # another ratio moves the fixed point away from GLS, and iteration still finds it
  stat2 = W.erma_stationary(pi, loss, var, gamma1=0.2, gamma2=1.0)
  np.testing.assert_allclose(iterate(2.0, 10.0), stat2, rtol=1e-4)
  assert abs(float(stat2[1] / stat2[0]) - 100.0) > 1.0
