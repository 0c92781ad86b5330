"""Context-parallel TNT (shard_map over the `context` axis) equals the single-device layer, for
outputs and gradients, on 8 fake CPU devices combined with a data axis."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnx import sharding
from tnx.memory import model as mm
from tnx.tnt import TNTConfig, TNTMemory

F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)


def _cfg(**kw):
  base = dict(num_heads=2, memory=mm.MemoryModelConfig(depth=1, ln_residual=True),
              global_chunk_size=16, local_chunk_sizes=(2, 4), shard_length=8, conv_width=3,
              lr_bias_init=-3.0, remat_group=0, **F64)
  base.update(kw)
  return TNTConfig(**base)


def _loss_and_grads(layer, x, w):
  graphdef, state = nnx.split(layer)

  def loss(state, x):
    y = nnx.merge(graphdef, state)(x)
    return jnp.sum(w * y), y

  fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True),
               compiler_options=FAST_COMPILE)
  (_, y), grads = fn(state, x)
  return y, grads


FAST_COMPILE = {"xla_backend_optimization_level": 0}
BATCH, LENGTH, D = 4, 64, 8


@functools.cache
def _reference(gates):
  """Single-device outputs and gradients (batch 4, so every data-axis size divides it)."""
  layer = TNTMemory(D, _cfg(momentum=gates, forget=gates), rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (BATCH, LENGTH, D), jnp.float64)
  w = jax.random.normal(jax.random.key(2), (BATCH, LENGTH, D), jnp.float64)
  return x, w, _loss_and_grads(layer, x, w)


def _compare(cfg, data, context):
  x, w, (y_ref, g_ref) = _reference(cfg.momentum)
  layer = TNTMemory(D, cfg, rngs=nnx.Rngs(0))
  mesh = sharding.make_mesh(data=data, context=context)
  layer.mesh = mesh
  assert layer.context_mesh() is mesh
  xs = jax.device_put(x, sharding.named(mesh, sharding.batch_spec(True)[0], sharding.CONTEXT))
  y_cp, g_cp = _loss_and_grads(layer, xs, w)
  np.testing.assert_allclose(y_cp, y_ref, rtol=1e-10, atol=1e-12)
  for a, b in zip(jax.tree.leaves(g_cp), jax.tree.leaves(g_ref), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
  # Every gradient leaf is exercised (no silently disconnected parameter).
  assert all(np.abs(np.asarray(b)).max() > 0 for b in jax.tree.leaves(g_ref))


@pytest.mark.parametrize("data,context,gates", [(4, 2, True), (2, 4, False), (1, 8, False)])
def test_allgather_matches_single_device(data, context, gates):
  """gates=True: Titans momentum and forget gate (the general chunked global path)."""
  _compare(_cfg(momentum=gates, forget=gates), data, context)


def test_ring_matches_single_device():
  _compare(_cfg(global_cp="ring"), data=2, context=4)


def test_set_mesh_activates_context_parallelism():
  layer = TNTMemory(8, _cfg(), rngs=nnx.Rngs(0))
  mesh = sharding.make_mesh(data=4, context=2)
  assert layer.context_mesh() is None
  with jax.set_mesh(mesh):
    assert layer.context_mesh() is not None
  with jax.set_mesh(sharding.make_mesh(data=8, context=1)):
    assert layer.context_mesh() is None


def test_invalid_context_split_raises():
  layer = TNTMemory(8, _cfg(), rngs=nnx.Rngs(0), mesh=sharding.make_mesh(data=1, context=8))
  x = jnp.zeros((1, 32, 8), jnp.float64)  # 4 tokens per device < S_L = 8
  with pytest.raises(ValueError, match="may not straddle"):
    layer(x)
  ring = dataclasses.replace(_cfg(), global_cp="ring")
  layer = TNTMemory(8, ring, rngs=nnx.Rngs(0), mesh=sharding.make_mesh(data=1, context=8))
  with pytest.raises(ValueError, match="global_cp='ring'"):
    layer(jnp.zeros((1, 64, 8), jnp.float64))
