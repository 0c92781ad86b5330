"""Weighted k-means in JAX: k-means++ seeding, Lloyd iterations, inertia.

The one k-means of tnx (data selection clusters trajectories with it; the non-private path of
tnx.privacy.clustering runs it on coresets). Everything is deterministic given a PRNG key and
jit-compiled per padded shape (zero-weight rows and zero columns are added so that nearby sizes
share a compilation); inputs may be sharded row-wise (the segment sums reduce across shards).

Dimension letters: N points, D features, K clusters, L candidate centres per k-means++ step,
I Lloyd iterations.

Conventions follow scikit-learn's `KMeans(algorithm="lloyd")` so that the same initial centres
give the same centres and inertia:
* k-means++ is the greedy variant (Arthur & Vassilvitskii 2007; scikit-learn's default): at
  every step `L = 2 + floor(log K)` candidates are drawn with probability proportional to
  w_i * D(x_i)^2 and the one that lowers the potential most is kept.
* One Lloyd iteration = assign every point to its nearest centre, then move every centre to the
  weighted mean of its points. Iterations stop early when the labels no longer change or the
  total squared centre shift is <= tol * mean feature variance. The returned labels and inertia
  come from a final assignment to the returned centres.
* A centre that owns no weight after an assignment moves onto the point farthest from its own
  centre (distinct empty centres take distinct far points), as scikit-learn relocates them.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from tnx import validation


class KMeansResult(NamedTuple):
  """centres_KxD, labels_N (int32), inertia (sum_i w_i ||x_i - c_{label_i}||^2 of the returned
  centres), inertia_I (inertia_I[i]: inertia of the centres entering iteration i, so [0] is
  that of the initial centres; entries past the last iteration run repeat the final inertia)
  and num_iters (iterations actually run)."""
  centres_KxD: jax.Array
  labels_N: jax.Array
  inertia: jax.Array
  inertia_I: jax.Array
  num_iters: jax.Array


def sq_distances(x_NxD: jax.Array, c_KxD: jax.Array) -> jax.Array:
  """[N, K] squared Euclidean distances (clamped at 0 against round-off)."""
  d2 = (jnp.sum(x_NxD * x_NxD, -1)[:, None] - 2.0 * x_NxD @ c_KxD.T
        + jnp.sum(c_KxD * c_KxD, -1)[None])
  return jnp.maximum(d2, 0.0)


@jax.jit
def assign(x_NxD: jax.Array, centres_KxD: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Nearest centre of every point: labels [N] int32 and squared distances [N]."""
  d2_NxK = sq_distances(x_NxD, centres_KxD)
  labels_N = jnp.argmin(d2_NxK, axis=-1).astype(jnp.int32)
  return labels_N, jnp.take_along_axis(d2_NxK, labels_N[:, None], axis=1)[:, 0]


@jax.jit
def inertia(x_NxD: jax.Array, centres_KxD: jax.Array, weights_N: jax.Array) -> jax.Array:
  """sum_i w_i min_k ||x_i - c_k||^2."""
  return jnp.sum(weights_N * assign(x_NxD, centres_KxD)[1])


