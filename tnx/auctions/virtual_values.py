"""Score maps: bid -> score used by the allocation rule, with their generalised inverses.

A mechanism in this package maximises `sum_i g_i(b_i) * ctr_i(x)` over allocations `x`, where
`g_i` is a non-decreasing score map:

- identity: welfare maximisation (VCG);
- ironed virtual value `phibar_i` of the prior `F_i`: revenue maximisation (Myerson 1981);
- reserve map `g(b) = b` for `b >= rho`, negative below: welfare maximisation with a reserve.

A map is a piecewise-linear table (`ScoreMap`, knots `(G,)` shared by all bidders or `(N, G)`
per bidder) extended linearly beyond both ends. Its generalised inverse
`g^{-1}(t) = min{b >= 0 : g(b) >= t}` turns score thresholds into bid thresholds; on ironed
(flat) stretches it returns the left end, as Myerson payments require.

Ironing (built once on the host with numpy, it is setup rather than an inner loop): the revenue
curve `R(q) = q F^{-1}(1 - q)` is tabulated on a quantile grid, its upper concave hull is taken
and `phibar` at value `F^{-1}(1 - q)` is the hull's slope at `q`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation
from tnx.auctions import instances


class ScoreMap(NamedTuple):
  """Piecewise-linear non-decreasing map: bid knots `v` and scores `s`, each (G,) or (N, G)."""
  v: jax.Array
  s: jax.Array


def identity_map() -> ScoreMap:
  return ScoreMap(v=jnp.array([0.0, 1.0]), s=jnp.array([0.0, 1.0]))


def reserve_map(reserve: float, *, width: float = 1e-9) -> ScoreMap:
  """Score `b` for bids `b >= reserve` and a negative score (never shown) below it.

  The jump at `reserve` is represented by a linear ramp of relative width `width`, so bids in
  `(reserve * (1 - width), reserve)` are treated as at the reserve.
  """
  rho = validation.non_negative("reserve", reserve)
  if rho == 0.0:
    return identity_map()
  d = width * max(rho, 1.0)
  if rho - d <= 0.0:     # tiny reserve: the ramp starts at 0 and extrapolates below
    return ScoreMap(v=jnp.array([0.0, rho, rho + 1.0]), s=jnp.array([-1.0, rho, rho + 1.0]))
  v = jnp.array([0.0, rho - d, rho, rho + 1.0])
  s = jnp.array([-1.0 - rho, -1.0, rho, rho + 1.0])
  return ScoreMap(v=v, s=s)


def check_score_map(name: str, smap: ScoreMap, n: int | None = None) -> None:
  """Raises ValueError unless `smap` is a valid non-decreasing map: knots `v` and scores `s`
  of one shape (G,) or (n, G), G >= 2, finite, `v` strictly increasing and `s`
  non-decreasing along G (a decreasing map would show low bidders first and charge them 0:
  the mechanism would not be truthful)."""
  v_shape, s_shape = np.shape(smap.v), np.shape(smap.s)
  per_bidder = len(v_shape) == 2 and (n is None or v_shape[0] == n)
  if v_shape != s_shape or not (len(v_shape) == 1 or per_bidder) or v_shape[-1] < 2:
    want = "[G]" if n is None else f"[G] or [n={n}, G]"
    raise ValueError(f"{name} tables must have shape {want} with G >= 2, got v "
                     f"{list(v_shape)} and s {list(s_shape)}")
  v, s = validation.concrete(smap.v), validation.concrete(smap.s)
  if v is None or s is None:
    return
  if not (np.all(np.isfinite(v)) and np.all(np.isfinite(s))):
    raise ValueError(f"{name} knots and scores must be finite")
  if np.any(np.diff(v, axis=-1) <= 0):
    raise ValueError(f"{name}.v (bid knots) must be strictly increasing")
  if np.any(np.diff(s, axis=-1) < 0):
    raise ValueError(f"{name}.s must be non-decreasing in the bid (a monotone score map); "
                     f"found a decrease of {float(-np.diff(s, axis=-1).min()):.3g}")


def _quantile_grid(num: int) -> np.ndarray:
  tail = np.geomspace(1e-10, 1e-3, 200)
  return np.unique(np.concatenate([[0.0], tail, np.linspace(0.0, 1.0, num)]))


def _upper_hull(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Indices of the upper concave hull of points sorted by x (monotone chain)."""
  hull: list[int] = []
  for k in range(len(x)):
    while len(hull) >= 2:
      i, j = hull[-2], hull[-1]
      # Drop j if it lies on or below the chord from i to k.
      if (y[j] - y[i]) * (x[k] - x[i]) <= (y[k] - y[i]) * (x[j] - x[i]):
        hull.pop()
      else:
        break
    hull.append(k)
  return np.asarray(hull)


MIN_GRID = 1001


