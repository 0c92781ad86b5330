"""Truthful payments: VCG (Clarke pivot) and Myerson threshold payments.

Single-parameter setting: bidder i reports a value per click `b_i` and receives a realised CTR
`ctr_i(b)`. A monotone rule is dominant-strategy IC with the payment (Myerson's lemma)
`P_i(b) = b_i ctr_i(b) - int_0^{b_i} ctr_i(z, b_-i) dz = sum_k t_k (ctr^(k) - ctr^(k-1))`,
where `t_k` are the bids at which bidder i's CTR jumps, so losers pay 0 and
`0 <= P_i <= b_i ctr_i`.

- `vcg_single`: for any exact welfare maximiser `solve(r) -> x` (maximal in range), charge
  `P_i = W*_{-i} - (W* - r_i ctr_i)`; `W*_{-i}` re-solves with bidder i excluded.
- `threshold_payment`: for an allocation rule that maximises `sum_i g_i(b_i) ctr_i(x)` over a
  finite list of allocations (score map `g_i` from `virtual_values`), the objective as a function
  of i's score is the upper envelope of lines `g * c_s + R_s` (slope `c_s` = i's CTR in
  allocation s). Walking the envelope down from i's score gives the score thresholds; the
  generalised inverse of `g_i` maps them to bid thresholds. With `g = identity` this is VCG,
  with ironed virtual values it is Myerson's optimal mechanism, and with `reserve_map` it is VCG
  with a reserve price.
- `mnl_mechanism`: the MNL mechanism (enumeration allocation + threshold payments), batched.

Shapes: bids (..., N), MNL weights (..., N, M); allocations (..., N, M), CTRs and payments
(..., N) (expected payment per query; per-click price is `P_i / ctr_i`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from tnx.auctions import enumerate as enum_lib
from tnx.auctions import instances, mnl
from tnx.auctions import virtual_values as vv

EXCLUDE = 1e9  # score given to an excluded bidder (never allocated by an exact maximiser)


def vcg_single(solve: Callable[[jax.Array], jax.Array], ctr_fn: Callable[[jax.Array, jax.Array],
               jax.Array], r: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """VCG for one instance (no checks; jit/vmap-friendly).

  Args:
    solve: scores (N,) -> allocation (N, M), an exact maximiser of `sum_i r_i ctr_i`.
    ctr_fn: (allocation, scores) -> realised CTRs (N,) (scores matter for free-order models).
    r: reported values (N,).

  Returns:
    allocation (N, M), CTRs (N,), payments (N,).
  """
  n = r.shape[0]
  x = solve(r)
  ctr = ctr_fn(x, r)
  welfare = jnp.sum(r * ctr)

  def without(i):
    mask = jnp.arange(n) == i
    r_i = jnp.where(mask, -EXCLUDE, r)
    ctr_i = ctr_fn(solve(r_i), r_i)
    return jnp.sum(jnp.where(mask, 0.0, r * ctr_i))

  others = jax.vmap(without)(jnp.arange(n))
  pay = others - (welfare - r * ctr)
  return x, ctr, jnp.where(ctr > 0, pay, 0.0)


def threshold_payment(c: jax.Array, rest: jax.Array, score: jax.Array, v_tab: jax.Array,
                      s_tab: jax.Array, *, tol: float = 1e-12) -> jax.Array:
  """Myerson payment of one bidder from the envelope of lines (no checks).

  Args:
    c: (S,) the bidder's CTR in each allocation (line slopes).
    rest: (S,) the other bidders' score-weighted CTR sum in each allocation (intercepts).
    score: the bidder's score `g(b)`.
    v_tab, s_tab: (G,) the bidder's score map table.

  Returns:
    Scalar expected payment `sum_k g^{-1}(t_k) (ctr^(k) - ctr^(k-1))`.
  """
  g0 = vv._interp_extrap(jnp.zeros(()), v_tab, s_tab)
  s0 = jnp.argmax(score * c + rest)

  def cond(st):
    return jnp.logical_not(st[4])

  def body(st):
    c_cur, r_cur, t_cur, pay, _ = st
    cand = c < c_cur - tol
    t = jnp.where(cand, (rest - r_cur) / jnp.where(cand, c_cur - c, 1.0), -jnp.inf)
    t_next = jnp.minimum(jnp.max(t), t_cur)
    stop = (t_next <= g0) | jnp.logical_not(jnp.any(cand))
    near = cand & (t >= t_next - tol * (1.0 + jnp.abs(t_next)))
    s_new = jnp.argmin(jnp.where(near, c, jnp.inf))
    jump = c_cur - c[s_new]
    pay = pay + jnp.where(stop, 0.0, vv._inverse_1d(t_next, v_tab, s_tab) * jump)
    done = stop | (c[s_new] <= 0)
    return (jnp.where(stop, c_cur, c[s_new]), jnp.where(stop, r_cur, rest[s_new]), t_next, pay,
            done)

  init = (c[s0], rest[s0], score, jnp.zeros(()), c[s0] <= 0)
  return jax.lax.while_loop(cond, body, init)[3]


def envelope_payments(ctr_table: jax.Array, scores: jax.Array, v_tab: jax.Array,
                      s_tab: jax.Array) -> jax.Array:
  """Threshold payments (N,) of all bidders from a CTR table (S, N) of the allocation list.

  `v_tab`, `s_tab` are (N, G) per-bidder score-map tables.
  """
  total = ctr_table @ scores

  def one(i):
    c = ctr_table[:, i]
    return threshold_payment(c, total - scores[i] * c, scores[i], v_tab[i], s_tab[i])

  return jax.vmap(one)(jnp.arange(scores.shape[0]))


def _mnl_single(b, w, table, v_tab, s_tab):
  scores = vv._per_bidder(vv._interp_extrap, vv.ScoreMap(v_tab, s_tab), b)
  a = jnp.einsum("snm,nm->sn", table, w)
  ctr_table = a / (1.0 + a.sum(-1, keepdims=True))
  s = jnp.argmax(ctr_table @ scores)
  return table[s], ctr_table[s], envelope_payments(ctr_table, scores, v_tab, s_tab)


@functools.partial(jax.jit, static_argnums=2)
def _mnl_batch(b, w, k, v_tab, s_tab):
  table = jnp.asarray(enum_lib.enumerate_allocations(w.shape[-2], w.shape[-1], k))
  lead = b.shape[:-1]
  out = jax.vmap(lambda bb, ww: _mnl_single(bb, ww, table, v_tab, s_tab))(
      b.reshape(-1, b.shape[-1]), w.reshape(-1, *w.shape[-2:]))
  return tuple(o.reshape(*lead, *o.shape[1:]) for o in out)


def _tables(smap: vv.ScoreMap, n: int) -> tuple[jax.Array, jax.Array]:
  """Per-bidder (N, G') tables, G' = G padded to a power of two (>= 64) so that maps of
  similar size share one compiled kernel; the padding continues the last linear piece."""
  vv.check_score_map("score_map", smap, n)
  v, s = jnp.asarray(smap.v, jnp.float64), jnp.asarray(smap.s, jnp.float64)
  if v.ndim == 1:
    v, s = jnp.broadcast_to(v, (n, v.shape[0])), jnp.broadcast_to(s, (n, s.shape[0]))
  g = v.shape[1]
  extra = max(64, 1 << (g - 1).bit_length()) - g
  if extra:
    step = jnp.arange(1, extra + 1, dtype=jnp.float64)[None]
    slope = (s[:, -1:] - s[:, -2:-1]) / (v[:, -1:] - v[:, -2:-1])
    v = jnp.concatenate([v, v[:, -1:] + step], axis=1)
    s = jnp.concatenate([s, s[:, -1:] + step * slope], axis=1)
  return v, s


def mnl_mechanism(bids: Any, w: Any, k: int, score_map: vv.ScoreMap | None = None
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """MNL auction: maximise `sum_i g_i(b_i) ctr_i` by enumeration, charge threshold payments.

  Args:
    bids: (..., N) reported values per click, >= 0.
    w: (..., N, M) MNL attraction weights, >= 0.
    k: maximum number of shown creatives, 1 <= k <= M.
    score_map: `identity_map()` (default: VCG), `ironed_virtual_value_map(prior)` (Myerson) or
      `reserve_map(rho)` (VCG with reserve); (G,) shared or (N, G) per bidder.

  Returns:
    allocation (..., N, M), CTRs (..., N), expected payments per query (..., N).
  """
  instances.check_problem(bids, w, k, r_name="bids")
  instances.check_non_negative("bids", bids)
  instances.check_non_negative("w", w)
  n = w.shape[-2]
  v_tab, s_tab = _tables(score_map if score_map is not None else vv.identity_map(), n)
  return _mnl_batch(jnp.asarray(bids, jnp.float64), jnp.asarray(w, jnp.float64), int(k),
                    v_tab, s_tab)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _mnl_vcg_batch(b, w, k, solver):
  if solver == "enum":
    table = jnp.asarray(enum_lib.enumerate_allocations(w.shape[-2], w.shape[-1], k))
    solve_fn = lambda r, ww: mnl.enum_single(r, ww, table)
  else:
    solve_fn = lambda r, ww: mnl.dinkelbach_single(r, ww, k)
  single = lambda bb, ww: vcg_single(lambda r: solve_fn(r, ww), lambda x, _: mnl.ctr_of(x, ww),
                                     bb)
  lead = b.shape[:-1]
  out = jax.vmap(single)(b.reshape(-1, b.shape[-1]), w.reshape(-1, *w.shape[-2:]))
  return tuple(o.reshape(*lead, *o.shape[1:]) for o in out)


def mnl_vcg(bids: Any, w: Any, k: int, *, solver: str = "dinkelbach"
            ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """VCG under MNL with Clarke payments (N + 1 exact solves per instance).

  `solver` is "dinkelbach" (JAX K-matchings, any size) or "enum" (small sizes). Returns
  allocation (..., N, M), CTRs (..., N), payments (..., N).
  """
  instances.check_problem(bids, w, k, r_name="bids")
  instances.check_non_negative("bids", bids)
  instances.check_non_negative("w", w)
  if solver not in ("dinkelbach", "enum"):
    raise ValueError(f"solver must be one of ['dinkelbach', 'enum'], got {solver!r}")
  return _mnl_vcg_batch(jnp.asarray(bids, jnp.float64), jnp.asarray(w, jnp.float64), int(k),
                        solver)
