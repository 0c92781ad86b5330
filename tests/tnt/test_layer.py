"""TNTMemory: reduction to the Titans layer, decode = parallel forward, causality, stage 2
(parameter compatibility, freezing) and configuration errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tnx.memory import model as mm
from tnx.memory.titans import TitansConfig, TitansMemory
from tnx.tnt import TNTConfig, TNTMemory, stage2

D = 8
F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)
MEM = mm.MemoryModelConfig(depth=2, expansion=2)
FAST = {"xla_backend_optimization_level": 0}


def _cfg(**kw):
  base = dict(num_heads=2, memory=MEM, global_chunk_size=8, local_chunk_sizes=(2, 4),
              shard_length=8, conv_width=3, lr_bias_init=-3.0, remat_group=0, **F64)
  base.update(kw)
  return TNTConfig(**base)


def _x(batch=2, length=20, seed=1):
  return jax.random.normal(jax.random.key(seed), (batch, length, D), jnp.float64)


def _value_and_grads(model, x):
  graphdef, state = nnx.split(model)
  w = jnp.cos(jnp.arange(x.size, dtype=x.dtype)).reshape(x.shape)

  def loss(state, x):
    return jnp.sum(w * nnx.merge(graphdef, state)(x))

  fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), compiler_options=FAST)
  return fn(state, x)


def test_reduces_to_titans_layer():
  """No global memory, one local with S_L >= L, no Q-K projection, W_init = Titans' initial
  state, C_L = C: identical outputs and gradients (spec 7.1 item 6)."""
  titans_cfg = TitansConfig(num_heads=2, memory=MEM, chunk_size=4, momentum=True, forget=True,
                            conv_width=3, remat_group=0, **F64)
  titans = TitansMemory(D, titans_cfg, rngs=nnx.Rngs(0))
  cfg = _cfg(use_global=False, local_chunk_sizes=(4,), shard_length=64, qk_projection=False,
             momentum=True, forget=True)
  tnt = TNTMemory(D, cfg, rngs=nnx.Rngs(5))
  params = nnx.to_pure_dict(nnx.state(titans, nnx.Param))
  mapped = dict(params)
  mapped["local_init"] = {0: mapped.pop("init_state")}
  nnx.update(tnt, mapped)
  x = _x(length=16)
  (v_t, (g_t, gx_t)), (v_n, (g_n, gx_n)) = _value_and_grads(titans, x), _value_and_grads(tnt, x)
  np.testing.assert_allclose(v_n, v_t, rtol=1e-12)
  np.testing.assert_allclose(gx_n, gx_t, rtol=1e-10, atol=1e-12)
  g_t, g_n = nnx.to_pure_dict(g_t), nnx.to_pure_dict(g_n)
  g_t["local_init"] = {0: g_t.pop("init_state")}
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), g_n, g_t)


@pytest.mark.parametrize("kw", [
    dict(local_chunk_sizes=(2, 4)),
    dict(local_chunk_sizes=(1,), qk_scope="chunk", qk_rescale="l2", momentum=True,
         combine="weighted", memory=mm.MemoryModelConfig(depth=1, ln_residual=True)),
])
def test_decode_matches_parallel_forward(kw):
  """Token-by-token decode from an empty cache, and prefill + decode, equal the parallel
  forward with the same chunk sizes, across shard and global-chunk boundaries."""
  layer = TNTMemory(D, _cfg(**kw), rngs=nnx.Rngs(0))
  x = _x(length=19)
  y = layer(x)
  step = nnx.jit(lambda m, xt, c: m.decode(xt, c))
  cache = layer.init_cache(2)
  outs = []
  for t in range(19):
    yt, cache = step(layer, x[:, t], cache)
    outs.append(yt)
  np.testing.assert_allclose(jnp.stack(outs, 1), y, rtol=1e-9, atol=1e-11)
  y_pre, cache = layer.prefill(x[:, :11])
  np.testing.assert_allclose(y_pre, y[:, :11], rtol=1e-12, atol=1e-13)
  for t in range(11, 19):
    yt, cache = step(layer, x[:, t], cache)
    np.testing.assert_allclose(yt, y[:, t], rtol=1e-9, atol=1e-11)


def test_causal():
  layer = TNTMemory(D, _cfg(), rngs=nnx.Rngs(0))
  x = _x(length=20)
  fwd = jax.jit(lambda x: layer(x))
  y = fwd(x)
  y2 = fwd(x.at[:, 13:].set(3.0))
  np.testing.assert_allclose(y2[:, :13], y[:, :13], rtol=1e-12, atol=1e-13)
  assert float(jnp.abs(y2[:, 13:] - y[:, 13:]).max()) > 1e-3


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
  for key in old:
    moved = any(float(jnp.abs(a - b).max()) > 0
                for a, b in zip(jax.tree.leaves(old[key]), jax.tree.leaves(new[key])))
    assert moved == (key in stage2.LOCAL_PARAM_NAMES), key
  # The optax route labels exactly the same leaves.
  labels = stage2.param_labels(old)
  assert set(jax.tree.leaves(labels["local_init"])) == {"local"}
  assert set(jax.tree.leaves(labels["q_proj"])) == {"frozen"}
  tx = stage2.freeze_nonlocal(optax.sgd(1.0), old)
  upd, _ = tx.update(jax.tree.map(jnp.ones_like, old), tx.init(old), old)
  assert float(jnp.abs(upd["q_proj"]["kernel"]).max()) == 0.0
  assert float(jnp.abs(upd["local_init"][0][0]["w"]).min()) == 1.0


def test_invalid_configurations():
  with pytest.raises(ValueError, match="multiple of its chunk size"):
    TNTConfig(local_chunk_sizes=(8, 48), shard_length=64)
  with pytest.raises(ValueError, match="at least one memory"):
    TNTConfig(local_chunk_sizes=(), use_global=False)
  with pytest.raises(ValueError, match="qk_scope"):
    TNTConfig(qk_scope="sequence")
  with pytest.raises(ValueError, match="local_shard_lengths"):
    TNTConfig(local_chunk_sizes=(8,), local_shard_lengths=(16, 16))
  with pytest.raises(ValueError, match="cfg must be a TNTConfig"):
    TNTMemory(D, TitansConfig(), rngs=nnx.Rngs(0))


def test_separate_projections_and_gates_change_only_projection_shapes():
  shared = TNTMemory(D, _cfg(), rngs=nnx.Rngs(0))
  split = TNTMemory(D, _cfg(share_qkv=False, share_lr=True), rngs=nnx.Rngs(0))
  assert shared.q_proj.kernel.shape == (D, D) and split.q_proj.kernel.shape == (D, 3 * D)
  assert shared.gate_proj.kernel.shape == (D, 6) and split.gate_proj.kernel.shape == (D, 2)
  assert split(_x(length=9)).shape == (2, 9, D)
