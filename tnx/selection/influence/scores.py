"""First- and second-order influence of source samples on the target loss after one step.

With the next step affine in the weighted source gradient g(w) = (1/n) G_S^T w,
theta' = theta - lr (b + a * g(w)) (tnx.selection.influence.optimizer; gradient descent is
a = 1, b = 0), a second-order Taylor expansion of the target loss L_T around theta gives
(Influence Distillation, arXiv 2505.19051, Sec. 3):

  L_T(theta') - L_T(theta) ~ -lr g_T^T d + (lr^2 / 2) d^T H_T d,   d = b + a * g(w)
                           = const + (lr / n) [ -p^T w + (lr / 2) w^T Q w ],
  p = G~ (g_T - lr H_T b),     Q = (1/n) G~ H_T G~^T,     G~ = G_S diag(a),

with g_T, H_T the target gradient and Hessian. First order keeps p = G~ g_T and drops Q: every
source gradient is preconditioned by a, the target gradient is left raw. All vectors live in
the flattened parameter subset (grads.ParamSubset); H_T enters only through Hessian-vector
products, so no Hessian is formed.

Dimension letters: N sources (or landmarks), P subset size, M targets.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

HVP = Callable[[jax.Array], jax.Array]  # v_P -> H_T v_P


def first_order_scores(g_NxP: jax.Array, target_P: jax.Array) -> jax.Array:
  """p = G~ g_T [N] (rows of g_NxP already preconditioned)."""
  return g_NxP @ target_P


def second_order_target(target_P: jax.Array, hvp: HVP, b_P: jax.Array, lr: float) -> jax.Array:
  """u = g_T - lr H_T b, so that the second-order p = G~ u (u = g_T when b = 0)."""
  return target_P - lr * hvp(b_P)


def interaction_matrix(g_NxP: jax.Array, hvp: HVP, n_total: int) -> jax.Array:
  """Q = (1/n) G~ H_T G~^T [N, N] by N Hessian-vector products (vmapped)."""
  hg_NxP = jax.vmap(hvp)(g_NxP)
  q = g_NxP @ hg_NxP.T / n_total
  return 0.5 * (q + q.T)  # symmetric up to rounding


def predicted_change(target_P: jax.Array, hvp: HVP | None, direction_P: jax.Array,
                     lr: float) -> jax.Array:
  """Taylor prediction of L_T(theta - lr d) - L_T(theta): first order if hvp is None."""
  first = -lr * jnp.vdot(target_P, direction_P)
  if hvp is None:
    return first
  return first + 0.5 * lr * lr * jnp.vdot(direction_P, hvp(direction_P))


def weighted_direction(g_raw_NxP: jax.Array, w_N: jax.Array, a_P: jax.Array, b_P: jax.Array
                       ) -> jax.Array:
  """d = b + a * (1/n) G_S^T w for raw (unpreconditioned) per-sample gradients."""
  n = g_raw_NxP.shape[0]
  return b_P + a_P * (g_raw_NxP.T @ w_N) / n


def objective(p_N: jax.Array, q_NxN: jax.Array | None, w_N: jax.Array, lr: float
              ) -> jax.Array:
  """f(w) = -p^T w + (lr/2) w^T Q w (the w-dependent part, times n / lr)."""
  val = -jnp.vdot(p_N, w_N)
  if q_NxN is not None:
    val = val + 0.5 * lr * jnp.vdot(w_N, q_NxN @ w_N)
  return val