def _check(x_NxD, k: int, weights_N) -> tuple[jax.Array, jax.Array, int]:
  x = jnp.asarray(x_NxD)
  if x.ndim != 2 or x.shape[0] == 0:
    raise ValueError(f"x_NxD must be a non-empty [N, D] array, got shape {list(x.shape)}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  if not bool(jnp.all(jnp.isfinite(x))):
    raise ValueError("x_NxD must be finite")
  k = validation.positive_int("k", k)
  if weights_N is None:
    w = jnp.ones(x.shape[0], x.dtype)
  else:
    w = jnp.asarray(weights_N, x.dtype)
    validation.shape("weights_N", w, (x.shape[0],))
    if not bool(jnp.all(jnp.isfinite(w) & (w >= 0))):
      raise ValueError("weights_N must be finite and >= 0")
  support = int(jnp.sum(w > 0))
  if k > support:
    raise ValueError(f"k = {k} clusters exceed the {support} points with positive weight "
                     "(expected k <= number of examples)")
  return x, w, k


def _bucket(n: int) -> int:
  """Padded point count: the next power of two up to 4096, then a multiple of 4096."""
  return 1 << max(0, (n - 1).bit_length()) if n <= 4096 else -(-n // 4096) * 4096


def _pad(x_NxD: jax.Array, w_N: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Zero-weight rows up to `_bucket(N)` and zero columns up to a multiple of 8: distances,
  seeding draws and Lloyd updates are unchanged, and nearby shapes share one compilation."""
  n, d = x_NxD.shape
  x = jnp.pad(x_NxD, ((0, _bucket(n) - n), (0, -d % 8)))
  return x, jnp.pad(w_N, (0, _bucket(n) - n))


def default_local_trials(k: int) -> int:
  """scikit-learn's number of greedy k-means++ candidates: 2 + floor(log k)."""
  return 2 + int(math.log(k))


def kmeans_plusplus(key: jax.Array, x_NxD: jax.Array, k: int,
                    weights_N: jax.Array | None = None, *,
                    local_trials: int | None = None) -> jax.Array:
  """Weighted greedy k-means++ seeding: [K, D] centres chosen among the points.

  Args:
    key: PRNG key (the result is a deterministic function of it).
    x_NxD: points.
    k: number of centres, 1 <= k <= number of points with positive weight.
    weights_N: non-negative weights (default ones); weight-0 points are never chosen.
    local_trials: candidates L per step (default 2 + floor(log k)); 1 is classic k-means++.
  """
  x, w, k = _check(x_NxD, k, weights_N)
  trials = default_local_trials(k) if local_trials is None else validation.positive_int(
      "local_trials", local_trials)
  d = x.shape[1]
  return _kmeans_plusplus(key, *_pad(x, w), k, trials)[:, :d]


@functools.partial(jax.jit, static_argnames=("k", "trials"))
def _kmeans_plusplus(key, x_NxD, w_N, k, trials):
  n = x_NxD.shape[0]
  key_first, key_rest = jax.random.split(key)
  first = jax.random.choice(key_first, n, p=w_N / jnp.sum(w_N))
  centres_KxD = jnp.zeros((k, x_NxD.shape[1]), x_NxD.dtype).at[0].set(x_NxD[first])
  d2_N = sq_distances(x_NxD, x_NxD[first][None])[:, 0]

  def step(i, carry):
    centres_KxD, d2_N = carry
    pot_N = w_N * d2_N
    total = jnp.sum(pot_N)
    # All positive-weight points already coincide with centres: draw by weight alone.
    p_N = jnp.where(total > 0, pot_N / jnp.where(total > 0, total, 1.0), w_N / jnp.sum(w_N))
    cand_L = jax.random.choice(jax.random.fold_in(key_rest, i), n, (trials,), p=p_N)
    d2_LxN = jnp.minimum(d2_N[None], sq_distances(x_NxD, x_NxD[cand_L]).T)
    best = jnp.argmin(d2_LxN @ w_N)
    return centres_KxD.at[i].set(x_NxD[cand_L[best]]), d2_LxN[best]

  return jax.lax.fori_loop(1, k, step, (centres_KxD, d2_N))[0]


def lloyd(x_NxD: jax.Array, init_centres_KxD: jax.Array, weights_N: jax.Array | None = None,
          *, num_iters: int = 100, tol: float = 0.0) -> KMeansResult:
  """Weighted Lloyd iterations from given centres (see the module docstring for the rules).

  Args:
    x_NxD: points.
    init_centres_KxD: starting centres.
    weights_N: non-negative point weights (default ones).
    num_iters: maximum number of iterations (>= 1).
    tol: relative tolerance on the total squared centre shift (scikit-learn's `tol`); 0 stops
      only when the labels stop changing.
  """
  c0 = jnp.asarray(init_centres_KxD)
  if c0.ndim != 2:
    raise ValueError(f"init_centres_KxD must be a [K, D] array, got shape {list(c0.shape)}")
  x, w, k = _check(x_NxD, c0.shape[0], weights_N)
  validation.shape("init_centres_KxD", c0, (k, x.shape[1]))
  num_iters = validation.positive_int("num_iters", num_iters)
  tol = validation.non_negative("tol", tol)
  tol_abs = tol * jnp.mean(jnp.var(x, axis=0))
  (n, d), (xp, wp) = x.shape, _pad(x, w)
  c0 = jnp.pad(c0.astype(x.dtype), ((0, 0), (0, xp.shape[1] - d)))
  res = _lloyd(xp, c0, wp, tol_abs, num_iters)
  return res._replace(centres_KxD=res.centres_KxD[:, :d], labels_N=res.labels_N[:n])


@functools.partial(jax.jit, static_argnames="num_iters")
def _lloyd(x_NxD, c_KxD, w_N, tol_abs, num_iters):
  k = c_KxD.shape[0]

  def update(c_KxD):
    labels_N, d2_N = assign(x_NxD, c_KxD)
    mass_K = jax.ops.segment_sum(w_N, labels_N, num_segments=k)
    sums_KxD = jax.ops.segment_sum(w_N[:, None] * x_NxD, labels_N, num_segments=k)
    empty_K = mass_K <= 0
    new_KxD = sums_KxD / jnp.where(empty_K, 1.0, mass_K)[:, None]
    # Empty centres jump to the farthest positive-weight points, one distinct point each.
    far_K = jax.lax.top_k(jnp.where(w_N > 0, d2_N, -1.0), k)[1]
    rank_K = jnp.cumsum(empty_K) - 1
    new_KxD = jnp.where(empty_K[:, None], x_NxD[far_K[jnp.maximum(rank_K, 0)]], new_KxD)
    return labels_N, jnp.sum(w_N * d2_N), new_KxD

  def cond(carry):
    i, _, _, _, done = carry
    return (i < num_iters) & ~done

  def body(carry):
    i, c_KxD, labels_N, hist_I, _ = carry
    new_labels_N, current, new_KxD = update(c_KxD)
    shift = jnp.sum((new_KxD - c_KxD) ** 2)
    # Weight-0 rows (padding) move no centre, so only weighted labels decide convergence.
    done = jnp.all((new_labels_N == labels_N) | (w_N <= 0)) | (shift <= tol_abs)
    hist_I = hist_I.at[i].set(current)
    return i + 1, new_KxD, new_labels_N, hist_I, done

  init = (jnp.int32(0), c_KxD, jnp.full(x_NxD.shape[0], -1, jnp.int32),
          jnp.full(num_iters, jnp.nan, x_NxD.dtype), jnp.bool_(False))
  n_run, c_KxD, _, hist_I, _ = jax.lax.while_loop(cond, body, init)
  labels_N, d2_N = assign(x_NxD, c_KxD)
  final = jnp.sum(w_N * d2_N)
  hist_I = jnp.where(jnp.arange(num_iters) < n_run, hist_I, final)
  return KMeansResult(c_KxD, labels_N, final, hist_I, n_run)


def kmeans(key: jax.Array, x_NxD: jax.Array, k: int, weights_N: jax.Array | None = None, *,
           num_iters: int = 100, tol: float = 0.0, n_init: int = 1,
           local_trials: int | None = None) -> KMeansResult:
  """k-means++ seeding then Lloyd, best of `n_init` restarts by inertia.

  Args:
    key: PRNG key; restart r seeds with `jax.random.fold_in(key, r)`.
    x_NxD: points.
    k: number of clusters, 1 <= k <= number of points with positive weight.
    weights_N: non-negative weights (default ones).
    num_iters: maximum Lloyd iterations per restart.
    tol: relative centre-shift tolerance (see `lloyd`).
    n_init: number of restarts (>= 1).
    local_trials: greedy k-means++ candidates per step (see `kmeans_plusplus`).
  """
  x, w, k = _check(x_NxD, k, weights_N)
  n_init = validation.positive_int("n_init", n_init)
  best = None
  for r in range(n_init):
    c0 = kmeans_plusplus(jax.random.fold_in(key, r), x, k, w, local_trials=local_trials)
    res = lloyd(x, c0, w, num_iters=num_iters, tol=tol)
    # Strict improvement keeps the earliest restart on ties (deterministic).
    if best is None or float(res.inertia) < float(best.inertia):
      best = res
  return best

