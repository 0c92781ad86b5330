"""Registry of token mixers: a per-layer name -> a module mapping [B, L, D] -> [B, L, D].

Built-in names: 'attention' (full causal), 'swa' (sliding window), 'titans' (= 'titans_lmm'),
'titans_lmm', 'titans_mal', 'titans_mag', 'titans_mac', 'ttt_linear', 'ttt_mlp', 'tnt',
'atlas'. Memory mixers are imported on first use, so the attention models work without them.
Each memory family reads its frozen dataclass config from `LMConfig.memory[family]` (a dict of
field overrides; unknown fields raise ValueError naming `model.memory.<family>.<field>`).
`register_mixer` adds a name from user code.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
from flax import nnx

from tnx.models.titans_layouts import TitansLayout
from tnx.nn.attention import Attention

if TYPE_CHECKING:
  from tnx.models.lm import LMConfig

MixerFactory = Callable[["LMConfig", nnx.Rngs], nnx.Module]
MIXERS: dict[str, MixerFactory] = {}

# family -> (module, config class, layer class)
MEMORY_FAMILIES = {
    "titans": ("tnx.memory.titans", "TitansConfig", "TitansMemory"),
    "ttt": ("tnx.memory.ttt", "TTTConfig", "TTTLayer"),
    "tnt": ("tnx.tnt", "TNTConfig", "TNTMemory"),
    "atlas": ("tnx.memory.atlas", "AtlasConfig", "AtlasMixer"),
}


def register_mixer(name: str) -> Callable[[MixerFactory], MixerFactory]:
  def deco(fn: MixerFactory) -> MixerFactory:
    MIXERS[name] = fn
    return fn
  return deco


def memory_classes(family: str) -> tuple[type, type]:
  """(config class, layer class) of a memory family; ImportError if not installed yet."""
  mod, cfg_name, layer_name = MEMORY_FAMILIES[family]
  m = importlib.import_module(mod)
  return getattr(m, cfg_name), getattr(m, layer_name)


def available_families() -> list[str]:
  out = []
  for fam in MEMORY_FAMILIES:
    try:
      memory_classes(fam)
      out.append(fam)
    except (ImportError, AttributeError):
      pass
  return out


def memory_config(family: str, lm: LMConfig, **fixed: Any) -> Any:
  """Builds the family's frozen config from `lm.memory[family]` plus `fixed` fields."""
  cfg_cls, _ = memory_classes(family)
  names = {f.name for f in dataclasses.fields(cfg_cls)}
  kwargs = dict(lm.memory.get(family, {}))
  for key in kwargs:
    if key not in names:
      raise ValueError(f"model.memory.{family}.{key} is not a field of {cfg_cls.__name__}; "
                       f"expected one of {sorted(names)}")
  for key in ("n_heads", "num_heads"):
    if key in names and key not in kwargs:
      kwargs[key] = lm.n_heads
  for key, value in fixed.items():
    if key in names:
      kwargs[key] = value
  defaults = {f.name: f.default for f in dataclasses.fields(cfg_cls)}
  for key, value in kwargs.items():
    default = defaults.get(key)
    if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
      kwargs[key] = dataclasses.replace(default, **value)
    elif isinstance(default, type) and isinstance(value, str):
      kwargs[key] = jnp.dtype(value).type
  return cfg_cls(**kwargs)


def memory_layer(family: str, lm: LMConfig, rngs: nnx.Rngs, **fixed: Any) -> nnx.Module:
  _, layer_cls = memory_classes(family)
  return layer_cls(lm.d_model, memory_config(family, lm, **fixed), rngs=rngs)


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


def _titans(layout: str) -> MixerFactory:
  def build(lm: LMConfig, rngs: nnx.Rngs) -> nnx.Module:
    memory = memory_layer("titans", lm, rngs)
    return TitansLayout(layout, lm.d_model, lm.n_heads, memory, window=lm.window,
                        n_persistent=lm.n_persistent, rngs=rngs, **_attention_kwargs(lm))
  return build


for _layout in ("lmm", "mal", "mag", "mac"):
  register_mixer(f"titans_{_layout}")(_titans(_layout))
register_mixer("titans")(_titans("lmm"))


def _ttt(variant: str) -> MixerFactory:
  def build(lm: LMConfig, rngs: nnx.Rngs) -> nnx.Module:
    return memory_layer("ttt", lm, rngs, kind=variant)
  return build


register_mixer("ttt_linear")(_ttt("linear"))
register_mixer("ttt_mlp")(_ttt("mlp"))
register_mixer("tnt")(lambda lm, rngs: memory_layer("tnt", lm, rngs))
register_mixer("atlas")(lambda lm, rngs: memory_layer("atlas", lm, rngs))


def build_mixer(name: str, lm: LMConfig, rngs: nnx.Rngs) -> nnx.Module:
  if name not in MIXERS:
    raise ValueError(f"mixer {name!r} is unknown; expected one of {sorted(MIXERS)}")
  return MIXERS[name](lm, rngs)