def ironed_virtual_value_map(prior: Any, *, num: int = 20001, iron: bool = True) -> ScoreMap:
  """Ironed (or, with `iron=False`, plain) virtual value map of `prior`.

  Args:
    prior: a prior from `instances.PRIORS` (or any object with `quantile(u)`), or its name.
    num: size of the uniform part of the quantile grid, >= MIN_GRID (coarser grids misplace
      the ironed stretch of irregular priors: by 0.7 at num = 101 for the bimodal prior).
    iron: take the concave hull of the revenue curve (False: finite-difference slopes of the
      raw curve, i.e. the unironed virtual value; only meaningful for regular priors).

  Returns:
    ScoreMap with knots `(G,)` sorted by bid.
  """
  if isinstance(prior, str):
    prior = instances.get_prior(prior)
  if validation.positive_int("num", num) < MIN_GRID:
    raise ValueError(f"num must be >= {MIN_GRID} grid points, got {num}")
  q = _quantile_grid(num)
  price = prior.quantile(1.0 - q)
  rev = np.where(q > 0, q * np.where(np.isfinite(price), price, 0.0), 0.0)
  if iron:
    # One slope per hull edge, so ironed stretches get exactly equal scores (ties then break
    # by index, independently of the bids inside the stretch).
    h = _upper_hull(q, rev)
    edge_slope = np.diff(rev[h]) / np.diff(q[h])
    slope = edge_slope[np.searchsorted(q[h], q[:-1], side="right") - 1]
  else:
    slope = np.diff(rev) / np.diff(q)
  q_mid = 0.5 * (q[1:] + q[:-1])
  v_mid = prior.quantile(1.0 - q_mid)
  order = np.argsort(v_mid, kind="stable")
  v_mid, slope = v_mid[order], slope[order]
  # Enforce monotonicity against round-off in flat (ironed) stretches.
  slope = np.maximum.accumulate(slope) if iron else slope
  keep = np.concatenate([[True], np.diff(v_mid) > 1e-14])
  v_mid, slope = v_mid[keep], slope[keep]
  # Gaps in the support (F flat): the values inside a gap share the quantile of its right end,
  # so the map stays at its left level across the gap and steps up at the right end.
  dv = np.diff(v_mid)
  nb = np.maximum(np.concatenate([[0.0], dv[:-1]]), np.concatenate([dv[1:], [0.0]]))
  gaps = np.flatnonzero(dv > 50.0 * nb + 1e-9)
  if gaps.size:
    v_mid = np.insert(v_mid, gaps + 1, v_mid[gaps + 1] - 1e-12 * np.maximum(1.0, v_mid[gaps + 1]))
    slope = np.insert(slope, gaps + 1, slope[gaps])
  return ScoreMap(v=jnp.asarray(v_mid), s=jnp.asarray(slope))


def _interp_extrap(x: jax.Array, xp: jax.Array, fp: jax.Array) -> jax.Array:
  y = jnp.interp(x, xp, fp)
  lo_slope = (fp[1] - fp[0]) / (xp[1] - xp[0])
  hi_slope = (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
  y = jnp.where(x < xp[0], fp[0] + (x - xp[0]) * lo_slope, y)
  return jnp.where(x > xp[-1], fp[-1] + (x - xp[-1]) * hi_slope, y)


def _inverse_1d(t: jax.Array, v: jax.Array, s: jax.Array) -> jax.Array:
  """min{b >= 0 : g(b) >= t} for the table (v, s), g extended linearly at both ends."""
  g0 = _interp_extrap(jnp.zeros(()), v, s)
  k = jnp.clip(jnp.searchsorted(s, t, side="left"), 1, s.shape[0] - 1)
  v0, v1, s0, s1 = v[k - 1], v[k], s[k - 1], s[k]
  inside = v0 + (t - s0) * (v1 - v0) / jnp.where(s1 > s0, s1 - s0, 1.0)
  inside = jnp.where(s1 > s0, inside, v0)
  above = v[-1] + (t - s[-1]) * (v[-1] - v[-2]) / jnp.maximum(s[-1] - s[-2], 1e-300)
  below = v[0] + (t - s[0]) * (v[1] - v[0]) / jnp.maximum(s[1] - s[0], 1e-300)
  b = jnp.where(t > s[-1], above, jnp.where(t <= s[0], below, inside))
  return jnp.where(t <= g0, 0.0, jnp.maximum(b, 0.0))


def _per_bidder(fn, smap: ScoreMap, x: jax.Array) -> jax.Array:
  x = jnp.asarray(x, jnp.float64)
  if smap.v.ndim == 1:
    flat = jax.vmap(lambda a: fn(a, smap.v, smap.s))(x.reshape(-1))
    return flat.reshape(x.shape)
  # (N, G) tables: the last axis of x indexes bidders.
  per = jax.vmap(lambda col, v, s: jax.vmap(lambda a: fn(a, v, s))(col), in_axes=(1, 0, 0),
                 out_axes=1)
  return per(x.reshape(-1, x.shape[-1]), smap.v, smap.s).reshape(x.shape)


def apply_map(smap: ScoreMap, b: Any) -> jax.Array:
  """Scores `g(b)`, same shape as `b` (..., N) (last axis = bidders for per-bidder tables)."""
  check_score_map("smap", smap, np.shape(b)[-1] if np.ndim(b) else None)
  instances.check_finite("b", b)
  return _per_bidder(_interp_extrap, smap, b)


def inverse_map(smap: ScoreMap, t: Any) -> jax.Array:
  """Generalised inverse `min{b >= 0 : g(b) >= t}`, same shape as `t`."""
  check_score_map("smap", smap, np.shape(t)[-1] if np.ndim(t) else None)
  instances.check_finite("t", t)
  return _per_bidder(_inverse_1d, smap, t)


def monopoly_reserve(smap: ScoreMap) -> jax.Array:
  """Myerson reserve `phibar^{-1}(0)`: the smallest bid with non-negative score."""
  return inverse_map(smap, jnp.zeros(()) if smap.v.ndim == 1 else jnp.zeros(smap.v.shape[0]))
