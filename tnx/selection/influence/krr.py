"""Kernel ridge propagation of landmark statistics to the whole pool.

Influence Distillation (arXiv 2505.19051, Sec. 4) computes exact influences only on l landmark
samples and expresses every sample through the landmarks, G_S ~ C G_L, with C from kernel ridge
regression on per-sample embeddings E:

  C = K(E, E_L) (K(E_L, E_L) + delta * mean(diag K(E_L, E_L)) I)^{-1},   p_hat = C p_L.

Kernels: 'rbf', k(x, y) = exp(-||x - y||^2 / (2 sigma^2)) with sigma by default the median
pairwise distance among (at most 1000 sampled) landmark embeddings (the authors' public code);
'linear', k(x, y) = x^T y (linear ridge on the embeddings). The damping delta is relative to the
mean kernel diagonal so that it is scale free. The regularized landmark Gram matrix is factored
once by Cholesky; the pool side is processed in row chunks, so memory is O(chunk * l) and a
sharded E (rows over the mesh's `data` axis) stays sharded -- only E_L and the l x m
coefficients are replicated.

Exactness as delta -> 0: with every sample a landmark, the RBF kernel gives p_hat -> p (its Gram
matrix of distinct points is positive definite). The linear kernel reproduces the part of p
that is linear in the embeddings (the projection onto span of E's columns), so it is exact
whenever p = E beta for some beta and the landmark embeddings span the pool's -- in particular
with every sample a landmark only if p lies in that span (always when E has full row rank).

Dimension letters: N pool, L landmarks, E embedding width, M target columns.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_factor, cho_solve
from jax.sharding import Mesh

from tnx import validation
from tnx.selection.influence.grads import example_mapper

KERNELS = ("rbf", "linear")


def sq_dists(x_AxE: jax.Array, y_BxE: jax.Array) -> jax.Array:
  """Pairwise squared Euclidean distances [A, B] (clipped at 0 against rounding)."""
  xx = jnp.sum(x_AxE * x_AxE, axis=-1)[:, None]
  yy = jnp.sum(y_BxE * y_BxE, axis=-1)[None, :]
  return jnp.maximum(xx + yy - 2.0 * x_AxE @ y_BxE.T, 0.0)


def kernel_matrix(kind: str, x_AxE: jax.Array, y_BxE: jax.Array, sigma: float | jax.Array = 1.0
                  ) -> jax.Array:
  """K[A, B] for kernel `kind` ('rbf' with width sigma, or 'linear')."""
  if kind == "linear":
    return x_AxE @ y_BxE.T
  return jnp.exp(-sq_dists(x_AxE, y_BxE) / (2.0 * sigma * sigma))


def median_heuristic(e_LxE: jax.Array, *, max_points: int = 1000, seed: int = 0) -> jax.Array:
  """Median pairwise distance among at most `max_points` sampled rows (distinct pairs)."""
  n = e_LxE.shape[0]
  if n < 2:
    raise ValueError(f"the median heuristic needs at least 2 landmarks, got {n}; pass sigma")
  if n > max_points:
    rows = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    e_LxE = jnp.take(e_LxE, jnp.asarray(rows), axis=0)
  return _median_distance(e_LxE)


@jax.jit
def _median_distance(e_LxE):
  n = e_LxE.shape[0]
  iu = np.triu_indices(n, 1)
  return jnp.median(jnp.sqrt(sq_dists(e_LxE, e_LxE))[iu])


@dataclasses.dataclass(frozen=True)
class KRRFit:
  """A fitted landmark regression: factor of the damped Gram matrix and the landmark rows."""

  kernel: str
  sigma: jax.Array
  landmarks_LxE: jax.Array
  chol: tuple[jax.Array, bool]
  ridge: jax.Array  # the absolute damping delta * mean(diag K_LL)

  def coefficients(self, e_NxE: jax.Array) -> jax.Array:
    """C[N, L] = K(E, E_L) (K_LL + ridge I)^{-1} (small pools / tests; O(N L) memory)."""
    k_nl = kernel_matrix(self.kernel, e_NxE, self.landmarks_LxE, self.sigma)
    return cho_solve(self.chol, k_nl.T).T

  def solve(self, y_LxM: jax.Array) -> jax.Array:
    """(K_LL + ridge I)^{-1} y."""
    return cho_solve(self.chol, y_LxM)


def fit_krr(landmarks_LxE: jax.Array, *, kernel: str = "rbf", damp: float = 1e-2,
            sigma: float | None = None, seed: int = 0) -> KRRFit:
  """Cholesky factor of K_LL + damp * mean(diag K_LL) * I.

  Args:
    landmarks_LxE: landmark embeddings.
    kernel: 'rbf' or 'linear'.
    damp: relative damping delta > 0.
    sigma: RBF width > 0; None = median heuristic.
  """
  validation.one_of("kernel", kernel, KERNELS)
  validation.positive("damp", damp)
  if sigma is not None:
    validation.positive("sigma", sigma)
  e = jnp.asarray(landmarks_LxE)
  if kernel == "rbf":
    s = jnp.asarray(sigma if sigma is not None else median_heuristic(e, seed=seed), e.dtype)
    if not bool(s > 0):
      raise ValueError("sigma from the median heuristic is 0 (landmark embeddings coincide); "
                       "pass sigma > 0")
  else:
    s = jnp.asarray(1.0, e.dtype)
  factor, ridge = _factor(kernel, e, s, jnp.asarray(damp, e.dtype))
  if not bool(ridge > 0):
    raise ValueError("the landmark kernel diagonal is 0 (all-zero embeddings with the linear "
                     "kernel); the ridge would vanish")
  return KRRFit(kernel, s, e, (factor, True), ridge)


@functools.partial(jax.jit, static_argnums=0)
def _factor(kind, e_LxE, sigma, damp):
  k_ll = kernel_matrix(kind, e_LxE, e_LxE, sigma)
  ridge = damp * jnp.mean(jnp.diag(k_ll))
  factor, _ = cho_factor(k_ll + ridge * jnp.eye(e_LxE.shape[0], dtype=e_LxE.dtype), lower=True)
  return factor, ridge


def propagate(fit: KRRFit, e_NxE: jax.Array, y_LxM: jax.Array, *, chunk_size: int = 4096,
              mesh: Mesh | None = None) -> jax.Array:
  """p_hat[N, M] = K(E, E_L) (K_LL + ridge I)^{-1} y_L, in row chunks of the pool.

  `y_LxM` may be a vector [L] (then the result is [N]). With a `mesh`, the pool rows are split
  over its `data` axis and each device propagates its own rows.
  """
  validation.positive_int("chunk_size", chunk_size)
  vec = y_LxM.ndim == 1
  alpha = fit.solve(y_LxM[:, None] if vec else y_LxM)
  out = _row_mapper(fit.kernel, chunk_size, mesh)((fit.landmarks_LxE, fit.sigma, alpha), e_NxE)
  return out[:, 0] if vec else out


@functools.lru_cache(maxsize=32)
def _row_mapper(kind: str, chunk_size: int, mesh: Mesh | None):
  def row(consts, e_E):
    e_LxE, sigma, alpha_LxM = consts
    return kernel_matrix(kind, e_E[None], e_LxE, sigma)[0] @ alpha_LxM
  return example_mapper(row, chunk_size=chunk_size, mesh=mesh)


def krr_propagate(e_NxE: jax.Array, landmark_idx: jax.Array, y_LxM: jax.Array, *,
                  kernel: str = "rbf", damp: float = 1e-2, sigma: float | None = None,
                  chunk_size: int = 4096, seed: int = 0, mesh: Mesh | None = None
                  ) -> tuple[jax.Array, KRRFit]:
  """Fits on the landmark rows of E and propagates `y_LxM` to all N rows; (p_hat, fit)."""
  e_LxE = jnp.take(e_NxE, jnp.asarray(landmark_idx), axis=0)
  fit = fit_krr(e_LxE, kernel=kernel, damp=damp, sigma=sigma, seed=seed)
  return propagate(fit, e_NxE, y_LxM, chunk_size=chunk_size, mesh=mesh), fit
