"""The Omega rule with a LINEAR memory in an implicit feature space (kernel trick).

With W_0 = 0 every update adds rank-one terms phi(k_i) (x) d_i, so W_t = sum_i phi(k_i) (x)
U_t[i] and every read needs only kernel values K(x, k_i) = <phi(x), phi(k_i)>. This gives the
exact exponential-kernel models of ATLAS section 4 (phi*, K = exp(q . k)), which no finite
feature map can:
  * DeepTransformer (dot loss, c = 1, retention and lr 1): y_t = sum_{i<=t} v_i exp(q_t . k_i),
    unnormalized causal softmax attention (Eq. 26, without the normalization the paper's
    text mentions);
  * Dot (squared loss): the delta rule in feature space (Eq. 30-31), any window;
  * SWDT (dot loss, window c).
Same chunk semantics as `tnx.memory.chunked.chunked_memory` with a linear bias-free memory
(anchored gradients, window buffer, gates; GD or momentum, no Muon: NS does not preserve the
kernel structure). Cost O(L^2) like attention, and
the state grows with L, so this path has no constant-size decode.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from tnx import validation
from tnx.memory import chunked, gates
from tnx.memory import model as mm
from tnx.memory.atlas import features

Kernel = Callable[[jax.Array, jax.Array], jax.Array]
_HI = jax.lax.Precision.HIGHEST


def _single_head(rule: chunked.UpdateRule, kernel: Kernel, chunk_size: int, q, k, v, lr,
                 log_mom, log_ret, row, col):
  length, b, c = q.shape[0], chunk_size, rule.window
  n = -(-length // b)
  pad = n * b - length
  end = lambda x: None if x is None else jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
  q, v, lr, row, log_ret, log_mom = end(q), end(v), end(lr), end(row), end(log_ret), end(log_mom)
  at = lambda x, sl: None if x is None else x[sl]
  front = lambda x: jnp.pad(end(x), [(c - 1, 0)] + [(0, 0)] * (x.ndim - 1))
  kp, vp, colp = front(k), front(v[:length]), front(col)
  kkk = kernel(kp, kp)
  grad_pred = jax.vmap(jax.grad(mm.resolve_loss(rule.inner_loss)))
  u_mat = jnp.zeros((kp.shape[0], v.shape[-1]), v.dtype)
  s_mat = jnp.zeros_like(u_mat)
  momentum = rule.has_momentum
  outs = []
  for ci in range(n):
    s = ci * b
    ext = slice(s, s + b + c - 1)
    tok = slice(s, s + b)
    d = grad_pred(jnp.dot(kkk[ext], u_mat, precision=_HI), vp[ext])
    gam = gates.window_matrix(row[tok], colp[ext], c)
    co = gates.chunk_coefficients(lr[tok], at(log_ret, tok), at(log_mom, tok),
                                  momentum=momentum, gam=gam, placement=rule.step_placement)
    kq = kernel(q[tok], kp)
    y = co.a_vec[:, None] * jnp.dot(kq, u_mat, precision=_HI)
    y = y - jnp.dot(co.coef * kq[:, ext], d, precision=_HI)
    u_mat = co.a_vec[-1] * u_mat
    if momentum:
      y = y - co.m_vec[:, None] * jnp.dot(kq, s_mat, precision=_HI)
      u_mat = u_mat - co.m_vec[-1] * s_mat
      s_mat = (co.p_vec[-1] * s_mat).at[ext].add(co.coef_s[-1][:, None] * d)
    u_mat = u_mat.at[ext].add(-co.coef[-1][:, None] * d)
    outs.append(y)
  return jnp.concatenate(outs)[:length]


def kernel_memory(rule: chunked.UpdateRule, q: jax.Array, k: jax.Array, v: jax.Array,
                  lr: jax.Array, *, chunk_size: int, kernel: Kernel = features.exp_kernel,
                  log_retention: jax.Array | None = None,
                  log_mom_decay: jax.Array | None = None,
                  window_gate: jax.Array | None = None) -> jax.Array:
  """Linear-memory Omega rule from W_0 = 0 with feature map given by its kernel.

  Args: q, k [B, H, L, d]; v [B, H, L, V]; lr and gates as in `chunked.chunked_memory`;
  kernel(x [N, d], y [M, d]) -> [N, M] (default exp(x . y), the exact phi*).
  Returns: o [B, H, L, V].
  """
  chunk_size = validation.positive_int("chunk_size", chunk_size)
  if rule.optimizer == "muon":
    raise ValueError("optimizer='muon' has no kernel form (Newton-Schulz breaks the rank "
                     "structure); use 'gd' or 'momentum' with the exact exponential kernel")
  if rule.retrieval != "intra_chunk":
    raise ValueError(f"kernel_memory reads after the write (retrieval='intra_chunk'), got "
                     f"{rule.retrieval!r}")
  if q.ndim != 4:
    raise ValueError(f"q must have shape [B, H, L, d], got {list(q.shape)}")
  validation.shape("k", k, q.shape)
  validation.shape("v", v, q.shape[:3] + (None,))
  validation.shape("lr", lr, q.shape[:3])
  lead = q.shape[:3]
  row, col = chunked.window_gates(window_gate, rule.window, lead)
  ones = jnp.ones(lead, lr.dtype)
  row = jnp.ones(lead + (rule.window,), lr.dtype) if row is None else row
  col = ones if col is None else col
  if log_mom_decay is not None and not rule.has_momentum:
    raise ValueError("log_mom_decay was given but rule.optimizer='gd' keeps no momentum")
  fn = lambda *xs: _single_head(rule, kernel, chunk_size, *xs)
  return jax.vmap(jax.vmap(fn))(q, k, v, lr, log_mom_decay, log_retention, row, col)
