"""The shared memory-layer config: one validation for every family, heads at a width."""

import jax.numpy as jnp
import pytest

from tnx.memory.atlas import AtlasConfig
from tnx.memory.mixer_config import MemoryLayerConfig
from tnx.memory.titans import TitansConfig
from tnx.memory.ttt import TTTConfig
from tnx.tnt import TNTConfig

FAMILIES = [TitansConfig, TTTConfig, TNTConfig, AtlasConfig]


@pytest.mark.parametrize("cls", FAMILIES)
@pytest.mark.parametrize("field,value", [
    ("num_heads", 0), ("head_dim", 0), ("conv_width", -1), ("qkv_activation", "relu"),
    ("lr_max", 0.0), ("lr_bias_init", float("nan")), ("momentum_bias_init", float("inf")),
    ("inner_loss", "cosine"), ("remat_group", -1), ("output_gate", 1), ("dtype", "int8"),
])
def test_every_family_validates_the_shared_fields(cls, field, value):
  assert issubclass(cls, MemoryLayerConfig)
  with pytest.raises(ValueError, match=field):
    cls(**{field: value})


def test_heads():
  cfg = MemoryLayerConfig(num_heads=4)
  assert cfg.heads(16) == (4, 4)
  assert MemoryLayerConfig(num_heads=3, head_dim=5).heads(16) == (3, 5)
  with pytest.raises(ValueError, match="num_heads=4 must divide d_model=15"):
    cfg.heads(15)
  with pytest.raises(ValueError, match="d_model"):
    cfg.heads(0)
  assert MemoryLayerConfig(dtype="float64").dtype == jnp.float64
  assert MemoryLayerConfig(lr_max=0.5).lr_scale(8) == 0.5
  assert MemoryLayerConfig().rope_period() is None
