"""The chunked deep-memory primitive shared by Titans, TTT, the TNT global/local branches.

Recurrence (0-indexed, per head; TNT Eq. 3-4 with Titans momentum and forgetting). For token t
in chunk c, with S_c the state at the chunk start and every gradient taken at S_c:

    u_t = grad_W loss(f(S_c, k_t), v_t)
    M_t = beta_t M_{t-1} - lr_t u_t            (momentum; without it M_t = -lr_t u_t)
    W_t = (1 - alpha_t) W_{t-1} + M_t          (forget gate; without it alpha_t = 0)
    o_t = f(W_t, q_t)     (retrieval="intra_chunk": includes token t's own write)
    o_t = f(S_c, q_t)     (retrieval="chunk_start": the TNT global memory)
    S_{c+1} = W_{last token of chunk c}

Chunk size 1 is the token-by-token recurrence. Inside a chunk the state is linear in the
anchored gradients: W_t = F_t S_c + m_t M_c - sum_{tau<=t} G[t, tau] u_tau with scalar
coefficients from the gates, so reads use the dual form per layer,
    z = F * (h W_S + b_S) + m * (h W_M + b_M) - (G o (h a^T + 1)) d,
and no per-token weights are ever materialized. `jax.lax.scan` runs over chunks; groups of
`remat_group` chunks are rematerialized in the backward pass. A sequence whose length is not a
multiple of C ends in a zero-padded chunk whose padded tokens write nothing: outputs on the
valid prefix and the returned state equal those of the unpadded sequence.

Shapes: B batch, H heads, L length, K head dim, C chunk size.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation
from tnx.memory import model as mm

RETRIEVALS = ("intra_chunk", "chunk_start")
_LOG_FLOOR = -60.0  # gate products below e^-60 are treated as e^-60 (avoids -inf - -inf).


class MemoryCarry(NamedTuple):
  """Recurrent state of one memory: constant size in the sequence length.

  anchor: chunk-start state S_c of the chunk in progress (the gradient anchor).
  weights: current state W_t.  momentum: current M_t, or None without momentum.
  pos: tokens already absorbed in the current chunk, in [0, C).
  """

  anchor: mm.State
  weights: mm.State
  momentum: mm.State | None
  pos: jax.Array


def _log_gate(g: jax.Array) -> jax.Array:
  return jnp.maximum(jnp.log(g), _LOG_FLOOR)


def _decay_matrix(log_cum: jax.Array) -> jax.Array:
  """D[t, s] = exp(log_cum[t] - log_cum[s]) for s <= t, else 0.  [C, C]."""
  c = log_cum.shape[0]
  mask = np.tril(np.ones((c, c), bool))
  diff = jnp.where(mask, log_cum[:, None] - log_cum[None, :], -jnp.inf)
  return jnp.exp(diff)


def chunk_coefficients(lr: jax.Array, mom_decay: jax.Array | None,
                       forget: jax.Array | None):
  """Scalar coefficients of the intra-chunk state as a function of anchored gradients.

  Returns (G [C, C], F [C], m [C] | None, Gm [C, C] | None, P [C] | None) such that
      W_t = F_t S + m_t M0 - sum_tau G[t, tau] u_tau,  M_t = P_t M0 - sum_tau Gm[t, tau] u_tau.
  """
  c = lr.shape[0]
  log_f = (jnp.cumsum(jnp.maximum(jnp.log1p(-forget), _LOG_FLOOR)) if forget is not None
           else jnp.zeros((c,), lr.dtype))
  decay_f = _decay_matrix(log_f)
  f_vec = jnp.exp(log_f)
  if mom_decay is None:
    return decay_f * lr[None, :], f_vec, None, None, None
  log_p = jnp.cumsum(_log_gate(mom_decay))
  gm = _decay_matrix(log_p) * lr[None, :]
  p_vec = jnp.exp(log_p)
  hi = jax.lax.Precision.HIGHEST
  return jnp.dot(decay_f, gm, precision=hi), f_vec, jnp.dot(decay_f, p_vec, precision=hi), gm, p_vec


def end_row_coefficients(lr: jax.Array, mom_decay: jax.Array | None,
                         forget: jax.Array | None, last: jax.Array):
  """Row `last` of `chunk_coefficients` only: (G[last] [C], F_last, m_last, Gm[last], P_last).

  Enough for the end-of-chunk state when no intra-chunk read is needed (chunk-start
  retrieval): O(C) work without momentum instead of the C x C matrices (C_G = 2048 in TNT).
  """
  c = lr.shape[0]
  valid = jnp.arange(c) <= last
  log_f = (jnp.cumsum(jnp.maximum(jnp.log1p(-forget), _LOG_FLOOR)) if forget is not None
           else jnp.zeros((c,), lr.dtype))
  df_row = jnp.exp(jnp.where(valid, log_f[last] - log_f, -jnp.inf))
  f_last = jnp.exp(log_f[last])
  if mom_decay is None:
    return df_row * lr, f_last, None, None, None
  log_p = jnp.cumsum(_log_gate(mom_decay))
  decay_p = _decay_matrix(log_p)
  hi = jax.lax.Precision.HIGHEST
  g_row = jnp.dot(df_row, decay_p, precision=hi) * lr
  return g_row, f_last, jnp.dot(df_row, jnp.exp(log_p), precision=hi), decay_p[last] * lr, \
      jnp.exp(log_p[last])


def _combine(base: mm.Layer, coef_s, mom: mm.Layer | None, coef_m, a, d, row) -> mm.Layer:
  """coef_s * base + coef_m * mom - sum_tau row[tau] outer(a_tau, d_tau) for one layer."""
  out = {"w": coef_s * base["w"] - a.T @ (row[:, None] * d)}
  if "b" in base:
    out["b"] = coef_s * base["b"] - row @ d
  if mom is not None:
    out = {n: out[n] + coef_m * mom[n] for n in out}
  return out


def _chunk_step(cfg: mm.MemoryModelConfig, loss, retrieval: str, state, momentum, ln,
                q, k, v, lr, mom_decay, forget, last):
  """One chunk for one head. q, k, v [C, K]; lr and gates [C]; last = index of the last valid
  token. Returns (o [C, K], state after token `last`, momentum after token `last`)."""
  act = mm.ACTIVATIONS[cfg.activation]
  a, d, _ = mm.layer_grads(cfg, state, k, v, loss, ln)
  if retrieval == "chunk_start":
    o = mm.apply(cfg, state, q, ln)
    g_last, f_last, m_last, gm_last, p_last = end_row_coefficients(lr, mom_decay, forget, last)
  else:
    g, f_vec, m_vec, gm, p_vec = chunk_coefficients(lr, mom_decay, forget)
    h = q
    for i, layer in enumerate(state):
      z = f_vec[:, None] * (h @ layer["w"] + layer.get("b", 0.0))
      if momentum is not None:
        z = z + m_vec[:, None] * (h @ momentum[i]["w"] + momentum[i].get("b", 0.0))
      scores = h @ a[i].T + (1.0 if "b" in layer else 0.0)
      z = z - (g * scores) @ d[i]
      h = act(z) if i < len(state) - 1 else z
    o = mm.finish(cfg, q, h, ln)
    g_last, f_last = g[last], f_vec[last]
    if momentum is not None:
      m_last, gm_last, p_last = m_vec[last], gm[last], p_vec[last]
  new_state = tuple(
      _combine(layer, f_last, None if momentum is None else momentum[i],
               None if momentum is None else m_last, a[i], d[i], g_last)
      for i, layer in enumerate(state))
  new_mom = None
  if momentum is not None:
    new_mom = tuple(_combine(mom, p_last, None, None, a[i], d[i], gm_last)
                    for i, mom in enumerate(momentum))
  return o, new_state, new_mom


def _largest_divisor_at_most(n: int, k: int) -> int:
  return max(g for g in range(1, min(n, k) + 1) if n % g == 0)


REMAT_TOKENS = 64  # automatic remat groups span about this many tokens


def resolve_remat_group(remat_group: int | None, chunk_size: int) -> int:
  """None -> max(1, REMAT_TOKENS // chunk_size): groups of about 64 tokens. Measured on CPU
  (Titans, D=256, L=4096): per-chunk remat is fastest for C >= 64 (3x faster than groups of 4
  at C_G = 2048), while at C <= 16 it stores one fast-weight state per chunk (8.6 GB planned
  at C=1) and runs slower than groups."""
  if remat_group is None:
    return max(1, REMAT_TOKENS // chunk_size)
  return validation.non_negative_int("remat_group", remat_group)


def scan_chunks(body, carry, xs, n: int, remat_group: int):
  """lax.scan of `body` over n chunks with rematerialization in the backward pass.

  remat_group = 0: no remat (every chunk's residuals are stored); 1: each chunk is recomputed
  from its carry (only the carries are stored); g > 1: groups of g chunks (the largest divisor
  of n not above g) are recomputed together (see `resolve_remat_group` for the default).
  """
  if remat_group == 0 or n == 1:
    return jax.lax.scan(body, carry, xs)
  if remat_group == 1:
    return jax.lax.scan(jax.checkpoint(body), carry, xs)
  g = _largest_divisor_at_most(n, remat_group)
  xs_g = jax.tree.map(lambda x: x.reshape((n // g, g) + x.shape[1:]), xs)
  group_body = jax.checkpoint(lambda c, xg: jax.lax.scan(body, c, xg))
  carry, ys = jax.lax.scan(group_body, carry, xs_g)
  return carry, jax.tree.map(lambda y: y.reshape((n,) + y.shape[2:]), ys)


def _single_head(cfg, loss, retrieval, chunk_size, remat_group, state0, mom0, ln,
                 q, k, v, lr, mom_decay, forget):
  """The primitive for one sequence and one head. q/k/v [L, K], lr/gates [L]."""
  length, c = q.shape[0], chunk_size
  n_full, rem = divmod(length, c)
  step = lambda s, m, *x: _chunk_step(cfg, loss, retrieval, s, m, ln, *x)
  seqs = (q, k, v, lr, mom_decay, forget)
  # Give the initial carry the type of the inputs (a no-op add): under shard_map a replicated
  # initial state must become "varying" like the per-device tokens before entering the scan.
  like_inputs = lambda tree: jax.tree.map(lambda x: x + jnp.zeros_like(q[0, 0]), tree)
  outs, state, mom = [], like_inputs(state0), like_inputs(mom0)
  if n_full:
    full = jax.tree.map(lambda x: x[: n_full * c].reshape((n_full, c) + x.shape[1:]), seqs)

    def body(carry, xs):
      o, s, m = step(carry[0], carry[1], *xs, c - 1)
      return (s, m), o

    (state, mom), o_full = scan_chunks(body, (state, mom), full, n_full, remat_group)
    outs.append(o_full.reshape((n_full * c,) + o_full.shape[2:]))
  if rem:
    # Zero-padded tail: padded tokens have lr 0 and the end state is read at row rem - 1.
    tail = jax.tree.map(
        lambda x: jnp.pad(x[n_full * c:], [(0, c - rem)] + [(0, 0)] * (x.ndim - 1)), seqs)
    o_tail, w_tail, m_tail = step(state, mom, *tail, rem - 1)
    outs.append(o_tail[:rem])
    carry = MemoryCarry(state, w_tail, m_tail, jnp.asarray(rem, jnp.int32))
  else:
    carry = MemoryCarry(state, state, mom, jnp.asarray(0, jnp.int32))
  return jnp.concatenate(outs, axis=0), carry


def _is_concrete(x: Any) -> bool:
  return x is not None and not isinstance(x, jax.core.Tracer)


def chunked_memory(cfg: mm.MemoryModelConfig, state0: mm.State, q: jax.Array, k: jax.Array,
                   v: jax.Array, lr: jax.Array, *, chunk_size: int,
                   mom_decay: jax.Array | None = None, forget: jax.Array | None = None,
                   momentum0: mm.State | None = None, retrieval: str = "intra_chunk",
                   inner_loss: mm.InnerLoss = "squared_l2",
                   ln: dict[str, jax.Array] | None = None, remat_group: int | None = None,
                   state_batched: bool = False) -> tuple[jax.Array, MemoryCarry]:
  """Chunked memory over a batch of multi-head sequences.

  Args:
    cfg: memory network architecture.
    state0: initial fast weights, leaves [H, ...] shared across the batch, or [B, H, ...]
      with `state_batched=True` (e.g. a state handed over from a previous segment).
    q, k, v: [B, H, L, K] queries, keys, values.
    lr: [B, H, L] per-token inner learning rates (>= 0).
    chunk_size: C >= 1; gradients inside a chunk are taken at its start state.
    mom_decay: [B, H, L] momentum decay beta_t in (0, 1], or None for no momentum.
    forget: [B, H, L] forget gate alpha_t in [0, 1), or None for no forgetting.
    momentum0: initial momentum (same layout as state0); zeros when None and momentum is on.
    retrieval: "intra_chunk" (dual form, reads W_t) or "chunk_start" (reads S_c).
    inner_loss: a name in `model.INNER_LOSSES` or a callable loss(pred [K], target [K]).
    ln: {"scale", "bias"} [H, K] for the LN-residual wrapper (cfg.ln_residual).
    remat_group: chunks per rematerialized group (see `scan_chunks`; 0 disables remat;
      None picks `resolve_remat_group`).
    state_batched: whether state0/momentum0 carry a leading batch axis.
  Returns:
    (o [B, H, L, K], MemoryCarry with leaves [B, H, ...]) — the carry continues decoding.
  """
  chunk_size = validation.positive_int("chunk_size", chunk_size)
  remat_group = resolve_remat_group(remat_group, chunk_size)
  validation.one_of("retrieval", retrieval, RETRIEVALS)
  mm.resolve_loss(inner_loss)
  if q.ndim != 4:
    raise ValueError(f"q must have shape [B, H, L, K], got {list(q.shape)}")
  b, h, length, kdim = q.shape
  validation.shape("k", k, q.shape)
  validation.shape("v", v, q.shape)
  validation.shape("lr", lr, (b, h, length))
  for name, gate in (("mom_decay", mom_decay), ("forget", forget)):
    if gate is not None:
      validation.shape(name, gate, (b, h, length))
  if _is_concrete(lr):
    validation.array_in_range("lr", lr, 0.0, np.inf)
  if _is_concrete(mom_decay):
    validation.array_in_range("mom_decay", mom_decay, 0.0, 1.0)
  if _is_concrete(forget):
    validation.array_in_range("forget", forget, 0.0, 1.0)
  lead = (b, h) if state_batched else (h,)
  for layer in state0:
    if tuple(layer["w"].shape[: len(lead)]) != lead:
      raise ValueError(f"state0 leaves must start with {list(lead)}, got {list(layer['w'].shape)}")
  if state0[0]["w"].shape[len(lead)] != kdim:
    raise ValueError(f"state0's first layer expects inputs of size "
                     f"{state0[0]['w'].shape[len(lead)]}, but q/k have head dim {kdim}")
  if mom_decay is not None and momentum0 is None:
    momentum0 = jax.tree.map(jnp.zeros_like, state0)
  if mom_decay is None:
    momentum0 = None

  return _chunked_jit(cfg, inner_loss, retrieval, chunk_size, remat_group, state_batched,
                      state0, momentum0, ln, q, k, v, lr, mom_decay, forget)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _chunked_jit(cfg, inner_loss, retrieval, chunk_size, remat_group, state_batched,
                 state0, momentum0, ln, q, k, v, lr, mom_decay, forget):
  loss = mm.resolve_loss(inner_loss)
  fn = lambda s, m, ln_, *xs: _single_head(cfg, loss, retrieval, chunk_size, remat_group,
                                           s, m, ln_, *xs)
  s_axis = 0 if state_batched else None
  per_head = jax.vmap(fn, in_axes=(0, 0, 0, 0, 0, 0, 0, 0, 0))
  per_batch = jax.vmap(per_head, in_axes=(s_axis, s_axis, None, 0, 0, 0, 0, 0, 0))
  return per_batch(state0, momentum0, ln, q, k, v, lr, mom_decay, forget)


def init_carry(state0: mm.State, batch: int, momentum: bool) -> MemoryCarry:
  """A fresh decode carry from per-head state0 (leaves [H, ...]) for `batch` sequences."""
  s = jax.tree.map(lambda x: jnp.broadcast_to(x, (batch,) + x.shape), state0)
  mom = jax.tree.map(jnp.zeros_like, s) if momentum else None
  return MemoryCarry(s, s, mom, jnp.zeros((batch, state0[0]["w"].shape[0]), jnp.int32))


def _decode_one(cfg, loss, retrieval, chunk_size, carry: MemoryCarry, ln, q, k, v, lr,
                mom_decay, forget):
  a, d, _ = mm.layer_grads(cfg, carry.anchor, k[None], v[None], loss, ln)
  grads = tuple({"w": jnp.outer(a[i][0], d[i][0]), **({"b": d[i][0]} if "b" in layer else {})}
                for i, layer in enumerate(carry.anchor))
  keep = 1.0 if forget is None else 1.0 - forget
  if mom_decay is None:
    mom = None
    w = jax.tree.map(lambda wi, gi: keep * wi - lr * gi, carry.weights, grads)
  else:
    mom = jax.tree.map(lambda mi, gi: mom_decay * mi - lr * gi, carry.momentum, grads)
    w = jax.tree.map(lambda wi, mi: keep * wi + mi, carry.weights, mom)
  o = mm.apply(cfg, carry.anchor if retrieval == "chunk_start" else w, q, ln)
  pos = carry.pos + 1
  boundary = pos == chunk_size
  anchor = jax.tree.map(lambda wi, si: jnp.where(boundary, wi, si), w, carry.anchor)
  return o, MemoryCarry(anchor, w, mom, jnp.where(boundary, 0, pos))


def decode_step(cfg: mm.MemoryModelConfig, carry: MemoryCarry, q: jax.Array, k: jax.Array,
                v: jax.Array, lr: jax.Array, *, chunk_size: int,
                mom_decay: jax.Array | None = None, forget: jax.Array | None = None,
                retrieval: str = "intra_chunk", inner_loss: mm.InnerLoss = "squared_l2",
                ln: dict[str, jax.Array] | None = None) -> tuple[jax.Array, MemoryCarry]:
  """Absorbs one token per sequence with the same chunk semantics as `chunked_memory`.

  Args: q, k, v [B, H, K]; lr and gates [B, H]; carry leaves [B, H, ...].
  Returns: (o [B, H, K], new carry).
  """
  chunk_size = validation.positive_int("chunk_size", chunk_size)
  validation.one_of("retrieval", retrieval, RETRIEVALS)
  if q.ndim != 3:
    raise ValueError(f"q must have shape [B, H, K], got {list(q.shape)}")
  validation.shape("k", k, q.shape)
  validation.shape("v", v, q.shape)
  validation.shape("lr", lr, q.shape[:2])
  mm.resolve_loss(inner_loss)
  return _decode_jit(cfg, inner_loss, retrieval, chunk_size, carry, ln, q, k, v, lr,
                     mom_decay, forget)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _decode_jit(cfg, inner_loss, retrieval, chunk_size, carry, ln, q, k, v, lr, mom_decay,
                forget):
  loss = mm.resolve_loss(inner_loss)
  fn = lambda c, ln_, *xs: _decode_one(cfg, loss, retrieval, chunk_size, c, ln_, *xs)
  per_head = jax.vmap(fn, in_axes=(0, 0, 0, 0, 0, 0, 0, 0))
  per_batch = jax.vmap(per_head, in_axes=(0, None, 0, 0, 0, 0, 0, 0))
  return per_batch(carry, ln, q, k, v, lr, mom_decay, forget)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _reference_token(cfg, loss_name, retrieval, anchor, w, mom, ln, qt, kt, vt, lrt, mdt, fot):
  loss = mm.resolve_loss(loss_name)
  token_loss = lambda s: loss(mm.apply(cfg, s, kt, ln), vt)
  g = jax.grad(token_loss)(anchor)
  keep = 1.0 if fot is None else 1.0 - fot
  if mdt is None:
    w = jax.tree.map(lambda wi, gi: keep * wi - lrt * gi, w, g)
  else:
    mom = jax.tree.map(lambda mi, gi: mdt * mi - lrt * gi, mom, g)
    w = jax.tree.map(lambda wi, mi: keep * wi + mi, w, mom)
  return mm.apply(cfg, anchor if retrieval == "chunk_start" else w, qt, ln), w, mom


def sequential_reference(cfg: mm.MemoryModelConfig, state0: mm.State, q, k, v, lr, *,
                         chunk_size: int, mom_decay=None, forget=None,
                         retrieval: str = "intra_chunk",
                         inner_loss: mm.InnerLoss = "squared_l2", ln=None
                         ) -> tuple[jax.Array, mm.State]:
  """Slow reference for ONE head: a Python loop over tokens that materializes W_t and takes
  each gradient with `jax.grad` of the loss at the chunk-start state. Used to test the
  primitive. q/k/v [L, K], lr/gates [L], state0 leaves unbatched. Returns (o [L, K], W_L)."""
  anchor = w = state0
  mom = jax.tree.map(jnp.zeros_like, state0)
  at = lambda x, t: None if x is None else x[t]
  outs = []
  for t in range(q.shape[0]):
    o, w, mom = _reference_token(cfg, inner_loss, retrieval, anchor, w, mom, ln, q[t], k[t],
                                 v[t], lr[t], at(mom_decay, t), at(forget, t))
    outs.append(o)
    if (t + 1) % chunk_size == 0:
      anchor = w
  return jnp.stack(outs), w
