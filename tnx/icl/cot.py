"""Test-time chain-of-thought for the LSA as repeated application (arXiv 2510.03605, Prop. 3.2).

Two implementations of k CoT steps on one prompt embedding Z [E, m+1] (E = 2d + 2):

  appended  the autoregressive form: step i computes the output column at the current last
            position and appends it, Z_{i+1} = [Z_i, f(Z_i)[:, -1]]. A fixed buffer of m+1+k
            columns with a validity mask keeps shapes static under `lax.scan`.
  looped    one weight-tied layer applied to the query column alone, the data columns fixed.

They agree exactly whenever V maps estimate/constant rows to zero (the sparse structure the
trained LSA has): the appended columns then contribute nothing to later attention sums. The
appended form is the general definition. `order='naive'` evaluates the whole f(Z) and picks
the column (O(E^2 L + E L^2) per step); 'fast' evaluates V (Z (Z^T (W z))) (O(E^2 + E L)).
Both forms return the k estimates w_1..w_k; `vmap` them over prompts (`estimates`) and seeds
(`error_curve_mc`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from tnx import validation
from tnx.icl import lsa
from tnx.icl.task import Prompts, embed, estimate_rows, sample_prompts

FORMS = ("appended", "looped")
ORDERS = ("fast", "naive")


def cot_appended(params: lsa.LSAParams, z_ExM1: jax.Array, k: int, count: Any = None, *,
                 order: str = "fast") -> jax.Array:
  """k autoregressive CoT steps with appended columns; returns the estimates [k, d].

  z_ExM1: one embedding whose last column is the query. count: the attention normaliser
  (default: the number of data columns m).
  """
  k = validation.positive_int("k", k)
  validation.one_of("order", order, ORDERS)
  d = lsa.dim_of(params)
  e, m1 = z_ExM1.shape
  if e != 2 * d + 2:
    raise ValueError(f"z_ExM1 must have {2 * d + 2} rows for d={d}, got {e}")
  count = (m1 - 1) if count is None else count
  buf_ExL = jnp.concatenate([z_ExM1, jnp.zeros((e, k), z_ExM1.dtype)], 1)
  positions_L = jnp.arange(m1 + k)

  def step(buf, i):
    j = m1 - 1 + i                      # the current last column
    mask_L = positions_L <= j
    if order == "fast":
      out_E = lsa.column(params, buf, j, count, mask_L)
    else:
      out_E = lsa.forward(params, buf, count, mask_L)[:, j]
    buf = jax.lax.dynamic_update_slice_in_dim(buf, out_E[:, None].astype(buf.dtype), j + 1, 1)
    return buf, out_E[estimate_rows(d)]

  _, est_KxD = jax.lax.scan(step, buf_ExL, jnp.arange(k))
  return est_KxD


def cot_looped(params: lsa.LSAParams, z_ExM1: jax.Array, k: int, count: Any = None
               ) -> jax.Array:
  """k CoT steps as one weight-tied layer looped on the query column; estimates [k, d].

  Each step is the LSA's output at the query column over [data, query]:
  q <- q + V (D D^T W q + q q^T W q) / count, so k = 1 equals `lsa.forward(...)[:, -1]`.
  """
  k = validation.positive_int("k", k)
  d = lsa.dim_of(params)
  if z_ExM1.shape[0] != 2 * d + 2:
    raise ValueError(f"z_ExM1 must have {2 * d + 2} rows for d={d}, got {z_ExM1.shape[0]}")
  data_ExM = z_ExM1[:, :-1]
  count = data_ExM.shape[1] if count is None else count
  v, w = params

  def step(q_E, _):
    wq_E = w @ q_E
    q_E = q_E + v @ (data_ExM @ (data_ExM.T @ wq_E) + q_E * (q_E @ wq_E)) / count
    return q_E, q_E[estimate_rows(d)]

  _, est_KxD = jax.lax.scan(step, z_ExM1[:, -1], None, length=k)
  return est_KxD


def cot_reference(p_DxD: jax.Array, x_MxD: jax.Array, y_M: jax.Array, k: int,
                  w0_D: jax.Array | None = None) -> jax.Array:
  """The d x d pseudo-Newton recursion w <- w - P (X^T X w - X^T y) / m; estimates [k, d]."""
  k = validation.positive_int("k", k)
  m = x_MxD.shape[0]
  s_DxD = x_MxD.T @ x_MxD / m
  b_D = x_MxD.T @ y_M / m
  w0_D = jnp.zeros(x_MxD.shape[1], x_MxD.dtype) if w0_D is None else w0_D

  def step(w_hat, _):
    w_hat = w_hat - p_DxD @ (s_DxD @ w_hat - b_D)
    return w_hat, w_hat

  return jax.lax.scan(step, w0_D, None, length=k)[1]


@functools.partial(jax.jit, static_argnames=("k", "form", "order"))
def estimates(params: lsa.LSAParams, prompts: Prompts, k: int, *, form: str = "looped",
              order: str = "fast", w0_BxD: jax.Array | None = None) -> jax.Array:
  """CoT estimates for a batch of prompts (vmap over prompts, jitted), [B, k, d]."""
  validation.one_of("form", form, FORMS)
  x, y, w = prompts
  w0 = jnp.zeros_like(w) if w0_BxD is None else w0_BxD
  z_BxExM1 = embed(x, y, w0)
  if form == "appended":
    fn = functools.partial(cot_appended, params, k=k, order=order)
  else:
    fn = functools.partial(cot_looped, params, k=k)
  return jax.vmap(fn)(z_BxExM1)


@functools.partial(jax.jit, static_argnames=("m", "k", "n_prompts", "n_seeds", "form",
                                             "order"))
def error_curve_mc(key: jax.Array, params: lsa.LSAParams, sig_sqrt_DxD: jax.Array, *, m: int,
                   k: int, n_prompts: int, n_seeds: int, form: str = "looped",
                   order: str = "fast") -> jax.Array:
  """Mean squared weight error ||w_i - w||^2 for i = 1..k, per seed: [n_seeds, k].

  Each seed draws `n_prompts` fresh test prompts with m examples from N(0, Sigma); vmap over
  seeds and prompts. The dtype follows `params`.
  """
  dtype = params.v_ExE.dtype

  def one_seed(key_s):
    prompts = sample_prompts(key_s, n_prompts, m, sig_sqrt_DxD.astype(dtype), dtype=dtype)
    est_BxKxD = estimates(params, prompts, k, form=form, order=order)
    return jnp.mean(jnp.sum((est_BxKxD - prompts.w_BxD[:, None]) ** 2, -1), 0)

  return jax.vmap(one_seed)(jax.random.split(key, n_seeds))
