"""The built-in token mixers: a per-layer name -> a module mapping [B, L, D] -> [B, L, D].

  attention            full causal attention          swa      sliding-window attention
  titans_lmm (titans)  Titans memory alone            titans_mal / titans_mag / titans_mac:
                                                      the Titans layouts with attention
  ttt_linear, ttt_mlp  TTT layers                     tnt      TNT global + local memories
  atlas                ATLAS-family mixer             atlas_mag / atlas_mal: ATLAS in the
                                                      Titans MAG / MAL layouts
Each memory family reads its typed config from `LMConfig.memory[family]`.
`tnx.models.registry.register_mixer` adds a name from user code.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from tnx.models.config import LMConfig
from tnx.models.families import FAMILIES
from tnx.models.registry import MIXERS, MixerFactory, register_mixer
from tnx.models.titans_layouts import TitansLayout
from tnx.nn.attention import Attention

__all__ = ["MIXERS", "build_mixer", "memory_layer", "register_mixer"]


def memory_layer(family: str, lm: LMConfig, rngs: nnx.Rngs, cfg: Any = None) -> nnx.Module:
  """The family's mixer over `lm.memory[family]` (or `cfg`)."""
  spec = FAMILIES[family]
  return spec.mixer(lm.d_model, lm.memory[family] if cfg is None else cfg, rngs=rngs)


def _attention_kwargs(lm: LMConfig) -> dict[str, Any]:
  return dict(rope_base=lm.rope_base, softmax_f32=lm.fp32_softmax_and_loss,
              dtype=lm.compute_dtype)


@register_mixer("attention")
def _attention(lm: LMConfig, rngs: nnx.Rngs) -> nnx.Module:
  return Attention(lm.d_model, lm.n_heads, mode="full", rngs=rngs, **_attention_kwargs(lm))


@register_mixer("swa")
def _swa(lm: LMConfig, rngs: nnx.Rngs) -> nnx.Module:
  return Attention(lm.d_model, lm.n_heads, mode="sliding", window=lm.window, rngs=rngs,
                   **_attention_kwargs(lm))


def _layout(family: str, layout: str) -> MixerFactory:
  def build(lm: LMConfig, rngs: nnx.Rngs) -> nnx.Module:
    memory = memory_layer(family, lm, rngs)
    return TitansLayout(layout, lm.d_model, lm.n_heads, memory, window=lm.window,
                        n_persistent=lm.n_persistent, rngs=rngs, **_attention_kwargs(lm))
  return build


for _name in ("lmm", "mal", "mag", "mac"):
  register_mixer(f"titans_{_name}")(_layout("titans", _name))
register_mixer("titans")(_layout("titans", "lmm"))
for _name in ("mal", "mag"):
  register_mixer(f"atlas_{_name}")(_layout("atlas", _name))


def _ttt(kind: str) -> MixerFactory:
  def build(lm: LMConfig, rngs: nnx.Rngs) -> nnx.Module:
    return memory_layer("ttt", lm, rngs, cfg=lm.memory["ttt"].with_kind(kind))
  return build


register_mixer("ttt_linear")(_ttt("linear"))
register_mixer("ttt_mlp")(_ttt("mlp"))
register_mixer("tnt")(lambda lm, rngs: memory_layer("tnt", lm, rngs))
register_mixer("atlas")(lambda lm, rngs: memory_layer("atlas", lm, rngs))


def build_mixer(name: str, lm: LMConfig, rngs: nnx.Rngs) -> nnx.Module:
  if name not in MIXERS:
    raise ValueError(f"mixer {name!r} is unknown; expected one of {sorted(MIXERS)}")
  return MIXERS[name](lm, rngs)
