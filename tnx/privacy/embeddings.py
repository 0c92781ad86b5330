"""DP synthetic embeddings: DP clustering + noisy moments -> per-class Gaussian mixture.

Dimension letters: N points, D dim, C classes, K components per class.

Pipeline (reference design; the paper body was not available, so the budget split, the
covariance family and the back-end are choices exposed as arguments):
  1. inputs are embeddings with ||z|| <= R (R public, checked, never inferred);
  2. DP centres per class from a `ClusteringBackend` (share `clustering_fraction` of the budget;
     skipped when K = 1, which is the DP class-prototype special case);
  3. each point goes to the nearest DP centre of its class;
  4. one Gaussian mechanism releases (count, sum, second moment) of every (class, cluster) cell;
  5. post-processing: drop small noisy cells, weights, means, PSD-repaired covariances.
The budget of steps 2 and 4 is calibrated jointly (`accounting.calibrate_split`) and the spent
(epsilon, delta) under add/remove-one adjacency is returned. Classes are disjoint cells of every
histogram, so the whole release costs the budget once. Under replace-one adjacency a record
that changes class touches two cells: compose the returned event twice for that relation.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation
from tnx.privacy import accounting, clustering, data, gmm


@dataclasses.dataclass(frozen=True)
class DPGMMConfig:
  """Settings of `fit_dp_gmm` (defaults follow the reference design table)."""
  k: int = 3                          # components per class, fixed a priori
  cov_type: str = "diag"              # 'full' | 'diag' | 'iso'
  clustering_fraction: float = 0.4    # share of the budget for the DP centres
  moment_weights: tuple[float, float, float] = (0.2, 0.4, 0.4)  # (count, sum, 2nd moment)
  n_min_sigmas: float = 5.0           # drop cells with noisy count < n_min_sigmas * s_N
  floor_abs: float = 1e-6             # eigenvalue floor, absolute
  floor_rel: float = 1e-3             # eigenvalue floor, relative to tr(cov) / D
  shrinkage: float = 0.1              # towards (tr / D) I


@dataclasses.dataclass(frozen=True)
class Release:
  """Everything `fit_dp_gmm` releases (all of it DP)."""
  mixture: gmm.Mixture
  centres_CxKxD: np.ndarray
  stds: tuple[float, float, float] | None  # (s_N, s_S, s_Q) of the moment release; None: no noise
  budget: accounting.Budget


def _backend_key(backend) -> tuple:
  fields = [(f.name, getattr(backend, f.name)) for f in dataclasses.fields(backend)
            if not isinstance(getattr(backend, f.name), np.ndarray)]
  return (type(backend).__name__, tuple(fields))


_BUDGETS: dict[tuple, accounting.Budget] = {}   # calibration depends on public settings only


def plan_budget(backend: clustering.ClusteringBackend, config: DPGMMConfig, epsilon: float,
                delta: float) -> accounting.Budget:
  """Calibrated noise scales for a run: clustering parts + the moment release (cached)."""
  epsilon, delta = accounting.check_budget(epsilon, delta)
  if isinstance(backend, clustering.KMeansBackend) and not math.isinf(epsilon):
    raise ValueError(f"KMeansBackend is non-private: it needs epsilon=inf, got {epsilon}")
  f = validation.in_range("clustering_fraction", config.clustering_fraction, 0.0, 1.0,
                          low_open=True, high_open=True)
  cache_key = (_backend_key(backend), config.k, f, epsilon, delta)
  if cache_key not in _BUDGETS:
    parts = [accounting.Part("moments", 1.0, accounting.gaussian_event)]
    if config.k > 1:
      parts = backend.parts(f) + [
          accounting.Part("moments", 1.0 - f, accounting.gaussian_event)]
    _BUDGETS[cache_key] = accounting.calibrate_split(parts, epsilon, delta)
  return _BUDGETS[cache_key]


def fit_dp_gmm(key: jax.Array, z_NxD: jax.Array, y_N: jax.Array, num_classes: int,
               epsilon: float, delta: float, radius: float,
               backend: clustering.ClusteringBackend | None = None,
               config: DPGMMConfig = DPGMMConfig()) -> Release:
  """Fits an (epsilon, delta)-DP per-class Gaussian mixture to bounded embeddings.

  Args:
    key: PRNG key; use a fresh one per release.
    z_NxD: [N, D] private embeddings, every row norm <= radius (else ValueError). May be
      row-sharded over the `data` mesh axis.
    y_N: [N] integer labels in [0, num_classes).
    num_classes: C.
    epsilon: total epsilon in (0, inf]; inf adds no noise (use KMeansBackend for clustering).
    delta: total delta in (0, 1).
    radius: public L2 bound R of the embeddings.
    backend: DP clustering back-end (default `LSHCoresetBackend()`).
    config: `DPGMMConfig`.

  Returns:
    A `Release` with the mixture, DP centres, moment noise stds and the spent budget.
  """
  radius = validation.positive("radius", radius)
  num_classes = validation.positive_int("num_classes", num_classes)
  k = validation.positive_int("config.k", config.k)
  validation.one_of("config.cov_type", config.cov_type, gmm.COV_TYPES)
  data.check_bounded("z_NxD", z_NxD, radius)
  if np.ndim(z_NxD) != 2 or np.shape(z_NxD)[0] == 0:
    raise ValueError(f"z_NxD must be a non-empty [N, D] array, got shape {list(np.shape(z_NxD))}"
                     ": a release from no records would be noise only")
  validation.non_negative("config.n_min_sigmas", config.n_min_sigmas)
  z = jnp.asarray(z_NxD)
  y = jnp.asarray(data.check_labels("y_N", y_N, z.shape[0], num_classes))
  backend = clustering.LSHCoresetBackend() if backend is None else backend
  budget = plan_budget(backend, config, epsilon, delta)
  k_cl, k_mom = jax.random.split(key)
  dim = z.shape[1]

  if k == 1:
    centres = np.zeros((num_classes, 1, dim))
  else:
    centres = np.asarray(backend.fit(k_cl, z, y, num_classes, k, radius, budget.scales))
  centres_j = jnp.asarray(centres, z.dtype)
  cell = y * k + clustering.assign(z, y, centres_j)
  stats = gmm.cell_moments(z, cell, centres_j.reshape(-1, dim), num_classes * k,
                           config.cov_type)
  z_eff = budget.scales["moments"]
  stds = (None if z_eff is None else
          gmm.moment_stds(z_eff, radius, config.cov_type, config.moment_weights))
  noisy = gmm.add_moment_noise(k_mom, *stats, stds, config.cov_type)
  n_min = 0.0 if stds is None else config.n_min_sigmas * stds[0]
  mixture = gmm.to_mixture(*noisy, jnp.asarray(centres.reshape(-1, dim)), num_classes,
                           config.cov_type, n_min, config.floor_abs, config.floor_rel,
                           config.shrinkage)
  return Release(mixture, centres, stds, budget)


def synthetic_embeddings(key: jax.Array, z_NxD: jax.Array, y_N: jax.Array, num_classes: int,
                         m: int, epsilon: float, delta: float, radius: float,
                         backend: clustering.ClusteringBackend | None = None,
                         config: DPGMMConfig = DPGMMConfig(), balanced: bool = False,
                         renormalize: bool = True
                         ) -> tuple[jax.Array, jax.Array, accounting.Budget]:
  """(epsilon, delta)-DP labelled synthetic embeddings: (z~ [m, D], y~ [m], spent budget)."""
  k_fit, k_sample = jax.random.split(key)
  rel = fit_dp_gmm(k_fit, z_NxD, y_N, num_classes, epsilon, delta, radius, backend, config)
  z_syn, y_syn = gmm.sample(k_sample, rel.mixture, m, balanced, renormalize)
  return z_syn, y_syn, rel.budget
