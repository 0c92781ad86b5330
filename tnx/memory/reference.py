"""The slow reference of the memory primitive: one head, a Python loop over tokens and window
entries, every gradient from `jax.grad` of the inner loss at the chunk-start state, weights and
momenta materialized. The fast paths (`tnx.memory.chunked`) are tested against it."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from tnx.memory import inner_optim as opt
from tnx.memory import model as mm
from tnx.memory.chunk_step import DEFAULT_RULE, UpdateRule


@functools.partial(jax.jit, static_argnums=(0, 1))
def _token(cfg, rule, anchor, w, mom, ln, q_t, k_win, v_win, g_win, lr_t, log_mom_t,
           log_ret_t):
  """One token: u = sum_j g_win[j] grad loss(anchor; k_win[j], v_win[j]), then the step."""
  loss = mm.resolve_loss(rule.inner_loss)
  grad = lambda kk, vv: jax.grad(lambda s: loss(mm.apply(cfg, s, kk, ln), vv))(anchor)
  u = jax.tree.map(jnp.zeros_like, anchor)
  for j in range(k_win.shape[0]):
    u = jax.tree.map(lambda x, y: x + g_win[j] * y, u, grad(k_win[j], v_win[j]))
  ret = 1.0 if log_ret_t is None else jnp.exp(log_ret_t)
  if rule.has_momentum:
    decay = 0.0 if log_mom_t is None else jnp.exp(log_mom_t)
    mom = jax.tree.map(lambda s, x: opt.momentum_step(s, x, decay, lr_t, rule.step_placement),
                       mom, u)
    w = jax.tree.map(lambda x, s: opt.weight_step(x, rule.orthogonalize(s), ret, lr_t,
                                                  rule.step_placement, True), w, mom)
  else:
    w = jax.tree.map(lambda x, g: ret * x - lr_t * g, w, u)
  read = anchor if rule.retrieval == "chunk_start" else w
  return mm.apply(cfg, read, q_t, ln), w, mom


def sequential_reference(cfg: mm.MemoryModelConfig, state0: mm.State, q, k, v, lr, *,
                         chunk_size: int, rule: UpdateRule = DEFAULT_RULE,
                         log_mom_decay=None, log_retention=None, window_gate=None, ln=None
                         ) -> tuple[jax.Array, mm.State]:
  """Slow reference for ONE head.

  Args: q, k [L, Dk]; v [L, Dv]; lr and log gates [L]; window_gate [L] (token-owned) or
  [L, c_w] (window-owned); state0 leaves unbatched; ln {"scale", "bias"} [K] or None.
  Returns: (o [L, Dv], W_L).
  """
  anchor = w = state0
  mom = jax.tree.map(jnp.zeros_like, state0) if rule.has_momentum else None
  at = lambda x, t: None if x is None else x[t]
  outs = []
  for t in range(q.shape[0]):
    idx = [t - j for j in range(rule.window) if t - j >= 0]
    if window_gate is None:
      g = jnp.ones((len(idx),), lr.dtype)
    elif window_gate.ndim == 2:
      g = jnp.stack([window_gate[t, j] for j in range(len(idx))])
    else:
      g = jnp.stack([window_gate[i] for i in idx])
    o, w, mom = _token(cfg, rule, anchor, w, mom, ln, q[t], k[jnp.asarray(idx)],
                       v[jnp.asarray(idx)], g, lr[t], at(log_mom_decay, t),
                       at(log_retention, t))
    outs.append(o)
    if (t + 1) % chunk_size == 0:
      anchor = w
  return jnp.stack(outs), w
