"""TTT layers: the learned initial state receives gradient, the resolved kind defaults, and the
inner learning rate scale."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnx.memory import ttt

F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)
X = jax.random.normal(jax.random.PRNGKey(7), (2, 9, 16), jnp.float64)


def test_initial_memory_state_receives_gradient():
  layer = ttt.TTTLayer(16, ttt.TTTConfig(kind="linear", num_heads=2, chunk_size=4, **F64),
                       rngs=nnx.Rngs(2))
  graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

  def loss(p):
    return jnp.sum(nnx.merge(graphdef, p, rest)(X) ** 2)

  grads = jax.grad(loss)(params)
  assert float(jnp.abs(grads["memory"]["init_state"][0]["w"][...]).max()) > 0


def test_kind_defaults_and_lr_scale():
  lin, mlp = ttt.TTTConfig(kind="linear"), ttt.TTTConfig(kind="mlp")
  assert (lin.memory.depth, mlp.memory.depth) == (1, 2)
  assert lin.memory.ln_residual and mlp.memory.ln_residual
  assert (lin.lr_max, mlp.lr_max) == (1.0, 0.1)
  assert lin.lr_scale(8) == pytest.approx(1.0 / 8)
  assert ttt.TTTConfig(lr_divide_by_head_dim=False).lr_scale(8) == 1.0
  assert ttt.TTTConfig(chunk_size=4).rope_period() == 4
  assert ttt.TTTConfig(use_rope=False).rope_period() is None


def test_lr_gate_is_lr_scale_times_sigmoid():
  layer = ttt.TTTLayer(16, ttt.TTTConfig(num_heads=2, **F64), rngs=nnx.Rngs(0))
  inputs, _, _ = layer.project(layer.cfg, X)
  z = X @ layer.project.gate_proj.kernel[...] + layer.project.gate_proj.bias[...]
  want = 1.0 / 8 / (1 + np.exp(-np.asarray(z)))
  np.testing.assert_allclose(inputs[0].lr, want.transpose(0, 2, 1), rtol=1e-12)


def test_config_errors():
  with pytest.raises(ValueError, match="kind"):
    ttt.TTTConfig(kind="conv")
  with pytest.raises(ValueError, match="head_dim must be even with use_rope"):
    ttt.TTTLayer(6, ttt.TTTConfig(num_heads=2), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="ln_residual"):
    from tnx.memory import model as mm
    ttt.TTTConfig(memory=mm.MemoryModelConfig(depth=1))


def test_with_kind_follows_defaults_and_keeps_settings():
  mlp = ttt.TTTConfig(kind="linear", chunk_size=4).with_kind("mlp")
  assert (mlp.kind, mlp.memory.depth, mlp.lr_max, mlp.chunk_size) == ("mlp", 2, 0.1, 4)
  custom = ttt.TTTConfig(kind="linear", lr_max=0.3).with_kind("mlp")
  assert custom.lr_max == 0.3 and custom.memory.depth == 2
