"""Per-token inner gradients with a written-out backward pass (second order in closed form).

`tnx.memory.model.layer_grads` returns, for every token t of a chunk, the memory's layer inputs
a_l[t] and the gradients d_l[t] of the token's inner loss at each product's output; the chunk
step builds its reads and state updates from them, so the outer gradient (training the layer)
differentiates through a gradient: JAX's autodiff of `jax.grad`. `layer_grads` here computes
the same (a, d) and has a `jax.custom_vjp` whose backward pass is the adjoint of the inner
backward written out for a plain MLP or linear memory (the `tnx.memory.model` network without
gates). With z_l = h_l W_l + b_l, h_{l+1} = act(z_l), h_0 = k, e_l = d_{l+1} W_{l+1}^T and

    d_l = act'(z_l) * e_l  (l < depth - 1),    d_last = dloss/dz_last (loss after the optional
                                                 x + LN(.) wrapper),

the cotangents (bars) of the outputs a_l = h_l and d_l propagate, first back along the inner
backward chain (l = 0, 1, ...), then along the forward chain (l = last, ..., 0):

    z_l^bar  = act''(z_l) * e_l * d_l^bar,   e_l^bar = act'(z_l) * d_l^bar
    d_{l+1}^bar += e_l^bar W_{l+1},          W_{l+1}^bar += (e_l^bar)^T d_{l+1}
    (z_last, k, v, ln)^bar += VJP of dloss/dz_last at d_last^bar (row-wise, local autodiff)
    W_l^bar += h_l^T z_l^bar,  b_l^bar += sum_t z_l^bar,  h_l^bar = a_l^bar + z_l^bar W_l^T
    z_{l-1}^bar += act'(z_{l-1}) * h_l^bar,  k^bar += h_0^bar.

The forward pass keeps z_l, e_l, d_l and h_l as residuals, so the backward needs no recompute
of the memory network; act' and act'' come from the activation's own derivatives (elementwise
VJPs), the row-wise loss and LN terms from a VJP of dloss/dz_last. Values and gradients equal
autodiff's (tests/memory/test_chunk_vjp.py, float64); tokens stay independent (no cross-token
arithmetic besides the sums into W^bar and b^bar), so non-finite rows behave as under autodiff.

Shapes (one head): k [C, K], v [C, Dv]; state layers {"w": [din, dout], "b": [dout]};
a[l] [C, din_l]; d[l]["w"] [C, dout_l].
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from tnx.memory import model as mm

LOSSES = ("squared_l2", "half_squared_l2")  # inner losses the written-out backward serves


def applies(cfg: mm.MemoryModelConfig, inner_loss: mm.InnerLoss) -> bool:
  """Whether `layer_grads` here serves this memory and loss: a plain MLP or linear memory
  (not gated) and a squared loss by name."""
  return not cfg.gated and isinstance(inner_loss, str) and inner_loss in LOSSES


def _out_grad(cfg, loss_name, z_last, k, v, ln):
  """dloss/dz_last [C, Dv]: the gradient of the tokens' losses at the last product's output."""
  loss = mm.INNER_LOSSES[loss_name]
  total = lambda z: jnp.sum(jax.vmap(loss)(mm.finish(cfg, k, z, ln), v))
  return jax.grad(total)(z_last)


def _act_vjp(act, z, cot):
  """act'(z) * cot as the activation's VJP (the same arithmetic as autodiff)."""
  return jax.vjp(act, z)[1](cot)[0]


def _forward(cfg, loss_name, state, k, v, ln):
  """(h [depth] layer inputs, z [depth] product outputs, e [depth - 1], d [depth])."""
  act = mm.ACTIVATIONS[cfg.activation]
  hs, zs = [k], []
  for i in range(cfg.depth):
    zs.append(mm.product(state[i], "w", hs[-1]))
    if i < cfg.depth - 1:
      hs.append(act(zs[-1]))
  ds = [_out_grad(cfg, loss_name, zs[-1], k, v, ln)]
  es = []
  for i in range(cfg.depth - 2, -1, -1):
    es.insert(0, ds[0] @ state[i + 1]["w"].T)
    ds.insert(0, _act_vjp(act, zs[i], es[0]))
  return hs, zs, es, ds


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def layer_grads(cfg: mm.MemoryModelConfig, loss_name: str, state: mm.State, k: jax.Array,
                v: jax.Array, ln: dict[str, jax.Array] | None
                ) -> tuple[list[jax.Array], list[dict[str, jax.Array]]]:
  """(a, d) of `tnx.memory.model.layer_grads` (without the losses) for a memory and loss that
  `applies`: a[l] [C, din_l], d[l] = {"w": [C, dout_l]}."""
  hs, _, _, ds = _forward(cfg, loss_name, state, k, v, ln)
  return hs, [{"w": d} for d in ds]


def _fwd(cfg, loss_name, state, k, v, ln):
  hs, zs, es, ds = _forward(cfg, loss_name, state, k, v, ln)
  return (hs, [{"w": d} for d in ds]), (state, k, v, ln, hs, zs, es, ds)


def _bwd(cfg, loss_name, res, cot):
  state, k, v, ln, hs, zs, es, ds = res
  a_bar, d_bar = cot
  act = mm.ACTIVATIONS[cfg.activation]
  depth = cfg.depth
  dd_bar = [x["w"] for x in d_bar]
  z_bar, w_chain = [None] * depth, [None] * depth
  for i in range(depth - 1):  # adjoint of the inner backward chain, first layer first
    second = lambda z, e: _act_vjp(act, z, e)
    z_bar[i], e_bar = jax.vjp(second, zs[i], es[i])[1](dd_bar[i])
    dd_bar[i + 1] = dd_bar[i + 1] + e_bar @ state[i + 1]["w"]
    w_chain[i + 1] = e_bar.T @ ds[i + 1]
  out_vjp = jax.vjp(lambda z, k_, v_, ln_: _out_grad(cfg, loss_name, z, k_, v_, ln_),
                    zs[-1], k, v, ln)[1]
  zb_last, k_bar, v_bar, ln_bar = out_vjp(dd_bar[-1])
  z_bar[-1] = zb_last
  state_bar = [None] * depth
  for i in range(depth - 1, -1, -1):  # adjoint of the forward chain, last layer first
    zb = z_bar[i]
    w_bar = hs[i].T @ zb
    layer_bar = {"w": w_bar if w_chain[i] is None else w_bar + w_chain[i]}
    if "b" in state[i]:
      layer_bar["b"] = jnp.sum(zb, axis=0)
    state_bar[i] = layer_bar
    h_bar = a_bar[i] + zb @ state[i]["w"].T
    if i > 0:
      z_bar[i - 1] = z_bar[i - 1] + _act_vjp(act, zs[i - 1], h_bar)
    else:
      k_bar = k_bar + h_bar
  return tuple(state_bar), k_bar, v_bar, ln_bar


layer_grads.defvjp(_fwd, _bwd)
