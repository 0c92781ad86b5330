"""The chunked deep-memory primitive shared by Titans, TTT, the TNT global/local branches.

Recurrence (0-indexed, per head; TNT Eq. 3-4 with Titans momentum and forgetting, Titans
arXiv 2501.00663 Eq. 9-14). For token t in chunk c, with S_c the state at the chunk start and
every gradient taken at S_c:

    u_t = grad_W loss(f(S_c, k_t), v_t)
    M_t = b_t M_{t-1} + lr_t u_t               (momentum; without it M_t = lr_t u_t)
    W_t = a_t W_{t-1} - M_t                    (retention a_t = 1 - forget gate; 1 without)
    o_t = f(W_t, q_t)     (retrieval="intra_chunk": includes token t's own write)
    o_t = f(S_c, q_t)     (retrieval="chunk_start": the TNT global memory)
    S_{c+1} = W_{last token of chunk c}

The decay gates a_t and b_t enter as logs (`log_retention`, `log_mom_decay`; see
`tnx.memory.gates` for how to compute them from logits so that no saturated gate gives a
non-finite value or gradient). Chunk size 1 is the token-by-token recurrence. Inside a chunk
the state is linear in the anchored gradients (`gates.chunk_coefficients`):
W_t = A_t S_c - m_t M_c - sum_{tau<=t} coef[t, tau] u_tau, so reads use the dual form per layer,
    z = A * (h W_S + b_S) - m * (h W_M + b_M) - (coef o (h a^T + 1)) d,
and no per-token weights are ever materialized. `jax.lax.scan` runs over chunks; groups of
`remat_group` chunks are rematerialized in the backward pass. A sequence whose length is not a
multiple of C ends in a zero-padded chunk whose padded tokens write nothing: outputs on the
valid prefix and the returned state equal those of the unpadded sequence. A non-finite key,
value or gate at token t reaches only what depends on it (`tnx.memory.finite`).

Shapes: B batch, H heads, L length, K head dim, C chunk size.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation
from tnx.memory import finite, gates
from tnx.memory import model as mm

RETRIEVALS = ("intra_chunk", "chunk_start")


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


def _rank_update(layer: mm.Layer, scale, a: jax.Array, d: jax.Array, row: jax.Array,
                 sign: float) -> mm.Layer:
  """scale * layer + sign * sum_tau row[tau] * (per-token gradient tau) for one layer, where the
  gradient of w is outer(a_tau, d_tau) and that of b is d_tau."""
  out = {"w": scale * layer["w"] + sign * (a.T @ (row[:, None] * d))}
  if "b" in layer:
    out["b"] = scale * layer["b"] + sign * (row @ d)
  return out


def _dual_read(cfg, state, momentum, q, a, d, co: gates.Coefficients, ln):
  """o_t = f(W_t, q_t) for every token of the chunk without forming W_t (dual form)."""
  act = mm.ACTIVATIONS[cfg.activation]
  h = q
  for i, layer in enumerate(state):
    z = co.a_vec[:, None] * (h @ layer["w"] + layer.get("b", 0.0))
    if momentum is not None:
      z = z - co.m_vec[:, None] * (h @ momentum[i]["w"] + momentum[i].get("b", 0.0))
    scores = h @ a[i].T + (1.0 if "b" in layer else 0.0)
    z = z - (co.coef * scores) @ d[i]
    h = act(z) if i < len(state) - 1 else z
  return mm.finish(cfg, q, h, ln)


def _chunk_step(cfg: mm.MemoryModelConfig, loss, retrieval: str, check: bool, state, momentum,
                ln, q, k, v, lr, log_mom_decay, log_retention, last):
  """One chunk for one head. q, k, v [C, K]; lr and log gates [C]; last = index of the last
  valid token. Returns (o [C, K], state and momentum after token `last`, check flags)."""
  c = q.shape[0]
  in_bad = finite.nonfinite_rows((k, v, lr, log_mom_decay, log_retention), c)
  k, v, lr, log_mom_decay, log_retention = (
      finite.clean_rows(x, in_bad) for x in (k, v, lr, log_mom_decay, log_retention))
  a, d, _ = mm.layer_grads(cfg, state, k, v, loss, ln)
  bad = in_bad | finite.nonfinite_rows(a + d, c)
  a, d = [finite.clean_rows(x, bad) for x in a], [finite.clean_rows(x, bad) for x in d]
  coef_args = dict(momentum=momentum is not None)
  if retrieval == "chunk_start":
    o = mm.apply(cfg, state, q, ln)
    row = gates.end_row_coefficients(lr, log_retention, log_mom_decay, last=last, **coef_args)
  else:
    co = gates.chunk_coefficients(lr, log_retention, log_mom_decay, **coef_args)
    o = finite.poison_after(_dual_read(cfg, state, momentum, q, a, d, co, ln), bad)
    row = gates.Coefficients(*(None if x is None else x[last] for x in co))
  new_state = tuple(_rank_update(layer, row.a_vec, a[i], d[i], row.coef, -1.0)
                    for i, layer in enumerate(state))
  new_mom = None
  if momentum is not None:
    new_state = jax.tree.map(lambda w, m: w - row.m_vec * m, new_state, momentum)
    new_mom = tuple(_rank_update(m, row.p_vec, a[i], d[i], row.coef_s, 1.0)
                    for i, m in enumerate(momentum))
  end_bad = jnp.any(bad & (jnp.arange(c) <= last))
  new_state, new_mom = finite.poison_tree((new_state, new_mom), end_bad)
  flags = None
  if check:
    state_bad = ~jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(new_state)]))
    flags = bad | finite.nonfinite_rows((o,), c)
    flags = flags.at[last].set(flags[last] | state_bad), in_bad
  return o, new_state, new_mom, flags


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


def _single_head(cfg, loss, retrieval, check, chunk_size, remat_group, state0, mom0, ln,
                 q, k, v, lr, log_mom_decay, log_retention):
  """The primitive for one sequence and one head. q/k/v [L, K], lr/log gates [L]."""
  length, c = q.shape[0], chunk_size
  n_full, rem = divmod(length, c)
  step = lambda s, m, *x: _chunk_step(cfg, loss, retrieval, check, s, m, ln, *x)
  seqs = (q, k, v, lr, log_mom_decay, log_retention)
  # Give the initial carry the type of the inputs (a no-op add): under shard_map a replicated
  # initial state must become "varying" like the per-device tokens before entering the scan.
  like_inputs = lambda tree: jax.tree.map(lambda x: x + jnp.zeros_like(q[0, 0]), tree)
  outs, flags, state, mom = [], [], like_inputs(state0), like_inputs(mom0)
  if n_full:
    full = jax.tree.map(lambda x: x[: n_full * c].reshape((n_full, c) + x.shape[1:]), seqs)

    def body(carry, xs):
      o, s, m, f = step(carry[0], carry[1], *xs, c - 1)
      return (s, m), (o, f)

    (state, mom), (o_full, f_full) = scan_chunks(body, (state, mom), full, n_full, remat_group)
    outs.append(o_full.reshape((n_full * c,) + o_full.shape[2:]))
    flags.append(jax.tree.map(lambda f: f.reshape(n_full * c), f_full))
  if rem:
    # Zero-padded tail: padded tokens have lr 0 and the end state is read at row rem - 1.
    tail = jax.tree.map(
        lambda x: jnp.pad(x[n_full * c:], [(0, c - rem)] + [(0, 0)] * (x.ndim - 1)), seqs)
    o_tail, w_tail, m_tail, f_tail = step(state, mom, *tail, rem - 1)
    outs.append(o_tail[:rem])
    flags.append(jax.tree.map(lambda f: f[:rem], f_tail))
    carry = MemoryCarry(state, w_tail, m_tail, jnp.asarray(rem, jnp.int32))
  else:
    carry = MemoryCarry(state, state, mom, jnp.asarray(0, jnp.int32))
  flags = (jax.tree.map(lambda *f: jnp.concatenate(f), *flags) if check else None)
  return jnp.concatenate(outs, axis=0), carry, flags


def _validate_log_gates(**log_gates: jax.Array | None) -> None:
  """Log gates must be <= 0 (gates in (0, 1]); checked on concrete arrays only."""
  for name, g in log_gates.items():
    x = None if g is None else finite.concrete(g)
    if x is not None and x.size and not np.all(x[~np.isnan(x)] <= 0.0):
      bad = x[x > 0].ravel()[:3]
      raise ValueError(f"{name} must be the log of a gate in (0, 1], i.e. <= 0 (for example "
                       f"jax.nn.log_sigmoid(logits)), found e.g. {bad.tolist()}")


def chunked_memory(cfg: mm.MemoryModelConfig, state0: mm.State, q: jax.Array, k: jax.Array,
                   v: jax.Array, lr: jax.Array, *, chunk_size: int,
                   log_mom_decay: jax.Array | None = None,
                   log_retention: jax.Array | None = None,
                   momentum0: mm.State | None = None, retrieval: str = "intra_chunk",
                   inner_loss: mm.InnerLoss = "squared_l2",
                   ln: dict[str, jax.Array] | None = None, remat_group: int | None = None,
                   state_batched: bool = False, check_finite: bool = False
                   ) -> tuple[jax.Array, MemoryCarry]:
  """Chunked memory over a batch of multi-head sequences.

  Args:
    cfg: memory network architecture.
    state0: initial fast weights, leaves [H, ...] shared across the batch, or [B, H, ...]
      with `state_batched=True` (e.g. a state handed over from a previous segment).
    q, k, v: [B, H, L, K] queries, keys, values.
    lr: [B, H, L] per-token inner learning rates (>= 0).
    chunk_size: C >= 1; gradients inside a chunk are taken at its start state.
    log_mom_decay: [B, H, L] log of the momentum decay b_t in (0, 1] (<= 0), or None for no
      momentum.
    log_retention: [B, H, L] log of the retention a_t = 1 - forget gate (<= 0), or None for
      no forgetting.
    momentum0: initial momentum (same layout as state0); zeros when None and momentum is on.
    retrieval: "intra_chunk" (dual form, reads W_t) or "chunk_start" (reads S_c).
    inner_loss: a name in `model.INNER_LOSSES` or a callable loss(pred [K], target [K]).
    ln: {"scale", "bias"} [H, K] for the LN-residual wrapper (cfg.ln_residual).
    remat_group: chunks per rematerialized group (see `scan_chunks`; 0 disables remat;
      None picks `resolve_remat_group`).
    state_batched: whether state0/momentum0 carry a leading batch axis.
    check_finite: raise FloatingPointError naming the first token and head at which the inner
      loop becomes non-finite (under jit: at run time, through `jax.debug.callback`).
      Costs a little; off by default.
  Returns:
    (o [B, H, L, K], MemoryCarry with leaves [B, H, ...]) — the carry continues decoding.

  Stable range. The inner loop is gradient descent (with momentum: heavy ball) on the inner
  loss, so it is stable only for small enough steps. For the squared loss ||f(k) - v||^2, a
  linear memory and a chunk of C tokens, the chunk's update contracts iff
  2 lr lambda_max(sum_t k_t k_t^T) <= 2 (1 + b) (b: momentum decay, 0 without); the worst case
  (equal keys) needs lr <= (1 + b) / (C |k|^2). The layers L2-normalize q and k (|k| = 1) and
  bound lr (Titans: lr_max = 0.01 with C <= 64); unnormalized keys with unit-normal entries
  have |k|^2 ~ K and need about K times smaller steps, otherwise the state grows
  exponentially and overflows to inf/NaN. Deep memories have a larger curvature (the squared
  norms of every layer's input and output Jacobian); measured bounds are in docs/numerics.md.

  Checks. Shapes, the chunk size, names and the memory layout are checked at every call (they
  are static, also under jit). Value checks (lr >= 0, log gates <= 0) run only on concrete
  arrays: under jit, vmap or grad they are skipped, and out-of-range values then run silently.
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
  for name, gate in (("log_mom_decay", log_mom_decay), ("log_retention", log_retention)):
    if gate is not None:
      validation.shape(name, gate, (b, h, length))
  lr_values = finite.concrete(lr)
  if lr_values is not None:
    validation.array_in_range("lr", lr_values, 0.0, np.inf)
  _validate_log_gates(log_mom_decay=log_mom_decay, log_retention=log_retention)
  lead = (b, h) if state_batched else (h,)
  for layer in state0:
    if tuple(layer["w"].shape[: len(lead)]) != lead:
      raise ValueError(f"state0 leaves must start with {list(lead)}, got {list(layer['w'].shape)}")
  if state0[0]["w"].shape[len(lead)] != kdim:
    raise ValueError(f"state0's first layer expects inputs of size "
                     f"{state0[0]['w'].shape[len(lead)]}, but q/k have head dim {kdim}")
  if log_mom_decay is not None and momentum0 is None:
    momentum0 = jax.tree.map(jnp.zeros_like, state0)
  if log_mom_decay is None:
    momentum0 = None

  o, carry, flags = _chunked_jit(cfg, inner_loss, retrieval, check_finite, chunk_size,
                                 remat_group, state_batched, state0, momentum0, ln, q, k, v, lr,
                                 log_mom_decay, log_retention)
  if check_finite:
    finite.report("chunked_memory", *flags)
  return o, carry


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5, 6))
def _chunked_jit(cfg, inner_loss, retrieval, check, chunk_size, remat_group, state_batched,
                 state0, momentum0, ln, q, k, v, lr, log_mom_decay, log_retention):
  loss = mm.resolve_loss(inner_loss)
  fn = lambda s, m, ln_, *xs: _single_head(cfg, loss, retrieval, check, chunk_size,
                                           remat_group, s, m, ln_, *xs)
  s_axis = 0 if state_batched else None
  per_head = jax.vmap(fn, in_axes=(0, 0, 0, 0, 0, 0, 0, 0, 0))
  per_batch = jax.vmap(per_head, in_axes=(s_axis, s_axis, None, 0, 0, 0, 0, 0, 0))
  return per_batch(state0, momentum0, ln, q, k, v, lr, log_mom_decay, log_retention)


