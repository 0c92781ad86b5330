"""Sampling weights for K domains (arXiv 2511.06913): the stratified mini-batch and its
variance, the variance-aware (Neyman) allocation b_i* proportional to pi_i w_i v_i, integer
rounding, and the fixed-size slot layout that lets b(t) change without recompiling.

A step draws b_i examples from domain i (sum_i b_i = B) and forms

  g = sum_i (pi_i w_i / b_i) sum_{j in batch_i} grad l(theta; z_j),

an unbiased estimate of grad sum_i pi_i w_i Lhat_i. With replacement its variance (trace) is
sum_i pi_i^2 w_i^2 v_i^2 / b_i, v_i^2 the within-domain per-example gradient variance; without
replacement each term gets the finite-population factor (n_i - b_i) / (n_i - 1).

Slots: a batch is `max_batch` slots; slot j belongs to domain d(j) (the first b_1 slots to
domain 1, the next b_2 to domain 2, ...), has rank r(j) within its domain, and is active iff
j < sum(b). Each domain draws its indices from its own random stream (key folded with the
domain id) by rank, so the k-th example of domain i at step t is the same for every method:
common random numbers across allocations.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

ROUNDINGS = ("largest_remainder", "greedy")


# --------------------------------------------------------------------------- variance math
def minibatch_variance(pi_K: jax.Array, w_K: jax.Array, v2_K: jax.Array, b_K: jax.Array,
                       n_K: jax.Array | None = None) -> jax.Array:
  """E||g - grad Lhat_w||^2 = sum_i pi_i^2 w_i^2 v_i^2 / b_i (with replacement), or with the
  factor (n_i - b_i)/(n_i - 1) per term when `n_K` is given (without replacement)."""
  terms = (pi_K * w_K) ** 2 * v2_K / b_K
  if n_K is not None:
    terms = terms * (n_K - b_K) / jnp.maximum(n_K - 1, 1)
  return jnp.sum(terms)


def va_allocation(pi_K: jax.Array, w_K: jax.Array, v_K: jax.Array, batch_size: int | jax.Array
                  ) -> jax.Array:
  """Real-valued Neyman allocation b_i* = B pi_i w_i v_i / sum_k pi_k w_k v_k (v = std, not
  variance). If every v_i is 0 the allocation falls back to b proportional to pi w."""
  s = pi_K * w_K * v_K
  s = jnp.where(jnp.sum(s) > 0, s, pi_K * w_K)
  return batch_size * s / jnp.sum(s)


def optimal_variance(pi_K: jax.Array, w_K: jax.Array, v_K: jax.Array, batch_size: int
                     ) -> jax.Array:
  """V* = (sum_i pi_i w_i v_i)^2 / B, the variance at the real-valued VA allocation."""
  return jnp.sum(pi_K * w_K * v_K) ** 2 / batch_size


def proportional_variance(pi_K: jax.Array, w_K: jax.Array, v_K: jax.Array, batch_size: int
                          ) -> jax.Array:
  """Variance when sampling p_i proportional to pi_i w_i (the single-weight practice):
  (sum pi w)(sum pi w v^2) / B."""
  return jnp.sum(pi_K * w_K) * jnp.sum(pi_K * w_K * v_K**2) / batch_size


# --------------------------------------------------------------------------- rounding
def round_largest_remainder(x_K: jax.Array, batch_size: int) -> jax.Array:
  """Integers b_i >= 1 summing to B from real targets x >= 0 (B >= K).

  Domains whose share of the budget is below 1 are fixed at 1 and the others rescaled to the
  remaining budget (repeated until none falls below 1, at most K rounds); the largest-remainder
  (Hamilton) method then distributes what flooring leaves. jit-able.
  """
  k = x_K.shape[0]
  x = jnp.maximum(x_K, 0.0)

  def shares(fixed):
    free = ~fixed
    budget = batch_size - jnp.sum(fixed)
    mass = jnp.sum(jnp.where(free, x, 0.0))
    equal = budget / jnp.maximum(jnp.sum(free), 1)  # all free targets zero: split evenly
    return free, jnp.where(mass > 0, x * budget / jnp.where(mass > 0, mass, 1.0), equal)

  def fix(_, fixed):
    free, s = shares(fixed)
    return fixed | (free & (s < 1.0))

  fixed = jax.lax.fori_loop(0, k, fix, jnp.zeros((k,), bool))
  free, s = shares(fixed)
  base = jnp.where(free, jnp.floor(s), 1.0)
  left = batch_size - jnp.sum(base)
  rem = jnp.where(free, s - base, -1.0)
  order = jnp.argsort(-rem, stable=True)
  rank = jnp.zeros((k,), jnp.int32).at[order].set(jnp.arange(k, dtype=jnp.int32))
  return (base + (rank < left)).astype(jnp.int32)


def round_greedy(cost_K: jax.Array, batch_size: int) -> jax.Array:
  """The exact integer minimiser of sum_i cost_i / b_i over b_i >= 1, sum b = B (marginal
  greedy allocation, optimal for separable convex objectives). For VA, cost = (pi w v)^2."""
  k = cost_K.shape[0]

  def body(_, b):
    gain = cost_K / (b * (b + 1.0))
    return b.at[jnp.argmax(gain)].add(1.0)

  b = jax.lax.fori_loop(0, batch_size - k, body, jnp.ones((k,), cost_K.dtype))
  return b.astype(jnp.int32)


def allocate(pi_K: jax.Array, w_K: jax.Array, v_K: jax.Array, batch_size: int,
             rounding: str = "largest_remainder") -> jax.Array:
  """Integer VA allocation b (each >= 1, sum B) by the chosen rounding."""
  if rounding == "greedy":
    return round_greedy((pi_K * w_K * v_K) ** 2 + 1e-30 * pi_K * w_K, batch_size)
  if rounding != "largest_remainder":
    raise ValueError(f"rounding must be one of {list(ROUNDINGS)}, got {rounding!r}")
  return round_largest_remainder(va_allocation(pi_K, w_K, v_K, batch_size), batch_size)


def proportional_allocation(p_K: jax.Array, batch_size: int) -> jax.Array:
  """b proportional to p (e.g. pi), rounded by largest remainder with b_i >= 1."""
  return round_largest_remainder(batch_size * p_K / jnp.sum(p_K), batch_size)


# --------------------------------------------------------------------------- slot layout
class Slots(NamedTuple):
  """Assignment of the `max_batch` slots of one step to domains."""
  domain: jax.Array  # [M] int32 domain of slot j
  rank: jax.Array    # [M] int32 position of slot j within its domain's b_i draws
  active: jax.Array  # [M] bool, j < sum(b)


def slot_layout(b_K: jax.Array, max_batch: int) -> Slots:
  """Slots for allocation b (sum b <= max_batch); shapes depend only on max_batch."""
  ends = jnp.cumsum(b_K)
  j = jnp.arange(max_batch)
  domain = jnp.minimum(jnp.sum(j[:, None] >= ends[None, :], axis=1), b_K.shape[0] - 1)
  rank = j - (ends - b_K)[domain]
  return Slots(domain.astype(jnp.int32), rank.astype(jnp.int32), j < ends[-1])


def slot_coefficients(slots: Slots, pi_K: jax.Array, w_K: jax.Array, b_K: jax.Array
                      ) -> jax.Array:
  """c_j = pi_d w_d / b_d for active slots, 0 for inactive ones ([M])."""
  c = (pi_K * w_K / jnp.maximum(b_K, 1))[slots.domain]
  return jnp.where(slots.active, c, 0.0)


def draw_indices(key: jax.Array, slots: Slots, n_K: jax.Array, n_max: int, *,
                 replace: bool = True) -> jax.Array:
  """Example index within its domain for every slot ([M] int32).

  With replacement: uniform on [0, n_d) from domain d's own stream. Without replacement: a
  per-domain random permutation of [0, n_d), read at the slot's rank (a rank >= n_d wraps
  around, i.e. b_d > n_d revisits examples; callers keep b_d <= n_d for exact sampling
  without replacement).
  """
  k = n_K.shape[0]
  m = slots.domain.shape[0]
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(k))
  if replace:
    u_KxM = jax.vmap(lambda kk: jax.random.uniform(kk, (m,)))(keys)
    idx_KxM = jnp.minimum(jnp.floor(u_KxM * n_K[:, None]).astype(jnp.int32), n_K[:, None] - 1)
    return idx_KxM[slots.domain, jnp.minimum(slots.rank, m - 1)]
  u_KxN = jax.vmap(lambda kk: jax.random.uniform(kk, (n_max,)))(keys)
  u_KxN = jnp.where(jnp.arange(n_max)[None, :] < n_K[:, None], u_KxN, jnp.inf)
  perm_KxN = jnp.argsort(u_KxN, axis=1).astype(jnp.int32)
  return perm_KxN[slots.domain, slots.rank % n_K[slots.domain]]


def gather(data: Any, domain_M: jax.Array, index_M: jax.Array) -> Any:
  """Examples data[d, i] for every slot from per-domain padded leaves [K, N, ...]."""
  return jax.tree.map(lambda x: x[domain_M, index_M], data)


def counts_from_allocation(b: Any, k: int, batch_size: int, max_batch: int) -> np.ndarray:
  """Validates a user allocation (K ints >= 1, sum = batch_size <= max_batch)."""
  a = np.asarray(b)
  if a.shape != (k,) or not np.all(np.mod(a, 1) == 0) or np.any(a < 1):
    raise ValueError(f"batch_counts must be {k} integers >= 1, got {a.tolist()}")
  if int(a.sum()) != batch_size or batch_size > max_batch:
    raise ValueError(f"batch_counts must sum to batch_size={batch_size} (<= max_batch="
                     f"{max_batch}), got sum {int(a.sum())}")
  return a.astype(np.int32)
