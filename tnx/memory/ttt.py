"""TTT-Linear and TTT-MLP layers (arXiv 2407.04620) as memory mixers.

The hidden state is the weights of f(x) = x + LN(f_res(x)), with f_res linear (TTT-Linear) or a
GELU MLP of hidden 4K (TTT-MLP); LN scale/bias are outer parameters. One gradient step per
token on ||f(k) - v||^2 with mini-batch semantics: inside a mini-batch of `chunk_size` tokens
(default 16) every gradient is taken at the mini-batch start state and token t reads the state
after its own write (the dual form; `tnx.memory.chunked`). The learnable initial weights W_0
are outer parameters.

Projections follow the official implementation's layout: Q and K share one projection
followed by separate causal depthwise convs (`share_qk`), V has its own projection and no
conv; optional RoPE on Q/K with positions taken modulo the mini-batch size; learnable inner
learning rate lr_t = lr_max * sigmoid(x w_lr + b) (/ K when `lr_divide_by_head_dim`); output
LayerNorm, a GELU gate GELU(x W_g) and the output projection.

Known difference from the official JAX code: it additionally scales the inner learning rate
of the token at mini-batch position i by 1/(i+1) (a running-mean loss inside each mini-batch).
That factor rescales rows of the dual-form coefficient matrix and has no token-recurrent
equivalent; tnx does not implement it (the inner lr gate can learn per-token scales).
"""

from __future__ import annotations

import dataclasses

from flax import nnx

from tnx import validation
from tnx.memory import chunked
from tnx.memory import model as mm
from tnx.memory.mixer import ChunkedMemory, MemoryMixer, Projection, ReadOut, family_heads
from tnx.memory.mixer_config import MemoryLayerConfig

KINDS = ("linear", "mlp")


@dataclasses.dataclass(frozen=True)
class TTTConfig(MemoryLayerConfig):
  """TTT layer: the shared fields (`MemoryLayerConfig`, here with TTT's defaults: no
  activation or L2 norm on q/k/v, lr bias 0, no momentum or forgetting) plus

  Attributes:
    kind: "linear" (TTT-Linear) or "mlp" (TTT-MLP, hidden 4K, GELU).
    memory: memory network; None = the kind's (depth 1 or 2, LN residual, init std 0.02 at
      K = 64 as the official init), resolved at construction.
    chunk_size: mini-batch size b (default 16).
    retrieval: as in TitansConfig ("intra_chunk", TTT's read after the write).
    lr_max: None = the official defaults (1.0 linear, 0.1 MLP), resolved at construction.
    lr_divide_by_head_dim: divide the inner learning rate by K (official code does).
    share_qk: Q and K share one projection (then separate convs).
    use_rope: RoPE on Q/K with positions modulo the mini-batch size.
  The output gate is GELU(x W_g) (`output_gate`).
  """

  kind: str = "linear"
  memory: mm.MemoryModelConfig | None = None
  chunk_size: int = 16
  retrieval: str = "intra_chunk"
  lr_max: float | None = None
  lr_bias_init: float = 0.0
  lr_divide_by_head_dim: bool = True
  share_qk: bool = True
  use_rope: bool = True
  qkv_activation: str = "identity"
  qk_l2_norm: bool = False

  def __post_init__(self):
    validation.one_of("kind", self.kind, KINDS)
    if self.memory is None:
      object.__setattr__(self, "memory", kind_memory(self.kind))
    if self.lr_max is None:
      object.__setattr__(self, "lr_max", KIND_LR_MAX[self.kind])
    super().__post_init__()
    validation.positive_int("chunk_size", self.chunk_size)
    validation.one_of("retrieval", self.retrieval, chunked.RETRIEVALS)
    if not isinstance(self.memory, mm.MemoryModelConfig):
      raise ValueError(f"memory must be a MemoryModelConfig, got {self.memory!r}")
    if not self.memory.ln_residual:
      raise ValueError("memory.ln_residual must be True for TTT (f(x) = x + LN(f_res(x)))")

  def lr_scale(self, head_dim: int) -> float:
    return float(self.lr_max) / (head_dim if self.lr_divide_by_head_dim else 1)

  def rope_period(self) -> int | None:
    return self.chunk_size if self.use_rope else None

  def with_kind(self, kind: str) -> TTTConfig:
    """This config for another kind: `memory` and `lr_max` follow the new kind's defaults
    where they hold the current kind's defaults, and are kept where they were set."""
    memory = None if self.memory == kind_memory(self.kind) else self.memory
    lr_max = None if self.lr_max == KIND_LR_MAX[self.kind] else self.lr_max
    return dataclasses.replace(self, kind=kind, memory=memory, lr_max=lr_max)


KIND_LR_MAX = {"linear": 1.0, "mlp": 0.1}


def kind_memory(kind: str) -> mm.MemoryModelConfig:
  """The memory network of TTT-Linear (depth 1) or TTT-MLP (depth 2, hidden 4K, GELU), both
  LN-residual with init std 0.16 / sqrt(K) (0.02 at K = 64, as the official init)."""
  return mm.MemoryModelConfig(depth=1 if kind == "linear" else 2, expansion=4,
                              activation="gelu", ln_residual=True, init_scale=0.16)


class TTTLayer(MemoryMixer):
  """TTT-Linear / TTT-MLP token mixer: [B, L, D] -> [B, L, D]."""

  def __init__(self, d_model: int, cfg: TTTConfig, *, rngs: nnx.Rngs):
    h, k = family_heads(cfg, TTTConfig, d_model)
    if cfg.use_rope and k % 2:
      raise ValueError(f"head_dim must be even with use_rope=True, got {k} (d_model={d_model}, "
                       f"num_heads={h})")
    self.cfg, self.d_model = cfg, d_model
    self.project = Projection(d_model, cfg, rngs=rngs, shared_qk=cfg.share_qk, conv_v=False)
    self.memory = ChunkedMemory(cfg, h, k, rngs=rngs)
    self.read_out = ReadOut(d_model, cfg, rngs=rngs, norm="layer", gate="gelu")
