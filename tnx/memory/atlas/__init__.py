"""The ATLAS family (arXiv 2505.23735) on the tnx memory core: polynomial/exponential feature
maps (`features`), the exact-kernel path (`kernel`), and the token mixers DLA, SWLA, OmegaNet,
Atlas, Atlas++, DeepTransformer, SWDT, Dot with MAG/MAL hybrids. The Omega rule itself (window,
GD/momentum/Muon inner optimizers) is the memory core's one primitive,
`tnx.memory.chunked.chunked_memory` with `UpdateRule(window=..., optimizer=...)`."""

from tnx.memory.atlas.mixers import VARIANTS, AtlasConfig, AtlasMixer
from tnx.memory.inner_optim import CUBIC, QUINTIC, newton_schulz, polar_factor

__all__ = ["CUBIC", "QUINTIC", "VARIANTS", "AtlasConfig", "AtlasMixer", "newton_schulz",
           "polar_factor"]
