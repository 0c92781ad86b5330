"""Titans and TTT layers: decode equals the parallel forward, causality, config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnx.memory import model as mm
from tnx.memory import titans, ttt

F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)
LAYERS = {
    "titans": lambda c: titans.TitansMemory(
        16, titans.TitansConfig(num_heads=2, chunk_size=c, **F64), rngs=nnx.Rngs(0)),
    "titans_linear_no_gates": lambda c: titans.TitansMemory(
        16, titans.TitansConfig(num_heads=2, chunk_size=c, momentum=False, forget=False,
                                memory=mm.MemoryModelConfig(depth=1), **F64),
        rngs=nnx.Rngs(1)),
    "ttt_linear": lambda c: ttt.TTTLayer(
        16, ttt.TTTConfig(kind="linear", num_heads=2, chunk_size=c, **F64), rngs=nnx.Rngs(2)),
    "ttt_mlp": lambda c: ttt.TTTLayer(
        16, ttt.TTTConfig(kind="mlp", num_heads=2, chunk_size=c, **F64), rngs=nnx.Rngs(3)),
}
X = jax.random.normal(jax.random.PRNGKey(7), (2, 9, 16), jnp.float64)


@pytest.mark.parametrize("name", list(LAYERS))
def test_decode_and_prefill_equal_parallel_forward(name):
  layer = LAYERS[name](3)
  y = layer(X)
  assert y.shape == X.shape and bool(jnp.all(jnp.isfinite(y)))
  y_pre, cache = layer.prefill(X[:, :5])
  np.testing.assert_allclose(y_pre, y[:, :5], rtol=1e-10, atol=1e-12)
  for t in range(5, 9):
    yt, cache = layer.decode(X[:, t], cache)
    np.testing.assert_allclose(yt, y[:, t], rtol=1e-9, atol=1e-11)


def test_titans_decode_from_scratch_at_chunk_one():
  layer = LAYERS["titans"](1)
  y = layer(X)
  cache = layer.init_cache(2)
  for t in range(X.shape[1]):
    yt, cache = layer.decode(X[:, t], cache)
    np.testing.assert_allclose(yt, y[:, t], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_is_causal(name):
  """The gradient of output t with respect to inputs after t is exactly zero."""
  layer = LAYERS[name](4)
  t = 4
  grad = jax.grad(lambda x: jnp.sum(layer(x)[:, t]))(X)
  assert float(jnp.abs(grad[:, t + 1:]).max()) == 0.0
  assert float(jnp.abs(grad[:, : t + 1]).max()) > 0.0


def test_parameter_tree_does_not_depend_on_chunk_size():
  shapes = lambda m: jax.tree.map(jnp.shape, nnx.state(m, nnx.Param))
  assert shapes(LAYERS["titans"](2)) == shapes(LAYERS["titans"](8))
  assert shapes(LAYERS["ttt_mlp"](2)) == shapes(LAYERS["ttt_mlp"](16))


def test_initial_memory_state_receives_gradient():
  layer = LAYERS["ttt_linear"](4)
  graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

  def loss(p):
    return jnp.sum(nnx.merge(graphdef, p, rest)(X) ** 2)

  grads = jax.grad(loss)(params)
  assert float(jnp.abs(grads["init_state"][0]["w"][...]).max()) > 0


def test_bad_configs_raise_value_error():
  with pytest.raises(ValueError, match="chunk_size"):
    titans.TitansConfig(chunk_size=0)
  with pytest.raises(ValueError, match="lr_max"):
    titans.TitansConfig(lr_max=-1.0)
  with pytest.raises(ValueError, match="kind"):
    ttt.TTTConfig(kind="conv")
  with pytest.raises(ValueError, match="d_model"):
    titans.TitansMemory(0, titans.TitansConfig(), rngs=nnx.Rngs(0))
