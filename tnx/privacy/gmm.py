"""Noisy per-cell moments, their post-processing into a Gaussian mixture, and sampling.

Dimension letters: N points, D dim, C classes, K components per class, M = C * K cells.

A record lies in exactly one cell (class c, cluster j) and changes that cell's statistics by
(1, z, q(z)) where q(z) is triu(z z^T) (full), z * z (diag) or ||z - c_j||^2 (iso). With
||z|| <= R the L2 norm of q(z) is at most R^2 (full, diag) or (2R)^2 (iso; centres lie in the
R-ball). Adding N(0, s_N^2), N(0, s_S^2 I), N(0, s_Q^2 I) to the three blocks is one Gaussian
mechanism with noise multiplier z_eff, 1 / z_eff^2 = 1/s_N^2 + R^2/s_S^2 + q_max^2/s_Q^2;
cells are disjoint, so all of them share it (parallel composition).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation

COV_TYPES = ("full", "diag", "iso")


def q_sensitivity(radius: float, cov_type: str) -> float:
  """L2 bound of one record's second-moment contribution q(z)."""
  validation.one_of("cov_type", cov_type, COV_TYPES)
  return (2.0 * radius) ** 2 if cov_type == "iso" else radius ** 2


def moment_stds(z_eff: float, radius: float, cov_type: str,
                weights: tuple[float, float, float] = (0.2, 0.4, 0.4)
                ) -> tuple[float, float, float]:
  """Noise stds (s_N, s_S, s_Q) giving noise multiplier z_eff; `weights` split 1/z_eff^2.

  weights (w_N, w_S, w_Q) > 0 summing to 1: block X gets sensitivity_X / s_X = sqrt(w_X) / z_eff.
  z_eff and radius must be finite and > 0 (the non-private limit releases without calling this).
  """
  z_eff = validation.positive("z_eff", z_eff)
  radius = validation.positive("radius", radius)
  if (len(weights) != 3 or not all(np.isfinite(weights)) or min(weights) <= 0
      or abs(sum(weights) - 1) > 1e-9):
    raise ValueError(f"moment weights must be 3 positive numbers summing to 1, got {weights}")
  w_n, w_s, w_q = weights
  return (z_eff / math.sqrt(w_n), radius * z_eff / math.sqrt(w_s),
          q_sensitivity(radius, cov_type) * z_eff / math.sqrt(w_q))


def noise_multiplier(s_n: float, s_s: float, s_q: float, radius: float, cov_type: str) -> float:
  """z_eff = 1 / sqrt(1/s_N^2 + R^2/s_S^2 + q_max^2/s_Q^2) (inverse of `moment_stds`)."""
  s_n, s_s, s_q = (validation.positive(n, v) for n, v in (("s_n", s_n), ("s_s", s_s),
                                                           ("s_q", s_q)))
  radius = validation.positive("radius", radius)
  return 1.0 / math.sqrt(1 / s_n ** 2 + radius ** 2 / s_s ** 2
                         + q_sensitivity(radius, cov_type) ** 2 / s_q ** 2)


def cell_moments(z_NxD: jax.Array, cell_N: jax.Array, centres_MxD: jax.Array, num_cells: int,
                 cov_type: str):
  """Exact sufficient statistics per cell (linear in N; reduces over a row-sharded axis).

  Args:
    z_NxD: [N, D] bounded points. cell_N: [N] cell ids, every one in [0, M) (checked when
      concrete: a record outside every cell would silently leave the release).
    centres_MxD: [M, D] centre of each cell (used by `iso` only).
    num_cells: M. cov_type: 'full' | 'diag' | 'iso'.

  Returns:
    counts [M], sums [M, D], second moments [M, D, D] (full, upper triangle incl. diagonal,
    lower zero), [M, D] (diag) or [M] (iso, sum of ||z - c||^2).
  """
  num_cells = validation.positive_int("num_cells", num_cells)
  validation.one_of("cov_type", cov_type, COV_TYPES)
  validation.shape("cell_N", cell_N, (np.shape(z_NxD)[0],))
  validation.shape("centres_MxD", centres_MxD, (num_cells, np.shape(z_NxD)[-1]))
  if validation.is_concrete(cell_N):
    validation.array_in_range("cell_N", cell_N, 0, num_cells - 1)
  return _cell_moments(z_NxD, cell_N, centres_MxD, num_cells, cov_type)


