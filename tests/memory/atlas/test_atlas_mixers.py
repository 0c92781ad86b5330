"""ATLAS-family memory mixers: decode == parallel forward, causality, gradients, configs
(the MAG/MAL hybrids are tested with the Titans layouts in tests/models)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnx.memory import model as mm
from tnx.memory.atlas import AtlasConfig, AtlasMixer

F64 = jnp.float64


def _mixer(**kw):
  cfg = AtlasConfig(num_heads=2, chunk_size=3, dtype=F64, param_dtype=F64, **kw)
  return AtlasMixer(8, cfg, rngs=nnx.Rngs(0))


X = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 8), F64)


@pytest.mark.parametrize("kw", [
    dict(variant="atlas"),
    pytest.param(dict(variant="dla", gamma_mode="token", poly_mode="sym"),
                 marks=pytest.mark.slow),
])
def test_decode_equals_parallel_and_is_causal(kw):
  m = _mixer(**kw)
  graph, state = nnx.split(m)
  fwd = jax.jit(lambda s, x: nnx.merge(graph, s)(x))
  pre = jax.jit(lambda s, x: nnx.merge(graph, s).prefill(x))
  dec = jax.jit(lambda s, x, c: nnx.merge(graph, s).decode(x, c))
  y = fwd(state, X)
  y5, cache = pre(state, X[:, :5])
  outs = [y5]
  for t in range(5, 7):
    yt, cache = dec(state, X[:, t], cache)
    outs.append(yt[:, None])
  np.testing.assert_allclose(jnp.concatenate(outs, 1), y, atol=1e-11)
  cache = m.init_cache(2)
  for t in range(3):
    yt, cache = dec(state, X[:, t], cache)
    np.testing.assert_allclose(yt, y[:, t], atol=1e-11)
  x2 = X.at[:, 4].add(1.0)   # a change at t = 4 leaves outputs before 4 unchanged
  y2 = fwd(state, x2)
  np.testing.assert_array_equal(y2[:, :4], y[:, :4])
  assert float(jnp.max(jnp.abs(y2[:, 4:] - y[:, 4:]))) > 1e-6


def test_outer_gradients_reach_every_parameter_group():
  m = _mixer(variant="atlas")
  graph, params, rest = nnx.split(m, nnx.Param, ...)
  loss = lambda p: jnp.sum(nnx.merge(graph, p, rest)(X) ** 2)
  grads = jax.jit(jax.grad(loss))(params)
  flat = dict(nnx.to_flat_state(grads))
  for path in [("memory", "poly_coeffs"), ("memory", "init_state", 0, "w"),
               ("memory", "init_state", 1, "w"), ("project", "gate_proj", "kernel"),
               ("project", "k_proj", "kernel")]:
    g = np.asarray(flat[path][...])
    assert np.all(np.isfinite(g)) and np.max(np.abs(g)) > 0, path
  assert ("memory", "sketch") not in flat   # fixed random matrices are not outer parameters


def test_memory_updates_matter_and_chunk_size_is_config_only():
  """Memory writes change the output (no silent frozen-memory mode); changing chunk_size
  through `cfg` keeps the parameter tree, and chunk 1 differs from chunk 3 (anchor staleness)."""
  m = _mixer(variant="omeganet")
  call = nnx.jit(lambda mod, x: mod(x))
  y = call(m, X)
  frozen = _mixer(variant="omeganet", lr_max=1e-12)
  assert float(jnp.max(jnp.abs(call(frozen, X) - y))) > 1e-4
  before = jax.tree.map(jnp.shape, nnx.state(m, nnx.Param))
  m.cfg = dataclasses.replace(m.cfg, chunk_size=1)
  assert jax.tree.map(jnp.shape, nnx.state(m, nnx.Param)) == before
  assert float(jnp.max(jnp.abs(call(m, X) - y))) > 1e-8


def test_exact_kernel_mode_and_config_errors():
  m = _mixer(variant="deep_transformer", feature_map="exp",
             memory=mm.MemoryModelConfig.from_kind("linear"))
  assert m(X).shape == X.shape
  with pytest.raises(ValueError, match="feature_map='exp'"):
    m.init_cache(2)
  with pytest.raises(ValueError, match="feature_map='exp'"):
    m.prefill(X)
  with pytest.raises(ValueError, match="variant"):
    AtlasConfig(variant="mamba")
  with pytest.raises(ValueError, match="memory='linear'"):
    AtlasConfig(variant="dot", feature_map="exp")
  with pytest.raises(ValueError, match="momentum=False contradicts optimizer='muon'"):
    AtlasConfig(variant="atlas", momentum=False)
  assert AtlasConfig(variant="dla").rule().window == 1
  assert AtlasConfig(variant="atlas_pp").memory_config().kind == "gated_mlp"
  cfg = AtlasConfig(variant="omeganet")
  assert (cfg.momentum, cfg.forget, cfg.residual, cfg.omega_window) == (False, True, True, 4)
  assert AtlasConfig(variant="atlas").momentum and not AtlasConfig(variant="dot").forget


def test_muon_partial_last_chunk_is_finite():
  m = _mixer(variant="atlas")
  assert bool(jnp.all(jnp.isfinite(m(X[:, :5]))))   # chunk 3: a last chunk of 2 tokens
