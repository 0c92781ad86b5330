"""One chunk of the memory primitive for one head (`tnx.memory.chunked` scans it over chunks).

`UpdateRule` says what one inner step does; `chunk_step` computes a chunk's outputs and the
state after it: gradients at the anchor for the chunk's tokens (and the window buffer's),
selects that keep non-finite tokens causal, the dual-form read (gd, momentum) or the
materialized Muon path, the rank-structured state update.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from tnx import validation
from tnx.memory import finite, gates
from tnx.memory import inner_optim as opt
from tnx.memory import model as mm

RETRIEVALS = ("intra_chunk", "chunk_start")


@dataclasses.dataclass(frozen=True)
class UpdateRule:
  """What one inner step does (static).

  Attributes:
    window: c_w, tokens in each token's inner objective (1: Titans, TTT, TNT).
    optimizer: "gd", "momentum" or "muon" (momentum with Newton-Schulz on the direction).
    step_placement: "inside" (lr scales the gradient entering the momentum, Titans) or
      "outside" (lr scales the momentum's step, ATLAS Eq. 32); the same for gd.
    ns_steps, ns_coeffs: Newton-Schulz steps (0: no orthogonalization) and coefficients.
    inner_loss: a name in `model.INNER_LOSSES` or a callable loss(pred [Dv], target [Dv]).
    retrieval: "intra_chunk" (read W_t) or "chunk_start" (read the anchor S_c).
  """

  window: int = 1
  optimizer: str = "gd"
  step_placement: str = "inside"
  ns_steps: int = 5
  ns_coeffs: tuple[float, float, float] = opt.QUINTIC
  inner_loss: mm.InnerLoss = "squared_l2"
  retrieval: str = "intra_chunk"

  def __post_init__(self):
    validation.positive_int("window", self.window)
    validation.one_of("optimizer", self.optimizer, opt.OPTIMIZERS)
    validation.one_of("step_placement", self.step_placement, opt.STEP_PLACEMENTS)
    validation.non_negative_int("ns_steps", self.ns_steps)
    if len(self.ns_coeffs) != 3:
      raise ValueError(f"ns_coeffs must be 3 numbers (a, b, c), got {self.ns_coeffs!r}")
    mm.resolve_loss(self.inner_loss)
    validation.one_of("retrieval", self.retrieval, RETRIEVALS)

  @property
  def has_momentum(self) -> bool:
    return self.optimizer != "gd"

  def orthogonalize(self, s: jax.Array) -> jax.Array:
    if self.optimizer != "muon" or self.ns_steps == 0:
      return s
    return opt.newton_schulz(s, self.ns_steps, self.ns_coeffs)


DEFAULT_RULE = UpdateRule()  # gradient descent, window 1, squared loss, intra-chunk read


def _rank_update(layer: mm.Layer, scale, a: jax.Array, d: dict[str, jax.Array],
                 row: jax.Array, sign: float) -> mm.Layer:
  """scale * layer + sign * sum_e row[e] * (per-token gradient e) for one layer: the gradient
  of weight n is outer(a_e, d[n]_e), that of its bias d[n]_e."""
  out = {}
  for name, d_n in d.items():
    out[name] = scale * layer[name] + sign * (a.T @ (row[:, None] * d_n))
    bias = mm.PRODUCTS[name]
    if bias in layer:
      out[bias] = scale * layer[bias] + sign * (row @ d_n)
  return out


def _dual_read(cfg, base, mom, q, a, d, co: gates.Coefficients, ln):
  """o_t = f(W_t, q_t) for every token of the chunk without forming W_t (dual form)."""
  scores = {}

  def matmul(i, name, h):
    if i not in scores:  # every product of layer i reads the same input h
      bias = 1.0 if mm.PRODUCTS[name] in base[i] else 0.0
      scores[i] = co.coef * (h @ a[i].T + bias)
    z = co.a_vec[:, None] * mm.product(base[i], name, h)
    if mom is not None:
      z = z - co.m_vec[:, None] * mm.product(mom[i], name, h)
    return z - scores[i] @ d[i][name]

  return mm.finish(cfg, q, mm.forward(cfg, q, matmul), ln)


def _muon_chunk(cfg, rule, base, mom, q, a, d, gam, lr, log_mom, log_ret, last, ln):
  """Muon: momenta of every position from the anchored gradients, NS on each, weights by the
  retention scan. Returns (o [C, Dv], weights and momentum after token `last`)."""
  n = lr.shape[0]
  coef_s, p_vec = gates.momentum_coefficients(lr, log_mom, gam=gam,
                                              placement=rule.step_placement)
  la = gates.log_cumsum(log_ret, n, lr.dtype)
  wcoef = gates.decay_matrix(la)
  if rule.step_placement == "outside":
    wcoef = wcoef * lr[None, :]
  a_vec = jnp.exp(la)
  per_pos, new_w, new_m = [], [], []
  for i, layer in enumerate(base):
    w_i, s_i, m_i = {}, {}, {}
    for name, d_n in d[i].items():
      grads = jnp.einsum("ei,eo->eio", a[i], d_n)
      s = p_vec[:, None, None] * mom[i][name] + jnp.einsum("pe,eio->pio", coef_s, grads)
      w_i[name] = (a_vec[:, None, None] * layer[name]
                   - jnp.einsum("pn,nio->pio", wcoef, rule.orthogonalize(s)))
      s_i[name], m_i[name] = w_i[name][last], s[last]
    per_pos.append(w_i)
    new_w.append(s_i)
    new_m.append(m_i)
  h = mm.forward(cfg, q, lambda i, name, z: jnp.einsum("pi,pio->po", z, per_pos[i][name]))
  return mm.finish(cfg, q, h, ln), tuple(new_w), tuple(new_m)


def chunk_step(cfg: mm.MemoryModelConfig, rule: UpdateRule, loss, check: bool, anchor, base,
                mom, ln, buf, xs, last: int):
  """One chunk of one head. Gradients at `anchor`; the writes start from `base` and `mom`
  (the anchor itself inside the scan; W_{t-1} when decoding); buf = (buf_k, buf_v, buf_w).
  xs = (q, k, v, lr, log_mom_decay, log_retention, row_gate, col_gate) with leading axis C
  (gates may be None). Returns (o [C, Dv], weights, momentum, buffer after token `last`,
  check flags or None)."""
  q, k, v, lr, log_mom, log_ret, row_gate, col_gate = xs
  n, c = q.shape[0], rule.window
  in_bad = finite.nonfinite_rows((k, v, lr, log_mom, log_ret, row_gate, col_gate), n)
  k, v, lr, log_mom, log_ret, row_gate, col_gate = (
      finite.clean_rows(x, in_bad) for x in (k, v, lr, log_mom, log_ret, row_gate, col_gate))
  ones = jnp.ones((n,), lr.dtype)
  ek, ev = jnp.concatenate([buf[0], k]), jnp.concatenate([buf[1], v])
  ew = jnp.concatenate([buf[2], ones if col_gate is None else col_gate])
  a, d, _ = mm.layer_grads(cfg, anchor, ek, ev, loss, ln)
  grad_bad = finite.nonfinite_rows(a + [x for d_l in d for x in d_l.values()], ek.shape[0])
  a = [finite.clean_rows(x, grad_bad) for x in a]
  # Token weights scale the gradients; window-owned gates go into the window matrix.
  gam = None
  if c == 1:
    weight = None if row_gate is None and col_gate is None else ew * (
        1.0 if row_gate is None else row_gate[:, 0])
  else:
    weight = ew
    gam = gates.window_matrix(jnp.ones((n, c), lr.dtype) if row_gate is None else row_gate,
                              jnp.ones_like(ew), c)
  d = [{name: finite.clean_rows(x if weight is None else x * weight[:, None], grad_bad)
        for name, x in d_l.items()} for d_l in d]
  bad = in_bad | grad_bad[c - 1:]
  bad = bad.at[0].set(bad[0] | jnp.any(grad_bad[: c - 1]))
  if rule.optimizer == "muon":
    o, new_w, new_m = _muon_chunk(cfg, rule, base, mom, q, a, d, gam, lr, log_mom, log_ret,
                                  last, ln)
    if rule.retrieval == "chunk_start":
      o = mm.apply(cfg, anchor, q, ln)
  else:
    coef_args = dict(momentum=rule.has_momentum, gam=gam, placement=rule.step_placement)
    if rule.retrieval == "chunk_start":
      o = mm.apply(cfg, anchor, q, ln)
      row = gates.end_row_coefficients(lr, log_ret, log_mom, last=last, **coef_args)
    else:
      co = gates.chunk_coefficients(lr, log_ret, log_mom, **coef_args)
      o = _dual_read(cfg, base, mom, q, a, d, co, ln)
      row = gates.Coefficients(*(None if x is None else x[last] for x in co))
    new_w = tuple(_rank_update(layer, row.a_vec, a[i], d[i], row.coef, -1.0)
                  for i, layer in enumerate(base))
    new_m = None
    if mom is not None:
      new_w = jax.tree.map(lambda w, m: w - row.m_vec * m, new_w, mom)
      new_m = tuple(_rank_update(m, row.p_vec, a[i], d[i], row.coef_s, 1.0)
                    for i, m in enumerate(mom))
  if rule.retrieval == "intra_chunk":
    o = finite.poison_after(o, bad)
  new_w, new_m = finite.poison_tree((new_w, new_m), jnp.any(bad & (jnp.arange(n) <= last)))
  new_buf = (ek[last + 1:last + c], ev[last + 1:last + c], ew[last + 1:last + c])
  flags = None
  if check:
    state_bad = ~jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(new_w)]))
    flags = bad | finite.nonfinite_rows((o,), n)
    flags = flags.at[last].set(flags[last] | state_bad), in_bad
  return o, new_w, new_m, new_buf, flags
