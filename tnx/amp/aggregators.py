"""Aggregators: the retraining target `g_t(y_t, yhat)` built from the current soft prediction
`y_t` and the given noisy label `yhat`, applied entrywise.

Every aggregator is `fn(y, yhat, problem, mu, sigma) -> g` (shapes broadcast), where
`(mu, sigma)` is the state-evolution description of `y_t`:
GMM `y_t ~ mu * Y + sigma * G`; GLM `y_t ~ mu * Z* + sigma * G` with `Z* ~ N(0, gamma^2)`.
`kind` tells state evolution how to integrate it: `"smooth"` by Gauss-Hermite quadrature,
`"plain"`, `"hard"` and `"consensus"` (step functions) by closed forms.

Bayes-optimal aggregators (derived; see docs/amp.md):
* GMM: the posterior mean `E[Y | y_t, yhat] = tanh(a + L(yhat)/2 + mu y / sigma^2)`,
  `a = log(pi_+/pi_-)/2`, `L` the label log-likelihood ratio.
* GLM: the innovation `(E[Z* | y_t, yhat] - E[Z* | y_t]) / Var[Z* | y_t]` (the GAMP output
  function), which removes the part of the posterior mean that the Onsager term would cancel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
from jax.scipy.special import log_ndtr, ndtr
from jax.scipy.stats import norm

from tnx import validation
from tnx.amp.data import label_given_class, label_log_ratio

KINDS = ("smooth", "plain", "hard", "consensus")


class Aggregator(NamedTuple):
  name: str
  kind: str
  fn: Callable


def _sign(y):
  return jnp.where(y >= 0, 1.0, -1.0).astype(jnp.result_type(y, float))


def plain_fn(y, yhat, problem, mu, sigma):
  """Retrain on the given labels (no change from round 0)."""
  del problem, mu, sigma
  return jnp.broadcast_to(yhat, jnp.broadcast_shapes(jnp.shape(y), jnp.shape(yhat))) * 1.0


def hard_fn(y, yhat, problem, mu, sigma):
  """Full retraining on predicted hard labels `sign(y_t)`."""
  del yhat, problem, mu, sigma
  return _sign(y)


def consensus_fn(y, yhat, problem, mu, sigma):
  """Keep the given label where the prediction agrees with it, drop (target 0) elsewhere."""
  del problem, mu, sigma
  return jnp.where(_sign(y) == yhat, yhat, 0.0) * 1.0


def _prior_logit(problem):
  return 0.5 * (jnp.log(problem.prior) - jnp.log1p(-problem.prior))


def bayes_gmm_fn(y, yhat, problem, mu, sigma):
  """GMM posterior mean `E[Y | y_t = y, yhat]`."""
  lab = 0.5 * label_log_ratio(yhat, problem.p_plus, problem.p_minus)
  return jnp.tanh(_prior_logit(problem) + lab + mu * y / sigma**2)


def soft_self_gmm_fn(y, yhat, problem, mu, sigma):
  """GMM soft self-label `E[Y | y_t = y]`: the calibrated prediction, label ignored."""
  del yhat
  return jnp.tanh(_prior_logit(problem) + mu * y / sigma**2)


def _glm_posterior(y, problem, mu, sigma):
  """Label-free Gaussian posterior of Z* given y_t: mean m, sd s, and u = m / s."""
  v = 1.0 / (1.0 / problem.gamma**2 + mu**2 / sigma**2)
  m = v * mu * y / sigma**2
  s = jnp.sqrt(v)
  return m, s, m / s


def _glm_label_terms(u, yhat, problem):
  """`r_+ - r_-` and `phi(u) / P(yhat | y_t)` in a stable log form."""
  r_pos = label_given_class(yhat, 1.0, problem.p_plus, problem.p_minus)
  r_neg = label_given_class(yhat, -1.0, problem.p_plus, problem.p_minus)
  log_den = jnp.logaddexp(jnp.log(r_pos) + log_ndtr(u), jnp.log(r_neg) + log_ndtr(-u))
  return r_pos - r_neg, jnp.exp(norm.logpdf(u) - log_den)


def posterior_mean_glm_fn(y, yhat, problem, mu, sigma):
  """GLM posterior mean `E[Z* | y_t = y, yhat]` (sign link with flips)."""
  m, s, u = _glm_posterior(y, problem, mu, sigma)
  diff, ratio = _glm_label_terms(u, yhat, problem)
  return m + s * diff * ratio


def innovation_glm_fn(y, yhat, problem, mu, sigma):
  """GLM optimal aggregator `(E[Z* | y, yhat] - E[Z* | y]) / Var[Z* | y]`."""
  _, s, u = _glm_posterior(y, problem, mu, sigma)
  diff, ratio = _glm_label_terms(u, yhat, problem)
  return diff * ratio / s


def soft_self_glm_fn(y, yhat, problem, mu, sigma):
  """GLM soft self-label `E[sign Z* | y_t = y] = 2 Phi(m/s) - 1`."""
  del yhat
  _, _, u = _glm_posterior(y, problem, mu, sigma)
  return 2.0 * ndtr(u) - 1.0


def tanh_fn(a: float, b: float, c: float) -> Callable:
  """Smooth family `tanh(a + b * yhat + c * y)` (the GMM optimum is one member)."""
  return lambda y, yhat, problem, mu, sigma: jnp.tanh(a + b * yhat + c * y)


_TABLE = {
    ("gmm", "plain"): ("plain", plain_fn),
    ("gmm", "hard"): ("hard", hard_fn),
    ("gmm", "consensus"): ("consensus", consensus_fn),
    ("gmm", "soft_self"): ("smooth", soft_self_gmm_fn),
    ("gmm", "bayes"): ("smooth", bayes_gmm_fn),
    ("glm", "plain"): ("plain", plain_fn),
    ("glm", "hard"): ("hard", hard_fn),
    ("glm", "consensus"): ("consensus", consensus_fn),
    ("glm", "soft_self"): ("smooth", soft_self_glm_fn),
    ("glm", "posterior_mean"): ("smooth", posterior_mean_glm_fn),
    ("glm", "bayes"): ("smooth", innovation_glm_fn),
}

NAMES = {m: tuple(k for mm, k in _TABLE if mm == m) for m in ("gmm", "glm")}


def get(name: str, model: str = "gmm") -> Aggregator:
  """Named aggregator for `model` in {"gmm", "glm"}; `"bayes"` is the optimal one."""
  validation.one_of("model", model, ("gmm", "glm"))
  validation.one_of("name", name, NAMES[model])
  kind, fn = _TABLE[(model, name)]
  return Aggregator(name, kind, fn)


def smooth(name: str, fn: Callable) -> Aggregator:
  """Wraps any differentiable `fn(y, yhat, problem, mu, sigma)` as a smooth aggregator."""
  return Aggregator(name, "smooth", fn)
