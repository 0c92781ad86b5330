"""Titans neural long-term memory (arXiv 2501.00663, sections 3 and 4.4) as a memory mixer.

Per token: q/k/v = SiLU(causal depthwise conv(x W_{q,k,v})), q and k L2-normalized per head;
data-dependent inner learning rate lr_t = lr_max * sigmoid(x w_lr), momentum decay
beta_t = sigmoid(x w_beta) and forget gate alpha_t = sigmoid(x w_alpha) per head; the deep
memory (MLP by default) is written with the chunked primitive (`tnx.memory.chunked`) and read
with q; the read is RMS-normalized per head, gated by sigmoid(x W_g), and projected back.

Choices the paper leaves open, with their defaults (all config fields):
  * order conv -> SiLU -> L2-norm (the paper lists the three without fixing the order);
  * gate initial biases giving lr ~ 0.12 * lr_max, beta ~ 0.88, alpha ~ 0.018;
  * memory MLP of depth 2, hidden 4 * head_dim, GELU; initial memory state learned;
  * retrieval after the write (intra-chunk state, as TNT reads its local memories).
TNT's experiments use a simplified Titans without momentum and forgetting: set
`momentum=False, forget=False`.
"""

from __future__ import annotations

import dataclasses

from flax import nnx

from tnx import validation
from tnx.memory import chunked
from tnx.memory import model as mm
from tnx.memory.mixer import ChunkedMemory, MemoryMixer, Projection, ReadOut, family_heads
from tnx.memory.mixer_config import MemoryLayerConfig


@dataclasses.dataclass(frozen=True)
class TitansConfig(MemoryLayerConfig):
  """Titans memory layer: the shared fields (`MemoryLayerConfig`) plus

  Attributes:
    memory: memory network f (depth, width, activation, LN-residual).
    chunk_size: C of the chunked primitive (training); decode keeps the same chunk semantics.
    retrieval: "intra_chunk" or "chunk_start" (see tnx.memory.chunked).
  The inner learning-rate bound lr_max defaults to 0.01: it keeps the inner loop stable at
  initialization for chunks up to 64 with the default 4x-wide MLP memory and momentum
  (measured: 0.03 diverges at C=64, 0.1 at C=8); a chunk sums C anchored gradients, so larger
  chunks need a smaller bound. The initial step is lr_max * sigmoid(lr_bias_init) = 0.0012; a
  saturated gate reaches lr_max, which is above the primitive's measured bound for C >= 16
  with uniform steps (docs/numerics.md: 0.0056 at C = 16, 0.0018 at C = 64).
  """

  memory: mm.MemoryModelConfig = mm.MemoryModelConfig(depth=2, expansion=4, activation="gelu")
  chunk_size: int = 16
  retrieval: str = "intra_chunk"
  momentum: bool = True
  forget: bool = True

  def __post_init__(self):
    super().__post_init__()
    validation.positive_int("chunk_size", self.chunk_size)
    validation.one_of("retrieval", self.retrieval, chunked.RETRIEVALS)
    if not isinstance(self.memory, mm.MemoryModelConfig):
      raise ValueError(f"memory must be a MemoryModelConfig, got {self.memory!r}")


class TitansMemory(MemoryMixer):
  """Titans neural memory token mixer: [B, L, D] -> [B, L, D]."""

  def __init__(self, d_model: int, cfg: TitansConfig, *, rngs: nnx.Rngs):
    h, k = family_heads(cfg, TitansConfig, d_model)
    self.cfg, self.d_model = cfg, d_model
    self.project = Projection(d_model, cfg, rngs=rngs)
    self.memory = ChunkedMemory(cfg, h, k, rngs=rngs)
    self.read_out = ReadOut(d_model, cfg, rngs=rngs)
