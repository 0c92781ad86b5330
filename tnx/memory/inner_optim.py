"""Inner-loop optimizers of the memory primitive: gradient descent, momentum, and the
Muon-style update (momentum followed by Newton-Schulz orthogonalization, ATLAS arXiv
2505.23735 Eq. 32-33).

Conventions (row convention, W [din, dout], u_t the (windowed) gradient of token t, a_t the
retention, b_t the momentum decay, lr_t the step size):
  gd:        W_t = a_t W_{t-1} - lr_t u_t
  momentum:  S_t = b_t S_{t-1} + u_t,          W_t = a_t W_{t-1} - lr_t S_t
  muon:      S_t = b_t S_{t-1} + u_t,          W_t = a_t W_{t-1} - lr_t NS_k(S_t)
With `step_placement="inside"` the step size moves into the momentum (S_t = b_t S_{t-1} +
lr_t u_t, W_t = a_t W_{t-1} - S_t or - NS_k(S_t)): Titans' convention (Titans Eq. 9-10),
and, because NS normalizes its input, it leaves lr only relative weights under Muon.
"outside" is ATLAS Eq. 32 (the step size sets the update magnitude).

Newton-Schulz (Muon write-up, quintic): X_0 = G / ||G||_F (0 for G = 0); repeat k times
A = X X^T, X <- a X + (b A + c A A) X, working on the wide orientation (rows <= cols). Defaults
(a, b, c) = (3.4445, -4.7750, 2.0315), k = 5: on Gaussian matrices the output
singular values lie in about [0.68, 1.2] (not exactly 1). The cubic (1.5, -0.5, 0) converges
to the polar factor U V^T and serves as the exact oracle. Computation is promoted to at least
float32 (bf16/fp16 inputs), float64 inputs stay float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tnx import validation

QUINTIC = (3.4445, -4.7750, 2.0315)
CUBIC = (1.5, -0.5, 0.0)
OPTIMIZERS = ("gd", "momentum", "muon")
STEP_PLACEMENTS = ("outside", "inside")


def newton_schulz(g: jax.Array, steps: int = 5, coeffs: tuple[float, float, float] = QUINTIC
                  ) -> jax.Array:
  """Approximate orthogonalization of the last two axes of g [..., m, n].

  A zero matrix maps to zero. The result has g's dtype. `steps=0` returns g / ||g||_F.
  """
  validation.non_negative_int("steps", steps)
  if g.ndim < 2:
    raise ValueError(f"g must have at least 2 dims [..., m, n], got shape {list(g.shape)}")
  a, b, c = (float(x) for x in coeffs)
  work = jnp.promote_types(g.dtype, jnp.float32)
  x = g.astype(work)
  tall = x.shape[-2] > x.shape[-1]
  if tall:
    x = jnp.swapaxes(x, -1, -2)
  # Scale by the largest entry first, then by the Frobenius norm: the squares of a tiny
  # (1e-22) or huge matrix would under/overflow the norm and NS would then blow up a matrix
  # that is not normalized. NS is scale invariant, so the first scale is a constant for the
  # gradient (exact: x . grad = 0), which keeps 1/peak^2 (inf for a tiny peak) out of the
  # backward pass; the selects keep a zero matrix (zero output) free of 0/0.
  peak = jnp.max(jnp.abs(x), axis=(-2, -1), keepdims=True)
  nonzero = peak > 0
  x = x * jax.lax.stop_gradient(1.0 / jnp.where(nonzero, peak, 1.0))
  sumsq = jnp.sum(jnp.square(x), axis=(-2, -1), keepdims=True)  # >= 1 where nonzero
  x = x / jnp.sqrt(jnp.where(nonzero, sumsq, 1.0))
  hi = jax.lax.Precision.HIGHEST
  for _ in range(steps):
    gram = jnp.matmul(x, jnp.swapaxes(x, -1, -2), precision=hi)
    poly = b * gram + c * jnp.matmul(gram, gram, precision=hi)
    x = a * x + jnp.matmul(poly, x, precision=hi)
  if tall:
    x = jnp.swapaxes(x, -1, -2)
  return x.astype(g.dtype)


def polar_factor(g: jax.Array) -> jax.Array:
  """Exact nearest semi-orthogonal matrix U V^T of g [..., m, n] (SVD), the NS limit."""
  u, _, vt = jnp.linalg.svd(g, full_matrices=False)
  return u @ vt


def momentum_step(s: jax.Array, u: jax.Array, decay, lr, placement: str) -> jax.Array:
  """S_t from S_{t-1} (see module docstring)."""
  return decay * s + (lr * u if placement == "inside" else u)


def weight_step(w: jax.Array, direction: jax.Array, retention, lr, placement: str,
                has_momentum: bool) -> jax.Array:
  """W_t = a W_{t-1} - lr' direction, lr' = 1 when lr already sits inside S."""
  scale = 1.0 if (placement == "inside" and has_momentum) else lr
  return retention * w - scale * direction
