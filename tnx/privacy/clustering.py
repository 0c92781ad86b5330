"""Differentially private k-means of labelled embeddings, per class.

Dimension letters: N points, D dim, C classes, K clusters per class, L LSH bits (= max depth).

Back-ends share the `ClusteringBackend` protocol: `parts(fraction)` lists the mechanisms and
their share of the budget, `fit(key, z, y, ...)` returns DP centres [C, K, D] given the
calibrated noise scales.

* `LSHCoresetBackend` (default): a SimHash prefix tree with noisy counts (discrete Laplace,
  one sensitivity-1 histogram per level, `max_depth + 1` levels composed), noisy sums of the
  points in its leaves (one Gaussian mechanism, L2 sensitivity R), and weighted k-means++ on
  the resulting private weighted coreset (post-processing). All classes share one forest (a
  root per class), so each level is one histogram of disjoint cells.
* `LloydBackend`: `rounds` DP Lloyd iterations from public initial centres; every round is one
  Gaussian mechanism on (count, sum) of each cell, sensitivity sqrt(1/s_N^2 + R^2/s_S^2) in
  noise-multiplier units.
* `KMeansBackend`: non-private k-means; only valid in the epsilon = inf limit.

The point-level work (hashing, per-level histograms, leaf sums, assignment) is jitted JAX over
row-sharded arrays (`segment_sum` reduces across the `data` axis); only per-node summaries
(at most a few thousand numbers) go to the host.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from tnx import kmeans, validation
from tnx.privacy import accounting, data


def discrete_laplace_std(scale: float | None) -> float:
  """Std of DLap with parameter a = 1/scale: sqrt(2 e^-a) / (1 - e^-a); 0 for None (no noise)."""
  if accounting.noise_scale("scale", scale) is None:
    return 0.0
  a = 1.0 / scale
  return math.sqrt(2.0 * math.exp(-a)) / -math.expm1(-a)


def host_rng(key: jax.Array) -> np.random.Generator:
  """NumPy generator seeded from a JAX key, for noise on small per-node host arrays."""
  return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def discrete_laplace(rng: np.random.Generator, scale: float | None, shape: tuple[int, ...]
                     ) -> np.ndarray:
  """Integer noise with pmf proportional to exp(-|x| / scale) (difference of geometrics).

  `scale` > 0; None is the explicit non-private limit (zeros). Zero or negative is an error.
  """
  if accounting.noise_scale("scale", scale) is None:
    return np.zeros(shape, np.int64)
  p = -math.expm1(-1.0 / scale)
  return rng.geometric(p, shape) - rng.geometric(p, shape)


@jax.jit
def simhash_bits(z_NxD: jax.Array, planes_DxL: jax.Array) -> jax.Array:
  """[N, L] sign bits of random-hyperplane projections (int32 0/1)."""
  return (z_NxD @ planes_DxL > 0).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames="num_segments")
def _histogram(cell_N: jax.Array, num_segments: int) -> jax.Array:
  """Counts of cell ids in [0, num_segments); ids outside are dropped."""
  return jax.ops.segment_sum(jnp.ones_like(cell_N), cell_N, num_segments=num_segments)


@functools.partial(jax.jit, static_argnames="num_segments")
def _segment_sums(z_NxD: jax.Array, cell_N: jax.Array, num_segments: int) -> jax.Array:
  return jax.ops.segment_sum(z_NxD, cell_N, num_segments=num_segments)


@jax.jit
def _descend(node_N, leaf_N, leaf_id_P, slot_P, bits_NxL, level, dump):
  """One tree level for every point: record leaf ids, move branched points to children."""
  leaf_N = jnp.where(leaf_N >= 0, leaf_N, leaf_id_P[node_N])
  slot_N = slot_P[node_N]
  bit_N = jax.lax.dynamic_index_in_dim(bits_NxL, level, axis=1, keepdims=False)
  return jnp.where(slot_N >= 0, 2 * slot_N + bit_N, dump), leaf_N


def _padded(values: np.ndarray) -> jax.Array:
  """int32 copy padded with -1 to a power-of-two length (bounds recompilation)."""
  out = np.full(max(64, _pad(len(values))), -1, np.int32)
  out[: len(values)] = values
  return jnp.asarray(out)


def _pad(m: int) -> int:
  """Static segment count rounded up to a power of two (bounds recompilation)."""
  return 1 << max(0, (m - 1).bit_length())


@jax.jit
def assign(z_NxD: jax.Array, y_N: jax.Array, centres_CxKxD: jax.Array) -> jax.Array:
  """Index in [0, K) of the nearest centre of each point's own class: [N] int32."""
  c = centres_CxKxD
  sq_CxK = jnp.sum(c * c, axis=-1)
  score_NxCxK = sq_CxK[None] - 2.0 * jnp.einsum("nd,ckd->nck", z_NxD, c)
  own_NxK = jnp.take_along_axis(score_NxCxK, y_N[:, None, None], axis=1)[:, 0]
  return jnp.argmin(own_NxK, axis=-1).astype(jnp.int32)


