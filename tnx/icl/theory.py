"""Closed forms for test-time chain-of-thought on in-context weight prediction
(arXiv 2510.03605, sections 3-4).

A trained one-layer LSA run for k steps on a test prompt with empirical covariance
S_m = X X^T / m applies the pseudo-Newton recursion (Proposition 3.2)

    w_{i+1} = w_i - P S_m (w_i - w),     so  w_k - w = -(I - P S_m)^k w   (w_0 = 0),

with the preconditioner P = Gamma^{-1} at the trained optimum (Theorem 3.1),
Gamma = (1 + 1/n) Lambda + (tr Lambda / n) I. With w ~ N(0, I) the expected error is
E e_k = E ||(I - P S_m)^k||_F^2. All functions here are float64 numpy (exact evaluation, no
tracing); pass `n = math.inf` for the infinite-context limit Gamma = Lambda.

Functions:
  gamma, mixture_preconditioner     the trained optimum's preconditioner (single / multi-task)
  error_curve_inf                   E e_k at m = infinity for k = 1..K (exact)
  error_1_finite                    E e_1 at finite m (exact, Wishart second moment)
  error_curve_finite_mc             E e_k at finite m: exact in w, Monte Carlo over S_m
  hardness, cor35_bound, thm33_bound, steps_for_error   the scaling law
  contraction_factors, diverging_directions, best_k     overthinking (Remark 4.1)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from tnx import validation
from tnx.icl.task import check_cov, check_simplex


def _context(name: str, n: Any) -> int | float:
  """n >= 1 (an integer) or math.inf."""
  if isinstance(n, float) and math.isinf(n) and n > 0:
    return math.inf
  return validation.positive_int(name, n)


def gamma(lam: Any, n: Any) -> np.ndarray:
  """Gamma = (1 + 1/n) Lambda + (tr Lambda / n) I  (Theorem 3.1); n = inf gives Lambda."""
  lam = check_cov("lam", lam, allow_singular=True)
  n = _context("n", n)
  if math.isinf(n):
    check_cov("lam", lam)   # Gamma = Lambda must be invertible
    return lam.copy()
  return (1 + 1 / n) * lam + (np.trace(lam) / n) * np.eye(len(lam))


def optimum_preconditioner(lam: Any, n: Any) -> np.ndarray:
  """P* = Gamma^{-1}: the trained LSA's step w <- w - P S (w - w_true) (Theorem 3.1)."""
  return np.linalg.inv(gamma(lam, n))


def mixture_preconditioner(lams: Any, probs: Any, n: Any, *, allow_singular: bool = False
                           ) -> np.ndarray:
  """The trained preconditioner after multi-task training with family probabilities pi:

      P* = (sum_l pi_l Lambda_l) (sum_l pi_l Lambda_l Gamma_l)^{-1}

  (population minimiser of the one-step loss when each prompt draws family l w.p. pi_l; it
  uses E[S] = sum pi Lambda and E[S^2] = sum pi Lambda Gamma_l; derived, the paper states
  the multi-task optimum only in its large-n form). When the mixture leaves directions
  uncovered, sum pi Lambda Gamma is singular and the minimiser is not unique; with
  `allow_singular` the pseudo-inverse gives the minimum-norm one (the limit of gradient
  descent from V~ = 0), otherwise a ValueError is raised.
  """
  lams = np.asarray(lams, np.float64)
  if lams.ndim != 3:
    raise ValueError(f"lams must be [T, d, d], got shape {list(lams.shape)}")
  probs = check_simplex("probs", probs, len(lams))
  n = _context("n", n)
  first = sum(p * check_cov(f"lams[{t}]", l, allow_singular=True)
              for t, (p, l) in enumerate(zip(probs, lams)))
  if math.isinf(n):
    second = sum(p * l @ l for p, l in zip(probs, lams))
  else:
    second = sum(p * l @ gamma(l, n) for p, l in zip(probs, lams))
  second = (second + second.T) / 2
  if allow_singular:
    return first @ np.linalg.pinv(second, rcond=1e-12, hermitian=True)
  check_cov("sum_l pi_l Lambda_l Gamma_l", second)
  return first @ np.linalg.inv(second)


