"""The shared memory mixer (tnx.memory.mixer) through its Titans and TTT instances: decode
and prefill equal the parallel forward, causality, chunk-size independence of the parameters,
config replacement, input validation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnx.memory import mixer, titans, ttt
from tnx.memory import model as mm

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


def test_replace_configs_changes_the_chunk_in_place():
  layer = LAYERS["titans"](3)
  y3 = layer(X)
  assert mixer.replace_configs(layer, lambda c: dataclasses.replace(c, chunk_size=1)) == 1
  assert layer.cfg.chunk_size == 1
  assert mixer.replace_configs(layer, lambda c: None) == 0
  assert float(jnp.abs(layer(X) - y3).max()) > 1e-8   # chunk 1 reads differ from chunk 3


@pytest.mark.parametrize("name", ["titans", "ttt_linear"])
def test_inputs_are_validated(name):
  layer = LAYERS[name](3)
  with pytest.raises(ValueError, match=r"x_BxLxD must be \[B, L, D\] with D=16"):
    layer(X[0])                                   # 2-D input
  with pytest.raises(ValueError, match=r"x_BxLxD must be \[B, L, D\] with D=16"):
    layer(X[..., :15])                            # wrong width
  with pytest.raises(ValueError, match=r"x_BxD must be \[B, D\]"):
    layer.decode(X[:, :2], layer.init_cache(2))


def test_projection_layout_options():
  cfg = titans.TitansConfig(num_heads=2, **F64)
  with pytest.raises(ValueError, match="num_streams must be 1 or num_memories=3"):
    mixer.Projection(16, cfg, rngs=nnx.Rngs(0), num_memories=3, num_streams=2)
  with pytest.raises(ValueError, match="extra_gates need a single gate set"):
    mixer.Projection(16, cfg, rngs=nnx.Rngs(0), num_memories=2, num_gate_sets=2,
                     extra_gates=(("gamma", 1, 0.0),))
  p = mixer.Projection(16, cfg, rngs=nnx.Rngs(0), extra_gates=(("gamma", 4, 3.0),))
  inputs, extra, conv = p(cfg, X)
  assert extra["gamma"].shape == (2, 2, 9, 4) and len(conv) == 3
  np.testing.assert_allclose(jnp.linalg.norm(inputs[0].k, axis=-1), 1.0, rtol=1e-5)
  assert float(inputs[0].lr.max()) <= cfg.lr_max
