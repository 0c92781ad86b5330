"""Flax NNX language models over tnx token mixers: the typed config (`config`), the memory
families (`families`), the mixer names (`registry`, `mixers`), the Titans layouts
(`titans_layouts`) and the decoder (`lm`)."""

from tnx.models.config import LMConfig, lm_config
from tnx.models.families import FAMILIES, register_family
from tnx.models.lm import LM, format_param_counts, param_counts, set_chunk_sizes
from tnx.models.mixers import MIXERS, build_mixer, register_mixer
from tnx.models.titans_layouts import TitansLayout


def available_families() -> list[str]:
  """Names of the registered memory families (all in-tree families are always present)."""
  return list(FAMILIES)


__all__ = [
    "FAMILIES", "LM", "LMConfig", "MIXERS", "TitansLayout", "available_families",
    "build_mixer", "format_param_counts", "lm_config", "param_counts", "register_family",
    "register_mixer", "set_chunk_sizes",
]
