"""The Omega rule with a LINEAR memory in an implicit feature space (kernel trick).

With W_0 = 0 every update adds rank-one terms phi(k_i) (x) d_i, so W_t = sum_i phi(k_i) (x)
U_t[i] and every read needs only kernel values K(x, k_i) = <phi(x), phi(k_i)>. This gives the
exact exponential-kernel models of ATLAS section 4 (phi*, K = exp(q . k)), which no finite
feature map can:
  * DeepTransformer (dot loss, c = 1, alpha = eta = 1): y_t = sum_{i<=t} v_i exp(q_t . k_i),
    unnormalized causal softmax attention (Eq. 26, erratum E5);
  * Dot (squared loss): the delta rule in feature space (Eq. 30-31), any window;
  * SWDT (dot loss, window c).
Same chunk semantics as `omega.omega_memory` (anchored gradients, window buffer, gates; GD or
momentum, no Muon: NS does not preserve the kernel structure). Cost O(L^2) like attention, and
the state grows with L, so this path has no constant-size decode.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from tnx import validation
from tnx.memory.atlas import features, omega
from tnx.memory.atlas import memory as amem

Kernel = Callable[[jax.Array, jax.Array], jax.Array]
_HI = jax.lax.Precision.HIGHEST


def _single_head(rule: omega.OmegaRule, kernel: Kernel, chunk_size: int, q, k, v, eta, alpha,
                 theta, row, col):
  length, b, c = q.shape[0], chunk_size, rule.window
  n = -(-length // b)
  pad = n * b - length
  end = lambda x, val=0.0: jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1), constant_values=val)
  q, v, eta, row = end(q), end(v), end(eta), end(row)
  alpha, theta = end(alpha, 1.0), end(theta)
  front = lambda x: jnp.pad(end(x), [(c - 1, 0)] + [(0, 0)] * (x.ndim - 1))
  kp, vp, colp = front(k), front(v[:length]), front(col)
  kkk = kernel(kp, kp)
  grad_pred = jax.vmap(jax.grad(amem.resolve_loss(rule.inner_loss)))
  u_mat = jnp.zeros((kp.shape[0], v.shape[-1]), v.dtype)
  s_mat = jnp.zeros_like(u_mat)
  theta_on = rule.has_momentum
  outs = []
  for ci in range(n):
    s = ci * b
    ext = slice(s, s + b + c - 1)
    tok = slice(s, s + b)
    d = grad_pred(jnp.dot(kkk[ext], u_mat, precision=_HI), vp[ext])
    gam = omega.window_matrix(row[tok], colp[ext], c)
    coef, a_vec, m_vec, coef_s, p_vec = omega.chunk_coefficients(
        gam, eta[tok], alpha[tok], theta[tok] if theta_on else None, rule.step_placement)
    kq = kernel(q[tok], kp)
    y = a_vec[:, None] * jnp.dot(kq, u_mat, precision=_HI)
    y = y - jnp.dot(coef * kq[:, ext], d, precision=_HI)
    u_mat = a_vec[-1] * u_mat
    if theta_on:
      y = y - m_vec[:, None] * jnp.dot(kq, s_mat, precision=_HI)
      u_mat = u_mat - m_vec[-1] * s_mat
      s_mat = (p_vec[-1] * s_mat).at[ext].add(coef_s[-1][:, None] * d)
    u_mat = u_mat.at[ext].add(-coef[-1][:, None] * d)
    outs.append(y)
  return jnp.concatenate(outs)[:length]


def kernel_memory(rule: omega.OmegaRule, q: jax.Array, k: jax.Array, v: jax.Array,
                  eta: jax.Array, *, chunk_size: int, kernel: Kernel = features.exp_kernel,
                  alpha: jax.Array | None = None, theta: jax.Array | None = None,
                  gamma: jax.Array | None = None) -> jax.Array:
  """Linear-memory Omega rule from W_0 = 0 with feature map given by its kernel.

  Args: q, k [B, H, L, d]; v [B, H, L, V]; gates as in `omega.omega_memory`; kernel(x [N, d],
  y [M, d]) -> [N, M] (default exp(x . y), the exact phi*).
  Returns: o [B, H, L, V].
  """
  chunk_size = validation.positive_int("chunk_size", chunk_size)
  if rule.optimizer == "muon":
    raise ValueError("optimizer='muon' has no kernel form (Newton-Schulz breaks the rank "
                     "structure); use 'gd' or 'momentum' with the exact exponential kernel")
  if q.ndim != 4:
    raise ValueError(f"q must have shape [B, H, L, d], got {list(q.shape)}")
  validation.shape("k", k, q.shape)
  validation.shape("v", v, q.shape[:3] + (None,))
  validation.shape("eta", eta, q.shape[:3])
  alpha, theta, row, col = omega._gates(eta, alpha, theta, gamma, rule.window)
  fn = lambda *xs: _single_head(rule, kernel, chunk_size, *xs)
  return jax.vmap(jax.vmap(fn))(q, k, v, eta, alpha, theta, row, col)