def _clip_centres(c: np.ndarray, radius: float) -> np.ndarray:
  norm = np.linalg.norm(c, axis=-1, keepdims=True)
  return c * np.minimum(1.0, radius / np.maximum(norm, 1e-30))


def weighted_kmeans(points_MxD: np.ndarray, weights_M: np.ndarray, k: int, seed: int,
                    dim: int) -> np.ndarray:
  """Weighted k-means++ and Lloyd (tnx.kmeans: best of 3 restarts, at most 300 iterations,
  tol 1e-4) on a weighted public/private-coreset; returns [K, D].

  With fewer than k usable points the result repeats them (or is zeros with none); repeated
  centres own no points and their clusters are dropped later on noisy counts.
  """
  keep = weights_M > 0
  pts, w = points_MxD[keep], weights_M[keep]
  if len(pts) == 0:
    return np.zeros((k, dim))
  if len(pts) <= k:
    return pts[np.arange(k) % len(pts)]
  res = kmeans.kmeans(jax.random.key(seed), jnp.asarray(pts), k, jnp.asarray(w),
                      num_iters=300, tol=1e-4, n_init=3)
  return np.asarray(res.centres_KxD, np.float64)


class ClusteringBackend(Protocol):
  def parts(self, fraction: float) -> list[accounting.Part]:
    ...

  def fit(self, key: jax.Array, z_NxD: jax.Array, y_N: jax.Array, num_classes: int, k: int,
          radius: float, scales: dict[str, float]) -> np.ndarray:
    ...


@dataclasses.dataclass(frozen=True)
class Coreset:
  """Private weighted coreset: leaf averages [M, D], noisy counts [M], class of each leaf,
  and the noisy leaf sums [M, D] the averages were computed from."""
  points_MxD: np.ndarray
  weights_M: np.ndarray
  class_M: np.ndarray
  sums_MxD: np.ndarray


