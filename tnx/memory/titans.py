"""Titans neural long-term memory (arXiv 2501.00663, section 3 and 4.4) as an NNX token mixer.

Per token: q/k/v = SiLU(causal depthwise conv(x W_{q,k,v})), q and k L2-normalized per head;
data-dependent inner learning rate lr_t = lr_max * sigmoid(x w_lr), momentum decay
beta_t = sigmoid(x w_beta) and forget gate alpha_t = sigmoid(x w_alpha) per head; the deep
memory (MLP by default) is written with the chunked primitive (`tnx.memory.chunked`) and read
with q; the read is RMS-normalized per head, gated by sigmoid(x W_g), and projected back.

Choices the paper leaves open, with their defaults (all config fields):
  * order conv -> SiLU -> L2-norm (the paper lists the three without fixing the order);
  * gate initial biases giving lr ~ 0.12 * lr_max, beta ~ 0.88, alpha ~ 0.018;
  * memory MLP of depth 2, hidden 4 * head_dim, GELU; initial memory state learned;
  * retrieval after the write (intra-chunk state, TNT convention).
TNT's experiments use a simplified Titans without momentum and forgetting: set
`momentum=False, forget=False`.
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


@dataclasses.dataclass(frozen=True)
class TitansConfig:
  """Titans memory layer configuration.

  Attributes:
    num_heads: H.  head_dim: K (default d_model // H).
    memory: memory network f (depth, width, activation, LN-residual).
    chunk_size: C of the chunked primitive (training); decode keeps the same chunk semantics.
    momentum / forget: Titans' surprise momentum (Eq. 9-10) and forget gate (Eq. 13).
    lr_max: upper bound of the data-dependent inner learning rate. The default 0.01 keeps
      the inner loop stable at initialization for chunks up to 64 with the default 4x-wide
      MLP memory and momentum (measured: 0.03 diverges at C=64, 0.1 at C=8); a chunk sums C
      anchored gradients, so larger chunks need a smaller bound.
    lr_bias_init / mom_bias_init / forget_bias_init: initial biases of the three gates.
    conv_width: width of the causal depthwise convs after q/k/v (0 disables them).
    output_gate: sigmoid(x W_g) gate before the output projection.
    retrieval: "intra_chunk" or "chunk_start" (see tnx.memory.chunked).
    inner_loss: inner (associative-memory) loss, default ||f(k) - v||^2 (Titans Eq. 12).
    remat_group: chunks per rematerialized group in the backward pass (0 = off; None =
      groups of about 64 tokens, `tnx.memory.chunked.resolve_remat_group`).
    learn_init: whether the initial memory state is an outer parameter.
    dtype: compute dtype of the layer (the inner loop runs in it; float32 recommended).
    param_dtype: dtype of all parameters.
  """

  num_heads: int = 4
  head_dim: int | None = None
  memory: mm.MemoryModelConfig = mm.MemoryModelConfig(depth=2, expansion=4, activation="gelu")
  chunk_size: int = 16
  momentum: bool = True
  forget: bool = True
  lr_max: float = 0.01
  lr_bias_init: float = -2.0
  mom_bias_init: float = 2.0
  forget_bias_init: float = -4.0
  conv_width: int = 4
  output_gate: bool = True
  retrieval: str = "intra_chunk"
  inner_loss: str = "squared_l2"
  remat_group: int | None = None
  learn_init: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    validation.positive_int("num_heads", self.num_heads)
    validation.positive_int("chunk_size", self.chunk_size)
    validation.non_negative_int("conv_width", self.conv_width)
    validation.positive("lr_max", self.lr_max)


class TitansMemory(layer.MemoryLayer):
  """Titans neural memory token mixer: [B, L, D] -> [B, L, D]."""

  def __init__(self, d_model: int, cfg: TitansConfig, *, rngs: nnx.Rngs):
    d_model = validation.positive_int("d_model", d_model)
    self.cfg = cfg
    self.num_heads = cfg.num_heads
    self.head_dim = cfg.head_dim or d_model // cfg.num_heads
    if self.head_dim < 1:
      raise ValueError(f"head_dim must be >= 1; d_model={d_model}, num_heads={cfg.num_heads}")
    hk = self.num_heads * self.head_dim
    lin = lambda i, o, bias=False: nnx.Linear(i, o, use_bias=bias, dtype=cfg.dtype,
                                               param_dtype=cfg.param_dtype, rngs=rngs)
    self.q_proj, self.k_proj, self.v_proj = lin(d_model, hk), lin(d_model, hk), lin(d_model, hk)
    self.convs = nnx.List([conv.CausalDepthwiseConv(hk, cfg.conv_width, rngs=rngs,
                                                      param_dtype=cfg.param_dtype)
                           for _ in range(3)]) if cfg.conv_width else None
    self.gate_proj = lin(d_model, 3 * self.num_heads, bias=True)
    h = self.num_heads
    bias = jnp.concatenate([jnp.full((h,), cfg.lr_bias_init), jnp.full((h,), cfg.mom_bias_init),
                            jnp.full((h,), cfg.forget_bias_init)]).astype(cfg.param_dtype)
    self.gate_proj.bias = nnx.Param(bias)
    self.out_norm = nnl.HeadNorm(self.num_heads, self.head_dim, param_dtype=cfg.param_dtype)
    self.out_gate = lin(d_model, hk) if cfg.output_gate else None
    self.o_proj = lin(hk, d_model)
    self._init_memory(rngs, ln=cfg.memory.ln_residual)

  def _conv_inputs(self, xf):
    return [self.q_proj(xf), self.k_proj(xf), self.v_proj(xf)]

  def _project(self, x, conv_state):
    """x [B, L, D] (L = 1 when decoding with conv_state = (caches, pos))."""
    xf = x.astype(self.cfg.dtype)
    raw, new_caches = self._convolve(self._conv_inputs(xf), conv_state)
    q, k, v = (nnl.split_heads(jax.nn.silu(r), self.num_heads) for r in raw)
    q, k = nnl.l2_normalize(q), nnl.l2_normalize(k)
    logits = self.gate_proj(xf).transpose(0, 2, 1)  # [B, 3H, L]
    h = self.num_heads
    lr = self.cfg.lr_max * jax.nn.sigmoid(logits[:, :h])
    mom = jax.nn.sigmoid(logits[:, h:2 * h]) if self.cfg.momentum else None
    fgt = jax.nn.sigmoid(logits[:, 2 * h:]) if self.cfg.forget else None
    return layer.MemoryInputs(q, k, v, lr, mom, fgt), new_caches

  def _output(self, x, o):
    y = nnl.merge_heads(self.out_norm(o))
    if self.out_gate is not None:
      y = y * jax.nn.sigmoid(self.out_gate(x.astype(self.cfg.dtype)))
    return self.o_proj(y).astype(x.dtype)
