"""The windowed Omega rule (ATLAS Eq. 8-9, 32-41) as a chunkwise-parallel primitive.

Per head, with u_t the gated window gradient at the anchor S_c (the state at the start of
token t's chunk, spec 5.1):

    u_t = sum_{j=0}^{c-1} gamma^(t)_{t-j} grad_W loss(f(z_{t-j}; S_c), v_{t-j})
    gd:       W_t = alpha_t W_{t-1} - eta_t u_t
    momentum: S_t = theta_t S_{t-1} + u_t,  W_t = alpha_t W_{t-1} - eta_t S_t
    muon:     S_t = theta_t S_{t-1} + u_t,  W_t = alpha_t W_{t-1} - eta_t NS_k(S_t)
    o_t = f(zq_t; W_t)                      (read after the write, ATLAS Eq. 26 form)

(`step_placement="inside"` moves eta_t into S, see `inner_optim`.) The window reaches c - 1
tokens back across the chunk boundary: their (z, v, gate) sit in a buffer and their gradients
are re-evaluated at the current anchor S_c (the spec's [choice] for open item "window tokens in
the previous chunk"). Chunk size 1 is the exact per-token recurrence (gradients at W_{t-1}).

Muon semantics (nonlinear in the momentum, so stated exactly): inside a chunk every u_t is
anchored at S_c, the momenta S_t = theta_t S_{t-1} + u_t are formed for every position, NS is
applied to each S_t separately, and the weights follow the alpha/eta scan; i.e. exactly the
per-token recurrence above with anchored gradients (`sequential_reference`). With k = 0 NS steps
the orthogonalization is skipped (= momentum, on the materialized path).

Gates: gamma [L] is token-owned (gamma^(t)_i = g_i for every window containing i); gamma
[L, c] is window-owned (token t emits gamma[t, j] = gamma^(t)_{t-j}); None means all ones.

GD and momentum use the dual form: W_t = A_t S_c - m_t M_c - sum_e Coef[t, e] outer(a_e, d_e),
with banded coefficient matrices (`chunk_coefficients`), so reads are attention-like matmuls
and no per-token weights exist. Muon materializes S_t and W_t per position (b matrices per
fast weight and head). Shapes: B batch, H heads, L length, D feature width, V value width,
E = C + c - 1 window-extended chunk.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation
from tnx.memory import chunked
from tnx.memory.atlas import inner_optim as opt
from tnx.memory.atlas import memory as amem

_LOG_FLOOR = -60.0
_HI = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class OmegaRule:
  """Static description of the inner update: window c, optimizer, step placement, Newton-
  Schulz steps/coefficients (muon only; 0 steps = no orthogonalization), inner loss."""

  window: int = 1
  optimizer: str = "gd"
  step_placement: str = "outside"
  ns_steps: int = 5
  ns_coeffs: tuple[float, float, float] = opt.QUINTIC
  inner_loss: str = "squared_l2"

  def __post_init__(self):
    validation.positive_int("window", self.window)
    validation.one_of("optimizer", self.optimizer, opt.OPTIMIZERS)
    validation.one_of("step_placement", self.step_placement, opt.STEP_PLACEMENTS)
    validation.non_negative_int("ns_steps", self.ns_steps)
    if len(self.ns_coeffs) != 3:
      raise ValueError(f"ns_coeffs must be 3 numbers (a, b, c), got {self.ns_coeffs!r}")
    amem.resolve_loss(self.inner_loss)

  @property
  def has_momentum(self) -> bool:
    return self.optimizer != "gd"

  def orthogonalize(self, s: jax.Array) -> jax.Array:
    if self.optimizer != "muon" or self.ns_steps == 0:
      return s
    return opt.newton_schulz(s, self.ns_steps, self.ns_coeffs)


class OmegaCarry(NamedTuple):
  """Constant-size recurrent state: anchor S_c, weights W_t, momentum S_t (or None), tokens
  absorbed in the current chunk, and the window buffer of the last c - 1 tokens (features
  buf_z [c-1, D], targets buf_v [c-1, V], column weights buf_w [c-1]: token gate, 0 if empty)."""

  anchor: amem.Params
  weights: amem.Params
  momentum: amem.Params | None
  pos: jax.Array
  buf_z: jax.Array
  buf_v: jax.Array
  buf_w: jax.Array


def _decay(log_cum: jax.Array) -> jax.Array:
  """D[t, s] = prod_{s < m <= t} gate_m for s <= t, else 0.  [C, C]."""
  n = log_cum.shape[0]
  mask = np.tril(np.ones((n, n), bool))
  return jnp.exp(jnp.where(mask, log_cum[:, None] - log_cum[None, :], -jnp.inf))


def _log_cum(g: jax.Array) -> jax.Array:
  return jnp.cumsum(jnp.maximum(jnp.log(g), _LOG_FLOOR))


def window_matrix(row_gate: jax.Array, col_w: jax.Array, window: int) -> jax.Array:
  """Gamma [C, E] with Gamma[p, p + c - 1 - j] = row_gate[p, j] * col_w[p + c - 1 - j]: the
  banded sliding-window mask M_s of the paper (identity for c = 1) times the gates.

  row_gate [C, c] (window-owned gates, ones otherwise); col_w [E] (token gates / validity).
  """
  b, e = row_gate.shape[0], col_w.shape[0]
  gam = sum(row_gate[:, j][:, None] * jnp.eye(b, e, k=window - 1 - j, dtype=col_w.dtype)
            for j in range(window))
  return gam * col_w[None, :]


def chunk_coefficients(gam: jax.Array, eta: jax.Array, alpha: jax.Array,
                       theta: jax.Array | None, placement: str = "outside"):
  """Dual-form coefficients of one chunk (gd / momentum).

  Returns (Coef [C, E], A [C], m [C] | None, CoefS [C, E] | None, P [C] | None) with
      W_t = A_t W_0 - m_t S_0 - sum_e Coef[t, e] G_e,   S_t = P_t S_0 + sum_e CoefS[t, e] G_e
  for per-token gradients G_e at the anchor.
  """
  la = _log_cum(alpha)
  da, a_vec = _decay(la), jnp.exp(la)
  if theta is None:
    return jnp.dot(da, eta[:, None] * gam, precision=_HI), a_vec, None, None, None
  lt = _log_cum(theta)
  dt, p_vec = _decay(lt), jnp.exp(lt)
  if placement == "outside":
    coef_s = jnp.dot(dt, gam, precision=_HI)
    coef = jnp.dot(da, eta[:, None] * coef_s, precision=_HI)
    m_vec = jnp.dot(da, eta * p_vec, precision=_HI)
  else:
    coef_s = jnp.dot(dt, eta[:, None] * gam, precision=_HI)
    coef = jnp.dot(da, coef_s, precision=_HI)
    m_vec = jnp.dot(da, p_vec, precision=_HI)
  return coef, a_vec, m_vec, coef_s, p_vec


def _chunk_step(mcfg, rule: OmegaRule, carry, xs, last: int):
  """One chunk of one head. carry = (state, momentum, buf_z, buf_v, buf_w); xs = (zq, zk, v,
  eta, alpha, theta, row_gate, col_w) with leading axis C. Returns (carry after token `last`,
  o [C, V], weights after token `last`)."""
  state, mom, bz, bv, bw = carry
  zq, zk, v, eta, alpha, theta, row_gate, col_w = xs
  c = rule.window
  ez, ev = jnp.concatenate([bz, zk]), jnp.concatenate([bv, v])
  ew = jnp.concatenate([bw, col_w])
  a, d = amem.token_grads(mcfg, state, ez, ev, amem.resolve_loss(rule.inner_loss))
  gam = window_matrix(row_gate, ew, c)
  theta = theta if rule.has_momentum else None
  if rule.optimizer == "muon":
    new_w, new_m, weights_p = _muon_chunk(rule, state, mom, a, d, gam, eta, alpha, theta, last)
    o = amem.forward(mcfg, zq, lambda n, h: jnp.einsum("pi,pio->po", h, weights_p[n],
                                                       precision=_HI))
  else:
    coef, a_vec, m_vec, coef_s, p_vec = chunk_coefficients(gam, eta, alpha, theta,
                                                           rule.step_placement)

    def dual(n, h):
      out = a_vec[:, None] * jnp.dot(h, state[n], precision=_HI)
      if mom is not None:
        out = out - m_vec[:, None] * jnp.dot(h, mom[n], precision=_HI)
      scores = coef * jnp.dot(h, a[n].T, precision=_HI)
      return out - jnp.dot(scores, d[n], precision=_HI)

    o = amem.forward(mcfg, zq, dual)
    outer = lambda n, row: jnp.dot(a[n].T, row[:, None] * d[n], precision=_HI)
    new_w = {n: a_vec[last] * w - outer(n, coef[last]) for n, w in state.items()}
    new_m = None
    if mom is not None:
      new_w = {n: new_w[n] - m_vec[last] * mom[n] for n in new_w}
      new_m = {n: p_vec[last] * mom[n] + outer(n, coef_s[last]) for n in mom}
  sl = slice(last + 1, last + c)
  return (new_w, new_m, ez[sl], ev[sl], ew[sl]), o, new_w


def _muon_chunk(rule, state, mom, a, d, gam, eta, alpha, theta, last):
  inside = rule.step_placement == "inside"
  lt = _log_cum(theta)
  dt, p_vec = _decay(lt), jnp.exp(lt)
  da, a_vec = _decay(_log_cum(alpha)), jnp.exp(_log_cum(alpha))
  gw = gam * eta[:, None] if inside else gam
  wcoef = da if inside else da * eta[None, :]
  new_w, new_m, weights_p = {}, {}, {}
  for n, w0 in state.items():
    grads = jnp.einsum("ei,eo->eio", a[n], d[n], precision=_HI)
    u = jnp.einsum("pe,eio->pio", jnp.dot(dt, gw, precision=_HI), grads, precision=_HI)
    s = p_vec[:, None, None] * mom[n] + u
    dirn = rule.orthogonalize(s)
    weights_p[n] = a_vec[:, None, None] * w0 - jnp.einsum("pn,nio->pio", wcoef, dirn,
                                                          precision=_HI)
    new_w[n], new_m[n] = weights_p[n][last], s[last]
  return new_w, new_m, weights_p


def _single_head(mcfg, rule, chunk_size, remat_group, state0, mom0, buf, *xs):
  length, b = xs[0].shape[0], chunk_size
  n_full, rem = divmod(length, b)
  carry, outs = (state0, mom0) + tuple(buf), []
  if n_full:
    full = jax.tree.map(lambda x: x[: n_full * b].reshape((n_full, b) + x.shape[1:]), xs)

    def body(cr, x):
      new, o, _ = _chunk_step(mcfg, rule, cr, x, b - 1)
      return new, o

    carry, o_full = chunked.scan_chunks(body, carry, full, n_full, remat_group)
    outs.append(o_full.reshape((n_full * b,) + o_full.shape[2:]))
  anchor, pos = carry[0], 0
  weights = carry[0]
  if rem:
    pad = lambda x: jnp.pad(x[n_full * b:], [(0, b - rem)] + [(0, 0)] * (x.ndim - 1))
    (weights, mom, *buf_t), o_tail, _ = _chunk_step(mcfg, rule, carry, tuple(map(pad, xs)),
                                                     rem - 1)
    outs.append(o_tail[:rem])
    carry, pos = (anchor, mom, *buf_t), rem
  result = OmegaCarry(anchor, weights, carry[1], jnp.asarray(pos, jnp.int32), *carry[2:])
  return jnp.concatenate(outs, axis=0), result


def _gates(eta, alpha, theta, gamma, window):
  """Fills defaults: alpha = 1, theta = 0, row gates [.., L, c] and column weights [.., L]."""
  ones = jnp.ones_like(eta)
  alpha = ones if alpha is None else alpha
  theta = jnp.zeros_like(eta) if theta is None else theta
  if gamma is not None and gamma.ndim == eta.ndim + 1:
    return alpha, theta, gamma, ones
  row = jnp.ones(eta.shape + (window,), eta.dtype)
  return alpha, theta, row, ones if gamma is None else gamma


def init_carry(state0: amem.Params, batch: int, rule: OmegaRule, zdim: int,
               dtype: Any = jnp.float32) -> OmegaCarry:
  """A fresh carry (leaves [B, H, ...]) from per-head state0 (leaves [H, din, dout])."""
  s = jax.tree.map(lambda x: jnp.broadcast_to(x, (batch,) + x.shape), state0)
  heads = next(iter(state0.values())).shape[0]
  vdim = amem_out_dim(state0)
  mom = jax.tree.map(jnp.zeros_like, s) if rule.has_momentum else None
  c = rule.window - 1
  return OmegaCarry(s, s, mom, jnp.zeros((batch, heads), jnp.int32),
                    jnp.zeros((batch, heads, c, zdim), dtype),
                    jnp.zeros((batch, heads, c, vdim), dtype), jnp.zeros((batch, heads, c), dtype))


def amem_out_dim(state: amem.Params) -> int:
  return (state["w"] if "w" in state else state["w_out"]).shape[-1]


def omega_memory(mcfg: amem.AtlasMemoryConfig, rule: OmegaRule, state0: amem.Params,
                 zq: jax.Array, zk: jax.Array, v: jax.Array, eta: jax.Array, *,
                 chunk_size: int, alpha: jax.Array | None = None,
                 theta: jax.Array | None = None, gamma: jax.Array | None = None,
                 carry: OmegaCarry | None = None, remat_group: int | None = None
                 ) -> tuple[jax.Array, OmegaCarry]:
  """Chunked Omega-rule memory over a batch of multi-head sequences.

  Args:
    mcfg, rule: memory network and inner update.
    state0: initial fast weights, name -> [H, D, .] (shared by the batch).
    zq, zk: [B, H, L, D] query/key features; v: [B, H, L, V] targets.
    eta: [B, H, L] step sizes (>= 0); alpha: retention in (0, 1] (None = 1);
    theta: momentum decay in [0, 1] (momentum/muon; None = 0);
    gamma: window gates [B, H, L] (token-owned) or [B, H, L, c] (window-owned), None = 1.
    chunk_size: C >= 1 (anchor refresh period; 1 = exact recurrence).
    carry: continue from a previous segment's carry (must sit on a chunk boundary, pos 0);
      None starts from state0 with an empty window buffer.
    remat_group: chunks per rematerialized group (0 = off; None = automatic, see
      `tnx.memory.chunked.resolve_remat_group`).
  Returns:
    (o [B, H, L, V], OmegaCarry with leaves [B, H, ...]) after the last token.
  """
  chunk_size = validation.positive_int("chunk_size", chunk_size)
  remat_group = chunked.resolve_remat_group(remat_group, chunk_size)
  if zq.ndim != 4:
    raise ValueError(f"zq must have shape [B, H, L, D], got {list(zq.shape)}")
  b, h, length, zdim = zq.shape
  validation.shape("zk", zk, zq.shape)
  validation.shape("v", v, (b, h, length, None))
  validation.shape("eta", eta, (b, h, length))
  for name, g in (("alpha", alpha), ("theta", theta)):
    if g is not None:
      validation.shape(name, g, (b, h, length))
  if gamma is not None and gamma.shape not in ((b, h, length), (b, h, length, rule.window)):
    raise ValueError(f"gamma must have shape [{b}, {h}, {length}] or "
                     f"[{b}, {h}, {length}, {rule.window}], got {list(gamma.shape)}")
  for name, x, lo, hi in (("eta", eta, 0.0, np.inf), ("alpha", alpha, 0.0, 1.0),
                          ("theta", theta, 0.0, 1.0), ("gamma", gamma, 0.0, np.inf)):
    if x is not None and validation.is_concrete(x):
      validation.array_in_range(name, x, lo, hi)
  if carry is None:
    carry = init_carry(state0, b, rule, zdim, zq.dtype)
  alpha, theta, row, col = _gates(eta, alpha, theta, gamma, rule.window)
  fn = lambda s, m, buf, *xs: _single_head(mcfg, rule, chunk_size, remat_group, s, m, buf, *xs)
  mom = carry.momentum
  buf = (carry.buf_z, carry.buf_v, carry.buf_w)
  per = jax.vmap(jax.vmap(fn))
  return per(carry.anchor, mom, buf, zq, zk, v, eta, alpha, theta, row, col)


def _decode_one(mcfg, rule, chunk_size, carry: OmegaCarry, zq, zk, v, eta, alpha, theta,
                row, col):
  ez = jnp.concatenate([carry.buf_z, zk[None]])
  ev = jnp.concatenate([carry.buf_v, v[None]])
  ew = jnp.concatenate([carry.buf_w, col[None]])
  a, d = amem.token_grads(mcfg, carry.anchor, ez, ev, amem.resolve_loss(rule.inner_loss))
  wts = ew * row[::-1]
  u = {n: jnp.dot(a[n].T, wts[:, None] * d[n], precision=_HI) for n in a}
  mom = None
  if rule.has_momentum:
    mom = {n: opt.momentum_step(carry.momentum[n], u[n], theta, eta, rule.step_placement)
           for n in u}
    w = {n: opt.weight_step(carry.weights[n], rule.orthogonalize(mom[n]), alpha, eta,
                            rule.step_placement, True) for n in u}
  else:
    w = {n: alpha * carry.weights[n] - eta * u[n] for n in u}
  o = amem.apply(mcfg, w, zq)
  pos = carry.pos + 1
  boundary = pos == chunk_size
  anchor = jax.tree.map(lambda x, y: jnp.where(boundary, x, y), w, carry.anchor)
  return o, OmegaCarry(anchor, w, mom, jnp.where(boundary, 0, pos), ez[1:], ev[1:], ew[1:])


def omega_decode_step(mcfg: amem.AtlasMemoryConfig, rule: OmegaRule, carry: OmegaCarry,
                      zq: jax.Array, zk: jax.Array, v: jax.Array, eta: jax.Array, *,
                      chunk_size: int, alpha: jax.Array | None = None,
                      theta: jax.Array | None = None, gamma: jax.Array | None = None
                      ) -> tuple[jax.Array, OmegaCarry]:
  """Absorbs one token per sequence with the chunk semantics of `omega_memory`.

  zq, zk [B, H, D]; v [B, H, V]; eta/alpha/theta [B, H]; gamma [B, H] or [B, H, c].
  Returns (o [B, H, V], new carry).
  """
  chunk_size = validation.positive_int("chunk_size", chunk_size)
  if zq.ndim != 3:
    raise ValueError(f"zq must have shape [B, H, D], got {list(zq.shape)}")
  validation.shape("zk", zk, zq.shape)
  validation.shape("eta", eta, zq.shape[:2])
  alpha, theta, row, col = _gates(eta, alpha, theta, gamma, rule.window)
  fn = lambda c, *xs: _decode_one(mcfg, rule, chunk_size, c, *xs)
  return jax.vmap(jax.vmap(fn))(carry, zq, zk, v, eta, alpha, theta, row, col)


def sequential_reference(mcfg: amem.AtlasMemoryConfig, rule: OmegaRule, state0: amem.Params,
                         zq, zk, v, eta, *, chunk_size: int, alpha=None, theta=None,
                         gamma=None) -> tuple[jax.Array, amem.Params]:
  """Slow reference for ONE head: a Python loop over tokens and window entries, each gradient
  from `jax.grad` at the chunk-start state, weights and momenta materialized. zq/zk [L, D],
  v [L, V], gates [L] (gamma [L] or [L, c]); state0 leaves [din, dout]. Returns (o, W_L)."""
  loss = amem.resolve_loss(rule.inner_loss)
  token_loss = lambda p, z, t: loss(amem.apply(mcfg, p, z), t)
  anchor = w = state0
  mom = jax.tree.map(jnp.zeros_like, state0)
  outs = []
  for t in range(zq.shape[0]):
    u = jax.tree.map(jnp.zeros_like, state0)
    for j in range(rule.window):
      i = t - j
      if i < 0:
        continue
      if gamma is None:
        g = 1.0
      else:
        g = gamma[t, j] if gamma.ndim == 2 else gamma[i]
      gi = jax.grad(token_loss)(anchor, zk[i], v[i])
      u = jax.tree.map(lambda x, y: x + g * y, u, gi)
    a_t = 1.0 if alpha is None else alpha[t]
    if rule.has_momentum:
      th = 0.0 if theta is None else theta[t]
      mom = {n: opt.momentum_step(mom[n], u[n], th, eta[t], rule.step_placement) for n in u}
      w = {n: opt.weight_step(w[n], rule.orthogonalize(mom[n]), a_t, eta[t],
                              rule.step_placement, True) for n in u}
    else:
      w = {n: a_t * w[n] - eta[t] * u[n] for n in u}
    outs.append(amem.apply(mcfg, w, zq[t]))
    if (t + 1) % chunk_size == 0:
      anchor = w
  return jnp.stack(outs), w
