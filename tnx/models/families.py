"""The memory families a language model can use: name -> (config class, mixer class).

A family is one file that defines a config extending `tnx.memory.mixer_config.
MemoryLayerConfig` and a mixer composed from `tnx.memory.mixer`'s pieces; `register_family`
makes it available under `LMConfig.memory[<name>]` (and `model.memory.<name>.*` on the command
line); a mixer name for it is added with `tnx.models.registry.register_mixer`.
"""

from __future__ import annotations

from typing import NamedTuple

from tnx.memory.atlas.mixers import AtlasConfig, AtlasMixer
from tnx.memory.mixer_config import MemoryLayerConfig
from tnx.memory.titans import TitansConfig, TitansMemory
from tnx.memory.ttt import TTTConfig, TTTLayer
from tnx.tnt import TNTConfig, TNTMemory


class Family(NamedTuple):
  config: type[MemoryLayerConfig]
  mixer: type


FAMILIES: dict[str, Family] = {
    "titans": Family(TitansConfig, TitansMemory),
    "ttt": Family(TTTConfig, TTTLayer),
    "tnt": Family(TNTConfig, TNTMemory),
    "atlas": Family(AtlasConfig, AtlasMixer),
}


def register_family(name: str, config: type[MemoryLayerConfig], mixer: type) -> None:
  """Adds a memory family (its config must extend MemoryLayerConfig)."""
  if not (isinstance(config, type) and issubclass(config, MemoryLayerConfig)):
    raise ValueError(f"config must be a MemoryLayerConfig subclass, got {config!r}")
  FAMILIES[name] = Family(config, mixer)
