"""The memory model f(W, x): a linear map or an MLP whose weights W are the fast state.

The state is a tuple of layers, each a dict {"w": [din, dout], "b": [dout]} (per head; layers
gain a leading [H] axis in the layer modules). Hidden layers of a gated memory (`gated=True`,
the gated MLP of ATLAS, arXiv 2505.23735, Eq. 43) also hold "w_gate" (and "b_gate"):
h -> act(h w + b) * (h w_gate + b_gate). Optional TTT-style output wrapper
f(x) = x + LN(f_res(x)) uses LayerNorm parameters that are *outer* parameters (trained by
backprop, never updated by the inner loop), passed separately as `ln = {"scale", "bias"}`.

Every fast weight enters through one product h @ W (`forward` delegates each product), so the
per-token gradient of W is the outer product of the product's input and the gradient at its
output: `layer_grads` returns, for every token, the per-layer input a_l [C, din] and, per
product, the gradient of that token's inner loss with respect to the product's output
d_l [C, dout]. The per-token weight gradient is a_l^T d_l and the bias gradient d_l; the
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


def _dot(pred: jax.Array, target: jax.Array) -> jax.Array:
  return -jnp.sum(pred * target)


def _huber(pred: jax.Array, target: jax.Array) -> jax.Array:
  return jnp.sum(jax.numpy.where(jnp.abs(pred - target) <= 1.0,
                                 0.5 * jnp.square(pred - target), jnp.abs(pred - target) - 0.5))


INNER_LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "squared_l2": _squared_l2,            # ||f(k) - v||^2 (Titans Eq. 12)
    "half_squared_l2": _half_squared_l2,  # 0.5 ||f(k) - v||^2
    "l1": _l1,
    "huber": _huber,
    "dot": _dot,                          # -<f(k), v>: gradient descent adds k v^T (Hebbian)
}

InnerLoss = str | Callable[[jax.Array, jax.Array], jax.Array]


def resolve_loss(loss: InnerLoss) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Maps a loss name to its per-token function loss(pred [K], target [K]) -> scalar."""
  if callable(loss):
    return loss
  return INNER_LOSSES[validation.one_of("inner_loss", loss, list(INNER_LOSSES))]


MEMORY_KINDS = ("linear", "mlp", "gated_mlp")
PRODUCTS = {"w": "b", "w_gate": "b_gate"}  # weight of each product -> its bias


@dataclasses.dataclass(frozen=True)
class MemoryModelConfig:
  """Architecture of the memory network f.

  Attributes:
    depth: number of linear layers; 1 is a linear memory (matrix + bias), 2 the Titans default.
    expansion: hidden width = expansion * output width for depth >= 2 (TTT-MLP uses 4).
    activation: nonlinearity between layers (one of ACTIVATIONS).
    ln_residual: TTT-style f(x) = x + LN(f_res(x)) with outer-learned LN scale/bias.
    use_bias: whether each layer carries a bias in the fast state.
    init_scale: std of the initial weights is init_scale / sqrt(din).
    ln_eps: LayerNorm epsilon.
    gated: hidden layers are gated, act(h w) * (h w_gate) (ATLAS's gated MLP).
  """

  depth: int = 2
  expansion: int = 4
  activation: str = "gelu"
  ln_residual: bool = False
  use_bias: bool = True
  init_scale: float = 1.0
  ln_eps: float = 1e-6
  gated: bool = False

  def __post_init__(self):
    validation.positive_int("depth", self.depth)
    validation.positive_int("expansion", self.expansion)
    validation.one_of("activation", self.activation, list(ACTIVATIONS))
    validation.non_negative("init_scale", self.init_scale)
    validation.positive("ln_eps", self.ln_eps)
    if self.gated and self.depth < 2:
      raise ValueError(f"gated=True needs depth >= 2 (a hidden layer to gate), got "
                       f"depth={self.depth}")

  @classmethod
  def from_kind(cls, kind: str, *, expansion: int = 4, activation: str = "gelu",
                init_scale: float = 1.0) -> MemoryModelConfig:
    """The bias-free memories of the ATLAS family: "linear" (f(z) = z W), "mlp"
    (act(z W_in) W_out) or "gated_mlp" ((act(z W_in) * (z W_gate)) W_out)."""
    validation.one_of("kind", kind, MEMORY_KINDS)
    return cls(depth=1 if kind == "linear" else 2, expansion=expansion, activation=activation,
               use_bias=False, init_scale=init_scale, gated=kind == "gated_mlp")

  @property
  def kind(self) -> str:
    """"linear" (depth 1), "gated_mlp" or "mlp"."""
    return "linear" if self.depth == 1 else ("gated_mlp" if self.gated else "mlp")

  def dims(self, dim: int, out_dim: int | None = None) -> list[tuple[int, int]]:
    """(din, dout) of each layer for a memory mapping R^dim -> R^out_dim (default dim)."""
    out_dim = dim if out_dim is None else out_dim
    if self.depth == 1:
      return [(dim, out_dim)]
    hidden = self.expansion * out_dim
    return [(dim, hidden)] + [(hidden, hidden)] * (self.depth - 2) + [(hidden, out_dim)]

  def products(self, layer: int) -> tuple[str, ...]:
    """Names of the weights of layer `layer` ("w", and "w_gate" for gated hidden layers)."""
    return ("w", "w_gate") if self.gated and layer < self.depth - 1 else ("w",)


