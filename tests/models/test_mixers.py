"""Mixer names and memory families: a new family written in one place (config + mixer from
the shared pieces) registers and runs inside the LM, with decode equal to the forward."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnx.memory import model as mm
from tnx.memory.mixer import ChunkedMemory, MemoryMixer, Projection, ReadOut, family_heads
from tnx.memory.mixer_config import MemoryLayerConfig
from tnx.models import LM, LMConfig, families, mixers, registry


@dataclasses.dataclass(frozen=True)
class PlainConfig(MemoryLayerConfig):
  memory: mm.MemoryModelConfig = mm.MemoryModelConfig(depth=1)
  chunk_size: int = 4
  retrieval: str = "intra_chunk"


class PlainMemory(MemoryMixer):
  """A linear memory with the shared projection and read-out."""

  def __init__(self, d_model, cfg, *, rngs):
    h, k = family_heads(cfg, PlainConfig, d_model)
    self.cfg, self.d_model = cfg, d_model
    self.project = Projection(d_model, cfg, rngs=rngs)
    self.memory = ChunkedMemory(cfg, h, k, rngs=rngs)
    self.read_out = ReadOut(d_model, cfg, rngs=rngs)


@pytest.fixture
def plain_family():
  families.register_family("plain", PlainConfig, PlainMemory)
  registry.register_mixer("plain")(lambda lm, rngs: mixers.memory_layer("plain", lm, rngs))
  yield
  families.FAMILIES.pop("plain")
  registry.MIXERS.pop("plain")


def test_a_new_family_registers_and_runs(plain_family):
  cfg = LMConfig(vocab_size=32, d_model=8, n_layers=1, n_heads=2, mixers=("plain",),
                 memory={"plain": {"chunk_size": 2, "dtype": "float64",
                                   "param_dtype": "float64"}})
  assert cfg.memory["plain"] == PlainConfig(num_heads=2, chunk_size=2, dtype=jnp.float64,
                                            param_dtype=jnp.float64)
  model = LM(cfg, rngs=nnx.Rngs(0))
  tokens = jax.random.randint(jax.random.key(0), (2, 7), 0, 32)
  assert model(tokens).shape == (2, 7, 32)
  layer = model.blocks[0].mixer
  x = jax.random.normal(jax.random.key(1), (2, 7, 8), jnp.float64)
  y = layer(x)
  cache = layer.init_cache(2)
  for t in range(7):
    yt, cache = layer.decode(x[:, t], cache)
    np.testing.assert_allclose(yt, y[:, t], rtol=1e-10, atol=1e-12)


def test_registration_errors():
  with pytest.raises(ValueError, match="MemoryLayerConfig subclass"):
    families.register_family("bad", dict, PlainMemory)
  with pytest.raises(ValueError, match="mixer 'nope' is unknown"):
    mixers.build_mixer("nope", LMConfig(), nnx.Rngs(0))
  with pytest.raises(ValueError, match="mixers must be one of"):
    LMConfig(mixers=("plain",))
