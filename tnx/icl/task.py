"""The in-context weight-prediction task of arXiv 2510.03605 (section 2): covariances, prompts,
task mixtures and the (2d+2) x (n+1) embedding.

A prompt holds n examples x_i ~ N(0, Lambda) with noiseless labels y_i = <w, x_i>, where
w ~ N(0, I_d); the model must output w itself. Test prompts draw x ~ N(0, Sigma) with m
examples. Dimension letters: B prompts, N examples per prompt, D = d features, E = 2d + 2
embedding rows, L embedding columns, T task families.

Embedding rows (0-based blocks): [0, d) the features x, d the label y, [d+1, 2d+1) the weight
estimate, 2d+1 a constant. Data column i is (x_i, y_i, 0_d, 0); the query column is
(0_d, 0, w_hat, 1).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation

SYMMETRY_RTOL = 1e-8   # relative asymmetry tolerated in a covariance
PD_RTOL = 1e-12        # eigenvalues below PD_RTOL * max eigenvalue count as zero


def _is_tracer(x: Any) -> bool:
  return not validation.is_concrete(x)


def check_cov(name: str, cov: Any, *, d: int | None = None,
              allow_singular: bool = False) -> np.ndarray:
  """Validates a covariance matrix and returns it as a float64 numpy array.

  Raises ValueError naming `name` unless `cov` is a finite, symmetric [d, d] matrix that is
  positive definite (or positive semi-definite with `allow_singular`). `d`, when given, is the
  required dimension.
  """
  c = np.asarray(cov, dtype=np.float64)
  if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 1:
    raise ValueError(f"{name} must be a square [d, d] matrix, got shape {list(c.shape)}")
  if d is not None and c.shape[0] != d:
    raise ValueError(f"{name} must be [{d}, {d}] to match the other arguments, got "
                     f"{list(c.shape)}")
  if not np.all(np.isfinite(c)):
    raise ValueError(f"{name} must be finite, found non-finite entries")
  scale = max(np.max(np.abs(c)), np.finfo(np.float64).tiny)
  if np.max(np.abs(c - c.T)) > SYMMETRY_RTOL * scale:
    raise ValueError(f"{name} must be symmetric, max |C - C^T| = {np.max(np.abs(c - c.T)):.3g}")
  eig = np.linalg.eigvalsh((c + c.T) / 2)
  floor = PD_RTOL * max(eig[-1], 0.0)
  if allow_singular:
    if eig[0] < -floor or eig[-1] <= 0:
      raise ValueError(f"{name} must be positive semi-definite and non-zero, smallest "
                       f"eigenvalue {eig[0]:.3g}")
  elif eig[0] <= floor:
    raise ValueError(f"{name} must be positive definite, smallest eigenvalue {eig[0]:.3g} "
                     f"(largest {eig[-1]:.3g})")
  return (c + c.T) / 2


def check_cov_if_concrete(name: str, cov: Any, **kw: Any) -> None:
  """`check_cov` outside `jit`; inside a trace the check is skipped (values are unknown)."""
  if not _is_tracer(cov):
    check_cov(name, cov, **kw)


def power_law_spectrum(d: int, alpha: float, *, support: int | None = None,
                       trace: float | None = None) -> np.ndarray:
  """Eigenvalues lambda_j = j^(-alpha) for j = 1..support and 0 for j > support, [d].

  `trace` rescales them to sum to `trace` (None: no rescaling). A larger `alpha` is a heavier
  spectral tail (a smaller lambda_min, a harder task in the paper's sense).
  """
  d = validation.positive_int("d", d)
  support = d if support is None else validation.positive_int("support", support)
  if support > d:
    raise ValueError(f"support must be <= d={d}, got {support}")
  alpha = float(alpha)
  if not np.isfinite(alpha):
    raise ValueError(f"alpha must be finite, got {alpha!r}")
  lam = np.zeros(d)
  lam[:support] = np.arange(1, support + 1, dtype=np.float64) ** (-alpha)
  if trace is not None:
    lam *= validation.positive("trace", trace) / lam.sum()
  return lam


def cov_sqrt(cov: Any, *, allow_singular: bool = False) -> np.ndarray:
  """Symmetric square root C^(1/2) of a validated covariance (float64 numpy)."""
  c = check_cov("cov", cov, allow_singular=allow_singular)
  eig, vec = np.linalg.eigh(c)
  return (vec * np.sqrt(np.clip(eig, 0.0, None))) @ vec.T


class Prompts(NamedTuple):
  """A batch of prompts: x [B, N, D], y [B, N], w [B, D]."""

  x_BxNxD: jax.Array
  y_BxN: jax.Array
  w_BxD: jax.Array


def sample_prompts(key: jax.Array, batch: int, n: int, cov_sqrt_DxD: Any, *,
                   dtype: Any = jnp.float32) -> Prompts:
  """`batch` prompts of `n` examples: w ~ N(0, I), x = C^(1/2) z with z ~ N(0, I), y = x.w.

  Pure (jit/vmap-able); `cov_sqrt_DxD` is a square root of the feature covariance (see
  `cov_sqrt`).
  """
  batch = validation.positive_int("batch", batch)
  n = validation.positive_int("n", n)
  root = jnp.asarray(cov_sqrt_DxD, dtype)
  if root.ndim != 2 or root.shape[0] != root.shape[1]:
    raise ValueError(f"cov_sqrt_DxD must be [d, d], got shape {list(root.shape)}")
  d = root.shape[0]
  kw, kx = jax.random.split(key)
  w_BxD = jax.random.normal(kw, (batch, d), dtype)
  x_BxNxD = jax.random.normal(kx, (batch, n, d), dtype) @ root.T
  y_BxN = jnp.einsum("bnd,bd->bn", x_BxNxD, w_BxD)
  return Prompts(x_BxNxD, y_BxN, w_BxD)


class TaskMixture:
  """Task families ell = 1..T with feature covariances Lambda_ell and probabilities pi_ell.

  Each prompt first draws its family with probability pi_ell, then x ~ N(0, Lambda_ell).
  Family covariances may be singular (a family that uses only some skill directions);
  `probs` must lie on the simplex.
  """

  def __init__(self, covs_TxDxD: Any, probs_T: Any):
    covs = np.asarray(covs_TxDxD, np.float64)
    if covs.ndim != 3:
      raise ValueError(f"covs_TxDxD must be [T, d, d], got shape {list(covs.shape)}")
    self.covs = np.stack([check_cov(f"covs_TxDxD[{t}]", c, allow_singular=True)
                          for t, c in enumerate(covs)])
    self.probs = check_simplex("probs_T", probs_T, len(covs))
    self.roots = np.stack([cov_sqrt(c, allow_singular=True) for c in self.covs])

  @property
  def d(self) -> int:
    return self.covs.shape[1]

  def sample(self, key: jax.Array, batch: int, n: int, *, dtype: Any = jnp.float32
             ) -> tuple[Prompts, jax.Array]:
    """Prompts and their family indices [B] (pure given the mixture)."""
    batch = validation.positive_int("batch", batch)
    n = validation.positive_int("n", n)
    kt, kw, kx = jax.random.split(key, 3)
    task_B = jax.random.choice(kt, len(self.probs), (batch,), p=jnp.asarray(self.probs))
    roots = jnp.asarray(self.roots, dtype)[task_B]
    w_BxD = jax.random.normal(kw, (batch, self.d), dtype)
    z = jax.random.normal(kx, (batch, n, self.d), dtype)
    x_BxNxD = jnp.einsum("bne,bde->bnd", z, roots)
    y_BxN = jnp.einsum("bnd,bd->bn", x_BxNxD, w_BxD)
    return Prompts(x_BxNxD, y_BxN, w_BxD), task_B


def check_simplex(name: str, p: Any, size: int | None = None, *, atol: float = 1e-9
                  ) -> np.ndarray:
  """Validates a probability vector (entries >= 0 summing to 1)."""
  a = np.asarray(p, np.float64)
  if a.ndim != 1 or (size is not None and a.shape[0] != size):
    want = f"[{size}]" if size is not None else "1-D"
    raise ValueError(f"{name} must be {want}, got shape {list(a.shape)}")
  validation.array_in_range(name, a, 0.0, 1.0)
  if abs(a.sum() - 1.0) > atol:
    raise ValueError(f"{name} must sum to 1, got {a.sum():.12g}")
  return a


def embed(x_BxNxD: jax.Array, y_BxN: jax.Array, w0_BxD: jax.Array) -> jax.Array:
  """The embedding Z [B, 2d+2, N+1]: N data columns then the query column (0, 0, w0, 1)."""
  b, n, d = x_BxNxD.shape
  if y_BxN.shape != (b, n):
    raise ValueError(f"y_BxN must be [{b}, {n}] to match x_BxNxD, got {list(y_BxN.shape)}")
  if w0_BxD.shape != (b, d):
    raise ValueError(f"w0_BxD must be [{b}, {d}] to match x_BxNxD, got {list(w0_BxD.shape)}")
  dt = jnp.result_type(x_BxNxD, y_BxN, w0_BxD)
  data_BxNxE = jnp.concatenate(
      [x_BxNxD, y_BxN[..., None], jnp.zeros((b, n, d + 1), dt)], -1).astype(dt)
  query_BxE = jnp.concatenate(
      [jnp.zeros((b, d + 1), dt), w0_BxD.astype(dt), jnp.ones((b, 1), dt)], -1)
  return jnp.concatenate([data_BxNxE, query_BxE[:, None]], 1).transpose(0, 2, 1)


def estimate_rows(d: int) -> slice:
  """Rows of the embedding holding the weight estimate."""
  return slice(d + 1, 2 * d + 1)