def _pair(p: Any, sig: Any) -> tuple[np.ndarray, np.ndarray]:
  sig = check_cov("sig", sig)
  p = np.asarray(p, np.float64)
  if p.shape != sig.shape:
    raise ValueError(f"p must be [{len(sig)}, {len(sig)}] to match sig, got {list(p.shape)}")
  if not np.all(np.isfinite(p)):
    raise ValueError("p must be finite")
  return p, sig


def error_curve_inf(p: Any, sig: Any, k_max: int) -> np.ndarray:
  """E e_k = ||(I - P Sigma)^k||_F^2 for k = 1..k_max at m = infinity, [k_max] (exact)."""
  p, sig = _pair(p, sig)
  k_max = validation.positive_int("k_max", k_max)
  m = np.eye(len(sig)) - p @ sig
  out, power = np.empty(k_max), np.eye(len(sig))
  for k in range(k_max):
    power = m @ power
    out[k] = np.sum(power**2)
  return out


def error_k_inf(p: Any, sig: Any, k: int) -> float:
  """E e_k at m = infinity for one k >= 0 (k = 0 is the start w_0 = 0: error d)."""
  k = validation.non_negative_int("k", k)
  p, sig = _pair(p, sig)
  return float(len(sig)) if k == 0 else float(error_curve_inf(p, sig, k)[-1])


def error_1_finite(p: Any, sig: Any, m: int) -> float:
  """E e_1 with m test examples (exact; Wishart E[S_m^2] = (1 + 1/m) Sigma^2 + tr(Sigma)/m Sigma):

      ||I - P Sigma||_F^2 + (1/m) [tr(P Sigma^2 P^T) + tr(Sigma) tr(P Sigma P^T)].
  """
  p, sig = _pair(p, sig)
  m = validation.positive_int("m", m)
  resid = np.eye(len(sig)) - p @ sig
  return float(np.sum(resid**2) + (np.trace(p @ sig @ sig @ p.T)
                                   + np.trace(sig) * np.trace(p @ sig @ p.T)) / m)


class MCEstimate(NamedTuple):
  mean: np.ndarray   # [k_max]
  sem: np.ndarray    # standard error of the mean, [k_max]


def error_curve_finite_mc(seed: int, p: Any, sig: Any, m: int, k_max: int, draws: int,
                          chunk: int = 2048) -> MCEstimate:
  """E e_k for k = 1..k_max at finite m: the expectation over w is taken exactly
  (||(I - P S_m)^k||_F^2), the one over S_m by `draws` Wishart samples.

  No closed form is implemented for k >= 2 at finite m (it needs Wishart moments of order 2k);
  this estimator is the reference for that case.
  """
  p, sig = _pair(p, sig)
  m = validation.positive_int("m", m)
  k_max = validation.positive_int("k_max", k_max)
  draws = validation.positive_int("draws", draws)
  d = len(sig)
  rng = np.random.default_rng(seed)
  root = np.linalg.cholesky(sig)
  total = np.zeros(k_max)
  total_sq = np.zeros(k_max)
  done = 0
  while done < draws:
    b = min(chunk, draws - done)
    x = rng.standard_normal((b, m, d)) @ root.T
    s = np.einsum("bmi,bmj->bij", x, x) / m
    step = np.eye(d) - p @ s
    power = np.broadcast_to(np.eye(d), (b, d, d))
    for k in range(k_max):
      power = step @ power
      e = np.sum(power**2, axis=(1, 2))
      total[k] += e.sum()
      total_sq[k] += np.sum(e**2)
    done += b
  mean = total / draws
  var = np.maximum(total_sq / draws - mean**2, 0.0)
  return MCEstimate(mean, np.sqrt(var / max(draws - 1, 1)))


