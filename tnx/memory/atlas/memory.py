"""Memory networks of the ATLAS family and their per-token gradients at an anchor state.

Fast weights are a dict name -> W [din, dout] (row convention: the memory maps z [D] to
z @ W; the spec's column convention is the transpose). Kinds:
  linear:     f(z) = z W
  mlp:        f(z) = act(z W_in) W_out                       (ATLAS Eq. 42 without residual)
  gated_mlp:  f(z) = (act(z W_in) * (z W_gate)) W_out        (Atlas++, Eq. 43 w/o residual)
with hidden width expansion * dout. The residual `z + ...` of Eq. 42-43 is handled by the
mixers through the raw (pre-feature) key/query, which is exact: for losses of pred - target
the residual shifts the target, and the dot loss' gradient does not depend on it.

Every fast weight enters through a product h @ W, so the per-token gradient of W is the outer
product outer(a_t, d_t) of its input a_t and the gradient d_t at its output (as in
`tnx.memory.model.layer_grads`, generalized here to non-sequential graphs such as the gated
MLP): `token_grads` returns a, d per weight and the chunked primitive never forms the products
unless the update is not rank structured (Muon).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from tnx import validation
from tnx.memory import model as mm

Params = dict[str, jax.Array]
MatMul = Callable[[str, jax.Array], jax.Array]
MEMORY_KINDS = ("linear", "mlp", "gated_mlp")


def _dot_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
  return -jnp.sum(pred * target)


LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    **mm.INNER_LOSSES,
    "dot": _dot_loss,  # -<f(k), v>: gradient descent adds v k^T (Hebbian; spec erratum E2)
}


def resolve_loss(loss: str | Callable) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """A per-token loss(pred [dv], target [dv]) -> scalar from its name or itself."""
  if callable(loss):
    return loss
  return LOSSES[validation.one_of("inner_loss", loss, list(LOSSES))]


@dataclasses.dataclass(frozen=True)
class AtlasMemoryConfig:
  """Memory network: kind, hidden expansion (hidden = expansion * dout), activation, and the
  std init_scale / sqrt(din) of the initial weights."""

  kind: str = "mlp"
  expansion: int = 4
  activation: str = "gelu"
  init_scale: float = 1.0

  def __post_init__(self):
    validation.one_of("kind", self.kind, MEMORY_KINDS)
    validation.positive_int("expansion", self.expansion)
    validation.one_of("activation", self.activation, list(mm.ACTIVATIONS))
    validation.non_negative("init_scale", self.init_scale)

  def shapes(self, din: int, dout: int) -> dict[str, tuple[int, int]]:
    hidden = self.expansion * dout
    if self.kind == "linear":
      return {"w": (din, dout)}
    out = {"w_in": (din, hidden), "w_out": (hidden, dout)}
    if self.kind == "gated_mlp":
      out["w_gate"] = (din, hidden)
    return out


def init_memory(cfg: AtlasMemoryConfig, key: jax.Array, din: int, dout: int, num_heads: int,
                dtype: Any = jnp.float32) -> Params:
  """Initial fast weights for `num_heads` heads: name -> [H, din, dout]."""
  validation.positive_int("din", din)
  validation.positive_int("dout", dout)
  validation.positive_int("num_heads", num_heads)
  out = {}
  for name, (i, o) in sorted(cfg.shapes(din, dout).items()):
    key, sub = jax.random.split(key)
    out[name] = jax.random.normal(sub, (num_heads, i, o), dtype) * (cfg.init_scale / i**0.5)
  return out


def forward(cfg: AtlasMemoryConfig, z: jax.Array, matmul: MatMul) -> jax.Array:
  """The memory graph with every product h @ W_name delegated to matmul(name, h)."""
  if cfg.kind == "linear":
    return matmul("w", z)
  act = mm.ACTIVATIONS[cfg.activation]
  h = act(matmul("w_in", z))
  if cfg.kind == "gated_mlp":
    h = h * matmul("w_gate", z)
  return matmul("w_out", h)


def apply(cfg: AtlasMemoryConfig, params: Params, z: jax.Array) -> jax.Array:
  """f(z; W) for z [..., D] with one head's weights. Returns [..., dout]."""
  return forward(cfg, z, lambda n, h: h @ params[n])


def token_grads(cfg: AtlasMemoryConfig, params: Params, z: jax.Array, v: jax.Array,
                loss: Callable[[jax.Array, jax.Array], jax.Array]
                ) -> tuple[Params, Params]:
  """Inputs a[name] [E, din] and output gradients d[name] [E, dout] of every product, for the
  per-token losses loss(f(z_e; params), v_e); dloss_e/dW_name = outer(a[name][e], d[name][e]).

  z [E, D], v [E, dout].
  """

  def total(perturb):
    inputs = {}

    def matmul(name, h):
      inputs[name] = h
      return h @ params[name] + perturb[name]

    pred = forward(cfg, z, matmul)
    return jnp.sum(jax.vmap(loss)(pred, v)), inputs

  zeros = {n: jnp.zeros((z.shape[0], w.shape[-1]), z.dtype) for n, w in params.items()}
  d, a = jax.grad(total, has_aux=True)(zeros)
  return a, d
