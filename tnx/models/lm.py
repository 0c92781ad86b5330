"""Decoder-only language model: embedding, pre-norm blocks with a per-layer token mixer and a
gated MLP, final RMSNorm, tied or untied head.

Shapes: tokens [B, L] int -> logits [B, L, V]. Parameters are float32; activations run in
`dtype` (e.g. bfloat16); with `fp32_softmax_and_loss` the attention softmax and the logits are
computed in float32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tnx import validation
from tnx.models import mixers
from tnx.nn.layers import GatedMLP, RMSNorm, default_mlp_hidden, dtype_of


@dataclasses.dataclass(frozen=True)
class LMConfig:
  """Typed model config (built from the ConfigDict by `tnx.train.configs`).

  Attributes:
    vocab_size: V. d_model: D. n_layers: number of blocks. n_heads: attention heads.
    mlp_hidden: gated-MLP width F (0 = 8/3 D rounded to 8).
    mixers: token-mixer names, cycled over the layers (see tnx.models.mixers).
    window: sliding-window size / MAC segment length.
    n_persistent: Titans persistent memory tokens.
    tie_embeddings: reuse the embedding matrix as the output head.
    rope_base: RoPE frequency base.
    dtype: compute dtype name ('float32', 'bfloat16', 'float64').
    fp32_softmax_and_loss: softmax and logits in float32 regardless of dtype.
    memory: {family: {field: value}} overrides for the memory configs.
    remat: rematerialize each block in the backward pass.
  """

  vocab_size: int = 256
  d_model: int = 64
  n_layers: int = 2
  n_heads: int = 4
  mlp_hidden: int = 0
  mixers: tuple[str, ...] = ("attention",)
  window: int = 64
  n_persistent: int = 4
  tie_embeddings: bool = True
  rope_base: float = 10000.0
  dtype: str = "float32"
  fp32_softmax_and_loss: bool = True
  memory: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  remat: bool = False

  def __post_init__(self):
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "window"):
      validation.positive_int(name, getattr(self, name))
    validation.non_negative_int("mlp_hidden", self.mlp_hidden)
    validation.non_negative_int("n_persistent", self.n_persistent)
    dtype_of(self.dtype)
    if not self.mixers:
      raise ValueError("mixers must name at least one mixer, got ()")
    for m in self.mixers:
      validation.one_of("mixers", m, sorted(mixers.MIXERS))

  @property
  def compute_dtype(self) -> Any:
    return dtype_of(self.dtype)

  @property
  def hidden(self) -> int:
    return self.mlp_hidden or default_mlp_hidden(self.d_model)

  def mixer_at(self, layer: int) -> str:
    return self.mixers[layer % len(self.mixers)]


class Block(nnx.Module):
  """x + mixer(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: LMConfig, layer: int, *, rngs: nnx.Rngs):
    self.mixer_name = cfg.mixer_at(layer)
    self.norm_mixer = RMSNorm(cfg.d_model, dtype=cfg.compute_dtype)
    self.mixer = mixers.build_mixer(self.mixer_name, cfg, rngs)
    self.norm_mlp = RMSNorm(cfg.d_model, dtype=cfg.compute_dtype)
    self.mlp = GatedMLP(cfg.d_model, cfg.hidden, dtype=cfg.compute_dtype, rngs=rngs)

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    x_BxLxD = x_BxLxD + self.mixer(self.norm_mixer(x_BxLxD)).astype(x_BxLxD.dtype)
    return x_BxLxD + self.mlp(self.norm_mlp(x_BxLxD))


class LM(nnx.Module):
  """The decoder. `model(tokens_BxL) -> logits_BxLxV`."""

  def __init__(self, cfg: LMConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = nnx.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.compute_dtype,
                           param_dtype=jnp.float32,
                           embedding_init=nnx.initializers.normal(1.0), rngs=rngs)
    self.blocks = nnx.List([Block(cfg, i, rngs=rngs) for i in range(cfg.n_layers)])
    self.final_norm = RMSNorm(cfg.d_model, dtype=cfg.compute_dtype)
    if not cfg.tie_embeddings:
      self.head = nnx.Param(jax.random.normal(rngs.params(), (cfg.d_model, cfg.vocab_size),
                                              jnp.float32) * cfg.d_model**-0.5)

  def __call__(self, tokens_BxL: jax.Array) -> jax.Array:
    cfg = self.cfg
    x_BxLxD = self.embed(tokens_BxL).astype(cfg.compute_dtype)
    for block in self.blocks:
      if cfg.remat:
        x_BxLxD = nnx.remat(lambda blk, x: blk(x))(block, x_BxLxD)
      else:
        x_BxLxD = block(x_BxLxD)
    x_BxLxD = self.final_norm(x_BxLxD)
    out_dtype = jnp.float32 if cfg.fp32_softmax_and_loss else cfg.compute_dtype
    if cfg.tie_embeddings:
      w_DxV = self.embed.embedding[...].T * cfg.d_model**-0.5
    else:
      w_DxV = self.head[...]
    # Precision: the output projection and logits in float32 when requested.
    return jnp.einsum("bld,dv->blv", x_BxLxD.astype(out_dtype), w_DxV.astype(out_dtype))


def param_counts(model: nnx.Module) -> dict[str, int]:
  """Parameter counts per component: embedding, head, norms, mlp, and one entry per mixer
  name (e.g. 'mixer/titans_mal'), plus 'total'."""
  counts: dict[str, int] = {}
  mixer_names = {}
  if isinstance(model, LM):
    mixer_names = {i: b.mixer_name for i, b in enumerate(model.blocks)}
  for path, leaf in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    size = int(jnp.size(leaf))
    keys = [str(p) for p in path]
    if keys[0] == "blocks":
      part = keys[2]
      if part == "mixer":
        group = f"mixer/{mixer_names.get(int(keys[1]), 'mixer')}"
      elif part == "mlp":
        group = "mlp"
      else:
        group = "norms"
    elif keys[0] == "final_norm":
      group = "norms"
    else:
      group = keys[0]
    counts[group] = counts.get(group, 0) + size
  counts["total"] = sum(counts.values())
  return counts


def format_param_counts(counts: Mapping[str, int]) -> str:
  width = max(len(k) for k in counts)
  return "\n".join(f"  {k:<{width}}  {v:>10,d}" for k, v in counts.items())


def set_chunk_sizes(model: nnx.Module, *, chunk_size: int | None = None,
                    local_chunk_sizes: tuple[int, ...] | None = None) -> int:
  """Sets the inference/training chunk size of every memory mixer in `model` in place.

  Memory mixers keep a frozen dataclass `cfg` with a `chunk_size` (Titans/TTT/ATLAS) or
  `local_chunk_sizes` (TNT) field; parameters do not depend on it. Returns the number of
  layers changed. Re-split the model afterwards (the chunk size lives in the graph definition).
  """
  changed = 0
  for _, module in nnx.iter_modules(model):
    cfg = getattr(module, "cfg", None)
    if cfg is None or not dataclasses.is_dataclass(cfg) or isinstance(module, LM):
      continue
    names = {f.name for f in dataclasses.fields(cfg)}
    updates = {}
    if chunk_size is not None and "chunk_size" in names:
      updates["chunk_size"] = validation.positive_int("chunk_size", chunk_size)
    if local_chunk_sizes is not None and "local_chunk_sizes" in names:
      updates["local_chunk_sizes"] = tuple(
          validation.positive_int("local_chunk_sizes", c) for c in local_chunk_sizes)
    if updates:
      module.cfg = dataclasses.replace(cfg, **updates)
      changed += 1
  return changed
