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
from tnx.memory.mixer import replace_configs
from tnx.models import mixers
from tnx.models.config import LMConfig
from tnx.nn.layers import GatedMLP, RMSNorm


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
  """Sets the inference/training chunk size of every memory mixer in `model` in place:
  `chunk_size` for the families that have one (Titans, TTT, ATLAS), `local_chunk_sizes` for
  TNT. Parameters do not depend on it. Returns the number of layers changed; re-split the
  model afterwards (the chunk size lives in the graph definition)."""
  updates: dict[str, Any] = {}
  if chunk_size is not None:
    updates["chunk_size"] = validation.positive_int("chunk_size", chunk_size)
  if local_chunk_sizes is not None:
    updates["local_chunk_sizes"] = tuple(
        validation.positive_int("local_chunk_sizes", c) for c in local_chunk_sizes)

  def update(cfg):
    names = {f.name for f in dataclasses.fields(cfg)}
    mine = {k: v for k, v in updates.items() if k in names}
    return dataclasses.replace(cfg, **mine) if mine else None

  return replace_configs(model, update)
