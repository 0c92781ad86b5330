"""Maximum-weight matchings with at most K edges, by reduction to rectangular assignment.

Score matrix of shape (n + m - K, m + n): rows are the n ads and m - K "blocker" rows, columns
are the m positions and n "skip" columns. Ad-position scores are `max(W_ij, 0)`, ad-skip 0,
blocker-position 0 and blocker-skip `-big`. Every row is assigned (rows <= columns), the
blockers occupy m - K positions, so at most K positions are left for ads. Only ad-position
pairs with `W_ij > 0` are kept in the returned allocation.

`kcard_matching` runs in JAX (optax's Hungarian algorithm, built on `lax` loops, so it works
under `jit` and `vmap`); `kcard_matching_scipy` is the host reference
(`scipy.optimize.linear_sum_assignment`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize

from tnx import validation
from tnx.auctions import instances

BIG = 1e6


def _score_matrix(weight: Any, k: int, big: float, xp: Any) -> Any:
  n, m = weight.shape
  pos = xp.maximum(weight, 0.0)
  ads = xp.concatenate([pos, xp.zeros((n, n), pos.dtype)], axis=1)
  blk = xp.concatenate([xp.zeros((m - k, m), pos.dtype), xp.full((m - k, n), -big, pos.dtype)],
                       axis=1)
  return xp.concatenate([ads, blk], axis=0)


def _check(weight: Any, k: int) -> int:
  shp = np.shape(weight)
  if len(shp) != 2:
    raise ValueError(f"weight must have shape [n, m], got {list(shp)}")
  instances.check_finite("weight", weight)
  k = validation.positive_int("K", k)
  if k > shp[1]:
    raise ValueError(f"K must be at most the number of positions m={shp[1]}, got {k}")
  return k


def kcard_matching(weight: jax.Array, k: int, *, big: float = BIG) -> jax.Array:
  """Max-weight matching with at most `k` edges, in JAX (jit/vmap-friendly).

  Args:
    weight: (n, m) edge weights; only edges with weight > 0 can be used.
    k: static maximum number of edges, 1 <= k <= m.
    big: penalty keeping blockers off the skip columns (finite; exceeds any matching weight).

  Returns:
    (n, m) 0/1 float allocation.
  """
  k = _check(weight, k)
  return kcard_matching_unchecked(jnp.asarray(weight, jnp.float64), k, big=big)


def kcard_matching_unchecked(weight: jax.Array, k: int, *, big: float = BIG) -> jax.Array:
  """`kcard_matching` without argument checks, for use inside other jitted kernels."""
  n, m = weight.shape
  score = _score_matrix(weight, k, big, jnp)
  rows, cols = optax.assignment.hungarian_algorithm(-score)
  col4row = jnp.zeros(score.shape[0], cols.dtype).at[rows].set(cols)  # rows come permuted
  x = jax.nn.one_hot(col4row[:n], m, dtype=weight.dtype)  # skip columns (>= m): zero rows
  return x * (weight > 0)


def kcard_matching_scipy(weight: Any, k: int, *, big: float = BIG) -> np.ndarray:
  """Host reference of `kcard_matching` with `scipy.optimize.linear_sum_assignment`."""
  k = _check(weight, k)
  weight = np.asarray(weight, np.float64)
  n, m = weight.shape
  score = _score_matrix(weight, k, big, np)
  rows, cols = scipy.optimize.linear_sum_assignment(score, maximize=True)
  x = np.zeros((n, m))
  sel = (rows < n) & (cols < m)
  x[rows[sel], cols[sel]] = 1.0
  return x * (weight > 0)


def kcard_matching_milp(weight: Any, k: int) -> np.ndarray:
  """Host reference as a 0/1 integer program solved by HiGHS (`scipy.optimize.milp`)."""
  k = _check(weight, k)
  weight = np.asarray(weight, np.float64)
  n, m = weight.shape
  rows = np.concatenate([np.kron(np.eye(n), np.ones((1, m))),  # each ad at most once
                         np.kron(np.ones((1, n)), np.eye(m)),  # each position at most once
                         np.ones((1, n * m))])                 # at most k pairs
  ub = np.concatenate([np.ones(n + m), [k]])
  res = scipy.optimize.milp(-weight.reshape(-1), integrality=np.ones(n * m),
                            bounds=scipy.optimize.Bounds(0, 1),
                            constraints=scipy.optimize.LinearConstraint(rows, -np.inf, ub))
  if not res.success:
    raise RuntimeError(f"milp failed: {res.message}")
  return np.round(res.x.reshape(n, m)) * (weight > 0)
