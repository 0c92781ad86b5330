"""MNL user model: click-through rates and exact (virtual-)welfare-maximising allocations.

Under MNL a shown pair (i, j) has attraction weight `w_ij` and the user's outside option has
weight 1, so `ctr_i(x) = sum_j x_ij w_ij / (1 + sum_kl x_kl w_kl)`; the rendering order plays no
role. With scores `r_i` (values for welfare, ironed virtual values for revenue) the objective is
`F(x) = sum_i r_i ctr_i(x) = N(x) / (1 + D(x))` over matchings with at most K pairs.

Solvers (all exact; the first three run under `jit`/`vmap`):
- `mnl_opt_enum`: evaluate every allocation of `enumerate.enumerate_allocations` (small sizes).
- `mnl_opt_dinkelbach`: parametric method. `lambda* = max F` iff the best K-matching with edge
  weights `(r_i - lambda*) w_ij` has weight `lambda*`; iterate `lambda <- F(x(lambda))` from 0
  (non-decreasing, stops after finitely many steps). Matchings by `matching.kcard_matching`.
- `mnl_opt_bisection`: fixed-trip bisection on `h(lambda) = max_x sum (r-lambda) w x - lambda`
  over [0, max r], then Dinkelbach steps from the lower end, so the result is exact.
- `mnl_opt_lp` (host): Charnes-Cooper LP with `y0 = 1/(1 + D)` solved by HiGHS; its constraint
  matrix is a network matrix, so simplex returns an integral allocation.
- `mnl_opt_scipy` (host): Dinkelbach with `scipy.optimize.linear_sum_assignment`.

Shapes: `r` (..., N), `w` and `p` (..., N, M), allocations (..., N, M); public functions accept
any leading batch dims and map over them.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from tnx import validation
from tnx.auctions import enumerate as enum_lib
from tnx.auctions import instances, matching


def ctr_of(x: jax.Array, w: jax.Array) -> jax.Array:
  """Unchecked `mnl_ctr` for use inside solvers (x feasible, w >= 0 by construction)."""
  a = jnp.sum(x * w, axis=-1)
  return a / (1.0 + jnp.sum(a, axis=-1, keepdims=True))


def value_of(x: jax.Array, r: jax.Array, w: jax.Array) -> jax.Array:
  """Unchecked `mnl_value` for use inside solvers."""
  return jnp.sum(r * ctr_of(x, w), axis=-1)


def mnl_ctr(x: Any, w: Any) -> jax.Array:
  """Realised CTRs (..., N) of a feasible 0/1 allocation `x` (..., N, M) under MNL weights
  `w` (..., N, M) >= 0 (checked when concrete)."""
  if len(np.shape(w)) < 2:
    raise ValueError(f"w must have shape [..., n, m], got {list(np.shape(w))}")
  instances.check_allocation("x", x, np.shape(w))
  instances.check_non_negative("w", w)
  return ctr_of(jnp.asarray(x), jnp.asarray(w))


def mnl_value(x: Any, r: Any, w: Any) -> jax.Array:
  """Objective `sum_i r_i ctr_i(x)`, shape (...); r (..., N) finite."""
  validation.shape("r", r, np.shape(w)[:-1])
  instances.check_finite("r", r)
  return jnp.sum(jnp.asarray(r) * mnl_ctr(x, w), axis=-1)


def table_values(table: jax.Array, r: jax.Array, w: jax.Array) -> jax.Array:
  """Objective of every allocation of `table` (S, N, M) for one instance: (S,)."""
  a = jnp.einsum("snm,nm->sn", table, w)
  return (a @ r) / (1.0 + a.sum(-1))


def _check(r: Any, w: Any, k: int) -> int:
  instances.check_problem(r, w, k)
  instances.check_non_negative("w", w)
  return int(k)


def _batched(single, r: Any, w: Any, *args) -> jax.Array:
  r = jnp.asarray(r, jnp.float64)
  w = jnp.asarray(w, jnp.float64)
  lead = r.shape[:-1]
  fn = jax.vmap(lambda a, b: single(a, b, *args))
  out = fn(r.reshape(-1, r.shape[-1]), w.reshape(-1, *w.shape[-2:]))
  return out.reshape(*lead, *out.shape[1:])


# ------------------------------------------------------------------------------ enumeration


def enum_single(r: jax.Array, w: jax.Array, table: jax.Array) -> jax.Array:
  return table[jnp.argmax(table_values(table, r, w))]


@functools.partial(jax.jit, static_argnums=2)
def _enum_batch(r, w, k):
  table = jnp.asarray(enum_lib.enumerate_allocations(w.shape[-2], w.shape[-1], k))
  return _batched(enum_single, r, w, table)


def mnl_opt_enum(r: Any, w: Any, k: int) -> jax.Array:
  """Exact optimum by enumeration; returns allocations (..., N, M)."""
  k = _check(r, w, k)
  return _enum_batch(jnp.asarray(r, jnp.float64), jnp.asarray(w, jnp.float64), k)


# ------------------------------------------------------------------------------- Dinkelbach


def _solve_at(lam, r, w, k):
  return matching.kcard_matching_unchecked((r[:, None] - lam) * w, k)


def _dinkelbach_loop(lam0, r, w, k, max_iter, tol):
  x0 = _solve_at(lam0, r, w, k)
  f0 = value_of(x0, r, w)

  def cond(c):
    _, _, it, done = c
    return jnp.logical_not(done) & (it < max_iter)

  def body(c):
    lam, x, it, _ = c
    xn = _solve_at(lam, r, w, k)
    fn = value_of(xn, r, w)
    better = fn > lam + tol * (1.0 + jnp.abs(lam))
    return jnp.where(better, fn, lam), jnp.where(better, xn, x), it + 1, jnp.logical_not(better)

  init = (f0, x0, jnp.int32(0), f0 <= lam0 + tol * (1.0 + jnp.abs(lam0)))
  _, x, _, _ = jax.lax.while_loop(cond, body, init)
  return x


def dinkelbach_single(r: jax.Array, w: jax.Array, k: int, max_iter: int = 100,
                      tol: float = 1e-12) -> jax.Array:
  """One instance, no checks: Dinkelbach iterations from lambda = 0."""
  return _dinkelbach_loop(jnp.zeros((), r.dtype), r, w, k, max_iter, tol)


def bisection_single(r: jax.Array, w: jax.Array, k: int, n_iter: int = 50,
                     tol: float = 1e-12) -> jax.Array:
  """One instance, no checks: bisection on h(lambda), then exact Dinkelbach polish."""

  def body(_, lohi):
    lo, hi = lohi
    mid = 0.5 * (lo + hi)
    x = _solve_at(mid, r, w, k)
    h = jnp.sum((r[:, None] - mid) * w * x) - mid
    return jnp.where(h > 0, mid, lo), jnp.where(h > 0, hi, mid)

  lo, _ = jax.lax.fori_loop(0, n_iter, body, (jnp.zeros(()), jnp.maximum(jnp.max(r), 0.0)))
  return _dinkelbach_loop(lo, r, w, k, 100, tol)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _dinkelbach_batch(r, w, k, max_iter):
  return _batched(dinkelbach_single, r, w, k, max_iter)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _bisection_batch(r, w, k, n_iter):
  return _batched(bisection_single, r, w, k, n_iter)


def mnl_opt_dinkelbach(r: Any, w: Any, k: int, *, max_iter: int = 100) -> jax.Array:
  """Exact optimum by Dinkelbach iterations over JAX K-matchings; allocations (..., N, M)."""
  k = _check(r, w, k)
  validation.positive_int("max_iter", max_iter)
  return _dinkelbach_batch(jnp.asarray(r, jnp.float64), jnp.asarray(w, jnp.float64), k,
                           max_iter)


def mnl_opt_bisection(r: Any, w: Any, k: int, *, n_iter: int = 50) -> jax.Array:
  """Exact optimum by `n_iter` bisection steps plus Dinkelbach polish; (..., N, M)."""
  k = _check(r, w, k)
  validation.positive_int("n_iter", n_iter)
  return _bisection_batch(jnp.asarray(r, jnp.float64), jnp.asarray(w, jnp.float64), k, n_iter)


# -------------------------------------------------------------------------- host references


def mnl_opt_scipy(r: Any, w: Any, k: int, *, max_iter: int = 100) -> np.ndarray:
  """Dinkelbach with `scipy.optimize.linear_sum_assignment`, one instance (N,), (N, M)."""
  k = _check(r, w, k)
  validation.shape("r", r, [None])
  r = np.asarray(r, np.float64)
  w = np.asarray(w, np.float64)
  lam, best = 0.0, np.zeros_like(w)
  for _ in range(max_iter):
    x = matching.kcard_matching_scipy((r[:, None] - lam) * w, k)
    f = float(mnl_value(x, r, w))
    if f <= lam + 1e-12 * (1.0 + abs(lam)):
      break
    lam, best = f, x
  return best


def mnl_opt_lp(r: Any, w: Any, k: int) -> tuple[np.ndarray, float]:
  """Charnes-Cooper LP solved by HiGHS dual simplex, one instance (N,), (N, M).

  Variables `y_ij = x_ij / (1 + D)`, `y0 = 1 / (1 + D)`:
  max sum r_i w_ij y_ij  s.t.  y0 + sum w_ij y_ij = 1,  sum_j y_ij <= y0,  sum_i y_ij <= y0,
  sum_ij y_ij <= K y0,  y >= 0.

  Returns:
    (allocation (N, M) rounded from `y / y0`, optimal LP value).
  """
  k = _check(r, w, k)
  validation.shape("r", r, [None])
  r = np.asarray(r, np.float64)
  w = np.asarray(w, np.float64)
  n, m = w.shape
  c = np.concatenate([-(r[:, None] * w).reshape(-1), [0.0]])
  a_eq = np.concatenate([w.reshape(-1), [1.0]])[None]
  a_ub = np.concatenate([
      np.concatenate([np.kron(np.eye(n), np.ones((1, m))), -np.ones((n, 1))], axis=1),
      np.concatenate([np.kron(np.ones((1, n)), np.eye(m)), -np.ones((m, 1))], axis=1),
      np.concatenate([np.ones((1, n * m)), [[-float(k)]]], axis=1),
  ])
  res = scipy.optimize.linprog(c, A_ub=a_ub, b_ub=np.zeros(n + m + 1), A_eq=a_eq, b_eq=[1.0],
                               bounds=(0, None), method="highs-ds")
  if res.status != 0:
    raise RuntimeError(f"linprog failed: {res.message}")
  y, y0 = res.x[:-1].reshape(n, m), res.x[-1]
  return np.round(y / y0), float(-res.fun)


# ------------------------------------------------------------------------------- heuristics


def separable_ranking_single(r: jax.Array, p: jax.Array, k: int) -> jax.Array:
  """Rank ads by `r_i max_j p_ij`; each ad with r_i > 0 in turn takes its best free position."""
  n, m = p.shape
  order = jnp.argsort(-(r * jnp.max(p, axis=-1)))

  def body(t, c):
    x, used = c
    i = order[t]
    j = jnp.argmax(jnp.where(used, -jnp.inf, p[i]))
    take = (r[i] > 0) & (jnp.sum(used) < k)
    x = x.at[i, j].set(jnp.where(take, 1.0, x[i, j]))
    return x, used.at[j].set(used[j] | take)

  x, _ = jax.lax.fori_loop(0, n, body, (jnp.zeros((n, m)), jnp.zeros(m, bool)))
  return x


def additive_single(r: jax.Array, p: jax.Array, k: int) -> jax.Array:
  """Best K-matching for the additive objective `sum r_i p_ij x_ij` (no substitution)."""
  return matching.kcard_matching_unchecked(r[:, None] * p, k)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _heuristic_batch(r, p, k, name):
  single = {"separable": separable_ranking_single, "additive": additive_single}[name]
  return _batched(single, r, p, k)


def mnl_heuristic(r: Any, p: Any, k: int, name: str) -> jax.Array:
  """Baseline allocations (..., N, M): `name` in {"separable", "additive"} (see above)."""
  validation.one_of("name", name, ["separable", "additive"])
  instances.check_problem(r, p, k, table_name="p")
  instances.check_probabilities("p", p)
  return _heuristic_batch(jnp.asarray(r, jnp.float64), jnp.asarray(p, jnp.float64), int(k),
                          name)
