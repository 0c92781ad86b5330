"""Practical retraining of a linear probe with the cross-entropy loss.

The AMP analysis needs predictions `y_t` that behave like predictions on fresh data; with a
real learner this is obtained by K-fold cross-fitting (out-of-fold logits). The practical
optimal aggregator mirrors the GMM posterior mean:

1. fit logistic regression (soft-label CE, L2 on the weights, Newton steps) on the targets;
2. out-of-fold logits `s` [N] from K fold models (vmapped over folds);
3. a two-Gaussian model of `s | Y` fitted by moments from the noisy labels and refined by EM
   in which each responsibility also carries the label likelihood `P(yhat | Y)` (flip rates
   known, class prior estimated);
4. new soft target `P(Y = +1 | s, yhat)`; retrain from scratch; repeat.

Baselines use the same pipeline with other targets: plain (`yhat`), hard (`1[s > 0]`),
consensus (`yhat` on samples whose predicted sign agrees, others weight 0) and soft
self-labels (`sigmoid(s)`, the model's own predicted probability). The recipe is our design:
the paper's exact practical recipe is not available. No round selection is done here; every
round's test accuracy is returned.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation
from tnx.amp.data import check_labels, flip_labels, label_log_ratio

AGGREGATORS = ("plain", "hard", "consensus", "soft_self", "bayes")


class ProbeConfig(NamedTuple):
  l2: float = 1e-2          # L2 weight on the (standardised-feature) weights, per sample
  newton_steps: int = 12    # Newton iterations per fit (from zero)
  folds: int = 5            # K for cross-fitting
  rounds: int = 3           # retraining rounds after the plain fit
  em_steps: int = 50        # EM iterations for the logit mixture (after the moment fit)
  shared_var: bool = True   # EM with one variance for both classes (as in the GMM SE)
  prior: float | None = None  # known P(Y=+1); None estimates it from the noisy labels
  cross_fit: bool = True    # False: use in-sample logits (shows why cross-fitting matters)


def fit_logistic(x, t, w, l2: float, steps: int):
  """Weighted soft-label logistic regression by Newton's method.

  x: [N, D]; t: [N] targets in [0, 1]; w: [N] sample weights >= 0. Minimises
  `sum_i w_i CE(t_i, sigmoid(s_i)) / sum_i w_i + l2/2 ||weights||^2`, bias unpenalised.
  Returns params [D + 1] (weights, then bias).
  """
  n, d = x.shape
  t, w = jnp.asarray(t, x.dtype), jnp.asarray(w, x.dtype)
  x1 = jnp.concatenate([x, jnp.ones((n, 1), x.dtype)], axis=1)
  wn = w / jnp.maximum(jnp.sum(w), 1e-12)
  reg = jnp.concatenate([jnp.full((d,), l2, x.dtype), jnp.full((1,), 1e-8, x.dtype)])

  def newton(_, theta):
    s = x1 @ theta
    pr = jax.nn.sigmoid(s)
    grad = x1.T @ (wn * (pr - t)) + reg * theta
    hess = (x1 * (wn * pr * (1 - pr))[:, None]).T @ x1 + jnp.diag(reg)
    return theta - jnp.linalg.solve(hess, grad)

  return jax.lax.fori_loop(0, steps, newton, jnp.zeros((d + 1,), x.dtype))


def logits(params, x):
  """x: [N, D] -> [N]."""
  return x @ params[:-1] + params[-1]


def oof_logits(x, t, w, fold_ids, config: ProbeConfig):
  """Out-of-fold logits [N]: each sample scored by the model fit without its fold."""
  def one(k):
    p = fit_logistic(x, t, w * (fold_ids != k), config.l2, config.newton_steps)
    return logits(p, x)
  all_s = jax.vmap(one)(jnp.arange(config.folds))             # [K, N]
  return jnp.take_along_axis(all_s, fold_ids[None, :], axis=0)[0]


def _log_normal(s, m, v):
  return -0.5 * (jnp.log(2 * jnp.pi * v) + (s - m) ** 2 / v)


def moment_fit(s, yhat, p_plus, p_minus, prior=None):
  """Method-of-moments fit of `s | Y ~ N(m_Y, v)` from noisy labels (known flip rates).

  `P(yhat=+1) = pi (1 - p_+) + (1 - pi) p_-` gives the prior; `E[s | yhat]` is a known 2x2
  mixture of `(m_+, m_-)`; the shared variance is the total variance minus the between-class
  part. A known `prior` replaces the estimate, whose standard error is that of the label
  mean times `1 / (1 - p_+ - p_-)` (large near p = 1/2). Returns (prior, m_pos, m_neg, v, v).
  """
  q = jnp.mean(yhat > 0)
  if prior is None:
    pi = jnp.clip((q - p_minus) / (1.0 - p_plus - p_minus), 1e-3, 1 - 1e-3)
  else:
    pi = jnp.asarray(prior, s.dtype)
  # rows: yhat = +1, -1; columns: Y = +1, -1; entries P(Y | yhat).
  a_pos = jnp.stack([pi * (1 - p_plus), (1 - pi) * p_minus])
  a_neg = jnp.stack([pi * p_plus, (1 - pi) * (1 - p_minus)])
  a = jnp.stack([a_pos / jnp.sum(a_pos), a_neg / jnp.sum(a_neg)])
  pos = (yhat > 0).astype(s.dtype)
  means = jnp.stack([jnp.sum(pos * s) / jnp.maximum(jnp.sum(pos), 1.0),
                     jnp.sum((1 - pos) * s) / jnp.maximum(jnp.sum(1 - pos), 1.0)])
  m_p, m_n = jnp.linalg.solve(a, means)
  v = jnp.maximum(jnp.var(s) - pi * (1 - pi) * (m_p - m_n) ** 2, 1e-3 * jnp.var(s) + 1e-12)
  return pi, m_p, m_n, v, v


def em_posterior(s, yhat, p_plus, p_minus, steps: int = 30, shared_var: bool = True,
                 prior: float | None = None):
  """`P(Y=+1 | s, yhat)` [N] under a fitted model `s | Y ~ N(m_Y, v_Y)`, `Y ~ prior`.

  Starts from `moment_fit`; each EM step's responsibilities also carry the label likelihood
  (which fixes which component is class +1). `steps=0` keeps the moment fit; a known
  `prior` stays fixed.
  Returns (posterior [N], (prior, m_pos, m_neg, v_pos, v_neg)).
  """
  lab = label_log_ratio(yhat, p_plus, p_minus)

  def posterior(params):
    pi, m_p, m_n, v_p, v_n = params
    z = jnp.log(pi) - jnp.log1p(-pi) + _log_normal(s, m_p, v_p) - _log_normal(s, m_n, v_n)
    return jax.nn.sigmoid(z + lab)

  def m_step(r):
    a, b = jnp.sum(r), jnp.sum(1 - r)
    m_p, m_n = jnp.sum(r * s) / a, jnp.sum((1 - r) * s) / b
    v_p = jnp.sum(r * (s - m_p) ** 2) / a
    v_n = jnp.sum((1 - r) * (s - m_n) ** 2) / b
    if shared_var:
      v_p = v_n = (a * v_p + b * v_n) / (a + b)
    pi = jnp.clip(jnp.mean(r), 1e-3, 1 - 1e-3) if prior is None else jnp.asarray(prior, s.dtype)
    return pi, m_p, m_n, v_p + 1e-12, v_n + 1e-12

  cast = lambda params: tuple(jnp.asarray(v, s.dtype) for v in params)
  body = lambda params, _: (cast(m_step(posterior(params))), None)
  init = cast(moment_fit(s, yhat, p_plus, p_minus, prior))
  params, _ = jax.lax.scan(body, init, None, length=steps)
  return posterior(params), params


def next_targets(name: str, s, yhat, p_plus, p_minus, config: ProbeConfig):
  """(targets [N] in [0, 1], weights [N]) for the next fit from logits `s` and labels."""
  p_plus, p_minus = jnp.asarray(p_plus, s.dtype), jnp.asarray(p_minus, s.dtype)
  one = jnp.ones_like(s)
  pos = (yhat > 0).astype(s.dtype)
  if name == "plain":
    return pos, one
  if name == "hard":
    return (s > 0).astype(s.dtype), one
  if name == "consensus":
    return pos, ((s > 0) == (yhat > 0)).astype(s.dtype)
  if name == "soft_self":
    return jax.nn.sigmoid(s), one
  post, _ = em_posterior(s, yhat, p_plus, p_minus, config.em_steps, config.shared_var,
                         config.prior)
  return post, one


@functools.partial(jax.jit, static_argnames=("name", "config"))
def retrain(x, yhat, x_test, y_test, fold_ids, p_plus, p_minus, name: str,
            config: ProbeConfig):
  """Plain fit plus `config.rounds` retraining rounds with aggregator `name`.

  x: [N, D] train features; yhat: [N] noisy labels; x_test: [M, D]; y_test: [M] clean labels;
  fold_ids: [N] ints in [0, K). Returns test accuracy per round [rounds + 1].
  """
  t, w = (yhat > 0).astype(x.dtype), jnp.ones_like(yhat)
  accs = []
  for r in range(config.rounds + 1):
    params = fit_logistic(x, t, w, config.l2, config.newton_steps)
    pred = jnp.where(logits(params, x_test) > 0, 1.0, -1.0)
    accs.append(jnp.mean(pred == y_test))
    if r < config.rounds:
      s = oof_logits(x, t, w, fold_ids, config) if config.cross_fit else logits(params, x)
      t, w = next_targets(name, s, yhat, p_plus, p_minus, config)
  return jnp.stack(accs)


def _standardise(x_tr, x_te):
  m, sd = jnp.mean(x_tr, 0), jnp.std(x_tr, 0)
  sd = jnp.where(sd > 0, sd, 1.0)
  return (x_tr - m) / sd, (x_te - m) / sd


def evaluate(key: jax.Array, x, y, *, n_train: int, p: float, name: str,
             config: ProbeConfig | None = None, p_minus: float | None = None,
             seeds: int = 20):
  """Mean over `seeds` random splits / noise draws of `retrain` on a fixed dataset.

  x: [N_all, D] features; y: [N_all] labels in {-1,+1}; the first `n_train` of a random
  permutation train (noisy labels), the rest test (clean labels). Features are standardised
  with training statistics. Returns test accuracy [seeds, rounds + 1].
  """
  config = ProbeConfig() if config is None else config
  validation.shape("x", x, (None, None))
  validation.shape("y", y, (np.shape(x)[0],))
  validation.finite_array("x", x)
  check_labels("y", y)
  validation.positive_int("n_train", n_train)
  validation.positive_int("seeds", seeds)
  validation.one_of("name", name, AGGREGATORS)
  validation.positive_int("config.folds", config.folds)
  validation.non_negative_int("config.rounds", config.rounds)
  validation.positive("config.l2", config.l2)
  validation.in_range("p", p, 0.0, 0.5, high_open=True)
  pm = p if p_minus is None else p_minus
  validation.in_range("p_minus", pm, 0.0, 0.5, high_open=True)
  x, y = jnp.asarray(x), jnp.asarray(y, x.dtype)
  if not 0 < n_train < x.shape[0]:
    raise ValueError(f"n_train must lie in [1, {x.shape[0] - 1}], got {n_train}")
  folds = jnp.asarray(np.arange(n_train) % config.folds)

  def one(k):
    kp, kf, kk = jax.random.split(k, 3)
    perm = jax.random.permutation(kp, x.shape[0])
    tr, te = perm[:n_train], perm[n_train:]
    x_tr, x_te = _standardise(x[tr], x[te])
    yhat = flip_labels(kf, y[tr], p, pm)
    fold_ids = jax.random.permutation(kk, folds)
    return retrain(x_tr, yhat, x_te, y[te], fold_ids, p, pm, name, config)

  return jax.vmap(one)(jax.random.split(key, seeds))


def gmm_features(key: jax.Array, n: int, d: int, gamma: float, prior: float = 0.5,
                 dtype=jnp.float32):
  """Synthetic "frozen features" from the GMM: x [N, D], y [N] (clean)."""
  validation.positive_int("n", n)
  validation.positive_int("d", d)
  validation.positive("gamma", gamma)
  ky, kz = jax.random.split(key)
  y = jnp.where(jax.random.uniform(ky, (n,)) < prior, 1.0, -1.0).astype(dtype)
  mu = jnp.full((d,), gamma / np.sqrt(d), dtype)
  return y[:, None] * mu + jax.random.normal(kz, (n, d), dtype), y


__all__ = ["AGGREGATORS", "ProbeConfig", "em_posterior", "moment_fit", "evaluate", "fit_logistic",
           "gmm_features", "logits", "next_targets", "oof_logits",
           "retrain"]
