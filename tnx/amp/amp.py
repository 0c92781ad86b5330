"""Monte Carlo AMP form of retraining (Onsager-corrected), to check state evolution.

With data `X` [N, D], noisy labels `yhat` [N] and aggregator `g_t`, for t >= 0:

    theta_{t+1} = X^T g_t(y_t, yhat) / sqrt(N) - C_t theta_t          C_t = mean_i dg_t/dy (y_t^i)
    y_{t+1}     = X theta_{t+1} / sqrt(N)      - (D / N) g_t(y_t, yhat)

with `g_0 = yhat` and `C_0 = 0` (round 0 is plain training on the noisy labels). Each round
refits a linear model from scratch (`theta = X^T target / sqrt(N)`, the heavily ridged least-
squares fit); the two corrections make `y_t` behave like predictions on fresh samples.
Data are generated inside the jitted function from a key, so vmapping over keys does not keep
many matrices on the host.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr

from tnx import validation
from tnx.amp import aggregators as agg_lib
from tnx.amp import data as data_lib
from tnx.amp import se
from tnx.amp.data import Problem, sample_glm, sample_gmm

ONSAGER = ("auto", "stein", "none")


class SimResult(NamedTuple):
  """Per-round results, each [R] (or [S, R] over seeds); round r = after r+1 fits.

  eta_emp, mu_emp, sigma_emp: regression of y_t on the signal (Y for GMM, Z* for GLM).
  eta_test, error_test: from theta_t and the true mu / beta* (exact population test error).
  signal_g: sample mean of signal * g used to build theta_t (round 0: mean(Y yhat)).
  eta_se, error_se: the state-evolution prediction at the simulated aspect ratio N/D.
  """
  eta_emp: jax.Array
  mu_emp: jax.Array
  sigma_emp: jax.Array
  eta_test: jax.Array
  error_test: jax.Array
  signal_g: jax.Array
  eta_se: jax.Array
  error_se: jax.Array


def _metrics(model, problem, signal, truth, theta, yt, g):
  mu_e = jnp.mean(signal * yt) / jnp.mean(signal**2)
  sigma_e = jnp.std(yt - mu_e * signal)
  eta_e = se.eta_of(problem, mu_e, sigma_e, model)
  cos = jnp.dot(truth, theta) / (jnp.linalg.norm(truth) * jnp.linalg.norm(theta))
  if model == "gmm":
    eta_t = cos * problem.gamma
    err_t = ndtr(-eta_t)
  else:
    eta_t = cos / jnp.sqrt(jnp.maximum(1.0 - cos**2, 1e-30))
    err_t = jnp.arccos(jnp.clip(cos, -1.0, 1.0)) / jnp.pi
  return eta_e, mu_e, sigma_e, eta_t, err_t, jnp.mean(signal * g)


@functools.partial(jax.jit, static_argnames=("agg", "n", "d", "rounds", "model", "onsager",
                                             "dtype"))
def _simulate(key, problem, agg, n, d, rounds, model, onsager, dtype):
  traj = se._trajectory(problem, agg, rounds, model, None)
  pr = Problem(*(jnp.asarray(f, dtype) for f in problem))
  if model == "gmm":
    x, y, yhat, truth = sample_gmm(key, n, d, pr, dtype)
    signal = y
  else:
    x, _, yhat, truth, signal = sample_glm(key, n, d, pr, dtype)
  sq = jnp.sqrt(jnp.asarray(n, dtype))
  ratio = jnp.asarray(d / n, dtype)

  theta = x.T @ yhat / sq
  yt = x @ theta / sq - ratio * yhat
  first = _metrics(model, pr, signal, truth, theta, yt, yhat)

  def body(carry, state):
    theta, yt = carry
    mu, sigma = (jnp.asarray(s, dtype) for s in state)
    if agg.kind == "smooth":
      g, dg = jax.jvp(lambda v: agg.fn(v, yhat, pr, mu, sigma), (yt,), (jnp.ones_like(yt),))
      c_auto = jnp.mean(dg)
    else:
      g = agg.fn(yt, yhat, pr, mu, sigma)
      c_auto = jnp.asarray(se.moments(agg, problem, *state, model).dg, dtype)
    if onsager == "stein":
      mu_e = jnp.mean(signal * yt) / jnp.mean(signal**2)
      res = yt - mu_e * signal
      c = jnp.mean(g * res) / jnp.mean(res**2)
    elif onsager == "none":
      c = jnp.zeros((), dtype)
    else:
      c = c_auto
    theta_n = x.T @ g / sq - c * theta
    yt_n = x @ theta_n / sq - ratio * g
    return (theta_n, yt_n), _metrics(model, pr, signal, truth, theta_n, yt_n, g)

  states = (traj.mu[:-1], traj.sigma[:-1])
  _, rest = jax.lax.scan(body, (theta, yt), states)
  out = [jnp.concatenate([jnp.asarray(f)[None], r]) for f, r in zip(first, rest)]
  return SimResult(*out, traj.eta.astype(dtype), traj.error.astype(dtype))


def simulate(key: jax.Array, problem: Problem, agg: agg_lib.Aggregator, *, n: int, d: int,
             rounds: int, model: str = "gmm", onsager: str = "auto",
             dtype=jnp.float32) -> SimResult:
  """Runs the AMP retraining iteration on fresh data drawn from `key`.

  `problem.alpha` is replaced by `n / d`. `key` may be a single key or a batch [S] of keys
  (vmapped; memory S * N * D * itemsize). `onsager="auto"` differentiates smooth aggregators
  and uses the SE density at 0 for step ones; `"stein"` estimates `E[g']` as
  `E[g (y_t - mu Y)] / sigma^2` from the true signal (simulation only); `"none"` drops the
  model-side correction (C_t = 0), an ablation that breaks the SE prediction.
  """
  data_lib.check_problem(problem)
  validation.positive_int("n", n)
  validation.positive_int("d", d)
  validation.positive_int("rounds", rounds)
  validation.one_of("model", model, ("gmm", "glm"))
  validation.one_of("onsager", onsager, ONSAGER)
  problem = problem._replace(alpha=jnp.asarray(n / d, problem.gamma.dtype))
  run = lambda k: _simulate(k, problem, agg, n, d, rounds, model, onsager, dtype)
  typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
  if key.ndim == (0 if typed else 1):
    return run(key)
  return jax.vmap(run)(key)