def init_state(cfg: MemoryModelConfig, key: jax.Array, dim: int, num_heads: int,
               dtype: Any = jnp.float32, out_dim: int | None = None) -> State:
  """Initial fast weights for `num_heads` heads of a memory R^dim -> R^out_dim (default dim):
  layers with w [H, din, dout] (and w_gate), b [H, dout] (zeros)."""
  validation.positive_int("dim", dim)
  validation.positive_int("num_heads", num_heads)
  if out_dim is not None:
    validation.positive_int("out_dim", out_dim)
  layers = []
  for i, (din, dout) in enumerate(cfg.dims(dim, out_dim)):
    layer = {}
    for name in cfg.products(i):
      key, sub = jax.random.split(key)
      layer[name] = (jax.random.normal(sub, (num_heads, din, dout), dtype)
                     * (cfg.init_scale / din**0.5))
      if cfg.use_bias:
        layer[PRODUCTS[name]] = jnp.zeros((num_heads, dout), dtype)
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


MatMul = Callable[[int, str, jax.Array], jax.Array]


def forward(cfg: MemoryModelConfig, x: jax.Array, matmul: MatMul) -> jax.Array:
  """The memory network before the LN-residual wrapper, with every product of layer i,
  weight `name`, input h delegated to matmul(i, name, h) (which adds the bias)."""
  act = ACTIVATIONS[cfg.activation]
  h = x
  for i in range(cfg.depth):
    z = matmul(i, "w", h)
    if i < cfg.depth - 1:
      z = act(z)
      if cfg.gated:
        z = z * matmul(i, "w_gate", h)
    h = z
  return h


def product(layer: Layer, name: str, h: jax.Array) -> jax.Array:
  """h @ layer[name] + its bias (if any)."""
  bias = layer.get(PRODUCTS[name])
  return h @ layer[name] + (0.0 if bias is None else bias)


def apply(cfg: MemoryModelConfig, state: State, x: jax.Array,
          ln: dict[str, jax.Array] | None = None) -> jax.Array:
  """f(W, x) for x [..., K] with a single head's state. Returns [..., K]."""
  h = forward(cfg, x, lambda i, name, z: product(state[i], name, z))
  return finish(cfg, x, h, ln)


def layer_grads(cfg: MemoryModelConfig, state: State, k: jax.Array, v: jax.Array,
                loss: Callable[[jax.Array, jax.Array], jax.Array],
                ln: dict[str, jax.Array] | None = None
                ) -> tuple[list[jax.Array], list[dict[str, jax.Array]], jax.Array]:
  """Per-token layer inputs and product-output gradients of the inner loss at `state`.

  Args:
    k: keys [C, K]; v: targets [C, dout].
  Returns:
    (a, d, losses): a[l] [C, din_l], d[l][name] [C, dout_l] with per-token gradients
    dloss_t/dW_l[name] = outer(a[l][t], d[l][name][t]) and dloss_t/db = d[l][name][t];
    losses [C].
  """

  def total_loss(perturb):
    inputs = [None] * cfg.depth

    def matmul(i, name, h):
      inputs[i] = h
      return product(state[i], name, h) + perturb[i][name]

    h = forward(cfg, k, matmul)
    per_token = jax.vmap(loss)(finish(cfg, k, h, ln), v)
    return jnp.sum(per_token), (inputs, per_token)

  # Built from k so the perturbation carries k's type; under shard_map it is then "varying"
  # over the manual axes like the keys, and the per-token gradients are never summed across
  # devices.
  zero_col = jnp.zeros_like(k[:, :1])
  zeros = [{n: jnp.broadcast_to(zero_col, (k.shape[0], layer[n].shape[-1]))
            for n in cfg.products(i)} for i, layer in enumerate(state)]
  d, (a, losses) = jax.grad(total_loss, has_aux=True)(zeros)
  return a, d, losses
