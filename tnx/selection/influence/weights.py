"""Robust sample weights on the scaled simplex, with the L2 strength searched for k non-zeros.

Influence Distillation (arXiv 2505.19051, Sec. 3) chooses weights w for the n source samples by

  minimize  -p^T w + (eta/2) w^T Q w + (lam/2) ||w||^2   s.t.  w >= 0,  sum(w) = n,

where p are the (first-order) influences and Q the second-order interaction matrix. The L2 term
makes the problem well posed; lam controls sparsity and is searched so that exactly k weights
are non-zero, which turns the weights into a selection rule.

- First order (Q = 0): w(lam) is the Euclidean projection of p / lam onto the scaled simplex,
  w_i = max(0, (p_i - nu) / lam). Its support is the top of p and grows monotonically with lam:
  with p sorted decreasingly and S_j the sum of its first j entries, the support has exactly k
  entries iff (S_k - k p_(k)) / n < lam <= (S_k - k p_(k+1)) / n (`lambda_interval_for_k`).
  Only the top k + 1 influences are needed, so a sharded pool gathers k + 1 numbers.
- With Q (`qp_weights`): accelerated projected gradient (FISTA) on the simplex, for Q given as a
  matrix-vector product; convex when eta Q + lam I is positive semi-definite (otherwise a
  stationary point is returned). The support is searched over lam by bisection.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation


def project_scaled_simplex(y: jax.Array, total: float) -> jax.Array:
  """argmin_{w >= 0, sum w = total} ||w - y||_2 (sort-based, O(n log n))."""
  u = jnp.sort(y)[::-1]
  css = jnp.cumsum(u) - total
  ind = jnp.arange(1, y.shape[0] + 1, dtype=y.dtype)
  cond = u - css / ind > 0
  rho = jnp.max(jnp.where(cond, jnp.arange(y.shape[0]), -1))
  theta = css[rho] / (rho + 1).astype(y.dtype)
  return jnp.maximum(y - theta, 0.0)


def _project_np(y: np.ndarray, total: float) -> np.ndarray:
  """`project_scaled_simplex` on the host in float64 (for the gathered top entries)."""
  y = np.asarray(y, np.float64)
  u = np.sort(y)[::-1]
  css = np.cumsum(u) - total
  rho = np.flatnonzero(u - css / np.arange(1, y.size + 1) > 0)[-1]
  return np.maximum(y - css[rho] / (rho + 1), 0.0)


def first_order_weights(p: jax.Array, lam: float, total: float) -> jax.Array:
  """w(lam) = projection of p / lam onto {w >= 0, sum w = total}."""
  return project_scaled_simplex(p / lam, total)


def _sorted_top(p: np.ndarray, count: int) -> np.ndarray:
  p = np.asarray(p, dtype=np.float64)
  if count >= p.size:
    return np.sort(p)[::-1]
  top = np.argpartition(-p, count - 1)[:count]
  return np.sort(p[top])[::-1]


def lambda_interval_for_k(p_top: np.ndarray, k: int, total: float) -> tuple[float, float]:
  """(lo, hi): first-order weights have exactly k non-zeros iff lo < lam <= hi.

  Args:
    p_top: the k + 1 largest influences in decreasing order (k when k = n, then hi = inf).
  """
  u = np.asarray(p_top, dtype=np.float64)
  s_k = float(np.sum(u[:k]))
  lo = (s_k - k * u[k - 1]) / total
  hi = math.inf if u.size <= k else (s_k - k * u[k]) / total
  return lo, hi


def support_size_first_order(p_top: np.ndarray, lam: float, total: float) -> int:
  """|supp w(lam)| counted on the sorted top entries (exact while it is < len(p_top))."""
  u = np.asarray(p_top, dtype=np.float64)
  j = np.arange(1, u.size + 1)
  return int(np.sum(np.cumsum(u) - j * u < lam * total))


def search_lambda(support: Callable[[float], int], k: int, lo: float, hi: float, *,
                  iters: int = 200) -> float:
  """A lam with support(lam) == k by bisection in log lam.

  `support` (the number of non-zero weights at lam) should be non-decreasing in lam, as it is
  for the first-order weights. The bracket [lo, hi] is first widened geometrically until
  support(lo) <= k <= support(hi). Raises ValueError naming k if no lam is found (for the
  first-order weights: the scores tie at the k-th largest value).
  """
  lo, hi = max(lo, 1e-300), max(hi, lo * 2)
  for _ in range(200):
    if support(hi) >= k:
      break
    hi *= 10.0
  for _ in range(200):
    if support(lo) <= k:
      break
    lo /= 10.0
  for _ in range(iters):
    mid = math.sqrt(lo * hi)
    s = support(mid)
    if s == k:
      return mid
    if s < k:
      lo = mid
    else:
      hi = mid
    if hi <= lo * (1 + 1e-15):
      break
  raise ValueError(f"k={k}: no L2 strength gives exactly k non-zero weights (between "
                   f"lam={lo:.6g} with {support(lo)} and lam={hi:.6g} with {support(hi)} "
                   "non-zeros; tied scores at the k-th value, or a non-monotone QP support)")


def robust_first_order(p: jax.Array, k: int, total: float | None = None, *,
                       break_ties: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
  """(indices [k], weights [k], lam): first-order robust weights with lam searched by
  bisection so that exactly k are non-zero. Only the top k + 1 entries of p are gathered.

  Args:
    p: influences [n] (a jax array, possibly sharded, or numpy).
    k: number of non-zero weights, 1 <= k <= n.
    total: the simplex mass (default n).
    break_ties: equal scores (e.g. duplicated samples) admit no lam with exactly k non-zeros
      when they straddle the k-th place; with True they are ordered as lax.top_k returns them
      (lower index first), each later one lowered by 1e-12 of the largest |score|; with False
      such ties raise ValueError.
  """
  n = int(np.shape(p)[0])
  k = check_budget(k, n)
  total = float(n) if total is None else validation.positive("total", total)
  count = min(k + 1, n)
  vals, idx = jax.lax.top_k(jnp.asarray(p), count)
  vals, idx = np.asarray(vals, np.float64), np.asarray(idx)
  if break_ties and np.any(np.diff(vals) == 0):
    vals = vals - np.arange(count) * 1e-12 * max(float(np.abs(vals).max()), 1e-300)
  lo, hi = lambda_interval_for_k(vals, k, total)
  scale = max(float(np.abs(vals).max()), 1e-300)
  lam = search_lambda(lambda lam: support_size_first_order(vals, lam, total), k,
                      max(lo, scale * 1e-12 / total), hi if math.isfinite(hi) else
                      max(lo * 2, scale / total))
  for _ in range(60):  # rounding at an end of the interval: move lam inside it
    nonzero = np.count_nonzero(_project_np(vals / lam, total))
    if nonzero == k:
      break
    if nonzero > k:
      lam = math.sqrt(lam * max(lo, lam * 1e-3))
    else:
      lam = math.sqrt(lam * hi) if math.isfinite(hi) else 2 * lam
  return idx[:k], _project_np(vals[:k] / lam, total), lam


def check_budget(k: int, n: int) -> int:
  """k as int if 1 <= k <= n, else ValueError naming k."""
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
    raise ValueError(f"k must be an integer with 1 <= k <= {n} (the pool size), got {k!r}")
  return int(k)


def power_norm(matvec: Callable[[jax.Array], jax.Array], n: int, dtype=jnp.float32,
               iters: int = 50, seed: int = 0) -> jax.Array:
  """Spectral-norm estimate of a symmetric operator by power iteration."""
  v = jax.random.normal(jax.random.key(seed), (n,), dtype)
  v = v / jnp.linalg.norm(v)

  def body(_, v):
    w = matvec(v)
    return w / jnp.maximum(jnp.linalg.norm(w), 1e-30)
  v = jax.lax.fori_loop(0, iters, body, v)
  return jnp.linalg.norm(matvec(v))


def qp_weights(p: jax.Array, q_matvec: Callable[[jax.Array], jax.Array], eta: float, lam: float,
               total: float, *, lipschitz: float | None = None, steps: int = 3000,
               tol: float = 1e-10, w0: jax.Array | None = None) -> jax.Array:
  """argmin_{w >= 0, sum w = total} -p^T w + (eta/2) w^T Q w + (lam/2) ||w||^2 by FISTA.

  Args:
    q_matvec: w -> Q w (Q symmetric).
    lipschitz: a bound on ||eta Q + lam I||_2 (default: power iteration).
    steps, tol: iteration cap and the stopping change ||w_t+1 - w_t||_inf / (total / n).
    w0: warm start (default uniform).
  """
  if isinstance(eta, (int, float)):
    validation.non_negative("eta", eta)
  if isinstance(lam, (int, float)):
    validation.positive("lam", lam)
  n = p.shape[0]
  if lipschitz is None:
    lipschitz = float(eta * power_norm(q_matvec, n, p.dtype) + lam)
  step = 1.0 / lipschitz
  w0 = jnp.full((n,), total / n, p.dtype) if w0 is None else w0
  scale = total / n

  def grad(w):
    return -p + eta * q_matvec(w) + lam * w

  def cond(c):
    it, _, _, _, delta = c
    return (it < steps) & (delta > tol)

  def body(c):
    it, w, z, t, _ = c
    w_new = project_scaled_simplex(z - step * grad(z), total)
    t_new = (1 + jnp.sqrt(1 + 4 * t * t)) / 2
    z_new = w_new + ((t - 1) / t_new) * (w_new - w)
    delta = jnp.max(jnp.abs(w_new - w)) / scale
    return it + 1, w_new, z_new, t_new, delta

  init = (0, w0, w0, jnp.ones((), p.dtype), jnp.asarray(jnp.inf, p.dtype))
  _, w, _, _, _ = jax.lax.while_loop(cond, body, init)
  return w


def robust_qp(p: jax.Array, q_matvec: Callable[[jax.Array], jax.Array], eta: float, k: int,
              total: float | None = None, *, steps: int = 3000, tol: float = 1e-10
              ) -> tuple[np.ndarray, np.ndarray, float]:
  """(indices, weights, lam) of the second-order QP with lam bisected for k non-zeros (each
  solve warm-starts from the previous solution)."""
  n = int(p.shape[0])
  k = check_budget(k, n)
  total = float(n) if total is None else validation.positive("total", total)
  q_norm = float(power_norm(q_matvec, n, p.dtype))
  solve = jax.jit(lambda lam, w0: qp_weights(p, q_matvec, eta, lam, total,
                                             lipschitz=eta * q_norm + lam, steps=steps,
                                             tol=tol, w0=w0))
  cache: dict[float, np.ndarray] = {}
  last = [jnp.full((n,), total / n, p.dtype)]

  def support(lam):
    if lam not in cache:
      last[0] = solve(jnp.asarray(lam, p.dtype), last[0])
      cache[lam] = np.asarray(last[0])
    return int(np.count_nonzero(cache[lam]))

  spread = float(jnp.max(p) - jnp.min(p)) + eta * q_norm * total
  lam = search_lambda(support, k, 1e-6 * spread / total + 1e-300, spread / total + 1e-300)
  w = cache[lam]
  idx = np.flatnonzero(w)
  return idx, w[idx], lam
