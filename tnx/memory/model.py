"""The memory model f(W, x): a linear map or an MLP whose weights W are the fast state.

The state is a tuple of layers, each a dict {"w": [din, dout], "b": [dout]} (per head; layers
gain a leading [H] axis in the layer modules). Optional TTT-style output wrapper
f(x) = x + LN(f_res(x)) uses LayerNorm parameters that are *outer* parameters (trained by
backprop, never updated by the inner loop), passed separately as `ln = {"scale", "bias"}`.

`layer_grads` returns, for every token, the per-layer input a_l [C, din] and the gradient of
that token's inner loss with respect to the layer's pre-activation output d_l [C, dout]. The
per-token weight gradient is the outer product a_l^T d_l and the bias gradient is d_l; the
chunked primitive never materializes these products (dual form).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from tnx import validation

Layer = dict[str, jax.Array]
State = tuple[Layer, ...]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "identity": lambda x: x,
}


def _squared_l2(pred: jax.Array, target: jax.Array) -> jax.Array:
  return jnp.sum(jnp.square(pred - target))


def _half_squared_l2(pred: jax.Array, target: jax.Array) -> jax.Array:
  return 0.5 * jnp.sum(jnp.square(pred - target))


def _l1(pred: jax.Array, target: jax.Array) -> jax.Array:
  return jnp.sum(jnp.abs(pred - target))


def _huber(pred: jax.Array, target: jax.Array) -> jax.Array:
  return jnp.sum(jax.numpy.where(jnp.abs(pred - target) <= 1.0,
                                 0.5 * jnp.square(pred - target), jnp.abs(pred - target) - 0.5))


INNER_LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "squared_l2": _squared_l2,            # ||f(k) - v||^2 (Titans Eq. 12)
    "half_squared_l2": _half_squared_l2,  # 0.5 ||f(k) - v||^2
    "l1": _l1,
    "huber": _huber,
}

InnerLoss = str | Callable[[jax.Array, jax.Array], jax.Array]


def resolve_loss(loss: InnerLoss) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Maps a loss name to its per-token function loss(pred [K], target [K]) -> scalar."""
  if callable(loss):
    return loss
  return INNER_LOSSES[validation.one_of("inner_loss", loss, list(INNER_LOSSES))]


@dataclasses.dataclass(frozen=True)
class MemoryModelConfig:
  """Architecture of the memory network f.

  Attributes:
    depth: number of linear layers; 1 is a linear memory (matrix + bias), 2 the Titans default.
    expansion: hidden width = expansion * head_dim for depth >= 2 (TTT-MLP uses 4).
    activation: nonlinearity between layers (one of ACTIVATIONS).
    ln_residual: TTT-style f(x) = x + LN(f_res(x)) with outer-learned LN scale/bias.
    use_bias: whether each layer carries a bias in the fast state.
    init_scale: std of the initial weights is init_scale / sqrt(din).
    ln_eps: LayerNorm epsilon.
  """

  depth: int = 2
  expansion: int = 4
  activation: str = "gelu"
  ln_residual: bool = False
  use_bias: bool = True
  init_scale: float = 1.0
  ln_eps: float = 1e-6

  def __post_init__(self):
    validation.positive_int("depth", self.depth)
    validation.positive_int("expansion", self.expansion)
    validation.one_of("activation", self.activation, list(ACTIVATIONS))
    validation.non_negative("init_scale", self.init_scale)

  def dims(self, dim: int) -> list[tuple[int, int]]:
    """(din, dout) of each layer for a memory mapping R^dim -> R^dim."""
    if self.depth == 1:
      return [(dim, dim)]
    hidden = self.expansion * dim
    return [(dim, hidden)] + [(hidden, hidden)] * (self.depth - 2) + [(hidden, dim)]


def init_state(cfg: MemoryModelConfig, key: jax.Array, dim: int, num_heads: int,
               dtype: Any = jnp.float32) -> State:
  """Initial fast weights for `num_heads` heads: layers with w [H, din, dout], b [H, dout]."""
  validation.positive_int("dim", dim)
  validation.positive_int("num_heads", num_heads)
  layers = []
  for din, dout in cfg.dims(dim):
    key, sub = jax.random.split(key)
    w = jax.random.normal(sub, (num_heads, din, dout), dtype) * (cfg.init_scale / din**0.5)
    layer = {"w": w}
    if cfg.use_bias:
      layer["b"] = jnp.zeros((num_heads, dout), dtype)
    layers.append(layer)
  return tuple(layers)


def init_ln(dim: int, num_heads: int, dtype: Any = jnp.float32) -> dict[str, jax.Array]:
  return {"scale": jnp.ones((num_heads, dim), dtype), "bias": jnp.zeros((num_heads, dim), dtype)}


def layer_norm(h: jax.Array, ln: dict[str, jax.Array], eps: float) -> jax.Array:
  mu = jnp.mean(h, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(h - mu), axis=-1, keepdims=True)
  return (h - mu) * jax.lax.rsqrt(var + eps) * ln["scale"] + ln["bias"]


def finish(cfg: MemoryModelConfig, x: jax.Array, h: jax.Array,
           ln: dict[str, jax.Array] | None) -> jax.Array:
  """Applies the optional x + LN(.) wrapper to the last layer's output h."""
  if not cfg.ln_residual:
    return h
  if ln is None:
    raise ValueError("ln must be given (scale/bias of shape [K]) when ln_residual=True")
  return x + layer_norm(h, ln, cfg.ln_eps)


def apply(cfg: MemoryModelConfig, state: State, x: jax.Array,
          ln: dict[str, jax.Array] | None = None) -> jax.Array:
  """f(W, x) for x [..., K] with a single head's state. Returns [..., K]."""
  act = ACTIVATIONS[cfg.activation]
  h = x
  for i, layer in enumerate(state):
    h = h @ layer["w"] + (layer["b"] if "b" in layer else 0.0)
    if i < len(state) - 1:
      h = act(h)
  return finish(cfg, x, h, ln)


def layer_grads(cfg: MemoryModelConfig, state: State, k: jax.Array, v: jax.Array,
                loss: Callable[[jax.Array, jax.Array], jax.Array],
                ln: dict[str, jax.Array] | None = None
                ) -> tuple[list[jax.Array], list[jax.Array], jax.Array]:
  """Per-token layer inputs and pre-activation gradients of the inner loss at `state`.

  Args:
    k: keys [C, K]; v: targets [C, K].
  Returns:
    (a, d, losses): a[l] [C, din_l], d[l] [C, dout_l] with per-token gradient
    dloss_t/dW_l = outer(a[l][t], d[l][t]) and dloss_t/db_l = d[l][t]; losses [C].
  """
  act = ACTIVATIONS[cfg.activation]

  def total_loss(perturb):
    h, inputs = k, []
    for i, layer in enumerate(state):
      inputs.append(h)
      h = h @ layer["w"] + (layer["b"] if "b" in layer else 0.0) + perturb[i]
      if i < len(state) - 1:
        h = act(h)
    per_token = jax.vmap(loss)(finish(cfg, k, h, ln), v)
    return jnp.sum(per_token), (inputs, per_token)

  # Built from k so the perturbation carries k's type; under shard_map it is then "varying"
  # over the manual axes like the keys, and the per-token gradients are never summed across
  # devices.
  zero_col = jnp.zeros_like(k[:, :1])
  zeros = [jnp.broadcast_to(zero_col, (k.shape[0], layer["w"].shape[-1])) for layer in state]
  d, (a, losses) = jax.grad(total_loss, has_aux=True)(zeros)
  return a, d, losses
