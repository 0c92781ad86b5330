"""TNT configuration: one frozen dataclass whose fields pin down every choice the paper leaves
open, each with a documented default (the reasons are in docs/tnt.md).

Only `local_chunk_sizes` (and `global_chunk_size`) are meant to change between stage 1 and
stage 2; no parameter shape depends on any chunk size or on the shard length.
"""

from __future__ import annotations

import dataclasses

from tnx import validation
from tnx.memory import model as mm
from tnx.memory.mixer_config import MemoryLayerConfig

QK_SCOPES = ("shard", "chunk")
QK_RESCALES = ("none", "count", "l2")
COMBINES = ("sum", "mean", "weighted")
GLOBAL_CP = ("allgather", "ring")
RETRIEVALS = ("intra_chunk", "chunk_start")


@dataclasses.dataclass(frozen=True)
class TNTConfig(MemoryLayerConfig):
  """Hierarchical global/local test-time memory (TNT, arXiv 2511.07343 section 3): the shared
  memory-layer fields (`MemoryLayerConfig`; momentum and forgetting off as in TNT's
  experiments, `learn_init`: the local reset states W_init are trained, as in the paper) plus

  Attributes:
    memory: memory network f shared by the global and every local memory (one architecture
      for all; the paper does not use different ones).
    use_global: whether the global memory V runs (False = locals only, the paper's "w/o
      global memory" ablation).
    global_chunk_size: C_G; the global memory is never reset.
    global_retrieval: "chunk_start" (TNT Eq. 7: reads the state at the start of the global
      chunk) or "intra_chunk".
    global_lr_max: upper bound of the global memory's inner learning rate (None: `lr_max`,
      one bound for every memory). An extension, not in the paper: one chunk step sums C
      per-token gradients, so the stable inner step shrinks about as 1 / C
      (docs/numerics.md) and a bound chosen for C_L can make the global memory's inner loop
      diverge at C_G >> C_L (docs/tnt_lm.md).
    local_chunk_sizes: (C_L[0], ..., C_L[N-1]), one entry per local memory; () = no locals.
      Stage 2 replaces this tuple with smaller sizes of the same length.
    shard_length: S_L; local memories reset to their learned W_init before every token whose
      index is a multiple of S_L, and that token is written normally (the reset precedes the
      write, so every shard starts from W_init). Must be a multiple of every local chunk
      size. A sequence shorter than S_L is one shard.
    local_shard_lengths: optional per-local S_L overriding `shard_length` (an extension: the
      paper uses one S_L).
    qk_projection: replace the local query q_t by M_t q_t with M_t = sum k k^T / ||k||^2.
    qk_scope: "shard" (running sum reset with the local memory, default) or "chunk" (sum over
      the current local chunk, the literal Eq. 7).
    qk_rescale: "none" (paper), "count" (divide by the number of keys in scope) or "l2"
      (re-L2-normalize M_t q_t); the last two are deviations from the paper.
    combine: "sum" (paper: global read + sum of local reads), "mean" (average of the reads)
      or "weighted" (learned per-branch, per-head weights initialized to 1).
    share_qkv: one q/k/v projection feeds every memory (default, as the equations read) or
      separate projections per memory.
    share_lr: one learning-rate gate for every memory (default False: a gate per memory).
    learn_global_init: the global initial state V_0 is a trained parameter (default True; the
      paper does not say).
    stage2_freeze_nonlocal: in stage 2, train only the local memories' parameters (W_init,
      their LN). Read by `tnx.tnt.stage2.trainable_filter` (default off: the paper fine-tunes
      the whole model).
    context_axis: mesh axis name used for context parallelism.
    global_cp: how the global chain runs across context shards: "allgather" (gather the global
      memory's q/k/v/gates, recompute the chain on every device) or "ring" (pass the state at
      the block boundary from device to device with ppermute; needs C_G | L/P).
  """

  memory: mm.MemoryModelConfig = mm.MemoryModelConfig(depth=2, expansion=4, activation="gelu")
  use_global: bool = True
  global_chunk_size: int = 2048
  global_retrieval: str = "chunk_start"
  global_lr_max: float | None = None
  local_chunk_sizes: tuple[int, ...] = (8,)
  shard_length: int = 2048
  local_shard_lengths: tuple[int, ...] | None = None
  qk_projection: bool = True
  qk_scope: str = "shard"
  qk_rescale: str = "none"
  combine: str = "sum"
  share_qkv: bool = True
  share_lr: bool = False
  learn_global_init: bool = True
  stage2_freeze_nonlocal: bool = False
  context_axis: str = "context"
  global_cp: str = "allgather"

  def __post_init__(self):
    super().__post_init__()
    if not isinstance(self.memory, mm.MemoryModelConfig):
      raise ValueError(f"memory must be a MemoryModelConfig, got {self.memory!r}")
    validation.positive_int("global_chunk_size", self.global_chunk_size)
    validation.positive_int("shard_length", self.shard_length)
    if self.global_lr_max is not None:
      validation.positive("global_lr_max", self.global_lr_max)
    validation.one_of("global_retrieval", self.global_retrieval, RETRIEVALS)
    validation.one_of("qk_scope", self.qk_scope, QK_SCOPES)
    validation.one_of("qk_rescale", self.qk_rescale, QK_RESCALES)
    validation.one_of("combine", self.combine, COMBINES)
    validation.one_of("global_cp", self.global_cp, GLOBAL_CP)
    if isinstance(self.local_chunk_sizes, list):
      object.__setattr__(self, "local_chunk_sizes", tuple(self.local_chunk_sizes))
    if not isinstance(self.local_chunk_sizes, tuple):
      raise ValueError(f"local_chunk_sizes must be a tuple of ints, got {self.local_chunk_sizes!r}")
    for c in self.local_chunk_sizes:
      validation.positive_int("local_chunk_sizes", c)
    if not self.use_global and not self.local_chunk_sizes:
      raise ValueError("TNT needs at least one memory: local_chunk_sizes is empty and "
                       "use_global=False")
    if self.local_shard_lengths is not None:
      if len(self.local_shard_lengths) != len(self.local_chunk_sizes):
        raise ValueError(f"local_shard_lengths {self.local_shard_lengths} must have one entry "
                         f"per local memory ({len(self.local_chunk_sizes)})")
      for s in self.local_shard_lengths:
        validation.positive_int("local_shard_lengths", s)
    for i, (c, s) in enumerate(zip(self.local_chunk_sizes, self.shard_lengths)):
      if s % c:
        raise ValueError(f"shard length S_L={s} of local memory {i} must be a multiple of its "
                         f"chunk size C_L={c} (local_chunk_sizes={self.local_chunk_sizes})")

  @property
  def num_locals(self) -> int:
    return len(self.local_chunk_sizes)

  @property
  def num_memories(self) -> int:
    """Number of memory modules: the global one (if used) plus the locals."""
    return int(self.use_global) + self.num_locals

  def memory_lr_scale(self, memory: int, head_dim: int) -> float:
    """lr bound of memory `memory` (0 = the global one when `use_global`, then the locals)."""
    if self.use_global and memory == 0 and self.global_lr_max is not None:
      return float(self.global_lr_max)
    return self.lr_scale(head_dim)

  @property
  def shard_lengths(self) -> tuple[int, ...]:
    """S_L of every local memory."""
    if self.local_shard_lengths is not None:
      return tuple(self.local_shard_lengths)
    return (self.shard_length,) * self.num_locals


def check_context_lengths(cfg: TNTConfig, length: int, num_shards: int) -> int:
  """Validates a context-parallel split of a length-`length` sequence over `num_shards`
  devices and returns the per-device block length.

  Every local shard must lie on one device (block % S_L == 0 for each local memory), and the
  ring strategy needs whole global chunks per device (block % C_G == 0).
  """
  validation.positive_int("length", length)
  validation.positive_int("num_shards", num_shards)
  if length % num_shards:
    raise ValueError(f"sequence length {length} must be divisible by the {num_shards} context "
                     "shards")
  block = length // num_shards
  for i, s in enumerate(cfg.shard_lengths):
    if block % s:
      raise ValueError(f"per-device length {block} (L={length} over {num_shards} context "
                       f"shards) must be a multiple of S_L={s} of local memory {i}: local "
                       "shards may not straddle devices")
  if cfg.use_global and cfg.global_cp == "ring" and block % cfg.global_chunk_size:
    raise ValueError(f"global_cp='ring' needs the global chunk C_G={cfg.global_chunk_size} to "
                     f"divide the per-device length {block}; use global_cp='allgather'")
  return block