def init_carry(state0: mm.State, batch: int, momentum: bool) -> MemoryCarry:
  """A fresh decode carry from per-head state0 (leaves [H, ...]) for `batch` sequences."""
  s = jax.tree.map(lambda x: jnp.broadcast_to(x, (batch,) + x.shape), state0)
  mom = jax.tree.map(jnp.zeros_like, s) if momentum else None
  return MemoryCarry(s, s, mom, jnp.zeros((batch, state0[0]["w"].shape[0]), jnp.int32))


def _token_update(weights, momentum, grads, lr, log_mom_decay, log_retention):
  """One token's write from its gradient `grads` (a State): (W_t, M_t)."""
  keep = 1.0 if log_retention is None else jnp.exp(log_retention)
  if momentum is None:
    return jax.tree.map(lambda wi, gi: keep * wi - lr * gi, weights, grads), None
  decay = jnp.exp(log_mom_decay)
  mom = jax.tree.map(lambda mi, gi: decay * mi + lr * gi, momentum, grads)
  return jax.tree.map(lambda wi, mi: keep * wi - mi, weights, mom), mom


def _decode_one(cfg, loss, retrieval, chunk_size, carry: MemoryCarry, ln, q, k, v, lr,
                log_mom_decay, log_retention):
  a, d, _ = mm.layer_grads(cfg, carry.anchor, k[None], v[None], loss, ln)
  grads = tuple({"w": jnp.outer(a[i][0], d[i][0]), **({"b": d[i][0]} if "b" in layer else {})}
                for i, layer in enumerate(carry.anchor))
  w, mom = _token_update(carry.weights, carry.momentum, grads, lr, log_mom_decay,
                         log_retention)
  o = mm.apply(cfg, carry.anchor if retrieval == "chunk_start" else w, q, ln)
  pos = carry.pos + 1
  boundary = pos == chunk_size
  anchor = jax.tree.map(lambda wi, si: jnp.where(boundary, wi, si), w, carry.anchor)
  return o, MemoryCarry(anchor, w, mom, jnp.where(boundary, 0, pos))