@functools.partial(jax.jit, static_argnames=("num_cells", "cov_type"))
def _cell_moments(z_NxD, cell_N, centres_MxD, num_cells, cov_type):
  seg = functools.partial(jax.ops.segment_sum, segment_ids=cell_N, num_segments=num_cells)
  counts = seg(jnp.ones(cell_N.shape, z_NxD.dtype))
  sums = seg(z_NxD)
  if cov_type == "full":
    q = jnp.triu(seg(z_NxD[:, :, None] * z_NxD[:, None, :]))
  elif cov_type == "diag":
    q = seg(z_NxD * z_NxD)
  else:
    c = jnp.take(centres_MxD, jnp.minimum(cell_N, num_cells - 1), axis=0)
    q = seg(jnp.sum((z_NxD - c) ** 2, axis=-1))
  return counts, sums, q


def add_moment_noise(key: jax.Array, counts, sums, q, stds: tuple[float, float, float] | None,
                     cov_type: str):
  """Gaussian noise on the three blocks (float64); full: i.i.d. on the upper triangle only.

  `stds` = (s_N, s_S, s_Q), each finite and > 0, or None for the explicit non-private limit
  (the exact statistics, symmetrised like a noisy release). Zero or negative stds are errors.
  """
  validation.one_of("cov_type", cov_type, COV_TYPES)
  if stds is not None:
    if len(stds) != 3:
      raise ValueError(f"stds must be (s_N, s_S, s_Q), got {stds!r}")
    stds = tuple(validation.positive(n, v) for n, v in zip(("s_N", "s_S", "s_Q"), stds))
  return _add_moment_noise(key, counts, sums, q, (1.0, 1.0, 1.0) if stds is None else stds,
                           stds is not None, cov_type)


@functools.partial(jax.jit, static_argnames=("noisy", "cov_type"))
def _add_moment_noise(key, counts, sums, q, stds, noisy, cov_type):
  f64 = jnp.float64
  counts, sums, q = (jnp.asarray(a, f64) for a in (counts, sums, q))
  if noisy:
    s_n, s_s, s_q = stds
    kn, ks, kq = jax.random.split(key, 3)
    counts = counts + s_n * jax.random.normal(kn, counts.shape, f64)
    sums = sums + s_s * jax.random.normal(ks, sums.shape, f64)
    q = q + s_q * jax.random.normal(kq, q.shape, f64)
  if cov_type == "full":
    q = jnp.triu(q)
    q = q + jnp.swapaxes(q, -1, -2) - q * jnp.eye(q.shape[-1], dtype=f64)
  return counts, sums, q


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Mixture:
  """Per-class Gaussian mixture.

  weights_CxK sum to 1 per class (0 = dropped component); class_weights_C sum to 1;
  cov is [C, K, D, D] (full), [C, K, D] (diag variances) or [C, K] (iso variance).
  """
  weights_CxK: jax.Array
  class_weights_C: jax.Array
  means_CxKxD: jax.Array
  cov: jax.Array
  cov_type: str = dataclasses.field(metadata=dict(static=True), default="diag")


def to_mixture(counts_M, sums_MxD, q_M, centres_MxD, num_classes: int, cov_type: str,
               n_min: float, floor_abs: float = 1e-6, floor_rel: float = 1e-3,
               shrinkage: float = 0.1) -> Mixture:
  """Post-processes noisy cell moments into a `Mixture` (uses noisy values only).

  Cells with noisy count < n_min are dropped (if a class would lose all cells, its largest
  noisy cell is kept); means divide by max(noisy count, n_min); covariance eigenvalues are
  floored at max(floor_abs, floor_rel * tr / D) and shrunk towards (tr / D) I by `shrinkage`.
  """
  validation.one_of("cov_type", cov_type, COV_TYPES)
  validation.in_range("shrinkage", shrinkage, 0.0, 1.0)
  validation.positive_int("num_classes", num_classes)
  return _to_mixture(jnp.asarray(counts_M, jnp.float64), jnp.asarray(sums_MxD, jnp.float64),
                     jnp.asarray(q_M, jnp.float64), jnp.asarray(centres_MxD, jnp.float64),
                     num_classes, cov_type, max(float(n_min), 1.0), floor_abs, floor_rel,
                     shrinkage)


