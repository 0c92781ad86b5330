"""The chunked deep-memory primitive: one function for Titans, TTT, the TNT global and local
memories and the ATLAS family (the Omega rule).

Per head, for token t in chunk c with anchor S_c (the state at the chunk start), every
gradient taken at S_c, window c_w >= 1 and window gates gamma:

    u_t = sum_{j < c_w} gamma^(t)_{t-j} grad_W loss(f(S_c, k_{t-j}), v_{t-j})
    gd:        W_t = a_t W_{t-1} - lr_t u_t
    momentum:  S_t = b_t S_{t-1} + lr_t u_t,  W_t = a_t W_{t-1} - S_t       ("inside")
               S_t = b_t S_{t-1} + u_t,       W_t = a_t W_{t-1} - lr_t S_t  ("outside")
    muon:      momentum with W_t = a_t W_{t-1} - [lr_t] NS_k(S_t)
    o_t = f(W_t, q_t)     (retrieval="intra_chunk": includes token t's own write)
    o_t = f(S_c, q_t)     (retrieval="chunk_start": the TNT global memory)
    S_{c+1} = W_{last token of chunk c}

Window 1 without gates is TNT Eq. 3-4 with Titans' momentum and forgetting (arXiv 2501.00663
Eq. 9-14, "inside"; retention a_t = 1 - forget gate); a window c_w > 1 is the Omega rule of
ATLAS (arXiv 2505.23735 Eq. 9-11, 32-33; "outside" is its Eq. 32). The decay gates a_t, b_t
enter as logs (`log_retention`, `log_mom_decay`; `tnx.memory.gates` says how to compute them
from logits so that no saturated gate gives a non-finite value or gradient). Window gates are
token-owned ([.., L]: gamma^(t)_i = g_i for every window containing i) or window-owned
([.., L, c_w]: token t emits gamma^(t)_{t-j} = g[t, j]); None means all ones. The window
reaches c_w - 1 tokens back across the chunk boundary: their (k, v, gate) sit in the carry's
buffer and their gradients are re-evaluated at the current anchor. Chunk size 1 is the exact
token-by-token recurrence.

Inside a chunk the state is linear in the anchored gradients (`gates.chunk_coefficients`):
W_t = A_t S_c - m_t M_c - sum_e coef[t, e] g_e, so gd and momentum read with the dual form per
layer, z = A (h W_S + b_S) - m (h W_M + b_M) - (coef o (h a^T + 1)) d, without per-token
weights. Muon is nonlinear in the momentum: the momenta S_t of every position are formed from
the anchored gradients, NS is applied to each, and the weights follow the retention scan;
this path materializes W_t per position. `jax.lax.scan` runs over chunks; groups of
`remat_group` chunks are rematerialized in the backward pass. A sequence whose length is not a
multiple of C ends in a shorter chunk of the remaining tokens (the chunk in progress: the
returned carry keeps its anchor). A non-finite key, value or gate at token t reaches only what
depends on it (`tnx.memory.finite`).

Shapes (letters in `tnx.memory`): q, k [B, H, L, Dk] (keys or their features), v [B, H, L, Dv].
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation
from tnx.memory import finite
from tnx.memory import model as mm
from tnx.memory.chunk_step import DEFAULT_RULE, RETRIEVALS, UpdateRule, chunk_step

__all__ = ["DEFAULT_RULE", "RETRIEVALS", "MemoryCarry", "UpdateRule", "chunked_memory",
           "decode_step", "init_carry", "resolve_remat_group", "scan_chunks"]
FeatureMap = Callable[[jax.Array, str], jax.Array]


class MemoryCarry(NamedTuple):
  """Recurrent state of one memory: constant size in the sequence length.

  anchor: chunk-start state S_c of the chunk in progress (the gradient anchor).
  weights: current state W_t.  momentum: current S_t, or None without momentum.
  pos: tokens already absorbed in the current chunk, in [0, C).
  buf_k [c_w - 1, Dk], buf_v [c_w - 1, Dv], buf_w [c_w - 1]: the window's previous tokens and
  their token-owned gates (0 for an empty slot); empty for window 1.
  """

  anchor: mm.State
  weights: mm.State
  momentum: mm.State | None
  pos: jax.Array
  buf_k: jax.Array
  buf_v: jax.Array
  buf_w: jax.Array


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



def _single_head(cfg, rule, loss, check, chunk_size, remat_group, carry: MemoryCarry, ln, xs):
  """The primitive for one sequence and one head: xs as in `_chunk_step` with leading axis L,
  carry on a chunk boundary. Returns (o [L, Dv], carry after the last token, flags)."""
  length, c = xs[0].shape[0], chunk_size
  n_full, rem = divmod(length, c)
  step = lambda anchor, mom, buf, x, last: chunk_step(cfg, rule, loss, check, anchor, anchor,
                                                       mom, ln, buf, x, last)
  # Give the initial carry the type of the inputs (a no-op add): under shard_map a replicated
  # initial state must become "varying" like the per-device tokens before entering the scan.
  # (It also promotes the carry to the inputs' dtype, as the chunk step's result would be.)
  zero = jnp.zeros_like(xs[0][0, 0])
  state, mom, buf = jax.tree.map(lambda x: x + zero,
                                 (carry.anchor, carry.momentum,
                                  (carry.buf_k, carry.buf_v, carry.buf_w)))
  outs, flags = [], []
  if n_full:
    full = jax.tree.map(lambda x: x[: n_full * c].reshape((n_full, c) + x.shape[1:]), xs)

    def body(cr, x):
      o, s, m, b, f = step(*cr, x, c - 1)
      return (s, m, b), (o, f)

    (state, mom, buf), (o_full, f_full) = scan_chunks(body, (state, mom, buf), full, n_full,
                                                      remat_group)
    outs.append(o_full.reshape((n_full * c,) + o_full.shape[2:]))
    flags.append(jax.tree.map(lambda f: f.reshape(n_full * c), f_full))
  if rem:  # a last, shorter chunk of the remaining tokens (the chunk in progress)
    tail = jax.tree.map(lambda x: x[n_full * c:], xs)
    o_tail, w_tail, m_tail, b_tail, f_tail = step(state, mom, buf, tail, rem - 1)
    outs.append(o_tail)
    flags.append(f_tail)
    out = MemoryCarry(state, w_tail, m_tail, jnp.asarray(rem, jnp.int32), *b_tail)
  else:
    out = MemoryCarry(state, state, mom, jnp.asarray(0, jnp.int32), *buf)
  flags = jax.tree.map(lambda *f: jnp.concatenate(f), *flags) if check else None
  return jnp.concatenate(outs, axis=0), out, flags


def window_gates(window_gate: jax.Array | None, window: int, lead: tuple[int, ...]):
  """(row_gate [*lead, c_w] | None, col_gate [*lead] | None) from a token-owned [*lead] or
  window-owned [*lead, c_w] window gate."""
  if window_gate is None:
    return None, None
  if window_gate.shape == lead:
    return None, window_gate
  if window_gate.shape == lead + (window,):
    return window_gate, None
  want = ", ".join(map(str, lead))
  raise ValueError(f"window_gate must have shape [{want}] (token-owned) or [{want}, {window}] "
                   f"(window-owned), got {list(window_gate.shape)}")


def _validate_values(lr, **log_gates) -> None:
  """lr >= 0 and log gates <= 0 (gates in (0, 1]); checked on concrete arrays only."""
  lr_values = validation.concrete(lr)
  if lr_values is not None:
    validation.array_in_range("lr", lr_values, 0.0, np.inf)
    if np.any(np.isposinf(lr_values)):
      raise ValueError("lr must be finite, found inf (a step of +inf destroys the state)")
  for name, g in log_gates.items():
    x = None if g is None else validation.concrete(g)
    if x is None or not x.size:
      continue
    if not np.all(x[~np.isnan(x)] <= 0.0):
      bad = x[x > 0].ravel()[:3]
      raise ValueError(f"{name} must be the log of a gate in (0, 1], i.e. <= 0 (for example "
                       f"jax.nn.log_sigmoid(logits)), found e.g. {bad.tolist()}")
    if np.any(np.isneginf(x)):  # a gate of exactly 0: outside (0, 1], NaN in the cumsums
      raise ValueError(f"{name} must be finite: -inf is a gate of exactly 0, outside (0, 1]; "
                       "use a large negative logit instead (log_sigmoid of a finite logit is "
                       "finite)")


def _validate_inputs(cfg, rule, q, k, v, lr, lead, log_mom_decay, log_retention):
  """Shape and configuration checks shared by `chunked_memory` and `decode_step`."""
  validation.shape("k", k, q.shape)
  validation.shape("v", v, lead + (None,))
  validation.shape("lr", lr, lead)
  for name, gate in (("log_mom_decay", log_mom_decay), ("log_retention", log_retention)):
    if gate is not None:
      validation.shape(name, gate, lead)
  if log_mom_decay is not None and not rule.has_momentum:
    raise ValueError("log_mom_decay was given but rule.optimizer='gd' keeps no momentum; use "
                     "optimizer='momentum' (or 'muon')")
  if rule.optimizer == "muon" and cfg.use_bias:
    raise ValueError("optimizer='muon' orthogonalizes weight matrices and needs a memory "
                     "without biases (MemoryModelConfig(use_bias=False))")
  _validate_values(lr, log_mom_decay=log_mom_decay, log_retention=log_retention)


def _check_state(cfg, state, lead, dk: int, dv: int, name: str) -> None:
  if len(state) != cfg.depth:
    raise ValueError(f"{name} has {len(state)} layers but cfg.depth={cfg.depth}")
  for layer in state:
    if tuple(layer["w"].shape[: len(lead)]) != lead:
      raise ValueError(f"{name} leaves must start with {list(lead)}, got "
                       f"{list(layer['w'].shape)}")
  din, dout = state[0]["w"].shape[len(lead)], state[-1]["w"].shape[-1]
  if (din, dout) != (dk, dv):
    raise ValueError(f"{name} maps inputs of size {din} to {dout}, but q/k have width {dk} and "
                     f"v has width {dv}")


def chunked_memory(cfg: mm.MemoryModelConfig, state0: mm.State | None, q: jax.Array,
                   k: jax.Array, v: jax.Array, lr: jax.Array, *, chunk_size: int,
                   rule: UpdateRule = DEFAULT_RULE, log_mom_decay: jax.Array | None = None,
                   log_retention: jax.Array | None = None,
                   window_gate: jax.Array | None = None,
                   ln: dict[str, jax.Array] | None = None, carry: MemoryCarry | None = None,
                   feature_map: FeatureMap | None = None, remat_group: int | None = None,
                   check_finite: bool = False) -> tuple[jax.Array, MemoryCarry]:
  """Chunked memory over a batch of multi-head sequences.

  Args:
    cfg: memory network architecture.
    state0: initial fast weights, leaves [H, ...] shared across the batch (None when `carry`
      is given); it is vmapped over the batch, never broadcast to it, so batch-sharded
      inputs also work under an Explicit-axes mesh.
    q, k: [B, H, L, K] queries and keys (features of them with `feature_map`); v [B, H, L, Dv].
    lr: [B, H, L] per-token step sizes (>= 0).
    chunk_size: C >= 1; gradients inside a chunk are taken at its start state.
    rule: the update (window, optimizer, step placement, inner loss, retrieval).
    log_mom_decay: [B, H, L] log of the momentum decay b_t in (0, 1] (<= 0); needs a momentum
      optimizer; None there means b_t = 0.
    log_retention: [B, H, L] log of the retention a_t (<= 0; 1 - forget gate), None for 1.
    window_gate: [B, H, L] token-owned or [B, H, L, c_w] window-owned gates, None for 1.
    ln: {"scale", "bias"} [H, K] for the LN-residual wrapper (cfg.ln_residual).
    carry: continue from a previous segment's carry (leaves [B, H, ...]; it must sit on a
      chunk boundary, pos 0, which is not checked under jit).
    feature_map: phi(x [B, H, L, K], side "query" | "key") -> [B, H, L, Dk] applied to q and k
      before the memory (the window buffer keeps key features).
    remat_group: chunks per rematerialized group (see `scan_chunks`; 0 disables remat;
      None picks `resolve_remat_group`).
    check_finite: raise FloatingPointError naming the first token and head at which the inner
      loop becomes non-finite (under jit: at run time, through `jax.debug.callback`, inside
      the runtime error). Costs a little; off by default.
  Returns:
    (o [B, H, L, Dv], MemoryCarry with leaves [B, H, ...]) — the carry continues decoding.

  Stable range. The inner loop is gradient descent (with momentum: heavy ball) on the inner
  loss, so it is stable only for small enough steps. For the squared loss ||f(k) - v||^2, a
  linear memory without bias and a chunk of C tokens (window 1), the chunk's update contracts
  iff 2 lr lambda_max(sum_t k_t k_t^T) <= 2 (1 + b) (b: momentum decay, 0 without); the worst
  case (equal keys) needs lr <= (1 + b) / (C |k|^2), a bias adds a direction that every token
  shares (about (1 + b) / (C (|k|^2 + 1))), and a window of c_w tokens multiplies the sum by up
  to c_w. The layers L2-normalize q and k (|k| = 1); unnormalized keys with unit-normal entries
  have |k|^2 ~ K and need about K times smaller steps, otherwise the state grows exponentially
  and overflows to inf/NaN. Deep memories have a larger curvature; the bounds measured per
  family and chunk size (e.g. Titans with its gates: 0.0056 at C = 16, 0.0018 at C = 64, below
  its lr_max = 0.01 that a saturated lr gate reaches) are in docs/numerics.md. Muon's steps
  are normalized (NS) and cannot diverge exponentially; the dot (Hebbian) loss has no
  feedback: with a linear memory it grows at most linearly, with a deep memory its gradient
  depends on the state and it can grow exponentially (docs/numerics.md).

  Checks. Shapes, the chunk size, the rule, the memory layout and names are checked at every
  call (they are static, also under jit). Value checks (0 <= lr < inf, -inf < log gates <= 0)
  run only on concrete arrays: under jit, vmap or grad they are skipped, and out-of-range
  values then run silently (non-finite ones poison causally, from their token on).
  """
  chunk_size = validation.positive_int("chunk_size", chunk_size)
  remat_group = resolve_remat_group(remat_group, chunk_size)
  if not isinstance(rule, UpdateRule):
    raise ValueError(f"rule must be an UpdateRule, got {type(rule).__name__}")
  for name, x in (("q", q), ("k", k)):
    if x.ndim != 4:
      raise ValueError(f"{name} must have shape [B, H, L, K], got {list(x.shape)}")
    if x.shape[2] == 0 or x.shape[3] == 0:
      raise ValueError(f"{name} must hold at least one token of width >= 1 (L, K >= 1), got "
                       f"shape {list(x.shape)}")
  if feature_map is not None:
    q, k = feature_map(q, "query"), feature_map(k, "key")
  lead = q.shape[:3]
  _validate_inputs(cfg, rule, q, k, v, lr, lead, log_mom_decay, log_retention)
  row_gate, col_gate = window_gates(window_gate, rule.window, lead)
  dk, dv = q.shape[-1], v.shape[-1]
  if carry is None:
    if state0 is None:
      raise ValueError("state0 (leaves [H, ...]) or carry must be given")
    _check_state(cfg, state0, lead[1:2], dk, dv, "state0")
    carry = _head_carry(state0, rule)  # shared by the batch: vmapped with in_axes None
  else:
    if state0 is not None:
      raise ValueError("give state0 or carry, not both (the carry holds the state)")
    _check_state(cfg, carry.anchor, lead[:2], dk, dv, "carry.anchor")
    pos = validation.concrete(carry.pos)
    if pos is not None and np.any(pos != 0):
      raise ValueError(f"carry must sit on a chunk boundary (pos 0), got pos {np.unique(pos)}")
    if (carry.momentum is None) == rule.has_momentum:
      raise ValueError(f"carry.momentum must be {'set' if rule.has_momentum else 'None'} "
                       f"for optimizer={rule.optimizer!r}")
  xs = (q, k, v, lr, log_mom_decay, log_retention, row_gate, col_gate)
  o, carry, flags = _chunked_jit(cfg, rule, check_finite, chunk_size, remat_group,
                                 state0 is not None, carry, ln, xs)
  if check_finite:
    finite.report("chunked_memory", *flags)
  return o, carry


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _chunked_jit(cfg, rule, check, chunk_size, remat_group, shared, carry, ln, xs):
  """shared: the carry's leaves are [H, ...], one start for the whole batch (not broadcast to
  [B, H, ...] first, so that a batch-sharded input meets no replicated batch axis)."""
  loss = mm.resolve_loss(rule.inner_loss)
  fn = lambda c, ln_, x: _single_head(cfg, rule, loss, check, chunk_size, remat_group, c, ln_,
                                      x)
  return jax.vmap(jax.vmap(fn), in_axes=(None if shared else 0, None, 0))(carry, ln, xs)


def _head_carry(state0: mm.State, rule: UpdateRule) -> MemoryCarry:
  """A fresh carry for one sequence (leaves [H, ...]) from state0 (leaves [H, ...])."""
  heads, dtype = state0[0]["w"].shape[0], state0[0]["w"].dtype
  dk, dv, c = state0[0]["w"].shape[-2], state0[-1]["w"].shape[-1], rule.window - 1
  mom = jax.tree.map(jnp.zeros_like, state0) if rule.has_momentum else None
  return MemoryCarry(state0, state0, mom, jnp.zeros((heads,), jnp.int32),
                     jnp.zeros((heads, c, dk), dtype), jnp.zeros((heads, c, dv), dtype),
                     jnp.zeros((heads, c), dtype))


def init_carry(state0: mm.State, batch: int, rule: UpdateRule = DEFAULT_RULE) -> MemoryCarry:
  """A fresh carry (leaves [B, H, ...]) from per-head state0 (leaves [H, ...]): zero momentum
  if the rule has one, an empty window buffer."""
  return jax.tree.map(lambda x: jnp.broadcast_to(x, (batch,) + x.shape),
                      _head_carry(state0, rule))


def decode_step(cfg: mm.MemoryModelConfig, carry: MemoryCarry, q: jax.Array, k: jax.Array,
                v: jax.Array, lr: jax.Array, *, chunk_size: int,
                rule: UpdateRule = DEFAULT_RULE, log_mom_decay: jax.Array | None = None,
                log_retention: jax.Array | None = None,
                window_gate: jax.Array | None = None,
                ln: dict[str, jax.Array] | None = None,
                feature_map: FeatureMap | None = None) -> tuple[jax.Array, MemoryCarry]:
  """Absorbs one token per sequence with the chunk semantics of `chunked_memory`.

  Args: q, k [B, H, K]; v [B, H, Dv]; lr, log gates, token-owned window gates [B, H]
  (window-owned [B, H, c_w]); carry leaves [B, H, ...]; feature_map as in `chunked_memory`
  (called on [B, H, 1, K]). Value checks as there (concrete arrays only).
  Returns: (o [B, H, Dv], new carry).
  """
  chunk_size = validation.positive_int("chunk_size", chunk_size)
  if not isinstance(rule, UpdateRule):
    raise ValueError(f"rule must be an UpdateRule, got {type(rule).__name__}")
  for name, x in (("q", q), ("k", k)):
    if x.ndim != 3:
      raise ValueError(f"{name} must have shape [B, H, K], got {list(x.shape)}")
  if feature_map is not None:
    q, k = (feature_map(x[:, :, None], side)[:, :, 0] for x, side in ((q, "query"), (k, "key")))
  lead = q.shape[:2]
  _validate_inputs(cfg, rule, q, k, v, lr, lead, log_mom_decay, log_retention)
  if (carry.momentum is None) == rule.has_momentum:
    raise ValueError(f"carry.momentum must be {'set' if rule.has_momentum else 'None'} "
                     f"for optimizer={rule.optimizer!r}")
  row_gate, col_gate = window_gates(window_gate, rule.window, lead)
  xs = (q, k, v, lr, log_mom_decay, log_retention, row_gate, col_gate)
  return _decode_jit(cfg, rule, chunk_size, carry, ln, xs)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _decode_jit(cfg, rule, chunk_size, carry, ln, xs):
  loss = mm.resolve_loss(rule.inner_loss)

  def one(c: MemoryCarry, ln_, x):
    o, w, mom, buf, _ = chunk_step(cfg, rule, loss, False, c.anchor, c.weights, c.momentum,
                                    ln_, (c.buf_k, c.buf_v, c.buf_w),
                                    jax.tree.map(lambda a: a[None], x), 0)
    pos = c.pos + 1
    boundary = pos == chunk_size
    anchor = jax.tree.map(lambda wi, si: jnp.where(boundary, wi, si), w, c.anchor)
    return o[0], MemoryCarry(anchor, w, mom, jnp.where(boundary, 0, pos), *buf)

  return jax.vmap(jax.vmap(one), in_axes=(0, None, 0))(carry, ln, xs)
