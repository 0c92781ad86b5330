"""TNTMemory: reduction to the Titans layer, decode = parallel forward, causality, projection
layouts, validation of the memory parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnx.memory import model as mm
from tnx.memory.titans import TitansConfig, TitansMemory
from tnx.tnt import TNTConfig, TNTMemory, branches

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
  state, C_L = C: identical outputs and gradients."""
  titans_cfg = TitansConfig(num_heads=2, memory=MEM, chunk_size=4, momentum=True, forget=True,
                            conv_width=3, remat_group=0, **F64)
  titans = TitansMemory(D, titans_cfg, rngs=nnx.Rngs(0))
  cfg = _cfg(use_global=False, local_chunk_sizes=(4,), shard_length=64, qk_projection=False,
             momentum=True, forget=True)
  tnt = TNTMemory(D, cfg, rngs=nnx.Rngs(5))
  params = nnx.to_pure_dict(nnx.state(titans, nnx.Param))
  mapped = dict(params)
  mapped["memory"] = {"local_init": {0: params["memory"]["init_state"]}}
  nnx.update(tnt, mapped)
  x = _x(length=16)
  (v_t, (g_t, gx_t)), (v_n, (g_n, gx_n)) = _value_and_grads(titans, x), _value_and_grads(tnt, x)
  np.testing.assert_allclose(v_n, v_t, rtol=1e-12)
  np.testing.assert_allclose(gx_n, gx_t, rtol=1e-10, atol=1e-12)
  g_t, g_n = nnx.to_pure_dict(g_t), nnx.to_pure_dict(g_n)
  g_t["memory"] = {"local_init": {0: g_t["memory"]["init_state"]}}
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


def test_separate_projections_and_gates_change_only_projection_shapes():
  shared = TNTMemory(D, _cfg(), rngs=nnx.Rngs(0))
  split = TNTMemory(D, _cfg(share_qkv=False, share_lr=True), rngs=nnx.Rngs(0))
  assert shared.project.q_proj.kernel.shape == (D, D)
  assert split.project.q_proj.kernel.shape == (D, 3 * D)
  assert shared.project.gate_proj.kernel.shape == (D, 6)
  assert split.project.gate_proj.kernel.shape == (D, 2)
  assert split(_x(length=9)).shape == (2, 9, D)


def test_tnt_mix_validates_the_memory_parameters():
  layer = TNTMemory(D, _cfg(), rngs=nnx.Rngs(0))
  inputs, _, _ = layer.project(layer.cfg, _x(length=8))
  prm = layer.memory_params()
  extra = prm._replace(local_inits=prm.local_inits + prm.local_inits[:1])
  with pytest.raises(ValueError, match="params.local_inits must hold one state per local"):
    branches.tnt_mix(layer.cfg, extra, inputs)
  with pytest.raises(ValueError, match="params.global_init must be given"):
    branches.tnt_mix(layer.cfg, prm._replace(global_init=None), inputs)
  with pytest.raises(ValueError, match="inputs must hold 3"):
    branches.tnt_mix(layer.cfg, prm, inputs[:2])
  with pytest.raises(ValueError, match="cfg must be a TNTConfig"):
    TNTMemory(D, TitansConfig(), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"x_BxLxD must be \[B, L, D\] with D=8"):
    layer(_x(length=8)[0])


@pytest.mark.parametrize("share_lr", [False, True])
def test_global_lr_max_bounds_only_the_global_memory(share_lr):
  """lr of the global memory = global_lr_max * sigmoid(x W + b), of the locals lr_max *
  sigmoid(...), from the gate projection's own parameters; global_lr_max = lr_max (or None)
  gives the same layer."""
  cfg = _cfg(lr_max=0.05, global_lr_max=0.002, share_lr=share_lr)
  layer = TNTMemory(D, cfg, rngs=nnx.Rngs(0))
  x = _x(length=12)
  inputs, _, _ = layer.project(cfg, x)
  h = cfg.num_heads
  gp = layer.project.gate_proj
  z = np.asarray(x) @ np.asarray(gp.kernel[...]) + np.asarray(gp.bias[...])   # [B, L, G*H]
  z = z.reshape(2, 12, -1, h).transpose(0, 2, 3, 1)                            # [B, G, H, L]
  sig = 1.0 / (1.0 + np.exp(-z))
  for j, bound in enumerate((0.002, 0.05, 0.05)):
    g = 0 if share_lr else j
    np.testing.assert_allclose(inputs[j].lr, bound * sig[:, g], rtol=1e-12)
  same = TNTMemory(D, _cfg(lr_max=0.05, global_lr_max=0.05), rngs=nnx.Rngs(0))
  plain = TNTMemory(D, _cfg(lr_max=0.05), rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(same(x), plain(x))
  assert float(jnp.abs(layer(x) - plain(x)).max()) > 1e-6
