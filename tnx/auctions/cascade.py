"""Cascade user model: CTRs, exact solvers, approximations and truthful mechanisms.

The user scans the occupied positions in rendering order; at the k-th shown pair (i_k, j_k) she
clicks with probability `p_{i_k j_k}` and reaches the next shown pair with probability
`q_{i_k j_k}`, so `ctr_{i_k} = p_{i_k j_k} prod_{l<k} q_{i_l j_l}`. Continuation variants (the
paper's exact rule could not be confirmed; all three are supported through `q`):
(C1) click-and-leave `q = 1 - p`; (C2) given `q` (ad/position specific); (C3) global attention
decay `q <- delta q` (`continuation`).

Rendering order: `rank` (M,) fixes it (`rank[j]` = place of position j, 0 first); `rank=None`
lets the mechanism choose it, and for a fixed set of pairs the best order sorts pairs by
`r_i p_ij / (1 - q_ij)` descending (adjacent-swap argument), which is how free-order CTRs are
evaluated here. Under C1 that key is `r_i`.

Solvers (scores `r` (N,), tables `p`, `q` (N, M), allocations (N, M); batched over leading dims),
all through `cascade_solve(r, p, q, k, method)`:
- "enum": exact, every allocation of `enumerate_allocations`.
- "dp": exact dynamic programs; fixed order: over positions in rendering order with state
  (used ads, count), O(M 2^N N K); free order under C1: ads sorted by `r`, state (used
  positions, count), O(N 2^M M K).
- "greedy": adds the pair with the largest marginal gain while it is positive. Under C1 with
  free order the welfare of a set of pairs is `E[max_e r_e Bernoulli(p_e)]`, monotone
  submodular, and the feasible sets are independent in two matroids (ads, truncated at K, and
  positions), so greedy is a 1/3-approximation (Fisher, Nemhauser, Wolsey 1978) for `r >= 0`.
  For fixed orders or general `q` it is a heuristic without a guarantee.
- "local_search": from the greedy solution, repeatedly applies the best improving move (add a
  pair, dropping the pairs sharing its ad or position and optionally one more; or drop one
  pair). It never ends below greedy, hence keeps the 1/3 guarantee under C1; no stronger ratio
  is claimed.
- "additive" (best K-matching of `r p`, ignoring externalities) and "mnl" (the MNL optimum
  with `w = p / (1 - p)`): baselines, evaluated under the cascade by `cascade_value`.
`cascade_ctr` / `cascade_value` evaluate feasible allocations; `cascade_vcg` runs VCG on an
exact solver ("dp" or "enum": maximal in range, hence truthful). Greedy and local search need
not be monotone in bids; no truthful payments are offered for them.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation
from tnx.auctions import enumerate as enum_lib
from tnx.auctions import instances, matching, mnl, payments

EPS = 1e-12


def continuation(p: Any, q: Any = None, delta: float = 1.0) -> jax.Array:
  """Continuation table (..., N, M): `delta * (1 - p)` (C1, C3) or `delta * q` (C2, C3)."""
  instances.check_probabilities("p", p)
  validation.in_range("delta", delta, 0.0, 1.0)
  if q is None:
    return delta * (1.0 - jnp.asarray(p, jnp.float64))
  validation.shape("q", q, np.shape(p))
  instances.check_probabilities("q", q)
  return delta * jnp.asarray(q, jnp.float64)


def _ctr_prio(x, p, q, prio):
  m = x.shape[-1]
  shown = x.sum(0)
  pj = (x * p).sum(0)
  qj = (x * q).sum(0) + (1.0 - shown)
  idx = jnp.arange(m)
  earlier = (prio[None, :] > prio[:, None]) | ((prio[None, :] == prio[:, None])
                                               & (idx[None, :] < idx[:, None]))
  reach = jnp.prod(jnp.where(earlier, qj[None, :], 1.0), axis=1)
  return (x * (pj * reach)[None, :]).sum(1)


def _prio(x, r, p, q, rank):
  if rank is not None:
    return -rank.astype(jnp.float64)
  key = (x * (r[:, None] * p / jnp.maximum(1.0 - q, EPS))).sum(0)
  return jnp.where(x.sum(0) > 0, key, -jnp.inf)


def ctr_single(x, r, p, q, rank=None):
  """Realised CTRs (N,) of one allocation (no checks; `r` only sets the free order)."""
  return _ctr_prio(x, p, q, _prio(x, r, p, q, rank))


def value_single(x, r, p, q, rank=None):
  return jnp.sum(r * ctr_single(x, r, p, q, rank))


# ------------------------------------------------------------------------------ exact solvers


def enum_single(r, p, q, rank, table):
  vals = jax.vmap(lambda x: value_single(x, r, p, q, rank))(table)
  return table[jnp.argmax(vals)]


def _trace_choices(choice, order, n: int, m: int, steps_are_positions: bool) -> jax.Array:
  """Forward pass of a subset dynamic program: follows the recorded choices step by step.

  choice[t, state, count] is the item picked at step t (-1 for none); steps run over
  positions (picking ads) or over ads (picking positions). Returns x [n ads, m positions].
  """
  def fwd(carry, t):
    st, c, x = carry
    pick = choice[t, st, c]
    take = pick >= 0
    safe = jnp.maximum(pick, 0)
    ad, pos = (safe, order[t]) if steps_are_positions else (order[t], safe)
    x = x.at[ad, pos].add(jnp.where(take, 1.0, 0.0))
    return (jnp.where(take, st | (1 << safe), st), c + take, x), None

  steps = m if steps_are_positions else n
  (_, _, x), _ = jax.lax.scan(fwd, (jnp.int64(0), jnp.int64(0), jnp.zeros((n, m))),
                              jnp.arange(steps))
  return x


def dp_fixed_single(r, p, q, k, rank):
  """Exact optimum for a fixed rendering order: DP over positions, state (used ads, count)."""
  n, m = p.shape
  order = jnp.argsort(rank)
  states = jnp.arange(2 ** n)
  used = ((states[:, None] >> jnp.arange(n)) & 1).astype(bool)  # (2^n, n)
  nxt = states[:, None] | (1 << jnp.arange(n))                  # (2^n, n)
  cnt = jnp.arange(k + 1)

  def back(v, t):
    j = order[t]
    v_next = jnp.concatenate([v, jnp.zeros((2 ** n, 1))], axis=1)[:, 1:]  # v[., c + 1]
    cont = v_next[nxt]                                                     # (2^n, n, k+1)
    cand = r[None, :, None] * p[None, :, j, None] + q[None, :, j, None] * cont
    ok = (~used)[:, :, None] & (cnt < k)[None, None, :]
    cand = jnp.where(ok, cand, -jnp.inf)
    best_i, best = jnp.argmax(cand, axis=1), jnp.max(cand, axis=1)
    better = best > v + EPS * (1.0 + jnp.abs(v))
    return jnp.where(better, best, v), jnp.where(better, best_i, -1)

  _, choice = jax.lax.scan(back, jnp.zeros((2 ** n, k + 1)), jnp.arange(m), reverse=True)

  return _trace_choices(choice, order, n, m, steps_are_positions=True)


def dp_free_c1_single(r, p, k):
  """Exact optimum under C1 with free order: ads by r descending, state (used positions, count)."""
  n, m = p.shape
  order = jnp.argsort(-r)
  states = jnp.arange(2 ** m)
  used = ((states[:, None] >> jnp.arange(m)) & 1).astype(bool)
  nxt = states[:, None] | (1 << jnp.arange(m))
  cnt = jnp.arange(k + 1)

  def back(v, t):
    i = order[t]
    v_next = jnp.concatenate([v, jnp.zeros((2 ** m, 1))], axis=1)[:, 1:]
    cand = r[i] * p[i][None, :, None] + (1.0 - p[i])[None, :, None] * v_next[nxt]
    cand = jnp.where((~used)[:, :, None] & (cnt < k)[None, None, :], cand, -jnp.inf)
    best_j, best = jnp.argmax(cand, axis=1), jnp.max(cand, axis=1)
    better = best > v + EPS * (1.0 + jnp.abs(v))
    return jnp.where(better, best, v), jnp.where(better, best_j, -1)

  _, choice = jax.lax.scan(back, jnp.zeros((2 ** m, k + 1)), jnp.arange(n), reverse=True)

  return _trace_choices(choice, order, n, m, steps_are_positions=False)


# ----------------------------------------------------------------------------- approximations


def greedy_single(r, p, q, k, rank=None):
  n, m = p.shape
  eye = jnp.eye(n * m).reshape(n * m, n, m)

  def body(_, x):
    free = (x.sum(1)[:, None] == 0) & (x.sum(0)[None, :] == 0)
    cand = x[None] + eye
    vals = jax.vmap(lambda y: value_single(y, r, p, q, rank))(cand)
    vals = jnp.where(free.reshape(-1), vals, -jnp.inf)
    cur = value_single(x, r, p, q, rank)
    e = jnp.argmax(vals)
    return jnp.where(vals[e] > cur + EPS * (1.0 + jnp.abs(cur)), cand[e], x)

  return jax.lax.fori_loop(0, k, body, jnp.zeros((n, m)))


def local_search_single(x0, r, p, q, k, rank=None, max_rounds=50):
  n, m = p.shape
  adds = jnp.concatenate([jnp.eye(n * m).reshape(n * m, n, m), jnp.zeros((1, n, m))])
  drops = jnp.concatenate([jnp.eye(m), jnp.zeros((1, m))])  # optional extra position to clear

  def moves(x):
    def one(a, d):
      row = a.sum(1, keepdims=True) > 0
      col = (a.sum(0, keepdims=True) > 0) | (d[None, :] > 0)
      return jnp.where(row | col, 0.0, x) + a
    cand = jax.vmap(lambda a: jax.vmap(lambda d: one(a, d))(drops))(adds)
    return cand.reshape(-1, n, m)

  def cond(c):
    return (c[1] < max_rounds) & c[2]

  def body(c):
    x, it, _ = c
    cand = moves(x)
    vals = jax.vmap(lambda y: value_single(y, r, p, q, rank))(cand)
    vals = jnp.where(cand.sum((1, 2)) <= k, vals, -jnp.inf)
    cur = value_single(x, r, p, q, rank)
    e = jnp.argmax(vals)
    better = vals[e] > cur + 1e-9 * (1.0 + jnp.abs(cur))
    return jnp.where(better, cand[e], x), it + 1, better

  return jax.lax.while_loop(cond, body, (x0, jnp.int32(0), jnp.array(True)))[0]


# ---------------------------------------------------------------------------- public wrappers


def _check(r, p, q, k, rank, r_name="r"):
  instances.check_problem(r, p, k, r_name=r_name, table_name="p", rank=rank)
  instances.check_probabilities("p", p)
  validation.shape("q", q, np.shape(p))
  instances.check_probabilities("q", q)


MAX_DP_BITS = 16


def _check_dp_size(method, shape, rank):
  if method != "dp":
    return
  n, m = shape[-2:]
  bits, what = (n, "advertisers n") if rank is not None else (m, "positions m")
  if bits > MAX_DP_BITS:
    raise ValueError(f"method='dp' keeps a subset of {what}={bits} as state; at most "
                     f"{MAX_DP_BITS} supported, use 'greedy' or 'local_search'")


def _is_c1(p, q) -> bool:
  if not instances.is_concrete(q) or not instances.is_concrete(p):
    return True
  return bool(np.allclose(np.asarray(q), 1.0 - np.asarray(p), atol=1e-12, rtol=0.0))


def _lead_map(single, r, p, q, rank):
  lead = r.shape[:-1]
  flat = lambda a, t: a.reshape(-1, *a.shape[a.ndim - t:])
  if rank is None:
    out = jax.vmap(lambda a, b, c: single(a, b, c, None))(flat(r, 1), flat(p, 2), flat(q, 2))
  else:
    out = jax.vmap(single)(flat(r, 1), flat(p, 2), flat(q, 2), flat(rank, 1))
  if isinstance(out, tuple):
    return tuple(o.reshape(*lead, *o.shape[1:]) for o in out)
  return out.reshape(*lead, *out.shape[1:])


def _solver(method, n, m, k):
  if method == "enum":
    table = jnp.asarray(enum_lib.enumerate_allocations(n, m, k))
    return lambda r, p, q, rank: enum_single(r, p, q, rank, table)
  if method == "dp":
    return lambda r, p, q, rank: (dp_free_c1_single(r, p, k) if rank is None
                                  else dp_fixed_single(r, p, q, k, rank))
  if method == "greedy":
    return lambda r, p, q, rank: greedy_single(r, p, q, k, rank)
  if method == "local_search":
    return lambda r, p, q, rank: local_search_single(greedy_single(r, p, q, k, rank), r, p, q, k,
                                                     rank)
  if method == "additive":
    return lambda r, p, q, rank: matching.kcard_matching_unchecked(r[:, None] * p, k)
  if method == "mnl":
    return lambda r, p, q, rank: mnl.dinkelbach_single(r, p / (1.0 - p), k)
  raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")


METHODS = ("enum", "dp", "greedy", "local_search", "additive", "mnl")


@functools.partial(jax.jit, static_argnums=(4, 5))
def _solve_batch(r, p, q, rank, k, method):
  return _lead_map(_solver(method, p.shape[-2], p.shape[-1], k), r, p, q, rank)


def cascade_solve(r: Any, p: Any, q: Any, k: int, method: str, *, rank: Any = None
                  ) -> jax.Array:
  """Allocations (..., N, M) of a cascade solver; `method` in METHODS (see module docstring).

  `method="dp"` with `rank=None` is exact only under C1 and raises ValueError otherwise; "mnl"
  needs every `p < 1`.
  """
  validation.one_of("method", method, METHODS)
  _check(r, p, q, k, rank)
  if method == "dp" and rank is None and not _is_c1(p, q):
    raise ValueError("q must equal 1 - p (click-and-leave) for method='dp' with free order; "
                     "pass rank for a fixed order or use method='enum'")
  if method == "mnl":
    instances.check_probabilities("p", p, open_interval=True)
  _check_dp_size(method, np.shape(p), rank)
  f64 = lambda a: jnp.asarray(a, jnp.float64)
  return _solve_batch(f64(r), f64(p), f64(q), None if rank is None else jnp.asarray(rank),
                      int(k), method)


@jax.jit
def _ctr_batch(x, r, p, q, rank):
  lead = x.shape[:-2]
  f = lambda a, t: a.reshape(-1, *a.shape[a.ndim - t:])
  if rank is None:
    out = jax.vmap(lambda a, b, c, d: ctr_single(a, b, c, d))(f(x, 2), f(r, 1), f(p, 2), f(q, 2))
  else:
    out = jax.vmap(ctr_single)(f(x, 2), f(r, 1), f(p, 2), f(q, 2), f(rank, 1))
  return out.reshape(*lead, out.shape[-1])


def cascade_ctr(x: Any, r: Any, p: Any, q: Any, *, rank: Any = None) -> jax.Array:
  """Realised CTRs (..., N) of feasible 0/1 allocations `x` (..., N, M) (free order ranked by
  scores `r`)."""
  _check(r, p, q, 1, rank)
  instances.check_allocation("x", x, np.shape(p))
  return _ctr_batch(jnp.asarray(x, jnp.float64), jnp.asarray(r, jnp.float64),
                    jnp.asarray(p, jnp.float64), jnp.asarray(q, jnp.float64),
                    None if rank is None else jnp.asarray(rank))


def cascade_value(x: Any, r: Any, p: Any, q: Any, *, rank: Any = None) -> jax.Array:
  """Objective `sum_i r_i ctr_i(x)`, shape (...)."""
  return jnp.sum(jnp.asarray(r) * cascade_ctr(x, r, p, q, rank=rank), axis=-1)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _vcg_batch(b, p, q, rank, k, method):
  solve = _solver(method, p.shape[-2], p.shape[-1], k)

  def single(bb, pp, qq, rk):
    return payments.vcg_single(lambda r: solve(r, pp, qq, rk),
                               lambda x, r: ctr_single(x, r, pp, qq, rk), bb)

  return _lead_map(single, b, p, q, rank)


def cascade_vcg(bids: Any, p: Any, q: Any, k: int, *, rank: Any = None, method: str = "dp"
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """VCG on an exact cascade solver ("dp" or "enum"): allocation, CTRs and payments."""
  validation.one_of("method", method, ["dp", "enum"])
  instances.check_non_negative("bids", bids)
  _check(bids, p, q, k, rank, r_name="bids")
  if method == "dp" and rank is None and not _is_c1(p, q):
    raise ValueError("q must equal 1 - p (click-and-leave) for method='dp' with free order")
  _check_dp_size(method, np.shape(p), rank)
  f64 = lambda a: jnp.asarray(a, jnp.float64)
  return _vcg_batch(f64(bids), f64(p), f64(q), None if rank is None else jnp.asarray(rank),
                    int(k), method)
