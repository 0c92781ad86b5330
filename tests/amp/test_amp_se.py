"""State evolution: closed forms against Monte Carlo, Nishimori, optimality, spec numbers."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import ndtr

from tnx.amp import aggregators as A
from tnx.amp import data, se

F64 = jnp.float64


@functools.partial(jax.jit, static_argnames=("agg", "model", "n"))
def _mc_terms(agg, problem, mu, sigma, model, n, seed):
  """Brute-force Monte Carlo of (E[signal g], E[g^2], E[g']) and their standard errors."""
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  g_noise = jax.random.normal(k2, (n,), F64)
  if model == "gmm":
    y = jnp.where(jax.random.uniform(k1, (n,)) < problem.prior, 1.0, -1.0)
    sig = y
  else:
    sig = problem.gamma * jax.random.normal(k1, (n,), F64)
    y = jnp.where(sig >= 0, 1.0, -1.0)
  yhat = data.flip_labels(k3, y, problem.p_plus, problem.p_minus)
  yt = mu * sig + sigma * g_noise
  g = agg.fn(yt, yhat, problem, mu, sigma)
  # Stein: E[g'] = E[g G] / sigma (G independent of the signal and the label).
  terms = jnp.stack([sig * g, g**2, g * g_noise / sigma])
  return jnp.mean(terms, 1), jnp.std(terms, 1) / np.sqrt(n)


_moments = jax.jit(se.moments, static_argnames=("agg", "model"))


def _mc_moments(agg, problem, mu, sigma, model, n=200_000, seed=0):
  mean, err = _mc_terms(agg, problem, mu, sigma, model, n, seed)
  return np.asarray(mean), np.asarray(err)


_slow = pytest.mark.slow


@pytest.mark.parametrize("model,name", [
    ("gmm", "hard"), ("gmm", "consensus"), ("gmm", "bayes"), ("glm", "hard"),
    ("glm", "consensus"), ("glm", "bayes"),
    pytest.param("gmm", "soft_self", marks=_slow), pytest.param("glm", "soft_self", marks=_slow),
    pytest.param("glm", "posterior_mean", marks=_slow), pytest.param("glm", "plain", marks=_slow),
    pytest.param("gmm", "plain", marks=_slow)])
def test_moments_match_monte_carlo(model, name):
  # Closed forms (step aggregators) and quadrature (smooth ones) against 2e5 samples;
  # 5 standard errors: false-failure rate below 1e-5 per comparison.
  problem = data.make_problem(1.3, 2.0, 0.3, prior=0.35 if model == "gmm" else 0.5,
                              p_minus=0.15)
  mu, sigma = jnp.asarray(0.7, F64), jnp.asarray(0.9, F64)
  agg = A.get(name, model)
  got = _moments(agg, problem, mu, sigma, model)
  mc, err = _mc_moments(agg, problem, mu, sigma, model)
  for value, m, e in zip(got, mc, err):
    assert abs(float(value) - m) <= 5 * e + 1e-9, (name, float(value), m, e)


def test_spec_table():
  # Test errors after rounds 0/1/2/5/20 (gamma=1, alpha=2, balanced), from the spec's own
  # numpy computation, rounded to 3 decimals.
  table = {
      0.1: [".227/.270/.293/.322/.340", ".227/.228/.228/.228/.228", ".227/.221/.220/.220/.220"],
      0.2: [".259/.287/.303/.325/.340", ".259/.245/.243/.243/.243", ".259/.238/.235/.234/.234"],
      0.3: [".311/.319/.324/.333/.340", ".311/.279/.270/.267/.267", ".311/.268/.255/.251/.251"],
      0.4: [".393/.386/.379/.363/.341", ".393/.353/.333/.316/.315", ".393/.339/.304/.271/.268"],
      0.45: [".444/.438/.432/.410/.345", ".444/.419/.400/.375/.367", ".444/.408/.371/.295/.275"],
  }
  for p, rows in table.items():
    pr = data.make_problem(1.0, 2.0, p)
    for name, row in zip(["hard", "consensus", "bayes"], rows):
      err = se.trajectory(pr, A.get(name), 21).error
      want = [float(v) for v in row.split("/")]
      np.testing.assert_allclose(np.asarray(err)[[0, 1, 2, 5, 20]], want, atol=6e-4)


def test_round_one_closed_forms():
  for p in (0.0, 0.2, 0.45):
    pr = data.make_problem(1.5, 3.0, p, prior=0.3)
    t = se.trajectory(pr, A.get("bayes"), 1)
    assert float(t.mu[0]) == pytest.approx(1.5**2 * (1 - 2 * p), rel=1e-12)
    assert float(t.sigma[0]) ** 2 == pytest.approx(1.5**2 * (1 - 2 * p) ** 2 + 1 / 3, rel=1e-12)
    tg = se.trajectory(pr, A.get("bayes", "glm"), 1, model="glm")
    assert float(tg.eta[0]) == pytest.approx((1 - 2 * p) * np.sqrt(2 * 3 / np.pi), rel=1e-12)


def _tripled(fn):
  return A.smooth("3x", lambda *a: 3.0 * fn(*a))


TRIPLE = {m: _tripled(A.get("bayes", m).fn) for m in ("gmm", "glm")}


def test_nishimori_and_scale_invariance():
  for p, prior, eta in [(0.3, 0.3, 0.2), (0.1, 0.5, 1.3), (0.45, 0.7, 2.0)]:
    pr = data.make_problem(1.5, 2.0, p, prior=prior, p_minus=p / 2)
    mu, sigma = se.state_from_eta(pr, eta)
    m = se.moments(A.get("bayes"), pr, mu, sigma)
    assert abs(float(m.sg - m.g2)) < 1e-6
    # GLM: the innovation aggregator gives mu_{t+1} = E[g*^2].
    mu, sigma = se.state_from_eta(pr, eta, "glm")
    mu_n, _ = se.step(A.get("bayes", "glm"), pr, mu, sigma, "glm")
    assert abs(float(mu_n - se.moments(A.get("bayes", "glm"), pr, mu, sigma, "glm").g2)) < 1e-6
  # g -> 3 g leaves eta unchanged.
  for model in ("gmm", "glm"):
    e1 = se.eta_map(pr, A.get("bayes", model), 0.8, model)
    e3 = se.eta_map(pr, TRIPLE[model], 0.8, model)
    np.testing.assert_allclose(e1, e3, rtol=1e-10)


def test_scalar_bayes_recursion_matches_general_se():
  pr = data.make_problem(1.5, 2.0, 0.3, prior=0.3)
  etas = jnp.linspace(0.05, 3.0, 5, dtype=F64)
  # Equal up to the quadrature error of the Nishimori identity (1e-6).
  np.testing.assert_allclose(se.bayes_map_gmm(pr, etas), se.eta_map(pr, A.get("bayes"), etas),
                             rtol=1e-5)
  assert float(se.fixed_point(pr, A.get("bayes"), 0.2)) < float(se.eta_max_gmm(pr))


def test_perturbed_aggregators_never_beat_optimum():
  # 1000 random tanh(a + b yhat + c y) aggregators in the one-step map, at several states.
  pr = data.make_problem(1.5, 2.0, 0.3, prior=0.3)
  a0 = 0.5 * np.log(0.3 / 0.7)
  b0 = 0.5 * np.log(0.7 / 0.3)
  pert = jax.random.normal(jax.random.key(3), (1000, 3), F64) * jnp.asarray([0.5, 0.5, 0.5])
  for eta in (0.3, 0.97, 1.5):
    mu, sigma = se.state_from_eta(pr, eta)
    best = se.eta_map(pr, A.get("bayes"), eta)

    def one(d):
      agg = A.smooth("t", A.tanh_fn(a0 + d[0], b0 + d[1], (mu / sigma**2) * jnp.exp(d[2])))
      return se.eta_of(pr, *se.step(agg, pr, mu, sigma))

    others = jax.vmap(one)(pert)
    assert float(jnp.max(others)) <= float(best) + 1e-9
    assert float(jnp.min(others)) < float(best) - 1e-4       # the perturbations do matter


def test_ordering_at_high_noise():
  for p in (0.4, 0.45):
    pr = data.make_problem(1.0, 2.0, p)
    err = {n: float(se.trajectory(pr, A.get(n), 6).error[5]) for n in ("hard", "consensus",
                                                                     "bayes", "soft_self")}
    assert err["bayes"] <= err["consensus"] and err["bayes"] <= err["hard"]
    assert err["bayes"] <= err["soft_self"]
  pr = data.make_problem(1.0, 2.0, 0.1)
  plain = float(se.trajectory(pr, A.get("plain"), 6).error[5])
  for n in ("consensus", "bayes"):
    assert abs(float(se.trajectory(pr, A.get(n), 6).error[5]) - plain) <= 0.01
  # Full retraining on hard labels is the exception at low noise (spec table: .227 -> .322).
  assert float(se.trajectory(pr, A.get("hard"), 6).error[5]) > plain + 0.05


def test_cobweb_caption_parameters():
  pr = data.make_problem(1.5, 2.0, 0.3, prior=0.3)
  assert float(se.trajectory(pr, A.get("bayes"), 1).eta[0]) == pytest.approx(0.9705, abs=1e-4)
  for start in (0.2, 1.0):
    eta = np.asarray(se.trajectory(pr, A.get("bayes"), 40, start_eta=start).eta)
    assert np.all(np.diff(eta) > -1e-12)                     # monotone increase
    assert eta[-1] == pytest.approx(1.32405, abs=1e-4)
  assert float(ndtr(-1.32405)) == pytest.approx(0.093, abs=1e-3)


def test_retraining_can_hurt():
  pr = data.make_problem(1.0, 1.0, 0.4)
  down = np.asarray(se.trajectory(pr, A.get("bayes"), 80, start_eta=1.0).eta)
  up = np.asarray(se.trajectory(pr, A.get("bayes"), 80, start_eta=0.2).eta)
  assert np.all(np.diff(down) < 1e-12) and down[1] == pytest.approx(0.600, abs=1e-3)
  assert np.all(np.diff(up) > -1e-12) and up[1] == pytest.approx(0.265, abs=1e-3)
  assert down[-1] == pytest.approx(0.357, abs=1e-3) and up[-1] == pytest.approx(0.357, abs=1e-3)


def test_grid_matches_single_problems():
  grid = data.problem_grid(gamma=[1.0, 1.5], alpha=[1.0, 2.0], p=[0.1, 0.4], prior=[0.3, 0.5])
  out = se.grid(grid, A.get("consensus"), 4)
  assert out.eta.shape == (16, 4)
  for i in (0, 7, 13):
    pr = data.make_problem(float(grid.gamma[i]), float(grid.alpha[i]), float(grid.p_plus[i]),
                           prior=float(grid.prior[i]))
    np.testing.assert_allclose(out.eta[i], se.trajectory(pr, A.get("consensus"), 4).eta,
                               rtol=1e-12)


def test_glm_state_evolution():
  pr = data.make_problem(1.0, 2.0, 0.3)
  err = {n: np.asarray(se.trajectory(pr, A.get(n, "glm"), 8, model="glm").error)
         for n in ("plain", "hard", "bayes", "posterior_mean")}
  assert err["plain"][0] == pytest.approx(0.365, abs=1e-3)
  assert err["bayes"][-1] == pytest.approx(0.363, abs=1e-3)
  np.testing.assert_allclose(err["hard"][1:], 0.5, atol=1e-12)   # Stein cancellation
  assert np.all(err["bayes"][1:] < err["posterior_mean"][1:])
  pr8 = data.make_problem(1.0, 8.0, 0.1)
  e8 = se.trajectory(pr8, A.get("bayes", "glm"), 40, model="glm").error
  assert float(e8[0]) == pytest.approx(0.161, abs=1e-3)
  assert float(e8[-1]) == pytest.approx(0.103, abs=2e-3)


@pytest.mark.parametrize("kwargs", [dict(p=0.5), dict(p=-0.1), dict(p=0.2, p_minus=0.6),
                                    dict(p=0.2, gamma=0.0), dict(p=0.2, alpha=-1.0),
                                    dict(p=0.2, prior=1.0)])
def test_invalid_problem(kwargs):
  args = dict(gamma=1.0, alpha=2.0)
  args.update(kwargs)
  with pytest.raises(ValueError):
    data.make_problem(args.pop("gamma"), args.pop("alpha"), args.pop("p"), **args)


def test_invalid_labels_and_sizes():
  with pytest.raises(ValueError, match="y must contain only"):
    data.noisy_labels(jax.random.key(0), jnp.asarray([1.0, 0.0, -1.0]), 0.1)
  with pytest.raises(ValueError, match="p must lie"):
    data.noisy_labels(jax.random.key(0), jnp.asarray([1.0, -1.0]), 0.5)
  with pytest.raises(ValueError, match="rounds"):
    se.trajectory(data.make_problem(1.0, 2.0, 0.1), A.get("bayes"), 0)
  with pytest.raises(ValueError, match="name"):
    A.get("innovation", "gmm")