def decode_step(cfg: mm.MemoryModelConfig, carry: MemoryCarry, q: jax.Array, k: jax.Array,
                v: jax.Array, lr: jax.Array, *, chunk_size: int,
                log_mom_decay: jax.Array | None = None,
                log_retention: jax.Array | None = None, retrieval: str = "intra_chunk",
                inner_loss: mm.InnerLoss = "squared_l2",
                ln: dict[str, jax.Array] | None = None) -> tuple[jax.Array, MemoryCarry]:
  """Absorbs one token per sequence with the same chunk semantics as `chunked_memory`.

  Args: q, k, v [B, H, K]; lr and log gates [B, H]; carry leaves [B, H, ...] (momentum iff
  log_mom_decay is given). Value checks as in `chunked_memory` (concrete arrays only).
  Returns: (o [B, H, K], new carry).
  """
  chunk_size = validation.positive_int("chunk_size", chunk_size)
  validation.one_of("retrieval", retrieval, RETRIEVALS)
  if q.ndim != 3:
    raise ValueError(f"q must have shape [B, H, K], got {list(q.shape)}")
  validation.shape("k", k, q.shape)
  validation.shape("v", v, q.shape)
  validation.shape("lr", lr, q.shape[:2])
  for name, gate in (("log_mom_decay", log_mom_decay), ("log_retention", log_retention)):
    if gate is not None:
      validation.shape(name, gate, q.shape[:2])
  _validate_log_gates(log_mom_decay=log_mom_decay, log_retention=log_retention)
  if (carry.momentum is None) != (log_mom_decay is None):
    raise ValueError("log_mom_decay must be given exactly when the carry has a momentum "
                     f"(carry.momentum is {'None' if carry.momentum is None else 'set'})")
  mm.resolve_loss(inner_loss)
  return _decode_jit(cfg, inner_loss, retrieval, chunk_size, carry, ln, q, k, v, lr,
                     log_mom_decay, log_retention)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _decode_jit(cfg, inner_loss, retrieval, chunk_size, carry, ln, q, k, v, lr, log_mom_decay,
                log_retention):
  loss = mm.resolve_loss(inner_loss)
  fn = lambda c, ln_, *xs: _decode_one(cfg, loss, retrieval, chunk_size, c, ln_, *xs)
  per_head = jax.vmap(fn, in_axes=(0, 0, 0, 0, 0, 0, 0, 0))
  per_batch = jax.vmap(per_head, in_axes=(0, None, 0, 0, 0, 0, 0, 0))
  return per_batch(carry, ln, q, k, v, lr, log_mom_decay, log_retention)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _reference_token(cfg, loss_name, retrieval, anchor, w, mom, ln, qt, kt, vt, lrt, lmt, lrtt):
  loss = mm.resolve_loss(loss_name)
  token_loss = lambda s: loss(mm.apply(cfg, s, kt, ln), vt)
  g = jax.grad(token_loss)(anchor)
  w, mom = _token_update(w, mom, g, lrt, lmt, lrtt)
  return mm.apply(cfg, anchor if retrieval == "chunk_start" else w, qt, ln), w, mom


def sequential_reference(cfg: mm.MemoryModelConfig, state0: mm.State, q, k, v, lr, *,
                         chunk_size: int, log_mom_decay=None, log_retention=None,
                         retrieval: str = "intra_chunk",
                         inner_loss: mm.InnerLoss = "squared_l2", ln=None
                         ) -> tuple[jax.Array, mm.State]:
  """Slow reference for ONE head: a Python loop over tokens that materializes W_t and takes
  each gradient with `jax.grad` of the loss at the chunk-start state. Used to test the
  primitive. q/k/v [L, K], lr/log gates [L], state0 leaves unbatched. Returns (o [L, K], W_L)."""
  anchor = w = state0
  mom = None if log_mom_decay is None else jax.tree.map(jnp.zeros_like, state0)
  at = lambda x, t: None if x is None else x[t]
  outs = []
  for t in range(q.shape[0]):
    o, w, mom = _reference_token(cfg, inner_loss, retrieval, anchor, w, mom, ln, q[t], k[t],
                                 v[t], lr[t], at(log_mom_decay, t), at(log_retention, t))
    outs.append(o)
    if (t + 1) % chunk_size == 0:
      anchor = w
  return jnp.stack(outs), w