@dataclasses.dataclass(frozen=True)
class LSHCoresetBackend:
  """LSH prefix-tree coreset + weighted k-means++.

  Attributes:
    max_depth: tree depth L; the count budget is spread over L + 1 levels whatever depth the
      tree actually reaches.
    count_fraction: share of the clustering budget for the tree counts (rest: leaf sums).
    keep_sigmas: a node is kept iff noisy count >= max(1, keep_sigmas * count noise std).
    branch_factor: a kept node branches iff noisy count >= branch_factor * keep threshold.
  """
  max_depth: int = 20
  count_fraction: float = 0.5
  keep_sigmas: float = 3.0
  branch_factor: float = 3.0

  def parts(self, fraction: float) -> list[accounting.Part]:
    depth = validation.positive_int("max_depth", self.max_depth)
    cf = validation.in_range("count_fraction", self.count_fraction, 0.0, 1.0, low_open=True,
                             high_open=True)
    return [accounting.Part("tree_counts", fraction * cf,
                            lambda s: accounting.discrete_laplace_event(s, depth + 1)),
            accounting.Part("leaf_sums", fraction * (1 - cf), accounting.gaussian_event)]

  def coreset(self, key: jax.Array, z_NxD: jax.Array, y_N: jax.Array, num_classes: int,
              radius: float, count_scale: float | None, sum_multiplier: float | None
              ) -> Coreset:
    """Builds the private coreset (all classes at once, one tree root per class).

    `count_scale` (discrete Laplace scale of every tree count) and `sum_multiplier` (Gaussian
    noise multiplier of the leaf sums) must each be > 0, or None: that mechanism's explicit
    non-private limit (used by tests that isolate the other mechanism).
    """
    count_scale = accounting.noise_scale("count_scale", count_scale)
    sum_multiplier = accounting.noise_scale("sum_multiplier", sum_multiplier)
    radius = validation.positive("radius", radius)
    num_classes = validation.positive_int("num_classes", num_classes)
    data.check_labels("y_N", y_N, np.shape(z_NxD)[0], num_classes)
    k_planes, k_noise = jax.random.split(key)
    rng = host_rng(k_noise)
    dim = z_NxD.shape[-1]
    planes = jax.random.normal(k_planes, (dim, self.max_depth), z_NxD.dtype)
    bits_NxL = simhash_bits(z_NxD, planes)
    keep_at = max(1.0, self.keep_sigmas * discrete_laplace_std(count_scale))
    branch_at = self.branch_factor * keep_at

    node_N = jnp.asarray(y_N, jnp.int32)       # node id of each point at the current level
    m = num_classes
    counts = np.asarray(_histogram(node_N, _pad(m)))[:m]
    counts = counts + discrete_laplace(rng, count_scale, (m,))
    node_class = np.arange(num_classes)
    leaf_N = jnp.full(node_N.shape, -1, jnp.int32)
    leaf_counts, leaf_class = [], []
    for level in range(self.max_depth + 1):
      kept = counts >= keep_at
      branch = kept & (counts >= branch_at) & (level < self.max_depth)
      leaf = kept & ~branch
      # Leaf ids are global; nodes that neither branch nor form a leaf drop their points.
      # Index m is the "dropped" node of the previous level: it maps to -1.
      leaf_id = np.full(m + 1, -1, np.int64)
      leaf_id[:m][leaf] = len(leaf_counts) + np.arange(leaf.sum())
      leaf_counts.extend(counts[leaf].tolist())
      leaf_class.extend(node_class[leaf].tolist())
      slot = np.full(m + 1, -1, np.int64)
      slot[:m][branch] = np.arange(branch.sum())
      m_next = 2 * int(branch.sum())
      node_N, leaf_N = _descend(node_N, leaf_N, _padded(leaf_id), _padded(slot), bits_NxL,
                                min(level, self.max_depth - 1), m_next)
      if not branch.any():
        break
      counts = np.asarray(_histogram(node_N, _pad(m_next + 1)))[:m_next]
      counts = counts + discrete_laplace(rng, count_scale, (m_next,))
      node_class = np.repeat(node_class[branch], 2)
      m = m_next

    num_leaves = len(leaf_counts)
    cell_N = jnp.where(leaf_N >= 0, leaf_N, num_leaves)
    sums = np.asarray(_segment_sums(z_NxD, cell_N, _pad(num_leaves + 1)), np.float64)
    sums = sums[:num_leaves]
    if sum_multiplier is not None:
      sums = sums + sum_multiplier * radius * rng.standard_normal((num_leaves, dim))
    w = np.asarray(leaf_counts, np.float64)
    pts = _clip_centres(sums / np.maximum(w, 1.0)[:, None], radius) if num_leaves else sums
    return Coreset(pts, w, np.asarray(leaf_class, np.int64), sums)

  def fit(self, key: jax.Array, z_NxD: jax.Array, y_N: jax.Array, num_classes: int, k: int,
          radius: float, scales: dict[str, float]) -> np.ndarray:
    cs = self.coreset(key, z_NxD, y_N, num_classes, radius, scales["tree_counts"],
                      scales["leaf_sums"])
    dim = z_NxD.shape[-1]
    seed = int(jax.random.randint(jax.random.fold_in(key, 7), (), 0, 2**30))
    return np.stack([weighted_kmeans(cs.points_MxD[cs.class_M == c], cs.weights_M[
        cs.class_M == c], k, seed + c, dim) for c in range(num_classes)])


