"""The ATLAS family (arXiv 2505.23735) on the tnx memory core: the windowed Omega rule,
polynomial/exponential feature maps, GD/momentum/Muon inner optimizers, and the token mixers
DLA, SWLA, OmegaNet, Atlas, Atlas++, DeepTransformer, SWDT, Dot with MAG/MAL hybrids."""

from tnx.memory.atlas.inner_optim import CUBIC, QUINTIC, newton_schulz, polar_factor
from tnx.memory.atlas.memory import AtlasMemoryConfig
from tnx.memory.atlas.mixers import VARIANTS, AtlasConfig, AtlasMixer
from tnx.memory.atlas.omega import (
                                    OmegaCarry,
                                    OmegaRule,
                                    omega_decode_step,
                                    omega_memory,
                                    sequential_reference,
)

__all__ = [
    "CUBIC", "QUINTIC", "VARIANTS", "AtlasConfig", "AtlasMemoryConfig", "AtlasMixer",
    "OmegaCarry", "OmegaRule", "newton_schulz", "omega_decode_step", "omega_memory",
    "polar_factor", "sequential_reference",
]
