"""Feature maps phi applied to keys and queries before the memory (ATLAS section 3).

Polynomial map of degree p with Taylor coefficients a_0..a_p (learnable in the mixers,
initialized to 1/i!): the features of degree i are scaled so that

    <phi(q; side="query"), phi(k; side="key")> = sum_i a_i (q . k)^i        (exact for kron/sym)

Key-side blocks carry sign(a_i) sqrt|a_i|, query-side blocks sqrt|a_i| (so negative a_i are
allowed and, for a_i >= 0, both sides use the same map). Modes:
  * "kron":   block i = vec(x^{(x)i}), dimension sum_i d^i (the reference definition);
  * "sym":    block i = sqrt(i!/beta!) x^beta over monomials |beta| = i, dimension C(d+p, p)
              (same kernel, no repeated monomials);
  * "sketch": block 1 = x, block i >= 2 = prod_{j<=i} (x R_ij) / sqrt(m) with fixed Gaussian
              R_ij [d, m]: an unbiased random-feature estimate of (q.k)^i, dimension 1+d+(p-1)m.
"identity" is phi(x) = x (equivalently a = (0, 1, 0, ...) up to the constant block). The
exponential map phi* (<phi*(q), phi*(k)> = exp(q.k)) is infinite dimensional: its degree-p
truncation is the polynomial map with a_i = 1/i! (`taylor_coefficients`), and the exact kernel
is used through the kernel trick (`tnx.memory.atlas.kernel`). Which variant, degree and width
the paper used is not stated; these are choices exposed as config fields.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation

FEATURE_MODES = ("kron", "sym", "sketch")
SIDES = ("key", "query")


def taylor_coefficients(degree: int, dtype=jnp.float32) -> jax.Array:
  """a_i = 1 / i! for i = 0..degree: the truncated exponential kernel."""
  validation.non_negative_int("degree", degree)
  return jnp.asarray([1.0 / math.factorial(i) for i in range(degree + 1)], dtype)


def feature_dim(dim: int, degree: int, mode: str = "kron", sketch_dim: int = 64) -> int:
  """Output width D of `poly_features` for inputs of width `dim`."""
  validation.positive_int("dim", dim)
  validation.non_negative_int("degree", degree)
  validation.one_of("mode", mode, FEATURE_MODES)
  if mode == "kron":
    return sum(dim**i for i in range(degree + 1))
  if mode == "sym":
    return math.comb(dim + degree, degree)
  return 1 + (dim if degree >= 1 else 0) + max(degree - 1, 0) * sketch_dim


def sketch_matrices(key: jax.Array, dim: int, degree: int, sketch_dim: int,
                    dtype=jnp.float32) -> jax.Array:
  """Fixed Gaussian projections R [max(p-1,0), p, d, m] for the "sketch" mode (block i >= 2
  uses R[i-2, :i])."""
  n = max(degree - 1, 0)
  return jax.random.normal(key, (n, max(degree, 1), dim, sketch_dim), dtype)


def _sym_block(x: jax.Array, i: int) -> jax.Array:
  d = x.shape[-1]
  combos = list(itertools.combinations_with_replacement(range(d), i))
  idx = np.asarray(combos, np.int32)
  mult = np.asarray([math.factorial(i) / np.prod([math.factorial(c.count(j)) for j in set(c)])
                     for c in combos])
  return jnp.prod(x[..., idx], axis=-1) * jnp.sqrt(jnp.asarray(mult, x.dtype))


def poly_features(x: jax.Array, coeffs: jax.Array, *, side: str = "key", mode: str = "kron",
                  sketch: jax.Array | None = None) -> jax.Array:
  """Polynomial features of x [..., d] with coefficients coeffs [p + 1] (p = degree).

  Returns [..., feature_dim(d, p, mode)]. `sketch` (from `sketch_matrices`) is required for
  mode "sketch" with p >= 2.
  """
  validation.one_of("side", side, SIDES)
  validation.one_of("mode", mode, FEATURE_MODES)
  if coeffs.ndim != 1:
    raise ValueError(f"coeffs must have shape [degree + 1], got {list(coeffs.shape)}")
  degree = coeffs.shape[0] - 1
  coeffs = coeffs.astype(x.dtype)
  root = jnp.sqrt(jnp.abs(coeffs))
  scale = jnp.sign(coeffs) * root if side == "key" else root
  blocks = [jnp.ones(x.shape[:-1] + (1,), x.dtype)]
  prev = blocks[0]
  for i in range(1, degree + 1):
    if mode == "kron":
      prev = (prev[..., :, None] * x[..., None, :]).reshape(x.shape[:-1] + (-1,))
      blocks.append(prev)
    elif mode == "sym":
      blocks.append(_sym_block(x, i))
    elif i == 1:
      blocks.append(x)
    else:
      if sketch is None:
        raise ValueError("sketch must be given (see sketch_matrices) for mode='sketch'")
      r = sketch[i - 2, :i].astype(x.dtype)
      proj = jnp.einsum("...d,jdm->...jm", x, r)
      blocks.append(jnp.prod(proj, axis=-2) / jnp.sqrt(jnp.asarray(r.shape[-1], x.dtype)))
  return jnp.concatenate([s * b for s, b in zip(scale, blocks)], axis=-1)


def poly_kernel(x: jax.Array, y: jax.Array, coeffs: jax.Array) -> jax.Array:
  """sum_i a_i (x_n . y_m)^i for x [N, d], y [M, d] -> [N, M]."""
  dots = x @ y.T
  return sum(coeffs[i] * dots**i for i in range(coeffs.shape[0]))


def exp_kernel(x: jax.Array, y: jax.Array) -> jax.Array:
  """exp(x_n . y_m) for x [N, d], y [M, d] -> [N, M]: the kernel of phi*."""
  return jnp.exp(x @ y.T)