@functools.partial(jax.jit, static_argnames="num_cells")
def _cell_stats(z_NxD: jax.Array, cell_N: jax.Array, num_cells: int):
  counts = jax.ops.segment_sum(jnp.ones(cell_N.shape, z_NxD.dtype), cell_N, num_cells)
  return counts, jax.ops.segment_sum(z_NxD, cell_N, num_cells)


@dataclasses.dataclass(frozen=True)
class LloydBackend:
  """DP Lloyd iterations from public initial centres `init_centres_CxKxD`.

  Attributes:
    init_centres_CxKxD: public starting centres (e.g. k-means on public data); must not be
      computed from the private data.
    rounds: number T of Lloyd rounds (composed adaptively).
    count_weight: share w of the per-round sensitivity budget for the counts:
      s_N = z / sqrt(w), s_S = R z / sqrt(1 - w) for the round noise multiplier z.
  """
  init_centres_CxKxD: np.ndarray
  rounds: int = 5
  count_weight: float = 0.2

  def parts(self, fraction: float) -> list[accounting.Part]:
    t = validation.positive_int("rounds", self.rounds)
    return [accounting.Part("lloyd", fraction, lambda s: accounting.dp_event.SelfComposedDpEvent(
        accounting.gaussian_event(s), t))]

  def fit(self, key: jax.Array, z_NxD: jax.Array, y_N: jax.Array, num_classes: int, k: int,
          radius: float, scales: dict[str, float]) -> np.ndarray:
    validation.shape("init_centres_CxKxD", self.init_centres_CxKxD,
                     (num_classes, k, z_NxD.shape[-1]))
    w = validation.in_range("count_weight", self.count_weight, 0.0, 1.0, low_open=True,
                            high_open=True)
    z_mult = accounting.noise_scale("scales['lloyd']", scales["lloyd"])
    s_n, s_s = (0.0, 0.0) if z_mult is None else (z_mult / math.sqrt(w),
                                                 radius * z_mult / math.sqrt(1 - w))
    centres = _clip_centres(np.asarray(self.init_centres_CxKxD, np.float64), radius)
    y = jnp.asarray(y_N, jnp.int32)
    for key_t in jax.random.split(key, self.rounds):
      cell = y * k + assign(z_NxD, y, jnp.asarray(centres, z_NxD.dtype))
      n, s = (np.asarray(a, np.float64) for a in _cell_stats(z_NxD, cell, num_classes * k))
      kn, ks = jax.random.split(key_t)
      n = n + s_n * np.asarray(jax.random.normal(kn, n.shape, jnp.float64))
      s = s + s_s * np.asarray(jax.random.normal(ks, s.shape, jnp.float64))
      new = _clip_centres(s / np.maximum(n, 1.0)[:, None], radius).reshape(centres.shape)
      ok = (n >= 1.0).reshape(num_classes, k, 1)   # decision on noisy counts only
      centres = np.where(ok, new, centres)
    return centres


@dataclasses.dataclass(frozen=True)
class KMeansBackend:
  """Non-private k-means++ per class (the epsilon = inf ablation)."""
  seed: int = 0

  def parts(self, fraction: float) -> list[accounting.Part]:
    return [accounting.Part("kmeans", fraction, lambda s: accounting.dp_event.NonPrivateDpEvent())]

  def fit(self, key: jax.Array, z_NxD: jax.Array, y_N: jax.Array, num_classes: int, k: int,
          radius: float, scales: dict[str, float]) -> np.ndarray:
    z, y = np.asarray(z_NxD, np.float64), np.asarray(y_N)
    return np.stack([weighted_kmeans(z[y == c], np.ones((y == c).sum()), k, self.seed + c,
                                     z.shape[1]) for c in range(num_classes)])
