"""State evolution (SE) of the retraining AMP iteration, for any aggregator.

GMM (`y_t ~ mu_t Y + sigma_t G`):
    mu_{t+1} = gamma^2 E[Y g],   sigma_{t+1}^2 = gamma^2 E[Y g]^2 + E[g^2] / alpha,
    eta = mu / sigma,            test error Phi(-eta).
GLM (`y_t ~ mu_t Z* + sigma_t G`, `Z* ~ N(0, gamma^2)`):
    mu_{t+1} = E[Z* g] / gamma^2 - mu_t E[g'],   sigma_{t+1}^2 = E[g^2] / alpha,
    eta = gamma mu / sigma,      test error arctan(1 / eta) / pi (angle to beta* over pi).
Round 0 is plain training (`g_0 = yhat`). Smooth aggregators are integrated by Gauss-Hermite
quadrature; the step aggregators (plain, hard, consensus) by closed forms (quadrature of a
step function is quantised). Rounds run under `lax.scan`; `grid` vmaps over `Problem`s.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr
from jax.scipy.stats import norm

from tnx import validation
from tnx.amp import aggregators as agg_lib
from tnx.amp import data as data_lib
from tnx.amp.data import Problem, label_given_class

_NODES, _W = np.polynomial.hermite_e.hermegauss(101)
_W = _W / _W.sum()


class Moments(NamedTuple):
  """E[signal * g] (Y for GMM, Z* for GLM), E[g^2], E[dg/dy] under the SE law of y_t."""
  sg: jax.Array
  g2: jax.Array
  dg: jax.Array


def _gh(dtype):
  return jnp.asarray(_NODES, dtype), jnp.asarray(_W, dtype)


def _value_and_deriv(fn, y, yhat, problem, mu, sigma):
  f = lambda yy: fn(yy, yhat, problem, mu, sigma)
  return jax.jvp(f, (y,), (jnp.ones_like(y),))


def _pm(problem):
  """Rows (Y, Yhat) over {+1,-1}^2 and their joint probabilities, shape [4]."""
  dt = problem.gamma.dtype
  y_cls = jnp.asarray([1.0, 1.0, -1.0, -1.0], dt)
  y_hat = jnp.asarray([1.0, -1.0, 1.0, -1.0], dt)
  p_y = jnp.where(y_cls > 0, problem.prior, 1.0 - problem.prior)
  return y_cls, y_hat, p_y * label_given_class(y_hat, y_cls, problem.p_plus, problem.p_minus)


def gmm_moments(agg: agg_lib.Aggregator, problem: Problem, mu, sigma) -> Moments:
  """Moments of `g(mu Y + sigma G, Yhat)` for the GMM."""
  dt = problem.gamma.dtype
  e = ndtr(-mu / sigma)                                         # P(sign y_t != Y)
  dens0 = norm.pdf(mu / sigma) / sigma                         # density of y_t at 0
  pp = jnp.stack([problem.prior, 1.0 - problem.prior])
  flips = jnp.stack([problem.p_plus, problem.p_minus])
  if agg.kind == "plain":
    return Moments(jnp.sum(pp * (1 - 2 * flips)), jnp.ones((), dt), jnp.zeros((), dt))
  if agg.kind == "hard":
    return Moments(1.0 - 2.0 * e, jnp.ones((), dt), 2.0 * dens0)
  if agg.kind == "consensus":
    sg = jnp.sum(pp * ((1 - flips) * (1 - e) - flips * e))
    g2 = jnp.sum(pp * ((1 - flips) * (1 - e) + flips * e))
    return Moments(sg, g2, dens0)
  nodes, w = _gh(dt)
  y_cls, y_hat, pw = _pm(problem)
  y = mu * y_cls[:, None] + sigma * nodes[None, :]             # [4, K]
  g, dg = _value_and_deriv(agg.fn, y, y_hat[:, None], problem, mu, sigma)
  ww = pw[:, None] * w[None, :]
  return Moments(jnp.sum(ww * y_cls[:, None] * g), jnp.sum(ww * g**2), jnp.sum(ww * dg))


def glm_moments(agg: agg_lib.Aggregator, problem: Problem, mu, sigma) -> Moments:
  """Moments of `g(mu Z* + sigma G, Yhat)` for the sign-link GLM (balanced classes)."""
  dt = problem.gamma.dtype
  gam = problem.gamma
  sd_y = jnp.sqrt(mu**2 * gam**2 + sigma**2)
  rho = mu * gam / sd_y                                        # corr(Z*, y_t)
  c = gam / jnp.sqrt(2 * jnp.pi)
  flips = jnp.stack([problem.p_plus, problem.p_minus])
  phi0 = 1.0 / jnp.sqrt(2 * jnp.pi)
  if agg.kind == "plain":
    sg = gam * jnp.sqrt(2 / jnp.pi) * jnp.mean(1 - 2 * flips)
    return Moments(sg, jnp.ones((), dt), jnp.zeros((), dt))
  if agg.kind == "hard":
    dg = 2.0 * phi0 / sd_y
    return Moments(gam**2 * mu * dg, jnp.ones((), dt), dg)     # Stein: E[Z* g] = Cov E[g']
  if agg.kind == "consensus":
    agree = 1.0 - jnp.arccos(jnp.clip(rho, -1.0, 1.0)) / jnp.pi
    sg = jnp.mean((1 - flips) * c * (1 + rho) - flips * c * (1 - rho))
    g2 = jnp.mean((1 - flips) * agree + flips * (1 - agree))
    return Moments(sg, g2, phi0 / sd_y)
  nodes, w = _gh(dt)
  y = sd_y * nodes                                             # [K]: marginal law of y_t
  v = 1.0 / (1.0 / gam**2 + mu**2 / sigma**2)
  m, s = v * mu * y / sigma**2, jnp.sqrt(v)
  u = m / s
  sg = g2 = dg_sum = 0.0
  for yh in (1.0, -1.0):
    r_pos = label_given_class(yh, 1.0, problem.p_plus, problem.p_minus)
    r_neg = label_given_class(yh, -1.0, problem.p_plus, problem.p_minus)
    p_yh = r_pos * ndtr(u) + r_neg * ndtr(-u)                  # P(yhat | y_t)
    ez = r_pos * (m * ndtr(u) + s * norm.pdf(u)) + r_neg * (m * ndtr(-u) - s * norm.pdf(u))
    g, dg = _value_and_deriv(agg.fn, y, jnp.full_like(y, yh), problem, mu, sigma)
    sg = sg + jnp.sum(w * g * ez)
    g2 = g2 + jnp.sum(w * g**2 * p_yh)
    dg_sum = dg_sum + jnp.sum(w * dg * p_yh)
  return Moments(sg, g2, dg_sum)


def moments(agg, problem, mu, sigma, model: str = "gmm") -> Moments:
  return (gmm_moments if model == "gmm" else glm_moments)(agg, problem, mu, sigma)


def step(agg: agg_lib.Aggregator, problem: Problem, mu, sigma, model: str = "gmm"):
  """One SE round: (mu_t, sigma_t) -> (mu_{t+1}, sigma_{t+1})."""
  mo = moments(agg, problem, mu, sigma, model)
  if model == "gmm":
    mu_n = problem.gamma**2 * mo.sg
    var = problem.gamma**2 * mo.sg**2 + mo.g2 / problem.alpha
  else:
    mu_n = mo.sg / problem.gamma**2 - mu * mo.dg
    var = mo.g2 / problem.alpha
  return mu_n, jnp.sqrt(var)


def eta_of(problem: Problem, mu, sigma, model: str = "gmm"):
  """Effective SNR: GMM `mu / sigma`; GLM `gamma mu / sigma` (cotangent of the angle)."""
  return mu / sigma if model == "gmm" else problem.gamma * mu / sigma


def error_of(eta, model: str = "gmm"):
  """Test error of `sign(<x, theta_t>)` from eta (clean labels)."""
  return ndtr(-eta) if model == "gmm" else jnp.arctan2(1.0, eta) / jnp.pi


def state_from_eta(problem: Problem, eta, model: str = "gmm"):
  """A (mu, sigma) state with the given eta (SE is invariant to the common scale)."""
  one = jnp.ones_like(problem.gamma)
  return (eta * one, one) if model == "gmm" else (eta / problem.gamma, one)


class Trajectory(NamedTuple):
  """Per-round SE quantities, each of shape [R] (round r describes the model after r+1 fits)."""
  mu: jax.Array
  sigma: jax.Array
  eta: jax.Array
  error: jax.Array


@functools.partial(jax.jit, static_argnames=("agg", "rounds", "model"))
def _trajectory(problem, agg, rounds, model, start_eta):
  if start_eta is None:
    mu0, s0 = step(agg_lib.get("plain", model), problem, *state_from_eta(problem, 1.0, model),
                   model=model)
    n_scan = rounds - 1
  else:
    mu0, s0 = state_from_eta(problem, start_eta, model)
    n_scan = rounds - 1

  def body(carry, _):
    nxt = step(agg, problem, *carry, model=model)
    return nxt, nxt

  _, (mus, sigmas) = jax.lax.scan(body, (mu0, s0), None, length=n_scan)
  mus = jnp.concatenate([mu0[None], mus])
  sigmas = jnp.concatenate([s0[None], sigmas])
  eta = eta_of(problem, mus, sigmas, model)
  return Trajectory(mus, sigmas, eta, error_of(eta, model))


def trajectory(problem: Problem, agg: agg_lib.Aggregator, rounds: int, *, model: str = "gmm",
               start_eta=None) -> Trajectory:
  """SE over `rounds` fits.

  With `start_eta=None` entry 0 is plain training and entries 1.. apply `agg` (retraining
  rounds). With `start_eta` given, entry 0 is that starting point and entries 1.. apply `agg`
  (the cobweb iteration). Fields have shape [rounds] (plus any leading batch from `grid`).
  """
  data_lib.check_problem(problem)
  validation.positive_int("rounds", rounds)
  validation.one_of("model", model, ("gmm", "glm"))
  return _trajectory(problem, agg, rounds, model, start_eta)


def grid(problems: Problem, agg: agg_lib.Aggregator, rounds: int, *, model: str = "gmm",
         start_eta=None) -> Trajectory:
  """`trajectory` vmapped over a batched `Problem` (fields [G]); outputs [G, rounds]."""
  data_lib.check_problem(problems)
  validation.positive_int("rounds", rounds)
  validation.one_of("model", model, ("gmm", "glm"))
  f = lambda pr: _trajectory(pr, agg, rounds, model, start_eta)
  return jax.jit(jax.vmap(f))(problems)


def eta_map(problem: Problem, agg: agg_lib.Aggregator, eta, model: str = "gmm"):
  """One-step map eta_t -> eta_{t+1} (vectorises over an array `eta`)."""
  f = lambda e: eta_of(problem, *step(agg, problem, *state_from_eta(problem, e, model), model),
                       model)
  return jnp.vectorize(f)(eta)


def q_bayes_gmm(problem: Problem, eta):
  """`q(eta) = E[Y tanh(a + L(Yhat)/2 + eta^2 Y + eta G)]` (= E[Y g*] = E[g*^2])."""
  nodes, w = _gh(problem.gamma.dtype)
  y_cls, y_hat, pw = _pm(problem)
  mu, sigma = state_from_eta(problem, eta, "gmm")
  y = mu * y_cls[:, None] + sigma * nodes[None, :]
  g = agg_lib.bayes_gmm_fn(y, y_hat[:, None], problem, mu, sigma)
  return jnp.sum(pw[:, None] * w[None, :] * y_cls[:, None] * g)


def bayes_map_gmm(problem: Problem, eta):
  """Scalar recursion `eta' = sqrt(alpha gamma^4 q / (1 + alpha gamma^2 q))` (Nishimori).

  Vectorises over an array `eta`.
  """
  q = jnp.vectorize(lambda e: q_bayes_gmm(problem, e))(eta)
  a, g2 = problem.alpha, problem.gamma**2
  return jnp.sqrt(a * g2**2 * q / (1.0 + a * g2 * q))


def eta_max_gmm(problem: Problem):
  """Perfect-label limit `gamma^2 sqrt(alpha / (1 + alpha gamma^2))`."""
  return problem.gamma**2 * jnp.sqrt(problem.alpha / (1.0 + problem.alpha * problem.gamma**2))


@functools.partial(jax.jit, static_argnames=("agg", "model", "iters"))
def fixed_point(problem: Problem, agg: agg_lib.Aggregator, start_eta, *, model: str = "gmm",
                iters: int = 400):
  """Limit of the eta iteration from `start_eta` (the map is monotone for the optimum)."""
  body = lambda _, e: eta_map(problem, agg, e, model)
  return jax.lax.fori_loop(0, iters, body, jnp.asarray(start_eta, problem.gamma.dtype))
