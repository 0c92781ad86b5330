"""A small vision-language decoder: trainable connector + tnx decoder blocks.

Image features [B, N_I, F] (from a frozen vision tower) go through a 2-layer GELU MLP connector
to the model width and replace the embeddings of the IMG placeholder tokens, in order; the
sequence then runs through `tnx.models.lm.Block`s (pre-norm causal RoPE attention + gated
MLP), a final RMSNorm and the tied output head. The same class serves the proxy (2 layers,
D = 64) and the target (4 layers, D = 128) of the XMAS demonstration.

The attention layers are `tnx.nn.attention.Attention`, so `model.set_attributes(
sow_attention=True)` makes every layer sow its probabilities and pre-RoPE q/k
(tnx.selection.xmas.attention reads them).

Inputs: {'tokens': [B, L] int32, 'image': [B, N_I, F] float}. Output: logits [B, L, V].
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tnx import validation
from tnx.models import LMConfig
from tnx.models.lm import Block
from tnx.nn.layers import RMSNorm, linear
from tnx.selection.xmas import data as shapes


@dataclasses.dataclass(frozen=True)
class VLMConfig:
  """Attributes:
    vocab_size: V. image_dim: F, width of the vision-tower features. image_token: id of IMG.
    d_model: D. n_layers: decoder blocks. n_heads: H. mlp_hidden: gated-MLP width (0 = auto).
    rope_base: RoPE base. dtype: compute dtype name.
  """
  vocab_size: int
  image_dim: int
  image_token: int
  d_model: int = 64
  n_layers: int = 2
  n_heads: int = 4
  mlp_hidden: int = 0
  rope_base: float = 10000.0
  dtype: str = "float32"

  def __post_init__(self):
    for name in ("vocab_size", "image_dim", "d_model", "n_layers", "n_heads"):
      validation.positive_int(name, getattr(self, name))
    validation.non_negative_int("image_token", self.image_token)
    if self.image_token >= self.vocab_size:
      raise ValueError(f"image_token={self.image_token} must be < vocab_size="
                       f"{self.vocab_size}")

  def lm_config(self) -> LMConfig:
    """The decoder part as tnx's LM config (attention mixer in every layer)."""
    return LMConfig(vocab_size=self.vocab_size, d_model=self.d_model, n_layers=self.n_layers,
                    n_heads=self.n_heads, mlp_hidden=self.mlp_hidden, mixers=("attention",),
                    n_persistent=0, rope_base=self.rope_base, dtype=self.dtype)


class VisionLanguageModel(nnx.Module):
  """Connector + decoder; `model(inputs) -> logits [B, L, V]`, `model.hidden(inputs) ->
  final normed hidden states [B, L, D]`."""

  def __init__(self, cfg: VLMConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    lm = cfg.lm_config()
    dt = lm.compute_dtype
    self.connector_in = linear(cfg.image_dim, cfg.d_model, dtype=dt, rngs=rngs, use_bias=True)
    self.connector_out = linear(cfg.d_model, cfg.d_model, dtype=dt, rngs=rngs, use_bias=True)
    self.embed = nnx.Embed(cfg.vocab_size, cfg.d_model, dtype=dt, param_dtype=jnp.float32,
                           embedding_init=nnx.initializers.normal(1.0), rngs=rngs)
    self.blocks = nnx.List([Block(lm, i, rngs=rngs) for i in range(cfg.n_layers)])
    self.final_norm = RMSNorm(cfg.d_model, dtype=dt)

  def _check(self, inputs: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    tokens, image = inputs["tokens"], inputs["image"]
    if tokens.ndim != 2:
      raise ValueError(f"inputs['tokens'] must be [B, L], got shape {tokens.shape}")
    if image.ndim != 3 or image.shape[0] != tokens.shape[0] or \
        image.shape[-1] != self.cfg.image_dim:
      raise ValueError(f"inputs['image'] must be [B={tokens.shape[0]}, N_I, "
                       f"F={self.cfg.image_dim}], got shape {image.shape}")
    return tokens, image

  def hidden(self, inputs: dict[str, jax.Array]) -> jax.Array:
    tokens_BxL, image_BxNxF = self._check(inputs)
    dt = self.cfg.lm_config().compute_dtype
    img_BxNxD = self.connector_out(jax.nn.gelu(self.connector_in(image_BxNxF.astype(dt))))
    is_img_BxL = tokens_BxL == self.cfg.image_token
    # The j-th IMG token of a row takes the j-th image feature of that row.
    slot_BxL = jnp.clip(jnp.cumsum(is_img_BxL, axis=1) - 1, 0, image_BxNxF.shape[1] - 1)
    img_BxLxD = jnp.take_along_axis(img_BxNxD, slot_BxL[..., None], axis=1)
    x_BxLxD = jnp.where(is_img_BxL[..., None], img_BxLxD,
                        self.embed(tokens_BxL).astype(dt))
    for block in self.blocks:
      x_BxLxD = block(x_BxLxD)
    return self.final_norm(x_BxLxD)

  def __call__(self, inputs: dict[str, jax.Array]) -> jax.Array:
    x_BxLxD = self.hidden(inputs)
    w_DxV = self.embed.embedding[...].T * self.cfg.d_model**-0.5
    # Precision: the output projection and logits in float32.
    return jnp.einsum("bld,dv->blv", x_BxLxD.astype(jnp.float32), w_DxV.astype(jnp.float32))


def for_shapes_vqa(data_cfg: shapes.ShapesVQAConfig | None = None, *,
                   d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                   dtype: str = "float32") -> VLMConfig:
  """A VLMConfig with ShapesVQA's vocabulary, IMG token and vision-tower width."""
  data_cfg = data_cfg or shapes.ShapesVQAConfig()
  return VLMConfig(vocab_size=len(shapes.VOCAB), image_dim=data_cfg.image_dim,
                   image_token=shapes.IMG, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                   dtype=dtype)


def build(cfg: VLMConfig, seed: int) -> VisionLanguageModel:
  return VisionLanguageModel(cfg, rngs=nnx.Rngs(jax.random.key(seed)))


@functools.lru_cache(maxsize=8)
def _init_fn(cfg: VLMConfig) -> Any:
  return jax.jit(lambda key: nnx.split(VisionLanguageModel(cfg, rngs=nnx.Rngs(key)),
                                       nnx.Param, ...)[1:])


def init(cfg: VLMConfig, seed: int) -> tuple[Any, Any, Any]:
  """(graphdef, params, rest) of a fresh model, initialised in one compiled call."""
  graphdef = nnx.split(nnx.eval_shape(lambda: build(cfg, seed)), nnx.Param, ...)[0]
  params, rest = _init_fn(cfg)(jax.random.key(seed))
  return graphdef, params, rest


def num_params(model: nnx.Module) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
  """The model's inputs from a ShapesVQA batch."""
  return {"tokens": batch["tokens"], "image": batch["image"]}
