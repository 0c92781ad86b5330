"""Decay gates in log space, and the scalar coefficients of the state inside one chunk.

Decay gates reach the memory primitives as logarithms computed by the caller from the gate's
logit z, with functions whose value and derivative are finite for every finite z:

    retention a_t = sigmoid(z)               log_retention = jax.nn.log_sigmoid(z)
    forget gate f_t = sigmoid(z), a_t = 1 - f_t   log_retention = jax.nn.log_sigmoid(-z)
    momentum decay b_t = sigmoid(z)          log_mom_decay = jax.nn.log_sigmoid(z)

so a gate that rounds to 0 or 1 in the compute dtype still has a finite log and gradient
(`log(sigmoid(z))` or `log1p(-sigmoid(z))` would not: 0 * inf in the backward pass). A product
of gates over a span of tokens is exp of a difference of cumulative sums. Per-token logs below
`LOG_FLOOR` (gates < 1e-26) count as `LOG_FLOOR`; that is a select (`jnp.maximum`), whose
gradient is 0 below the floor, and it keeps -inf inputs (a gate of exactly 0) from producing
-inf - -inf.

Coefficients of one chunk. With start state W_0 and momentum S_0, per-token gradients g_e of
the inner loss at the anchor (the chunk-start state) for E tokens, windowed gradients
u_t = sum_e Gam[t, e] g_e (Gam = I without an Omega window), and per-token updates

    gd:                  W_t = a_t W_{t-1} - lr_t u_t
    momentum "inside":   S_t = b_t S_{t-1} + lr_t u_t,   W_t = a_t W_{t-1} - S_t    (Titans)
    momentum "outside":  S_t = b_t S_{t-1} + u_t,        W_t = a_t W_{t-1} - lr_t S_t  (ATLAS)

the state is linear in the gradients:

    W_t = A_t W_0 - m_t S_0 - sum_e coef[t, e] g_e,    S_t = P_t S_0 + sum_e coef_s[t, e] g_e

with A_t = prod_{s<=t} a_s and P_t = prod_{s<=t} b_s (`Coefficients`). Rows are tokens of the
chunk [C], columns the E gradient tokens (E = C without a window).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

LOG_FLOOR = -60.0
_HI = jax.lax.Precision.HIGHEST


class Coefficients(NamedTuple):
  """coef [C, E], a_vec [C]; with momentum also m_vec [C], coef_s [C, E], p_vec [C] (else
  None). The end-row variant holds row `last` of each (coef [E], scalars)."""

  coef: jax.Array
  a_vec: jax.Array
  m_vec: jax.Array | None = None
  coef_s: jax.Array | None = None
  p_vec: jax.Array | None = None


def log_cumsum(log_gate: jax.Array | None, n: int, dtype) -> jax.Array:
  """Cumulative sum of the floored per-token log gates [n] (zeros for None: gate 1)."""
  if log_gate is None:
    return jnp.zeros((n,), dtype)
  return jnp.cumsum(jnp.maximum(log_gate, LOG_FLOOR))


def decay_matrix(log_cum: jax.Array) -> jax.Array:
  """D[t, s] = exp(log_cum[t] - log_cum[s]) = prod_{s < m <= t} gate_m for s <= t, else 0."""
  n = log_cum.shape[0]
  mask = np.tril(np.ones((n, n), bool))
  return jnp.exp(jnp.where(mask, log_cum[:, None] - log_cum[None, :], -jnp.inf))


def decay_row(log_cum: jax.Array, last: int) -> jax.Array:
  """Row `last` of `decay_matrix` in O(C): exp(log_cum[last] - log_cum[s]) for s <= last."""
  valid = jnp.arange(log_cum.shape[0]) <= last
  return jnp.exp(jnp.where(valid, log_cum[last] - log_cum, -jnp.inf))


def _momentum_decay(log_mom_decay: jax.Array | None, n: int, dtype
                    ) -> tuple[jax.Array, jax.Array]:
  """(D_b [C, C], P [C]); None means b = 0 (no carry-over): D_b = I, P = 0."""
  if log_mom_decay is None:
    return jnp.eye(n, dtype=dtype), jnp.zeros((n,), dtype)
  lc = log_cumsum(log_mom_decay, n, dtype)
  return decay_matrix(lc), jnp.exp(lc)


def _times_window(x: jax.Array, gam: jax.Array | None) -> jax.Array:
  return x if gam is None else jnp.dot(x, gam, precision=_HI)


def momentum_coefficients(lr: jax.Array, log_mom_decay: jax.Array | None = None, *,
                          gam: jax.Array | None = None, placement: str = "inside"
                          ) -> tuple[jax.Array, jax.Array]:
  """(coef_s [C, E], P [C]) of S_t = P_t S_0 + sum_e coef_s[t, e] g_e (module docstring)."""
  db, p_vec = _momentum_decay(log_mom_decay, lr.shape[0], lr.dtype)
  return _times_window(db * lr[None, :] if placement == "inside" else db, gam), p_vec


def chunk_coefficients(lr: jax.Array, log_retention: jax.Array | None = None,
                       log_mom_decay: jax.Array | None = None, *, momentum: bool = False,
                       gam: jax.Array | None = None, placement: str = "inside"
                       ) -> Coefficients:
  """All rows of the chunk's coefficients (see the module docstring).

  Args:
    lr: [C] step sizes; log_retention, log_mom_decay: [C] log gates (None: retention 1;
      momentum decay 0). momentum: whether the update keeps a momentum S.
    gam: [C, E] window matrix (`window_matrix`), None for the identity (E = C).
    placement: "inside" or "outside" (where lr enters with momentum).
  """
  n = lr.shape[0]
  la = log_cumsum(log_retention, n, lr.dtype)
  da, a_vec = decay_matrix(la), jnp.exp(la)
  if not momentum:
    return Coefficients(_times_window(da * lr[None, :], gam), a_vec)
  coef_s, p_vec = momentum_coefficients(lr, log_mom_decay, gam=gam, placement=placement)
  weights = da if placement == "inside" else da * lr[None, :]
  return Coefficients(jnp.dot(weights, coef_s, precision=_HI), a_vec,
                      jnp.dot(weights, p_vec, precision=_HI), coef_s, p_vec)


def end_row_coefficients(lr: jax.Array, log_retention: jax.Array | None = None,
                         log_mom_decay: jax.Array | None = None, *, last: int,
                         momentum: bool = False, gam: jax.Array | None = None,
                         placement: str = "inside") -> Coefficients:
  """Row `last` of `chunk_coefficients` only: enough for the state after token `last` when no
  intra-chunk read is needed (chunk-start retrieval). O(C) without momentum and window (the
  TNT global memory reads at chunk starts with C_G = 2048) instead of C x C matrices."""
  n = lr.shape[0]
  la = log_cumsum(log_retention, n, lr.dtype)
  row_a, a_last = decay_row(la, last), jnp.exp(la[last])
  if not momentum:
    return Coefficients(_times_window((row_a * lr)[None], gam)[0], a_last)
  coef_s, p_vec = momentum_coefficients(lr, log_mom_decay, gam=gam, placement=placement)
  weights = row_a if placement == "inside" else row_a * lr
  return Coefficients(jnp.dot(weights, coef_s, precision=_HI), a_last,
                      jnp.dot(weights, p_vec, precision=_HI), coef_s[last], p_vec[last])


def window_matrix(row_gate: jax.Array, col_w: jax.Array, window: int) -> jax.Array:
  """Gam [C, E] with Gam[p, p + c - 1 - j] = row_gate[p, j] * col_w[p + c - 1 - j]: the banded
  sliding-window mask of the Omega rule (ATLAS, arXiv 2505.23735, Eq. 9; the identity for
  c = 1) times the window gates.

  row_gate [C, c] (window-owned gates, ones otherwise); col_w [E] (token-owned gates times
  validity), E = C + c - 1.
  """
  b, e = row_gate.shape[0], col_w.shape[0]
  gam = sum(row_gate[:, j][:, None] * jnp.eye(b, e, k=window - 1 - j, dtype=col_w.dtype)
            for j in range(window))
  return gam * col_w[None, :]