@functools.partial(jax.jit, static_argnames=("num_classes", "cov_type"))
def _to_mixture(counts, sums_MxD, q_M, centres_MxD, num_classes, cov_type, n_min, floor_abs,
                floor_rel, shrinkage) -> Mixture:
  m, d = sums_MxD.shape
  k = m // num_classes
  keep = counts >= n_min
  c_counts = counts.reshape(num_classes, k)
  best = jax.nn.one_hot(jnp.argmax(c_counts, axis=1), k, dtype=bool)
  keep = (keep.reshape(num_classes, k) | (best & ~keep.reshape(num_classes, k).any(1,
                                                                                  keepdims=True)))
  w = jnp.where(keep, jnp.maximum(c_counts, 0.0), 0.0)
  w = jnp.where(keep & (w.sum(1, keepdims=True) == 0), 1.0, w)
  cls = w.sum(1)
  weights = w / cls[:, None]
  class_weights = jnp.maximum(cls, 1e-12) / jnp.maximum(cls, 1e-12).sum()
  n = jnp.maximum(counts, n_min)[:, None]
  mu = sums_MxD / n
  if cov_type == "full":
    cov = q_M / n[..., None] - mu[:, :, None] * mu[:, None, :]
    cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2))
    lam, vec = jnp.linalg.eigh(cov)
    tr = jnp.maximum(jnp.sum(lam, -1, keepdims=True), 0.0) / d
    lam = jnp.maximum(lam, jnp.maximum(floor_abs, floor_rel * tr))
    lam = (1 - shrinkage) * lam + shrinkage * jnp.mean(lam, -1, keepdims=True)
    cov = jnp.einsum("mij,mj,mkj->mik", vec, lam, vec)
    cov = cov.reshape(num_classes, k, d, d)
  elif cov_type == "diag":
    var = q_M / n - mu ** 2
    tr = jnp.maximum(jnp.sum(var, -1, keepdims=True), 0.0) / d
    var = jnp.maximum(var, jnp.maximum(floor_abs, floor_rel * tr))
    var = (1 - shrinkage) * var + shrinkage * jnp.mean(var, -1, keepdims=True)
    cov = var.reshape(num_classes, k, d)
  else:
    shift = jnp.sum((mu - centres_MxD) ** 2, -1)
    var = jnp.maximum((q_M / n[:, 0] - shift) / d, floor_abs)
    cov = var.reshape(num_classes, k)
  return Mixture(weights, class_weights, mu.reshape(num_classes, k, d), cov, cov_type)


def class_sizes(class_weights_C: np.ndarray, m: int, balanced: bool = False) -> np.ndarray:
  """Integer sizes summing to m, proportional to class weights (largest remainder)."""
  p = np.full(len(class_weights_C), 1.0 / len(class_weights_C)) if balanced else np.asarray(
      class_weights_C, np.float64)
  raw = p * m
  out = np.floor(raw).astype(np.int64)
  out[np.argsort(out - raw)[: m - out.sum()]] += 1
  return out


def sample(key: jax.Array, mixture: Mixture, m: int, balanced: bool = False,
           renormalize: bool = True) -> tuple[jax.Array, jax.Array]:
  """Draws m labelled synthetic embeddings: (z [m, D], y [m]).

  Class sizes follow the mixture's class weights (or are balanced); within a class the
  component is Categorical(weights) and z ~ N(mean, cov); `renormalize` projects z onto the
  unit sphere (as for L2-normalised encoders).
  """
  m = validation.positive_int("m", m)
  sizes = class_sizes(np.asarray(mixture.class_weights_C), m, balanced)
  y = jnp.asarray(np.repeat(np.arange(len(sizes)), sizes), jnp.int32)
  return _sample(key, mixture, y, renormalize)


@functools.partial(jax.jit, static_argnames="renormalize")
def _sample(key: jax.Array, mixture: Mixture, y: jax.Array, renormalize: bool):
  kc, ke = jax.random.split(key)
  logw = jnp.log(jnp.maximum(mixture.weights_CxK[y], 0.0))
  comp = jax.random.categorical(kc, logw, axis=-1)
  mu = mixture.means_CxKxD[y, comp]
  e = jax.random.normal(ke, mu.shape, mu.dtype)
  if mixture.cov_type == "full":
    chol = jnp.linalg.cholesky(mixture.cov)[y, comp]
    z = mu + jnp.einsum("mij,mj->mi", chol, e)
  elif mixture.cov_type == "diag":
    z = mu + jnp.sqrt(mixture.cov[y, comp]) * e
  else:
    z = mu + jnp.sqrt(mixture.cov[y, comp])[:, None] * e
  if renormalize:
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  return z, y
