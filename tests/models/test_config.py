"""LMConfig and its building from the ConfigDict: typed memory configs, errors with the full
key path, heads inherited from the LM, placeholders for derived fields."""

import dataclasses

import jax.numpy as jnp
import ml_collections as mlc
import pytest

from tnx.configs import lm as lm_configs
from tnx.memory.titans import TitansConfig
from tnx.memory.ttt import TTTConfig
from tnx.models import config as mc
from tnx.models.families import FAMILIES


def test_memory_configs_are_typed_and_inherit_heads():
  cfg = mc.LMConfig(n_heads=2, memory={"titans": {"chunk_size": 4}, "tnt": {"num_heads": 1}})
  assert set(cfg.memory) == set(FAMILIES)
  for family, (cls, _) in FAMILIES.items():
    assert isinstance(cfg.memory[family], cls)
  assert cfg.memory["titans"].chunk_size == 4 and cfg.memory["titans"].num_heads == 2
  assert cfg.memory["tnt"].num_heads == 1 and cfg.memory["atlas"].num_heads == 2
  typed = TitansConfig(num_heads=3)
  assert mc.LMConfig(memory={"titans": typed}).memory["titans"] is typed
  again = dataclasses.replace(cfg, dtype="bfloat16")   # typed configs pass through
  assert again.memory == cfg.memory


@pytest.mark.parametrize("memory,message", [
    ({"titans": {"chunk_size": 0}}, "model.memory.titans.chunk_size must be a positive"),
    ({"titans": {"chunk": 4}}, "model.memory.titans.chunk is not a field of TitansConfig"),
    ({"ttt": {"memory": {"depth": 0}}}, "model.memory.ttt.memory.depth must be a positive"),
    ({"tnt": {"local_chunk_sizes": (3,), "shard_length": 8}},
     "model.memory.tnt: shard length S_L=8"),
    ({"atlas": {"variant": "mamba"}}, "model.memory.atlas.variant must be one of"),
    ({"mamba": {}}, "model.memory.mamba is not a memory family"),
    ({"titans": 4}, "model.memory.titans must be a TitansConfig or a mapping"),
    ({"titans": {"dtype": "float16"}}, "model.memory.titans.dtype must be one of"),
])
def test_errors_carry_the_key_path(memory, message):
  with pytest.raises(ValueError, match=message):
    mc.LMConfig(memory=memory)


def test_config_dict_round_trip_and_placeholders():
  c = lm_configs.get_config()
  lm = mc.lm_config(c.model)
  assert lm.memory["titans"] == TitansConfig(num_heads=c.model.n_heads)
  assert lm.memory["ttt"] == TTTConfig(num_heads=c.model.n_heads)
  section = c.model.memory
  assert section.titans.num_heads is None and section.ttt.lr_max is None
  assert section.titans.dtype == "float32" and section.titans.memory.depth == 2
  section.ttt.lr_max = 0.5          # a placeholder takes a value of its type
  section.ttt.memory.depth = 3      # nested override on top of the kind's default
  section.titans.num_heads = 1
  lm = mc.lm_config(c.model)
  assert lm.memory["ttt"].lr_max == 0.5 and lm.memory["ttt"].memory.depth == 3
  assert lm.memory["ttt"].memory.ln_residual and lm.memory["titans"].num_heads == 1
  with pytest.raises(TypeError):
    section.ttt.lr_max = "fast"
  c.model.unknown = 1
  with pytest.raises(ValueError, match="model.unknown is not a field of LMConfig"):
    mc.lm_config(c.model)


def test_ttt_mixers_pick_their_kind():
  from flax import nnx

  from tnx.models.mixers import build_mixer
  cfg = mc.LMConfig(d_model=16, n_heads=2, memory={"ttt": {"chunk_size": 4}})
  mlp = build_mixer("ttt_mlp", cfg, nnx.Rngs(0))
  lin = build_mixer("ttt_linear", cfg, nnx.Rngs(0))
  assert (mlp.cfg.kind, mlp.cfg.memory.depth, mlp.cfg.lr_max) == ("mlp", 2, 0.1)
  assert (lin.cfg.kind, lin.cfg.memory.depth, lin.cfg.chunk_size) == ("linear", 1, 4)
  assert jnp.dtype(mlp.cfg.dtype) == jnp.float32
  assert isinstance(mc.memory_config_dict(), mlc.ConfigDict)
