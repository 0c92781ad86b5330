"""TTT-Linear and TTT-MLP layers (arXiv 2407.04620) as NNX token mixers.

The hidden state is the weights of f(x) = x + LN(f_res(x)), with f_res linear (TTT-Linear) or a
GELU MLP of hidden 4K (TTT-MLP); LN scale/bias are outer parameters. One gradient step per
token on ||f(k) - v||^2 with mini-batch semantics: inside a mini-batch of `chunk_size` tokens
(default 16) every gradient is taken at the mini-batch start state and token t reads the state
after its own write (the dual form; `tnx.memory.chunked`). The learnable initial weights W_0
are outer parameters.

Projections follow the official implementation's layout: Q and K share one projection
followed by separate causal depthwise convs (`share_qk`), V has its own projection; optional
RoPE on Q/K with positions taken modulo the mini-batch size; learnable inner learning rate
lr_t = base_lr * sigmoid(x w_lr + b) (/ K when `lr_divide_by_head_dim`); output LayerNorm, a
GELU gate GELU(x W_g) and the output projection.

Known difference from the official JAX code: it additionally scales the inner learning rate
of the token at mini-batch position i by 1/(i+1) (a running-mean loss inside each mini-batch).
That factor rescales rows of the dual-form coefficient matrix and has no token-recurrent
equivalent; tnx does not implement it (the inner lr gate can learn per-token scales).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tnx import validation
from tnx.memory import layer
from tnx.memory import model as mm
from tnx.nn import conv
from tnx.nn import layers as nnl

KINDS = ("linear", "mlp")


@dataclasses.dataclass(frozen=True)
class TTTConfig:
  """TTT layer configuration.

  Attributes:
    kind: "linear" (TTT-Linear) or "mlp" (TTT-MLP, hidden 4K, GELU).
    num_heads: H.  head_dim: K (default d_model // H).
    chunk_size: mini-batch size b (default 16).
    base_lr: inner learning rate scale; None picks the official defaults (1.0 linear, 0.1 MLP).
    lr_divide_by_head_dim: divide the inner learning rate by K (official code does).
    share_qk: Q and K share one projection (then separate convs).
    conv_width: causal depthwise conv width on Q and K (0 disables).
    use_rope: RoPE on Q/K with positions modulo the mini-batch size.
    use_gate: GELU output gate.
    retrieval / inner_loss / remat_group / learn_init / dtype / param_dtype: as in TitansConfig.
  """

  kind: str = "linear"
  num_heads: int = 4
  head_dim: int | None = None
  chunk_size: int = 16
  base_lr: float | None = None
  lr_divide_by_head_dim: bool = True
  share_qk: bool = True
  conv_width: int = 4
  use_rope: bool = True
  use_gate: bool = True
  retrieval: str = "intra_chunk"
  inner_loss: str = "squared_l2"
  remat_group: int | None = None
  learn_init: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    validation.one_of("kind", self.kind, KINDS)
    validation.positive_int("num_heads", self.num_heads)
    validation.positive_int("chunk_size", self.chunk_size)
    validation.non_negative_int("conv_width", self.conv_width)
    if self.base_lr is not None:
      validation.positive("base_lr", self.base_lr)

  @property
  def memory(self) -> mm.MemoryModelConfig:
    depth = 1 if self.kind == "linear" else 2
    return mm.MemoryModelConfig(depth=depth, expansion=4, activation="gelu", ln_residual=True,
                                init_scale=0.16)  # std 0.02 at K=64, as the official init

  @property
  def lr_scale(self) -> float:
    return self.base_lr if self.base_lr is not None else (1.0 if self.kind == "linear" else 0.1)


class TTTLayer(layer.MemoryLayer):
  """TTT-Linear / TTT-MLP token mixer: [B, L, D] -> [B, L, D]."""

  def __init__(self, d_model: int, cfg: TTTConfig, *, rngs: nnx.Rngs):
    d_model = validation.positive_int("d_model", d_model)
    self.cfg = cfg
    self.num_heads = cfg.num_heads
    self.head_dim = cfg.head_dim or d_model // cfg.num_heads
    if self.head_dim < 1 or (cfg.use_rope and self.head_dim % 2):
      raise ValueError(f"head_dim must be >= 1 (and even with RoPE), got {self.head_dim}")
    hk = self.num_heads * self.head_dim
    lin = lambda i, o, bias=False: nnx.Linear(i, o, use_bias=bias, dtype=cfg.dtype,
                                               param_dtype=cfg.param_dtype, rngs=rngs)
    self.qk_proj = lin(d_model, hk)
    self.k_only_proj = None if cfg.share_qk else lin(d_model, hk)
    self.v_proj = lin(d_model, hk)
    self.convs = nnx.List([conv.CausalDepthwiseConv(hk, cfg.conv_width, rngs=rngs,
                                                      param_dtype=cfg.param_dtype)
                           for _ in range(2)]) if cfg.conv_width else None
    self.lr_proj = lin(d_model, self.num_heads, bias=True)
    self.post_norm = nnx.LayerNorm(hk, dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
    self.gate_proj = lin(d_model, hk) if cfg.use_gate else None
    self.o_proj = lin(hk, d_model)
    self._init_memory(rngs, ln=True)

  def _conv_inputs(self, xf):
    q_raw = self.qk_proj(xf)
    return [q_raw, q_raw if self.k_only_proj is None else self.k_only_proj(xf)]

  def _project(self, x, conv_state):
    cfg = self.cfg
    xf = x.astype(cfg.dtype)
    raw, new_caches = self._convolve(self._conv_inputs(xf), conv_state)
    q, k = (nnl.split_heads(r, self.num_heads) for r in raw)
    v = nnl.split_heads(self.v_proj(xf), self.num_heads)
    if cfg.use_rope:
      length = x.shape[1]
      start = 0 if conv_state is None else conv_state[1][0]
      pos = (jnp.arange(length) + start) % cfg.chunk_size
      q, k = nnl.rope(q, pos, seq_axis=2), nnl.rope(k, pos, seq_axis=2)
    lr = cfg.lr_scale * jax.nn.sigmoid(self.lr_proj(xf)).transpose(0, 2, 1)
    if cfg.lr_divide_by_head_dim:
      lr = lr / self.head_dim
    return layer.MemoryInputs(q, k, v, lr), new_caches

  def _output(self, x, o):
    y = self.post_norm(nnl.merge_heads(o))
    if self.gate_proj is not None:
      y = y * jax.nn.gelu(self.gate_proj(x.astype(self.cfg.dtype)))
    return self.o_proj(y).astype(x.dtype)
