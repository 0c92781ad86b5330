"""One-layer linear self-attention (LSA) for in-context weight prediction (arXiv 2510.03605,
section 3) and its closed-form trained optimum (Theorem 3.1).

    f(Z) = Z + (1 / count) V Z (Z^T W Z),      V, W in R^{E x E},  E = 2d + 2,

with no softmax, MLP or normalisation; `count` is the number of data columns of the prompt
(n in training, m on a test prompt). The prediction is the estimate block of the last column.

Sparse structure (kept by gradient flow from a sparse start): V is non-zero only in the block
(estimate rows, feature columns) = V~ [d, d]; W only in the block (feature rows, estimate
columns) = c I and at (label row, constant column) = -c. Then the query column maps as
w_hat -> w_hat + c V~ S (w_hat - w), S = X X^T / count, and the optimum is c V~ = -Gamma^{-1}.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from tnx import validation
from tnx.icl import theory


class LSAParams(NamedTuple):
  """Full LSA parameters, v_ExE and w_ExE (E = 2d + 2)."""

  v_ExE: jax.Array
  w_ExE: jax.Array


def dim_of(params: LSAParams) -> int:
  """d from E = 2d + 2."""
  e = params.v_ExE.shape[-1]
  if params.v_ExE.shape != (e, e) or params.w_ExE.shape != (e, e) or e < 4 or e % 2:
    raise ValueError(f"LSA params must be two [2d+2, 2d+2] matrices, got "
                     f"{list(params.v_ExE.shape)} and {list(params.w_ExE.shape)}")
  return (e - 2) // 2


def sparse_params(v_tilde_DxD: Any, c: float = 1.0, *, dtype: Any = jnp.float64
                  ) -> LSAParams:
  """Embeds V~ and the scale c into the sparse (V, W) of the module docstring."""
  v_tilde = jnp.asarray(v_tilde_DxD, dtype)
  if v_tilde.ndim != 2 or v_tilde.shape[0] != v_tilde.shape[1]:
    raise ValueError(f"v_tilde_DxD must be [d, d], got shape {list(v_tilde.shape)}")
  c = validation.positive("c", c) if validation.is_concrete(c) else c
  d = v_tilde.shape[0]
  e = 2 * d + 2
  v = jnp.zeros((e, e), dtype).at[d + 1:2 * d + 1, :d].set(v_tilde)
  w = jnp.zeros((e, e), dtype).at[:d, d + 1:2 * d + 1].set(c * jnp.eye(d, dtype=dtype))
  w = w.at[d, 2 * d + 1].set(-c)
  return LSAParams(v, w)


def optimal_params(lam: Any, n: Any, c: float = 1.0, *, dtype: Any = jnp.float64
                   ) -> LSAParams:
  """The trained optimum of Theorem 3.1: V~* = -Gamma^{-1} / c (n may be math.inf)."""
  return sparse_params(-theory.optimum_preconditioner(lam, n) / c, c, dtype=dtype)


def preconditioner(params: LSAParams) -> jax.Array:
  """P = -V~ c for sparse params (the step is w_hat - P S (w_hat - w)); [d, d]."""
  d = dim_of(params)
  c = -params.w_ExE[d, 2 * d + 1]
  return -params.v_ExE[d + 1:2 * d + 1, :d] * c


def forward(params: LSAParams, z_ExL: jax.Array, count: Any,
            mask_L: jax.Array | None = None) -> jax.Array:
  """f(Z) for every column, the naive order: O(E^2 L + E L^2) per prompt, [E, L].

  Columns with mask_L False are excluded from the attention sums (selected out with
  jnp.where); the output at those columns is not meaningful.
  """
  z_att = z_ExL if mask_L is None else jnp.where(mask_L[None, :], z_ExL, 0)
  scores_LxL = z_att.T @ (params.w_ExE @ z_ExL)
  return z_ExL + params.v_ExE @ (z_att @ scores_LxL) / count


def column(params: LSAParams, z_ExL: jax.Array, j: Any, count: Any,
           mask_L: jax.Array | None = None) -> jax.Array:
  """f(Z)[:, j] evaluated right to left, V (Z (Z^T (W z_j))): O(E^2 + E L) per prompt, [E]."""
  z_att = z_ExL if mask_L is None else jnp.where(mask_L[None, :], z_ExL, 0)
  z_j = jax.lax.dynamic_index_in_dim(z_ExL, j, axis=1, keepdims=False)
  return z_j + params.v_ExE @ (z_att @ (z_att.T @ (params.w_ExE @ z_j))) / count


def reduced_step(w_hat_D: jax.Array, s_DxD: jax.Array, w_D: jax.Array, p_DxD: jax.Array
                 ) -> jax.Array:
  """The d x d recursion the sparse LSA implements (Prop. 3.2): w_hat - P S (w_hat - w)."""
  return w_hat_D - p_DxD @ (s_DxD @ (w_hat_D - w_D))


def random_params(key: jax.Array, d: int, scale: float = 0.1, *, dtype: Any = jnp.float64
                  ) -> LSAParams:
  """Dense Gaussian (V, W) with std `scale` (for tests of the general, non-sparse forms)."""
  d = validation.positive_int("d", d)
  kv, kw = jax.random.split(key)
  e = 2 * d + 2
  return LSAParams(scale * jax.random.normal(kv, (e, e), dtype),
                   scale * jax.random.normal(kw, (e, e), dtype))

