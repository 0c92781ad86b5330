"""Titans memory layer: decode from scratch, and construction / call errors that name the
argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnx.memory import titans

F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)
X = jax.random.normal(jax.random.PRNGKey(7), (2, 9, 16), jnp.float64)


def test_titans_decode_from_scratch_at_chunk_one():
  layer = titans.TitansMemory(16, titans.TitansConfig(num_heads=2, chunk_size=1, **F64),
                              rngs=nnx.Rngs(0))
  y = layer(X)
  cache = layer.init_cache(2)
  for t in range(X.shape[1]):
    yt, cache = layer.decode(X[:, t], cache)
    np.testing.assert_allclose(yt, y[:, t], rtol=1e-9, atol=1e-11)


def test_gates_follow_the_config():
  """Only the enabled gates get a projection: lr, momentum, forget (H columns each)."""
  full = titans.TitansMemory(16, titans.TitansConfig(num_heads=2), rngs=nnx.Rngs(0))
  plain = titans.TitansMemory(16, titans.TitansConfig(num_heads=2, momentum=False,
                                                      forget=False), rngs=nnx.Rngs(0))
  assert full.project.gate_proj.kernel.shape == (16, 6)
  assert plain.project.gate_proj.kernel.shape == (16, 2)
  np.testing.assert_array_equal(full.project.gate_proj.bias[...], [-2, -2, 2, 2, -4, -4])


def test_bad_configs_raise_value_error():
  with pytest.raises(ValueError, match="chunk_size"):
    titans.TitansConfig(chunk_size=0)
  with pytest.raises(ValueError, match="lr_max"):
    titans.TitansConfig(lr_max=-1.0)
  with pytest.raises(ValueError, match="retrieval"):
    titans.TitansConfig(retrieval="end")
  with pytest.raises(ValueError, match="d_model"):
    titans.TitansMemory(0, titans.TitansConfig(), rngs=nnx.Rngs(0))


def test_head_layout_errors_name_the_argument():
  with pytest.raises(ValueError, match="num_heads=4 must divide d_model=15"):
    titans.TitansMemory(15, titans.TitansConfig(), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="num_heads=3 must divide d_model=16"):
    titans.TitansMemory(16, titans.TitansConfig(num_heads=3), rngs=nnx.Rngs(0))
  # An explicit head dim may differ from D / H: q/k/v are H * K wide, the output D.
  layer = titans.TitansMemory(15, titans.TitansConfig(num_heads=3, head_dim=4),
                              rngs=nnx.Rngs(0))
  assert layer(jnp.ones((1, 5, 15))).shape == (1, 5, 15)
  with pytest.raises(ValueError, match="cfg must be a TitansConfig"):
    titans.TitansMemory(16, object(), rngs=nnx.Rngs(0))


def test_dtypes_by_name():
  cfg = titans.TitansConfig(dtype="bfloat16", param_dtype="float32")
  assert cfg.dtype == jnp.bfloat16 and cfg.param_dtype == jnp.float32
  with pytest.raises(ValueError, match="dtype"):
    titans.TitansConfig(dtype="float16")