def in_distribution_factors(lam: Any, n: Any) -> np.ndarray:
  """rho_j = (lambda_j + tr Lambda) / ((n + 1) lambda_j + tr Lambda): eigenvalues of
  I - Gamma^{-1} Lambda (Sigma = Lambda), sorted as the eigenvalues of Lambda ascending."""
  lam = check_cov("lam", lam)
  n = _context("n", n)
  ev = np.linalg.eigvalsh(lam)
  if math.isinf(n):
    return np.zeros_like(ev)
  t = ev.sum()
  return (ev + t) / ((n + 1) * ev + t)


def hardness(lam: Any) -> float:
  """Hard(Lambda) = tr(Lambda) / lambda_min(Lambda) (section 3; scale invariant)."""
  lam = check_cov("lam", lam)
  ev = np.linalg.eigvalsh(lam)
  return float(ev.sum() / ev[0])


def cor35_bound(d: int, n: Any, h: float, k: int) -> float:
  """Corollary 3.5 (leading term): E e_k <= d (1 + n / (1 + H))^(-2k); equality for
  Lambda = Sigma = I at m = infinity."""
  d = validation.positive_int("d", d)
  n = _context("n", n)
  h = validation.positive("h", h)
  k = validation.non_negative_int("k", k)
  if math.isinf(n):
    return 0.0 if k else float(d)
  return float(d * (1 + n / (1 + h)) ** (-2 * k))


def thm33_bound(d: int, n: int, h: float, m: int) -> float:
  """Theorem 3.3 (one step): E e_1 <= (d / n^2)(1 + H)^2 + (d / m)(1 + H)."""
  d = validation.positive_int("d", d)
  n = validation.positive_int("n", n)
  m = validation.positive_int("m", m)
  h = validation.positive("h", h)
  return d / n**2 * (1 + h) ** 2 + d / m * (1 + h)


def steps_for_error(eps: float, d: int, n: Any, h: float) -> int:
  """Smallest k with d (1 + n/(1+H))^(-2k) <= eps: ceil(ln(d/eps) / (2 ln(1 + n/(1+H))))."""
  eps = validation.positive("eps", eps)
  d = validation.positive_int("d", d)
  n = _context("n", n)
  h = validation.positive("h", h)
  if eps >= d:
    return 0
  if math.isinf(n):
    return 1
  return int(math.ceil(math.log(d / eps) / (2 * math.log1p(n / (1 + h))) - 1e-12))


def contraction_factors(p: Any, sig: Any) -> np.ndarray:
  """Eigenvalues phi of I - P Sigma, sorted by modulus (real when P is symmetric positive
  definite). Direction j shrinks under CoT iff |phi_j| < 1 and diverges iff |phi_j| > 1; in
  the commuting case phi_j = 1 - sigma_j / gamma_j, so divergence iff sigma_j > 2 gamma_j."""
  p, sig = _pair(p, sig)
  phi = np.linalg.eigvals(np.eye(len(sig)) - p @ sig)
  if np.max(np.abs(phi.imag)) <= 1e-10 * max(1.0, np.max(np.abs(phi))):
    phi = phi.real
  return phi[np.argsort(np.abs(phi))]


def diverging_directions(p: Any, sig: Any) -> int:
  """Number of directions with |phi_j| > 1 (the overthinking condition, Remark 4.1)."""
  return int(np.sum(np.abs(contraction_factors(p, sig)) > 1.0))


class BestK(NamedTuple):
  k_star: int            # argmin_k E e_k over k = 1..k_max
  curve: np.ndarray      # E e_k, k = 1..k_max
  overthinks: bool       # the curve rises after k_star (more steps hurt)


def best_k(p: Any, sig: Any, k_max: int) -> BestK:
  """k* = argmin_{1 <= k <= k_max} ||(I - P Sigma)^k||_F^2 at m = infinity."""
  curve = error_curve_inf(p, sig, k_max)
  k_star = int(np.argmin(curve)) + 1
  return BestK(k_star, curve, bool(k_star < k_max and curve[-1] > curve[k_star - 1]))
