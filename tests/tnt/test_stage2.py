"""TNT stage 2: new local chunk sizes keep the parameter tree; freezing trains only the local
memories (nnx filter and optax labels agree)."""

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

from tnx.memory import model as mm
from tnx.tnt import TNTConfig, TNTMemory, stage2

D = 8
F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)


def _cfg(**kw):
  base = dict(num_heads=2, memory=mm.MemoryModelConfig(depth=2, expansion=2),
              global_chunk_size=8, local_chunk_sizes=(2, 4), shard_length=8, conv_width=3,
              lr_bias_init=-3.0, remat_group=0, **F64)
  base.update(kw)
  return TNTConfig(**base)


def _x(batch=2, length=16, seed=1):
  return jax.random.normal(jax.random.key(seed), (batch, length, D), jnp.float64)


def test_stage2_keeps_parameters_and_freezes_nonlocal():
  layer = TNTMemory(D, _cfg(), rngs=nnx.Rngs(0))
  before = jax.tree.map(lambda a: (a.shape, a.dtype), nnx.to_pure_dict(nnx.state(layer)))
  assert stage2.set_local_chunk_sizes(layer, (1, 2), freeze_nonlocal=True) == 1
  assert layer.cfg.local_chunk_sizes == (1, 2) and layer.cfg.stage2_freeze_nonlocal
  after = jax.tree.map(lambda a: (a.shape, a.dtype), nnx.to_pure_dict(nnx.state(layer)))
  assert before == after
  with pytest.raises(ValueError, match="keep the 2 local"):
    stage2.stage2_config(layer.cfg, (1,))
  x = _x(length=16)
  opt = nnx.Optimizer(layer, optax.sgd(0.1), wrt=stage2.trainable_filter(layer.cfg))
  old = nnx.to_pure_dict(nnx.state(layer, nnx.Param))
  grads = nnx.grad(lambda m: jnp.sum(jnp.sin(m(x))), argnums=nnx.DiffState(
      0, stage2.trainable_filter(layer.cfg)))(layer)
  opt.update(layer, grads)
  new = nnx.to_pure_dict(nnx.state(layer, nnx.Param))
  old_leaves = jax.tree_util.tree_flatten_with_path(old)[0]
  for (path, a), b in zip(old_leaves, jax.tree.leaves(new), strict=True):
    local = any(getattr(p, "key", None) in stage2.LOCAL_PARAM_NAMES for p in path)
    assert (float(jnp.abs(a - b).max()) > 0) == local, path
  # The optax route labels exactly the same leaves.
  labels = stage2.param_labels(old)
  assert set(jax.tree.leaves(labels["memory"]["local_init"])) == {"local"}
  assert set(jax.tree.leaves(labels["memory"]["global_init"])) == {"frozen"}
  assert set(jax.tree.leaves(labels["project"]["q_proj"])) == {"frozen"}
  tx = stage2.freeze_nonlocal(optax.sgd(1.0), old)
  upd, _ = tx.update(jax.tree.map(jnp.ones_like, old), tx.init(old), old)
  assert float(jnp.abs(upd["project"]["q_proj"]["kernel"]).max()) == 0.0
  assert float(jnp.abs(upd["memory"]["local_init"][0][0]["w"]).min()) == 1.0
