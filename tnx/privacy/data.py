"""Bounded inputs and data sources for the DP mixture pipeline.

Dimension letters: N points, D embedding dim, C classes, K components per class.

* `clip_rows` / `check_bounded`: the L2 bound R of every record is an explicit argument; the
  DP entry points refuse inputs that exceed it instead of clipping silently.
* `sphere_gmm`: well-separated Gaussian mixtures on the sphere with known ground truth, for
  the recovery checks.
* `digits_splits`: scikit-learn's bundled 8x8 digits (no download) split into public /
  private / test parts.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from sklearn import datasets

from tnx import validation

_NORM_SLACK = 1e-6


def clip_rows(z_NxD: jax.Array, radius: float) -> jax.Array:
  """Scales every row to L2 norm <= radius; non-finite rows become zero vectors.

  Args:
    z_NxD: [N, D] raw embeddings.
    radius: the bound R > 0 (a public constant, never computed from private data).

  Returns:
    [N, D] rows with ||row|| <= radius.
  """
  radius = validation.positive("radius", radius)
  z = jnp.asarray(z_NxD)
  finite = jnp.all(jnp.isfinite(z), axis=-1, keepdims=True)
  z = jnp.where(finite, z, 0.0)
  norm = jnp.linalg.norm(z, axis=-1, keepdims=True)
  return z * jnp.minimum(1.0, radius / jnp.maximum(norm, 1e-30))


def normalize_rows(z_NxD: jax.Array) -> jax.Array:
  """L2-normalises rows (zero / non-finite rows become zero), so that R = 1 holds."""
  z = jnp.asarray(z_NxD)
  finite = jnp.all(jnp.isfinite(z), axis=-1, keepdims=True)
  z = jnp.where(finite, z, 0.0)
  norm = jnp.linalg.norm(z, axis=-1, keepdims=True)
  return jnp.where(norm > 0, z / jnp.maximum(norm, 1e-30), 0.0)


def check_bounded(name: str, z_NxD: jax.Array, radius: float) -> None:
  """Raises ValueError unless z is a finite [N, D] array with every row norm <= radius > 0."""
  radius = validation.positive("radius", radius)
  validation.shape(name, z_NxD, (None, None))
  z = np.asarray(z_NxD, dtype=np.float64)
  if not np.all(np.isfinite(z)):
    raise ValueError(f"{name} must be finite; clip_rows() zeroes non-finite rows")
  norms = np.linalg.norm(z, axis=-1)
  if norms.size and norms.max() > radius * (1 + _NORM_SLACK):
    raise ValueError(f"{name} has a row of L2 norm {norms.max():.6g} > radius {radius}; "
                     "clip the inputs first (clip_rows) with a public radius")


def check_labels(name: str, y_N: jax.Array, n: int, num_classes: int) -> np.ndarray:
  """Validates integer labels in [0, num_classes) of shape [n]; returns them as int32."""
  validation.shape(name, y_N, (n,))
  y = np.asarray(y_N)
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"{name} must hold integers, got dtype {y.dtype}")
  validation.array_in_range(name, y, 0, num_classes - 1)
  return y.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class SphereGMM:
  """Ground truth of `sphere_gmm` draws: per class K equally weighted N(mean, std^2 I)."""
  means_CxKxD: np.ndarray
  std: float


def sphere_gmm(key: jax.Array, n: int, num_classes: int, k: int, dim: int, gap: float,
               std: float, dtype=jnp.float64) -> tuple[jax.Array, jax.Array, jax.Array,
                                                       SphereGMM]:
  """Draws N labelled points from C x K well-separated isotropic Gaussians.

  Component means are uniform on the sphere of radius `gap` (gap < 1); points get isotropic
  noise of std `std` per coordinate and are then clipped to radius 1. Classes and components
  are equally likely.

  Returns:
    z [N, D] (norm <= 1), y [N] class ids, comp [N] component ids within the class, and the
    ground truth.
  """
  n = validation.positive_int("n", n)
  num_classes = validation.positive_int("num_classes", num_classes)
  k = validation.positive_int("k", k)
  dim = validation.positive_int("dim", dim)
  gap = validation.in_range("gap", gap, 0.0, 1.0, low_open=True, high_open=True)
  std = validation.positive("std", std)
  z, y, comp, mu = _sphere_gmm(key, n, num_classes, k, dim, gap, std, dtype)
  return z, y, comp, SphereGMM(np.asarray(mu), std)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 7))
def _sphere_gmm(key, n, num_classes, k, dim, gap, std, dtype):
  k_mu, k_y, k_c, k_e = jax.random.split(key, 4)
  mu = jax.random.normal(k_mu, (num_classes, k, dim), dtype)
  mu = gap * mu / jnp.linalg.norm(mu, axis=-1, keepdims=True)
  y = jax.random.randint(k_y, (n,), 0, num_classes)
  comp = jax.random.randint(k_c, (n,), 0, k)
  z = mu[y, comp] + std * jax.random.normal(k_e, (n, dim), dtype)
  z = z * jnp.minimum(1.0, 1.0 / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-30))
  return z, y, comp, mu


@dataclasses.dataclass(frozen=True)
class DigitsSplits:
  """Digits images as flat [N, 64] float arrays in [0, 1] and int labels, per split."""
  x_public: np.ndarray
  y_public: np.ndarray
  x_private: np.ndarray
  y_private: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


def digits_splits(seed: int = 0, public_fraction: float = 0.3,
                  test_fraction: float = 0.2) -> DigitsSplits:
  """Splits sklearn's bundled digits (1,797 images) into public / private / test parts.

  `public_fraction` of all images is public (used to fit encoders); of the rest,
  `test_fraction` is a held-out real test set and the remainder is the private training set.
  """
  public_fraction = validation.in_range("public_fraction", public_fraction, 0.0, 1.0,
                                        low_open=True, high_open=True)
  test_fraction = validation.in_range("test_fraction", test_fraction, 0.0, 1.0,
                                      low_open=True, high_open=True)
  ds = datasets.load_digits()
  x = (ds.data / 16.0).astype(np.float64)
  y = ds.target.astype(np.int32)
  perm = np.random.default_rng(seed).permutation(len(y))
  n_pub = int(round(public_fraction * len(y)))
  rest = perm[n_pub:]
  n_test = int(round(test_fraction * len(rest)))
  pub, test, priv = perm[:n_pub], rest[:n_test], rest[n_test:]
  return DigitsSplits(x[pub], y[pub], x[priv], y[priv], x[test], y[test])
