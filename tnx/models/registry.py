"""The registry of token-mixer names: name -> factory(lm_config, rngs) -> module mapping
[B, L, D] -> [B, L, D]. Built-in names are registered by `tnx.models.mixers`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MixerFactory = Callable[[Any, Any], Any]
MIXERS: dict[str, MixerFactory] = {}


def register_mixer(name: str) -> Callable[[MixerFactory], MixerFactory]:
  """Decorator adding a mixer name (from tnx or user code)."""
  def deco(fn: MixerFactory) -> MixerFactory:
    MIXERS[name] = fn
    return fn
  return deco
