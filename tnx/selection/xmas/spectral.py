"""Spectral alignment scores and trajectory stability (arXiv 2510.01454, section 4).

s(X) = sum of the K largest singular values of the cross-modal block X (the Ky Fan K-norm:
invariant to transposition and to row/column permutations, unchanged by zero rows, and
Lipschitz: |s(X) - s(Y)| <= sqrt(K) ||X - Y||_F). The singular values are exact
(`jnp.linalg.svd`, blocks are small); the public code's randomized rank-K SVD is not used.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def top_singular_values(x_RxC: jax.Array, k: int) -> jax.Array:
  """The `k` largest singular values of x, descending: [k] (zeros past the rank)."""
  if k > min(x_RxC.shape[-2:]):
    raise ValueError(f"top_k = {k} exceeds min(rows, cols) = {min(x_RxC.shape[-2:])} of the "
                     "cross-modal block")
  ct = jnp.promote_types(x_RxC.dtype, jnp.float32)
  return jnp.linalg.svd(x_RxC.astype(ct), compute_uv=False)[..., :k]


def topk_singular_sum(x_RxC: jax.Array, k: int) -> jax.Array:
  """s(X) = sum of the `k` largest singular values."""
  return jnp.sum(top_singular_values(x_RxC, k), axis=-1)


def stability(m_NxT: np.ndarray) -> np.ndarray:
  """Total variation of every trajectory: TV_i = sum_j |M[i, j] - M[i, j-1]| ([N]; 0 for a
  single checkpoint). Lower is more stable."""
  m = np.asarray(m_NxT, np.float64)
  if m.ndim != 2:
    raise ValueError(f"trajectories must be [N, T+1], got shape {list(m.shape)}")
  return np.sum(np.abs(np.diff(m, axis=1)), axis=1)
