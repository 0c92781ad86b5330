"""Flax NNX language models over tnx token mixers."""

from tnx.models.lm import LM, LMConfig, format_param_counts, param_counts, set_chunk_sizes
from tnx.models.mixers import MIXERS, available_families, build_mixer, register_mixer
from tnx.models.titans_layouts import TitansLayout
from tnx.nn.attention import Attention, attend, causal_mask

__all__ = [
    "LM", "LMConfig", "Attention", "TitansLayout", "MIXERS", "attend", "available_families",
    "build_mixer", "causal_mask", "format_param_counts", "param_counts", "register_mixer",
    "set_chunk_sizes",
]
